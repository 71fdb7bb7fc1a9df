"""Client-side digest authentication: answer 401/407 challenges, then reuse the nonce.

After the first challenge the credentials are sent pre-emptively with an
increasing nonce count (RFC 2617 §3.2.2), which saves a round trip per request;
a `stale=true` or a new challenge replaces the cached one.
"""

from __future__ import annotations

from dataclasses import dataclass

from trimaran.sip import digest
from trimaran.sip.errors import SipParseError
from trimaran.sip.message import Request, Response

_PREFERENCE = ("SHA-256", "MD5")  # RFC 8760 §2.4: use the strongest offered


@dataclass(slots=True)
class _Cached:
    challenge: digest.Challenge
    header: str          # "Authorization" or "Proxy-Authorization"
    nc: int = 0


class DigestClient:
    """Holds one user's credentials and the challenges seen, per realm."""

    def __init__(self, username: str, password: str) -> None:
        self.username = username
        self._password = password
        self._cache: dict[str, _Cached] = {}

    def __repr__(self) -> str:
        return f"DigestClient({self.username!r})"

    def learn(self, response: Response) -> bool:
        """Remember the challenges of a 401/407; False when there is nothing usable."""
        header = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
        answer_header = "Authorization" if response.status == 401 else "Proxy-Authorization"
        best: digest.Challenge | None = None
        for value in response.headers.get_all(header):
            try:
                challenge = digest.Challenge.parse(value)
            except SipParseError:
                continue
            rank = _PREFERENCE.index(challenge.algorithm) \
                if challenge.algorithm in _PREFERENCE else len(_PREFERENCE)
            if rank == len(_PREFERENCE):
                continue
            if best is None or rank < _PREFERENCE.index(best.algorithm):
                best = challenge
        if best is None:
            return False
        self._cache[best.realm] = _Cached(best, answer_header)
        return True

    def authorize(self, request: Request) -> None:
        """Add credentials for every cached realm to `request` (replacing old ones)."""
        request.headers.remove("Authorization")
        request.headers.remove("Proxy-Authorization")
        for cached in self._cache.values():
            cached.nc += 1
            creds = digest.answer(cached.challenge, method=request.method, uri=str(request.uri),
                                  username=self.username, password=self._password,
                                  cnonce=digest.new_cnonce(), nc=cached.nc, body=request.body)
            request.headers.add(cached.header, str(creds))

    @property
    def has_credentials(self) -> bool:
        """True once a challenge has been learnt."""
        return bool(self._cache)
