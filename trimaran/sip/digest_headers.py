"""Digest header values: parsing and formatting `WWW-Authenticate`/`Proxy-Authenticate`
challenges and `Authorization`/`Proxy-Authorization` credentials (RFC 2617, RFC 7616,
RFC 8760). Only `SipParseError` escapes the parsers.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass

from trimaran.sip.errors import SipParseError

#: Supported digest algorithms, most preferred first (RFC 8760 §2.3: the UAS orders challenges
#: by preference; RFC 8760 §2.4: the UAC uses the first one it supports).
ALGORITHMS: tuple[str, ...] = ("SHA-256", "MD5")

_HASHES: dict[str, str] = {"MD5": "md5", "SHA-256": "sha256"}
_HEX_LEN: dict[str, int] = {"MD5": 32, "SHA-256": 64}
# -sess variants are recognised only to give a clear error (their HA1 depends on the nonce, so
# the store could not keep a precomputed HA1; RFC 2617 §3.2.2.2, RFC 7616 §3.4.2).
_SESS = {"md5-sess": "MD5-sess", "sha-256-sess": "SHA-256-sess"}

# Input bounds: a header value, one parameter value, the number of parameters.
MAX_HEADER_LEN = 8192
MAX_VALUE_LEN = 1024
MAX_PARAMS = 32

# token per RFC 3261 §25.1.
_TOKEN_CHARS = frozenset(string.ascii_letters + string.digits + "-.!%*_+`'~")
_HEX_RE = re.compile(r"[0-9a-f]+", re.ASCII)
_NC_RE = re.compile(r"[0-9a-fA-F]{8}", re.ASCII)
_NONCE_RE = re.compile(r"[A-Za-z0-9_-]{48}", re.ASCII)

_GENERIC_FAILURE = "invalid credentials"


def _bad_char(c: str) -> bool:
    """True for characters never allowed in a value: CTLs except HTAB, DEL, lone surrogates."""
    o = ord(c)
    return (o < 0x20 and c != "\t") or o == 0x7F or 0xD800 <= o <= 0xDFFF


def _check_text(name: str, value: str) -> None:
    """Raise ValueError if `value` cannot be carried safely in a quoted-string."""
    if len(value) > MAX_VALUE_LEN:
        raise ValueError(f"{name} is too long")
    if any(_bad_char(c) for c in value):
        raise ValueError(f"{name} contains a control character")


def _is_token(value: str) -> bool:
    return bool(value) and all(c in _TOKEN_CHARS for c in value)


def _quote(value: str) -> str:
    # quoted-string with quoted-pair escapes, RFC 3261 §25.1.
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _skip_ws(s: str, i: int) -> int:
    n = len(s)
    while i < n and s[i] in " \t":
        i += 1
    return i


def _scan_token(s: str, i: int) -> int:
    n = len(s)
    while i < n and s[i] in _TOKEN_CHARS:
        i += 1
    return i


def _scan_quoted(s: str, i: int) -> tuple[str, int]:
    """Parse the quoted-string starting at s[i] == '"'; return (unescaped value, next index)."""
    out: list[str] = []
    n = len(s)
    i += 1
    while i < n:
        c = s[i]
        if c == '"':
            return "".join(out), i + 1
        if c == "\\":
            # quoted-pair = "\" char, RFC 3261 §25.1.
            i += 1
            if i >= n:
                break
            c = s[i]
        if _bad_char(c):
            raise SipParseError("control character in quoted-string", 400)
        out.append(c)
        i += 1
    raise SipParseError("unterminated quoted-string", 400)


def _parse_params(value: str) -> dict[str, str]:
    """Split ``Digest k=v, k="v"`` into lower-cased names and unescaped values."""
    if len(value) > MAX_HEADER_LEN:
        raise SipParseError("authentication header too long", 400)
    n = len(value)
    i = _skip_ws(value, 0)
    end = _scan_token(value, i)
    if value[i:end].lower() != "digest":
        raise SipParseError("unsupported authentication scheme", 400)
    i = end
    if i < n and value[i] not in " \t":
        raise SipParseError("malformed authentication scheme", 400)
    params: dict[str, str] = {}
    # RFC 2617 §1.2 / RFC 3261 §25.1: comma-separated auth-params, name "=" token/quoted-string.
    while True:
        i = _skip_ws(value, i)
        if i >= n:
            break
        if value[i] == ",":  # empty list element, tolerated as in RFC 7230 §7
            i += 1
            continue
        end = _scan_token(value, i)
        if end == i:
            raise SipParseError("malformed authentication parameter name", 400)
        name = value[i:end].lower()
        i = _skip_ws(value, end)
        if i >= n or value[i] != "=":
            raise SipParseError("authentication parameter without value", 400)
        i = _skip_ws(value, i + 1)
        if i < n and value[i] == '"':
            val, i = _scan_quoted(value, i)
        else:
            end = _scan_token(value, i)
            if end == i:
                raise SipParseError("malformed authentication parameter value", 400)
            val, i = value[i:end], end
        if len(val) > MAX_VALUE_LEN:
            raise SipParseError("authentication parameter value too long", 400)
        if name in params:
            raise SipParseError("duplicate authentication parameter", 400)
        params[name] = val
        if len(params) > MAX_PARAMS:
            raise SipParseError("too many authentication parameters", 400)
        i = _skip_ws(value, i)
        if i < n:
            if value[i] != ",":
                raise SipParseError("expected ',' between authentication parameters", 400)
            i += 1
    return params


def _require(params: Mapping[str, str], *names: str) -> None:
    for name in names:
        if name not in params:
            raise SipParseError(f"missing {name} parameter", 400)


def _parse_algorithm(params: Mapping[str, str]) -> str:
    # Absent algorithm means MD5 (RFC 2617 §3.2.1, RFC 7616 §3.3).
    raw = params.get("algorithm", "MD5").lower()
    for canonical in _HASHES:
        if raw == canonical.lower():
            return canonical
    if raw in _SESS:
        raise SipParseError(f"algorithm {_SESS[raw]} is not supported", 400)
    raise SipParseError("unsupported digest algorithm", 400)


def _canonical_algorithm(algorithm: str) -> str:
    for canonical in _HASHES:
        if algorithm.lower() == canonical.lower():
            return canonical
    raise ValueError("unsupported digest algorithm")


@dataclass(frozen=True, slots=True)
class Challenge:
    """A Digest challenge: the value of a ``WWW-Authenticate``/``Proxy-Authenticate`` header."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False
    domain: str | None = None

    def __post_init__(self) -> None:
        for name in ("realm", "nonce", "opaque", "domain"):
            text = getattr(self, name)
            if text is not None:
                _check_text(name, text)
        if self.algorithm not in _HASHES:
            raise ValueError("unsupported digest algorithm")
        if not all(_is_token(q) for q in self.qop):
            raise ValueError("qop options must be tokens")

    @classmethod
    def parse(cls, value: str) -> Challenge:
        """Parse a challenge header value; raise SipParseError (400) if it is unacceptable."""
        params = _parse_params(value)
        # realm and nonce are mandatory in a challenge (RFC 2617 §3.2.1).
        _require(params, "realm", "nonce")
        algorithm = _parse_algorithm(params)
        qop: tuple[str, ...] = ()
        if "qop" in params:
            # qop-options = "qop" "=" <"> 1#qop-value <"> (RFC 2617 §3.2.1); case-insensitive.
            qop = tuple(q.strip().lower() for q in params["qop"].split(",") if q.strip())
            if not qop or not all(_is_token(q) for q in qop):
                raise SipParseError("malformed qop parameter", 400)
        stale = False
        if "stale" in params:
            # stale = "stale" "=" ( "true" | "false" ), case-insensitive (RFC 2617 §3.2.1).
            flag = params["stale"].lower()
            if flag not in ("true", "false"):
                raise SipParseError("malformed stale parameter", 400)
            stale = flag == "true"
        try:
            return cls(
                realm=params["realm"],
                nonce=params["nonce"],
                algorithm=algorithm,
                qop=qop,
                opaque=params.get("opaque"),
                stale=stale,
                domain=params.get("domain"),
            )
        except ValueError as exc:
            raise SipParseError(str(exc), 400) from None

    def __str__(self) -> str:
        parts = [f"realm={_quote(self.realm)}"]
        if self.domain is not None:
            parts.append(f"domain={_quote(self.domain)}")
        parts.append(f"nonce={_quote(self.nonce)}")
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque)}")
        if self.stale:
            parts.append("stale=TRUE")
        parts.append(f"algorithm={self.algorithm}")
        if self.qop:
            parts.append(f"qop={_quote(','.join(self.qop))}")
        return "Digest " + ", ".join(parts)


@dataclass(frozen=True, slots=True)
class Credentials:
    """Digest credentials: the value of an ``Authorization``/``Proxy-Authorization`` header."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    cnonce: str | None = None
    opaque: str | None = None
    qop: str | None = None
    nc: int | None = None

    def __post_init__(self) -> None:
        for name in ("username", "realm", "nonce", "uri", "cnonce", "opaque"):
            text = getattr(self, name)
            if text is not None:
                _check_text(name, text)
        if self.algorithm not in _HASHES:
            raise ValueError("unsupported digest algorithm")
        # request-digest = <"> 32LHEX <"> (RFC 2617 §3.2.2); 64 hex digits for SHA-256
        # (RFC 7616 §3.4, RFC 8760 §2.2).
        if len(self.response) != _HEX_LEN[self.algorithm] or not _HEX_RE.fullmatch(self.response):
            raise ValueError("response is not a lower-case hex digest of the right length")
        if self.qop is not None and not _is_token(self.qop):
            raise ValueError("qop must be a token")
        if self.nc is not None and not 0 <= self.nc <= 0xFFFFFFFF:
            raise ValueError("nc out of range")

    @classmethod
    def parse(cls, value: str) -> Credentials:
        """Parse a credentials header value; raise SipParseError (400) if it is unacceptable."""
        params = _parse_params(value)
        # RFC 2617 §3.2.2: username, realm, nonce, digest-uri and response are required.
        _require(params, "username", "realm", "nonce", "uri", "response")
        algorithm = _parse_algorithm(params)
        response = params["response"].lower()
        if len(response) != _HEX_LEN[algorithm] or not _HEX_RE.fullmatch(response):
            raise SipParseError("malformed response parameter", 400)
        nc: int | None = None
        if "nc" in params:
            # nonce-count = "nc" "=" 8LHEX (RFC 2617 §3.2.2).
            if not _NC_RE.fullmatch(params["nc"]):
                raise SipParseError("malformed nc parameter", 400)
            nc = int(params["nc"], 16)
        qop = params["qop"].lower() if "qop" in params else None
        if qop is not None and not _is_token(qop):
            raise SipParseError("malformed qop parameter", 400)
        try:
            return cls(
                username=params["username"],
                realm=params["realm"],
                nonce=params["nonce"],
                uri=params["uri"],
                response=response,
                algorithm=algorithm,
                cnonce=params.get("cnonce"),
                opaque=params.get("opaque"),
                qop=qop,
                nc=nc,
            )
        except ValueError as exc:
            raise SipParseError(str(exc), 400) from None

    def __str__(self) -> str:
        parts = [
            f"username={_quote(self.username)}",
            f"realm={_quote(self.realm)}",
            f"nonce={_quote(self.nonce)}",
            f"uri={_quote(self.uri)}",
            f"response={_quote(self.response)}",
            f"algorithm={self.algorithm}",
        ]
        if self.cnonce is not None:
            parts.append(f"cnonce={_quote(self.cnonce)}")
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque)}")
        # qop and nc are sent as tokens in credentials (RFC 2617 §3.2.2).
        if self.qop is not None:
            parts.append(f"qop={self.qop}")
        if self.nc is not None:
            parts.append(f"nc={self.nc:08x}")
        return "Digest " + ", ".join(parts)
