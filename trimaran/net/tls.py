"""SIP over TLS (RFC 3261 §26.2, RFC 5630): what the transport layer does with TLS.

A TLS connection is a TCP connection with an SSL transport under it: framing,
keepalives, idle timeouts and backpressure are `trimaran.net.tcp.TcpConnection`'s,
unchanged; only the flow's transport is ``tls``. This module holds the policy the
transport layer follows, `TlsPolicy`:

* the contexts (built by `trimaran.security.tlsconf`): the listener's (client
  certificates verified against the deployment CA when presented), the Edge
  external side's (no client certificate asked), and the client side's (peer
  verified against the CA; our certificate presented when mutual TLS is on);
* `peers`: with mutual TLS between servers, a request sent to a server's SIP
  address (UDP or TCP) goes over TLS to that server's TLS port instead;
* `server_hosts`: with mutual TLS, a request from one of these addresses that did
  not arrive over TLS with a verified certificate of the deployment CA is refused
  with 403 and a reason phrase (the sender's log says why; a silent close would
  look like a network fault), unless it comes from our own address.

`trimaran serve` installs one policy per server process (`install`); every
`TransportLayer` of the process made without an explicit policy uses it.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field

from trimaran.net.flows import Flow, HostPort, normalize_host

DEFAULT_TLS_PORT = 5061
#: The reason phrase of the 403 refusing server-to-server traffic outside mutual TLS.
MTLS_REQUIRED = "Forbidden (mutual TLS required between servers)"


@dataclass(frozen=True, slots=True)
class TlsPolicy:
    """How one SIP element uses TLS; see the module docstring."""

    server_context: ssl.SSLContext | None = None
    client_context: ssl.SSLContext | None = None
    external_context: ssl.SSLContext | None = None
    port: int = DEFAULT_TLS_PORT
    mutual: bool = False
    peers: Mapping[HostPort, HostPort] = field(default_factory=dict)
    server_hosts: frozenset[str] = frozenset()

    def secure_address(self, host: str, port: int) -> HostPort | None:
        """The TLS address to use instead of `host:port`, when that is a server's SIP
        address and mutual TLS is on; else None."""
        if not self.mutual:
            return None
        return self.peers.get((normalize_host(host), port))

    def refuses(self, flow: Flow, verified: bool) -> bool:
        """True when a request over `flow` is server-to-server traffic outside mutual
        TLS (`verified`: the flow presented a certificate of the deployment CA)."""
        if not self.mutual:
            return False
        remote = flow.remote[0]
        if remote not in self.server_hosts or remote == flow.local[0]:
            return False
        return not (flow.transport == "tls" and verified)


_installed: TlsPolicy | None = None


def install(policy: TlsPolicy | None) -> None:
    """Make `policy` the default of every transport layer made later in this process."""
    global _installed
    _installed = policy


def installed() -> TlsPolicy | None:
    """The policy `install` set (None: no TLS)."""
    return _installed
