"""The SQLite store: embedded, for Standard Edition pools (one server, one file).

`SqliteStore` wires the SQLite repositories to one `SqliteDatabase` (one connection
owned by one worker thread; see `trimaran.store.sqlite_db` for the theory of
operation) and applies the schema migrations of `trimaran.store.sqlite_schema` when
opened.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from types import TracebackType

from trimaran.store.base import Store
from trimaran.store.migrations import latest_version, migrate
from trimaran.store.sqlite_backup import SqliteBackupRepository
from trimaran.store.sqlite_cms import SqliteCmsRepository
from trimaran.store.sqlite_db import SqliteDatabase
from trimaran.store.sqlite_lockouts import SqliteLockoutRepository
from trimaran.store.sqlite_meetings import SqliteChangeLog, SqliteMeetingRepository
from trimaran.store.sqlite_presence import SqlitePresenceRepository
from trimaran.store.sqlite_runtime import SqliteBindingRepository, SqliteHeartbeatRepository
from trimaran.store.sqlite_schema import MIGRATIONS, SqliteMigrationDriver
from trimaran.store.sqlite_users import SqliteContactListRepository, SqliteUserRepository

#: The schema version this code writes.
LATEST_VERSION = latest_version(MIGRATIONS)


class SqliteStore(Store):
    """One pool's store in a SQLite file (``":memory:"`` for a throw-away one in tests).

    Durable (WAL, ``synchronous=FULL``): a write that returned survives a crash.
    Usable as ``async with SqliteStore(path, pool="fe1") as store: ...``.
    """

    def __init__(self, path: str | Path, *, pool: str, busy_timeout: float = 5.0) -> None:
        self._db = SqliteDatabase(path, pool=pool, busy_timeout=busy_timeout)
        self.pool = pool
        #: The schema versions applied by the last `open` (empty when it was up to date).
        self.applied_migrations: tuple[int, ...] = ()
        self.users = SqliteUserRepository(self._db)
        self.bindings = SqliteBindingRepository(self._db)
        self.contacts = SqliteContactListRepository(self._db)
        self.presence = SqlitePresenceRepository(self._db)
        self.meetings = SqliteMeetingRepository(self._db)
        self.heartbeats = SqliteHeartbeatRepository(self._db)
        self.lockouts = SqliteLockoutRepository(self._db)
        self.changes = SqliteChangeLog(self._db)
        self.cms = SqliteCmsRepository(self._db)
        self.backup = SqliteBackupRepository(self._db)

    @property
    def path(self) -> str | Path:
        """The database file."""
        return self._db.path

    def __repr__(self) -> str:
        return f"SqliteStore({str(self._db.path)!r}, pool={self.pool!r})"

    async def open(self) -> None:
        """Create the file (and directory) if needed, connect and apply pending migrations.

        `SchemaTooNew` when the file was written by a newer Trimaran; `StoreUnavailable`
        when it cannot be opened now. Opening an open store does nothing.
        """
        if self._db.is_open:
            return
        await self._db.open()
        try:
            applied = await self._db.call(
                lambda conn: migrate(SqliteMigrationDriver(conn), MIGRATIONS))
        except BaseException:
            await self._db.close()
            raise
        self.applied_migrations = tuple(applied)

    async def close(self) -> None:
        """Let queued transactions finish, then close the file; idempotent."""
        await self._db.close()

    async def schema_version(self) -> int:
        """The applied schema version."""
        return await self._db.call(_read_version)

    async def __aenter__(self) -> SqliteStore:
        await self.open()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()


def _read_version(conn: sqlite3.Connection) -> int:
    return SqliteMigrationDriver(conn).applied_version()
