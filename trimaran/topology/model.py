"""The topology model (TOP-1): sites, pools, servers, back ends and timers, as frozen values.

A topology is read once (`trimaran.topology.loader`), checked against the rules
(`trimaran.topology.validator`) and then shared read-only by the CLI and every
server process. Everything here is an immutable value: tuples instead of lists,
enums instead of free strings, no mappings. Cross references (`Pool.site`,
`Pool.paired_with` a.k.a. `Pool.backup_pool`, `Server.site` ...) are names;
`trimaran.topology.resolver` turns them into objects.

Role-specific fields are optional so that a topology written today keeps loading
when later roles grow: each field says which roles may set it, and the validator
reports it when set on another role.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import StrEnum

from trimaran.voice.model import VoiceConfig

DEFAULT_SIP_PORT = 5060
DEFAULT_ADMIN_PORT = 8080
DEFAULT_DATABASE_PORT = 5432
DEFAULT_DNS_PORT = 53

# FE-6: the model's published figures, the defaults of `Capacity`.
MODEL_USERS_PER_SERVER = 6660
MODEL_USERS_PER_POOL = 80_000
# TOP-2 limits.
MAX_FRONTEND_SERVERS = 16
MAX_SBAS_PER_BRANCH = 2
MAX_CHAT_ACTIVE_SERVERS = 4
MAX_CHAT_SERVERS = 8
METRO_RTT_LIMIT_MS = 20.0


class SiteKind(StrEnum):
    """A data center (central) or a branch office (branch)."""

    CENTRAL = "central"
    BRANCH = "branch"


class PoolRole(StrEnum):
    """What the servers of a pool do (SPEC §1)."""

    FRONTEND = "frontend"
    DIRECTOR = "director"
    EDGE = "edge"
    MEDIATION = "mediation"
    SBA = "sba"
    CHAT = "chat"
    WITNESS = "witness"
    DNS = "dns"


class Edition(StrEnum):
    """Front End edition: Standard (one server, embedded SQLite) or Enterprise (Back End)."""

    STANDARD = "standard"
    ENTERPRISE = "enterprise"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """An IP address and port; `str()` gives ``127.0.0.1:5060`` or ``[::1]:5060``."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class SiteRtt:
    """The round-trip time from a site to another site, in milliseconds."""

    site: str
    ms: float


@dataclass(frozen=True, slots=True)
class Site:
    """A data center or a branch office.

    `metro` names a metropolitan area: sites sharing it are declared close enough
    to stretch a pool across them (METRO-1) when no RTT says otherwise. `rtt_ms`
    lists measured round-trip times to other sites.
    """

    name: str
    kind: SiteKind = SiteKind.CENTRAL
    metro: str | None = None
    rtt_ms: tuple[SiteRtt, ...] = ()

    def rtt_to(self, site: str) -> float | None:
        """The declared RTT from this site to `site`, None when not declared."""
        for entry in self.rtt_ms:
            if entry.site == site:
                return entry.ms
        return None


@dataclass(frozen=True, slots=True)
class Server:
    """One server process: its name, its own IP address and its ports.

    `site` is only set for a server of a stretched pool that lives in another site
    than its pool's (METRO-1); otherwise the server is in its pool's site.
    `dns_port` applies to servers of a dns pool only (None: `DEFAULT_DNS_PORT`).
    """

    name: str
    address: str
    sip_port: int = DEFAULT_SIP_PORT
    admin_port: int = DEFAULT_ADMIN_PORT
    site: str | None = None
    dns_port: int | None = None
    external_address: str | None = None   # edge: the address remote users and partners use
    external_port: int | None = None      # edge: its SIP port there (None: sip_port)

    @property
    def external_endpoint(self) -> Endpoint | None:
        """Where an Edge server accepts SIP from outside (None for other servers)."""
        if self.external_address is None:
            return None
        return Endpoint(self.external_address, self.external_port or self.sip_port)

    @property
    def dns_endpoint(self) -> Endpoint:
        """Where a dns server answers DNS (UDP and TCP)."""
        return Endpoint(self.address, DEFAULT_DNS_PORT if self.dns_port is None
                        else self.dns_port)

    @property
    def sip_endpoint(self) -> Endpoint:
        """Where the server accepts SIP (UDP and TCP)."""
        return Endpoint(self.address, self.sip_port)

    @property
    def admin_endpoint(self) -> Endpoint:
        """Where the server's admin HTTP API listens."""
        return Endpoint(self.address, self.admin_port)

    @property
    def admin_url(self) -> str:
        """Base URL of the admin API, e.g. ``http://127.0.1.1:8080``."""
        return f"http://{self.admin_endpoint}"


@dataclass(frozen=True, slots=True)
class DatabaseEndpoint:
    """A Back End database instance (principal or mirror); `site` defaults to the pool's."""

    address: str
    port: int = DEFAULT_DATABASE_PORT
    site: str | None = None

    @property
    def endpoint(self) -> Endpoint:
        """The instance's address and port."""
        return Endpoint(self.address, self.port)


@dataclass(frozen=True, slots=True)
class Witness:
    """The Back End's witness (BE-2): a server of the topology (normally of a witness
    pool) named by `server`, or an external one given by `address`/`port`/`site`.
    Exactly one of `server` and `address` is set in a valid topology.
    """

    server: str | None = None
    address: str | None = None
    port: int | None = None
    site: str | None = None


@dataclass(frozen=True, slots=True)
class Backend:
    """A pool's database (BE-1): principal, optional synchronous mirror, optional witness.

    `principal` is optional in the type only so that "a mirror without a principal"
    can be reported; a valid Enterprise pool always has one.
    """

    principal: DatabaseEndpoint | None = None
    mirror: DatabaseEndpoint | None = None
    witness: Witness | None = None

    @property
    def scheme(self) -> str:
        """The HA scheme, compared between paired pools: single, mirrored, mirrored+witness."""
        if self.mirror is None:
            return "single"
        return "mirrored+witness" if self.witness is not None else "mirrored"


@dataclass(frozen=True, slots=True)
class LogShipping:
    """A chat pool's asynchronous copy of its store in a second data center (PC-3):
    `principal` streams the primary data center's log (a cascading hot standby),
    `mirror`, optional, streams from it and becomes its synchronous mirror once a
    ``chat failover`` has promoted it (PC-4). Both live in `site`."""

    site: str
    principal: DatabaseEndpoint
    mirror: DatabaseEndpoint | None = None

    @property
    def instances(self) -> tuple[tuple[str, DatabaseEndpoint], ...]:
        """(role, endpoint) of the shipped copy and of its mirror when there is one."""
        found = [("principal", self.principal)]
        if self.mirror is not None:
            found.append(("mirror", self.mirror))
        return tuple(found)


@dataclass(frozen=True, slots=True)
class Capacity:
    """Users a Front End pool may carry (FE-6); defaults are the model's figures."""

    users_per_server: int = MODEL_USERS_PER_SERVER
    users_per_pool: int = MODEL_USERS_PER_POOL

    def of_servers(self, count: int) -> int:
        """Users `count` servers of the pool may carry: bounded per server and per pool."""
        return min(self.users_per_pool, self.users_per_server * count)


@dataclass(frozen=True, slots=True)
class Pool:
    """A named group of servers of one role in one site (stretched: two sites).

    Role-specific fields (None or empty when unused):
      edition           frontend (required there)
      paired_with       frontend: the paired pool in another site, its backup pool (DR-1);
                        written ``backup_pool`` in a topology file (``paired_with`` is the
                        older spelling, still accepted), read it as `backup_pool`
      backup_registrar  frontend, sba: where users sign in when this pool is down (DR-8);
                        for a paired pool it is the paired pool, implied when omitted
      backend           frontend (enterprise, required there), chat (its store in the
                        primary data center: principal, synchronous mirror, witness)
      log_shipping      chat: the asynchronous copy of the store in a second data center
                        (PC-3), which ``chat failover`` promotes (PC-4)
      capacity          frontend: overrides of the FE-6 figures
      expected_users    frontend: users planned on this pool, checked against capacity
      edge_pool         frontend: the Edge pool relaying its media (EDGE-5)
      next_hop          edge: the Director or Front End pool behind it (EDGE-4);
                        mediation: the Front End pool it hands PSTN calls to (EV-1)
      active_servers    chat: servers accepting connections; None means all (PC-2)
      auto_failover     frontend, paired: fail the pool over automatically when its
                        backup pool and a witness in a third site both see it down (DR-10)
      federation        edge: may carry federation with partner domains (EDGE-3)
      dns_view          dns: the view it answers, "internal" or "external" (EDGE-2)
    """

    name: str
    site: str
    role: PoolRole
    servers: tuple[Server, ...]
    edition: Edition | None = None
    paired_with: str | None = None
    backup_registrar: str | None = None
    backend: Backend | None = None
    capacity: Capacity = field(default_factory=Capacity)
    expected_users: int | None = None
    edge_pool: str | None = None
    next_hop: str | None = None
    active_servers: tuple[str, ...] | None = None
    auto_failover: bool = False
    federation: bool = False
    dns_view: str = "internal"
    log_shipping: LogShipping | None = None

    @property
    def backup_pool(self) -> str | None:
        """The paired pool that takes over this pool's users (DR-1), None when unpaired.

        The documented name of `paired_with`: one setting, stored once.
        """
        return self.paired_with

    @property
    def server_names(self) -> tuple[str, ...]:
        """Names of the pool's servers, in file order."""
        return tuple(s.name for s in self.servers)

    @property
    def is_frontend(self) -> bool:
        """True for a Front End pool (Standard or Enterprise)."""
        return self.role is PoolRole.FRONTEND

    def site_of(self, server: Server) -> str:
        """The site a server of this pool lives in."""
        return server.site if server.site is not None else self.site

    @property
    def sites(self) -> tuple[str, ...]:
        """Every site the pool's servers live in (more than one: a stretched pool)."""
        seen: dict[str, None] = {self.site: None}
        for server in self.servers:
            seen.setdefault(self.site_of(server), None)
        return tuple(seen)

    @property
    def capacity_users(self) -> int:
        """Users the whole pool may carry with every server up (FE-6)."""
        return self.capacity.of_servers(len(self.servers))


@dataclass(frozen=True, slots=True)
class AbuseLimits:
    """Abuse limits of the Front Ends (OPS-6), ``settings.abuse``; 0 turns a limit off.

    rate_per_second, rate_burst  requests a source address may send per second, and at
                              once, per method class (REGISTER, MESSAGE, INVITE): 503 +
                              Retry-After beyond (a token bucket per source and class)
    max_flows_per_user        bindings (distinct connections or instances) a user may
                              hold; a new one beyond is refused, refreshes never are
    lockout_failures, lockout_window_seconds, lockout_seconds
                              this many wrong digest responses within the window lock
                              the account for lockout_seconds (or until `user unlock`)
    trusted_sources           addresses or networks never rate-limited (the servers of
                              the deployment never are); by default this host's own
                              loopback address, where local tools and drills send from
    """

    rate_per_second: float = 20.0
    rate_burst: int = 100
    max_flows_per_user: int = 10
    lockout_failures: int = 10
    lockout_window_seconds: float = 300.0
    lockout_seconds: float = 900.0
    trusted_sources: tuple[str, ...] = ("127.0.0.1", "::1")


@dataclass(frozen=True, slots=True)
class ServerCertificate:
    """A server's own certificate and key files (absolute paths), ``settings.tls.certificates``."""

    server: str
    cert: str
    key: str


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """Transport security (OPS-6), ``settings.tls``.

    enabled                 servers listen for SIP over TLS on `sip_port` (``sips:``); the
                            Edge's external side takes TLS only
    sip_port                the TLS port of every server (default 5061)
    mutual_between_servers  server-to-server SIP goes over mutual TLS with certificates of
                            the deployment CA; plain UDP/TCP between servers is refused
    ca                      the deployment CA certificate (default: RUNDIR/certs/ca.pem,
                            created by `trimaran up` when missing)
    certificates            servers naming their own certificate and key files (default:
                            RUNDIR/certs/SERVER.pem and .key, issued by `up` when missing)
    """

    enabled: bool = False
    sip_port: int = 5061
    mutual_between_servers: bool = False
    ca: str | None = None
    certificates: tuple[ServerCertificate, ...] = ()

    def certificate_of(self, server: str) -> ServerCertificate | None:
        """The files `server` names, None when it uses the run directory's."""
        for entry in self.certificates:
            if entry.server == server:
                return entry
        return None


@dataclass(frozen=True, slots=True)
class Settings:
    """Deployment-wide timers, validated together (no silent adjustment).

    registration_*_expires   Min-Expires, default and maximum registration expiry (s)
    failure_detection_seconds how long peers take to declare a server dead (FE-3)
    heartbeat_seconds         interval of heartbeats between servers of a pool
    keepalive_seconds         CRLF keepalive interval on client flows (RFC 5626)
    resiliency_failover_seconds  home pool silent this long: backup registrar accepts (DR-8)
    resiliency_fallback_seconds  home pool healthy this long: users sent back (DR-8)
    digest_algorithms         digest challenges offered, preferred first (RFC 8760 §2.4);
                              put MD5 first for clients that only read the first challenge
    abuse                     per-source rate limits, flows per user, account lockout
    tls                       SIP over TLS and mutual TLS between servers (`TlsSettings`)
    """

    registration_min_expires: int = 60
    registration_default_expires: int = 600
    registration_max_expires: int = 3600
    failure_detection_seconds: float = 10.0
    heartbeat_seconds: float = 2.0
    keepalive_seconds: float = 10.0
    resiliency_failover_seconds: float = 10.0
    resiliency_fallback_seconds: float = 60.0
    digest_algorithms: tuple[str, ...] = ("SHA-256", "MD5")
    abuse: AbuseLimits = field(default_factory=AbuseLimits)
    tls: TlsSettings = field(default_factory=TlsSettings)


@dataclass(frozen=True, slots=True)
class FederatedPartner:
    """A domain allowed to federate with ours (EDGE-3), and the external SIP endpoints
    of its Edge servers (``"ip:port"``), where our federation route sends its traffic
    and where its traffic to us comes from."""

    domain: str
    edges: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Topology:
    """A whole deployment: its SIP domain, sites, pools and settings.

    `federation_route` is the Edge pool outbound federation goes through (EDGE-3).
    `voice` is the Enterprise Voice configuration (EV-1), None when there is none.
    Users are not part of the topology; they live in the store.
    """

    name: str
    sip_domain: str
    sites: tuple[Site, ...]
    pools: tuple[Pool, ...]
    settings: Settings = field(default_factory=Settings)
    federation_route: str | None = None
    voice: VoiceConfig | None = None
    federation_partners: tuple[FederatedPartner, ...] = ()

    @property
    def servers(self) -> tuple[Server, ...]:
        """Every server of every pool, in file order."""
        return tuple(s for p in self.pools for s in p.servers)


def parse_ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address as an IP address object, None when it is not an IP literal."""
    try:
        return ipaddress.ip_address(address)
    except ValueError:
        return None
