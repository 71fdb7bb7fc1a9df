"""The records a dns server answers for the deployment's SIP domain, built from the topology.

Theory of operation. `build_zone` turns the topology, the answering server's own site
and a health view (server name -> healthy) into a `Zone`: a mapping of owner name and
type to an rrset, rebuilt whenever the health view changes (it is small).

Records (all with a short TTL, `DEFAULT_TTL`):

- ``<domain>``: SOA and NS (the dns servers), and A/AAAA of the registrar (Front End)
  pools' healthy servers;
- ``<server>.<domain>``: A/AAAA of every server of the topology, whatever its health (the
  name designates one machine; health filtering applies to the names that choose
  among machines: the domain, pool names and SRV);
- ``<pool>.<domain>``: A/AAAA of the pool's healthy servers;
- ``_sip._udp`` and ``_sip._tcp``: SRV to the Director pools' servers when the topology
  has Director pools, else to the Front End pools' servers; servers in the answering
  server's own site have priority 10, the others 20, all weight 10, port = sip_port.
- ``_sips._tcp`` and ``_sipinternaltls._tcp`` are not in the zone (NXDOMAIN) while the
  topology has no TLS port: a client then falls back to ``_sip._tcp`` (RFC 3263 §4.1).

Health: unhealthy servers are left out of the answers for the domain, pool names and
SRV; when that would leave an answer empty (no healthy server in the pool, or none
among all SRV targets / registrar pools), it is answered with all of the servers
rather than with nothing (a client then tries them and fails fast, instead of seeing
the name vanish, which would send it to the domain's A fallback of RFC 3263). So a
dead single-server pool drops out of SRV and domain answers while another pool is
healthy, but its pool name keeps its address.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from trimaran.topology.model import Pool, PoolRole, Server, Topology, parse_ip

DEFAULT_TTL = 5
OWN_SITE_PRIORITY = 10
OTHER_SITE_PRIORITY = 20
SRV_WEIGHT = 10
SRV_SERVICES = ("_sip._udp", "_sip._tcp")
# Roles whose servers are polled for health and filtered out of answers when unhealthy.
SIP_ROLES = frozenset({PoolRole.FRONTEND, PoolRole.DIRECTOR})

IN = dns.rdataclass.IN
A, AAAA, NS, SOA, SRV = (dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.NS,
                         dns.rdatatype.SOA, dns.rdatatype.SRV)

Healthy = Callable[[str], bool]


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


def sip_pools(topology: Topology) -> tuple[Pool, ...]:
    """The pools SRV records point at: Director pools when there are any, else Front Ends."""
    directors = tuple(p for p in topology.pools if p.role is PoolRole.DIRECTOR)
    return directors or tuple(p for p in topology.pools if p.role is PoolRole.FRONTEND)


def polled_servers(topology: Topology) -> tuple[Server, ...]:
    """The servers whose health decides whether they are in answers."""
    return tuple(s for p in topology.pools if p.role in SIP_ROLES for s in p.servers)


def live_servers(pools: Iterable[Pool], healthy: Healthy) -> tuple[tuple[Pool, Server], ...]:
    """The healthy servers of `pools` (servers of roles not polled count as healthy);
    all of them when none is (see the module doc)."""
    every = tuple((p, s) for p in pools for s in p.servers)
    live = tuple((p, s) for p, s in every if p.role not in SIP_ROLES or healthy(s.name))
    return live or every


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

    def addresses(self, owner: dns.name.Name, servers: Iterable[Server]) -> None:
        for server in servers:
            ip = parse_ip(server.address)
            if ip is not None:
                self.add(owner, AAAA if ip.version == 6 else A, str(ip))


def build_zone(topology: Topology, own_site: str, healthy: Healthy,
               ttl: int = DEFAULT_TTL) -> Zone:
    """The records a dns server of `own_site` answers, given the health view."""
    origin = dns.name.from_text(topology.sip_domain.lower())
    b = _Builder(origin, ttl)
    dns_servers = [s for p in topology.pools if p.role is PoolRole.DNS for s in p.servers]
    mname = b.name(dns_servers[0].name) if dns_servers else b.name("ns")
    b.add(origin, SOA, f"{mname} {b.name('hostmaster')} 1 60 30 3600 {ttl}")
    for server in dns_servers:
        b.add(origin, NS, str(b.name(server.name)))
    for pool in topology.pools:
        for server in pool.servers:
            b.addresses(b.name(server.name), (server,))
        b.addresses(b.name(pool.name), (s for _, s in live_servers((pool,), healthy)))
    registrars = (p for p in topology.pools if p.role is PoolRole.FRONTEND)
    b.addresses(origin, (s for _, s in live_servers(registrars, healthy)))
    for service in SRV_SERVICES:
        owner = b.name(service)
        for pool, server in live_servers(sip_pools(topology), healthy):
            priority = OWN_SITE_PRIORITY if pool.site_of(server) == own_site \
                else OTHER_SITE_PRIORITY
            b.add(owner, SRV, f"{priority} {SRV_WEIGHT} {server.sip_port} "
                  f"{b.name(server.name)}")
    names: set[dns.name.Name] = set()
    for owner, _ in b.rrsets:
        while owner.is_subdomain(origin) and owner not in names:
            names.add(owner)
            if owner == origin:
                break
            owner = owner.parent()
    return Zone(origin, b.rrsets, frozenset(names))
