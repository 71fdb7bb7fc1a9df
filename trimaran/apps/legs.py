"""Call legs of the applications (SPEC APP-1, APP-6): INVITEs we hold (answered later,
or cancelled by their caller), INVITEs we send (with a ring time and a stop), and the
relaying of in-dialog requests (BYE, re-INVITE, UPDATE, INFO) between two bridged legs
— what Call Park's retrieve and ring-back and group pickup's take need: pairs of call
legs that the Mediation B2BUA's one-incoming-one-outgoing model does not cover.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from trimaran.client.ua import uri_address
from trimaran.net.endpoint import IncomingRequest, SipEndpoint
from trimaran.net.transport import Address, Flow, TransportError
from trimaran.sip.dialog import Dialog
from trimaran.sip.errors import SipParseError
from trimaran.sip.headers import Headers, NameAddr
from trimaran.sip.ids import new_tag
from trimaran.sip.message import Request, Response
from trimaran.sip.transaction import TransactionError, build_cancel

log = logging.getLogger(__name__)

TARGET_REFRESH = frozenset({"INVITE", "UPDATE"})
RELAYED_HEADERS = ("Content-Type", "Content-Disposition")



# -- call legs --------------------------------------------------------------------------
@dataclass(eq=False)
class Leg:
    """One dialog of ours with a user, through the Front End."""

    dialog: Dialog
    label: str
    local_sdp: bytes = b""                  # what we last offered or answered
    remote_sdp: bytes = b""                 # what the user last offered or answered
    peer: Leg | None = None                 # the leg it is bridged to
    on_bye: Callable[[Leg], None] | None = None   # hung up while not bridged
    ended: bool = False

    @property
    def key(self) -> tuple[str, str]:
        """How requests inside the dialog name it: Call-ID and our tag."""
        return self.dialog.id.call_id, self.dialog.id.local_tag


@dataclass(eq=False)
class Held:
    """An INVITE we answer later (a retrieval, a pickup); its CANCEL sets `cancelled`."""

    incoming: IncomingRequest
    tag: str = field(default_factory=new_tag)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    done: bool = False

    @property
    def key(self) -> tuple[str, str]:
        """How its CANCEL names it: Call-ID and the caller's tag."""
        return self.incoming.request.call_id, self.incoming.request.from_.tag or ""


class Legs:
    """The dialogs of one application, and the relaying between bridged ones."""

    def __init__(self, endpoint: SipEndpoint, contact: Callable[[], str]) -> None:
        self.endpoint = endpoint
        self.contact = contact
        self.legs: dict[tuple[str, str], Leg] = {}
        self.held: dict[tuple[str, str], Held] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def bridged(self) -> int:
        """Calls connected now (pairs of bridged legs)."""
        return sum(1 for leg in self.legs.values() if leg.peer is not None) // 2

    # -- INVITEs we answer ----------------------------------------------------------------
    def hold(self, incoming: IncomingRequest) -> Held:
        """Keep an INVITE to answer later (its CANCEL is ours to handle meanwhile)."""
        held = Held(incoming)
        self.held[held.key] = held
        return held

    def refuse(self, held: Held, status: int, reason: str) -> None:
        """Answer a held INVITE with a failure (the reason also as a Warning)."""
        if held.done:
            return
        held.done = True
        self.held.pop(held.key, None)
        host, port = self.endpoint.contact_host_port("tcp")
        self._reply(held.incoming, status, reason[:120], held.tag,
                    Headers([("Warning", f'399 {host}:{port} "{reason[:200]}"')]))

    def answer(self, held: Held, body: bytes, label: str) -> Leg | None:
        """Answer a held INVITE 200 with `body`: its leg, None when it was cancelled."""
        if held.done:
            return None
        held.done = True
        self.held.pop(held.key, None)
        request = held.incoming.request
        headers = Headers([("Contact", self.contact())])
        for rr in request.headers.get_all("Record-Route"):
            headers.add("Record-Route", rr)
        if body:
            headers.add("Content-Type", "application/sdp")
        leg = Leg(Dialog.from_uas(request, held.tag), label, body, request.body)
        self.legs[leg.key] = leg
        self._reply(held.incoming, 200, None, held.tag, headers, body)
        return leg

    def _cancel(self, incoming: IncomingRequest) -> bool:
        request = incoming.request
        held = self.held.get((request.call_id, request.from_.tag or ""))
        if held is None:
            return False
        self._reply(incoming, 200, None, held.tag)
        held.done = True
        self.held.pop(held.key, None)
        self._reply(held.incoming, 487, "Request Terminated", held.tag)
        held.cancelled.set()
        return True

    def _reply(self, incoming: IncomingRequest, status: int, reason: str | None, tag: str,
               headers: Headers | None = None, body: bytes = b"") -> None:
        with contextlib.suppress(TransactionError):
            self.endpoint.reply(incoming, status, reason, headers=headers, body=body,
                                to_tag=tag)

    # -- INVITEs we send ------------------------------------------------------------------
    async def place(self, request: Request, target: Address, label: str, *,
                    ring_for: float, stop: asyncio.Event | None = None,
                    ) -> tuple[Response, Leg | None]:
        """Send an INVITE; cancel it after `ring_for` seconds or when `stop` is set.
        The final answer, and the leg when it was answered (and still wanted)."""
        progressed = asyncio.Event()

        def provisional(_: Response, __: Flow | None) -> None:
            progressed.set()

        def retransmitted_2xx(response: Response, _: Flow | None) -> None:
            self._spawn(self._ack(request, response, target))

        pending = asyncio.ensure_future(self.endpoint.request(
            request, target, on_provisional=provisional, on_retransmitted_2xx=retransmitted_2xx))
        waits: set[asyncio.Future[Any]] = {pending}
        stopper = asyncio.ensure_future(stop.wait()) if stop is not None else None
        if stopper is not None:
            waits.add(stopper)
        try:
            await asyncio.wait(waits, timeout=ring_for, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if stopper is not None:
                stopper.cancel()
        gave_up = not pending.done()
        if gave_up:
            await self._cancel_invite(request, target, progressed, pending)
        response = await pending
        if not 200 <= response.status < 300:
            return response, None
        try:
            dialog = Dialog.from_uac(request, response)
        except SipParseError as exc:
            log.warning("%s: answer unusable (%s)", label, exc)
            return Response.for_request(request, 502, "Bad Gateway"), None
        await self._ack(request, response, target)
        leg = Leg(dialog, label, request.body, response.body)
        if gave_up or (stop is not None and stop.is_set()):
            await self._bye(leg)            # answered as we gave up: nobody wants it now
            return response, None
        self.legs[leg.key] = leg
        return response, leg

    async def _cancel_invite(self, request: Request, target: Address,
                             progressed: asyncio.Event,
                             pending: asyncio.Future[Response]) -> None:
        """§9.1: CANCEL once the INVITE has a provisional response."""
        if not progressed.is_set():
            waiter: asyncio.Future[Any] = asyncio.ensure_future(progressed.wait())
            await asyncio.wait({waiter, pending}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
        if not pending.done():
            with contextlib.suppress(TransportError):
                await self.endpoint.request(build_cancel(request), target)

    async def _ack(self, request: Request, response: Response, target: Address) -> None:
        try:
            dialog = Dialog.from_uac(request, response)
        except SipParseError:
            return
        ack = dialog.create_request("ACK", via=self.endpoint.via("tcp"),
                                    cseq=request.cseq.seq)
        with contextlib.suppress(TransportError):
            await self.endpoint.send_stateless(ack, hop(dialog))

    # -- inside dialogs ---------------------------------------------------------------------
    def bridge(self, one: Leg, other: Leg) -> None:
        """Relay everything between two legs from now on."""
        one.peer, other.peer = other, one

    async def reinvite(self, leg: Leg, body: bytes) -> Response:
        """A re-INVITE offering `body` to `leg`'s user; its 2xx is ACKed."""
        request = self._in_dialog_request(leg, "INVITE")
        request.headers.add("Content-Type", "application/sdp")
        request.body = body
        response = await self._send(leg, request)
        if 200 <= response.status < 300:
            leg.local_sdp, leg.remote_sdp = body, response.body
        return response

    async def hang_up(self, leg: Leg) -> None:
        """End `leg` with a BYE (not its peer)."""
        await self._bye(leg)

    async def _bye(self, leg: Leg) -> None:
        self._forget(leg)
        request = self._in_dialog_request(leg, "BYE")
        with contextlib.suppress(TransportError):
            await self.endpoint.request(request, hop(leg.dialog))

    def _forget(self, leg: Leg) -> None:
        leg.ended = True
        self.legs.pop(leg.key, None)

    def _in_dialog_request(self, leg: Leg, method: str) -> Request:
        contact = NameAddr.parse(self.contact()) if method in TARGET_REFRESH else None
        return leg.dialog.create_request(method, via=self.endpoint.via("tcp"), contact=contact)

    async def _send(self, leg: Leg, request: Request) -> Response:
        next_hop = hop(leg.dialog)
        response = await self.endpoint.request(request, next_hop)
        if request.method == "INVITE" and 200 <= response.status < 300:
            leg.dialog.update_target(response)
            ack = leg.dialog.create_request("ACK", via=self.endpoint.via("tcp"),
                                            cseq=request.cseq.seq)
            with contextlib.suppress(TransportError):
                await self.endpoint.send_stateless(ack, next_hop)
        return response

    async def on_request(self, incoming: IncomingRequest) -> bool:
        """A request inside one of our dialogs (or a CANCEL of a held INVITE): True when
        it was ours."""
        request = incoming.request
        if request.method == "CANCEL":
            return self._cancel(incoming)
        leg = self.legs.get((request.call_id, request.to.tag or ""))
        if leg is None:
            return False
        if request.method == "ACK":
            return True                      # ACKs of our 2xx end here
        if not leg.dialog.accepts_remote_cseq(request):
            self._reply(incoming, 500, "CSeq out of order", leg.dialog.id.local_tag)
            return True
        if request.method in TARGET_REFRESH:
            leg.dialog.update_target(request)
        if request.method == "BYE":
            self._reply(incoming, 200, None, leg.dialog.id.local_tag)
            self._forget(leg)
            if leg.peer is not None:
                await self._bye(leg.peer)
            elif leg.on_bye is not None:
                leg.on_bye(leg)
            return True
        if leg.peer is None:
            await self._answer_alone(incoming, leg)
            return True
        await self._relay(incoming, leg, leg.peer)
        return True

    async def _answer_alone(self, incoming: IncomingRequest, leg: Leg) -> None:
        """A request on a leg bridged to nobody (a parked call): a re-INVITE or UPDATE
        gets our SDP again, INFO an OK; anything else is not for us."""
        method = incoming.request.method
        tag = leg.dialog.id.local_tag
        if method in TARGET_REFRESH:
            leg.remote_sdp = incoming.request.body or leg.remote_sdp
            headers = Headers([("Contact", self.contact())])
            if leg.local_sdp:
                headers.add("Content-Type", "application/sdp")
            self._reply(incoming, 200, None, tag, headers, leg.local_sdp)
        elif method == "INFO":
            self._reply(incoming, 200, None, tag)
        else:
            self._reply(incoming, 501, f"{method} not supported on a parked call", tag)

    async def _relay(self, incoming: IncomingRequest, leg: Leg, peer: Leg) -> None:
        request = incoming.request
        out = self._in_dialog_request(peer, request.method)
        for name in RELAYED_HEADERS:
            value = request.headers.get(name)
            if value:
                out.headers.add(name, value)
        out.body = request.body
        response = await self._send(peer, out)
        headers = Headers()
        if 200 <= response.status < 300 and request.method in TARGET_REFRESH:
            headers.add("Contact", self.contact())
            leg.remote_sdp, peer.remote_sdp = request.body or leg.remote_sdp, \
                response.body or peer.remote_sdp
        for name in RELAYED_HEADERS:
            value = response.headers.get(name)
            if value:
                headers.add(name, value)
        self._reply(incoming, response.status, response.reason, leg.dialog.id.local_tag,
                    headers, response.body)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def hop(dialog: Dialog) -> Address:
    return uri_address(dialog.first_hop, "tcp")


def hold_sdp(host: str, port: int) -> bytes:
    """Our SDP while a call is parked: PCMU from `host:port`, send-only (music on hold)
    or inactive (no music: port 9, discard)."""
    ident = random.getrandbits(31)
    direction = "sendonly" if port != 9 else "inactive"
    return (f"v=0\r\no=trimaran {ident} {ident} IN IP4 {host}\r\ns=call park\r\n"
            f"c=IN IP4 {host}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\n"
            f"a=rtpmap:0 PCMU/8000\r\na={direction}\r\n").encode()


