"""A SIP endpoint: the transport layer and the transaction layer driven by asyncio.

This is the one place where the sans-IO transaction layer meets the event
loop: the loop's monotonic clock is `now`, one timer handle is kept armed at
the layer's next deadline, and `SendMessage` events become transport sends.
Applications (the client UA, the Front End roles) sit on top and see
`IncomingRequest`s and awaitable responses.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

from trimaran.net.flows import udp_flow
from trimaran.net.tls import TlsPolicy
from trimaran.net.transport import (
    Address,
    Flow,
    TransportConfig,
    TransportError,
    TransportLayer,
)
from trimaran.sip.errors import SipParseError
from trimaran.sip.headers import Headers
from trimaran.sip.ids import new_branch
from trimaran.sip.message import Message, Request, Response
from trimaran.sip.transaction import (
    ResponseReceived,
    SendMessage,
    TimerConfig,
    Transaction,
    TransactionTerminated,
    TransactionTimedOut,
    TransportFailed,
)
from trimaran.sip.transaction_client import ClientTransaction
from trimaran.sip.transaction_layer import (
    LayerEvent,
    RequestReceived,
    StrayResponse,
    TransactionLayer,
)
from trimaran.sip.transaction_server import ServerTransaction

log = logging.getLogger(__name__)

Target = Address | Flow


@dataclass(frozen=True, slots=True, eq=False)
class IncomingRequest:
    """A request for the application; `transaction` is None for an ACK of a 2xx."""

    request: Request
    transaction: ServerTransaction | None
    flow: Flow


RequestHandler = Callable[[IncomingRequest], None]
ResponseHandler = Callable[[Response, Flow | None], None]


class _Pending:
    """What `request()` waits on: the final response, and provisional callbacks."""

    __slots__ = ("future", "on_provisional", "on_retransmitted_2xx", "target")

    def __init__(self, target: Target, on_provisional: ResponseHandler | None,
                 future: asyncio.Future[Response]) -> None:
        self.target = target
        self.on_provisional = on_provisional
        self.on_retransmitted_2xx: ResponseHandler | None = None
        self.future = future


def synthetic_response(request: Request, status: int, reason: str) -> Response:
    """The response a TU acts on when no real one came (408 timeout, 503 transport, §8.1.3.1)."""
    return Response.for_request(request, status, reason)


class SipEndpoint:
    """Transport + transactions for one SIP element, on the running event loop."""

    def __init__(self, *, on_request: RequestHandler, timers: TimerConfig | None = None,
                 transport_config: TransportConfig | None = None,
                 on_stray_response: ResponseHandler | None = None,
                 on_flow_closed: Callable[[Flow, str], None] | None = None,
                 tls: TlsPolicy | None = None) -> None:
        self.transactions = TransactionLayer(timers)
        self.transport = TransportLayer(self._on_message, transport_config or TransportConfig(),
                                        on_flow_closed=self._flow_closed, tls=tls)
        self._on_flow_closed = on_flow_closed
        self._on_request = on_request
        self._on_stray_response = on_stray_response
        self._pending: dict[ClientTransaction, _Pending] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    # -- lifecycle ------------------------------------------------------------
    async def listen(self, host: str, *, udp_port: int | None = 0,
                     tcp_port: int | None = 0) -> None:
        """Listen on UDP and/or TCP (None skips one; 0 picks a free port)."""
        if udp_port is not None:
            await self.transport.listen_udp(host, udp_port)
        if tcp_port is not None:
            await self.transport.listen_tcp(host, tcp_port)

    async def listen_tls(self, host: str, port: int | None = None, *,
                         external: bool = False) -> tuple[str, int] | None:
        """Listen on TLS when the TLS policy has a certificate for it (None: it has not)."""
        policy = self.transport.tls
        if policy is None or (policy.external_context if external
                              else policy.server_context) is None:
            return None
        return await self.transport.listen_tls(host, port, external=external)

    async def close(self, drain_timeout: float = 5.0) -> None:
        """Stop timers, fail waiting requests, shut the transport down in order."""
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.cancel()
        self._pending.clear()
        await self.transport.close(drain_timeout)
        for task in list(self._tasks):
            task.cancel()

    # -- building blocks for applications -------------------------------------
    def via(self, transport: str) -> str:
        """A Via value for a new request sent over `transport`, with a fresh branch."""
        host, port = self.transport.local_address(transport)
        if ":" in host:
            host = f"[{host}]"
        return f"SIP/2.0/{transport.upper()} {host}:{port};branch={new_branch()};rport"

    def contact_host_port(self, transport: str) -> tuple[str, int]:
        """Our listening address for `transport`, for Contact and Record-Route."""
        return self.transport.local_address(transport)

    @property
    def now(self) -> float:
        """The loop's monotonic clock: the `now` of the transaction layer."""
        return asyncio.get_running_loop().time()

    # -- client side ----------------------------------------------------------
    async def request(self, request: Request, target: Target, *,
                      on_provisional: ResponseHandler | None = None,
                      on_retransmitted_2xx: ResponseHandler | None = None) -> Response:
        """Send `request` in a client transaction; return the final response.

        A timeout gives a synthetic 408 and a transport failure a 503 (§8.1.3.1).
        For INVITE, later 2xx retransmissions go to `on_retransmitted_2xx` (to re-ACK).
        """
        response, _ = await self.exchange(request, target, on_provisional=on_provisional,
                                          on_retransmitted_2xx=on_retransmitted_2xx)
        return response

    async def exchange(self, request: Request, target: Target, *,
                       on_provisional: ResponseHandler | None = None,
                       on_retransmitted_2xx: ResponseHandler | None = None,
                       ) -> tuple[Response, Flow | None]:
        """Like `request`, also returning the flow the request left by (None if unsent)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Response] = loop.create_future()
        target = self.transport.secure(target)
        self._secure_via(request, target)
        reliable = target.transport != "udp"
        txn, events = self.transactions.send_request(request, reliable=reliable,
                                                     now=loop.time(), context=target)
        pending = _Pending(target, on_provisional, future)
        pending.on_retransmitted_2xx = on_retransmitted_2xx
        self._pending[txn] = pending
        self._process(events)
        response = await future
        flow = txn.context if isinstance(txn.context, Flow) else None
        if flow is None and isinstance(target, Address) and target.transport == "udp":
            flow = udp_flow(self.transport.local_address("udp"), (target.host, target.port))
        return response, flow

    async def send_stateless(self, message: Message, target: Target) -> Flow:
        """Send outside any transaction (ACK for 2xx, stateless forwarding)."""
        target = self.transport.secure(target)
        if isinstance(message, Request):
            self._secure_via(message, target)
        return await self.transport.send(message, target)

    def _secure_via(self, request: Request, target: Target) -> None:
        """OPS-6: a request whose top Via is ours over UDP/TCP but which goes over TLS
        (mutual TLS between servers upgraded it, `TransportLayer.secure`) gets a top Via
        naming TLS and our TLS address, so that the answer comes back the way it went."""
        if isinstance(target, Flow) or target.transport != "tls":
            return
        try:
            via = request.top_via
            host, port = self.transport.local_address("tls")
        except (SipParseError, TransportError):
            return
        if via.transport == "TLS" or not self._is_ours(via.transport, via.host, via.port):
            return
        sent_by = f"[{host}]" if ":" in host else host
        request.headers.pop_first("Via")
        request.headers.add("Via", str(replace(via, transport="TLS", host=sent_by, port=port)),
                            first=True)

    def _is_ours(self, transport: str, host: str, port: int | None) -> bool:
        try:
            return (host.strip("[]"), port) == self.transport.local_address(transport)
        except TransportError:
            return False

    # -- server side ----------------------------------------------------------
    def respond(self, transaction: ServerTransaction, response: Response) -> None:
        """Answer a request received in `transaction`."""
        if transaction.terminated:
            log.debug("dropping response %s for terminated %r", response.status, transaction)
            return
        self._process(self.transactions.respond(transaction, response, self.now))

    def reply(self, incoming: IncomingRequest, status: int, reason: str | None = None, *,
              headers: Headers | None = None, body: bytes = b"",
              to_tag: str | None = None) -> Response:
        """Build and send a response to `incoming` (extra headers appended)."""
        response = Response.for_request(incoming.request, status, reason, to_tag=to_tag)
        if headers is not None:
            for name, value in headers:
                response.headers.add(name, value)
        response.body = body
        if incoming.transaction is not None:
            self.respond(incoming.transaction, response)
        return response

    # -- event plumbing -------------------------------------------------------
    def _flow_closed(self, flow: Flow, reason: str) -> None:
        """A connection died: requests waiting for an answer over it fail now (RFC 5626
        §5: a failed flow fails its requests) instead of at Timer B/F."""
        if not self._closed:
            stranded = [txn for txn in self._pending
                        if txn.context == flow and not txn.terminated]
            for txn in stranded:
                self._process(self.transactions.transport_error(txn, self.now))
        if self._on_flow_closed is not None:
            self._on_flow_closed(flow, reason)

    def _on_message(self, message: Message, flow: Flow) -> None:
        if self._closed:
            return
        self._process(self.transactions.receive(message, reliable=flow.reliable,
                                                now=self.now, context=flow))

    def _process(self, events: list[LayerEvent]) -> None:
        for event in events:
            if isinstance(event, SendMessage):
                self._spawn(self._send(event.message, event.transaction))
            elif isinstance(event, RequestReceived):
                flow = event.context
                assert isinstance(flow, Flow)
                self._on_request(IncomingRequest(event.request, event.transaction, flow))
            elif isinstance(event, ResponseReceived):
                self._on_response(event.response, event.transaction)
            elif isinstance(event, TransactionTimedOut | TransportFailed):
                self._on_failure(event.transaction, isinstance(event, TransactionTimedOut))
            elif isinstance(event, TransactionTerminated):
                if isinstance(event.transaction, ClientTransaction):
                    self._pending.pop(event.transaction, None)
            elif isinstance(event, StrayResponse) and self._on_stray_response is not None:
                flow = event.context
                self._on_stray_response(event.response,
                                        flow if isinstance(flow, Flow) else None)
        self._rearm()

    def _on_response(self, response: Response, txn: Transaction) -> None:
        if not isinstance(txn, ClientTransaction):
            return
        pending = self._pending.get(txn)
        if pending is None:
            return
        if response.status < 200:
            if pending.on_provisional is not None:
                pending.on_provisional(response, None)
        elif not pending.future.done():
            pending.future.set_result(response)
            if txn.request.method != "INVITE" or response.status >= 300:
                self._pending.pop(txn, None)
        elif 200 <= response.status < 300 and pending.on_retransmitted_2xx is not None:
            pending.on_retransmitted_2xx(response, None)

    def _on_failure(self, txn: Transaction, timed_out: bool) -> None:
        if isinstance(txn, ClientTransaction):
            pending = self._pending.pop(txn, None)
            if pending is not None and not pending.future.done():
                status, reason = (408, "Request Timeout") if timed_out \
                    else (503, "Service Unavailable (transport failure)")
                pending.future.set_result(synthetic_response(txn.request, status, reason))
        else:
            log.info("server transaction %s failed (%s)", txn.key,
                     "no ACK" if timed_out else "transport error")

    async def _send(self, message: Message, txn: Transaction) -> None:
        try:
            if isinstance(txn, ServerTransaction):
                flow = txn.context
                assert isinstance(flow, Flow)
                assert isinstance(message, Response)
                await self.transport.send_response(message, flow)
            else:
                target = txn.context
                assert isinstance(target, Address | Flow)
                flow_used = await self.transport.send(message, target)
                if target.transport != "udp" and isinstance(target, Address):
                    txn.context = flow_used  # later messages of this transaction use the flow
        except TransportError as exc:
            log.info("send failed for %s: %s", txn.key, exc)
            if not self._closed:
                self._process(self.transactions.transport_error(txn, self.now))

    def _spawn(self, coro: object) -> None:
        assert asyncio.iscoroutine(coro)
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _rearm(self) -> None:
        if self._closed:
            return
        deadline = self.transactions.next_deadline()
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None:
            self._timer = asyncio.get_running_loop().call_at(deadline, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = None
        self._process(self.transactions.handle_timers(self.now))
