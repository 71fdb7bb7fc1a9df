"""Who sent this request? Digest authentication of SIP requests (RFC 3261 §22).

REGISTER is challenged with 401/WWW-Authenticate (§22.2 registrar), everything
else with 407/Proxy-Authenticate (§22.3 proxy). A request is accepted only when
its credentials are valid *and* name the user in From (no spoofing another user).

With an `AccountLockout` (OPS-6), a known user's wrong responses are counted, and a
locked user's credentials are answered 403 "Account locked" before they are checked,
so the answer never tells whether the password was right.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from trimaran.roles.frontend.abuse import AccountLockout
from trimaran.roles.frontend.cache import CredentialCache
from trimaran.sip import digest
from trimaran.sip.errors import SipParseError
from trimaran.sip.message import Request
from trimaran.sip.uri import URI
from trimaran.store.base import StoreUnavailable
from trimaran.store.model import Credentials


@dataclass(frozen=True, slots=True)
class AuthOutcome:
    """`user` is the authenticated AOR; otherwise `status` (401/403/407), the challenges
    to send and, for a locked account, the `warning` text naming the policy."""

    user: str | None
    status: int = 0
    reason: str = ""
    challenges: tuple[str, ...] = ()
    challenge_header: str = ""
    warning: str = ""


class CredentialLookup(Protocol):
    """Where HA1s come from: a pool's `UserRepository`, or a Director's directory."""

    async def credentials(self, username: str, realm: str) -> Credentials | None:
        """Credentials for a digest username in a realm, or None."""


class CredentialSource(Protocol):
    """Anything with a `users` credential lookup (a `Store` is one)."""

    @property
    def users(self) -> CredentialLookup:
        """The credential lookup."""


class RequestAuthenticator:
    """Checks digest credentials of requests against the store's HA1s."""

    def __init__(self, store: CredentialSource, realm: str, secret: bytes, nonce_ttl: float,
                 algorithms: tuple[str, ...] = ("SHA-256", "MD5"), *,
                 names_this_server: Callable[[URI], bool] = lambda _uri: False,
                 store_ok: Callable[[], bool] = lambda: True,
                 lockout: AccountLockout | None = None) -> None:
        self.realm = realm
        self.lockout = lockout
        self.algorithms = algorithms
        self._names_this_server = names_this_server
        self._store_ok = store_ok
        self.cache = CredentialCache()
        self._store = store
        self._digest = digest.DigestAuthenticator(realm, secret, nonce_ttl)

    def statistics(self) -> digest.DigestStats:
        """The digest verifier's counters."""
        return self._digest.statistics()

    async def authenticate(self, request: Request, *, now: float) -> AuthOutcome:
        """Authenticate `request`; never raises for bad input (it gets a 4xx outcome)."""
        is_register = request.method == "REGISTER"
        header = "Authorization" if is_register else "Proxy-Authorization"
        creds = None
        for value in request.headers.get_all(header):
            try:
                candidate = digest.Credentials.parse(value)
            except SipParseError:
                return AuthOutcome(None, 400, "Malformed credentials")
            if candidate.realm == self.realm:
                creds = candidate
                break
        if creds is None:
            return self._challenge(is_register, now, stale=False)
        try:
            if not self._store_ok():
                raise StoreUnavailable("resiliency mode")
            record = await self._credentials(creds.username)
        except StoreUnavailable:
            record = self.cache.get(creds.username, self.realm)  # FE-7: work from the cache
            if record is None:
                raise
        if record is not None:
            self.cache.remember(record)
            if self.lockout is not None and self.lockout.locked_now(record.aor, now):
                return self._locked()
        lookup = {}
        if record is not None:
            lookup = {"MD5": record.ha1_md5, "SHA-256": record.ha1_sha256}
        if not self._uri_acceptable(creds.uri, request):
            return AuthOutcome(None, 400, "Digest uri does not match the Request-URI")
        result = self._digest.verify(creds, method=request.method, now=now,
                                     lookup_ha1=lambda _u, alg: lookup.get(alg))
        if result.stale:
            return self._challenge(is_register, now, stale=True)
        if not result.ok or record is None:
            if record is not None and result.wrong_response and self.lockout is not None \
                    and await self.lockout.failed(record.aor, now):
                return self._locked()
            return self._challenge(is_register, now, stale=False)
        claimed = request.to.uri.aor if is_register else request.from_.uri.aor
        if claimed != record.aor:
            return AuthOutcome(None, 403, "Credentials do not match the identity claimed")
        return AuthOutcome(record.aor)

    async def _credentials(self, username: str) -> Credentials | None:
        """The store's credentials (read with the user's lockout row when counting)."""
        if self.lockout is not None:
            return await self.lockout.credentials(username, self.realm)
        return await self._store.users.credentials(username, self.realm)

    def _uri_acceptable(self, digest_uri: str, request: Request) -> bool:
        """RFC 2617 §3.2.2.5: the digest-uri names the request's target. Clients that
        put this server's own address there (SIPp's default) are accepted too."""
        if digest_uri == str(request.uri):
            return True
        try:
            return self._names_this_server(URI.parse(digest_uri))
        except SipParseError:
            return False

    def _locked(self) -> AuthOutcome:
        assert self.lockout is not None
        return AuthOutcome(None, 403, "Account locked",
                           warning=f"Account locked by policy: {self.lockout.policy.describe()}")

    def _challenge(self, is_register: bool, now: float, *, stale: bool) -> AuthOutcome:
        challenges = tuple(str(c) for c in self._digest.challenge(
            now, algorithms=self.algorithms, stale=stale))
        if is_register:
            return AuthOutcome(None, 401, "Unauthorized", challenges, "WWW-Authenticate")
        return AuthOutcome(None, 407, "Proxy Authentication Required", challenges,
                           "Proxy-Authenticate")
