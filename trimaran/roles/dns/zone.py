"""The records a dns server answers for the deployment's SIP domain, built from the topology.

Theory of operation. `build_zone` turns the topology, the answering server's own site,
the view its dns pool serves (`Pool.dns_view`) and a health view (server name ->
healthy) into a `Zone`: a mapping of owner name and type to an rrset, rebuilt whenever
the health view changes (it is small). All records have a short TTL, `DEFAULT_TTL`.

Both views: ``<domain>`` has an SOA and NS naming the dns servers *of that view*, and
``<ns>.<domain>`` their addresses.

The internal view (what clients and servers inside see):

- ``<domain>``: A/AAAA of the registrar (Front End) pools' healthy servers;
- ``<server>.<domain>``: A/AAAA of every server of the topology, whatever its health (the
  name designates one machine; health filtering applies to the names that choose
  among machines: the domain, pool names and SRV);
- ``<pool>.<domain>``: A/AAAA of the pool's healthy servers;
- ``_sip._udp`` and ``_sip._tcp``: SRV to the Director pools' servers when the topology
  has Director pools, else to the Front End pools' servers; servers in the answering
  server's own site have priority 10, the others 20, all weight 10, port = sip_port.
- ``_sips._tcp`` and ``_sipinternaltls._tcp`` are not in the zone (NXDOMAIN) while the
  topology has no TLS port: a client then falls back to ``_sip._tcp`` (RFC 3263 §4.1).

The external view (what remote users and federated partners see, EDGE-2) holds
nothing of the inside: no name or address of a Front End, Director, Mediation or other
internal server, nor the inside address of an Edge server. Only Edge servers with an
external address take part, under ``<server>.edge.<domain>``:

- ``<server>.edge.<domain>``: A/AAAA of the Edge server's external address, whatever
  its health;
- ``_sip._tls`` and ``_sip._tcp``: SRV to every Edge pool's healthy servers, port =
  external port; the priority is the pool's rank among the Edge pools in topology order
  (first 10, next 20, ...), all weight 10 (clients spread over a pool's servers and
  move to the next pool when every server of one fails);
- ``_sipfederationtls._tcp``: SRV to the federation route's Edge pool (priority 10),
  then the other federation-enabled Edge pools in topology order (20, 30, ...);
- ``<domain>``: A/AAAA of the external addresses of the first Edge pool that has a
  healthy server (the RFC 3263 §4.2 fallback of a client without SRV).

Health: unhealthy servers are left out of the answers for the domain, pool names and
SRV; when that would leave an answer empty (no healthy server in the pool, or none
among all SRV targets / registrar pools), it is answered with all of the servers
rather than with nothing (a client then tries them and fails fast, instead of seeing
the name vanish, which would send it to the domain's A fallback of RFC 3263). So a
dead single-server pool drops out of SRV and domain answers while another pool is
healthy, but its pool name keeps its address. The internal view weighs the health of
Front End and Director servers, the external view that of the Edge servers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from trimaran.topology.model import Endpoint, Pool, PoolRole, Server, Topology, parse_ip

DEFAULT_TTL = 5
OWN_SITE_PRIORITY = 10
OTHER_SITE_PRIORITY = 20
#: SRV priority of the first Edge pool; each next pool adds as much again.
PRIORITY_STEP = 10
SRV_WEIGHT = 10
SRV_SERVICES = ("_sip._udp", "_sip._tcp")
EXTERNAL_SRV_SERVICES = ("_sip._tls", "_sip._tcp")
FEDERATION_SRV = "_sipfederationtls._tcp"
#: The label under which the external view names Edge servers.
EDGE_LABEL = "edge"
INTERNAL_VIEW = "internal"
EXTERNAL_VIEW = "external"
VIEWS = (INTERNAL_VIEW, EXTERNAL_VIEW)
# Roles whose servers are polled for health and filtered out of answers when unhealthy.
SIP_ROLES = frozenset({PoolRole.FRONTEND, PoolRole.DIRECTOR})

IN = dns.rdataclass.IN
A, AAAA, NS, SOA, SRV = (dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.NS,
                         dns.rdatatype.SOA, dns.rdatatype.SRV)

Healthy = Callable[[str], bool]
Placed = tuple[Pool, Server]


@dataclass(frozen=True, slots=True)
class Zone:
    """The records of one domain: rrsets by (owner, type), and every name that exists
    (owners and their ancestors up to the origin, the empty non-terminals)."""

    origin: dns.name.Name
    rrsets: dict[tuple[dns.name.Name, dns.rdatatype.RdataType], dns.rrset.RRset]
    names: frozenset[dns.name.Name]

    def get(self, name: dns.name.Name,
            rdtype: dns.rdatatype.RdataType) -> dns.rrset.RRset | None:
        """The rrset of `name` and `rdtype`, None when there is none."""
        return self.rrsets.get((name, rdtype))

    def of_name(self, name: dns.name.Name) -> list[dns.rrset.RRset]:
        """Every rrset of `name`."""
        return [rrset for (owner, _), rrset in self.rrsets.items() if owner == name]

    @property
    def soa(self) -> dns.rrset.RRset:
        """The zone's SOA (for the authority section of negative answers)."""
        rrset = self.rrsets[(self.origin, SOA)]
        return rrset


def check_view(view: str) -> str:
    """`view` when it is a known view; ValueError naming the choices otherwise."""
    if view not in VIEWS:
        raise ValueError(f"unknown dns view {view!r}: expected one of {', '.join(VIEWS)}")
    return view


def sip_pools(topology: Topology) -> tuple[Pool, ...]:
    """The pools SRV records point at: Director pools when there are any, else Front Ends."""
    directors = tuple(p for p in topology.pools if p.role is PoolRole.DIRECTOR)
    return directors or tuple(p for p in topology.pools if p.role is PoolRole.FRONTEND)


def edge_pools(topology: Topology) -> tuple[Pool, ...]:
    """The Edge pools the outside can reach (a server with an external address), in
    topology order: the order of their SRV priorities."""
    return tuple(p for p in topology.pools if p.role is PoolRole.EDGE
                 and any(s.external_endpoint is not None for s in p.servers))


def federation_pools(topology: Topology) -> tuple[Pool, ...]:
    """The Edge pools partners may federate through, in SRV order: the federation route
    first, then the other federation-enabled Edge pools (EDGE-3)."""
    reachable = edge_pools(topology)
    route = tuple(p for p in reachable if p.name == topology.federation_route)
    return route + tuple(p for p in reachable if p.federation and p not in route)


def _external(pools: Iterable[Pool]) -> tuple[Placed, ...]:
    return tuple((p, s) for p in pools for s in p.servers if s.external_endpoint is not None)


def _outside(server: Server) -> Endpoint:
    endpoint = server.external_endpoint
    if endpoint is None:
        raise ValueError(f"Edge server {server.name} has no external address")
    return endpoint


def polled_servers(topology: Topology, view: str = INTERNAL_VIEW) -> tuple[Server, ...]:
    """The servers whose health decides whether they are in the answers of `view`."""
    if check_view(view) == EXTERNAL_VIEW:
        return tuple(s for _, s in _external(edge_pools(topology)))
    return tuple(s for p in topology.pools if p.role in SIP_ROLES for s in p.servers)


def _alive(placed: tuple[Placed, ...], healthy: Healthy,
           polled: frozenset[PoolRole]) -> tuple[Placed, ...]:
    live = tuple((p, s) for p, s in placed if p.role not in polled or healthy(s.name))
    return live or placed


def live_servers(pools: Iterable[Pool], healthy: Healthy) -> tuple[Placed, ...]:
    """The healthy servers of `pools` (servers of roles not polled count as healthy);
    all of them when none is (see the module doc)."""
    return _alive(tuple((p, s) for p in pools for s in p.servers), healthy, SIP_ROLES)


def live_edges(pools: Iterable[Pool], healthy: Healthy) -> tuple[Placed, ...]:
    """The healthy externally reachable servers of the Edge `pools`; all of them when
    none is (see the module doc)."""
    return _alive(_external(pools), healthy, frozenset({PoolRole.EDGE}))


class _Builder:
    def __init__(self, origin: dns.name.Name, ttl: int) -> None:
        self.origin, self.ttl = origin, ttl
        self.rrsets: dict[tuple[dns.name.Name, dns.rdatatype.RdataType], dns.rrset.RRset] = {}

    def name(self, label: str) -> dns.name.Name:
        return dns.name.from_text(label.lower(), self.origin)

    def add(self, owner: dns.name.Name, rdtype: dns.rdatatype.RdataType, text: str) -> None:
        rrset = self.rrsets.get((owner, rdtype))
        if rrset is None:
            rrset = self.rrsets[(owner, rdtype)] = dns.rrset.RRset(owner, IN, rdtype)
        rrset.add(dns.rdata.from_text(IN, rdtype, text), self.ttl)

    def address(self, owner: dns.name.Name, address: str) -> None:
        ip = parse_ip(address)
        if ip is not None:
            self.add(owner, AAAA if ip.version == 6 else A, str(ip))

    def addresses(self, owner: dns.name.Name, servers: Iterable[Server]) -> None:
        for server in servers:
            self.address(owner, server.address)

    def zone(self) -> Zone:
        names: set[dns.name.Name] = set()
        for owner, _ in self.rrsets:
            while owner.is_subdomain(self.origin) and owner not in names:
                names.add(owner)
                if owner == self.origin:
                    break
                owner = owner.parent()
        return Zone(self.origin, self.rrsets, frozenset(names))


def build_zone(topology: Topology, own_site: str, healthy: Healthy,
               ttl: int = DEFAULT_TTL, view: str = INTERNAL_VIEW) -> Zone:
    """The records a dns server of `own_site` answering `view` answers, given the
    health view."""
    b = _Builder(dns.name.from_text(topology.sip_domain.lower()), ttl)
    _apex(b, topology, check_view(view))
    if view == EXTERNAL_VIEW:
        _external_view(b, topology, healthy)
    else:
        _internal_view(b, topology, own_site, healthy)
    return b.zone()


def _apex(b: _Builder, topology: Topology, view: str) -> None:
    """SOA and NS of the domain, naming the dns servers of `view`, and their addresses."""
    dns_servers = [s for p in topology.pools if p.role is PoolRole.DNS and p.dns_view == view
                   for s in p.servers]
    mname = b.name(dns_servers[0].name) if dns_servers else b.name("ns")
    b.add(b.origin, SOA, f"{mname} {b.name('hostmaster')} 1 60 30 3600 {b.ttl}")
    for server in dns_servers:
        b.add(b.origin, NS, str(b.name(server.name)))
        b.addresses(b.name(server.name), (server,))


def _internal_view(b: _Builder, topology: Topology, own_site: str, healthy: Healthy) -> None:
    for pool in topology.pools:
        for server in pool.servers:
            b.addresses(b.name(server.name), (server,))
        b.addresses(b.name(pool.name), (s for _, s in live_servers((pool,), healthy)))
    registrars = (p for p in topology.pools if p.role is PoolRole.FRONTEND)
    b.addresses(b.origin, (s for _, s in live_servers(registrars, healthy)))
    for service in SRV_SERVICES:
        owner = b.name(service)
        for pool, server in live_servers(sip_pools(topology), healthy):
            priority = OWN_SITE_PRIORITY if pool.site_of(server) == own_site \
                else OTHER_SITE_PRIORITY
            b.add(owner, SRV, f"{priority} {SRV_WEIGHT} {server.sip_port} "
                  f"{b.name(server.name)}")


def _external_view(b: _Builder, topology: Topology, healthy: Healthy) -> None:
    pools = edge_pools(topology)

    def edge_name(server: Server) -> dns.name.Name:
        return b.name(f"{server.name}.{EDGE_LABEL}")

    for _, server in _external(pools):
        b.address(edge_name(server), _outside(server).host)

    def srv(owner: dns.name.Name, ranked: tuple[Pool, ...]) -> None:
        rank = {pool.name: PRIORITY_STEP * (i + 1) for i, pool in enumerate(ranked)}
        for pool, server in live_edges(ranked, healthy):
            b.add(owner, SRV, f"{rank[pool.name]} {SRV_WEIGHT} {_outside(server).port} "
                  f"{edge_name(server)}")

    for service in EXTERNAL_SRV_SERVICES:
        srv(b.name(service), pools)
    srv(b.name(FEDERATION_SRV), federation_pools(topology))
    live = live_edges(pools, healthy)
    if live:
        first = live[0][0]  # the first pool with a healthy server (or the first pool)
        for pool, server in live:
            if pool.name == first.name:
                b.address(b.origin, _outside(server).host)
