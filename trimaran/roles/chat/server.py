"""A Persistent Chat server (SPEC PC-1..PC-4; DESIGN §1 "persistent chat").

SIP, from Front Ends only (each request carries an `AppClaim` of kind ``chat`` signed
with the deployment's key: the authenticated user and the room; anything else 403):

* INVITE ``sip:chat@DOMAIN`` opens the user's chat connection
  (`trimaran.roles.chat.sessions`) when this server is *active* — the CMS ``chat``
  document says which servers accept new connections (`trimaran chat active-servers
  set`; after a chat failover the second data center's). An inactive server answers
  503 with `INACTIVE_HEADER` and the Front End tries the next one; connections it
  holds already go on. The 200 carries a bearer token for the HTTP API
  (`TOKEN_HEADER`) and the API's address (`API_HEADER`).
* MESSAGE to a room URI posts: answered 200 (with the message's number in
  ``X-Trimaran-Seq``) only once the store committed it — on the principal and its
  synchronous mirror — so an acknowledged post survives the loss of either. A client
  that got no answer posts again with the same ``X-Trimaran-Message-Id``: stored once.
  Refusals say why (the rules: 403/404/400; no store now: 503 + Retry-After).
* UPDATE inside a connection keeps it alive (481 once it is gone here); BYE closes it.

New messages reach every connected member, wherever they were posted, through the
store's notifications (`trimaran.roles.chat.fanout`).

The store is the pool's: in mode ``normal`` the primary data center's mirrored pair,
after ``chat failover`` the log-shipped copy promoted in the second data center. The
server follows the CMS document and reconnects when the mode changes; while a
failback runs (mode ``failing-back``) it refuses posts (503) so that the primary data
center can be re-seeded from a store that no longer changes. Every second it commits
a heartbeat (keeping the shipped copy's replay time meaningful) and, in mode normal,
samples the log-shipping lag (`/status` ``shipping``), which ``chat failover`` reports
as the loss bound when the primary data center is gone.

HTTP (admin port): ``/health``, ``/status``, ``/metrics`` and the chat API
(`trimaran.roles.chat.api`: history, search, rooms; bearer token).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from trimaran.admin import access
from trimaran.admin.metrics import Families, ServerMetrics
from trimaran.apps.conference import im_answer
from trimaran.chat.model import Message
from trimaran.chat.rules import ChatRefused, check_message_id
from trimaran.chat.shipping import measure_lag
from trimaran.chat.store import (
    ChatConflict,
    ChatNotFound,
    ChatStore,
    ChatStoreError,
    ChatStoreUnavailable,
)
from trimaran.chat.tokens import TOKEN_LIFETIME, issue_token
from trimaran.cms.chatdoc import ChatMode, ChatPoolState, ChatState
from trimaran.net.endpoint import IncomingRequest, SipEndpoint
from trimaran.roles.chat.api import ChatApi, chat_routes
from trimaran.roles.chat.fanout import Fanout
from trimaran.roles.chat.sessions import ID_HEADER, SEQ_HEADER, Connection, Connections
from trimaran.roles.frontend.chat import INACTIVE_HEADER, KIND
from trimaran.security import https
from trimaran.security.deployment import certificate_status
from trimaran.sip.dialog import Dialog
from trimaran.sip.errors import SipParseError
from trimaran.sip.headers import Headers
from trimaran.sip.ids import new_tag
from trimaran.sip.message import Response
from trimaran.sip.transaction import TimerConfig, TransactionError
from trimaran.voice.trust import AppClaim, verified_app

log = logging.getLogger(__name__)

TOKEN_HEADER = "X-Trimaran-Chat-Token"
API_HEADER = "X-Trimaran-Chat-Api"
SERVER_HEADER = "X-Trimaran-Chat-Server"
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE, UPDATE"
BEAT_SECONDS = 1.0
RETRY_AFTER = "2"
MAX_CONNECTIONS = 20_000


@dataclass(frozen=True)
class ChatServerConfig:
    """What one chat server needs. `dsn(mode)` is the store to use in that mode;
    `shipping` the DSNs to measure log shipping with (the primary pair's instances,
    the shipped copy), None when the pool ships no log."""

    server: str
    pool: str
    host: str
    sip_port: int
    admin_port: int
    domain: str
    secret: bytes
    dsn: Callable[[ChatMode], str]
    shipping: tuple[tuple[str, ...], str] | None = None
    timers: TimerConfig = field(default_factory=TimerConfig)
    admins: frozenset[str] = frozenset()


class ChatServer:
    """One chat server process's SIP and HTTP service (see the module docstring)."""

    def __init__(self, config: ChatServerConfig, state: Callable[[], ChatState], *,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.state = state
        self.wall_clock = wall_clock
        self.endpoint = SipEndpoint(on_request=self._on_request, timers=config.timers)
        self.connections = Connections(self.endpoint, config.domain, self.spawn)
        self.store: ChatStore | None = None
        self._dsn: str | None = None
        self.mode = ChatMode.NORMAL
        self.fanout = Fanout(lambda: self.store, lambda: self._dsn, self.connections.deliver,
                             lambda: self.connections.users)
        self.metrics = ServerMetrics(server=config.server, role="chat", pool=config.pool)
        self._requests = self.metrics.counter(
            "chat_requests", "Chat requests handled, by kind and result", ["kind", "result"])
        self.metrics.add_source("chat", self._describe)
        self.shipping: dict[str, object] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runner: web.AppRunner | None = None
        self.started = False

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        """Listen for HTTP and SIP; connect to the store in the background."""
        cfg = self.config
        app = access.guarded_app(client_max_size=64 * 1024)
        app.router.add_get("/health", self._health)
        app.router.add_get("/status", self._status)
        app.router.add_get("/metrics", self.metrics.handle)
        app.add_routes(chat_routes(ChatApi(
            store=self._api_store, secret=cfg.secret, pool=cfg.pool, clock=self.wall_clock,
            writable=self._why_not_writable, on_posted=self._posted, admins=cfg.admins)))
        self._runner = web.AppRunner(https.guard(app), access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, cfg.host, cfg.admin_port,
                          ssl_context=https.listener_ssl()).start()
        await self.endpoint.listen(cfg.host, udp_port=cfg.sip_port, tcp_port=None)
        await self.endpoint.transport.listen_tcp(cfg.host, cfg.sip_port)
        await self.endpoint.listen_tls(cfg.host)   # OPS-6: when the deployment has TLS
        self.fanout.start()
        self.spawn(self._follow())
        self.spawn(self._beat())
        if cfg.shipping is not None:
            self.spawn(self._sample_shipping(*cfg.shipping))
        self.started = True
        log.info("chat server %s of pool %s serving SIP on %s:%s, HTTP on %s", cfg.server,
                 cfg.pool, cfg.host, cfg.sip_port, cfg.admin_port)

    async def stop(self) -> None:
        """Ordered shutdown."""
        for task in list(self._tasks):
            task.cancel()
        await self.fanout.stop()
        await self.endpoint.close(drain_timeout=1.0)
        if self._runner is not None:
            await self._runner.cleanup()
        if self.store is not None:
            await self.store.close()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run `coro` in the background, keeping a reference."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the pool's state, the store ---------------------------------------------------
    def pool_state(self) -> ChatPoolState:
        """What the CMS says of our pool now."""
        try:
            return self.state().of(self.config.pool)
        except KeyError:
            return ChatPoolState()

    async def _follow(self) -> None:
        """Use the store the mode says; switch when it changes (chat failover/failback)."""
        while True:
            state = self.pool_state()
            self.mode = state.mode
            if state.mode is not ChatMode.FAILING_BACK:
                wanted = self.config.dsn(state.mode)
                if wanted != self._dsn or self.store is None:
                    await self._use(wanted)
            await asyncio.sleep(0.25 if self.store is not None else 1.0)

    async def _use(self, dsn: str) -> None:
        store = ChatStore(dsn, connect_timeout=3.0, retry_for=3.0)
        try:
            await store.open()
        except ChatStoreError as exc:
            log.info("chat store %s not reachable yet: %s", _hosts(dsn), exc)
            await store.close()
            return
        old, self.store, self._dsn = self.store, store, dsn
        log.info("chat server %s uses the store at %s", self.config.server, _hosts(dsn))
        self.fanout.store_replaced()
        if old is not None:
            await old.close()

    def ready(self) -> bool:
        """True when the store in use is the one the pool's mode names (not while
        switching after a failover or failback): only then are connections taken."""
        if self.store is None:
            return False
        mode = self.pool_state().mode
        return mode is ChatMode.FAILING_BACK or self._dsn == self.config.dsn(mode)

    def _api_store(self) -> ChatStore:
        if self.store is None:
            raise ChatStoreUnavailable("the chat store is not reachable yet")
        return self.store

    def _why_not_writable(self) -> str | None:
        if self.mode is ChatMode.FAILING_BACK:
            return "chat failback in progress: posts are refused until it ends"
        return None

    async def _beat(self) -> None:
        while True:
            store = self.store
            if store is not None and self.mode is not ChatMode.FAILING_BACK:
                with contextlib.suppress(ChatStoreError):
                    await store.beat(self.config.server, self.wall_clock())
            await asyncio.sleep(BEAT_SECONDS)

    async def _sample_shipping(self, primaries: tuple[str, ...], shipped: str) -> None:
        while True:
            if self.mode is ChatMode.NORMAL:
                with contextlib.suppress(Exception):
                    lag = await measure_lag(list(primaries), shipped)
                    if lag.error is None:
                        self.shipping = lag.to_json()
            await asyncio.sleep(1.0)

    # -- SIP -----------------------------------------------------------------------------
    def _on_request(self, incoming: IncomingRequest) -> None:
        self.spawn(self._dispatch(incoming))

    async def _dispatch(self, incoming: IncomingRequest) -> None:
        request = incoming.request
        try:
            if request.to.tag:
                self._in_dialog(incoming)
            elif request.method == "OPTIONS":
                self._reply(incoming, 200, headers=Headers([("Allow", ALLOW)]))
            elif request.method == "CANCEL":
                self._reply(incoming, 481)        # connections are answered at once
            elif request.method == "ACK":
                pass
            else:
                await self._start(incoming)
        except Exception:
            log.exception("chat server: unexpected failure handling %s", request.method)
            self._reply(incoming, 500)

    async def _start(self, incoming: IncomingRequest) -> None:
        claim = verified_app(self.config.secret, incoming.request)
        if claim is None or claim.kind != KIND or claim.owner != self.config.pool:
            self._count("refused", "403")
            self._reply(incoming, 403, "Not sent by a Front End of this deployment")
            return
        method = incoming.request.method
        if method == "INVITE" and not claim.target:
            self._connect(incoming, claim)
        elif method == "MESSAGE" and claim.target:
            await self._post(incoming, claim)
        else:
            self._reply(incoming, 405, headers=Headers([("Allow", ALLOW)]))

    def _connect(self, incoming: IncomingRequest, claim: AppClaim) -> None:
        request = incoming.request
        if self.config.server not in self.pool_state().active or not self.ready():
            self._count("connect", "inactive")
            self._reply(incoming, 503, "Not an active chat server now", headers=Headers([
                (INACTIVE_HEADER, self.config.server), ("Retry-After", RETRY_AFTER)]))
            return
        if len(self.connections) >= MAX_CONNECTIONS:
            self._reply(incoming, 503, "Too many chat connections",
                        headers=Headers([("Retry-After", RETRY_AFTER)]))
            return
        answer = None
        if request.body:
            answer = im_answer(request.body, self.config.host, int(self.wall_clock()))
            if answer is None:
                self._reply(incoming, 488, "Only instant messaging")
                return
        tag = new_tag()
        try:
            dialog = Dialog.from_uas(request, tag)
        except SipParseError as exc:
            self._reply(incoming, 400, str(exc)[:100])
            return
        transport = "udp" if not incoming.flow.reliable else incoming.flow.transport
        cfg = self.config
        token = issue_token(cfg.secret, claim.sender, cfg.pool,
                            self.wall_clock() + TOKEN_LIFETIME)
        headers = Headers([("Contact", f"<sip:{KIND}@{cfg.host}:{cfg.sip_port};"
                                       f"transport={transport}>"),
                           ("Allow", ALLOW), (TOKEN_HEADER, token),
                           (API_HEADER, https.secure(f"http://{cfg.host}:{cfg.admin_port}/chat/v1")),
                           (SERVER_HEADER, cfg.server)])
        for rr in request.headers.get_all("Record-Route"):
            headers.add("Record-Route", rr)
        if answer is not None:
            headers.add("Content-Type", "application/sdp")
        response = self._reply(incoming, 200, headers=headers, body=answer or b"",
                               to_tag=tag)
        connection = Connection(claim.sender, dialog, transport)
        self.connections.add(connection)
        self._count("connect", "ok")
        log.info("chat connection of %s opened (%s)", claim.sender, request.call_id)
        if response is not None and not incoming.flow.reliable:
            flow = incoming.flow
            self.spawn(self.connections.retransmit_2xx(
                connection, response,
                lambda r: self.endpoint.transport.send_response(r, flow),
                cfg.timers.t1, cfg.timers.t2))

    async def _post(self, incoming: IncomingRequest, claim: AppClaim) -> None:
        request = incoming.request
        why = self._why_not_writable()
        if why is not None:
            self._count("post", "503")
            self._reply(incoming, 503, why[:100], headers=Headers([("Retry-After", RETRY_AFTER)]))
            return
        content_type = (request.content_type or "text/plain").split(";")[0].strip().lower()
        if content_type != "text/plain":
            self._reply(incoming, 415, "Only text/plain",
                        headers=Headers([("Accept", "text/plain")]))
            return
        try:
            body = request.body.decode("utf-8")
        except UnicodeDecodeError:
            self._reply(incoming, 400, "The message is not UTF-8")
            return
        message_id = request.headers.get(ID_HEADER) or f"sip:{request.call_id}"
        refused = check_message_id(message_id)
        if refused is not None:
            self._reply(incoming, refused.status_hint, refused.reason[:100])
            return
        message = Message(claim.target, 0, claim.sender, body, self.wall_clock(), message_id)
        status, reason, headers = 200, "OK", Headers()
        try:
            stored = await self._api_store().post(message)
        except ChatRefused as exc:
            status, reason = exc.status_hint, exc.reason
        except ChatNotFound as exc:
            status, reason = 404, str(exc)
        except ChatConflict as exc:
            status, reason = 409, str(exc)
        except ChatStoreUnavailable as exc:
            status, reason = 503, f"Chat store unavailable: {exc}"
            headers.add("Retry-After", RETRY_AFTER)
        else:
            headers.add(SEQ_HEADER, str(stored.seq))
            self.fanout.wake(stored.room, stored.seq)
        self._count("post", str(status))
        self._reply(incoming, status, reason[:100], headers=headers)

    async def _posted(self, message: Message) -> None:
        """A post taken by the HTTP API: deliver it (its notification will say it too)."""
        self.fanout.wake(message.room, message.seq)

    def _in_dialog(self, incoming: IncomingRequest) -> None:
        request = incoming.request
        connection = self.connections.find(request.call_id, request.to.tag or "")
        if request.method == "ACK":
            if connection is not None:
                connection.acked.set()
            return
        if connection is None:
            self._reply(incoming, 481, "No such chat connection here")
            return
        if request.method == "BYE":
            self._reply(incoming, 200)
            self.connections.close(connection, "BYE")
        elif request.method in ("OPTIONS", "INFO", "UPDATE", "INVITE"):   # keepalive, refresh
            self._reply(incoming, 200, headers=Headers([("Allow", ALLOW)]))
        else:
            self._reply(incoming, 405, headers=Headers([("Allow", ALLOW)]))

    def _reply(self, incoming: IncomingRequest, status: int, reason: str | None = None, *,
               headers: Headers | None = None, body: bytes = b"",
               to_tag: str | None = None) -> Response | None:
        if incoming.transaction is None or incoming.transaction.terminated:
            return None
        if to_tag is None and status >= 200 and not incoming.request.to.tag:
            to_tag = new_tag()      # our own answer: the Front End tells it from its own
        try:
            return self.endpoint.reply(incoming, status, reason, headers=headers, body=body,
                                       to_tag=to_tag)
        except TransactionError:
            return None

    def _count(self, kind: str, result: str) -> None:
        self._requests.labels(kind=kind, result=result).inc()

    # -- HTTP ------------------------------------------------------------------------------
    async def _health(self, _request: web.Request) -> web.Response:
        healthy = self.started and self.ready()
        return web.json_response({"server": self.config.server, "healthy": healthy},
                                 status=200 if healthy else 503)

    async def _status(self, _request: web.Request) -> web.Response:
        return web.json_response({**self.status(), **certificate_status()})

    def status(self) -> dict[str, object]:
        """What /status shows."""
        state = self.pool_state()
        return {"server": self.config.server, "role": "chat", "pool": self.config.pool,
                "mode": str(self.mode), "active": self.config.server in state.active,
                "active_servers": list(state.active),
                "store": _hosts(self._dsn) if self._dsn else None,
                "connections": len(self.connections),
                "users": len(self.connections.users),
                "deliveries": {"sent": self.connections.delivered,
                               "failed": self.connections.failed},
                "fanout": self.fanout.status(), "shipping": self.shipping}

    def _describe(self, families: Families) -> None:
        families.gauge("chat_connections", "Chat connections open here", len(self.connections))
        families.counter("chat_deliveries", "Room messages delivered to connections",
                         self.connections.delivered)
        families.flag("chat_active", "Whether this server accepts new connections",
                      self.config.server in self.pool_state().active)
        families.state("chat_mode", "The chat pool's mode", [str(m) for m in ChatMode],
                       str(self.mode))
        shipping = self.shipping or {}
        for key in ("bytes", "seconds"):
            value = shipping.get(key)
            if isinstance(value, int | float):
                families.gauge(f"chat_shipping_lag_{key}",
                               f"Log-shipping lag to the second data center ({key})", value)


def _hosts(dsn: str) -> str:
    """The host list of a DSN, for logs (no credentials in our DSNs, but be sure)."""
    rest = dsn.split("@", 1)[-1]
    return rest.split("/", 1)[0]
