"""The Back End PostgreSQL instances of a deployment run on this machine, and for a
mirrored Back End the agents beside them (DESIGN §3 "Back End mirroring").

An agent's admin API listens on its instance's address, port + AGENT_PORT_OFFSET.

A Persistent Chat pool's store (PC-3) is a Back End like an Enterprise pool's
(``<pool>-principal``, ``<pool>-mirror`` and their agents), plus, when the pool ships
its log, the copy in the second data center: ``<pool>-shipped`` (role `SHIPPED`) and
its optional mirror ``<pool>-shipped-mirror`` (role `SHIPPED_MIRROR`), hot standbys
without agents (`trimaran.deploy.chatdb`).
"""

from __future__ import annotations

from dataclasses import dataclass

from trimaran.backend.agent import AgentConfig
from trimaran.backend.decide import Policy, Role
from trimaran.backend.instance import PgInstance
from trimaran.deploy.rundir import DatabaseState, DeploymentState, RunDir
from trimaran.store.base import Store
from trimaran.store.postgres import PostgresStore
from trimaran.store.sqlite import SqliteStore
from trimaran.topology.model import Edition, Pool, PoolRole, Topology

AGENT_PORT_OFFSET = 10_000
#: Roles of a chat pool's log-shipped copy and of its mirror (no agents).
SHIPPED = "shipped"
SHIPPED_MIRROR = "shipped-mirror"
SHIPPED_ROLES = frozenset({SHIPPED, SHIPPED_MIRROR})


def _has_store(pool: Pool) -> bool:
    """An Enterprise Front End pool or a chat pool: its Back End is run here."""
    if pool.role is PoolRole.FRONTEND:
        return pool.edition is Edition.ENTERPRISE
    return pool.role is PoolRole.CHAT


def databases_of(topology: Topology) -> list[DatabaseState]:
    """The PostgreSQL instances the topology's Enterprise and chat pools need (a chat
    pool's log-shipped copy and its mirror after its pair)."""
    out = []
    for pool in topology.pools:
        backend = pool.backend
        if not _has_store(pool) or backend is None or backend.principal is None:
            continue
        principal, mirror = backend.principal, backend.mirror
        p_name, m_name = f"{pool.name}-principal", f"{pool.name}-mirror"
        if mirror is None:
            out.append(DatabaseState(p_name, pool.name, "principal", principal.address,
                                     principal.port))
        else:
            out.append(DatabaseState(p_name, pool.name, "principal", principal.address,
                                     principal.port, m_name,
                                     principal.port + AGENT_PORT_OFFSET))
            out.append(DatabaseState(m_name, pool.name, "mirror", mirror.address, mirror.port,
                                     p_name, mirror.port + AGENT_PORT_OFFSET))
        shipping = pool.log_shipping if pool.role is PoolRole.CHAT else None
        if shipping is not None:
            for role, db in shipping.instances:
                kind = SHIPPED if role == "principal" else SHIPPED_MIRROR
                out.append(DatabaseState(f"{pool.name}-{kind}", pool.name, kind, db.address,
                                         db.port))
    return out


@dataclass(frozen=True)
class ChatDatabases:
    """The instances of one chat pool in a deployment: the pair (the principal at
    creation first) and the log-shipped copy with its mirror (None when absent)."""

    pool: str
    pair: tuple[DatabaseState, ...]
    shipped: DatabaseState | None
    shipped_mirror: DatabaseState | None

    @property
    def copies(self) -> tuple[DatabaseState, ...]:
        """The copy and its mirror, those that exist."""
        return tuple(d for d in (self.shipped, self.shipped_mirror) if d is not None)


def chat_databases(state: DeploymentState, pool: str) -> ChatDatabases:
    """The instances of chat pool `pool` (`LookupError` when it has none)."""
    mine = [d for d in state.databases.values() if d.pool == pool]
    pair = tuple(sorted((d for d in mine if d.role in ("principal", "mirror")),
                        key=lambda d: d.role != "principal"))
    if not pair:
        raise LookupError(f"pool {pool} has no store in this deployment")
    by_role = {d.role: d for d in mine}
    return ChatDatabases(pool, pair, by_role.get(SHIPPED), by_role.get(SHIPPED_MIRROR))


def one_dsn(database: DatabaseState) -> str:
    """The DSN of one instance, whatever its role."""
    return f"postgresql://trimaran@{database.address}:{database.port}/trimaran"


def instance(rundir: RunDir, database: DatabaseState) -> PgInstance:
    """The PgInstance managing `database` in this run directory (with the replication
    settings when it is one of a mirrored pair or a log-shipped copy)."""
    return PgInstance(rundir.database_dir(database.name), database.address, database.port,
                      mirrored=database.partner is not None or database.role in SHIPPED_ROLES)


def agent_url(database: DatabaseState) -> str:
    """The admin API of `database`'s agent."""
    return f"http://{database.address}:{database.agent_port}"


def witness_url(topology: Topology, pool: Pool) -> str | None:
    """The witness of `pool`'s Back End, if it has one."""
    witness = pool.backend.witness if pool.backend else None
    if witness is None:
        return None
    if witness.server is not None:
        for candidate in topology.pools:
            for server in candidate.servers:
                if server.name == witness.server:
                    return f"http://{server.address}:{server.admin_port}"
        raise LookupError(f"witness server {witness.server} is not in the topology")
    return f"http://{witness.address}:{witness.port}"


def agent_config(rundir: RunDir, topology: Topology, state: dict[str, DatabaseState],
                 name: str) -> AgentConfig:
    """The configuration of the mirroring agent beside instance `name`."""
    database = state[name]
    assert database.partner is not None and database.agent_port is not None
    partner = state[database.partner]
    pool = next(p for p in topology.pools if p.name == database.pool)
    return AgentConfig(
        backend=database.pool, node=database.name,
        initial_role=Role.PRINCIPAL if database.role == "principal" else Role.MIRROR,
        instance=instance(rundir, database), partner=partner.name,
        partner_host=partner.address, partner_port=partner.port,
        partner_url=agent_url(partner), state_path=rundir.agent_state(database.name),
        host=database.address, port=database.agent_port,
        witness_url=witness_url(topology, pool), policy=Policy.AVAILABLE)


def pool_dsn(topology: Topology, pool_name: str) -> str:
    """The multi-host, read-write DSN Front Ends of `pool_name` connect with (BE-8)."""
    for pool in topology.pools:
        if pool.name != pool_name or pool.backend is None:
            continue
        hosts = [db for db in (pool.backend.principal, pool.backend.mirror) if db is not None]
        where = ",".join(f"{db.address}:{db.port}" for db in hosts)
        return f"postgresql://trimaran@{where}/trimaran?target_session_attrs=read-write"
    raise LookupError(f"pool {pool_name} has no back end")


def pool_store(rundir: RunDir, topology: Topology, pool: str) -> Store:
    """The store of a Front End pool or an SBA (not opened; an SBA keeps its users in
    SQLite like a Standard Edition pool); `LookupError` for an unknown pool."""
    for candidate in topology.pools:
        if candidate.name == pool and candidate.role in (PoolRole.FRONTEND, PoolRole.SBA):
            if candidate.edition is Edition.ENTERPRISE:
                return PostgresStore(pool_dsn(topology, pool), pool=pool, retry_for=2.0)
            return SqliteStore(rundir.store_path(pool), pool=pool)
    names = [p.name for p in topology.pools if p.role is PoolRole.FRONTEND]
    raise LookupError(f"no Front End pool named {pool!r} (pools: {', '.join(names)})")
