"""The rules of Persistent Chat (SPEC PC-1), table by table: who may do what in open,
closed and secret rooms, and which names, descriptions and bodies are acceptable."""

from __future__ import annotations

import pytest

from trimaran.chat import (
    MAX_BODY_BYTES,
    Category,
    ChatRefused,
    Membership,
    Role,
    Room,
    RoomKind,
    rules,
)

OPEN, CLOSED, SECRET = RoomKind.OPEN, RoomKind.CLOSED, RoomKind.SECRET
MANAGER, MEMBER, NOBODY = Role.MANAGER, Role.MEMBER, None
ME = "sip:me@example.com"
OTHER = "sip:other@example.com"


def r(kind: RoomKind, *, disabled: bool = False) -> Room:
    return Room("room", "general", kind, disabled=disabled)


def status(refusal: ChatRefused | None) -> int | None:
    return None if refusal is None else refusal.status_hint


# (kind, role, status of read, status of post)
ACCESS = [
    (OPEN, NOBODY, None, None),
    (OPEN, MEMBER, None, None),
    (OPEN, MANAGER, None, None),
    (CLOSED, NOBODY, 403, 403),
    (CLOSED, MEMBER, None, None),
    (CLOSED, MANAGER, None, None),
    (SECRET, NOBODY, 404, 404),
    (SECRET, MEMBER, None, None),
    (SECRET, MANAGER, None, None),
]


@pytest.mark.parametrize(("kind", "role", "read", "post"), ACCESS)
def test_pc1_read_and_post_follow_the_room_kind(kind: RoomKind, role: Role | None,
                                                read: int | None, post: int | None) -> None:
    assert status(rules.may_read(r(kind), role)) == read
    assert status(rules.may_post(r(kind), role)) == post


@pytest.mark.parametrize("kind", [OPEN, CLOSED, SECRET])
@pytest.mark.parametrize("role", [NOBODY, MEMBER, MANAGER])
def test_pc1_nobody_posts_to_a_disabled_room_but_members_still_read_it(
        kind: RoomKind, role: Role | None) -> None:
    hidden = kind is SECRET and role is None
    assert status(rules.may_post(r(kind, disabled=True), role)) == (404 if hidden else 403)
    assert status(rules.may_read(r(kind, disabled=True), role)) == \
        status(rules.may_read(r(kind), role))


def test_pc1_secret_room_refusals_never_reveal_the_room() -> None:
    missing = [rules.may_read(None, None), rules.may_post(None, None),
               rules.may_invite(None, None, OTHER), rules.may_change_room(None, None)]
    secret = [rules.may_read(r(SECRET), None), rules.may_post(r(SECRET), None),
              rules.may_invite(r(SECRET), None, OTHER), rules.may_change_room(r(SECRET), None)]
    assert missing == secret
    assert all(x == ChatRefused(404, "no such room") for x in secret)
    assert not rules.visible(r(SECRET), None)
    assert rules.visible(r(SECRET), MEMBER) and rules.visible(r(CLOSED), None)


@pytest.mark.parametrize(("post_role", "joins"), [(NOBODY, True), (MEMBER, False),
                                                  (MANAGER, False)])
def test_pc1_posting_to_an_open_room_joins_it(post_role: Role | None, joins: bool) -> None:
    assert rules.joins_on_post(r(OPEN), post_role) is joins
    assert not rules.joins_on_post(r(CLOSED), post_role)


# (kind, actor's role, status of change, status of invite)
MANAGEMENT = [
    (OPEN, NOBODY, 403, 403),
    (OPEN, MEMBER, 403, 403),
    (OPEN, MANAGER, None, None),
    (CLOSED, NOBODY, 403, 403),
    (CLOSED, MEMBER, 403, 403),
    (CLOSED, MANAGER, None, None),
    (SECRET, NOBODY, 404, 404),
    (SECRET, MEMBER, 403, 403),
    (SECRET, MANAGER, None, None),
]


@pytest.mark.parametrize(("kind", "role", "change", "invite"), MANAGEMENT)
def test_pc1_only_managers_change_rooms_and_invite(kind: RoomKind, role: Role | None,
                                                   change: int | None,
                                                   invite: int | None) -> None:
    assert status(rules.may_change_room(r(kind), role)) == change
    assert status(rules.may_invite(r(kind), role, OTHER)) == invite


def test_pc1_managers_may_reenable_but_not_rename_or_invite_to_a_disabled_room() -> None:
    disabled = r(CLOSED, disabled=True)
    assert rules.may_change_room(disabled, MANAGER, r(CLOSED)) is None
    assert status(rules.may_change_room(r(CLOSED), MANAGER,
                                        Room("renamed", "general", CLOSED))) == 400
    assert status(rules.may_invite(disabled, MANAGER, OTHER)) == 403


# (kind, disabled, actor's role, who is added, with which role, status)
ADD_MEMBER = [
    (OPEN, False, NOBODY, ME, MEMBER, None),          # anyone joins an open room
    (OPEN, False, NOBODY, ME, MANAGER, 403),          # … but not as a manager
    (OPEN, True, NOBODY, ME, MEMBER, 403),            # … nor a disabled one
    (OPEN, False, NOBODY, OTHER, MEMBER, 403),        # nor adds someone else
    (OPEN, False, MEMBER, OTHER, MEMBER, 403),
    (OPEN, False, MANAGER, OTHER, MANAGER, None),
    (CLOSED, False, NOBODY, ME, MEMBER, 403),
    (CLOSED, False, MEMBER, OTHER, MEMBER, 403),
    (CLOSED, False, MEMBER, ME, MEMBER, None),        # already a member: no change
    (CLOSED, False, MEMBER, ME, MANAGER, 403),        # no self-promotion
    (CLOSED, False, MANAGER, OTHER, MEMBER, None),
    (SECRET, False, NOBODY, ME, MEMBER, 404),
    (SECRET, False, MANAGER, OTHER, MEMBER, None),
    (SECRET, True, MANAGER, OTHER, MEMBER, None),     # managers still manage
]


@pytest.mark.parametrize(("kind", "disabled", "role", "user", "new_role", "expected"),
                         ADD_MEMBER)
def test_pc1_managers_add_members_and_anyone_joins_an_open_room(
        kind: RoomKind, disabled: bool, role: Role | None, user: str, new_role: Role,
        expected: int | None) -> None:
    refusal = rules.may_add_member(r(kind, disabled=disabled), role, ME,
                                   Membership("room", user, new_role))
    assert status(refusal) == expected


# (kind, actor's role, who is removed, status)
REMOVE_MEMBER = [
    (OPEN, MEMBER, ME, None),          # anyone leaves
    (CLOSED, MEMBER, ME, None),
    (SECRET, MEMBER, ME, None),
    (OPEN, MEMBER, OTHER, 403),
    (CLOSED, NOBODY, OTHER, 403),
    (SECRET, NOBODY, OTHER, 404),
    (CLOSED, MANAGER, OTHER, None),
    (SECRET, MANAGER, OTHER, None),
]


@pytest.mark.parametrize(("kind", "role", "user", "expected"), REMOVE_MEMBER)
def test_pc1_managers_remove_members_and_anyone_leaves(kind: RoomKind, role: Role | None,
                                                       user: str,
                                                       expected: int | None) -> None:
    assert status(rules.may_remove_member(r(kind), role, ME, user)) == expected


def test_pc1_anyone_creates_a_room_in_an_existing_category() -> None:
    general = Category("general")
    assert rules.may_create_room(r(SECRET), general, ME) is None
    assert status(rules.may_create_room(r(OPEN), None, ME)) == 404
    assert status(rules.may_create_room(Room("", "general", OPEN), general, ME)) == 400
    assert status(rules.may_create_room(r(OPEN), general, "alice")) == 400


NAMES = [
    ("Project Trimaran", None),
    ("Ünïcødé 聊天室", None),
    ("x" * rules.MAX_NAME, None),
    ("x" * (rules.MAX_NAME + 1), 400),
    ("", 400),
    ("   ", 400),
    (" padded", 400),
    ("line\nbreak", 400),
    ("nul\x00", 400),
    ("bell\x07", 400),
    ("del\x7f", 400),
    ("c1\x85", 400),
    ("surrogate\ud800", 400),
]


@pytest.mark.parametrize(("name", "expected"), NAMES)
def test_pc1_names_are_short_and_free_of_control_characters(name: str,
                                                            expected: int | None) -> None:
    assert status(rules.check_name(name)) == expected
    assert status(rules.may_create_category(Category(name))) == expected


DESCRIPTIONS = [
    ("", None),
    ("two\nlines\twith a tab\r\n", None),
    ("x" * rules.MAX_DESCRIPTION, None),
    ("x" * (rules.MAX_DESCRIPTION + 1), 400),
    ("escape \x1b[31m", 400),
    ("nul\x00", 400),
]


@pytest.mark.parametrize(("text", "expected"), DESCRIPTIONS)
def test_pc1_descriptions_allow_line_breaks_only(text: str, expected: int | None) -> None:
    assert status(rules.check_description(text)) == expected


BODIES = [
    ("hello", None),
    ("multi\nline\r\n\tindented", None),
    ("x" * MAX_BODY_BYTES, None),
    ("x" * (MAX_BODY_BYTES + 1), 400),
    ("é" * (MAX_BODY_BYTES // 2), None),             # 2 bytes each: exactly 16 KiB
    ("é" * (MAX_BODY_BYTES // 2) + "x", 400),       # limit counts bytes, not characters
    ("", 400),
    (" \n\t", 400),
    ("nul\x00byte", 400),
    ("escape \x1b[2J", 400),
    ("surrogate \udc80", 400),
]


@pytest.mark.parametrize(("body", "expected"), BODIES)
def test_pc1_message_bodies_are_text_of_at_most_16_kib(body: str,
                                                       expected: int | None) -> None:
    assert status(rules.check_body(body)) == expected
    assert status(rules.may_post(r(OPEN), MEMBER, body)) == expected


@pytest.mark.parametrize(("value", "expected"), [
    ("sip:alice@example.com", None), ("sips:bob@example.com", None),
    ("alice@example.com", 400), ("sip:with space@example.com", 400), ("sip:", 400),
])
def test_pc1_users_are_sip_addresses(value: str, expected: int | None) -> None:
    assert status(rules.check_aor(value)) == expected


@pytest.mark.parametrize(("value", "expected"), [
    ("6f1c2a1e-8d7b-4e55-9a0c-2b9f5d1e7a10", None), ("client-1:42", None),
    ("", 400), ("has space", 400), ("x" * 129, 400), ("newline\n", 400),
])
def test_pc1_message_ids_are_short_printable_tokens(value: str, expected: int | None) -> None:
    assert status(rules.check_message_id(value)) == expected
