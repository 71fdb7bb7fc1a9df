"""Server transaction tables: INVITE (§17.2.1, RFC 6026 §7.1) and non-INVITE (§17.2.2).

See `trimaran.sip.transaction` for the theory of operation. Timers:
G (final response retransmit, T1 doubling to T2, UDP only), H (wait for ACK,
64*T1), I (absorb ACK retransmissions, T4 on UDP), J (absorb request
retransmissions, 64*T1 on UDP), L (RFC 6026: absorb INVITE retransmissions
after a 2xx, 64*T1).
"""

from __future__ import annotations

from trimaran.sip.message import Message, Request, Response
from trimaran.sip.transaction import (
    Event,
    SendMessage,
    State,
    Transaction,
    TransactionError,
    _ignore,
    _terminate,
    _timed_out,
    _transport_failed,
    response_class,
)


class ServerTransaction(Transaction):
    """A server transaction, created for a new request; the TU answers with `respond`."""

    def begin(self, now: float) -> list[Event]:
        """Events due when the transaction is created (the IST's 100 Trying)."""
        return []

    def receive_request(self, request: Request, now: float) -> list[Event]:
        """Feed a retransmission of the request, or (IST) the ACK (§17.2.3 matching)."""
        if self.terminated:
            return []
        return self._dispatch("ack" if request.method == "ACK" else "request", now, request)

    def respond(self, response: Response, now: float) -> list[Event]:
        """Send the TU's response; raises `TransactionError` if the state forbids it."""
        if self.terminated:
            raise TransactionError(f"{self.kind} transaction {self.key} is terminated")
        return self._dispatch("tu_" + response_class(response.status), now, response)


def _send(txn: Transaction, response: Message | None) -> list[Event]:
    assert isinstance(response, Response)
    txn.last_response = response
    return [SendMessage(response, txn)]


def _resend_last(txn: Transaction, now: float, _: Message | None) -> list[Event]:
    # §17.2.1 / §17.2.2: a retransmitted request gets the most recent response again.
    if txn.last_response is None:
        return []
    return [SendMessage(txn.last_response, txn)]


def _send_provisional(txn: Transaction, now: float, msg: Message | None) -> list[Event]:
    txn.state = State.PROCEEDING
    return _send(txn, msg)


# -- INVITE server transaction (§17.2.1) ----------------------------------------


def _ist_accept(txn: Transaction, now: float, msg: Message | None) -> list[Event]:
    # RFC 6026 §7.1: 2xx -> Accepted; the TU retransmits the 2xx until the ACK arrives.
    txn.state = State.ACCEPTED
    txn._arm("timer_l", now, txn.timers.timeout)
    return _send(txn, msg)


def _ist_reject(txn: Transaction, now: float, msg: Message | None) -> list[Event]:
    txn.state = State.COMPLETED
    txn._arm_retransmit("timer_g", now, txn.timers.t1)
    txn._arm("timer_h", now, txn.timers.timeout)
    return _send(txn, msg)


def _ist_retransmit_final(txn: Transaction, now: float, _: Message | None) -> list[Event]:
    interval = min(txn.intervals["timer_g"] * 2, txn.timers.t2)
    txn._arm_retransmit("timer_g", now, interval)
    return _resend_last(txn, now, None)


def _ist_confirm(txn: Transaction, now: float, _: Message | None) -> list[Event]:
    txn.state = State.CONFIRMED
    txn.deadlines.clear()
    return txn._linger("timer_i", now, txn.timers.t4)


class InviteServerTransaction(ServerTransaction):
    """INVITE server transaction (IST)."""

    KIND = "ist"

    def begin(self, now: float) -> list[Event]:
        # §17.2.1: we always answer 100 Trying at once rather than guess the TU's 200 ms.
        self.state = State.PROCEEDING
        return _send(self, Response.for_request(self.request, 100))

    TABLE = {
        (State.PROCEEDING, "request"): _resend_last,
        (State.PROCEEDING, "tu_1xx"): _send_provisional,
        (State.PROCEEDING, "tu_2xx"): _ist_accept,
        (State.PROCEEDING, "tu_final"): _ist_reject,
        (State.PROCEEDING, "transport_error"): _transport_failed,
        (State.ACCEPTED, "request"): _ignore,
        (State.ACCEPTED, "tu_2xx"): lambda txn, now, msg: _send(txn, msg),
        (State.ACCEPTED, "timer_l"): _terminate,
        (State.ACCEPTED, "transport_error"): _ignore,
        (State.COMPLETED, "request"): _resend_last,
        (State.COMPLETED, "ack"): _ist_confirm,
        (State.COMPLETED, "timer_g"): _ist_retransmit_final,
        (State.COMPLETED, "timer_h"): _timed_out,
        (State.COMPLETED, "transport_error"): _transport_failed,
        (State.CONFIRMED, "timer_i"): _terminate,
    }


# -- non-INVITE server transaction (§17.2.2) -------------------------------------


def _nist_final(txn: Transaction, now: float, msg: Message | None) -> list[Event]:
    txn.state = State.COMPLETED
    events = _send(txn, msg)
    return events + txn._linger("timer_j", now, txn.timers.timeout)


class NonInviteServerTransaction(ServerTransaction):
    """Non-INVITE server transaction (NIST)."""

    KIND = "nist"

    TABLE = {
        (State.TRYING, "tu_1xx"): _send_provisional,
        (State.TRYING, "tu_2xx"): _nist_final,
        (State.TRYING, "tu_final"): _nist_final,
        (State.TRYING, "transport_error"): _transport_failed,
        (State.PROCEEDING, "request"): _resend_last,
        (State.PROCEEDING, "tu_1xx"): _send_provisional,
        (State.PROCEEDING, "tu_2xx"): _nist_final,
        (State.PROCEEDING, "tu_final"): _nist_final,
        (State.PROCEEDING, "transport_error"): _transport_failed,
        (State.COMPLETED, "request"): _resend_last,
        (State.COMPLETED, "timer_j"): _terminate,
        (State.COMPLETED, "transport_error"): _terminate,
    }
