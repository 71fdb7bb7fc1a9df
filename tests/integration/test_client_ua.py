"""The client user agent over real loopback sockets: calls, IM, CANCEL, failover of servers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from trimaran.client.dialogs import CallFailed, CallState
from trimaran.client.echo import EchoServer
from trimaran.client.ua import UAConfig, UserAgent
from trimaran.net.transport import Address
from trimaran.sip.transaction import TimerConfig

FAST = TimerConfig(t1=0.05, t2=0.4, t4=0.5)


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll `predicate` until true, failing after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.01)


async def make_ua(aor: str, servers: tuple[Address, ...], **kw: object) -> UserAgent:
    ua = UserAgent(UAConfig(aor=aor, password="pw", servers=servers, timers=FAST,
                            auto_refresh=False, **kw))  # type: ignore[arg-type]
    await ua.start()
    return ua


@pytest.fixture
async def pair(request: pytest.FixtureRequest) -> AsyncIterator[tuple[UserAgent, UserAgent]]:
    transport = getattr(request, "param", "udp")
    bob = await make_ua("sip:bob@127.0.0.1", (Address(transport, "127.0.0.1", 9),))
    host, port = bob.endpoint.contact_host_port(transport)
    alice = await make_ua("sip:alice@127.0.0.1", (Address(transport, host, port),))
    yield alice, bob
    await alice.close()
    await bob.close()


@pytest.mark.parametrize("pair", ["udp", "tcp"], indirect=True)
async def test_call_is_answered_acked_and_hung_up(pair: tuple[UserAgent, UserAgent]) -> None:
    alice, bob = pair
    host, port = bob.endpoint.contact_host_port(alice.transport)
    pending = alice.start_call(f"sip:bob@{host}:{port}", b"v=0\r\no=alice\r\n")
    incoming = await asyncio.wait_for(bob.incoming_calls.get(), 5)
    assert incoming.remote_body == b"v=0\r\no=alice\r\n"
    await incoming.answer(b"v=0\r\no=bob\r\n")
    answer = await alice.wait_answer(pending)
    assert answer.status == 200
    assert pending.state is CallState.ESTABLISHED
    assert pending.remote_body == b"v=0\r\no=bob\r\n"
    assert 180 in pending.provisional
    await asyncio.wait_for(incoming.acked.wait(), 5)
    bye = await pending.bye()
    assert bye.status == 200
    await incoming.wait_ended()
    assert incoming.end_reason == "remote BYE"


async def test_rejected_call_raises_call_failed(pair: tuple[UserAgent, UserAgent]) -> None:
    alice, bob = pair
    host, port = bob.endpoint.contact_host_port("udp")
    pending = alice.start_call(f"sip:bob@{host}:{port}")
    incoming = await asyncio.wait_for(bob.incoming_calls.get(), 5)
    await incoming.reject(486)
    with pytest.raises(CallFailed) as failure:
        await alice.wait_answer(pending)
    assert failure.value.status == 486


async def test_cancel_of_a_ringing_call_gives_487(pair: tuple[UserAgent, UserAgent]) -> None:
    alice, bob = pair
    host, port = bob.endpoint.contact_host_port("udp")
    pending = alice.start_call(f"sip:bob@{host}:{port}")
    incoming = await asyncio.wait_for(bob.incoming_calls.get(), 5)
    await wait_for(lambda: 180 in pending.provisional)
    await pending.cancel()
    with pytest.raises(CallFailed) as failure:
        await alice.wait_answer(pending)
    assert failure.value.status == 487
    await incoming.wait_ended()
    assert incoming.end_reason == "cancelled"


@pytest.mark.parametrize("pair", ["udp", "tcp"], indirect=True)
async def test_message_is_delivered_and_acknowledged(pair: tuple[UserAgent, UserAgent]) -> None:
    alice, bob = pair
    host, port = bob.endpoint.contact_host_port(alice.transport)
    response = await alice.send_message(f"sip:bob@{host}:{port}", "hello bob")
    assert response.status == 200
    received = await bob.next_message()
    assert received.body == b"hello bob"
    assert received.from_.uri.user == "alice"


async def test_request_to_a_silent_server_times_out_with_408() -> None:
    # Nobody answers on UDP: Timer F (64*T1) ends the transaction with a synthetic 408.
    alice = await make_ua("sip:alice@127.0.0.1", (Address("udp", "127.0.0.1", 9),))
    try:
        response = await alice.send_message("sip:bob@127.0.0.1:9", "anyone?")
        assert response.status == 408
    finally:
        await alice.close()


async def test_register_fails_over_to_the_next_server_in_the_list() -> None:
    # FE-1: the client is given the pool's servers and tries the next when one is silent.
    echo = EchoServer("127.0.0.1")
    await echo.start()
    host, port = echo.address("tcp")
    dead = Address("tcp", "127.0.0.1", 9)  # nothing listens: connection refused at once
    ua = await make_ua("sip:alice@127.0.0.1", (dead, Address("tcp", host, port)))
    try:
        response = await ua.register(60)
        assert response.status == 200
        assert ua.server == Address("tcp", host, port)
        assert ua.registered.is_set()
    finally:
        await ua.close()
        await echo.close()


async def test_subscribe_creates_a_dialog_with_the_notifier() -> None:
    echo = EchoServer("127.0.0.1")
    await echo.start()
    host, port = echo.address("udp")
    ua = await make_ua("sip:alice@127.0.0.1", (Address("udp", host, port),))
    try:
        subscription, response = await ua.subscribe(f"sip:bob@{host}:{port}")
        assert response.status == 200
        assert subscription.dialog is not None
        refresh = await subscription.unsubscribe()
        assert refresh.status == 200
        assert echo.requests["SUBSCRIBE"] == 2
    finally:
        await ua.close()
        await echo.close()
