"""Back End failures: the principal killed, or cut off the network (SPEC BE-2, BE-3,
BE-6)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import aiohttp

from trimaran.aio import cancel
from trimaran.client.writes import Ack
from trimaran.client.xcap import XcapClient, XcapError
from trimaran.deploy.database import agent_url, instance
from trimaran.deploy.dr import Deployment
from trimaran.deploy.rundir import DatabaseState, DeploymentState
from trimaran.deploy.sites import chain_name, cut, netfilter_problem, uncut
from trimaran.drill.report import Target
from trimaran.drill.runner import Drill, DrillError
from trimaran.drill.scenarios.common import (
    BE2_WRITES_BACK,
    SETTLE,
    WAIT,
    Options,
    Plan,
    pick_pool,
)


def _mirrored(ops: Deployment, pool: str) -> bool:
    spec = ops.resolver.pool(pool)
    backend = spec.backend
    return backend is not None and backend.mirror is not None and backend.witness is not None


def plan_backend(ops: Deployment, state: DeploymentState, opts: Options) -> Plan:
    pool = pick_pool(ops, opts.pool, lambda p: _mirrored(ops, p),
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


def backend_failure(partition: bool) -> Callable[[Drill, Plan, Options], Awaitable[None]]:
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
            started, sent = time.monotonic(), time.time()
            try:
                await client.put_meeting(meeting, subject="write probe")
            except (XcapError, OSError, TimeoutError, aiohttp.ClientError):
                index += 1
            else:
                self.acks.append(started)
                self.d.load.writers.stats.acked.append(
                    Ack(aor, "meeting", meeting, time.time(), sent))
            await asyncio.sleep(0.1)


def plan_backend_partition(ops: Deployment, state: DeploymentState, opts: Options) -> Plan:
    problem = netfilter_problem()
    if problem is not None:
        raise DrillError(problem)
    return plan_backend(ops, state, opts)
