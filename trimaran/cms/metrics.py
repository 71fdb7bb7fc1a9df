"""The CMS side of a server's HA state as Prometheus metrics (SPEC OPS-4): its copy of
the CMS, the pools' failover records, and the liveness of the pools it probes. Every
server that follows the CMS or probes pools (Front End, Director, witness) describes
these with the same names (see `trimaran.admin.metrics` for sources and the README
for the list).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from trimaran.admin.metrics import Families
from trimaran.cms.failover import STATES, PoolFailover
from trimaran.cms.follower import CmsFollower
from trimaran.cms.liveness import DOWN, RECOVERING, SUSPECT, UP, PartnerWatch

#: The states of ``pool_liveness_state``, in the order of `trimaran.cms.liveness`.
LIVENESS_STATES = (UP, SUSPECT, DOWN, RECOVERING)


def describe_replica(families: Families, follower: CmsFollower) -> None:
    """The server's CMS copy: version, master term, age of the last pull, pull failing."""
    snapshot = follower.snapshot
    families.gauge("cms_replica_version", "Version of this server's copy of the CMS",
                   snapshot.version)
    if snapshot.master is not None:
        families.gauge("cms_master_term", "Term of the CMS master this server follows, "
                       "labelled with the master's pool", snapshot.master.term,
                       master=snapshot.master.pool)
    if snapshot.pulled_at:
        families.gauge("cms_last_pull_age_seconds", "Seconds since the CMS master last "
                       "confirmed this server's copy",
                       max(0.0, follower.wall_clock() - snapshot.pulled_at))
    families.flag("cms_pull_failing", "1 while the last pull from the CMS master failed",
                  bool(follower.last_error))


def describe_failover_records(families: Families, records: Mapping[str, PoolFailover],
                              pools: Iterable[str] = ()) -> None:
    """Each pool's failover state (one-hot) and term; `pools` without a record are
    described as normal in term 0."""
    described = {**{pool: PoolFailover(pool) for pool in pools}, **records}
    for pool, record in sorted(described.items()):
        families.state("failover_state", "Failover state of a Front End pool's users "
                       "(CMS failover record)", STATES, record.state, pool=pool)
        families.gauge("failover_term", "Term of a pool's failover record", record.term,
                       pool=pool)


def describe_liveness(families: Families, watches: Iterable[PartnerWatch]) -> None:
    """The liveness (one-hot) of each pool probed, and how long it has been silent."""
    for watch in watches:
        state = watch.current
        families.state("pool_liveness_state", "Liveness of a Front End pool as this server "
                       "probes it", LIVENESS_STATES, state.state, pool=watch.pool)
        families.gauge("pool_liveness_silent_seconds", "Seconds since any server of a probed "
                       "pool last answered", max(0.0, watch.monotonic() - state.last_seen),
                       pool=watch.pool)
