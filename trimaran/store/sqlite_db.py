"""The SQLite connection, its worker thread, transactions and error mapping.

Theory of operation: one `SqliteDatabase` owns one `sqlite3.Connection`, created,
used and closed only by one dedicated worker thread (a one-worker
`ThreadPoolExecutor`). A repository method hands the worker a function that does
the whole transaction (`read` or `write`); the coroutine awaits it, so the event
loop never blocks and transactions never interleave (the worker runs them one at a
time, in submission order).

The connection is in autocommit mode (``isolation_level=None``) and transactions
are explicit: ``BEGIN IMMEDIATE`` for writes (the write lock is taken up front, so a
concurrent process makes us wait up to the busy timeout rather than fail half-way),
``COMMIT`` before the coroutine returns. With WAL and ``synchronous=FULL`` a
returned write survives a crash or power loss (the durability contract of
`trimaran.store.base`).

Errors are converted here, at one boundary, so no `sqlite3` exception escapes:
constraint violations become `Conflict`, a locked/busy/unreachable database
`StoreUnavailable`, anything else `StoreError`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from trimaran.store import codec
from trimaran.store.base import Conflict, StoreError, StoreUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")
Params = Sequence[object] | Mapping[str, object]

MEMORY = ":memory:"

# sqlite3 error codes (sqlite3.h) meaning "the database is away for now": retryable.
_UNAVAILABLE_CODES = frozenset({
    5,    # SQLITE_BUSY
    6,    # SQLITE_LOCKED
    8,    # SQLITE_READONLY
    10,   # SQLITE_IOERR
    13,   # SQLITE_FULL
    14,   # SQLITE_CANTOPEN
    15,   # SQLITE_PROTOCOL
})


class Tx:
    """One open transaction on the worker thread: the connection and the change-log writer."""

    def __init__(self, conn: sqlite3.Connection, pool: str) -> None:
        self.conn = conn
        self.pool = pool

    def execute(self, sql: str, params: Params = ()) -> sqlite3.Cursor:
        """Run one statement."""
        return self.conn.execute(sql, params)

    def one(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        """The first row of a query, or None."""
        row: sqlite3.Row | None = self.conn.execute(sql, params).fetchone()
        return row

    def all(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        """Every row of a query."""
        return list(self.conn.execute(sql, params).fetchall())

    def log_put(self, category: str, key: str, record: object, at: float) -> None:
        """Append a `put` change carrying `record` (as codec JSON) to the change log."""
        self._append(category, key, "put", codec.encode(record), at)

    def log_delete(self, category: str, key: str, at: float) -> None:
        """Append a `delete` change to the change log."""
        self._append(category, key, "delete", "", at)

    def _append(self, category: str, key: str, op: str, payload: str, at: float) -> None:
        self.conn.execute(
            "INSERT INTO change_log (pool, category, key, op, payload, at) "
            "VALUES (?, ?, ?, ?, ?, ?)", (self.pool, category, key, op, payload, at))


def rollback(conn: sqlite3.Connection) -> None:
    """Roll back the open transaction, if any; a failure to do so is logged, not raised
    (the caller is already propagating the error that made it roll back)."""
    if not conn.in_transaction:
        return
    try:
        conn.execute("ROLLBACK")
    except sqlite3.Error as exc:
        log.warning("store: rollback failed: %s", exc)


def translate(exc: BaseException, where: str) -> StoreError:
    """The store error for an exception raised by sqlite3 (or by binding a bad value)."""
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, sqlite3.IntegrityError):
        return Conflict(f"{where}: {exc}")
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if isinstance(code, int) and (code & 0xFF) in _UNAVAILABLE_CODES:
            return StoreUnavailable(f"{where}: {exc}")
        message = str(exc).lower()
        if any(s in message for s in ("locked", "disk i/o", "unable to open", "busy")):
            return StoreUnavailable(f"{where}: {exc}")
        return StoreError(f"{where}: {exc}")
    if isinstance(exc, OSError):
        return StoreUnavailable(f"{where}: {exc}")
    # Values sqlite3 cannot bind: ints beyond 64 bits, strings with lone surrogates.
    return StoreError(f"{where}: value cannot be stored: {exc}")


class SqliteDatabase:
    """A SQLite database file used through one worker thread (see the module docstring)."""

    def __init__(self, path: str | Path, *, pool: str, busy_timeout: float = 5.0) -> None:
        self.path = path if str(path) == MEMORY else Path(path)
        self.pool = pool
        self.busy_timeout = busy_timeout
        self._executor: ThreadPoolExecutor | None = None
        self._closing: asyncio.Future[None] | None = None
        self._conn: sqlite3.Connection | None = None       # touched by the worker only

    @property
    def is_open(self) -> bool:
        """True between a successful `open` and `close`."""
        return self._executor is not None

    async def open(self) -> None:
        """Start the worker and connect (creating the file and its directory); idempotent."""
        if self._executor is not None:
            return
        if self._closing is not None:         # a close still running owns self._conn
            await asyncio.shield(self._closing)
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"store-{self.pool}")
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(executor, self._connect)
        except BaseException:
            executor.submit(self._disconnect)    # in case a cancelled open still connects
            executor.shutdown(wait=False)
            raise
        self._executor = executor
        self._closing = None

    async def close(self) -> None:
        """Finish the queued transactions, close the connection, stop the worker; idempotent."""
        executor = self._executor
        if executor is not None:
            self._executor = None     # new calls fail from now on; queued ones still run
            self._closing = asyncio.ensure_future(self._shutdown(executor))
        if self._closing is not None:
            await asyncio.shield(self._closing)

    async def read(self, work: Callable[[Tx], T]) -> T:
        """Run `work` in a read transaction on the worker; its result."""
        return await self._submit(functools.partial(self._transaction, work, "BEGIN"))

    async def write(self, work: Callable[[Tx], T]) -> T:
        """Run `work` in a write transaction on the worker and commit durably; its result."""
        return await self._submit(functools.partial(self._transaction, work, "BEGIN IMMEDIATE"))

    async def call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` with the bare connection (it manages its own transactions)."""
        return await self._submit(functools.partial(self._bare, work))

    async def _submit(self, job: Callable[[], T]) -> T:
        executor = self._executor
        if executor is None:
            raise StoreUnavailable(f"store {self.path} is not open")
        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(executor, job)
        except RuntimeError as exc:      # the executor was shut down under us
            raise StoreUnavailable(f"store {self.path} is closing: {exc}") from exc
        return await future

    # --- on the worker thread -------------------------------------------------------------

    def _connect(self) -> None:
        try:
            if isinstance(self.path, Path):
                self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(self.path), timeout=self.busy_timeout,
                                   isolation_level=None)
        except (sqlite3.Error, OSError) as exc:
            raise translate(exc, f"opening {self.path}") from exc
        try:
            conn.row_factory = sqlite3.Row
            mode = str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]).lower()
            if mode != "wal" and self.path != MEMORY:
                raise StoreError(f"{self.path}: cannot use WAL journal mode (got {mode})")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
        except BaseException as exc:
            conn.close()
            if isinstance(exc, sqlite3.Error):
                raise translate(exc, f"opening {self.path}") from exc
            raise
        self._conn = conn

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            rollback(conn)
            try:
                conn.close()
            except sqlite3.Error as exc:
                log.warning("store: closing %s failed: %s", self.path, exc)

    async def _shutdown(self, executor: ThreadPoolExecutor) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(executor, self._disconnect)
        finally:
            executor.shutdown(wait=False)

    def _transaction(self, work: Callable[[Tx], T], begin: str) -> T:
        conn = self._require()
        try:
            conn.execute(begin)
            try:
                result = work(Tx(conn, self.pool))
                conn.execute("COMMIT")
            except BaseException:
                rollback(conn)
                raise
        except (sqlite3.Error, OSError, OverflowError, UnicodeError) as exc:
            raise translate(exc, str(self.path)) from exc
        return result

    def _bare(self, work: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._require()
        try:
            return work(conn)
        except (sqlite3.Error, OSError, OverflowError, UnicodeError) as exc:
            raise translate(exc, str(self.path)) from exc

    def _require(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreUnavailable(f"store {self.path} is not open")
        return self._conn
