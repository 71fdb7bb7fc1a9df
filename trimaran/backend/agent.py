"""The mirroring agent beside each PostgreSQL instance (SPEC BE-1..BE-7).

Theory of operation: a reconcile loop (Patroni's shape). Every `tick` seconds the
agent *observes* — its own instance (`PgProbe`: up? a standby? fenced? the partner's
row of ``pg_stat_replication``), the partner's agent (``GET /state``) and the witness
(``POST …/heartbeat``, which also reports this node to it) — then asks
`trimaran.backend.decide.decide` for one `Decision`, records it (logged when it
changes; the last one and a short history are on ``GET /state``) and *acts*: one
function per `Action` in `trimaran.backend.agent_actions.ACTIONS`. After an action
that changed something the next tick follows at once.

Durable state: ``{"version": 1, "backend", "node", "term", "role", "principal",
"exposed", "updated_at"}`` in `AgentConfig.state_path` (`trimaran.backend.durable`:
fsync + atomic rename), written *before* the instance is changed to match: a node is
principal in a term only once that is on disk, and it never starts or promotes its
instance read-write otherwise. A new agent starts in term 1 with its role at
creation.

Fencing (principal without quorum, or a node that is no longer principal): ``ALTER
SYSTEM SET default_transaction_read_only = on`` + reload, then every client session
is terminated. New sessions are read-only, so a client with
``target_session_attrs=read-write`` (the Front Ends' store) skips the instance and a
plain ``BEGIN``'s writes are refused (SQLSTATE 25006); reads keep working, the mirror
keeps streaming (a planned failover needs it) and the state survives a restart
(``postgresql.auto.conf``). Terminating, never cancelling: a commit waiting for the
mirror that is cancelled reports success. An exposed principal that fences also
requires its mirror again, so even a session that overrides the read-only default
cannot get a commit acknowledged. When the instance cannot be fenced by SQL it is
stopped. (A client that sets both ``transaction_read_only`` and ``synchronous_commit``
itself can still write on a fenced principal; nothing in Trimaran does.)

Manual failover (`failover`, ``POST /failover``): ``to`` is ``"primary"`` or
``"mirror"`` (the node with that role at creation) or a node name. A planned failover
is run by the current principal (fence, wait for the mirror to catch up, hand term
T+1 to it through the witness, stop cleanly, rejoin as mirror); a forced one by the
target mirror (promote at T+1 without the old principal; may lose data). Either agent
accepts the request and forwards it to its partner when the partner must run it. The
call returns once the target is principal (or the attempt failed).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from trimaran.backend.agent_actions import ACTIONS
from trimaran.backend.agent_api import AgentApi
from trimaran.backend.agent_io import (
    HTTP_ERRORS,
    ActionFailed,
    DurableState,
    Http,
    PgProbe,
    StateFile,
    partner_view,
    witness_view,
)
from trimaran.backend.decide import (
    Decision,
    Instance,
    ManualKind,
    ManualRequest,
    Observation,
    PartnerView,
    Policy,
    Role,
    Timeouts,
    WitnessView,
    decide,
    sync_names_for,
)
from trimaran.backend.instance import BackendError, PgInstance
from trimaran.backend.metrics import AgentMetrics

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ConfigError(ValueError):
    """The agent's configuration is inconsistent; lists every violation."""

    def __init__(self, violations: list[str]) -> None:
        super().__init__("; ".join(violations))
        self.violations = violations


@dataclass(frozen=True)
class AgentConfig:
    """What one agent needs. Times are seconds.

    `node` is this partner's name — also its instance's ``application_name`` as a
    standby; `partner_host`/`partner_port` are the partner's PostgreSQL,
    `partner_url` its agent's admin API; `host`/`port` this agent's admin API (port 0:
    any). Without `witness_url` there is no automatic failover (BE-4). Keep
    ``timeouts.unreachable_after + tick + request_timeout`` below the witness's
    ``principal_timeout``: a principal cut off then fences before a vote can go to
    the mirror.
    """

    backend: str
    node: str
    initial_role: Role
    instance: PgInstance
    partner: str
    partner_host: str
    partner_port: int
    partner_url: str
    state_path: Path
    host: str = "127.0.0.1"
    port: int = 0
    witness_url: str | None = None
    policy: Policy = Policy.AVAILABLE
    tick: float = 0.5
    timeouts: Timeouts = field(default_factory=Timeouts)
    request_timeout: float = 1.0
    failover_timeout: float = 30.0

    def __post_init__(self) -> None:
        problems = [f"{key}: {getattr(self, key)!r} must be letters, digits, '_', '.', '-'"
                    for key in ("backend", "node", "partner")
                    if not _NAME.match(str(getattr(self, key)))]
        if self.node == self.partner:
            problems.append("partner: must differ from node")
        for key in ("partner_url", "witness_url"):
            url = getattr(self, key)
            if url is not None and not url.startswith(("http://", "https://")):
                problems.append(f"{key}: {url!r} is not an http(s) URL")
        if not 0 < self.partner_port < 65536 or not 0 <= self.port < 65536:
            problems.append("partner_port/port: out of range")
        t = self.timeouts
        for key, value in (("tick", self.tick), ("request_timeout", self.request_timeout),
                           ("failover_timeout", self.failover_timeout),
                           ("timeouts.unreachable_after", t.unreachable_after),
                           ("timeouts.mirror_lost_after", t.mirror_lost_after),
                           ("timeouts.restart_grace", t.restart_grace),
                           ("timeouts.stream_lost_after", t.stream_lost_after)):
            if value <= 0:
                problems.append(f"{key}: must be positive")
        if self.request_timeout >= t.unreachable_after:
            problems.append("request_timeout: must be below timeouts.unreachable_after")
        if problems:
            raise ConfigError(problems)


@dataclass(frozen=True, slots=True)
class ActionResult:
    """How the last action went (`at`: unix time)."""

    action: str
    ok: bool
    detail: str
    at: float


@dataclass(slots=True)
class _Pending:
    request: ManualRequest
    future: asyncio.Future[tuple[int, dict[str, Any]]]
    start_term: int


@dataclass(slots=True)
class Memory:
    """What the agent remembers between ticks (not durable). Times are monotonic."""

    observation: Observation | None = None
    partner_view: PartnerView | None = None
    partner_seen_at: float | None = None
    witness_view: WitnessView | None = None
    witness_seen_at: float | None = None
    was_synchronous: bool = False        # mirror: per the serving principal's last word
    sync_lost_at: float | None = None    # principal: mirror not synchronous since
    stream_lost_at: float | None = None  # mirror: not streaming since
    crashed_at: float | None = None      # principal: instance seen going down at
    was_up: bool = False                 # the instance ran at the last tick
    restore_lsn: int | None = None       # exposed: LSN when the mirror was required again


class Agent:
    """One agent: `start` serves its admin API and runs the loop; `close` stops both
    (never the instance). `clock` is monotonic seconds, `wall_clock` unix time."""

    def __init__(self, config: AgentConfig, *, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.wall = wall_clock
        self._file = StateFile(config.state_path, config.backend, config.node,
                               wall_clock=wall_clock)
        self.probe = PgProbe(config.instance, timeout=config.request_timeout)
        self.http = Http(config.request_timeout)
        self._state = self._load()
        self.last_decision: Decision | None = None
        self.last_decision_at: float | None = None        # unix time
        self.last_action: ActionResult | None = None
        self.history: collections.deque[dict[str, Any]] = collections.deque(maxlen=50)
        self.memory = Memory()
        self._pending: _Pending | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._api: AgentApi | None = None
        self.metrics = AgentMetrics(self)

    # --- lifecycle ----------------------------------------------------------------------

    @property
    def state(self) -> DurableState:
        """The durable state (term, role, principal, exposed)."""
        return self._state

    @property
    def url(self) -> str:
        """The admin API's base URL while serving."""
        if self._api is None or self._api.address is None:
            raise RuntimeError("the agent is not serving")
        host, port = self._api.address
        return f"http://{host}:{port}"

    async def start(self) -> tuple[str, int]:
        """Serve the admin API and start the loop; the API's bound address."""
        self._api = AgentApi(self)
        address: tuple[str, int] = await self._api.start(self.config.host, self.config.port)
        self._task = asyncio.create_task(self._run(), name=f"agent-{self.config.node}")
        log.info("agent %s/%s: started as %s in term %d (admin API on %s:%d)",
                 self.config.backend, self.config.node, self._state.role.value,
                 self._state.term, *address)
        return address

    async def close(self) -> None:
        """Stop the loop and the API, close connections; idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._pending is not None and not self._pending.future.done():
            self._pending.future.set_result((503, {"error": "the agent is stopping"}))
        if self._api is not None:
            await self._api.close()
        await self.probe.close()
        await self.http.close()

    # --- durable state ------------------------------------------------------------------

    def _load(self) -> DurableState:
        cfg = self.config
        principal = cfg.node if cfg.initial_role is Role.PRINCIPAL else cfg.partner
        return self._file.load(DurableState(1, cfg.initial_role, principal))

    def save(self, state: DurableState) -> None:
        """Make `state` durable, then current (terms never go down)."""
        if state.term < self._state.term:
            raise ActionFailed(f"refusing to go back from term {self._state.term} to "
                               f"{state.term}")
        self._file.write(state)
        if state.role is not self._state.role:
            self.metrics.role_entered(state.role.value)
        self._state = state

    # --- the loop -----------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            started = self.clock()
            acted = False
            try:
                _, acted = await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:     # the loop must survive our own bugs; logged in full
                log.exception("agent %s: tick failed", self.config.node)
            pause = 0.02 if acted else max(0.0, self.config.tick - (self.clock() - started))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), pause)

    async def tick(self) -> tuple[Decision, bool]:
        """One reconcile step: observe, decide, act. The decision, and whether an action
        was carried out successfully."""
        obs = await self._observe()
        self._settle_manual(obs)
        now = self.clock()
        decision = decide(obs, now)
        self._record(decision)
        act = ACTIONS.get(decision.action)
        if act is None:
            return decision, False
        try:
            detail = await act(self, decision, obs)
        except (BackendError, *HTTP_ERRORS) as exc:
            self.last_action = ActionResult(decision.action.value, False, str(exc),
                                            self.wall())
            self.metrics.action(decision.action.value, ok=False)
            log.warning("agent %s: %s failed: %s", self.config.node, decision.action.value,
                        exc)
            return decision, False
        self.last_action = ActionResult(decision.action.value, True, detail, self.wall())
        self.metrics.action(decision.action.value, ok=True)
        log.warning("agent %s: %s done (term %d): %s", self.config.node,
                    decision.action.value, self._state.term, detail)
        return decision, True

    def _record(self, decision: Decision) -> None:
        previous = self.last_decision
        self.last_decision, self.last_decision_at = decision, self.wall()
        if previous is not None and (previous.action, previous.rule, previous.term) == \
                (decision.action, decision.rule, decision.term):
            log.debug("agent %s: %s", self.config.node, decision.reason)
            return
        self.history.append({"action": decision.action.value, "rule": decision.rule,
                             "term": decision.term, "reason": decision.reason,
                             "at": self.last_decision_at})
        log.info("agent %s/%s: role=%s term=%d decision=%s rule=%s: %s",
                 self.config.backend, self.config.node, self._state.role.value,
                 self._state.term, decision.action.value, decision.rule, decision.reason)

    # --- observing ----------------------------------------------------------------------

    async def _observe(self) -> Observation:
        cfg, state = self.config, self._state
        inst = await self.probe.observe(cfg.partner)
        now = self.clock()
        self._update_timers(inst, now)
        serving, synchronous = self._own_flags(inst)
        await asyncio.gather(self._poll_partner(), self._heartbeat(serving, synchronous))
        if state.forced and (self._fresh(self.memory.partner_seen_at)
                             or self._fresh(self.memory.witness_seen_at)):
            self.save(replace(state, forced=False))     # a quorum again: the admin steps back
            state = self._state
        p = self.memory.partner_view
        obs = Observation(
            node=cfg.node, partner=cfg.partner, role=state.role, term=state.term,
            principal=state.principal, exposed=state.exposed, forced=state.forced,
            policy=cfg.policy,
            instance=inst, witness_configured=cfg.witness_url is not None,
            partner_view=p, partner_seen_at=self.memory.partner_seen_at,
            witness_view=self.memory.witness_view, witness_seen_at=self.memory.witness_seen_at,
            was_synchronous=self.memory.was_synchronous, sync_lost_at=self.memory.sync_lost_at,
            stream_lost_at=self.memory.stream_lost_at, crashed_at=self.memory.crashed_at,
            restore_lsn=self.memory.restore_lsn,
            manual=self._pending.request if self._pending is not None else None,
            timeouts=cfg.timeouts)
        self.memory.observation = obs
        return obs

    def _update_timers(self, inst: Instance, now: float) -> None:
        state = self._state
        if inst.running:
            self.memory.crashed_at = None
        elif self.memory.was_up and state.role is Role.PRINCIPAL:
            self.memory.crashed_at = now
        self.memory.was_up = inst.running
        mirror_sync = (inst.sync_names == sync_names_for(self.config.partner)
                       and inst.standby_sync == "sync")
        if state.role is not Role.PRINCIPAL or not inst.primary or mirror_sync:
            self.memory.sync_lost_at = None
        elif self.memory.sync_lost_at is None:
            self.memory.sync_lost_at = now
        if state.role is not Role.MIRROR or not inst.standby or inst.streaming:
            self.memory.stream_lost_at = None
        elif self.memory.stream_lost_at is None:
            self.memory.stream_lost_at = now

    def _own_flags(self, inst: Instance) -> tuple[bool, bool]:
        """(serving, synchronous) as reported to the partner and the witness."""
        state = self._state
        if state.role is Role.PRINCIPAL:
            synchronous = (not state.exposed and inst.standby_sync == "sync"
                           and inst.sync_names == sync_names_for(self.config.partner))
            return inst.primary and not inst.read_only, inst.primary and synchronous
        return inst.standby and inst.streaming, self.memory.was_synchronous

    async def _poll_partner(self) -> None:
        mark = self.clock()
        try:
            status, data = await self.http.get(f"{self.config.partner_url}/state")
            if status != 200:
                raise ValueError(f"status {status}")
            view = partner_view(data)
        except HTTP_ERRORS as exc:
            log.debug("agent %s: partner unreachable: %s", self.config.node, exc)
            return
        self.memory.partner_view, self.memory.partner_seen_at = view, mark
        if view.role is Role.PRINCIPAL and view.serving and view.term == self._state.term:
            self.memory.was_synchronous = view.synchronous      # as of the principal's last word

    async def _heartbeat(self, serving: bool, synchronous: bool) -> None:
        url = self.config.witness_url
        if url is None:
            return
        state, mark = self._state, self.clock()
        body = {"agent": self.config.node, "role": state.role.value, "term": state.term,
                "serving": serving, "synchronous": synchronous, "exposed": state.exposed,
                "sees_partner": self._fresh(self.memory.partner_seen_at)}
        try:
            status, data = await self.http.post(
                f"{url}/backends/{self.config.backend}/heartbeat", body)
            if status not in (200, 409) or (status == 409 and "view" not in data):
                raise ValueError(f"status {status}: {data.get('error')}")
            view = witness_view(data.get("view", data), self.config.partner)
        except HTTP_ERRORS as exc:
            log.debug("agent %s: witness unreachable: %s", self.config.node, exc)
            return
        self.memory.witness_view, self.memory.witness_seen_at = view, mark

    def _fresh(self, seen_at: float | None) -> bool:
        return (seen_at is not None
                and self.clock() - seen_at < self.config.timeouts.unreachable_after)

    # --- manual failover ----------------------------------------------------------------

    def target_node(self, to: str) -> str:
        """The node meant by ``to`` ("primary", "mirror" or a node name)."""
        cfg = self.config
        if to in (cfg.node, cfg.partner):
            return to
        if to in ("primary", "principal", "mirror"):
            mine = "mirror" if cfg.initial_role is Role.MIRROR else "primary"
            return cfg.node if to.replace("principal", "primary") == mine else cfg.partner
        raise ValueError(f"to: 'primary', 'mirror', {cfg.node!r} or {cfg.partner!r}, "
                         f"not {to!r}")

    async def failover(self, to: str, *, force: bool = False,
                       forwarded: bool = False) -> tuple[int, dict[str, Any]]:
        """Make `to` principal (BE-4): (HTTP status, JSON body). See the module."""
        cfg, state = self.config, self._state
        try:
            target = self.target_node(to)
        except ValueError as exc:
            return 400, {"error": str(exc)}
        obs = self.memory.observation
        if state.principal == target and (target != cfg.node or (
                obs is not None and obs.instance.primary)):
            return 200, {"result": "nothing to do", "principal": target, "term": state.term,
                         "data_loss_possible": False}
        runs_here = ((force and state.role is Role.MIRROR and target == cfg.node)
                     or (not force and state.role is Role.PRINCIPAL and target == cfg.partner))
        if not runs_here:
            return await self._forward(target, force, forwarded)
        if self._pending is not None:
            return 409, {"error": "a failover is in progress already"}
        kind = ManualKind.FORCED if force else ManualKind.PLANNED
        request = ManualRequest(kind, target, self.clock() + cfg.failover_timeout)
        future: asyncio.Future[tuple[int, dict[str, Any]]] = \
            asyncio.get_running_loop().create_future()
        pending = self._pending = _Pending(request, future, state.term)
        log.warning("agent %s: %s failover to %s requested", cfg.node, kind.value, target)
        self._wake.set()
        try:
            return await asyncio.wait_for(asyncio.shield(future), cfg.failover_timeout + 5)
        except TimeoutError:
            return 504, {"error": "the failover did not finish in time"}
        finally:
            if self._pending is pending:
                self._pending = None

    async def _forward(self, target: str, force: bool,
                       forwarded: bool) -> tuple[int, dict[str, Any]]:
        cfg = self.config
        if forwarded:
            return 409, {"error": f"{cfg.node} ({self._state.role.value}) cannot carry out "
                                  f"this failover to {target}"}
        try:
            return await self.http.post(
                f"{cfg.partner_url}/failover",
                {"to": target, "force": force, "forwarded": True},
                timeout=cfg.failover_timeout + 10)
        except HTTP_ERRORS as exc:
            hint = ("" if force else ": if the principal is lost, fail over with --force "
                    "(acknowledged writes may be lost)")
            return 409, {"error": f"the agent of {cfg.partner} is unreachable ({exc}){hint}"}

    def _settle_manual(self, obs: Observation) -> None:
        pending = self._pending
        if pending is None or pending.future.done():
            return
        p = obs.partner_view if self._fresh(obs.partner_seen_at) else None
        request = pending.request
        if request.kind is ManualKind.FORCED and obs.role is Role.PRINCIPAL \
                and obs.instance.primary:
            pending.future.set_result((200, {
                "result": "done", "principal": self.config.node, "term": obs.term,
                "data_loss_possible": True,
                "warning": "forced failover: writes acknowledged by the old principal but "
                           "not received by this mirror are lost"}))
        elif (request.kind is ManualKind.PLANNED and p is not None
              and p.role is Role.PRINCIPAL and p.term > pending.start_term and p.serving):
            pending.future.set_result((200, {
                "result": "done", "principal": request.target, "term": p.term,
                "data_loss_possible": False}))

    def fail_manual(self, reason: str) -> None:
        pending = self._pending
        if pending is not None and not pending.future.done():
            pending.future.set_result((409, {"error": reason}))

    # --- status -------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The JSON-able snapshot served by ``GET /state`` (see `agent_api`)."""
        cfg, state, obs = self.config, self._state, self.memory.observation
        inst = obs.instance if obs is not None else Instance(running=False)
        serving, synchronous = self._own_flags(inst)
        now = self.clock()
        w, pv = self.memory.witness_view, self.memory.partner_view

        def age(at: float | None) -> float | None:
            return None if at is None else round(now - at, 3)

        d = self.last_decision
        return {
            "backend": cfg.backend, "node": cfg.node, "partner": cfg.partner,
            "role": state.role.value, "term": state.term, "principal": state.principal,
            "exposed": state.exposed, "forced": state.forced, "policy": cfg.policy.value,
            "serving": serving,
            "synchronous": synchronous,
            "instance": {
                "running": inst.running, "reachable": inst.reachable,
                "in_recovery": inst.in_recovery, "read_only": inst.read_only,
                "streaming": inst.streaming, "sync_names": inst.sync_names,
                "current_lsn": inst.current_lsn, "receive_lsn": self.probe.receive_lsn,
                "replay_lsn": self.probe.replay_lsn,
                "standby": {"state": inst.standby_state, "sync_state": inst.standby_sync,
                            "flush_lsn": inst.standby_flush_lsn,
                            "lag_bytes": inst.standby_lag}},
            "partner_contact_age": age(self.memory.partner_seen_at),
            "partner_view": None if pv is None else {
                "role": pv.role.value, "term": pv.term, "serving": pv.serving,
                "synchronous": pv.synchronous, "exposed": pv.exposed},
            "witness": {"configured": cfg.witness_url is not None,
                        "contact_age": age(self.memory.witness_seen_at),
                        "term": w.term if w else None, "principal": w.principal if w else None,
                        "exposed": w.exposed if w else None},
            "decision": None if d is None else {
                "action": d.action.value, "reason": d.reason, "term": d.term, "rule": d.rule,
                "at": self.last_decision_at},
            "last_action": None if self.last_action is None else {
                "action": self.last_action.action, "ok": self.last_action.ok,
                "detail": self.last_action.detail, "at": self.last_action.at},
            "manual": None if self._pending is None else {
                "kind": self._pending.request.kind.value,
                "target": self._pending.request.target},
            "recent": list(self.history)[-10:],
        }

async def run_agent(config: AgentConfig, *, stop: asyncio.Event | None = None) -> None:
    """Run an agent until `stop` is set, SIGTERM or SIGINT (the body of the agent's
    process)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    agent = Agent(config)
    await agent.start()
    try:
        await stop.wait()
    finally:
        await agent.close()
