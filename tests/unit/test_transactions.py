"""RFC 3261 §17 transaction behaviour, with time and loss scripted exactly."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from trimaran.sip.headers import Headers
from trimaran.sip.message import Message, Request, Response
from trimaran.sip.parser import parse_message
from trimaran.sip.transaction import (
    ResponseReceived,
    SendMessage,
    State,
    TimerConfig,
    TransactionError,
    TransactionTerminated,
    TransactionTimedOut,
    TransportFailed,
    build_cancel,
)
from trimaran.sip.transaction_layer import (
    LayerEvent,
    RequestReceived,
    StrayResponse,
    TransactionLayer,
)
from trimaran.sip.transaction_server import ServerTransaction
from trimaran.sip.uri import URI

TIMERS = TimerConfig(t1=0.5, t2=4.0, t4=5.0)


def make_request(method: str, branch: str = "z9hG4bK-1", cseq: int = 1) -> Request:
    headers = Headers()
    headers.add("Via", f"SIP/2.0/UDP 127.0.0.1:5070;branch={branch}")
    headers.add("Max-Forwards", "70")
    headers.add("From", "<sip:alice@example.com>;tag=a1")
    headers.add("To", "<sip:bob@example.com>")
    headers.add("Call-ID", "call-1@127.0.0.1")
    headers.add("CSeq", f"{cseq} {method}")
    return Request(method, URI.parse("sip:bob@example.com"), headers)


def wire(message: Message) -> Message:
    """Serialise and parse again, as the network would."""
    return parse_message(message.to_bytes())


class Pair:
    """A client and a server transaction layer joined by a scripted in-memory link."""

    def __init__(self, *, reliable: bool = False,
                 drop: Callable[[Message], bool] = lambda m: False) -> None:
        self.client = TransactionLayer(TIMERS)
        self.server = TransactionLayer(TIMERS)
        self.reliable = reliable
        self.drop = drop
        self.client_events: list[LayerEvent] = []
        self.server_events: list[LayerEvent] = []
        self.sent_by_client: list[tuple[float, Message]] = []
        self.sent_by_server: list[tuple[float, Message]] = []

    def carry(self, events: list[LayerEvent], now: float, *, from_client: bool) -> None:
        (self.client_events if from_client else self.server_events).extend(events)
        for event in events:
            if not isinstance(event, SendMessage):
                continue
            message = wire(event.message)
            (self.sent_by_client if from_client else self.sent_by_server).append((now, message))
            if self.drop(message):
                continue
            target = self.server if from_client else self.client
            result = target.receive(message, reliable=self.reliable, now=now)
            self.carry(result, now, from_client=not from_client)

    def send(self, request: Request, now: float = 0.0) -> None:
        _, events = self.client.send_request(request, reliable=self.reliable, now=now)
        self.carry(events, now, from_client=True)

    def respond(self, status: int, now: float, *, request_method: str | None = None) -> None:
        txn = self.new_server_transaction(request_method)
        response = Response.for_request(txn.request, status, to_tag="b1")
        self.carry(self.server.respond(txn, response, now), now, from_client=False)

    def new_server_transaction(self, method: str | None = None) -> ServerTransaction:
        txns = [e.transaction for e in self.server_events
                if isinstance(e, RequestReceived) and e.transaction is not None
                and (method is None or e.transaction.request.method == method)]
        assert txns, "the server saw no request"
        return txns[-1]

    def run_until(self, end: float) -> None:
        """Fire every timer of both sides up to `end`, in time order."""
        while True:
            deadlines = [d for d in (self.client.next_deadline(), self.server.next_deadline())
                         if d is not None and d <= end]
            if not deadlines:
                return
            now = min(deadlines)
            self.carry(self.client.handle_timers(now), now, from_client=True)
            self.carry(self.server.handle_timers(now), now, from_client=False)

    def client_responses(self) -> list[int]:
        return [e.response.status for e in self.client_events if isinstance(e, ResponseReceived)]


def test_non_invite_request_is_retransmitted_doubling_to_t2_until_timer_f() -> None:
    # §17.1.2.2: Timer E starts at T1, doubles up to T2; Timer F = 64*T1 ends it.
    pair = Pair(drop=lambda m: True)
    pair.send(make_request("MESSAGE"))
    pair.run_until(100.0)
    times = [t for t, _ in pair.sent_by_client]
    expected, t, interval = [0.0], 0.0, 0.5
    while t + interval < 32.0:
        t += interval
        expected.append(t)
        interval = min(interval * 2, 4.0)
    assert times == expected
    assert sum(isinstance(e, TransactionTimedOut) for e in pair.client_events) == 1
    timeout_at = [t for t, m in pair.sent_by_client][-1]
    assert timeout_at < 32.0
    assert pair.client.statistics().client_transactions == 0


def test_no_retransmissions_over_reliable_transport_and_timeout_at_64_t1() -> None:
    pair = Pair(reliable=True, drop=lambda m: True)
    pair.send(make_request("MESSAGE"))
    pair.run_until(31.9)
    assert len(pair.sent_by_client) == 1
    assert not any(isinstance(e, TransactionTimedOut) for e in pair.client_events)
    pair.run_until(32.0)
    assert any(isinstance(e, TransactionTimedOut) for e in pair.client_events)


def test_lost_requests_are_recovered_by_retransmission_and_answered_once() -> None:
    lost = {"n": 0}

    def drop_first_two_requests(message: Message) -> bool:
        if isinstance(message, Request) and lost["n"] < 2:
            lost["n"] += 1
            return True
        return False

    pair = Pair(drop=drop_first_two_requests)
    pair.send(make_request("MESSAGE"))
    pair.run_until(1.5)  # retransmissions at 0.5 (lost) and 1.5 (delivered)
    assert len(pair.new_server_transaction().request.headers.get_all("Via")) == 1
    pair.respond(200, now=1.6)
    assert pair.client_responses() == [200]
    # a late duplicate of the request gets the same final response again (§17.2.2) ...
    request = pair.sent_by_client[-1][1]
    pair.carry(pair.server.receive(request, reliable=False, now=2.0), 2.0, from_client=False)
    assert [m.status for _, m in pair.sent_by_server if isinstance(m, Response)] == [200, 200]
    # ... which the client's Completed state absorbs (§17.1.2.2)
    assert pair.client_responses() == [200]
    received = [e for e in pair.server_events if isinstance(e, RequestReceived)]
    assert len(received) == 1


def test_completed_client_transaction_waits_timer_k_then_terminates() -> None:
    pair = Pair()
    pair.send(make_request("OPTIONS"))
    pair.respond(200, now=0.1)
    pair.run_until(0.1 + 4.99)
    assert pair.client.statistics().client_transactions == 1
    pair.run_until(0.1 + 5.0)
    assert pair.client.statistics().client_transactions == 0


def test_server_transaction_lingers_timer_j_on_udp_and_not_on_tcp() -> None:
    udp = Pair()
    udp.send(make_request("OPTIONS"))
    udp.respond(200, now=0.0)
    assert udp.server.statistics().server_transactions == 1
    udp.run_until(32.0)
    assert udp.server.statistics().server_transactions == 0
    tcp = Pair(reliable=True)
    tcp.send(make_request("OPTIONS"))
    tcp.respond(200, now=0.0)
    assert tcp.server.statistics().server_transactions == 0


def test_invite_gets_100_trying_at_once_which_stops_timer_a() -> None:
    pair = Pair()
    pair.send(make_request("INVITE"))
    assert pair.client_responses() == [100]
    pair.run_until(10.0)
    assert len(pair.sent_by_client) == 1  # Proceeding: no more retransmissions
    assert not any(isinstance(e, TransactionTimedOut) for e in pair.client_events)


def test_invite_non_2xx_is_acked_by_the_transaction_and_confirms_server() -> None:
    pair = Pair()
    pair.send(make_request("INVITE"))
    pair.respond(486, now=1.0, request_method="INVITE")
    acks = [m for _, m in pair.sent_by_client if isinstance(m, Request) and m.method == "ACK"]
    assert len(acks) == 1
    assert acks[0].top_via.branch == "z9hG4bK-1"  # §17.1.1.3: same branch as the INVITE
    assert acks[0].to.tag == "b1"
    txn = pair.new_server_transaction("INVITE")
    assert txn.state is State.CONFIRMED
    assert pair.client_responses() == [100, 486]
    pair.run_until(1.0 + 5.0)  # Timer I = T4
    assert pair.server.statistics().server_transactions == 0


def test_lost_final_response_is_retransmitted_by_timer_g() -> None:
    dropped = {"n": 0}

    def drop_first_486(message: Message) -> bool:
        if isinstance(message, Response) and message.status == 486 and dropped["n"] == 0:
            dropped["n"] += 1
            return True
        return False

    pair = Pair(drop=drop_first_486)
    pair.send(make_request("INVITE"))
    pair.respond(486, now=1.0, request_method="INVITE")
    assert pair.client_responses() == [100]
    pair.run_until(1.5)  # Timer G = T1
    assert pair.client_responses() == [100, 486]
    assert pair.new_server_transaction("INVITE").state is State.CONFIRMED


def test_missing_ack_fires_timer_h() -> None:
    pair = Pair(drop=lambda m: isinstance(m, Request) and m.method == "ACK")
    pair.send(make_request("INVITE"))
    pair.respond(500, now=0.0, request_method="INVITE")
    pair.run_until(31.9)
    assert not any(isinstance(e, TransactionTimedOut) for e in pair.server_events)
    pair.run_until(32.0)
    assert any(isinstance(e, TransactionTimedOut) for e in pair.server_events)
    resent = [t for t, m in pair.sent_by_server if isinstance(m, Response) and m.status == 500]
    assert resent[:5] == [0.0, 0.5, 1.5, 3.5, 7.5]  # G doubles to T2 = 4


def test_invite_2xx_moves_both_sides_to_accepted_and_ack_goes_to_the_tu() -> None:
    pair = Pair()
    pair.send(make_request("INVITE"))
    pair.respond(200, now=0.5, request_method="INVITE")
    server_txn = pair.new_server_transaction("INVITE")
    assert server_txn.state is State.ACCEPTED
    # INVITE retransmission after the 2xx is absorbed (RFC 6026 §7.1)
    invite = pair.sent_by_client[0][1]
    assert pair.server.receive(invite, reliable=False, now=0.6) == []
    # the ACK for a 2xx is its own request (new branch) and goes to the TU
    ack = make_request("ACK", branch="z9hG4bK-ack")
    events = pair.server.receive(wire(ack), reliable=False, now=0.7)
    assert len(events) == 1 and isinstance(events[0], RequestReceived)
    assert events[0].transaction is None
    # a retransmitted 2xx still reaches the client TU, which must ACK it again
    pair.carry(pair.server.respond(server_txn, Response.for_request(server_txn.request, 200,
               to_tag="b1"), 1.0), 1.0, from_client=False)
    assert pair.client_responses() == [100, 200, 200]
    pair.run_until(0.5 + 32.0)  # Timers L and M = 64*T1
    assert pair.server.statistics().server_transactions == 0
    assert pair.client.statistics().client_transactions == 0


def test_cancel_is_its_own_transaction_and_finds_the_invite() -> None:
    pair = Pair()
    invite = make_request("INVITE")
    pair.send(invite)
    pair.carry(pair.client.send_request(build_cancel(invite), reliable=False, now=1.0)[1],
               1.0, from_client=True)
    cancel_txn = pair.new_server_transaction("CANCEL")
    invite_txn = pair.server.find_invite(cancel_txn.request)
    assert invite_txn is pair.new_server_transaction("INVITE")
    pair.carry(pair.server.respond(cancel_txn, Response.for_request(cancel_txn.request, 200),
               1.1), 1.1, from_client=False)
    pair.carry(pair.server.respond(invite_txn, Response.for_request(invite_txn.request, 487,
               to_tag="b1"), 1.1), 1.1, from_client=False)
    assert sorted(pair.client_responses()) == [100, 200, 487]
    assert invite_txn.state is State.CONFIRMED


def test_cancel_for_an_unknown_invite_finds_nothing() -> None:
    layer = TransactionLayer(TIMERS)
    cancel = build_cancel(make_request("INVITE", branch="z9hG4bK-none"))
    assert layer.find_invite(cancel) is None


def test_response_matching_no_transaction_is_reported_stray() -> None:
    layer = TransactionLayer(TIMERS)
    response = Response.for_request(make_request("INVITE"), 200)
    events = layer.receive(wire(response), reliable=False, now=0.0)
    assert len(events) == 1 and isinstance(events[0], StrayResponse)


def test_responding_twice_with_a_final_response_is_an_impossible_transition() -> None:
    pair = Pair(reliable=False)
    pair.send(make_request("MESSAGE"))
    pair.respond(200, now=0.0)
    txn = pair.new_server_transaction()
    with pytest.raises(TransactionError, match=r"completed.*tu_final"):
        pair.server.respond(txn, Response.for_request(txn.request, 404), 0.1)


def test_transport_error_fails_the_client_transaction() -> None:
    layer = TransactionLayer(TIMERS)
    txn, _ = layer.send_request(make_request("MESSAGE"), reliable=True, now=0.0)
    events = layer.transport_error(txn, 0.0)
    assert any(isinstance(e, TransportFailed) for e in events)
    assert any(isinstance(e, TransactionTerminated) for e in events)
    assert layer.statistics().client_transactions == 0


def test_request_without_rfc3261_branch_is_refused_for_sending() -> None:
    layer = TransactionLayer(TIMERS)
    with pytest.raises(TransactionError):
        layer.send_request(make_request("MESSAGE", branch="old-style"), reliable=False, now=0)


def test_rfc2543_requests_without_magic_cookie_still_match_retransmissions() -> None:
    layer = TransactionLayer(TIMERS)
    request = wire(make_request("MESSAGE", branch="legacy"))
    first = layer.receive(request, reliable=False, now=0.0)
    assert isinstance(first[0], RequestReceived)
    assert layer.receive(request, reliable=False, now=0.1) == []


def test_next_deadline_tracks_the_earliest_timer() -> None:
    layer = TransactionLayer(TIMERS)
    assert layer.next_deadline() is None
    layer.send_request(make_request("MESSAGE"), reliable=False, now=10.0)
    assert layer.next_deadline() == 10.5
    layer.handle_timers(10.5)
    assert layer.next_deadline() == 11.5


def test_timer_config_rejects_inconsistent_values() -> None:
    with pytest.raises(ValueError, match="t2"):
        TimerConfig(t1=1.0, t2=0.5)


def test_ended_transactions_are_counted_by_side_method_and_final_class() -> None:
    """OPS-4: `sip_transactions_total` comes from these counts."""
    pair = Pair(reliable=True)
    pair.send(make_request("OPTIONS"))
    pair.respond(200, now=0.0)
    pair.send(make_request("INVITE", branch="z9hG4bK-2"))
    pair.respond(486, now=0.1, request_method="INVITE")
    assert pair.client.statistics().completed == {
        ("client", "OPTIONS", "2xx"): 1, ("client", "INVITE", "4xx"): 1}
    assert pair.server.statistics().completed == {
        ("server", "OPTIONS", "2xx"): 1, ("server", "INVITE", "4xx"): 1}


def test_timeouts_and_transport_errors_are_counted_as_such() -> None:
    lost = Pair(drop=lambda m: True)
    lost.send(make_request("MESSAGE"))
    lost.run_until(100.0)
    layer = TransactionLayer(TIMERS)
    txn, _ = layer.send_request(make_request("REGISTER"), reliable=True, now=0.0)
    layer.transport_error(txn, 0.0)
    assert lost.client.statistics().completed == {("client", "MESSAGE", "timeout"): 1}
    assert layer.statistics().completed == {("client", "REGISTER", "transport_error"): 1}


def test_unknown_methods_share_one_count() -> None:
    pair = Pair(reliable=True)
    for i, method in enumerate(("BREW", "WHEN")):
        pair.send(make_request(method, branch=f"z9hG4bK-m{i}"))
        pair.respond(501, now=0.0, request_method=method)
    assert pair.server.statistics().completed == {("server", "other", "5xx"): 2}
