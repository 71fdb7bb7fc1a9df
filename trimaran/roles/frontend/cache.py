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

    def forget_server(self, server: str) -> None:
        """Drop bindings served by a server declared dead."""
        for aor, bindings in self._by_aor.items():
            self._by_aor[aor] = [b for b in bindings if b.server != server]

    def clear(self) -> None:
        """Forget everything (after this server was declared dead and rejoins)."""
        self._by_aor.clear()
        self.dirty.clear()


class CredentialCache:
    """Credentials seen in successful lookups, by (username, realm)."""

    def __init__(self) -> None:
        self._creds: dict[tuple[str, str], Credentials] = {}

    def remember(self, credentials: Credentials) -> None:
        """Keep a copy (HA1 only; the password is never known)."""
        self._creds[(credentials.username, credentials.realm)] = credentials

    def get(self, username: str, realm: str) -> Credentials | None:
        """The cached credentials, or None."""
        return self._creds.get((username, realm))
