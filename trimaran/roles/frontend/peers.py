"""Pool-internal SIP between the Front End servers of one pool.

Liveness pings (OPTIONS), the "presentity changed" signal that lets every server
notify its own watchers (a NOTIFY with `Event: x-trimaran-presence`, authorised by an
HMAC of the pool secret), and dropping the connections to a peer declared dead.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from typing import TYPE_CHECKING

from trimaran.net.transport import Address
from trimaran.roles.frontend.pool import Peer
from trimaran.sip.headers import Headers
from trimaran.sip.ids import new_tag
from trimaran.sip.message import Request
from trimaran.sip.uri import URI

if TYPE_CHECKING:
    from trimaran.roles.frontend.server import FrontEndServer

log = logging.getLogger(__name__)

PEER_EVENT = "x-trimaran-presence"  # pool-internal: a presentity's state changed


class PeerLink:
    """What one Front End server says to the other servers of its pool."""

    def __init__(self, server: FrontEndServer) -> None:
        self.server = server

    def token(self, presentity: str) -> str:
        mac = hmac.new(self.server.config.secret, f"presence|{presentity}".encode(), hashlib.sha256)
        return mac.hexdigest()[:32]

    def broadcast_presence(self, presentity: str) -> None:
        """Tell every live peer that `presentity`'s presence changed (their watchers)."""
        if self.server.membership is None:
            return
        for peer in self.server.membership.alive_peers():
            self.server.spawn(self._signal(peer, presentity))

    async def _signal(self, peer: Peer, presentity: str) -> None:
        request = self.request("NOTIFY", peer)
        request.headers.add("Event", PEER_EVENT)
        request.headers.add("X-Trimaran-Presentity", presentity)
        request.headers.add("X-Trimaran-Token", self.token(presentity))
        response = await self.server.endpoint.request(request, Address("tcp", peer.host,
                                                                peer.sip_port))
        if response.status != 200:
            log.info("presence signal to %s got %s", peer.name, response.status)

    def request(self, method: str, peer: Peer, transport: str = "tcp") -> Request:
        host, port = self.server.sip_address
        via = self.server.endpoint.via(transport)
        return Request(method, URI("sip", None, None, peer.host, peer.sip_port),
                       Headers([("Via", via), ("Max-Forwards", "70"),
                                ("From", f"<sip:{self.server.config.server}@{host}:{port}>;"
                                         f"tag={new_tag()}"),
                                ("To", f"<sip:{peer.host}:{peer.sip_port}>"),
                                ("Call-ID", f"{method.lower()}-{new_tag()}@{host}"),
                                ("CSeq", f"1 {method}")]))

    async def abandon(self, name: str) -> None:
        """A peer was declared dead: requests waiting on it fail now, and are retried on
        the users' fresh bindings, instead of waiting for Timer B/F."""
        assert self.server.membership is not None
        peer = self.server.membership.peers[name]
        for flow in self.server.endpoint.transport.flows_to(peer.host, peer.sip_port):
            await self.server.endpoint.transport.close_flow(flow, drain_timeout=0.1)

    async def ping(self, peer: Peer, timeout: float) -> bool:
        request = self.request("OPTIONS", peer, "udp")
        try:
            response = await asyncio.wait_for(
                self.server.endpoint.request(request, Address("udp", peer.host, peer.sip_port)),
                timeout)
        except TimeoutError:
            return False
        return response.status == 200

