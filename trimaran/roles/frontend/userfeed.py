"""Every user of the pool known to every Front End server of it: credentials and home
pool (FE-2, FE-7, METRO-1).

While its Back End is unreachable, a server authenticates from its credential cache
and decides whom it serves from the home pools it has looked up (resiliency mode).
Filled only by the server's own lookups, those caches know just the users who came
through this server — so when a whole site of a stretched pool is lost with the
principal, its users, signing in again on the other site's servers during the Back
End's failover, were all refused until the mirror had taken over. With this feed each
server holds every pool user's credentials (HA1s, never passwords) and home pool,
like the user data a Front End server keeps locally in the model:

* once, a load: the pool's users (their home pool) and the current ``credentials``
  record of each (`BackupRepository.keys` / `export`), after noting the change log's
  last sequence number;
* then, every tick, the change log after that number (`ChangeLog.since`, in pages): a
  ``credentials`` put replaces the user's entry and a delete forgets it; a ``user`` put
  gives its home pool and a delete forgets it.

A change committed while the load runs is read again by the follow (harmless: puts and
deletes are idempotent). `tick` raises `StoreUnavailable` when the Back End is away;
the next tick goes on from where the last one stopped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from trimaran.roles.frontend.cache import CredentialCache
from trimaran.store.base import Store
from trimaran.store.codec import CodecError, decode_change
from trimaran.store.model import Change, Credentials, User

log = logging.getLogger(__name__)

CREDENTIALS, USER = "credentials", "user"
PAGE = 1000

#: Told a user's home pool (None: the user was removed).
HomeSink = Callable[[str, str | None], None]


class UserFeed:
    """Keeps `cache` holding the credentials of every user of `pool` in `store`, and
    tells `home` every user's home pool."""

    def __init__(self, store: Store, pool: str, cache: CredentialCache,
                 home: HomeSink = lambda _aor, _pool: None, *, page: int = PAGE) -> None:
        self.store = store
        self.pool = pool
        self.cache = cache
        self.home = home
        self.page = page
        self.loaded = False
        self.seq = 0              # the last change-log entry read

    async def tick(self) -> int:
        """Load (the first time) or follow the change log; returns how many changes
        were applied. Raises `StoreUnavailable`."""
        applied = 0
        if not self.loaded:
            seq = await self.store.changes.last_seq()
            for user in await self.store.users.list(self.pool):
                self.home(user.aor, user.pool)
            for key in await self.store.backup.keys(CREDENTIALS, self.pool):
                applied += self._apply(await self.store.backup.export(CREDENTIALS, key))
            self.seq, self.loaded = seq, True
            log.info("credentials of %d user(s) of pool %s loaded", applied, self.pool)
        while True:
            changes = await self.store.changes.since(self.seq, limit=self.page)
            applied += sum(self._apply(c) for c in changes if c.category in (CREDENTIALS,
                                                                             USER))
            if changes:
                self.seq = changes[-1].seq
            if len(changes) < self.page:
                return applied

    def _apply(self, change: Change) -> int:
        try:
            record = decode_change(change)
        except CodecError as exc:
            log.warning("%s change %s of %s skipped: %s", change.category, change.seq,
                        change.key, exc)
            return 0
        if isinstance(record, Credentials):
            self.cache.remember(record)
        elif isinstance(record, User):
            self.home(record.aor, record.pool)
        elif change.category == CREDENTIALS:
            self.cache.forget(change.key)
        else:
            self.home(change.key, None)
        return 1
