"""Requests of our users to federated partner domains (SPEC EDGE-3): they leave through
the federation route — one Edge pool, set in the CMS (`trimaran edge federation-route
set`) — whose servers' inside addresses are tried in turn. A domain that is not an
allowed partner, or no route set, is refused (no open relay)."""

from __future__ import annotations

from collections.abc import Callable

from trimaran.cms.edgedoc import EdgeState
from trimaran.net.transport import Address
from trimaran.roles.frontend.proxy import Target
from trimaran.sip.message import Request
from trimaran.topology.model import Topology
from trimaran.topology.resolver import Resolver
from trimaran.voice.trust import EDGE_HEADER, edge_header


class FederationRoute:
    """Where a request for a partner domain goes."""

    def __init__(self, topology: Topology, state: Callable[[], EdgeState],
                 secret: bytes) -> None:
        self._resolver = Resolver(topology)
        self._state = state
        self._secret = secret

    def partner(self, domain: str) -> bool:
        """True when `domain` is an allowed federated partner."""
        return any(p.domain.lower() == domain.lower() for p in self._state().partners)

    def targets(self, request: Request) -> tuple[list[Target], str | None]:
        """The federation route's Edge servers for `request`, or why there are none."""
        state = self._state()
        if not self.partner(request.uri.host):
            return [], "Relaying denied"
        if state.federation_route is None:
            return [], "No federation route is set (trimaran edge federation-route set)"
        try:
            servers = self._resolver.servers_of(state.federation_route)
        except LookupError:
            return [], f"Federation route {state.federation_route} is not in the topology"
        token = ((EDGE_HEADER, edge_header(self._secret, request)),)
        return [Target(request.uri, Address("tcp", s.address, s.sip_port),
                       f"<sip:{s.address}:{s.sip_port};transport=tcp;lr>",
                       f"edge|{s.name}", token) for s in servers], None
