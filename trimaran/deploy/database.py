"""The Back End PostgreSQL instances of a deployment run on this machine, and for a
mirrored Back End the agents beside them (DESIGN §3 "Back End mirroring").

An agent's admin API listens on its instance's address, port + AGENT_PORT_OFFSET.
"""

from __future__ import annotations

from trimaran.backend.agent import AgentConfig
from trimaran.backend.decide import Policy, Role
from trimaran.backend.instance import PgInstance
from trimaran.deploy.rundir import DatabaseState, RunDir
from trimaran.store.base import Store
from trimaran.store.postgres import PostgresStore
from trimaran.store.sqlite import SqliteStore
from trimaran.topology.model import Edition, Pool, PoolRole, Topology

AGENT_PORT_OFFSET = 10_000


def databases_of(topology: Topology) -> list[DatabaseState]:
    """The PostgreSQL instances the topology's Enterprise pools need."""
    out = []
    for pool in topology.pools:
        if pool.role is not PoolRole.FRONTEND or pool.edition is not Edition.ENTERPRISE:
            continue
        backend = pool.backend
        if backend is None or backend.principal is None:
            continue
        principal, mirror = backend.principal, backend.mirror
        p_name, m_name = f"{pool.name}-principal", f"{pool.name}-mirror"
        if mirror is None:
            out.append(DatabaseState(p_name, pool.name, "principal", principal.address,
                                     principal.port))
            continue
        out.append(DatabaseState(p_name, pool.name, "principal", principal.address,
                                 principal.port, m_name, principal.port + AGENT_PORT_OFFSET))
        out.append(DatabaseState(m_name, pool.name, "mirror", mirror.address, mirror.port,
                                 p_name, mirror.port + AGENT_PORT_OFFSET))
    return out


def instance(rundir: RunDir, database: DatabaseState) -> PgInstance:
    """The PgInstance managing `database` in this run directory."""
    return PgInstance(rundir.database_dir(database.name), database.address, database.port,
                      mirrored=database.partner is not None)


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
