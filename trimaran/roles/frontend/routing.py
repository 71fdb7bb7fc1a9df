"""Routing requests to users across the servers of a pool (SPEC FE-1, FE-4).

A user's binding names the server holding the client's flow. A request for the
user is sent to that server with a Route carrying a flow token; that server
relays it over the flow (`relay_to_flow`). Bindings of servers declared dead
are skipped. When every branch fails in a way that means "the binding is stale"
(the flow failed: 430; a peer could not be reached: 503/408), the request is
retried on fresh bindings for a bounded window, while clients re-register.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from trimaran.client.ua import uri_address
from trimaran.net.endpoint import IncomingRequest
from trimaran.net.transport import Address, Flow
from trimaran.roles.frontend.proxy import ForkContext, Target
from trimaran.sip.headers import NameAddr
from trimaran.sip.uri import URI
from trimaran.store.model import Binding

if TYPE_CHECKING:
    from trimaran.roles.frontend.server import FrontEndServer

log = logging.getLogger(__name__)

STALE_STATUSES = frozenset({408, 430, 503})  # the target is gone, not the user's answer
POLL = 0.1


def encode_flow(flow_id: str) -> str:
    """A flow id as a URI-parameter-safe token."""
    return base64.urlsafe_b64encode(flow_id.encode()).decode().rstrip("=")


def decode_flow(token: str) -> str | None:
    """The flow id of `encode_flow`, or None when malformed."""
    try:
        return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        return None


class Router:
    """Target selection, flow-token relaying and retries for one Front End server."""

    def __init__(self, server: FrontEndServer, secret: bytes) -> None:
        self.server = server
        self._secret = secret

    # -- flow tokens -------------------------------------------------------------
    def flow_token(self, server_name: str, flow_id: str) -> str:
        """HMAC binding a flow id to the server that holds it (pool secret)."""
        mac = hmac.new(self._secret, f"{server_name}|{flow_id}".encode(), hashlib.sha256)
        return mac.hexdigest()[:24]

    def peer_route(self, binding: Binding) -> Target | None:
        """A target relaying through the peer that holds `binding`'s flow, or None."""
        membership = self.server.membership
        peer = membership.peers.get(binding.server) if membership else None
        if peer is None or (membership is not None and membership.is_dead(peer.name)):
            return None
        flow = encode_flow(binding.flow_id)
        token = self.flow_token(peer.name, binding.flow_id)
        route = f"<sip:{peer.host}:{peer.sip_port};transport=tcp;lr;flow={flow};ftok={token}>"
        return Target(URI.parse(binding.contact), Address("tcp", peer.host, peer.sip_port),
                      route, self._key(binding))

    def lookup_token(self, aor: str) -> str:
        """HMAC authorising a peer lookup for `aor` (pool secret)."""
        return hmac.new(self._secret, f"lookup|{aor}".encode(), hashlib.sha256).hexdigest()[:24]

    def lookup_targets(self, aor: str, uri: URI) -> list[Target]:
        """One target per live peer, asking it to deliver if `aor` is registered there."""
        membership = self.server.membership
        if membership is None:
            return []
        token = self.lookup_token(aor)
        return [Target(uri, Address("tcp", peer.host, peer.sip_port),
                       f"<sip:{peer.host}:{peer.sip_port};transport=tcp;lr;lookup={token}>",
                       f"lookup|{peer.name}|{aor}")
                for peer in membership.alive_peers()]

    def lookup_of_route(self, route: NameAddr, uri: URI) -> str | None:
        """The AOR a peer's lookup Route asks about, when its token is valid."""
        token = route.uri.param("lookup")
        if not token:
            return None
        aor = URI("sip", uri.user, None, self.server.config.domain).aor
        return aor if hmac.compare_digest(token, self.lookup_token(aor)) else None

    def target_for(self, binding: Binding) -> Target | None:
        """Where a request for `binding` goes (None: its server is dead or unknown)."""
        me = self.server.config.server
        contact = URI.parse(binding.contact)
        if binding.server != me:
            return self.peer_route(binding)
        flow = self.server.endpoint.transport.flow(binding.flow_id) if binding.flow_id else None
        if flow is not None and (binding.reg_id is not None or flow.reliable):
            return Target(contact, flow, key=self._key(binding))
        # RFC 3263 §4.1: UDP unless the Contact names a transport.
        return Target(contact, uri_address(contact, "udp"), key=self._key(binding))

    @staticmethod
    def _key(binding: Binding) -> str:
        return f"{binding.aor}|{binding.key}|{binding.server}|{binding.flow_id}"

    # -- relaying over a local flow ----------------------------------------------------
    def flow_of_route(self, route: NameAddr) -> tuple[str | None, bool]:
        """(flow id, token valid) of a Route pushed by a peer; (None, False) if none."""
        token = route.uri.param("flow")
        if not token:
            return None, False
        flow_id = decode_flow(token)
        if flow_id is None:
            return None, False
        expected = self.flow_token(self.server.config.server, flow_id)
        return flow_id, hmac.compare_digest(route.uri.param("ftok") or "", expected)

    def relay_to_flow(self, incoming: IncomingRequest, flow_id: str) -> None:
        """Send a request a peer routed to us over the client's flow (or 430, RFC 5626)."""
        request = incoming.request.copy()
        request.headers.pop_first("Route")
        flow = self.server.endpoint.transport.flow(flow_id)
        if flow is None:
            self.server.reply(incoming, 430, "Flow Failed")
            return
        relayed = IncomingRequest(request, incoming.transaction, incoming.flow)
        target = Target(request.uri, flow)
        if request.method == "ACK":
            self.server.spawn(self.server.forward_ack(request, target))
            return
        ctx = self.server.proxy.fork(relayed, [target])
        self.server.spawn(self._finish_when_done(ctx))

    async def _finish_when_done(self, ctx: ForkContext) -> None:
        best = await ctx.best
        finals = [b.final for b in ctx.branches if b.final is not None]
        if best is not None and finals and all(f.status in (408, 503) for f in finals):
            # The client's flow failed under the request: tell the peer so it retries
            # on the user's fresh binding (RFC 5626 §5.3, 430 Flow Failed).
            best = best.copy()
            best.status, best.reason = 430, "Flow Failed"
        self.server.proxy.finish(ctx, best)

    # -- forwarding with retry ---------------------------------------------------------
    async def forward(self, incoming: IncomingRequest, targets: list[Target],
                      refresh: Callable[[], Awaitable[list[Target]]] | None) -> None:
        """Fork to `targets`; if all fail as stale, retry fresh targets within the window."""
        loop = asyncio.get_running_loop()
        window = self.server.config.route_retry_window
        limit = loop.time() + 2 * window
        ctx = self.server.proxy.fork(incoming, targets)
        tried = {t.key for t in targets}
        while True:
            best = await ctx.best
            if best is None or refresh is None or ctx.relayed_provisional or ctx.cancelled:
                break
            statuses = {b.final.status for b in ctx.branches if b.final is not None}
            if not statuses <= STALE_STATUSES:
                log.debug("%s %s: not retried, answers %s", incoming.request.method,
                          incoming.request.call_id, sorted(statuses))
                break
            deadline = min(loop.time() + window, limit)  # from when the failure is known
            fresh = await self._fresh_targets(refresh, tried, deadline)
            if not fresh:
                log.info("%s %s: no fresh binding within the retry window (%s)",
                         incoming.request.method, incoming.request.call_id, sorted(statuses))
                break
            log.info("%s %s: %s failed (%s); retrying on %d fresh binding(s)",
                     incoming.request.method, incoming.request.call_id,
                     [b.target.key for b in ctx.branches], sorted(statuses), len(fresh))
            tried |= {t.key for t in fresh}
            ctx = self.server.proxy.fork(incoming, fresh, ctx)
        self.server.proxy.finish(ctx, best)

    @staticmethod
    async def _fresh_targets(refresh: Callable[[], Awaitable[list[Target]]],
                             tried: set[str], deadline: float) -> list[Target]:
        loop = asyncio.get_running_loop()
        while loop.time() < deadline:
            fresh = [t for t in await refresh() if t.key not in tried]
            if fresh:
                return fresh
            await asyncio.sleep(POLL)
        return []

    def address_for(self, uri: URI) -> Address | Flow:
        """How to reach the next hop of an in-dialog request: a local flow, else the URI."""
        flow_id = self.server.contact_flows.get(str(uri))
        flow = self.server.endpoint.transport.flow(flow_id) if flow_id else None
        if flow is not None:
            return flow
        return uri_address(uri, "udp")
