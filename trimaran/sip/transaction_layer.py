"""The transaction layer: creates transactions, matches messages to them, runs timers.

Matching (RFC 3261 §17.1.3, §17.2.3):

* a response matches the client transaction whose branch is the response's top
  Via branch and whose method is the CSeq method;
* a request matches the server transaction with the same top Via branch,
  sent-by and method — ACK matching the INVITE it acknowledges, CANCEL being a
  transaction of its own (§9.2). Requests whose branch lacks the magic cookie
  (RFC 2543 peers) are matched on Call-ID, From tag, CSeq number and top Via.

Requests that match nothing start a server transaction and are reported as
`RequestReceived`; an ACK that matches nothing (the ACK for a 2xx, §13.3.1.4)
is reported with no transaction. Responses that match nothing are reported as
`StrayResponse` (a proxy forwards 2xx retransmissions statelessly, §16.7).
Like the machines, this layer does no I/O and takes `now` on every call.

Every transaction that ends is counted by side ("client", "server"), method (one
of `KNOWN_METHODS`, else "other") and result: the class of its final response
("2xx" …), "timeout" (Timer B, F or H), "transport_error", or "none" when it ended
without a final response. `statistics()` returns the counts.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from trimaran.sip.errors import SipParseError
from trimaran.sip.headers import BRANCH_MAGIC
from trimaran.sip.message import KNOWN_METHODS, Message, Request, Response
from trimaran.sip.transaction import (
    Event,
    TimerConfig,
    Transaction,
    TransactionError,
    TransactionTerminated,
    TransactionTimedOut,
    TransportFailed,
)
from trimaran.sip.transaction_client import (
    ClientTransaction,
    InviteClientTransaction,
    NonInviteClientTransaction,
)
from trimaran.sip.transaction_server import (
    InviteServerTransaction,
    NonInviteServerTransaction,
    ServerTransaction,
)


@dataclass(frozen=True, slots=True, eq=False)
class RequestReceived:
    """A new request for the TU; `transaction` is None for an ACK outside any transaction."""

    request: Request
    transaction: ServerTransaction | None
    context: object


@dataclass(frozen=True, slots=True, eq=False)
class StrayResponse:
    """A response that matched no client transaction."""

    response: Response
    context: object


LayerEvent = Event | RequestReceived | StrayResponse

#: How a transaction ended: (side, method, result); see the module docstring.
Outcome = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class TransactionStats:
    """A snapshot of the layer's counters."""

    client_transactions: int
    server_transactions: int
    created: int
    timed_out: int
    completed: Mapping[Outcome, int]     # transactions ended, by (side, method, result)


def server_key(request: Request) -> str:
    """The server-side matching key of a request (§17.2.3)."""
    via = request.top_via
    method = "INVITE" if request.method == "ACK" else request.method
    branch = via.branch
    if branch and branch.startswith(BRANCH_MAGIC):
        return f"{branch}|{via.host.lower()}:{via.port or ''}|{method}"
    # RFC 2543 fallback (§17.2.3, last paragraph).
    tag = request.from_.tag or ""
    return f"2543|{request.call_id}|{tag}|{request.cseq.seq}|{via}|{method}"


def client_key(message: Message) -> str:
    """The client-side matching key: top Via branch and CSeq method (§17.1.3)."""
    branch = message.top_via.branch
    if not branch:
        raise SipParseError("top Via has no branch")
    return f"{branch}|{message.cseq.method}"


class TransactionLayer:
    """Owns every live transaction of one SIP endpoint."""

    def __init__(self, timers: TimerConfig | None = None) -> None:
        self.timers = timers or TimerConfig()
        self._client: dict[str, ClientTransaction] = {}
        self._server: dict[str, ServerTransaction] = {}
        self._heap: list[tuple[float, int, Transaction]] = []
        self._seq = itertools.count()
        self._created = 0
        self._timed_out = 0
        self._completed: dict[Outcome, int] = {}

    # -- client side --------------------------------------------------------
    def send_request(self, request: Request, *, reliable: bool, now: float,
                     context: object = None) -> tuple[ClientTransaction, list[LayerEvent]]:
        """Start a client transaction for `request` (which carries our Via with a fresh branch)."""
        if request.method == "ACK":
            raise TransactionError("ACK is not sent through a client transaction (§17.1)")
        branch = request.top_via.branch
        if not branch or not branch.startswith(BRANCH_MAGIC):
            raise TransactionError("our requests must carry an RFC 3261 branch (§8.1.1.7)")
        key = client_key(request)
        if key in self._client:
            raise TransactionError(f"client transaction {key} already exists")
        cls = InviteClientTransaction if request.method == "INVITE" else NonInviteClientTransaction
        txn = cls(request, reliable=reliable, timers=self.timers, key=key, context=context)
        self._client[key] = txn
        self._created += 1
        return txn, self._after(txn, txn.start(now))

    # -- both directions ----------------------------------------------------
    def receive(self, message: Message, *, reliable: bool, now: float,
                context: object = None) -> list[LayerEvent]:
        """Feed a message from the transport."""
        if isinstance(message, Response):
            return self._receive_response(message, now, context)
        assert isinstance(message, Request)
        return self._receive_request(message, reliable, now, context)

    def _receive_response(self, response: Response, now: float,
                          context: object) -> list[LayerEvent]:
        txn = self._client.get(client_key(response))
        if txn is None:
            return [StrayResponse(response, context)]
        return self._after(txn, txn.receive_response(response, now))

    def _receive_request(self, request: Request, reliable: bool, now: float,
                         context: object) -> list[LayerEvent]:
        key = server_key(request)
        txn = self._server.get(key)
        if txn is not None:
            if request.method == "ACK" and txn.request.method == "INVITE" \
                    and txn.last_response is not None and 200 <= txn.last_response.status < 300:
                # RFC 6026 §7.1: an ACK for our 2xx goes to the TU.
                return [RequestReceived(request, None, context)]
            return self._after(txn, txn.receive_request(request, now))
        if request.method == "ACK":
            return [RequestReceived(request, None, context)]
        cls = InviteServerTransaction if request.method == "INVITE" \
            else NonInviteServerTransaction
        txn = cls(request, reliable=reliable, timers=self.timers, key=key, context=context)
        self._server[key] = txn
        self._created += 1
        # The 100 Trying goes out before the TU sees the request (and perhaps answers it).
        events = self._after(txn, txn.begin(now))
        return [*events, RequestReceived(request, txn, context)]

    def respond(self, transaction: ServerTransaction, response: Response,
                now: float) -> list[LayerEvent]:
        """Send the TU's response on a server transaction."""
        return self._after(transaction, transaction.respond(response, now))

    def transport_error(self, transaction: Transaction, now: float) -> list[LayerEvent]:
        """Report that sending a message of `transaction` failed (§17.1.4, §17.2.4)."""
        return self._after(transaction, transaction.transport_error(now))

    def find_invite(self, cancel: Request) -> ServerTransaction | None:
        """The INVITE server transaction a CANCEL refers to (§9.2), if still live."""
        key = server_key(cancel)
        invite_key = key[: key.rfind("|")] + "|INVITE"
        return self._server.get(invite_key)

    # -- timers ---------------------------------------------------------------
    def next_deadline(self) -> float | None:
        """When `handle_timers` must next be called, or None when no timer is armed."""
        heap = self._heap
        while heap:
            when, _, txn = heap[0]
            current = txn.next_deadline()
            if txn.terminated or current is None or current > when:
                heapq.heappop(heap)  # stale: a newer entry exists for the later deadline
                continue
            return when
        return None

    def handle_timers(self, now: float) -> list[LayerEvent]:
        """Fire every timer due at `now`."""
        events: list[LayerEvent] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, txn = heapq.heappop(heap)
            if txn.terminated:
                continue
            current = txn.next_deadline()
            if current is None or current > now:
                continue
            events += self._after(txn, txn.handle_timer(now))
        return events

    def statistics(self) -> TransactionStats:
        """Counters, as an immutable snapshot."""
        return TransactionStats(len(self._client), len(self._server), self._created,
                                self._timed_out, MappingProxyType(dict(self._completed)))

    def _after(self, txn: Transaction, events: list[Event]) -> list[LayerEvent]:
        deadline = txn.next_deadline()
        if deadline is not None and not txn.terminated:
            heapq.heappush(self._heap, (deadline, next(self._seq), txn))
        failure: str | None = None
        for event in events:
            if isinstance(event, TransactionTerminated):
                client = isinstance(txn, ClientTransaction)
                table: dict[str, ClientTransaction] | dict[str, ServerTransaction]
                table = self._client if client else self._server
                if table.get(txn.key) is txn:
                    del table[txn.key]
                self._count(txn, "client" if client else "server", failure)
            elif isinstance(event, TransactionTimedOut):
                self._timed_out += 1
                failure = "timeout"
            elif isinstance(event, TransportFailed):
                failure = "transport_error"
        return list(events)

    def _count(self, txn: Transaction, side: str, failure: str | None) -> None:
        method = txn.request.method
        if method not in KNOWN_METHODS:
            method = "other"
        response = txn.last_response
        result = failure or (f"{response.status // 100}xx" if response is not None
                             and response.status >= 200 else "none")
        key = (side, method, result)
        self._completed[key] = self._completed.get(key, 0) + 1
