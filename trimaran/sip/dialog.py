"""SIP dialogs (RFC 3261 §12): the state two user agents share for a call or subscription.

A `Dialog` is created by a UAC from a request and the response that established
it (§12.1.2), or by a UAS from the request it answers (§12.1.1). It builds the
requests sent inside it (§12.2.1.1), handling strict and loose route sets, and
checks the CSeq order of requests received inside it (§12.2.2).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from trimaran.sip.errors import SipParseError
from trimaran.sip.headers import Headers, NameAddr
from trimaran.sip.message import Request, Response
from trimaran.sip.uri import URI


@dataclass(frozen=True, slots=True)
class DialogId:
    """Call-ID, local tag and remote tag (§12)."""

    call_id: str
    local_tag: str
    remote_tag: str


@dataclass(slots=True)
class Dialog:
    """One dialog, seen from our side."""

    id: DialogId
    local: NameAddr          # our From in requests we send
    remote: NameAddr         # our To in requests we send
    remote_target: URI       # the peer's Contact
    route_set: list[NameAddr] = field(default_factory=list)
    local_cseq: int = 0
    remote_cseq: int | None = None
    secure: bool = False

    @property
    def key(self) -> tuple[str, str]:
        """As requests inside the dialog name it at our side: Call-ID and our tag."""
        return self.id.call_id, self.id.local_tag

    @property
    def first_hop(self) -> URI:
        """Where a request inside the dialog goes first: the first route, else the
        remote target (§12.2.1.1)."""
        return self.route_set[0].uri if self.route_set else self.remote_target

    @classmethod
    def from_uac(cls, request: Request, response: Response) -> Dialog:
        """The dialog a UAC gets from a 2xx or 101-199 with a To tag (§12.1.2)."""
        remote_tag = response.to.tag
        local_tag = request.from_.tag
        if not remote_tag or not local_tag:
            raise SipParseError("dialog-creating response lacks a tag")
        contacts = response.contacts
        if not contacts:
            raise SipParseError("dialog-creating response lacks a Contact")
        routes = list(reversed(response.record_routes))  # §12.1.2: reverse order
        return cls(DialogId(request.call_id, local_tag, remote_tag), request.from_,
                   response.to, contacts[0].uri, routes, request.cseq.seq, None,
                   request.uri.scheme == "sips")

    @classmethod
    def from_uas(cls, request: Request, local_tag: str) -> Dialog:
        """The dialog a UAS gets when it answers `request` with To tag `local_tag` (§12.1.1)."""
        remote_tag = request.from_.tag
        if not remote_tag:
            raise SipParseError("dialog-creating request lacks a From tag")
        contacts = request.contacts
        if not contacts:
            raise SipParseError("dialog-creating request lacks a Contact")
        return cls(DialogId(request.call_id, local_tag, remote_tag),
                   request.to.with_param("tag", local_tag), request.from_, contacts[0].uri,
                   list(request.record_routes), 0, request.cseq.seq,
                   request.uri.scheme == "sips")

    def create_request(self, method: str, *, via: str, contact: NameAddr | None = None,
                       cseq: int | None = None) -> Request:
        """A request inside the dialog (§12.2.1.1); ACK and CANCEL reuse a given `cseq`."""
        if cseq is None:
            self.local_cseq += 1
            cseq = self.local_cseq
        headers = Headers()
        headers.add("Via", via)
        headers.add("Max-Forwards", "70")
        headers.add("From", str(self.local))
        headers.add("To", str(self.remote))
        headers.add("Call-ID", self.id.call_id)
        headers.add("CSeq", f"{cseq} {method}")
        if contact is not None:
            headers.add("Contact", str(contact))
        uri = self.remote_target
        routes = list(self.route_set)
        if routes and not routes[0].uri.has_param("lr"):
            # §12.2.1.1 strict routing: the first route becomes the Request-URI.
            uri = replace(routes[0].uri, headers=())
            routes = [*routes[1:], NameAddr(self.remote_target)]
        for route in routes:
            headers.add("Route", str(route))
        return Request(method, uri, headers)

    def accepts_remote_cseq(self, request: Request) -> bool:
        """§12.2.2: requests inside the dialog must have increasing CSeq (ACK/CANCEL excepted)."""
        seq = request.cseq.seq
        if request.method in ("ACK", "CANCEL"):
            return True
        if self.remote_cseq is not None and seq <= self.remote_cseq:
            return False
        self.remote_cseq = seq
        return True

    def update_target(self, request_or_response: Request | Response) -> None:
        """A target refresh (re-INVITE, UPDATE, its 2xx) replaces the remote target (§12.2)."""
        contacts = request_or_response.contacts
        if contacts:
            self.remote_target = contacts[0].uri

    def matches(self, request: Request) -> bool:
        """True when `request` belongs to this dialog (Call-ID and both tags)."""
        return (request.call_id == self.id.call_id
                and request.to.tag == self.id.local_tag
                and request.from_.tag == self.id.remote_tag)
