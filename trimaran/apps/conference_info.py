"""RFC 4575 conference-info documents: the roster of a conference (SPEC APP-7). Pure.

A focus tells each subscriber to a conference's ``conference`` event who is in it with
`ConferenceInfo` documents (``application/conference-info+xml``). Theory of operation:

* Versions are counted per subscription (RFC 4575 §4.1): the focus numbers the
  documents it sends one subscriber 1, 2, 3 … whatever other subscribers got.
* The first document of a subscription (and the answer to every refresh) is the full
  state (``state="full"``): the conference's subject, user count, and every user with
  their endpoints. Later documents are partial (``state="partial"``, §4.6): only the
  users that changed, each whole (``state="full"``) or gone (``state="deleted"``),
  with the new user count.
* A subscriber (`Roster`) replaces everything on a full document and merges a partial
  one into what it has (§4.6.1..§4.6.3: a ``full`` element replaces its predecessor, a
  ``partial`` one is merged, a ``deleted`` one removed). A document whose version is
  not above the last one is stale and ignored; a partial document that skips a version
  (or comes before any full one) is `RosterGap`: the subscriber refreshes its
  subscription to get the full state again.

What we write for each user (`UserInfo`): the AOR as ``entity``, ``display-text``, the
roles (``presenter`` for the organizer, ``attendee`` for the others), and one
``endpoint`` per dialog the user joined with (entity: the Contact of that dialog)
carrying its ``status``, the ``joining-method``, its media (``message``) and the SIP
dialog in ``call-info``.

Parsing is defused (no DOCTYPE or entities, bounded depth and size, via
`trimaran.admin.resource_lists.parse_xml`); elements of other namespaces and unknown
elements are ignored (§5 extensibility). Only `ConferenceInfoError` escapes `parse`.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from trimaran.admin.resource_lists import ResourceListsError, parse_xml

NAMESPACE = "urn:ietf:params:xml:ns:conference-info"
CONTENT_TYPE = "application/conference-info+xml"
EVENT = "conference"
STATES = frozenset({"full", "partial", "deleted"})
MAX_BODY = 256 * 1024

_NS = f"{{{NAMESPACE}}}"


class ConferenceInfoError(Exception):
    """A conference-info document we cannot use (malformed, or not RFC 4575)."""


class RosterGap(Exception):
    """A partial document the subscriber cannot apply: it missed a version (or has no
    full state yet). Refresh the subscription to get the full state."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One device of a user in the conference (RFC 4575 §5.7): a dialog with the focus."""

    entity: str
    status: str = "connected"              # §5.7.2: connected, disconnected, …
    joining_method: str | None = "dialed-in"
    media: tuple[str, ...] = ("message",)  # media types (§5.7.5 <media><type>)
    call_id: str | None = None             # the dialog (§5.7.7 <call-info><sip>)
    from_tag: str | None = None
    to_tag: str | None = None
    state: str = "full"


@dataclass(frozen=True, slots=True)
class UserInfo:
    """One user of the conference (RFC 4575 §5.6)."""

    entity: str
    display: str | None = None
    roles: tuple[str, ...] = ()
    endpoints: tuple[Endpoint, ...] = ()
    state: str = "full"

    @property
    def connected(self) -> bool:
        """True when one of the user's endpoints is connected."""
        return any(e.status == "connected" for e in self.endpoints)


@dataclass(frozen=True, slots=True)
class ConferenceInfo:
    """One conference-info document (RFC 4575 §5.1)."""

    entity: str                   # the focus URI
    version: int
    state: str = "full"
    subject: str | None = None
    user_count: int | None = None
    active: bool | None = None
    users: tuple[UserInfo, ...] = ()


def full_state(entity: str, version: int, users: Iterable[UserInfo], *,
               subject: str | None = None) -> ConferenceInfo:
    """The full-state document: every user, the subject and the user count."""
    listed = tuple(sorted(users, key=lambda u: u.entity))
    return ConferenceInfo(entity, version, "full", subject or None, len(listed),
                          bool(listed), listed)


def partial_state(entity: str, version: int, changed: Iterable[UserInfo],
                  user_count: int) -> ConferenceInfo:
    """A partial document: the users that changed (whole, or ``deleted``)."""
    return ConferenceInfo(entity, version, "partial", None, user_count, user_count > 0,
                          tuple(sorted(changed, key=lambda u: u.entity)))


def deleted_user(entity: str) -> UserInfo:
    """The entry of a user who left (§4.6.3)."""
    return UserInfo(entity, state="deleted")


# -- rendering --------------------------------------------------------------------------
# Unqualified tags under an explicit default xmlns (as `resource_lists` does).


def _sub(parent: ET.Element, tag: str, text: str | None = None,
         attrib: dict[str, str] | None = None) -> ET.Element:
    element = ET.SubElement(parent, tag, attrib or {})
    if text is not None:
        element.text = text
    return element


def _render_endpoint(parent: ET.Element, endpoint: Endpoint) -> None:
    element = _sub(parent, "endpoint", attrib={"entity": endpoint.entity,
                                               "state": endpoint.state})
    if endpoint.state == "deleted":
        return
    _sub(element, "status", endpoint.status)
    if endpoint.joining_method:
        _sub(element, "joining-method", endpoint.joining_method)
    for index, kind in enumerate(endpoint.media, 1):
        media = _sub(element, "media", attrib={"id": str(index)})
        _sub(media, "type", kind)
        _sub(media, "status", "sendrecv")
    if endpoint.call_id:
        sip = _sub(_sub(element, "call-info"), "sip")
        _sub(sip, "call-id", endpoint.call_id)
        _sub(sip, "from-tag", endpoint.from_tag or "")
        _sub(sip, "to-tag", endpoint.to_tag or "")


def _render_user(parent: ET.Element, user: UserInfo) -> None:
    element = _sub(parent, "user", attrib={"entity": user.entity, "state": user.state})
    if user.state == "deleted":
        return
    if user.display is not None:
        _sub(element, "display-text", user.display)
    if user.roles:
        roles = _sub(element, "roles")
        for role in user.roles:
            _sub(roles, "entry", role)
    for endpoint in user.endpoints:
        _render_endpoint(element, endpoint)


def render(info: ConferenceInfo) -> bytes:
    """The document (UTF-8, with XML declaration)."""
    root = ET.Element("conference-info", {"xmlns": NAMESPACE, "entity": info.entity,
                                          "state": info.state, "version": str(info.version)})
    if info.subject is not None:
        _sub(_sub(root, "conference-description"), "subject", info.subject)
    if info.user_count is not None or info.active is not None:
        state = _sub(root, "conference-state")
        if info.user_count is not None:
            _sub(state, "user-count", str(info.user_count))
        if info.active is not None:
            _sub(state, "active", "true" if info.active else "false")
    users = _sub(root, "users", attrib={"state": info.state})
    for user in info.users:
        _render_user(users, user)
    ET.indent(root)
    body: bytes = ET.tostring(root, encoding="UTF-8", xml_declaration=True)
    return body + b"\n"


# -- parsing ----------------------------------------------------------------------------


def _children(element: ET.Element, name: str) -> list[ET.Element]:
    return [c for c in element if c.tag == _NS + name]


def _text(element: ET.Element, name: str) -> str | None:
    found = _children(element, name)
    return (found[0].text or "").strip() if found else None


def _state(element: ET.Element, default: str = "full") -> str:
    state = element.get("state", default)
    if state not in STATES:
        raise ConferenceInfoError(f"<{element.tag.rpartition('}')[2]}> state {state!r} "
                                  f"is not one of {', '.join(sorted(STATES))}")
    return state


def _entity(element: ET.Element) -> str:
    entity = element.get("entity")
    if not entity:
        raise ConferenceInfoError(f"<{element.tag.rpartition('}')[2]}> without entity")
    return entity


def _parse_endpoint(element: ET.Element) -> Endpoint:
    media = tuple(t for m in _children(element, "media")
                  if (t := _text(m, "type")) is not None)
    sips = [s for info in _children(element, "call-info") for s in _children(info, "sip")]
    sip = sips[0] if sips else None
    return Endpoint(_entity(element), _text(element, "status") or "connected",
                    _text(element, "joining-method"), media,
                    _text(sip, "call-id") if sip is not None else None,
                    _text(sip, "from-tag") if sip is not None else None,
                    _text(sip, "to-tag") if sip is not None else None, _state(element))


def _parse_user(element: ET.Element) -> UserInfo:
    roles = tuple((e.text or "").strip() for r in _children(element, "roles")
                  for e in _children(r, "entry"))
    return UserInfo(_entity(element), _text(element, "display-text"), roles,
                    tuple(_parse_endpoint(e) for e in _children(element, "endpoint")),
                    _state(element))


def _int(text: str | None, what: str) -> int | None:
    if text is None:
        return None
    if not text.isdigit() or len(text) > 10:
        raise ConferenceInfoError(f"{what} {text[:20]!r} is not a non-negative integer")
    return int(text)


def parse(data: bytes) -> ConferenceInfo:
    """The document in `data`; `ConferenceInfoError` when it is not one we can use."""
    if len(data) > MAX_BODY:
        raise ConferenceInfoError(f"document larger than {MAX_BODY} bytes")
    try:
        root = parse_xml(data)
    except ResourceListsError as exc:
        raise ConferenceInfoError(exc.message) from None
    except LookupError as exc:      # expat: an XML declaration naming an unknown encoding
        raise ConferenceInfoError(f"malformed XML: {exc}") from None
    if root.tag != _NS + "conference-info":
        raise ConferenceInfoError(f"root element {root.tag!r} is not conference-info")
    version = _int(root.get("version"), "version")
    if version is None:
        raise ConferenceInfoError("conference-info without version")
    state = _state(root)
    if state == "deleted":
        raise ConferenceInfoError("conference-info state 'deleted' is not allowed")
    subject = None
    for description in _children(root, "conference-description"):
        subject = _text(description, "subject")
    user_count, active = None, None
    for conference_state in _children(root, "conference-state"):
        user_count = _int(_text(conference_state, "user-count"), "user-count")
        flag = _text(conference_state, "active")
        active = None if flag is None else flag == "true"
    users = tuple(_parse_user(u) for group in _children(root, "users")
                  for u in _children(group, "user"))
    return ConferenceInfo(_entity(root), version, state, subject, user_count, active, users)


# -- the subscriber's view ----------------------------------------------------------------


@dataclass
class Roster:
    """What a subscriber knows of a conference, built from the documents it receives
    in one subscription (RFC 4575 §4.6)."""

    entity: str | None = None
    version: int = 0
    subject: str | None = None
    user_count: int | None = None
    active: bool | None = None
    users: dict[str, UserInfo] = field(default_factory=dict)

    def apply(self, info: ConferenceInfo) -> bool:
        """Take a document in: True when applied, False when stale (ignored);
        `RosterGap` when a partial one cannot be applied."""
        if self.entity is not None and info.version <= self.version:
            return False
        if info.state == "full":
            self.users = {u.entity: u for u in info.users if u.state != "deleted"}
            self.subject, self.user_count, self.active = (info.subject, info.user_count,
                                                          info.active)
        else:
            if self.entity is None:
                raise RosterGap(f"partial version {info.version} before any full state")
            if info.version != self.version + 1:
                raise RosterGap(f"version {info.version} after {self.version}")
            for user in info.users:
                self._merge_user(user)
            if info.subject is not None:
                self.subject = info.subject
            if info.user_count is not None:
                self.user_count = info.user_count
            if info.active is not None:
                self.active = info.active
        self.entity, self.version = info.entity, info.version
        return True

    def _merge_user(self, user: UserInfo) -> None:
        old = self.users.get(user.entity)
        if user.state == "deleted":
            self.users.pop(user.entity, None)
        elif user.state == "full" or old is None:
            self.users[user.entity] = replace(user, state="full")
        else:
            endpoints = {e.entity: e for e in old.endpoints}
            for endpoint in user.endpoints:
                if endpoint.state == "deleted":
                    endpoints.pop(endpoint.entity, None)
                else:
                    endpoints[endpoint.entity] = replace(endpoint, state="full")
            self.users[user.entity] = UserInfo(
                user.entity, user.display if user.display is not None else old.display,
                user.roles or old.roles, tuple(endpoints.values()))

    def participants(self) -> list[str]:
        """The users with a connected endpoint, by AOR."""
        return sorted(entity for entity, user in self.users.items() if user.connected)
