"""Server failures: a Front End server killed or frozen (SPEC FE-2, FE-3), a Director
killed (DIR-2)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable, Callable

from trimaran.aio import cancel
from trimaran.client.ua import RedirectError, UAConfig, UserAgent
from trimaran.deploy.dr import Deployment
from trimaran.deploy.rundir import DeploymentState
from trimaran.drill.report import Target
from trimaran.drill.runner import Drill, DrillError
from trimaran.drill.scenarios.common import (
    DIR2_SIGN_IN,
    FE2_USERS_BACK,
    SETTLE,
    SLACK,
    WAIT,
    Options,
    Plan,
    busiest,
    declared_dead_at,
    peers_see,
    pick_pool,
    signal_server_action,
    start,
    users_back_targets,
)
from trimaran.net.transport import Address, TransportError
from trimaran.sip.errors import SipError
from trimaran.topology.model import PoolRole


def plan_server(ops: Deployment, state: DeploymentState, opts: Options) -> Plan:
    if opts.server is not None:
        if opts.server not in state.servers:
            raise DrillError(f"no server named {opts.server!r} in the deployment")
        pool = state.servers[opts.server].pool
        if pool not in ops.frontend_pools() or len(ops.resolver.servers_of(pool)) < 2:
            raise DrillError(f"server {opts.server} is not in a Front End pool of two or "
                             f"more servers")
        return {"pool": pool, "server": opts.server}
    pool = pick_pool(ops, opts.pool, lambda p: len(ops.resolver.servers_of(p)) >= 2,
                      "it needs a Front End pool of two or more servers (Enterprise Edition)")
    return {"pool": pool}


def server_failure(freeze: bool) -> Callable[[Drill, Plan, Options], Awaitable[None]]:
    async def run(d: Drill, plan: Plan, opts: Options) -> None:
        pool = plan["pool"]
        victim = plan.get("server") or busiest(d, pool)
        address = d.resolver.server(victim).address
        others = [h for h in d.hosts_of(pool) if h != address]
        detection = d.topology.settings.failure_detection_seconds
        verb = "freeze (SIGSTOP)" if freeze else "kill (SIGKILL)"
        step = d.step("fault", f"{verb} server {victim} of pool {pool}; its users re-register "
                               f"on the pool's other servers")
        affected = d.load.on_hosts([address])
        d.event("info", f"{len(affected)} drill users registered on {victim}")
        sig = signal.SIGSTOP if freeze else signal.SIGKILL
        await d.fault(f"{verb} {victim}", signal_server_action(d, victim, sig))
        try:
            step.recover, step.detect = await asyncio.gather(
                d.wait(f"the {len(affected)} users of {victim} registered again",
                       lambda: d.users_back(affected, others),
                       FE2_USERS_BACK + SLACK + detection),
                d.wait(f"pool {pool} declares {victim} dead",
                       lambda: peers_see(d, pool, victim, dead=True), detection + SLACK))
            if step.detect is not None:   # the peers' own decision time, when they log it
                step.detect = await declared_dead_at(d, pool, victim) or step.detect
            users_back_targets(d, step, affected, others, FE2_USERS_BACK, "FE-2")
            # the bound: the last heartbeat up to one interval before the failure, the
            # detection time, and the decision at the next tick, up to one interval later
            beat = d.topology.settings.heartbeat_seconds
            step.targets.append(Target(f"peers declare {victim} dead", step.detect,
                                       detection + 2 * beat, "s", "FE-3"))
            await d.hold(SETTLE, "load on the surviving servers")
            await d.finish(step, rpo="FE-2")
        finally:
            if freeze:
                with contextlib.suppress(DrillError, OSError):
                    signal_server_action(d, victim, signal.SIGCONT)()
        step = d.step("repair", f"{'thaw (SIGCONT)' if freeze else 'restart'} {victim}; it "
                                f"rejoins the pool")
        if freeze:
            d.mark_fault()
            d.event("action", f"{victim} thawed")
        else:
            await d.fault(f"trimaran server start {victim}", start(d, [victim]))
        step.recover = await d.wait(f"pool {pool} counts {victim} alive again",
                                    lambda: peers_see(d, pool, victim, dead=False), WAIT)
        step.targets.append(Target(f"{victim} back in the pool", step.recover, None))
        await d.finish(step, rpo="FE-2")
    return run


def plan_director(ops: Deployment, state: DeploymentState, opts: Options) -> Plan:
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


async def run_director_kill(d: Drill, plan: Plan, opts: Options) -> None:
    pool, victim = plan["pool"], plan["server"]
    servers = d.servers_of(pool)
    ordered = sorted(servers, key=lambda s: s.name != victim)   # the victim first
    addresses = tuple(Address("tcp", s.address, s.sip_port) for s in ordered)
    prober = _SignInProbe(d, addresses)
    step = d.step("fault", f"kill Director {victim}; new sign-ins go through the pool's "
                           f"other Directors, signed-in users are not affected")
    await prober.start()
    try:
        await d.fault(f"kill {victim}", signal_server_action(d, victim, signal.SIGKILL))
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
    await d.fault(f"trimaran server start {victim}", start(d, [victim]))
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
