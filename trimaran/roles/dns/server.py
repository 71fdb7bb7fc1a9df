"""The dns server role: authoritative DNS for the deployment's SIP domain (issue 7 item 2).

One process answers UDP and TCP DNS on its `dns_port` from a `Zone` built from the
topology for the view its dns pool serves (`Pool.dns_view`: "internal", or "external"
for remote users and federated partners, EDGE-2; see `trimaran.roles.dns.zone` for the
records), polls the health of the servers that view points at (internal: Front End and
Director servers; external: Edge servers; `GET /health` on their admin API every
`poll_interval`: 200 is healthy, anything else or no answer is not) and rebuilds the
zone when the health view changes. Its own admin HTTP API answers ``GET /health`` (for
the supervisor), ``GET /status`` (the view and the health view) and ``GET /metrics``
(Prometheus: queries by type and rcode, the health view, polls).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import cast

import aiohttp
from aiohttp import web

from trimaran.admin import access
from trimaran.admin.metrics import Families, ServerMetrics
from trimaran.aio import cancel
from trimaran.roles.dns.handler import answer
from trimaran.roles.dns.zone import DEFAULT_TTL, Zone, build_zone, check_view, polled_servers
from trimaran.security import https
from trimaran.security.deployment import certificate_status
from trimaran.topology.model import Server, Topology
from trimaran.topology.resolver import Resolver

log = logging.getLogger("trimaran.dns")

TCP_IDLE_TIMEOUT = 10.0
MAX_TCP_CLIENTS = 64


@dataclass(frozen=True, slots=True)
class DnsConfig:
    """What one dns server needs: the topology, its own server entry and its site.

    The view it answers is its pool's `dns_view`.
    """

    topology: Topology
    server: Server
    site: str
    poll_interval: float = 1.0
    poll_timeout: float = 0.8
    ttl: int = DEFAULT_TTL


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, owner: DnsServer) -> None:
        self.owner = owner
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        reply = answer(self.owner.zone, data, count=self.owner.count_query)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)


class DnsServer:
    """The running dns server; `start` binds, `stop` closes."""

    def __init__(self, config: DnsConfig) -> None:
        self.config = config
        pool = Resolver(config.topology).pool_of(config.server.name)
        self.view = check_view(pool.dns_view)
        self.health: dict[str, bool] = {
            s.name: True for s in polled_servers(config.topology, self.view)}
        self.zone: Zone = self._build()
        self.udp: asyncio.DatagramTransport | None = None
        self.tcp: asyncio.Server | None = None
        self.admin: web.AppRunner | None = None
        self._poller: asyncio.Task[None] | None = None
        self._tcp_clients: set[asyncio.Task[None]] = set()
        self.polls = 0
        self.metrics = ServerMetrics(server=config.server.name, role="dns", pool=pool.name)
        self._queries = self.metrics.counter(
            "dns_queries", "DNS queries answered (rcode) or dropped, by type", ["type", "rcode"])
        self.metrics.add_source("health", self._describe_health)

    def _build(self) -> Zone:
        return build_zone(self.config.topology, self.config.site,
                          lambda name: self.health.get(name, True), self.config.ttl,
                          self.view)

    async def start(self, admin: bool = True) -> None:
        """Bind UDP and TCP DNS (and the admin API) and start polling health."""
        host, port = self.config.server.address, self.config.server.dns_endpoint.port
        loop = asyncio.get_running_loop()
        self.udp, _ = await loop.create_datagram_endpoint(lambda: _Udp(self),
                                                          local_addr=(host, port))
        self.tcp = await asyncio.start_server(self._tcp_client, host, port)
        if admin:
            self.admin = await self._start_admin()
        self._poller = asyncio.create_task(self._poll_forever(), name="dns-health")
        log.info("dns server %s answering the %s view of %s on %s:%s (udp+tcp)",
                 self.config.server.name, self.view, self.config.topology.sip_domain, host, port)

    async def stop(self) -> None:
        """Stop polling and close every socket."""
        await cancel(self._poller)
        if self.udp is not None:
            self.udp.close()
        if self.tcp is not None:
            self.tcp.close()
            for task in list(self._tcp_clients):
                task.cancel()
            await asyncio.gather(*self._tcp_clients, return_exceptions=True)
            await self.tcp.wait_closed()
        if self.admin is not None:
            await self.admin.cleanup()

    # --- TCP ------------------------------------------------------------------

    async def _tcp_client(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is None or len(self._tcp_clients) >= MAX_TCP_CLIENTS:
            writer.close()
            return
        self._tcp_clients.add(task)
        try:
            while True:
                header = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE_TIMEOUT)
                size = int.from_bytes(header, "big")
                wire = await asyncio.wait_for(reader.readexactly(size), TCP_IDLE_TIMEOUT)
                reply = answer(self.zone, wire, tcp=True, count=self.count_query)
                if reply is None:
                    break
                writer.write(len(reply).to_bytes(2, "big") + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            pass
        finally:
            self._tcp_clients.discard(task)
            writer.close()

    # --- health ---------------------------------------------------------------

    async def _poll_forever(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.config.poll_timeout)
        async with aiohttp.ClientSession(timeout=timeout, connector=https.connector()) as session:
            while True:
                await self.poll_once(session)
                await asyncio.sleep(self.config.poll_interval)

    async def poll_once(self, session: aiohttp.ClientSession) -> None:
        """Ask every server the view points at for /health once; rebuild the zone on a
        change."""
        servers = polled_servers(self.config.topology, self.view)
        results = await asyncio.gather(*(_healthy(session, s) for s in servers))
        view = {s.name: ok for s, ok in zip(servers, results, strict=True)}
        self.polls += 1
        if view != self.health:
            changed = sorted(n for n in view if view[n] != self.health.get(n))
            self.health = view
            self.zone = self._build()
            log.info("health changed: %s", ", ".join(
                f"{n} {'up' if view[n] else 'down'}" for n in changed))

    # --- metrics and admin API ----------------------------------------------------

    def count_query(self, qtype: str, rcode: str) -> None:
        """Count a query of type `qtype` answered with `rcode` (or dropped)."""
        self._queries.labels(type=qtype, rcode=rcode).inc()

    def _describe_health(self, families: Families) -> None:
        for name, healthy in sorted(self.health.items()):
            families.flag("dns_server_healthy", "1 while a SIP (or Edge) server answers its "
                          "health checks (and is in the zone)", healthy, server=name)
        families.counter("dns_health_polls", "Rounds of health checks of the SIP servers",
                         self.polls)

    async def _start_admin(self) -> web.AppRunner:
        app = access.guarded_app()
        app.router.add_get("/health", self._health)
        app.router.add_get("/status", self._status)
        app.router.add_get("/metrics", self.metrics.handle)
        runner = web.AppRunner(https.guard(app), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        server = self.config.server
        await web.TCPSite(runner, server.address, server.admin_port,
                          ssl_context=https.listener_ssl()).start()
        return runner

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "healthy", "reason": "serving",
                                  "server": self.config.server.name, "role": "dns"})

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response({"server": self.config.server.name, "role": "dns",
                                  "site": self.config.site, "view": self.view,
                                  "polls": self.polls,
                                  "health": self.health, **certificate_status()})


async def _healthy(session: aiohttp.ClientSession, server: Server) -> bool:
    try:
        async with session.get(https.secure(f"{server.admin_url}/health")) as response:
            return response.status == 200
    except (aiohttp.ClientError, TimeoutError, OSError):
        return False


async def run_dns(config: DnsConfig, stop: asyncio.Event) -> None:
    """Run a dns server until `stop` is set."""
    server = DnsServer(config)
    await server.start()
    try:
        await stop.wait()
    finally:
        await server.stop()
