"""Group call pickup (SPEC APP-6), served beside Call Park by the application server.

Theory of operation. A member of a pickup group dials the group's number; the Front
End hands the INVITE to the pool's application server (claim kind ``pickup``, target
the number). A sender who is not a member gets 403. Otherwise we ask the Front End
servers of the pool, ours first, then the others by name, one at a time
(``POST /apps/pickup``, signed with the deployment's key: `trimaran.roles.frontend.
pickup`) to hand us the oldest call ringing another member there. That Front End forks
the caller's pending INVITE to us as one more branch, signed with a claim whose target
is ``take:<token>`` naming the waiting pickup. When it arrives we answer it with the
picker's SDP and the picker's INVITE with the caller's SDP, and relay everything
between the two dialogs from then on (`trimaran.apps.park.Legs`); the Front End's
proxy sends our 2xx to the caller and cancels the branches still ringing the member.

No ringing call: 480 "Nothing to pick up". A call that stops ringing before its INVITE
reaches us (answered, abandoned): 480 too. A picker who hangs up first (CANCEL) leaves
the call ringing: the branch to us is refused. Group pickup is unavailable in
resiliency mode (EV-7): the Front End refuses it before it gets here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import Counter
from collections.abc import Callable
from typing import Any

from trimaran.admin.peerclient import PeerClient
from trimaran.apps.legs import Held, Legs
from trimaran.apps.server import AppContext
from trimaran.cms.follower import CMS_KEY_ID
from trimaran.cms.replica import TOPOLOGY_KEY
from trimaran.net.endpoint import IncomingRequest
from trimaran.sip.headers import Headers
from trimaran.sip.ids import new_tag
from trimaran.sip.transaction import TransactionError
from trimaran.sip.uri import URI
from trimaran.topology.errors import TopologyError
from trimaran.topology.loader import parse_topology
from trimaran.topology.resolver import Resolver
from trimaran.voice.model import aor_key
from trimaran.voice.trust import AppClaim

log = logging.getLogger(__name__)

TAKE_PREFIX = "take:"            # the claim target of a call handed to a waiting pickup
PICKUP_PATH = "/apps/pickup"
DELIVERY_SECONDS = 5.0           # how long a handed call may take to reach us
ASK_TIMEOUT = 1.5                # one Front End's answer


class GroupPickupApp:
    """Group call pickup for the pools this application server runs."""

    kind = "pickup"

    def __init__(self, context: AppContext,
                 frontends: Callable[[], list[tuple[str, str]]] | None = None) -> None:
        self.context = context
        self.legs = Legs(context.endpoint, lambda: context.contact("tcp"))
        self._frontends = frontends or self._pool_frontends
        self._waiting: dict[str, asyncio.Future[Held]] = {}
        self._topology: tuple[str, list[tuple[str, str]]] | None = None
        self.stats: Counter[str] = Counter()

    # -- the App protocol ---------------------------------------------------------------
    async def handle(self, incoming: IncomingRequest, claim: AppClaim) -> None:
        """A member's INVITE to a group number, or a ringing call handed to us."""
        if incoming.request.method != "INVITE":
            self._refuse(incoming, 405, f"{incoming.request.method} is not a pickup")
            return
        if claim.target.startswith(TAKE_PREFIX):
            self._delivered(incoming, claim.target[len(TAKE_PREFIX):])
            return
        await self._pick(incoming, claim)

    async def in_dialog(self, incoming: IncomingRequest) -> bool:
        """Requests inside picked-up calls."""
        return await self.legs.on_request(incoming)

    def status(self) -> dict[str, object]:
        """Connected calls, pickups waiting, counters."""
        config = self.context.apps_config()
        return {"groups_configured": sum(len(p.groups) for p in config.group_pickup),
                "waiting": len(self._waiting), "calls_connected": self.legs.bridged,
                "stats": dict(sorted(self.stats.items()))}

    # -- picking up ---------------------------------------------------------------------
    async def _pick(self, incoming: IncomingRequest, claim: AppClaim) -> None:
        pickup = self.context.apps_config().pickup_of(claim.owner)
        group = next((g for g in pickup.groups if g.number == claim.target), None) \
            if pickup is not None else None
        if group is None:
            self._refuse(incoming, 404, f"No pickup group has number {claim.target}")
            return
        picker = aor_key(claim.sender)
        if picker not in {aor_key(m) for m in group.members}:
            self.stats["not_member"] += 1
            self._refuse(incoming, 403, f"{claim.sender} is not a member of pickup group "
                         f"{group.number}")
            return
        held = self.legs.hold(incoming)
        token = secrets.token_hex(12)
        arrival: asyncio.Future[Held] = asyncio.get_running_loop().create_future()
        self._waiting[token] = arrival
        try:
            others = [m for m in group.members if aor_key(m) != picker]
            taken = await self._ask(others, token, held)
            caller = await self._arrival(arrival, held) if taken is not None else None
        finally:
            self._waiting.pop(token, None)
        if caller is None:
            self.stats["nothing_to_pick_up"] += 1
            self.legs.refuse(held, 480, "Nothing to pick up" if taken is None else
                             "Nothing to pick up (the call stopped ringing)")
            return
        self._connect(held, caller, group.number, taken or {})

    @staticmethod
    async def _arrival(arrival: asyncio.Future[Held], picker: Held) -> Held | None:
        """The handed call's INVITE, None when it does not come in time or the picker
        hangs up first."""
        gave_up = asyncio.ensure_future(picker.cancelled.wait())
        waits: set[asyncio.Future[Any]] = {arrival, gave_up}
        try:
            await asyncio.wait(waits, timeout=DELIVERY_SECONDS,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            gave_up.cancel()
        return arrival.result() if arrival.done() else None

    def _connect(self, picker: Held, caller: Held, number: str,
                 taken: dict[str, object]) -> None:
        if picker.done:                          # the picker hung up meanwhile
            self.legs.refuse(caller, 480, "The picker hung up")
            return
        caller_leg = self.legs.answer(caller, picker.incoming.request.body, "caller")
        if caller_leg is None:                   # the caller hung up meanwhile
            self.legs.refuse(picker, 480, "Nothing to pick up (the caller hung up)")
            return
        picker_leg = self.legs.answer(picker, caller.incoming.request.body, "picker")
        assert picker_leg is not None
        self.legs.bridge(caller_leg, picker_leg)
        self.stats["picked_up"] += 1
        log.info("pickup %s: %s took the call of %s to %s", number,
                 picker.incoming.request.from_.uri, taken.get("caller"), taken.get("callee"))

    async def _ask(self, members: list[str], token: str,
                   held: Held) -> dict[str, object] | None:
        """Ask the pool's Front Ends in turn to hand us a call ringing one of `members`."""
        uri = str(URI("sip", self.kind, None, self.context.config.host,
                      self.context.config.sip_port, (("transport", "tcp"),)))
        client = PeerClient(CMS_KEY_ID, self.context.config.secret, timeout=ASK_TIMEOUT,
                            local_host=self.context.config.host)
        try:
            for name, base in self._frontends():
                if held.done:
                    return None
                status, answer = await client.call(
                    "POST", base + PICKUP_PATH, {"members": members, "uri": uri,
                                                 "token": token})
                taken = answer.get("taken")
                if status == 200 and isinstance(taken, dict):
                    log.info("pickup: %s hands over call %s", name, taken.get("call_id"))
                    return taken
                if status != 200:
                    log.info("pickup: %s did not answer (%s: %s)", name, status,
                             answer.get("error"))
            return None
        finally:
            await client.close()

    def _delivered(self, incoming: IncomingRequest, token: str) -> None:
        arrival = self._waiting.get(token)
        if arrival is None or arrival.done():
            self._refuse(incoming, 480, "No pickup is waiting for this call")
            return
        arrival.set_result(self.legs.hold(incoming))

    def _pool_frontends(self) -> list[tuple[str, str]]:
        """(name, admin base URL) of the Front End servers of our pool: ours first."""
        text = self.context.documents(TOPOLOGY_KEY)
        if text is None:
            return []
        if self._topology is None or self._topology[0] != text:
            try:
                topology = parse_topology(text, "CMS topology")
            except TopologyError as exc:
                log.error("pickup: the CMS topology does not load: %s", exc)
                return []
            servers = Resolver(topology).servers_of(self.context.config.pool)
            ordered = sorted(servers, key=lambda s: (s.name != self.context.config.server,
                                                     s.name))
            self._topology = (text, [(s.name, f"http://{s.address}:{s.admin_port}")
                                     for s in ordered])
        return self._topology[1]

    def _refuse(self, incoming: IncomingRequest, status: int, reason: str) -> None:
        host, port = self.context.endpoint.contact_host_port("tcp")
        with contextlib.suppress(TransactionError):
            self.context.endpoint.reply(
                incoming, status, reason[:120], to_tag=new_tag(),
                headers=Headers([("Warning", f'399 {host}:{port} "{reason[:200]}"')]))


def group_pickup(context: AppContext) -> GroupPickupApp:
    """The registry's factory."""
    return GroupPickupApp(context)
