"""The Mediation server's back-to-back user agent (SPEC EV-2, EV-3).

Theory of operation. Every call has two legs, each a dialog of its own:

* leg A is the INVITE we received and answer as a UAS (from a Front End for a call
  to the PSTN, from a gateway for a call into the deployment);
* leg B is the INVITE we send as a UAC (to the gateway, or to a Front End).

`place` sends leg B and reports what happened without answering leg A when leg B
failed, so that the server may try another target (the next Front End server for
an inbound call); `answer` and `fail` settle leg A. Provisional answers of leg B
(18x) go to leg A at once with leg A's To tag; a 2xx of leg B is ACKed at once
(early offer: the SDP travels in the INVITE and the 2xx) and then answered on leg A.

Fast failover (EV-3): `place` waits `progress_timeout` seconds for leg B to show
progress — a 18x or a final answer (or any 1xx at all, for a next hop that is a
server of ours, which answers 100 Trying at once); without it, leg B is cancelled
(or abandoned when nothing came back at all) and `place` reports NO_PROGRESS. A
late 2xx of an abandoned or cancelled leg B is ACKed and hung up at once.

Inside a dialog everything is relayed leg to leg: BYE (answered at once, then sent
on: the call ends either way), re-INVITE and UPDATE (answers relayed back; our own
ACK to a relayed re-INVITE's 2xx), INFO. ACKs end here. A CANCEL of leg A cancels
leg B. `calls` is what is up now; `stats` counts outcomes for /status and metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from trimaran.client.ua import uri_address
from trimaran.net.endpoint import IncomingRequest, SipEndpoint
from trimaran.net.transport import Address, Flow, TransportError
from trimaran.sip.dialog import Dialog
from trimaran.sip.errors import SipParseError
from trimaran.sip.headers import Headers, NameAddr
from trimaran.sip.ids import new_tag
from trimaran.sip.message import Request, Response
from trimaran.sip.transaction import TimerConfig, TransactionError, build_cancel

log = logging.getLogger(__name__)

RELAYED_HEADERS = ("Content-Type", "Content-Disposition", "Session-Expires", "Supported")
TARGET_REFRESH = frozenset({"INVITE", "UPDATE"})


class Outcome(StrEnum):
    """What became of leg B."""

    ANSWERED = "answered"          # 2xx: leg A answered too
    REFUSED = "refused"            # a final non-2xx (see `PlaceResult.response`)
    NO_PROGRESS = "no_progress"    # nothing useful within the progress timeout
    CANCELLED = "cancelled"        # leg A was cancelled meanwhile (already answered 487)


@dataclass(frozen=True, slots=True)
class PlaceResult:
    """The outcome of one attempt to place leg B."""

    outcome: Outcome
    response: Response | None = None
    seconds: float = 0.0


@dataclass(eq=False)
class BridgedCall:
    """One call through this server."""

    direction: str                      # "outbound" (to the PSTN) or "inbound"
    a: IncomingRequest                  # the INVITE we answer
    a_tag: str
    a_transport: str
    started: float
    a_dialog: Dialog | None = None
    b_request: Request | None = None
    b_target: Address | None = None
    b_dialog: Dialog | None = None
    b_provisional: bool = False
    b_cancel_sent: bool = False
    cancel_wanted: bool = False
    a_done: bool = False                # leg A has its final answer
    acked: asyncio.Event = field(default_factory=asyncio.Event)
    ended: bool = False
    label: str = ""                     # the gateway or Front End used (for logs)

    @property
    def a_key(self) -> tuple[str, str]:
        """Leg A as requests inside its dialog name it: Call-ID and our tag."""
        return self.a.request.call_id, self.a_tag

    @property
    def a_invite_key(self) -> tuple[str, str]:
        """Leg A's INVITE as its CANCEL names it: Call-ID and the caller's tag."""
        return self.a.request.call_id, self.a.request.from_.tag or ""


class B2bua:
    """The calls of one Mediation server and the relaying between their legs."""

    def __init__(self, endpoint: SipEndpoint, *, timers: TimerConfig | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.endpoint = endpoint
        self.timers = timers or TimerConfig()
        self.monotonic = monotonic
        self.by_a: dict[tuple[str, str], BridgedCall] = {}
        self.by_invite: dict[tuple[str, str], BridgedCall] = {}
        self.by_b: dict[str, BridgedCall] = {}
        self.stats: Counter[str] = Counter()
        self.setup_seconds: list[float] = []
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def active(self) -> int:
        """Calls established now."""
        return len(self.by_a)

    def begin(self, incoming: IncomingRequest, direction: str) -> BridgedCall:
        """Start a call for a new INVITE (leg A)."""
        transport = "udp" if not incoming.flow.reliable else incoming.flow.transport
        call = BridgedCall(direction, incoming, new_tag(), transport, self.monotonic())
        self.by_invite[call.a_invite_key] = call
        return call

    def contact(self, transport: str) -> str:
        """Our Contact for a leg over `transport`."""
        host, port = self.endpoint.contact_host_port("udp" if transport == "udp" else "tcp")
        suffix = "" if transport == "udp" else f";transport={transport}"
        return f"<sip:{host}:{port}{suffix}>"

    # -- leg B --------------------------------------------------------------------------
    async def place(self, call: BridgedCall, request: Request, target: Address, *,
                    progress_timeout: float, progress_from: int = 101) -> PlaceResult:
        """Send leg B; relay its progress to leg A; answer leg A when it answers."""
        started = self.monotonic()
        call.b_request, call.b_target = request, target
        call.b_provisional = call.b_cancel_sent = False
        self.by_b[request.call_id] = call
        progressed = asyncio.Event()

        def provisional(response: Response, _: Flow | None) -> None:
            if self.by_b.get(request.call_id) is not call or call.b_request is not request:
                return                       # a leg we gave up on
            call.b_provisional = True
            if call.cancel_wanted and not call.b_cancel_sent:
                self._cancel_b(call)
            if response.status >= progress_from:
                progressed.set()
            if 100 < response.status < 200 and not call.a_done:
                self._reply_a(call, response.status, response.reason, response)

        def retransmitted_2xx(response: Response, _: Flow | None) -> None:
            self._spawn(self._ack(request, response, target))

        leg = asyncio.ensure_future(self.endpoint.request(
            request, target, on_provisional=provisional, on_retransmitted_2xx=retransmitted_2xx))
        waiter = asyncio.ensure_future(progressed.wait())
        done, _ = await asyncio.wait({leg, waiter}, timeout=progress_timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if not done:
            call.cancel_wanted = True
            if call.b_provisional:
                self._cancel_b(call)
            self.by_b.pop(request.call_id, None)
            self._spawn(self._hang_up_late(request, target, leg))
            return PlaceResult(Outcome.NO_PROGRESS, None, self.monotonic() - started)
        response = await leg
        seconds = self.monotonic() - started
        if self.by_b.get(request.call_id) is not call or call.a_done:
            self.by_b.pop(request.call_id, None)        # leg A was cancelled meanwhile
            if 200 <= response.status < 300:
                await self._ack_and_bye(request, response, target)
            return PlaceResult(Outcome.CANCELLED, response, seconds)
        if not 200 <= response.status < 300:
            self.by_b.pop(request.call_id, None)
            return PlaceResult(Outcome.REFUSED, response, seconds)
        try:
            call.b_dialog = Dialog.from_uac(request, response)
        except SipParseError as exc:
            log.warning("call %s: leg B answer unusable (%s); hanging up", call.label, exc)
            self.by_b.pop(request.call_id, None)
            await self._ack_and_bye(request, response, target, dialog_ok=False)
            return PlaceResult(Outcome.REFUSED, Response.for_request(request, 502,
                                                                     "Bad Gateway"), seconds)
        await self._ack(request, response, target)
        self._answer_a(call, response)
        self.setup_seconds.append(self.monotonic() - call.started)
        if len(self.setup_seconds) > 10_000:
            del self.setup_seconds[:5_000]
        self.stats["answered"] += 1
        return PlaceResult(Outcome.ANSWERED, response, seconds)

    def _cancel_b(self, call: BridgedCall) -> None:
        assert call.b_request is not None and call.b_target is not None
        call.b_cancel_sent = True
        self._spawn(self.endpoint.request(build_cancel(call.b_request), call.b_target))

    async def _ack(self, request: Request, response: Response, target: Address) -> None:
        """ACK a 2xx of leg B (§13.2.2.4), to its Contact through its Record-Route."""
        try:
            dialog = Dialog.from_uac(request, response)
        except SipParseError:
            return
        ack = dialog.create_request("ACK", via=self.endpoint.via(target.transport),
                                    cseq=request.cseq.seq)
        with contextlib.suppress(TransportError):
            await self.endpoint.send_stateless(ack, self._next_hop(dialog, target.transport))

    async def _ack_and_bye(self, request: Request, response: Response, target: Address, *,
                           dialog_ok: bool = True) -> None:
        """A 2xx nobody wants any more: ACK it and hang up at once."""
        if not dialog_ok:
            return
        await self._ack(request, response, target)
        try:
            dialog = Dialog.from_uac(request, response)
        except SipParseError:
            return
        bye = dialog.create_request("BYE", via=self.endpoint.via(target.transport))
        with contextlib.suppress(TransportError):
            await self.endpoint.request(bye, self._next_hop(dialog, target.transport))
        self.stats["late_answer_hung_up"] += 1

    async def _hang_up_late(self, request: Request, target: Address,
                            leg: asyncio.Future[Response]) -> None:
        response = await leg
        if 200 <= response.status < 300:
            await self._ack_and_bye(request, response, target)

    # -- leg A --------------------------------------------------------------------------
    def _reply_a(self, call: BridgedCall, status: int, reason: str | None,
                 source: Response | None = None, headers: Headers | None = None) -> Response:
        extra = Headers()
        if status < 300 and status > 100:
            extra.add("Contact", self.contact(call.a_transport))
            for rr in call.a.request.headers.get_all("Record-Route"):
                extra.add("Record-Route", rr)
        body = b""
        if source is not None:
            for name in RELAYED_HEADERS:
                value = source.headers.get(name)
                if value:
                    extra.add(name, value)
            body = source.body
        for name, value in headers or ():
            extra.add(name, value)
        try:
            return self.endpoint.reply(call.a, status, reason, headers=extra, body=body,
                                       to_tag=call.a_tag)
        except TransactionError:
            return Response.for_request(call.a.request, status, reason, to_tag=call.a_tag)

    def _answer_a(self, call: BridgedCall, response: Response) -> None:
        call.a_done = True
        self.by_invite.pop(call.a_invite_key, None)
        call.a_dialog = Dialog.from_uas(call.a.request, call.a_tag)
        self.by_a[call.a_key] = call
        sent = self._reply_a(call, response.status, response.reason, response)
        if not call.a.flow.reliable:      # §13.3.1.4: the UAS core retransmits its 2xx
            self._spawn(self._retransmit_2xx(call, sent, call.a.flow))

    def fail(self, call: BridgedCall, status: int, reason: str,
             headers: Headers | None = None, source: Response | None = None) -> None:
        """Answer leg A with a failure and forget the call."""
        if call.a_done:
            return
        call.a_done = True
        self.by_invite.pop(call.a_invite_key, None)
        self.stats[f"failed_{status}"] += 1
        self._reply_a(call, status, reason[:120], source, headers)

    async def _retransmit_2xx(self, call: BridgedCall, response: Response, flow: Flow) -> None:
        interval, waited = self.timers.t1, 0.0
        while waited < 64 * self.timers.t1 and not call.acked.is_set() and not call.ended:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(call.acked.wait(), interval)
            waited += interval
            if call.acked.is_set() or call.ended:
                return
            with contextlib.suppress(TransportError):
                await self.endpoint.transport.send_response(response, flow)
            interval = min(interval * 2, self.timers.t2)

    # -- requests of either leg ------------------------------------------------------------
    def cancel(self, incoming: IncomingRequest) -> None:
        """A CANCEL of leg A's INVITE (§9.2): 200, then 487 to the INVITE, cancel leg B."""
        request = incoming.request
        call = self.by_invite.get((request.call_id, request.from_.tag or ""))
        if call is None or call.a_done:
            self.endpoint.reply(incoming, 481, to_tag=new_tag())
            return
        self.endpoint.reply(incoming, 200, to_tag=call.a_tag)
        call.cancel_wanted = True
        self.fail(call, 487, "Request Terminated")
        self.stats["cancelled"] += 1
        if call.b_provisional and not call.b_cancel_sent and call.b_request is not None:
            self._cancel_b(call)

    def ack(self, incoming: IncomingRequest) -> None:
        """ACKs end here (leg B's 2xx are ACKed by us)."""
        request = incoming.request
        call = self.by_a.get((request.call_id, request.to.tag or ""))
        if call is not None:
            call.acked.set()

    def find(self, request: Request) -> tuple[BridgedCall, bool] | None:
        """The call a request inside a dialog belongs to, and whether it came on leg A."""
        call = self.by_a.get((request.call_id, request.to.tag or ""))
        if call is not None:
            return call, True
        call = self.by_b.get(request.call_id)
        if call is not None and call.b_dialog is not None and \
                request.to.tag == call.b_dialog.id.local_tag:
            return call, False
        return None

    async def in_dialog(self, incoming: IncomingRequest) -> None:
        """Relay a request inside a call to the other leg."""
        request = incoming.request
        found = self.find(request)
        if found is None:
            self.endpoint.reply(incoming, 481, "Call Leg/Transaction Does Not Exist")
            return
        call, from_a = found
        mine = call.a_dialog if from_a else call.b_dialog
        other = call.b_dialog if from_a else call.a_dialog
        assert mine is not None and other is not None
        if not mine.accepts_remote_cseq(request):
            self.endpoint.reply(incoming, 500, "CSeq out of order")
            return
        if request.method in TARGET_REFRESH:
            mine.update_target(request)
        transport = self._transport(call, not from_a)
        out = other.create_request(
            request.method, via=self.endpoint.via(transport),
            contact=NameAddr.parse(self.contact(transport))
            if request.method in TARGET_REFRESH else None)
        for name in RELAYED_HEADERS:
            value = request.headers.get(name)
            if value:
                out.headers.add(name, value)
        out.body = request.body
        hop = self._next_hop(other, transport)
        if request.method == "BYE":
            self.endpoint.reply(incoming, 200)
            self.end(call, "BYE from " + ("leg A" if from_a else "leg B"))
            with contextlib.suppress(TransportError):
                await self.endpoint.request(out, hop)
            return
        response = await self.endpoint.request(out, hop)
        if request.method == "INVITE" and 200 <= response.status < 300:
            other.update_target(response)
            ack = other.create_request("ACK", via=self.endpoint.via(transport),
                                       cseq=out.cseq.seq)
            with contextlib.suppress(TransportError):
                await self.endpoint.send_stateless(ack, hop)
        extra = Headers()
        if 200 <= response.status < 300 and request.method in TARGET_REFRESH:
            extra.add("Contact", self.contact(self._transport(call, from_a)))
        for name in RELAYED_HEADERS:
            value = response.headers.get(name)
            if value:
                extra.add(name, value)
        with contextlib.suppress(TransactionError):
            self.endpoint.reply(incoming, response.status, response.reason, headers=extra,
                                body=response.body)

    def end(self, call: BridgedCall, why: str) -> None:
        """Forget an established call."""
        if call.ended:
            return
        call.ended = True
        self.by_a.pop(call.a_key, None)
        if call.b_request is not None:
            self.by_b.pop(call.b_request.call_id, None)
        self.stats["ended"] += 1
        log.debug("call %s (%s) ended: %s", call.a.request.call_id, call.label, why)

    def _transport(self, call: BridgedCall, leg_a: bool) -> str:
        if leg_a:
            return call.a_transport
        return call.b_target.transport if call.b_target is not None else "udp"

    @staticmethod
    def _next_hop(dialog: Dialog, transport: str) -> Address:
        return uri_address(dialog.first_hop, transport)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Stop background work."""
        for task in list(self._tasks):
            task.cancel()
