"""asyncio adapters: UDP and TCP transports, the flow table, keepalives (RFC 3261 §18)."""

from trimaran.net.transport import (
    DEFAULT_CONFIG,
    Address,
    ConnectError,
    Flow,
    FlowClosedError,
    MessageHandler,
    MessageTooLargeError,
    NotListeningError,
    TransportConfig,
    TransportError,
    TransportLayer,
    TransportStats,
)

__all__ = [
    "DEFAULT_CONFIG",
    "Address",
    "ConnectError",
    "Flow",
    "FlowClosedError",
    "MessageHandler",
    "MessageTooLargeError",
    "NotListeningError",
    "TransportConfig",
    "TransportError",
    "TransportLayer",
    "TransportStats",
]
