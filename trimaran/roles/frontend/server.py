"""A Front End server: registrar, presence server and proxy for the users of its pool.

Requests are dispatched through a table of `_handle_<method>` coroutines. Each
runs in its own task; this module is the one boundary where failures become
SIP responses: `SipParseError` → its status (400 …), `StoreUnavailable` → 503
with Retry-After (the store is away; nothing was acknowledged), anything else →
500 and a logged traceback. The server keeps serving in every case (OPS-5).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from trimaran.admin.http import AdminContext, AdminServer
from trimaran.admin.metrics import Metrics
from trimaran.client.ua import uri_address
from trimaran.net.endpoint import IncomingRequest, SipEndpoint
from trimaran.net.transport import Address, Flow, TransportConfig
from trimaran.roles.frontend.authn import RequestAuthenticator
from trimaran.roles.frontend.config import FrontEndConfig
from trimaran.roles.frontend.presence import PresenceService
from trimaran.roles.frontend.proxy import Proxy, Target
from trimaran.roles.frontend.registrar import (
    RegistrationRefused,
    contact_headers,
    plan_register,
)
from trimaran.sip.errors import SipParseError
from trimaran.sip.headers import Headers
from trimaran.sip.ids import new_tag
from trimaran.sip.message import Request
from trimaran.sip.transaction import TransactionError
from trimaran.sip.uri import URI
from trimaran.store.base import Store, StoreError, StoreUnavailable
from trimaran.store.model import Binding, Heartbeat

log = logging.getLogger(__name__)

VERSION = "0.1.0"
ALLOW = "REGISTER, INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE, SUBSCRIBE, NOTIFY, PUBLISH, " \
        "UPDATE, INFO, REFER"
IN_DIALOG_METHODS = frozenset({"BYE", "INVITE", "UPDATE", "INFO", "REFER", "NOTIFY",
                               "MESSAGE", "PRACK", "SUBSCRIBE"})
Handler = Callable[["FrontEndServer", IncomingRequest], Awaitable[None]]


class FrontEndServer:
    """One Front End server process's SIP and HTTP service."""

    def __init__(self, config: FrontEndConfig, store: Store, *,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.store = store
        self.wall_clock = wall_clock
        self.metrics = Metrics()
        self.endpoint = SipEndpoint(
            on_request=self._on_request, timers=config.timers,
            transport_config=TransportConfig(limits=config.limits),
            on_flow_closed=self._on_flow_closed)
        self.auth = RequestAuthenticator(store, config.domain, config.secret, config.nonce_ttl,
                                         config.digest_algorithms,
                                         names_this_server=self._is_this_server)
        self.proxy = Proxy(self.endpoint, config.secret)
        self.presence = PresenceService(
            self.endpoint, store, server=config.server, wall_clock=wall_clock,
            default_expires=config.presence_expires, min_expires=config.min_expires,
            max_expires=config.max_expires, reach=self._reach_flow)
        self.admin = AdminServer(AdminContext(
            server=config.server, role="frontend", pool=config.pool, realm=config.domain,
            store=store, status=self.status, health=self.health, metrics=self.metrics,
            wall_clock=wall_clock, on_contacts_changed=self._contacts_changed,
            admin_token=config.admin_token))
        self._tasks: set[asyncio.Task[None]] = set()
        self._housekeeping: asyncio.Task[None] | None = None
        self._started_at = 0.0
        self._contact_flows: dict[str, str] = {}   # contact URI -> local flow id
        self._outbound: dict[str, set[tuple[str, str]]] = {}  # flow id -> {(aor, key)}
        self._bindings_count = 0
        self._store_ok = True
        self.admin_address: tuple[str, int] | None = None

    # -- lifecycle --------------------------------------------------------------
    async def start(self) -> None:
        """Listen for SIP (UDP and TCP on the same port) and HTTP, start housekeeping."""
        cfg = self.config
        await self.endpoint.listen(cfg.host, udp_port=cfg.sip_port, tcp_port=None)
        _, port = self.endpoint.contact_host_port("udp")
        await self.endpoint.transport.listen_tcp(cfg.host, port)
        self.admin_address = await self.admin.start(cfg.host, cfg.admin_port)
        self._started_at = self.wall_clock()
        self._housekeeping = asyncio.ensure_future(self._housekeeping_loop())
        log.info("front end %s of pool %s serving SIP on %s:%s", cfg.server, cfg.pool,
                 cfg.host, port)

    async def stop(self) -> None:
        """Ordered shutdown: stop housekeeping, SIP (drain), HTTP; the store stays open."""
        if self._housekeeping is not None:
            self._housekeeping.cancel()
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
        return {"version": VERSION, "server": self.config.server, "role": "frontend",
                "pool": self.config.pool, "uptime": round(self.wall_clock()
                                                           - self._started_at, 1),
                "bindings": self._bindings_count,
                "users_registered": len({b for b in self._contact_flows.values()}),
                "subscriptions": len(self.presence.watches),
                "transactions": self.endpoint.transactions.statistics().client_transactions
                + self.endpoint.transactions.statistics().server_transactions,
                "store": "ok" if self._store_ok else "unavailable"}

    def health(self) -> tuple[bool, str]:
        """Healthy while serving SIP and the store answers."""
        if not self._store_ok:
            return False, "store unavailable"
        return True, "serving"

    # -- the one error boundary -----------------------------------------------
    def _on_request(self, incoming: IncomingRequest) -> None:
        self.metrics.request(incoming.request.method)
        self._spawn(self._dispatch(incoming))

    async def _dispatch(self, incoming: IncomingRequest) -> None:
        method = incoming.request.method
        handler = _HANDLERS.get(method)
        try:
            if handler is None:
                self._reply(incoming, 405, headers=Headers([("Allow", ALLOW)]))
                return
            await handler(self, incoming)
            self._store_ok = True
        except SipParseError as exc:
            self.metrics.bad_message()
            self._reply(incoming, exc.status_hint, exc.reason[:100])
        except StoreUnavailable as exc:
            self._store_ok = False
            self.metrics.store_error()
            log.warning("store unavailable handling %s: %s", method, exc)
            self._reply(incoming, 503, "Service Unavailable (store unreachable)",
                        headers=Headers([("Retry-After", "5")]))
        except StoreError as exc:
            self.metrics.store_error()
            log.warning("store refused %s: %s", method, exc)
            self._reply(incoming, 500, "Server Internal Error (store)")
        except Exception:
            log.exception("unexpected failure handling %s", method)
            self._reply(incoming, 500)

    def _reply(self, incoming: IncomingRequest, status: int, reason: str | None = None, *,
               headers: Headers | None = None, body: bytes = b"",
               to_tag: str | None = None) -> None:
        if incoming.transaction is None or incoming.transaction.terminated:
            return
        try:
            self.endpoint.reply(incoming, status, reason, headers=headers, body=body,
                                to_tag=to_tag or (new_tag() if status >= 200 else None))
            self.metrics.response(status)
        except TransactionError:
            log.debug("%s already answered", incoming.request.method)

    async def _authenticate(self, incoming: IncomingRequest) -> str | None:
        outcome = await self.auth.authenticate(incoming.request, now=self.wall_clock())
        if outcome.user is not None:
            return outcome.user
        self.metrics.auth_failure()
        headers = Headers([(outcome.challenge_header, c) for c in outcome.challenges])
        self._reply(incoming, outcome.status, outcome.reason, headers=headers)
        return None

    def _is_this_server(self, uri: URI) -> bool:
        """True when `uri` is this server's own SIP address (no user part)."""
        host, port = self.sip_address
        return uri.user is None and uri.host == host and (uri.port or 5060) == port

    def _is_local(self, uri: URI) -> bool:
        """True when `uri` names our domain or this server."""
        if uri.scheme == "tel":
            return True
        host, port = self.sip_address
        return uri.host.lower() == self.config.domain.lower() or \
            (uri.host == host and (uri.port or 5060) == port)

    # -- REGISTER -----------------------------------------------------------------
    async def _handle_register(self, incoming: IncomingRequest) -> None:
        request = incoming.request
        if request.uri.host.lower() != self.config.domain.lower() and \
                not self._is_local(request.uri):
            self._reply(incoming, 404, "Not a domain of this registrar")
            return
        user = await self._authenticate(incoming)
        if user is None:
            return
        now = self.wall_clock()
        existing = await self.store.bindings.for_aor(user, now=now)
        cfg = self.config
        try:
            plan = plan_register(request, aor=user, existing=existing, server=cfg.server,
                                 flow=incoming.flow, now=now, min_expires=cfg.min_expires,
                                 max_expires=cfg.max_expires,
                                 default_expires=cfg.default_expires)
        except RegistrationRefused as refused:
            self._reply(incoming, refused.status, refused.reason, headers=refused.headers)
            return
        if plan.fetch_only:
            bindings = existing
        else:
            bindings = await self.store.bindings.apply(user, upsert=plan.upsert,
                                                      remove=plan.remove, now=now)
            for key in plan.remove:
                old = next((b for b in existing if b.key == key), None)
                if old is not None:
                    self._contact_flows.pop(old.contact, None)
            for binding in plan.upsert:
                self._contact_flows[binding.contact] = binding.flow_id
                if binding.reg_id is not None and incoming.flow.reliable:
                    self._outbound.setdefault(binding.flow_id, set()).add((user, binding.key))
        headers = contact_headers(bindings, now)
        headers.add("Date", time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now)))
        self._reply(incoming, 200, headers=headers)
        if not plan.fetch_only:
            was_online, is_online = bool(existing), bool(bindings)
            if was_online != is_online:
                self.presence.schedule_notify(user)

    # -- requests routed to users -------------------------------------------------
    async def _handle_invite(self, incoming: IncomingRequest) -> None:
        await self._route(incoming)

    async def _handle_message(self, incoming: IncomingRequest) -> None:
        await self._route(incoming)

    async def _route(self, incoming: IncomingRequest) -> None:
        request = incoming.request
        if request.to.tag:
            await self._in_dialog(incoming)
            return
        mf = request.max_forwards
        if mf is not None and mf <= 0:
            self._reply(incoming, 483)
            return
        if not self._is_local(request.uri):
            self._reply(incoming, 403, "Relaying denied")
            return
        sender = await self._authenticate(incoming)
        if sender is None:
            return
        target = await self._resolve_user(request.uri)
        if target is None:
            self._reply(incoming, 404, "No such user")
            return
        bindings = await self.store.bindings.for_aor(target, now=self.wall_clock())
        if not bindings:
            self._reply(incoming, 480, "User offline")
            return
        targets = [self._target_for(b) for b in bindings[: self.config.max_fork]]
        self.proxy.fork(incoming, targets)

    async def _resolve_user(self, uri: URI) -> str | None:
        number = uri.user if uri.scheme == "tel" else (
            uri.user if uri.user and uri.param("user") == "phone" else None)
        if number is not None:
            user = await self.store.users.by_number(number)
            return user.aor if user else None
        aor = URI("sip", uri.user, None, self.config.domain).aor
        user = await self.store.users.get(aor)
        return user.aor if user is not None and user.enabled else None

    def _target_for(self, binding: Binding) -> Target:
        """Where a request for `binding` goes: back over the client's flow when it is an
        RFC 5626 outbound binding or a live connection, else to the Contact (§16.5)."""
        contact = URI.parse(binding.contact)
        flow = self.endpoint.transport.flow(binding.flow_id) \
            if binding.server == self.config.server and binding.flow_id else None
        if flow is not None and (binding.reg_id is not None or flow.reliable):
            return Target(contact, flow)
        return Target(contact, uri_address(contact, "udp"))  # RFC 3263 §4.1: UDP unless named

    def _reach_flow(self, flow: Flow, remote_target: str) -> Address | Flow:
        """How to send a request to a UA we hold a dialog with (NOTIFY)."""
        if self.endpoint.transport.is_open(flow):
            return flow
        return uri_address(URI.parse(remote_target), flow.transport)

    # -- in-dialog requests ---------------------------------------------------------
    async def _in_dialog(self, incoming: IncomingRequest) -> None:
        request = incoming.request
        routes = request.routes
        if not routes or not self.proxy.is_our_route(routes[0]):
            if request.method == "SUBSCRIBE" and self._is_local(request.uri):
                watcher = await self._authenticate(incoming)
                if watcher is not None:
                    await self.presence.subscribe(incoming, watcher)
                return
            self._reply(incoming, 481, "No such dialog here")
            return
        if not self.proxy.route_token_valid(routes[0], request.call_id):
            self._reply(incoming, 403, "Route not issued for this dialog")
            return
        forwarded = request.copy()
        forwarded.headers.pop_first("Route")
        next_hop = forwarded.routes[0].uri if forwarded.routes else forwarded.uri
        target = Target(forwarded.uri, self._address_for(next_hop))
        incoming = IncomingRequest(forwarded, incoming.transaction, incoming.flow)
        if request.method == "ACK":
            await self._forward_ack(forwarded, target)
            return
        self.proxy.fork(incoming, [target])

    def _address_for(self, uri: URI) -> Address | Flow:
        flow_id = self._contact_flows.get(str(uri))
        flow = self.endpoint.transport.flow(flow_id) if flow_id else None
        return flow if flow is not None else uri_address(uri, "udp")

    async def _forward_ack(self, ack: Request, target: Target) -> None:
        out = self.proxy.prepare(ack, target, record_route=False)
        await self.endpoint.send_stateless(out, target.via)

    async def _handle_ack(self, incoming: IncomingRequest) -> None:
        if incoming.request.to.tag and incoming.request.routes:
            await self._in_dialog(incoming)

    async def _handle_bye(self, incoming: IncomingRequest) -> None:
        await self._in_dialog(incoming)

    async def _handle_update(self, incoming: IncomingRequest) -> None:
        await self._in_dialog(incoming)

    async def _handle_info(self, incoming: IncomingRequest) -> None:
        await self._in_dialog(incoming)

    async def _handle_notify(self, incoming: IncomingRequest) -> None:
        await self._in_dialog(incoming)

    async def _handle_refer(self, incoming: IncomingRequest) -> None:
        await self._in_dialog(incoming)

    async def _handle_cancel(self, incoming: IncomingRequest) -> None:
        invite = self.endpoint.transactions.find_invite(incoming.request)
        context = self.proxy.contexts.get(invite) if invite is not None else None
        if invite is None:
            self._reply(incoming, 481)
            return
        self._reply(incoming, 200)
        if context is not None:
            self.proxy.cancel(context)
        else:
            self.endpoint.reply(IncomingRequest(invite.request, invite, incoming.flow), 487,
                                to_tag=new_tag())

    # -- presence -------------------------------------------------------------------
    async def _handle_subscribe(self, incoming: IncomingRequest) -> None:
        request = incoming.request
        if request.to.tag and request.routes:
            await self._in_dialog(incoming)
            return
        if not self._is_local(request.uri):
            self._reply(incoming, 403, "Relaying denied")
            return
        watcher = await self._authenticate(incoming)
        if watcher is not None:
            await self.presence.subscribe(incoming, watcher)

    async def _handle_publish(self, incoming: IncomingRequest) -> None:
        if not self._is_local(incoming.request.uri):
            self._reply(incoming, 403, "Relaying denied")
            return
        user = await self._authenticate(incoming)
        if user is not None:
            await self.presence.publish(incoming, user)

    async def _handle_options(self, incoming: IncomingRequest) -> None:
        request = incoming.request
        if request.uri.user and self._is_local(request.uri) and not request.to.tag:
            await self._route(incoming)
            return
        self._reply(incoming, 200, headers=Headers([("Allow", ALLOW),
                                                    ("Accept", "application/sdp")]))

    # -- background ---------------------------------------------------------------
    async def _contacts_changed(self, owner: str) -> None:
        """A contact list changed: watchers' authorization may have changed."""
        await self.presence.notify_all(owner)

    def _on_flow_closed(self, flow: Flow, reason: str) -> None:
        for contact in [c for c, f in self._contact_flows.items() if f == flow.id]:
            del self._contact_flows[contact]
        outbound = self._outbound.pop(flow.id, None)
        if outbound:
            self._spawn(self._drop_flow_bindings(outbound, flow, reason))

    async def _drop_flow_bindings(self, bindings: set[tuple[str, str]], flow: Flow,
                                  reason: str) -> None:
        """RFC 5626 §5.2: outbound bindings registered over a failed flow are invalid."""
        log.info("flow %s closed (%s): dropping %d outbound binding(s)", flow.id, reason,
                 len(bindings))
        now = self.wall_clock()
        for aor in sorted({aor for aor, _ in bindings}):
            keys = [key for a, key in bindings if a == aor]
            before = await self.store.bindings.for_aor(aor, now=now)
            current = [b for b in before if b.key in keys and b.flow_id == flow.id]
            after = await self.store.bindings.apply(aor, upsert=(), remove=[b.key for b in current],
                                                    now=now)
            if before and not after:
                self.presence.schedule_notify(aor)

    async def _housekeeping_loop(self) -> None:
        while True:
            try:
                now = self.wall_clock()
                await self.store.bindings.purge_expired(now=now)
                self._bindings_count = await self.store.bindings.count(
                    now=now, server=self.config.server)
                self.metrics.set_registered_bindings(self._bindings_count)
                await self.presence.expire()
                self.metrics.set_active_subscriptions(len(self.presence.watches))
                await self.store.heartbeats.beat(Heartbeat(self.config.server,
                                                           self.config.pool, now))
                self._store_ok = True
            except StoreUnavailable as exc:
                self._store_ok = False
                log.warning("housekeeping: store unavailable: %s", exc)
            await asyncio.sleep(self.config.housekeeping_interval)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


_HANDLERS: dict[str, Handler] = {
    name[len("_handle_"):].upper(): getattr(FrontEndServer, name)
    for name in dir(FrontEndServer) if name.startswith("_handle_")
}
