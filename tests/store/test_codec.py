"""The change-log payload codec: every record round-trips exactly; bad input is a CodecError."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trimaran.store import (
    CATEGORY_TYPES,
    Binding,
    Change,
    CodecError,
    ContactEntry,
    ContactGroup,
    ContactList,
    Credentials,
    Heartbeat,
    Meeting,
    PresenceRule,
    Publication,
    StoreError,
    Subscription,
    User,
    decode,
    decode_change,
    encode,
)
from trimaran.store.codec import RECORD_TYPES
from trimaran.store.model import CmsDocument, MeetingContent

text = st.text(max_size=20)
numbers = st.floats(allow_nan=False, allow_infinity=False)
ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)

users = st.builds(User, text, text, text, st.none() | text, st.booleans())
credentials = st.builds(Credentials, text, text, text, text, text)
bindings = st.builds(Binding, text, text, numbers, text, ints, text, text, text,
                     st.none() | text, st.none() | ints, numbers, text)
groups = st.builds(ContactGroup, text, text)
entries = st.builds(ContactEntry, text, text, st.lists(text, max_size=3).map(tuple))
contact_lists = st.builds(ContactList, text, st.lists(groups, max_size=3).map(tuple),
                          st.lists(entries, max_size=3).map(tuple))
rules = st.builds(PresenceRule, text, text, text)
publications = st.builds(Publication, text, text, text, text, st.binary(max_size=64), numbers,
                         text)
subscriptions = st.builds(Subscription, text, text, text, text, numbers, text, text)
meetings = st.builds(Meeting, text, text, text, numbers, st.none() | numbers,
                     st.lists(text, max_size=3).map(tuple))
heartbeats = st.builds(Heartbeat, text, text, numbers, text, st.dictionaries(text, text,
                                                                              max_size=3))
changes = st.builds(Change, ints, text, text, text, text, text, numbers)
contents = st.builds(MeetingContent, text, text, text, ints)
documents = st.builds(CmsDocument, text, text, ints, numbers)
records = st.one_of(users, credentials, bindings, groups, entries, contact_lists, rules,
                    publications, subscriptions, meetings, heartbeats, changes, contents,
                    documents)


@given(records)
def test_every_record_round_trips_exactly(record: object) -> None:
    payload = encode(record)
    assert decode(type(record), payload) == record
    assert encode(decode(type(record), payload)) == payload      # canonical text
    json.loads(payload)                                           # plain JSON


def test_the_strategies_cover_every_record_type() -> None:
    covered = {User, Credentials, Binding, ContactGroup, ContactEntry, ContactList,
               PresenceRule, Publication, Subscription, Meeting, Heartbeat, Change,
               MeetingContent, CmsDocument}
    assert covered == set(RECORD_TYPES)


def test_bytes_are_base64_and_keys_sorted() -> None:
    p = Publication("sip:a@x", "e1", "presence", "text/plain", b"\x00\xffhi", 1.5)
    assert encode(p) == ('{"aor":"sip:a@x","body":"AP9oaQ==","content_type":"text/plain",'
                         '"etag":"e1","event":"presence","expires_at":1.5,"server":""}')


def test_an_int_given_for_a_float_field_decodes_as_a_float() -> None:
    m = Meeting("m1", "sip:a@x", created_at=3)
    back = decode(Meeting, encode(m))
    assert back == m and isinstance(back.created_at, float)


def test_a_missing_key_takes_the_field_default() -> None:
    assert decode(User, '{"aor":"sip:a@x","pool":"fe1"}') == User("sip:a@x", "fe1")


@pytest.mark.parametrize("cls,payload,problem", [
    (User, "not json", "not JSON"),
    (User, "[]", "expected an object"),
    (User, '{"aor":"a","pool":"p","colour":"red"}', "unknown keys colour"),
    (User, '{"pool":"p"}', "missing key aor"),
    (User, '{"aor":1,"pool":"p"}', r"User\.aor: expected str"),
    (User, '{"aor":"a","pool":"p","enabled":1}', "expected bool"),
    (Binding, '{"aor":"a","contact":"c","expires_at":NaN,"call_id":"i","cseq":1,'
              '"server":"s"}', "non-finite"),
    (Binding, '{"aor":"a","contact":"c","expires_at":1,"call_id":"i","cseq":true,'
              '"server":"s"}', "expected int"),
    (Publication, '{"aor":"a","etag":"e","event":"v","content_type":"t","body":"!!",'
                  '"expires_at":1}', "invalid base64"),
    (ContactList, '{"owner":"o","groups":{}}', "expected an array"),
    (Heartbeat, '{"server":"s","pool":"p","at":1,"info":{"k":1}}', "object of strings"),
])
def test_malformed_payloads_are_codec_errors(cls: type, payload: str, problem: str) -> None:
    with pytest.raises(CodecError, match=problem):
        decode(cls, payload)


@pytest.mark.parametrize("record,problem", [
    ("just a string", "not a store record"),
    (Meeting("m", "o", created_at=math.inf), "non-finite"),
    (Meeting("m", "o", attendees=["a"]), "expected a tuple"),        # type: ignore[arg-type]
    (User("a", "p", enabled=1), "expected bool"),                    # type: ignore[arg-type]
    (ContactList("o", (ContactEntry("u"),)), "expected ContactGroup"),  # type: ignore[arg-type]
    (Heartbeat("s", "p", 1.0, info={"k": 1}), "dict of str to str"),  # type: ignore[dict-item]
])
def test_records_that_would_not_round_trip_are_refused(record: object, problem: str) -> None:
    with pytest.raises(CodecError, match=problem) as info:
        encode(record)
    assert isinstance(info.value, StoreError)


def test_decode_change_uses_the_category_type() -> None:
    rule = PresenceRule("sip:a@x", "*", "allow")
    put = Change(1, "fe1", "presence-rules", "sip:a@x|*", "put", encode(rule), 1.0)
    assert decode_change(put) == rule
    assert decode_change(Change(2, "fe1", "meeting", "m1", "delete", "", 1.0)) is None
    assert set(CATEGORY_TYPES) == {"user", "credentials", "contacts", "presence-rules",
                                   "presence", "meeting", "meeting-content", "cms"}
    content = MeetingContent("m1", "slides.pdf", "ab" * 32, 3)
    assert decode_change(Change(3, "fe1", "meeting-content", "m1/slides.pdf", "put",
                                encode(content), 1.0)) == content
    doc = CmsDocument("topology", "{}", 7, 2.5)
    assert decode_change(Change(4, "fe1", "cms", "topology", "put", encode(doc), 1.0)) == doc
    with pytest.raises(CodecError, match="unknown category"):
        decode_change(Change(3, "fe1", "bindings", "k", "put", "{}", 1.0))
    with pytest.raises(CodecError, match="unknown op"):
        decode_change(Change(4, "fe1", "meeting", "m1", "patch", "{}", 1.0))
    with pytest.raises(CodecError, match="no payload"):
        decode_change(Change(5, "fe1", "meeting", "m1", "delete", "{}", 1.0))
