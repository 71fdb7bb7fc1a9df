"""An Edge server (SPEC EDGE-1, EDGE-3, EDGE-4): the deployment's door to remote users
and federated partner domains.

Two faces: *inside* (`address:sip_port`, where Front Ends and Directors reach it) and
*outside* (`external_address:external_port`, where remote users and partners do).
Every request crosses as a new transaction of the Edge on the other side, its
response mapped back onto the original transaction, so only the Edge's own Via is
ever seen across; `hiding.HiddenState` hides Record-Route, Contacts and Call-IDs of
internal servers (no internal server address leaves the deployment).

From outside:
* a user of our domain (a *remote user*): REGISTER goes to the Edge pool's next hop
  (a Director's 302 is followed inside, never sent out), its Contact replaced by the
  Edge's inside address with a flow token, so that the registrar sends the user's
  requests here, and they go out on the user's connection; the Front End that
  accepted the user gets the user's other requests. Credentials stay inside: the
  registrar challenges, the Edge relays.
* a federated partner (its domain allowed, from one of its Edge addresses): the
  request goes to a Front End with the partner user vouched for with the
  deployment's key; anything else is 403. Requests may not leave through us again.
* per source address, at most `rate` requests per second (burst `burst`): 503 with
  Retry-After beyond; messages larger than the transport's limit are refused there.

From inside (only from the deployment's servers): requests for a remote user's flow
token go out on that user's connection; requests for a partner domain go to the
partner's Edge servers — only from the federation route's Edge pool (EDGE-3).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from trimaran.admin import access
from trimaran.admin.metrics import ServerMetrics, describe_transactions
from trimaran.client.ua import uri_address
from trimaran.cms.edgedoc import EdgeState
from trimaran.net.endpoint import IncomingRequest, SipEndpoint
from trimaran.net.transport import Address, Flow, TransportConfig, TransportError
from trimaran.roles.edge.hiding import FLOW_TOKEN, HiddenState, private_header
from trimaran.security import https
from trimaran.security.deployment import certificate_status
from trimaran.sip.errors import SipParseError
from trimaran.sip.headers import Headers, NameAddr
from trimaran.sip.ids import new_tag
from trimaran.sip.message import Request, Response
from trimaran.sip.transaction import TimerConfig, TransactionError, build_cancel
from trimaran.sip.transaction_server import ServerTransaction
from trimaran.sip.uri import URI
from trimaran.topology.model import PoolRole, Server, Topology
from trimaran.topology.resolver import Resolver
from trimaran.voice.trust import pstn_header, route_token, verified_edge

log = logging.getLogger(__name__)

DIALOG_METHODS = frozenset({"INVITE", "SUBSCRIBE", "REFER"})
NOT_COPIED = frozenset({"via", "from", "to", "call-id", "cseq", "content-length",
                        "record-route", "route", "max-forwards", "contact", "warning"})
NEXT_HOP_TIMEOUT = 3.0


@dataclass(frozen=True)
class EdgeConfig:
    """What an Edge server needs."""

    server: str
    pool: str
    domain: str
    secret: bytes                 # the deployment's key
    inside: tuple[str, int]
    outside: tuple[str, int]
    admin_port: int
    internal: frozenset[str]      # every server address of the deployment
    outside_tls: bool = False     # OPS-6: `outside` is a TLS port, the only one outside
    rate: float = 50.0            # requests per second per outside source
    burst: float = 200.0
    timers: TimerConfig = field(default_factory=TimerConfig)


@dataclass
class _Crossing:
    """A request sent on across: for a CANCEL of the original."""

    request: Request
    target: Address | Flow
    side: SipEndpoint


class EdgeServer:
    """One Edge server."""

    def __init__(self, config: EdgeConfig, topology: Topology,
                 state: Callable[[], EdgeState]) -> None:
        self.config = config
        self.state = state
        self.resolver = Resolver(topology)
        self.inside = SipEndpoint(on_request=lambda r: self._spawn(self._from_inside(r)),
                                  timers=config.timers)
        # Partners know us by our outside address: connect from it (EDGE-3).
        self.outside = SipEndpoint(on_request=lambda r: self._spawn(self._from_outside(r)),
                                   timers=config.timers,
                                   transport_config=TransportConfig(bind_outgoing=True))
        host, port = config.outside
        self.hidden = HiddenState(config.internal, f"{host}:{port}")
        self.flows: dict[str, tuple[str, str]] = {}      # token -> (outside flow id, contact)
        self.flow_tokens: dict[tuple[str, str], str] = {}
        self.homes: dict[str, Address] = {}              # remote AOR -> Front End
        self.crossings: dict[ServerTransaction, _Crossing] = {}
        self.buckets: dict[str, tuple[float, float]] = {}
        self.metrics = ServerMetrics(server=config.server, role="edge", pool=config.pool)
        self._requests = self.metrics.counter(
            "edge_requests", "Requests crossing the Edge, by direction and outcome",
            ["direction", "outcome"])
        self.metrics.add_source("sip", lambda f: describe_transactions(
            f, self.outside.transactions.statistics()))
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self.started = False

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        """Listen inside (UDP, TCP, and TLS when the deployment has it) and outside (UDP and
        TCP, or TLS only), and serve the admin API."""
        cfg = self.config
        app = access.guarded_app()
        app.router.add_get("/health", self._health)
        app.router.add_get("/status", self._status)
        app.router.add_get("/metrics", self.metrics.handle)
        self._runner = web.AppRunner(https.guard(app), access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, cfg.inside[0], cfg.admin_port,
                          ssl_context=https.listener_ssl()).start()
        host, port = cfg.inside
        await self.inside.listen(host, udp_port=port, tcp_port=None)
        await self.inside.transport.listen_tcp(host, port)
        await self.inside.listen_tls(host)         # OPS-6: when the deployment has TLS
        host, port = cfg.outside
        if cfg.outside_tls:                        # OPS-6: the external side takes TLS only
            await self.outside.transport.listen_tls(host, port, external=True)
        else:
            await self.outside.listen(host, udp_port=port, tcp_port=None)
            await self.outside.transport.listen_tcp(host, port)
        self.started = True
        log.info("edge %s: inside %s:%s, outside %s:%s", cfg.server, *cfg.inside, *cfg.outside)

    async def stop(self) -> None:
        """Ordered shutdown."""
        await self.outside.close(drain_timeout=1.0)
        await self.inside.close(drain_timeout=1.0)
        for task in list(self._tasks):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- from outside ------------------------------------------------------------------
    async def _from_outside(self, incoming: IncomingRequest) -> None:
        request = incoming.request
        try:
            if not self._allowed_rate(incoming.flow.remote[0]):
                self._count("in", "rate_limited")
                self._reply(self.outside, incoming, 503, "Too many requests",
                            Headers([("Retry-After", "2")]))
                return
            if request.method == "CANCEL":
                self._cancel(self.outside, incoming)
                return
            origin = self._origin(incoming)
            if origin is None:
                self._count("in", "refused")
                self._reply(self.outside, incoming, 403, "Not a user of this domain nor an "
                            "allowed federated partner")
                return
            await self._inward(incoming, origin)
        except SipParseError as exc:
            self._reply(self.outside, incoming, exc.status_hint, exc.reason[:100])
        except Exception:
            log.exception("edge: failure on a request from outside")
            self._reply(self.outside, incoming, 500)

    def _origin(self, incoming: IncomingRequest) -> str | None:
        """"user" (our domain), "partner" (an allowed partner from its Edge), or None."""
        domain = incoming.request.from_.uri.host.lower()
        if domain == self.config.domain.lower():
            return "user"
        source = incoming.flow.remote[0]
        for partner in self.state().partners:
            if partner.domain.lower() == domain and \
                    any(edge.rpartition(":")[0] == source for edge in partner.edges):
                return "partner"
        return None

    async def _inward(self, incoming: IncomingRequest, origin: str) -> None:
        request = incoming.request
        out = self._copy(request, self.inside, "tcp", outward=False)
        out.headers.set("Call-ID", self.hidden.call_id_in(request.call_id))
        routes = request.routes
        ours = routes and self._is_ours(routes[0].uri, outside=True)
        if ours and not request.to.tag and len(routes) == 1 \
                and not self.hidden.routes_inward(out.call_id):
            out.headers.remove("Route")   # we are the client's outbound proxy (§8.1.2):
            ours = False                  # an initial request, routed like one
        if request.to.tag or ours:
            out.headers.remove("Route")
            hidden = self.hidden.routes_inward(out.call_id)
            for route in hidden + [str(r) for r in routes[1:]]:
                out.headers.add("Route", route)
            restored = self.hidden.contact_in(request.uri)
            if restored is not None:
                out.uri = restored
            hop = NameAddr.parse(hidden[0]).uri if hidden else out.uri
            targets: list[Address] = [uri_address(hop, "tcp")]
        else:
            if request.uri.host.lower() != self.config.domain.lower() and \
                    self.hidden.contact_in(request.uri) is None:
                self._reply(self.outside, incoming, 403, "Relaying denied")
                return
            targets = self._next_hops(request, origin)
        if origin == "partner":
            caller = str(request.from_.uri)
            out.headers.add("X-Trimaran-Pstn", pstn_header(self.config.secret, caller, out))
        if origin == "user":
            self._contacts_inward(out, incoming.flow)
        if request.method in DIALOG_METHODS and not request.to.tag:
            out.headers.add("Record-Route", self._rr(inside=True, call_id=out.call_id),
                            first=True)
        if request.method == "ACK":
            with contextlib.suppress(TransportError):
                await self.inside.send_stateless(out, targets[0])
            return
        await self._cross(incoming, out, targets, to_inside=True)

    def _next_hops(self, request: Request, origin: str) -> list[Address]:
        """Where an out-of-dialog request from outside goes inside."""
        register = request.method == "REGISTER"
        hops = self._pool_addresses(frontend=not register)
        home = self.homes.get(request.from_.uri.aor) if origin == "user" else None
        if home is not None:        # where the user was accepted, or redirected to, last
            return [home, *(h for h in hops if h != home)]
        return hops

    def _pool_addresses(self, *, frontend: bool) -> list[Address]:
        """The next hop's servers (a Director pool only for REGISTER: it redirects)."""
        hop = self.state().next_hops.get(self.config.pool) or \
            self.resolver.pool(self.config.pool).next_hop
        pools = [self.resolver.pool(hop)] if hop else []
        if frontend and pools and pools[0].role is not PoolRole.FRONTEND:
            site = self.resolver.pool(self.config.pool).site
            pools = [p for p in self.resolver.pools(PoolRole.FRONTEND)
                     if p.site == site] or list(self.resolver.pools(PoolRole.FRONTEND))
        servers: list[Server] = [s for p in pools[:1] for s in p.servers]
        seed = secrets.randbelow(len(servers)) if servers else 0
        servers = servers[seed:] + servers[:seed]
        return [Address("tcp", s.address, s.sip_port) for s in servers]

    def _contacts_inward(self, out: Request, flow: Flow) -> None:
        """A remote user's Contacts become our inside address with a flow token."""
        values = out.headers.get_all("Contact")
        if not values:
            return
        out.headers.remove("Contact")
        for value in values:
            for part in _split(value):
                out.headers.add("Contact", self._flow_contact(part, flow))

    def _flow_contact(self, value: str, flow: Flow) -> str:
        try:
            named = NameAddr.parse(value)
        except SipParseError:
            return value
        if named.uri.user is None and not named.uri.host:
            return value
        original = str(named.uri)
        token = self.flow_tokens.get((flow.id, original))
        if token is None:
            token = secrets.token_urlsafe(12)
            self.flow_tokens[(flow.id, original)] = token
            self.flows[token] = (flow.id, original)
        host, port = self.config.inside
        uri = URI("sip", named.uri.user, None, host, port,
                  (("transport", "tcp"), (FLOW_TOKEN, token)))
        params = "".join(f";{k}={v}" if v is not None else f";{k}"
                         for k, v in named.params)
        return f"<{uri}>{params}"

    # -- from inside -------------------------------------------------------------------
    async def _from_inside(self, incoming: IncomingRequest) -> None:
        request = incoming.request
        try:
            if not self._asked_from_inside(request):
                self._count("out", "refused")
                self._reply(self.inside, incoming, 403, "Not sent by a server of this "
                            "deployment")
                return
            if request.method == "CANCEL":
                self._cancel(self.inside, incoming)
                return
            await self._outward(incoming)
        except SipParseError as exc:
            self._reply(self.inside, incoming, exc.status_hint, exc.reason[:100])
        except Exception:
            log.exception("edge: failure on a request from inside")
            self._reply(self.inside, incoming, 500)

    async def _outward(self, incoming: IncomingRequest) -> None:
        request = incoming.request
        out = self._copy(request, self.outside, "tcp", outward=True)
        routes = request.routes
        if routes and self._is_ours(routes[0].uri, outside=False):
            routes = routes[1:]
        out.headers.remove("Route")
        for route in routes:
            out.headers.add("Route", str(route))
        out.headers.set("Call-ID", self.hidden.call_id_out(request.call_id))
        targets: list[Address | Flow]
        token = request.uri.param(FLOW_TOKEN)
        if token:
            known = self.flows.get(token)
            flow = self.outside.transport.flow(known[0]) if known else None
            if known is None or flow is None:
                self._reply(self.inside, incoming, 430, "Flow Failed")
                return
            out.uri = URI.parse(known[1])
            targets = [flow]
        elif routes:
            targets = [uri_address(routes[0].uri, "tcp")]
        elif self._is_partner(request.uri.host) and not request.to.tag:
            targets = self._partner_edges(request.uri.host)
            if not targets:
                self._reply(self.inside, incoming, 403,
                            f"Edge pool {self.config.pool} does not carry federation")
                return
        else:
            targets = [self._flow_of_contact(request.uri) or uri_address(request.uri, "tcp")]
        if request.method in DIALOG_METHODS and not request.to.tag:
            internal = [str(r) for r in request.record_routes]
            self.hidden.remember_routes(out.call_id, internal)
            out.headers.add("Record-Route", self._rr(inside=False))
        if request.method == "ACK":
            with contextlib.suppress(TransportError):
                await self.outside.send_stateless(out, targets[0])
            return
        await self._cross(incoming, out, targets, to_inside=False)

    def _asked_from_inside(self, request: Request) -> bool:
        """Inside requests go out only on a capability a server of ours got from us: a
        remote user's flow token, our inside Record-Route for this dialog, or a Front
        End's federation token (signed with the deployment's key)."""
        if request.method == "CANCEL":
            return True                      # matched to a crossing, or 481
        token = request.uri.param(FLOW_TOKEN)
        if token and token in self.flows:
            return True
        routes = request.routes
        if routes and self._is_ours(routes[0].uri, outside=False):
            given = routes[0].uri.param("rrt")
            if given and hmac.compare_digest(
                    given.encode(), route_token(self.config.secret, request.call_id).encode()):
                return True
        return verified_edge(self.config.secret, request)

    def _is_partner(self, domain: str) -> bool:
        return any(p.domain.lower() == domain.lower() for p in self.state().partners)

    def _partner_edges(self, domain: str) -> list[Address | Flow]:
        """The partner's Edge servers, when this pool is the federation route (EDGE-3)."""
        if self.state().federation_route != self.config.pool:
            return []
        for partner in self.state().partners:
            if partner.domain.lower() == domain.lower():
                return [Address("tcp", e.rpartition(":")[0], int(e.rpartition(":")[2]))
                        for e in partner.edges]
        return []

    def _flow_of_contact(self, uri: URI) -> Flow | None:
        original = str(uri)
        for flow_id, contact in self.flows.values():
            if contact == original:
                return self.outside.transport.flow(flow_id)
        return None

    # -- crossing ----------------------------------------------------------------------
    async def _cross(self, incoming: IncomingRequest, out: Request,
                     targets: list[Address] | list[Address | Flow], *, to_inside: bool) -> None:
        """Send `out` to the first target that answers; relay every answer back."""
        assert incoming.transaction is not None
        side = self.inside if to_inside else self.outside
        back = self.outside if to_inside else self.inside
        direction = "in" if to_inside else "out"
        final: Response | None = None
        for target in targets:
            attempt = out.copy()
            attempt.headers.set("Via", side.via(target.transport))
            self.crossings[incoming.transaction] = _Crossing(attempt, target, side)

            def provisional(response: Response, _: Flow | None) -> None:
                if response.status > 100:
                    self._relay(back, incoming, response, to_inside=to_inside)

            try:
                final = await asyncio.wait_for(
                    side.request(attempt, target, on_provisional=provisional),
                    None if not to_inside or out.method == "INVITE" else NEXT_HOP_TIMEOUT * 3)
            except TimeoutError:
                final = None
            if final is not None and final.status in (408, 503) and final.to.tag is None and \
                    len(targets) > 1:
                continue                       # that server is unreachable: the next one
            if final is not None and 300 <= final.status < 400 and out.method == "REGISTER" \
                    and to_inside:
                redirected = [uri_address(c.uri, "tcp") for c in final.contacts]
                if redirected:                 # a Director's answer: follow it inside
                    # (and go there first next time: its challenge is its own)
                    self.homes[incoming.request.from_.uri.aor] = redirected[0]
                    self.crossings.pop(incoming.transaction, None)
                    await self._cross(incoming, out, redirected, to_inside=True)
                    return
            if final is not None and out.method == "REGISTER" and to_inside and \
                    final.status == 200 and isinstance(target, Address):
                self.homes[incoming.request.from_.uri.aor] = target
            break
        self.crossings.pop(incoming.transaction, None)
        if final is None:
            self._count(direction, "no_answer")
            self._reply(back, incoming, 504, "No answer")
            return
        self._count(direction, f"{final.status // 100}xx")
        self._relay(back, incoming, final, to_inside=to_inside)

    def _relay(self, back: SipEndpoint, incoming: IncomingRequest, response: Response, *,
               to_inside: bool) -> None:
        """The answer `response` (from the far side) as it goes back to `incoming`."""
        mapped = Response.for_request(incoming.request, response.status, response.reason,
                                      to_tag=response.to.tag)
        for name, value in response.headers:
            if name.lower() in NOT_COPIED or (to_inside and private_header(name)):
                continue
            mapped.headers.add(name, value)
        mapped.body = response.body
        self._map_answer_headers(incoming.request, response, mapped, to_inside=to_inside)
        if incoming.transaction is None or incoming.transaction.terminated:
            return
        try:
            back.respond(incoming.transaction, mapped)
        except TransactionError:
            log.debug("answer %s not relayed: transaction over", response.status)

    def _map_answer_headers(self, request: Request, response: Response, mapped: Response, *,
                            to_inside: bool) -> None:
        """Contacts, Record-Route and Warnings of an answer crossing back."""
        contacts = [c for v in response.headers.get_all("Contact") for c in _split(v)]
        records = [str(r) for r in response.record_routes]
        warnings = response.headers.get_all("Warning")
        if to_inside:
            # The answer goes out (the request came from outside).
            for value in contacts:
                mapped.headers.add("Contact", self._contact_outward(value))
            if records and request.method in DIALOG_METHODS:
                ours = self._rr(inside=True)
                index = next((i for i, r in enumerate(records) if self._same_route(r, ours)),
                             None)
                if index is not None:
                    self.hidden.remember_routes(response.call_id,
                                                list(reversed(records[:index])))
                    records = [self._rr(inside=False), *records[index + 1:]]
                else:
                    records = [r for r in records if not self._internal_route(r)]
                for value in records:
                    mapped.headers.add("Record-Route", value)
            for value in warnings:
                mapped.headers.add("Warning", self.hidden.warning_out(value))
            for name in [n for n, _ in mapped.headers if private_header(n)]:
                mapped.headers.remove(name)
        else:
            # The answer comes in (the request came from inside).
            for value in contacts:
                mapped.headers.add("Contact", value)
            if records:
                ours = self._rr(inside=False)
                internal = [str(r) for r in request.record_routes]
                out: list[str] = []
                for value in records:
                    if self._same_route(value, ours):
                        out += [self._rr(inside=True, call_id=request.call_id), *internal]
                    else:
                        out.append(value)
                for value in out:
                    mapped.headers.add("Record-Route", value)
            for value in warnings:
                mapped.headers.add("Warning", value)

    def _contact_outward(self, value: str) -> str:
        """A Contact going out: a remote user's flow contact back to the user's own, an
        internal server's hidden."""
        try:
            named = NameAddr.parse(value)
        except SipParseError:
            return value
        token = named.uri.param(FLOW_TOKEN)
        if token and token in self.flows:
            original = self.flows[token][1]
            params = "".join(f";{k}={v}" if v is not None else f";{k}"
                             for k, v in named.params)
            return f"<{original}>{params}"
        return self.hidden.contact_out(value)

    def _cancel(self, side: SipEndpoint, incoming: IncomingRequest) -> None:
        invite = side.transactions.find_invite(incoming.request)
        crossing = self.crossings.get(invite) if invite is not None else None
        if crossing is None:
            self._reply(side, incoming, 481)
            return
        self._reply(side, incoming, 200)
        self._spawn(self._send_cancel(crossing))

    async def _send_cancel(self, crossing: _Crossing) -> None:
        with contextlib.suppress(TransportError):
            await crossing.side.request(build_cancel(crossing.request), crossing.target)

    # -- helpers -----------------------------------------------------------------------
    def _copy(self, request: Request, side: SipEndpoint, transport: str, *,
              outward: bool) -> Request:
        out = request.copy()
        out.headers.remove("Via")
        out.headers.remove("Record-Route")
        mf = request.max_forwards
        out.headers.set("Max-Forwards", str((70 if mf is None else mf) - 1))
        for name in [n for n, _ in request.headers if private_header(n)]:
            out.headers.remove(name)          # never believed from outside, never sent out
        if outward:
            contacts = out.headers.get_all("Contact")
            out.headers.remove("Contact")
            for value in contacts:
                for part in _split(value):
                    out.headers.add("Contact", self.hidden.contact_out(part))
            warnings = out.headers.get_all("Warning")
            out.headers.remove("Warning")
            for value in warnings:
                out.headers.add("Warning", self.hidden.warning_out(value))
        out.headers.add("Via", side.via(transport), first=True)
        return out

    def _rr(self, *, inside: bool, call_id: str = "") -> str:
        """Our Record-Route on one side; inside it carries the dialog's token (`rrt`)."""
        host, port = self.config.inside if inside else self.config.outside
        token = f";rrt={route_token(self.config.secret, call_id)}" if inside else ""
        transport = "tls" if self.config.outside_tls and not inside else "tcp"
        return f"<sip:{host}:{port};transport={transport};lr{token}>"

    def _is_ours(self, uri: URI, *, outside: bool) -> bool:
        host, port = self.config.outside if outside else self.config.inside
        return uri.host == host and (uri.port or 5060) == port

    @staticmethod
    def _same_route(value: str, ours: str) -> bool:
        try:
            a, b = NameAddr.parse(value).uri, NameAddr.parse(ours).uri
        except SipParseError:
            return False
        return a.host == b.host and (a.port or 5060) == (b.port or 5060)

    def _internal_route(self, value: str) -> bool:
        try:
            return NameAddr.parse(value).uri.host in self.config.internal
        except SipParseError:
            return True

    def _allowed_rate(self, source: str) -> bool:
        now = time.monotonic()
        tokens, last = self.buckets.get(source, (self.config.burst, now))
        tokens = min(self.config.burst, tokens + (now - last) * self.config.rate)
        if tokens < 1:
            self.buckets[source] = (tokens, now)
            return False
        self.buckets[source] = (tokens - 1, now)
        if len(self.buckets) > 100_000:
            self.buckets.clear()
        return True

    def _reply(self, side: SipEndpoint, incoming: IncomingRequest, status: int,
               reason: str | None = None, headers: Headers | None = None) -> None:
        if incoming.transaction is None or incoming.transaction.terminated:
            return
        with contextlib.suppress(TransactionError):
            side.reply(incoming, status, reason, headers=headers,
                       to_tag=new_tag() if status >= 200 else None)

    def _count(self, direction: str, outcome: str) -> None:
        self._requests.labels(direction=direction, outcome=outcome).inc()

    # -- admin -------------------------------------------------------------------------
    async def _health(self, request: web.Request) -> web.Response:
        body = {"healthy": self.started, "reason": "serving" if self.started else "starting",
                "server": self.config.server, "role": "edge"}
        return web.json_response(body, status=200 if self.started else 503)

    async def _status(self, request: web.Request) -> web.Response:
        state = self.state()
        return web.json_response({
            "server": self.config.server, "role": "edge", "pool": self.config.pool,
            "outside": "{}:{}".format(*self.config.outside),
            "remote_flows": len({f for f, _ in self.flows.values()}),
            "remote_users": len(self.homes), "federation_route": state.federation_route,
            "carries_federation": state.federation_route == self.config.pool,
            "next_hop": state.next_hops.get(self.config.pool),
            "partners": [p.domain for p in state.partners], **certificate_status()})


def _split(value: str) -> list[str]:
    """A header value holding several comma-separated name-addrs, split (outside <>)."""
    parts, depth, current = [], 0, ""
    for char in value:
        if char == "<":
            depth += 1
        elif char == ">":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    if current.strip():
        parts.append(current.strip())
    return parts

