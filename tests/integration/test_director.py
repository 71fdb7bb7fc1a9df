"""A Director pool of two servers in front of two paired Front End pools, as real
processes (SPEC DIR-1, DIR-2): users of both pools sign in through either Director and
end on their home pool; one Director killed, sign-ins continue through the other; a
home pool down (the Director's own probes) or failed over sends its users to the
backup pool."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.integration.drpair import DOMAIN, Node, Pair, running, se_pair, wait_for
from trimaran.client.ua import UAConfig, UserAgent
from trimaran.net.transport import Address

pytestmark = pytest.mark.timeout(300)

SE1, SE2 = Node("se1", "se1", "127.0.19.1"), Node("se2", "se2", "127.0.19.2")
TOPOLOGY = se_pair("directors", SE1, SE2,
                   settings={"heartbeat_seconds": 0.5, "failure_detection_seconds": 2,
                             "resiliency_failover_seconds": 3,
                             "resiliency_fallback_seconds": 5,
                             "abuse": "{lockout_failures: 3, lockout_seconds: 300}"},
                   more_pools="  - {name: dir1, site: dc1, role: director, servers: "
                              "[{name: dir1a, address: 127.0.19.11}, "
                              "{name: dir1b, address: 127.0.19.12}]}\n")
DIRECTORS = (Address("tcp", "127.0.19.11", 5060), Address("tcp", "127.0.19.12", 5060))


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    users = {"se1": ["da0", "da1", "da2"], "se2": ["db0", "db1"]}
    async with running(tmp_path, TOPOLOGY, [SE1, SE2], users) as deployment:
        yield deployment


async def through_directors(pair: Pair, name: str) -> UserAgent:
    ua = UserAgent(UAConfig(aor=f"sip:{name}@{DOMAIN}", password=f"{name}-pw",
                            servers=DIRECTORS, reregister_on_flow_loss=True))
    await ua.start()
    pair.agents[name] = ua
    response = await ua.register()
    assert response.status == 200, (response.status, response.reason, ua.servers, name)
    return ua


async def _is(value: bool) -> bool:
    return value


async def test_users_of_both_pools_sign_in_through_either_director(pair: Pair) -> None:
    for name in ("da0", "db0"):
        await through_directors(pair, name)
    assert pair.on_pool("da0", "se1") and pair.on_pool("db0", "se2")
    assert pair.agents["da0"].mode == "full"
    pair.cli("server", "kill", "dir1a")              # DIR-2: one Director fails
    for name in ("da1", "db1"):
        await through_directors(pair, name)
    assert pair.on_pool("da1", "se1") and pair.on_pool("db1", "se2")


async def test_a_wrong_password_is_refused_by_the_director(pair: Pair) -> None:
    ua = UserAgent(UAConfig(aor=f"sip:da2@{DOMAIN}", password="wrong", servers=DIRECTORS))
    await ua.start()
    try:
        response = await ua.register()
        assert response.status in (401, 403)
        assert ua.registered_server is None
    finally:
        await ua.close()


async def register_once(aor: str, password: str, servers: tuple[Address, ...]) -> int:
    ua = UserAgent(UAConfig(aor=aor, password=password, servers=servers))
    await ua.start()
    try:
        return (await ua.register()).status
    finally:
        await ua.close()


async def test_guessing_passwords_through_the_directors_locks_the_account(pair: Pair) -> None:
    """OPS-6: wrong passwords tried at the Directors count in the home pool's lockout
    (settings.abuse.lockout_failures: 3), whichever Director saw them; then even the
    right password is refused, other users are not affected, `user unlock` lifts it."""
    victim = f"sip:da2@{DOMAIN}"
    statuses: list[int] = []
    while 403 not in statuses and len(statuses) < 4:   # one Director, then the other
        statuses.append(await register_once(victim, "guess", (DIRECTORS[len(statuses) % 2],)))
    # a sign-in answers each challenge (SHA-256, then MD5): the second sign-in's first
    # wrong response is the third failure, counted at dir1b after two at dir1a
    assert statuses == [401, 403], statuses
    for servers in (DIRECTORS, (Address("tcp", SE1.address, 5060),)):
        assert await register_once(victim, "da2-pw", servers) == 403
    listed = {u["aor"]: u for u in json.loads(pair.cli("user", "list", "--json").stdout)}
    assert listed[victim]["locked_until"] is not None
    assert listed[f"sip:da1@{DOMAIN}"]["locked_until"] is None
    await through_directors(pair, "da1")
    pair.cli("user", "unlock", victim)
    await through_directors(pair, "da2")


async def test_a_down_or_failed_over_home_pool_sends_its_users_to_the_backup_pool(
        pair: Pair) -> None:
    pair.cli("server", "kill", "se1")

    async def director_sees_se1_down() -> bool:
        import json
        import urllib.request
        request = urllib.request.Request("http://127.0.19.12:8080/status", headers=pair.admin)
        with urllib.request.urlopen(request, timeout=2) as resp:
            status = json.loads(resp.read())
        return bool(status["pools"]["se1"]["state"] == "down")
    await wait_for(director_sees_se1_down, 20, "the Director sees se1 down")
    # The backup registrar accepts only after its own detection (DR-8); until then it
    # answers 503 + Retry-After, which a client would honour.
    await wait_for(lambda: _is(pair.status(SE2)["backup_registrar_of"]["state"]  # type: ignore[index]
                               == "down"), 20, "se2 sees se1 down")
    ua = await through_directors(pair, "da0")
    await wait_for(lambda: _is(pair.on_pool("da0", "se2") and ua.mode == "resiliency"), 20,
                   "da0 in resiliency mode on se2 through the Director")
    pair.cli("cms", "failover", "--disaster")
    pair.cli("pool", "failover", "se1", "--disaster")
    ua2 = await through_directors(pair, "da1")
    await wait_for(lambda: _is(pair.on_pool("da1", "se2") and ua2.mode == "full"), 20,
                   "da1 in full mode on se2 through the Director after the failover")
