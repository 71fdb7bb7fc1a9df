"""PostgreSQL repositories for runtime state that is not logged: bindings and heartbeats.

Same behaviour as `trimaran.store.sqlite_runtime`. `apply` holds a per-AOR advisory
lock, so the Front Ends of a pool registering the same AOR at once are serialised
(each sees the bindings the others committed before it, none is lost). These writes
are upserts or deletes keyed by primary key: running one again after an unknown
commit outcome gives the same rows, so they are retried then too (`Retry.ALWAYS`);
a count returned after such a retry counts the rows the retry changed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from trimaran.store.base import BindingRepository, Conflict, HeartbeatRepository
from trimaran.store.model import Binding, Heartbeat
from trimaran.store.postgres_db import LOCK_BINDINGS, PgDatabase, PgTx, Record
from trimaran.store.postgres_db import Retry as R

_BINDING_COLUMNS = ("aor, key, contact, expires_at, call_id, cseq, server, flow_id, source, "
                    "instance_id, reg_id, q, params")
_BINDING_UPSERT = (
    f"INSERT INTO bindings ({_BINDING_COLUMNS}) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) "
    "ON CONFLICT (aor, key) DO UPDATE SET contact = excluded.contact, "
    "expires_at = excluded.expires_at, call_id = excluded.call_id, cseq = excluded.cseq, "
    "server = excluded.server, flow_id = excluded.flow_id, source = excluded.source, "
    "instance_id = excluded.instance_id, reg_id = excluded.reg_id, q = excluded.q, "
    "params = excluded.params")
# Highest q first, then the longest-lived, then a stable tie-break.
_BINDING_ORDER = "ORDER BY q DESC, expires_at DESC, key"


def _binding(row: Record) -> Binding:
    return Binding(aor=row["aor"], contact=row["contact"], expires_at=row["expires_at"],
                   call_id=row["call_id"], cseq=row["cseq"], server=row["server"],
                   flow_id=row["flow_id"], source=row["source"], instance_id=row["instance_id"],
                   reg_id=row["reg_id"], q=row["q"], params=row["params"])


async def _unexpired(tx: PgTx, aor: str, now: float) -> list[Binding]:
    return [_binding(r) for r in await tx.all(
        f"SELECT {_BINDING_COLUMNS} FROM bindings WHERE aor = $1 AND expires_at > $2 "
        f"{_BINDING_ORDER}", aor, now)]


class PostgresBindingRepository(BindingRepository):
    """Registrations keyed by (aor, `Binding.key`); a binding is expired when
    ``expires_at <= now``."""

    def __init__(self, db: PgDatabase) -> None:
        self._db = db

    async def for_aor(self, aor: str, *, now: float) -> list[Binding]:
        """Unexpired bindings of `aor`, highest q first, then latest expiry."""
        return await self._db.read(lambda tx: _unexpired(tx, aor, now), what="bindings.for_aor")

    async def apply(self, aor: str, *, upsert: Sequence[Binding], remove: Sequence[str],
                    now: float) -> list[Binding]:
        """In one transaction, under the AOR's lock: remove the keys in `remove`, drop the
        AOR's expired bindings, insert or replace `upsert` by key (one already expired just
        removes its key), and return the unexpired bindings, highest q first. `Conflict`
        if a binding of `upsert` belongs to another AOR."""
        strangers = sorted({b.aor for b in upsert if b.aor != aor})
        if strangers:
            raise Conflict(f"bindings of {', '.join(strangers)} given for {aor}")
        # The last upsert of a key decides it, as running them in order would.
        final: dict[str, Binding | None] = {}
        for b in upsert:
            final[b.key] = b if b.expires_at > now else None
        gone = [*remove, *(key for key, b in final.items() if b is None)]
        live = [b for b in final.values() if b is not None]

        async def work(tx: PgTx) -> list[Binding]:
            await tx.lock(LOCK_BINDINGS, aor)
            if gone:
                await tx.execute("DELETE FROM bindings WHERE aor = $1 AND key = ANY($2::text[])",
                                 aor, gone)
            await tx.execute("DELETE FROM bindings WHERE aor = $1 AND expires_at <= $2",
                             aor, now)
            await tx.executemany(_BINDING_UPSERT, [
                (b.aor, b.key, b.contact, b.expires_at, b.call_id, b.cseq, b.server,
                 b.flow_id, b.source, b.instance_id, b.reg_id, b.q, b.params) for b in live])
            return await _unexpired(tx, aor, now)

        return await self._db.write(work, what="bindings.apply", retry=R.ALWAYS)

    async def remove_all(self, aor: str) -> int:
        """Remove every binding of `aor`; return how many."""
        return await self._count("bindings.remove_all",
                                 "DELETE FROM bindings WHERE aor = $1", aor)

    async def purge_server(self, server: str) -> int:
        """Remove the bindings served by `server`, expired or not; return how many."""
        return await self._count("bindings.purge_server",
                                 "DELETE FROM bindings WHERE server = $1", server)

    async def purge_flow(self, server: str, flow_id: str) -> int:
        """Remove the bindings registered over flow `flow_id` of `server` (RFC 5626 §5.2);
        return how many. An empty `flow_id` (a binding not tied to a flow) matches none."""
        if not flow_id:
            return 0
        return await self._count("bindings.purge_flow",
                                 "DELETE FROM bindings WHERE server = $1 AND flow_id = $2",
                                 server, flow_id)

    async def purge_expired(self, *, now: float) -> int:
        """Remove bindings with ``expires_at <= now``; return how many."""
        return await self._count("bindings.purge_expired",
                                 "DELETE FROM bindings WHERE expires_at <= $1", now)

    async def count(self, *, now: float, server: str | None = None) -> int:
        """Unexpired bindings (of `server` when given)."""
        if server is None:
            value = await self._db.read(lambda tx: tx.value(
                "SELECT COUNT(*) FROM bindings WHERE expires_at > $1", now),
                what="bindings.count")
        else:
            value = await self._db.read(lambda tx: tx.value(
                "SELECT COUNT(*) FROM bindings WHERE expires_at > $1 AND server = $2",
                now, server), what="bindings.count")
        return int(value or 0)

    async def _count(self, what: str, sql: str, *args: object) -> int:
        async def work(tx: PgTx) -> int:
            return await tx.count(sql, *args)

        return await self._db.write(work, what=what, retry=R.ALWAYS)


class PostgresHeartbeatRepository(HeartbeatRepository):
    """The last heartbeat of each server (one row per server)."""

    def __init__(self, db: PgDatabase) -> None:
        self._db = db

    async def beat(self, heartbeat: Heartbeat) -> None:
        """Record a server's heartbeat, replacing its previous one."""
        h = heartbeat
        info = json.dumps(h.info, sort_keys=True)

        async def work(tx: PgTx) -> None:
            await tx.execute(
                "INSERT INTO heartbeats (server, pool, at, state, info) "
                "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (server) DO UPDATE SET "
                "pool = excluded.pool, at = excluded.at, state = excluded.state, "
                "info = excluded.info", h.server, h.pool, h.at, h.state, info)

        await self._db.write(work, what="heartbeats.beat", retry=R.ALWAYS)

    async def all(self, pool: str | None = None) -> list[Heartbeat]:
        """The last heartbeat of every server (of `pool` when given), ordered by server."""
        sql = "SELECT server, pool, at, state, info FROM heartbeats ORDER BY server"
        args: tuple[str, ...] = ()
        if pool is not None:
            sql = ("SELECT server, pool, at, state, info FROM heartbeats WHERE pool = $1 "
                   "ORDER BY server")
            args = (pool,)
        rows = await self._db.read(lambda tx: tx.all(sql, *args), what="heartbeats.all")
        return [Heartbeat(r["server"], r["pool"], r["at"], r["state"], json.loads(r["info"]))
                for r in rows]
