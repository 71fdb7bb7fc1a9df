"""Where messages go and come from: addresses, flows, the flow table (RFC 5626 §3.2).

Also the value types shared by the UDP and TCP adapters and `transport.py`
(configuration, errors, counters); import them from `trimaran.net.transport`.

A `Flow` is the path one message arrived on or left by. TCP flows are real
connections and are registered here while they are open; UDP flows are
virtual (a listening socket plus a remote address) and are never stored: their
id encodes both ends, so they can be rebuilt from the id alone.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from typing import Generic, TypeVar

from trimaran.sip.parser import DEFAULT_LIMITS, Limits

HostPort = tuple[str, int]

#: Largest UDP payload over IPv4 (65535 - 20 IP - 8 UDP).
MAX_DATAGRAM = 65_507


class TransportError(Exception):
    """Root of every error raised by trimaran.net."""


class ConnectError(TransportError):
    """A connection could not be opened (refused, unreachable, timed out, too many)."""


class FlowClosedError(TransportError):
    """The flow asked for is no longer open."""


class MessageTooLargeError(TransportError):
    """The message does not fit in one UDP datagram."""


class NotListeningError(TransportError):
    """The transport has no listening socket for that transport protocol."""


@dataclass(frozen=True, slots=True)
class Address:
    """Where to send: transport ("udp" | "tcp" | "tls"), host (an IP literal) and port."""

    transport: str
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class Flow:
    """RFC 5626 flow: the path a message arrived on or left by."""

    id: str
    transport: str
    local: HostPort
    remote: HostPort

    @property
    def reliable(self) -> bool:
        """True for connection-oriented transports (no retransmissions needed, §17.1.1.2)."""
        return self.transport != "udp"


def normalize_host(host: str) -> str:
    """Canonical text of an IP literal (brackets removed, IPv6 compressed); others as is."""
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host.split("%", 1)[0]).compressed
        except ValueError:
            return host
    return host


def is_ip_literal(host: str) -> bool:
    """True when `host` is an IPv4 or (possibly bracketed) IPv6 address."""
    try:
        ipaddress.ip_address(normalize_host(host))
    except ValueError:
        return False
    return True


def host_port(sockaddr: object) -> HostPort:
    """(host, port) of an asyncio socket address (IPv6 4-tuples included)."""
    if isinstance(sockaddr, tuple) and len(sockaddr) >= 2:
        return normalize_host(str(sockaddr[0])), int(sockaddr[1])
    raise TransportError(f"unsupported socket address {sockaddr!r}")


def format_host_port(addr: HostPort) -> str:
    """`host:port`, IPv6 hosts in brackets."""
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_host_port(text: str) -> HostPort:
    """Inverse of `format_host_port`; raises ValueError."""
    host, colon, port = text.rpartition(":")
    if not colon or not host or not port.isdigit():
        raise ValueError(f"bad host:port {text!r}")
    return normalize_host(host), int(port)


def udp_flow(local: HostPort, remote: HostPort) -> Flow:
    """The virtual UDP flow between one of our sockets and a remote address."""
    flow_id = f"udp:{format_host_port(local)}>{format_host_port(remote)}"
    return Flow(flow_id, "udp", local, remote)


def parse_udp_flow_id(flow_id: str) -> Flow | None:
    """Rebuild a UDP flow from its id, or None when `flow_id` is not one."""
    if not flow_id.startswith("udp:"):
        return None
    local_text, sep, remote_text = flow_id[4:].partition(">")
    if not sep:
        return None
    try:
        return udp_flow(parse_host_port(local_text), parse_host_port(remote_text))
    except ValueError:
        return None


C = TypeVar("C")


class FlowTable(Generic[C]):
    """Open connections by flow id and by remote address (for connection reuse, RFC 5923)."""

    __slots__ = ("_by_id", "_by_remote")

    def __init__(self) -> None:
        self._by_id: dict[str, tuple[Flow, C]] = {}
        self._by_remote: dict[tuple[str, HostPort], dict[str, C]] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def connections(self) -> list[C]:
        """Every open connection (a copy: safe to close them while iterating)."""
        return [conn for _, conn in self._by_id.values()]

    def add(self, flow: Flow, conn: C) -> None:
        """Register the open connection `conn` carrying `flow`."""
        self._by_id[flow.id] = (flow, conn)
        self._by_remote.setdefault((flow.transport, flow.remote), {})[flow.id] = conn

    def remove(self, flow_id: str) -> C | None:
        """Forget a connection; return it, or None when it was not registered."""
        entry = self._by_id.pop(flow_id, None)
        if entry is None:
            return None
        flow, conn = entry
        key = (flow.transport, flow.remote)
        bucket = self._by_remote.get(key)
        if bucket is not None:
            bucket.pop(flow_id, None)
            if not bucket:
                del self._by_remote[key]
        return conn

    def get(self, flow_id: str) -> C | None:
        """The connection of `flow_id`, or None."""
        entry = self._by_id.get(flow_id)
        return entry[1] if entry is not None else None

    def flow(self, flow_id: str) -> Flow | None:
        """The flow of `flow_id` while it is registered, or None."""
        entry = self._by_id.get(flow_id)
        return entry[0] if entry is not None else None

    def by_remote(self, transport: str, remote: HostPort) -> C | None:
        """The most recently opened connection to `remote`, or None."""
        bucket = self._by_remote.get((transport, (normalize_host(remote[0]), remote[1])))
        if not bucket:
            return None
        return next(reversed(bucket.values()))


@dataclass(slots=True)
class Counters:
    """Mutable counters behind `TransportStats`."""

    messages_in: int = 0
    messages_out: int = 0
    bad_messages: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    connections_accepted: int = 0
    connections_opened: int = 0
    connections_refused: int = 0
    connect_failures: int = 0
    keepalive_pings_sent: int = 0
    keepalive_pings_received: int = 0
    keepalive_pongs_sent: int = 0
    keepalive_pongs_received: int = 0
    keepalive_timeouts: int = 0
    server_requests_refused: int = 0  # server-to-server requests outside mutual TLS (403)


@dataclass(frozen=True, slots=True)
class TransportConfig:
    """Tunables of the transport layer; all durations in seconds."""

    limits: Limits = DEFAULT_LIMITS
    tcp_idle_timeout: float = 600.0  # close TCP connections with no bytes either way this long
    keepalive_interval: float | None = None  # CRLFCRLF pings on connections we opened
    keepalive_timeout: float = 10.0  # a ping unanswered this long closes the flow
    max_connections: int = 10_000
    connect_timeout: float = 5.0
    write_buffer_limit: int = 4 * 1024 * 1024  # unsent bytes per connection before closing it
    bind_outgoing: bool = False  # connect from the TCP listening address (not the default)

    def __post_init__(self) -> None:
        if not isinstance(self.limits, Limits):
            raise ValueError(f"limits must be a Limits, got {self.limits!r}")
        for name in ("tcp_idle_timeout", "keepalive_timeout", "connect_timeout"):
            _check_positive(name, getattr(self, name))
        if self.keepalive_interval is not None:
            _check_positive("keepalive_interval", self.keepalive_interval)
        for name in ("max_connections", "write_buffer_limit"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_positive(name: str, value: object) -> None:
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not math.isfinite(value) or value <= 0):
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")


DEFAULT_CONFIG = TransportConfig()


@dataclass(frozen=True, slots=True)
class TransportStats:
    """A snapshot of the transport counters."""

    messages_in: int
    messages_out: int
    bad_messages: int
    bytes_in: int
    bytes_out: int
    open_connections: int
    connections_accepted: int
    connections_opened: int
    connections_refused: int
    connect_failures: int
    keepalive_pings_sent: int
    keepalive_pings_received: int
    keepalive_pongs_sent: int
    keepalive_pongs_received: int
    keepalive_timeouts: int
    server_requests_refused: int
    tls_handshakes_refused: int = 0     # by our TLS listeners (a certificate of another CA, ...)
