"""An RTP receiver for the application tests: a UDP socket that keeps every packet it
gets, parsed (RFC 3550 §5.1), with the SDP offer that points a caller's media at it."""

from __future__ import annotations

import asyncio
import struct
import time
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """One packet received: its fixed header fields, payload, source and arrival time."""

    version: int
    marker: bool
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    source: tuple[str, int]
    arrived: float


def parse_rtp(data: bytes, source: tuple[str, int] = ("", 0),
              arrived: float = 0.0) -> RtpPacket:
    """Parse an RTP packet (CSRCs skipped; ValueError when it is not one)."""
    if len(data) < 12:
        raise ValueError(f"{len(data)} bytes: shorter than an RTP header")
    first, second, sequence, timestamp, ssrc = struct.unpack_from("!BBHII", data)
    start = 12 + 4 * (first & 0x0F)
    if len(data) < start:
        raise ValueError("CSRC list truncated")
    return RtpPacket(first >> 6, bool(second & 0x80), second & 0x7F, sequence, timestamp,
                     ssrc, data[start:], source, arrived)


@dataclass(eq=False)
class _Collector(asyncio.DatagramProtocol):
    packets: list[RtpPacket] = field(default_factory=list)
    garbage: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def datagram_received(self, data: bytes, addr: tuple[str | bytes, int]) -> None:
        try:
            self.packets.append(parse_rtp(data, (str(addr[0]), int(addr[1])),
                                          time.monotonic()))
        except ValueError:
            self.garbage += 1
        self.arrived.set()


class RtpReceiver:
    """A UDP socket on `host` collecting RTP."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.port = 0
        self._collector = _Collector()
        self._transport: asyncio.DatagramTransport | None = None

    async def open(self) -> RtpReceiver:
        """Bind a free port; return self."""
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self._collector,
                                                           local_addr=(self.host, 0))
        self._transport = transport
        self.port = int(transport.get_extra_info("sockname")[1])
        return self

    def close(self) -> None:
        """Release the socket."""
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    @property
    def packets(self) -> list[RtpPacket]:
        """Every RTP packet received so far, in arrival order."""
        return list(self._collector.packets)

    @property
    def garbage(self) -> int:
        """Datagrams that were not RTP."""
        return self._collector.garbage

    def payload(self) -> bytes:
        """The payloads, concatenated in arrival order."""
        return b"".join(p.payload for p in self._collector.packets)

    def offer(self, *, session: int = 1) -> bytes:
        """An SDP offer (PCMU) asking for audio at this socket."""
        return (f"v=0\r\no=- {session} 1 IN IP4 {self.host}\r\ns=-\r\n"
                f"c=IN IP4 {self.host}\r\nt=0 0\r\nm=audio {self.port} RTP/AVP 0\r\n"
                f"a=rtpmap:0 PCMU/8000\r\na=recvonly\r\n").encode()

    async def wait_packets(self, count: int, timeout: float) -> list[RtpPacket]:
        """Wait until at least `count` packets came (TimeoutError after `timeout`)."""
        async with asyncio.timeout(timeout):
            while len(self._collector.packets) < count:
                self._collector.arrived.clear()
                await self._collector.arrived.wait()
        return self.packets

    async def wait_quiet(self, seconds: float, timeout: float) -> list[RtpPacket]:
        """Wait until nothing has arrived for `seconds` (the stream stopped); the packets
        (TimeoutError when it still flows after `timeout`)."""
        async with asyncio.timeout(timeout):
            while True:
                self._collector.arrived.clear()
                try:
                    await asyncio.wait_for(self._collector.arrived.wait(), seconds)
                except TimeoutError:
                    return self.packets
