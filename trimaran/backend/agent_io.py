"""The agent's I/O: its durable state file, its own PostgreSQL instance (probe and
control statements) and the HTTP calls to the partner's agent and to the witness.

Every call is bounded by a short timeout; a failure is reported as "unreachable"
(None) or as `ActionFailed`, never as a raw asyncpg/aiohttp exception beyond this
module's functions that say so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg  # type: ignore[import-untyped]

from trimaran.admin import access
from trimaran.backend.decide import Instance, PartnerView, Role, WitnessView
from trimaran.backend.durable import DurableStateError, read_json, write_json
from trimaran.backend.instance import BackendError, PgInstance
from trimaran.security import https

log = logging.getLogger(__name__)

#: Errors that mean "the database did not answer (now)".
PG_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError,
             asyncpg.InternalClientError)
#: Errors that mean "the HTTP peer did not answer (properly)".
HTTP_ERRORS = (OSError, TimeoutError, aiohttp.ClientError, ValueError)

_PROBE = """
SELECT pg_is_in_recovery() AS in_recovery,
       current_setting('default_transaction_read_only') = 'on' AS read_only,
       current_setting('synchronous_standby_names') AS sync_names,
       CASE WHEN pg_is_in_recovery() THEN NULL
            ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint END AS current_lsn,
       EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming') AS streaming,
       pg_wal_lsn_diff(pg_last_wal_receive_lsn(), '0/0')::bigint AS receive_lsn,
       pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::bigint AS replay_lsn,
       r.state AS standby_state, r.sync_state AS standby_sync,
       pg_wal_lsn_diff(r.flush_lsn, '0/0')::bigint AS standby_flush_lsn
FROM (SELECT 1) AS one
LEFT JOIN LATERAL (SELECT state, sync_state, flush_lsn FROM pg_stat_replication
                   WHERE application_name = $1
                   ORDER BY backend_start DESC LIMIT 1) AS r ON true
"""

_TERMINATE_CLIENTS = """
SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
"""


class ActionFailed(BackendError):
    """An action could not be carried out (refused by the witness, database away...)."""


@dataclass(frozen=True, slots=True)
class DurableState:
    """The agent's durable record: its term, its role and who is principal in it, and
    whether it (as principal) runs exposed."""

    term: int
    role: Role
    principal: str
    exposed: bool = False
    forced: bool = False        # made principal by the admin's --force, nobody seen since


STATE_VERSION = 1


class StateFile:
    """The agent's state file: ``{"version": 1, "backend", "node", "term", "role",
    "principal", "exposed", "forced", "updated_at"}`` (`trimaran.backend.durable`:
    written with fsync and an atomic rename)."""

    def __init__(self, path: Path, backend: str, node: str, *,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.backend = backend
        self.node = node
        self._wall = wall_clock

    def load(self, initial: DurableState) -> DurableState:
        """The recorded state; `initial`, written, when there is none yet."""
        data = read_json(self.path)
        if data is None:
            self.write(initial)
            return initial
        try:
            return DurableState(int(data["term"]), Role(data["role"]),
                                str(data["principal"]), bool(data.get("exposed", False)),
                                bool(data.get("forced", False)))
        except (KeyError, TypeError, ValueError) as exc:
            raise DurableStateError(f"{self.path}: not an agent state: {exc}") from exc

    def write(self, state: DurableState) -> None:
        """Record `state` durably."""
        write_json(self.path, {
            "version": STATE_VERSION, "backend": self.backend, "node": self.node,
            "term": state.term, "role": state.role.value, "principal": state.principal,
            "exposed": state.exposed, "forced": state.forced, "updated_at": self._wall()})


def quote_literal(value: str) -> str:
    """`value` as an SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


class PgProbe:
    """The agent's own connection to its instance: probe it, run control statements.

    The connection is opened lazily and dropped on any failure (the next call
    reconnects). Statements are bounded by `timeout` seconds."""

    def __init__(self, instance: PgInstance, *, timeout: float = 1.0) -> None:
        self.instance = instance
        self.timeout = timeout
        self._conn: Any = None
        #: Replay progress of this instance when it is a standby (status only).
        self.receive_lsn: int | None = None
        self.replay_lsn: int | None = None

    async def close(self) -> None:
        """Drop the connection."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(*PG_ERRORS):
                await asyncio.wait_for(conn.close(), self.timeout)

    async def _connection(self) -> Any:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(
                self.instance.dsn, timeout=self.timeout, command_timeout=self.timeout,
                server_settings={"application_name": "trimaran-agent"})
        return self._conn

    async def observe(self, partner: str) -> Instance:
        """What the instance looks like now; the partner's row of pg_stat_replication
        is the one whose application_name is `partner`."""
        base = Instance(running=await asyncio.to_thread(self.instance.is_running),
                        standby_configured=self.instance.standby_configured)
        if not base.running:
            await self.close()
            return base
        try:
            conn = await self._connection()
            row = await conn.fetchrow(_PROBE, partner, timeout=self.timeout)
        except PG_ERRORS as exc:
            log.debug("agent: probe of %s failed: %s", self.instance, exc)
            await self.close()
            return base
        self.receive_lsn, self.replay_lsn = row["receive_lsn"], row["replay_lsn"]
        return replace(base, reachable=True, in_recovery=row["in_recovery"],
                       read_only=row["read_only"], streaming=row["streaming"],
                       sync_names=row["sync_names"], current_lsn=row["current_lsn"],
                       standby_state=row["standby_state"], standby_sync=row["standby_sync"],
                       standby_flush_lsn=row["standby_flush_lsn"])

    async def execute(self, *statements: str) -> None:
        """Run statements in order (each on its own; ALTER SYSTEM cannot be in a
        transaction block); `ActionFailed` when the instance does not answer."""
        try:
            conn = await self._connection()
            for sql in statements:
                await conn.execute(sql, timeout=self.timeout)
        except PG_ERRORS as exc:
            await self.close()
            raise ActionFailed(f"{self.instance}: {type(exc).__name__}: {exc}") from exc

    async def value(self, sql: str) -> Any:
        """The first column of the first row of `sql` (`ActionFailed` when away)."""
        try:
            conn = await self._connection()
            return await conn.fetchval(sql, timeout=self.timeout)
        except PG_ERRORS as exc:
            await self.close()
            raise ActionFailed(f"{self.instance}: {type(exc).__name__}: {exc}") from exc

    async def reload(self) -> None:
        """Apply ALTER SYSTEM changes (``pg_reload_conf``) and wait until this session
        sees them (a backend rereads the configuration between statements)."""
        await self.execute("SELECT pg_reload_conf()")
        await asyncio.sleep(0.02)

    async def fence(self, *, require: str | None) -> int:
        """Make the instance refuse writes: ``default_transaction_read_only`` for every
        new transaction, then terminate every client session (terminate, never cancel:
        a cancelled commit waiting for the mirror would report success). With
        `require`, also make commits wait for that standby. The number of sessions
        terminated."""
        statements = ["ALTER SYSTEM SET default_transaction_read_only = on"]
        if require is not None:
            statements.append(f"ALTER SYSTEM SET synchronous_standby_names = "
                              f"{quote_literal(require)}")
        await self.execute(*statements)
        await self.reload()
        for _ in range(50):          # until the new default is in force (a few ms)
            if await self.value("SELECT current_setting('default_transaction_read_only')") \
                    == "on":
                break
            await asyncio.sleep(0.02)
        terminated = int(await self.value(_TERMINATE_CLIENTS) or 0)
        terminated += int(await self.value(_TERMINATE_CLIENTS) or 0)   # late arrivals
        return terminated

    async def unfence(self) -> None:
        """Accept writes again."""
        await self.execute("ALTER SYSTEM RESET default_transaction_read_only")
        await self.reload()

    async def require_standby(self, names: str) -> None:
        """Set ``synchronous_standby_names`` (``''``: commits wait for nobody)."""
        await self.execute(f"ALTER SYSTEM SET synchronous_standby_names = "
                           f"{quote_literal(names)}")
        await self.reload()

    async def current_lsn(self) -> int:
        """pg_current_wal_lsn() as a byte position."""
        return int(await self.value(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint"))


async def checkpoint(host: str, port: int, *, timeout: float = 5.0) -> None:
    """CHECKPOINT on the server at `host`:`port` (a just-promoted principal: pg_rewind
    reads its timeline from the control file, which the checkpoint updates)."""
    try:
        conn = await asyncpg.connect(f"postgresql://trimaran@{host}:{port}/trimaran",
                                     timeout=timeout, command_timeout=timeout)
        try:
            await conn.execute("CHECKPOINT")
        finally:
            await conn.close()
    except PG_ERRORS as exc:
        raise ActionFailed(f"CHECKPOINT on {host}:{port}: {exc}") from exc


class Http:
    """JSON over HTTP with one session and a total timeout per call."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout), connector=https.connector())
        return self._session

    async def close(self) -> None:
        """Close the session."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def get(self, url: str) -> tuple[int, dict[str, Any]]:
        """GET `url`: (status, JSON object). Raises one of `HTTP_ERRORS`."""
        url = https.secure(url)       # OPS-6: HTTPS between servers under mutual TLS
        async with self._client().get(url, headers=access.headers_for("GET", url)) as response:
            return response.status, _object(await response.text())

    async def post(self, url: str, body: dict[str, Any], *,
                   timeout: float | None = None) -> tuple[int, dict[str, Any]]:
        """POST `body` as JSON: (status, JSON object). Raises one of `HTTP_ERRORS`."""
        url = https.secure(url)
        # Only an explicit ClientTimeout: `timeout=None` would turn the session's off.
        limit = aiohttp.ClientTimeout(total=timeout if timeout is not None else self.timeout)
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", **access.headers_for("POST", url, data)}
        async with self._client().post(url, data=data, headers=headers,
                                       timeout=limit) as response:
            return response.status, _object(await response.text())


def _object(text: str) -> dict[str, Any]:
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("the answer is not a JSON object")
    return data


def partner_view(data: dict[str, Any]) -> PartnerView:
    """The partner's ``/state`` as a `PartnerView` (`ValueError` when malformed)."""
    try:
        return PartnerView(role=Role(data["role"]), term=_int(data["term"]),
                           principal=str(data["principal"]), serving=bool(data["serving"]),
                           synchronous=bool(data["synchronous"]),
                           exposed=bool(data["exposed"]))
    except (KeyError, TypeError) as exc:
        raise ValueError(f"malformed partner state: {exc}") from exc


def witness_view(data: dict[str, Any], partner: str) -> WitnessView:
    """The witness's view as a `WitnessView` for an agent whose partner is `partner`."""
    try:
        agents = data.get("agents") or {}
        theirs = agents.get(partner) or {}
        age = theirs.get("serving_age")
        principal = data["principal"]
        return WitnessView(
            term=_int(data["term"]), principal=None if principal is None else str(principal),
            exposed=bool(data["exposed"]),
            principal_silent_for=float(data["principal_silent_for"]),
            principal_timeout=float(data["principal_timeout"]),
            partner_serving_age=None if age is None else float(age),
            mirror_timeout=float(data["mirror_timeout"]))
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"malformed witness view: {exc}") from exc


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{value!r} is not an integer")
    return value
