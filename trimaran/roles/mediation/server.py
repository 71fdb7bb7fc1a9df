"""A Mediation server (SPEC EV-2, EV-3): one server of a Mediation pool, or the
mediation half of an SBA (EV-5).

Calls to the PSTN come from Front End servers, each carrying the trunk to use
(`trimaran.voice.trust`, signed with the deployment's key); the server places
them on the trunk's gateway unless that gateway is down (`GatewayMonitor`), in
which case it refuses at once with 503 and `X-Trimaran-Trunk-Failure: gateway`,
which sends the Front End to its next trunk. The same header marks every answer
that means "this gateway failed" (5xx, 408, no progress within the fast-failover
time): anything else is the called party's answer and goes back as is.

Calls from the PSTN come from the gateways of this pool's trunks (any other source
is refused: no open relay) and go to the pool's next hop, a Front End pool —
its servers in turn, then that pool's backup registrar's — with the caller vouched
for (`X-Trimaran-Pstn`), so the Front End rings the user wherever the user is
registered (home pool, backup pool, resiliency mode).

Admin API: ``GET /health``, ``GET /status`` (gateways, calls) and ``GET /metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from trimaran.admin import access
from trimaran.admin.http import Route, add_routes
from trimaran.admin.metrics import Families, ServerMetrics, describe_transactions
from trimaran.net.endpoint import IncomingRequest, SipEndpoint
from trimaran.net.transport import Address
from trimaran.roles.mediation.b2bua import B2bua, BridgedCall, Outcome
from trimaran.roles.mediation.gateways import GatewayMonitor
from trimaran.security import https
from trimaran.security.deployment import certificate_status
from trimaran.sip.errors import SipParseError
from trimaran.sip.headers import Headers, NameAddr
from trimaran.sip.ids import new_call_id, new_tag
from trimaran.sip.message import Request, Response
from trimaran.sip.transaction import TimerConfig, TransactionError
from trimaran.sip.uri import URI
from trimaran.topology.model import Server
from trimaran.voice.model import Gateway, VoiceConfig
from trimaran.voice.trust import FAILURE_HEADER, pstn_header, verified_trunk

log = logging.getLogger(__name__)

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO"
#: How long a Front End server has to answer (it sends 100 Trying at once).
NEXT_HOP_TIMEOUT = 2.0
GATEWAY_FAILED = frozenset({408, 480, 500, 502, 503, 504})


@dataclass(frozen=True)
class MediationConfig:
    """What a Mediation server needs."""

    server: str
    pool: str
    host: str
    sip_port: int
    admin_port: int | None       # None: no admin API of its own (the SBA's is used)
    domain: str
    secret: bytes                # the deployment's key (CMS key)
    next_hops: tuple[Server, ...] = ()   # the next-hop Front End pool's servers
    fallback_hops: tuple[Server, ...] = ()   # its backup registrar's, tried after them
    timers: TimerConfig = field(default_factory=TimerConfig)


class MediationServer:
    """One Mediation server: SIP (UDP and TCP), gateway probes, admin API."""

    def __init__(self, config: MediationConfig, voice: Callable[[], VoiceConfig | None], *,
                 routes: tuple[Route, ...] = (),
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.voice = voice
        self.routes = routes
        self.monotonic = monotonic
        self.endpoint = SipEndpoint(on_request=self._on_request, timers=config.timers)
        self.b2bua = B2bua(self.endpoint, timers=config.timers, monotonic=monotonic)
        self.monitor = GatewayMonitor(self.endpoint, interval=5.0, timeout=2.0,
                                      from_host=config.host, monotonic=monotonic)
        self.metrics = ServerMetrics(server=config.server, role="mediation", pool=config.pool)
        self._calls = self.metrics.counter(
            "mediation_calls", "Calls handled, by direction and result", ["direction", "result"])
        self.metrics.add_source("mediation", self._describe)
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self._config_seen: VoiceConfig | None = None
        self._watch: asyncio.Task[None] | None = None
        self.started = False

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        """Listen for SIP and HTTP, start probing the gateways."""
        cfg = self.config
        if cfg.admin_port is not None:
            app = access.guarded_app()
            app.router.add_get("/health", self._health)
            app.router.add_get("/status", self._status)
            app.router.add_get("/metrics", self.metrics.handle)
            add_routes(app, self.routes + self.status_routes())
            self._runner = web.AppRunner(https.guard(app), access_log=None,
                                         shutdown_timeout=2.0)
            await self._runner.setup()
            await web.TCPSite(self._runner, cfg.host, cfg.admin_port,
                              ssl_context=https.listener_ssl()).start()
        await self.endpoint.listen(cfg.host, udp_port=cfg.sip_port, tcp_port=None)
        await self.endpoint.transport.listen_tcp(cfg.host, cfg.sip_port)
        if cfg.admin_port is not None:   # OPS-6; an SBA's mediation shares its registrar's
            await self.endpoint.listen_tls(cfg.host)
        self._reconfigure()
        self.monitor.start()
        self._watch = asyncio.ensure_future(self._follow_config())
        self.started = True
        log.info("mediation server %s of pool %s serving SIP on %s:%s", cfg.server, cfg.pool,
                 cfg.host, cfg.sip_port)

    async def stop(self) -> None:
        """Ordered shutdown."""
        if self._watch is not None:
            self._watch.cancel()
        await self.monitor.stop()
        await self.b2bua.close()
        await self.endpoint.close(drain_timeout=1.0)
        for task in list(self._tasks):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()

    def _reconfigure(self) -> None:
        config = self.voice()
        if config is self._config_seen:
            return
        self._config_seen = config
        gateways = [] if config is None else [config.gateway(t.gateway) for t in config.trunks
                                              if t.mediation_pool == self.config.pool]
        interval = config.probe_interval_seconds if config else 5.0
        timeout = config.probe_timeout_seconds if config else 2.0
        self.monitor.configure(gateways, interval=interval, timeout=timeout)

    async def _follow_config(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self._reconfigure()

    def status(self) -> dict[str, object]:
        """For /status."""
        setups = sorted(self.b2bua.setup_seconds[-1000:])
        return {"server": self.config.server, "role": "mediation", "pool": self.config.pool,
                "gateways": self.monitor.status(), "calls_active": self.b2bua.active,
                "calls": dict(self.b2bua.stats),
                "setup_p50": setups[len(setups) // 2] if setups else None,
                "next_hops": [s.name for s in self.config.next_hops],
                "fallback_hops": [s.name for s in self.config.fallback_hops]}

    # -- dispatch -----------------------------------------------------------------------
    def _on_request(self, incoming: IncomingRequest) -> None:
        self._spawn(self._dispatch(incoming))

    async def _dispatch(self, incoming: IncomingRequest) -> None:
        request = incoming.request
        handler = _HANDLERS.get(request.method)
        try:
            if handler is None:
                self._reply(incoming, 405, headers=Headers([("Allow", ALLOW)]))
                return
            await handler(self, incoming)
        except Exception:
            log.exception("unexpected failure handling %s", request.method)
            self._reply(incoming, 500)

    def _reply(self, incoming: IncomingRequest, status: int, reason: str | None = None,
               headers: Headers | None = None) -> None:
        if incoming.transaction is None or incoming.transaction.terminated:
            return
        with contextlib.suppress(TransactionError):
            self.endpoint.reply(incoming, status, reason, headers=headers,
                                to_tag=new_tag() if status >= 200 else None)

    async def _handle_invite(self, incoming: IncomingRequest) -> None:
        request = incoming.request
        if request.to.tag:
            await self.b2bua.in_dialog(incoming)
            return
        self._reconfigure()
        config = self.voice()
        if config is None:
            self._reply(incoming, 503, "No voice configuration published")
            return
        trunk = verified_trunk(self.config.secret, request)
        if trunk is not None:
            await self._outbound(incoming, config, trunk)
            return
        gateway = self._gateway_of_source(config, incoming)
        if gateway is not None:
            await self._inbound(incoming, gateway)
            return
        self._reply(incoming, 403, "Not a Front End of this deployment nor a gateway of "
                                   "this mediation pool")

    async def _handle_ack(self, incoming: IncomingRequest) -> None:
        self.b2bua.ack(incoming)

    async def _handle_cancel(self, incoming: IncomingRequest) -> None:
        self.b2bua.cancel(incoming)

    async def _handle_bye(self, incoming: IncomingRequest) -> None:
        await self.b2bua.in_dialog(incoming)

    async def _handle_update(self, incoming: IncomingRequest) -> None:
        await self.b2bua.in_dialog(incoming)

    async def _handle_info(self, incoming: IncomingRequest) -> None:
        await self.b2bua.in_dialog(incoming)

    async def _handle_options(self, incoming: IncomingRequest) -> None:
        self._reply(incoming, 200, headers=Headers([("Allow", ALLOW)]))

    # -- calls to the PSTN -----------------------------------------------------------------
    async def _outbound(self, incoming: IncomingRequest, config: VoiceConfig,
                        trunk_name: str) -> None:
        request = incoming.request
        try:
            trunk = config.trunk(trunk_name)
            gateway = config.gateway(trunk.gateway)
        except KeyError:
            self._reply(incoming, 404, f"No trunk {trunk_name} in the voice configuration")
            return
        if trunk.mediation_pool != self.config.pool:
            self._reply(incoming, 403, f"Trunk {trunk_name} is not served by pool "
                                       f"{self.config.pool}")
            return
        number = request.uri.user or ""
        call = self.b2bua.begin(incoming, "outbound")
        call.label = gateway.name
        down = self.monitor.is_down(gateway.name)
        if down is not None:
            self._gateway_failed(call, gateway, 503, f"Gateway {gateway.name} is down: {down}")
            return
        out = self._gateway_invite(request, gateway, number)
        target = Address(gateway.transport.value, gateway.address, gateway.port)
        result = await self.b2bua.place(call, out, target,
                                        progress_timeout=config.fast_failover_seconds)
        if result.outcome is Outcome.ANSWERED:
            self._calls.labels(direction="outbound", result="answered").inc()
        elif result.outcome is Outcome.CANCELLED:
            self._calls.labels(direction="outbound", result="cancelled").inc()
        elif result.outcome is Outcome.NO_PROGRESS:
            why = (f"Gateway {gateway.name} did not answer within "
                   f"{config.fast_failover_seconds:g} s")
            self.monitor.call_failed(gateway.name, why)
            self._gateway_failed(call, gateway, 504, why)
        else:
            assert result.response is not None
            status, reason = result.response.status, result.response.reason
            if status in GATEWAY_FAILED:
                why = f"Gateway {gateway.name} answered {status} {reason}"
                if status != 480:
                    self.monitor.call_failed(gateway.name, why)
                self._gateway_failed(call, gateway, status, why)
            else:
                self._calls.labels(direction="outbound", result="refused").inc()
                self.b2bua.fail(call, status, reason, source=result.response)

    def _gateway_failed(self, call: BridgedCall, gateway: Gateway, status: int,
                        why: str) -> None:
        log.info("call %s on gateway %s failed: %s", call.a.request.call_id, gateway.name, why)
        self._calls.labels(direction="outbound", result="gateway_failed").inc()
        host = f"{self.config.host}:{self.config.sip_port}"
        self.b2bua.fail(call, status, why, headers=Headers([
            (FAILURE_HEADER, "gateway"), ("Warning", f'399 {host} "{why}"')]))

    def _gateway_invite(self, request: Request, gateway: Gateway, number: str) -> Request:
        """Leg B of a call to the PSTN: a new INVITE to the gateway for `number`."""
        transport = gateway.transport.value
        caller = _caller_number(request)
        uri = URI("sip", number, None, gateway.address, gateway.port, (("user", "phone"),))
        headers = Headers()
        headers.add("Via", self.endpoint.via(transport))
        headers.add("Max-Forwards", "70")
        headers.add("From", f"<sip:{caller}@{self.config.host};user=phone>;tag={new_tag()}")
        headers.add("To", f"<sip:{number}@{gateway.address};user=phone>")
        headers.add("Call-ID", new_call_id(self.config.host))
        headers.add("CSeq", "1 INVITE")
        headers.add("Contact", self.b2bua.contact(transport))
        headers.add("Allow", ALLOW)
        content_type = request.headers.get("Content-Type")
        if content_type and request.body:
            headers.add("Content-Type", content_type)
        return Request("INVITE", uri, headers, request.body)

    # -- calls from the PSTN ---------------------------------------------------------------
    def _gateway_of_source(self, config: VoiceConfig,
                           incoming: IncomingRequest) -> Gateway | None:
        """The gateway of one of this pool's trunks the request comes from, if any."""
        host = incoming.flow.remote[0] if incoming.flow.remote else ""
        for trunk in config.trunks:
            if trunk.mediation_pool != self.config.pool:
                continue
            gateway = config.gateway(trunk.gateway)
            if gateway.address == host:
                return gateway
        return None

    async def _inbound(self, incoming: IncomingRequest, gateway: Gateway) -> None:
        request = incoming.request
        call = self.b2bua.begin(incoming, "inbound")
        number = request.uri.user or ""
        if not number.startswith("+"):
            self.b2bua.fail(call, 404, f"Not an E.164 number: {number[:30]!r}")
            return
        caller = _caller_number(request, default="anonymous")
        tried: list[str] = []
        for server in self._next_hops(request.call_id):
            out = self._frontend_invite(request, number, caller)
            call.label = f"{gateway.name}->{server.name}"
            result = await self.b2bua.place(
                call, out, Address("tcp", server.address, server.sip_port),
                progress_timeout=NEXT_HOP_TIMEOUT, progress_from=100)
            if result.outcome is Outcome.ANSWERED:
                self._calls.labels(direction="inbound", result="answered").inc()
                return
            if result.outcome is Outcome.CANCELLED:
                self._calls.labels(direction="inbound", result="cancelled").inc()
                return
            response = result.response
            if response is not None and not _server_unreachable(response):
                self._calls.labels(direction="inbound", result="refused").inc()
                self.b2bua.fail(call, response.status, response.reason, source=response)
                return
            tried.append(server.name)
            log.info("inbound call %s: Front End %s unreachable (%s); next", request.call_id,
                     server.name, response.status if response else "no answer")
        self._calls.labels(direction="inbound", result="no_next_hop").inc()
        self.b2bua.fail(call, 503, f"No Front End reachable ({', '.join(tried) or 'none'})",
                        headers=Headers([("Retry-After", "5")]))

    def _next_hops(self, call_id: str) -> list[Server]:
        """The next-hop Front End servers, the first one chosen by the Call-ID (calls are
        spread over the pool), then the rest in order."""
        servers = list(self.config.next_hops)
        if servers:
            first = int.from_bytes(hashlib.sha256(call_id.encode()).digest()[:4], "big")
            start = first % len(servers)
            servers = [*servers[start:], *servers[:start]]
        return [*servers, *self.config.fallback_hops]

    def _frontend_invite(self, request: Request, number: str, caller: str) -> Request:
        """Leg B of a call from the PSTN: an INVITE to the Front End for the user whose
        number was called, vouching for the caller."""
        domain = self.config.domain
        uri = URI("sip", number, None, domain, None, (("user", "phone"),))
        caller_uri = f"sip:{caller}@{domain};user=phone"
        headers = Headers()
        headers.add("Via", self.endpoint.via("tcp"))
        headers.add("Max-Forwards", "70")
        headers.add("From", f"<{caller_uri}>;tag={new_tag()}")
        headers.add("To", f"<sip:{number}@{domain};user=phone>")
        headers.add("Call-ID", new_call_id(self.config.host))
        headers.add("CSeq", "1 INVITE")
        headers.add("Contact", self.b2bua.contact("tcp"))
        headers.add("Allow", ALLOW)
        content_type = request.headers.get("Content-Type")
        if content_type and request.body:
            headers.add("Content-Type", content_type)
        out = Request("INVITE", uri, headers, request.body)
        out.headers.add("X-Trimaran-Pstn", pstn_header(self.config.secret, caller_uri, out))
        return out

    # -- admin -------------------------------------------------------------------------
    def status_routes(self) -> tuple[Route, ...]:
        """``GET /mediation/status`` (the SBA serves it beside its registrar's API)."""
        return (("/mediation/status", "mediation-status", (("GET", self._status),)),)

    async def _health(self, request: web.Request) -> web.Response:
        body = {"healthy": self.started, "reason": "serving" if self.started else "starting",
                "server": self.config.server, "role": "mediation"}
        return web.json_response(body, status=200 if self.started else 503)

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response({**self.status(), **certificate_status()})

    def _describe(self, families: Families) -> None:
        for state in self.monitor.status():
            families.flag("mediation_gateway_up", "Whether a gateway answers its probes",
                          state["state"] == "up", gateway=str(state["gateway"]))
        families.gauge("mediation_calls_active", "Calls established through this server",
                       self.b2bua.active)
        describe_transactions(families, self.endpoint.transactions.statistics())

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


Handler = Callable[[MediationServer, IncomingRequest], Awaitable[None]]
_HANDLERS: dict[str, Handler] = {
    name[len("_handle_"):].upper(): getattr(MediationServer, name)
    for name in dir(MediationServer) if name.startswith("_handle_")
}


def _caller_number(request: Request, default: str = "anonymous") -> str:
    """The caller's number: the user part of P-Asserted-Identity (a Front End sets it
    from the user's line URI) or of From, when it is a number."""
    for value in (request.headers.get("P-Asserted-Identity"), request.headers.get("From")):
        if not value:
            continue
        try:
            user = NameAddr.parse(value).uri.user or ""
        except SipParseError:
            continue
        if user.lstrip("+").isdigit():
            return user
    return default


def _server_unreachable(response: Response) -> bool:
    """A synthetic 503/408 (transport failure, timeout): the server, not the user."""
    return response.status in (408, 503) and response.to.tag is None
