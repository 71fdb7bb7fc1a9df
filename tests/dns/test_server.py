"""The dns role over real loopback sockets (UDP and TCP) and the client's resolver."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable

import dns.asyncquery
import dns.message
import dns.rcode
import pytest
from aiohttp import web

from tests.dns.topo import DOMAIN, topology
from trimaran.client.resolve import ResolveError, order_srv, resolve_servers
from trimaran.net.transport import Address
from trimaran.roles.dns.server import DnsConfig, DnsServer
from trimaran.topology.resolver import Resolver

NS1 = ("127.0.16.51", 5353)


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.02)


class FakeHealth:
    """An admin API answering /health with a settable status."""

    def __init__(self, host: str, port: int, status: int = 200) -> None:
        self.host, self.port, self.status = host, port, status
        self.runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/health", self._health)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, self.host, self.port).start()

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({}, status=self.status)

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def fe1a() -> AsyncIterator[FakeHealth]:
    fake = FakeHealth("127.0.16.11", 8160)
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def fe1b() -> AsyncIterator[FakeHealth]:
    fake = FakeHealth("127.0.16.12", 8161)
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def ns1() -> AsyncIterator[DnsServer]:
    topo = topology()
    server = DnsServer(DnsConfig(topo, Resolver(topo).server("ns1"), "dc1", poll_interval=0.1,
                                 poll_timeout=0.5))
    await server.start(admin=False)
    yield server
    await server.stop()


def targets(reply: dns.message.Message) -> list[tuple[int, str]]:
    return sorted((r.priority, r.target.to_text()) for rrset in reply.answer for r in rrset)


async def test_udp_and_tcp_answer_srv_and_refuse_outside_names(ns1: DnsServer) -> None:
    query = dns.message.make_query(f"_sip._tcp.{DOMAIN}", "SRV")
    udp = await dns.asyncquery.udp(query, NS1[0], port=NS1[1], timeout=2)
    tcp = await dns.asyncquery.tcp(query, NS1[0], port=NS1[1], timeout=2)
    expected = [(10, "fe1a.trimaran.test."), (10, "fe1b.trimaran.test."),
                (20, "se2.trimaran.test.")]
    assert targets(udp) == targets(tcp) == expected
    outside = dns.message.make_query("example.com", "A")
    reply = await dns.asyncquery.udp(outside, NS1[0], port=NS1[1], timeout=2)
    assert reply.rcode() == dns.rcode.REFUSED


async def test_garbage_does_not_stop_the_server(ns1: DnsServer) -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                       remote_addr=NS1)
    for size in (0, 1, 5, 12, 40, 512):
        transport.sendto(random.randbytes(size))
    transport.close()
    _reader, writer = await asyncio.open_connection(*NS1)
    writer.write(b"\x00\x05hello")
    await writer.drain()
    writer.close()
    query = dns.message.make_query(DOMAIN, "A")
    reply = await dns.asyncquery.udp(query, NS1[0], port=NS1[1], timeout=2)
    assert reply.rcode() == dns.rcode.NOERROR


async def test_health_polling_filters_answers(ns1: DnsServer, fe1a: FakeHealth,
                                              fe1b: FakeHealth) -> None:
    # se2 has no admin API: unhealthy, out of SRV answers while fe1 has a healthy server.
    await wait_for(lambda: ns1.health == {"fe1a": True, "fe1b": True, "se2": False})
    fe1b.status = 503  # draining
    await wait_for(lambda: not ns1.health["fe1b"])
    query = dns.message.make_query(f"_sip._udp.{DOMAIN}", "SRV")
    reply = await dns.asyncquery.udp(query, NS1[0], port=NS1[1], timeout=2)
    assert targets(reply) == [(10, "fe1a.trimaran.test.")]
    assert await resolve_servers(DOMAIN, NS1, "udp") == (Address("udp", "127.0.16.11", 5160),)
    fe1b.status = 200
    await wait_for(lambda: ns1.health["fe1b"])


async def test_resolve_servers_orders_by_priority_and_resolves_targets(ns1: DnsServer) -> None:
    servers = await resolve_servers(DOMAIN, NS1, "tcp")
    assert set(servers[:2]) == {Address("tcp", "127.0.16.11", 5160),
                                Address("tcp", "127.0.16.12", 5161)}
    assert servers[2] == Address("tcp", "127.0.16.21", 5170)


async def test_resolve_falls_back_to_the_domains_a_records_and_reports_failure(
        ns1: DnsServer) -> None:
    # fe1.trimaran.test has no SRV: its A records on port 5060 (RFC 3263 §4.2).
    assert set(await resolve_servers(f"fe1.{DOMAIN}", NS1, "tcp")) == {
        Address("tcp", "127.0.16.11", 5060), Address("tcp", "127.0.16.12", 5060)}
    with pytest.raises(ResolveError):
        await resolve_servers(f"nobody.{DOMAIN}", NS1)
    with pytest.raises(ResolveError):
        await resolve_servers(DOMAIN, ("127.0.16.99", 5353), timeout=0.3)


def test_order_srv_is_by_priority_then_weighted() -> None:
    records = [(20, 10, 1, "c"), (10, 0, 1, "z"), (10, 90, 1, "a"), (10, 10, 1, "b")]
    firsts = {order_srv(records, random.Random(seed))[0][3] for seed in range(200)}
    assert firsts == {"a", "b"}
    for seed in range(20):
        ordered = order_srv(records, random.Random(seed))
        assert ordered[2:] == [(10, 0, 1, "z"), (20, 10, 1, "c")]
