"""Admin API protection on a running deployment (SPEC OPS-6, issue #13 part 4).

`trimaran up` runs two paired Standard Edition pools (CMS, Backup Service, status
page), a Director, a witness and an Enterprise pool on a mirrored Back End (two
PostgreSQL instances with their agents). Every route of every server's route table
(``GET /admin/routes``) is called without credentials: all answer 401 but
``/health``. A read token reads and is refused what changes; `trimaran pool failover`
with a read token changes nothing and says why; an operator token fails over; the
audit log names both.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from tests import admincreds
from trimaran.admin import access
from trimaran.deploy.rundir import RunDir

pytestmark = [pytest.mark.timeout(300), pytest.mark.skipif(
    not Path("/usr/lib/postgresql").exists(),
    reason="PostgreSQL server binaries missing (Debian package postgresql; ./run installs it)")]

ROOT = Path(__file__).resolve().parents[2]
TOPOLOGY = """
name: admin-access
sip_domain: trimaran.test
sites: [{name: dc1}, {name: dc2}, {name: w1}]
pools:
  - name: se1
    site: dc1
    role: frontend
    edition: standard
    backup_pool: se2
    servers: [{name: se1a, address: 127.0.57.1}]
  - name: se2
    site: dc2
    role: frontend
    edition: standard
    backup_pool: se1
    servers: [{name: se2a, address: 127.0.57.2}]
  - name: dir1
    site: dc1
    role: director
    servers: [{name: dir1a, address: 127.0.57.11}]
  - name: fe3
    site: dc1
    role: frontend
    edition: enterprise
    servers: [{name: fe3a, address: 127.0.58.1}]
    backend:
      principal: {address: 127.0.58.21, port: 5432}
      mirror: {address: 127.0.58.22, port: 5432}
      witness: {server: wit1}
  - name: witness1
    site: w1
    role: witness
    servers: [{name: wit1, address: 127.0.57.31}]
"""
PLACEHOLDER = re.compile(r"\{([^}:]+)(:[^}]*)?\}")
VALUES = {"aor": quote("sip:walker@trimaran.test", safe=""), "id": "m1", "name": "notes",
          "user": "walker", "asset": "app.js", "pool": "se1", "source": "se2"}


def trimaran(*args: str, token: str | None = None,
             check: bool = True) -> subprocess.CompletedProcess[str]:
    before = ("--token", token) if token else ()
    result = subprocess.run([sys.executable, "-m", "trimaran", *before, *args],
                            capture_output=True, text=True, timeout=180, cwd=ROOT)
    if check and result.returncode != 0:
        raise AssertionError(f"trimaran {' '.join(args)} -> {result.returncode}\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


def request(url: str, method: str = "GET", headers: dict[str, str] | None = None,
            body: bytes | None = None) -> tuple[int, dict[str, object], list[str]]:
    """(status, JSON object or {}, WWW-Authenticate values)."""
    data = body if body is not None else (b"" if method not in ("GET", "HEAD") else None)
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            status, raw, challenges = resp.status, resp.read(), resp.headers.get_all(
                "WWW-Authenticate") or []
    except urllib.error.HTTPError as exc:
        status, raw, challenges = exc.code, exc.read(), exc.headers.get_all(
            "WWW-Authenticate") or []
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        value = {}
    return status, value if isinstance(value, dict) else {}, challenges


def concrete(path: str) -> str:
    return PLACEHOLDER.sub(lambda m: VALUES.get(m.group(1), "x"), path)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunDir]:
    tmp = tmp_path_factory.mktemp("admin-access")
    (tmp / "topology.yaml").write_text(TOPOLOGY)
    run = RunDir(tmp / "run")
    trimaran("up", str(tmp / "topology.yaml"), "--dir", str(run.path))
    try:
        yield run
    finally:
        trimaran("down", "--dir", str(run.path), check=False)


def bases(run: RunDir) -> dict[str, str]:
    """Every HTTP server of the deployment: servers and mirroring agents."""
    state = run.load_state()
    out = {name: f"http://{s.address}:{s.admin_port}" for name, s in state.servers.items()}
    out.update({f"{name}-agent": f"http://{d.address}:{d.agent_port}"
                for name, d in state.databases.items() if d.agent_port})
    return out


def test_every_route_of_every_server_answers_401_without_credentials(
        deployment: RunDir) -> None:
    reader = admincreds.for_rundir(deployment.path, access.READ)
    walked: dict[str, int] = {}
    kinds: set[str] = set()
    for server, base in bases(deployment).items():
        status, table, _ = request(base + access.ROUTES_PATH, headers=reader)
        assert status == 200, (server, status, table)
        routes = table["routes"]
        assert isinstance(routes, list) and routes, server
        for route in routes:
            method, path = route["method"], concrete(route["path"])
            status, body, challenges = request(base + path, method)
            if route["path"] == "/health":
                assert status in (200, 503), (server, method, path, status)
                continue
            assert status == 401, (server, method, path, status, body)
            assert challenges, (server, method, path)     # Bearer, Basic or Digest
            walked[server] = walked.get(server, 0) + 1
            kinds.add(route["class"])
    # What the walk covered: each kind of server, and its admin, peer and user routes.
    assert set(walked) >= {"se1a", "se2a", "dir1a", "fe3a", "wit1", "fe3-principal-agent",
                           "fe3-mirror-agent"}, walked
    assert walked["se1a"] >= 20, walked
    assert kinds == {"admin", "peer", "user"}


def test_a_read_token_reads_status_but_may_not_change_anything(deployment: RunDir) -> None:
    reader = admincreds.for_rundir(deployment.path, access.READ)
    servers = bases(deployment)
    status, body, _ = request(servers["se1a"] + "/status", headers=reader)
    assert status == 200 and body["server"] == "se1a"
    status, body, _ = request(servers["se1a"] + "/admin/drain", "POST", headers=reader)
    assert status == 403 and "needs operator" in str(body["error"]), body
    status, body, _ = request(servers["fe3-principal-agent"] + "/failover", "POST",
                              {**reader, "Content-Type": "application/json"},
                              b'{"to": "mirror"}')
    assert status == 403 and "has scope read" in str(body["error"]), body
    status, _, challenges = request(servers["se1a"] + "/status",
                                    headers={"Authorization": "Bearer tma1.forged.token"})
    assert status == 401 and 'error="invalid_token"' in challenges[0]


def _failover_state(reader: dict[str, str], run: RunDir) -> str:
    status, body, _ = request(bases(run)["se1a"] + "/cms/snapshot", headers=reader)
    assert status == 200, body
    docs = {d["key"]: d for d in body["documents"]}     # type: ignore[union-attr]
    doc = docs.get("failover/se2")
    return "normal" if doc is None else str(json.loads(doc["body"])["state"])


def test_pool_failover_needs_an_operator_token_and_both_attempts_are_audited(
        deployment: RunDir) -> None:
    run = deployment.path
    key = deployment.admin_key()
    read_token = access.mint(key, "rita", access.READ)[0]
    operator_token = access.mint(key, "olga", access.OPERATOR)[0]
    reader = admincreds.for_rundir(run, access.READ)
    assert _failover_state(reader, deployment) == "normal"

    refused = trimaran("pool", "failover", "se2", "--dir", str(run), token=read_token,
                       check=False)
    assert refused.returncode == 1
    assert "token 'rita' has scope read; failover needs operator" in refused.stderr
    assert _failover_state(reader, deployment) == "normal"        # nothing changed
    refused_db = trimaran("db", "failover", "fe3", "--to", "mirror", "--dir", str(run),
                          token=read_token, check=False)
    assert refused_db.returncode == 1 and "needs operator" in refused_db.stderr

    started = time.time()
    trimaran("pool", "failover", "se2", "--dir", str(run), token=operator_token)
    assert _failover_state(reader, deployment) == "failed-over"

    shown = json.loads(trimaran("admin", "audit", "--json", "--dir", str(run),
                                token=read_token).stdout)
    records = [r for r in shown["records"] if r["command"] in ("pool failover", "db failover")]
    assert [(r["who"], r["command"], r["result"]) for r in records] == [
        ("rita", "pool failover", "refused"), ("rita", "db failover", "refused"),
        ("olga", "pool failover", "ok")], records
    assert "scope read" in records[0]["reason"] and records[0]["args"]["name"] == "se2"
    assert records[2]["via"] == "token" and records[2]["at"] >= started - 1
    assert records[2]["seconds"] > 0 and not shown["pending"]
    text = trimaran("admin", "audit", "--dir", str(run)).stdout
    assert "olga" in text and "pool failover name=se2  -> ok" in text


def test_a_token_is_created_listed_and_revoked_on_the_servers(deployment: RunDir) -> None:
    run = str(deployment.path)
    created = trimaran("admin", "token", "create", "--name", "carl", "--scope", "read",
                       "--days", "1", "--dir", run)
    token = created.stdout.strip()
    assert token.startswith("tma1.") and "not shown again" in created.stderr
    assert token not in (deployment.path / "secrets" / "admin-tokens.json").read_text()
    claims = access.read_claims(token)
    listed = json.loads(trimaran("admin", "token", "list", "--json", "--dir", run).stdout)
    assert {"id": claims.id, "name": "carl", "scope": "read", "revoked": False}.items() <= \
        next(t for t in listed["tokens"] if t["id"] == claims.id).items()
    status_url = bases(deployment)["se1a"] + "/status"
    assert request(status_url, headers={"Authorization": f"Bearer {token}"})[0] == 200

    trimaran("admin", "token", "revoke", claims.id, "--dir", run)
    deadline = time.monotonic() + 10
    while True:                          # every Front End follows the CMS within seconds
        status, body, _ = request(status_url, headers={"Authorization": f"Bearer {token}"})
        if status == 401:
            break
        assert time.monotonic() < deadline, "the revoked token still works after 10 s"
        time.sleep(0.2)
    assert "is revoked" in str(body["error"])
    listed = json.loads(trimaran("admin", "token", "list", "--json", "--dir", run).stdout)
    assert next(t for t in listed["tokens"] if t["id"] == claims.id)["revoked"] is True
