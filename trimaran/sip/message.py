"""SIP requests and responses (RFC 3261 §7).

A message is a start line, a `Headers` multi-map and a body. Structured views
(`vias`, `from_`, `cseq` …) are parsed from the header text on access and raise
`SipParseError` when malformed; `parse_message` calls `validate()` so messages
coming off the wire have already proven their mandatory headers are sound.
"""

from __future__ import annotations

import re

from trimaran.sip.errors import SipParseError
from trimaran.sip.grammar import is_digits, is_token
from trimaran.sip.headers import CSeq, Headers, NameAddr, Via, split_list_value
from trimaran.sip.uri import URI

SIP_VERSION = "SIP/2.0"
#: The methods of RFC 3261 and of the extensions Trimaran serves; counters give any
#: other method one shared label so that a peer cannot grow them without bound.
KNOWN_METHODS = frozenset({
    "ACK", "BYE", "CANCEL", "INFO", "INVITE", "MESSAGE", "NOTIFY", "OPTIONS",
    "PRACK", "PUBLISH", "REFER", "REGISTER", "SUBSCRIBE", "UPDATE",
})
_WHITESPACE = re.compile(r"\s")

# §7.3.1: only headers whose grammar is a comma-separated list may appear more than once;
# these single-valued ones must not (RFC 4475 §3.3.8 multi01).
SINGLE_VALUED = frozenset({"Call-ID", "CSeq", "From", "To", "Max-Forwards", "Content-Length",
                           "Content-Type", "Expires"})

REASONS = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 200: "OK", 202: "Accepted", 204: "No Notification",
    300: "Multiple Choices", 301: "Moved Permanently", 302: "Moved Temporarily",
    305: "Use Proxy", 380: "Alternative Service", 400: "Bad Request", 401: "Unauthorized",
    402: "Payment Required", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    406: "Not Acceptable", 407: "Proxy Authentication Required", 408: "Request Timeout",
    410: "Gone", 412: "Conditional Request Failed", 413: "Request Entity Too Large",
    414: "Request-URI Too Long", 415: "Unsupported Media Type",
    416: "Unsupported URI Scheme", 420: "Bad Extension", 421: "Extension Required",
    423: "Interval Too Brief", 430: "Flow Failed", 439: "First Hop Lacks Outbound Support",
    480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist",
    482: "Loop Detected", 483: "Too Many Hops", 484: "Address Incomplete",
    485: "Ambiguous", 486: "Busy Here", 487: "Request Terminated",
    488: "Not Acceptable Here", 489: "Bad Event", 491: "Request Pending",
    493: "Undecipherable", 500: "Server Internal Error", 501: "Not Implemented",
    502: "Bad Gateway", 503: "Service Unavailable", 504: "Server Time-out",
    505: "Version Not Supported", 513: "Message Too Large", 600: "Busy Everywhere",
    603: "Decline", 604: "Does Not Exist Anywhere", 606: "Not Acceptable",
}


def reason_phrase(status: int) -> str:
    """The default reason phrase for `status`."""
    return REASONS.get(status) or REASONS.get(status - status % 100, "Unknown")


class Message:
    """Common part of requests and responses."""

    __slots__ = ("body", "headers", "version")

    def __init__(self, headers: Headers | None = None, body: bytes = b"",
                 version: str = SIP_VERSION) -> None:
        self.headers = headers if headers is not None else Headers()
        self.body = body
        self.version = version

    # -- structured views -------------------------------------------------
    @property
    def call_id(self) -> str:
        """The Call-ID (§20.8)."""
        return self._required("Call-ID")

    @property
    def cseq(self) -> CSeq:
        """The CSeq (§20.16)."""
        return CSeq.parse(self._required("CSeq"))

    @property
    def from_(self) -> NameAddr:
        """The From address (§20.20)."""
        return NameAddr.parse(self._required("From"))

    @property
    def to(self) -> NameAddr:
        """The To address (§20.39)."""
        return NameAddr.parse(self._required("To"))

    @property
    def vias(self) -> list[Via]:
        """Every Via, topmost first (§20.42)."""
        return [Via.parse(v) for v in self.headers.get_all("Via")]

    @property
    def top_via(self) -> Via:
        """The topmost Via."""
        return Via.parse(self._required("Via"))

    @property
    def contacts(self) -> list[NameAddr]:
        """Every Contact (§20.10); empty for `Contact: *` (see `is_star_contact`)."""
        return [NameAddr.parse(v) for v in self.headers.get_all("Contact") if v != "*"]

    @property
    def is_star_contact(self) -> bool:
        """True for the wildcard `Contact: *` of a remove-all REGISTER (§10.2.2)."""
        return "*" in self.headers.get_all("Contact")

    @property
    def routes(self) -> list[NameAddr]:
        """Route set in order (§20.34)."""
        return [NameAddr.parse(v) for v in self.headers.get_all("Route")]

    @property
    def record_routes(self) -> list[NameAddr]:
        """Record-Route entries in order (§20.30)."""
        return [NameAddr.parse(v) for v in self.headers.get_all("Record-Route")]

    @property
    def max_forwards(self) -> int | None:
        """Max-Forwards (§20.22), None when absent."""
        return self._int_header("Max-Forwards", 255)

    @property
    def expires(self) -> int | None:
        """Expires in seconds (§20.19), None when absent."""
        return self._int_header("Expires", 2**32 - 1)

    @property
    def content_length(self) -> int | None:
        """Content-Length as sent, None when absent."""
        return self._int_header("Content-Length", 2**31)

    @property
    def content_type(self) -> str | None:
        """Content-Type value (lower-cased media type without parameters)."""
        value = self.headers.get("Content-Type")
        return value.split(";", 1)[0].strip().lower() if value else None

    def tokens(self, name: str) -> list[str]:
        """Option tags or methods of a token-list header (Require, Supported, Allow …)."""
        out = []
        for value in self.headers.get_all(name):
            token = value.strip()
            if not is_token(token):
                raise SipParseError(f"bad {name} value {token[:40]!r}")
            out.append(token)
        return out

    def _required(self, name: str) -> str:
        value = self.headers.get(name)
        if value is None:
            raise SipParseError(f"missing {name} header")
        return value

    def _int_header(self, name: str, maximum: int) -> int | None:
        value = self.headers.get(name)
        if value is None:
            return None
        value = value.strip(" \t")
        if not is_digits(value) or len(value) > 10 or int(value) > maximum:
            raise SipParseError(f"bad {name} value {value[:20]!r}")
        return int(value)

    # -- checks and serialisation -----------------------------------------
    def validate(self) -> None:
        """Raise `SipParseError` unless the mandatory headers are present and sound (§8.1.1)."""
        seen: set[str] = set()
        for name, _ in self.headers:
            if name in SINGLE_VALUED:
                if name in seen:
                    raise SipParseError(f"several {name} headers")
                seen.add(name)
        call_id = self.call_id.strip(" \t")
        if not call_id or _WHITESPACE.search(call_id):  # §25.1 callid = word ["@" word]
            raise SipParseError("bad Call-ID")
        self.cseq  # noqa: B018
        self.from_  # noqa: B018
        self.to  # noqa: B018
        if not self.vias:
            raise SipParseError("missing Via header")
        self.max_forwards  # noqa: B018
        self.expires  # noqa: B018
        self.contacts  # noqa: B018
        if self.is_star_contact and len(self.headers.get_all("Contact")) > 1:
            raise SipParseError("Contact '*' mixed with addresses")  # §20.10 grammar

    def start_line(self) -> str:
        """The request line or status line."""
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """Serialise with a correct Content-Length (§18.3 / §20.14)."""
        lines = [self.start_line()]
        lines.extend(f"{k}: {v}" for k, v in self.headers if k != "Content-Length")
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body

    def add_list_header(self, name: str, value: str, *, first: bool = False) -> None:
        """Add each element of a (possibly comma-separated) value."""
        parts = split_list_value(name, value)
        for part in reversed(parts) if first else parts:
            self.headers.add(name, part, first=first)


class Request(Message):
    """A SIP request."""

    __slots__ = ("method", "uri")

    def __init__(self, method: str, uri: URI, headers: Headers | None = None,
                 body: bytes = b"", version: str = SIP_VERSION) -> None:
        super().__init__(headers, body, version)
        self.method = method
        self.uri = uri

    def start_line(self) -> str:
        return f"{self.method} {self.uri} {self.version}"

    def validate(self) -> None:
        super().validate()
        if self.cseq.method != self.method:
            raise SipParseError("CSeq method does not match the request method")

    def copy(self) -> Request:
        """An independent copy (headers copied; URI and body are immutable)."""
        return Request(self.method, self.uri, self.headers.copy(), self.body, self.version)

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri}>"


class Response(Message):
    """A SIP response."""

    __slots__ = ("reason", "status")

    def __init__(self, status: int, reason: str | None = None,
                 headers: Headers | None = None, body: bytes = b"",
                 version: str = SIP_VERSION) -> None:
        super().__init__(headers, body, version)
        self.status = status
        self.reason = reason if reason is not None else reason_phrase(status)

    def start_line(self) -> str:
        return f"{self.version} {self.status} {self.reason}"

    def copy(self) -> Response:
        """An independent copy."""
        return Response(self.status, self.reason, self.headers.copy(), self.body, self.version)

    @classmethod
    def for_request(cls, request: Request, status: int, reason: str | None = None, *,
                    to_tag: str | None = None) -> Response:
        """A response to `request` with Via, From, To, Call-ID and CSeq copied (§8.2.6.2).

        `to_tag` is added to To when it has none (not for 100 Trying).
        """
        headers = Headers()
        for name in ("Via", "From", "To", "Call-ID", "CSeq"):
            for value in request.headers.get_all(name):
                headers.add(name, value)
        if status == 100 and "Timestamp" in request.headers:
            headers.add("Timestamp", request.headers.get("Timestamp") or "")
        if to_tag and status != 100:
            to = request.to
            if to.tag is None:
                headers.set("To", str(to.with_param("tag", to_tag)))
        return cls(status, reason, headers)

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"
