"""HTTP between servers over mutual TLS (SPEC OPS-6, issue #13 part 3), on real processes.

`trimaran up` of an Enterprise pool with a mirrored Back End and a witness, plus a
Standard pool following the CMS, with ``mutual_between_servers``: every admin listener
speaks HTTPS only, the agents talk to each other and to the witness over mutual TLS,
the Standard pool pulls the CMS from the master over it, and the operator CLI
(`trimaran status`, `trimaran db status`) presents the ``operator`` certificate.
A call to an agent or the witness over plain HTTP, without a certificate, or with a
certificate of another CA is refused.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.enterprise import trimaran
from tests.sipclients import read_response
from trimaran.admin import access
from trimaran.client.auth import DigestClient
from trimaran.deploy.database import AGENT_PORT_OFFSET
from trimaran.deploy.dr import Deployment, call
from trimaran.deploy.rundir import RunDir
from trimaran.security import https
from trimaran.security.ca import init_ca, issue
from trimaran.security.deployment import install_operator
from trimaran.security.https import MTLS_REQUIRED
from trimaran.sip.message import Request
from trimaran.sip.parser import parse_message

pytestmark = pytest.mark.skipif(
    not Path("/usr/lib/postgresql").exists(),
    reason="PostgreSQL server binaries missing (Debian package postgresql; ./run installs it)")

DOMAIN = "trimaran.test"
FE_A, FE_B, FE_S, FE_T = "127.0.59.11", "127.0.59.12", "127.0.59.13", "127.0.59.14"
DB_P, DB_M, WIT, DIR = "127.0.59.21", "127.0.59.22", "127.0.59.31", "127.0.59.41"
OUTSIDER, CLIENT = "127.0.60.11", "127.0.60.12"
SIP, ADMIN, WIT_ADMIN = 5470, 8470, 8471
AGENT = SIP + AGENT_PORT_OFFSET
TOPOLOGY = f"""
name: mtls-http
sip_domain: {DOMAIN}
sites: [{{name: dc1}}, {{name: w1}}]
pools:
  - name: fe9
    site: dc1
    role: frontend
    edition: enterprise
    servers:
      - {{name: fe9a, address: {FE_A}, sip_port: {SIP}, admin_port: {ADMIN}}}
      - {{name: fe9b, address: {FE_B}, sip_port: {SIP}, admin_port: {ADMIN}}}
    backend:
      principal: {{address: {DB_P}, port: {SIP}}}
      mirror: {{address: {DB_M}, port: {SIP}}}
      witness: {{server: wit9}}
  - name: fe10
    site: dc1
    role: frontend
    edition: standard
    backup_pool: fe11
    servers:
      - {{name: fe10a, address: {FE_S}, sip_port: {SIP}, admin_port: {ADMIN}}}
  - name: fe11
    site: w1
    role: frontend
    edition: standard
    backup_pool: fe10
    servers:
      - {{name: fe11a, address: {FE_T}, sip_port: {SIP}, admin_port: {ADMIN}}}
  - name: dir9
    site: dc1
    role: director
    servers:
      - {{name: dir9a, address: {DIR}, sip_port: {SIP}, admin_port: {ADMIN}}}
  - name: wit
    site: w1
    role: witness
    servers:
      - {{name: wit9, address: {WIT}, admin_port: {WIT_ADMIN}}}
settings:
  heartbeat_seconds: 0.5
  digest_algorithms: [MD5]
  tls: {{enabled: true, mutual_between_servers: true}}
"""


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    base = tmp_path_factory.mktemp("mtls-http")
    (base / "topology.yaml").write_text(TOPOLOGY)
    rundir = base / "run"
    out = trimaran("up", str(base / "topology.yaml"), "--dir", str(rundir))
    try:
        assert "operator" in out and "fe9-principal-agent" in out
        assert f"sip {FE_A}:{SIP} (udp+tcp, tls 5061)  admin https://{FE_A}:{ADMIN}" in out
        trimaran("user", "add", f"sip:dee@{DOMAIN}", "--password", "dee-pw", "--pool", "fe10",
                 "--dir", str(rundir))
        yield rundir
    finally:
        trimaran("down", "--dir", str(rundir), check=False)


@pytest.fixture
def operator(deployment: Path) -> Iterator[RunDir]:
    """This process acts as the operator CLI does on the deployment (admin key, the
    ``operator`` certificate), for the length of one test."""
    run = RunDir(deployment)
    access.use_rundir(run)
    install_operator(run.topology, run.certs)
    try:
        yield run
    finally:
        https.install(None)
        access.use_key(None)


def context(deployment: Path, cert: Path | None = None) -> ssl.SSLContext:
    """A client context verifying the deployment CA, presenting `cert` (+ .key) if given."""
    ctx = ssl.create_default_context(cafile=str(deployment / "certs" / "ca.pem"))
    if cert is not None:
        ctx.load_cert_chain(cert, cert.with_suffix(".key"))
    return ctx


def get(url: str, ctx: ssl.SSLContext | None) -> tuple[int, str, dict[str, Any]]:
    """GET `url` from the outsider's address: (status, reason, JSON body)."""
    parts = urllib.parse.urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    if ctx is None:
        conn: http.client.HTTPConnection = http.client.HTTPConnection(
            parts.hostname, parts.port, timeout=5, source_address=(OUTSIDER, 0))
    else:
        conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=5,
                                           source_address=(OUTSIDER, 0), context=ctx)
    try:
        conn.request("GET", parts.path)
        response = conn.getresponse()
        raw = response.read()
        return response.status, response.reason, json.loads(raw or b"{}")
    finally:
        conn.close()


def other_ca_cert(tmp_path: Path) -> Path:
    """A certificate claiming to be fe9a, signed by another CA."""
    init_ca(tmp_path / "other")
    issue(tmp_path / "other", "fe9a", addresses=[FE_A])
    return tmp_path / "other" / "fe9a.pem"


def test_ops6_mirrored_back_end_with_witness_comes_up_with_agents_over_mutual_tls(
        deployment: Path) -> None:
    # `db status` reaches both agents with the operator certificate; each agent hears
    # from its partner and from the witness, which only speak HTTPS.
    deadline = time.monotonic() + 20
    while True:
        rows = json.loads(trimaran("db", "status", "fe9", "--json", "--dir",
                                   str(deployment)))["instances"]
        agents = {row["name"]: row["agent"] for row in rows}
        roles = {name: (agent or {}).get("role") for name, agent in agents.items()}
        contact = [((agent or {}).get("witness") or {}).get("contact_age")
                   for agent in agents.values()]
        if roles == {"fe9-principal": "principal", "fe9-mirror": "mirror"} \
                and all(age is not None for age in contact):
            break
        assert time.monotonic() < deadline, agents
        time.sleep(0.2)
    status, _, view = get(f"https://{WIT}:{WIT_ADMIN}/backends/fe9",
                          context(deployment, deployment / "certs" / "operator.pem"))
    assert status == 200 and view["principal"] == "fe9-principal", view


def test_ops6_agent_refuses_plain_http_no_certificate_and_another_ca(
        deployment: Path, tmp_path: Path) -> None:
    url = f"https://{DB_P}:{AGENT}/health"
    with pytest.raises((http.client.HTTPException, ConnectionError)):
        get(url.replace("https://", "http://"), None)               # plain HTTP
    with pytest.raises((ssl.SSLError, ConnectionError)):
        get(url, context(deployment))                               # no client certificate
    with pytest.raises((ssl.SSLError, ConnectionError)):
        get(url, context(deployment, other_ca_cert(tmp_path)))      # another CA
    status, _, _ = get(url, context(deployment, deployment / "certs" / "fe9a.pem"))
    assert status == 200


def test_ops6_witness_refuses_agent_routes_without_a_deployment_certificate(
        deployment: Path, tmp_path: Path) -> None:
    url = f"https://{WIT}:{WIT_ADMIN}/backends/fe9"
    with pytest.raises((http.client.HTTPException, ConnectionError)):
        get(url.replace("https://", "http://"), None)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        get(url, context(deployment, other_ca_cert(tmp_path)))
    status, reason, body = get(url, context(deployment))
    assert (status, body["error"]) == (403, MTLS_REQUIRED) and MTLS_REQUIRED in reason
    # /health stays open to any HTTPS client (load balancers, browsers).
    assert get(f"https://{WIT}:{WIT_ADMIN}/health", context(deployment))[0] == 200


def test_ops6_front_end_peer_routes_need_a_certificate(deployment: Path) -> None:
    with pytest.raises((http.client.HTTPException, ConnectionError)):
        get(f"http://{FE_A}:{ADMIN}/health", None)
    status, _, body = get(f"https://{FE_A}:{ADMIN}/cms/snapshot?since=0", context(deployment))
    assert (status, body["error"]) == (403, MTLS_REQUIRED)


def test_ops6_cms_change_reaches_every_server_over_mutual_tls(operator: RunDir) -> None:
    dep = Deployment(operator)
    master, _ = dep.cms_master()
    status, doc = dep.first(master, "POST", "/cms/documents",
                            {"key": "tests/mtls", "body": "over HTTPS", "check": False},
                            key=dep.cms_key)
    assert status == 200, doc
    dep.poke_all()
    specs = [s for p in ("fe9", "fe10", "fe11") for s in dep.resolver.servers_of(p)]
    deadline = time.monotonic() + 10
    pending = {s.name for s in specs}
    while pending:
        for spec in specs:
            status, body = call(spec, "GET", "/status")
            if status == 200 and int(body.get("cms", {}).get("version") or 0) >= doc["version"]:
                pending.discard(spec.name)
        assert time.monotonic() < deadline, f"CMS version {doc['version']} not on {pending}"
        time.sleep(0.1)


def test_ops6_backup_service_ships_between_paired_pools_over_mutual_tls(
        deployment: Path) -> None:
    # fe10's change (dee, added at start) reaches its backup pool fe11 over mutual TLS.
    synced = json.loads(trimaran("backup", "sync", "fe10", "--json", "--dir", str(deployment)))
    assert synced["synced"] is True and synced["lag_changes"] == 0, synced
    assert synced["last_seq"] > 0 and synced["applied_seq"] == synced["last_seq"]


def test_ops6_status_works_and_servers_report_their_certificate(deployment: Path) -> None:
    status = json.loads(trimaran("status", "--json", "--dir", str(deployment)))
    rows = {row["server"]: row for row in status["servers"]}
    assert set(rows) == {"fe9a", "fe9b", "fe10a", "fe11a", "dir9a", "wit9"}
    assert all(row["healthy"] for row in rows.values()), rows
    assert rows["wit9"]["certificate"]["addresses"] == [WIT]


def test_ops6_each_server_reports_its_certificate_in_its_status(operator: RunDir) -> None:
    dep = Deployment(operator)
    for name in ("fe9a", "fe10a", "dir9a"):
        status, body = call(dep.resolver.server(name), "GET", "/status")
        assert status == 200, body
        cert = body["certificate"]
        assert cert["name"] == name and cert["days_left"] > 30 and cert["warning"] is False


def test_ops6_director_sends_a_tls_client_to_the_front_ends_tls_port(deployment: Path) -> None:
    # The Director learns dee's home pool from the CMS over mutual TLS, then redirects
    # a client that came over TLS to the Front End's TLS port.
    ca = ssl.create_default_context(cafile=str(deployment / "certs" / "ca.pem"))
    client = DigestClient("dee", "dee-pw")
    with socket.create_connection((DIR, 5061), timeout=5, source_address=(CLIENT, 0)) as raw, \
            ca.wrap_socket(raw, server_hostname=DIR) as conn:
        deadline = time.monotonic() + 15
        while True:
            request = register(client)
            conn.sendall(request.to_bytes())
            answer = read_response(conn)
            if answer.status == 401 and not client.has_credentials:
                assert client.learn(answer)
                continue
            if answer.status == 302 or time.monotonic() > deadline:
                break
            time.sleep(0.2)          # 404: the Director has not pulled dee's home yet
    assert answer.status == 302, (answer.status, answer.reason)
    contacts = answer.headers.get_all("Contact")
    assert contacts and contacts[0].startswith(f"<sip:{FE_S}:5061;transport=tls>"), contacts


def register(client: DigestClient) -> Request:
    request = parse_message((
        f"REGISTER sip:{DOMAIN} SIP/2.0\r\n"
        f"Via: SIP/2.0/TLS {CLIENT}:5061;branch=z9hG4bK-dir-{time.time_ns()};rport\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:dee@{DOMAIN}>;tag=d1\r\n"
        f"To: <sip:dee@{DOMAIN}>\r\nCall-ID: dir-{time.time_ns()}@{CLIENT}\r\n"
        f"CSeq: 1 REGISTER\r\nContact: <sip:dee@{CLIENT}:5061;transport=tls>\r\n"
        f"Content-Length: 0\r\n\r\n").encode())
    assert isinstance(request, Request)
    if client.has_credentials:
        client.authorize(request)
    return request
