"""Pool failover and failback of an Enterprise Edition pair (two pools of two servers,
each with its own PostgreSQL Back End) with a whole site lost: SPEC DR-2, DR-5..DR-7."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.integration.drpair import DOMAIN, Node, Pair, running, wait_for
from trimaran.client.xcap import XcapClient, XcapError
from trimaran.store.model import ContactEntry, ContactList

pytestmark = pytest.mark.timeout(420)

TOPOLOGY = """
name: dr-ee-pair
sip_domain: trimaran.test
sites:
  - name: dc1
  - name: dc2
pools:
  - name: fe1
    site: dc1
    role: frontend
    edition: enterprise
    backup_pool: fe2
    servers:
      - {name: fe1a, address: 127.0.14.11}
      - {name: fe1b, address: 127.0.14.12}
    backend:
      principal: {address: 127.0.14.21, port: 5432}
  - name: fe2
    site: dc2
    role: frontend
    edition: enterprise
    backup_pool: fe1
    servers:
      - {name: fe2a, address: 127.0.14.31}
      - {name: fe2b, address: 127.0.14.32}
    backend:
      principal: {address: 127.0.14.41, port: 5432}
"""
NODES = [Node("fe1a", "fe1", "127.0.14.11"), Node("fe1b", "fe1", "127.0.14.12"),
         Node("fe2a", "fe2", "127.0.14.31"), Node("fe2b", "fe2", "127.0.14.32")]
USERS = [f"e{i}" for i in range(10)]


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    users = {"fe1": USERS}
    async with running(tmp_path, TOPOLOGY, NODES, users, timeout=180) as deployment:
        yield deployment


async def test_site_loss_failover_and_failback_of_an_enterprise_pool(pair: Pair) -> None:
    await pair.sign_in(USERS, "fe1")
    writers = pair.writers(USERS, rate=30)
    writers.start()
    await wait_for(lambda: _true(len(writers.stats.acked) >= 40), 30, "acknowledged writes")

    async def steady() -> bool:
        direction = pair.cli_json("backup", "status", "fe1")["directions"][0]  # type: ignore[index]
        return direction["state"] == "steady" and float(direction["lag_seconds"]) <= 1.0
    await wait_for(steady, 20, "backup of fe1 steady with lag <= 1 s")

    kinds = {a.kind for a in writers.stats.acked}
    assert kinds == {"contact", "meeting", "presence"}, kinds
    pair.cli("site", "fail", "dc1")
    lost_at = time.time()
    await writers.stop()   # so that no later write re-sends (and hides) a lost contact
    started = time.monotonic()
    pair.cli("cms", "failover", "--disaster")
    pair.cli("pool", "failover", "fe1", "--disaster")
    await wait_for(lambda: _true(all(pair.on_pool(n, "fe2") for n in USERS)), 60,
                   "every fe1 user signed in on fe2")
    assert time.monotonic() - started <= 30.0                                   # DR-5
    lost = await pair.lost_on(writers, "fe2")
    assert all(a.at >= lost_at - 1.5 for a in lost), f"lost beyond the lag: {lost[:5]}"
    acked = len(writers.stats.acked)
    writers.start()
    await wait_for(lambda: _true(len(writers.stats.acked) >= acked + 20), 30,
                   "writes acknowledged on fe2")
    await writers.stop()

    pair.cli("site", "restore", "dc1", timeout=180)
    fenced = XcapClient(NODES[0].base, f"sip:e0@{DOMAIN}", "e0", "e0-pw")
    with pytest.raises(XcapError) as refused:
        await fenced.put(ContactList(f"sip:e0@{DOMAIN}", (), (ContactEntry("sip:x@y"),)))
    assert refused.value.status == 409                                          # DR-7

    writers.start()
    await wait_for(lambda: _true(len(writers.stats.acked) >= acked + 40), 30, "writes on fe2")
    await writers.stop()
    pair.cli("pool", "failback", "fe1")
    await wait_for(lambda: _true(all(pair.on_pool(n, "fe1") for n in USERS)), 60,
                   "every fe1 user back home")
    home = await pair.lost_on(writers, "fe1")
    assert set(home) <= set(lost), f"lost by the failback: {home[:5]}"


async def _true(value: bool) -> bool:
    return value
