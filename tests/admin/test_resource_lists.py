"""RFC 4826 resource-lists documents <-> ContactList (SPEC OPS-5: bad input gets a clear error)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trimaran.admin.resource_lists import (
    MAX_DEPTH,
    NAMESPACE,
    ResourceListsError,
    parse_resource_lists,
    parse_xml,
    render_resource_lists,
)
from trimaran.store.model import ContactEntry, ContactGroup, ContactList

OWNER = "sip:alice@example.com"

# Hand-written in the style of RFC 4826 §3.3: XML declaration, a prefixed foreign
# namespace, xsi attributes, comments, an extension element, entries in two lists, an
# empty list, an unnamed list, case and parameters in URIs.
RFC4826_STYLE = b"""<?xml version="1.0" encoding="UTF-8"?>
<!-- Alice's buddy list -->
<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists"
    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
    xmlns:ext="urn:example:ext">
  <list name="friends">
    <display-name xml:lang="en">Friends</display-name>
    <entry uri="sip:bill@example.com">
      <display-name>Bill Doe</display-name>
      <ext:nickname>billy</ext:nickname>
    </entry>
    <entry uri="sip:Joe@EXAMPLE.com;transport=tcp">
      <display-name>
        Joe Smith
      </display-name>
    </entry>
  </list>
  <list name="work">
    <entry uri="sip:bill@example.com"/>
    <entry uri="tel:+15551234567"><display-name>Desk &amp; Phone</display-name></entry>
  </list>
  <list name="empty"/>
  <ext:settings sort="alpha"/>
  <list>
    <entry uri="sip:nancy@example.com"><display-name>Nancy Gross</display-name></entry>
  </list>
</resource-lists>
"""


def doc(inner: str) -> bytes:
    return f'<resource-lists xmlns="{NAMESPACE}">{inner}</resource-lists>'.encode()


def rejected(data: bytes) -> ResourceListsError:
    with pytest.raises(ResourceListsError) as info:
        parse_resource_lists(data, OWNER)
    return info.value


def test_hand_written_rfc4826_document_parses_into_groups_and_contacts() -> None:
    cl = parse_resource_lists(RFC4826_STYLE, OWNER)
    assert cl.owner == OWNER
    assert cl.groups == (ContactGroup("friends", "Friends"), ContactGroup("work"),
                         ContactGroup("empty"))
    assert cl.contacts == (
        ContactEntry("sip:bill@example.com", "Bill Doe", ("friends", "work")),
        ContactEntry("sip:Joe@example.com", "Joe Smith", ("friends",)),
        ContactEntry("tel:+15551234567", "Desk & Phone", ("work",)),
        ContactEntry("sip:nancy@example.com", "Nancy Gross", ()),
    )


def test_rendered_document_lists_a_contact_in_each_of_its_groups_and_ungrouped_last() -> None:
    cl = ContactList(OWNER, (ContactGroup("friends", "Friends"), ContactGroup("work")), (
        ContactEntry("sip:carol@example.com"),
        ContactEntry("sip:bob@example.com", "Bob <&>", ("friends", "work")),
    ))
    root = parse_xml(render_resource_lists(cl))
    ns = {"rl": NAMESPACE}
    lists = root.findall("rl:list", ns)
    assert [e.get("name") for e in lists] == ["friends", "work", ""]
    assert lists[0].findtext("rl:display-name", namespaces=ns) == "Friends"
    assert [e.get("uri") for e in lists[1].findall("rl:entry", ns)] == ["sip:bob@example.com"]
    assert lists[1].findtext("rl:entry/rl:display-name", namespaces=ns) == "Bob <&>"
    assert [e.get("uri") for e in lists[2].findall("rl:entry", ns)] == ["sip:carol@example.com"]


def test_group_referenced_by_a_contact_but_not_declared_is_still_rendered() -> None:
    cl = ContactList(OWNER, (), (ContactEntry("sip:bob@example.com", "", ("ghost",)),))
    parsed = parse_resource_lists(render_resource_lists(cl), OWNER)
    assert parsed.groups == (ContactGroup("ghost"),)
    assert parsed.contacts == cl.contacts


def test_empty_list_round_trips() -> None:
    empty = ContactList(OWNER)
    assert parse_resource_lists(render_resource_lists(empty), OWNER) == empty


def test_first_non_empty_display_name_wins_across_lists() -> None:
    cl = parse_resource_lists(doc(
        '<list name="a"><entry uri="sip:x@h"/></list>'
        '<list name="b"><entry uri="sip:x@h"><display-name>X</display-name></entry></list>'
        '<list name="c"><entry uri="sip:x@h"><display-name>Y</display-name></entry></list>'),
        OWNER)
    assert cl.contacts == (ContactEntry("sip:x@h", "X", ("a", "b", "c")),)


# -- hostile and invalid input -----------------------------------------------------------

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists">
  <list name="&lol4;"/>
</resource-lists>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists">
  <list name="x"><entry uri="sip:a@b"><display-name>&xxe;</display-name></entry></list>
</resource-lists>"""


@pytest.mark.parametrize("data, words", [
    (BILLION_LAUGHS, "DOCTYPE"),
    (EXTERNAL_ENTITY, "DOCTYPE"),
    (b'<!DOCTYPE resource-lists SYSTEM "http://example.com/x.dtd"><resource-lists/>',
     "DOCTYPE"),
    (doc('<list name="&undefined;"/>'), "undefined entity"),
    (b"", "malformed XML"),
    (b"<resource-lists", "malformed XML"),
    (doc("<list name='a'></lst>"), "malformed XML"),
    (b"\xff\xfe\x00garbage", "malformed XML"),
    (b'<resource-lists xmlns="urn:wrong"/>', "root element must be <resource-lists>"),
    (b"<resource-lists/>", "root element must be <resource-lists>"),
    (doc("<entry uri='sip:a@b'/>"), "unexpected <entry> in <resource-lists>"),
    (doc("<list name='a'><entry/></list>"), "without a uri"),
    (doc("<list name='a'><entry uri='http://example.com/'/></list>"), "bad entry uri"),
    (doc("<list name='a'><entry uri='sip:example.com'/></list>"), "no user part"),
    (doc("<list name='a'><entry uri='sip:a@b'><bogus/></entry></list>"), "unexpected <bogus>"),
    (doc("<list name='a'><display-name>1</display-name><display-name>2</display-name></list>"),
     "more than one <display-name>"),
    (doc("<list name='a'><entry uri='sip:a@b'><display-name>&#1;</display-name></entry>"
         "</list>"), "malformed XML"),
    (doc(f"<list name='{'n' * 300}'/>"), "longer than"),
    (doc("<list name='a'>" + "<x:e xmlns:x='urn:x'>" * MAX_DEPTH + "</x:e>" * MAX_DEPTH
         + "</list>"), "nested deeper"),
])
def test_invalid_documents_are_rejected_with_400_naming_the_problem(data: bytes,
                                                                   words: str) -> None:
    error = rejected(data)
    assert error.status == 400
    assert words in error.message


@pytest.mark.parametrize("data, words", [
    (doc("<list name='a'/><list name='a'/>"), "two lists are named 'a'"),
    (doc("<list name='a'><entry uri='sip:x@h'/><entry uri='sip:x@H;lr'/></list>"),
     "names sip:x@h twice"),
    (doc("<list name='a'><list name='b'/></list>"), "nested <list>"),
    (doc("<list name='a'><entry-ref ref='x'/></list>"), "<entry-ref>"),
    (doc("<list name='a'><external anchor='http://x/'/></list>"), "<external>"),
])
def test_valid_but_unstorable_documents_are_rejected_with_409(data: bytes, words: str) -> None:
    error = rejected(data)
    assert error.status == 409
    assert words in error.message


# -- round trip ---------------------------------------------------------------------------

_names = st.text(st.characters(codec="utf-8", categories=("L", "N", "P", "Zs")),
                 min_size=1, max_size=12).map(str.strip).filter(bool)
_users = st.text("abcdefghijklmnopqrstuvwxyz0123456789.-_", min_size=1, max_size=10)
_hosts = st.sampled_from(["example.com", "trimaran.test", "10.0.0.1"])
_uris = st.one_of(
    st.builds(lambda u, h: f"sip:{u}@{h}", _users, _hosts),
    st.integers(1000, 10**12).map(lambda n: f"tel:+{n}"),
)


@st.composite
def contact_lists(draw: st.DrawFn) -> ContactList:
    group_names = draw(st.lists(_names, max_size=5, unique=True))
    groups = tuple(ContactGroup(n, draw(st.one_of(st.just(""), _names))) for n in group_names)
    uris = draw(st.lists(_uris, max_size=8, unique=True))
    contacts = tuple(
        ContactEntry(uri, draw(st.one_of(st.just(""), _names)),
                     tuple(draw(st.lists(st.sampled_from(group_names), unique=True)))
                     if group_names else ())
        for uri in uris)
    return ContactList(OWNER, groups, contacts)


def canonical(cl: ContactList) -> ContactList:
    """The order a document imposes: contacts by first list they appear in, groups in list order."""
    order = {g.name: i for i, g in enumerate(cl.groups)}
    grouped = [c for g in cl.groups for c in cl.contacts if g.name in c.groups]
    firsts = list(dict.fromkeys(grouped)) + [c for c in cl.contacts if not c.groups]
    return ContactList(cl.owner, cl.groups, tuple(
        ContactEntry(c.uri, c.display_name, tuple(sorted(c.groups, key=order.__getitem__)))
        for c in firsts))


@settings(max_examples=200, deadline=None)
@given(contact_lists())
def test_render_then_parse_gives_back_the_same_list(cl: ContactList) -> None:
    parsed = parse_resource_lists(render_resource_lists(cl), OWNER)
    assert parsed == canonical(cl)
    assert {c.uri: set(c.groups) for c in parsed.contacts} == \
        {c.uri: set(c.groups) for c in cl.contacts}


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_only_ever_raise_resource_lists_error(data: bytes) -> None:
    try:
        parse_resource_lists(data, OWNER)
    except ResourceListsError as error:
        assert error.status in (400, 409)


def test_an_unknown_declared_encoding_is_a_clear_400_not_a_crash() -> None:
    """Bad input gets a clear error: the XML declaration names an encoding nobody has."""
    with pytest.raises(ResourceListsError, match="unknown encoding"):
        parse_xml(b'<?xml version="1.0" encoding="ATF-8"?><resource-lists/>')
