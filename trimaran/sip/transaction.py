"""SIP transaction state machines (RFC 3261 §17, with RFC 6026's Accepted state).

Theory of operation
-------------------
A transaction is a request and every response to it. There are four kinds:

* INVITE client (ICT, §17.1.1):  calling -> proceeding -> {completed | accepted} -> terminated
* non-INVITE client (NICT, §17.1.2): trying -> proceeding -> completed -> terminated
* INVITE server (IST, §17.2.1):  proceeding -> {completed -> confirmed | accepted} -> terminated
* non-INVITE server (NIST, §17.2.2): trying -> proceeding -> completed -> terminated

Each machine is a table from (state, input) to a handler. Inputs are what can
happen: a response class arriving ("1xx", "2xx", "final"), the request being
retransmitted, the TU answering ("tu_1xx", "tu_2xx", "tu_final"), a timer
firing ("timer_a" …), or a transport error. A pair missing from the table is
impossible and raises `TransactionError` naming the state and input — except
for inputs from the network, which a remote can send at any time: those are
absorbed (e.g. a late provisional response after the final one).

Nothing here does I/O or reads a clock. Every call takes `now` (seconds on any
monotonic clock) and returns a list of events for the caller to carry out:
messages to send and things to tell the transaction user (TU). Timers are
absolute deadlines derived from T1/T2/T4; `next_deadline()` says when the
caller must call `handle_timer(now)` next. Retransmission timers run only on
unreliable transports (§17.1.1.2, §17.1.2.2, §17.2.1).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from trimaran.sip.errors import SipError
from trimaran.sip.headers import Headers
from trimaran.sip.message import Message, Request, Response


class TransactionError(SipError):
    """Our own misuse of a transaction (an impossible transition, an unknown transaction)."""


@dataclass(frozen=True, slots=True)
class TimerConfig:
    """RFC 3261 §17.1.1.1 / Table 4 timer bases, in seconds."""

    t1: float = 0.5   # RTT estimate
    t2: float = 4.0   # maximum retransmit interval for non-INVITE requests and INVITE responses
    t4: float = 5.0   # maximum duration a message remains in the network

    def __post_init__(self) -> None:
        if not self.t1 > 0:
            raise ValueError("t1 must be > 0")
        if not self.t2 >= self.t1:
            raise ValueError("t2 must be >= t1")
        if not self.t4 > 0:
            raise ValueError("t4 must be > 0")

    @property
    def timeout(self) -> float:
        """64*T1: timers B, F, H, J, L and M (§17, RFC 6026)."""
        return 64 * self.t1


class State(enum.Enum):
    """Transaction states (§17 figures 5-8, RFC 6026 figures 5 and 7)."""

    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    ACCEPTED = "accepted"
    TERMINATED = "terminated"


# -- events returned to the caller --------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class SendMessage:
    """Send `message` for `transaction` (to its destination, or back on its flow)."""

    message: Message
    transaction: Transaction


@dataclass(frozen=True, slots=True, eq=False)
class ResponseReceived:
    """A response the TU must see (§17.1: retransmissions absorbed are not reported)."""

    response: Response
    transaction: Transaction


@dataclass(frozen=True, slots=True, eq=False)
class TransactionTimedOut:
    """Timer B, F or H fired: the TU treats it as a 408 (client) or a lost ACK (server)."""

    transaction: Transaction


@dataclass(frozen=True, slots=True, eq=False)
class TransportFailed:
    """The transport could not deliver a message (§17.1.4): treated like a 503."""

    transaction: Transaction


@dataclass(frozen=True, slots=True, eq=False)
class TransactionTerminated:
    """The transaction reached Terminated and was forgotten."""

    transaction: Transaction


Event = SendMessage | ResponseReceived | TransactionTimedOut | TransportFailed \
    | TransactionTerminated


def response_class(status: int) -> str:
    """The input name for a response: "1xx", "2xx" or "final" (300-699)."""
    if status < 200:
        return "1xx"
    if status < 300:
        return "2xx"
    return "final"


def build_ack(invite: Request, response: Response) -> Request:
    """The ACK a client transaction sends for a non-2xx final response (§17.1.1.3).

    Same Request-URI, Call-ID, From, CSeq number and top Via as the INVITE; To
    from the response (with its tag); the INVITE's Route headers.
    """
    headers = Headers()
    headers.add("Via", invite.headers.get_all("Via")[0])
    for name in ("Max-Forwards", "From"):
        value = invite.headers.get(name)
        if value is not None:
            headers.add(name, value)
    headers.add("To", response.headers.get("To") or invite.headers.get("To") or "")
    headers.add("Call-ID", invite.call_id)
    headers.add("CSeq", f"{invite.cseq.seq} ACK")
    for route in invite.headers.get_all("Route"):
        headers.add("Route", route)
    return Request("ACK", invite.uri, headers)


def build_cancel(invite: Request) -> Request:
    """The CANCEL for a pending INVITE (§9.1): same Request-URI, Call-ID, From, To,
    CSeq number and top Via (so it has the INVITE's branch), and its Route set."""
    headers = Headers()
    headers.add("Via", invite.headers.get_all("Via")[0])
    headers.add("Max-Forwards", "70")
    for name in ("From", "To", "Call-ID"):
        headers.add(name, invite.headers.get(name) or "")
    headers.add("CSeq", f"{invite.cseq.seq} CANCEL")
    for route in invite.headers.get_all("Route"):
        headers.add("Route", route)
    return Request("CANCEL", invite.uri, headers)


# Inputs that come from the network; absent from a table they are absorbed, not errors.
NETWORK_INPUTS = frozenset({"1xx", "2xx", "final", "request", "ack"})

Handler = Callable[["Transaction", float, Message | None], list[Event]]


class Transaction:
    """State shared by the four machines. `context` is the caller's (destination or flow)."""

    TABLE: ClassVar[dict[tuple[State, str], Handler]] = {}
    KIND: ClassVar[str] = ""

    def __init__(self, request: Request, *, reliable: bool, timers: TimerConfig, key: str,
                 context: object = None) -> None:
        self.request = request
        self.reliable = reliable
        self.timers = timers
        self.key = key
        self.context = context
        self.state = State.TRYING
        self.last_response: Response | None = None
        self.deadlines: dict[str, float] = {}
        self.intervals: dict[str, float] = {}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.key} {self.state.value}>"

    @property
    def kind(self) -> str:
        """"ict", "nict", "ist" or "nist"."""
        return self.KIND

    @property
    def terminated(self) -> bool:
        """True once the transaction reached Terminated."""
        return self.state is State.TERMINATED

    def next_deadline(self) -> float | None:
        """The earliest armed timer, or None."""
        return min(self.deadlines.values(), default=None)

    def handle_timer(self, now: float) -> list[Event]:
        """Fire every timer whose deadline has passed, earliest first."""
        events: list[Event] = []
        while not self.terminated:
            due = [(when, name) for name, when in self.deadlines.items() if when <= now]
            if not due:
                break
            _, name = min(due)
            del self.deadlines[name]
            events += self._dispatch(name, now, None)
        return events

    def transport_error(self, now: float) -> list[Event]:
        """The transport failed to send our message (§17.1.4, §17.2.4)."""
        if self.terminated:
            return []
        return self._dispatch("transport_error", now, None)

    def _dispatch(self, input_: str, now: float, message: Message | None) -> list[Event]:
        handler = self.TABLE.get((self.state, input_))
        if handler is None:
            if input_ in NETWORK_INPUTS:
                return []  # the remote's oddity (e.g. a response in the wrong state): absorb it
            raise TransactionError(
                f"{self.kind} transaction {self.key}: no transition from state "
                f"{self.state.value!r} on {input_!r}")
        return handler(self, now, message)

    # -- helpers for the handlers -----------------------------------------
    def _arm(self, name: str, now: float, delay: float) -> None:
        self.deadlines[name] = now + delay

    def _arm_retransmit(self, name: str, now: float, interval: float) -> None:
        if not self.reliable:
            self.intervals[name] = interval
            self._arm(name, now, interval)

    def _terminate(self) -> list[Event]:
        self.state = State.TERMINATED
        self.deadlines.clear()
        return [TransactionTerminated(self)]

    def _linger(self, name: str, now: float, unreliable_delay: float) -> list[Event]:
        """Enter a wait state whose timer is zero on reliable transports (§17: D, I, J, K)."""
        if self.reliable:
            return self._terminate()
        self._arm(name, now, unreliable_delay)
        return []


def _ignore(txn: Transaction, now: float, message: Message | None) -> list[Event]:
    return []


def _timed_out(txn: Transaction, now: float, message: Message | None) -> list[Event]:
    return [TransactionTimedOut(txn), *txn._terminate()]


def _transport_failed(txn: Transaction, now: float, message: Message | None) -> list[Event]:
    return [TransportFailed(txn), *txn._terminate()]


def _terminate(txn: Transaction, now: float, message: Message | None) -> list[Event]:
    return txn._terminate()
