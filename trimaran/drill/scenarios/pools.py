"""Losing a pool or a site, and cutting the WAN between sites (SPEC DR-2, DR-5..DR-9):
the operator's disaster failover, fencing while failed over, failback."""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Awaitable, Callable

from trimaran.client.writes import Ack
from trimaran.deploy.dr import Deployment, DrError
from trimaran.deploy.rundir import DeploymentState
from trimaran.deploy.sites import (
    FailMode,
    SiteError,
    chain_name,
    cut_between,
    fail_site,
    netfilter_problem,
    restore_site,
    site_members,
    uncut,
)
from trimaran.drill.report import Step, Target
from trimaran.drill.runner import Drill, DrillError
from trimaran.drill.scenarios.common import (
    DR2_RPO,
    DR5_END_TO_END,
    DR5_FROM_COMMAND,
    DR6_FAILBACK,
    DR9_CMS,
    SLACK,
    WAIT,
    Options,
    Plan,
    pick_pool,
    signal_server_action,
    start,
)


def paired(ops: Deployment, pool: str) -> bool:
    return ops.resolver.paired_pool(pool) is not None


def plan_pool(ops: Deployment, state: DeploymentState, opts: Options) -> Plan:
    pool = pick_pool(ops, opts.pool, lambda p: paired(ops, p),
                      "it needs a Front End pool with a backup pool (backup_pool)")
    return {"pool": pool, "backup": ops.pair(pool)}


async def _sees_down(d: Drill, backup: str, pool: str) -> bool:
    """True when a server of `backup` watches `pool` and reports it down (DR-8)."""
    for server in d.servers_of(backup):
        status = await d.status(server)
        watch = (status or {}).get("backup_registrar_of")
        if isinstance(watch, dict) and watch.get("pool") == pool and watch.get("state") == "down":
            return True
    return False


def _lag_before(d: Drill, pool: str) -> float:
    status = d.ops.backup_status(pool)
    return float(status.get("lag_seconds", 0.0)) if status else 0.0


def _rpo_judge(d: Drill, lag: float) -> Callable[[list[Ack]], list[Target]]:
    """Disaster RPO: how long before the fault the oldest lost change was acknowledged
    (0 when none was lost), against DR-2; and the lag the Backup Service showed."""
    fault_wall = time.time() - (time.monotonic() - d.fault_time)

    def judge(lost: list[Ack]) -> list[Target]:
        oldest = max((fault_wall - a.at for a in lost), default=0.0)
        return [Target("oldest acknowledged change lost, before the fault (RPO)",
                       round(max(oldest, 0.0), 3), DR2_RPO, "s", "DR-2"),
                Target("backup lag shown before the fault", lag, DR2_RPO, "s", "DR-2")]
    return judge


async def _fail_over(d: Drill, step: Step, pools: list[str], cms_too: bool) -> float:
    """The operator's disaster failover of `pools`; returns time.monotonic() of the
    first command."""
    first = time.monotonic()
    if cms_too:
        started = time.monotonic()
        await d.act("trimaran cms failover --disaster", lambda: d.ops.cms_failover(True))
        step.targets.append(Target("CMS failover", round(time.monotonic() - started, 3),
                                   DR9_CMS, "s", "DR-9"))
    for pool in pools:
        await d.act(f"trimaran pool failover {pool} --disaster",
                    lambda pool=pool: d.ops.pool_failover(pool, True))  # type: ignore[misc]
    return first


async def _served_by_backup(d: Drill, step: Step, pools: list[str], first_command: float,
                            ) -> None:
    """Wait until every user of `pools` is in full mode on its backup pool; targets."""
    names = d.users_of(set(pools))
    hosts = [h for p in pools for h in d.hosts_of(d.ops.pair(p))]
    step.recover = await d.wait(f"the {len(names)} users served by the backup pool in full "
                                f"mode", lambda: d.users_back(names, hosts, mode="full"),
                                DR5_END_TO_END + SLACK)
    from_command = None if step.recover is None else \
        round(step.recover - (first_command - d.fault_time), 3)
    step.targets.append(Target("command -> every user in full service on the backup pool",
                               from_command, DR5_FROM_COMMAND, "s", "DR-5"))
    step.targets.append(Target("fault -> every user in full service (end to end)",
                               step.recover, DR5_END_TO_END, "s", "DR-5"))
    step.not_recovered = d.not_back(names, hosts, mode="full")


async def _fail_back(d: Drill, pools: list[str], cms_home: str | None) -> None:
    step = d.step("failback", f"restart, then `pool failback` {', '.join(pools)}"
                              + (f" and move the CMS back to {cms_home}" if cms_home else "")
                              + "; users return home with every change made meanwhile")
    d.mark_fault()
    for pool in pools:
        await d.act(f"trimaran pool failback {pool}",
                    lambda pool=pool: d.ops.pool_failback(pool, False))  # type: ignore[misc]
    if cms_home is not None:
        await d.act(f"trimaran cms failover (planned, back to {cms_home})",
                    lambda: d.ops.cms_failover(False))
    names = d.users_of(set(pools))
    hosts = [h for p in pools for h in d.hosts_of(p)]
    step.recover = await d.wait(f"the {len(names)} users home in full mode",
                                lambda: d.users_back(names, hosts, mode="full"),
                                DR6_FAILBACK + SLACK)
    step.targets.append(Target("failback -> every user home in full service", step.recover,
                               DR6_FAILBACK, "s", "DR-6"))
    step.not_recovered = d.not_back(names, hosts, mode="full")
    await d.finish(step, rpo="DR-6")


async def _backup_steady(d: Drill, pools: list[str]) -> bool:
    for pool in pools:
        status = d.ops.backup_status(pool)
        if status is None or status.get("state") != "steady":
            return False
    return True


async def run_pool_loss(d: Drill, plan: Plan, opts: Options) -> None:
    pool, backup = plan["pool"], plan["backup"]
    if await d.wait(f"backup of {pool} steady", lambda: _backup_steady(d, [pool]),
                    WAIT) is None:
        raise DrillError(f"the Backup Service of {pool} is not steady; the drill needs it "
                         f"keeping up to start from")
    master, _ = await d.act("find the CMS master", d.ops.cms_master)
    lag = await d.act(f"trimaran backup status {pool} (lag before the fault)",
                      lambda: _lag_before(d, pool))
    servers = [s.name for s in d.servers_of(pool)]
    step = d.step("fault", f"kill every server of pool {pool} ({', '.join(servers)}); the "
                           f"operator fails {'the CMS and ' if master == pool else ''}the pool "
                           f"over to {backup}")

    def kill_all() -> None:
        for name in servers:
            signal_server_action(d, name, signal.SIGKILL)()
    await d.fault(f"kill {', '.join(servers)}", kill_all)
    step.detect = await d.wait(f"{backup} sees {pool} down", lambda: _sees_down(d, backup, pool),
                               WAIT)
    first = await _fail_over(d, step, [pool], cms_too=master == pool)
    await _served_by_backup(d, step, [pool], first)
    await _judge_disaster(d, step, lag)
    restart = d.step("restart", f"restart the servers of {pool}; they stay fenced while the "
                                f"pool is failed over (DR-7)")
    await d.fault(f"trimaran server start {', '.join(servers)}", start(d, servers))
    restart.recover = d.since_fault()
    restart.not_recovered = [n for n in d.users_of({pool})
                             if d.load.server_of(n) not in d.hosts_of(backup)]
    restart.targets.append(Target("users still served by the backup pool",
                                  float(len(restart.not_recovered)), 0.0, "", "DR-7"))
    await d.finish(restart, rpo="DR-7")
    await _fail_back(d, [pool], master if master == pool else None)


async def _judge_disaster(d: Drill, step: Step, lag: float) -> None:
    """The loss of a disaster: changes acknowledged up to the moment the fault was in
    place (the dying pool may acknowledge some while it is being killed) are judged
    against the RPO, and those lost are written off (later steps do not expect them
    back); changes acknowledged since must all be kept."""
    lost = await d.finish(step, judge=_rpo_judge(d, lag), sent_before=d.fault_done)
    if lost:
        d.written_off.update(lost)
        d.event("info", f"{len(lost)} change(s) lost by the disaster, within the RPO, are "
                        f"not expected back")
    await _check_since(d, step, d.fault_done)


async def _check_since(d: Drill, step: Step, since: float) -> None:
    """After a disaster: changes acknowledged since the fault was in place (on the
    backup pool) must all be there."""
    lost = await d.check_writes(Step("after", "", d.now()), sent_since=since)
    step.targets.append(Target("changes acknowledged after the fault, lost",
                               float(len(lost)), 0.0, "", "DR-5"))


def plan_site(ops: Deployment, state: DeploymentState, opts: Options) -> Plan:
    sites = [s.name for s in ops.topology.sites]
    if opts.site is not None and opts.site not in sites:
        raise DrillError(f"no site named {opts.site!r} (sites: {', '.join(sites)})")

    def pools_in(site: str) -> list[str]:
        return [p for p in ops.frontend_pools() if ops.resolver.pool(p).site == site]

    def fits(site: str) -> bool:
        pools = pools_in(site)
        return bool(pools) and all(paired(ops, p) and ops.resolver.pool(ops.pair(p)).site
                                   != site for p in pools)
    if opts.site is not None:
        if not fits(opts.site):
            raise DrillError(f"site {opts.site} cannot run this drill: it needs Front End "
                             f"pools there, each with a backup pool in another site")
        site = opts.site
    else:
        try:
            master, _ = ops.cms_master()
            preferred = ops.resolver.pool(master).site
        except DrError:
            preferred = ""
        candidates = sorted((s for s in sites if fits(s)), key=lambda s: s != preferred)
        if not candidates:
            raise DrillError("no site has Front End pools that all have a backup pool in "
                             "another site")
        site = candidates[0]
    return {"site": site, "pools": ",".join(pools_in(site))}


async def run_site_loss(d: Drill, plan: Plan, opts: Options) -> None:
    site, pools = plan["site"], plan["pools"].split(",")
    if await d.wait(f"backup of {', '.join(pools)} steady", lambda: _backup_steady(d, pools),
                    WAIT) is None:
        raise DrillError("the Backup Service is not steady; the drill needs it keeping up")
    master, _ = await d.act("find the CMS master", d.ops.cms_master)
    lag = max([await d.act(f"backup status {p}", lambda p=p: _lag_before(d, p))  # type: ignore[misc]
               for p in pools])
    cms_lost = d.resolver.pool(master).site == site
    step = d.step("fault", f"power off site {site} (every process in it); the operator fails "
                           f"{'the CMS and ' if cms_lost else ''}{', '.join(pools)} over")
    await d.fault(f"trimaran site fail {site}", lambda: _site_fail(d, site))
    backups = {p: d.ops.pair(p) for p in pools}
    step.detect = await d.wait(
        "the backup pools see their partners down",
        lambda: _all_true([_sees_down(d, b, p) for p, b in backups.items()]), WAIT)
    first = await _fail_over(d, step, pools, cms_too=cms_lost)
    await _served_by_backup(d, step, pools, first)
    await _judge_disaster(d, step, lag)
    restore = d.step("restore", f"site {site} comes back (`trimaran site restore`); its pools "
                                f"stay fenced while failed over (DR-7)")
    await d.fault(f"trimaran site restore {site}", lambda: _site_restore(d, site))
    restore.recover = d.since_fault()
    await d.finish(restore, rpo="DR-7")
    await _fail_back(d, pools, master if cms_lost else None)


async def _all_true(checks: list[Awaitable[bool]]) -> bool:
    results = [await c for c in checks]
    return all(results)


def _site_fail(d: Drill, site: str) -> None:
    _, problems = fail_site(d.run, site, FailMode.KILL)
    if problems:
        raise DrillError(f"site {site} failed, but: {'; '.join(problems)}")


def _site_restore(d: Drill, site: str) -> None:
    _, problems = restore_site(d.run, site, 90.0)
    if problems:
        raise DrillError(f"site {site} restored, but: {'; '.join(problems)}")




def plan_wan(ops: Deployment, state: DeploymentState, opts: Options) -> Plan:
    problem = netfilter_problem()
    if problem is not None:
        raise DrillError(problem)
    pools = [p for p in ops.frontend_pools() if paired(ops, p)]
    if opts.site is not None:
        pools = [p for p in pools if ops.resolver.pool(p).site == opts.site]
    if not pools:
        raise DrillError("it needs paired Front End pools in two sites")
    one = ops.resolver.pool(pools[0]).site
    other = ops.resolver.pool(ops.pair(pools[0])).site
    return {"site": one, "other": other}


async def run_wan_cut(d: Drill, plan: Plan, opts: Options) -> None:
    one, other = plan["site"], plan["other"]
    state = d.run.load_state()
    a = site_members(d.topology, state, one).addresses
    b = site_members(d.topology, state, other).addresses
    pools = [p for p in d.ops.frontend_pools() if d.resolver.pool(p).site in (one, other)
             and paired(d.ops, p)]
    if await d.wait("backup steady both ways", lambda: _backup_steady(d, pools), WAIT) is None:
        raise DrillError("the Backup Service is not steady; the drill needs it keeping up")
    chain = chain_name(d.run, "drill-wan")
    step = d.step("cut", f"cut the WAN between {one} and {other} for {opts.hold:.0f} s; both "
                         f"sites keep serving their users, the backup falls behind")
    await d.fault(f"cut {one} <-> {other}", lambda: cut_between(chain, tuple(a), tuple(b)))
    try:
        step.detect = await d.wait("the Backup Service reports it cannot ship",
                                   lambda: _not_steady(d, pools), WAIT)
        await d.hold(max(0.0, opts.hold - d.since_fault()), "the cut in place")
        names = list(d.load.agents)
        step.not_recovered = d.load.not_registered(names)
        step.targets.append(Target("users without a registration during the cut",
                                   float(len(step.not_recovered)), 0.0, "", "FE-1"))
        await d.finish(step, rpo="DR-2")
    finally:
        with contextlib.suppress(SiteError, OSError):
            uncut(chain)
    heal = d.step("heal", "the WAN comes back; the Backup Service catches up by itself")
    d.mark_fault()
    d.event("action", f"WAN {one} <-> {other} restored")
    heal.recover = await d.wait("backup steady both ways again", lambda: _backup_steady(d, pools),
                                WAIT)
    heal.targets.append(Target("backup steady again after the WAN returns", heal.recover,
                               None, "s", "DR-2"))
    await d.finish(heal, rpo="DR-2")


async def _not_steady(d: Drill, pools: list[str]) -> bool:
    for pool in pools:
        status = d.ops.backup_status(pool)
        if status is not None and status.get("state") != "steady":
            return True
    return False
