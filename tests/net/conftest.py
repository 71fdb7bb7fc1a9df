"""Shared helpers for the transport tests: everything on 127.0.0.1, ephemeral ports."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import cast

import pytest

from trimaran.net.transport import Flow, TransportConfig, TransportLayer
from trimaran.sip.headers import Headers
from trimaran.sip.message import Message, Request, Response
from trimaran.sip.parser import Frame, StreamParser, parse_message
from trimaran.sip.uri import URI

LOCALHOST = "127.0.0.1"
_branches = itertools.count(1)


async def wait_for(predicate: Callable[[], object], timeout: float = 5.0,
                   interval: float = 0.005) -> None:
    """Poll `predicate` until it is true; fail the test after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


def make_request(method: str = "OPTIONS", *, via: str | None = None, body: bytes = b"",
                 call_id: str = "call-1@test", cseq: int = 1,
                 extra: tuple[tuple[str, str], ...] = ()) -> Request:
    """A valid request; `via` defaults to a UDP Via with rport."""
    headers = Headers()
    headers.add("Via", via or f"SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK-{next(_branches)};rport")
    headers.add("Max-Forwards", "70")
    headers.add("From", "<sip:alice@example.com>;tag=a1")
    headers.add("To", "<sip:bob@example.com>")
    headers.add("Call-ID", call_id)
    headers.add("CSeq", f"{cseq} {method}")
    for name, value in extra:
        headers.add(name, value)
    return Request(method, URI.parse("sip:bob@example.com"), headers, body)


def request_bytes(method: str = "OPTIONS", **kwargs: object) -> bytes:
    return make_request(method, **kwargs).to_bytes()  # type: ignore[arg-type]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on (just released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Recorder:
    """Collects what a TransportLayer reports."""

    messages: list[tuple[Message, Flow]] = field(default_factory=list)
    closed: list[tuple[Flow, str]] = field(default_factory=list)

    def on_message(self, message: Message, flow: Flow) -> None:
        self.messages.append((message, flow))

    def on_closed(self, flow: Flow, reason: str) -> None:
        self.closed.append((flow, reason))

    def requests(self) -> list[Request]:
        return [m for m, _ in self.messages if isinstance(m, Request)]

    def reasons(self, flow: Flow) -> list[str]:
        return [reason for f, reason in self.closed if f.id == flow.id]


LayerFactory = Callable[..., Awaitable[tuple[TransportLayer, Recorder]]]


@pytest.fixture
async def make_layer() -> AsyncIterator[LayerFactory]:
    """Factory of listening TransportLayers (closed at teardown)."""
    layers: list[TransportLayer] = []

    async def factory(config: TransportConfig | None = None, *, udp: bool = True,
                      tcp: bool = True) -> tuple[TransportLayer, Recorder]:
        recorder = Recorder()
        layer = TransportLayer(recorder.on_message, config or TransportConfig(),
                               on_flow_closed=recorder.on_closed)
        layers.append(layer)
        if udp:
            await layer.listen_udp(LOCALHOST)
        if tcp:
            await layer.listen_tcp(LOCALHOST)
        return layer, recorder

    yield factory
    for layer in layers:
        await layer.close(drain_timeout=1.0)


class DatagramClient(asyncio.DatagramProtocol):
    """A raw UDP peer collecting every datagram it receives."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self.received.append(data)

    @property
    def address(self) -> tuple[str, int]:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return host, port

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(data, addr)

    def messages(self) -> list[Message]:
        return [parse_message(d) for d in self.received]

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


@pytest.fixture
async def udp_client() -> AsyncIterator[Callable[[], Awaitable[DatagramClient]]]:
    """Factory of raw UDP peers bound to 127.0.0.1."""
    clients: list[DatagramClient] = []

    async def factory() -> DatagramClient:
        loop = asyncio.get_running_loop()
        _, client = await loop.create_datagram_endpoint(DatagramClient,
                                                        local_addr=(LOCALHOST, 0))
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.close()


class StreamClient:
    """A raw TCP peer: write bytes, read frames (with deadlines), observe EOF."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = StreamParser(expect_ping=False)
        self.frames: list[Frame] = []
        self.raw = bytearray()
        self.eof = False

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.writer.get_extra_info("sockname")[:2]
        return host, port

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def _read_some(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise AssertionError("timed out reading from the transport")
        async with asyncio.timeout(remaining):
            try:
                data = await self.reader.read(65536)
            except ConnectionResetError:
                data = b""
        if not data:
            self.eof = True
            return
        self.raw += data
        self.frames.extend(self.parser.feed(data))

    async def read_message(self, timeout: float = 5.0) -> Message:
        """The next SIP message received (keepalives are skipped)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            while self.frames:
                frame = self.frames.pop(0)
                if isinstance(frame, Message):
                    return frame
            if self.eof:
                raise AssertionError("connection closed before a message arrived")
            await self._read_some(deadline)

    async def read_until_eof(self, timeout: float = 5.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.eof:
            await self._read_some(deadline)

    async def read_exactly(self, count: int, timeout: float = 5.0) -> bytes:
        async with asyncio.timeout(timeout):
            return await self.reader.readexactly(count)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


@pytest.fixture
async def tcp_client() -> AsyncIterator[Callable[[tuple[str, int]], Awaitable[StreamClient]]]:
    """Factory of raw TCP peers connected to an address."""
    clients: list[StreamClient] = []

    async def factory(addr: tuple[str, int]) -> StreamClient:
        reader, writer = await asyncio.open_connection(*addr)
        client = StreamClient(reader, writer)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await client.close()


def is_response(message: Message, status: int) -> bool:
    return isinstance(message, Response) and message.status == status
