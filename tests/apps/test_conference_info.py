"""RFC 4575 conference-info documents and the subscriber's roster (SPEC APP-7): what
the focus writes, what a subscriber makes of full and partial documents in version
order, and what is refused. Also the focus's SDP answer to an IM session offer."""

from __future__ import annotations

import contextlib
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trimaran.apps.conference import im_answer
from trimaran.apps.conference_info import (
    NAMESPACE,
    ConferenceInfo,
    ConferenceInfoError,
    Endpoint,
    Roster,
    RosterGap,
    UserInfo,
    deleted_user,
    full_state,
    parse,
    partial_state,
    render,
)

FOCUS = "sip:olga@trimaran.test;opaque=app:conf:focus:id:m1"
ALICE, BOB, CAROL = (f"sip:{n}@trimaran.test" for n in ("alice", "bob", "carol"))


def user(aor: str, *contacts: str, display: str | None = None,
         role: str = "attendee") -> UserInfo:
    return UserInfo(aor, display, (role,), tuple(
        Endpoint(c, call_id=f"cid-{i}@h", from_tag=f"f{i}", to_tag=f"t{i}")
        for i, c in enumerate(contacts or (f"{aor}:5070",))))


def roundtrip(info: ConferenceInfo) -> ConferenceInfo:
    return parse(render(info))


def test_a_full_document_carries_subject_count_users_and_their_dialogs() -> None:
    alice = user(ALICE, "sip:alice@127.0.34.31:40001;transport=tcp", display="Alice A.",
                 role="presenter")
    bob = user(BOB, "sip:bob@127.0.34.32:40002;transport=tcp")
    info = full_state(FOCUS, 1, [bob, alice], subject="Weekly <sync> & plan")

    parsed = roundtrip(info)

    assert parsed == info
    assert parsed.state == "full" and parsed.version == 1
    assert parsed.subject == "Weekly <sync> & plan"
    assert parsed.user_count == 2 and parsed.active is True
    assert [u.entity for u in parsed.users] == [ALICE, BOB]            # sorted by AOR
    endpoint = parsed.users[0].endpoints[0]
    assert (endpoint.status, endpoint.joining_method, endpoint.media) == \
        ("connected", "dialed-in", ("message",))
    assert (endpoint.call_id, endpoint.from_tag, endpoint.to_tag) == ("cid-0@h", "f0", "t0")
    assert parsed.users[0].display == "Alice A." and parsed.users[0].roles == ("presenter",)


def test_the_document_is_rfc4575_xml_in_its_namespace() -> None:
    body = render(full_state(FOCUS, 3, [user(ALICE)]))
    root = ET.fromstring(body)
    ns = f"{{{NAMESPACE}}}"
    assert body.startswith(b"<?xml")
    assert root.tag == ns + "conference-info"
    assert root.attrib == {"entity": FOCUS, "state": "full", "version": "3"}
    users = root.find(ns + "users")
    assert users is not None and users.get("state") == "full"
    assert [u.get("entity") for u in users.findall(ns + "user")] == [ALICE]


def test_an_empty_conference_is_inactive_with_no_users() -> None:
    parsed = roundtrip(full_state(FOCUS, 1, []))
    assert (parsed.user_count, parsed.active, parsed.users) == (0, False, ())


def test_a_partial_document_names_only_who_changed_and_deleted_users_have_no_detail() -> None:
    info = partial_state(FOCUS, 4, [deleted_user(BOB), user(CAROL)], user_count=2)
    parsed = roundtrip(info)
    assert parsed.state == "partial" and parsed.version == 4 and parsed.user_count == 2
    assert parsed.users == (UserInfo(BOB, state="deleted"), info.users[1])
    assert b"<endpoint" not in render(partial_state(FOCUS, 1, [deleted_user(BOB)], 0))


def test_roster_follows_joins_and_leaves_in_version_order() -> None:
    """APP-7: full state first, then one partial document per join or leave, each one
    version higher; the subscriber ends with who is in the conference."""
    roster = Roster()
    assert roster.apply(roundtrip(full_state(FOCUS, 1, [user(ALICE)], subject="s")))
    assert roster.participants() == [ALICE] and roster.version == 1

    assert roster.apply(roundtrip(partial_state(FOCUS, 2, [user(BOB)], 2)))
    assert roster.apply(roundtrip(partial_state(FOCUS, 3, [user(CAROL)], 3)))
    assert roster.participants() == [ALICE, BOB, CAROL] and roster.user_count == 3

    assert roster.apply(roundtrip(partial_state(FOCUS, 4, [deleted_user(BOB)], 2)))
    assert roster.participants() == [ALICE, CAROL]
    assert (roster.version, roster.user_count, roster.subject) == (4, 2, "s")


def test_a_stale_document_is_ignored() -> None:
    roster = Roster()
    roster.apply(full_state(FOCUS, 1, [user(ALICE)]))
    roster.apply(partial_state(FOCUS, 2, [user(BOB)], 2))
    assert not roster.apply(partial_state(FOCUS, 2, [deleted_user(ALICE)], 1))
    assert not roster.apply(full_state(FOCUS, 1, []))
    assert roster.participants() == [ALICE, BOB] and roster.version == 2


def test_a_missed_version_or_a_partial_before_any_full_state_is_a_gap() -> None:
    """RFC 4575 §4.6: the subscriber must refresh to get the full state."""
    with pytest.raises(RosterGap):
        Roster().apply(partial_state(FOCUS, 1, [user(ALICE)], 1))
    roster = Roster()
    roster.apply(full_state(FOCUS, 1, [user(ALICE)]))
    with pytest.raises(RosterGap):
        roster.apply(partial_state(FOCUS, 3, [user(BOB)], 2))
    assert roster.participants() == [ALICE] and roster.version == 1
    assert roster.apply(full_state(FOCUS, 5, [user(BOB)]))       # the refresh's answer
    assert roster.participants() == [BOB]


def test_a_partial_user_is_merged_endpoint_by_endpoint() -> None:
    """A user on two devices leaves from one: still in the conference."""
    roster = Roster()
    roster.apply(full_state(FOCUS, 1, [user(ALICE, "sip:a@h1", "sip:a@h2",
                                            display="Alice")]))
    change = UserInfo(ALICE, state="partial", endpoints=(Endpoint("sip:a@h1",
                                                                  state="deleted"),))
    assert roster.apply(roundtrip(partial_state(FOCUS, 2, [change], 1)))
    kept = roster.users[ALICE]
    assert [e.entity for e in kept.endpoints] == ["sip:a@h2"]
    assert kept.display == "Alice" and kept.roles == ("attendee",)
    assert roster.participants() == [ALICE]


def test_a_disconnected_endpoint_is_not_a_participant() -> None:
    roster = Roster()
    gone = UserInfo(ALICE, endpoints=(Endpoint("sip:a@h1", status="disconnected"),))
    roster.apply(roundtrip(full_state(FOCUS, 1, [gone, user(BOB)])))
    assert roster.participants() == [BOB]


def test_unknown_elements_and_other_namespaces_are_ignored() -> None:
    body = f"""<?xml version="1.0"?>
<conference-info xmlns="{NAMESPACE}" xmlns:x="urn:example" entity="{FOCUS}"
    state="full" version="7">
  <x:extra>ignored</x:extra>
  <conference-state><user-count>1</user-count><x:more/></conference-state>
  <users><user entity="{ALICE}"><x:flag/><endpoint entity="sip:a@h">
    <status>connected</status><unknown/></endpoint></user></users>
</conference-info>""".encode()
    info = parse(body)
    assert info.version == 7 and info.user_count == 1
    assert [u.entity for u in info.users] == [ALICE]
    assert info.users[0].endpoints[0].status == "connected"


@pytest.mark.parametrize(("body", "why"), [
    (b"<conference-info", "malformed"),
    (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><x/>', "DOCTYPE"),
    (f'<resource-lists xmlns="{NAMESPACE}"/>'.encode(), "root element"),
    (f'<conference-info xmlns="{NAMESPACE}" entity="{FOCUS}"/>'.encode(), "without version"),
    (f'<conference-info xmlns="{NAMESPACE}" entity="{FOCUS}" version="x"/>'.encode(),
     "version"),
    (f'<conference-info xmlns="{NAMESPACE}" version="1"/>'.encode(), "without entity"),
    (f'<conference-info xmlns="{NAMESPACE}" entity="{FOCUS}" version="1" '
     f'state="bogus"/>'.encode(), "state"),
    (f'<conference-info xmlns="{NAMESPACE}" entity="{FOCUS}" version="1" '
     f'state="deleted"/>'.encode(), "deleted"),
    (f'<conference-info xmlns="{NAMESPACE}" entity="{FOCUS}" version="1"><users>'
     f'<user/></users></conference-info>'.encode(), "without entity"),
    (f'<conference-info xmlns="{NAMESPACE}" entity="{FOCUS}" version="1">'
     f'<conference-state><user-count>-1</user-count></conference-state>'
     f'</conference-info>'.encode(), "user-count"),
])
def test_an_unusable_document_is_refused_naming_the_problem(body: bytes, why: str) -> None:
    with pytest.raises(ConferenceInfoError, match=why):
        parse(body)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_only_our_error_escapes_parsing_arbitrary_bytes(data: bytes) -> None:
    with contextlib.suppress(ConferenceInfoError):
        parse(data)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0), st.binary(min_size=1, max_size=8))
def test_only_our_error_escapes_parsing_a_damaged_document(cut: int, junk: bytes) -> None:
    body = render(full_state(FOCUS, 2, [user(ALICE), user(BOB)], subject="x"))
    at = cut % len(body)
    with contextlib.suppress(ConferenceInfoError):
        parse(body[:at] + junk + body[at + len(junk):])


# -- the focus's answer to an IM session offer ------------------------------------------------


def test_the_focus_answers_message_media_and_refuses_the_rest() -> None:
    offer = (b"v=0\r\no=- 1 1 IN IP4 127.0.34.31\r\ns=-\r\nc=IN IP4 127.0.34.31\r\nt=0 0\r\n"
             b"m=message 5060 sip null\r\na=accept-types:text/plain\r\n"
             b"m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
    answer = im_answer(offer, "127.0.34.1", 42)
    assert answer is not None
    lines = answer.decode().split("\r\n")
    assert "c=IN IP4 127.0.34.1" in lines and "o=trimaran-focus 42 42 IN IP4 127.0.34.1" in lines
    assert lines.index("m=message 5060 sip null") + 1 == lines.index(
        "a=accept-types:text/plain")
    assert "m=audio 0 RTP/AVP 0" in lines and "a=rtpmap:0 PCMU/8000" not in lines


def test_an_offer_without_message_media_gets_no_answer() -> None:
    assert im_answer(b"v=0\r\nm=audio 40000 RTP/AVP 0\r\n", "127.0.34.1", 1) is None
    assert im_answer(b"garbage", "127.0.34.1", 1) is None
