"""Unassigned numbers and announcements (SPEC APP-5).

Theory of operation. A Front End sends a call to a number of an `unassigned` range to
the application server of the pool serving the range's owner pool (so the ranges move
with pool failover, `trimaran.roles.frontend.apps`); the claim's target is the number.
The range is the first of the configuration containing it (as `AppsConfig.owner_of`).

With an announcement (the range's, then its action's own, when either names audio we
have), the call goes through these stages, one coroutine per call driving it:

* ANNOUNCING — the INVITE is answered at once, 200 with our SDP answer (PCMU from an
  `RtpSender` on our own address); the audio goes to the caller's SDP offer address
  (or, for an INVITE without offer, to the address of the answer in its ACK), one
  20 ms packet every 20 ms. A BYE of the caller stops it.
* then `disconnect`: we send BYE; `forward` (or `voicemail`, to its target): RINGING —
  the target is called through the local Front End with the caller as the caller
  (`AppContext.user_invite`, offering the caller's SDP); when it answers, the caller
  is re-INVITEd with the target's SDP and the call is BRIDGED: BYE from either leg is
  answered and sent to the other; other requests are relayed leg to leg. A target
  that refuses or does not answer within `RING_SECONDS` ends the call (BYE); a
  caller who hangs up while the target rings cancels it.

Without an announcement, `forward` places the call to the target with the shared
`B2bua` (leg A stays unanswered until the target answers; the B2BUA then relays
in-dialog requests), and `disconnect` answers 404 "Unassigned number (RANGE)".
A `queue` action is not something this application can do (the Response Group
application owns queues): such a range disconnects, with a warning in the log.

`status()` counts calls per range, announcements played to their end, RTP packets
sent and what became of the calls (`outcomes`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum

from trimaran.apps.audio import Audio, AudioError, read_wav
from trimaran.apps.model import NUMBER_RE, Action, UnassignedRange
from trimaran.apps.rtp import RtpSender, answer_sdp, offer_address, offers_pcmu
from trimaran.apps.server import ALLOW, AppContext
from trimaran.client.ua import uri_address
from trimaran.net.endpoint import IncomingRequest
from trimaran.net.transport import Address, Flow, TransportError
from trimaran.roles.mediation.b2bua import Outcome
from trimaran.sip.dialog import Dialog
from trimaran.sip.errors import SipParseError
from trimaran.sip.headers import Headers, NameAddr
from trimaran.sip.ids import new_tag
from trimaran.sip.message import Request, Response
from trimaran.sip.transaction import TransactionError, build_cancel
from trimaran.voice.trust import AppClaim

log = logging.getLogger(__name__)

KIND = "unassigned"
RING_SECONDS = 60.0          # how long a forward target may ring after an announcement
PROGRESS_SECONDS = 10.0      # forward without announcement: the B2BUA's progress timeout
ACK_WAIT_SECONDS = 5.0       # an INVITE without offer: wait this long for the ACK's answer
SDP = "application/sdp"
TARGET_REFRESH = frozenset({"INVITE", "UPDATE"})
FORWARDING = frozenset({Action.FORWARD, Action.VOICEMAIL})


class Stage(StrEnum):
    """Where an announced call is."""

    ANNOUNCING = "announcing"
    RINGING = "ringing"          # the forward target is being called
    BRIDGED = "bridged"
    ENDED = "ended"


@dataclass(eq=False)
class AnnouncedCall:
    """A call we answered to play an announcement; leg B once it is forwarded."""

    range: str
    incoming: IncomingRequest
    a: Dialog                                    # with the caller (we are the UAS)
    transport: str                               # towards the caller's next hop
    answer: bytes                                # our SDP answer
    stage: Stage = Stage.ANNOUNCING
    hung_up: asyncio.Event = field(default_factory=asyncio.Event)
    acked: asyncio.Event = field(default_factory=asyncio.Event)
    ack_body: bytes = b""
    b_request: Request | None = None             # our INVITE to the forward target
    b_provisional: bool = False
    b: Dialog | None = None                      # with the forward target

    @property
    def ended(self) -> bool:
        """True once the call is over."""
        return self.stage is Stage.ENDED

    @property
    def a_key(self) -> tuple[str, str]:
        """Leg A as requests inside it name it: Call-ID and our tag."""
        return self.a.id.call_id, self.a.id.local_tag

    @property
    def invite_key(self) -> tuple[str, str]:
        """Leg A's INVITE as its CANCEL names it: Call-ID and the caller's tag."""
        return self.a.id.call_id, self.a.id.remote_tag


class AnnouncementApp:
    """The unassigned-numbers application of one application server."""

    kind = KIND

    def __init__(self, context: AppContext) -> None:
        self.context = context
        self.calls_per_range: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()
        self.announcements_played = 0
        self.packets_sent = 0
        self._by_a: dict[tuple[str, str], AnnouncedCall] = {}
        self._by_invite: dict[tuple[str, str], AnnouncedCall] = {}
        self._by_b: dict[tuple[str, str], AnnouncedCall] = {}
        self._audio: dict[str, Audio] = {}       # parsed files by SHA-256

    def status(self) -> dict[str, object]:
        """Calls per range, announcements played, packets sent, outcomes, calls up now."""
        return {"calls": dict(self.calls_per_range),
                "announcements_played": self.announcements_played,
                "packets_sent": self.packets_sent, "active": len(self._by_a),
                "outcomes": dict(self.outcomes)}

    # -- new calls ----------------------------------------------------------------------
    async def handle(self, incoming: IncomingRequest, claim: AppClaim) -> None:
        """A call (or another request) to a number of an unassigned range."""
        found = self._range_of(claim.target)
        if found is None:
            self._refuse(incoming, 404, "Unassigned number")
            return
        if incoming.request.method != "INVITE":
            self._refuse(incoming, 404, f"Unassigned number ({found.name})")
            return
        self.calls_per_range[found.name] += 1
        audio = self._announcements(found)
        if audio:
            await self._announce(incoming, claim, found, audio)
        elif found.then.action in FORWARDING and found.then.target:
            await self._forward_unanswered(incoming, claim, found)
        else:
            self._warn_queue(found)
            self.outcomes["refused"] += 1
            self._refuse(incoming, 404, f"Unassigned number ({found.name})")

    def _range_of(self, number: str) -> UnassignedRange | None:
        return next((u for u in self.context.apps_config().unassigned if number in u.numbers),
                    None)

    def _announcements(self, found: UnassignedRange) -> list[Audio]:
        names = [n for n in (found.announcement, found.then.announcement) if n is not None]
        loaded = [self._load(name) for name in names]
        return [a for a in loaded if a is not None]

    def _load(self, name: str) -> Audio | None:
        """The audio named `name`, parsed (cached by SHA-256); None, logged, when missing
        or unplayable (the call goes on as if the range had no announcement)."""
        try:
            sha = self.context.apps_config().audio_named(name).sha256
        except KeyError:
            sha = ""
        if sha in self._audio:
            return self._audio[sha]
        data = self.context.audio(name)
        if data is None:
            log.warning("announcement %s: audio not available; not played", name)
            self.outcomes["audio_missing"] += 1
            return None
        try:
            audio = read_wav(data)
        except AudioError as exc:
            log.error("announcement %s: %s; not played", name, exc)
            self.outcomes["audio_unplayable"] += 1
            return None
        self._audio[sha] = audio
        return audio

    def _warn_queue(self, found: UnassignedRange) -> None:
        if found.then.action is Action.QUEUE:
            log.warning("unassigned range %s: action queue is not run by this application; "
                        "disconnecting", found.name)

    # -- with an announcement -------------------------------------------------------------
    async def _announce(self, incoming: IncomingRequest, claim: AppClaim,
                        found: UnassignedRange, audio: list[Audio]) -> None:
        request = incoming.request
        offer = request.body
        if offer and not offers_pcmu(offer):
            self.outcomes["no_pcmu"] += 1
            self._refuse(incoming, 488, "Not Acceptable Here (PCMU only)")
            return
        sender = RtpSender(self.context.config.host)
        try:
            port = await sender.open()
        except OSError as exc:
            log.error("call %s: no RTP socket for the announcement (%s)", request.call_id, exc)
            self._refuse(incoming, 503, "Service Unavailable (no RTP port)")
            return
        try:
            call = self._accept(incoming, claim.target, found,
                                answer_sdp(self.context.config.host, port))
            if call is not None:
                remote = offer_address(offer) if offer else await self._address_in_ack(call)
                if remote is None:
                    log.info("call %s: no RTP address to play to", request.call_id)
                else:
                    await self._play(call, sender, audio, remote)
        finally:
            sender.close()
        if call is None:
            return
        if not call.hung_up.is_set():
            await self._wait_ack(call)     # §14.1, §15: no re-INVITE nor BYE before it
        if call.hung_up.is_set():
            self._finish(call, "hung_up_during_announcement")
        elif found.then.action in FORWARDING and found.then.target:
            await self._bridge(call, claim, found.then.target)
        else:
            self._warn_queue(found)
            self._finish(call, "disconnected", "announcement played")
            await self._bye(call.a, call.transport)

    def _accept(self, incoming: IncomingRequest, number: str, found: UnassignedRange,
                answer: bytes) -> AnnouncedCall | None:
        """Answer the INVITE 200 with `answer`; None when it cannot be (400 sent, or a
        CANCEL got there first)."""
        request = incoming.request
        tag = new_tag()
        try:
            dialog = Dialog.from_uas(request, tag)
        except SipParseError as exc:
            self._refuse(incoming, 400, str(exc))
            return None
        transport = incoming.flow.transport if incoming.flow.reliable else "udp"
        call = AnnouncedCall(found.name, incoming, dialog, transport, answer)
        headers = Headers([("Contact", self.context.contact(transport)), ("Allow", ALLOW),
                           ("Content-Type", SDP)])
        for rr in request.headers.get_all("Record-Route"):
            headers.add("Record-Route", rr)
        try:
            response = self.context.endpoint.reply(incoming, 200, headers=headers,
                                                   body=answer, to_tag=tag)
        except TransactionError:
            return None
        self._by_a[call.a_key] = call
        self._by_invite[call.invite_key] = call
        if not incoming.flow.reliable:
            self.context.spawn(self._retransmit_2xx(call, response, incoming.flow))
        log.info("call %s to %s: announcing (range %s)", request.call_id, number, found.name)
        return call

    async def _address_in_ack(self, call: AnnouncedCall) -> tuple[str, int] | None:
        """An INVITE without offer got our SDP as the offer: the answer is in the ACK."""
        await self._wait_ack(call)
        return offer_address(call.ack_body) if call.ack_body else None

    async def _wait_ack(self, call: AnnouncedCall) -> None:
        """Until the ACK of our 2xx came (at most `ACK_WAIT_SECONDS`)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(call.acked.wait(), ACK_WAIT_SECONDS)

    async def _play(self, call: AnnouncedCall, sender: RtpSender, audio: list[Audio],
                    remote: tuple[str, int]) -> None:
        for clip in audio:
            self.packets_sent += await sender.play(clip, remote, stop=call.hung_up)
            if call.hung_up.is_set():
                return
            self.announcements_played += 1

    async def _retransmit_2xx(self, call: AnnouncedCall, response: Response,
                              flow: Flow) -> None:
        """§13.3.1.4: over UDP, our 2xx again at T1 doubling to T2 until the ACK."""
        timers = self.context.config.timers
        interval, waited = timers.t1, 0.0
        while waited < 64 * timers.t1 and not call.acked.is_set() \
                and not call.ended:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(call.acked.wait(), interval)
            waited += interval
            if call.acked.is_set() or call.ended:
                return
            with contextlib.suppress(TransportError):
                await self.context.endpoint.transport.send_response(response, flow)
            interval = min(interval * 2, timers.t2)

    # -- forwarding after the announcement ------------------------------------------------
    async def _bridge(self, call: AnnouncedCall, claim: AppClaim, target: str) -> None:
        """Ring `target`; when it answers, re-INVITE the caller with its SDP."""
        call.stage = Stage.RINGING
        offer = call.incoming.request.body
        request = self.context.user_invite(self._target_uri(target), claim.sender,
                                           body=offer,
                                           content_type=SDP if offer else None)
        call.b_request = request
        response = await self._ring(call, request)
        if response is None or call.ended:
            return
        if not 200 <= response.status < 300:
            self._finish(call, "forward_refused", f"{target} answered {response.status}")
            await self._bye(call.a, call.transport)
            return
        try:
            call.b = Dialog.from_uac(request, response)
        except SipParseError as exc:
            self._finish(call, "forward_refused", f"{target}'s answer unusable ({exc})")
            await self._bye(call.a, call.transport)
            return
        self._by_b[(call.b.id.call_id, call.b.id.local_tag)] = call
        await self._ack(call.b, request.cseq.seq)
        if call.ended:
            return                    # a BYE of either leg came meanwhile (and was sent on)
        if call.hung_up.is_set():     # the caller hung up as the target answered
            self._finish(call, "hung_up_while_ringing")
            await self._bye(call.b, "tcp")
            return
        await self._reinvite_caller(call, response)

    async def _ring(self, call: AnnouncedCall, request: Request) -> Response | None:
        """Leg B's final answer; None when the caller hung up or nobody answered (then
        leg B is cancelled and a late 2xx hung up)."""
        def provisional(_: Response, __: Flow | None) -> None:
            call.b_provisional = True

        def retransmitted_2xx(response: Response, _: Flow | None) -> None:
            self.context.spawn(self._ack_answer(request, response))

        frontend = self.context.frontend
        leg = asyncio.ensure_future(self.context.endpoint.request(
            request, frontend, on_provisional=provisional,
            on_retransmitted_2xx=retransmitted_2xx))
        hung_up = asyncio.ensure_future(call.hung_up.wait())
        done, _ = await asyncio.wait({leg, hung_up}, timeout=RING_SECONDS,
                                     return_when=asyncio.FIRST_COMPLETED)
        hung_up.cancel()
        if leg in done:
            return leg.result()
        if call.b_provisional:
            self.context.spawn(self.context.endpoint.request(build_cancel(request), frontend))
        self.context.spawn(self._hang_up_late(request, leg))
        if call.hung_up.is_set():
            self._finish(call, "hung_up_while_ringing")
        else:
            self._finish(call, "forward_unanswered", f"no answer in {RING_SECONDS:.0f} s")
            await self._bye(call.a, call.transport)
        return None

    async def _reinvite_caller(self, call: AnnouncedCall, answered: Response) -> None:
        """Give the caller the target's SDP; the call is bridged when it accepts."""
        assert call.b is not None
        reinvite = call.a.create_request(
            "INVITE", via=self.context.endpoint.via(call.transport),
            contact=NameAddr.parse(self.context.contact(call.transport)))
        if answered.body:
            reinvite.headers.add("Content-Type", answered.content_type or SDP)
            reinvite.body = answered.body
        response = await self._send(reinvite, call.a, call.transport)
        if call.ended:
            return
        if not 200 <= response.status < 300:
            self._finish(call, "forward_refused",
                         f"the caller answered the re-INVITE {response.status}")
            await asyncio.gather(self._bye(call.a, call.transport), self._bye(call.b, "tcp"))
            return
        call.a.update_target(response)
        await self._ack(call.a, reinvite.cseq.seq, call.transport)
        call.stage = Stage.BRIDGED
        self.outcomes["forwarded"] += 1
        log.info("call %s: bridged to %s", call.a.id.call_id, call.b.remote.uri)

    def _target_uri(self, target: str) -> str:
        if NUMBER_RE.match(target):
            return f"sip:{target}@{self.context.config.domain};user=phone"
        return target

    async def _hang_up_late(self, request: Request, leg: asyncio.Future[Response]) -> None:
        response = await leg
        if 200 <= response.status < 300:
            await self._ack_answer(request, response)
            with contextlib.suppress(SipParseError):
                await self._bye(Dialog.from_uac(request, response), "tcp")

    async def _ack_answer(self, request: Request, response: Response) -> None:
        """ACK a (retransmitted or late) 2xx of leg B."""
        with contextlib.suppress(SipParseError):
            await self._ack(Dialog.from_uac(request, response), request.cseq.seq)

    # -- without an announcement ----------------------------------------------------------
    async def _forward_unanswered(self, incoming: IncomingRequest, claim: AppClaim,
                                  found: UnassignedRange) -> None:
        """Place the call to the target; leg A is answered when the target answers."""
        b2bua = self.context.b2bua
        target = found.then.target or ""
        call = b2bua.begin(incoming, "inbound")
        call.label = f"unassigned {found.name} -> {target}"
        offer = incoming.request.body
        request = self.context.user_invite(self._target_uri(target), claim.sender,
                                           body=offer, content_type=SDP if offer else None)
        result = await b2bua.place(call, request, self.context.frontend,
                                   progress_timeout=PROGRESS_SECONDS)
        self.outcomes[f"direct_forward_{result.outcome}"] += 1
        if result.outcome is Outcome.REFUSED and result.response is not None:
            response = result.response
            if response.status in (401, 407) or response.status < 400:
                b2bua.fail(call, 480, f"Temporarily Unavailable (forward to {target}: "
                           f"{response.status})")
            else:
                b2bua.fail(call, response.status, response.reason, source=response)
        elif result.outcome is Outcome.NO_PROGRESS:
            b2bua.fail(call, 480, f"Temporarily Unavailable ({target} does not answer)")

    # -- requests inside our calls --------------------------------------------------------
    async def in_dialog(self, incoming: IncomingRequest) -> bool:
        """BYE, ACK, CANCEL and other requests of the calls we answered."""
        request = incoming.request
        if request.method == "CANCEL":
            return self._on_cancel(incoming)
        found = self._find(request)
        if found is None:
            return False
        call, from_a = found
        if request.method == "ACK":
            if from_a:
                call.ack_body = request.body or call.ack_body
                call.acked.set()
            return True
        dialog = call.a if from_a else call.b
        assert dialog is not None
        if not dialog.accepts_remote_cseq(request):
            self._reply(incoming, 500, "CSeq out of order")
        elif request.method == "BYE":
            await self._on_bye(incoming, call, from_a)
        elif call.stage is Stage.BRIDGED:
            await self._relay(incoming, call, from_a)
        else:
            self._on_request_unbridged(incoming, call, from_a)
        return True

    def _find(self, request: Request) -> tuple[AnnouncedCall, bool] | None:
        key = (request.call_id, request.to.tag or "")
        call = self._by_a.get(key)
        if call is not None:
            return call, True
        call = self._by_b.get(key)
        return (call, False) if call is not None else None

    def _on_cancel(self, incoming: IncomingRequest) -> bool:
        """A CANCEL of an INVITE we already answered (§9.2): 200, no effect."""
        request = incoming.request
        call = self._by_invite.get((request.call_id, request.from_.tag or ""))
        if call is None:
            return False
        self._reply(incoming, 200, to_tag=call.a.id.local_tag)
        return True

    async def _on_bye(self, incoming: IncomingRequest, call: AnnouncedCall,
                      from_a: bool) -> None:
        self._reply(incoming, 200)
        if not from_a:
            self._finish(call, "ended", "BYE from the forward target")
            await self._bye(call.a, call.transport)
            return
        call.hung_up.set()
        if call.b is None:
            return            # announcing or ringing: the call's coroutine ends it
        self._finish(call, "ended", "BYE from the caller")
        await self._bye(call.b, "tcp")

    def _on_request_unbridged(self, incoming: IncomingRequest, call: AnnouncedCall,
                              from_a: bool) -> None:
        """Before the call is bridged, the caller's re-INVITE or UPDATE gets our answer
        again — or 491 while our own re-INVITE to it is pending (§14.1), as does the
        target's; other requests (INFO, OPTIONS...) a plain 200."""
        if incoming.request.method not in TARGET_REFRESH:
            self._reply(incoming, 200)
        elif not from_a or call.b is not None:
            self._reply(incoming, 491, "Request Pending")
        else:
            call.a.update_target(incoming.request)
            self._reply(incoming, 200, headers=Headers([
                ("Contact", self.context.contact(call.transport)), ("Content-Type", SDP)]),
                body=call.answer)

    async def _relay(self, incoming: IncomingRequest, call: AnnouncedCall,
                     from_a: bool) -> None:
        """A request inside a bridged call, sent on to the other leg; its answer back."""
        assert call.b is not None
        request = incoming.request
        mine, other = (call.a, call.b) if from_a else (call.b, call.a)
        transport = "tcp" if from_a else call.transport
        refresh = request.method in TARGET_REFRESH
        if refresh:
            mine.update_target(request)
        out = other.create_request(request.method, via=self.context.endpoint.via(transport),
                                   contact=NameAddr.parse(self.context.contact(transport))
                                   if refresh else None)
        if request.content_type:
            out.headers.add("Content-Type", request.content_type)
        out.body = request.body
        response = await self._send(out, other, transport)
        if request.method == "INVITE" and 200 <= response.status < 300:
            other.update_target(response)
            await self._ack(other, out.cseq.seq, transport)
        headers = Headers()
        if refresh and 200 <= response.status < 300:
            back = call.transport if from_a else "tcp"
            headers.add("Contact", self.context.contact(back))
        if response.content_type:
            headers.add("Content-Type", response.content_type)
        self._reply(incoming, response.status, response.reason, headers=headers,
                    body=response.body)

    # -- helpers --------------------------------------------------------------------------
    def _finish(self, call: AnnouncedCall, outcome: str, detail: str = "") -> None:
        """The call is over: forget it, count `outcome` (what is left to send, the caller
        of this sends)."""
        if call.ended:
            return
        call.stage = Stage.ENDED
        self._by_a.pop(call.a_key, None)
        self._by_invite.pop(call.invite_key, None)
        if call.b is not None:
            self._by_b.pop((call.b.id.call_id, call.b.id.local_tag), None)
        self.outcomes[outcome] += 1
        log.info("call %s (range %s) ended: %s%s", call.a.id.call_id, call.range, outcome,
                 f" ({detail})" if detail else "")

    async def _send(self, request: Request, dialog: Dialog, transport: str) -> Response:
        try:
            return await self.context.endpoint.request(request, self._hop(dialog, transport))
        except TransportError:
            return Response.for_request(request, 503, "Service Unavailable")

    async def _bye(self, dialog: Dialog, transport: str = "tcp") -> None:
        bye = dialog.create_request("BYE", via=self.context.endpoint.via(transport))
        await self._send(bye, dialog, transport)

    async def _ack(self, dialog: Dialog, cseq: int, transport: str = "tcp") -> None:
        ack = dialog.create_request("ACK", via=self.context.endpoint.via(transport), cseq=cseq)
        with contextlib.suppress(TransportError):
            await self.context.endpoint.send_stateless(ack, self._hop(dialog, transport))

    @staticmethod
    def _hop(dialog: Dialog, transport: str) -> Address:
        return uri_address(dialog.first_hop, transport)

    def _refuse(self, incoming: IncomingRequest, status: int, reason: str) -> None:
        self._reply(incoming, status, reason[:120], to_tag=new_tag())

    def _reply(self, incoming: IncomingRequest, status: int, reason: str | None = None, *,
               headers: Headers | None = None, body: bytes = b"",
               to_tag: str | None = None) -> None:
        if incoming.transaction is None or incoming.transaction.terminated:
            return
        with contextlib.suppress(TransactionError):
            self.context.endpoint.reply(incoming, status, reason, headers=headers, body=body,
                                        to_tag=to_tag)


def announcements(context: AppContext) -> AnnouncementApp:
    """The factory the application server's registry calls."""
    return AnnouncementApp(context)
