"""SIP, SIPS and tel URIs (RFC 3261 §19.1, §25.1; RFC 3966).

A `URI` is an immutable value. `URI.parse` accepts the textual form and raises
`SipParseError` on anything malformed; `str(uri)` gives it back.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass, replace
from urllib.parse import unquote as pct_unquote

from trimaran.sip.errors import SipParseError
from trimaran.sip.grammar import (
    Params,
    format_params,
    get_param,
    has_param,
    is_digits,
    is_scheme,
    parse_params,
    remove_param,
    set_param,
)

MAX_URI_LENGTH = 4096

_SCHEMES = ("sip", "sips", "tel")
# §25.1 hostname = *( domainlabel "." ) toplabel [ "." ]
_HOSTNAME_RE = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?\.)*"
                          r"[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?\.?\Z")
# user = 1*( unreserved / escaped / user-unreserved ); password likewise plus a few.
_USER_RE = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/]|%[0-9A-Fa-f]{2})+\Z")
_PASSWORD_RE = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,]|%[0-9A-Fa-f]{2})*\Z")
_TEL_RE = re.compile(r"\+?[0-9A-Fa-f*#\-.()]+\Z")
_HNAME_RE = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()\[\]/?:+$]|%[0-9A-Fa-f]{2})+\Z")
_ILLEGAL_RE = re.compile(r'[ \t\r\n<>"]')
_IPV4_RE = re.compile(r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}"
                      r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\Z")
_HVALUE_RE = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()\[\]/?:+$@]|%[0-9A-Fa-f]{2})*\Z")


def _check_host(host: str) -> str:
    if host.startswith("["):
        if not host.endswith("]"):
            raise SipParseError(f"bad IPv6 reference {host[:60]!r}")
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise SipParseError(f"bad IPv6 address {host[:60]!r}") from None
        return host
    if not host or not _HOSTNAME_RE.match(host):
        raise SipParseError(f"bad host {host[:60]!r}")
    if host[0].isdigit() and host.replace(".", "").isdigit() and not _IPV4_RE.match(host):
        raise SipParseError(f"bad IPv4 address {host[:60]!r}")
    return host


def split_host_port(text: str) -> tuple[str, int | None]:
    """Split `host[:port]` (IPv6 in brackets); validate both."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SipParseError(f"bad IPv6 reference {text[:60]!r}")
        host, rest = text[: end + 1], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise SipParseError(f"junk after host {text[:60]!r}")
        port_text = rest[1:] if rest else None
    else:
        host, colon, port_text_ = text.partition(":")
        port_text = port_text_ if colon else None
    port: int | None = None
    if port_text is not None:
        if not is_digits(port_text) or len(port_text) > 5:
            raise SipParseError(f"bad port {port_text[:20]!r}")
        port = int(port_text)
        if not 0 < port < 65536:
            raise SipParseError(f"port out of range {port}")
    return _check_host(host), port


@dataclass(frozen=True, slots=True)
class URI:
    """A `sip:`, `sips:` or `tel:` URI. For `tel:` the number is in `user` and `host` is ""."""

    scheme: str
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: Params = ()
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, text: str) -> URI:
        """Parse the textual form (memoised: values are immutable); `SipParseError` if bad."""
        return _parse_uri(text)

    @classmethod
    def _parse(cls, text: str) -> URI:
        """Parse the textual URI; raise `SipParseError`.

        The status hint is 414 when too long, 416 for a well-formed URI whose scheme
        is not sip, sips or tel (§8.2.2.1), else 400.
        """
        if len(text) > MAX_URI_LENGTH:
            raise SipParseError("URI too long", 414)
        scheme, colon, rest = text.partition(":")
        if not colon or not is_scheme(scheme):
            raise SipParseError(f"not a URI: {text[:60]!r}")
        scheme = scheme.lower()
        if scheme not in _SCHEMES:
            raise SipParseError(f"unsupported URI scheme in {text[:60]!r}", 416)
        if _ILLEGAL_RE.search(rest):
            raise SipParseError(f"illegal character in URI {text[:60]!r}")
        if scheme == "tel":
            return cls._parse_tel(rest)
        user: str | None = None
        password: str | None = None
        # '@' may not appear unescaped in user, password, host or params (§25.1), so the
        # first one ends the userinfo even when the user part holds '?' (RFC 4475 §3.1.1.2).
        at = rest.find("@")
        userinfo, hostport_params = (rest[:at], rest[at + 1 :]) if at >= 0 else ("", rest)
        hostport_params, qmark, header_text = hostport_params.partition("?")
        if at >= 0:
            user, pcolon, pw = userinfo.partition(":")
            if not user or not _USER_RE.match(user):
                raise SipParseError(f"bad user part in {text[:60]!r}")
            if pcolon:
                if not _PASSWORD_RE.match(pw):
                    raise SipParseError(f"bad password part in {text[:60]!r}")
                password = pw
        hostport, semi, param_text = hostport_params.partition(";")
        host, port = split_host_port(hostport)
        params = parse_params(param_text) if semi else ()
        headers: tuple[tuple[str, str], ...] = ()
        if qmark:
            pairs = []
            for item in header_text.split("&"):
                name, eq, value = item.partition("=")
                if not eq or not _HNAME_RE.match(name) or not _HVALUE_RE.match(value):
                    raise SipParseError(f"bad URI header {item[:40]!r}")
                pairs.append((name, value))
            headers = tuple(pairs)
        return cls(scheme, user, password, host, port, params, headers)

    @classmethod
    def _parse_tel(cls, rest: str) -> URI:
        number, semi, param_text = rest.partition(";")
        if not _TEL_RE.match(number):
            raise SipParseError(f"bad telephone number {number[:40]!r}")
        params = parse_params(param_text) if semi else ()
        return cls("tel", number, None, "", None, params)

    def __str__(self) -> str:
        if self.scheme == "tel":
            return f"tel:{self.user}{format_params(self.params)}"
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out.append(":" + self.password)
            out.append("@")
        out.append(self.host)
        if self.port is not None:
            out.append(f":{self.port}")
        out.append(format_params(self.params))
        if self.headers:
            out.append("?" + "&".join(f"{k}={v}" for k, v in self.headers))
        return "".join(out)

    def param(self, name: str) -> str | None:
        """Parameter value; "" when present without value; None when absent."""
        return get_param(self.params, name)

    def has_param(self, name: str) -> bool:
        """True when the parameter is present."""
        return has_param(self.params, name)

    def with_param(self, name: str, value: str | None = None) -> URI:
        """A copy with parameter `name` set."""
        return replace(self, params=set_param(self.params, name, value))

    def without_param(self, name: str) -> URI:
        """A copy without parameter `name`."""
        return replace(self, params=remove_param(self.params, name))

    @property
    def transport(self) -> str:
        """Transport named by the URI (`transport=` param), "tls" for sips:, else "udp"."""
        value = self.param("transport")
        if value:
            return value.lower()
        return "tls" if self.scheme == "sips" else "udp"

    @property
    def aor(self) -> str:
        """The address of record used as registrar key: `sip:user@host`, canonical case.

        RFC 3261 §10.3: the To URI with parameters and port dropped; the user part is
        unescaped and compared case-sensitively, the host case-insensitively.
        """
        if self.scheme == "tel":
            return f"tel:{self.user}"
        user = pct_unquote(self.user) if self.user is not None else None
        scheme = "sip" if self.scheme == "sips" else self.scheme
        who = f"{user}@" if user is not None else ""
        return f"{scheme}:{who}{self.host.lower()}"


@functools.lru_cache(maxsize=8192)
def _parse_uri(text: str) -> URI:
    return URI._parse(text)
