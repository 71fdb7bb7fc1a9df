"""The PostgreSQL connection pool, transactions and retries.

Theory of operation: one `PgDatabase` owns one asyncpg pool. A repository method hands
it a coroutine function that does the whole transaction on a `PgTx` (`read` or
`write`); `PgDatabase` acquires a connection, runs ``BEGIN`` … ``COMMIT`` around it
and releases the connection. Writes run at READ COMMITTED; where the SQLite backend
relies on its single writer, the repositories serialise themselves per key with
``pg_advisory_xact_lock`` or ``SELECT … FOR UPDATE``.

**Change log.** `PgTx.log_put`/`log_delete` encode the record at once and queue the
row; just before ``COMMIT`` the queue is appended under a transaction-scoped advisory
lock on the change log. That lock is held until the commit, so sequence numbers are
handed out in commit order: a reader of `since(seq)` never sees seq n+1 committed
while n is still to come (it would skip n forever), and the rows of one transaction
are contiguous. Taking it last keeps the serialised section short (append + commit)
and deadlock-free (nothing is locked after it).

**Connecting.** The DSN may name several hosts (``postgresql://u@h1:p1,h2:p2/db``).
Each is tried in order with its own `connect_timeout` (a host that hangs does not eat
the others' time) and must match ``target_session_attrs``, which defaults to
``read-write`` when neither the DSN nor ``PGTARGETSESSIONATTRS`` sets it: a standby
or a fenced (read-only) principal is never chosen for writes. Writes use a plain
``BEGIN``, never ``BEGIN READ WRITE``, so a server made read-only while we are
connected refuses them (25006) instead of being overridden; that connection is then
dropped and the next one goes through the host check again.

**Retries.** A failure that leaves no doubt that nothing was committed (the database
unreachable, restarting or failing over before ``COMMIT`` was sent — PostgreSQL
aborts the open transaction of a lost session —, a serialisation failure or deadlock,
a read-only server) is retried with exponential backoff and jitter for up to
`retry_for` seconds, then raised as `StoreUnavailable`. A failure *while committing*
leaves the outcome unknown: it is retried only for operations declared
`Retry.ALWAYS` (idempotent by nature), and raised at once as `StoreUnavailable`
saying so for the others (`Retry.UNCOMMITTED`), so a logged write is never applied
or logged twice. A connection that failed (or whose transaction was cancelled) is
terminated, never returned to the pool; the pool reconnects on the next use, so the
store recovers by itself when the database is back.

Errors are converted at one boundary (`trimaran.store.postgres_errors`), so no
asyncpg or socket exception escapes.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import asyncpg  # type: ignore[import-untyped]

from trimaran.store import codec
from trimaran.store.base import StoreError, StoreUnavailable
from trimaran.store.postgres_errors import (
    MISCONFIGURED_PREFIXES,
    ConnectFailed,
    Retryable,
    describe,
    final_error,
    split_hosts,
    translate,
    where_of,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
Record = Any          # asyncpg.Record: read by column name, like sqlite3.Row

#: Advisory lock keys (one 64-bit key each; the two-int4 space holds the per-key locks).
CHANGE_LOG_LOCK = int.from_bytes(b"trim-log", "big")
MIGRATION_LOCK = int.from_bytes(b"trim-mig", "big")

#: Namespaces (first int4) of the per-key transaction locks (second int4: hashtext(key)).
LOCK_BINDINGS = int.from_bytes(b"TRbd", "big")
LOCK_CONTACTS = int.from_bytes(b"TRcl", "big")
LOCK_PRESENCE = int.from_bytes(b"TRpr", "big")
LOCK_BACKUP = int.from_bytes(b"TRbk", "big")         # per source pool: one apply at a time
LOCK_LOCKOUTS = int.from_bytes(b"TRlo", "big")       # per AOR: failed authentications

_BACKOFF_FIRST = 0.05      # seconds before the first retry
_BACKOFF_CAP = 1.0         # the longest pause between two attempts


class Retry(enum.Enum):
    """When a failed write may be run again (see the module docstring)."""

    UNCOMMITTED = "only when it cannot have committed"
    ALWAYS = "also when the commit's outcome is unknown (idempotent by nature)"


class PgTx:
    """One open transaction: the connection, and the change-log rows to append."""

    def __init__(self, conn: Any, pool: str) -> None:
        self.conn = conn
        self.pool = pool
        self._changes: list[tuple[str, str, str, str, str, float]] = []

    async def execute(self, sql: str, *args: object) -> str:
        """Run one statement; its status ("DELETE 3")."""
        return str(await self.conn.execute(sql, *args))

    async def count(self, sql: str, *args: object) -> int:
        """Run an INSERT/UPDATE/DELETE; how many rows it touched."""
        status = await self.execute(sql, *args)
        return int(status.rsplit(" ", 1)[-1])

    async def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        """Run one statement for each row (pipelined)."""
        if rows:
            await self.conn.executemany(sql, rows)

    async def one(self, sql: str, *args: object) -> Record | None:
        """The first row of a query, or None."""
        return await self.conn.fetchrow(sql, *args)

    async def all(self, sql: str, *args: object) -> list[Record]:
        """Every row of a query."""
        return list(await self.conn.fetch(sql, *args))

    async def value(self, sql: str, *args: object) -> Any:
        """The first column of the first row (None without rows)."""
        return await self.conn.fetchval(sql, *args)

    async def lock(self, namespace: int, key: str) -> None:
        """Serialise with every transaction locking the same (namespace, key), until
        this one ends (``pg_advisory_xact_lock``)."""
        await self.conn.execute("SELECT pg_advisory_xact_lock($1::int4, hashtext($2))",
                                namespace, key)

    def log_put(self, category: str, key: str, record: object, at: float) -> None:
        """Queue a `put` change carrying `record` (as codec JSON) for the change log."""
        self._changes.append((self.pool, category, key, "put", codec.encode(record), at))

    def log_delete(self, category: str, key: str, at: float) -> None:
        """Queue a `delete` change for the change log."""
        self._changes.append((self.pool, category, key, "delete", "", at))

    async def flush_log(self) -> None:
        """Append the queued changes, in order, under the change-log lock (held until
        the transaction ends, so sequence numbers follow commit order)."""
        if not self._changes:
            return
        await self.conn.execute("SELECT pg_advisory_xact_lock($1::int8)", CHANGE_LOG_LOCK)
        await self.conn.executemany(
            "INSERT INTO change_log (pool, category, key, op, payload, at) "
            "VALUES ($1, $2, $3, $4, $5, $6)", self._changes)
        self._changes.clear()


def connection_closed(conn: Any) -> bool:
    """True when the connection is closed, or its pool proxy already detached (asyncpg
    hands a lost connection back to its pool by itself)."""
    try:
        return bool(conn.is_closed())
    except asyncpg.InterfaceError:
        return True


def _terminate(conn: Any) -> None:
    """Drop the connection at once (nothing when the proxy is already detached)."""
    with contextlib.suppress(asyncpg.InterfaceError):
        conn.terminate()


async def _keep_session(conn: Any) -> None:
    """Pool reset hook: our sessions set nothing that outlives a transaction, so a
    released connection needs no ``RESET ALL`` round trip (asyncpg still rolls back)."""


class PgDatabase:
    """A PostgreSQL database used through a connection pool (see the module docstring)."""

    def __init__(self, dsn: str, *, pool: str, connect_timeout: float = 3.0,
                 command_timeout: float = 5.0, retry_for: float = 10.0,
                 min_size: int = 1, max_size: int = 10) -> None:
        if connect_timeout <= 0 or command_timeout <= 0 or retry_for < 0:
            raise ValueError("timeouts must be positive and retry_for not negative")
        if not 0 <= min_size <= max_size or max_size < 1:
            raise ValueError(f"pool sizes must satisfy 0 <= min_size <= max_size >= 1, "
                             f"got {min_size}, {max_size}")
        self.pool = pool
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.retry_for = retry_for
        self.min_size = min_size
        self.max_size = max_size
        self._hosts = split_hosts(dsn)
        self._attrs: str | None = None
        if "target_session_attrs=" not in dsn and "PGTARGETSESSIONATTRS" not in os.environ:
            self._attrs = "read-write"
        self._pool: Any = None              # the asyncpg pool while open or closing
        self._accepting = False             # new operations are accepted
        self._inflight = 0
        self._drained = asyncio.Event()     # set while no operation is in flight
        self._drained.set()
        self._opening = asyncio.Lock()
        self._closing: asyncio.Future[None] | None = None

    @property
    def where(self) -> str:
        """The hosts, for messages."""
        return ",".join(where_of(h) for h in self._hosts)

    @property
    def is_open(self) -> bool:
        """True between a successful `open` and `close`."""
        return self._accepting

    async def open(self, prepare: Callable[[Any], Awaitable[T]]) -> T | None:
        """Create the pool and its first connections, retrying for up to `connect_timeout`
        seconds (`StoreUnavailable` when impossible), then run `prepare` with a bare
        connection (the migrations; not retried) before accepting operations; its result.
        None, doing nothing, when already open."""
        async with self._opening:
            if self._accepting:
                return None
            if self._closing is not None:
                await asyncio.shield(self._closing)

            async def attempt() -> Any:
                pool = asyncpg.create_pool(
                    min_size=self.min_size, max_size=self.max_size, connect=self._connect,
                    reset=_keep_session, max_inactive_connection_lifetime=60.0)
                try:
                    return await pool
                except BaseException as exc:
                    pool.terminate()
                    error = translate(exc, f"connecting to {self.where}")
                    if error is exc:
                        raise
                    raise error from exc

            self._pool = await self._retrying(f"connecting to {self.where}", attempt,
                                              Retry.ALWAYS, budget=self.connect_timeout)
            try:
                result = await self._bare(prepare, what="preparing the database")
            except BaseException:
                pool, self._pool = self._pool, None
                pool.terminate()
                raise
            self._accepting = True
            self._closing = None
            return result

    async def close(self) -> None:
        """Refuse new operations, let those in flight finish (waiting at most
        `command_timeout` seconds, then cutting them off), close the connections;
        idempotent."""
        if self._accepting:
            self._accepting = False
            self._closing = asyncio.ensure_future(self._shutdown())
        if self._closing is not None:
            await asyncio.shield(self._closing)

    async def _shutdown(self) -> None:
        try:
            await asyncio.wait_for(self._drained.wait(), timeout=self.command_timeout)
        except TimeoutError:
            log.warning("store: closing %s with %d operation(s) still in flight",
                        self.where, self._inflight)
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), timeout=self.command_timeout)
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("store: closing the pool of %s: %s", self.where, describe(exc))
            pool.terminate()

    async def read(self, work: Callable[[PgTx], Awaitable[T]], *, what: str,
                   snapshot: bool = False) -> T:
        """Run `work` and return its result. With `snapshot`, in one REPEATABLE READ, READ
        ONLY transaction (several statements, one view); otherwise each statement on its
        own. Reads are always retried."""
        begin = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY" if snapshot else None
        return await self._operation(what, lambda: self._attempt(work, begin, what),
                                     Retry.ALWAYS)

    async def write(self, work: Callable[[PgTx], Awaitable[T]], *, what: str,
                    retry: Retry) -> T:
        """Run `work` in a READ COMMITTED transaction with its change-log rows and commit
        (durably, as the server is configured); its result."""
        return await self._operation(what, lambda: self._attempt(work, "BEGIN", what), retry)

    async def _operation(self, what: str, attempt: Callable[[], Awaitable[T]],
                         retry: Retry) -> T:
        if not self._accepting:
            raise StoreUnavailable(f"{what}: the store is not open")
        self._inflight += 1
        self._drained.clear()
        try:
            return await self._retrying(what, attempt, retry)
        finally:
            self._inflight -= 1
            if not self._inflight:
                self._drained.set()

    async def _bare(self, work: Callable[[Any], Awaitable[T]], *, what: str) -> T:
        """Run `work` with a bare connection of the pool (it manages its transactions);
        no retry."""
        conn = await self._acquire(what)
        healthy = False
        try:
            result = await work(conn)
            healthy = True
            return result
        except BaseException as exc:
            error = final_error(exc, what, broken=connection_closed(conn))
            if error is exc:
                raise
            raise error from exc
        finally:
            await self._release(conn, healthy=healthy)

    # --- one attempt ---------------------------------------------------------------------

    async def _attempt(self, work: Callable[[PgTx], Awaitable[T]], begin: str | None,
                       what: str) -> T:
        conn = await self._acquire(what)
        committing = False
        healthy = False
        try:
            if begin is not None:
                await conn.execute(begin)
            tx = PgTx(conn, self.pool)
            result = await work(tx)
            await tx.flush_log()
            if begin is not None:
                committing = True
                await conn.execute("COMMIT")
            healthy = True
            return result
        except asyncio.CancelledError:
            raise                       # the connection is terminated below
        except BaseException as exc:
            error = translate(exc, what, committing=committing, broken=connection_closed(conn))
            # A definitive answer on a live connection: roll back and keep the connection.
            healthy = not isinstance(error, Retryable) and not connection_closed(conn)
            if healthy and begin is not None and not committing:
                healthy = await self._rollback(conn)
            if error is exc:
                raise
            raise error from exc
        finally:
            await self._release(conn, healthy=healthy)

    async def _acquire(self, what: str) -> Any:
        pool = self._pool
        if pool is None:
            raise StoreUnavailable(f"{what}: the store is closed")
        try:
            return await pool.acquire(
                timeout=self.connect_timeout * len(self._hosts) + self.command_timeout)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            if isinstance(exc, asyncpg.InterfaceError) and pool is not self._pool:
                raise StoreUnavailable(f"{what}: the store was closed") from exc
            error = translate(exc, f"{what}: connecting to {self.where}")
            if error is exc:
                raise
            raise error from exc

    async def _rollback(self, conn: Any) -> bool:
        """Roll back after a refused write; False (connection to drop) if that fails."""
        try:
            await conn.execute("ROLLBACK")
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("store: rollback failed: %s", describe(exc))
            return False
        return True

    async def _release(self, conn: Any, *, healthy: bool) -> None:
        """Give the connection back; one that failed or is mid-transaction is terminated
        first (the pool reconnects)."""
        if not healthy or self._pool is None:
            _terminate(conn)
        pool = self._pool
        if pool is None:            # closed meanwhile
            return
        try:
            await pool.release(conn, timeout=self.command_timeout)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.info("store: releasing a connection: %s", describe(exc))

    async def _connect(self, *_args: object, **kwargs: Any) -> Any:
        """The pool's connect function: try each host in order, each with its own timeout."""
        errors: list[str] = []
        permanent = True
        for dsn in self._hosts:
            try:
                return await asyncpg.connect(
                    dsn, timeout=self.connect_timeout, command_timeout=self.command_timeout,
                    target_session_attrs=self._attrs,
                    server_settings={"application_name": f"trimaran-store-{self.pool}"},
                    connection_class=kwargs.get("connection_class", asyncpg.Connection),
                    record_class=kwargs.get("record_class", asyncpg.Record))
            except asyncio.CancelledError:
                raise
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError,
                    asyncpg.InternalClientError) as exc:
                state = str(getattr(exc, "sqlstate", "") or "")
                if isinstance(exc, asyncpg.ClientConfigurationError):
                    raise StoreError(f"invalid PostgreSQL connection string: {exc}") from exc
                permanent = permanent and state.startswith(MISCONFIGURED_PREFIXES)
                errors.append(f"{where_of(dsn)}: {describe(exc)}")
        raise ConnectFailed("; ".join(errors), permanent=permanent)

    # --- retries -------------------------------------------------------------------------

    async def _retrying(self, what: str, attempt: Callable[[], Awaitable[T]], retry: Retry,
                        *, budget: float | None = None) -> T:
        """Run `attempt` until it succeeds, fails for good, or `budget` (default
        `retry_for`) seconds have passed; see the module docstring."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.retry_for if budget is None else budget)
        tries = 0
        while True:
            tries += 1
            try:
                return await attempt()
            except Retryable as exc:
                if exc.ambiguous and retry is not Retry.ALWAYS:
                    raise StoreUnavailable(
                        f"{exc}; the connection failed while committing, so the write may or "
                        "may not have been applied (not retried: it is not idempotent)"
                    ) from exc.__cause__
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise StoreUnavailable(f"{exc} (gave up after {tries} attempt"
                                           f"{'s' if tries > 1 else ''})") from exc.__cause__
                pause = _backoff(tries)
                log.info("store: %s failed (attempt %d), retrying in %.2f s: %s",
                         what, tries, pause, exc)
                await asyncio.sleep(min(pause, remaining))


def _backoff(tries: int) -> float:
    """Exponential backoff with jitter: half fixed, half random, capped."""
    ceiling = min(_BACKOFF_CAP, _BACKOFF_FIRST * 2 ** (tries - 1))
    return float(ceiling / 2 + random.uniform(0, ceiling / 2))
