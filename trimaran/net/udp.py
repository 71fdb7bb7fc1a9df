"""SIP over UDP (RFC 3261 §18): one datagram is one message."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from typing import cast

from trimaran.net.flows import (
    MAX_DATAGRAM,
    Counters,
    Flow,
    FlowClosedError,
    HostPort,
    MessageTooLargeError,
    host_port,
    udp_flow,
)
from trimaran.sip.errors import SipParseError
from trimaran.sip.message import Message
from trimaran.sip.parser import Limits, error_response, parse_message

logger = logging.getLogger(__name__)

Deliver = Callable[[Message, Flow], None]


UDP_RECEIVE_BUFFER = 4 * 1024 * 1024


class UdpEndpoint(asyncio.DatagramProtocol):
    """One listening UDP socket: parses every datagram and hands messages to `deliver`."""

    def __init__(self, deliver: Deliver, limits: Limits, counters: Counters) -> None:
        self._deliver = deliver
        self._limits = limits
        self._counters = counters
        self._transport: asyncio.DatagramTransport | None = None
        self.local: HostPort = ("", 0)
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # -- asyncio callbacks ------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (3.11's selector datagram transport does not subclass DatagramTransport)
        self._transport = cast(asyncio.DatagramTransport, transport)
        self.local = host_port(self._transport.get_extra_info("sockname"))
        sock = self._transport.get_extra_info("socket")
        if sock is not None:
            # Bursts of datagrams (a flood, a registration storm after a failover) must
            # queue in the kernel rather than be dropped; the kernel caps the request.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER)
        logger.info("listening on udp %s:%d", *self.local)

    def connection_lost(self, exc: Exception | None) -> None:
        logger.info("udp socket %s:%d closed%s", *self.local, f" ({exc})" if exc else "")
        self._transport = None
        if not self.closed.done():
            self.closed.set_result(None)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and friends, reported on a later send or receive.
        logger.debug("udp socket %s:%d: %s", *self.local, exc)

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        counters = self._counters
        counters.bytes_in += len(data)
        if not data.strip(b"\r\n"):
            counters.keepalive_pings_received += 1  # CRLF keepalive on UDP: nothing to answer
            return
        remote = host_port(addr)
        try:
            message = parse_message(data, self._limits)
        except SipParseError as err:
            counters.bad_messages += 1
            logger.debug("bad datagram from %s:%d: %s", *remote, err.reason)
            response = error_response(data, err)
            if response is not None:
                self._sendto(response.to_bytes(), remote)
            return
        counters.messages_in += 1
        self._deliver(message, udp_flow(self.local, remote))

    # -- sending ----------------------------------------------------------
    @property
    def is_open(self) -> bool:
        """True until the socket is closed."""
        return self._transport is not None and not self._transport.is_closing()

    def send(self, data: bytes, remote: HostPort) -> Flow:
        """Send one datagram to `remote`; return the flow used."""
        if len(data) > MAX_DATAGRAM:
            raise MessageTooLargeError(f"{len(data)} bytes do not fit in a UDP datagram")
        if not self.is_open:
            raise FlowClosedError(f"udp socket {self.local[0]}:{self.local[1]} is closed")
        self._sendto(data, remote)
        return udp_flow(self.local, remote)

    def _sendto(self, data: bytes, remote: HostPort) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        transport.sendto(data, remote)
        self._counters.bytes_out += len(data)

    def close(self) -> None:
        """Close the socket (queued datagrams are flushed first)."""
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()
