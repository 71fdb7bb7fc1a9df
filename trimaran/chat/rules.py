"""Who may do what in Persistent Chat, and which names and bodies are acceptable
(SPEC PC-1). Pure: no I/O, no clock.

Theory of operation: every check is one function returning None (allowed) or a
`ChatRefused` naming the status a front end should answer with (400 bad input,
403 forbidden, 404 no such room, 409 conflict) and why. The caller decides whether to
raise it. A room is judged together with the actor's role in it (None: not a member)
and the table below:

==========================  ===========  ===========  ===================
action                      open         closed       secret
==========================  ===========  ===========  ===================
see that the room exists    anyone       anyone       members (else 404)
read history / search       anyone       members      members
post                        anyone (*)   members      members
join oneself                anyone       managers     managers
add / remove others         managers     managers     managers
leave oneself               anyone       anyone       anyone
invite                      managers     managers     managers
change / disable the room   managers     managers     managers
==========================  ===========  ===========  ===================

(*) a non-member posting to an open room becomes a member (`joins_on_post`).
Nobody posts to a disabled room, and nobody but a manager changes its membership;
its history stays readable. Anyone may create a room; its creator becomes its manager.
A refusal of a secret room to a non-member is always "no such room", so the answer
never reveals that it exists.
"""

from __future__ import annotations

import re
import unicodedata

from trimaran.chat.model import MAX_BODY_BYTES, Category, Membership, Role, Room, RoomKind

MAX_NAME = 256               # characters of a room or category name
MAX_DESCRIPTION = 2048       # characters of a room or category description
MAX_AOR = 512
MAX_MESSAGE_ID = 128

#: The kinds of room that non-members may read (and search); the store's SQL uses it.
READABLE_BY_ANYONE: frozenset[RoomKind] = frozenset({RoomKind.OPEN})

_ID = re.compile(r"[A-Za-z0-9._:@+=/-]+")
_AOR = re.compile(r"sips?:[^\s]+", re.IGNORECASE)
_MULTILINE_OK = frozenset("\n\r\t")


class ChatRefused(Exception):
    """An action the rules refuse; `status_hint` is the status to answer with."""

    def __init__(self, status_hint: int, reason: str) -> None:
        super().__init__(reason)
        self.status_hint = status_hint
        self.reason = reason

    def __repr__(self) -> str:
        return f"ChatRefused({self.status_hint}, {self.reason!r})"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, ChatRefused) and other.status_hint == self.status_hint
                and other.reason == self.reason)

    def __hash__(self) -> int:
        return hash((self.status_hint, self.reason))


NO_SUCH_ROOM = "no such room"


def _bad(reason: str) -> ChatRefused:
    return ChatRefused(400, reason)


def _forbidden(reason: str) -> ChatRefused:
    return ChatRefused(403, reason)


def _no_such_room() -> ChatRefused:
    return ChatRefused(404, NO_SUCH_ROOM)


# --- text ------------------------------------------------------------------------------

def _bad_character(text: str, *, multiline: bool) -> str | None:
    """A description of the first unacceptable character of `text`, or None."""
    for index, char in enumerate(text):
        category = unicodedata.category(char)
        if category == "Cs":
            return f"an unpaired surrogate at position {index}"
        if category == "Cc" and not (multiline and char in _MULTILINE_OK):
            return f"control character U+{ord(char):04X} at position {index}"
    return None


def check_name(name: str, what: str = "room name") -> ChatRefused | None:
    """A room or category name: 1 to `MAX_NAME` characters, no control characters, no
    leading or trailing blanks."""
    if not name.strip():
        return _bad(f"the {what} is empty")
    if len(name) > MAX_NAME:
        return _bad(f"the {what} is longer than {MAX_NAME} characters")
    if name != name.strip():
        return _bad(f"the {what} starts or ends with blanks")
    bad = _bad_character(name, multiline=False)
    return None if bad is None else _bad(f"the {what} contains {bad}")


def check_description(text: str) -> ChatRefused | None:
    """A description: up to `MAX_DESCRIPTION` characters; line breaks and tabs allowed,
    no other control characters."""
    if len(text) > MAX_DESCRIPTION:
        return _bad(f"the description is longer than {MAX_DESCRIPTION} characters")
    bad = _bad_character(text, multiline=True)
    return None if bad is None else _bad(f"the description contains {bad}")


def check_body(body: str) -> ChatRefused | None:
    """A message body: not blank, at most `MAX_BODY_BYTES` bytes of UTF-8; line breaks and
    tabs allowed, no other control characters."""
    if not body.strip():
        return _bad("the message is empty")
    bad = _bad_character(body, multiline=True)
    if bad is not None:
        return _bad(f"the message contains {bad}")
    if len(body.encode("utf-8")) > MAX_BODY_BYTES:
        return _bad(f"the message is longer than {MAX_BODY_BYTES} bytes")
    return None


def check_aor(aor: str) -> ChatRefused | None:
    """A user's address: ``sip:``/``sips:`` URI, no blanks or control characters."""
    if len(aor) > MAX_AOR or not _AOR.fullmatch(aor) or _bad_character(aor, multiline=False):
        return _bad(f"{aor[:80]!r} is not a user address (sip:user@domain)")
    return None


def check_message_id(message_id: str) -> ChatRefused | None:
    """A client's message id: 1 to `MAX_MESSAGE_ID` characters of [A-Za-z0-9._:@+=/-]."""
    if len(message_id) > MAX_MESSAGE_ID or not _ID.fullmatch(message_id):
        return _bad(f"{message_id[:80]!r} is not a message id (1 to {MAX_MESSAGE_ID} "
                    "letters, digits or ._:@+=/-)")
    return None


def _first(*refusals: ChatRefused | None) -> ChatRefused | None:
    return next((r for r in refusals if r is not None), None)


# --- visibility ------------------------------------------------------------------------

def visible(room: Room | None, role: Role | None) -> bool:
    """Whether an actor with `role` in `room` (None: not a member) knows it exists."""
    return room is not None and (room.kind is not RoomKind.SECRET or role is not None)


def _hidden(room: Room | None, role: Role | None) -> ChatRefused | None:
    return None if visible(room, role) else _no_such_room()


# --- actions ---------------------------------------------------------------------------

def may_create_category(category: Category) -> ChatRefused | None:
    """Anyone may create a category with an acceptable name and description."""
    return _first(check_name(category.name, "category name"),
                  check_description(category.description))


def may_create_room(room: Room, category: Category | None, creator: str) -> ChatRefused | None:
    """Anyone may create a room in an existing category (`category`: the one the room
    names, None when there is none); the creator becomes its manager."""
    return _first(check_name(room.name), check_description(room.description),
                  check_aor(creator),
                  None if category is not None else
                  ChatRefused(404, f"no such category {room.category!r}"))


def may_change_room(room: Room | None, role: Role | None,
                    new: Room | None = None) -> ChatRefused | None:
    """Managers change (and disable or enable) a room, whatever its kind. `new`, when
    given, is the room as it would be: its description is validated and its name must
    stay."""
    refusal = _hidden(room, role)
    if refusal is not None:
        return refusal
    if role is not Role.MANAGER:
        return _forbidden("only the room's managers may change it")
    if new is not None:
        assert room is not None
        if new.name != room.name:
            return _bad("a room cannot be renamed")
        return check_description(new.description)
    return None


def may_add_member(room: Room | None, role: Role | None, actor: str,
                   membership: Membership) -> ChatRefused | None:
    """Managers add members (or change their role); anyone joins an open, enabled room
    themselves as a plain member."""
    refusal = _first(_hidden(room, role), check_aor(membership.user))
    if refusal is not None:
        return refusal
    assert room is not None
    if role is Role.MANAGER:
        return None
    if (membership.user == actor and room.kind is RoomKind.OPEN
            and membership.role is Role.MEMBER):
        if room.disabled:
            return _forbidden("the room is disabled")
        return None
    if membership.user == actor and membership.role is Role.MEMBER and role is Role.MEMBER:
        return None           # already a member: nothing changes
    return _forbidden("only the room's managers may add members or change roles")


def may_remove_member(room: Room | None, role: Role | None, actor: str,
                      user: str) -> ChatRefused | None:
    """Managers remove members; anyone leaves a room themselves."""
    refusal = _hidden(room, role)
    if refusal is not None:
        return refusal
    if role is Role.MANAGER or user == actor:
        return None
    return _forbidden("only the room's managers may remove members")


def may_invite(room: Room | None, role: Role | None, invitee: str) -> ChatRefused | None:
    """Managers invite users to an enabled room."""
    refusal = _first(_hidden(room, role), check_aor(invitee))
    if refusal is not None:
        return refusal
    assert room is not None
    if role is not Role.MANAGER:
        return _forbidden("only the room's managers may invite")
    if room.disabled:
        return _forbidden("the room is disabled")
    return None


def may_read(room: Room | None, role: Role | None) -> ChatRefused | None:
    """Members read a room's history and search it; anyone reads an open room."""
    refusal = _hidden(room, role)
    if refusal is not None:
        return refusal
    assert room is not None
    if role is None and room.kind not in READABLE_BY_ANYONE:
        return _forbidden("only the room's members may read it")
    return None


def may_post(room: Room | None, role: Role | None, message_body: str | None = None
             ) -> ChatRefused | None:
    """Members post to a room, anyone to an open one; nobody to a disabled one.
    `message_body`, when given, is validated too."""
    refusal = _hidden(room, role)
    if refusal is not None:
        return refusal
    assert room is not None
    if room.disabled:
        return _forbidden("the room is disabled")
    if role is None and room.kind is not RoomKind.OPEN:
        return _forbidden("only the room's members may post to it")
    return None if message_body is None else check_body(message_body)


def joins_on_post(room: Room, role: Role | None) -> bool:
    """Whether posting makes the author a member (a non-member posting to an open room)."""
    return role is None and room.kind is RoomKind.OPEN
