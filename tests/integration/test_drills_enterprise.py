"""`trimaran drill` on an Enterprise pool of two servers with a mirrored Back End and
a witness (SPEC OPS-2): each scenario runs at small scale and meets its own targets —
server-kill and server-freeze (FE-2, FE-3), backend-principal-kill and
backend-partition (BE-2: writes back within 10 s, zero acknowledged writes lost)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.drills import deployment, drill, step, target
from tests.integration.drpair import trimaran
from trimaran.deploy.sites import netfilter_problem

pytestmark = [
    pytest.mark.timeout(420),
    pytest.mark.skipif(not Path("/usr/lib/postgresql").exists(),
                       reason="PostgreSQL server binaries missing (./run installs them)"),
]

TOPOLOGY = """
name: drill-ee
sip_domain: trimaran.test
settings: {heartbeat_seconds: 0.5, failure_detection_seconds: 2}
sites: [{name: dc1}, {name: w1}]
pools:
  - name: fe1
    site: dc1
    role: frontend
    edition: enterprise
    servers:
      - {name: fe1a, address: 127.0.20.11}
      - {name: fe1b, address: 127.0.20.12}
    backend:
      principal: {address: 127.0.20.21, port: 5432}
      mirror: {address: 127.0.20.22, port: 5432}
      witness: {server: wit1}
  - {name: witness1, site: w1, role: witness, servers: [{name: wit1, address: 127.0.20.31}]}
"""


@pytest.fixture(scope="module")
def rundir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with deployment(tmp_path_factory.mktemp("drill-ee"), TOPOLOGY) as path:
        yield path


def test_server_kill(rundir: Path) -> None:
    report = drill(rundir, "server-kill")
    users_back = target(report, "fault", "FE-2", "registered again")
    assert users_back["measured"] <= 5.0
    assert target(report, "fault", "FE-3", "dead")["ok"]
    fault = step(report, "fault")
    assert fault["acked_checked"] > 0 and fault["lost"] == 0
    assert fault["users_not_recovered"] == 0
    assert step(report, "repair")["rto_seconds"] is not None       # back in the pool


def test_server_freeze(rundir: Path) -> None:
    report = drill(rundir, "server-freeze")
    assert target(report, "fault", "FE-2", "registered again")["measured"] <= 5.0
    assert step(report, "fault")["lost"] == 0


def test_backend_principal_kill_loses_nothing(rundir: Path) -> None:
    report = drill(rundir, "backend-principal-kill")
    fault = step(report, "fault")
    assert target(report, "fault", "BE-2", "writes succeed again")["measured"] <= 10.0
    assert fault["acked_checked"] > 0 and fault["lost"] == 0                  # RPO 0
    assert step(report, "rejoin")["rto_seconds"] is not None                  # BE-6


@pytest.mark.skipif(netfilter_problem() is not None, reason=str(netfilter_problem()))
def test_backend_partition_loses_nothing(rundir: Path) -> None:
    report = drill(rundir, "backend-partition")
    assert target(report, "fault", "BE-2", "writes succeed again")["measured"] <= 10.0
    assert step(report, "fault")["lost"] == 0


def test_a_drill_the_deployment_cannot_run_is_refused(rundir: Path) -> None:
    refused = trimaran("drill", "pool-loss", "--dir", str(rundir), check=False)
    assert refused.returncode == 1
    assert "backup pool" in refused.stderr
    unknown = trimaran("drill", "server-kill", "--dir", str(rundir), "--server", "nope",
                       check=False)
    assert unknown.returncode == 1 and "no server named 'nope'" in unknown.stderr
