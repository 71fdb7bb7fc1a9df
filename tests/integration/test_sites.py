"""Losing a whole site and getting it back (SPEC OPS-1 `site fail|restore`, OPS-2 site
loss), with real processes: a paired SE deployment in two sites on 127.0.10.x.

``--mode kill`` SIGKILLs every process of the site; ``--mode partition`` leaves them
running behind netfilter rules that drop every packet between the site's addresses and
any other address (skipped, with the reason, where netfilter cannot be used).
"""

from __future__ import annotations

import contextlib
import errno
import json
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests import admincreds
from tests.integration.drpair import Node, se_pair, trimaran
from trimaran.deploy.database import databases_of, instance
from trimaran.deploy.rundir import DeploymentState, RunDir, ServerState
from trimaran.deploy.sites import (
    SiteError,
    chain_exists,
    chain_name,
    check_partitionable,
    load_failed,
    netfilter_problem,
    site_members,
    uncut,
)
from trimaran.deploy.supervisor import health, pid_alive, request_json
from trimaran.topology.loader import parse_topology
from trimaran.topology.model import Topology

SE1, SE2 = ("127.0.10.1", 5370, 8370), ("127.0.10.2", 5371, 8371)
PAIR = se_pair("sites-test", Node("se1", "se1", *SE1), Node("se2", "se2", *SE2))
SITES = ("dc1", "dc2")
CUT_PROBE_SECONDS = 1.0  # a connect across a cut must still be hanging after this long


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.05)


def remove_cuts(run: RunDir) -> None:
    """Remove any netfilter chain the tests' sites may have left, whatever happened."""
    if netfilter_problem() is not None:
        return
    for site in SITES:
        chain = chain_name(run, site)
        if chain_exists(chain):
            with contextlib.suppress(SiteError):
                uncut(chain)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[RunDir]:
    topology = tmp_path / "pair.yaml"
    topology.write_text(PAIR)
    run = RunDir(tmp_path / "run")
    trimaran("up", str(topology), "--dir", str(run.path))
    admincreds.for_rundir(run.path)      # this process now holds the deployment's key
    try:
        yield run
    finally:
        remove_cuts(run)
        trimaran("down", "--dir", str(run.path), check=False)


def server(run: RunDir, name: str) -> ServerState:
    return run.load_state().servers[name]


def healthy(run: RunDir, name: str) -> bool:
    return health(server(run, name), timeout=0.5)[0]


def site_cmd(run: RunDir, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return trimaran("site", *args, "--dir", str(run.path), check=check)


def status_sites(run: RunDir) -> dict[str, dict[str, object]]:
    sites: dict[str, dict[str, object]] = json.loads(
        trimaran("status", "--json", "--dir", str(run.path)).stdout)["sites"]
    return sites


def connect_outcome(source: str, target: tuple[str, int]) -> str:
    """'connected', 'refused' or 'hangs' (no answer within CUT_PROBE_SECONDS)."""
    with socket.socket() as sock:
        sock.bind((source, 0))
        sock.settimeout(CUT_PROBE_SECONDS)
        try:
            sock.connect(target)
        except TimeoutError:
            return "hangs"
        except OSError as exc:
            return "refused" if exc.errno == errno.ECONNREFUSED else f"error {exc}"
        return "connected"


# --- kill -----------------------------------------------------------------------------------


def test_site_kill_kills_every_process_of_the_site_and_restore_brings_them_back(
        pair: RunDir) -> None:
    se1_pid, se2_pid = server(pair, "se1").pid, server(pair, "se2").pid
    assert healthy(pair, "se1") and healthy(pair, "se2")

    site_cmd(pair, "fail", "dc1")

    assert not pid_alive(se1_pid)
    assert not healthy(pair, "se1")
    assert pid_alive(se2_pid) and healthy(pair, "se2")  # the other site is untouched
    [(site, record)] = load_failed(pair).items()
    assert (site, record.mode.value) == ("dc1", "kill")
    assert status_sites(pair)["dc1"]["mode"] == "kill"

    refused = site_cmd(pair, "fail", "dc1", "--mode", "partition", check=False)
    assert refused.returncode == 1 and "already failed" in refused.stderr

    restored = site_cmd(pair, "restore", "dc1")
    assert "site dc1 restored" in restored.stdout
    assert healthy(pair, "se1") and pid_alive(server(pair, "se1").pid)
    assert server(pair, "se1").pid != se1_pid
    assert server(pair, "se2").pid == se2_pid
    assert load_failed(pair) == {} and status_sites(pair) == {}

    again = site_cmd(pair, "restore", "dc1", check=False)
    assert again.returncode == 1
    assert "site dc1 is not failed" in again.stderr


def test_unknown_sites_and_bad_modes_are_refused(pair: RunDir) -> None:
    for action in ("fail", "restore"):
        result = site_cmd(pair, action, "dc9", check=False)
        assert result.returncode == 1
        assert "unknown site 'dc9'" in result.stderr and "dc1, dc2" in result.stderr
    assert site_cmd(pair, "fail", "dc1", "--mode", "freeze", check=False).returncode == 2
    assert load_failed(pair) == {}
    assert healthy(pair, "se1") and healthy(pair, "se2")


def test_failing_a_site_of_a_stopped_deployment_is_refused(pair: RunDir) -> None:
    trimaran("down", "--dir", str(pair.path))
    result = site_cmd(pair, "fail", "dc2", check=False)
    assert result.returncode == 1 and "nothing of site dc2 is running" in result.stderr
    assert load_failed(pair) == {}


# --- partition ------------------------------------------------------------------------------

needs_netfilter = pytest.mark.skipif(netfilter_problem() is not None,
                                     reason=f"no network cut here: {netfilter_problem()}")


@needs_netfilter
def test_site_partition_cuts_the_site_off_and_restore_reconnects_it(pair: RunDir) -> None:
    se1_pid = server(pair, "se1").pid
    se1_admin = (SE1[0], SE1[2])
    assert connect_outcome("127.0.0.1", se1_admin) == "connected"

    site_cmd(pair, "fail", "dc1", "--mode", "partition")

    assert pid_alive(se1_pid)  # the processes keep running behind the cut
    assert chain_exists(chain_name(pair, "dc1"))
    # silently dropped both ways, as across a real cut: no RST, the connect just hangs
    assert connect_outcome("127.0.0.1", se1_admin) == "hangs"
    assert connect_outcome(SE2[0], se1_admin) == "hangs"
    assert connect_outcome(SE1[0], (SE2[0], SE2[2])) == "hangs"
    assert connect_outcome(SE1[0], se1_admin) == "connected"  # inside the site: fine
    assert healthy(pair, "se2")
    assert status_sites(pair)["dc1"]["mode"] == "partition"
    refused = site_cmd(pair, "fail", "dc1", check=False)
    assert refused.returncode == 1 and "already failed" in refused.stderr

    site_cmd(pair, "restore", "dc1")

    assert not chain_exists(chain_name(pair, "dc1"))
    wait_until(lambda: healthy(pair, "se1"), 5, "se1 reachable again")
    assert server(pair, "se1").pid == se1_pid  # never restarted
    assert connect_outcome(SE2[0], se1_admin) == "connected"
    assert load_failed(pair) == {}


# --- who is in which site (no processes) ---------------------------------------------------

STRETCHED = """
name: placement
sip_domain: trimaran.test
sites:
  - {name: dc1, rtt_ms: {dc2: 2}}
  - {name: dc2}
  - {name: w}
pools:
  - name: fe1
    site: dc1
    role: frontend
    edition: enterprise
    servers:
      - {name: fe1a, address: 127.0.11.11}
      - {name: fe1b, address: 127.0.12.11, site: dc2}
    backend:
      principal: {address: 127.0.11.21}
      mirror: {address: 127.0.12.21, site: dc2}
      witness: {server: w1}
  - {name: wit, site: w, role: witness, servers: [{name: w1, address: 127.0.13.1}]}
"""


def placement(text: str = STRETCHED) -> tuple[Topology, DeploymentState]:
    """The topology and the state `up` would record for it (no process started)."""
    topology = parse_topology(text)
    servers = {s.name: ServerState(s.name, p.name, p.role.value, s.address, s.sip_port,
                                   s.admin_port) for p in topology.pools for s in p.servers}
    databases = {d.name: d for d in databases_of(topology)}
    return topology, DeploymentState(topology.name, servers, databases)


def test_servers_and_back_end_instances_belong_to_the_site_they_are_placed_in() -> None:
    topology, state = placement()
    dc1, dc2, w = (site_members(topology, state, s) for s in ("dc1", "dc2", "w"))
    assert (dc1.servers, dc1.databases, dc1.witnesses) == (("fe1a",), ("fe1-principal",), ())
    assert (dc2.servers, dc2.databases) == (("fe1b",), ("fe1-mirror",))
    assert (w.witnesses, w.servers, w.databases) == (("w1",), (), ())
    assert dc1.addresses == ("127.0.11.11", "127.0.11.21")
    assert dc2.addresses == ("127.0.12.11", "127.0.12.21")


def test_a_cut_is_refused_when_addresses_cannot_tell_the_site_apart() -> None:
    shared, state = placement(STRETCHED.replace("127.0.12.21", "127.0.11.21"))
    with pytest.raises(SiteError, match=r"127\.0\.11\.21 are used in site dc1 too"):
        check_partitionable(shared, state, site_members(shared, state, "dc2"))
    local, state = placement(STRETCHED.replace("127.0.13.1", "127.0.0.1"))
    with pytest.raises(SiteError, match=r"uses 127\.0\.0\.1,"):
        check_partitionable(local, state, site_members(local, state, "w"))


def test_chain_names_fit_netfilter_and_differ_between_run_directories(tmp_path: Path) -> None:
    one, two = RunDir(tmp_path / "one"), RunDir(tmp_path / "two")
    assert chain_name(one, "dc1").startswith("TRIMARAN-DC1-")
    assert chain_name(one, "dc1") != chain_name(two, "dc1")
    long_name = chain_name(one, "a-site-with-a-rather-long-name")
    assert len(long_name) <= 28 and long_name.startswith("TRIMARAN-")


# --- a site holding a mirrored Back End's principal (real PostgreSQL) ---------------------

FE6 = {"fe6a": "127.0.10.11", "fe6b": "127.0.10.12"}
DB6 = {"fe6-principal": ("127.0.10.21", 5660), "fe6-mirror": ("127.0.10.22", 5660)}
MIRRORED = f"""
name: sites-mirrored
sip_domain: trimaran.test
sites:
  - {{name: dc1, rtt_ms: {{dc2: 2}}}}
  - {{name: dc2}}
  - {{name: w}}
pools:
  - name: fe6
    site: dc1
    role: frontend
    edition: enterprise
    servers:
      - {{name: fe6a, address: {FE6["fe6a"]}, sip_port: 5660, admin_port: 8660}}
      - {{name: fe6b, address: {FE6["fe6b"]}, sip_port: 5660, admin_port: 8660, site: dc2}}
    backend:
      principal: {{address: {DB6["fe6-principal"][0]}, port: 5660}}
      mirror: {{address: {DB6["fe6-mirror"][0]}, port: 5660, site: dc2}}
      witness: {{server: wit6}}
  - {{name: wit, site: w, role: witness,
     servers: [{{name: wit6, address: 127.0.10.31, admin_port: 8661}}]}}
settings:
  failure_detection_seconds: 2
  heartbeat_seconds: 0.5
  keepalive_seconds: 1
"""


def agent_state(database: str) -> dict[str, object]:
    host, port = DB6[database]
    status, value = request_json(f"http://{host}:{port + 10_000}/state", timeout=1.0)
    return value if status == 200 and value is not None else {}


def serving_principal(database: str) -> bool:
    state = agent_state(database)
    return state.get("role") == "principal" and bool(state.get("serving"))


def mirror_synchronous(principal: str) -> bool:
    instance = agent_state(principal).get("instance")
    standby = instance.get("standby") if isinstance(instance, dict) else None
    return isinstance(standby, dict) and standby.get("sync_state") == "sync"


@pytest.fixture
def mirrored(tmp_path: Path) -> Iterator[RunDir]:
    topology = tmp_path / "mirrored.yaml"
    topology.write_text(MIRRORED)
    run = RunDir(tmp_path / "run")
    trimaran("up", str(topology), "--dir", str(run.path))
    admincreds.for_rundir(run.path)      # this process now holds the deployment's key
    try:
        yield run
    finally:
        trimaran("down", "--dir", str(run.path), check=False)


@pytest.mark.skipif(not Path("/usr/lib/postgresql").exists(),
                    reason="PostgreSQL server binaries missing (Debian package postgresql)")
@pytest.mark.timeout(240)
def test_losing_the_principals_site_fails_the_back_end_over_and_restore_rejoins_it(
        mirrored: RunDir) -> None:
    wait_until(lambda: mirror_synchronous("fe6-principal"), 60, "a synchronous pair")
    state = mirrored.load_state()
    principal = instance(mirrored, state.databases["fe6-principal"])
    postmaster, agent = principal.pid(), state.databases["fe6-principal"].agent_pid

    site_cmd(mirrored, "fail", "dc1")

    assert not pid_alive(postmaster) and not principal.is_running()
    assert not pid_alive(agent) and not pid_alive(state.servers["fe6a"].pid)
    assert healthy(mirrored, "fe6b") and healthy(mirrored, "wit6")
    wait_until(lambda: serving_principal("fe6-mirror"), 60, "the mirror promoted (BE-2)")

    site_cmd(mirrored, "restore", "dc1", "--timeout", "60")

    assert healthy(mirrored, "fe6a")
    # the old principal's agent came back, saw the higher term and rejoined as the mirror
    wait_until(lambda: agent_state("fe6-principal").get("role") == "mirror"
               and mirror_synchronous("fe6-mirror"), 90, "the old principal rejoined")
    assert serving_principal("fe6-mirror")
