"""Configuration of one Front End server, validated as a whole."""

from __future__ import annotations

from dataclasses import dataclass, field

from trimaran.roles.frontend.pool import Peer
from trimaran.sip.parser import DEFAULT_LIMITS, Limits
from trimaran.sip.transaction import TimerConfig
from trimaran.topology.model import AbuseLimits
from trimaran.topology.rules import check_abuse_limits


class ConfigError(ValueError):
    """The configuration is inconsistent; lists every violation."""

    def __init__(self, violations: list[str]) -> None:
        super().__init__("; ".join(violations))
        self.violations = violations


@dataclass(frozen=True, slots=True)
class FrontEndConfig:
    """What a Front End server needs to run. Times are seconds."""

    server: str
    pool: str
    domain: str                       # SIP domain and digest realm
    host: str                         # IP literal this server binds (its own 127.x address)
    sip_port: int = 5060
    admin_port: int = 8080
    secret: bytes = b""               # nonce and Record-Route token key (>= 16 bytes)
    min_expires: int = 60             # RFC 3261 §10.3: 423 below this
    max_expires: int = 3600
    default_expires: int = 600
    presence_expires: int = 600
    nonce_ttl: float = 300.0
    housekeeping_interval: float = 5.0
    max_fork: int = 16                # contacts tried in parallel per request
    timers: TimerConfig = field(default_factory=TimerConfig)
    limits: Limits = DEFAULT_LIMITS
    admin_token: str | None = None
    # Digest algorithms offered, preferred first (RFC 8760 §2.4). Some clients only read
    # the first challenge; deployments with MD5-only clients may put MD5 first.
    digest_algorithms: tuple[str, ...] = ("SHA-256", "MD5")
    peers: tuple[Peer, ...] = ()      # the other servers of the pool (Enterprise Edition)
    heartbeat_interval: float = 2.0
    failure_detection: float = 10.0   # FE-3: a silent peer is declared dead after this
    route_retry_window: float = 4.0   # a request whose targets all failed is retried on
                                      # fresh bindings for this long (clients re-registering)
    drain_grace: float = 2.0          # FE-5: client flows are closed this long after a drain
    abuse: AbuseLimits = field(default_factory=AbuseLimits)   # OPS-6: rate, flows, lockout
    deployment_hosts: tuple[str, ...] = ()  # the servers' addresses: never rate-limited

    def __post_init__(self) -> None:
        problems = []
        if len(self.secret) < 16:
            problems.append("secret: must be at least 16 bytes")
        if not 0 < self.min_expires <= self.default_expires <= self.max_expires:
            problems.append("expires: need 0 < min_expires <= default_expires <= max_expires")
        if not 0 <= self.sip_port < 65536 or not 0 <= self.admin_port < 65536:
            problems.append("ports: must be within 0..65535")
        if not 0 < self.heartbeat_interval < self.failure_detection:
            problems.append("heartbeat_interval: need 0 < heartbeat_interval < failure_detection")
        if self.failure_detection >= self.min_expires:
            problems.append("failure_detection: must be shorter than min_expires")
        if self.route_retry_window < 0:
            problems.append("route_retry_window: must be >= 0")
        if self.housekeeping_interval <= 0:
            problems.append("housekeeping_interval: must be > 0")
        if not self.digest_algorithms or \
                not set(self.digest_algorithms) <= {"SHA-256", "MD5"}:
            problems.append("digest_algorithms: a non-empty choice of SHA-256 and MD5")
        if self.max_fork < 1:
            problems.append("max_fork: must be >= 1")
        problems += [f"{v.path}: {v.message}" for v in check_abuse_limits(self.abuse, "abuse")]
        if problems:
            raise ConfigError(problems)
