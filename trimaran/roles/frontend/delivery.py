"""Requests a Front End sends on to users (SPEC FE-1, FE-4, DR-5, DR-8; EV-1; APP-*).

`Delivery.route` takes an INVITE, MESSAGE (and the out-of-dialog REFER, SUBSCRIBE and
OPTIONS that name a user or an application) through, in order: a flow or lookup Route
a peer pushed (relay over the client's flow, or answer the lookup); a request inside
a dialog; Max-Forwards, relaying denied for other domains; the sender (asserted by
another pool, vouched for as a PSTN caller by a Mediation server, or digest); the
applications (`apps`); phone numbers (`voice`); the pool serving the user (another
pool: `interpool`); the user's bindings here (or, in resiliency mode, the peers'),
forked by the proxy with retries on fresh bindings (`routing`). INVITEs ringing a user
are tracked for group call pickup while they ring.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from trimaran.net.endpoint import IncomingRequest
from trimaran.roles.frontend.proxy import Target
from trimaran.sip.headers import Headers
from trimaran.sip.uri import URI
from trimaran.store.base import StoreUnavailable

if TYPE_CHECKING:
    from trimaran.roles.frontend.server import FrontEndServer


class Delivery:
    """Routing of requests to users and applications for one Front End server."""

    def __init__(self, server: FrontEndServer) -> None:
        self.server = server

    async def route(self, incoming: IncomingRequest) -> None:
        """Send `incoming` where it goes (see the module header), or answer it."""
        server = self.server
        request = incoming.request
        routes = request.routes
        if routes and server.proxy.is_our_route(routes[0]):
            flow_id, valid = server.router.flow_of_route(routes[0])
            if flow_id is not None:
                if not valid:
                    server.reply(incoming, 403, "Invalid flow token")
                    return
                server.router.relay_to_flow(incoming, flow_id)
                return
            lookup = server.router.lookup_of_route(routes[0], request.uri)
            if lookup is not None:
                await self._answer_lookup(incoming, lookup)
                return
        if request.to.tag:
            await server.in_dialog(incoming)
            return
        if routes and server.proxy.is_our_route(routes[0]):
            # RFC 3261 §16.4: a Route naming us (a Front End of another pool pushes one,
            # `interpool`) is ours to remove, not the user's to see.
            request = request.copy()
            request.headers.pop_first("Route")
            incoming = IncomingRequest(request, incoming.transaction, incoming.flow)
        mf = request.max_forwards
        if mf is not None and mf <= 0:
            server.reply(incoming, 483)
            return
        if not server.is_local(request.uri):
            await self._federated(incoming)
            return
        asserted = server.interpool.asserted(request) if server.interpool else None
        pstn = server.voice.caller(request) if server.voice and not asserted else None
        sender = asserted or pstn or await server.authenticate(incoming)
        if sender is None:
            return
        if server.apps is not None and await server.apps.route(incoming, sender,
                                                             from_pstn=pstn is not None):
            return
        if server.chat is not None and pstn is None and await server.chat.route(incoming, sender):
            return
        if server.voice is not None and request.method == "INVITE" and asserted is None:
            routed = await server.voice.route(incoming, sender, from_pstn=pstn is not None)
            if routed is None:
                return
            incoming, request = routed, routed.request
        target = await self.resolve_user(request.uri)
        if server.interpool is not None and asserted is None:
            elsewhere = await server.interpool.serving_pool(target, request.uri)
            if elsewhere is not None:   # another pool serves the user: send it there
                targets = server.interpool.targets(elsewhere, request.uri, sender, request)
                await server.router.forward(incoming, targets[:1],
                                            _others(targets[1:]) if targets[1:] else None)
                return
        targets = await self.targets(target) if target is not None else []
        if not targets and server.mode != "full" and server.membership is not None:
            # Resiliency mode and this server never saw the user: ask the peers, each of
            # which knows the users registered on it (FE-7).
            aor = target or URI("sip", request.uri.user, None, server.config.domain).aor
            targets = server.router.lookup_targets(aor, request.uri)
        if target is None and not targets:
            server.reply(incoming, 404, "No such user")
            return
        if not targets:
            server.reply(incoming, 480, "User offline")
            return
        refresh = (lambda: self.targets(target)) if target is not None else None
        ringing = request.method == "INVITE" and target is not None and \
            incoming.transaction is not None
        if ringing:       # group call pickup finds calls ringing a user here (APP-6)
            assert target is not None and incoming.transaction is not None
            server.ringing.setdefault(target, []).append(incoming.transaction)
        try:
            await server.router.forward(incoming, targets, refresh)
        finally:
            if ringing:
                assert target is not None
                calls = server.ringing.get(target, [])
                if incoming.transaction in calls:
                    calls.remove(incoming.transaction)
                if not calls:
                    server.ringing.pop(target, None)

    async def _federated(self, incoming: IncomingRequest) -> None:
        """A request for another domain: out through the federation route when the domain
        is an allowed partner and the sender one of ours (EDGE-3), else refused."""
        server = self.server
        route = server.federation
        if route is None or not route.partner(incoming.request.uri.host):
            server.reply(incoming, 403, "Relaying denied")
            return
        sender = await server.authenticate(incoming)
        if sender is None:
            return
        targets, why = route.targets(incoming.request)
        if not targets:
            server.reply(incoming, 503, (why or "No federation route")[:120],
                         headers=Headers([("Retry-After", "5")]))
            return
        await server.router.forward(incoming, targets[:1],
                                    _others(targets[1:]) if targets[1:] else None)

    async def _answer_lookup(self, incoming: IncomingRequest, aor: str) -> None:
        """A peer asks us to deliver to `aor` if the user is registered on this server."""
        request = incoming.request.copy()
        request.headers.pop_first("Route")
        me = self.server.config.server
        local = [b for b in await self.server.bindings_for(aor) if b.server == me]
        router = self.server.router
        targets = [t for t in (router.target_for(b) for b in local) if t is not None]
        if not targets:
            self.server.reply(incoming, 480, "Not registered on this server")
            return
        await self.server.router.forward(IncomingRequest(request, incoming.transaction,
                                                  incoming.flow), targets, None)

    async def targets(self, aor: str) -> list[Target]:
        bindings = await self.server.bindings_for(aor)
        limit = self.server.config.max_fork
        targets = [self.server.router.target_for(b) for b in bindings[:limit]]
        return [t for t in targets if t is not None]

    async def resolve_user(self, uri: URI) -> str | None:
        number = uri.user if uri.scheme == "tel" else (
            uri.user if uri.user and uri.param("user") == "phone" else None)
        if self.server.mode != "full" and number is None:
            aor = URI("sip", uri.user, None, self.server.config.domain).aor
            return aor if self.server.cache.knows(aor) else None
        try:
            if number is not None:
                found = await self.server.store.users.by_number(number)
                return found.aor if found else None
            aor = URI("sip", uri.user, None, self.server.config.domain).aor
            user = await self.server.store.users.get(aor)
        except StoreUnavailable as exc:
            self.server.enter_resiliency(str(exc))
            aor = URI("sip", uri.user, None, self.server.config.domain).aor
            return aor if self.server.cache.knows(aor) else None
        return user.aor if user is not None and user.enabled else None


def _others(rest: list[Target]) -> Callable[[], Awaitable[list[Target]]]:
    """The refresh of a forward to another pool: its next server each time one fails
    (one at a time: two servers of a pool would both deliver to the user)."""
    left = list(rest)

    async def refresh() -> list[Target]:
        return [left.pop(0)] if left else []
    return refresh
