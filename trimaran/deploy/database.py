"""The Back End PostgreSQL instances of a deployment run on this machine."""

from __future__ import annotations

from trimaran.backend.instance import PgInstance
from trimaran.deploy.rundir import DatabaseState, RunDir
from trimaran.topology.model import Edition, PoolRole, Topology


def databases_of(topology: Topology) -> list[DatabaseState]:
    """The PostgreSQL instances the topology's Enterprise pools need (principals now)."""
    out = []
    for pool in topology.pools:
        if pool.role is not PoolRole.FRONTEND or pool.edition is not Edition.ENTERPRISE:
            continue
        backend = pool.backend
        if backend is None or backend.principal is None:
            continue
        principal = backend.principal
        out.append(DatabaseState(f"{pool.name}-principal", pool.name, "principal",
                                 principal.address, principal.port))
    return out


def instance(rundir: RunDir, database: DatabaseState) -> PgInstance:
    """The PgInstance managing `database` in this run directory."""
    return PgInstance(rundir.database_dir(database.name), database.address, database.port)


def pool_dsn(topology: Topology, pool_name: str) -> str:
    """The multi-host, read-write DSN Front Ends of `pool_name` connect with (BE-8)."""
    for pool in topology.pools:
        if pool.name != pool_name or pool.backend is None:
            continue
        hosts = [db for db in (pool.backend.principal, pool.backend.mirror) if db is not None]
        where = ",".join(f"{db.address}:{db.port}" for db in hosts)
        return f"postgresql://trimaran@{where}/trimaran?target_session_attrs=read-write"
    raise LookupError(f"pool {pool_name} has no back end")
