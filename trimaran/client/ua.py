"""A SIP user agent for tests, demos and load generation (signalling only).

It behaves like a real client: it registers with digest authentication and
keeps the registration fresh, tries the next server of its list when one does
not answer (SPEC FE-1), re-registers when its TCP flow dies (RFC 5626 CRLF
keepalive notices a silent server), follows redirects of its REGISTER to the
servers that serve it now (RFC 3261 §8.1.3.4: a pool whose users moved to its
paired pool, or a Director, answers 301/302 with the servers to use), sends and
receives MESSAGE, subscribes and publishes presence, and makes and answers calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field

from trimaran.client.auth import DigestClient
from trimaran.client.dialogs import Call, CallFailed, CallState, Subscription
from trimaran.net.endpoint import IncomingRequest, SipEndpoint
from trimaran.net.flows import is_ip_literal
from trimaran.net.transport import Address, Flow, TransportConfig
from trimaran.sip.dialog import Dialog
from trimaran.sip.errors import SipParseError
from trimaran.sip.headers import Headers, NameAddr
from trimaran.sip.ids import new_call_id, new_tag
from trimaran.sip.message import Request, Response
from trimaran.sip.transaction import TimerConfig, build_cancel
from trimaran.sip.uri import URI

log = logging.getLogger(__name__)

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE, NOTIFY, SUBSCRIBE, PUBLISH, REFER"
NO_ANSWER = (408, 503)  # synthetic responses for a server that does not answer
RESENDABLE = frozenset({"MESSAGE", "OPTIONS", "PUBLISH", "SUBSCRIBE"})
RESEND_WAIT = 10.0      # how long a request lost in transit waits for re-registration
REDIRECTS = frozenset({300, 301, 302})  # answers to REGISTER whose Contacts say where to go
MODE_HEADER = "X-Trimaran-Mode"         # "full" or "resiliency", on a registrar's 2xx


class RedirectError(Exception):
    """A redirect of our REGISTER that cannot be followed (no usable Contact)."""

    def __init__(self, message: str, response: Response) -> None:
        super().__init__(message)
        self.response = response


class RedirectLoop(RedirectError):
    """More redirects in a row than `UAConfig.max_redirects`, without a 2xx."""


def uri_address(uri: URI, transport: str) -> Address:
    """The address a URI points at (IP literals only: Trimaran never resolves names here)."""
    host = uri.host[1:-1] if uri.host.startswith("[") else uri.host
    port = uri.port or (5061 if uri.scheme == "sips" else 5060)
    named = uri.param("transport") or ("tls" if uri.scheme == "sips" else transport)
    return Address(named.lower(), host, port)


def redirect_targets(response: Response, transport: str) -> tuple[Address, ...]:
    """The servers a 3xx sends us to: its usable Contacts, highest q first (§21.3).

    Usable: a sip: or sips: URI whose host is an IP literal (Trimaran does not resolve
    names); anything else (tel:, a name, an unparsable value) is ignored. A Contact
    without `transport=` keeps `transport`; a missing or malformed q counts as 1 or 0.
    """
    ranked: list[tuple[float, Address]] = []
    for value in response.headers.get_all("Contact"):
        try:
            contact = NameAddr.parse(value)
        except SipParseError:
            continue
        uri = contact.uri
        if uri.scheme not in ("sip", "sips") or not uri.host or not is_ip_literal(uri.host):
            continue
        q_text = contact.param("q")
        try:
            q = 1.0 if q_text is None else float(q_text)
        except ValueError:
            q = 0.0
        address = uri_address(uri, transport)
        ranked.append((q, Address(address.transport.lower(), address.host, address.port)))
    ranked.sort(key=lambda item: -item[0])  # stable: equal q keep the server's order
    targets: list[Address] = []
    for _, address in ranked:
        if address not in targets:
            targets.append(address)
    return tuple(targets)


@dataclass(frozen=True, slots=True)
class Exchange:
    """One request/response exchange as finally carried out (after any digest retry)."""

    request: Request
    response: Response
    flow: Flow | None


@dataclass(frozen=True, slots=True)
class UAConfig:
    """What a user agent needs: identity, credentials and the servers to try, in order."""

    aor: str
    password: str
    servers: tuple[Address, ...]
    local_host: str = "127.0.0.1"
    display_name: str | None = None
    username: str | None = None
    instance_id: str = field(default_factory=lambda: f"urn:uuid:{uuid.uuid4()}")
    expires: int = 600
    auto_refresh: bool = True
    reregister_on_flow_loss: bool = True
    keepalive_interval: float | None = None
    keepalive_timeout: float = 10.0
    retry_jitter: float = 0.2         # random delay before re-registering after a flow loss
    retry_backoff_max: float = 4.0    # cap of the exponential backoff between attempts
    max_redirects: int = 5            # redirects followed in a row before RedirectLoop
    timers: TimerConfig = field(default_factory=TimerConfig)

    def __post_init__(self) -> None:
        if not self.servers:
            raise ValueError("servers: at least one server address is needed")
        if self.expires < 0:
            raise ValueError("expires must be >= 0")
        if self.max_redirects < 0:
            raise ValueError("max_redirects must be >= 0")


class UserAgent:
    """One user's SIP client."""

    def __init__(self, config: UAConfig) -> None:
        self.config = config
        self.aor = URI.parse(config.aor)
        username = config.username or self.aor.user or ""
        self.auth = DigestClient(username, config.password)
        self.endpoint = SipEndpoint(
            on_request=self._on_request, timers=config.timers,
            transport_config=TransportConfig(keepalive_interval=config.keepalive_interval,
                                             keepalive_timeout=config.keepalive_timeout),
            on_flow_closed=self._on_flow_closed)
        self.messages: asyncio.Queue[Request] = asyncio.Queue()
        self.incoming_calls: asyncio.Queue[Call] = asyncio.Queue()
        self.calls: dict[str, Call] = {}
        self.subscriptions: dict[str, Subscription] = {}
        self.registered = asyncio.Event()
        self.on_registered: Callable[[Address], None] | None = None
        #: The server that accepted our registration (None while not registered).
        self.registered_server: Address | None = None
        #: The `X-Trimaran-Mode` of the last 2xx to REGISTER: "full" or "resiliency".
        self.mode: str | None = None
        self._servers: tuple[Address, ...] = config.servers
        self._server_index = 0
        self._reg_call_id = ""
        self._reg_cseq = 0
        self._reg_flow: Flow | None = None
        self._refresh_task: asyncio.Task[None] | None = None
        self._tag = new_tag()
        self._publish_etag: str | None = None
        self._closed = False
        self._pending_invites: dict[str, Request] = {}  # call-id -> INVITE in flight
        self._tasks: set[asyncio.Future[object]] = set()
        self._seen_messages: dict[tuple[str, int, str], None] = {}

    # -- lifecycle --------------------------------------------------------------
    async def start(self) -> None:
        """Open the local UDP and TCP sockets."""
        await self.endpoint.listen(self.config.local_host)
        self._reg_call_id = new_call_id(self.config.local_host)

    async def close(self) -> None:
        """Stop refreshing and shut the sockets (no unregister; see `unregister`)."""
        self._closed = True
        if self._refresh_task is not None:
            self._refresh_task.cancel()
        for task in list(self._tasks):
            task.cancel()
        await self.endpoint.close(drain_timeout=1.0)

    @property
    def server(self) -> Address:
        """The server currently used (outbound proxy and registrar)."""
        return self._servers[self._server_index % len(self._servers)]

    @property
    def servers(self) -> tuple[Address, ...]:
        """The server list in use: the configured one, or where a redirect sent us."""
        return self._servers

    @property
    def home_servers(self) -> tuple[Address, ...]:
        """The configured server list (`UAConfig.servers`)."""
        return self.config.servers

    @property
    def redirected(self) -> bool:
        """True while a redirect has replaced the configured server list."""
        return self._servers != self.config.servers

    def reset_servers(self) -> None:
        """Go back to the configured server list; the next `register()` goes there.

        The registration held elsewhere stays until it expires or the application
        unregisters it first.
        """
        self._servers = self.config.servers
        self._server_index = 0

    @property
    def transport(self) -> str:
        """The transport towards the current server."""
        return self.server.transport

    def contact(self) -> NameAddr:
        """Our Contact, with the RFC 5626 instance id."""
        host, port = self.endpoint.contact_host_port(self.transport)
        uri = URI("sip", self.aor.user, None, host, port,
                  (("transport", self.transport),) if self.transport != "udp" else ())
        return NameAddr(uri, None, (("+sip.instance", f'"<{self.config.instance_id}>"'),))

    # -- building requests --------------------------------------------------------
    def new_request(self, method: str, uri: URI | str, *, to: NameAddr | None = None,
                    call_id: str | None = None, cseq: int = 1,
                    from_tag: str | None = None) -> Request:
        """An out-of-dialog request from us."""
        target = URI.parse(uri) if isinstance(uri, str) else uri
        headers = Headers()
        headers.add("Via", self.endpoint.via(self.transport))
        headers.add("Max-Forwards", "70")
        me = NameAddr(self.aor, self.config.display_name, (("tag", from_tag or new_tag()),))
        headers.add("From", str(me))
        headers.add("To", str(to or NameAddr(target)))
        headers.add("Call-ID", call_id or new_call_id(self.config.local_host))
        headers.add("CSeq", f"{cseq} {method}")
        return Request(method, target, headers)

    async def send(self, request: Request, *, target: Address | Flow | None = None,
                   failover: bool = False, **callbacks: Callable[[Response, Flow | None], None],
                   ) -> Response:
        """Send with digest retry; with `failover`, try the next server when one is silent."""
        return (await self.transact(request, target=target, failover=failover,
                                    **callbacks)).response

    async def transact(self, request: Request, *, target: Address | Flow | None = None,
                       failover: bool = False,
                       **callbacks: Callable[[Response, Flow | None], None]) -> Exchange:
        """Like `send`, returning the request finally sent and the flow it left by."""
        attempts = len(self._servers) if failover else 1
        exchange: Exchange | None = None
        for _ in range(attempts):
            exchange = await self._send_authenticated(request, target or self.server, callbacks)
            response = exchange.response
            if not failover and target is None and self._lost_in_transit(exchange):
                # Our connection to the server died under the request (the server went
                # away or moved us): like a real client, send it again once we are
                # registered again — same Call-ID and CSeq, so it cannot count twice.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.registered.wait(), RESEND_WAIT)
                exchange = await self._send_authenticated(
                    self._refreshed(exchange.request, bump=False), self.server, callbacks)
                return exchange
            if not failover or response.status not in NO_ANSWER:
                return exchange
            self._server_index += 1
            log.info("%s: server silent (%s), trying %s", self.aor, response.status, self.server)
            request = self._refreshed(exchange.request, bump=True)
        assert exchange is not None
        return exchange

    def _lost_in_transit(self, exchange: Exchange) -> bool:
        """True when a request failed because its flow to our server failed (RFC 5626)."""
        return (exchange.request.method in RESENDABLE and exchange.response.status == 503
                and "transport" in exchange.response.reason
                and self.config.reregister_on_flow_loss)

    async def _send_authenticated(self, request: Request, target: Address | Flow,
                                  callbacks: dict[str, Callable[[Response, Flow | None], None]],
                                  ) -> Exchange:
        if self.auth.has_credentials:
            self.auth.authorize(request)
        response, flow = await self._exchange(request, target, callbacks)
        for _ in range(2):
            if response.status not in (401, 407) or not self.auth.learn(response):
                break
            request = self._refreshed(request, bump=True)
            self.auth.authorize(request)
            response, flow = await self._exchange(request, target, callbacks)
        return Exchange(request, response, flow)

    async def _exchange(self, request: Request, target: Address | Flow,
                        callbacks: dict[str, Callable[[Response, Flow | None], None]],
                        ) -> tuple[Response, Flow | None]:
        if request.method != "INVITE":
            return await self.endpoint.exchange(request, target, **callbacks)
        self._pending_invites[request.call_id] = request
        try:
            return await self.endpoint.exchange(request, target, **callbacks)
        finally:
            self._pending_invites.pop(request.call_id, None)

    def _refreshed(self, request: Request, *, bump: bool) -> Request:
        """The same request with a new branch (and CSeq + 1), for a retry (§8.1.3.5)."""
        new = request.copy()
        new.headers.remove("Via")
        new.headers.add("Via", self.endpoint.via(self.transport), first=True)
        if bump:
            cseq = request.cseq
            new.headers.set("CSeq", f"{cseq.seq + 1} {cseq.method}")
            if request.method == "REGISTER":
                self._reg_cseq = cseq.seq + 1
        return new

    # -- registration ----------------------------------------------------------
    async def register(self, expires: int | None = None) -> Response:
        """REGISTER our contact (trying the servers in order); refresh it while registered.

        A 301/302 (or 300) is followed (RFC 3261 §8.1.3.4): its Contacts, in q order,
        become our server list and we register there at once; that list stays ours
        from then on (`reset_servers` goes back to `home_servers`). If the chain of
        redirects fails — more than `max_redirects` in a row (`RedirectLoop`), a 3xx
        without a usable Contact (`RedirectError`), or no 2xx at its end — the list
        is the one we had before the chain.
        """
        expires = self.config.expires if expires is None else expires
        exchange = await self._register_following_redirects(expires)
        response = exchange.response
        if 200 <= response.status < 300 and expires > 0:
            self._reg_flow = exchange.flow
            self.registered_server = self.server
            self.mode = (response.headers.get(MODE_HEADER) or "").strip().lower() or None
            self.registered.set()
            if self.on_registered is not None:
                self.on_registered(self.server)
            granted = self._granted_expiry(response, expires)
            if self.config.auto_refresh and granted > 0:
                self._schedule_refresh(granted)
        elif expires == 0:
            self.registered.clear()
            self.registered_server = None
        return response

    async def _register_following_redirects(self, expires: int) -> Exchange:
        """REGISTER through the server list; follow redirects; retry once on 423."""
        before = (self._servers, self._server_index)
        redirects = 0
        while True:
            exchange = await self.transact(self.register_request(expires), failover=True)
            response = exchange.response
            minimum = (response.headers.get("Min-Expires") or "").strip()
            if response.status == 423 and minimum.isdigit():
                exchange = await self.transact(
                    self.register_request(max(int(minimum), expires)), failover=True)
                response = exchange.response
            if response.status not in REDIRECTS:
                if redirects and not 200 <= response.status < 300:
                    self._servers, self._server_index = before
                return exchange
            redirects += 1
            source = self.server
            targets = redirect_targets(response, self.transport)
            if not targets:
                self._servers, self._server_index = before
                raise RedirectError(f"{self.aor}: {response.status} {response.reason} from "
                                    f"{source} has no usable Contact", response)
            if redirects > self.config.max_redirects:
                self._servers, self._server_index = before
                raise RedirectLoop(f"{self.aor}: more than {self.config.max_redirects} "
                                   f"redirects in a row (last from {source})", response)
            log.info("%s: %s %s from %s; registering at %s", self.aor, response.status,
                     response.reason, source, ", ".join(map(str, targets)))
            self._servers, self._server_index = targets, 0

    def register_request(self, expires: int) -> Request:
        """A REGISTER of our contact for `expires` seconds (not yet sent)."""
        self._reg_cseq += 1
        registrar = URI("sip", None, None, self.aor.host)
        aor = NameAddr(self.aor, self.config.display_name)
        request = self.new_request("REGISTER", registrar, to=aor, call_id=self._reg_call_id,
                                   cseq=self._reg_cseq, from_tag=self._tag)
        request.headers.add("Contact", str(self.contact().with_param("reg-id", "1")))
        request.headers.add("Expires", str(expires))
        request.headers.add("Supported", "outbound")
        return request

    def _granted_expiry(self, response: Response, asked: int) -> int:
        mine = self.contact().uri
        for contact in response.contacts:
            if contact.uri.host == mine.host and contact.uri.port == mine.port:
                value = contact.param("expires")
                if value and value.isdigit():
                    return int(value)
        return response.expires if response.expires is not None else asked

    def _schedule_refresh(self, granted: int) -> None:
        if self._refresh_task is not None and self._refresh_task is not asyncio.current_task():
            self._refresh_task.cancel()
        delay = max(1.0, granted / 2)

        async def refresh() -> None:
            await asyncio.sleep(delay)
            try:
                await self.register()
            except RedirectError as exc:
                # Keep trying, like after a lost flow, rather than let the binding lapse.
                log.warning("%s: refresh redirected nowhere usable: %s", self.aor, exc)
                await self._reregister()

        self._refresh_task = asyncio.ensure_future(refresh())

    async def unregister(self) -> Response:
        """Remove our binding (Expires: 0) and stop refreshing."""
        if self._refresh_task is not None:
            self._refresh_task.cancel()
            self._refresh_task = None
        return await self.register(0)

    async def fetch_bindings(self) -> list[NameAddr]:
        """The registrar's current bindings for our AOR (REGISTER without Contact, §10.2.3)."""
        self._reg_cseq += 1
        request = self.new_request("REGISTER", URI("sip", None, None, self.aor.host),
                                   to=NameAddr(self.aor), call_id=self._reg_call_id,
                                   cseq=self._reg_cseq, from_tag=self._tag)
        response = await self.send(request)
        return response.contacts if 200 <= response.status < 300 else []

    def _on_flow_closed(self, flow: Flow, reason: str) -> None:
        if self._closed or not self.config.reregister_on_flow_loss:
            return
        if self._reg_flow is not None and flow.id == self._reg_flow.id:
            log.info("%s: registration flow lost (%s); re-registering", self.aor, reason)
            self._reg_flow = None
            self.registered.clear()
            self.registered_server = None
            self._server_index += 1
            if self._refresh_task is not None:
                self._refresh_task.cancel()
            self._refresh_task = asyncio.ensure_future(self._reregister())

    async def _reregister(self) -> None:
        """Register again after losing the flow: jitter, then the server list in order,
        with exponential backoff while every server refuses (FE-1, FE-2); redirects are
        followed, and a redirected list where nobody answers gives way to the home one."""
        attempt = 0
        while not self._closed:
            await asyncio.sleep(random.uniform(0, self.config.retry_jitter))
            try:
                response = await self.register()
            except RedirectError as exc:
                status: object = exc
            else:
                if 200 <= response.status < 300:
                    return
                status = response.status
                if status in NO_ANSWER and self.redirected:
                    # Nobody answers where a redirect sent us: ask home again (it
                    # serves us, or redirects us to wherever its users are now).
                    self.reset_servers()
            attempt += 1
            backoff = min(self.config.retry_backoff_max, 0.1 * 2 ** attempt)
            log.info("%s: re-registration failed (%s); retrying in %.2f s", self.aor,
                     status, backoff)
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))

    # -- instant messages, presence ------------------------------------------------
    async def send_message(self, to: str, text: str | bytes,
                           content_type: str = "text/plain") -> Response:
        """Send a MESSAGE (RFC 3428) through our server."""
        request = self.new_request("MESSAGE", to)
        request.headers.add("Content-Type", content_type)
        request.body = text.encode() if isinstance(text, str) else text
        return await self.send(request)

    async def next_message(self, timeout: float = 5.0) -> Request:
        """The next MESSAGE received."""
        return await asyncio.wait_for(self.messages.get(), timeout)

    async def publish(self, body: bytes, *, event: str = "presence", expires: int = 600,
                      content_type: str = "application/pidf+xml") -> Response:
        """PUBLISH event state (RFC 3903); refreshes carry SIP-If-Match with our entity tag."""
        request = self.new_request("PUBLISH", self.aor)
        request.headers.add("Event", event)
        request.headers.add("Expires", str(expires))
        if self._publish_etag is not None:
            request.headers.add("SIP-If-Match", self._publish_etag)
        if body:
            request.headers.add("Content-Type", content_type)
            request.body = body
        response = await self.send(request)
        if response.status == 412 and self._publish_etag is not None:
            # RFC 3903 §4.1: the entity tag is unknown there (another server, expired):
            # publish the state afresh.
            self._publish_etag = None
            return await self.publish(body, event=event, expires=expires,
                                      content_type=content_type)
        if 200 <= response.status < 300:
            self._publish_etag = response.headers.get("SIP-ETag") if expires else None
        return response

    async def subscribe(self, target: str, *, event: str = "presence", expires: int = 600,
                        accept: str = "application/pidf+xml") -> tuple[Subscription, Response]:
        """SUBSCRIBE to `target`; NOTIFYs land in the returned subscription's queue."""
        request = self.new_request("SUBSCRIBE", target)
        request.headers.add("Event", event)
        request.headers.add("Expires", str(expires))
        request.headers.add("Accept", accept)
        request.headers.add("Contact", str(self.contact()))
        sub = Subscription(self, event, target, expires=expires)
        self.subscriptions[request.call_id] = sub
        exchange = await self.transact(request)
        response = exchange.response
        if 200 <= response.status < 300 and response.to.tag and response.contacts:
            sub.dialog = Dialog.from_uac(exchange.request, response)
        elif response.status >= 300:
            self.subscriptions.pop(request.call_id, None)
            sub.terminated.set()
        return sub, response

    # -- calls --------------------------------------------------------------------------
    async def invite(self, to: str, body: bytes = b"", *,
                     content_type: str = "application/sdp") -> Call:
        """Call `to`; return the established call or raise `CallFailed`."""
        call = self.start_call(to, body, content_type=content_type)
        await self.wait_answer(call)
        return call

    def start_call(self, to: str, body: bytes = b"", *,
                   content_type: str = "application/sdp") -> Call:
        """Begin a call without waiting (use `wait_answer`, or `call.cancel()`)."""
        request = self.new_request("INVITE", to)
        request.headers.add("Contact", str(self.contact()))
        request.headers.add("Allow", ALLOW)
        if body:
            request.headers.add("Content-Type", content_type)
            request.body = body
        call = Call(self, request.call_id, True, invite=request)
        self.calls[call.call_id] = call

        def provisional(response: Response, _: Flow | None) -> None:
            call.provisional.append(response.status)
            if response.status in (180, 183):
                call.state = CallState.RINGING

        def retransmitted_2xx(response: Response, _: Flow | None) -> None:
            if call.dialog is not None:
                self._spawn_ack(call, response)

        call.pending = asyncio.ensure_future(self.transact(
            request, on_provisional=provisional, on_retransmitted_2xx=retransmitted_2xx))
        return call

    async def wait_answer(self, call: Call) -> Response:
        """Wait for the final answer to an outgoing call; ACK a 2xx (§13.2.2.4)."""
        assert call.pending is not None
        exchange = await call.pending
        response = exchange.response
        if 200 <= response.status < 300:
            call.invite = exchange.request
            call.dialog = Dialog.from_uac(exchange.request, response)
            call.remote_body = response.body
            call.state = CallState.ESTABLISHED
            await self._send_ack(call)
            return response
        call._end(f"{response.status} {response.reason}", CallState.FAILED)
        self.calls.pop(call.call_id, None)
        raise CallFailed(response.status, response.reason)

    async def _send_ack(self, call: Call) -> None:
        assert call.dialog is not None and call.invite is not None
        ack = call.dialog.create_request("ACK", via=self.endpoint.via(self.transport),
                                         cseq=call.invite.cseq.seq)
        ack.headers.remove("Authorization")
        await self.endpoint.send_stateless(ack, self._next_hop(call.dialog))

    def _spawn_ack(self, call: Call, _: Response) -> None:
        self._spawn(self._send_ack(call))

    def _spawn(self, coro: Coroutine[object, object, object]) -> asyncio.Future[object]:
        """Run `coro` in the background, keeping a reference until it is done."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def cancel_call(self, call: Call) -> None:
        """CANCEL a pending outgoing INVITE (§9.1)."""
        # The INVITE actually pending may be the authenticated retry of `call.invite`.
        invite = self._pending_invites.get(call.call_id, call.invite)
        assert invite is not None
        await self.endpoint.request(build_cancel(invite), self.server)

    async def reinvite(self, call: Call, body: bytes) -> Response:
        """A re-INVITE inside the call's dialog; its 2xx is ACKed."""
        assert call.dialog is not None
        headers = Headers()
        if body:
            headers.add("Content-Type", "application/sdp")
        response = await self.send_in_dialog(call.dialog, "INVITE", headers=headers, body=body)
        if 200 <= response.status < 300:
            ack = call.dialog.create_request("ACK", via=self.endpoint.via(self.transport),
                                             cseq=call.dialog.local_cseq)
            await self.endpoint.send_stateless(ack, self._next_hop(call.dialog))
        return response

    async def send_in_dialog(self, dialog: Dialog, method: str, *,
                             headers: Headers | None = None, body: bytes = b"") -> Response:
        """Send a request inside `dialog` to its next hop."""
        request = dialog.create_request(method, via=self.endpoint.via(self.transport),
                                        contact=self.contact())
        for name, value in headers or ():
            request.headers.add(name, value)
        request.body = body
        return await self.send(request, target=self._next_hop(dialog))

    def _next_hop(self, dialog: Dialog) -> Address:
        first = dialog.route_set[0].uri if dialog.route_set else dialog.remote_target
        return uri_address(first, self.transport)

    async def answer_call(self, call: Call, status: int, body: bytes,
                          content_type: str | None) -> None:
        """Send the final response to an incoming INVITE; retransmit a 2xx until ACKed."""
        incoming = call.incoming
        assert incoming is not None and call.local_tag is not None
        headers = Headers()
        if status < 300:
            headers.add("Contact", str(self.contact()))
            for rr in incoming.request.headers.get_all("Record-Route"):
                headers.add("Record-Route", rr)
            if body and content_type:
                headers.add("Content-Type", content_type)
        response = self.endpoint.reply(incoming, status, headers=headers, body=body,
                                       to_tag=call.local_tag)
        if status >= 300:
            call._end(f"rejected {status}", CallState.FAILED)
            self.calls.pop(call.call_id, None)
            return
        call.state = CallState.ESTABLISHED
        if not incoming.flow.reliable:
            self._spawn(self._retransmit_2xx(call, response, incoming.flow))

    async def _retransmit_2xx(self, call: Call, response: Response, flow: Flow) -> None:
        # §13.3.1.4: the UAS core retransmits 2xx at T1 doubling to T2 until the ACK.
        timers = self.config.timers
        interval, waited = timers.t1, 0.0
        while waited < timers.timeout and not call.acked.is_set() and not self._closed:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(call.acked.wait(), interval)
            waited += interval
            if call.acked.is_set() or call.ended.is_set():
                return
            await self.endpoint.transport.send_response(response, flow)
            interval = min(interval * 2, timers.t2)

    # -- requests we receive ------------------------------------------------------------
    def _on_request(self, incoming: IncomingRequest) -> None:
        handler = getattr(self, "_handle_" + incoming.request.method.lower(), None)
        if handler is None:
            self.endpoint.reply(incoming, 405, headers=Headers([("Allow", ALLOW)]))
            return
        handler(incoming)

    def _handle_message(self, incoming: IncomingRequest) -> None:
        self.endpoint.reply(incoming, 200, to_tag=new_tag())
        request = incoming.request
        # A proxy that retries a request whose flow failed may deliver it twice: the
        # same Call-ID, CSeq and From tag is the same message (RFC 3261 §8.2.2.2 spirit).
        key = (request.call_id, request.cseq.seq, request.from_.tag or "")
        if key in self._seen_messages:
            return
        self._seen_messages[key] = None
        if len(self._seen_messages) > 4096:
            del self._seen_messages[next(iter(self._seen_messages))]
        self.messages.put_nowait(request)

    def _handle_options(self, incoming: IncomingRequest) -> None:
        self.endpoint.reply(incoming, 200, headers=Headers([("Allow", ALLOW)]), to_tag=new_tag())

    def _handle_notify(self, incoming: IncomingRequest) -> None:
        request = incoming.request
        sub = self.subscriptions.get(request.call_id)
        if sub is None:
            self.endpoint.reply(incoming, 481)
            return
        self.endpoint.reply(incoming, 200)
        if sub.dialog is None and request.from_.tag:
            # the NOTIFY raced the SUBSCRIBE's 2xx: it creates the dialog (RFC 6665 §4.1.2.4)
            sub.dialog = Dialog.from_uas(request, request.to.tag or self._tag)
        state = (request.headers.get("Subscription-State") or "").split(";")[0].strip()
        sub.state = state or sub.state
        sub.notifications.put_nowait(request)
        if state == "terminated":
            self.subscriptions.pop(request.call_id, None)
            sub.terminated.set()

    def _handle_invite(self, incoming: IncomingRequest) -> None:
        request = incoming.request
        call = self.calls.get(request.call_id)
        if call is not None and call.dialog is not None and call.dialog.matches(request):
            self.endpoint.reply(incoming, 200, headers=Headers([("Contact",
                                str(self.contact()))]), body=call.remote_body)
            return
        if request.headers.get("Replaces") is not None:
            self._replace(incoming)
            return
        tag = new_tag()
        call = Call(self, request.call_id, False, incoming=incoming, local_tag=tag,
                    remote_body=request.body)
        call.dialog = Dialog.from_uas(request, tag)
        self.calls[call.call_id] = call
        self.endpoint.reply(incoming, 180, to_tag=tag)
        call.state = CallState.RINGING
        self.incoming_calls.put_nowait(call)

    def _replace(self, incoming: IncomingRequest) -> None:
        """RFC 3891: an INVITE replacing an established call of ours is answered 200 at
        once with our SDP of that call, which is then hung up; the new call arrives on
        `incoming_calls` already established. No such call: 481."""
        request = incoming.request
        call_id, *params = (request.headers.get("Replaces") or "").split(";")
        tags = {name.strip(): value.strip()
                for name, _, value in (p.partition("=") for p in params)}
        old = self.calls.get(call_id.strip())
        if old is None or old.dialog is None or old.state is not CallState.ESTABLISHED \
                or (old.dialog.id.local_tag, old.dialog.id.remote_tag) != \
                (tags.get("to-tag"), tags.get("from-tag")):
            self.endpoint.reply(incoming, 481, "Call Does Not Exist", to_tag=new_tag())
            return
        answered = old.incoming.transaction.last_response \
            if old.incoming is not None and old.incoming.transaction is not None else None
        ours = old.invite.body if old.outgoing and old.invite is not None else \
            (answered.body if answered is not None else b"")
        call = Call(self, request.call_id, False, incoming=incoming, local_tag=new_tag(),
                    remote_body=request.body)
        call.dialog = Dialog.from_uas(request, call.local_tag or "")
        self.calls[call.call_id] = call

        async def take_over() -> None:
            await self.answer_call(call, 200, ours, "application/sdp")
            with contextlib.suppress(RuntimeError):
                await old.bye()
            self.incoming_calls.put_nowait(call)
        self._spawn(take_over())

    def _handle_ack(self, incoming: IncomingRequest) -> None:
        call = self.calls.get(incoming.request.call_id)
        if call is not None:
            call.acked.set()

    def _handle_bye(self, incoming: IncomingRequest) -> None:
        call = self.calls.pop(incoming.request.call_id, None)
        if call is None or call.dialog is None or not call.dialog.matches(incoming.request):
            self.endpoint.reply(incoming, 481)
            return
        self.endpoint.reply(incoming, 200)
        call._end("remote BYE")

    def _handle_cancel(self, incoming: IncomingRequest) -> None:
        invite_txn = self.endpoint.transactions.find_invite(incoming.request)
        call = self.calls.get(incoming.request.call_id)
        if invite_txn is None or call is None or call.state is CallState.ESTABLISHED:
            self.endpoint.reply(incoming, 481)
            return
        self.endpoint.reply(incoming, 200)
        assert call.incoming is not None
        self.endpoint.reply(call.incoming, 487, to_tag=call.local_tag)
        self.calls.pop(call.call_id, None)
        call._end("cancelled", CallState.FAILED)
