"""SIP over TCP and TLS (RFC 3261 §18.3; RFC 5626 §4.4.1 keepalives): one protocol per
connection.

The same `TcpConnection` runs over a plain socket (`kind` "tcp") and over asyncio's
SSL transport (`kind` "tls", see `trimaran.net.tls`): the stream is the same once the
handshake is done. Framing is done by `StreamParser`. A well-framed but invalid message is
answered (when it can be) and the connection goes on; broken framing cannot be
resynchronised, so it is answered when possible and the connection is closed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol, cast

from trimaran.net.flows import (
    Counters,
    Flow,
    FlowClosedError,
    HostPort,
    TransportConfig,
    host_port,
)
from trimaran.sip.errors import SipParseError
from trimaran.sip.message import Message
from trimaran.sip.parser import (
    BadMessage,
    Frame,
    KeepAlive,
    StreamParser,
    error_response,
)

logger = logging.getLogger(__name__)

PING = b"\r\n\r\n"
PONG = b"\r\n"

# Reasons given to on_flow_closed.
PEER_CLOSED = "peer closed"
IDLE_TIMEOUT = "idle timeout"
KEEPALIVE_TIMEOUT = "keepalive timeout"
PARSE_ERROR = "parse error"
SHUTDOWN = "shutdown"
RESET = "reset"
WRITE_BUFFER_FULL = "write buffer full"
CLOSED_LOCALLY = "closed"
_REFUSED = "refused"  # never reported: the flow did not exist yet


class TcpOwner(Protocol):
    """What a connection needs from the transport layer."""

    def tcp_opened(self, conn: TcpConnection, local: HostPort, remote: HostPort) -> Flow | None:
        """Register a new connection; None refuses it (too many connections)."""

    def tcp_closed(self, conn: TcpConnection, reason: str) -> None:
        """Forget a connection; called once, when it starts closing."""

    def deliver(self, message: Message, flow: Flow) -> None:
        """Hand a parsed message to the application."""


class TcpConnection(asyncio.Protocol):
    """One TCP or TLS connection, accepted (server side) or opened by us (`outbound`).

    `peer_verified` is True for a TLS connection whose peer presented a certificate
    that the context verified (the deployment CA's, for mutual TLS)."""

    def __init__(self, owner: TcpOwner, config: TransportConfig, counters: Counters, *,
                 outbound: bool, kind: str = "tcp") -> None:
        self.kind = kind
        self.peer_verified = False
        self._owner = owner
        self._config = config
        self._counters = counters
        self.outbound = outbound
        self._loop = asyncio.get_running_loop()
        # The server side may see a ping split as CRLF + CRLF; a client only expects pongs.
        self._parser = StreamParser(config.limits, expect_ping=not outbound)
        self._unframed = bytearray()  # mirror of the parser's unframed bytes (see _framing_error)
        self._transport: asyncio.Transport | None = None
        self._flow: Flow | None = None
        self._last_activity = self._loop.time()
        self._idle_timer: asyncio.TimerHandle | None = None
        self._ping_timer: asyncio.TimerHandle | None = None
        self._pong_timer: asyncio.TimerHandle | None = None
        self.close_reason: str | None = None
        self.done: asyncio.Future[None] = self._loop.create_future()

    @property
    def flow(self) -> Flow:
        """The flow of this connection (only once `connection_made` admitted it)."""
        if self._flow is None:
            raise FlowClosedError("connection was never opened")
        return self._flow

    @property
    def is_open(self) -> bool:
        """True while messages can be sent on this connection."""
        return (self.close_reason is None and self._transport is not None
                and not self._transport.is_closing())

    @property
    def write_buffer_size(self) -> int:
        """Bytes queued for sending."""
        return self._transport.get_write_buffer_size() if self._transport is not None else 0

    # -- asyncio callbacks ------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        local = host_port(transport.get_extra_info("sockname"))
        remote = host_port(transport.get_extra_info("peername"))
        if self.kind == "tls":
            self.peer_verified = bool(transport.get_extra_info("peercert"))
        flow = self._owner.tcp_opened(self, local, remote)
        if flow is None:
            self.close_reason = _REFUSED
            transport.abort()
            return
        self._flow = flow
        self._last_activity = self._loop.time()
        self._idle_timer = self._loop.call_at(
            self._last_activity + self._config.tcp_idle_timeout, self._check_idle)
        if self.outbound and self._config.keepalive_interval is not None:
            self._ping_timer = self._loop.call_later(
                self._config.keepalive_interval, self._send_ping)
        logger.debug("%s %s:%d <-> %s:%d", flow.id, *local, *remote)

    def data_received(self, data: bytes) -> None:
        if self.close_reason is not None:
            return
        self._last_activity = self._loop.time()
        self._counters.bytes_in += len(data)
        parser = self._parser
        try:
            frames = parser.feed(data)
        except SipParseError as err:
            self._framing_error(data, err)
            return
        left = parser.buffered
        if left == 0:
            if self._unframed:
                self._unframed.clear()
        else:
            self._unframed += data
            del self._unframed[: len(self._unframed) - left]
        for frame in frames:
            if self.close_reason is not None:
                return
            self._handle(frame)

    def eof_received(self) -> bool | None:
        return None  # close our side too; connection_lost reports "peer closed"

    def connection_lost(self, exc: Exception | None) -> None:
        if self.close_reason is None:
            if exc is not None:
                logger.debug("%s lost: %s", self._flow.id if self._flow else self.kind, exc)
            self._closing(RESET if exc is not None else PEER_CLOSED)
        self._transport = None
        if not self.done.done():
            self.done.set_result(None)

    def pause_writing(self) -> None:
        # The peer does not read what we send: stop reading what it sends (backpressure).
        if self._transport is not None and not self._transport.is_closing():
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    # -- frames -----------------------------------------------------------
    def _handle(self, frame: Frame) -> None:
        counters = self._counters
        if isinstance(frame, Message):
            counters.messages_in += 1
            self._owner.deliver(frame, self.flow)
        elif isinstance(frame, KeepAlive):
            if frame.kind == "ping":
                counters.keepalive_pings_received += 1
                self._write_quietly(PONG)
                counters.keepalive_pongs_sent += 1
            else:
                counters.keepalive_pongs_received += 1
                if self._pong_timer is not None:
                    self._pong_timer.cancel()
                    self._pong_timer = None
        elif isinstance(frame, BadMessage):
            counters.bad_messages += 1
            logger.debug("%s: bad message: %s", self.flow.id, frame.error.reason)
            response = error_response(frame.raw, frame.error)
            if response is not None:
                self._write_quietly(response.to_bytes())

    def _framing_error(self, data: bytes, err: SipParseError) -> None:
        """Broken framing: deliver what was framed before it, answer it, close."""
        self._counters.bad_messages += 1
        logger.debug("%s: broken framing: %s", self.flow.id, err.reason)
        # The parser keeps the broken message (and what follows) buffered; whatever it
        # consumed before raising is a run of complete frames, lost with the exception:
        # frame them again so a good message sent just before a broken one still arrives.
        stream = bytes(self._unframed) + data
        self._unframed.clear()
        cut = len(stream) - self._parser.buffered
        if cut > 0:
            salvage = StreamParser(self._config.limits, expect_ping=not self.outbound)
            try:
                frames = salvage.feed(stream[:cut])
            except SipParseError:
                frames = []
            for frame in frames:
                if self.close_reason is not None:
                    return
                self._handle(frame)
        if self.close_reason is not None:
            return
        response = error_response(stream[cut:], err)
        if response is not None:
            self._write_quietly(response.to_bytes())
        self.close(PARSE_ERROR)

    # -- sending ----------------------------------------------------------
    def write(self, data: bytes) -> None:
        """Queue `data`; raise FlowClosedError when the connection is closed or overloaded."""
        transport = self._transport
        if transport is None or self.close_reason is not None or transport.is_closing():
            raise FlowClosedError(f"{self._flow.id if self._flow else self.kind} is closed")
        if transport.get_write_buffer_size() + len(data) > self._config.write_buffer_limit:
            self.close(WRITE_BUFFER_FULL, abort=True)
            raise FlowClosedError(f"{self.flow.id}: write buffer full, connection closed")
        transport.write(data)
        self._counters.bytes_out += len(data)
        self._last_activity = self._loop.time()

    def _write_quietly(self, data: bytes) -> None:
        try:
            self.write(data)
        except FlowClosedError as exc:
            logger.debug("dropped %d bytes: %s", len(data), exc)

    # -- timers -----------------------------------------------------------
    def _check_idle(self) -> None:
        self._idle_timer = None
        if self.close_reason is not None:
            return
        deadline = self._last_activity + self._config.tcp_idle_timeout
        if self._loop.time() >= deadline:
            # Nothing moved for the whole timeout; unsent bytes would never drain.
            self.close(IDLE_TIMEOUT, abort=self.write_buffer_size > 0)
        else:
            self._idle_timer = self._loop.call_at(deadline, self._check_idle)

    def _send_ping(self) -> None:
        self._ping_timer = None
        interval = self._config.keepalive_interval
        if self.close_reason is not None or interval is None:
            return
        self._write_quietly(PING)
        self._counters.keepalive_pings_sent += 1
        if self._pong_timer is None:
            self._pong_timer = self._loop.call_later(
                self._config.keepalive_timeout, self._pong_missing)
        self._ping_timer = self._loop.call_later(interval, self._send_ping)

    def _pong_missing(self) -> None:
        self._pong_timer = None
        if self.close_reason is None:
            self._counters.keepalive_timeouts += 1
            logger.info("%s: no keepalive pong within %.1fs, closing",
                        self.flow.id, self._config.keepalive_timeout)
            self.close(KEEPALIVE_TIMEOUT, abort=True)

    # -- closing ----------------------------------------------------------
    def close(self, reason: str = CLOSED_LOCALLY, *, abort: bool = False) -> None:
        """Close the connection (queued bytes are flushed unless `abort`)."""
        if self.close_reason is not None:
            if abort:
                self.abort()
            return
        self._closing(reason)
        transport = self._transport
        if transport is not None:
            if abort:
                transport.abort()
            else:
                transport.close()

    def abort(self) -> None:
        """Drop the connection now, discarding unsent bytes."""
        if self._transport is not None:
            self._transport.abort()

    def _closing(self, reason: str) -> None:
        self.close_reason = reason
        for timer in (self._idle_timer, self._ping_timer, self._pong_timer):
            if timer is not None:
                timer.cancel()
        self._idle_timer = self._ping_timer = self._pong_timer = None
        if self._flow is not None:
            logger.debug("%s closing: %s", self._flow.id, reason)
            self._owner.tcp_closed(self, reason)
