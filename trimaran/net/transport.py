"""The transport layer (RFC 3261 §18): bytes in -> sip -> bytes out, over UDP, TCP and TLS.

`TransportLayer` owns the listening sockets and the TCP and TLS connections (the flow
table; TLS as `trimaran.net.tls` describes). Every parsed message is handed to
`on_message(message, flow)`; requests first get their top Via stamped with
`received`/`rport` (§18.2.1, RFC 3581). Sending goes to an `Address` (connections
are reused) or back over a `Flow`; `send_response` routes a response the way
§18.2.2 and RFC 3581 §4 say.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import asdict

from trimaran.net.flows import (
    DEFAULT_CONFIG,
    Address,
    ConnectError,
    Counters,
    Flow,
    FlowClosedError,
    FlowTable,
    HostPort,
    MessageTooLargeError,
    NotListeningError,
    TransportConfig,
    TransportError,
    TransportStats,
    format_host_port,
    host_port,
    is_ip_literal,
    normalize_host,
    parse_udp_flow_id,
)
from trimaran.net.tcp import CLOSED_LOCALLY, SHUTDOWN, TcpConnection
from trimaran.net.tls import DEFAULT_TLS_PORT, MTLS_REQUIRED, TlsPolicy, installed
from trimaran.net.udp import UdpEndpoint
from trimaran.security.tlsconf import handshakes_refused
from trimaran.sip.errors import SipParseError
from trimaran.sip.headers import Via
from trimaran.sip.message import Message, Request, Response

__all__ = [
    "DEFAULT_CONFIG",
    "Address",
    "ConnectError",
    "Flow",
    "FlowClosedError",
    "MessageHandler",
    "MessageTooLargeError",
    "NotListeningError",
    "TransportConfig",
    "TransportError",
    "TransportLayer",
    "TransportStats",
    "stamp_via",
]

logger = logging.getLogger(__name__)

DEFAULT_SIP_PORT = 5060

MessageHandler = Callable[[Message, Flow], None]
FlowClosedHandler = Callable[[Flow, str], None]


def stamp_via(message: Message, source: HostPort) -> None:
    """Add `received` (and fill a bare `rport`) to the top Via (§18.2.1, RFC 3581 §4)."""
    raw = message.headers.get("Via")
    if raw is None:
        return
    try:
        via = Via.parse(raw)
    except SipParseError:
        return
    host, port = source
    stamped = via
    if via.wants_rport and via.rport is None:
        stamped = via.with_param("rport", str(port)).with_param("received", host)
    elif normalize_host(via.host) != host:
        stamped = via.with_param("received", host)
    if stamped is not via:
        message.headers.pop_first("Via")
        message.headers.add("Via", str(stamped), first=True)


class TransportLayer:
    """UDP, TCP and TLS listeners, the connection table, keepalives and response routing.

    `tls` is the TLS policy (default: the one `trimaran.net.tls.install` set, if any)."""

    def __init__(self, on_message: MessageHandler, config: TransportConfig = DEFAULT_CONFIG, *,
                 on_flow_closed: FlowClosedHandler | None = None,
                 tls: TlsPolicy | None = None) -> None:
        self._tls = tls if tls is not None else installed()
        self._tls_servers: list[tuple[HostPort, asyncio.Server]] = []
        self._refusals: set[asyncio.Task[Flow]] = set()
        self._on_message = on_message
        self._config = config
        self._on_flow_closed = on_flow_closed
        self._counters = Counters()
        self._table: FlowTable[TcpConnection] = FlowTable()
        self._udp: dict[HostPort, UdpEndpoint] = {}
        self._servers: list[tuple[HostPort, asyncio.Server]] = []
        self._connecting: dict[tuple[str, HostPort], asyncio.Task[TcpConnection]] = {}
        self._next_tcp_id = 0
        self._closing = False
        self._shutdown: asyncio.Task[None] | None = None

    @property
    def config(self) -> TransportConfig:
        """The configuration in use."""
        return self._config

    @property
    def tls(self) -> TlsPolicy | None:
        """The TLS policy in use (None: no TLS)."""
        return self._tls

    # -- listening --------------------------------------------------------
    async def listen_udp(self, host: str, port: int = 0) -> tuple[str, int]:
        """Bind a UDP socket; return the bound address."""
        self._check_running()
        loop = asyncio.get_running_loop()
        try:
            _, endpoint = await loop.create_datagram_endpoint(
                lambda: UdpEndpoint(self.deliver, self._config.limits, self._counters),
                local_addr=(normalize_host(host), port))
        except OSError as exc:
            raise TransportError(f"cannot listen on udp {host}:{port}: {exc}") from exc
        self._udp[endpoint.local] = endpoint
        return endpoint.local

    async def listen_tcp(self, host: str, port: int = 0) -> tuple[str, int]:
        """Listen for TCP connections; return the bound address."""
        self._check_running()
        loop = asyncio.get_running_loop()
        try:
            server = await loop.create_server(
                lambda: TcpConnection(self, self._config, self._counters, outbound=False),
                normalize_host(host), port)
        except OSError as exc:
            raise TransportError(f"cannot listen on tcp {host}:{port}: {exc}") from exc
        local = host_port(server.sockets[0].getsockname())
        self._servers.append((local, server))
        logger.info("listening on tcp %s:%d", *local)
        return local

    async def listen_tls(self, host: str, port: int | None = None, *,
                         external: bool = False) -> tuple[str, int]:
        """Listen for TLS connections (default port: the policy's); return the bound address.

        `external`: the Edge's external side, where no client certificate is asked for."""
        self._check_running()
        policy = self._tls
        context = None if policy is None else \
            policy.external_context if external else policy.server_context
        if policy is None or context is None:
            raise TransportError("no TLS certificate configured: cannot listen on tls")
        loop = asyncio.get_running_loop()
        try:
            server = await loop.create_server(
                lambda: TcpConnection(self, self._config, self._counters, outbound=False,
                                      kind="tls"),
                normalize_host(host), policy.port if port is None else port, ssl=context,
                ssl_handshake_timeout=self._config.connect_timeout)
        except OSError as exc:
            raise TransportError(f"cannot listen on tls {host}:{port}: {exc}") from exc
        local = host_port(server.sockets[0].getsockname())
        self._tls_servers.append((local, server))
        logger.info("listening on tls %s:%d%s", *local, " (external)" if external else "")
        return local

    def local_address(self, transport: str) -> tuple[str, int]:
        """The (first) listening address of `transport`, for Via sent-by and Contact."""
        kind = transport.lower()
        if kind == "udp":
            for local, endpoint in self._udp.items():
                if endpoint.is_open:
                    return local
        elif kind == "tcp" and not self._closing:
            for local, _ in self._servers:
                return local
        elif kind == "tls" and not self._closing:
            for local, _ in self._tls_servers:
                return local
        raise NotListeningError(f"not listening on {transport}")

    # -- sending ----------------------------------------------------------
    async def send(self, message: Message, target: Address | Flow) -> Flow:
        """Send `message` to an address (reusing connections) or over a flow; return the flow.

        With mutual TLS between servers, an address that is a server's SIP address is
        reached over TLS (`secure`)."""
        data = message.to_bytes()
        flow = await self._send_bytes(data, self.secure(target))
        self._counters.messages_out += 1
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("sent %r over %s", message.start_line(), flow.id)
        return flow

    def secure(self, target: Address | Flow) -> Address | Flow:
        """`target`, or the TLS address to use instead (a server's SIP address, when the
        policy wants mutual TLS between servers)."""
        if isinstance(target, Flow) or self._tls is None or target.transport == "tls":
            return target
        secured = self._tls.secure_address(target.host, target.port)
        return target if secured is None else Address("tls", *secured)

    async def send_response(self, response: Response, flow: Flow | None) -> Flow:
        """Send a response where §18.2.2 / RFC 3581 §4 say, given the request's flow."""
        try:
            via = response.top_via
        except SipParseError as exc:
            raise TransportError(f"cannot route response: {exc}") from exc
        host = via.received or via.host
        reliable = flow.reliable if flow is not None else via.transport != "UDP"
        if reliable:
            if flow is not None and self.is_open(flow):
                return await self.send(response, flow)
            # The connection is gone: open one to received (or sent-by) and the sent-by port.
            kind = flow.transport if flow is not None else via.transport.lower()
            default = DEFAULT_TLS_PORT if kind == "tls" else DEFAULT_SIP_PORT
            return await self.send(response, Address(kind, host, via.port or default))
        port = via.rport or via.port or DEFAULT_SIP_PORT
        if flow is None:
            return await self.send(response, Address("udp", host, port))
        endpoint = self._udp.get(flow.local)
        if endpoint is None or not endpoint.is_open:
            raise FlowClosedError(f"{flow.id}: udp socket is closed")
        self._check_ip(host)
        sent = endpoint.send(response.to_bytes(), (normalize_host(host), port))
        self._counters.messages_out += 1
        return sent

    async def send_response_for(self, response: Response, request_flow: Flow | None) -> Flow:
        """Alias of `send_response`."""
        return await self.send_response(response, request_flow)

    async def _send_bytes(self, data: bytes, target: Address | Flow) -> Flow:
        self._check_running()
        if isinstance(target, Flow):
            if target.transport == "udp":
                endpoint = self._udp.get(target.local)
                if endpoint is None or not endpoint.is_open:
                    raise FlowClosedError(f"{target.id}: udp socket is closed")
                return endpoint.send(data, target.remote)
            conn = self._table.get(target.id)
            if conn is None or not conn.is_open:
                raise FlowClosedError(f"{target.id} is closed")
            conn.write(data)
            return conn.flow
        kind = target.transport.lower()
        self._check_ip(target.host)
        remote = (normalize_host(target.host), target.port)
        if kind == "udp":
            return self._udp_endpoint_for(remote[0]).send(data, remote)
        if kind in ("tcp", "tls"):
            conn = await self._stream_connection(kind, remote)
            conn.write(data)
            return conn.flow
        raise TransportError(f"unsupported transport {target.transport!r}")

    @staticmethod
    def _check_ip(host: str) -> None:
        if not is_ip_literal(host):
            raise TransportError(f"{host!r} is not an IP address (resolve names first)")

    def _udp_endpoint_for(self, host: str) -> UdpEndpoint:
        want_v6 = ":" in host
        for local, endpoint in self._udp.items():
            if endpoint.is_open and (":" in local[0]) == want_v6:
                return endpoint
        raise NotListeningError(f"no udp socket to send to {host}")

    async def _stream_connection(self, kind: str, remote: HostPort) -> TcpConnection:
        conn = self._table.by_remote(kind, remote)
        if conn is not None and conn.is_open:
            return conn
        key = (kind, remote)
        task = self._connecting.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._connect(kind, remote))
            self._connecting[key] = task
            task.add_done_callback(lambda t: self._connect_done(key, t))
        # Concurrent senders share one connection attempt; one cancelled sender
        # does not cancel it for the others.
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task.cancelled() and (current is None or current.cancelling() == 0):
                # The attempt itself was cancelled (shutdown), not this sender.
                raise ConnectError(f"connect to {kind} {remote[0]}:{remote[1]} abandoned: "
                                   "transport layer is shutting down") from None
            raise

    def _connect_done(self, key: tuple[str, HostPort],
                      task: asyncio.Task[TcpConnection]) -> None:
        if self._connecting.get(key) is task:
            del self._connecting[key]
        if not task.cancelled():
            task.exception()  # retrieved here: every waiter may have gone away

    def _source(self, kind: str) -> str | None:
        """The address outgoing connections are bound to (None: the kernel's choice).

        TLS with mutual TLS between servers binds to our TLS listener, so the peer
        sees the server's own address with the server's certificate."""
        if kind == "tls" and self._tls is not None and self._tls.mutual and self._tls_servers:
            return self._tls_servers[0][0][0]
        listeners = self._servers or self._tls_servers
        if self._config.bind_outgoing and listeners:
            return listeners[0][0][0]
        return None

    async def _connect(self, kind: str, remote: HostPort) -> TcpConnection:
        host, port = remote
        loop = asyncio.get_running_loop()
        timeout = self._config.connect_timeout
        context = self._tls.client_context if self._tls is not None else None
        if kind == "tls" and context is None:
            raise ConnectError(f"connect to tls {host}:{port}: no TLS client context "
                               "(no deployment CA configured)")
        try:
            async with asyncio.timeout(timeout):
                source = self._source(kind)
                _, conn = await loop.create_connection(
                    lambda: TcpConnection(self, self._config, self._counters, outbound=True,
                                          kind=kind),
                    host, port, local_addr=(source, 0) if source else None,
                    ssl=context if kind == "tls" else None,
                    server_hostname=host if kind == "tls" else None)
        except TimeoutError:
            self._counters.connect_failures += 1
            raise ConnectError(f"connect to {kind} {host}:{port} timed out after "
                               f"{timeout}s") from None
        except OSError as exc:
            self._counters.connect_failures += 1
            raise ConnectError(f"connect to {kind} {host}:{port} failed: {exc}") from exc
        if not conn.is_open:
            self._counters.connect_failures += 1
            raise ConnectError(f"connect to {kind} {host}:{port}: refused locally "
                               f"({len(self._table)} connections open)")
        return conn

    # -- flows ------------------------------------------------------------
    def flow(self, flow_id: str) -> Flow | None:
        """The flow with this id while it is open, else None."""
        if flow_id.startswith("udp:"):
            flow = parse_udp_flow_id(flow_id)
            return flow if flow is not None and self.is_open(flow) else None
        conn = self._table.get(flow_id)
        return conn.flow if conn is not None and conn.is_open else None

    def flows_to(self, host: str, port: int) -> list[Flow]:
        """Open TCP/TLS flows whose far end is `host:port` (or the TLS address `secure`
        uses for it)."""
        remotes = {(normalize_host(host), port)}
        if self._tls is not None:
            secured = self._tls.secure_address(host, port)
            if secured is not None:
                remotes.add(secured)
        return [conn.flow for conn in self._table.connections()
                if conn.is_open and conn.flow.remote in remotes]

    def is_open(self, flow: Flow) -> bool:
        """True while messages can be sent over `flow`."""
        if flow.transport == "udp":
            endpoint = self._udp.get(flow.local)
            return endpoint is not None and endpoint.is_open
        conn = self._table.get(flow.id)
        return conn is not None and conn.is_open

    async def close_flow(self, flow: Flow, *, drain_timeout: float = 5.0) -> None:
        """Close a TCP flow (queued bytes are flushed, up to `drain_timeout`); UDP: no-op."""
        conn = self._table.get(flow.id)
        if conn is None:
            return
        conn.close(CLOSED_LOCALLY)
        await asyncio.wait([conn.done], timeout=drain_timeout)
        if not conn.done.done():
            conn.abort()

    def statistics(self) -> TransportStats:
        """A snapshot of the counters."""
        policy = self._tls            # OPS-6: refused handshakes are counted by the contexts
        contexts = set() if policy is None else {policy.server_context, policy.external_context}
        refused = sum(handshakes_refused(context) for context in contexts)
        return TransportStats(open_connections=len(self._table), tls_handshakes_refused=refused,
                              **asdict(self._counters))

    # -- shutdown ---------------------------------------------------------
    async def close(self, drain_timeout: float = 5.0) -> None:
        """Stop listening, flush queued writes (up to `drain_timeout`), close everything."""
        if self._shutdown is None:
            self._shutdown = asyncio.get_running_loop().create_task(self._close(drain_timeout))
        await asyncio.shield(self._shutdown)

    async def _close(self, drain_timeout: float) -> None:
        self._closing = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(drain_timeout, 0.0)
        for _, server in (*self._servers, *self._tls_servers):
            server.close()
        for task in list(self._connecting.values()):
            task.cancel()
        conns = self._table.connections()
        for conn in conns:
            conn.close(SHUTDOWN)  # flushes what is queued, then closes
        waiting = [conn.done for conn in conns]
        if waiting:
            await asyncio.wait(waiting, timeout=max(deadline - loop.time(), 0.0))
        stuck = [conn for conn in conns if not conn.done.done()]
        for conn in stuck:
            conn.abort()
        if stuck:
            logger.info("shutdown: %d connections did not drain in %.1fs", len(stuck),
                        drain_timeout)
            await asyncio.wait([conn.done for conn in stuck], timeout=1.0)
        for endpoint in self._udp.values():
            endpoint.close()
        udp_closed = [endpoint.closed for endpoint in self._udp.values()]
        if udp_closed:
            await asyncio.wait(udp_closed, timeout=max(deadline - loop.time(), 0.1))
        for _, server in (*self._servers, *self._tls_servers):
            try:
                async with asyncio.timeout(max(deadline - loop.time(), 0.1)):
                    await server.wait_closed()
            except TimeoutError:
                logger.info("shutdown: tcp server did not close in time")
        logger.info("transport closed")

    def _check_running(self) -> None:
        if self._closing:
            raise TransportError("transport layer is shut down")

    # -- callbacks from the protocols (internal) ----------------------------
    def deliver(self, message: Message, flow: Flow) -> None:
        """Stamp and hand one parsed message to the application."""
        if self._closing:
            return
        if isinstance(message, Request):
            stamp_via(message, flow.remote)
            if self._tls is not None and self._tls.refuses(flow, self._verified(flow)):
                self._refuse(message, flow)
                return
        try:
            self._on_message(message, flow)
        except Exception:
            logger.exception("message handler failed for a message from %s", flow.id)

    def _verified(self, flow: Flow) -> bool:
        conn = self._table.get(flow.id) if flow.transport == "tls" else None
        return conn is not None and conn.peer_verified

    def _refuse(self, request: Request, flow: Flow) -> None:
        """Answer server-to-server traffic outside mutual TLS with 403 (ACK: dropped)."""
        self._counters.server_requests_refused += 1
        logger.info("refusing %s from server %s over %s: mutual TLS required",
                    request.method, format_host_port(flow.remote), flow.transport)
        if request.method == "ACK":
            return
        response = Response.for_request(request, 403, MTLS_REQUIRED)
        task = asyncio.get_running_loop().create_task(self.send_response(response, flow))
        self._refusals.add(task)
        task.add_done_callback(self._refusal_sent)

    def _refusal_sent(self, task: asyncio.Task[Flow]) -> None:
        self._refusals.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.debug("403 not sent: %s", task.exception())

    def tcp_opened(self, conn: TcpConnection, local: HostPort, remote: HostPort) -> Flow | None:
        """Admit and register a new TCP or TLS connection, or refuse it (None)."""
        if self._closing or len(self._table) >= self._config.max_connections:
            self._counters.connections_refused += 1
            logger.info("refusing %s connection %s %s:%d: %d connections open", conn.kind,
                        "to" if conn.outbound else "from", *remote, len(self._table))
            return None
        self._next_tcp_id += 1
        flow = Flow(f"{conn.kind}:{self._next_tcp_id}", conn.kind, local, remote)
        self._table.add(flow, conn)
        if conn.outbound:
            self._counters.connections_opened += 1
        else:
            self._counters.connections_accepted += 1
        return flow

    def tcp_closed(self, conn: TcpConnection, reason: str) -> None:
        """Forget a closing TCP connection and report it."""
        flow = conn.flow
        self._table.remove(flow.id)
        if self._on_flow_closed is not None:
            try:
                self._on_flow_closed(flow, reason)
            except Exception:
                logger.exception("flow-closed handler failed for %s", flow.id)
