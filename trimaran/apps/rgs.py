"""Response Groups (SPEC APP-3, APP-4): workflows, queues and agent groups, run by the
application server of the pool that serves the workflow's owner pool now.

Theory of operation.

A call to a workflow's number reaches us from a Front End as an INVITE with a claim of
kind ``workflow`` whose target is the number (leg A, answered by us). The workflow is
open, closed or on holiday (`trimaran.apps.hours`, from the wall clock); closed and
holiday calls get the workflow's `closed_action` / `holiday_action`. An open call
hears the welcome announcement (early media, when configured), then waits in the
workflow's queue with leg A unanswered: 182 Queued while waiting, 180 while an agent
is alerted. A call that would make the queue hold more than `overflow_calls` calls
gets the queue's `overflow_action`; one that waited `timeout_seconds` its
`timeout_action` (`trimaran.apps.routing_methods` decides who is offered the call and
when it gives up).

Offering a call to agents (and forwarding it) sends each an INVITE with the caller's
SDP through the local Front End (`AppContext.user_invite`), which rings the agent
wherever it is signed in, on any server of the pool or of the pool serving it. The
first 2xx answers leg A with the agent's SDP; the other offers are cancelled (a late
2xx is ACKed and hung up). From then on we relay between the two dialogs (BYE, re-
INVITE, UPDATE, INFO); the agent is busy until one side hangs up.

A formal agent signs in or out with a MESSAGE to ``sip:rgs-agent+GROUP@DOMAIN`` whose
body is ``sign-in``, ``sign-out`` (or ``status``), which reaches us as a claim of kind
``agent`` (target: the group; sender: the agent): 200 with the state (``signed-in`` or
``signed-out``) in the body, 403 for someone not an agent of the group.

Call actions: disconnect answers leg A with a failure (480 closed, holiday or timed
out; 603 overflow) after the announcement if any; forward and voicemail ring the
target (a URI, or a number the Front End routes like a dialled one); queue sends the
call to another queue (at most `MAX_QUEUE_HOPS` times, against loops).

Everything is in memory: after a pool failover the backup pool's application server
runs the workflows (the configuration is in the CMS, which the Backup Service copies),
with no call and no sign-in of the failed pool (APP-4: formal agents sign in again).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from trimaran.apps.audio import AudioError, read_wav
from trimaran.apps.hours import Openness, decide
from trimaran.apps.model import NUMBER_RE, Action, CallAction, Workflow
from trimaran.apps.rgs_bridges import Bridge, Bridges, copy_headers, reply
from trimaran.apps.routing_methods import (
    AgentBook,
    CallRouting,
    TimedOut,
    Wait,
    overflows,
)
from trimaran.apps.rtp import RtpSender, answer_sdp, offer_address
from trimaran.apps.server import App, AppContext
from trimaran.net.endpoint import IncomingRequest
from trimaran.net.transport import Flow
from trimaran.sip.dialog import Dialog
from trimaran.sip.errors import SipParseError
from trimaran.sip.headers import Headers
from trimaran.sip.ids import new_tag
from trimaran.sip.message import Request, Response
from trimaran.sip.transaction import TransactionError, build_cancel
from trimaran.voice.model import aor_key
from trimaran.voice.trust import AppClaim

log = logging.getLogger(__name__)

SIGN_IN, SIGN_OUT, STATUS = "sign-in", "sign-out", "status"
MAX_QUEUE_HOPS = 4              # queue actions in a row before giving up (loops)
FORWARD_SECONDS = 60.0          # how long a forward target rings
QUEUE_STATS = ("offers", "answered", "timeouts", "overflows")


def target_uri(target: str, domain: str) -> str:
    """The URI to ring for a call action's target: a number (or a tel: URI) becomes a
    phone-number URI of the domain, routed by the Front End like a dialled number."""
    number = target[4:].partition(";")[0] if target.lower().startswith("tel:") else target
    if NUMBER_RE.match(number):
        return f"sip:{number}@{domain};user=phone"
    return target


@dataclass(eq=False)
class _Call:
    """A caller's call to a workflow (leg A), until it is answered or refused."""

    incoming: IncomingRequest
    caller: str
    workflow: Workflow
    tag: str
    gone: asyncio.Event = field(default_factory=asyncio.Event)   # the caller cancelled
    settled: bool = False           # leg A has its final answer
    provisional: int = 0            # the last provisional status sent on leg A

    @property
    def key(self) -> tuple[str, str]:
        """Call-ID and the caller's tag, as its CANCEL names it."""
        return self.incoming.request.call_id, self.incoming.request.from_.tag or ""


@dataclass(eq=False)
class _Offer:
    """An INVITE we sent to ring an agent (`agent`) or a forward target (None)."""

    agent: str | None
    request: Request
    future: asyncio.Future[Response] | None = None
    provisional: bool = False
    abandoned: bool = False         # not wanted any more: cancel it, hang up a late 2xx
    cancel_sent: bool = False


class ResponseGroups:
    """The Response Group service of one application server: its two applications
    (`workflows`, `agents`) share it."""

    def __init__(self, context: AppContext) -> None:
        self.context = context
        self.book = AgentBook()
        self.calls: dict[tuple[str, str], _Call] = {}
        self.bridges = Bridges(context, self._bridge_ended)
        self.waiting: Counter[str] = Counter()
        self.workflow_stats: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.queue_stats: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self._change = asyncio.Event()
        self.workflows = WorkflowApp(self)
        self.agents = AgentApp(self)

    # -- status ---------------------------------------------------------------------------
    def status(self) -> dict[str, object]:
        """Per workflow, queue and agent group: calls and agents now, counters."""
        config = self.context.apps_config()
        return {
            "workflows": {w.name: {"number": w.number, "queue": w.queue, "pool": w.pool,
                                   **self.workflow_stats[w.name]} for w in config.workflows},
            "queues": {q.name: {"waiting": self.waiting[q.name],
                                **{k: self.queue_stats[q.name][k] for k in QUEUE_STATS}}
                       for q in config.queues},
            "agent_groups": self.agent_status(),
            "calls_bridged": len(self.bridges),
        }

    def agent_status(self) -> dict[str, object]:
        """Per agent group: its routing method, who is signed in and who is busy."""
        return {g.name: {"formal": g.formal, "routing": g.routing.value,
                         "signed_in": list(self.book.signed_in(g)),
                         "busy": [a for a in g.agents if self.book.busy(a)]}
                for g in self.context.apps_config().agent_groups}

    def _changed(self) -> None:
        """An agent may have become available: waiting calls look again."""
        self._change.set()
        self._change = asyncio.Event()

    # -- agents signing in and out --------------------------------------------------------
    async def sign(self, incoming: IncomingRequest, claim: AppClaim) -> None:
        """A MESSAGE of an agent to its group: sign in, sign out, or ask."""
        request = incoming.request
        if request.method != "MESSAGE":
            reply(self.context, incoming, 405, "Send a MESSAGE: sign-in, sign-out or status")
            return
        try:
            group = self.context.apps_config().agent_group(claim.target)
        except KeyError:
            reply(self.context, incoming, 404, f"No agent group {claim.target}")
            return
        agent = next((a for a in group.agents if aor_key(a) == aor_key(claim.sender)), None)
        if agent is None:
            reply(self.context, incoming, 403, f"{claim.sender} is not an agent of {group.name}")
            return
        command = request.body.decode("utf-8", "replace").strip().lower()
        if command not in (SIGN_IN, SIGN_OUT, STATUS):
            reply(self.context, incoming, 400, "Say sign-in, sign-out or status")
            return
        if group.formal and command == SIGN_IN:
            self.book.sign_in(group.name, agent)
            self._changed()
        elif group.formal and command == SIGN_OUT:
            self.book.sign_out(group.name, agent)
        state = "signed-in" if self.book.is_in(group, agent) else "signed-out"
        log.info("agent %s of %s: %s -> %s", agent, group.name, command, state)
        reason = "OK" if group.formal else "Informal agents are always signed in"
        reply(self.context, incoming, 200, reason,
              headers=Headers([("Content-Type", "text/plain")]), body=state.encode())

    # -- a call to a workflow -------------------------------------------------------------
    async def call(self, incoming: IncomingRequest, claim: AppClaim) -> None:
        """A call to a workflow's number: from open/closed to an agent, or an action."""
        if incoming.request.method != "INVITE":
            reply(self.context, incoming, 405, "A Response Group takes calls only")
            return
        config = self.context.apps_config()
        workflow = next((w for w in config.workflows if w.number == claim.target), None)
        if workflow is None:
            reply(self.context, incoming, 404, f"No workflow has {claim.target}")
            return
        call = _Call(incoming, claim.sender, workflow, new_tag())
        self.calls[call.key] = call
        self.workflow_stats[workflow.name]["calls"] += 1
        try:
            await self._serve(call)
        finally:
            self.calls.pop(call.key, None)
        if not call.settled and not call.gone.is_set():
            log.error("workflow %s: call %s left unanswered; refusing it", workflow.name,
                      incoming.request.call_id)
            self._fail(call, 500, "Response Group failure")

    async def _serve(self, call: _Call) -> None:
        workflow = call.workflow
        try:
            decision = decide(workflow, self.context.wall_clock())
        except ValueError as exc:
            log.error("workflow %s: %s; taking calls as if open", workflow.name, exc)
        else:
            if decision.state is not Openness.OPEN:
                self.workflow_stats[workflow.name][decision.state.value] += 1
                action = workflow.holiday_action if decision.state is Openness.HOLIDAY \
                    else workflow.closed_action
                log.info("workflow %s: call %s %s: %s", workflow.name,
                         call.incoming.request.call_id, decision.reason, action.action)
                await self._act(call, action, 480, decision.reason, 0)
                return
        if workflow.welcome is not None:
            await self._announce(call, workflow.welcome)
        await self._enqueue(call, workflow.queue, 0)

    async def _enqueue(self, call: _Call, name: str, hops: int) -> None:
        """Wait in queue `name` for an agent, or take its overflow or timeout action."""
        if call.gone.is_set() or call.settled:
            return
        config = self.context.apps_config()
        try:
            queue = config.queue(name)
        except KeyError:
            self._fail(call, 500, f"Queue {name} is not configured")
            return
        stats = self.queue_stats[name]
        if overflows(queue, self.waiting[name]):
            stats["overflows"] += 1
            log.info("queue %s full (%d waiting): call %s overflows to %s", name,
                     self.waiting[name], call.incoming.request.call_id,
                     queue.overflow_action.action)
            await self._act(call, queue.overflow_action, 603, f"Queue {name} is full", hops)
            return
        groups = []
        for group_name in queue.agent_groups:
            try:
                groups.append(config.agent_group(group_name))
            except KeyError:
                log.warning("queue %s: agent group %s is not configured", name, group_name)
        self.waiting[name] += 1
        try:
            self._provisional(call, 182, "Queued")
            timed_out = await self._wait(call, CallRouting(queue, groups,
                                                           self.context.monotonic()))
        finally:
            self.waiting[name] -= 1
        if timed_out:
            stats["timeouts"] += 1
            log.info("queue %s: call %s timed out: %s", name, call.incoming.request.call_id,
                     queue.timeout_action.action)
            await self._act(call, queue.timeout_action, 480,
                            f"No agent of queue {name} answered in time", hops)

    async def _wait(self, call: _Call, routing: CallRouting) -> bool:
        """Offer the call until an agent answers (False), the caller cancels (False) or
        the queue's timeout (True)."""
        stats = self.queue_stats[routing.queue.name]
        while not call.gone.is_set() and not call.settled:
            change = self._change
            step = routing.next(self.book, self.context.monotonic())
            if isinstance(step, TimedOut):
                return True
            if isinstance(step, Wait):
                if call.provisional != 182:
                    self._provisional(call, 182, "Queued")
                await self._until(call, step.until, change)
                continue
            stats["offers"] += len(step.agents)
            log.info("queue %s: call %s offered to %s (%s)", routing.queue.name,
                     call.incoming.request.call_id, ", ".join(step.agents), step.group)
            if await self._ring(call, [(a, a) for a in step.agents], step.until):
                stats["answered"] += 1
                return False
        return False

    async def _until(self, call: _Call, until: float | None, change: asyncio.Event) -> None:
        """Sleep until `until`, an agent change, or the caller's CANCEL."""
        waits = [asyncio.ensure_future(change.wait()), asyncio.ensure_future(call.gone.wait())]
        timeout = None if until is None else max(0.0, until - self.context.monotonic())
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()

    # -- call actions ---------------------------------------------------------------------
    async def _act(self, call: _Call, action: CallAction, status: int, reason: str,
                   hops: int) -> None:
        """Disconnect, forward, voicemail or another queue (after the announcement)."""
        if call.gone.is_set() or call.settled:
            return
        if action.announcement is not None:
            await self._announce(call, action.announcement)
            if call.gone.is_set():
                return
        if action.action is Action.DISCONNECT or action.target is None:
            self._fail(call, status, reason)
        elif action.action is Action.QUEUE:
            if hops >= MAX_QUEUE_HOPS:
                self._fail(call, 480, f"{reason}; sent on to queues {hops} times: refused")
            else:
                await self._enqueue(call, action.target, hops + 1)
        else:
            await self._forward(call, action.target, reason)

    async def _forward(self, call: _Call, target: str, why: str) -> None:
        uri = target_uri(target, self.context.config.domain)
        stats = self.workflow_stats[call.workflow.name]
        stats["forwarded"] += 1
        log.info("workflow %s: call %s forwarded to %s (%s)", call.workflow.name,
                 call.incoming.request.call_id, uri, why)
        if await self._ring(call, [(None, uri)], self.context.monotonic() + FORWARD_SECONDS):
            stats["forwards_answered"] += 1
        elif not call.gone.is_set():
            self._fail(call, 480, f"{why}; {target} did not answer")

    async def _announce(self, call: _Call, name: str) -> None:
        """Play audio `name` to the caller as early media (183 with our SDP)."""
        data = self.context.audio(name)
        remote = offer_address(call.incoming.request.body)
        if data is None or remote is None:
            log.warning("announcement %s not played (%s)", name,
                        "no audio" if data is None else "no address in the caller's SDP")
            return
        try:
            audio = read_wav(data)
        except AudioError as exc:
            log.warning("announcement %s not played: %s", name, exc)
            return
        sender = RtpSender(self.context.config.host)
        try:
            port = await sender.open()
            self._provisional(call, 183, "Session Progress",
                              body=answer_sdp(self.context.config.host, port))
            await sender.play(audio, remote, stop=call.gone)
        finally:
            sender.close()

    # -- ringing agents and targets -------------------------------------------------------
    async def _ring(self, call: _Call, targets: list[tuple[str | None, str]],
                    until: float | None) -> bool:
        """Ring `targets` ((agent or None, URI)) at once until `until`: True when one
        answered and is bridged with the caller; the others are cancelled."""
        pending: dict[asyncio.Future[Any], _Offer] = {}
        for agent, uri in targets:
            offer = self._send(call, agent, uri)
            assert offer.future is not None
            pending[offer.future] = offer
        gone: asyncio.Future[Any] = asyncio.ensure_future(call.gone.wait())
        bridged = False
        try:
            while pending and not bridged:
                timeout = None if until is None else until - self.context.monotonic()
                if timeout is not None and timeout <= 0:
                    break
                done, _ = await asyncio.wait([*pending, gone], timeout=timeout,
                                             return_when=asyncio.FIRST_COMPLETED)
                if not done or gone in done:
                    break
                for future in done:
                    offer = pending.pop(future)
                    response: Response = future.result()
                    if not 200 <= response.status < 300:
                        log.info("call %s: %s refused %d %s", call.incoming.request.call_id,
                                 offer.request.uri, response.status, response.reason)
                    elif bridged or not await self._connect(call, offer, response):
                        self.context.spawn(self.bridges.hang_up(offer.request, response))
                    else:
                        bridged = True
        finally:
            gone.cancel()
            for offer in pending.values():
                self._abandon(offer)
        return bridged

    def _send(self, call: _Call, agent: str | None, uri: str) -> _Offer:
        leg_a = call.incoming.request
        request = self.context.user_invite(
            uri, call.caller, body=leg_a.body,
            content_type=leg_a.headers.get("Content-Type") or "application/sdp")
        offer = _Offer(agent, request)

        def provisional(response: Response, _: Flow | None) -> None:
            offer.provisional = True
            if offer.abandoned:
                self._cancel(offer)
            elif 180 <= response.status <= 183 and call.provisional != 180:
                self._provisional(call, 180, "Ringing")

        def retransmitted_2xx(response: Response, _: Flow | None) -> None:
            with contextlib.suppress(SipParseError):
                dialog = Dialog.from_uac(request, response)
                self.context.spawn(self.bridges.ack(dialog, request.cseq.seq))

        offer.future = asyncio.ensure_future(self.context.endpoint.request(
            request, self.context.frontend, on_provisional=provisional,
            on_retransmitted_2xx=retransmitted_2xx))
        offer.future.add_done_callback(lambda future: self._offer_done(offer, future))
        if agent is not None:
            self.book.alerting(agent, True)
        return offer

    def _offer_done(self, offer: _Offer, future: asyncio.Future[Response]) -> None:
        if offer.agent is not None:
            self.book.alerting(offer.agent, False)
            self._changed()
        if offer.abandoned and not future.cancelled() and 200 <= future.result().status < 300:
            self.context.spawn(self.bridges.hang_up(offer.request, future.result()))

    def _abandon(self, offer: _Offer) -> None:
        """An offer nobody wants any more: cancel it (a 2xx already in is hung up)."""
        offer.abandoned = True
        future = offer.future
        assert future is not None
        if not future.done():
            if offer.provisional:
                self._cancel(offer)
        elif not future.cancelled() and 200 <= future.result().status < 300:
            self.context.spawn(self.bridges.hang_up(offer.request, future.result()))

    def _cancel(self, offer: _Offer) -> None:
        """CANCEL an offer (once, and only after a provisional answer, §9.1)."""
        if offer.cancel_sent:
            return
        offer.cancel_sent = True
        self.context.spawn(self.context.endpoint.request(build_cancel(offer.request),
                                                         self.context.frontend))

    async def _connect(self, call: _Call, offer: _Offer, response: Response) -> bool:
        """Answer leg A with the 2xx of `offer` and bridge them (False: not possible)."""
        if call.settled or call.gone.is_set():
            return False
        try:
            a = Dialog.from_uas(call.incoming.request, call.tag)
            b = Dialog.from_uac(offer.request, response)
        except SipParseError as exc:
            log.warning("call %s: cannot bridge (%s)", call.incoming.request.call_id, exc)
            return False
        await self.bridges.ack(b, offer.request.cseq.seq)
        headers = self._leg_a_headers(call)
        copy_headers(response.headers, headers)
        call.settled = True
        with contextlib.suppress(TransactionError):
            self.context.endpoint.reply(call.incoming, response.status, response.reason,
                                        headers=headers, body=response.body, to_tag=call.tag)
        self.bridges.add(a, b, offer.agent)
        if offer.agent is not None:
            self.book.call_started(offer.agent)
        log.info("call %s answered by %s", call.incoming.request.call_id, offer.request.uri)
        return True

    # -- inside dialogs -------------------------------------------------------------------
    async def in_dialog(self, incoming: IncomingRequest) -> bool:
        """CANCEL of a waiting call; requests inside a bridged call (relayed)."""
        request = incoming.request
        if request.method == "CANCEL":
            call = self.calls.get((request.call_id, request.from_.tag or ""))
            if call is None:
                return False
            reply(self.context, incoming, 200, to_tag=call.tag)
            self._fail(call, 487, "Request Terminated")
            call.gone.set()
            return True
        return await self.bridges.on_request(incoming)

    def _bridge_ended(self, bridge: Bridge) -> None:
        if bridge.agent is not None:
            self.book.call_ended(bridge.agent, self.context.monotonic())
            self._changed()

    # -- answering leg A ------------------------------------------------------------------
    def _leg_a_headers(self, call: _Call) -> Headers:
        """Contact and Record-Route for a response of ours that opens a dialog."""
        headers = Headers([("Contact", self.context.contact())])
        for route in call.incoming.request.headers.get_all("Record-Route"):
            headers.add("Record-Route", route)
        return headers

    def _provisional(self, call: _Call, status: int, reason: str, body: bytes = b"") -> None:
        if call.settled:
            return
        headers = self._leg_a_headers(call)
        if body:
            headers.add("Content-Type", "application/sdp")
        call.provisional = status
        with contextlib.suppress(TransactionError):
            self.context.endpoint.reply(call.incoming, status, reason, headers=headers,
                                        body=body, to_tag=call.tag)

    def _fail(self, call: _Call, status: int, reason: str) -> None:
        """Answer leg A with a failure (the reason also in a Warning)."""
        if call.settled:
            return
        call.settled = True
        config = self.context.config
        reply(self.context, call.incoming, status, reason[:120], to_tag=call.tag, headers=Headers([
            ("Warning", f'399 {config.host}:{config.sip_port} "{reason[:200]}"')]))


class WorkflowApp:
    """Calls to workflow numbers (claims of kind ``workflow``) and their dialogs."""

    kind = "workflow"

    def __init__(self, service: ResponseGroups) -> None:
        self.service = service

    async def handle(self, incoming: IncomingRequest, claim: AppClaim) -> None:
        """A call to a workflow's number."""
        await self.service.call(incoming, claim)

    async def in_dialog(self, incoming: IncomingRequest) -> bool:
        """CANCEL of a queued call, requests inside bridged calls."""
        return await self.service.in_dialog(incoming)

    def status(self) -> dict[str, object]:
        """Workflows, queues and agent groups."""
        return self.service.status()


class AgentApp:
    """Formal agents signing in and out (claims of kind ``agent``)."""

    kind = "agent"

    def __init__(self, service: ResponseGroups) -> None:
        self.service = service

    async def handle(self, incoming: IncomingRequest, claim: AppClaim) -> None:
        """A MESSAGE to ``sip:rgs-agent+GROUP@DOMAIN``."""
        await self.service.sign(incoming, claim)

    async def in_dialog(self, incoming: IncomingRequest) -> bool:
        """No dialogs of its own."""
        return False

    def status(self) -> dict[str, object]:
        """Who is signed in to each agent group."""
        return self.service.agent_status()


_SERVICES: weakref.WeakValueDictionary[int, ResponseGroups] = weakref.WeakValueDictionary()


def _service(context: AppContext) -> ResponseGroups:
    """The one service of an application server (both applications share it)."""
    service = _SERVICES.get(id(context))
    if service is None or service.context is not context:
        service = ResponseGroups(context)
        _SERVICES[id(context)] = service
    return service


def workflow_app(context: AppContext) -> App:
    """The ``workflow`` application of the server of `context`."""
    return _service(context).workflows


def agent_app(context: AppContext) -> App:
    """The ``agent`` application of the server of `context`."""
    return _service(context).agents


APPLICATIONS: tuple[Callable[[AppContext], App], ...] = (workflow_app, agent_app)
