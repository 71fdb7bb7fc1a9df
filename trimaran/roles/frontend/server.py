"""A Front End server: registrar, presence server and proxy for the users of its pool.

Requests are dispatched through a table of `_handle_<method>` coroutines. Each
runs in its own task; this module is the one boundary where failures become
SIP responses: `SipParseError` → its status (400 …), `StoreUnavailable` → 503
with Retry-After, anything else → 500 and a logged traceback. The server keeps
serving in every case (OPS-5).

Modes (DESIGN §3 "Resiliency mode"): `full` while the Back End answers;
`resiliency` while it does not — registered users stay reachable from the
caches, registrations are accepted locally and written back later, and
persistent changes are refused with 503 + Retry-After and a reason (FE-7).
Registrar responses say which with `X-Trimaran-Mode`.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from trimaran import __version__
from trimaran.admin.http import AdminContext, AdminServer, Route
from trimaran.admin.metrics import Metrics
from trimaran.client.ua import uri_address
from trimaran.cms.failover import Standing
from trimaran.net.endpoint import IncomingRequest, SipEndpoint
from trimaran.net.transport import Address, Flow, TransportConfig, TransportError
from trimaran.roles.frontend.abuse import FrontEndLimits
from trimaran.roles.frontend.apps import AppRouter
from trimaran.roles.frontend.authn import RequestAuthenticator
from trimaran.roles.frontend.cache import BindingCache
from trimaran.roles.frontend.chat import ChatRouter
from trimaran.roles.frontend.config import FrontEndConfig
from trimaran.roles.frontend.delivery import Delivery
from trimaran.roles.frontend.federation import FederationRoute
from trimaran.roles.frontend.homing import DisasterRecovery
from trimaran.roles.frontend.interpool import InterPool
from trimaran.roles.frontend.metrics import add_frontend_sources
from trimaran.roles.frontend.noticing import NoticedCredentials, NoticedLockouts, StoreWatch
from trimaran.roles.frontend.peers import PEER_EVENT, PeerLink
from trimaran.roles.frontend.pool import PoolMembership
from trimaran.roles.frontend.presence import PresenceService
from trimaran.roles.frontend.proxy import Proxy, Target
from trimaran.roles.frontend.registrar import (
    RegistrationRefused,
    contact_headers,
    plan_register,
)
from trimaran.roles.frontend.routing import Router
from trimaran.roles.frontend.upkeep import Upkeep
from trimaran.roles.frontend.userfeed import UserFeed
from trimaran.roles.frontend.voice import VoiceRouting
from trimaran.sip.errors import SipParseError
from trimaran.sip.headers import Headers
from trimaran.sip.ids import new_tag
from trimaran.sip.message import Request
from trimaran.sip.transaction import TransactionError
from trimaran.sip.transaction_server import ServerTransaction
from trimaran.sip.uri import URI
from trimaran.store.base import Store, StoreError, StoreUnavailable
from trimaran.store.model import Binding
from trimaran.voice.features import Feature, Mode, why_unavailable

log = logging.getLogger(__name__)

VERSION = __version__
ALLOW = "REGISTER, INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE, SUBSCRIBE, NOTIFY, PUBLISH, " \
        "UPDATE, INFO, REFER"
MODE_HEADER = "X-Trimaran-Mode"
RETRY_AFTER = "5"
Handler = Callable[["FrontEndServer", IncomingRequest], Awaitable[None]]


class FrontEndServer:
    """One Front End server process's SIP and HTTP service; `routes` are more admin API
    endpoints (the status page)."""

    def __init__(self, config: FrontEndConfig, store: Store, *,
                 wall_clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic,
                 dr: DisasterRecovery | None = None, routes: tuple[Route, ...] = (),
                 interpool: InterPool | None = None,
                 voice: Callable[[FrontEndServer], VoiceRouting] | None = None,
                 apps: Callable[[FrontEndServer], AppRouter] | None = None,
                 app_status: Callable[[], dict[str, object]] | None = None,
                 federation: FederationRoute | None = None,
                 chat: Callable[[FrontEndServer], ChatRouter] | None = None) -> None:
        self.config = config
        self.store = store
        self.dr = dr
        self.wall_clock = wall_clock
        self.monotonic = monotonic
        self.metrics = Metrics(server=config.server, role="frontend", pool=config.pool)
        self.endpoint = SipEndpoint(
            on_request=self._on_request, timers=config.timers,
            transport_config=TransportConfig(limits=config.limits),
            on_flow_closed=lambda flow, reason: self.upkeep.on_flow_closed(flow, reason))
        # The authenticator's store reads and the binding writes follow the Back End's
        # reachability, and report it (noticing.py).
        self.watch = StoreWatch(self.enter_resiliency)
        self.limits = FrontEndLimits(config.abuse, config.deployment_hosts,
                                     NoticedLockouts(store.lockouts, self.watch),
                                     self.metrics, store_ok=lambda: self.mode == "full",
                                     agent=lambda: ":".join(map(str, self.sip_address)))
        self.auth = RequestAuthenticator(NoticedCredentials(store.users, self.watch),
                                         config.domain, config.secret, config.nonce_ttl,
                                         config.digest_algorithms,
                                         names_this_server=self._is_this_server,
                                         store_ok=lambda: self.mode == "full",
                                         lockout=self.limits.lockout)
        self.proxy = Proxy(self.endpoint, config.secret)
        self.router = Router(self, config.secret)
        self.interpool = interpool
        self.cache = BindingCache()
        self.presence = PresenceService(
            self.endpoint, store, server=config.server, wall_clock=wall_clock,
            default_expires=config.presence_expires, min_expires=config.min_expires,
            max_expires=config.max_expires, reach=self._reach_flow)
        self.peers = PeerLink(self)
        self.upkeep = Upkeep(self)
        self.presence.on_change = self.peers.broadcast_presence
        self.membership: PoolMembership | None = None
        #: Enterprise pools: every pool user's credentials and home here (resiliency mode).
        self.user_feed: UserFeed | None = None
        if config.peers:
            self.membership = PoolMembership(
                config.server, config.pool, list(config.peers), store,
                detection=config.failure_detection, heartbeat_interval=config.heartbeat_interval,
                wall_clock=wall_clock, monotonic=monotonic, ping=self.peers.ping)
            self.user_feed = UserFeed(store, config.pool, self.auth.cache,
                                      dr.homing.remember_home if dr is not None else
                                      lambda _aor, _pool: None)
        self.admin = AdminServer(AdminContext(
            server=config.server, role="frontend", pool=config.pool, realm=config.domain,
            store=store, status=self.status, health=self.health, metrics=self.metrics,
            wall_clock=wall_clock, on_contacts_changed=self._contacts_changed,
            admin_token=config.admin_token, on_drain=self.drain,
            routes=(dr.routes() if dr else ()) + routes,
            write_check=dr.homing.check_write if dr else None, lockout=self.limits.lockout))
        if dr is not None:
            dr.homing.on_records_changed = self._users_moved
            if dr.backup is not None:
                dr.backup.is_shipper = self.is_shipper
            if dr.auto is not None:
                dr.auto.is_leader = self.is_shipper
        self.voice = voice(self) if voice is not None else None
        self.apps = apps(self) if apps is not None else None
        self.chat = chat(self) if chat is not None else None
        self.delivery = Delivery(self)
        self.federation = federation
        self._app_status = app_status
        #: INVITE transactions ringing each user here (their fork contexts: `proxy`)
        self.ringing: dict[str, list[ServerTransaction]] = {}
        add_frontend_sources(self)
        self.contact_flows: dict[str, str] = {}                # contact URI -> local flow id
        self.outbound: dict[str, set[tuple[str, str]]] = {}   # flow id -> {(aor, key)}
        self.flow_modes: dict[str, str] = {}                  # flow id -> mode registered in
        self._tasks: set[asyncio.Task[None]] = set()
        self._housekeeping: asyncio.Task[None] | None = None
        self._membership_task: asyncio.Task[None] | None = None
        self._users_task: asyncio.Task[None] | None = None
        self._started_at = 0.0
        self.bindings_count = 0
        self.mode = "full"
        self.started = False              # SIP listening (health says "starting" before)
        self.draining = False
        self.admin_address: tuple[str, int] | None = None

    # -- lifecycle --------------------------------------------------------------
    async def start(self) -> None:
        """Listen for SIP (UDP and TCP on the same port) and HTTP, start housekeeping."""
        cfg = self.config
        await self.endpoint.listen(cfg.host, udp_port=cfg.sip_port, tcp_port=None)
        _, port = self.endpoint.contact_host_port("udp")
        await self.endpoint.transport.listen_tcp(cfg.host, port)
        await self.endpoint.listen_tls(cfg.host)   # OPS-6: when the deployment has TLS
        self.started = True
        self.admin_address = await self.admin.start(cfg.host, cfg.admin_port)
        if self.dr is not None:  # DR-7: know the failover records before serving users
            await self.dr.start()
        self._started_at = self.wall_clock()
        self._housekeeping = asyncio.ensure_future(self.upkeep.housekeeping_loop())
        if self.membership is not None:
            self._membership_task = asyncio.ensure_future(self.upkeep.membership_loop())
        if self.user_feed is not None:
            self._users_task = asyncio.ensure_future(self.upkeep.users_loop())
        log.info("front end %s of pool %s serving SIP on %s:%s", cfg.server, cfg.pool,
                 cfg.host, port)

    async def stop(self) -> None:
        """Ordered shutdown: stop housekeeping, SIP (drain), HTTP; the store stays open."""
        for task in (self._housekeeping, self._membership_task, self._users_task):
            if task is not None:
                task.cancel()
        if self.dr is not None:
            await self.dr.stop()
        await self.endpoint.close(drain_timeout=2.0)
        for task in list(self._tasks):
            task.cancel()
        await self.admin.close()

    @property
    def sip_address(self) -> tuple[str, int]:
        """Where clients reach this server."""
        return self.endpoint.contact_host_port("udp")

    def status(self) -> dict[str, object]:
        """The status snapshot of the admin API."""
        stats = self.endpoint.transactions.statistics()
        status: dict[str, object] = {
            "version": VERSION, "server": self.config.server, "role": "frontend",
            "pool": self.config.pool, "mode": self.mode, "draining": self.draining,
            "uptime": round(self.wall_clock() - self._started_at, 1),
            "bindings": self.bindings_count,
            "flows": self.endpoint.transport.statistics().open_connections,
            "subscriptions": len(self.presence.watches),
            "transactions": stats.client_transactions + stats.server_transactions}
        if self.membership is not None:
            view = self.membership.view()
            status["pool_members"] = {"alive": view.alive, "dead": view.dead,
                                      "heartbeat_age": self.membership.heartbeat_ages()}
            status["decisions"] = [{"action": d.action, "server": d.server, "reason": d.reason,
                                    "at": d.at} for d in view.decisions]
        if self.user_feed is not None:
            status["credentials"] = {"loaded": self.user_feed.loaded,
                                     "cached": self.auth.cache.size}
        if self.dr is not None:
            status.update(self.dr.status())
        if self.voice is not None:
            status["voice"] = self.voice.status()
        if self._app_status is not None:
            status["apps"] = self._app_status()
        if self.chat is not None:
            status["chat"] = self.chat.status()
        return status

    def is_shipper(self) -> bool:
        """The Backup Service ships from the first live server of the pool (by name)."""
        if self.membership is None:
            return True
        alive = self.membership.view().alive
        return not alive or alive[0] == self.config.server

    def health(self) -> tuple[bool, str]:
        """Healthy while serving; draining and resiliency mode are reported as such."""
        if not self.started:
            return False, "starting: reading the CMS before serving SIP"
        if self.draining:
            return False, "draining"
        if self.mode != "full":
            return False, "resiliency mode: back end unreachable"
        return True, "serving"

    async def drain(self) -> dict[str, object]:
        """FE-5: refuse new sign-ins, move clients away, let dialogs finish."""
        if not self.draining:
            self.draining = True
            if self.membership is not None:
                self.membership.state = "draining"
            log.warning("draining: refusing sign-ins, closing client flows in %.1f s",
                        self.config.drain_grace)
            self.spawn(self._close_client_flows_later())
        return {"draining": True, "bindings": self.bindings_count}

    async def _close_client_flows_later(self) -> None:
        await asyncio.sleep(self.config.drain_grace)
        for flow_id in list(self.outbound):
            flow = self.endpoint.transport.flow(flow_id)
            if flow is not None:
                await self.endpoint.transport.close_flow(flow, drain_timeout=1.0)

    # -- the one error boundary -----------------------------------------------
    def _on_request(self, incoming: IncomingRequest) -> None:
        method = incoming.request.method
        self.metrics.request(method)
        refusal = self.limits.rate_refusal(incoming.flow.remote[0], method, self.monotonic())
        if refusal is not None:  # OPS-6, RFC 6357 §4: refused before any work
            self.reply(incoming, refusal.status, refusal.reason, headers=refusal.headers)
            return
        self.spawn(self._dispatch(incoming))

    async def _dispatch(self, incoming: IncomingRequest) -> None:
        method = incoming.request.method
        handler = _HANDLERS.get(method)
        try:
            if handler is None:
                self.reply(incoming, 405, headers=Headers([("Allow", ALLOW)]))
                return
            await handler(self, incoming)
        except SipParseError as exc:
            self.metrics.bad_message()
            self.reply(incoming, exc.status_hint, exc.reason[:100])
        except StoreUnavailable as exc:
            self.enter_resiliency(str(exc))
            self.metrics.store_error()
            self.reply(incoming, 503, "Service Unavailable (back end unreachable)",
                       headers=Headers([("Retry-After", RETRY_AFTER)]))
        except StoreError as exc:
            self.metrics.store_error()
            log.warning("store refused %s: %s", method, exc)
            self.reply(incoming, 500, "Server Internal Error (store)")
        except Exception:
            log.exception("unexpected failure handling %s", method)
            self.reply(incoming, 500)

    def reply(self, incoming: IncomingRequest, status: int, reason: str | None = None, *,
              headers: Headers | None = None, body: bytes = b"",
              to_tag: str | None = None) -> None:
        """Answer `incoming` (nothing happens if it was answered already)."""
        if incoming.transaction is None or incoming.transaction.terminated:
            return
        try:
            self.endpoint.reply(incoming, status, reason, headers=headers, body=body,
                                to_tag=to_tag or (new_tag() if status >= 200 else None))
            self.metrics.response(status)
            if incoming.request.method == "REGISTER":
                self.metrics.registration(status, headers.get(MODE_HEADER) if headers else None)
        except TransactionError:
            log.debug("%s already answered", incoming.request.method)

    def enter_resiliency(self, why: str) -> None:
        if self.mode != "resiliency":
            log.warning("entering resiliency mode: back end unreachable (%s)", why)
            self.mode = "resiliency"
        self.watch.set_away()

    def leave_resiliency(self) -> None:
        """The Back End answers again: full service."""
        log.warning("back end reachable again: leaving resiliency mode")
        self.mode = "full"
        self.watch.set_back()

    async def authenticate(self, incoming: IncomingRequest) -> str | None:
        outcome = await self.auth.authenticate(incoming.request, now=self.wall_clock())
        if outcome.user is not None:
            return outcome.user
        self.metrics.auth_failure()
        headers = Headers([(outcome.challenge_header, c) for c in outcome.challenges])
        if outcome.warning:
            headers.add("Warning", self.limits.warning(outcome.warning))
        self.reply(incoming, outcome.status, outcome.reason, headers=headers)
        return None

    def _is_this_server(self, uri: URI) -> bool:
        """True when `uri` is this server's own SIP address (no user part)."""
        host, port = self.sip_address
        return uri.user is None and uri.host == host and (uri.port or 5060) == port

    def is_local(self, uri: URI) -> bool:
        """True when `uri` names our domain or this server."""
        if uri.scheme == "tel":
            return True
        host, port = self.sip_address
        return uri.host.lower() == self.config.domain.lower() or \
            (uri.host == host and (uri.port or 5060) == port)

    # -- bindings, through the cache --------------------------------------------
    async def bindings_for(self, aor: str) -> list[Binding]:
        """The user's live bindings: the store's, else the cache's (resiliency)."""
        now = self.wall_clock()
        if self.mode != "full":  # the store is away: do not wait on it for every request
            bindings = self.cache.get(aor, now)
        else:
            try:
                bindings = await self.store.bindings.for_aor(aor, now=now)
            except StoreUnavailable as exc:
                self.enter_resiliency(str(exc))
                bindings = self.cache.get(aor, now)
            else:
                self.cache.remember(aor, bindings)
        if self.membership is not None:
            bindings = [b for b in bindings if not self.membership.is_dead(b.server)]
        return bindings

    # -- REGISTER -----------------------------------------------------------------
    async def _handle_register(self, incoming: IncomingRequest) -> None:
        request = incoming.request
        if not self.is_local(request.uri):
            self.reply(incoming, 404, "Not a domain of this registrar")
            return
        if self.draining:
            self.reply(incoming, 503, "Server draining, register elsewhere",
                       headers=Headers([("Retry-After", RETRY_AFTER)]))
            return
        user = await self.authenticate(incoming)
        if user is None:
            return
        if incoming.flow.reliable and not self.endpoint.transport.is_open(incoming.flow):
            return  # the client left (or gave up on us) before we got to it
        served_as = "full"
        generation = self.dr.homing.generation if self.dr is not None else 0
        if self.dr is not None:
            st = await self._served_here(incoming, user)
            if st is None:
                return
            served_as = st.mode
        now = self.wall_clock()
        existing = await self.bindings_for(user)
        cfg = self.config
        try:
            plan = plan_register(request, aor=user, existing=existing, server=cfg.server,
                                 flow=incoming.flow, now=now, min_expires=cfg.min_expires,
                                 max_expires=cfg.max_expires,
                                 default_expires=cfg.default_expires)
        except RegistrationRefused as refused:
            self.reply(incoming, refused.status, refused.reason, headers=refused.headers)
            return
        refusal = self.limits.flow_refusal(existing, plan)  # OPS-6
        if refusal is not None:
            self.reply(incoming, refusal.status, refusal.reason, headers=refusal.headers)
            return
        bindings = existing if plan.fetch_only else await self._apply(user, plan.upsert,
                                                                       plan.remove, now)
        # Resiliency when our Back End is away (FE-7) or the user's home pool is (DR-8).
        told = self.mode if self.mode != "full" else served_as
        if not plan.fetch_only:
            self._track_local(user, plan.upsert, plan.remove, existing, incoming.flow)
            if incoming.flow.reliable:
                self.flow_modes[incoming.flow.id] = told
        headers = contact_headers(bindings, now)
        headers.add("Date", time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now)))
        headers.add(MODE_HEADER, told)
        self.reply(incoming, 200, headers=headers)
        if self.dr is not None and self.dr.homing.generation != generation:
            # Who we serve changed while this REGISTER was handled: the sweep of moved
            # users may have run before its flow was tracked. Sweep again.
            self.spawn(self.upkeep.close_moved_flows())
        if not plan.fetch_only and bool(existing) != bool(bindings):
            self.presence.schedule_notify(user)

    async def _apply(self, user: str, upsert: tuple[Binding, ...], remove: tuple[str, ...],
                     now: float) -> list[Binding]:
        if self.mode != "full":
            return self.cache.apply(user, upsert, remove, now)
        try:  # released when the Back End is found away meanwhile: the cache keeps it
            bindings = await self.watch.call(self.store.bindings.apply(
                user, upsert=upsert, remove=remove, now=now))
        except StoreUnavailable as exc:
            self.enter_resiliency(str(exc))
            return self.cache.apply(user, upsert, remove, now)
        self.cache.remember(user, bindings)
        return bindings

    def _track_local(self, user: str, upsert: tuple[Binding, ...], remove: tuple[str, ...],
                     existing: list[Binding], flow: Flow) -> None:
        for key in remove:
            old = next((b for b in existing if b.key == key), None)
            if old is not None:
                self.contact_flows.pop(old.contact, None)
        for binding in upsert:
            self.contact_flows[binding.contact] = binding.flow_id
            if binding.reg_id is not None and flow.reliable:
                self.outbound.setdefault(binding.flow_id, set()).add((user, binding.key))

    # -- requests routed to users -------------------------------------------------
    async def _handle_invite(self, incoming: IncomingRequest) -> None:
        await self.delivery.route(incoming)

    async def _handle_message(self, incoming: IncomingRequest) -> None:
        await self.delivery.route(incoming)

    async def _route(self, incoming: IncomingRequest) -> None:
        await self.delivery.route(incoming)


    def _reach_flow(self, flow: Flow, remote_target: str) -> Address | Flow:
        """How to send a request to a UA we hold a dialog with (NOTIFY)."""
        if self.endpoint.transport.is_open(flow):
            return flow
        return uri_address(URI.parse(remote_target), flow.transport)

    # -- in-dialog requests ---------------------------------------------------------
    async def in_dialog(self, incoming: IncomingRequest) -> None:
        request = incoming.request
        routes = request.routes
        if not routes or not self.proxy.is_our_route(routes[0]):
            if request.method == "SUBSCRIBE" and self.is_local(request.uri):
                watcher = await self.authenticate(incoming)
                if watcher is not None:
                    await self.presence.subscribe(incoming, watcher)
                return
            self.reply(incoming, 481, "No such dialog here")
            return
        if not self.proxy.route_token_valid(routes[0], request.call_id):
            self.reply(incoming, 403, "Route not issued for this dialog")
            return
        forwarded = request.copy()
        forwarded.headers.pop_first("Route")
        next_hop = forwarded.routes[0].uri if forwarded.routes else forwarded.uri
        target = Target(forwarded.uri, self.router.address_for(next_hop))
        if request.method == "ACK":
            await self.forward_ack(forwarded, target)
            return
        await self.router.forward(IncomingRequest(forwarded, incoming.transaction,
                                                  incoming.flow), [target], None)

    async def forward_ack(self, ack: Request, target: Target) -> None:
        """Forward an ACK for a 2xx statelessly (§16.6)."""
        out = self.proxy.prepare(ack, target, record_route=False)
        try:
            await self.endpoint.send_stateless(out, target.via)
        except TransportError as exc:
            log.info("ACK not forwarded: %s", exc)

    async def _handle_ack(self, incoming: IncomingRequest) -> None:
        routes = incoming.request.routes
        if routes and self.proxy.is_our_route(routes[0]):
            flow_id, valid = self.router.flow_of_route(routes[0])
            if flow_id is not None and valid:
                self.router.relay_to_flow(incoming, flow_id)
                return
        if incoming.request.to.tag and routes:
            await self.in_dialog(incoming)

    async def _handle_bye(self, incoming: IncomingRequest) -> None:
        await self._route_in_dialog(incoming)

    async def _handle_update(self, incoming: IncomingRequest) -> None:
        await self._route_in_dialog(incoming)

    async def _handle_info(self, incoming: IncomingRequest) -> None:
        await self._route_in_dialog(incoming)

    async def _handle_notify(self, incoming: IncomingRequest) -> None:
        request = incoming.request
        if (request.headers.get("Event") or "").strip() == PEER_EVENT and \
                not request.to.tag and self._is_this_server(request.uri):
            presentity = request.headers.get("X-Trimaran-Presentity") or ""
            token = request.headers.get("X-Trimaran-Token") or ""
            if not hmac.compare_digest(token, self.peers.token(presentity)):
                self.reply(incoming, 403, "Not a server of this pool")
                return
            self.reply(incoming, 200)
            self.presence.schedule_notify(presentity, local_only=True)
            return
        await self._route_in_dialog(incoming)

    async def _handle_refer(self, incoming: IncomingRequest) -> None:
        if not incoming.request.to.tag and not incoming.request.routes:
            await self._route(incoming)          # e.g. park a call (APP-1)
            return
        await self._route_in_dialog(incoming)

    async def _route_in_dialog(self, incoming: IncomingRequest) -> None:
        routes = incoming.request.routes
        if routes and self.proxy.is_our_route(routes[0]):
            flow_id, valid = self.router.flow_of_route(routes[0])
            if flow_id is not None:
                if valid:
                    self.router.relay_to_flow(incoming, flow_id)
                else:
                    self.reply(incoming, 403, "Invalid flow token")
                return
        await self.in_dialog(incoming)

    async def _handle_cancel(self, incoming: IncomingRequest) -> None:
        invite = self.endpoint.transactions.find_invite(incoming.request)
        context = self.proxy.contexts.get(invite) if invite is not None else None
        if invite is None:
            self.reply(incoming, 481)
            return
        self.reply(incoming, 200)
        if context is not None:
            self.proxy.cancel(context)
        else:
            self.endpoint.reply(IncomingRequest(invite.request, invite, incoming.flow), 487,
                                to_tag=new_tag())

    # -- presence -------------------------------------------------------------------
    async def _handle_subscribe(self, incoming: IncomingRequest) -> None:
        request = incoming.request
        if request.routes and self.proxy.is_our_route(request.routes[0]):
            await self._route_in_dialog(incoming)
            return
        if not self.is_local(request.uri):
            self.reply(incoming, 403, "Relaying denied")
            return
        if (request.headers.get("Event") or "").split(";")[0].strip() == "conference":
            await self._route(incoming)          # a conference's roster (APP-7, RFC 4575)
            return
        watcher = await self.authenticate(incoming)
        if watcher is not None:
            await self.presence.subscribe(incoming, watcher)

    async def _handle_publish(self, incoming: IncomingRequest) -> None:
        if not self.is_local(incoming.request.uri):
            self.reply(incoming, 403, "Relaying denied")
            return
        user = await self.authenticate(incoming)
        if user is None:
            return
        if self.mode != "full":
            self.reply(incoming, 503, "Presence cannot change: back end unreachable "
                       "(resiliency mode)", headers=Headers([("Retry-After", RETRY_AFTER),
                                                           (MODE_HEADER, self.mode)]))
            return
        if self.dr is not None:
            st = await self.dr.homing.standing(user)
            if not st.serve or st.read_only:
                headers = Headers([("Retry-After", RETRY_AFTER)])
                if st.mode == "resiliency":     # EV-7: the feature table's reason
                    why = why_unavailable(Feature.PRESENCE_PUBLISH, Mode.BACKUP_REGISTRAR)
                    host, port = self.sip_address
                    headers.add("Warning", f'399 {host}:{port} "{why}"')
                self.reply(incoming, 503, f"Presence cannot change here: {st.reason}"[:120],
                           headers=headers)
                return
        await self.presence.publish(incoming, user)

    async def _handle_options(self, incoming: IncomingRequest) -> None:
        request = incoming.request
        if request.uri.user and self.is_local(request.uri) and not request.to.tag:
            await self._route(incoming)
            return
        self.reply(incoming, 200, headers=Headers([("Allow", ALLOW),
                                                   ("Accept", "application/sdp"),
                                                   (MODE_HEADER, self.mode)]))

    # -- pool failover (DR-5, DR-7) ----------------------------------------------------
    async def _served_here(self, incoming: IncomingRequest, user: str) -> Standing | None:
        """The user's standing here; for a user this pool does not serve now, the REGISTER
        is answered (302 to the pool that does, or 503 + Retry-After) and None returned."""
        assert self.dr is not None
        st = await self.dr.homing.standing(user)
        if st.serve:
            return st
        transport = "tcp" if incoming.flow.reliable else "udp"
        headers = self.dr.homing.redirect_contacts(st.redirect_to or "", transport) \
            if st.redirect_to else Headers()
        if not len(headers):
            self.reply(incoming, 503, f"Not served here: {st.reason}"[:120],
                       headers=Headers([("Retry-After", self.dr.homing.retry_after())]))
            return None
        self.reply(incoming, 302, f"Moved Temporarily ({st.reason})"[:120], headers=headers)
        return None

    def _users_moved(self, pools: set[str]) -> None:
        """The failover records moved `pools`' users: close the flows of users no longer
        served here so their clients re-register (and are redirected)."""
        self.spawn(self.upkeep.close_moved_flows())

    # -- background ---------------------------------------------------------------
    async def _contacts_changed(self, owner: str) -> None:
        """A contact list changed: watchers' authorization may have changed."""
        await self.presence.notify_all(owner)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run `coro` in the background, keeping a reference."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


_HANDLERS: dict[str, Handler] = {
    name[len("_handle_"):].upper(): getattr(FrontEndServer, name)
    for name in dir(FrontEndServer) if name.startswith("_handle_")
}

