"""The PostgreSQL store: networked, for Enterprise Edition pools (several Front Ends, one
Back End, mirrored: DESIGN §3 "Back End mirroring", SPEC BE-8, FE-7).

`PostgresStore` wires the PostgreSQL repositories to one `PgDatabase` (an asyncpg
pool; see `trimaran.store.postgres_db` for transactions, locking, the change log,
multi-host connection strings and the retry rules) and applies the schema migrations
of `trimaran.store.postgres_schema` when opened. It behaves as `SqliteStore` does —
same contract tests — and adds what a networked, failing-over database needs.

Retries (mechanism in `postgres_db`). A failure *before the commit* — connecting,
``BEGIN``, any statement, a serialisation failure, a deadlock, a read-only server —
cannot have committed anything (PostgreSQL aborts the open transaction of a lost
session), so every operation is retried then, with backoff, for up to `retry_for`
seconds. A connection lost *while COMMIT is in flight* leaves the outcome unknown:

=================================================  ===============  =======================
operation                                          unknown outcome  why
=================================================  ===============  =======================
reads: users.get/list/credentials/by_number,       retried          nothing to commit
contacts.get/watchers_of, presence.rules/
publications/subscriptions_to, bindings.for_aor/
count, meetings.get/by_organizer/contents/blob,
heartbeats.all, changes.since/last_seq/summary,
cms.get/all/version, backup.progress/export/keys,
lockouts.get/credentials_with_lockout/locked/
count_locked, schema_version
users.add                                          NOT retried      a rerun is a Conflict
                                                                    (or a second log row)
users.remove, meetings.remove,                     NOT retried      a rerun is NotFound
presence.unpublish
users.set_credentials, contacts.put,               NOT retried      logged: a rerun would
presence.set_rule/remove_rule/publish,                              append its change a
meetings.put/attach, cms.put/remove                                 second time
lockouts.record_failure                            NOT retried      a rerun would count the
                                                                    failure twice
bindings.apply/remove_all/purge_server/            retried          not logged; upserts and
purge_flow/purge_expired,                                           deletes by primary key:
presence.save_subscription/remove_subscription,                     a rerun leaves the same
heartbeats.beat, lockouts.unlock                                    rows
backup.apply/reset                                 retried          not logged; the progress
                                                                    commits with the rows:
                                                                    a rerun skips what was
                                                                    applied
=================================================  ===============  =======================

A write not retried after an unknown outcome raises `StoreUnavailable` at once, saying
the write may or may not have been applied; the SIP layer answers 503 and the client
retries, as for any other outage. `bindings.apply` is idempotent as a whole (the same
upserts and removals give the same rows); the counts returned by `remove_all` and the
purges are those of the last run.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any

from trimaran.store.base import Store
from trimaran.store.migrations import latest_version, migrate
from trimaran.store.postgres_backup import PostgresBackupRepository
from trimaran.store.postgres_cms import PostgresCmsRepository
from trimaran.store.postgres_db import PgDatabase
from trimaran.store.postgres_lockouts import PostgresLockoutRepository
from trimaran.store.postgres_meetings import PostgresChangeLog, PostgresMeetingRepository
from trimaran.store.postgres_presence import PostgresPresenceRepository
from trimaran.store.postgres_runtime import (
    PostgresBindingRepository,
    PostgresHeartbeatRepository,
)
from trimaran.store.postgres_schema import (
    MIGRATIONS,
    PgMigrationConnection,
    PostgresMigrationDriver,
)
from trimaran.store.postgres_users import (
    PostgresContactListRepository,
    PostgresUserRepository,
)

#: The schema version this code writes.
LATEST_VERSION = latest_version(MIGRATIONS)


class PostgresStore(Store):
    """One pool's store in a PostgreSQL database.

    `dsn` is a libpq-style URL, possibly naming the principal and the mirror
    (``postgresql://trimaran@h1:5432,h2:5432/trimaran?target_session_attrs=read-write``);
    `pool` is the Trimaran pool whose data this is. `connect_timeout` bounds each
    connection attempt to a host (and how long `open` waits for the database),
    `command_timeout` each statement, `retry_for` how long an operation keeps retrying
    while the database is away before raising `StoreUnavailable`. `min_size` and
    `max_size` size the connection pool. Usable as ``async with PostgresStore(...)``.
    """

    def __init__(self, dsn: str, *, pool: str, connect_timeout: float = 3.0,
                 command_timeout: float = 5.0, retry_for: float = 10.0, min_size: int = 1,
                 max_size: int = 10) -> None:
        self._db = PgDatabase(dsn, pool=pool, connect_timeout=connect_timeout,
                              command_timeout=command_timeout, retry_for=retry_for,
                              min_size=min_size, max_size=max_size)
        self.pool = pool
        #: The schema versions applied by the last `open` (empty when it was up to date).
        self.applied_migrations: tuple[int, ...] = ()
        self.users = PostgresUserRepository(self._db)
        self.bindings = PostgresBindingRepository(self._db)
        self.contacts = PostgresContactListRepository(self._db)
        self.presence = PostgresPresenceRepository(self._db)
        self.meetings = PostgresMeetingRepository(self._db)
        self.heartbeats = PostgresHeartbeatRepository(self._db)
        self.lockouts = PostgresLockoutRepository(self._db)
        self.changes = PostgresChangeLog(self._db)
        self.cms = PostgresCmsRepository(self._db)
        self.backup = PostgresBackupRepository(self._db)

    def __repr__(self) -> str:
        return f"PostgresStore({self._db.where!r}, pool={self.pool!r})"

    async def open(self) -> None:
        """Connect (waiting up to `connect_timeout` for the database) and apply pending
        migrations. `StoreUnavailable` when the database cannot be reached, `SchemaTooNew`
        when it was written by a newer Trimaran. Opening an open store does nothing."""
        applied = await self._db.open(_migrate)
        if applied is not None:
            self.applied_migrations = tuple(applied)

    async def close(self) -> None:
        """Let transactions in flight finish, then close the connections; idempotent."""
        await self._db.close()

    async def schema_version(self) -> int:
        """The applied schema version."""
        value = await self._db.read(
            lambda tx: tx.value("SELECT COALESCE(MAX(version), 0) FROM schema_version"),
            what="schema_version")
        return int(value)

    async def __aenter__(self) -> PostgresStore:
        await self.open()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()


async def _migrate(conn: Any) -> list[int]:
    """Run `migrate` (synchronous) in a worker thread over `conn`, bridged to this loop."""
    sync = PgMigrationConnection(conn, asyncio.get_running_loop())
    return await asyncio.to_thread(migrate, PostgresMigrationDriver(sync), MIGRATIONS)
