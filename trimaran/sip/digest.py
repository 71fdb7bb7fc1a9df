"""SIP Digest authentication: header parsing/formatting, client answers, server verification.

Covers RFC 2617 (MD5) and RFC 7616 / RFC 8760 (SHA-256 for SIP) with ``qop=auth``, plus the
RFC 2069 compatibility form (no ``qop``) for MD5 clients.  Sans-IO: the current time is always
passed in by the caller.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import string
import struct
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
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


def _h(algorithm: str, data: str | bytes) -> str:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    # MD5 is mandated by the protocol here, not chosen as a security primitive.
    return hashlib.new(_HASHES[algorithm], raw, usedforsecurity=False).hexdigest()


def ha1(username: str, realm: str, password: str, algorithm: str) -> str:
    """Return the hex HA1 = H(username:realm:password) to store instead of the password."""
    # A1 = unq(username) ":" unq(realm) ":" passwd (RFC 2617 §3.2.2.2, RFC 7616 §3.4.2).
    return _h(_canonical_algorithm(algorithm), f"{username}:{realm}:{password}")


def _response(
    algorithm: str,
    ha1_hex: str,
    nonce: str,
    method: str,
    uri: str,
    qop: str | None,
    nc: int | None,
    cnonce: str | None,
    body: bytes = b"",
) -> str:
    # A2 = Method ":" digest-uri [":" H(entity-body) for auth-int] (RFC 2617 §3.2.2.3).
    a2 = f"{method}:{uri}"
    if qop == "auth-int":
        a2 += ":" + _h(algorithm, body)
    ha2 = _h(algorithm, a2)
    if qop is None:
        # RFC 2069 compatibility: H(HA1:nonce:HA2) (RFC 2617 §3.2.2.1).
        return _h(algorithm, f"{ha1_hex}:{nonce}:{ha2}")
    # KD(HA1, nonce:nc:cnonce:qop:HA2) (RFC 2617 §3.2.2.1, RFC 7616 §3.4.1).
    return _h(algorithm, f"{ha1_hex}:{nonce}:{nc:08x}:{cnonce}:{qop}:{ha2}")


def _check_ha1(value: str, algorithm: str) -> str:
    value = value.lower()
    if len(value) != _HEX_LEN[algorithm] or not _HEX_RE.fullmatch(value):
        raise ValueError(f"HA1 is not a {algorithm} hex digest")
    return value


def new_cnonce() -> str:
    """Return a fresh random client nonce."""
    return secrets.token_hex(16)


def answer(
    challenge: Challenge,
    *,
    method: str,
    uri: str,
    username: str,
    password: str | None = None,
    ha1: str | None = None,
    cnonce: str,
    nc: int,
    body: bytes = b"",
) -> Credentials:
    """Compute the credentials answering `challenge` for one request.

    Exactly one of `password` or `ha1` must be given.  Uses ``qop=auth`` when offered,
    ``auth-int`` (over `body`) when only that is offered, and the RFC 2069 form when the
    challenge carries no qop.  Raises SipParseError if the challenge offers no usable qop.
    """
    if (password is None) == (ha1 is None):
        raise ValueError("give exactly one of password or ha1")
    algorithm = challenge.algorithm
    if ha1 is not None:
        key = _check_ha1(ha1, algorithm)
    else:
        assert password is not None
        key = _h(algorithm, f"{username}:{challenge.realm}:{password}")
    qop: str | None
    if not challenge.qop:
        qop = None
    elif "auth" in challenge.qop:
        qop = "auth"
    elif "auth-int" in challenge.qop:
        qop = "auth-int"
    else:
        raise SipParseError("challenge offers no supported qop", 400)
    if qop is not None and not 1 <= nc <= 0xFFFFFFFF:
        raise ValueError("nc must be in 1..0xFFFFFFFF")
    response = _response(algorithm, key, challenge.nonce, method, uri, qop, nc, cnonce, body)
    return Credentials(
        username=username,
        realm=challenge.realm,
        nonce=challenge.nonce,
        uri=uri,
        response=response,
        algorithm=algorithm,
        cnonce=cnonce if qop is not None else None,
        opaque=challenge.opaque,
        qop=qop,
        nc=nc if qop is not None else None,
    )


@dataclass(frozen=True, slots=True)
class AuthResult:
    """Outcome of verifying credentials.

    `stale` means the digest was right but the nonce expired: re-challenge with ``stale=true``
    (RFC 2617 §3.2.1).  `username` is set only when `ok`.
    """

    ok: bool
    username: str | None
    stale: bool
    reason: str


@dataclass(frozen=True, slots=True)
class DigestStats:
    """Snapshot of a DigestAuthenticator's counters; the verification counts are disjoint."""

    nonces_tracked: int
    verified_ok: int
    verified_failed: int
    stale: int
    replayed: int


# Nonce layout (base64url, 48 chars): 8-byte float issue time | 12 random bytes | 16-byte MAC.
_TS = struct.Struct(">d")
_RAND_LEN = 12
_MAC_LEN = 16
# How far in the future a nonce's issue time may be before it is treated as stale.
_CLOCK_SKEW = 5.0


class DigestAuthenticator:
    """Issues Digest challenges and verifies credentials for one realm (sans-IO, in memory).

    Nonces are self-validating (issue time and randomness authenticated with an HMAC under
    `secret`), so no state is kept per challenge.  Per nonce used successfully with qop, the
    highest nonce-count seen is tracked to reject replays; at most `max_nonces` are kept, least
    recently used evicted first.  A nonce evicted from tracking is answered with ``stale`` so
    the client re-authenticates with a fresh one.  Pass a wall-clock `now` and a persistent
    `secret` if nonces should survive a restart.
    """

    def __init__(
        self,
        realm: str,
        secret: bytes,
        nonce_ttl: float = 300.0,
        max_nonces: int = 100_000,
        *,
        opaque: str | None = None,
    ) -> None:
        _check_text("realm", realm)
        if opaque is not None:
            _check_text("opaque", opaque)
        if len(secret) < 16:
            raise ValueError("secret must be at least 16 bytes")
        if not nonce_ttl > 0:
            raise ValueError("nonce_ttl must be positive")
        if max_nonces < 1:
            raise ValueError("max_nonces must be at least 1")
        self.realm = realm
        self.nonce_ttl = nonce_ttl
        self.max_nonces = max_nonces
        self.opaque = opaque
        self._secret = secret
        self._realm_bytes = realm.encode("utf-8")
        # nonce -> (issue time, highest nc accepted); ordered least recently used first.
        self._seen: OrderedDict[str, tuple[float, int]] = OrderedDict()
        # Highest issue time among nonces dropped from _seen: an untracked nonce issued at or
        # before it may have been used already, so it cannot be trusted to start at nc 0.
        self._evicted_up_to = float("-inf")
        self._ok = 0
        self._failed = 0
        self._stale = 0
        self._replayed = 0

    def __repr__(self) -> str:
        return f"DigestAuthenticator(realm={self.realm!r}, tracked={len(self._seen)})"

    def _mac(self, body: bytes) -> bytes:
        msg = b"trimaran-digest-nonce\x00" + self._realm_bytes + b"\x00" + body
        return hmac.new(self._secret, msg, hashlib.sha256).digest()[:_MAC_LEN]

    def _new_nonce(self, now: float) -> str:
        body = _TS.pack(now) + secrets.token_bytes(_RAND_LEN)
        return base64.urlsafe_b64encode(body + self._mac(body)).decode("ascii")

    def _nonce_time(self, nonce: str) -> float | None:
        """Issue time of a nonce we minted, or None if it is forged, tampered or foreign."""
        if not _NONCE_RE.fullmatch(nonce):
            return None
        raw = base64.urlsafe_b64decode(nonce)
        body, mac = raw[:-_MAC_LEN], raw[-_MAC_LEN:]
        if not hmac.compare_digest(mac, self._mac(body)):
            return None
        issued: float = _TS.unpack(body[: _TS.size])[0]
        return issued

    def challenge(
        self,
        now: float,
        *,
        algorithms: Sequence[str] = ALGORITHMS,
        stale: bool = False,
    ) -> list[Challenge]:
        """Return one challenge per algorithm, in the given order of preference."""
        # RFC 8760 §2.3: one WWW-Authenticate/Proxy-Authenticate per algorithm, most preferred
        # (SHA-256) first.  qop is always offered (RFC 7616 §3.3; required for SIP by RFC 8760).
        return [
            Challenge(
                realm=self.realm,
                nonce=self._new_nonce(now),
                algorithm=_canonical_algorithm(alg),
                qop=("auth",),
                opaque=self.opaque,
                stale=stale,
            )
            for alg in algorithms
        ]

    def _fail(self, reason: str) -> AuthResult:
        self._failed += 1
        return AuthResult(ok=False, username=None, stale=False, reason=reason)

    def _stale_result(self, reason: str) -> AuthResult:
        self._stale += 1
        return AuthResult(ok=False, username=None, stale=True, reason=reason)

    def _dummy_ha1(self, username: str, algorithm: str) -> str:
        # Stands in for an unknown user's HA1 so both paths do the same work.
        mac = hmac.new(self._secret, b"dummy\x00" + username.encode("utf-8"), hashlib.sha256)
        return mac.hexdigest()[: _HEX_LEN[algorithm]]

    def _forget_expired(self, now: float) -> None:
        while self._seen:
            nonce, (issued, _nc) = next(iter(self._seen.items()))
            if now - issued <= self.nonce_ttl:
                break
            self._drop(nonce, issued)

    def _drop(self, nonce: str, issued: float) -> None:
        del self._seen[nonce]
        self._evicted_up_to = max(self._evicted_up_to, issued)

    def verify(
        self,
        creds: Credentials,
        *,
        method: str,
        now: float,
        lookup_ha1: Callable[[str, str], str | None],
        request_uri: str | None = None,
    ) -> AuthResult:
        """Check credentials against our nonces and the stored HA1 for (username, algorithm).

        `lookup_ha1(username, algorithm)` returns the stored hex HA1 or None.  The credentials'
        uri is compared with `request_uri` only when one is given.  Credentials without qop
        (RFC 2069 form) are accepted for MD5 only and carry no nonce-count, so they are not
        protected against replay while their nonce is fresh.
        """
        self._forget_expired(now)
        if creds.realm != self.realm:
            return self._fail("realm mismatch")
        # RFC 3261 §22.4: the digest-uri must match the Request-URI.
        if request_uri is not None and creds.uri != request_uri:
            return self._fail("uri mismatch")
        # The server must return opaque unchanged (RFC 2617 §3.2.1).
        if self.opaque is not None and creds.opaque != self.opaque:
            return self._fail("opaque mismatch")
        if creds.qop is None:
            # RFC 2069 form kept for MD5 only; RFC 7616 §3.3 and RFC 8760 make qop mandatory.
            if creds.algorithm != "MD5":
                return self._fail("qop required")
        elif creds.qop != "auth":
            return self._fail("unsupported qop")
        elif creds.cnonce is None or creds.nc is None:
            # cnonce and nc MUST accompany qop (RFC 2617 §3.2.2).
            return self._fail("qop=auth requires cnonce and nc")
        issued = self._nonce_time(creds.nonce)
        if issued is None:
            return self._fail("invalid nonce")
        # Without qop there is no nonce-count (RFC 2069 form): ignore a stray nc.
        nc = creds.nc if creds.qop is not None else None

        stored = lookup_ha1(creds.username, creds.algorithm)
        key = (
            self._dummy_ha1(creds.username, creds.algorithm)
            if stored is None
            else _check_ha1(stored, creds.algorithm)
        )
        expected = _response(
            creds.algorithm, key, creds.nonce, method, creds.uri, creds.qop, nc, creds.cnonce
        )
        matches = hmac.compare_digest(expected.encode("ascii"), creds.response.encode("ascii"))
        if stored is None or not matches:
            # Unknown user and wrong password look the same (no user enumeration).
            return self._fail(_GENERIC_FAILURE)

        # Expired (or from the future): the digest is right, so the client may simply retry
        # with a fresh nonce -> stale=TRUE (RFC 2617 §3.2.1).
        if now - issued > self.nonce_ttl or issued - now > _CLOCK_SKEW:
            return self._stale_result("nonce expired")

        if nc is not None:
            # nonce-count must increase to detect replays (RFC 2617 §3.2.2, RFC 7616 §3.4).
            entry = self._seen.get(creds.nonce)
            if entry is None:
                if issued <= self._evicted_up_to:
                    return self._stale_result("nonce no longer tracked")
                highest = 0
            else:
                highest = entry[1]
            if nc <= highest:
                self._replayed += 1
                return AuthResult(ok=False, username=None, stale=False, reason="replayed nc")
            self._seen[creds.nonce] = (issued, nc)
            self._seen.move_to_end(creds.nonce)
            while len(self._seen) > self.max_nonces:
                oldest, (oldest_issued, _nc) = next(iter(self._seen.items()))
                self._drop(oldest, oldest_issued)

        self._ok += 1
        return AuthResult(ok=True, username=creds.username, stale=False, reason="ok")

    def statistics(self) -> DigestStats:
        """Return a snapshot of the nonce table size and verification counters."""
        return DigestStats(
            nonces_tracked=len(self._seen),
            verified_ok=self._ok,
            verified_failed=self._failed,
            stale=self._stale,
            replayed=self._replayed,
        )
