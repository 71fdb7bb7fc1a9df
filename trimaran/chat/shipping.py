"""Log shipping of a chat store to the second data center, measured (SPEC PC-3, PC-4).

The copy in the second data center is a PostgreSQL hot standby streaming the primary
data center's write-ahead log asynchronously (`trimaran.deploy.chatdb`). What it lacks
is what a disaster there would lose: PC-4 bounds the loss by this lag and shows it.

`measure_lag` compares the WAL position of whichever primary instance is the writable
one (``pg_current_wal_lsn``) with the copy's replay position
(``pg_last_wal_replay_lsn``): the bytes it has not applied. The lag in seconds is the
age of the copy's last replayed commit (``pg_last_xact_replay_timestamp``) — the copy
holds every commit up to that one, and since the chat servers commit a heartbeat
every second the age stays meaningful on a quiet pool — and 0 when no byte is missing.
The copy is read before the primary, so the bytes are never under-counted.

Nothing here raises for a database that does not answer: the `Lag` says so
(``error``), with what could be read. Used by the chat servers (a sample every
second, on ``/status``) and by ``trimaran chat status|failover``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass
from typing import Any

import asyncpg  # type: ignore[import-untyped]

#: Errors that mean "the database did not answer (properly) now".
PG_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError,
             asyncpg.InternalClientError)

_COPY = """
SELECT pg_is_in_recovery() AS in_recovery,
       pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::bigint AS replay,
       pg_last_wal_replay_lsn()::text AS replay_text,
       pg_wal_lsn_diff(pg_last_wal_receive_lsn(), '0/0')::bigint AS receive,
       extract(epoch FROM pg_last_xact_replay_timestamp())::float8 AS replay_at,
       (SELECT status FROM pg_stat_wal_receiver LIMIT 1) AS receiver,
       (SELECT sender_host || ':' || sender_port FROM pg_stat_wal_receiver LIMIT 1)
           AS upstream
"""
_PRIMARY = """
SELECT pg_is_in_recovery() AS in_recovery,
       current_setting('default_transaction_read_only') = 'on' AS read_only,
       CASE WHEN pg_is_in_recovery() THEN NULL
            ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint END AS current
"""


@dataclass(frozen=True)
class Lag:
    """One measurement of the log-shipping lag (times are unix seconds).

    bytes       WAL the copy has not replayed (None: not measurable now)
    seconds     age of the copy's last replayed commit; 0 when `bytes` is 0
    replay_at   when the copy's last replayed commit was made on the primary
    receiving   the copy's WAL receiver is streaming
    measured_at when this was measured
    error       why `bytes`/`seconds` are missing (None when they are not)
    """

    bytes: int | None
    seconds: float | None
    replay_at: float | None
    receiving: bool
    measured_at: float
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON object (a chat server's ``/status`` ``shipping``)."""
        return asdict(self)

    @classmethod
    def from_json(cls, raw: object) -> Lag | None:
        """A `Lag` from its JSON object; None when it is not one."""
        if not isinstance(raw, dict):
            return None
        try:
            measured = raw["measured_at"]
            if not isinstance(measured, int | float):
                return None
            return cls(_opt_int(raw.get("bytes")), _opt_float(raw.get("seconds")),
                       _opt_float(raw.get("replay_at")), bool(raw.get("receiving")),
                       float(measured), _opt_str(raw.get("error")))
        except (KeyError, TypeError, ValueError):
            return None


def _opt_int(value: object) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{value!r} is not an integer")
    return value


def _opt_float(value: object) -> float | None:
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TypeError(f"{value!r} is not a number")
    return float(value)


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True)
class CopyStatus:
    """What a log-shipped copy looks like now (`copy_status`).

    reachable    it answered
    standby      still a standby (False once promoted)
    receiving    its WAL receiver is streaming
    upstream     ``host:port`` it streams from
    replay_lsn   its replay position (text, e.g. ``0/3000060``)
    replay_at    unix time of its last replayed commit
    error        why it did not answer
    """

    reachable: bool
    standby: bool = False
    receiving: bool = False
    upstream: str | None = None
    replay_lsn: str | None = None
    replay_at: float | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON object (`chat status --json`)."""
        return asdict(self)


async def _connect(dsn: str, timeout: float) -> Any:
    return await asyncpg.connect(dsn, timeout=timeout, command_timeout=timeout,
                                 server_settings={"application_name": "trimaran-shipping"})


async def _row(dsn: str, sql: str, timeout: float) -> Any:
    conn = await _connect(dsn, timeout)
    try:
        return await conn.fetchrow(sql, timeout=timeout)
    finally:
        await conn.close(timeout=timeout)


async def _safe_row(dsn: str, sql: str, timeout: float) -> tuple[Any, str | None]:
    try:
        return await asyncio.wait_for(_row(dsn, sql, timeout), timeout * 2), None
    except PG_ERRORS as exc:
        return None, f"{_hosts(dsn)}: {type(exc).__name__}: {exc}"


async def copy_status(shipped_dsn: str, timeout: float = 2.0) -> CopyStatus:
    """The copy's state: standby, receiving, upstream, replay position and time."""
    row, error = await _safe_row(shipped_dsn, _COPY, timeout)
    if row is None:
        return CopyStatus(False, error=error)
    return CopyStatus(True, standby=bool(row["in_recovery"]),
                      receiving=row["receiver"] == "streaming", upstream=row["upstream"],
                      replay_lsn=row["replay_text"], replay_at=row["replay_at"])


async def measure_lag(primary_dsns: list[str], shipped_dsn: str,
                      timeout: float = 2.0) -> Lag:
    """The lag of the copy at `shipped_dsn` behind whichever of `primary_dsns` is the
    primary (writable first, else any not in recovery); see the module. Never raises
    for a database that does not answer: `Lag.error` says why."""
    copy, copy_error = await _safe_row(shipped_dsn, _COPY, timeout)
    answers = await asyncio.gather(*(_safe_row(dsn, _PRIMARY, timeout)
                                     for dsn in primary_dsns))
    now = time.time()
    receiving = copy is not None and copy["receiver"] == "streaming"
    replay_at = copy["replay_at"] if copy is not None else None
    if copy is None:
        return Lag(None, None, None, False, now, f"the copy does not answer: {copy_error}")
    primaries = [row for row, _ in answers if row is not None and not row["in_recovery"]]
    primaries.sort(key=lambda row: bool(row["read_only"]))         # writable first
    if not primaries:
        errors = "; ".join(e for _, e in answers if e is not None) or "every one is a standby"
        return Lag(None, None, replay_at, receiving, now,
                   f"no primary instance answers ({errors})")
    if not copy["in_recovery"] or copy["replay"] is None:
        return Lag(None, None, replay_at, receiving, now,
                   "the copy is not a standby (promoted?): nothing is shipped to it")
    missing = max(0, int(primaries[0]["current"]) - int(copy["replay"]))
    seconds = 0.0 if missing == 0 else (None if replay_at is None
                                         else max(0.0, now - float(replay_at)))
    return Lag(missing, seconds, replay_at, receiving, now)


def _hosts(dsn: str) -> str:
    """The host list of a DSN, for messages."""
    return dsn.split("@", 1)[-1].split("/", 1)[0]


__all__ = ["PG_ERRORS", "CopyStatus", "Lag", "copy_status", "measure_lag"]
