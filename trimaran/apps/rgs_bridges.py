"""The answered calls of Response Groups (SPEC APP-3): the caller's dialog and the
agent's (or forward target's), relayed to each other as a B2BUA until one hangs up.

`Bridges` keeps them by the dialog key of either side. A request inside one dialog
(BYE, re-INVITE, UPDATE, INFO) is sent on inside the other with the headers and body
that matter (`RELAYED_HEADERS`), and the answer comes back the same way; a BYE is
answered at once and ends the bridge (`on_end` is told, so the agent is free again).
`ack` and `hang_up` are the two things done to a 2xx nobody else handles.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from trimaran.apps.server import AppContext
from trimaran.client.ua import uri_address
from trimaran.net.endpoint import IncomingRequest
from trimaran.net.transport import Address, TransportError
from trimaran.sip.dialog import Dialog
from trimaran.sip.errors import SipParseError
from trimaran.sip.headers import Headers, NameAddr
from trimaran.sip.ids import new_tag
from trimaran.sip.message import Request, Response
from trimaran.sip.transaction import TransactionError

log = logging.getLogger(__name__)

RELAYED_HEADERS = ("Content-Type", "Content-Disposition", "Session-Expires", "Supported")
TARGET_REFRESH = frozenset({"INVITE", "UPDATE"})


@dataclass(eq=False)
class Bridge:
    """An answered call: the caller's dialog (`a`) and the agent's or target's (`b`)."""

    a: Dialog
    b: Dialog
    agent: str | None


def hop(dialog: Dialog) -> Address:
    """Where a request inside `dialog` goes first (its first route, else its target)."""
    return uri_address(dialog.first_hop, "tcp")


def reply(context: AppContext, incoming: IncomingRequest, status: int,
          reason: str | None = None, *, headers: Headers | None = None, body: bytes = b"",
          to_tag: str | None = None) -> None:
    """Answer `incoming` unless its transaction is over (a final answer gets a tag)."""
    if incoming.transaction is None or incoming.transaction.terminated:
        return
    with contextlib.suppress(TransactionError):
        context.endpoint.reply(incoming, status, reason, headers=headers, body=body,
                               to_tag=to_tag or (new_tag() if status >= 200 else None))


class Bridges:
    """Every bridged call of the service, by the dialog key of each side."""

    def __init__(self, context: AppContext, on_end: Callable[[Bridge], None]) -> None:
        self.context = context
        self._on_end = on_end
        self._by_key: dict[tuple[str, str], tuple[Bridge, bool]] = {}

    def __len__(self) -> int:
        return len(self._by_key) // 2

    def add(self, a: Dialog, b: Dialog, agent: str | None) -> Bridge:
        """Bridge the caller's dialog `a` with `b`."""
        bridge = Bridge(a, b, agent)
        self._by_key[a.key] = (bridge, True)
        self._by_key[b.key] = (bridge, False)
        return bridge

    async def ack(self, dialog: Dialog, cseq: int) -> None:
        """ACK a 2xx of ours inside `dialog` (sent without a transaction)."""
        ack = dialog.create_request("ACK", via=self.context.endpoint.via("tcp"), cseq=cseq)
        with contextlib.suppress(TransportError):
            await self.context.endpoint.send_stateless(ack, hop(dialog))

    async def hang_up(self, request: Request, response: Response) -> None:
        """A 2xx nobody wants: ACK it and hang up at once."""
        try:
            dialog = Dialog.from_uac(request, response)
        except SipParseError:
            return
        await self.ack(dialog, request.cseq.seq)
        bye = dialog.create_request("BYE", via=self.context.endpoint.via("tcp"))
        with contextlib.suppress(TransportError):
            await self.context.endpoint.request(bye, hop(dialog))

    async def on_request(self, incoming: IncomingRequest) -> bool:
        """Relay a request inside a bridged call (False: not one of ours)."""
        request = incoming.request
        found = self._by_key.get((request.call_id, request.to.tag or ""))
        if found is None:
            return False
        if request.method != "ACK":
            await self._relay(incoming, *found)
        return True

    async def _relay(self, incoming: IncomingRequest, bridge: Bridge, from_a: bool) -> None:
        """Relay a request of one leg to the other (§16-like, as a B2BUA)."""
        request = incoming.request
        context = self.context
        mine, other = (bridge.a, bridge.b) if from_a else (bridge.b, bridge.a)
        if not mine.accepts_remote_cseq(request):
            reply(context, incoming, 500, "CSeq out of order")
            return
        refresh = request.method in TARGET_REFRESH
        if refresh:
            mine.update_target(request)
        out = other.create_request(request.method, via=context.endpoint.via("tcp"),
                                   contact=NameAddr.parse(context.contact())
                                   if refresh else None)
        copy_headers(request.headers, out.headers)
        out.body = request.body
        if request.method == "BYE":
            reply(context, incoming, 200)
            self.end(bridge)
            with contextlib.suppress(TransportError):
                await context.endpoint.request(out, hop(other))
            return
        response = await context.endpoint.request(out, hop(other))
        if request.method == "INVITE" and 200 <= response.status < 300:
            other.update_target(response)
            await self.ack(other, out.cseq.seq)
        headers = Headers()
        if refresh and 200 <= response.status < 300:
            headers.add("Contact", context.contact())
        copy_headers(response.headers, headers)
        reply(context, incoming, response.status, response.reason, headers=headers,
              body=response.body)

    def end(self, bridge: Bridge) -> None:
        """Forget `bridge` (its BYE was relayed)."""
        for dialog in (bridge.a, bridge.b):
            self._by_key.pop(dialog.key, None)
        self._on_end(bridge)


def copy_headers(source: Headers, target: Headers) -> None:
    """Add the `RELAYED_HEADERS` of `source` to `target`."""
    for name in RELAYED_HEADERS:
        value = source.get(name)
        if value:
            target.add(name, value)
