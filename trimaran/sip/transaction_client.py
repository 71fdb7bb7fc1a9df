"""Client transaction tables: INVITE (§17.1.1, RFC 6026 §7.2) and non-INVITE (§17.1.2).

See `trimaran.sip.transaction` for the theory of operation. Timers:
A (INVITE retransmit, T1 doubling), B (INVITE timeout, 64*T1), D (wait for
response retransmissions, 32 s on UDP), E (non-INVITE retransmit, doubling to
T2), F (non-INVITE timeout, 64*T1), K (T4 on UDP), M (RFC 6026: absorb 2xx
retransmissions, 64*T1).
"""

from __future__ import annotations

from trimaran.sip.message import Message, Response
from trimaran.sip.transaction import (
    Event,
    ResponseReceived,
    SendMessage,
    State,
    Transaction,
    _ignore,
    _terminate,
    _timed_out,
    _transport_failed,
    build_ack,
    response_class,
)

TIMER_D_UNRELIABLE = 32.0  # §17.1.1.2: "at least 32 seconds for unreliable transports"


class ClientTransaction(Transaction):
    """A client transaction; create it, then call `start(now)` to send the request."""

    def start(self, now: float) -> list[Event]:
        """Send the request and arm the first timers."""
        raise NotImplementedError

    def receive_response(self, response: Response, now: float) -> list[Event]:
        """Feed a response matched to this transaction (§17.1.3)."""
        if self.terminated:
            return []
        return self._dispatch(response_class(response.status), now, response)

    def _deliver(self, response: Message | None) -> list[Event]:
        assert isinstance(response, Response)
        self.last_response = response
        return [ResponseReceived(response, self)]


# -- INVITE client transaction (§17.1.1) ---------------------------------------


def _ict_retransmit(txn: Transaction, now: float, _: Message | None) -> list[Event]:
    interval = txn.intervals["timer_a"] * 2  # §17.1.1.2: Timer A doubles each time
    txn._arm_retransmit("timer_a", now, interval)
    return [SendMessage(txn.request, txn)]


def _ict_provisional(txn: Transaction, now: float, msg: Message | None) -> list[Event]:
    assert isinstance(txn, ClientTransaction)
    txn.state = State.PROCEEDING
    txn.deadlines.clear()
    return txn._deliver(msg)


def _ict_provisional_again(txn: Transaction, now: float, msg: Message | None) -> list[Event]:
    assert isinstance(txn, ClientTransaction)
    return txn._deliver(msg)


def _ict_success(txn: Transaction, now: float, msg: Message | None) -> list[Event]:
    # RFC 6026 §7.2: 2xx moves to Accepted, where further 2xx go to the TU (it ACKs them).
    assert isinstance(txn, ClientTransaction)
    txn.state = State.ACCEPTED
    txn.deadlines.clear()
    txn._arm("timer_m", now, txn.timers.timeout)
    return txn._deliver(msg)


def _ict_failure(txn: Transaction, now: float, msg: Message | None) -> list[Event]:
    # §17.1.1.2: 300-699 -> Completed, ACK it, pass it up, wait Timer D.
    assert isinstance(txn, ClientTransaction) and isinstance(msg, Response)
    txn.state = State.COMPLETED
    txn.deadlines.clear()
    events: list[Event] = [SendMessage(build_ack(txn.request, msg), txn), *txn._deliver(msg)]
    return events + txn._linger("timer_d", now, max(TIMER_D_UNRELIABLE, txn.timers.timeout / 2))


def _ict_failure_again(txn: Transaction, now: float, msg: Message | None) -> list[Event]:
    assert isinstance(msg, Response)
    return [SendMessage(build_ack(txn.request, msg), txn)]  # §17.1.1.2: re-ACK, don't pass up


class InviteClientTransaction(ClientTransaction):
    """INVITE client transaction (ICT)."""

    KIND = "ict"

    def start(self, now: float) -> list[Event]:
        self.state = State.CALLING
        self._arm_retransmit("timer_a", now, self.timers.t1)
        self._arm("timer_b", now, self.timers.timeout)
        return [SendMessage(self.request, self)]

    TABLE = {
        (State.CALLING, "timer_a"): _ict_retransmit,
        (State.CALLING, "timer_b"): _timed_out,
        (State.CALLING, "transport_error"): _transport_failed,
        (State.CALLING, "1xx"): _ict_provisional,
        (State.CALLING, "2xx"): _ict_success,
        (State.CALLING, "final"): _ict_failure,
        (State.PROCEEDING, "1xx"): _ict_provisional_again,
        (State.PROCEEDING, "2xx"): _ict_success,
        (State.PROCEEDING, "final"): _ict_failure,
        (State.PROCEEDING, "transport_error"): _transport_failed,
        (State.COMPLETED, "final"): _ict_failure_again,
        (State.COMPLETED, "timer_d"): _terminate,
        (State.COMPLETED, "transport_error"): _terminate,
        (State.ACCEPTED, "2xx"): _ict_provisional_again,
        (State.ACCEPTED, "timer_m"): _terminate,
        (State.ACCEPTED, "transport_error"): _ignore,
    }


# -- non-INVITE client transaction (§17.1.2) ------------------------------------


def _nict_retransmit(txn: Transaction, now: float, _: Message | None) -> list[Event]:
    # §17.1.2.2: Timer E doubles up to T2 in Trying; in Proceeding it is T2.
    if txn.state is State.TRYING:
        interval = min(txn.intervals["timer_e"] * 2, txn.timers.t2)
    else:
        interval = txn.timers.t2
    txn._arm_retransmit("timer_e", now, interval)
    return [SendMessage(txn.request, txn)]


def _nict_provisional(txn: Transaction, now: float, msg: Message | None) -> list[Event]:
    assert isinstance(txn, ClientTransaction)
    txn.state = State.PROCEEDING
    return txn._deliver(msg)


def _nict_final(txn: Transaction, now: float, msg: Message | None) -> list[Event]:
    assert isinstance(txn, ClientTransaction)
    txn.state = State.COMPLETED
    txn.deadlines.clear()
    return txn._deliver(msg) + txn._linger("timer_k", now, txn.timers.t4)


class NonInviteClientTransaction(ClientTransaction):
    """Non-INVITE client transaction (NICT)."""

    KIND = "nict"

    def start(self, now: float) -> list[Event]:
        self.state = State.TRYING
        self._arm_retransmit("timer_e", now, self.timers.t1)
        self._arm("timer_f", now, self.timers.timeout)
        return [SendMessage(self.request, self)]

    TABLE = {
        (State.TRYING, "timer_e"): _nict_retransmit,
        (State.TRYING, "timer_f"): _timed_out,
        (State.TRYING, "transport_error"): _transport_failed,
        (State.TRYING, "1xx"): _nict_provisional,
        (State.TRYING, "2xx"): _nict_final,
        (State.TRYING, "final"): _nict_final,
        (State.PROCEEDING, "timer_e"): _nict_retransmit,
        (State.PROCEEDING, "timer_f"): _timed_out,
        (State.PROCEEDING, "transport_error"): _transport_failed,
        (State.PROCEEDING, "1xx"): _ict_provisional_again,
        (State.PROCEEDING, "2xx"): _nict_final,
        (State.PROCEEDING, "final"): _nict_final,
        (State.COMPLETED, "timer_k"): _terminate,
        (State.COMPLETED, "transport_error"): _ignore,
    }
