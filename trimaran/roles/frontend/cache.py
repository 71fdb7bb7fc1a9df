"""Write-through caches that keep a Front End useful while its Back End is away (FE-7).

Every binding list read from or written to the store is remembered; while the
store is unreachable, routing uses what was last known, and registrations made
meanwhile are kept here ("dirty") and written back when the store returns.
"""

from __future__ import annotations

from trimaran.store.model import Binding, Credentials


class BindingCache:
    """Last known bindings per AOR, plus registrations not yet written to the store."""

    def __init__(self, max_aors: int = 200_000) -> None:
        self._by_aor: dict[str, list[Binding]] = {}
        self.dirty: set[str] = set()
        self._max = max_aors

    def remember(self, aor: str, bindings: list[Binding]) -> None:
        """Record the current bindings of `aor` (from the store)."""
        if aor not in self._by_aor and len(self._by_aor) >= self._max:
            self._by_aor.pop(next(iter(self._by_aor)))
        self._by_aor[aor] = list(bindings)

    def get(self, aor: str, now: float) -> list[Binding]:
        """Unexpired bindings last known for `aor`."""
        return [b for b in self._by_aor.get(aor, ()) if b.expires_at > now]

    def knows(self, aor: str) -> bool:
        """True when `aor` was seen (so it is a user of the pool)."""
        return aor in self._by_aor

    def apply(self, aor: str, upsert: tuple[Binding, ...], remove: tuple[str, ...],
              now: float) -> list[Binding]:
        """Apply a registration locally (store unreachable); it is written back later."""
        keep = {b.key: b for b in self.get(aor, now) if b.key not in remove}
        for binding in upsert:
            keep[binding.key] = binding
        result = sorted(keep.values(), key=lambda b: (-b.q, -b.expires_at))
        self._by_aor[aor] = result
        self.dirty.add(aor)
        return result

    def forget_flow(self, server: str, flow_id: str, aors: list[str]) -> None:
        """Drop the bindings of `aors` registered over flow `flow_id` of `server`."""
        for aor in aors:
            if aor in self._by_aor:
                self._by_aor[aor] = [b for b in self._by_aor[aor]
                                     if not (b.server == server and b.flow_id == flow_id)]

    def forget_server(self, server: str) -> None:
        """Drop bindings served by a server declared dead."""
        for aor, bindings in self._by_aor.items():
            self._by_aor[aor] = [b for b in bindings if b.server != server]

    def clear(self) -> None:
        """Forget everything (after this server was declared dead and rejoins)."""
        self._by_aor.clear()
        self.dirty.clear()


class CredentialCache:
    """Credentials by (username, realm): those seen in successful lookups, and every user
    of the pool once the `UserFeed` has loaded them."""

    def __init__(self) -> None:
        self._creds: dict[tuple[str, str], Credentials] = {}
        self._key_of: dict[str, tuple[str, str]] = {}       # aor -> its (username, realm)

    def remember(self, credentials: Credentials) -> None:
        """Keep a copy (HA1 only; the password is never known), replacing the user's
        previous credentials (a changed username included)."""
        self.forget(credentials.aor)
        key = (credentials.username, credentials.realm)
        self._creds[key] = credentials
        self._key_of[credentials.aor] = key

    def forget(self, aor: str) -> None:
        """Drop the credentials of `aor` (the user was removed)."""
        key = self._key_of.pop(aor, None)
        held = self._creds.get(key) if key is not None else None
        if key is not None and held is not None and held.aor == aor:
            del self._creds[key]

    def get(self, username: str, realm: str) -> Credentials | None:
        """The cached credentials, or None."""
        return self._creds.get((username, realm))

    @property
    def size(self) -> int:
        """How many users' credentials are held."""
        return len(self._creds)
