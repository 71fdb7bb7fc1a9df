"""What every scenario shares: the SPEC targets, the operator's choices, the shape of
a scenario, and the small actions and checks scenarios are made of."""

from __future__ import annotations

import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from trimaran.deploy.dr import Deployment
from trimaran.deploy.rundir import DeploymentState
from trimaran.deploy.supervisor import (
    pid_alive,
    signal_server,
    start_server,
    wait_exit,
    wait_healthy,
)
from trimaran.drill.report import Step, Target
from trimaran.drill.runner import Drill, DrillError, percentile

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


def pick_pool(ops: Deployment, wanted: str | None, fits: Callable[[str], bool],
               why: str) -> str:
    pools = [p for p in ops.frontend_pools() if fits(p)]
    if wanted is not None:
        if wanted not in ops.frontend_pools():
            raise DrillError(f"no Front End pool named {wanted!r} (pools: "
                             f"{', '.join(ops.frontend_pools())})")
        if wanted not in pools:
            raise DrillError(f"pool {wanted} cannot run this drill: {why}")
        return wanted
    if not pools:
        raise DrillError(f"no Front End pool can run this drill: {why}")
    return pools[0]


async def peers_see(d: Drill, pool: str, server: str, *, dead: bool) -> bool:
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


async def declared_dead_at(d: Drill, pool: str, server: str) -> float | None:
    """Seconds from the step's fault to the last peer's own "declare-dead" decision on
    `server` (the decision's time as the peer logged it, not when we polled it); None
    when a peer has no such decision."""
    fault_wall = time.time() - (time.monotonic() - d.fault_time)
    latest: float | None = None
    for peer in d.servers_of(pool):
        if peer.name == server:
            continue
        status = await d.status(peer)
        if status is None:
            continue
        times = [float(x["at"]) for x in status.get("decisions") or []
                 if x.get("action") == "declare-dead" and x.get("server") == server
                 and float(x.get("at", 0)) >= fault_wall]
        if not times:
            return None
        latest = max(latest or 0.0, min(times))
    return None if latest is None else round(latest - fault_wall, 3)


def signal_server_action(d: Drill, name: str, sig: signal.Signals) -> Callable[[], None]:
    def action() -> None:
        state = d.run.load_state()
        server = state.servers[name]
        if not signal_server(server, sig):
            raise DrillError(f"server {name} is not running")
        if sig is signal.SIGKILL:
            wait_exit(server, 5.0)
    return action


def start(d: Drill, names: list[str]) -> Callable[[], None]:
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


def busiest(d: Drill, pool: str) -> str:
    servers = d.servers_of(pool)
    return max(servers, key=lambda s: len(d.load.on_hosts([s.address]))).name


def users_back_targets(d: Drill, step: Step, affected: list[str], hosts: list[str],
                        limit: float, spec: str) -> None:
    per_user = d.per_user_rto(affected, hosts)
    step.targets.append(Target(f"{len(affected)} affected users registered again, p99",
                               percentile(per_user, 99) if len(per_user) == len(affected)
                               else None, limit, "s", spec))
    step.not_recovered = [n for n in affected if d.load.server_of(n) not in hosts]
