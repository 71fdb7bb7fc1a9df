"""The conference focus: instant-message conferences (SPEC APP-7; RFC 4353, RFC 4575,
RFC 4579).

Theory of operation. A meeting is a record of the organizer's pool (`store.meetings`,
created over the Front End's HTTP API, copied to the paired pool by the Backup
Service). Its focus URI, ``sip:ORGANIZER@DOMAIN;opaque=app:conf:focus:id:ID``, takes a
request to a Front End, which sends it to the active application server of the pool
serving the organizer's home pool now (its own, or the backup pool after a failover),
with a signed claim: kind ``conference``, target the meeting id, sender the
authenticated user. The Front End record-routes, so everything inside the dialogs
below passes through it in both directions.

* Join: an INVITE (an IM session: no body, or an SDP offer with ``m=message``) for a
  meeting the pool's store has is answered 200 (our SDP echoes the offer's message
  media, any other media refused with port 0) and the dialog becomes one *leg* of the
  conference: the sender is a participant, once per dialog (a user joining from two
  devices is one user with two endpoints). A meeting the store lacks is 404 "No such
  meeting"; a store we cannot reach is 503 with Retry-After. BYE leaves.
* Roster: a SUBSCRIBE with ``Event: conference`` opens a subscription (RFC 6665) whose
  NOTIFYs carry RFC 4575 documents (`trimaran.apps.conference_info`): the full state
  first (and after every refresh), then a partial document per join and leave, the
  version counted per subscription. Expires 0 fetches once; unsubscribing, or letting
  the subscription run out, gets a final NOTIFY with ``Subscription-State:
  terminated``.
* Messages: a MESSAGE inside a participant's leg, or outside any dialog to the focus
  URI from a user who has joined, is answered 200 and sent as a MESSAGE inside the leg
  of every other participant (every leg of another user). Our convention, since RFC
  4575 says nothing here: the relayed MESSAGE is ``From`` the focus (the dialog's
  local side), with ``X-Trimaran-Sender: "Display" <sip:sender@domain>`` naming who
  wrote it, and the original Content-Type and body. A recipient trusts that header
  only on a MESSAGE inside its own leg of the conference (`trimaran.client.conference`).

Requests we send inside one dialog go out one at a time, in the order their events
happened (an outbox per dialog), so a subscriber sees versions in order and a
participant sees messages in the order they were written. A dialog that answers 481
(or times out, or is refused as unknown), or fails `MAX_FAILURES` requests in a row,
is gone: a leg leaves, a subscription ends.

What the focus holds is in memory on the pool's active application server: when that
server is lost, conferences in progress are lost with it (their users join again; the
meetings themselves are in the store).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from trimaran.apps.conference_info import (
    CONTENT_TYPE,
    EVENT,
    ConferenceInfo,
    Endpoint,
    UserInfo,
    deleted_user,
    full_state,
    partial_state,
    render,
)
from trimaran.apps.server import ALLOW, AppContext
from trimaran.client.ua import uri_address
from trimaran.net.endpoint import IncomingRequest
from trimaran.net.transport import Address, Flow, TransportError
from trimaran.roles.frontend.apps import focus_uri
from trimaran.sip.dialog import Dialog
from trimaran.sip.errors import SipParseError
from trimaran.sip.headers import Headers, NameAddr
from trimaran.sip.ids import new_tag
from trimaran.sip.message import Request, Response
from trimaran.sip.transaction import TransactionError
from trimaran.sip.uri import URI
from trimaran.store.base import StoreUnavailable
from trimaran.store.model import Meeting
from trimaran.voice.trust import AppClaim

log = logging.getLogger(__name__)

KIND = "conference"
SENDER_HEADER = "X-Trimaran-Sender"
ORGANIZER_ROLE, ATTENDEE_ROLE = "presenter", "attendee"
DEFAULT_EXPIRES = 3600          # a roster SUBSCRIBE without Expires
MAX_EXPIRES = 3600              # longer ones are shortened to this
MAX_LEGS = 250                  # per conference
MAX_MESSAGE = 64 * 1024         # bytes of one relayed message
RETRY_AFTER = "5"
#: Answers meaning the dialog is gone at the other end (or unreachable for good).
GONE = frozenset({404, 408, 410, 430, 480, 481})
#: Failed requests in a row after which a dialog is gone whatever the answers were (a
#: Front End that cannot reach a vanished client answers 500: RFC 3261 §16.7 step 6).
MAX_FAILURES = 3


def im_answer(offer: bytes, host: str, session: int) -> bytes | None:
    """Our SDP answer to an IM session offer (RFC 3264): each ``m=message`` section
    echoed, any other media refused (port 0); None when the offer has no message media."""
    sections: list[list[str]] = []
    for raw in offer.decode("utf-8", "replace").splitlines():
        line = raw.strip()
        if line.startswith("m="):
            sections.append([line])
        elif sections and line.startswith("a="):
            sections[-1].append(line)
    sections = [s for s in sections if len(s[0][2:].split()) >= 4]
    if not any(s[0].startswith("m=message ") for s in sections):
        return None
    family = "IP6" if ":" in host else "IP4"
    lines = ["v=0", f"o=trimaran-focus {session} {session} IN {family} {host}",
             "s=conference", f"c=IN {family} {host}", "t=0 0"]
    for section in sections:
        fields = section[0][2:].split()
        if fields[0] == "message":
            lines.extend(section)
        else:
            lines.append(f"m={fields[0]} 0 {' '.join(fields[2:])}")
    return ("\r\n".join(lines) + "\r\n").encode()


@dataclass(eq=False)
class _Peer:
    """A dialog of ours with a user: a participant's leg or a roster subscription."""

    kind: str                     # "leg" | "watcher"
    meeting: str
    aor: str
    dialog: Dialog
    transport: str
    display: str | None = None
    expires_at: float = 0.0       # watchers: when the subscription ends (monotonic)
    version: int = 0              # watchers: the last conference-info version queued
    outbox: deque[Callable[[], Request]] = field(default_factory=deque)
    sending: bool = False
    failures: int = 0             # requests failed in a row
    gone: bool = False
    acked: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def key(self) -> tuple[str, str]:
        """As requests inside the dialog name it: Call-ID and our tag."""
        return self.dialog.key

    @property
    def hop(self) -> Address:
        """Where requests inside the dialog go first (the Front End that routed it)."""
        return uri_address(self.dialog.first_hop, self.transport)


@dataclass(eq=False)
class _Conference:
    """A meeting in progress: its legs and its roster subscriptions."""

    meeting: Meeting
    focus: str
    legs: dict[tuple[str, str], _Peer] = field(default_factory=dict)
    watchers: dict[tuple[str, str], _Peer] = field(default_factory=dict)

    def user(self, aor: str) -> UserInfo:
        """The roster entry of `aor`: its endpoints, or ``deleted`` when it has none."""
        legs = [leg for leg in self.legs.values() if leg.aor == aor]
        if not legs:
            return deleted_user(aor)
        endpoints: list[Endpoint] = []
        for leg in legs:
            entity = str(leg.dialog.remote_target)
            if any(e.entity == entity for e in endpoints):   # two dialogs, one Contact
                entity = f"{entity};x-dialog={leg.dialog.id.local_tag}"
            endpoints.append(Endpoint(entity, call_id=leg.dialog.id.call_id,
                                      from_tag=leg.dialog.id.remote_tag,
                                      to_tag=leg.dialog.id.local_tag))
        display = next((leg.display for leg in legs if leg.display), None)
        role = ORGANIZER_ROLE if aor == self.meeting.organizer else ATTENDEE_ROLE
        return UserInfo(aor, display, (role,), tuple(endpoints))

    def users(self) -> list[UserInfo]:
        """Everyone in the conference."""
        return [self.user(aor) for aor in sorted({leg.aor for leg in self.legs.values()})]

    def full(self, version: int) -> ConferenceInfo:
        """The full-state document, numbered `version`."""
        return full_state(self.focus, version, self.users(), subject=self.meeting.subject)

    @property
    def idle(self) -> bool:
        """Nobody in it and nobody watching."""
        return not self.legs and not self.watchers


Handler = Callable[["ConferenceFocus", IncomingRequest, AppClaim], Awaitable[None]]
DialogHandler = Callable[["ConferenceFocus", IncomingRequest, _Peer], Awaitable[None]]


class ConferenceFocus:
    """The conference application of one application server."""

    kind = KIND

    def __init__(self, context: AppContext) -> None:
        self.context = context
        self.conferences: dict[str, _Conference] = {}
        self._dialogs: dict[tuple[str, str], _Peer] = {}
        self._pending: dict[tuple[str, str], IncomingRequest] = {}  # joins being answered
        self.stats: Counter[str] = Counter()

    # -- the App protocol --------------------------------------------------------------
    async def handle(self, incoming: IncomingRequest, claim: AppClaim) -> None:
        """A join (INVITE), roster subscription (SUBSCRIBE) or message (MESSAGE)."""
        handler = _START.get(incoming.request.method)
        if handler is None:
            self._reply(incoming, 405, headers=Headers([("Allow", ALLOW)]))
            return
        await handler(self, incoming, claim)

    async def in_dialog(self, incoming: IncomingRequest) -> bool:
        """Requests inside our legs and subscriptions, and CANCELs of joins."""
        request = incoming.request
        if request.method == "CANCEL":
            return self._cancel(incoming)
        peer = self._dialogs.get((request.call_id, request.to.tag or ""))
        if peer is None:
            return False
        if request.method == "ACK":
            peer.acked.set()
            return True
        if not peer.dialog.accepts_remote_cseq(request):
            self._reply(incoming, 500, "CSeq out of order")
            return True
        handler = (_LEG if peer.kind == "leg" else _WATCHER).get(request.method)
        if handler is None:
            self._reply(incoming, 405, headers=Headers([("Allow", ALLOW)]))
            return True
        await handler(self, incoming, peer)
        return True

    def status(self) -> dict[str, object]:
        """Meetings in progress, participants, subscriptions, messages relayed."""
        active = {mid: c for mid, c in self.conferences.items() if c.legs}
        return {
            "meetings_active": len(active),
            "participants": sum(len({leg.aor for leg in c.legs.values()})
                                for c in active.values()),
            "legs": sum(len(c.legs) for c in active.values()),
            "watchers": sum(len(c.watchers) for c in self.conferences.values()),
            "messages_relayed": self.stats["messages_relayed"],
            "deliveries": self.stats["deliveries"],
            "delivery_failures": self.stats["delivery_failures"],
            "joins": self.stats["joins"], "leaves": self.stats["leaves"],
            "refused": self.stats["refused"],
            "meetings": {mid: {"subject": c.meeting.subject,
                               "participants": sorted({leg.aor for leg in c.legs.values()}),
                               "watchers": len(c.watchers)}
                         for mid, c in sorted(active.items())},
        }

    # -- outside a dialog ----------------------------------------------------------------
    async def _start_invite(self, incoming: IncomingRequest, claim: AppClaim) -> None:
        """Join (APP-7)."""
        request = incoming.request
        pending = (request.call_id, request.from_.tag or "")
        self._pending[pending] = incoming
        try:
            meeting = await self._meeting(incoming, claim)
        finally:
            cancelled = self._pending.pop(pending, None) is None
        if meeting is None or cancelled:
            return
        answer: bytes | None = None
        if request.body:
            if request.content_type != "application/sdp":
                self._refuse(incoming, 415, "Only SDP offers",
                             Headers([("Accept", "application/sdp")]))
                return
            answer = im_answer(request.body, self.context.config.host,
                               int(self.context.wall_clock()))
            if answer is None:
                self._refuse(incoming, 488, "Only instant messaging in this conference")
                return
        conference = self._conference(meeting)
        if len(conference.legs) >= MAX_LEGS:
            self._refuse(incoming, 403, "Conference is full")
            return
        leg = self._open(incoming, "leg", claim, meeting.id, answer)
        if leg is None:
            return
        conference.legs[leg.key] = leg
        self.stats["joins"] += 1
        log.info("meeting %s: %s joined (%s)", meeting.id, leg.aor, request.call_id)
        self._roster_changed(conference, leg.aor)

    async def _start_subscribe(self, incoming: IncomingRequest, claim: AppClaim) -> None:
        """A roster subscription (RFC 4575 over RFC 6665)."""
        expires = self._subscription_expires(incoming)
        if expires is None:
            return
        meeting = await self._meeting(incoming, claim)
        if meeting is None:
            return
        conference = self._conference(meeting)
        watcher = self._open(incoming, "watcher", claim, meeting.id, None,
                             Headers([("Expires", str(expires))]))
        if watcher is None:
            self._forget_if_idle(conference)
            return
        if expires == 0:                       # a fetch: one NOTIFY, no subscription
            self._dialogs.pop(watcher.key, None)
            self._notify(watcher, conference.full, terminated="timeout")
            self._forget_if_idle(conference)
            return
        conference.watchers[watcher.key] = watcher
        self._watch_until(watcher, expires)
        self._notify(watcher, conference.full)

    async def _start_message(self, incoming: IncomingRequest, claim: AppClaim) -> None:
        """A message to the focus URI outside any dialog: from a participant only."""
        conference = self.conferences.get(claim.target)
        legs = [leg for leg in conference.legs.values() if leg.aor == claim.sender] \
            if conference is not None else []
        if conference is None or not legs:
            if conference is None and await self._meeting(incoming, claim) is None:
                return                                      # answered: 404 or 503
            self._refuse(incoming, 403, "Join the conference first")
            return
        display = incoming.request.from_.display_name or legs[0].display
        self._relay(incoming, conference, claim.sender, display)

    # -- inside a leg ------------------------------------------------------------------
    async def _leg_message(self, incoming: IncomingRequest, leg: _Peer) -> None:
        conference = self.conferences.get(leg.meeting)
        if conference is None:
            self._reply(incoming, 481)
            return
        self._relay(incoming, conference, leg.aor, leg.display)

    async def _leg_bye(self, incoming: IncomingRequest, leg: _Peer) -> None:
        self._reply(incoming, 200)
        self._leave(leg, "BYE")

    async def _leg_invite(self, incoming: IncomingRequest, leg: _Peer) -> None:
        """A re-INVITE (session refresh): the same answer, nothing else changes."""
        request = incoming.request
        answer = im_answer(request.body, self.context.config.host,
                           int(self.context.wall_clock())) if request.body else None
        if request.body and answer is None:
            self._reply(incoming, 488, "Only instant messaging in this conference")
            return
        leg.dialog.update_target(request)
        headers = Headers([("Contact", self._contact(leg.transport))])
        if answer is not None:
            headers.add("Content-Type", "application/sdp")
        self._reply(incoming, 200, headers=headers, body=answer or b"")

    # -- inside a subscription -----------------------------------------------------------
    async def _watch_subscribe(self, incoming: IncomingRequest, watcher: _Peer) -> None:
        """A refresh (the full state again) or, with Expires 0, the end."""
        conference = self.conferences.get(watcher.meeting)
        if conference is None or watcher.key not in conference.watchers:
            self._reply(incoming, 481)
            return
        expires = self._subscription_expires(incoming)
        if expires is None:
            return
        self._reply(incoming, 200, headers=Headers([("Expires", str(expires))]))
        if expires == 0:
            self._unwatch(watcher)
            self._notify(watcher, conference.full, terminated="timeout")
            return
        self._watch_until(watcher, expires)
        self._notify(watcher, conference.full)

    def _watch_until(self, watcher: _Peer, expires: int) -> None:
        watcher.expires_at = self.context.monotonic() + expires
        self.context.spawn(self._expire(watcher, watcher.expires_at))

    async def _expire(self, watcher: _Peer, at: float) -> None:
        """End the subscription when it runs out unrefreshed (RFC 6665 §4.2.2)."""
        await asyncio.sleep(max(0.0, at - self.context.monotonic()))
        conference = self.conferences.get(watcher.meeting)
        if watcher.expires_at != at or conference is None or \
                watcher.key not in conference.watchers:
            return                                # refreshed, or ended already
        self._unwatch(watcher)
        self._notify(watcher, conference.full, terminated="timeout")

    # -- the conference --------------------------------------------------------------------
    async def _meeting(self, incoming: IncomingRequest, claim: AppClaim) -> Meeting | None:
        """The claimed meeting from the pool's store; None (answered) when it is absent
        or the store cannot say."""
        store = self.context.store
        if store is None:
            self._refuse(incoming, 503, "No meeting store here",
                         Headers([("Retry-After", RETRY_AFTER)]))
            return None
        try:
            meeting = await store.meetings.get(claim.target)
        except StoreUnavailable as exc:
            log.info("meeting %s: store unavailable (%s)", claim.target, exc)
            self._refuse(incoming, 503, "Meetings unavailable for now",
                         Headers([("Retry-After", RETRY_AFTER)]))
            return None
        if meeting is None:
            self._refuse(incoming, 404, "No such meeting")
            return None
        if meeting.expires_at is not None and meeting.expires_at <= self.context.wall_clock():
            self._refuse(incoming, 404, "Meeting has ended")
            return None
        return meeting

    def _conference(self, meeting: Meeting) -> _Conference:
        conference = self.conferences.get(meeting.id)
        if conference is None:
            conference = _Conference(meeting, focus_uri(meeting.organizer, meeting.id))
            self.conferences[meeting.id] = conference
        return conference

    def _open(self, incoming: IncomingRequest, kind: str, claim: AppClaim, meeting: str,
              answer: bytes | None, extra: Headers | None = None) -> _Peer | None:
        """Answer a dialog-creating request 200 and return its dialog (None: answered
        with an error)."""
        request = incoming.request
        tag = new_tag()
        try:
            dialog = Dialog.from_uas(request, tag)
        except SipParseError as exc:
            self._refuse(incoming, 400, str(exc)[:100])
            return None
        transport = "udp" if not incoming.flow.reliable else incoming.flow.transport
        headers = Headers([("Contact", self._contact(transport)), ("Allow", ALLOW)])
        for rr in request.headers.get_all("Record-Route"):
            headers.add("Record-Route", rr)
        for name, value in extra or ():
            headers.add(name, value)
        if answer is not None:
            headers.add("Content-Type", "application/sdp")
        response = self._reply(incoming, 200, headers=headers, body=answer or b"", to_tag=tag)
        peer = _Peer(kind, meeting, claim.sender, dialog, transport,
                     request.from_.display_name)
        self._dialogs[peer.key] = peer
        if kind == "leg" and response is not None and not incoming.flow.reliable:
            self.context.spawn(self._retransmit_2xx(peer, response, incoming.flow))
        return peer

    def _leave(self, leg: _Peer, why: str) -> None:
        leg.gone = True                   # what was queued for it is not sent any more
        leg.outbox.clear()
        self._dialogs.pop(leg.key, None)
        conference = self.conferences.get(leg.meeting)
        if conference is None or conference.legs.pop(leg.key, None) is None:
            return
        self.stats["leaves"] += 1
        log.info("meeting %s: %s left (%s)", leg.meeting, leg.aor, why)
        self._roster_changed(conference, leg.aor)
        self._forget_if_idle(conference)

    def _unwatch(self, watcher: _Peer) -> None:
        self._dialogs.pop(watcher.key, None)
        conference = self.conferences.get(watcher.meeting)
        if conference is not None:
            conference.watchers.pop(watcher.key, None)
            self._forget_if_idle(conference)

    def _forget_if_idle(self, conference: _Conference) -> None:
        if conference.idle and self.conferences.get(conference.meeting.id) is conference:
            del self.conferences[conference.meeting.id]

    def _roster_changed(self, conference: _Conference, aor: str) -> None:
        """Tell every subscriber what became of `aor` (a partial document)."""
        user = conference.user(aor)
        count = len({leg.aor for leg in conference.legs.values()})
        for watcher in conference.watchers.values():
            self._notify(watcher, lambda v: partial_state(conference.focus, v, [user], count))

    def _relay(self, incoming: IncomingRequest, conference: _Conference, sender: str,
               display: str | None) -> None:
        """Answer a participant's message and send it to every other participant."""
        request = incoming.request
        if len(request.body) > MAX_MESSAGE:
            self._reply(incoming, 413, "Message too large")
            return
        self._reply(incoming, 200)
        self.stats["messages_relayed"] += 1
        named = str(NameAddr(URI.parse(sender), display))
        content_type = request.headers.get("Content-Type") or "text/plain"
        body = request.body
        for leg in conference.legs.values():
            if leg.aor != sender:
                self._send(leg, functools.partial(self._message, leg, named, content_type,
                                                  body))

    # -- requests we send inside dialogs -------------------------------------------------
    def _message(self, leg: _Peer, sender: str, content_type: str, body: bytes) -> Request:
        request = leg.dialog.create_request(
            "MESSAGE", via=self.context.endpoint.via(leg.transport))
        request.headers.add(SENDER_HEADER, sender)
        request.headers.add("Content-Type", content_type)
        request.body = body
        return request

    def _notify(self, watcher: _Peer, document: Callable[[int], ConferenceInfo], *,
                terminated: str | None = None) -> None:
        """Queue a NOTIFY with the next version of `document` (built now: the state of
        this moment), or the final one of the subscription."""
        watcher.version += 1
        body = render(document(watcher.version))

        def build() -> Request:
            request = watcher.dialog.create_request(
                "NOTIFY", via=self.context.endpoint.via(watcher.transport),
                contact=NameAddr.parse(self._contact(watcher.transport)))
            left = int(max(0.0, watcher.expires_at - self.context.monotonic()))
            state = f"terminated;reason={terminated}" if terminated else \
                f"active;expires={left}"
            request.headers.add("Event", EVENT)
            request.headers.add("Subscription-State", state)
            request.headers.add("Content-Type", CONTENT_TYPE)
            request.body = body
            return request
        self._send(watcher, build)

    def _send(self, peer: _Peer, build: Callable[[], Request]) -> None:
        """Send inside `peer`'s dialog after what is queued there already."""
        if peer.gone:
            return
        peer.outbox.append(build)
        if not peer.sending:
            peer.sending = True
            self.context.spawn(self._drain(peer))

    async def _drain(self, peer: _Peer) -> None:
        try:
            while peer.outbox and not peer.gone:
                request = peer.outbox.popleft()()
                try:
                    response = await self.context.endpoint.request(request, peer.hop)
                except TransportError as exc:
                    response = Response.for_request(request, 503, str(exc)[:80])
                self._delivered(peer, request, response)
        finally:
            peer.sending = False

    def _delivered(self, peer: _Peer, request: Request, response: Response) -> None:
        if 200 <= response.status < 300:
            peer.failures = 0
            if request.method == "MESSAGE":
                self.stats["deliveries"] += 1
            return
        peer.failures += 1
        self.stats["delivery_failures"] += 1
        log.info("meeting %s: %s to %s answered %d %s", peer.meeting, request.method,
                 peer.aor, response.status, response.reason)
        if response.status not in GONE and peer.failures < MAX_FAILURES:
            return
        peer.gone = True
        peer.outbox.clear()
        if peer.kind == "leg":
            self._leave(peer, f"{request.method} answered {response.status}")
        else:
            self._unwatch(peer)

    async def _retransmit_2xx(self, leg: _Peer, response: Response, flow: Flow) -> None:
        """§13.3.1.4: over an unreliable transport, our 2xx again until the ACK."""
        timers = self.context.config.timers
        interval, waited = timers.t1, 0.0
        while waited < 64 * timers.t1 and not leg.acked.is_set() and not leg.gone:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(leg.acked.wait(), interval)
            waited += interval
            if leg.acked.is_set() or leg.key not in self._dialogs:
                return
            with contextlib.suppress(TransportError):
                await self.context.endpoint.transport.send_response(response, flow)
            interval = min(interval * 2, timers.t2)

    # -- small helpers -------------------------------------------------------------------
    def _cancel(self, incoming: IncomingRequest) -> bool:
        """A CANCEL of a join still being answered: 200, then 487 to the INVITE."""
        request = incoming.request
        invite = self._pending.pop((request.call_id, request.from_.tag or ""), None)
        if invite is None:
            return False
        tag = new_tag()
        self._reply(incoming, 200, to_tag=tag)
        self._reply(invite, 487, to_tag=tag)
        return True

    def _subscription_expires(self, incoming: IncomingRequest) -> int | None:
        """The Expires granted (None: the request was refused)."""
        request = incoming.request
        event = (request.headers.get("Event") or "").split(";")[0].strip().lower()
        if event != EVENT:
            self._refuse(incoming, 489, "Bad Event", Headers([("Allow-Events", EVENT)]))
            return None
        accept = [a.split(";")[0].strip().lower()
                  for v in request.headers.get_all("Accept") for a in v.split(",")]
        if accept and not {CONTENT_TYPE, "application/*", "*/*"} & set(accept):
            self._refuse(incoming, 406, "Not Acceptable", Headers([("Accept", CONTENT_TYPE)]))
            return None
        try:
            asked = request.expires
        except SipParseError:
            self._refuse(incoming, 400, "Bad Expires")
            return None
        return min(DEFAULT_EXPIRES if asked is None else asked, MAX_EXPIRES)

    def _contact(self, transport: str) -> str:
        """Our Contact, marked as a focus (RFC 4579 §3)."""
        return self.context.contact(transport) + ";isfocus"

    def _refuse(self, incoming: IncomingRequest, status: int, reason: str,
                headers: Headers | None = None) -> None:
        self.stats["refused"] += 1
        self._reply(incoming, status, reason, headers=headers, to_tag=new_tag())

    def _reply(self, incoming: IncomingRequest, status: int, reason: str | None = None, *,
               headers: Headers | None = None, body: bytes = b"",
               to_tag: str | None = None) -> Response | None:
        if incoming.transaction is None or incoming.transaction.terminated:
            return None
        try:
            return self.context.endpoint.reply(incoming, status, reason, headers=headers,
                                               body=body, to_tag=to_tag)
        except TransactionError:
            return None


_START: dict[str, Handler] = {
    "INVITE": ConferenceFocus._start_invite,
    "SUBSCRIBE": ConferenceFocus._start_subscribe,
    "MESSAGE": ConferenceFocus._start_message,
}
_LEG: dict[str, DialogHandler] = {
    "MESSAGE": ConferenceFocus._leg_message,
    "BYE": ConferenceFocus._leg_bye,
    "INVITE": ConferenceFocus._leg_invite,
}
_WATCHER: dict[str, DialogHandler] = {
    "SUBSCRIBE": ConferenceFocus._watch_subscribe,
}
