"""The Backup Service between two paired Standard Edition pools, as real processes:
it survives a network cut of the backup side and restarts of either side without
losing a change, reports `broken` with the reason while cut, and refuses calls that
are not signed with the pair's key (SPEC DR-2, DR-3, DR-4)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.integration.drpair import Node, Pair, running, se_pair, wait_for
from trimaran.admin.peerauth import sign
from trimaran.deploy.sites import netfilter_problem

pytestmark = pytest.mark.timeout(300)

SE1, SE2 = Node("se1", "se1", "127.0.15.1"), Node("se2", "se2", "127.0.15.2")
TOPOLOGY = se_pair("backup-pair", SE1, SE2)
USERS = [f"u{i}" for i in range(8)]


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    async with running(tmp_path, TOPOLOGY, [SE1, SE2], {"se1": USERS}) as deployment:
        yield deployment


def direction(pair: Pair, pool: str) -> dict[str, object]:
    value = pair.cli_json("backup", "status", pool)["directions"][0]  # type: ignore[index]
    assert isinstance(value, dict)
    return value


async def _is(value: bool) -> bool:
    return value


@pytest.mark.skipif(netfilter_problem() is not None, reason=str(netfilter_problem()))
async def test_a_cut_and_restarts_lose_no_change_and_are_reported(pair: Pair) -> None:
    writers = pair.writers(USERS, rate=30)
    writers.start()
    await wait_for(lambda: _is(len(writers.stats.acked) >= 30), 30, "writes")
    await wait_for(lambda: _is(direction(pair, "se1")["state"] == "steady"), 20, "steady")

    pair.cli("site", "fail", "dc2", "--mode", "partition")
    await wait_for(lambda: _is(direction(pair, "se1")["state"] == "broken"), 30,
                   "backup reported broken while the backup pool is cut off")
    cut = direction(pair, "se1")
    assert "se2" in str(cut["reason"]) and "unreachable" in str(cut["reason"])
    acked = len(writers.stats.acked)
    await wait_for(lambda: _is(len(writers.stats.acked) >= acked + 30), 30,
                   "writes go on while cut")
    behind = direction(pair, "se1")
    assert int(behind["lag_changes"]) > 0                      # the lag is visible
    pair.cli("site", "restore", "dc2")

    pair.cli("server", "stop", "se1")                          # a restart of the source
    pair.cli("server", "start", "se1")
    pair.cli("server", "stop", "se2")                          # and of the target
    pair.cli("server", "start", "se2")
    acked = len(writers.stats.acked)
    await wait_for(lambda: _is(len(writers.stats.acked) >= acked + 20), 30, "writes again")
    await writers.stop()
    synced = pair.cli_json("backup", "sync", "se1")
    assert synced["synced"] is True and synced["lag_changes"] == 0
    assert synced["applied_seq"] == synced["last_seq"]        # nothing skipped
    assert await pair.lost_on(writers, "se2") == []
    await wait_for(lambda: _is(direction(pair, "se1")["state"] == "steady"), 20, "steady")


async def test_unsigned_or_wrongly_signed_backup_calls_are_refused(pair: Pair) -> None:
    url = f"{SE2.base}/backup/apply"
    body = json.dumps({"source": "se1", "changes": [], "blobs": {}}).encode()

    def post(headers: dict[str, str]) -> tuple[int, str]:
        request = urllib.request.Request(url, data=body, method="POST",
                                         headers={"Content-Type": "application/json",
                                                  **headers})
        try:
            with urllib.request.urlopen(request, timeout=3) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    status, text = post({})
    assert status == 401 and "admin credentials required" in text       # OPS-6
    status, text = post(sign("pair:se1:se2", b"not-the-key" * 3, "POST", "/backup/apply",
                             body))
    assert status == 403 and "bad signature" in text
    secret = pair.rundir / "secrets" / "_pair-se1-se2.key"
    good = sign("pair:se1:se2", bytes.fromhex(secret.read_text().strip()), "POST",
                "/backup/apply", body)
    status, text = post(good)
    assert status == 200, text


async def test_a_rebuilt_backup_pool_is_sent_everything_again(pair: Pair) -> None:
    writers = pair.writers(USERS, rate=30)
    writers.start()
    await wait_for(lambda: _is(len(writers.stats.acked) >= 30), 30, "writes")
    await writers.stop()
    pair.cli("backup", "sync", "se1")
    pair.cli("server", "stop", "se2")
    for path in (pair.rundir / "data" / "se2").glob("store.sqlite*"):
        path.unlink()                                          # the backup pool is rebuilt
    pair.cli("server", "start", "se2")
    synced = pair.cli_json("backup", "sync", "se1")            # DR-4
    assert synced["synced"] is True and synced["applied_seq"] == synced["last_seq"]
    assert await pair.lost_on(writers, "se2") == []
