"""`trimaran chat` on a running deployment (SPEC PC-2..PC-4): the chat state in the CMS,
active servers refused with their reason, a chat failover after the loss of the
primary data center and the failback, with no post committed during the failover lost.

The deployment is the databases and the CMS only: a Standard Edition Front End pool
(the CMS master) and a witness in a third site, the chat pool's mirrored store in dc1
with its agents and its log-shipped copy (with a mirror) in dc2, started as `trimaran
up` starts them (`start_backends`). No chat server runs (the chat role is tested with
its own deployment), so every chat server's health is "down" and no lag sample exists.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from click.testing import CliRunner

from trimaran.backend import BackendError, PostgresNotInstalled, find_bin_dir
from trimaran.backend.agent_io import DurableState, StateFile
from trimaran.backend.decide import Role
from trimaran.cli.main import cli
from trimaran.cms.chatdoc import ChatMode
from trimaran.deploy.backends import (
    align_agents,
    choose_principal,
    start_backends,
    stop_backends,
)
from trimaran.deploy.chatdb import chat_dsn
from trimaran.deploy.database import chat_databases, databases_of, instance
from trimaran.deploy.rundir import DeploymentState, RunDir, ServerState
from trimaran.deploy.sites import clear_all
from trimaran.deploy.supervisor import start_server, stop_all, wait_healthy
from trimaran.topology import load_validated, parse_topology
from trimaran.topology.model import PoolRole, Topology

#: Throw-away data directories on tmpfs when there is one: the instances are durable, as
#: `trimaran up` runs them, and fsync on a disk would dominate the test's time.
SCRATCH = "/dev/shm" if Path("/dev/shm").is_dir() else None
TOPOLOGY = """\
name: chat-cli
sip_domain: trimaran.test
sites: [{name: dc1}, {name: dc2}, {name: w1}]
pools:
  - {name: se1, site: w1, role: frontend, edition: standard,
     servers: [{name: se1, address: 127.0.49.10, sip_port: 5491, admin_port: 8491}]}
  - {name: wit, site: w1, role: witness,
     servers: [{name: wit1, address: 127.0.49.30, admin_port: 8492}]}
  - name: pc
    site: dc1
    role: chat
    servers:
      - {name: pc1, address: 127.0.49.11, sip_port: 5493, admin_port: 8493}
      - {name: pc2, address: 127.0.49.12, sip_port: 5493, admin_port: 8493, site: dc2}
    backend:
      principal: {address: 127.0.49.21, port: 5494}
      mirror: {address: 127.0.49.22, port: 5494}
      witness: {server: wit1}
    log_shipping:
      site: dc2
      principal: {address: 127.0.49.23, port: 5494}
      mirror: {address: 127.0.49.24, port: 5494}
"""


class Deployed:
    """The running deployment: its run directory and topology."""

    def __init__(self, run: RunDir, topology: Topology) -> None:
        self.run, self.topology = run, topology

    def trimaran(self, *args: str, code: int = 0) -> Any:
        """Run `trimaran ARGS --dir RUNDIR` in this process; its JSON output when it is
        JSON, else the result. Asserts the exit code."""
        result = CliRunner().invoke(cli, [*args, "--dir", str(self.run.path)])
        assert result.exit_code == code, \
            f"trimaran {' '.join(args)} -> {result.exit_code}\n{result.output}\n" \
            f"{result.exception!r}"
        try:
            return json.loads(result.stdout)
        except ValueError:
            return result

    def dsn(self, mode: ChatMode) -> str:
        """Where the chat servers write in `mode`."""
        return chat_dsn(self.topology, "pc", mode)


@pytest.fixture(scope="module")
def deployed() -> Iterator[Deployed]:
    """The databases and the CMS of `TOPOLOGY`, started like `trimaran up` does."""
    try:
        find_bin_dir()
    except PostgresNotInstalled as exc:
        pytest.skip(str(exc))
    base = Path(tempfile.mkdtemp(prefix="trimaran-chat-cli-", dir=SCRATCH))
    base.chmod(0o711)
    (base / "topology.yaml").write_text(TOPOLOGY)
    run = RunDir(base / "run")
    run.create()
    shutil.copyfile(base / "topology.yaml", run.topology)
    topology = load_validated(run.topology)
    servers = [ServerState(s.name, p.name, p.role.value, s.address, s.sip_port, s.admin_port)
               for p in topology.pools if p.role in (PoolRole.WITNESS, PoolRole.FRONTEND)
               for s in p.servers]
    state = DeploymentState(topology.name, {s.name: s for s in servers},
                            {d.name: d for d in databases_of(topology)})
    run.save_state(state)
    try:
        start_server(run, state.servers["wit1"])
        start_backends(run, state, timeout=60)
        run.secret("se1")
        start_server(run, state.servers["se1"])
        run.save_state(state)
        assert wait_healthy(servers, 60) == []
        _execute(chat_dsn(topology, "pc", ChatMode.NORMAL),
                 "CREATE TABLE posts (n integer PRIMARY KEY)")
        yield Deployed(run, topology)
    finally:
        final = run.load_state()
        stop_all(final)
        stop_backends(run, final)
        clear_all(run)
        shutil.rmtree(base, ignore_errors=True)


def _execute(dsn: str, *statements: str) -> None:
    async def go() -> None:
        conn = await asyncpg.connect(dsn, timeout=5)
        try:
            for sql in statements:
                await conn.execute(sql, timeout=10)
        finally:
            await conn.close()
    asyncio.run(go())


def post(dsn: str, *numbers: int) -> None:
    """Commit one post per number (acknowledged once this returns)."""
    _execute(dsn, *(f"INSERT INTO posts VALUES ({n})" for n in numbers))


def posts(dsn: str) -> set[int]:
    """Every post readable at `dsn`."""
    async def go() -> set[int]:
        conn = await asyncpg.connect(dsn, timeout=5)
        try:
            return {row[0] for row in await conn.fetch("SELECT n FROM posts", timeout=10)}
        finally:
            await conn.close()
    return asyncio.run(go())


def until(check: Any, what: str, timeout: float = 20.0) -> None:
    """Wait until `check()` is true."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except (OSError, asyncpg.PostgresError):
            pass
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.2)


def copy_dsn(deployed: Deployed, role: str = "shipped") -> str:
    """The URL of the copy (or of its mirror)."""
    database = next(d for d in databases_of(deployed.topology) if d.role == role)
    return f"postgresql://trimaran@{database.address}:{database.port}/trimaran"


def test_pc4_status_shows_mode_servers_store_and_lag(deployed: Deployed) -> None:
    post(deployed.dsn(ChatMode.NORMAL), 1, 2, 3)
    until(lambda: posts(copy_dsn(deployed)) >= {1, 2, 3}, "posts on the copy")
    text = deployed.trimaran("chat", "status").output
    assert "chat pool pc: normal, active pc1" in text and "shipping lag: " in text
    [pool] = deployed.trimaran("chat", "status", "--json")["pools"]
    assert (pool["pool"], pool["mode"], pool["active"]) == ("pc", "normal", ["pc1"])
    assert [(s["server"], s["site"], s["active"], s["health"]) for s in pool["servers"]] == [
        ("pc1", "dc1", True, "down"), ("pc2", "dc2", False, "down")]
    store = pool["store"]
    assert [(d["name"], d["running"], d["role"], d["term"]) for d in store["pair"]] == [
        ("pc-principal", True, "principal", 1), ("pc-mirror", True, "mirror", 1)]
    copy, its_mirror = store["shipped"]
    assert copy["name"] == "pc-shipped" and copy["replica"]["receiving"]
    assert copy["replica"]["upstream"] == "127.0.49.22:5494"      # the synchronous mirror
    assert its_mirror["replica"]["upstream"] == "127.0.49.23:5494"
    assert pool["shipping"]["error"] is None and pool["shipping"]["bytes"] is not None
    assert store["synchronous"]


def test_pc3_losing_dc2_stops_the_copy_and_restoring_it_resumes_shipping(
        deployed: Deployed) -> None:
    deployed.trimaran("site", "fail", "dc2")
    [pool] = deployed.trimaran("chat", "status", "--json")["pools"]
    assert [d["running"] for d in pool["store"]["shipped"]] == [False, False]
    assert pool["shipping"]["bytes"] is None and pool["shipping"]["error"]
    post(deployed.dsn(ChatMode.NORMAL), 100)           # the primary store does not wait
    deployed.trimaran("site", "restore", "dc2")
    until(lambda: 100 in posts(copy_dsn(deployed, "shipped-mirror")), "shipping resumed")


def test_pc2_active_servers_refused_with_the_reason(deployed: Deployed) -> None:
    unknown = deployed.trimaran("chat", "active-servers", "set", "pc", "pc7", code=1)
    assert "'pc7' is not a server of pool pc" in unknown.stderr
    down = deployed.trimaran("chat", "active-servers", "set", "pc", "pc2", code=1)
    assert "pc2 not up" in down.stderr


def test_pc4_failover_refused_while_the_primary_store_accepts_writes(
        deployed: Deployed) -> None:
    refused = deployed.trimaran("chat", "failover", "pc", code=1)
    assert "still accepts writes" in refused.stderr and "--force" in refused.stderr


def test_pc4_failover_after_losing_dc1_then_failback_loses_no_post(deployed: Deployed) -> None:
    before = posts(deployed.dsn(ChatMode.NORMAL))
    post(deployed.dsn(ChatMode.NORMAL), 4, 5)
    until(lambda: posts(copy_dsn(deployed)) >= before | {4, 5}, "posts on the copy")
    deployed.trimaran("site", "fail", "dc1")

    report = deployed.trimaran("chat", "failover", "pc").output     # as an operator reads it
    assert "pc-shipped promoted (last replayed commit 20" in report
    assert "pc-shipped-mirror is pc-shipped's synchronous mirror" in report
    assert "active pc2" in report
    assert "lag at the failure: unknown (no measurement)" in report   # no chat server sampled
    assert "posts acknowledged after 20" in report and "may be lost" in report
    assert posts(deployed.dsn(ChatMode.FAILED_OVER)) >= before | {4, 5}
    post(deployed.dsn(ChatMode.FAILED_OVER), 6, 7, 8)     # posts made during the failover
    assert posts(copy_dsn(deployed, "shipped-mirror")) >= {6, 7, 8}   # synchronous

    [pool] = deployed.trimaran("chat", "status", "pc", "--json")["pools"]
    assert (pool["mode"], pool["active"]) == ("failed-over", ["pc2"])
    assert pool["store"]["dsn"] == deployed.dsn(ChatMode.FAILED_OVER)
    assert pool["store"]["synchronous"] and pool["shipping"] is None
    home = deployed.trimaran("chat", "active-servers", "set", "pc", "pc1", code=1)
    assert "only its servers in site dc2" in home.stderr
    assert "failed over already" in deployed.trimaran("chat", "failover", "pc", code=1).stderr
    lost = deployed.trimaran("chat", "failback", "pc", code=1)
    assert "site dc1" in lost.stderr and "site restore dc1" in lost.stderr

    deployed.trimaran("site", "restore", "dc1")
    back = deployed.trimaran("chat", "failback", "pc", "--json")
    assert (back["mode"], back["active"], back["principal"]) == ("normal", ["pc1"],
                                                                "pc-principal")
    assert 0 < back["writes_refused_seconds"] <= back["seconds"]
    everything = before | {4, 5, 6, 7, 8}
    assert posts(deployed.dsn(ChatMode.NORMAL)) >= everything
    post(deployed.dsn(ChatMode.NORMAL), 9)
    until(lambda: posts(copy_dsn(deployed)) >= everything | {9}, "posts shipped again")
    until(lambda: posts(copy_dsn(deployed, "shipped-mirror")) >= everything | {9},
          "posts on the copy's mirror")
    [pool] = deployed.trimaran("chat", "status", "pc", "--json")["pools"]
    assert pool["mode"] == "normal"
    assert [d["role"] for d in pool["store"]["pair"]] == ["principal", "mirror"]
    until(lambda: deployed.trimaran("chat", "status", "--json")["pools"][0]["store"]
          ["synchronous"], "the pair synchronous again")
    assert pool["store"]["shipped"][0]["replica"]["receiving"]
    assert instance(deployed.run, deployed.run.load_state().databases["pc-shipped"]) \
        .standby_configured


def test_pc4_forced_failover_fences_the_primary_store_that_still_accepts_writes(
        deployed: Deployed) -> None:
    before = posts(deployed.dsn(ChatMode.NORMAL))
    report = deployed.trimaran("chat", "failover", "pc", "--force", "--json")
    assert report["forced"] and report["fenced"] == ["pc-principal", "pc-mirror"]
    bound = report["lag_at_failure"]
    assert bound["source"] == "measured now" and isinstance(bound["bytes"], int)
    state = deployed.run.load_state()
    assert not any(instance(deployed.run, state.databases[name]).is_running()
                   for name in ("pc-principal", "pc-mirror"))
    assert all(state.databases[name].agent_pid is None for name in ("pc-principal",
                                                                    "pc-mirror"))
    post(deployed.dsn(ChatMode.FAILED_OVER), 10)
    assert posts(deployed.dsn(ChatMode.FAILED_OVER)) >= before | {10}

def test_failback_restarts_the_agents_in_the_highest_term_they_or_the_witness_hold() -> None:
    topology = parse_topology(TOPOLOGY.replace("      witness: {server: wit1}\n", ""))
    base = Path(tempfile.mkdtemp(prefix="trimaran-chat-agents-"))
    try:
        run = RunDir(base)
        dbs = chat_databases(DeploymentState("t", {}, {d.name: d for d in
                                                       databases_of(topology)}), "pc")
        first, second = dbs.pair
        assert choose_principal(run, topology, dbs) == (first, 1)    # nothing recorded
        files = {d.name: StateFile(run.agent_state(d.name), "pc", d.name) for d in dbs.pair}
        files[first.name].write(DurableState(2, Role.PRINCIPAL, first.name))   # stale
        files[second.name].write(DurableState(3, Role.PRINCIPAL, second.name))
        principal, term = choose_principal(run, topology, dbs)
        assert (principal, term) == (second, 3)
        assert align_agents(run, dbs, principal, term) == [first.name]
        assert files[first.name].load(DurableState(1, Role.PRINCIPAL, "x")) == \
            DurableState(3, Role.MIRROR, second.name)
        assert align_agents(run, dbs, principal, term) == []         # consistent now
        with pytest.raises(BackendError, match="refusing to lower it"):
            align_agents(run, dbs, first, 2)
    finally:
        shutil.rmtree(base, ignore_errors=True)
