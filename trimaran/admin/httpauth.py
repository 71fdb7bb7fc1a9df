"""HTTP Digest authentication (RFC 7616) of users against the store's credentials.

The digest itself is `trimaran.sip.digest` (method = HTTP method, uri = request
target). This module adds what HTTP needs: the credential lookup in the store, the
scheme check, and an outcome the HTTP boundary turns into 200/400/401/403/503.
Nothing here logs or keeps the Authorization header.

With a `LockoutCheck` (the Front End's account lockout, OPS-6), wrong passwords count
as they do over SIP and a locked user is refused (403) before the digest is checked.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import unquote

from trimaran.sip.digest import ALGORITHMS, Credentials, DigestAuthenticator
from trimaran.sip.errors import SipParseError
from trimaran.store.base import UserRepository


@dataclass(frozen=True, slots=True)
class AuthOutcome:
    """The result of checking one request's Authorization header.

    `status` is 200 when `aor` is the authenticated user; 400 for a malformed Digest
    header; 401 when the client must (re)authenticate (`stale` asks it to retry with a
    fresh nonce, RFC 7616 §3.3); 403 for a disabled or locked account. `reason` is safe to show.
    """

    status: int
    reason: str
    aor: str | None = None
    stale: bool = False


class LockoutCheck(Protocol):
    """Account lockout (`trimaran.roles.frontend.abuse.AccountLockout`)."""

    async def locked(self, aor: str, now: float) -> bool:
        """True while `aor` is locked."""

    async def failed(self, aor: str, now: float) -> bool:
        """Count a wrong response of `aor`; True when the account is locked after it."""


def _scheme(header: str) -> str:
    return header.strip().partition(" ")[0].lower()


def _same_target(digest_uri: str, request_target: str) -> bool:
    # RFC 7616 §3.4.6: the digest-uri must name the request-target; clients may
    # percent-encode differently ("sip%3Aa%40b" vs "sip:a@b"), so compare decoded.
    return digest_uri == request_target or unquote(digest_uri) == unquote(request_target)


class HttpDigestAuth:
    """Challenges and verifies HTTP Digest credentials for one realm (SHA-256 and MD5).

    `secret` keys the nonces (random per server by default, so nonces do not survive
    a restart); `clock` is the wall clock used for nonce ages.
    """

    def __init__(
        self,
        realm: str,
        users: UserRepository,
        *,
        clock: Callable[[], float],
        secret: bytes | None = None,
        nonce_ttl: float = 300.0,
        lockout: LockoutCheck | None = None,
    ) -> None:
        self.realm = realm
        self._users = users
        self._lockout = lockout
        self._clock = clock
        self._digest = DigestAuthenticator(
            realm, secret if secret is not None else secrets.token_bytes(32), nonce_ttl)

    def challenges(self, *, stale: bool = False) -> list[str]:
        """`WWW-Authenticate` values, SHA-256 first then MD5 (RFC 7616 §3.7), qop=auth."""
        return [str(c) for c in
                self._digest.challenge(self._clock(), algorithms=ALGORITHMS, stale=stale)]

    async def authenticate(self, authorization: str | None, *, method: str,
                           target: str) -> AuthOutcome:
        """Check `authorization` (the header value, or None) for `method` on `target`
        (the raw request-target, path and query). May raise `StoreUnavailable`."""
        if authorization is None or _scheme(authorization) != "digest":
            return AuthOutcome(401, "authentication required")
        try:
            creds = Credentials.parse(authorization)
        except SipParseError as exc:
            return AuthOutcome(400, f"malformed Digest authorization: {exc.reason}")
        if not _same_target(creds.uri, target):
            return AuthOutcome(400, "digest uri does not match the request target")
        stored = await self._users.credentials(creds.username, self.realm)
        lockout, now = self._lockout, self._clock()
        if stored is not None and lockout is not None and await lockout.locked(stored.aor, now):
            return AuthOutcome(403, "account locked")

        def lookup(username: str, algorithm: str) -> str | None:
            if stored is None or stored.username != username:
                return None
            return stored.ha1(algorithm)

        result = self._digest.verify(creds, method=method, now=now, lookup_ha1=lookup)
        if result.stale:
            return AuthOutcome(401, "nonce expired", stale=True)
        if not result.ok or stored is None:
            if stored is not None and result.wrong_response and lockout is not None \
                    and await lockout.failed(stored.aor, now):
                return AuthOutcome(403, "account locked")
            return AuthOutcome(401, "invalid credentials")
        user = await self._users.get(stored.aor)
        if user is None or not user.enabled:
            return AuthOutcome(403, "account disabled")
        return AuthOutcome(200, "ok", aor=stored.aor)
