"""Every role answers /metrics with its HA state (SPEC OPS-4): a Director in front of a
Front End that holds the CMS, a dns server, a witness and a mirroring agent, each a
real server on loopback, scraped in a real state."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import dns.asyncquery
import dns.message
import pytest

from tests import admincreds
from tests.admin.scrape import scrape, scrape_until
from tests.dns.test_server import FakeHealth
from tests.frontend.conftest import DOMAIN, FAST, add_user, password_of
from tests.interop.sipp import free_port
from trimaran import __version__
from trimaran.backend.agent import Agent, AgentConfig
from trimaran.backend.agent_io import DurableState
from trimaran.backend.decide import Role
from trimaran.backend.instance import PgInstance
from trimaran.backend.witness import Witness
from trimaran.client.ua import UAConfig, UserAgent
from trimaran.cms.directory import Directory
from trimaran.cms.follower import CmsFollower
from trimaran.cms.liveness import PartnerWatch
from trimaran.cms.service import CmsService
from trimaran.net.transport import Address
from trimaran.roles.director.server import DirectorConfig, DirectorServer
from trimaran.roles.dns.handler import answer
from trimaran.roles.dns.server import DnsConfig, DnsServer
from trimaran.roles.dns.zone import build_zone
from trimaran.roles.frontend.config import FrontEndConfig
from trimaran.roles.frontend.homing import DisasterRecovery, Homing
from trimaran.roles.frontend.server import FrontEndServer
from trimaran.store.sqlite import SqliteStore
from trimaran.topology.loader import parse_topology
from trimaran.topology.resolver import Resolver

SECRET = b"role-metrics-secret-0123456789ab"
CMS_KEY = b"role-metrics-cms-key-0123456789a"


# --- Director ------------------------------------------------------------------------------

DIRECTOR_TOPOLOGY = """
name: metrics-director
sip_domain: trimaran.test
sites: [{{name: dc1}}]
pools:
  - name: se1
    site: dc1
    role: frontend
    edition: standard
    servers: [{{name: se1, address: 127.0.22.31, sip_port: {fe_port}, admin_port: 18131}}]
  - name: dir1
    site: dc1
    role: director
    servers: [{{name: dir1a, address: 127.0.22.32, sip_port: {dir_port}, admin_port: 18132}}]
"""


async def test_a_director_counts_sign_ins_and_sees_its_home_pool_and_cms_go(
        tmp_path: Path) -> None:
    """DIR-1 seen from monitoring: the REGISTER challenged, then redirected home;
    the pool's liveness, its failover record and the CMS copy; then the pool dies."""
    text = DIRECTOR_TOPOLOGY.format(fe_port=free_port(host="127.0.22.31"),
                                    dir_port=free_port(host="127.0.22.32"))
    topology = parse_topology(text)
    resolver = Resolver(topology)
    fe_spec, dir_spec = resolver.server("se1"), resolver.server("dir1a")
    store = SqliteStore(tmp_path / "se1.sqlite", pool="se1")
    await store.open()
    await add_user(store, "alice", pool="se1")
    cms = CmsService(server="se1", pool="se1", store=store, topology=topology,
                     topology_text=text, replica_path=tmp_path / "se1-cms.json",
                     secret=CMS_KEY, poll_interval=0.2, local_host=fe_spec.address)
    frontend = FrontEndServer(
        FrontEndConfig(server="se1", pool="se1", domain=DOMAIN, host=fe_spec.address,
                       sip_port=fe_spec.sip_port, admin_port=fe_spec.admin_port,
                       secret=SECRET, timers=FAST),
        store, dr=DisasterRecovery(Homing("se1", store, topology), cms, None))
    director = DirectorServer(
        DirectorConfig(server="dir1a", host=dir_spec.address, sip_port=dir_spec.sip_port,
                       admin_port=dir_spec.admin_port, domain=DOMAIN, secret=SECRET,
                       cms_secret=CMS_KEY, pool="dir1", timers=FAST),
        topology,
        CmsFollower(server="dir1a", pool="dir1", topology=topology,
                    replica_path=tmp_path / "dir1a-cms.json", secret=CMS_KEY,
                    poll_interval=0.2, local_host=dir_spec.address),
        {"se1": PartnerWatch("se1", (fe_spec,), interval=0.2, detection=1.0, fallback=2.0,
                             local_host=dir_spec.address)},
        Directory(topology, CMS_KEY, local_host=dir_spec.address))
    url = f"http://{dir_spec.address}:{dir_spec.admin_port}"
    ua = UserAgent(UAConfig(aor=f"sip:alice@{DOMAIN}", password=password_of("alice"),
                            servers=(Address("tcp", dir_spec.address, dir_spec.sip_port),),
                            timers=FAST, auto_refresh=False))
    try:
        await frontend.start()
        await director.start()
        await ua.start()
        assert (await ua.register()).status == 200
        signed_in = await scrape(url)
        await frontend.stop()
        await store.close()
        gone = await scrape_until(url, lambda m: m.one_hot("pool_liveness_state", pool="se1")
                                  == "down" and m("cms_pull_failing") == 1,
                                  what="se1 down for the Director")
    finally:
        await ua.close()
        await director.stop()
        await frontend.stop()           # both idempotent: a no-op when stopped above
        await store.close()
    assert signed_in("trimaran_server_info", server="dir1a", pool="dir1", role="director",
                     version=__version__) == 1
    assert signed_in("director_registers_total", result="challenged") == 1
    assert signed_in("director_registers_total", result="redirected") == 1
    assert signed_in("director_redirects_total", pool="se1", route="home") == 1
    assert signed_in("sip_transactions_total", side="server", method="REGISTER",
                     result="3xx") == 1
    assert signed_in.one_hot("pool_liveness_state", pool="se1") == "up"
    assert signed_in.one_hot("failover_state", pool="se1") == "normal"
    version = signed_in("cms_replica_version")
    assert version is not None and version >= 1
    assert signed_in("cms_master_term", master="se1") is not None
    age = signed_in("cms_last_pull_age_seconds")
    assert age is not None and age < 5
    assert signed_in("cms_pull_failing") == 0
    silent = gone("pool_liveness_silent_seconds", pool="se1")
    assert silent is not None and silent >= 1.0


# --- dns -----------------------------------------------------------------------------------

DNS_TOPOLOGY = """
name: metrics-dns
sip_domain: trimaran.test
sites: [{{name: dc1}}]
pools:
  - name: se1
    site: dc1
    role: frontend
    edition: standard
    servers: [{{name: se1, address: 127.0.22.42, admin_port: 18142}}]
  - name: se2
    site: dc1
    role: frontend
    edition: standard
    servers: [{{name: se2, address: 127.0.22.43, admin_port: 18143}}]
  - name: dns1
    site: dc1
    role: dns
    servers: [{{name: ns1, address: 127.0.22.41, dns_port: {port}, admin_port: 18141}}]
"""


@pytest.fixture
async def ns1() -> AsyncIterator[DnsServer]:
    topology = parse_topology(DNS_TOPOLOGY.format(port=free_port(host="127.0.22.41")))
    health = FakeHealth("127.0.22.42", 18142)          # se1 answers its health checks
    await health.start()
    server = DnsServer(DnsConfig(topology, Resolver(topology).server("ns1"), "dc1",
                                 poll_interval=0.1, poll_timeout=0.3))
    await server.start()
    yield server
    await server.stop()
    await health.stop()


async def test_a_dns_server_counts_queries_by_type_and_rcode_and_shows_health(
        ns1: DnsServer) -> None:
    spec = ns1.config.server
    where = (spec.address, spec.dns_endpoint.port)
    url = f"http://{spec.address}:{spec.admin_port}"
    healthy = await scrape_until(url, lambda m: m("dns_server_healthy", server="se2") == 0,
                                 what="se2 seen unhealthy")
    for name, rdtype in ((f"_sip._udp.{DOMAIN}", "SRV"), ("nowhere." + DOMAIN, "A"),
                         ("example.com", "A")):
        await dns.asyncquery.udp(dns.message.make_query(name, rdtype), where[0],
                                 port=where[1], timeout=2)
    await dns.asyncquery.tcp(dns.message.make_query(DOMAIN, "A"), where[0], port=where[1],
                             timeout=2)
    got = await scrape(url)
    assert got("trimaran_server_info", server="ns1", pool="dns1", role="dns",
               version=__version__) == 1
    assert got("dns_queries_total", type="SRV", rcode="NOERROR") == 1
    assert got("dns_queries_total", type="A", rcode="NXDOMAIN") == 1
    assert got("dns_queries_total", type="A", rcode="REFUSED") == 1
    assert got("dns_queries_total", type="A", rcode="NOERROR") == 1
    assert healthy("dns_server_healthy", server="se1") == 1
    polls = got("dns_health_polls_total")
    assert polls is not None and polls >= 1


def test_unreadable_and_dropped_queries_are_counted_too() -> None:
    topology = parse_topology(DNS_TOPOLOGY.format(port=5353))
    zone = build_zone(topology, "dc1", lambda name: True)
    seen: list[tuple[str, str]] = []
    query = dns.message.make_query("_sip._tcp." + DOMAIN, "SRV")
    response = dns.message.make_response(query).to_wire()
    answer(zone, b"\x12\x34" + b"\x00" * 10 + b"garbage", count=lambda *c: seen.append(c))
    answer(zone, response, count=lambda *c: seen.append(c))
    answer(zone, dns.message.make_query(DOMAIN, "HINFO").to_wire(),
           count=lambda *c: seen.append(c))
    assert seen == [("none", "FORMERR"), ("SRV", "dropped"), ("other", "NOERROR")]


# --- witness -------------------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def post(url: str, body: dict[str, Any]) -> int:
    async with aiohttp.ClientSession() as session, \
            session.post(url, json=body, headers=admincreds.headers()) as response:
        return response.status


async def test_a_witness_shows_each_back_end_s_term_principal_and_heartbeats(
        tmp_path: Path) -> None:
    """BE-3 seen from monitoring: the principal the witness recognises, by term."""
    clock = Clock()
    witness = Witness(tmp_path, "127.0.22.61", 0, principal_timeout=4.0, clock=clock,
                      server="w1", pool="witness1")
    await witness.start()
    beat = {"agent": "a", "role": "principal", "term": 1, "serving": True,
            "synchronous": True, "exposed": False, "sees_partner": True}
    try:
        base = f"{witness.url}/backends/be1"
        assert await post(f"{base}/heartbeat", beat) == 200
        assert await post(f"{base}/heartbeat", {**beat, "agent": "b", "role": "mirror"}) == 200
        clock.now += 2.5
        before = await scrape(witness.url)
        clock.now += 5.0
        assert await post(f"{base}/vote", {"candidate": "b", "term": 2,
                                           "synchronous": True}) == 200
        after = await scrape(witness.url)
    finally:
        await witness.close()
    labels = {"backend": "be1"}
    assert before("trimaran_server_info", server="w1", pool="witness1", role="witness",
                  version=__version__) == 1
    assert before("witness_backend_term", **labels) == 1
    assert before("witness_backend_principal", principal="a", **labels) == 1
    assert before("witness_backend_exposed", **labels) == 0
    assert before("witness_principal_silent_seconds", **labels) == 2.5
    assert before("witness_agent_heartbeat_age_seconds", agent="b", **labels) == 2.5
    assert before.one_hot("witness_agent_role", agent="b", **labels) == "mirror"
    assert before("witness_agent_serving", agent="a", **labels) == 1
    assert after("witness_backend_term", **labels) == 2
    assert after("witness_backend_principal", principal="b", **labels) == 1
    assert after("witness_backend_principal", principal="a", **labels) is None
    assert after("witness_agent_term", agent="a", **labels) == 1


# --- mirroring agent ------------------------------------------------------------------------

async def test_an_agent_shows_its_role_term_and_the_actions_it_tried(tmp_path: Path) -> None:
    """BE-7 seen from monitoring: a principal whose instance cannot start (no data
    directory) says so and counts its failed starts; when it adopts a higher term as
    mirror, its role, term and role changes follow."""
    instance = PgInstance(tmp_path / "pg", "127.0.22.71", free_port(host="127.0.22.71"))
    agent = Agent(AgentConfig(
        backend="be1", node="a", initial_role=Role.PRINCIPAL, instance=instance,
        partner="b", partner_host="127.0.22.72", partner_port=5432,
        partner_url=f"http://127.0.22.72:{free_port(host='127.0.22.72')}",
        state_path=tmp_path / "a.json", host="127.0.22.71", tick=0.1))
    await agent.start()
    try:
        got = await scrape_until(agent.url, lambda m: (m("backend_actions_total",
                                 action="start", result="failed") or 0) >= 2,
                                 what="failed starts counted")
        agent.save(DurableState(2, Role.MIRROR, "b"))        # what the `adopt` action does
        adopted = await scrape(agent.url)
    finally:
        await agent.close()
    assert got("trimaran_server_info", server="a", pool="be1", role="backend-agent",
               version=__version__) == 1
    assert got.one_hot("backend_role") == "principal"
    assert got("backend_term") == 1
    assert got("backend_serving") == 0
    assert got("backend_instance_running") == 0
    assert got("backend_exposed") == 0
    assert got("backend_partner_contact_age_seconds") is None        # never answered
    assert got("backend_role_changes_total", role="mirror") is None
    assert adopted.one_hot("backend_role") == "mirror"
    assert adopted("backend_term") == 2
    assert adopted("backend_role_changes_total", role="mirror") == 1

