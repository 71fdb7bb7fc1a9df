"""Topology rules about names, addresses, references, sites and settings (TOP-2).

A rule is a function ``(Facts) -> Iterable[Violation]``: it looks at the topology
through `Facts` (indexes built once per validation) and yields one violation per
offending element, with that element's path. Rules never raise and never stop at
the first problem; they assume nothing that another rule checks (an unknown
reference is reported by `check_references` only, and skipped everywhere else).

The rules about pools and roles are in `trimaran.topology.pool_rules`; the table
that runs them all is `trimaran.topology.validator.RULES`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property

from trimaran.topology.errors import Violation
from trimaran.topology.model import (
    AbuseLimits,
    Pool,
    PoolRole,
    Server,
    Settings,
    Site,
    Topology,
    parse_ip,
)

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_NAME_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_MAX_NAME = 253


def error(path: str, message: str) -> Violation:
    """An error-severity violation."""
    return Violation(path, message, "error")


def warning(path: str, message: str) -> Violation:
    """A warning-severity violation."""
    return Violation(path, message, "warning")


def pool_path(index: int) -> str:
    """Path of the pool at `index`, e.g. ``pools[1]``."""
    return f"pools[{index}]"


def server_path(pool_index: int, server_index: int) -> str:
    """Path of a server, e.g. ``pools[1].servers[0]``."""
    return f"pools[{pool_index}].servers[{server_index}]"


@dataclass(frozen=True, slots=True)
class PlacedServer:
    """A server with where it sits: its pool, their indexes, its site."""

    server: Server
    pool: Pool
    pool_index: int
    index: int

    @property
    def path(self) -> str:
        """Path of the server in the file."""
        return server_path(self.pool_index, self.index)

    @property
    def site(self) -> str:
        """The site the server lives in."""
        return self.pool.site_of(self.server)


class Facts:
    """Indexes of one topology, shared by the rules of one validation.

    Name lookups return the first element with that exact name (duplicates are
    reported by `check_duplicate_names`).
    """

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self.sites: dict[str, Site] = {}
        for site in topology.sites:
            self.sites.setdefault(site.name, site)
        self.pools: dict[str, tuple[int, Pool]] = {}
        for i, pool in enumerate(topology.pools):
            self.pools.setdefault(pool.name, (i, pool))
        self.servers: dict[str, PlacedServer] = {}
        for placed in self.placed_servers:
            self.servers.setdefault(placed.server.name, placed)

    @cached_property
    def placed_servers(self) -> tuple[PlacedServer, ...]:
        """Every server with its pool, in file order."""
        return tuple(
            PlacedServer(server, pool, i, j)
            for i, pool in enumerate(self.topology.pools)
            for j, server in enumerate(pool.servers)
        )

    def pool(self, name: str | None) -> Pool | None:
        """The pool named `name`, None when there is none."""
        found = self.pools.get(name) if name is not None else None
        return found[1] if found else None

    def pool_index(self, name: str) -> int | None:
        """The index of the pool named `name`."""
        found = self.pools.get(name)
        return found[0] if found else None

    def rtt(self, a: str, b: str) -> float | None:
        """The RTT between two sites as declared by either side (the larger if both)."""
        declared = [
            ms
            for here, there in ((a, b), (b, a))
            if (site := self.sites.get(here)) is not None
            and (ms := site.rtt_to(there)) is not None
        ]
        return max(declared) if declared else None

    def same_metro(self, a: str, b: str) -> bool:
        """True when both sites declare the same metro area."""
        site_a, site_b = self.sites.get(a), self.sites.get(b)
        return (
            site_a is not None
            and site_b is not None
            and site_a.metro is not None
            and site_a.metro == site_b.metro
        )


Check = Callable[[Facts], Iterable[Violation]]


# --- names -------------------------------------------------------------------


def _bad_name(name: str) -> bool:
    return len(name) > _MAX_NAME or _NAME_RE.fullmatch(name) is None


def check_names(facts: Facts) -> Iterator[Violation]:
    """Names are host-name-like (letters, digits, hyphens, dot-separated labels);
    the SIP domain is a domain name."""
    t = facts.topology
    rule = "must be letters, digits and hyphens, optionally dot-separated"
    if not t.name.strip():
        yield error("name", "the topology needs a name")
    if _bad_name(t.sip_domain):
        yield error("sip_domain", f"{t.sip_domain!r} is not a domain name")
    for i, site in enumerate(t.sites):
        if _bad_name(site.name):
            yield error(f"sites[{i}].name", f"site name {site.name!r} {rule}")
        if site.metro is not None and _bad_name(site.metro):
            yield error(f"sites[{i}].metro", f"metro name {site.metro!r} {rule}")
    for i, pool in enumerate(t.pools):
        if _bad_name(pool.name):
            yield error(f"{pool_path(i)}.name", f"pool name {pool.name!r} {rule}")
    for placed in facts.placed_servers:
        if _bad_name(placed.server.name):
            yield error(f"{placed.path}.name", f"server name {placed.server.name!r} {rule}")


def _duplicates(named: Iterable[tuple[str, str]], kind: str) -> Iterator[Violation]:
    seen: dict[str, str] = {}
    for path, name in named:
        key = name.casefold()
        if key in seen:
            yield error(path, f"duplicate {kind} name {name!r} (first at {seen[key]})")
        else:
            seen[key] = path


def check_duplicate_names(facts: Facts) -> Iterator[Violation]:
    """Site names, pool names and server names (across the whole deployment) are
    unique, ignoring case."""
    t = facts.topology
    yield from _duplicates(((f"sites[{i}].name", s.name) for i, s in enumerate(t.sites)), "site")
    yield from _duplicates(
        ((f"{pool_path(i)}.name", p.name) for i, p in enumerate(t.pools)), "pool"
    )
    yield from _duplicates(
        ((f"{ps.path}.name", ps.server.name) for ps in facts.placed_servers), "server"
    )


# --- addresses and ports ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Listener:
    """One address:port something listens on, with what and where it is declared."""

    ip: IpAddress | None
    address: str
    port: int | None
    path: str          # path of the port (or of the address when the port is absent)
    address_path: str
    what: str


def listeners(facts: Facts) -> Iterator[Listener]:
    """Every address:port of the deployment: servers' SIP and admin ports, databases,
    external witnesses."""
    for ps in facts.placed_servers:
        s = ps.server
        ip = parse_ip(s.address)
        yield Listener(ip, s.address, s.sip_port, f"{ps.path}.sip_port",
                       f"{ps.path}.address", f"SIP of server {s.name}")
        yield Listener(ip, s.address, s.admin_port, f"{ps.path}.admin_port",
                       f"{ps.path}.address", f"admin API of server {s.name}")
        if ps.pool.role is PoolRole.DNS:
            yield Listener(ip, s.address, s.dns_endpoint.port, f"{ps.path}.dns_port",
                           f"{ps.path}.address", f"DNS of server {s.name}")
    for i, pool in enumerate(facts.topology.pools):
        backend = pool.backend
        if backend is None:
            continue
        base = f"{pool_path(i)}.backend"
        for role, db in (("principal", backend.principal), ("mirror", backend.mirror)):
            if db is not None:
                yield Listener(parse_ip(db.address), db.address, db.port, f"{base}.{role}.port",
                               f"{base}.{role}.address", f"back end {role} of pool {pool.name}")
        witness = backend.witness
        if witness is not None and witness.address is not None:
            yield Listener(parse_ip(witness.address), witness.address, witness.port,
                           f"{base}.witness.port", f"{base}.witness.address",
                           f"witness of pool {pool.name}")


def check_addresses(facts: Facts) -> Iterator[Violation]:
    """Every address is an IP literal a server can bind (not a host name, not
    0.0.0.0/::, not multicast)."""
    seen: set[str] = set()
    for listener in listeners(facts):
        if listener.address_path in seen:
            continue
        seen.add(listener.address_path)
        ip = listener.ip
        if ip is None:
            yield error(listener.address_path,
                        f"{listener.address!r} is not an IP address literal ({listener.what})")
        elif ip.is_unspecified or ip.is_multicast:
            yield error(listener.address_path,
                        f"{listener.address} cannot be a server's own address ({listener.what})")


def check_ports(facts: Facts) -> Iterator[Violation]:
    """Ports are 1..65535; an external witness gives its port."""
    for listener in listeners(facts):
        if listener.port is None:
            continue  # a witness without a port: reported by check_backend
        if not 1 <= listener.port <= 65535:
            yield error(listener.path, f"port {listener.port} is not in 1..65535 ({listener.what})")


def check_duplicate_endpoints(facts: Facts) -> Iterator[Violation]:
    """No two listeners (SIP, admin, database, witness) share one address:port."""
    seen: dict[tuple[IpAddress, int], Listener] = {}
    for listener in listeners(facts):
        if listener.ip is None or listener.port is None:
            continue
        key = (listener.ip, listener.port)
        first = seen.setdefault(key, listener)
        if first is not listener:
            yield error(
                listener.path,
                f"{listener.address}:{listener.port} ({listener.what}) is already used by "
                f"{first.what} at {first.path}",
            )


# --- references ------------------------------------------------------------------


def _pool_references(pool: Pool) -> Iterator[tuple[str, str | None]]:
    yield "paired_with", pool.paired_with
    yield "backup_registrar", pool.backup_registrar
    yield "edge_pool", pool.edge_pool
    yield "next_hop", pool.next_hop


def _site_references(pool: Pool) -> Iterator[tuple[str, str | None]]:
    yield "site", pool.site
    backend = pool.backend
    if backend is not None:
        for role, db in (("principal", backend.principal), ("mirror", backend.mirror)):
            yield f"backend.{role}.site", db.site if db is not None else None
        if backend.witness is not None:
            yield "backend.witness.site", backend.witness.site


def check_references(facts: Facts) -> Iterator[Violation]:
    """Every name that refers to a site, pool or server names one that exists."""
    t = facts.topology
    for i, site in enumerate(t.sites):
        for rtt in site.rtt_ms:
            if rtt.site not in facts.sites:
                yield error(f"sites[{i}].rtt_ms.{rtt.site}", f"unknown site {rtt.site!r}")
    for i, pool in enumerate(t.pools):
        base = pool_path(i)
        for key, site_name in _site_references(pool):
            if site_name is not None and site_name not in facts.sites:
                yield error(f"{base}.{key}", f"unknown site {site_name!r}")
        for key, pool_name in _pool_references(pool):
            if pool_name is not None and pool_name not in facts.pools:
                yield error(f"{base}.{key}", f"unknown pool {pool_name!r}")
        for j, server in enumerate(pool.servers):
            if server.site is not None and server.site not in facts.sites:
                yield error(f"{server_path(i, j)}.site", f"unknown site {server.site!r}")
        witness = pool.backend.witness if pool.backend is not None else None
        witness_server = witness.server if witness is not None else None
        if witness_server is not None and witness_server not in facts.servers:
            yield error(f"{base}.backend.witness.server", f"unknown server {witness_server!r}")
        for k, name in enumerate(pool.active_servers or ()):
            if name not in pool.server_names:
                yield error(f"{base}.active_servers[{k}]",
                            f"{name!r} is not a server of pool {pool.name}")
    if t.federation_route is not None and t.federation_route not in facts.pools:
        yield error("federation_route", f"unknown pool {t.federation_route!r}")


# --- sites -------------------------------------------------------------------------


def check_site_rtt(facts: Facts) -> Iterator[Violation]:
    """RTTs are non-negative, to another site, and agree when both sides declare them."""
    declared: dict[tuple[str, str], float] = {}
    for i, site in enumerate(facts.topology.sites):
        for rtt in site.rtt_ms:
            path = f"sites[{i}].rtt_ms.{rtt.site}"
            if rtt.site == site.name:
                yield error(path, "a site has no RTT to itself")
                continue
            if rtt.ms < 0:
                yield error(path, f"RTT {rtt.ms:g} ms is negative")
                continue
            back = declared.get((rtt.site, site.name))
            if back is not None and back != rtt.ms:
                yield warning(path, f"RTT {site.name}->{rtt.site} is {rtt.ms:g} ms but "
                              f"{rtt.site}->{site.name} is {back:g} ms; the larger is used")
            declared[(site.name, rtt.site)] = rtt.ms


# --- settings ------------------------------------------------------------------------


def check_settings(facts: Facts) -> Iterator[Violation]:
    """Timers are positive and consistent with each other (no silent adjustment):
    min ≤ default ≤ max registration expiry; failure detection (FE-3) and client
    keepalive shorter than the minimum expiry; heartbeats shorter than detection;
    the abuse limits (`check_abuse_limits`)."""
    s = facts.topology.settings
    base = "settings"
    for fd in dataclasses.fields(Settings):
        value = getattr(s, fd.name)
        if not isinstance(value, int | float):
            continue
        if value <= 0:
            yield error(f"{base}.{fd.name}", f"{fd.name} must be positive, got {value:g}")
    if s.registration_default_expires < s.registration_min_expires:
        yield error(f"{base}.registration_default_expires",
                    f"default expiry {s.registration_default_expires} s is below the "
                    f"minimum {s.registration_min_expires} s")
    if s.registration_max_expires < s.registration_default_expires:
        yield error(f"{base}.registration_max_expires",
                    f"maximum expiry {s.registration_max_expires} s is below the "
                    f"default {s.registration_default_expires} s")
    allowed = {"SHA-256", "MD5"}
    if not s.digest_algorithms or not set(s.digest_algorithms) <= allowed \
            or len(set(s.digest_algorithms)) != len(s.digest_algorithms):
        yield error(f"{base}.digest_algorithms",
                    "must list SHA-256 and/or MD5, each at most once")
    if s.failure_detection_seconds >= s.registration_min_expires:
        yield error(f"{base}.failure_detection_seconds",
                    f"failure detection ({s.failure_detection_seconds:g} s) must be shorter "
                    f"than the minimum registration expiry ({s.registration_min_expires} s)")
    if s.keepalive_seconds >= s.registration_min_expires:
        yield error(f"{base}.keepalive_seconds",
                    f"keepalive interval ({s.keepalive_seconds:g} s) must be shorter than "
                    f"the minimum registration expiry ({s.registration_min_expires} s)")
    if s.heartbeat_seconds >= s.failure_detection_seconds:
        yield error(f"{base}.heartbeat_seconds",
                    f"heartbeat interval ({s.heartbeat_seconds:g} s) must be shorter than "
                    f"failure detection ({s.failure_detection_seconds:g} s)")
    elif s.failure_detection_seconds < 2 * s.heartbeat_seconds:
        yield warning(f"{base}.heartbeat_seconds",
                      f"failure detection ({s.failure_detection_seconds:g} s) is less than two "
                      f"heartbeats ({s.heartbeat_seconds:g} s): one lost heartbeat declares "
                      f"a live server dead")
    yield from check_abuse_limits(s.abuse, f"{base}.abuse")


#: The most failures a lockout policy may count (a stored row keeps that many times).
MAX_LOCKOUT_FAILURES = 1000


def check_abuse_limits(limits: AbuseLimits, base: str) -> Iterator[Violation]:
    """Every limit is >= 0 (0: off); a rate limit has a burst of at least one request;
    a lockout has a window and a duration; trusted sources are IP addresses or
    networks."""
    for fd in dataclasses.fields(AbuseLimits):
        value = getattr(limits, fd.name)
        if isinstance(value, int | float) and value < 0:
            yield error(f"{base}.{fd.name}", f"{fd.name} must be >= 0 (0 turns the limit "
                        f"off), got {value:g}")
    if limits.rate_per_second > 0 and limits.rate_burst < 1:
        yield error(f"{base}.rate_burst", "rate_burst must be at least 1 when "
                    "rate_per_second is set (0 turns the rate limit off)")
    if limits.lockout_failures > MAX_LOCKOUT_FAILURES:
        yield error(f"{base}.lockout_failures", f"lockout_failures must be at most "
                    f"{MAX_LOCKOUT_FAILURES}, got {limits.lockout_failures}")
    if limits.lockout_failures > 0:
        for name in ("lockout_window_seconds", "lockout_seconds"):
            if getattr(limits, name) == 0:
                yield error(f"{base}.{name}", f"{name} must be positive when "
                            "lockout_failures is set (0 turns the lockout off)")
    for index, source in enumerate(limits.trusted_sources):
        try:
            ipaddress.ip_network(source, strict=False)
        except ValueError:
            yield error(f"{base}.trusted_sources[{index}]", f"{source!r} is not an IP "
                        "address or network (e.g. 10.1.0.0/16)")
