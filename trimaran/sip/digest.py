"""SIP Digest authentication: header parsing/formatting, client answers, server verification.

Covers RFC 2617 (MD5) and RFC 7616 / RFC 8760 (SHA-256 for SIP) with ``qop=auth``, plus the
RFC 2069 compatibility form (no ``qop``) for MD5 clients.  Sans-IO: the current time is always
passed in by the caller.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from trimaran.sip.digest_headers import (
    _GENERIC_FAILURE,
    _HASHES,
    _HEX_LEN,
    _HEX_RE,
    _NONCE_RE,
    ALGORITHMS,
    MAX_HEADER_LEN,
    MAX_PARAMS,
    MAX_VALUE_LEN,
    Challenge,
    Credentials,
    _canonical_algorithm,
    _check_text,
)
from trimaran.sip.errors import SipParseError

__all__ = [
    "ALGORITHMS",
    "MAX_HEADER_LEN",
    "MAX_PARAMS",
    "MAX_VALUE_LEN",
    "AuthResult",
    "Challenge",
    "Credentials",
    "DigestAuthenticator",
    "DigestStats",
    "answer",
    "ha1",
    "new_cnonce",
]


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
    (RFC 2617 §3.2.1).  `username` is set only when `ok`.  `wrong_response` means the
    credentials were well formed, for one of our nonces and a known user, and the response
    did not match the stored HA1: a wrong password (what account lockout counts), as
    opposed to malformed, foreign, replayed or stale credentials or an unknown user.
    """

    ok: bool
    username: str | None
    stale: bool
    reason: str
    wrong_response: bool = False


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
            # Unknown user and wrong password look the same to the client (no user
            # enumeration); the caller may count a known user's wrong responses.
            self._failed += 1
            return AuthResult(ok=False, username=None, stale=False, reason=_GENERIC_FAILURE,
                              wrong_response=stored is not None)

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
