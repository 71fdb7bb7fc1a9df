"""SIP over TCP: framing, connection reuse, keepalives, limits, shutdown (§18.3, RFC 5626)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import cast

import pytest

from tests.net.conftest import (
    LOCALHOST,
    LayerFactory,
    StreamClient,
    free_port,
    is_response,
    make_request,
    request_bytes,
    wait_for,
)
from trimaran.net.transport import (
    Address,
    ConnectError,
    FlowClosedError,
    TransportConfig,
    TransportError,
)
from trimaran.sip.message import Request, Response
from trimaran.sip.parser import KeepAlive, Limits, StreamParser

TcpClientFactory = Callable[[tuple[str, int]], Awaitable[StreamClient]]
TCP_VIA = "SIP/2.0/TCP 192.0.2.10:5062;branch=z9hG4bK-t{n};rport"


def tcp_request(n: int = 1, method: str = "OPTIONS", body: bytes = b"") -> bytes:
    return request_bytes(method, via=TCP_VIA.format(n=n), cseq=n, body=body)


class RawServer:
    """A bare TCP server: records what it reads, answers nothing."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.connections = 0
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self, port: int = 0) -> tuple[str, int]:
        self.server = await asyncio.start_server(self._serve, LOCALHOST, port)
        host, bound = self.server.sockets[0].getsockname()[:2]
        return host, bound

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(65536):
                self.data += chunk

    def messages(self) -> list[object]:
        return [f for f in StreamParser(expect_ping=False).feed(bytes(self.data))
                if not isinstance(f, KeepAlive)]

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await self.server.wait_closed()


@pytest.fixture
async def raw_server() -> AsyncIterator[RawServer]:
    server = RawServer()
    yield server
    if server.server is not None:
        await server.stop()


async def test_several_messages_in_one_write(make_layer: LayerFactory,
                                             tcp_client: TcpClientFactory) -> None:
    layer, rec = await make_layer(udp=False)
    client = await tcp_client(layer.local_address("tcp"))
    await client.write(b"".join(tcp_request(n, body=b"body%d" % n) for n in range(1, 6)))
    await wait_for(lambda: len(rec.messages) == 5)
    flows = {flow for _, flow in rec.messages}
    assert len(flows) == 1
    flow = flows.pop()
    assert flow.transport == "tcp" and flow.reliable and flow.id.startswith("tcp:")
    assert flow.remote == client.address and flow.local == layer.local_address("tcp")
    assert [m.cseq.seq for m, _ in rec.messages] == [1, 2, 3, 4, 5]
    assert [m.body for m, _ in rec.messages] == [b"body%d" % n for n in range(1, 6)]
    top = rec.messages[0][0].top_via
    assert top.received == LOCALHOST and top.rport == client.address[1]


async def test_message_split_byte_by_byte(make_layer: LayerFactory,
                                          tcp_client: TcpClientFactory) -> None:
    layer, rec = await make_layer(udp=False)
    client = await tcp_client(layer.local_address("tcp"))
    data = tcp_request(7, "MESSAGE", body=b"hello over a trickle")
    for i in range(len(data)):
        await client.write(data[i : i + 1])
    await wait_for(lambda: rec.messages)
    message = rec.messages[0][0]
    assert isinstance(message, Request) and message.body == b"hello over a trickle"
    assert len(rec.messages) == 1


async def test_connection_reuse(make_layer: LayerFactory) -> None:
    server, server_rec = await make_layer(udp=False)
    client, client_rec = await make_layer(udp=False)
    target = Address("tcp", *server.local_address("tcp"))
    first = await client.send(make_request(cseq=1), target)
    second = await client.send(make_request(cseq=2), target)
    assert first == second and client.is_open(first)
    await wait_for(lambda: len(server_rec.messages) == 2)
    inbound = server_rec.messages[0][1]
    assert server_rec.messages[1][1] == inbound
    assert server.statistics().connections_accepted == 1
    assert client.statistics().connections_opened == 1
    # The server sends to the client's address: the client's connection is reused.
    back = await server.send(make_request("NOTIFY"), Address("tcp", *inbound.remote))
    assert back == inbound
    await wait_for(lambda: client_rec.messages)
    assert client_rec.messages[0][1] == first
    assert server.statistics().connections_opened == 0


async def test_concurrent_sends_share_one_connect(make_layer: LayerFactory) -> None:
    server, server_rec = await make_layer(udp=False)
    client, _ = await make_layer(udp=False)
    target = Address("tcp", *server.local_address("tcp"))
    flows = await asyncio.gather(*(client.send(make_request(cseq=n), target)
                                   for n in range(1, 6)))
    assert len(set(flows)) == 1
    await wait_for(lambda: len(server_rec.messages) == 5)
    assert server.statistics().connections_accepted == 1


async def test_peer_close_reports_flow_closed(make_layer: LayerFactory,
                                              tcp_client: TcpClientFactory) -> None:
    layer, rec = await make_layer(udp=False)
    client = await tcp_client(layer.local_address("tcp"))
    await client.write(tcp_request())
    await wait_for(lambda: rec.messages)
    flow = rec.messages[0][1]
    assert layer.flow(flow.id) == flow and layer.is_open(flow)
    await client.close()
    await wait_for(lambda: rec.closed)
    assert rec.closed == [(flow, "peer closed")]
    assert layer.flow(flow.id) is None and not layer.is_open(flow)
    assert layer.statistics().open_connections == 0
    with pytest.raises(FlowClosedError):
        await layer.send(make_request(), flow)


async def test_idle_timeout_closes(make_layer: LayerFactory,
                                   tcp_client: TcpClientFactory) -> None:
    layer, rec = await make_layer(TransportConfig(tcp_idle_timeout=0.3), udp=False)
    client = await tcp_client(layer.local_address("tcp"))
    await client.write(tcp_request())
    await wait_for(lambda: rec.messages)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await client.read_until_eof(timeout=3.0)
    assert loop.time() - started >= 0.25
    await wait_for(lambda: rec.closed)
    assert rec.closed[0][1] == "idle timeout"


async def test_traffic_defers_idle_timeout(make_layer: LayerFactory,
                                           tcp_client: TcpClientFactory) -> None:
    layer, rec = await make_layer(TransportConfig(tcp_idle_timeout=0.4), udp=False)
    client = await tcp_client(layer.local_address("tcp"))
    loop = asyncio.get_running_loop()
    until = loop.time() + 1.0
    while loop.time() < until:  # traffic every 0.1 s keeps it open for 1 s (> 2 timeouts)
        await client.write(b"\r\n\r\n")
        assert await client.read_exactly(2) == b"\r\n"
        await asyncio.sleep(0.1)  # pacing the traffic, not waiting for a result
    assert rec.closed == [] and layer.statistics().open_connections == 1


async def test_ping_gets_pong(make_layer: LayerFactory, tcp_client: TcpClientFactory) -> None:
    layer, rec = await make_layer(udp=False)
    client = await tcp_client(layer.local_address("tcp"))
    await client.write(b"\r\n")
    await client.write(b"\r\n")  # a ping split in two writes
    assert await client.read_exactly(2) == b"\r\n"
    stats = layer.statistics()
    assert stats.keepalive_pings_received == 1 and stats.keepalive_pongs_sent == 1
    assert rec.messages == [] and rec.closed == []


async def test_client_keepalive_detects_dead_server(make_layer: LayerFactory,
                                                    raw_server: RawServer) -> None:
    interval, timeout = 0.2, 0.3
    layer, rec = await make_layer(
        TransportConfig(keepalive_interval=interval, keepalive_timeout=timeout), udp=False)
    addr = await raw_server.start()
    loop = asyncio.get_running_loop()
    flow = await layer.send(make_request(), Address("tcp", *addr))
    started = loop.time()
    await wait_for(lambda: rec.closed, timeout=5.0)
    elapsed = loop.time() - started
    assert rec.closed == [(flow, "keepalive timeout")]
    assert interval + timeout - 0.05 <= elapsed < interval + timeout + 1.0
    assert b"\r\n\r\n" in raw_server.data
    stats = layer.statistics()
    assert stats.keepalive_timeouts == 1 and stats.keepalive_pings_sent >= 1
    assert not layer.is_open(flow)


async def test_client_keepalive_with_live_server(make_layer: LayerFactory) -> None:
    server, _ = await make_layer(udp=False)
    client, client_rec = await make_layer(
        TransportConfig(keepalive_interval=0.1, keepalive_timeout=0.2), udp=False)
    flow = await client.send(make_request(), Address("tcp", *server.local_address("tcp")))
    await wait_for(lambda: client.statistics().keepalive_pongs_received >= 4)
    assert client_rec.closed == [] and client.is_open(flow)
    assert server.statistics().keepalive_pings_received >= 4


async def test_broken_framing_answers_400_and_closes(make_layer: LayerFactory,
                                                     tcp_client: TcpClientFactory) -> None:
    layer, rec = await make_layer(udp=False)
    client = await tcp_client(layer.local_address("tcp"))
    broken = tcp_request(2).replace(b"Content-Length: 0", b"Content-Length: abc")
    await client.write(tcp_request(1) + broken)  # a good message just before the broken one
    response = await client.read_message()
    assert isinstance(response, Response) and response.status == 400
    assert "Content-Length" in response.reason and response.cseq.seq == 2
    await client.read_until_eof()
    await wait_for(lambda: rec.closed)
    assert rec.closed[0][1] == "parse error"
    assert [m.cseq.seq for m, _ in rec.messages] == [1]
    assert layer.statistics().bad_messages == 1


async def test_oversize_body_gets_413_and_close(make_layer: LayerFactory,
                                                tcp_client: TcpClientFactory) -> None:
    layer, rec = await make_layer(udp=False)
    client = await tcp_client(layer.local_address("tcp"))
    await client.write(tcp_request().replace(b"Content-Length: 0", b"Content-Length: 10000000"))
    response = await client.read_message()
    assert is_response(response, 413)
    await client.read_until_eof()
    await wait_for(lambda: rec.closed)
    assert rec.closed[0][1] == "parse error" and rec.messages == []


async def test_oversize_message_gets_513_and_close(make_layer: LayerFactory,
                                                   tcp_client: TcpClientFactory) -> None:
    config = TransportConfig(limits=Limits(max_message_size=1000))
    layer, rec = await make_layer(config, udp=False)
    client = await tcp_client(layer.local_address("tcp"))
    await client.write(tcp_request(1, "MESSAGE", body=b"x" * 900))
    response = await client.read_message()
    assert is_response(response, 513)
    await client.read_until_eof()
    await wait_for(lambda: rec.closed)
    assert rec.messages == []


async def test_bad_message_is_answered_and_connection_kept(make_layer: LayerFactory,
                                                           tcp_client: TcpClientFactory) -> None:
    layer, rec = await make_layer(udp=False)
    client = await tcp_client(layer.local_address("tcp"))
    bad = tcp_request(1).replace(b"Max-Forwards: 70", b"Max-Forwards: many")
    await client.write(bad)
    response = await client.read_message()
    assert isinstance(response, Response) and response.status == 400
    assert "Max-Forwards" in response.reason
    await client.write(tcp_request(2))
    await wait_for(lambda: rec.messages)
    assert rec.messages[0][0].cseq.seq == 2 and rec.closed == []


async def test_max_connections(make_layer: LayerFactory,
                               tcp_client: TcpClientFactory) -> None:
    layer, rec = await make_layer(TransportConfig(max_connections=2), udp=False)
    addr = layer.local_address("tcp")
    first = await tcp_client(addr)
    second = await tcp_client(addr)
    await wait_for(lambda: layer.statistics().open_connections == 2)
    third = await tcp_client(addr)
    await third.read_until_eof()
    assert layer.statistics().connections_refused == 1
    await first.write(tcp_request(1))
    await second.write(tcp_request(2))
    await wait_for(lambda: len(rec.messages) == 2)
    assert layer.statistics().open_connections == 2
    await first.close()
    await wait_for(lambda: layer.statistics().open_connections == 1)
    fourth = await tcp_client(addr)
    await fourth.write(tcp_request(4))
    await wait_for(lambda: len(rec.messages) == 3)


async def test_close_drains_and_is_idempotent(make_layer: LayerFactory,
                                              tcp_client: TcpClientFactory) -> None:
    layer, rec = await make_layer()
    client = await tcp_client(layer.local_address("tcp"))
    await client.write(tcp_request())
    await wait_for(lambda: rec.messages)
    flow = rec.messages[0][1]
    big = make_request("MESSAGE", body=b"z" * 60_000)
    for _ in range(20):  # ~1.2 MB: more than the socket buffers take at once
        await layer.send(big, flow)
    await asyncio.gather(layer.close(drain_timeout=5.0), layer.close())
    await layer.close()
    assert rec.closed == [(flow, "shutdown")]
    received = 0
    while True:
        try:
            message = await client.read_message()
        except AssertionError:
            break
        assert message.body == big.body
        received += 1
    assert received == 20 and client.eof
    with pytest.raises(TransportError):
        await layer.send(make_request(), flow)
    with pytest.raises(TransportError):
        await layer.listen_tcp(LOCALHOST)


async def test_close_aborts_what_does_not_drain(make_layer: LayerFactory,
                                                tcp_client: TcpClientFactory) -> None:
    layer, rec = await make_layer(udp=False)
    client = await tcp_client(layer.local_address("tcp"))
    cast(asyncio.Transport, client.writer.transport).pause_reading()  # the peer stops reading
    await client.write(tcp_request())
    await wait_for(lambda: rec.messages)
    flow = rec.messages[0][1]
    big = make_request("MESSAGE", body=b"z" * 60_000)
    for _ in range(60):
        await layer.send(big, flow)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await layer.close(drain_timeout=0.3)
    assert loop.time() - started < 2.0
    assert rec.closed == [(flow, "shutdown")]


async def test_connect_refused_fails_fast(make_layer: LayerFactory) -> None:
    layer, _ = await make_layer(udp=False)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ConnectError):
        await layer.send(make_request(), Address("tcp", LOCALHOST, free_port()))
    assert loop.time() - started < 1.0
    assert layer.statistics().connect_failures == 1


async def test_close_flow(make_layer: LayerFactory, tcp_client: TcpClientFactory) -> None:
    layer, rec = await make_layer(udp=False)
    client = await tcp_client(layer.local_address("tcp"))
    await client.write(tcp_request())
    await wait_for(lambda: rec.messages)
    flow = rec.messages[0][1]
    await layer.close_flow(flow)
    await client.read_until_eof()
    assert rec.closed == [(flow, "closed")]
    await layer.close_flow(flow)  # already closed: nothing happens
    assert len(rec.closed) == 1


async def test_response_over_open_flow(make_layer: LayerFactory,
                                       tcp_client: TcpClientFactory) -> None:
    layer, rec = await make_layer(udp=False)
    client = await tcp_client(layer.local_address("tcp"))
    await client.write(tcp_request())
    await wait_for(lambda: rec.messages)
    request, flow = rec.messages[0]
    assert isinstance(request, Request)
    used = await layer.send_response(Response.for_request(request, 200, to_tag="x"), flow)
    assert used == flow
    response = await client.read_message()
    assert is_response(response, 200) and response.top_via.received == LOCALHOST


async def test_response_reconnects_when_flow_closed(make_layer: LayerFactory,
                                                    tcp_client: TcpClientFactory,
                                                    raw_server: RawServer) -> None:
    layer, rec = await make_layer(udp=False)
    _, back_port = await raw_server.start()
    client = await tcp_client(layer.local_address("tcp"))
    via = f"SIP/2.0/TCP client.invalid:{back_port};branch=z9hG4bK-r"
    await client.write(request_bytes(via=via))
    await wait_for(lambda: rec.messages)
    request, flow = rec.messages[0]
    assert isinstance(request, Request) and request.top_via.received == LOCALHOST
    await client.close()
    await wait_for(lambda: rec.closed)
    used = await layer.send_response(Response.for_request(request, 200), flow)
    assert used != flow and used.remote == (LOCALHOST, back_port)
    await wait_for(lambda: raw_server.messages())
    response = raw_server.messages()[0]
    assert isinstance(response, Response) and response.status == 200


async def _never_connects(*args: object, **kwargs: object) -> object:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


async def test_connect_timeout(make_layer: LayerFactory,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    layer, _ = await make_layer(TransportConfig(connect_timeout=0.2), udp=False)
    monkeypatch.setattr(asyncio.get_running_loop(), "create_connection", _never_connects)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ConnectError, match="timed out"):
        await layer.send(make_request(), Address("tcp", LOCALHOST, 5060))
    assert 0.15 <= loop.time() - started < 1.5


async def test_shutdown_abandons_pending_connects(make_layer: LayerFactory,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    layer, _ = await make_layer(udp=False)
    monkeypatch.setattr(asyncio.get_running_loop(), "create_connection", _never_connects)
    sending = asyncio.ensure_future(layer.send(make_request(), Address("tcp", LOCALHOST, 5060)))
    await wait_for(lambda: layer._connecting)
    await layer.close()
    with pytest.raises(ConnectError, match="shutting down"):
        await sending


async def test_cancelled_sender_does_not_cancel_the_shared_connect(
        make_layer: LayerFactory) -> None:
    server, server_rec = await make_layer(udp=False)
    client, _ = await make_layer(udp=False)
    target = Address("tcp", *server.local_address("tcp"))
    first = asyncio.ensure_future(client.send(make_request(cseq=1), target))
    second = asyncio.ensure_future(client.send(make_request(cseq=2), target))
    await asyncio.sleep(0)  # both are now waiting on the same connect
    first.cancel()
    flow = await second
    assert first.cancelled() and client.is_open(flow)
    await wait_for(lambda: server_rec.messages)
    assert [m.cseq.seq for m, _ in server_rec.messages] == [2]


async def test_write_buffer_limit_closes_a_stuck_flow(make_layer: LayerFactory,
                                                      tcp_client: TcpClientFactory) -> None:
    layer, rec = await make_layer(TransportConfig(write_buffer_limit=200_000), udp=False)
    client = await tcp_client(layer.local_address("tcp"))
    cast(asyncio.Transport, client.writer.transport).pause_reading()  # the peer stops reading
    await client.write(tcp_request())
    await wait_for(lambda: rec.messages)
    flow = rec.messages[0][1]
    big = make_request("MESSAGE", body=b"z" * 60_000)
    with pytest.raises(FlowClosedError, match="write buffer full"):
        for _ in range(2_000):  # far more than kernel buffers hold
            await layer.send(big, flow)
    assert rec.closed == [(flow, "write buffer full")] and not layer.is_open(flow)
