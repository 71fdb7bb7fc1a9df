"""SQLite repository of account lockouts (not logged; `trimaran.store.lockouts`)."""

from __future__ import annotations

import sqlite3

from trimaran.store.base import LockoutRepository
from trimaran.store.lockouts import LockoutPolicy, after_failure, decode_failures, encode_failures
from trimaran.store.model import Credentials, Lockout
from trimaran.store.sqlite_db import SqliteDatabase, Tx

_COLUMNS = "aor, failures, locked_at, locked_until"
_WITH_CREDENTIALS = (
    "SELECT c.aor, c.username, c.realm, c.ha1_md5, c.ha1_sha256, l.failures, l.locked_at, "
    "l.locked_until FROM credentials c LEFT JOIN auth_lockouts l ON l.aor = c.aor "
    "WHERE c.username = ? AND c.realm = ?")


def _lockout(row: sqlite3.Row) -> Lockout:
    return Lockout(row["aor"], decode_failures(row["failures"]), row["locked_at"],
                   row["locked_until"])


def _read(tx: Tx, aor: str) -> Lockout | None:
    row = tx.one(f"SELECT {_COLUMNS} FROM auth_lockouts WHERE aor = ?", (aor,))
    return None if row is None else _lockout(row)


class SqliteLockoutRepository(LockoutRepository):
    """One row per user with failures or a lock; writes are serialised by SQLite's
    single writer (``BEGIN IMMEDIATE``)."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def get(self, aor: str) -> Lockout | None:
        """The user's row, or None."""
        return await self._db.read(lambda tx: _read(tx, aor))

    async def credentials_with_lockout(self, username: str, realm: str
                                       ) -> tuple[Credentials, Lockout | None] | None:
        """The credentials and the user's row, in one query."""
        row = await self._db.read(lambda tx: tx.one(_WITH_CREDENTIALS, (username, realm)))
        if row is None:
            return None
        credentials = Credentials(row["aor"], row["username"], row["realm"], row["ha1_md5"],
                                  row["ha1_sha256"])
        return credentials, None if row["failures"] is None else _lockout(row)

    async def record_failure(self, aor: str, policy: LockoutPolicy, *, now: float) -> Lockout:
        """Apply `after_failure` to the user's row in one write transaction."""

        def work(tx: Tx) -> Lockout:
            after = after_failure(_read(tx, aor), aor, policy, now)
            tx.execute(
                f"INSERT INTO auth_lockouts ({_COLUMNS}) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (aor) DO UPDATE SET failures = excluded.failures, "
                "locked_at = excluded.locked_at, locked_until = excluded.locked_until",
                (aor, encode_failures(after.failures), after.locked_at, after.locked_until))
            return after

        return await self._db.write(work)

    async def unlock(self, aor: str, *, now: float) -> bool:
        """Delete the user's row; True when it held a lock at `now`."""

        def work(tx: Tx) -> bool:
            before = _read(tx, aor)
            tx.execute("DELETE FROM auth_lockouts WHERE aor = ?", (aor,))
            return before is not None and before.locked(now)

        return await self._db.write(work)

    async def locked(self, *, now: float) -> list[Lockout]:
        """The rows locked at `now`, ordered by AOR."""
        rows = await self._db.read(lambda tx: tx.all(
            f"SELECT {_COLUMNS} FROM auth_lockouts WHERE locked_until > ? ORDER BY aor",
            (now,)))
        return [_lockout(r) for r in rows]

    async def count_locked(self, *, now: float) -> int:
        """How many users are locked at `now`."""

        def work(tx: Tx) -> int:
            row = tx.one("SELECT COUNT(*) FROM auth_lockouts WHERE locked_until > ?", (now,))
            return 0 if row is None else int(row[0])

        return await self._db.read(work)
