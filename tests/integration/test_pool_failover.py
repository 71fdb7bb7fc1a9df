"""Pool pairing, the Backup Service, pool failover and failback, CMS failover, on a
Standard Edition pair run as real processes (SPEC DR-2..DR-7, DR-9, DR-11).

Site dc1 holds se1 (127.0.12.1), site dc2 se2 (127.0.12.2). The CMS starts on se1.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.integration.drpair import DOMAIN, Node, Pair, running, se_pair, wait_for
from trimaran.client.xcap import XcapClient, XcapError
from trimaran.store.model import ContactEntry, ContactList

pytestmark = pytest.mark.timeout(300)

SE1, SE2 = Node("se1", "se1", "127.0.12.1"), Node("se2", "se2", "127.0.12.2")
TOPOLOGY = se_pair("dr-se-pair", SE1, SE2)
A_USERS = [f"a{i}" for i in range(12)]
B_USERS = [f"b{i}" for i in range(4)]


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    users = {"se1": A_USERS, "se2": B_USERS}
    async with running(tmp_path, TOPOLOGY, [SE1, SE2], users) as deployment:
        yield deployment


async def steady_backup(pair: Pair, pool: str) -> dict[str, object]:
    """Wait for the pool's outgoing direction to be steady; return it."""
    result: dict[str, object] = {}

    async def steady() -> bool:
        nonlocal result
        result = pair.cli_json("backup", "status", pool)["directions"][0]  # type: ignore[index]
        return result["state"] == "steady"
    await wait_for(steady, 20, f"backup of {pool} steady")
    return result


async def test_disaster_failover_serves_users_on_the_backup_pool_and_failback_returns_them(
        pair: Pair) -> None:
    await pair.sign_in(A_USERS, "se1")
    writers = pair.writers(A_USERS, rate=40)
    writers.start()
    await wait_for(lambda: _true(len(writers.stats.acked) >= 60), 30, "60 acknowledged writes")
    direction = await steady_backup(pair, "se1")
    assert float(direction["lag_seconds"]) <= 1.0        # DR-2 target at this load
    lag_before = float(direction["lag_seconds"])

    kinds = {a.kind for a in writers.stats.acked}
    assert kinds == {"contact", "meeting", "presence"}, kinds
    pair.cli("server", "kill", "se1")                   # site dc1 lost
    killed_at = time.time()
    await writers.stop()   # so that no later write re-sends (and hides) a lost contact
    refused = pair.cli("pool", "failover", "se1", "--disaster", check=False)
    assert refused.returncode == 1 and "cms failover" in refused.stderr   # DR-5 refusal

    command_at = time.monotonic()
    pair.cli("cms", "failover", "--disaster")
    pair.cli("pool", "failover", "se1", "--disaster")
    rto = await wait_for(lambda: _true(all(pair.on_pool(n, "se2") for n in A_USERS)), 60,
                         "every se1 user signed in on se2")
    rto_from_command = time.monotonic() - command_at
    assert rto_from_command <= 30.0, f"RTO {rto_from_command:.1f} s"          # DR-5 target
    assert all(pair.agents[n].mode == "full" for n in A_USERS)
    # RPO: every write acknowledged before the kill minus the lag is on se2
    lost = await pair.lost_on(writers, "se2")
    late = [a for a in lost if a.at < killed_at - max(1.0, lag_before) - 0.2]
    assert not late, f"lost beyond the lag: {late[:5]}"
    print(f"RTO from the commands {rto_from_command:.1f} s (sign-in {rto:.1f} s), "
          f"lost within the lag: {len(lost)}")
    # full functionality on se2 for se1's users: new writes are acknowledged there
    acked = len(writers.stats.acked)
    writers.start()
    await wait_for(lambda: _true(len(writers.stats.acked) >= acked + 30), 30,
                   "writes acknowledged on se2")
    await writers.stop()

    # DR-7: se1 comes back fenced: it redirects its users and accepts none of their writes
    pair.cli("server", "start", "se1")
    client = XcapClient(SE1.base, f"sip:a0@{DOMAIN}", "a0", "a0-pw")
    with pytest.raises(XcapError) as refused_write:
        await client.put(ContactList(f"sip:a0@{DOMAIN}", (), (ContactEntry("sip:x@y"),)))
    assert refused_write.value.status == 409
    assert "served by pool se2" in str(refused_write.value)

    # DR-6: failback brings everybody home with every change made on se2
    acked = len(writers.stats.acked)
    writers.start()
    await wait_for(lambda: _true(len(writers.stats.acked) >= acked + 20), 30, "writes on se2")
    await writers.stop()
    pair.cli("pool", "failback", "se1")
    await wait_for(lambda: _true(all(pair.on_pool(n, "se1") for n in A_USERS)), 60,
                   "every se1 user back on se1")
    lost_home = await pair.lost_on(writers, "se1")
    assert set(lost_home) <= set(lost), f"lost by the failback: {lost_home[:5]}"


async def test_planned_failover_and_failback_lose_nothing(pair: Pair) -> None:
    await pair.sign_in(A_USERS, "se1")
    writers = pair.writers(A_USERS, rate=40)
    writers.start()
    await wait_for(lambda: _true(len(writers.stats.acked) >= 40), 30, "writes")
    moved = pair.cli_json("cms", "failover")
    assert moved["to"] == "se2"
    assert pair.cli_json("cms", "status")["master"] == "se2"
    result = pair.cli_json("pool", "failover", "se1")
    steps = [s["step"] for s in result["steps"]]  # type: ignore[union-attr]
    assert any("read-only" in s for s in steps) and any("final" in s for s in steps)
    await wait_for(lambda: _true(len(writers.stats.acked) >= 120), 30, "writes continue")
    pair.cli("pool", "failback", "se1")
    await wait_for(lambda: _true(len(writers.stats.acked) >= 160), 30, "writes continue")
    await writers.stop()
    pair.cli("backup", "sync", "se1")
    for pool in ("se1", "se2"):
        lost = await pair.lost_on(writers, pool)
        assert lost == [], f"lost on {pool}: {lost[:5]}"


async def test_order_rules_and_refusals_dr11(pair: Pair) -> None:
    def refusal(*args: str) -> str:
        result = pair.cli(*args, check=False)
        assert result.returncode == 1, result.stdout
        return result.stderr

    assert "no Front End pool named 'nope'" in refusal("pool", "failover", "nope")
    assert "not failed over" in refusal("pool", "failback", "se1")
    assert "CMS master is on pool se1" in refusal("pool", "failover", "se1")
    pair.cli("cms", "failover")
    pair.cli("pool", "failover", "se1")
    assert "already failed-over" in refusal("pool", "failover", "se1")
    assert "pool failback se1" in refusal("user", "add", f"sip:late@{DOMAIN}", "--password",
                                          "pw", "--pool", "se1")
    assert "DR-11" in refusal("pool", "failover", "se2", "--disaster")
    assert "not failed over" in refusal("pool", "failback", "se2")
    pair.cli("pool", "failback", "se1")
    status = pair.status(SE2)
    assert status["failover"]["se1"]["state"] == "normal"  # type: ignore[index]


async def _true(value: bool) -> bool:
    return value


async def put_contacts(aor_name: str, base: str, uris: list[str]) -> None:
    client = XcapClient(base, f"sip:{aor_name}@{DOMAIN}", aor_name, f"{aor_name}-pw")
    await client.put(ContactList(f"sip:{aor_name}@{DOMAIN}", (),
                                 tuple(ContactEntry(u) for u in uris)))


async def test_a_disaster_tail_is_lost_within_the_lag_and_reconciled_at_failback(
        pair: Pair) -> None:
    await put_contacts("a0", SE1.base, ["sip:old0@x"])
    await put_contacts("a1", SE1.base, ["sip:old1@x"])
    pair.cli("backup", "sync", "se1")
    # The backup pool is down (nothing in flight can arrive later), then the pool dies
    # with changes it acknowledged but never shipped: the disaster's loss.
    pair.cli("server", "stop", "se2")
    await put_contacts("a0", SE1.base, ["sip:tail0@x"])
    await put_contacts("a1", SE1.base, ["sip:tail1@x"])
    pair.cli("server", "kill", "se1")
    pair.cli("server", "start", "se2")
    pair.cli("cms", "failover", "--disaster")
    result = pair.cli_json("pool", "failover", "se1", "--disaster")
    assert result["changes_after_this_time_lost"]               # the command reports the cut
    assert await pair.contacts_on("se2", f"sip:a1@{DOMAIN}") == {"sip:old1@x"}
    await put_contacts("a0", SE2.base, ["sip:new0@x"])          # changed on the backup pool

    pair.cli("server", "start", "se1")                         # fenced, receives se2's changes
    back = pair.cli_json("pool", "failback", "se1")
    assert int(str(back["superseded_keys"])) >= 2
    for name in ("a0", "a1"):
        aor = f"sip:{name}@{DOMAIN}"
        assert await pair.contacts_on("se1", aor) == await pair.contacts_on("se2", aor)
    assert await pair.contacts_on("se1", f"sip:a0@{DOMAIN}") == {"sip:new0@x"}
    assert await pair.contacts_on("se1", f"sip:a1@{DOMAIN}") == {"sip:old1@x"}


async def test_disaster_failback_when_the_backup_pool_is_lost(pair: Pair) -> None:
    pair.cli("cms", "failover")
    pair.cli("pool", "failover", "se1")
    await put_contacts("a2", SE2.base, ["sip:on-se2@x"])
    pair.cli("server", "kill", "se2")                          # the backup pool is lost
    refused = pair.cli("pool", "failback", "se1", check=False)
    assert refused.returncode == 1 and "no CMS master answers" in refused.stderr
    pair.cli("cms", "failover", "--disaster")
    refused = pair.cli("pool", "failback", "se1", check=False)
    assert refused.returncode == 1 and "--disaster" in refused.stderr
    result = pair.cli("pool", "failback", "se1", "--disaster")
    assert "are lost" in result.stdout
    await pair.sign_in(["a2"], "se1")
    assert pair.on_pool("a2", "se1") and pair.agents["a2"].mode == "full"
    await put_contacts("a2", SE1.base, ["sip:home@x"])          # full service at home
