"""Sending audio to a caller (SPEC APP-5): the caller's RTP address from its SDP offer,
our SDP answer (PCMU only, RFC 3264), and a paced RTP sender on a UDP socket of ours
(one 20 ms packet every 20 ms, paced from the loop's clock so delays do not add up).
"""

from __future__ import annotations

import asyncio
import random
import time

from trimaran.apps.audio import Audio, rtp_packets

PACKET_INTERVAL = 0.020


def offer_address(sdp: bytes) -> tuple[str, int] | None:
    """The (address, port) an SDP offer wants audio sent to, None when it has none."""
    host: str | None = None
    port: int | None = None
    for raw in sdp.decode("utf-8", "replace").splitlines():
        line = raw.strip()
        if line.startswith("c=IN IP4 ") and host is None:
            host = line.split()[2].split("/")[0]
        elif line.startswith("m=audio "):
            fields = line.split()
            if len(fields) > 1 and fields[1].isdigit():
                port = int(fields[1])
    if host is None or port is None or port == 0:
        return None
    return host, port


def answer_sdp(host: str, port: int, *, session: int | None = None) -> bytes:
    """Our answer: PCMU audio from `host:port`, send-only."""
    ident = session if session is not None else int(time.time())
    return (f"v=0\r\no=trimaran {ident} {ident} IN IP4 {host}\r\ns=trimaran\r\n"
            f"c=IN IP4 {host}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\n"
            f"a=rtpmap:0 PCMU/8000\r\na=sendonly\r\n").encode()


class _Sink(asyncio.DatagramProtocol):
    """Our RTP socket: we only send; what arrives is dropped."""


class RtpSender:
    """One UDP socket of ours sending one stream."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.port = 0
        self._transport: asyncio.DatagramTransport | None = None
        self.sent = 0

    async def open(self) -> int:
        """Bind a port on our address; return it (for the SDP answer)."""
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(_Sink, local_addr=(self.host, 0))
        self._transport = transport
        self.port = int(transport.get_extra_info("sockname")[1])
        return self.port

    async def play(self, audio: Audio, remote: tuple[str, int],
                   stop: asyncio.Event | None = None) -> int:
        """Send `audio` to `remote` in real time; return the packets sent (fewer when
        `stop` is set meanwhile)."""
        assert self._transport is not None, "open() first"
        loop = asyncio.get_running_loop()
        packets = rtp_packets(audio, ssrc=random.getrandbits(32),
                              sequence=random.getrandbits(16),
                              timestamp=random.getrandbits(32))
        start = loop.time()
        for i, packet in enumerate(packets):
            if stop is not None and stop.is_set():
                break
            delay = start + i * PACKET_INTERVAL - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self._transport.sendto(packet, remote)
            self.sent += 1
        return self.sent

    def close(self) -> None:
        """Release the socket."""
        if self._transport is not None:
            self._transport.close()
            self._transport = None
