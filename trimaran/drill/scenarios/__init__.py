"""The drill scenarios: what each injects, what the operator (or the system) does, and
what is measured against which SPEC target.

Each scenario has a `plan` (run before any user signs in: it picks its target on
the deployment and refuses clearly when the deployment cannot run it) and a `run`
(the steps, on a `Drill` under load). Every step ends with the check of every change
acknowledged so far. Times are measured from the moment the fault is in place.
"""

from __future__ import annotations

from trimaran.cms.failover import NORMAL
from trimaran.deploy.dr import Deployment
from trimaran.drill.runner import DrillError
from trimaran.drill.scenarios.backend import backend_failure, plan_backend, plan_backend_partition
from trimaran.drill.scenarios.common import Options, Plan, Scenario
from trimaran.drill.scenarios.pools import (
    plan_pool,
    plan_site,
    plan_wan,
    run_pool_loss,
    run_site_loss,
    run_wan_cut,
)
from trimaran.drill.scenarios.servers import (
    plan_director,
    plan_server,
    run_director_kill,
    server_failure,
)

__all__ = ["SCENARIOS", "Options", "Plan", "Scenario", "check_normal"]

SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("server-kill", "A Front End server crashes (SIGKILL) under load.", (
        "Sign the users in and start the load.",
        "SIGKILL the pool's busiest Front End server.",
        "Measure: its peers declare it dead (FE-3); its users re-register on the other "
        "servers (FE-2, p99 <= 5 s); no acknowledged change lost.",
        "Restart it (`trimaran server start`); measure until the pool counts it alive.",
    ), plan_server, server_failure(freeze=False)),
    Scenario("server-freeze", "A Front End server hangs (SIGSTOP: the host is frozen, its "
             "sockets stay open) under load.", (
        "Sign the users in and start the load.",
        "SIGSTOP the pool's busiest Front End server (every process of it).",
        "Measure: the peers' heartbeats declare it dead (FE-3); its clients' keepalives "
        "notice and they re-register elsewhere (FE-2); no acknowledged change lost.",
        "SIGCONT it; measure until the pool counts it alive again.",
    ), plan_server, server_failure(freeze=True)),
    Scenario("backend-principal-kill", "The Back End principal crashes under write load.", (
        "Wait until the pool's Back End is a synchronous pair; start the load and a write "
        "probe (one write every 100 ms).",
        "SIGKILL the principal's postmaster and backends.",
        "Measure: the mirror is promoted with the witness (BE-2); writes succeed again "
        "(<= 10 s); no acknowledged write lost (RPO 0).",
        "Measure until the old principal is back as the synchronous mirror (BE-6).",
    ), plan_backend, backend_failure(partition=False)),
    Scenario("backend-partition", "The Back End principal's host is cut off the network "
             "(netfilter; root) under write load.", (
        "Wait until the pool's Back End is a synchronous pair; start the load and a write "
        "probe.",
        "Drop every packet to and from the principal's address.",
        "Measure: the principal, alone, stops; the mirror is promoted with the witness "
        "(BE-2, BE-3); writes succeed again (<= 10 s); no acknowledged write lost.",
        "Heal the cut; measure until the old principal is back as the synchronous mirror.",
    ), plan_backend_partition, backend_failure(partition=True)),
    Scenario("pool-loss", "A whole Front End pool is lost; the operator fails it over to its "
             "backup pool, then back.", (
        "Wait until the pool's Backup Service is steady; note the lag it shows.",
        "SIGKILL every server of the pool.",
        "Measure the backup pool's detection (DR-8); run `cms failover --disaster` when the "
        "pool held the CMS, then `pool failover POOL --disaster`.",
        "Measure: every user in full service on the backup pool (DR-5: <= 30 s from the "
        "command, <= 60 s end to end); acknowledged changes lost only within the lag "
        "(DR-2: RPO <= 1 s); every change acknowledged after the fault kept.",
        "Restart the pool's servers (they stay fenced, DR-7); `pool failback POOL` (and the "
        "CMS back); measure until every user is home in full service with every change "
        "(DR-6).",
    ), plan_pool, run_pool_loss),
    Scenario("site-loss", "A whole data center is lost (every process in it): CMS and pool "
             "failover, then restore and failback.", (
        "Wait until the Backup Service is steady; note the lag.",
        "`trimaran site fail SITE` (SIGKILL every server, database and agent of the site).",
        "Run `cms failover --disaster` when the CMS master was there (DR-9: <= 10 s) and "
        "`pool failover --disaster` for each Front End pool of the site.",
        "Measure as for pool-loss (DR-5, DR-2).",
        "`trimaran site restore SITE`; fail back each pool and the CMS; measure (DR-6).",
    ), plan_site, run_site_loss),
    Scenario("wan-cut", "The WAN between two data centers is cut (netfilter; root), then "
             "restored.", (
        "Wait until the Backup Service is steady both ways.",
        "Drop every packet between the two sites' addresses for --hold seconds.",
        "Measure: the Backup Service notices; users keep their registrations; no "
        "acknowledged change lost.",
        "Restore the WAN; measure until the Backup Service is steady again, with no "
        "acknowledged change lost.",
    ), plan_wan, run_wan_cut),
    Scenario("director-kill", "A Director server crashes; sign-ins go on through the others.", (
        "Sign the users in through the Directors; start the load and a sign-in probe (a "
        "new client signing in every 0.5 s, the victim first in its list).",
        "SIGKILL one Director server.",
        "Measure: new sign-ins succeed (DIR-2); no signed-in user loses its registration.",
        "Restart the Director.",
    ), plan_director, run_director_kill),
)}


def check_normal(ops: Deployment) -> None:
    """Refuse to start a drill on a deployment that is not in its normal state."""
    _, records = ops.records()
    abnormal = [f"{pool} is {record.state}" for pool, (record, _) in records.items()
                if record.state != NORMAL]
    if abnormal:
        raise DrillError("the deployment is not in its normal state (" +
                         "; ".join(abnormal) + "); fail back first")
