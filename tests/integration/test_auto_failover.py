"""Automatic pool failover with a witness in a third site (SPEC DR-10), real processes:
the home site killed → the backup pool and the witness both see it down → failover, and
the home pool's users get full mode on the backup pool without an admin; the home site
cut off from the backup site only (the witness still sees it) → no failover."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.integration.drpair import Node, Pair, running, se_pair, wait_for
from trimaran.deploy.sites import cut_between, netfilter_problem, uncut

pytestmark = pytest.mark.timeout(300)

HEARTBEAT, DETECTION = 0.5, 3.0
SE1, SE2 = Node("se1", "se1", "127.0.18.1"), Node("se2", "se2", "127.0.18.2")
TOPOLOGY = se_pair("auto-failover", SE1, SE2, auto_failover=True, more_sites=("w",),
                   settings={"heartbeat_seconds": HEARTBEAT, "failure_detection_seconds": 2,
                             "resiliency_failover_seconds": DETECTION,
                             "resiliency_fallback_seconds": 5},
                   more_pools="  - {name: wit, site: w, role: witness, servers: "
                              "[{name: wit1, address: 127.0.18.9}]}\n")
USERS = ["au0", "au1", "au2"]


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    async with running(tmp_path, TOPOLOGY, [SE1, SE2], {"se1": USERS}) as deployment:
        await deployment.sign_in(USERS, "se1")
        yield deployment


def record(pair: Pair, node: Node, pool: str) -> dict[str, object]:
    """The pool's failover record as the server holds it; a pool never failed over may
    have no record document yet, which servers read as "normal" (cms.failover)."""
    records = pair.status(node)["failover"]
    assert isinstance(records, dict)
    value = records.get(pool, {"state": "normal"})
    assert isinstance(value, dict)
    return value


async def _is(value: bool) -> bool:
    return value


async def test_home_site_loss_fails_the_pool_over_automatically(pair: Pair) -> None:
    pair.cli("server", "kill", "se1")
    await wait_for(lambda: _is(record(pair, SE2, "se1")["state"] == "failed-over"), 30,
                   "automatic failover of se1")
    await wait_for(lambda: _is(all(pair.on_pool(n, "se2") and pair.agents[n].mode == "full"
                                   for n in USERS)), 30,
                   "se1's users in full mode on se2 without an admin")
    cms = pair.cli_json("cms", "status")
    assert cms["master"] == "se2"                  # the lost pool held the CMS: taken over
    events = pair.status(SE2)["failover"]["se1"]  # type: ignore[index]
    assert events["mode"] == "disaster"           # type: ignore[index]


@pytest.mark.skipif(netfilter_problem() is not None, reason=str(netfilter_problem()))
async def test_a_cut_between_the_sites_seen_by_the_witness_is_not_failed_over(
        pair: Pair) -> None:
    chain = "TRIMARAN-TEST-AUTOFO"
    cut_between(chain, (SE1.address,), (SE2.address,))
    try:
        await wait_for(lambda: _is(pair.status(SE2)["backup_registrar_of"]["state"]  # type: ignore[index]
                                   == "down"), 20, "se2 sees se1 down")
        status = pair.status(SE2)["auto_failover"]  # type: ignore[index]
        await wait_for(lambda: _is("partition" in str(
            pair.status(SE2)["auto_failover"]["reason"])), 10,  # type: ignore[index]
            "the controller names the partition")
        assert status["action"] == "wait"          # type: ignore[index]
        assert record(pair, SE2, "se1")["state"] == "normal"
        assert record(pair, SE1, "se1")["state"] == "normal"
    finally:
        uncut(chain)
