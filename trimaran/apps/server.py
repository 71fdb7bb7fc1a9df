"""The application server of a Front End pool (SPEC APP-1..APP-7; DESIGN §2 `apps/`).

Every Front End server runs one, on its SIP port + `APP_PORT_OFFSET` (UDP and TCP),
beside the registrar and proxy; the pool's applications run on its *active* one, the
first live server of the pool by name (like the Backup Service's shipper), which the
Front Ends send application requests to (`trimaran.roles.frontend.apps`). A Front End
decides which pool runs an item from the failover records — the pool serving the
item's owner pool now — so Call Park orbits, Response Groups, unassigned numbers,
pickup groups and meetings move with pool failover and come back with failback.

Requests reach the server only from a Front End, each carrying an `AppClaim` signed
with the deployment's key (`trimaran.voice.trust`): the application (`kind`), the
owner pool, the item (a number, a meeting id) and the authenticated sender. Anything
without a valid claim is refused (403): the server is not an open relay.

An application is an object with `kind`, `handle(incoming, claim)` for requests that
start something (INVITE, REFER, MESSAGE, SUBSCRIBE outside a dialog), `in_dialog
(incoming) -> bool` for requests inside dialogs it owns, and `status()`. Calls the
applications place to users (ring-backs, agents) go through the local Front End with
the caller vouched for (`AppContext.user_invite`), so they reach the user wherever the
user is signed in. `B2bua` (shared) bridges a caller with a party the application calls.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from trimaran.apps.model import AppsConfig
from trimaran.net.endpoint import IncomingRequest, SipEndpoint
from trimaran.net.transport import Address
from trimaran.roles.mediation.b2bua import B2bua
from trimaran.sip.headers import Headers
from trimaran.sip.ids import new_call_id, new_tag
from trimaran.sip.message import Request
from trimaran.sip.transaction import TimerConfig, TransactionError
from trimaran.sip.uri import URI
from trimaran.store.base import Store
from trimaran.voice.trust import AppClaim, pstn_header, verified_app

log = logging.getLogger(__name__)

APP_PORT_OFFSET = 2
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, REFER, NOTIFY, SUBSCRIBE, MESSAGE, UPDATE, INFO"
AUDIO_PREFIX = "audio/"


class App(Protocol):
    """One application hosted by the server."""

    kind: str

    async def handle(self, incoming: IncomingRequest, claim: AppClaim) -> None:
        """A request outside any dialog that a Front End sent to this application."""

    async def in_dialog(self, incoming: IncomingRequest) -> bool:
        """A request inside a dialog: True when it was one of this application's."""

    def status(self) -> dict[str, object]:
        """For /status."""


@dataclass(frozen=True)
class AppServerConfig:
    """What the application server of one Front End server needs."""

    server: str
    pool: str
    host: str
    sip_port: int                 # the application server's own port
    frontend_port: int            # the Front End's SIP port on the same host
    domain: str
    secret: bytes                 # the deployment's key
    timers: TimerConfig = field(default_factory=TimerConfig)


@dataclass
class AppContext:
    """What applications get from the server: SIP, the shared B2BUA, the current
    configuration, audio, the pool's store, clocks."""

    config: AppServerConfig
    endpoint: SipEndpoint
    b2bua: B2bua
    apps_config: Callable[[], AppsConfig]
    documents: Callable[[str], str | None]          # a CMS document's body by key
    store: Store | None = None
    wall_clock: Callable[[], float] = time.time
    monotonic: Callable[[], float] = time.monotonic
    _audio: dict[str, bytes] = field(default_factory=dict)
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    @property
    def frontend(self) -> Address:
        """The local Front End (calls to users go through it)."""
        return Address("tcp", self.config.host, self.config.frontend_port)

    def contact(self, transport: str = "tcp") -> str:
        """Our Contact."""
        return self.b2bua.contact(transport)

    def audio(self, name: str) -> bytes | None:
        """The bytes of the audio file named `name` in the configuration (None when it is
        not configured or its document is missing)."""
        try:
            sha = self.apps_config().audio_named(name).sha256
        except KeyError:
            return None
        cached = self._audio.get(sha)
        if cached is not None:
            return cached
        body = self.documents(AUDIO_PREFIX + sha)
        if body is None:
            return None
        data = base64.b64decode(body)
        if hashlib.sha256(data).hexdigest() != sha:
            log.error("audio %s: document does not match its SHA-256; not played", name)
            return None
        self._audio[sha] = data
        return data

    def user_invite(self, to: str, caller: str, *, body: bytes = b"",
                    content_type: str | None = "application/sdp",
                    extra: tuple[tuple[str, str], ...] = ()) -> Request:
        """An INVITE to the user `to` (an AOR or a number URI) from `caller` (shown to
        the user), to send to `frontend`: the Front End rings the user wherever the
        user is signed in, believing `caller` (vouched for with the deployment's key)."""
        uri = URI.parse(to)
        headers = Headers()
        headers.add("Via", self.endpoint.via("tcp"))
        headers.add("Max-Forwards", "70")
        headers.add("From", f"<{caller}>;tag={new_tag()}")
        headers.add("To", f"<{to}>")
        headers.add("Call-ID", new_call_id(self.config.host))
        headers.add("CSeq", "1 INVITE")
        headers.add("Contact", self.contact("tcp"))
        headers.add("Allow", ALLOW)
        for name, value in extra:
            headers.add(name, value)
        if body and content_type:
            headers.add("Content-Type", content_type)
        request = Request("INVITE", uri, headers, body)
        request.headers.add("X-Trimaran-Pstn", pstn_header(self.config.secret, caller, request))
        return request

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run `coro` in the background, keeping a reference."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class AppServer:
    """The application server of one Front End server."""

    def __init__(self, config: AppServerConfig, apps_config: Callable[[], AppsConfig],
                 documents: Callable[[str], str | None], *, store: Store | None = None,
                 wall_clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.endpoint = SipEndpoint(on_request=self._on_request, timers=config.timers)
        self.b2bua = B2bua(self.endpoint, timers=config.timers, monotonic=monotonic)
        self.context = AppContext(config, self.endpoint, self.b2bua, apps_config, documents,
                                  store, wall_clock, monotonic)
        self.apps: dict[str, App] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.refused = 0

    def add(self, app: App) -> None:
        """Host `app` (one per kind)."""
        self.apps[app.kind] = app

    async def start(self) -> None:
        """Listen on UDP and TCP."""
        cfg = self.config
        await self.endpoint.listen(cfg.host, udp_port=cfg.sip_port, tcp_port=None)
        await self.endpoint.transport.listen_tcp(cfg.host, cfg.sip_port)
        log.info("application server of %s on %s:%s (%s)", cfg.server, cfg.host, cfg.sip_port,
                 ", ".join(sorted(self.apps)) or "no applications")

    async def stop(self) -> None:
        """Ordered shutdown."""
        await self.b2bua.close()
        await self.endpoint.close(drain_timeout=1.0)
        for task in [*self._tasks, *self.context._tasks]:
            task.cancel()

    def status(self) -> dict[str, object]:
        """For the Front End's /status."""
        return {"port": self.config.sip_port, "calls_active": self.b2bua.active,
                "refused": self.refused,
                "apps": {kind: app.status() for kind, app in sorted(self.apps.items())}}

    # -- dispatch -----------------------------------------------------------------------
    def _on_request(self, incoming: IncomingRequest) -> None:
        task = asyncio.ensure_future(self._dispatch(incoming))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _dispatch(self, incoming: IncomingRequest) -> None:
        request = incoming.request
        try:
            if request.method == "OPTIONS":
                self._reply(incoming, 200, headers=Headers([("Allow", ALLOW)]))
            elif request.method == "ACK":
                await self._in_dialog(incoming)
            elif request.method == "CANCEL":
                await self._cancel(incoming)
            elif request.to.tag or request.method in ("BYE", "NOTIFY", "UPDATE", "INFO",
                                                      "PRACK"):
                await self._in_dialog(incoming)
            else:
                await self._start(incoming)
        except Exception:
            log.exception("application server: unexpected failure handling %s",
                          request.method)
            self._reply(incoming, 500)

    async def _start(self, incoming: IncomingRequest) -> None:
        claim = verified_app(self.config.secret, incoming.request)
        if claim is None:
            self.refused += 1
            self._reply(incoming, 403, "Not sent by a Front End of this deployment")
            return
        app = self.apps.get(claim.kind)
        if app is None:
            self._reply(incoming, 404, f"No {claim.kind} application here")
            return
        await app.handle(incoming, claim)

    async def _in_dialog(self, incoming: IncomingRequest) -> None:
        for app in self.apps.values():
            if await app.in_dialog(incoming):
                return
        if incoming.request.method == "ACK":
            self.b2bua.ack(incoming)
            return
        await self.b2bua.in_dialog(incoming)

    async def _cancel(self, incoming: IncomingRequest) -> None:
        for app in self.apps.values():
            if await app.in_dialog(incoming):
                return
        self.b2bua.cancel(incoming)

    def _reply(self, incoming: IncomingRequest, status: int, reason: str | None = None,
               headers: Headers | None = None) -> None:
        if incoming.transaction is None or incoming.transaction.terminated:
            return
        with contextlib.suppress(TransactionError):
            self.endpoint.reply(incoming, status, reason, headers=headers,
                                to_tag=new_tag() if status >= 200 else None)

