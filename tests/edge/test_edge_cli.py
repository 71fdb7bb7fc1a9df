"""`trimaran edge ...` and `trimaran pool set-edge` on a deployment run as real processes
(SPEC EDGE-3, EDGE-4, EDGE-5; DESIGN §4 exit codes).

Two paired Standard Edition pools, fe2 (site dc2, listed first so that it hosts the CMS
and fe1 can be failed over without moving the CMS) and fe1 (dc1); three Edge pools:
edge1 (dc1, next hop fe1, federation-enabled, the federation route), edge2 (dc2, next
hop fe2, federation-enabled) and edge3 (dc1, next hop fe2, not federation-enabled).
The tests share the deployment and run in file order; the last one fails fe1 over.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.drpair import DOMAIN, trimaran
from trimaran.cms.edgedoc import EDGE_KEY
from trimaran.deploy.dr import Deployment
from trimaran.deploy.rundir import RunDir

pytestmark = pytest.mark.timeout(300)

TOPOLOGY = f"""\
name: edge-ops
sip_domain: {DOMAIN}
sites: [{{name: dc1}}, {{name: dc2}}]
federation_route: edge1
federation_partners:
  - {{domain: partner.test, edges: ['127.0.41.250:5061']}}
pools:
  - {{name: fe2, site: dc2, role: frontend, edition: standard, backup_pool: fe1,
     servers: [{{name: fe2, address: 127.0.41.2}}]}}
  - {{name: fe1, site: dc1, role: frontend, edition: standard, backup_pool: fe2,
     edge_pool: edge1, servers: [{{name: fe1, address: 127.0.41.1}}]}}
  - {{name: edge1, site: dc1, role: edge, next_hop: fe1, federation: true,
     servers: [{{name: edge1a, address: 127.0.41.11, external_address: 127.0.41.111}}]}}
  - {{name: edge2, site: dc2, role: edge, next_hop: fe2, federation: true,
     servers: [{{name: edge2a, address: 127.0.41.21, external_address: 127.0.41.121}}]}}
  - {{name: edge3, site: dc1, role: edge, next_hop: fe2,
     servers: [{{name: edge3a, address: 127.0.41.31, external_address: 127.0.41.131,
                 external_port: 5061}}]}}
"""


class Ops:
    """The running deployment, driven through the CLI."""

    def __init__(self, rundir: Path) -> None:
        self.rundir = rundir

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return trimaran(*args, "--dir", str(self.rundir), check=False)

    def ok(self, *args: str) -> str:
        result = self.run(*args)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result.stdout

    def refused(self, *args: str) -> str:
        """The refusal message of a command that must exit 1 (DESIGN §4)."""
        result = self.run(*args)
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        return result.stderr

    def status(self) -> dict[str, Any]:
        value = json.loads(self.ok("edge", "status", "--json"))
        assert isinstance(value, dict)
        return value


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ops]:
    base = tmp_path_factory.mktemp("edge-ops")
    (base / "topology.yaml").write_text(TOPOLOGY)
    rundir = base / "run"
    trimaran("up", str(base / "topology.yaml"), "--dir", str(rundir), timeout=120)
    try:
        yield Ops(rundir)
    finally:
        trimaran("down", "--dir", str(rundir), check=False, timeout=120)


def test_status_shows_the_topologys_edge_state_and_every_edge_servers_health(ops: Ops) -> None:
    status = ops.status()
    assert status["source"] == "topology"                      # nothing in the CMS yet
    assert status["federation_route"] == "edge1"               # EDGE-3
    assert status["next_hops"] == {"edge1": "fe1", "edge2": "fe2", "edge3": "fe2"}  # EDGE-4
    assert status["media_edges"] == {"fe1": "edge1"}           # EDGE-5
    assert status["partners"] == [{"domain": "partner.test", "edges": ["127.0.41.250:5061"]}]
    assert [(s["server"], s["health"], s["external"]) for s in status["servers"]] == [
        ("edge1a", "up", "127.0.41.111:5060"), ("edge2a", "up", "127.0.41.121:5060"),
        ("edge3a", "up", "127.0.41.131:5061")]
    text = ops.ok("edge", "status")
    assert "federation route  edge1" in text and "next hop          edge1 -> fe1" in text


def test_the_federation_route_moves_only_to_a_federation_enabled_edge_pool_that_is_up(
        ops: Ops) -> None:
    assert "fe1 is a frontend pool, not an Edge pool" in ops.refused(
        "edge", "federation-route", "set", "fe1")
    assert "Edge pool edge3 is not federation-enabled" in ops.refused(
        "edge", "federation-route", "set", "edge3")
    ops.ok("server", "kill", "edge2a")
    assert "pool edge2 is down" in ops.refused("edge", "federation-route", "set", "edge2")
    down = ops.status()
    assert down["servers"][1]["health"] == "down"
    assert down["federation_route"] == "edge1"                 # a refusal changes nothing

    ops.ok("server", "start", "edge2a")
    out = ops.ok("edge", "federation-route", "set", "edge2")
    assert "federation route: edge1 -> edge2 (CMS version" in out
    status = ops.status()
    assert status["federation_route"] == "edge2"
    assert status["source"].startswith("CMS version")
    assert "already edge2; nothing changed" in ops.ok("edge", "federation-route", "set", "edge2")
    ops.ok("edge", "federation-route", "set", "edge1")
    assert ops.status()["federation_route"] == "edge1"


def test_pool_set_edge_moves_a_front_end_pools_media_relay_to_another_edge_pool(
        ops: Ops) -> None:
    out = ops.ok("pool", "set-edge", "fe1", "edge2")
    assert "media Edge pool of fe1: edge1 -> edge2" in out
    answer = json.loads(ops.ok("pool", "set-edge", "fe2", "edge3", "--json"))
    assert (answer["from"], answer["to"], answer["changed"]) == (None, "edge3", True)
    assert ops.status()["media_edges"] == {"fe1": "edge2", "fe2": "edge3"}
    assert "fe2 is a frontend pool, not an Edge pool" in ops.refused(
        "pool", "set-edge", "fe1", "fe2")
    assert "only Front End pools have a media Edge pool" in ops.refused(
        "pool", "set-edge", "edge1", "edge2")
    assert ops.status()["next_hops"]["edge1"] == "fe1"         # other settings kept


def test_a_bad_edge_document_blocks_failover_until_an_edge_command_rewrites_it(
        ops: Ops) -> None:
    dep = Deployment(RunDir(ops.rundir))
    master, _ = dep.cms_master()
    status, body = dep.first(master, "POST", "/cms/documents",
                             {"key": EDGE_KEY, "body": '{"federation_route": 7}'},
                             key=dep.cms_key)
    assert status == 200, body
    assert ops.status()["source"].startswith("topology (edge document")
    assert "cannot tell which pools are Edge next hops" in ops.refused(
        "pool", "failover", "fe1")
    result = ops.run("edge", "next-hop", "set", "edge1", "fe1")
    assert result.returncode == 0 and "warning: edge document" in result.stderr, result
    status_after = ops.status()
    assert status_after["source"].startswith("CMS version")
    assert status_after["media_edges"] == {"fe1": "edge1"}    # started again from the topology


def test_failing_over_an_edge_pools_next_hop_is_refused_until_the_next_hop_moves(
        ops: Ops) -> None:
    assert ops.refused("pool", "failover", "fe1").strip() == (
        "trimaran: pool fe1 is the next hop of Edge pool edge1: remote users and federation "
        "would be cut off; move it first with `trimaran edge next-hop set edge1 <other pool>` "
        "(EDGE-4)")
    assert "edge2 is an edge pool; an Edge pool's next hop is a Director or Front End" in \
        ops.refused("edge", "next-hop", "set", "edge1", "edge2")
    out = ops.ok("edge", "next-hop", "set", "edge1", "fe2")
    assert "next hop of edge1: fe1 -> fe2" in out
    assert ops.status()["next_hops"] == {"edge1": "fe2", "edge2": "fe2", "edge3": "fe2"}
    assert "failed over to fe2" in ops.ok("pool", "failover", "fe1")      # EDGE-4 satisfied
    ops.ok("server", "kill", "fe1")
    assert "pool fe1 is down" in ops.refused("edge", "next-hop", "set", "edge1", "fe1")
    assert ops.status()["next_hops"]["edge1"] == "fe2"
