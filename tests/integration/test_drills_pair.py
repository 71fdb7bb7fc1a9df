"""`trimaran drill` on two paired Standard Edition pools in two sites behind a Director
pool (SPEC OPS-2): pool-loss and site-loss (DR-5 RTO, DR-2 RPO, DR-6 failback, DR-9
CMS), wan-cut (nothing acknowledged lost, the Backup Service catches up) and
director-kill (DIR-2), each at small scale meeting its own targets; a drill leaves the
deployment as it found it, so they run one after the other on one deployment."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.drills import deployment, drill, step, target
from tests.integration.drpair import trimaran
from trimaran.deploy.sites import netfilter_problem

pytestmark = pytest.mark.timeout(420)

TOPOLOGY = """
name: drill-pair
sip_domain: trimaran.test
settings:
  heartbeat_seconds: 0.5
  failure_detection_seconds: 2
  resiliency_failover_seconds: 3
  resiliency_fallback_seconds: 5
sites: [{name: dc1}, {name: dc2}]
pools:
  - name: se1
    site: dc1
    role: frontend
    edition: standard
    backup_pool: se2
    servers: [{name: se1, address: 127.0.20.1}]
  - name: se2
    site: dc2
    role: frontend
    edition: standard
    backup_pool: se1
    servers: [{name: se2, address: 127.0.20.2}]
  - name: dir2
    site: dc2
    role: director
    servers:
      - {name: dir2a, address: 127.0.20.5}
      - {name: dir2b, address: 127.0.20.6}
"""


@pytest.fixture(scope="module")
def rundir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with deployment(tmp_path_factory.mktemp("drill-pair"), TOPOLOGY) as path:
        yield path


def test_pool_loss_failover_and_failback(rundir: Path, tmp_path: Path) -> None:
    markdown = tmp_path / "pool-loss.md"
    report = drill(rundir, "pool-loss", "--report", str(markdown))
    assert target(report, "fault", "DR-5", "command")["measured"] <= 30.0
    assert target(report, "fault", "DR-2", "oldest")["measured"] <= 1.0
    assert target(report, "fault", "DR-9", "CMS")["ok"]      # se1 held the CMS
    assert step(report, "fault")["users_not_recovered"] == 0
    back = step(report, "failback")
    assert back["lost"] == 0 and back["acked_checked"] > 0                     # DR-6
    text = markdown.read_text()
    assert "# Drill `pool-loss`: PASSED" in text and "## Timeline" in text


def test_site_loss(rundir: Path) -> None:
    report = drill(rundir, "site-loss", "--site", "dc1")
    assert target(report, "fault", "DR-5", "end to end")["measured"] <= 60.0
    assert step(report, "failback")["lost"] == 0


@pytest.mark.skipif(netfilter_problem() is not None, reason=str(netfilter_problem()))
def test_wan_cut(rundir: Path) -> None:
    report = drill(rundir, "wan-cut", "--hold", "4")
    cut = step(report, "cut")
    assert cut["detect_seconds"] is not None and cut["lost"] == 0
    assert cut["users_not_recovered"] == 0
    assert step(report, "heal")["rto_seconds"] is not None


def test_director_kill(rundir: Path) -> None:
    report = drill(rundir, "director-kill", "--hold", "3")
    assert target(report, "fault", "DIR-2", "sign-ins succeed")["measured"] <= 5.0
    assert step(report, "fault")["users_not_recovered"] == 0


def test_after_the_drills_the_deployment_is_as_it_was(rundir: Path) -> None:
    cms = json.loads(trimaran("cms", "status", "--dir", str(rundir), "--json").stdout)
    assert cms["master"] == "se1"                    # pool-loss and site-loss moved it back
    status = json.loads(trimaran("status", "--dir", str(rundir), "--json").stdout)
    assert all(row["healthy"] for row in status["servers"]), status["servers"]
