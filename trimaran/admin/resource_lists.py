"""RFC 4826 resource-lists documents <-> `ContactList`.

Document format (what `render_resource_lists` writes and `parse_resource_lists` reads):

* The root is ``<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists">``.
* Every contact group is one ``<list name="GROUP">`` whose optional ``<display-name>``
  is the group's display name; groups keep their order. An empty group is an empty list.
* Every contact is an ``<entry uri="...">`` with an optional ``<display-name>``. A
  contact in several groups appears once in each group's list.
* Contacts in no group go in one list named ``""`` (written as ``<list name="">``,
  last). On input a list with ``name=""`` or with no ``name`` attribute means
  "ungrouped"; an entry that is also in a named list simply has that group.
* Entry URIs must be sip:, sips: or tel: URIs and are stored as their canonical
  address of record (``URI.aor``: parameters and port dropped, host lower-cased).
* When the same contact appears in several lists with different display names, the
  first non-empty one wins.
* Elements from other namespaces are ignored (RFC 4826 §3.2 extensibility).
  Nested ``<list>``, ``<entry-ref>`` and ``<external>`` are valid RFC 4826 but our
  groups are flat, so they are refused (409), as are two lists with one name or one
  list naming the same URI twice (RFC 4826 §3.4.1 uniqueness; RFC 4825 §8.2.5).

Parsing is defused: any DOCTYPE (hence any ENTITY declaration, internal or external)
is refused before expansion, and depth and element counts are bounded.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from xml.parsers import expat

from trimaran.sip.errors import SipParseError
from trimaran.sip.uri import URI
from trimaran.store.model import ContactEntry, ContactGroup, ContactList

NAMESPACE = "urn:ietf:params:xml:ns:resource-lists"
CONTENT_TYPE = "application/resource-lists+xml"
#: The list name that holds contacts in no group.
UNGROUPED = ""

MAX_DEPTH = 16
MAX_ELEMENTS = 20_000
MAX_NAME_LEN = 256
MAX_TEXT_LEN = 1024

_RL = f"{{{NAMESPACE}}}resource-lists"
_LIST = f"{{{NAMESPACE}}}list"
_ENTRY = f"{{{NAMESPACE}}}entry"
_DISPLAY_NAME = f"{{{NAMESPACE}}}display-name"
_UNSUPPORTED = {
    f"{{{NAMESPACE}}}entry-ref": "<entry-ref>",
    f"{{{NAMESPACE}}}external": "<external>",
}


class ResourceListsError(Exception):
    """The client's document is unacceptable; `status` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


# -- defused XML parsing ---------------------------------------------------------------


def _qname(name: str) -> str:
    # expat reports "namespace local" with namespace_separator=" "; ElementTree wants "{ns}local".
    ns, sep, local = name.rpartition(" ")
    return f"{{{ns}}}{local}" if sep else name


def _refuse_doctype(*_args: object) -> None:
    raise ResourceListsError("DOCTYPE declarations are not accepted")


def _refuse_entity(*_args: object) -> None:
    raise ResourceListsError("ENTITY declarations are not accepted")


def _refuse_external(*_args: object) -> int:
    raise ResourceListsError("external entities are not accepted")


def parse_xml(data: bytes) -> ET.Element:
    """Parse `data` into an element tree, refusing DOCTYPE/ENTITY and oversized trees.

    Raises `ResourceListsError` (400) naming the problem.
    """
    builder = ET.TreeBuilder()
    parser = expat.ParserCreate(namespace_separator=" ")
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    depth = 0
    elements = 0

    def start(name: str, attrs: dict[str, str]) -> None:
        nonlocal depth, elements
        depth += 1
        elements += 1
        if depth > MAX_DEPTH:
            raise ResourceListsError(f"document nested deeper than {MAX_DEPTH} elements")
        if elements > MAX_ELEMENTS:
            raise ResourceListsError(f"document has more than {MAX_ELEMENTS} elements")
        builder.start(_qname(name), {_qname(k): v for k, v in attrs.items()})

    def end(name: str) -> None:
        nonlocal depth
        depth -= 1
        builder.end(_qname(name))

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = builder.data
    parser.StartDoctypeDeclHandler = _refuse_doctype
    parser.EntityDeclHandler = _refuse_entity
    parser.UnparsedEntityDeclHandler = _refuse_entity
    parser.ExternalEntityRefHandler = _refuse_external
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        reason = expat.ErrorString(exc.code) if exc.code is not None else str(exc)
        raise ResourceListsError(
            f"malformed XML: {reason} at line {exc.lineno}, column {exc.offset}") from None
    except (LookupError, UnicodeError) as exc:     # an unknown or wrong declared encoding
        raise ResourceListsError(f"malformed XML: {exc}") from None
    return builder.close()


# -- document -> ContactList -----------------------------------------------------------


def _text(name: str, value: str, limit: int) -> str:
    if len(value) > limit:
        raise ResourceListsError(f"{name} longer than {limit} characters")
    if any(ord(c) < 0x20 and c not in "\t\n\r" for c in value):
        raise ResourceListsError(f"{name} contains a control character")
    return value


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _in_namespace(tag: str) -> bool:
    return tag.startswith(f"{{{NAMESPACE}}}")


def _display_name(element: ET.Element, where: str) -> str:
    names = element.findall(_DISPLAY_NAME)
    if len(names) > 1:
        raise ResourceListsError(f"{where} has more than one <display-name>")
    if not names:
        return ""
    text = "".join(names[0].itertext()).strip()
    return _text(f"display-name of {where}", text, MAX_TEXT_LEN)


def canonical_contact_uri(text: str) -> str:
    """The canonical AOR of an entry URI; `ResourceListsError` (400) if it is not one."""
    try:
        uri = URI.parse(text.strip())
    except SipParseError as exc:
        raise ResourceListsError(f"bad entry uri {text[:80]!r}: {exc.reason}") from None
    if uri.scheme == "tel" or uri.user is not None:
        return uri.aor
    raise ResourceListsError(f"bad entry uri {text[:80]!r}: no user part")


@dataclass(slots=True)
class _Contact:
    display_name: str
    groups: list[str]


def _parse_entry(entry: ET.Element, where: str) -> tuple[str, str]:
    raw = entry.get("uri")
    if raw is None:
        raise ResourceListsError(f"<entry> without a uri attribute in {where}")
    uri = canonical_contact_uri(_text("entry uri", raw, MAX_TEXT_LEN))
    for child in entry:
        if _in_namespace(child.tag) and child.tag != _DISPLAY_NAME:
            raise ResourceListsError(f"unexpected <{_local(child.tag)}> in <entry> {uri}")
    return uri, _display_name(entry, f"entry {uri}")


def _parse_list(
    element: ET.Element, contacts: dict[str, _Contact], groups: dict[str, ContactGroup],
) -> None:
    name = _text("list name", element.get("name", UNGROUPED), MAX_NAME_LEN)
    where = f"list {name!r}"
    if name != UNGROUPED:
        if name in groups:
            raise ResourceListsError(f"two lists are named {name!r}", 409)
        groups[name] = ContactGroup(name, _display_name(element, where))
    seen: set[str] = set()
    for child in element:
        if child.tag == _ENTRY:
            uri, display = _parse_entry(child, where)
            if uri in seen:
                raise ResourceListsError(f"{where} names {uri} twice", 409)
            seen.add(uri)
            contact = contacts.setdefault(uri, _Contact(display, []))
            if not contact.display_name:
                contact.display_name = display
            if name != UNGROUPED:
                contact.groups.append(name)
        elif child.tag == _LIST:
            raise ResourceListsError(f"nested <list> in {where} is not supported", 409)
        elif child.tag in _UNSUPPORTED:
            raise ResourceListsError(f"{_UNSUPPORTED[child.tag]} in {where} is not supported",
                                     409)
        elif _in_namespace(child.tag) and child.tag != _DISPLAY_NAME:
            raise ResourceListsError(f"unexpected <{_local(child.tag)}> in {where}")


def parse_resource_lists(data: bytes, owner: str) -> ContactList:
    """Parse an RFC 4826 document into `owner`'s `ContactList`.

    Raises `ResourceListsError` with status 400 (malformed or invalid) or 409 (valid
    but not storable: nesting, references, uniqueness).
    """
    root = parse_xml(data)
    if root.tag != _RL:
        raise ResourceListsError(
            f"root element must be <resource-lists> in namespace {NAMESPACE}, "
            f"not <{_local(root.tag)}>")
    contacts: dict[str, _Contact] = {}
    groups: dict[str, ContactGroup] = {}
    for child in root:
        if child.tag == _LIST:
            _parse_list(child, contacts, groups)
        elif _in_namespace(child.tag):
            raise ResourceListsError(f"unexpected <{_local(child.tag)}> in <resource-lists>")
    return ContactList(
        owner=owner,
        groups=tuple(groups.values()),
        contacts=tuple(ContactEntry(uri, c.display_name, tuple(c.groups))
                       for uri, c in contacts.items()),
    )


# -- ContactList -> document -----------------------------------------------------------

# Rendering builds unqualified tags under an explicit default xmlns: ElementTree's
# default_namespace option refuses the unqualified attributes (uri, name) RFC 4826 uses.


def _sub(parent: ET.Element, tag: str, attrib: dict[str, str] | None = None) -> ET.Element:
    return ET.SubElement(parent, tag, attrib or {})


def _add_entry(parent: ET.Element, contact: ContactEntry) -> None:
    entry = _sub(parent, "entry", {"uri": contact.uri})
    if contact.display_name:
        _sub(entry, "display-name").text = contact.display_name


def render_resource_lists(contact_list: ContactList) -> bytes:
    """The RFC 4826 document (UTF-8, with XML declaration) for `contact_list`."""
    root = ET.Element("resource-lists", {"xmlns": NAMESPACE})
    groups = list(contact_list.groups)
    declared = {g.name for g in groups}
    for contact in contact_list.contacts:  # a group referenced but not declared keeps its members
        for name in contact.groups:
            if name not in declared:
                declared.add(name)
                groups.append(ContactGroup(name))
    for group in groups:
        if group.name == UNGROUPED:
            continue
        element = _sub(root, "list", {"name": group.name})
        if group.display_name:
            _sub(element, "display-name").text = group.display_name
        for contact in contact_list.contacts:
            if group.name in contact.groups:
                _add_entry(element, contact)
    ungrouped = [c for c in contact_list.contacts if not any(c.groups)]
    if ungrouped:
        element = _sub(root, "list", {"name": UNGROUPED})
        for contact in ungrouped:
            _add_entry(element, contact)
    ET.indent(root)
    body: bytes = ET.tostring(root, encoding="UTF-8", xml_declaration=True)
    return body + b"\n"
