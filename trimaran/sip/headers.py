"""SIP header collection and the structured header values (RFC 3261 §7.3, §20).

`Headers` is an ordered, case-insensitive multi-map. Names are stored in their
canonical long form (compact forms such as `v` or `i` are expanded, §7.3.3).
Comma-separated list headers are split into one entry per value when parsed,
so `get_all("Via")` is the list of Via values in order.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace

from trimaran.sip.errors import SipParseError
from trimaran.sip.grammar import (
    Params,
    format_params,
    get_param,
    has_param,
    is_digits,
    is_token,
    parse_params,
    quote,
    remove_param,
    set_param,
    split_outside_quotes,
    unquote,
)
from trimaran.sip.uri import URI, split_host_port

# RFC 3261 §7.3.3 and the IANA registry of compact forms.
COMPACT_FORMS = {
    "i": "Call-ID", "m": "Contact", "e": "Content-Encoding", "l": "Content-Length",
    "c": "Content-Type", "f": "From", "s": "Subject", "k": "Supported", "t": "To",
    "v": "Via", "o": "Event", "u": "Allow-Events", "r": "Refer-To", "b": "Referred-By",
    "x": "Session-Expires", "a": "Accept-Contact", "j": "Reject-Contact",
    "d": "Request-Disposition", "y": "Identity", "n": "Identity-Info",
}
_CANONICAL = {name.lower(): name for name in (
    "Call-ID", "CSeq", "WWW-Authenticate", "Proxy-Authenticate", "Authorization",
    "Proxy-Authorization", "Authentication-Info", "Proxy-Require", "Record-Route",
    "Max-Forwards", "Min-Expires", "Retry-After", "MIME-Version", "SIP-ETag",
    "SIP-If-Match", "Subscription-State", "Allow-Events", "Content-Length",
    "Content-Type", "Content-Encoding", "Content-Disposition", "Content-Language",
    "Reply-To", "Refer-To", "Referred-By", "Session-Expires", "Min-SE", "RSeq", "RAck",
    "P-Asserted-Identity", "Accept-Contact", "Reject-Contact", "Request-Disposition",
    "Identity-Info", "User-Agent", "Error-Info", "Alert-Info", "Call-Info", "In-Reply-To",
    "Path", "Service-Route", "Flow-Timer", "X-Trimaran-Mode",
)}
# Headers whose grammar is a comma-separated list (§7.3.1): split into entries.
LIST_HEADERS = frozenset({
    "via", "contact", "route", "record-route", "allow", "supported", "require",
    "proxy-require", "unsupported", "accept", "accept-encoding", "accept-language",
    "content-encoding", "content-language", "in-reply-to", "warning", "alert-info",
    "call-info", "error-info", "allow-events", "path", "service-route", "reply-to",
})
_NAME_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+\Z")
_SWS_COLON = re.compile(r"[ \t]*:[ \t]*")
_LWS = re.compile(r"[ \t]+")


@functools.lru_cache(maxsize=1024)
def canonical_name(name: str) -> str:
    """The canonical spelling of a header name (compact forms expanded)."""
    low = name.lower()
    if len(low) == 1 and low in COMPACT_FORMS:
        return COMPACT_FORMS[low]
    known = _CANONICAL.get(low)
    if known:
        return known
    return "-".join(part.capitalize() for part in name.split("-"))


def split_list_value(name: str, value: str) -> list[str]:
    """Split a header value into its comma-separated elements when `name` is a list header."""
    if name.lower() not in LIST_HEADERS:
        return [value]
    if name.lower() == "contact" and value.strip() == "*":
        return ["*"]
    parts = [p.strip() for p in split_outside_quotes(value, ",")]
    if "" in parts:
        raise SipParseError(f"empty element in {name} header")
    return parts


class Headers:
    """Ordered, case-insensitive multi-map of header name -> raw value string."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = [(canonical_name(k), v) for k, v in items]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self._items == other._items

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"

    def copy(self) -> Headers:
        """An independent copy."""
        new = Headers()
        new._items = list(self._items)
        return new

    def get(self, name: str) -> str | None:
        """First value of `name`, or None."""
        canon = canonical_name(name)
        for k, v in self._items:
            if k == canon:
                return v
        return None

    def get_all(self, name: str) -> list[str]:
        """Every value of `name`, in order."""
        canon = canonical_name(name)
        return [v for k, v in self._items if k == canon]

    def add(self, name: str, value: str, *, first: bool = False) -> None:
        """Append (or, with `first`, prepend) a value."""
        item = (canonical_name(name), value)
        if first:
            self._items.insert(0, item)
        else:
            self._items.append(item)

    def set(self, name: str, value: str) -> None:
        """Replace every value of `name` with one value (in the first one's place)."""
        canon = canonical_name(name)
        for i, (k, _) in enumerate(self._items):
            if k == canon:
                self._items[i] = (canon, value)
                self._items = [
                    item for j, item in enumerate(self._items) if j <= i or item[0] != canon
                ]
                return
        self._items.append((canon, value))

    def remove(self, name: str) -> int:
        """Remove every value of `name`; return how many were removed."""
        canon = canonical_name(name)
        before = len(self._items)
        self._items = [item for item in self._items if item[0] != canon]
        return before - len(self._items)

    def pop_first(self, name: str) -> str | None:
        """Remove and return the first value of `name`."""
        canon = canonical_name(name)
        for i, (k, v) in enumerate(self._items):
            if k == canon:
                del self._items[i]
                return v
        return None


def is_valid_header_name(name: str) -> bool:
    """True when `name` is a syntactically valid header field name (a token)."""
    return _NAME_RE.match(name) is not None


@dataclass(frozen=True, slots=True)
class NameAddr:
    """A From/To/Contact/Route value: optional display name, URI and header params (§20.10)."""

    uri: URI
    display_name: str | None = None
    params: Params = ()
    angle: bool = True

    @classmethod
    def parse(cls, text: str) -> NameAddr:
        """Parse the textual form (memoised: values are immutable); `SipParseError` if bad."""
        return _parse_nameaddr(text)

    @classmethod
    def _parse(cls, text: str) -> NameAddr:
        """Parse name-addr (`"Bob" <sip:b@x>;tag=1`) or addr-spec (`sip:b@x;tag=1`)."""
        text = text.strip()
        if not text:
            raise SipParseError("empty address")
        lt = _find_unquoted(text, "<")
        if lt >= 0:
            gt = text.find(">", lt)
            if gt < 0:
                raise SipParseError(f"missing '>' in {text[:80]!r}")
            display = text[:lt].strip()
            display_name: str | None = None
            if display:
                if display.startswith('"'):
                    display_name = unquote(display)
                else:
                    words = display.split()
                    if not all(is_token(w) for w in words):
                        raise SipParseError(f"bad display name {display[:60]!r}")
                    display_name = " ".join(words)
            # §25.1 LAQUOT addr-spec RAQUOT: no whitespace inside the brackets
            # (RFC 4475 §3.1.2.14 badaspec; we reject rather than guess).
            uri = _header_uri(text[lt + 1 : gt])
            params = parse_params(text[gt + 1 :]) if text[gt + 1 :].strip() else ()
            if text[gt + 1 :].strip() and not text[gt + 1 :].strip().startswith(";"):
                raise SipParseError(f"junk after address {text[:80]!r}")
            return cls(uri, display_name, params, True)
        # addr-spec: parameters after ';' belong to the header, not the URI (§20.10);
        # a URI with ';', ',' or '?' must use the name-addr form.
        # SEMI = SWS ";" SWS, so whitespace may precede the first ';' (RFC 4475 §3.1.1.1).
        uri_text, semi, param_text = text.partition(";")
        uri_text = uri_text.rstrip(" \t")
        if "?" in uri_text or " " in uri_text:
            raise SipParseError(f"bad addr-spec {text[:80]!r}")
        params = parse_params(param_text) if semi else ()
        return cls(_header_uri(uri_text), None, params, False)

    def __str__(self) -> str:
        uri = str(self.uri)
        if self.angle or self.display_name is not None or any(c in uri for c in ";,?"):
            disp = quote(self.display_name) + " " if self.display_name is not None else ""
            return f"{disp}<{uri}>{format_params(self.params)}"
        return f"{uri}{format_params(self.params)}"

    def param(self, name: str) -> str | None:
        """Header parameter value; "" when present without value; None when absent."""
        return get_param(self.params, name)

    def has_param(self, name: str) -> bool:
        """True when the header parameter is present."""
        return has_param(self.params, name)

    def with_param(self, name: str, value: str | None = None) -> NameAddr:
        """A copy with header parameter `name` set."""
        return replace(self, params=set_param(self.params, name, value))

    def without_param(self, name: str) -> NameAddr:
        """A copy without header parameter `name`."""
        return replace(self, params=remove_param(self.params, name))

    @property
    def tag(self) -> str | None:
        """The `tag` parameter (From/To, §19.3)."""
        return self.param("tag")


def _header_uri(text: str) -> URI:
    """A URI inside a header field; an unsupported scheme is a plain 400 here.

    416 is only for the Request-URI (§21.4.15); a registrar answers 400 to a
    non-SIP To (RFC 4475 §3.3.4 unksm2), and the model has no generic URIs.
    """
    try:
        return URI.parse(text)
    except SipParseError as exc:
        if exc.status_hint == 416:
            raise SipParseError(exc.reason) from None
        raise


def _find_unquoted(text: str, ch: str) -> int:
    quoted = False
    escaped = False
    for i, c in enumerate(text):
        if quoted:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif c == ch:
            return i
    return -1


BRANCH_MAGIC = "z9hG4bK"  # RFC 3261 §8.1.1.7


@dataclass(frozen=True, slots=True)
class Via:
    """One Via value (§20.42) with RFC 3581 `rport`."""

    transport: str
    host: str
    port: int | None = None
    params: Params = ()
    protocol: str = "SIP/2.0"

    @classmethod
    def parse(cls, text: str) -> Via:
        """Parse the textual form (memoised: values are immutable); `SipParseError` if bad."""
        return _parse_via(text)

    @classmethod
    def _parse(cls, text: str) -> Via:
        """Parse `SIP/2.0/UDP host:port;branch=...`."""
        text = text.strip()
        proto, _, rest = text.partition("/")
        version, _, rest = rest.partition("/")
        transport_and_rest = rest.lstrip()
        parts = transport_and_rest.split(None, 1)
        if len(parts) != 2 or not is_token(proto.strip()) or not is_token(version.strip()):
            raise SipParseError(f"bad Via {text[:80]!r}")
        transport = parts[0]
        if not is_token(transport):
            raise SipParseError(f"bad Via transport {transport[:20]!r}")
        sent_by, semi, param_text = parts[1].partition(";")
        # sent-by = host [ COLON port ] with COLON = SWS ":" SWS (§25.1)
        host, port = split_host_port(_SWS_COLON.sub(":", sent_by.strip()))
        params = parse_params(param_text) if semi else ()
        _check_via_params(params)
        protocol = f"{proto.strip().upper()}/{version.strip()}"
        return cls(transport.upper(), host, port, params, protocol)

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"{self.protocol}/{self.transport} {self.host}{port}{format_params(self.params)}"

    def param(self, name: str) -> str | None:
        """Parameter value; "" when present without value; None when absent."""
        return get_param(self.params, name)

    def with_param(self, name: str, value: str | None = None) -> Via:
        """A copy with parameter `name` set."""
        return replace(self, params=set_param(self.params, name, value))

    @property
    def branch(self) -> str | None:
        """The branch parameter (transaction id, §17.1.3/§17.2.3)."""
        return self.param("branch")

    @property
    def received(self) -> str | None:
        """The received parameter (§18.2.1)."""
        return self.param("received")

    @property
    def rport(self) -> int | None:
        """The filled-in `rport` value (RFC 3581 §4), None when absent or empty."""
        value = self.param("rport")
        return int(value) if value else None  # checked by `parse`

    @property
    def wants_rport(self) -> bool:
        """True when the client asked for symmetric response routing (RFC 3581 §3)."""
        return has_param(self.params, "rport")


def _check_via_params(params: Params) -> None:
    """Check the Via parameters with a defined syntax (§20.42, §25.1; RFC 3581 §6)."""
    for name, value in params:
        if name == "rport":
            # response-port = "rport" [EQUAL 1*DIGIT]
            if value is not None and not (is_digits(value) and len(value) <= 5
                                          and 0 < int(value) < 65536):
                raise SipParseError(f"bad Via rport {value[:20]!r}")
        elif name == "ttl":
            # via-ttl = "ttl" EQUAL ttl; ttl = 1*3DIGIT ; 0 to 255
            if value is None or not is_digits(value) or len(value) > 3 or int(value) > 255:
                raise SipParseError("bad Via ttl")
        elif name == "received":
            # via-received = "received" EQUAL (IPv4address / IPv6address)
            if value is None:
                raise SipParseError("Via received without a value")
            address = value[1:-1] if value.startswith("[") and value.endswith("]") else value
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise SipParseError(f"bad Via received {value[:60]!r}") from None
        elif name == "branch" and value is None:
            raise SipParseError("Via branch without a value")


@dataclass(frozen=True, slots=True)
class CSeq:
    """The CSeq header (§20.16): sequence number and method."""

    seq: int
    method: str

    @classmethod
    def parse(cls, text: str) -> CSeq:
        """Parse the textual form (memoised: values are immutable); `SipParseError` if bad."""
        return _parse_cseq(text)

    @classmethod
    def _parse(cls, text: str) -> CSeq:
        """Parse `314159 INVITE`; the number must fit in 32 bits (§8.1.1.5)."""
        parts = _LWS.split(text.strip(" \t"))
        if len(parts) != 2 or not is_digits(parts[0]) or len(parts[0]) > 10:
            raise SipParseError(f"bad CSeq {text[:40]!r}")
        seq = int(parts[0])
        if seq >= 2**32 or not is_token(parts[1]):
            raise SipParseError(f"bad CSeq {text[:40]!r}")
        return cls(seq, parts[1])

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


@functools.lru_cache(maxsize=8192)
def _parse_nameaddr(text: str) -> NameAddr:
    return NameAddr._parse(text)


@functools.lru_cache(maxsize=8192)
def _parse_via(text: str) -> Via:
    return Via._parse(text)


@functools.lru_cache(maxsize=8192)
def _parse_cseq(text: str) -> CSeq:
    return CSeq._parse(text)
