"""A Front End server's view of its Back End, and the store calls that follow it
(FE-7, METRO-1).

`StoreWatch` is set *away* when the server enters resiliency mode and *back* when it
leaves it. A store call made through `StoreWatch.call` reports a `StoreUnavailable`
(the server then enters resiliency mode) and, while it waits, gives up as soon as the
Back End is held away, raising `StoreUnavailable` itself: a request that started in
full mode does not sit out its own retry budget or command timeout once another one
has found the Back End gone — it goes on from the caches, like every request after it.

Why: the authenticator falls back to its credential cache when the store does not
answer a credentials lookup, without saying so, and every REGISTER waits its own
budget. Losing the principal's site of a stretched pool (the principal is gone until
the mirror is promoted) or the mirror's (commits wait for the lost mirror until the
principal runs exposed) then cost each moved user its own full wait, one after the
other on a busy server. The wrappers below put the authenticator's and the abuse
limits' store reads under the watch; the server's binding writes go through it too.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

from trimaran.store.base import LockoutRepository, StoreUnavailable, UserRepository
from trimaran.store.lockouts import LockoutPolicy
from trimaran.store.model import Credentials, Lockout

T = TypeVar("T")


class StoreWatch:
    """Whether the server holds its Back End unreachable; store calls under it."""

    def __init__(self, on_failure: Callable[[str], None]) -> None:
        self._on_failure = on_failure
        self._away = asyncio.Event()

    @property
    def away(self) -> bool:
        """True while the Back End is held unreachable (resiliency mode)."""
        return self._away.is_set()

    def set_away(self) -> None:
        """The server entered resiliency mode: calls waiting on the store give up."""
        self._away.set()

    def set_back(self) -> None:
        """The server left resiliency mode."""
        self._away.clear()

    async def call(self, work: Awaitable[T], *, release: bool = True) -> T:
        """Await a store call; report its `StoreUnavailable`. With `release`, give up
        with one as soon as the Back End is held away (the call is cancelled: only
        reads and idempotent writes may be released)."""
        task = asyncio.ensure_future(work)
        if not release:
            try:
                return await task
            except StoreUnavailable as exc:
                self._on_failure(str(exc))
                raise
        if self.away:
            task.cancel()
            raise StoreUnavailable("resiliency mode: the back end is held unreachable")
        away = asyncio.ensure_future(self._away.wait())
        try:
            await asyncio.wait({task, away}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            away.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, StoreUnavailable):
                await task
            raise StoreUnavailable("resiliency mode entered while waiting for the back end")
        try:
            return task.result()
        except StoreUnavailable as exc:
            self._on_failure(str(exc))
            raise


class NoticedUsers:
    """The credentials lookup of a pool's `UserRepository`, under the watch."""

    def __init__(self, users: UserRepository, watch: StoreWatch) -> None:
        self._users = users
        self._watch = watch

    async def credentials(self, username: str, realm: str) -> Credentials | None:
        """`UserRepository.credentials`."""
        return await self._watch.call(self._users.credentials(username, realm))


class NoticedCredentials:
    """A `CredentialSource` (what `RequestAuthenticator` reads) over a pool's users."""

    def __init__(self, users: UserRepository, watch: StoreWatch) -> None:
        self._lookup = NoticedUsers(users, watch)

    @property
    def users(self) -> NoticedUsers:
        """The credentials lookup."""
        return self._lookup


class NoticedLockouts(LockoutRepository):
    """A pool's `LockoutRepository` under the watch (its reads released)."""

    def __init__(self, lockouts: LockoutRepository, watch: StoreWatch) -> None:
        self._lockouts = lockouts
        self._watch = watch

    async def get(self, aor: str) -> Lockout | None:
        return await self._watch.call(self._lockouts.get(aor))

    async def credentials_with_lockout(self, username: str, realm: str
                                       ) -> tuple[Credentials, Lockout | None] | None:
        return await self._watch.call(self._lockouts.credentials_with_lockout(username, realm))

    async def record_failure(self, aor: str, policy: LockoutPolicy, *, now: float) -> Lockout:
        # counts once: never released (the caller counts in memory when it fails)
        return await self._watch.call(self._lockouts.record_failure(aor, policy, now=now),
                                      release=False)

    async def unlock(self, aor: str, *, now: float) -> bool:
        return await self._watch.call(self._lockouts.unlock(aor, now=now), release=False)

    async def locked(self, *, now: float) -> list[Lockout]:
        return await self._watch.call(self._lockouts.locked(now=now))

    async def count_locked(self, *, now: float) -> int:
        return await self._watch.call(self._lockouts.count_locked(now=now))
