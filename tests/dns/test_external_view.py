"""The external DNS view (EDGE-2): remote users and federated partners find the Edge
pools by SRV priority, the federation route first, and nothing of the inside."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import AsyncIterator, Iterator
from typing import Any

import dns.asyncquery
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from tests.dns.test_server import FakeHealth, wait_for
from trimaran.client.resolve import ResolveError, resolve_federation, resolve_servers
from trimaran.net.transport import Address
from trimaran.roles.dns.handler import answer
from trimaran.roles.dns.server import DnsConfig, DnsServer
from trimaran.roles.dns.zone import Zone, build_zone
from trimaran.topology.model import (
    Backend,
    DatabaseEndpoint,
    Edition,
    Pool,
    PoolRole,
    Server,
    Site,
    Topology,
)
from trimaran.topology.resolver import Resolver

DOMAIN = "contoso.test"
NS_OUT = ("127.0.42.52", 5353)
EDGE1 = {"edge1a": ("127.0.42.161", 5061), "edge1b": ("127.0.42.162", 5061)}
EDGE2 = {"edge2a": ("127.0.42.171", 5062), "edge2b": ("127.0.42.172", 5062)}
BACKEND = "127.0.42.30"


def _server(name: str, last: int, dns_port: int | None = None) -> Server:
    return Server(name, f"127.0.42.{last}", sip_port=5100 + last, admin_port=8100 + last,
                  dns_port=dns_port)


def _edge(name: str, last: int, external: tuple[str, int]) -> Server:
    return dataclasses.replace(_server(name, last), external_address=external[0],
                               external_port=external[1])


def topology(**changes: dict[str, Any]) -> Topology:
    """Two sites: Front End, Director, Mediation, an internal and an external dns pool,
    and two Edge pools with external addresses, the second federation-enabled and the
    federation route. `changes` replace pool fields: ``edge1={"federation": True}``."""
    pools: tuple[Pool, ...] = (
        Pool("fe1", "dc1", PoolRole.FRONTEND, (_server("fe1a", 11), _server("fe1b", 12)),
             edition=Edition.ENTERPRISE, backend=Backend(DatabaseEndpoint(BACKEND)),
             edge_pool="edge1"),
        Pool("fe2", "dc2", PoolRole.FRONTEND, (_server("fe2a", 21),),
             edition=Edition.STANDARD, edge_pool="edge2"),
        Pool("dir1", "dc1", PoolRole.DIRECTOR, (_server("dir1a", 31),)),
        Pool("med1", "dc1", PoolRole.MEDIATION, (_server("med1a", 41),), next_hop="fe1"),
        Pool("dnsin", "dc1", PoolRole.DNS, (_server("nsin", 51, dns_port=5353),)),
        Pool("dnsout", "dc1", PoolRole.DNS, (_server("nsout", 52, dns_port=5353),),
             dns_view="external"),
        Pool("edge1", "dc1", PoolRole.EDGE,
             tuple(_edge(n, 61 + i, e) for i, (n, e) in enumerate(EDGE1.items())),
             next_hop="dir1"),
        Pool("edge2", "dc2", PoolRole.EDGE,
             tuple(_edge(n, 71 + i, e) for i, (n, e) in enumerate(EDGE2.items())),
             next_hop="fe2", federation=True),
    )
    pools = tuple(dataclasses.replace(p, **changes.get(p.name, {})) for p in pools)
    return Topology("edge-dns", DOMAIN, (Site("dc1"), Site("dc2")), pools,
                    federation_route="edge2")


def external(topo: Topology | None = None, healthy: frozenset[str] | None = None) -> Zone:
    return build_zone(topo or topology(), "dc1",
                      lambda name: healthy is None or name in healthy, view="external")


def ask(zone: Zone, name: str, rdtype: str) -> dns.message.Message:
    wire = answer(zone, dns.message.make_query(name, rdtype).to_wire())
    assert wire is not None
    return dns.message.from_wire(wire)


def srv(reply: dns.message.Message) -> set[tuple[int, int, int, str]]:
    return {(r.priority, r.weight, r.port, r.target.to_text()) for rrset in reply.answer
            for r in rrset}


def addresses(reply: dns.message.Message) -> set[str]:
    return {r.address for rrset in reply.answer for r in rrset}


def edge_srv(priority: int, edges: dict[str, tuple[str, int]]) -> set[tuple[int, int, int, str]]:
    return {(priority, 10, port, f"{name}.edge.{DOMAIN}.") for name, (_, port) in edges.items()}


def hosts(edges: dict[str, tuple[str, int]]) -> set[str]:
    return {host for host, _ in edges.values()}


# --- the zone (no sockets) ------------------------------------------------------------


def test_sip_srv_points_at_every_edge_pool_by_topology_order() -> None:
    zone = external()
    for service in ("_sip._tls", "_sip._tcp"):
        reply = ask(zone, f"{service}.{DOMAIN}", "SRV")
        assert srv(reply) == edge_srv(10, EDGE1) | edge_srv(20, EDGE2)  # EDGE-2
        glue = {r.address for rrset in reply.additional for r in rrset}
        assert glue == hosts(EDGE1) | hosts(EDGE2)


def test_edge_names_and_the_domain_resolve_to_external_addresses() -> None:
    zone = external()
    assert addresses(ask(zone, f"edge2a.edge.{DOMAIN}", "A")) == {"127.0.42.171"}
    assert addresses(ask(zone, DOMAIN, "A")) == hosts(EDGE1)  # the first Edge pool
    assert {r.target.to_text() for r in ask(zone, DOMAIN, "NS").answer[0]} == {
        f"nsout.{DOMAIN}."}
    assert addresses(ask(zone, f"nsout.{DOMAIN}", "A")) == {"127.0.42.52"}


def test_federation_srv_lists_the_route_first_then_other_federation_pools() -> None:
    name = f"_sipfederationtls._tcp.{DOMAIN}"
    assert srv(ask(external(), name, "SRV")) == edge_srv(10, EDGE2)  # EDGE-3
    both = topology(edge1={"federation": True})
    assert srv(ask(external(both), name, "SRV")) == edge_srv(10, EDGE2) | edge_srv(20, EDGE1)
    no_route = dataclasses.replace(both, federation_route=None)
    assert srv(ask(external(no_route), name, "SRV")) == \
        edge_srv(10, EDGE1) | edge_srv(20, EDGE2)
    closed = dataclasses.replace(topology(edge2={"federation": False}), federation_route=None)
    assert ask(external(closed), name, "SRV").rcode() == dns.rcode.NXDOMAIN


def test_unhealthy_edge_servers_leave_srv_and_domain_answers() -> None:
    every = set(EDGE1) | set(EDGE2)
    one_down = external(healthy=frozenset(every - {"edge1a"}))
    assert srv(ask(one_down, f"_sip._tls.{DOMAIN}", "SRV")) == \
        edge_srv(10, {"edge1b": EDGE1["edge1b"]}) | edge_srv(20, EDGE2)
    assert addresses(ask(one_down, DOMAIN, "A")) == {"127.0.42.162"}
    # A server's own name still resolves: it designates one machine.
    assert addresses(ask(one_down, f"edge1a.edge.{DOMAIN}", "A")) == {"127.0.42.161"}
    pool_down = external(healthy=frozenset(EDGE2))
    assert srv(ask(pool_down, f"_sip._tcp.{DOMAIN}", "SRV")) == edge_srv(20, EDGE2)
    assert addresses(ask(pool_down, DOMAIN, "A")) == hosts(EDGE2)
    route_down = external(healthy=frozenset(EDGE1))
    # No healthy federation pool: answered with all of them rather than nothing.
    assert srv(ask(route_down, f"_sipfederationtls._tcp.{DOMAIN}", "SRV")) == \
        edge_srv(10, EDGE2)
    nobody = external(healthy=frozenset())
    assert srv(ask(nobody, f"_sip._tls.{DOMAIN}", "SRV")) == \
        edge_srv(10, EDGE1) | edge_srv(20, EDGE2)


def _inside(topo: Topology) -> tuple[set[str], set[str]]:
    """(names, addresses) of everything internal: every server but the external dns
    servers (Edge servers count for their inside address), pools but Edge pools, the
    back end."""
    names: set[str] = set()
    found: set[str] = {BACKEND}
    for pool in topo.pools:
        if pool.role is PoolRole.DNS and pool.dns_view == "external":
            continue
        found.update(s.address for s in pool.servers)
        if pool.role is not PoolRole.EDGE:
            names.add(pool.name)
            names.update(s.name for s in pool.servers)
    return names, found


def _mentions(rrset: dns.rrset.RRset) -> Iterator[dns.name.Name | str]:
    yield rrset.name
    for rdata in rrset:
        if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            yield rdata.address
        elif rrset.rdtype in (dns.rdatatype.SRV, dns.rdatatype.NS):
            yield rdata.target
        elif rrset.rdtype == dns.rdatatype.SOA:
            yield from (rdata.mname, rdata.rname)
        else:
            raise AssertionError(f"unexpected record type in the external view: {rrset}")


def test_no_internal_name_or_address_appears_in_the_external_view() -> None:
    topo = topology(edge1={"federation": True})
    names, inside = _inside(topo)
    for healthy in (None, frozenset({"edge2a"}), frozenset()):
        zone = external(topo, healthy)
        replies = [ask(zone, name.to_text(), "ANY") for name in zone.names]
        rrsets = list(zone.rrsets.values()) + [
            rrset for reply in replies
            for rrset in (*reply.answer, *reply.authority, *reply.additional)]
        assert len(zone.rrsets) >= 9
        for rrset in rrsets:
            for item in _mentions(rrset):
                if isinstance(item, str):
                    assert item not in inside, f"{item} leaks in {rrset}"
                else:
                    leaked = {label.decode() for label in item.labels} & names
                    assert not leaked, f"{leaked} leak in {rrset}"


def test_internal_names_are_unknown_to_the_outside() -> None:
    zone = external()
    for name in (f"fe1a.{DOMAIN}", f"dir1.{DOMAIN}", f"med1a.{DOMAIN}", f"nsin.{DOMAIN}",
                 f"edge1a.{DOMAIN}", f"_sip._udp.{DOMAIN}", f"_sipinternaltls._tcp.{DOMAIN}"):
        assert ask(zone, name, "A").rcode() == dns.rcode.NXDOMAIN, name
    assert ask(zone, "example.com", "A").rcode() == dns.rcode.REFUSED


def test_internal_view_is_unchanged_by_edge_pools_and_external_dns() -> None:
    zone = build_zone(topology(), "dc1", lambda name: True)
    assert srv(ask(zone, f"_sip._tcp.{DOMAIN}", "SRV")) == {
        (10, 10, 5131, f"dir1a.{DOMAIN}.")}
    assert addresses(ask(zone, DOMAIN, "A")) == {"127.0.42.11", "127.0.42.12", "127.0.42.21"}
    assert {r.target.to_text() for r in ask(zone, DOMAIN, "NS").answer[0]} == {
        f"nsin.{DOMAIN}."}
    for service in ("_sip._tls", "_sipfederationtls._tcp"):
        assert ask(zone, f"{service}.{DOMAIN}", "SRV").rcode() == dns.rcode.NXDOMAIN


def test_an_unknown_view_is_an_error() -> None:
    with pytest.raises(ValueError, match="dmz"):
        build_zone(topology(), "dc1", lambda name: True, view="dmz")


# --- the dns server over loopback, and the client's resolver ----------------------


@pytest.fixture
async def edges() -> AsyncIterator[dict[str, FakeHealth]]:
    """Every Edge server's admin /health, answering 200 until told otherwise."""
    servers = Resolver(topology())
    fakes = {name: FakeHealth(servers.server(name).address, servers.server(name).admin_port)
             for name in (*EDGE1, *EDGE2)}
    for fake in fakes.values():
        await fake.start()
    yield fakes
    for fake in fakes.values():
        await fake.stop()


@pytest.fixture
async def ns_out(edges: dict[str, FakeHealth]) -> AsyncIterator[DnsServer]:
    topo = topology()
    server = DnsServer(DnsConfig(topo, Resolver(topo).server("nsout"), "dc1",
                                 poll_interval=0.1, poll_timeout=0.5))
    await server.start(admin=False)
    await wait_for(lambda: server.polls >= 1 and all(server.health.values()))
    yield server
    await server.stop()


async def test_external_view_is_served_over_udp_and_tcp(ns_out: DnsServer) -> None:
    assert ns_out.view == "external"
    assert set(ns_out.health) == set(EDGE1) | set(EDGE2)  # polls the Edge servers only
    query = dns.message.make_query(f"_sip._tls.{DOMAIN}", "SRV")
    udp = await dns.asyncquery.udp(query, NS_OUT[0], port=NS_OUT[1], timeout=2)
    tcp = await dns.asyncquery.tcp(query, NS_OUT[0], port=NS_OUT[1], timeout=2)
    assert srv(udp) == srv(tcp) == edge_srv(10, EDGE1) | edge_srv(20, EDGE2)
    internal = dns.message.make_query(f"fe1a.{DOMAIN}", "A")
    reply = await dns.asyncquery.udp(internal, NS_OUT[0], port=NS_OUT[1], timeout=2)
    assert reply.rcode() == dns.rcode.NXDOMAIN


async def test_resolve_gives_edge_pools_in_priority_order_and_the_federation_route(
        ns_out: DnsServer) -> None:
    for seed in range(3):
        servers = await resolve_servers(DOMAIN, NS_OUT, "tcp", rng=random.Random(seed))
        assert {(a.host, a.port) for a in servers[:2]} == set(EDGE1.values())  # EDGE-2
        assert {(a.host, a.port) for a in servers[2:]} == set(EDGE2.values())
    assert set(await resolve_federation(DOMAIN, NS_OUT)) == set(EDGE2.values())  # EDGE-3
    with pytest.raises(ResolveError, match="does not federate"):
        await resolve_federation(f"edge1a.edge.{DOMAIN}", NS_OUT)


async def test_failing_edge_servers_leave_the_answers_and_clients_go_to_the_next_pool(
        ns_out: DnsServer, edges: dict[str, FakeHealth]) -> None:
    edges["edge1a"].status = 503
    await wait_for(lambda: not ns_out.health["edge1a"])
    servers = await resolve_servers(DOMAIN, NS_OUT, "tcp")
    assert servers[0] == Address("tcp", *EDGE1["edge1b"])
    assert Address("tcp", *EDGE1["edge1a"]) not in servers
    await edges["edge1b"].stop()  # switched off: no answer at all
    await wait_for(lambda: not ns_out.health["edge1b"])
    servers = await resolve_servers(DOMAIN, NS_OUT, "tcp")
    assert {(a.host, a.port) for a in servers} == set(EDGE2.values())  # EDGE-2
    query = dns.message.make_query(DOMAIN, "A")
    reply = await dns.asyncquery.udp(query, NS_OUT[0], port=NS_OUT[1], timeout=2)
    assert addresses(reply) == hosts(EDGE2)
    edges["edge1a"].status = 200
    await wait_for(lambda: ns_out.health["edge1a"])
    servers = await resolve_servers(DOMAIN, NS_OUT, "tcp")
    assert servers[0] == Address("tcp", *EDGE1["edge1a"])
