"""A Director server (SPEC DIR-1, DIR-2): signs users in and sends them to the pool
that serves them, holding no user state.

A REGISTER is authenticated (digest) with HA1s fetched from the Front End pools'
user homing (`GET /cms/homing/{user}`, signed with the deployment's CMS key, cached
briefly); the user's home pool and account lockout row come with them. A wrong
response is counted in the home pool's lockout (OPS-6, `RemoteLockouts`), so guessing
passwords through a Director locks the account as it does at a Front End. The Director then answers
``302 Moved Temporarily`` with the Contacts of the servers of the pool that serves
the user now:

* the home pool, normally (with its backup registrar's servers after them);
* its backup pool when the CMS failover record says the pool is failed over (the
  Director follows the CMS like every server);
* the home pool's backup registrar when the Director's own probes see the home pool
  down (DR-8: the user is then signed in there in resiliency mode).

Requests other than REGISTER and OPTIONS get 403: a Director routes sign-ins, it does
not relay traffic. Directors are independent of each other; a client lists several
and moves to the next when one does not answer.

Admin API: ``GET /health``, ``GET /status`` (CMS copy, pools as probed, sign-ins sent)
and ``GET /metrics`` (Prometheus: REGISTER results, redirects by pool and route, the
probed pools' liveness, the failover records, the CMS copy, SIP transactions); also the
deployment's status page (`routes`, from `trimaran.admin.statuspage`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from aiohttp import web

from trimaran.admin import access
from trimaran.admin.http import Route, add_routes
from trimaran.admin.metrics import ServerMetrics, describe_transactions, register_result
from trimaran.cms.directory import Directory, RemoteLockouts
from trimaran.cms.follower import CmsFollower
from trimaran.cms.liveness import DOWN, RECOVERING, PartnerWatch
from trimaran.cms.metrics import describe_failover_records, describe_liveness, describe_replica
from trimaran.net.endpoint import IncomingRequest, SipEndpoint
from trimaran.net.tls import DEFAULT_TLS_PORT
from trimaran.roles.frontend.abuse import AccountLockout, lockout_policy
from trimaran.roles.frontend.authn import RequestAuthenticator
from trimaran.roles.frontend.homing import server_contacts
from trimaran.security import https
from trimaran.security.deployment import certificate_status
from trimaran.sip.headers import Headers
from trimaran.sip.ids import new_tag
from trimaran.sip.transaction import TimerConfig, TransactionError
from trimaran.topology.model import PoolRole, Server, Topology
from trimaran.topology.resolver import Resolver

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class DirectorConfig:
    """What a Director server needs."""

    server: str
    host: str
    sip_port: int
    admin_port: int
    domain: str
    secret: bytes                 # nonces
    cms_secret: bytes             # user homing and CMS calls
    pool: str = ""                # the Director pool (for the metrics' identity)
    digest_algorithms: tuple[str, ...] = ("SHA-256", "MD5")
    nonce_ttl: float = 300.0
    timers: TimerConfig = field(default_factory=TimerConfig)


class DirectorServer:
    """One Director server: SIP (UDP and TCP) and a small admin API."""

    def __init__(self, config: DirectorConfig, topology: Topology, follower: CmsFollower,
                 watches: dict[str, PartnerWatch], directory: Directory,
                 routes: tuple[Route, ...] = ()) -> None:
        self.config = config
        self.topology = topology
        self.resolver = Resolver(topology)
        self.follower = follower
        self.watches = watches
        self.directory = directory
        self.routes = routes                         # more admin endpoints (status page)
        self.endpoint = SipEndpoint(on_request=self._on_request, timers=config.timers)
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self.sent: dict[str, int] = {}               # pool -> sign-ins sent there
        self.started = False                         # SIP listening
        self.metrics = ServerMetrics(server=config.server, role="director", pool=config.pool)
        self._registers = self.metrics.counter(
            "director_registers", "REGISTER requests answered, by result", ["result"])
        self._redirects = self.metrics.counter(
            "director_redirects", "Sign-ins redirected, by the pool sent to and the route "
            "(home, backup: failed over, backup_registrar: home pool down)", ["pool", "route"])
        # OPS-6: wrong passwords tried here count in the users' home pools, as at the
        # Front Ends, and a locked user is refused here too.
        locks = self.metrics.counter(
            "auth_lockouts", "Accounts locked by failed digest responses counted here")
        policy = lockout_policy(topology.settings.abuse)
        lockout = AccountLockout(RemoteLockouts(directory, on_locked=lambda _aor: locks.inc()),
                                 policy) if policy else None
        self.auth = RequestAuthenticator(directory, config.domain, config.secret,
                                         config.nonce_ttl, config.digest_algorithms,
                                         names_this_server=lambda uri: uri.user is None,
                                         lockout=lockout)
        self._describe_state()

    async def start(self) -> None:
        """Follow the CMS, probe the pools, listen."""
        cfg = self.config
        app = access.guarded_app()
        app.router.add_get("/health", self._health)
        app.router.add_get("/status", self._status)
        app.router.add_get("/metrics", self.metrics.handle)
        add_routes(app, self.routes)
        self._runner = web.AppRunner(https.guard(app), access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, cfg.host, cfg.admin_port,
                          ssl_context=https.listener_ssl()).start()
        await self.follower.start()
        for watch in self.watches.values():
            watch.start()
        await self.endpoint.listen(cfg.host, udp_port=cfg.sip_port, tcp_port=None)
        await self.endpoint.transport.listen_tcp(cfg.host, cfg.sip_port)
        await self.endpoint.listen_tls(cfg.host)   # OPS-6: when the deployment has TLS
        self.started = True
        log.info("director %s serving SIP on %s:%s", cfg.server, cfg.host, cfg.sip_port)

    async def stop(self) -> None:
        """Ordered shutdown."""
        await self.endpoint.close(drain_timeout=1.0)
        for watch in self.watches.values():
            await watch.stop()
        await self.follower.stop()
        await self.directory.close()
        for task in list(self._tasks):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()

    def serving_pool(self, home: str) -> tuple[str, str, str]:
        """(the pool to send a user of `home` to, the route: "home", "backup" or
        "backup_registrar", why)."""
        record = self.follower.snapshot.failover_records().get(home)
        if record is not None and record.served_by_backup and record.backup:
            return record.backup, "backup", f"{home} is {record.state} to {record.backup}"
        watch = self.watches.get(home)
        if watch is not None and watch.current.state in (DOWN, RECOVERING):
            registrar = self.resolver.backup_registrar(home)
            if registrar is not None:
                return registrar.name, "backup_registrar", \
                    f"{home} unreachable: backup registrar"
        return home, "home", "home pool"

    # -- SIP -----------------------------------------------------------------------
    def _on_request(self, incoming: IncomingRequest) -> None:
        task = asyncio.ensure_future(self._dispatch(incoming))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _dispatch(self, incoming: IncomingRequest) -> None:
        method = incoming.request.method
        try:
            if method == "REGISTER":
                await self._register(incoming)
            elif method == "OPTIONS":
                self._reply(incoming, 200)
            elif method != "ACK":
                self._reply(incoming, 403, "A Director only signs users in")
        except Exception:
            log.exception("director failed handling %s", method)
            self._reply(incoming, 500)

    async def _register(self, incoming: IncomingRequest) -> None:
        request = incoming.request
        if request.uri.host.lower() != self.config.domain.lower() and \
                request.uri.host != self.config.host:
            self._reply(incoming, 404, "Not a domain of this deployment")
            return
        outcome = await self.auth.authenticate(request, now=time.time())
        if outcome.user is None:
            self._reply(incoming, outcome.status, outcome.reason, Headers(
                [(outcome.challenge_header, c) for c in outcome.challenges]))
            return
        home = self.directory.homes.get(outcome.user)
        if home is None:
            self._reply(incoming, 404, "No home pool known for this user")
            return
        pool, route, why = self.serving_pool(home)
        transport = incoming.flow.transport if incoming.flow.reliable else "udp"
        # The serving pool's servers first; when that is the home pool, its backup
        # registrar after them (lower q), so a client whose home pool has just died
        # goes on there (DR-8) without asking a Director again.
        targets = spread(self.resolver.servers_of(pool), outcome.user)
        registrar = self.resolver.backup_registrar(home)
        if pool == home and registrar is not None:
            targets += [s for s in registrar.servers if s not in targets]
        if transport == "tls":   # OPS-6: a TLS client is sent to the servers' TLS port
            policy = self.endpoint.transport.tls
            port = policy.port if policy is not None else DEFAULT_TLS_PORT
            targets = [replace(s, sip_port=port) for s in targets]
        headers = server_contacts(targets, transport)
        self.sent[pool] = self.sent.get(pool, 0) + 1
        self._redirects.labels(pool=pool, route=route).inc()
        self._reply(incoming, 302, f"Moved Temporarily ({why})"[:120], headers)

    def _reply(self, incoming: IncomingRequest, status: int, reason: str | None = None,
               headers: Headers | None = None) -> None:
        if incoming.transaction is None or incoming.transaction.terminated:
            return
        with contextlib.suppress(TransactionError):
            self.endpoint.reply(incoming, status, reason, headers=headers,
                                to_tag=new_tag() if status >= 200 else None)
            if incoming.request.method == "REGISTER":
                self._registers.labels(result=register_result(status, None)).inc()

    def _describe_state(self) -> None:
        """On /metrics: the probed pools, the failover records, the CMS copy and the
        SIP transactions, as they are at each scrape."""
        metrics = self.metrics
        pools = [p.name for p in self.resolver.pools(PoolRole.FRONTEND)]
        metrics.add_source("pools", lambda families: describe_liveness(
            families, self.watches.values()))
        metrics.add_source("failover", lambda families: describe_failover_records(
            families, self.follower.snapshot.failover_records(), pools))
        metrics.add_source("cms", lambda families: describe_replica(families, self.follower))
        metrics.add_source("sip", lambda families: describe_transactions(
            families, self.endpoint.transactions.statistics()))

    # -- admin ---------------------------------------------------------------------
    async def _health(self, request: web.Request) -> web.Response:
        if not self.started:
            return web.json_response({"healthy": False, "reason": "starting",
                                      "server": self.config.server, "role": "director"},
                                     status=503)
        return web.json_response({"healthy": True, "reason": "serving",
                                  "server": self.config.server, "role": "director"})

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response({
            "server": self.config.server, "role": "director", "cms": self.follower.status(),
            "pools": {p: w.status() for p, w in self.watches.items()},
            "sign_ins_sent": self.sent, **certificate_status()})


def spread(servers: Sequence[Server], aor: str) -> list[Server]:
    """The pool's servers starting at one chosen by the user's AOR: the users of a pool
    are spread over its servers (each user always on the same one first), so a server
    failure moves a share of them, not all."""
    if not servers:
        return []
    first = int.from_bytes(hashlib.sha256(aor.encode()).digest()[:4], "big") % len(servers)
    return [*servers[first:], *servers[:first]]
