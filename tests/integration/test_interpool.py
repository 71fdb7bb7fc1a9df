"""IM and calls between users of two paired Standard Edition pools run as real processes
(SPEC FE-4 across pools, DR-5): a request for a user another pool serves goes to that
pool with the sender's identity asserted (`X-Trimaran-Asserted`, HMAC with the
deployment key); the assertion grants nothing to a client that forges it and never
reaches a user; after a disaster failover the failed pool's users are still reachable.

Site dc1 holds se1 (127.0.23.1), site dc2 se2 (127.0.23.2); clients use 127.0.23.10.
One deployment serves the module; each test has its own users, and the failover test,
which kills se1, comes last.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests import admincreds
from tests.admin.scrape import Scrape
from tests.integration.drpair import DOMAIN, Node, Pair, se_pair, trimaran, wait_for
from trimaran.client.ua import UAConfig, UserAgent
from trimaran.roles.frontend.proxy import ASSERTED
from trimaran.sip.message import Request

pytestmark = pytest.mark.timeout(120)

SE1, SE2 = Node("se1", "se1", "127.0.23.1"), Node("se2", "se2", "127.0.23.2")
CLIENTS = "127.0.23.10"
TOPOLOGY = se_pair("interpool", SE1, SE2)
USERS = {"se1": ["ia", "ca", "fa", "da"], "se2": ["ib", "cb", "fb", "db"]}
FORGED = "<sip:fa@trimaran.test>;token=00112233445566778899aabbccddeeff"
NOT_ASCII = '<sip:fa@trimaran.test>;token="\u00e9t\u00e9"'


def aor(name: str) -> str:
    return f"sip:{name}@{DOMAIN}"


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """`trimaran up` of the pair with every test's users; down afterwards."""
    path = tmp_path_factory.mktemp("interpool")
    (path / "topology.yaml").write_text(TOPOLOGY)
    rundir = path / "run"
    trimaran("up", str(path / "topology.yaml"), "--dir", str(rundir))
    try:
        pair = Pair(rundir, [SE1, SE2])
        for pool, names in USERS.items():
            pair.add_users(pool, names)
        yield rundir
    finally:
        trimaran("down", "--dir", str(rundir), check=False)


@pytest.fixture
async def pair(deployment: Path) -> AsyncIterator[Pair]:
    deployed = Pair(deployment, [SE1, SE2])
    try:
        yield deployed
    finally:
        await deployed.close_agents()


async def sign_in(pair: Pair, pool: str, *names: str) -> list[UserAgent]:
    """Clients for `names` (home pool's server first, then the other's), registered."""
    home = [n.sip for n in pair.pool_nodes(pool)]
    others = [n.sip for n in pair.nodes if n.pool != pool]
    agents = []
    for name in names:
        ua = UserAgent(UAConfig(aor=aor(name), password=f"{name}-pw", local_host=CLIENTS,
                                servers=(*home, *others)))
        await ua.start()
        pair.agents[name] = ua
        response = await ua.register()
        assert response.status == 200, response
        assert pair.on_pool(name, pool), f"{name} registered on {ua.registered_server}"
        agents.append(ua)
    return agents


async def challenges(node: Node) -> float:
    """How many requests `node` has challenged (digest authentication failures)."""
    connector = aiohttp.TCPConnector(local_addr=(CLIENTS, 0))
    async with aiohttp.ClientSession(connector=connector) as session, \
            session.get(f"{node.base}/metrics", headers=admincreds.headers("read")) as response:
        assert response.status == 200
        scraped = Scrape(await response.text())
    return sum(scraped.series("sip_auth_failures_total").values())


def passed_through(request: Request, node: Node) -> bool:
    """True when `request` was forwarded by `node` (its Via is in the chain)."""
    return any(v.host == node.address and v.port == node.sip_port for v in request.vias)


async def test_im_both_ways_between_users_of_two_pools(pair: Pair) -> None:
    ia, = await sign_in(pair, "se1", "ia")
    ib, = await sign_in(pair, "se2", "ib")

    # each time the receiving pool takes the sender's pool's word for who sent it: it
    # challenges nobody (the sender's own pool may)
    before = await challenges(SE2)
    assert (await ia.send_message(aor("ib"), "from se1")).status == 200
    received = await ib.next_message()
    assert (received.body, received.from_.uri.aor) == (b"from se1", aor("ia"))
    assert passed_through(received, SE1) and passed_through(received, SE2)
    assert received.routes == [], "se2 removes the Route se1 pushed (RFC 3261 §16.4)"
    assert await challenges(SE2) == before

    before = await challenges(SE1)
    assert (await ib.send_message(aor("ia"), "from se2")).status == 200
    received = await ia.next_message()
    assert (received.body, received.from_.uri.aor) == (b"from se2", aor("ib"))
    assert passed_through(received, SE2) and passed_through(received, SE1)
    assert await challenges(SE1) == before


async def test_call_between_users_of_two_pools(pair: Pair) -> None:
    ca, = await sign_in(pair, "se1", "ca")
    cb, = await sign_in(pair, "se2", "cb")
    pending = ca.start_call(aor("cb"), b"v=0\r\no=ca\r\n")
    incoming = await asyncio.wait_for(cb.incoming_calls.get(), 10)
    assert incoming.remote_body == b"v=0\r\no=ca\r\n"
    assert incoming.incoming is not None
    invite = incoming.incoming.request
    assert passed_through(invite, SE1) and passed_through(invite, SE2)
    assert (invite.routes, invite.headers.get_all(ASSERTED)) == ([], [])
    await incoming.answer(b"v=0\r\no=cb\r\n")
    assert (await ca.wait_answer(pending)).status == 200
    assert pending.remote_body == b"v=0\r\no=cb\r\n"
    assert pending.dialog is not None
    assert {r.uri.host for r in pending.dialog.route_set} == {SE1.address, SE2.address}
    await asyncio.wait_for(incoming.acked.wait(), 10)      # the ACK crossed both pools
    assert (await pending.bye()).status == 200
    await asyncio.wait_for(incoming.wait_ended(), 10)
    assert incoming.end_reason == "remote BYE"


async def test_a_forged_assertion_is_challenged_and_never_reaches_the_user(
        pair: Pair) -> None:
    fb, = await sign_in(pair, "se2", "fb")
    stranger = UserAgent(UAConfig(aor=aor("fa"), password="", local_host=CLIENTS,
                                  servers=(SE1.sip,)))
    await stranger.start()
    pair.agents["stranger"] = stranger
    # without credentials, through the sender's pool and straight to the recipient's;
    # a token no key made (quoted, not even ASCII) is as good as none
    for server, forged in ((SE1, FORGED), (SE2, FORGED), (SE2, NOT_ASCII)):
        request = stranger.new_request("MESSAGE", aor("fb"))
        request.headers.add(ASSERTED, forged)
        request.headers.add("Content-Type", "text/plain")
        request.body = b"forged"
        response, _ = await stranger.endpoint.exchange(request, server.sip)
        assert response.status in (401, 407), (server.name, forged, response)

    # a genuine request, with the same header added by its client: delivered, and
    # neither the client's header nor the pools' reaches the user
    fa, = await sign_in(pair, "se1", "fa")
    request = fa.new_request("MESSAGE", aor("fb"))
    request.headers.add(ASSERTED, FORGED)
    request.headers.add("Content-Type", "text/plain")
    request.body = b"genuine"
    assert (await fa.send(request)).status == 200
    received = await fb.next_message()
    assert received.body == b"genuine", "the forged requests were not delivered"
    assert received.headers.get_all(ASSERTED) == []
    assert passed_through(received, SE1) and passed_through(received, SE2)
    assert fb.messages.empty()


async def test_after_a_disaster_failover_the_failed_pools_user_is_reachable(
        pair: Pair) -> None:
    """DR-5: se1 lost; CMS and pool failed over; se1's user signs in on se2 by itself and
    IM with se2's user works both ways."""
    da, = await sign_in(pair, "se1", "da")
    db, = await sign_in(pair, "se2", "db")

    async def copied() -> bool:       # da is in se2's copy of se1's users
        direction = pair.cli_json("backup", "status", "se1")["directions"][0]  # type: ignore[index]
        return bool(direction["state"] == "steady")
    await wait_for(copied, 20, "se1's backup steady")

    pair.cli("server", "kill", "se1")
    pair.cli("cms", "failover", "--disaster")
    pair.cli("pool", "failover", "se1", "--disaster")

    async def signed_in_on_se2() -> bool:
        return pair.on_pool("da", "se2") and da.mode == "full"
    await wait_for(signed_in_on_se2, 30, "da signed in on se2 in full mode")

    assert (await db.send_message(aor("da"), "still there?")).status == 200
    assert (await da.next_message()).body == b"still there?"
    assert (await da.send_message(aor("db"), "yes")).status == 200
    assert (await db.next_message()).body == b"yes"
