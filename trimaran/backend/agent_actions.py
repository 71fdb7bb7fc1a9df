"""The mirroring agent's actions: one function per `Action` of the decision core.

Each takes the agent, the decision and the observation it was made from, carries the
action out with `PgInstance`, the agent's `PgProbe` and the witness's HTTP API, and
returns what it did — or raises `ActionFailed` (or an HTTP error) when it could not.
The order inside each action is the safety argument of `trimaran.backend.decide`:
durable state first, then the instance (a node never runs read-write in a term it has
not recorded); synchronous replication required before a promotion completes; the
witness asked before exposure.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from trimaran.backend.agent_io import HTTP_ERRORS, ActionFailed, DurableState, checkpoint
from trimaran.backend.decide import Action, Decision, Observation, Role, sync_names_for
from trimaran.backend.instance import BackendError

if TYPE_CHECKING:
    from trimaran.backend.agent import Agent

log = logging.getLogger("trimaran.backend.agent")

Act = Callable[["Agent", Decision, Observation], Awaitable[str]]


async def start(agent: Agent, d: Decision, obs: Observation) -> str:
    """Start the instance (as a standby when its data directory is set up as one)."""
    await asyncio.to_thread(agent.config.instance.start)
    return f"instance started ({'standby' if obs.role is Role.MIRROR else 'principal'})"


async def adopt(agent: Agent, d: Decision, obs: Observation) -> str:
    """Record the higher term seen elsewhere, with its principal."""
    assert d.principal is not None
    role = Role.PRINCIPAL if d.principal == agent.config.node else Role.MIRROR
    agent.save(DurableState(d.term, role, d.principal))
    agent.memory.was_synchronous = False
    return f"term {d.term} adopted, principal {d.principal}, this node {role.value}"


async def elect(agent: Agent, d: Decision, obs: Observation) -> str:
    """Get the witness's vote for term T+1, record it, promote the instance."""
    await vote(agent, d.term, candidate=agent.config.node, synchronous=obs.was_synchronous)
    agent.save(DurableState(d.term, Role.PRINCIPAL, agent.config.node))
    await promote_instance(agent, exposed=False)
    return f"vote granted: principal in term {d.term}"


async def force_promote(agent: Agent, d: Decision, obs: Observation) -> str:
    """The admin's --force: promote at T+1 without the old principal (the
    witness is asked when it answers); the new principal runs exposed."""
    try:
        await vote(agent, d.term, candidate=agent.config.node,
                   synchronous=obs.was_synchronous, force=True)
    except HTTP_ERRORS as exc:
        log.warning("agent %s: forced failover without the witness: %s",
                    agent.config.node, exc)
    agent.save(DurableState(d.term, Role.PRINCIPAL, agent.config.node, exposed=True,
                            forced=True))
    await promote_instance(agent, exposed=True)
    return f"forced: principal in term {d.term}, running exposed (data loss possible)"


async def promote(agent: Agent, d: Decision, obs: Observation) -> str:
    """Finish a promotion: the term is recorded, the instance is still a standby."""
    await promote_instance(agent, exposed=agent.state.exposed)
    return f"instance promoted in term {agent.state.term}"


async def fence(agent: Agent, d: Decision, obs: Observation) -> str:
    """Make the instance refuse writes (stop it when SQL cannot reach it)."""
    require = None
    if agent.state.role is Role.PRINCIPAL and agent.state.exposed:
        require = sync_names_for(agent.config.partner)
    try:
        terminated = await agent.probe.fence(require=require)
    except ActionFailed as exc:
        log.warning("agent %s: cannot fence by SQL (%s): stopping the instance",
                    agent.config.node, exc)
        await asyncio.to_thread(stop_instance, agent)
        return "instance stopped (it could not be made read-only)"
    if require is not None:
        agent.memory.restore_lsn = await agent.probe.current_lsn()
    return f"read-only, {terminated} client session(s) terminated"


async def unfence(agent: Agent, d: Decision, obs: Observation) -> str:
    """Accept writes again."""
    await agent.probe.unfence()
    return "accepting writes"


async def rejoin(agent: Agent, d: Decision, obs: Observation) -> str:
    """Stop, rewind from the principal (re-clone when that fails), start as its
    standby."""
    cfg, inst = agent.config, agent.config.instance
    host, port = cfg.partner_host, cfg.partner_port
    await agent.probe.close()
    await asyncio.to_thread(stop_instance, agent)
    inst.drop_standby_signal()
    await checkpoint(host, port)
    try:
        out = await asyncio.to_thread(inst.rewind_from, host, port)
        how = "no rewind needed" if "no rewind required" in out else "rewound"
    except BackendError as exc:
        log.warning("agent %s: pg_rewind failed, cloning again: %s", cfg.node, exc)
        await asyncio.to_thread(inst.reclone_from, host, port, application_name=cfg.node)
        how = "re-cloned"
    await asyncio.to_thread(inst.configure_standby, host, port, application_name=cfg.node)
    await asyncio.to_thread(inst.set_auto_conf, {"default_transaction_read_only": None})
    await asyncio.to_thread(inst.start)
    agent.memory.was_synchronous = False
    return f"{how} from {cfg.partner}; started as its standby"


async def require_sync(agent: Agent, d: Decision, obs: Observation) -> str:
    """Make commits wait for the partner."""
    await agent.probe.require_standby(sync_names_for(agent.config.partner))
    return f"commits wait for {agent.config.partner}"


async def expose(agent: Agent, d: Decision, obs: Observation) -> str:
    """With the witness's agreement, stop waiting for the mirror."""
    await exposure(agent, True)
    agent.save(replace(agent.state, exposed=True))
    await agent.probe.require_standby("")
    return "running exposed: commits no longer wait for the mirror"


async def restore_sync(agent: Agent, d: Decision, obs: Observation) -> str:
    """Exposed, mirror caught up: make commits wait for it again."""
    await agent.probe.require_standby(sync_names_for(agent.config.partner))
    agent.memory.restore_lsn = await agent.probe.current_lsn()
    agent.memory.sync_lost_at = agent.clock()
    return (f"commits wait for {agent.config.partner} again (from LSN "
            f"{agent.memory.restore_lsn})")


async def end_exposure(agent: Agent, d: Decision, obs: Observation) -> str:
    """Mirror synchronous since the restore: tell the witness, clear the flag."""
    await exposure(agent, False)
    agent.save(replace(agent.state, exposed=False))
    agent.memory.restore_lsn = None
    return "mirror synchronous: exposure ended"


async def handover(agent: Agent, d: Decision, obs: Observation) -> str:
    """Planned failover, mirror caught up: term T+1 to the partner (through the
    witness), recorded, then a clean stop (the mirror receives every WAL record)."""
    cfg = agent.config
    inst = await agent.probe.observe(cfg.partner)
    if inst.standby_lag != 0:
        raise ActionFailed(f"the mirror is behind again ({inst.standby_lag} bytes)")
    try:
        await vote(agent, d.term, candidate=cfg.partner, synchronous=True,
                   requested_by=cfg.node)
    except HTTP_ERRORS as exc:
        log.warning("agent %s: witness unreachable, handing over with the partner "
                    "alone: %s", cfg.node, exc)
    agent.save(DurableState(d.term, Role.MIRROR, cfg.partner))
    await agent.probe.close()
    await asyncio.to_thread(stop_instance, agent)
    return f"term {d.term} handed to {cfg.partner}; instance stopped cleanly"


async def abort(agent: Agent, d: Decision, obs: Observation) -> str:
    """Give up the manual failover (and accept writes again if fenced for it)."""
    agent.fail_manual(d.reason)
    if obs.role is Role.PRINCIPAL and obs.instance.primary and obs.instance.read_only:
        await agent.probe.unfence()
        return "manual failover abandoned; accepting writes again"
    return "manual failover abandoned"


# --- helpers ----------------------------------------------------------------------------


async def vote(agent: Agent, term: int, *, candidate: str, synchronous: bool,
               requested_by: str | None = None, force: bool = False) -> None:
    """Ask the witness for a vote (raises `ActionFailed` when refused, one of
    `HTTP_ERRORS` when unreachable); nothing without a witness."""
    url = agent.config.witness_url
    if url is None:
        if requested_by is None and not force:
            raise ActionFailed("no witness: no automatic failover")
        return
    body: dict[str, Any] = {"candidate": candidate, "term": term,
                            "synchronous": synchronous, "force": force}
    if requested_by is not None:
        body["requested_by"] = requested_by
    status, data = await agent.http.post(f"{url}/backends/{agent.config.backend}/vote",
                                         body)
    if status != 200:
        raise ActionFailed(f"the witness refused the vote: {data.get('error')}")


async def exposure(agent: Agent, exposed: bool) -> None:
    """Tell the witness (if any) that the principal runs exposed or no longer does;
    `ActionFailed` when it refuses."""
    url = agent.config.witness_url
    if url is None:
        return
    status, data = await agent.http.post(
        f"{url}/backends/{agent.config.backend}/exposed",
        {"agent": agent.config.node, "term": agent.state.term, "exposed": exposed})
    if status != 200:
        raise ActionFailed(f"the witness refused: {data.get('error')}")


async def promote_instance(agent: Agent, *, exposed: bool) -> None:
    """Promote the standby: first make commits wait for the partner (or nobody, when
    exposed) and lift any fence, so the new principal never acknowledges a write
    its mirror may lack; then a checkpoint, so the partner can rewind from it."""
    names = "" if exposed else sync_names_for(agent.config.partner)
    await agent.probe.require_standby(names)
    await agent.probe.execute("ALTER SYSTEM RESET default_transaction_read_only")
    await asyncio.to_thread(agent.config.instance.promote)
    await agent.probe.reload()
    inst = agent.config.instance
    await checkpoint(inst.host, inst.port)
    agent.memory.sync_lost_at = agent.clock()


def stop_instance(agent: Agent) -> None:
    """Stop the instance (fast shutdown: the mirror receives all WAL first); kill
    it when that fails."""
    try:
        agent.config.instance.stop(mode="fast", timeout=10)
    except BackendError as exc:
        log.warning("agent %s: stop failed (%s): killing the instance",
                    agent.config.node, exc)
        agent.config.instance.kill()


ACTIONS: dict[Action, Act] = {
    Action.START: start,
    Action.ADOPT: adopt,
    Action.ELECT: elect,
    Action.FORCE_PROMOTE: force_promote,
    Action.PROMOTE: promote,
    Action.FENCE: fence,
    Action.UNFENCE: unfence,
    Action.REJOIN: rejoin,
    Action.REQUIRE_SYNC: require_sync,
    Action.EXPOSE: expose,
    Action.RESTORE_SYNC: restore_sync,
    Action.END_EXPOSURE: end_exposure,
    Action.HANDOVER: handover,
    Action.ABORT: abort,
}
