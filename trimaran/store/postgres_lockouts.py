"""PostgreSQL repository of account lockouts (not logged; `trimaran.store.lockouts`).

Same behaviour as `trimaran.store.sqlite_lockouts`. `record_failure` reads and rewrites
a user's row under a per-AOR advisory lock, so failures counted by several Front Ends
at once are serialised and none is lost. It is not retried once its commit was sent
(a second run would count the failure twice); `unlock` is a delete by primary key and
is (`Retry.ALWAYS`).
"""

from __future__ import annotations

from trimaran.store.base import LockoutRepository
from trimaran.store.lockouts import LockoutPolicy, after_failure, decode_failures, encode_failures
from trimaran.store.model import Credentials, Lockout
from trimaran.store.postgres_db import LOCK_LOCKOUTS, PgDatabase, PgTx, Record
from trimaran.store.postgres_db import Retry as R

_COLUMNS = "aor, failures, locked_at, locked_until"
_WITH_CREDENTIALS = (
    "SELECT c.aor, c.username, c.realm, c.ha1_md5, c.ha1_sha256, l.failures, l.locked_at, "
    "l.locked_until FROM credentials c LEFT JOIN auth_lockouts l ON l.aor = c.aor "
    "WHERE c.username = $1 AND c.realm = $2")


def _lockout(row: Record) -> Lockout:
    return Lockout(row["aor"], decode_failures(row["failures"]), row["locked_at"],
                   row["locked_until"])


async def _read(tx: PgTx, aor: str) -> Lockout | None:
    row = await tx.one(f"SELECT {_COLUMNS} FROM auth_lockouts WHERE aor = $1", aor)
    return None if row is None else _lockout(row)


class PostgresLockoutRepository(LockoutRepository):
    """One row per user with failures or a lock, written under the AOR's lock."""

    def __init__(self, db: PgDatabase) -> None:
        self._db = db

    async def get(self, aor: str) -> Lockout | None:
        """The user's row, or None."""
        return await self._db.read(lambda tx: _read(tx, aor), what="lockouts.get")

    async def credentials_with_lockout(self, username: str, realm: str
                                       ) -> tuple[Credentials, Lockout | None] | None:
        """The credentials and the user's row, in one query."""
        row = await self._db.read(lambda tx: tx.one(_WITH_CREDENTIALS, username, realm),
                                  what="lockouts.credentials_with_lockout")
        if row is None:
            return None
        credentials = Credentials(row["aor"], row["username"], row["realm"], row["ha1_md5"],
                                  row["ha1_sha256"])
        return credentials, None if row["failures"] is None else _lockout(row)

    async def record_failure(self, aor: str, policy: LockoutPolicy, *, now: float) -> Lockout:
        """Apply `after_failure` to the user's row in one transaction, under its lock.
        Not retried once its commit was sent (a rerun would count the failure twice)."""

        async def work(tx: PgTx) -> Lockout:
            await tx.lock(LOCK_LOCKOUTS, aor)
            after = after_failure(await _read(tx, aor), aor, policy, now)
            await tx.execute(
                f"INSERT INTO auth_lockouts ({_COLUMNS}) VALUES ($1, $2, $3, $4) "
                "ON CONFLICT (aor) DO UPDATE SET failures = excluded.failures, "
                "locked_at = excluded.locked_at, locked_until = excluded.locked_until",
                aor, encode_failures(after.failures), after.locked_at, after.locked_until)
            return after

        return await self._db.write(work, what="lockouts.record_failure", retry=R.UNCOMMITTED)

    async def unlock(self, aor: str, *, now: float) -> bool:
        """Delete the user's row; True when it held a lock at `now`."""

        async def work(tx: PgTx) -> bool:
            rows = await tx.all("DELETE FROM auth_lockouts WHERE aor = $1 RETURNING locked_until",
                                aor)
            return any(r["locked_until"] > now for r in rows)

        return await self._db.write(work, what="lockouts.unlock", retry=R.ALWAYS)

    async def locked(self, *, now: float) -> list[Lockout]:
        """The rows locked at `now`, ordered by AOR."""
        rows = await self._db.read(lambda tx: tx.all(
            f"SELECT {_COLUMNS} FROM auth_lockouts WHERE locked_until > $1 ORDER BY aor", now),
            what="lockouts.locked")
        return [_lockout(r) for r in rows]

    async def count_locked(self, *, now: float) -> int:
        """How many users are locked at `now`."""
        value = await self._db.read(lambda tx: tx.value(
            "SELECT COUNT(*) FROM auth_lockouts WHERE locked_until > $1", now),
            what="lockouts.count_locked")
        return int(value)
