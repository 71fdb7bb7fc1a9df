"""Call Park (SPEC APP-1, APP-2), and the call legs the Call Park service bridges.

Theory of operation. A parked call is a dialog between the application server and the
parked party; every dialog of ours goes through the Front End (its Record-Route).

* Park. The parker, in a call with the party to park, sends an out-of-dialog
  ``REFER sip:callpark@DOMAIN`` whose ``Refer-To`` names that party with the call to
  replace (``<sip:b@DOMAIN?Replaces=CALLID%3Bto-tag%3DX%3Bfrom-tag%3DY>``, as an
  attended transfer does; RFC 3515, RFC 3891). The Front End hands it to the Call Park
  of the parker's pool (`AppClaim.owner`). We take the first free orbit of that pool's
  ranges and answer ``202 Accepted`` with the orbit in ``X-Trimaran-Orbit`` and as the
  ``text/plain`` body, then send the party an INVITE with ``Replaces`` through the
  Front End: its phone swaps its call with the parker for a call with us, and hangs
  up on the parker. The outcome is the REFER subscription's one NOTIFY (``message/
  sipfrag``, ``Subscription-State: terminated``): ``SIP/2.0 200 OK`` when parked, else
  the party's final answer, and the orbit is free again.
* Retrieve. An INVITE to the orbit number (claim target): the parked party is
  re-INVITEd with the caller's SDP, the caller answered with the parked party's
  answer, and the two dialogs are bridged (`Legs`: BYE, re-INVITE, UPDATE, INFO are
  relayed leg to leg). An orbit without a call: 404 with the reason.
* Timeout. Parked `timeout_seconds`: the parker is rung back (`ring_back_seconds`
  each, `max_pickup_attempts` times), then `timeout_uri` if set; whoever answers is
  bridged with the parked party, else the parked party is hung up. A retrieval while
  it rings back wins: the ring-back is cancelled.

States of a parked call (`_MOVES`): PARKING (the INVITE with Replaces is out) →
PARKED → RINGING_BACK (still retrievable) → TAKEN (being connected to a retriever or
whoever answered the ring-back) → ENDED; TAKEN goes back to PARKED when the taker
went away before being connected. Parked calls live in the memory of the pool's
active application server: they die with it (as in the model), and orbits move with
pool failover because the Front End sends orbit calls to the pool serving the owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import unquote

from trimaran.apps.audio import Audio, AudioError, read_wav
from trimaran.apps.legs import Leg, Legs, hold_sdp, hop
from trimaran.apps.model import CallPark
from trimaran.apps.rtp import RtpSender, offer_address
from trimaran.apps.server import AppContext
from trimaran.net.endpoint import IncomingRequest
from trimaran.net.transport import TransportError
from trimaran.sip.dialog import Dialog
from trimaran.sip.errors import SipParseError
from trimaran.sip.headers import Headers, NameAddr
from trimaran.sip.ids import new_tag
from trimaran.sip.message import Request, Response
from trimaran.sip.transaction import TransactionError
from trimaran.sip.uri import URI
from trimaran.voice.trust import AppClaim

log = logging.getLogger(__name__)

ORBIT_HEADER = "X-Trimaran-Orbit"
SIPFRAG = "message/sipfrag;version=2.0"
PARK_ANSWER_SECONDS = 8.0      # how long the party's phone has to take the Replaces INVITE


# -- Call Park ------------------------------------------------------------------------
class ParkState(StrEnum):
    """Where a parked call is (see the module docstring)."""

    PARKING = "parking"
    PARKED = "parked"
    RINGING_BACK = "ringing_back"
    TAKEN = "taken"
    ENDED = "ended"


_MOVES: dict[ParkState, frozenset[ParkState]] = {
    ParkState.PARKING: frozenset({ParkState.PARKED, ParkState.ENDED}),
    ParkState.PARKED: frozenset({ParkState.RINGING_BACK, ParkState.TAKEN, ParkState.ENDED}),
    ParkState.RINGING_BACK: frozenset({ParkState.TAKEN, ParkState.ENDED}),
    ParkState.TAKEN: frozenset({ParkState.PARKED, ParkState.ENDED}),
    ParkState.ENDED: frozenset(),
}


class ParkError(Exception):
    """An impossible move of a parked call (a bug of ours)."""


@dataclass(eq=False)
class ParkedCall:
    """A call in an orbit."""

    orbit: str
    owner: str
    parker: str                     # the parker's AOR (rung back on timeout)
    party: str                      # the parked party's AOR
    since: float                    # wall clock
    state: ParkState = ParkState.PARKING
    leg: Leg | None = None
    stop: asyncio.Event = field(default_factory=asyncio.Event)   # retrieved or ended
    music: asyncio.Event = field(default_factory=asyncio.Event)  # set: music stops
    ring_backs: int = 0

    def move(self, to: ParkState) -> None:
        """Change state; `ParkError` for a move the table does not allow."""
        if to not in _MOVES[self.state]:
            raise ParkError(f"parked call on {self.orbit}: no move from {self.state} to {to}")
        self.state = to


class CallParkApp:
    """The Call Park service of the pools this application server runs (APP-1)."""

    kind = "park"

    def __init__(self, context: AppContext) -> None:
        self.context = context
        self.legs = Legs(context.endpoint, lambda: context.contact("tcp"))
        self.orbits: dict[str, ParkedCall] = {}
        self.stats: Counter[str] = Counter()

    # -- the App protocol ---------------------------------------------------------------
    async def handle(self, incoming: IncomingRequest, claim: AppClaim) -> None:
        """REFER: park a call; INVITE to an orbit: retrieve it."""
        method = incoming.request.method
        if method == "REFER":
            await self._park(incoming, claim)
        elif method == "INVITE":
            await self._retrieve(incoming, claim)
        else:
            self._reply(incoming, 405, f"{method} is not a Call Park request")

    async def in_dialog(self, incoming: IncomingRequest) -> bool:
        """Requests inside parked and retrieved calls."""
        return await self.legs.on_request(incoming)

    def status(self) -> dict[str, object]:
        """Parked calls, connected calls, counters."""
        config = self.context.apps_config()
        return {
            "orbits_configured": sum(len(r.numbers()) for p in config.call_park
                                     for r in p.orbits),
            "parked": [{"orbit": p.orbit, "pool": p.owner, "parker": p.parker,
                        "party": p.party, "since": round(p.since, 3), "state": p.state.value,
                        "ring_backs": p.ring_backs}
                       for p in sorted(self.orbits.values(), key=lambda p: p.orbit)],
            "calls_connected": self.legs.bridged, "stats": dict(sorted(self.stats.items()))}

    # -- park -----------------------------------------------------------------------------
    async def _park(self, incoming: IncomingRequest, claim: AppClaim) -> None:
        request = incoming.request
        service = self.context.apps_config().park_of(claim.owner)
        if service is None:
            self._reply(incoming, 404, f"No Call Park service for pool {claim.owner}")
            return
        found = self._refer_target(request)
        if found is None:
            self._reply(incoming, 400, "Refer-To must name the call to park (with Replaces)")
            return
        party, replaces = found
        tag = new_tag()
        try:
            notifier = Dialog.from_uas(request, tag)     # the REFER's subscription
        except SipParseError as exc:
            self._reply(incoming, 400, f"Not a usable REFER: {exc}")
            return
        orbit = next((n for r in service.orbits for n in r.numbers()
                      if n not in self.orbits), None)
        if orbit is None:
            self.stats["no_free_orbit"] += 1
            self._reply(incoming, 486, f"Every orbit of pool {claim.owner} is in use")
            return
        parked = ParkedCall(orbit, claim.owner, claim.sender, party,
                            self.context.wall_clock())
        self.orbits[orbit] = parked
        headers = Headers([("Contact", self.context.contact("tcp")), (ORBIT_HEADER, orbit),
                           ("Content-Type", "text/plain")])
        for rr in request.headers.get_all("Record-Route"):
            headers.add("Record-Route", rr)
        self._reply(incoming, 202, "Accepted", headers=headers, body=orbit.encode(), tag=tag)
        response = await self._move_party(parked, service, replaces)
        await self._notify(notifier, response)

    def _refer_target(self, request: Request) -> tuple[str, str] | None:
        """(the party's AOR or number URI, the Replaces value) of a park REFER."""
        value = request.headers.get("Refer-To")
        if not value:
            return None
        try:
            uri = NameAddr.parse(value).uri
        except SipParseError:
            return None
        replaces = next((unquote(v) for k, v in uri.headers if k.lower() == "replaces"), "")
        if not replaces or not uri.user:
            return None
        domain = self.context.config.domain
        if uri.param("user") == "phone" or uri.scheme == "tel":
            party = str(URI(uri.scheme, uri.user, None, uri.host, None, uri.params))
        else:                       # an AOR, or a contact: its user at our domain
            party = URI("sip", uri.user, None, domain).aor
        return party, replaces

    async def _move_party(self, parked: ParkedCall, service: CallPark,
                          replaces: str) -> Response:
        """Replace the parker's call with ours; start the timeout. The party's answer."""
        music = await self._music_sender(service)
        port = music[0].port if music is not None else 9
        sdp = hold_sdp(self.context.config.host, port)
        invite = self.context.user_invite(parked.party, parked.parker, body=sdp,
                                          extra=(("Replaces", replaces),))
        response, leg = await self.legs.place(invite, self.context.frontend, "parked",
                                              ring_for=PARK_ANSWER_SECONDS)
        if leg is None:
            self._end(parked, f"the party did not take the call ({response.status})")
            self.stats["park_failed"] += 1
            if music is not None:
                music[0].close()
            return response
        parked.leg = leg
        leg.on_bye = lambda _: self._end(parked, "the parked party hung up")
        parked.move(ParkState.PARKED)
        self.stats["parked"] += 1
        log.info("call of %s parked on %s by %s", parked.party, parked.orbit, parked.parker)
        if music is not None:
            self.context.spawn(self._play(parked, music[0], music[1], leg.remote_sdp))
        self.context.spawn(self._watch(parked, service, parked.stop))
        return response

    async def _notify(self, notifier: Dialog, response: Response) -> None:
        """The REFER subscription's one NOTIFY (RFC 3515 §2.4.5): the party's answer."""
        notify = notifier.create_request("NOTIFY", via=self.context.endpoint.via("tcp"),
                                         contact=NameAddr.parse(self.context.contact("tcp")))
        notify.headers.add("Event", "refer")
        notify.headers.add("Subscription-State", "terminated;reason=noresource")
        notify.headers.add("Content-Type", SIPFRAG)
        notify.body = f"SIP/2.0 {response.status} {response.reason}\r\n".encode()
        with contextlib.suppress(TransportError):
            await self.context.endpoint.request(notify, hop(notifier))

    # -- music on hold ------------------------------------------------------------------
    async def _music_sender(self, service: CallPark) -> tuple[RtpSender, Audio] | None:
        if service.music_on_hold is None:
            return None
        data = self.context.audio(service.music_on_hold)
        if data is None:
            return None
        try:
            audio = read_wav(data)
        except AudioError as exc:
            log.warning("music on hold %s not played: %s", service.music_on_hold, exc)
            return None
        sender = RtpSender(self.context.config.host)
        await sender.open()
        return sender, audio

    async def _play(self, parked: ParkedCall, sender: RtpSender, audio: Audio,
                    sdp: bytes) -> None:
        """Music on hold to the parked party, over and over, until the call leaves."""
        remote = offer_address(sdp)
        try:
            while remote is not None and not parked.music.is_set():
                if not await sender.play(audio, remote, stop=parked.music):
                    break
        finally:
            sender.close()

    # -- retrieve -------------------------------------------------------------------------
    async def _retrieve(self, incoming: IncomingRequest, claim: AppClaim) -> None:
        orbit = claim.target
        parked = self.orbits.get(orbit)
        held = self.legs.hold(incoming)
        if parked is None or parked.leg is None or \
                parked.state not in (ParkState.PARKED, ParkState.RINGING_BACK):
            self.stats["retrieve_empty"] += 1
            self.legs.refuse(held, 404, f"No call is parked on orbit {orbit}")
            return
        parked.move(ParkState.TAKEN)
        parked.stop.set()                    # stops the timeout or the ring-back
        leg = parked.leg
        response = await self.legs.reinvite(leg, incoming.request.body)
        if not 200 <= response.status < 300:
            self.legs.refuse(held, 480, f"The call parked on {orbit} is gone")
            await self.legs.hang_up(leg)
            self._end(parked, f"re-INVITE refused ({response.status})")
            return
        taker = self.legs.answer(held, response.body, "retriever")
        if taker is None:                    # the retriever gave up meanwhile: park again
            self._repark(parked)
            return
        self._connect(parked, taker, "retrieved")

    def _connect(self, parked: ParkedCall, taker: Leg, how: str) -> None:
        assert parked.leg is not None
        parked.leg.on_bye = None
        self.legs.bridge(taker, parked.leg)
        self.stats[how] += 1
        log.info("call parked on %s %s (%s)", parked.orbit, how, taker.label)
        self._end(parked, how)

    def _repark(self, parked: ParkedCall) -> None:
        parked.move(ParkState.PARKED)
        parked.stop = asyncio.Event()
        service = self.context.apps_config().park_of(parked.owner)
        if service is not None:
            self.context.spawn(self._watch(parked, service, parked.stop))

    def _end(self, parked: ParkedCall, why: str) -> None:
        if parked.state is ParkState.ENDED:
            return
        parked.move(ParkState.ENDED)
        parked.stop.set()
        parked.music.set()
        if self.orbits.get(parked.orbit) is parked:
            del self.orbits[parked.orbit]
        log.info("orbit %s free: %s", parked.orbit, why)

    # -- timeout ----------------------------------------------------------------------------
    async def _watch(self, parked: ParkedCall, service: CallPark,
                     stop: asyncio.Event) -> None:
        """Parked too long: ring the parker back, then `timeout_uri`, then hang up."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), service.timeout_seconds)
        if stop.is_set() or parked.state is not ParkState.PARKED:
            return
        parked.move(ParkState.RINGING_BACK)
        self.stats["timed_out"] += 1
        targets = [(parked.parker, "ring-back")] * service.max_pickup_attempts
        if service.timeout_uri is not None:
            targets.append((service.timeout_uri, "timeout_uri"))
        for target, label in targets:
            if label == "ring-back":
                parked.ring_backs += 1
            if await self._ring(parked, target, label, service.ring_back_seconds, stop):
                return
            if stop.is_set():
                return                       # retrieved (or hung up) meanwhile
        assert parked.leg is not None
        self.stats["hung_up_unanswered"] += 1
        await self.legs.hang_up(parked.leg)
        self._end(parked, "nobody answered the ring-back")

    async def _ring(self, parked: ParkedCall, target: str, label: str, seconds: float,
                    stop: asyncio.Event) -> bool:
        """Ring `target` for the parked call: True when it answered and is connected."""
        assert parked.leg is not None
        invite = self.context.user_invite(target, parked.party, body=parked.leg.remote_sdp)
        response, taker = await self.legs.place(invite, self.context.frontend, label,
                                                ring_for=seconds, stop=stop)
        if taker is None:
            log.info("orbit %s: %s %s not answered (%d)", parked.orbit, label, target,
                     response.status)
            return False
        parked.move(ParkState.TAKEN)
        parked.music.set()
        reinvite = await self.legs.reinvite(parked.leg, taker.remote_sdp)
        if not 200 <= reinvite.status < 300:
            await self.legs.hang_up(taker)
            await self.legs.hang_up(parked.leg)
            self._end(parked, f"re-INVITE refused ({reinvite.status})")
            return True
        self._connect(parked, taker, "rang_back" if label == "ring-back" else label)
        return True

    # -- helpers ----------------------------------------------------------------------------
    def _reply(self, incoming: IncomingRequest, status: int, reason: str | None = None, *,
               headers: Headers | None = None, body: bytes = b"",
               tag: str | None = None) -> None:
        if status >= 300 and reason:
            host, port = self.context.endpoint.contact_host_port("tcp")
            headers = headers or Headers()
            headers.add("Warning", f'399 {host}:{port} "{reason[:200]}"')
        with contextlib.suppress(TransactionError):
            self.context.endpoint.reply(incoming, status, reason and reason[:120],
                                        headers=headers, body=body, to_tag=tag or new_tag())


def call_park(context: AppContext) -> CallParkApp:
    """The registry's factory."""
    return CallParkApp(context)
