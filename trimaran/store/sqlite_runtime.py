"""SQLite repositories for runtime state that is not logged: bindings and heartbeats."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from trimaran.store.base import BindingRepository, Conflict, HeartbeatRepository
from trimaran.store.model import Binding, Heartbeat
from trimaran.store.sqlite_db import SqliteDatabase, Tx

_BINDING_COLUMNS = ("aor, key, contact, expires_at, call_id, cseq, server, flow_id, source, "
                    "instance_id, reg_id, q, params")
_BINDING_UPSERT = (
    f"INSERT INTO bindings ({_BINDING_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (aor, key) DO UPDATE SET contact = excluded.contact, "
    "expires_at = excluded.expires_at, call_id = excluded.call_id, cseq = excluded.cseq, "
    "server = excluded.server, flow_id = excluded.flow_id, source = excluded.source, "
    "instance_id = excluded.instance_id, reg_id = excluded.reg_id, q = excluded.q, "
    "params = excluded.params")
# Highest q first, then the longest-lived, then a stable tie-break.
_BINDING_ORDER = "ORDER BY q DESC, expires_at DESC, key"


def _binding(row: sqlite3.Row) -> Binding:
    return Binding(aor=row["aor"], contact=row["contact"], expires_at=row["expires_at"],
                   call_id=row["call_id"], cseq=row["cseq"], server=row["server"],
                   flow_id=row["flow_id"], source=row["source"], instance_id=row["instance_id"],
                   reg_id=row["reg_id"], q=row["q"], params=row["params"])


def _unexpired(tx: Tx, aor: str, now: float) -> list[Binding]:
    return [_binding(r) for r in tx.all(
        f"SELECT {_BINDING_COLUMNS} FROM bindings WHERE aor = ? AND expires_at > ? "
        f"{_BINDING_ORDER}", (aor, now))]


class SqliteBindingRepository(BindingRepository):
    """Registrations keyed by (aor, `Binding.key`); a binding is expired when
    ``expires_at <= now``."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def for_aor(self, aor: str, *, now: float) -> list[Binding]:
        """Unexpired bindings of `aor`, highest q first, then latest expiry."""
        return await self._db.read(lambda tx: _unexpired(tx, aor, now))

    async def apply(self, aor: str, *, upsert: Sequence[Binding], remove: Sequence[str],
                    now: float) -> list[Binding]:
        """In one transaction: remove the keys in `remove`, drop the AOR's expired bindings,
        insert or replace `upsert` by key (one already expired just removes its key), and
        return the unexpired bindings, highest q first. `Conflict` if a binding of `upsert`
        belongs to another AOR."""
        strangers = sorted({b.aor for b in upsert if b.aor != aor})
        if strangers:
            raise Conflict(f"bindings of {', '.join(strangers)} given for {aor}")

        def work(tx: Tx) -> list[Binding]:
            tx.conn.executemany("DELETE FROM bindings WHERE aor = ? AND key = ?",
                                [(aor, key) for key in remove])
            tx.execute("DELETE FROM bindings WHERE aor = ? AND expires_at <= ?", (aor, now))
            for b in upsert:
                if b.expires_at <= now:
                    tx.execute("DELETE FROM bindings WHERE aor = ? AND key = ?", (aor, b.key))
                else:
                    tx.execute(_BINDING_UPSERT, (
                        b.aor, b.key, b.contact, b.expires_at, b.call_id, b.cseq, b.server,
                        b.flow_id, b.source, b.instance_id, b.reg_id, b.q, b.params))
            return _unexpired(tx, aor, now)

        return await self._db.write(work)

    async def remove_all(self, aor: str) -> int:
        """Remove every binding of `aor`; return how many."""
        return await self._db.write(lambda tx: tx.execute(
            "DELETE FROM bindings WHERE aor = ?", (aor,)).rowcount)

    async def purge_server(self, server: str) -> int:
        """Remove the bindings served by `server`, expired or not; return how many."""
        return await self._db.write(lambda tx: tx.execute(
            "DELETE FROM bindings WHERE server = ?", (server,)).rowcount)

    async def purge_flow(self, server: str, flow_id: str) -> int:
        """Remove the bindings registered over flow `flow_id` of `server` (RFC 5626 §5.2);
        return how many. An empty `flow_id` (a binding not tied to a flow) matches none."""
        if not flow_id:
            return 0
        return await self._db.write(lambda tx: tx.execute(
            "DELETE FROM bindings WHERE server = ? AND flow_id = ?", (server, flow_id)).rowcount)

    async def purge_expired(self, *, now: float) -> int:
        """Remove bindings with ``expires_at <= now``; return how many."""
        return await self._db.write(lambda tx: tx.execute(
            "DELETE FROM bindings WHERE expires_at <= ?", (now,)).rowcount)

    async def count(self, *, now: float, server: str | None = None) -> int:
        """Unexpired bindings (of `server` when given)."""
        sql = "SELECT COUNT(*) FROM bindings WHERE expires_at > ?"
        params: tuple[object, ...] = (now,)
        if server is not None:
            sql += " AND server = ?"
            params = (now, server)

        def work(tx: Tx) -> int:
            row = tx.one(sql, params)
            return 0 if row is None else int(row[0])

        return await self._db.read(work)


class SqliteHeartbeatRepository(HeartbeatRepository):
    """The last heartbeat of each server (one row per server)."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def beat(self, heartbeat: Heartbeat) -> None:
        """Record a server's heartbeat, replacing its previous one."""
        h = heartbeat
        info = json.dumps(h.info, sort_keys=True)
        await self._db.write(lambda tx: tx.execute(
            "INSERT OR REPLACE INTO heartbeats (server, pool, at, state, info) "
            "VALUES (?, ?, ?, ?, ?)", (h.server, h.pool, h.at, h.state, info)).rowcount)

    async def all(self, pool: str | None = None) -> list[Heartbeat]:
        """The last heartbeat of every server (of `pool` when given), ordered by server."""
        sql = "SELECT server, pool, at, state, info FROM heartbeats ORDER BY server"
        params: tuple[str, ...] = ()
        if pool is not None:
            sql = ("SELECT server, pool, at, state, info FROM heartbeats WHERE pool = ? "
                   "ORDER BY server")
            params = (pool,)
        rows = await self._db.read(lambda tx: tx.all(sql, params))
        return [Heartbeat(r["server"], r["pool"], r["at"], r["state"], json.loads(r["info"]))
                for r in rows]
