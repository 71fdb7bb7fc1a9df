"""Edge pools as real processes, with a second deployment as the federated partner
(SPEC EDGE-1..EDGE-4): a remote user signs in through the Edge and exchanges IM with an
internal user without ever seeing an internal server's address; IM with a partner
domain both ways through both Edges, a domain not allowed refused; one Edge server
killed, then the whole Edge pool of site 1: remote users move on in SRV order;
outbound federation waits for `edge federation-route set`, inbound federation goes on
through the remaining pool; `pool failover` of the pool that is an Edge's next hop is
refused until `edge next-hop set`."""

from __future__ import annotations

import asyncio
import contextlib
import re
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.integration.drpair import trimaran, wait_for
from trimaran.client.resolve import resolve_servers
from trimaran.client.ua import UAConfig, UserAgent
from trimaran.net.transport import Address
from trimaran.sip.message import Message

pytestmark = pytest.mark.timeout(420)

OURS, THEIRS = "trimaran.test", "partner.test"
INTERNAL = ("127.0.43.1", "127.0.43.2", "127.0.43.11", "127.0.43.12", "127.0.43.21")
EDGES = (Address("tcp", "127.0.43.111", 5060), Address("tcp", "127.0.43.112", 5060),
         Address("tcp", "127.0.43.121", 5060))          # the SRV order: edge1, then edge2
TOPOLOGY = f"""
name: edge-ours
sip_domain: {OURS}
sites: [{{name: dc1}}, {{name: dc2}}]
settings: {{heartbeat_seconds: 0.5, failure_detection_seconds: 2,
            resiliency_failover_seconds: 3, resiliency_fallback_seconds: 5}}
federation_route: edge1
federation_partners:
  - {{domain: {THEIRS}, edges: ['127.0.44.111:5060']}}
pools:
  - {{name: fe1, site: dc1, role: frontend, edition: standard, backup_pool: fe2,
     servers: [{{name: fe1a, address: 127.0.43.1}}]}}
  - {{name: fe2, site: dc2, role: frontend, edition: standard, backup_pool: fe1,
     servers: [{{name: fe2a, address: 127.0.43.2}}]}}
  - name: edge1
    site: dc1
    role: edge
    next_hop: fe1
    federation: true
    servers:
      - {{name: edge1a, address: 127.0.43.11, external_address: 127.0.43.111}}
      - {{name: edge1b, address: 127.0.43.12, external_address: 127.0.43.112}}
  - name: edge2
    site: dc2
    role: edge
    next_hop: fe2
    federation: true
    servers:
      - {{name: edge2a, address: 127.0.43.21, external_address: 127.0.43.121}}
  - {{name: dnsout, site: dc1, role: dns, dns_view: external,
     servers: [{{name: nsout, address: 127.0.43.53, dns_port: 5353}}]}}
"""
PARTNER = f"""
name: edge-partner
sip_domain: {THEIRS}
sites: [{{name: p1}}]
federation_route: pedge
federation_partners:
  - {{domain: {OURS}, edges: ['127.0.43.111:5060', '127.0.43.112:5060',
                              '127.0.43.121:5060']}}
pools:
  - {{name: pfe, site: p1, role: frontend, edition: standard,
     servers: [{{name: pfe1, address: 127.0.44.1}}]}}
  - name: pedge
    site: p1
    role: edge
    next_hop: pfe
    federation: true
    servers:
      - {{name: pedge1, address: 127.0.44.11, external_address: 127.0.44.111}}
"""
_ADDRESS = re.compile(r"127\.0\.43\.\d+(?!\d)")


@dataclass
class Domains:
    ours: Path
    theirs: Path
    agents: dict[str, UserAgent] = field(default_factory=dict)
    seen: list[str] = field(default_factory=list)      # what the remote client received

    def cli(self, rundir: Path, *args: str, check: bool = True) -> str:
        result = trimaran(*args, "--dir", str(rundir), check=check)
        return result.stdout + ("" if check else result.stderr)


@pytest.fixture(scope="module")
def domains() -> Iterator[Domains]:
    base = Path(tempfile.mkdtemp(prefix="trimaran-edge-"))
    runs = []
    try:
        for name, text in (("ours", TOPOLOGY), ("theirs", PARTNER)):
            (base / f"{name}.yaml").write_text(text)
            trimaran("up", str(base / f"{name}.yaml"), "--dir", str(base / name), timeout=120)
            runs.append(base / name)
        d = Domains(base / "ours", base / "theirs")
        for user in ("remote1", "inner"):
            d.cli(d.ours, "user", "add", f"sip:{user}@{OURS}", "--password", f"{user}-pw",
                  "--pool", "fe1")
        d.cli(d.theirs, "user", "add", f"sip:pat@{THEIRS}", "--password", "pat-pw")
        yield d
    finally:
        for run in runs:
            trimaran("down", "--dir", str(run), check=False, timeout=120)


@pytest.fixture
async def phones(domains: Domains) -> AsyncIterator[Domains]:
    try:
        yield domains
    finally:
        for ua in domains.agents.values():
            await ua.close()
        domains.agents.clear()


async def phone(d: Domains, aor: str, password: str, servers: tuple[Address, ...],
                local: str, *, watch: bool = False) -> UserAgent:
    ua = UserAgent(UAConfig(aor=aor, password=password, servers=servers, local_host=local,
                            reregister_on_flow_loss=True))
    await ua.start()
    if watch:        # every message the remote side receives, as text
        transport = ua.endpoint.transport
        deliver = transport._on_message

        def recording(message: Message, flow: object) -> None:
            d.seen.append(str(message))
            deliver(message, flow)  # type: ignore[arg-type]
        transport._on_message = recording  # type: ignore[assignment,method-assign]
    response = await ua.register()
    assert response.status == 200, (aor, response.status, response.reason)
    d.agents[aor] = ua
    return ua


async def _is(value: bool) -> bool:
    return value


def _on(ua: UserAgent, address: Address) -> bool:
    server = ua.registered_server
    return server is not None and (server.host, server.port) == (address.host, address.port)


async def exchange(sender: UserAgent, receiver: UserAgent, to: str, text: str) -> None:
    response = await sender.send_message(to, text)
    assert response.status == 200, (response.status, response.reason)
    message = await receiver.next_message(10)
    assert message.body == text.encode()


async def test_a_remote_user_talks_to_an_internal_user_and_sees_no_internal_address(
        phones: Domains) -> None:
    remote = await phone(phones, f"sip:remote1@{OURS}", "remote1-pw", EDGES, "127.0.45.1",
                         watch=True)
    inner = await phone(phones, f"sip:inner@{OURS}", "inner-pw",
                        (Address("tcp", "127.0.43.1", 5060),), "127.0.45.2")
    assert _on(remote, EDGES[0])
    await exchange(remote, inner, f"sip:inner@{OURS}", "hello from outside")
    await exchange(inner, remote, f"sip:remote1@{OURS}", "hello from inside")
    leaked = {a for text in phones.seen for a in _ADDRESS.findall(text) if a in INTERNAL}
    assert phones.seen and not leaked, f"internal addresses seen outside: {leaked}"


async def test_federated_im_works_both_ways_and_an_unknown_domain_is_refused(
        phones: Domains) -> None:
    inner = await phone(phones, f"sip:inner@{OURS}", "inner-pw",
                        (Address("tcp", "127.0.43.1", 5060),), "127.0.45.2")
    pat = await phone(phones, f"sip:pat@{THEIRS}", "pat-pw",
                      (Address("tcp", "127.0.44.1", 5060),), "127.0.45.3")
    await exchange(inner, pat, f"sip:pat@{THEIRS}", "hi partner")
    await exchange(pat, inner, f"sip:inner@{OURS}", "hi back")
    stranger = UserAgent(UAConfig(aor="sip:eve@evil.test", password="x", servers=EDGES[:1],
                                  local_host="127.0.45.9"))
    await stranger.start()
    try:
        refused = await stranger.send_message(f"sip:inner@{OURS}", "let me in")
        assert refused.status == 403, refused
    finally:
        await stranger.close()


async def test_edge_failures_move_remote_users_and_the_federation_route_is_moved_by_hand(
        phones: Domains) -> None:
    d = phones
    # EDGE-2: the remote client finds the Edge servers in the external DNS view, site 1's
    # Edge pool first (its two servers in either order), then site 2's.
    found = await resolve_servers(OURS, ("127.0.43.53", 5353), "tcp")
    assert set(found[:2]) == set(EDGES[:2]) and found[2] == EDGES[2], found
    remote = await phone(d, f"sip:remote1@{OURS}", "remote1-pw", found, "127.0.45.1")
    first, second = found[0], found[1]
    inner = await phone(d, f"sip:inner@{OURS}", "inner-pw",
                        (Address("tcp", "127.0.43.1", 5060),), "127.0.45.2")
    pat = await phone(d, f"sip:pat@{THEIRS}", "pat-pw", (Address("tcp", "127.0.44.1", 5060),),
                      "127.0.45.3")
    names = {EDGES[0]: "edge1a", EDGES[1]: "edge1b"}
    d.cli(d.ours, "server", "kill", names[first])                   # EDGE-1
    await wait_for(lambda: _is(_on(remote, second)), 30, "remote1 through the other server")
    await exchange(inner, remote, f"sip:remote1@{OURS}", "still here")
    d.cli(d.ours, "server", "kill", names[second])                  # EDGE-2: the whole pool
    await wait_for(lambda: _is(_on(remote, EDGES[2])), 30, "remote1 through edge2a")
    await exchange(remote, inner, f"sip:inner@{OURS}", "via site 2's Edge pool")
    failed = await inner.send_message(f"sip:pat@{THEIRS}", "federation route is down")
    assert failed.status >= 400                                     # EDGE-3: not yet moved
    await exchange(pat, inner, f"sip:inner@{OURS}", "inbound through edge2")   # any pool
    refused = d.cli(d.ours, "edge", "federation-route", "set", "edge1", check=False)
    assert "down" in refused, refused
    d.cli(d.ours, "edge", "federation-route", "set", "edge2")

    async def federation_back() -> bool:
        response = await inner.send_message(f"sip:pat@{THEIRS}", "route moved")
        return response.status == 200
    await wait_for(federation_back, 15, "outbound federation through edge2", interval=0.5)
    assert (await pat.next_message(10)).body == b"route moved"
    d.cli(d.ours, "server", "start", "edge1a")
    d.cli(d.ours, "server", "start", "edge1b")
    d.cli(d.ours, "edge", "federation-route", "set", "edge1")


async def test_failing_over_an_edge_next_hop_is_refused_until_the_next_hop_moves(
        phones: Domains) -> None:
    d = phones
    refused = d.cli(d.ours, "pool", "failover", "fe2", check=False)   # edge2's next hop
    assert "next hop" in refused and "edge2" in refused, refused
    d.cli(d.ours, "edge", "next-hop", "set", "edge2", "fe1")
    d.cli(d.ours, "pool", "failover", "fe2")
    d.cli(d.ours, "pool", "failback", "fe2")
    d.cli(d.ours, "edge", "next-hop", "set", "edge2", "fe2")


async def test_a_flooding_source_is_rate_limited_and_others_are_not(phones: Domains) -> None:
    """EDGE-1 (abuse on the outside): beyond its burst, one source gets 503 with
    Retry-After; another source is still answered."""
    edge = ("127.0.43.121", 5060)

    def options(i: int, host: str) -> bytes:
        return (f"OPTIONS sip:{OURS} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {host}:5099;branch=z9hG4bK-flood-{host}-{i}\r\n"
                f"Max-Forwards: 70\r\nFrom: <sip:eve@evil.test>;tag=f{i}\r\n"
                f"To: <sip:{OURS}>\r\nCall-ID: flood-{host}-{i}\r\nCSeq: 1 OPTIONS\r\n"
                f"Content-Length: 0\r\n\r\n").encode()

    async def flood(host: str, count: int) -> dict[int, int]:
        loop = asyncio.get_running_loop()
        answers: dict[int, int] = {}
        done = asyncio.Event()

        class Collect(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                status = int(data.split(b" ", 2)[1])
                answers[status] = answers.get(status, 0) + 1
                if sum(answers.values()) >= count:
                    done.set()

        transport, _ = await loop.create_datagram_endpoint(Collect, local_addr=(host, 5099))
        try:
            for i in range(count):
                transport.sendto(options(i, host), edge)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 10)
        finally:
            transport.close()
        return answers

    flooded = await flood("127.0.45.20", 300)
    assert flooded.get(503, 0) >= 50, flooded
    assert flooded.get(403, 0) >= 150, flooded
    other = await flood("127.0.45.21", 5)
    assert other == {403: 5}, other
