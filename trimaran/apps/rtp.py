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
    """The (address, port) an SDP offer wants audio sent to: its first audio stream's
    port, and that stream's ``c=`` line or else the session's (RFC 4566 §5.7); None
    when it has no usable audio stream (none, port 0, no IPv4 address)."""
    media = _first_audio(sdp)
    if media is None:
        return None
    session_host, lines = media
    port_field = lines[0].split()[1] if len(lines[0].split()) > 1 else ""
    port = int(port_field) if port_field.isdigit() else 0
    host = next((_c_host(line) for line in lines[1:] if line.startswith("c=")), session_host)
    if host is None or not 0 < port < 65536:
        return None
    return host, port


def offers_pcmu(sdp: bytes) -> bool:
    """True when the offer's first audio stream lists payload type 0 (PCMU), the only
    one we send."""
    media = _first_audio(sdp)
    return media is not None and "0" in media[1][0].split()[3:]


def _first_audio(sdp: bytes) -> tuple[str | None, list[str]] | None:
    """The session-level ``c=`` host and the lines of the first ``m=audio`` section."""
    session_host: str | None = None
    section: list[str] | None = None
    for raw in sdp.decode("utf-8", "replace").splitlines():
        line = raw.strip()
        if line.startswith("m="):
            if section is not None:
                break
            if line.startswith("m=audio "):
                section = [line]
        elif section is not None:
            section.append(line)
        elif line.startswith("c=") and session_host is None:
            session_host = _c_host(line)
    return None if section is None else (session_host, section)


def _c_host(line: str) -> str | None:
    fields = line[2:].split()
    if len(fields) < 3 or fields[0] != "IN" or fields[1] != "IP4":
        return None
    return fields[2].split("/")[0]


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
        """Send `audio` to `remote` in real time; return the packets this play sent
        (fewer when `stop` is set or the sender closed meanwhile). `sent` counts every
        play's packets."""
        assert self._transport is not None, "open() first"
        loop = asyncio.get_running_loop()
        packets = rtp_packets(audio, ssrc=random.getrandbits(32),
                              sequence=random.getrandbits(16),
                              timestamp=random.getrandbits(32))
        start = loop.time()
        sent = 0
        for i, packet in enumerate(packets):
            delay = start + i * PACKET_INTERVAL - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if (stop is not None and stop.is_set()) or self._transport is None:
                break
            self._transport.sendto(packet, remote)
            sent += 1
            self.sent += 1
        return sent

    def close(self) -> None:
        """Release the socket."""
        if self._transport is not None:
            self._transport.close()
            self._transport = None
