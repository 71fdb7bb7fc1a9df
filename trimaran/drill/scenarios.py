"""The drill scenarios: what each injects, what the operator (or the system) does, and
what is measured against which SPEC target.

Each scenario has a `plan` (run before any user signs in: it picks its target on
the deployment and refuses clearly when the deployment cannot run it) and a `run`
(the steps, on a `Drill` under load). Every step ends with the check of every change
acknowledged so far. Times are measured from the moment the fault is in place.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp

from trimaran.aio import cancel
from trimaran.client.ua import RedirectError, UAConfig, UserAgent
from trimaran.client.writes import Ack
from trimaran.client.xcap import XcapClient, XcapError
from trimaran.cms.failover import NORMAL
from trimaran.deploy.database import agent_url, instance
from trimaran.deploy.dr import Deployment
from trimaran.deploy.rundir import DatabaseState, DeploymentState
from trimaran.deploy.sites import (
    FailMode,
    chain_name,
    cut,
    cut_between,
    fail_site,
    netfilter_problem,
    restore_site,
    site_members,
    uncut,
)
from trimaran.deploy.supervisor import (
    pid_alive,
    signal_server,
    start_server,
    wait_exit,
    wait_healthy,
)
from trimaran.drill.report import Step, Target
from trimaran.drill.runner import Drill, DrillError, percentile
from trimaran.net.transport import Address, TransportError
from trimaran.sip.errors import SipError
from trimaran.topology.model import PoolRole

# SPEC targets, seconds
FE2_USERS_BACK = 5.0          # FE-2: users of a failed server reachable again (p99)
BE2_WRITES_BACK = 10.0        # BE-2: writes succeed again after the principal fails
DR2_RPO = 1.0                 # DR-2: RPO at steady load
DR5_FROM_COMMAND = 30.0       # DR-5: command -> full service for users that retry
DR5_END_TO_END = 60.0         # DR-5: end to end including re-sign-in
DR6_FAILBACK = 120.0          # DR-6: failback (for 20,000 users)
DR9_CMS = 10.0                # DR-9: CMS failover
DIR2_SIGN_IN = 5.0            # DIR-2 (no figure in the model): sign-in goes on at once
WAIT = 90.0                   # bound of any single wait
SLACK = 10.0                  # extra allowance on waits bounded by a target
SETTLE = 2.0                  # load observed after a recovery, before the step closes


@dataclass(frozen=True)
class Options:
    """What the operator chose on the command line (None: the scenario picks)."""

    pool: str | None = None
    server: str | None = None
    site: str | None = None
    hold: float = 10.0        # how long a fault is left in place when nothing repairs it


Plan = dict[str, str]


@dataclass(frozen=True)
class Scenario:
    """One drill scenario."""

    name: str
    summary: str
    procedure: tuple[str, ...]
    plan: Callable[[Deployment, DeploymentState, Options], Plan]
    run: Callable[[Drill, Plan, Options], Awaitable[None]]


# -- shared pieces -------------------------------------------------------------------------


def _frontend_pools(ops: Deployment) -> list[str]:
    return ops.frontend_pools()


def _pick_pool(ops: Deployment, wanted: str | None, fits: Callable[[str], bool],
               why: str) -> str:
    pools = [p for p in _frontend_pools(ops) if fits(p)]
    if wanted is not None:
        if wanted not in _frontend_pools(ops):
            raise DrillError(f"no Front End pool named {wanted!r} (pools: "
                             f"{', '.join(_frontend_pools(ops))})")
        if wanted not in pools:
            raise DrillError(f"pool {wanted} cannot run this drill: {why}")
        return wanted
    if not pools:
        raise DrillError(f"no Front End pool can run this drill: {why}")
    return pools[0]


async def _peers_see(d: Drill, pool: str, server: str, *, dead: bool) -> bool:
    """True when every other answering server of `pool` lists `server` as dead (or
    alive)."""
    answered = 0
    for peer in d.servers_of(pool):
        if peer.name == server:
            continue
        status = await d.status(peer)
        if status is None:
            continue
        answered += 1
        members = status.get("pool_members") or {}
        listed = members.get("dead" if dead else "alive") or []
        if server not in listed:
            return False
    return answered > 0


def _signal(d: Drill, name: str, sig: signal.Signals) -> Callable[[], None]:
    def action() -> None:
        state = d.run.load_state()
        server = state.servers[name]
        if not signal_server(server, sig):
            raise DrillError(f"server {name} is not running")
        if sig is signal.SIGKILL:
            wait_exit(server, 5.0)
    return action


def _start(d: Drill, names: list[str]) -> Callable[[], None]:
    def action() -> None:
        state = d.run.load_state()
        servers = [state.servers[n] for n in names]
        for server in servers:
            if not pid_alive(server.pid):
                start_server(d.run, server)
        d.run.save_state(state)
        failed = wait_healthy(servers, 60.0)
        if failed:
            raise DrillError(f"server(s) {', '.join(failed)} did not become healthy")
    return action


def _busiest(d: Drill, pool: str) -> str:
    servers = d.servers_of(pool)
    return max(servers, key=lambda s: len(d.load.on_hosts([s.address]))).name


def _users_back_targets(d: Drill, step: Step, affected: list[str], hosts: list[str],
                        limit: float, spec: str) -> None:
    per_user = d.per_user_rto(affected, hosts)
    step.targets.append(Target(f"{len(affected)} affected users registered again, p99",
                               percentile(per_user, 99) if len(per_user) == len(affected)
                               else None, limit, "s", spec))
    step.not_recovered = [n for n in affected if d.load.server_of(n) not in hosts]


# -- server-kill, server-freeze ------------------------------------------------------------


def _plan_server(ops: Deployment, state: DeploymentState, opts: Options) -> Plan:
    if opts.server is not None:
        if opts.server not in state.servers:
            raise DrillError(f"no server named {opts.server!r} in the deployment")
        pool = state.servers[opts.server].pool
        if pool not in _frontend_pools(ops) or len(ops.resolver.servers_of(pool)) < 2:
            raise DrillError(f"server {opts.server} is not in a Front End pool of two or "
                             f"more servers")
        return {"pool": pool, "server": opts.server}
    pool = _pick_pool(ops, opts.pool, lambda p: len(ops.resolver.servers_of(p)) >= 2,
                      "it needs a Front End pool of two or more servers (Enterprise Edition)")
    return {"pool": pool}


def _server_failure(freeze: bool) -> Callable[[Drill, Plan, Options], Awaitable[None]]:
    async def run(d: Drill, plan: Plan, opts: Options) -> None:
        pool = plan["pool"]
        victim = plan.get("server") or _busiest(d, pool)
        address = d.resolver.server(victim).address
        others = [h for h in d.hosts_of(pool) if h != address]
        detection = d.topology.settings.failure_detection_seconds
        verb = "freeze (SIGSTOP)" if freeze else "kill (SIGKILL)"
        step = d.step("fault", f"{verb} server {victim} of pool {pool}; its users re-register "
                               f"on the pool's other servers")
        affected = d.load.on_hosts([address])
        d.event("info", f"{len(affected)} drill users registered on {victim}")
        await d.fault(f"{verb} {victim}", _signal(d, victim, signal.SIGSTOP if freeze
                                                 else signal.SIGKILL))
        try:
            users_back = d.wait(f"the {len(affected)} users of {victim} registered again",
                                lambda: d.users_back(affected, others),
                                FE2_USERS_BACK + SLACK + detection)
            step.recover = await users_back
            step.detect = await d.wait(f"pool {pool} declares {victim} dead",
                                       lambda: _peers_see(d, pool, victim, dead=True),
                                       detection + SLACK)
            _users_back_targets(d, step, affected, others, FE2_USERS_BACK, "FE-2")
            # the bound: the last heartbeat up to one interval before the failure, the
            # detection time, and the decision at the next tick, up to one interval later
            beat = d.topology.settings.heartbeat_seconds
            step.targets.append(Target(f"peers declare {victim} dead", step.detect,
                                       detection + 2 * beat, "s", "FE-3"))
            await d.hold(SETTLE, "load on the surviving servers")
            await d.finish(step, rpo="FE-2")
        finally:
            if freeze:
                with _ignored():
                    _signal(d, victim, signal.SIGCONT)()
        step = d.step("repair", f"{'thaw (SIGCONT)' if freeze else 'restart'} {victim}; it "
                                f"rejoins the pool")
        if freeze:
            d.mark_fault()
            d.event("action", f"{victim} thawed")
        else:
            await d.fault(f"trimaran server start {victim}", _start(d, [victim]))
        step.recover = await d.wait(f"pool {pool} counts {victim} alive again",
                                    lambda: _peers_see(d, pool, victim, dead=False), WAIT)
        step.targets.append(Target(f"{victim} back in the pool", step.recover, None))
        await d.finish(step, rpo="FE-2")
    return run


class _ignored:
    """Suppress errors of a best-effort repair in a `finally` (the drill reports the
    state it leaves behind through the next step)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: object, tb: object) -> bool:
        return isinstance(exc, (DrillError, OSError))


# -- backend-principal-kill, backend-partition ---------------------------------------------


def _mirrored(ops: Deployment, pool: str) -> bool:
    spec = ops.resolver.pool(pool)
    backend = spec.backend
    return backend is not None and backend.mirror is not None and backend.witness is not None


def _plan_backend(ops: Deployment, state: DeploymentState, opts: Options) -> Plan:
    pool = _pick_pool(ops, opts.pool, lambda p: _mirrored(ops, p),
                      "it needs a Back End with a principal, a mirror and a witness (BE-2)")
    return {"pool": pool}


def _databases(d: Drill, pool: str) -> list[DatabaseState]:
    return [db for db in d.run.load_state().databases.values() if db.pool == pool]


async def _roles(d: Drill, pool: str) -> dict[str, dict[str, object]]:
    out = {}
    for database in _databases(d, pool):
        state = await d.get_json(f"{agent_url(database)}/state")
        if state is not None:
            out[database.name] = state
    return out


async def _principal(d: Drill, pool: str) -> str | None:
    for name, state in (await _roles(d, pool)).items():
        if state.get("role") == "principal" and state.get("serving"):
            return name
    return None


async def _synchronous(d: Drill, pool: str) -> bool:
    roles = await _roles(d, pool)
    principal = await _principal(d, pool)
    if principal is None:
        return False
    inst = roles[principal].get("instance")
    standby = inst.get("standby") if isinstance(inst, dict) else None
    return isinstance(standby, dict) and standby.get("sync_state") == "sync"


def _backend_failure(partition: bool) -> Callable[[Drill, Plan, Options], Awaitable[None]]:
    async def run(d: Drill, plan: Plan, opts: Options) -> None:
        pool = plan["pool"]
        if not await d.wait(f"Back End of {pool} synchronous", lambda: _synchronous(d, pool),
                            WAIT) is not None:
            raise DrillError(f"the Back End of {pool} is not a synchronous pair; the drill "
                             f"needs a protected Back End to start from")
        victim = await _principal(d, pool)
        assert victim is not None
        database = next(db for db in _databases(d, pool) if db.name == victim)
        chain = chain_name(d.run, "drill-be")
        how = f"cut {victim} ({database.address}) off the network" if partition \
            else f"kill the principal {victim} (SIGKILL postmaster and backends)"
        step = d.step("fault", f"{how}; the mirror is promoted with the witness's agreement "
                               f"and the Front Ends find it")
        probe = _WriteProbe(d, pool)
        await probe.start()
        try:
            if partition:
                await d.fault(how, lambda: cut(chain, (database.address,)))
            else:
                await d.fault(how, lambda: instance(d.run, database).kill())
            step.detect = await d.wait("the mirror serves as principal",
                                       lambda: _promoted(d, pool, victim), WAIT)
            step.recover = await d.wait("writes acknowledged again",
                                        lambda: probe.acked_after(d.fault_time), WAIT)
            await d.hold(SETTLE, "writes on the new principal")
        finally:
            await probe.stop()
        step.targets.append(Target("writes succeed again", step.recover, BE2_WRITES_BACK,
                                   "s", "BE-2"))
        step.targets.append(Target("mirror promoted", step.detect, BE2_WRITES_BACK, "s",
                                   "BE-2"))
        await d.finish(step, rpo="BE-2")
        step = d.step("rejoin", f"{'heal the cut; ' if partition else ''}{victim} rejoins as "
                                f"the synchronous mirror by itself (BE-6); measured from "
                                f"{'the heal' if partition else 'the crash'}",
                      same_fault=not partition)
        if partition:
            await d.fault(f"heal the cut of {victim}", lambda: uncut(chain))
        step.recover = await d.wait(f"{victim} back as synchronous mirror",
                                    lambda: _rejoined(d, pool, victim), WAIT)
        step.targets.append(Target("protection restored (synchronous mirror)", step.recover,
                                   None, "s", "BE-6"))
        await d.finish(step, rpo="BE-2")
    return run


async def _promoted(d: Drill, pool: str, victim: str) -> bool:
    principal = await _principal(d, pool)
    return principal is not None and principal != victim


async def _rejoined(d: Drill, pool: str, victim: str) -> bool:
    roles = await _roles(d, pool)
    return (roles.get(victim, {}).get("role") == "mirror") and await _synchronous(d, pool)


class _WriteProbe:
    """One drill user of the pool scheduling a new meeting every 100 ms, so that the
    moment writes succeed again is seen to a tenth of a second; its acknowledged
    writes join the load's (and are checked with them)."""

    def __init__(self, d: Drill, pool: str) -> None:
        self.d = d
        name = d.users_of({pool})[0]
        self.user = d.users[name]
        self.bases = [f"http://{s.address}:{s.admin_port}" for s in d.servers_of(pool)]
        self.acks: list[float] = []      # monotonic start time of each acknowledged write
        self._task: asyncio.Task[None] | None = None
        self._count = 0

    async def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        await cancel(self._task)

    async def acked_after(self, moment: float) -> bool:
        return any(at > moment for at in self.acks)

    async def _run(self) -> None:
        aor = self.user.aor(self.d.domain)
        index = 0
        while True:
            self._count += 1
            meeting = f"{self.user.name}-probe{self._count}"
            client = XcapClient(self.bases[index % len(self.bases)], aor, self.user.name,
                                self.user.password, timeout=2.0)
            started = time.monotonic()
            try:
                await client.put_meeting(meeting, subject="write probe")
            except (XcapError, OSError, TimeoutError, aiohttp.ClientError):
                index += 1
            else:
                self.acks.append(started)
                self.d.load.writers.stats.acked.append(
                    Ack(aor, "meeting", meeting, time.time()))
            await asyncio.sleep(0.1)


def _plan_backend_partition(ops: Deployment, state: DeploymentState, opts: Options) -> Plan:
    problem = netfilter_problem()
    if problem is not None:
        raise DrillError(problem)
    return _plan_backend(ops, state, opts)


# -- pool-loss, site-loss ------------------------------------------------------------------


def _paired(ops: Deployment, pool: str) -> bool:
    return ops.resolver.paired_pool(pool) is not None


def _plan_pool(ops: Deployment, state: DeploymentState, opts: Options) -> Plan:
    pool = _pick_pool(ops, opts.pool, lambda p: _paired(ops, p),
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
    step.not_recovered = [n for n in names if d.load.server_of(n) not in hosts]


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
    step.not_recovered = [n for n in names if d.load.server_of(n) not in hosts]
    await d.finish(step, rpo="DR-6")


async def _backup_steady(d: Drill, pools: list[str]) -> bool:
    for pool in pools:
        status = d.ops.backup_status(pool)
        if status is None or status.get("state") != "steady":
            return False
    return True


async def _run_pool_loss(d: Drill, plan: Plan, opts: Options) -> None:
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
            _signal(d, name, signal.SIGKILL)()
    await d.fault(f"kill {', '.join(servers)}", kill_all)
    step.detect = await d.wait(f"{backup} sees {pool} down", lambda: _sees_down(d, backup, pool),
                               WAIT)
    first = await _fail_over(d, step, [pool], cms_too=master == pool)
    await _served_by_backup(d, step, [pool], first)
    await d.finish(step, judge=_rpo_judge(d, lag), writes_before=d.fault_time)
    await _check_since(d, step, d.fault_time)
    restart = d.step("restart", f"restart the servers of {pool}; they stay fenced while the "
                                f"pool is failed over (DR-7)")
    await d.fault(f"trimaran server start {', '.join(servers)}", _start(d, servers))
    restart.recover = d.since_fault()
    restart.not_recovered = [n for n in d.users_of({pool})
                             if d.load.server_of(n) not in d.hosts_of(backup)]
    restart.targets.append(Target("users still served by the backup pool",
                                  float(len(restart.not_recovered)), 0.0, "", "DR-7"))
    await d.finish(restart, rpo="DR-7")
    await _fail_back(d, [pool], master if master == pool else None)


async def _check_since(d: Drill, step: Step, since: float) -> None:
    """After a disaster: changes acknowledged since the fault (on the backup pool) must
    all be there."""
    saved = d.load.writers.stats.acked
    wall = time.time() - (time.monotonic() - since)
    d.load.writers.stats.acked = [a for a in saved if a.at >= wall]
    try:
        probe = Step("after", "", d.now())
        lost = await d.check_writes(probe)
    finally:
        d.load.writers.stats.acked = saved
    step.targets.append(Target("changes acknowledged after the fault, lost",
                               float(len(lost)), 0.0, "", "DR-5"))


def _plan_site(ops: Deployment, state: DeploymentState, opts: Options) -> Plan:
    sites = [s.name for s in ops.topology.sites]
    if opts.site is not None and opts.site not in sites:
        raise DrillError(f"no site named {opts.site!r} (sites: {', '.join(sites)})")

    def pools_in(site: str) -> list[str]:
        return [p for p in _frontend_pools(ops) if ops.resolver.pool(p).site == site]

    def fits(site: str) -> bool:
        pools = pools_in(site)
        return bool(pools) and all(_paired(ops, p) and ops.resolver.pool(ops.pair(p)).site
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
        except DrillError:
            preferred = ""
        candidates = sorted((s for s in sites if fits(s)), key=lambda s: s != preferred)
        if not candidates:
            raise DrillError("no site has Front End pools that all have a backup pool in "
                             "another site")
        site = candidates[0]
    return {"site": site, "pools": ",".join(pools_in(site))}


async def _run_site_loss(d: Drill, plan: Plan, opts: Options) -> None:
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
    await d.finish(step, judge=_rpo_judge(d, lag), writes_before=d.fault_time)
    await _check_since(d, step, d.fault_time)
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


# -- wan-cut -------------------------------------------------------------------------------


def _plan_wan(ops: Deployment, state: DeploymentState, opts: Options) -> Plan:
    problem = netfilter_problem()
    if problem is not None:
        raise DrillError(problem)
    paired = [p for p in _frontend_pools(ops) if _paired(ops, p)]
    if opts.site is not None:
        paired = [p for p in paired if ops.resolver.pool(p).site == opts.site]
    if not paired:
        raise DrillError("it needs paired Front End pools in two sites")
    one = ops.resolver.pool(paired[0]).site
    other = ops.resolver.pool(ops.pair(paired[0])).site
    return {"site": one, "other": other}


async def _run_wan_cut(d: Drill, plan: Plan, opts: Options) -> None:
    one, other = plan["site"], plan["other"]
    state = d.run.load_state()
    a = site_members(d.topology, state, one).addresses
    b = site_members(d.topology, state, other).addresses
    pools = [p for p in _frontend_pools(d.ops) if d.resolver.pool(p).site in (one, other)
             and _paired(d.ops, p)]
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
        with _ignored():
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


# -- director-kill -------------------------------------------------------------------------


def _plan_director(ops: Deployment, state: DeploymentState, opts: Options) -> Plan:
    directors = [p for p in ops.resolver.pools(PoolRole.DIRECTOR) if len(p.servers) >= 2]
    if opts.pool is not None:
        directors = [p for p in directors if p.name == opts.pool]
    if not directors:
        raise DrillError("it needs a Director pool of two or more servers")
    pool = directors[0]
    victim = opts.server or pool.servers[0].name
    if victim not in {s.name for s in pool.servers}:
        raise DrillError(f"{victim} is not a server of Director pool {pool.name}")
    return {"pool": pool.name, "server": victim}


async def _run_director_kill(d: Drill, plan: Plan, opts: Options) -> None:
    pool, victim = plan["pool"], plan["server"]
    servers = d.servers_of(pool)
    ordered = sorted(servers, key=lambda s: s.name != victim)   # the victim first
    addresses = tuple(Address("tcp", s.address, s.sip_port) for s in ordered)
    prober = _SignInProbe(d, addresses)
    step = d.step("fault", f"kill Director {victim}; new sign-ins go through the pool's "
                           f"other Directors, signed-in users are not affected")
    await prober.start()
    try:
        await d.fault(f"kill {victim}", _signal(d, victim, signal.SIGKILL))
        step.recover = await d.wait("a new sign-in through the Director pool succeeds",
                                    lambda: prober.ok_after(d.fault_time), WAIT)
        await d.hold(max(0.0, opts.hold - d.since_fault()), "sign-ins with the Director down")
    finally:
        await prober.stop()
    step.targets.append(Target("new sign-ins succeed again", step.recover, DIR2_SIGN_IN,
                               "s", "DIR-2"))
    step.targets.append(Target("sign-in attempts that failed", float(prober.failed_after(
        d.fault_time)), None, "", "DIR-2"))
    step.not_recovered = d.load.not_registered()
    step.targets.append(Target("signed-in users that lost their registration",
                               float(len(step.not_recovered)), 0.0, "", "DIR-2"))
    await d.finish(step, rpo="DIR-2")
    restart = d.step("restart", f"restart Director {victim}")
    await d.fault(f"trimaran server start {victim}", _start(d, [victim]))
    restart.recover = d.since_fault()
    await d.finish(restart, rpo="DIR-2")


class _SignInProbe:
    """A new user signing in through the Director pool every half second (the user is
    a drill user that the load does not run), each attempt a fresh client."""

    def __init__(self, d: Drill, directors: tuple[Address, ...]) -> None:
        self.d = d
        spare = [u for n, u in d.users.items() if n not in d.load.agents]
        if not spare:
            raise DrillError("no spare drill user for the sign-in probe")
        self.user = spare[0]
        self.directors = directors
        self.attempts: list[tuple[float, bool]] = []    # (monotonic start, succeeded)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        await cancel(self._task)

    async def ok_after(self, moment: float) -> bool:
        return any(ok and at > moment for at, ok in self.attempts)

    def failed_after(self, moment: float) -> int:
        return sum(1 for at, ok in self.attempts if at > moment and not ok)

    async def _run(self) -> None:
        while True:
            ua = UserAgent(UAConfig(aor=self.user.aor(self.d.domain),
                                    password=self.user.password, servers=self.directors,
                                    auto_refresh=False, reregister_on_flow_loss=False))
            started = time.monotonic()
            ok = False
            try:
                await ua.start()
                response = await ua.register()
                ok = 200 <= response.status < 300
                if ok:
                    await ua.unregister()
            except (RedirectError, SipError, TransportError, OSError, TimeoutError):
                ok = False
            finally:
                await ua.close()
            self.attempts.append((started, ok))
            await asyncio.sleep(0.5)


# -- the catalogue -------------------------------------------------------------------------

SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("server-kill", "A Front End server crashes (SIGKILL) under load.", (
        "Sign the users in and start the load.",
        "SIGKILL the pool's busiest Front End server.",
        "Measure: its peers declare it dead (FE-3); its users re-register on the other "
        "servers (FE-2, p99 <= 5 s); no acknowledged change lost.",
        "Restart it (`trimaran server start`); measure until the pool counts it alive.",
    ), _plan_server, _server_failure(freeze=False)),
    Scenario("server-freeze", "A Front End server hangs (SIGSTOP: the host is frozen, its "
             "sockets stay open) under load.", (
        "Sign the users in and start the load.",
        "SIGSTOP the pool's busiest Front End server (every process of it).",
        "Measure: the peers' heartbeats declare it dead (FE-3); its clients' keepalives "
        "notice and they re-register elsewhere (FE-2); no acknowledged change lost.",
        "SIGCONT it; measure until the pool counts it alive again.",
    ), _plan_server, _server_failure(freeze=True)),
    Scenario("backend-principal-kill", "The Back End principal crashes under write load.", (
        "Wait until the pool's Back End is a synchronous pair; start the load and a write "
        "probe (one write every 100 ms).",
        "SIGKILL the principal's postmaster and backends.",
        "Measure: the mirror is promoted with the witness (BE-2); writes succeed again "
        "(<= 10 s); no acknowledged write lost (RPO 0).",
        "Measure until the old principal is back as the synchronous mirror (BE-6).",
    ), _plan_backend, _backend_failure(partition=False)),
    Scenario("backend-partition", "The Back End principal's host is cut off the network "
             "(netfilter; root) under write load.", (
        "Wait until the pool's Back End is a synchronous pair; start the load and a write "
        "probe.",
        "Drop every packet to and from the principal's address.",
        "Measure: the principal, alone, stops; the mirror is promoted with the witness "
        "(BE-2, BE-3); writes succeed again (<= 10 s); no acknowledged write lost.",
        "Heal the cut; measure until the old principal is back as the synchronous mirror.",
    ), _plan_backend_partition, _backend_failure(partition=True)),
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
    ), _plan_pool, _run_pool_loss),
    Scenario("site-loss", "A whole data center is lost (every process in it): CMS and pool "
             "failover, then restore and failback.", (
        "Wait until the Backup Service is steady; note the lag.",
        "`trimaran site fail SITE` (SIGKILL every server, database and agent of the site).",
        "Run `cms failover --disaster` when the CMS master was there (DR-9: <= 10 s) and "
        "`pool failover --disaster` for each Front End pool of the site.",
        "Measure as for pool-loss (DR-5, DR-2).",
        "`trimaran site restore SITE`; fail back each pool and the CMS; measure (DR-6).",
    ), _plan_site, _run_site_loss),
    Scenario("wan-cut", "The WAN between two data centers is cut (netfilter; root), then "
             "restored.", (
        "Wait until the Backup Service is steady both ways.",
        "Drop every packet between the two sites' addresses for --hold seconds.",
        "Measure: the Backup Service notices; users keep their registrations; no "
        "acknowledged change lost.",
        "Restore the WAN; measure until the Backup Service is steady again, with no "
        "acknowledged change lost.",
    ), _plan_wan, _run_wan_cut),
    Scenario("director-kill", "A Director server crashes; sign-ins go on through the others.", (
        "Sign the users in through the Directors; start the load and a sign-in probe (a "
        "new client signing in every 0.5 s, the victim first in its list).",
        "SIGKILL one Director server.",
        "Measure: new sign-ins succeed (DIR-2); no signed-in user loses its registration.",
        "Restart the Director.",
    ), _plan_director, _run_director_kill),
)}


def check_normal(ops: Deployment) -> None:
    """Refuse to start a drill on a deployment that is not in its normal state."""
    _, records = ops.records()
    abnormal = [f"{pool} is {record.state}" for pool, (record, _) in records.items()
                if record.state != NORMAL]
    if abnormal:
        raise DrillError("the deployment is not in its normal state (" +
                         "; ".join(abnormal) + "); fail back first")
