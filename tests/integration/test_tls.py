"""SIP over TLS with a deployment CA and mutual TLS between servers, on real processes
(SPEC OPS-6, issue #13 part 3).

`trimaran up` of a two-server Enterprise pool whose topology turns TLS and mutual TLS
on: `up` creates the deployment CA and the servers' certificates in RUNDIR/certs.
baresip registers over TLS; a TLS client verifying against the deployment CA gets in,
one presenting another CA's certificate is refused in the handshake; plain TCP from a
server's address is refused with 403; an IM between users on the two servers of the
pool crosses between them over mutual TLS and arrives.
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.enterprise import trimaran
from tests.sipclients import NoResponse, baresip_until, read_response
from trimaran.client.ua import UAConfig, UserAgent
from trimaran.net.tls import MTLS_REQUIRED
from trimaran.net.transport import Address
from trimaran.security.ca import init_ca, issue
from trimaran.sip.message import Response

pytestmark = pytest.mark.skipif(
    not Path("/usr/lib/postgresql").exists(),
    reason="PostgreSQL server binaries missing (Debian package postgresql; ./run installs it)")

DOMAIN = "trimaran.test"
FE_A, FE_B, DB = "127.0.55.31", "127.0.55.32", "127.0.55.41"
SIP, TLS, ADMIN = 5460, 5061, 8460
BARESIP_HOST, BOB_HOST, CARL_HOST = "127.0.56.60", "127.0.56.11", "127.0.56.12"
TOPOLOGY = f"""
name: tls-test
sip_domain: {DOMAIN}
sites: [{{name: dc1}}]
pools:
  - name: fe5
    site: dc1
    role: frontend
    edition: enterprise
    servers:
      - {{name: fe5a, address: {FE_A}, sip_port: {SIP}, admin_port: {ADMIN}}}
      - {{name: fe5b, address: {FE_B}, sip_port: {SIP}, admin_port: {ADMIN}}}
    backend:
      principal: {{address: {DB}, port: {SIP}}}
settings:
  # baresip 1.0 (libre) gives up on a REGISTER when any challenge is not MD5.
  digest_algorithms: [MD5]
  tls:
    enabled: true
    mutual_between_servers: true
"""
BARESIP_CONFIG = f"""\
poll_method epoll
sip_listen {BARESIP_HOST}:5090
sip_cafile {{ca}}
module_path /usr/lib/baresip/modules
module account.so
module g711.so
audio_player none
audio_source none
audio_alert none
"""


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    base = tmp_path_factory.mktemp("tls")
    (base / "topology.yaml").write_text(TOPOLOGY)
    rundir = base / "run"
    out = trimaran("up", str(base / "topology.yaml"), "--dir", str(rundir))
    try:
        assert "created TLS certificates" in out
        for user in ("ann", "bob", "carl"):
            trimaran("user", "add", f"sip:{user}@{DOMAIN}", "--password", f"{user}-pw",
                     "--pool", "fe5", "--dir", str(rundir))
        yield rundir
    finally:
        trimaran("down", "--dir", str(rundir), check=False)


def tls_request(context: ssl.SSLContext, host: str, data: bytes, *,
                source: str = BOB_HOST) -> Response:
    """Send `data` over TLS to host:5061 and return the first response."""
    with socket.create_connection((host, TLS), timeout=5, source_address=(source, 0)) as raw, \
            context.wrap_socket(raw, server_hostname=host) as conn:
        conn.sendall(data)
        return read_response(conn)


def options(via_host: str, transport: str) -> bytes:
    branch = f"z9hG4bK-tls-{time.time_ns()}"
    return (f"OPTIONS sip:{FE_A}:{SIP} SIP/2.0\r\n"
            f"Via: SIP/2.0/{transport} {via_host}:5060;branch={branch};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:fe5b@{via_host}>;tag=t1\r\nTo: <sip:{FE_A}>\r\n"
            f"Call-ID: tls-{time.time_ns()}@{via_host}\r\nCSeq: 1 OPTIONS\r\n"
            f"Content-Length: 0\r\n\r\n").encode()


@pytest.mark.interop
@pytest.mark.skipif(shutil.which("baresip") is None, reason="baresip is not installed")
async def test_ops6_baresip_registers_over_tls_and_the_front_end_holds_its_binding(
        deployment: Path, tmp_path: Path) -> None:
    config = tmp_path / "baresip"
    config.mkdir()
    (config / "config").write_text(BARESIP_CONFIG.format(ca=deployment / "certs" / "ca.pem"))
    (config / "accounts").write_text(
        f'<sip:ann@{DOMAIN};transport=tls>;auth_pass=ann-pw;regint=600;'
        f'outbound="sip:{FE_A}:{TLS};transport=tls"\n')
    async with baresip_until(config, tmp_path, f"ann@{DOMAIN}: {{0/TLS/v4}} 200 OK",
                             15) as seen:
        # While baresip is registered, the Front End lists its TLS binding.
        ann = UserAgent(UAConfig(aor=f"sip:ann@{DOMAIN}", password="ann-pw",
                                 servers=(Address("tcp", FE_A, SIP),), local_host=BOB_HOST,
                                 auto_refresh=False, reregister_on_flow_loss=False))
        await ann.start()
        try:
            bindings = [str(b.uri) for b in await ann.fetch_bindings()]
        finally:
            await ann.close()
    trace = "".join(seen)
    assert f"-> {FE_A}:{TLS}" in trace and "ua: adding SIP CA" in trace
    assert any(f"@{BARESIP_HOST}:5091" in b and "transport=tls" in b for b in bindings), bindings


def test_ops6_tls_client_verifying_the_deployment_ca_is_served(deployment: Path) -> None:
    context = ssl.create_default_context(cafile=str(deployment / "certs" / "ca.pem"))
    answer = tls_request(context, FE_A, options(BOB_HOST, "TLS"))
    assert answer.status == 200


def test_ops6_server_certificate_does_not_verify_against_another_ca(
        deployment: Path, tmp_path: Path) -> None:
    init_ca(tmp_path / "other")
    context = ssl.create_default_context(cafile=str(tmp_path / "other" / "ca.pem"))
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_request(context, FE_A, options(BOB_HOST, "TLS"))


def test_ops6_certificate_from_another_ca_is_refused_at_the_tls_port(
        deployment: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    init_ca(other)
    issue(other, "fe5b", addresses=[FE_B])      # claims to be fe5b, wrong CA
    context = ssl.create_default_context(cafile=str(deployment / "certs" / "ca.pem"))
    context.load_cert_chain(other / "fe5b.pem", other / "fe5b.key")
    # TLS 1.3: the client's half of the handshake completes, then fe5a refuses the
    # certificate and closes: nothing is ever answered.
    with pytest.raises((ssl.SSLError, ConnectionError, NoResponse)):
        tls_request(context, FE_A, options(FE_B, "TLS"), source=FE_B)
    # The same request with fe5b's own certificate, from the same address, is served.
    genuine = ssl.create_default_context(cafile=str(deployment / "certs" / "ca.pem"))
    genuine.load_cert_chain(deployment / "certs" / "fe5b.pem", deployment / "certs" / "fe5b.key")
    assert tls_request(genuine, FE_A, options(FE_B, "TLS"), source=FE_B).status == 200


def test_ops6_plain_tcp_between_servers_is_refused(deployment: Path) -> None:
    with socket.create_connection((FE_A, SIP), timeout=5, source_address=(FE_B, 0)) as conn:
        conn.sendall(options(FE_B, "TCP"))
        answer = read_response(conn)
    assert answer.status == 403 and answer.reason == MTLS_REQUIRED


async def test_ops6_im_between_the_pools_two_servers_crosses_over_mutual_tls(
        deployment: Path) -> None:
    bob = UserAgent(UAConfig(aor=f"sip:bob@{DOMAIN}", password="bob-pw",
                             servers=(Address("tcp", FE_A, SIP),), local_host=BOB_HOST,
                             auto_refresh=False, reregister_on_flow_loss=False))
    carl = UserAgent(UAConfig(aor=f"sip:carl@{DOMAIN}", password="carl-pw",
                              servers=(Address("tcp", FE_B, SIP),), local_host=CARL_HOST,
                              auto_refresh=False, reregister_on_flow_loss=False))
    await bob.start()
    await carl.start()
    try:
        assert (await bob.register()).status == 200
        assert (await carl.register()).status == 200
        response = await bob.send_message(f"sip:carl@{DOMAIN}", "over mutual TLS")
        assert response.status == 200
        received = await carl.next_message(timeout=5)
        assert received.body == b"over mutual TLS"
        # fe5a relayed it to fe5b, which holds carl's flow: the request left fe5a from its
        # own address for fe5b's TLS port (plain TCP between them is refused, above).
        assert any(f"SIP/2.0/TLS {FE_A}:{TLS}" in via for via in received.headers.get_all("Via"))
    finally:
        await bob.close()
        await carl.close()


def test_ops6_status_shows_certificate_expiry(deployment: Path) -> None:
    status = json.loads(trimaran("status", "--json", "--dir", str(deployment)))
    certs = {row["server"]: row["certificate"] for row in status["servers"]}
    assert certs["fe5a"]["days_left"] > 30 and certs["fe5a"]["warning"] is False
    assert certs["fe5a"]["addresses"] == [FE_A]


# --- the Edge: the external side takes TLS only ----------------------------------------------

EDGE_FE, EDGE_IN, EDGE_OUT = "127.0.55.51", "127.0.55.61", "127.0.56.161"
EDGE_TOPOLOGY = f"""
name: tls-edge
sip_domain: {DOMAIN}
sites: [{{name: dc1}}]
pools:
  - {{name: fe6, site: dc1, role: frontend, edition: standard,
     servers: [{{name: fe6a, address: {EDGE_FE}}}]}}
  - name: edge6
    site: dc1
    role: edge
    next_hop: fe6
    servers:
      - {{name: edge6a, address: {EDGE_IN}, external_address: {EDGE_OUT}}}
settings:
  digest_algorithms: [MD5]
  tls: {{enabled: true, mutual_between_servers: true}}
"""


@pytest.fixture(scope="module")
def edge_deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    base = tmp_path_factory.mktemp("tls-edge")
    (base / "topology.yaml").write_text(EDGE_TOPOLOGY)
    rundir = base / "run"
    trimaran("up", str(base / "topology.yaml"), "--dir", str(rundir))
    try:
        trimaran("user", "add", f"sip:dee@{DOMAIN}", "--password", "dee-pw", "--pool", "fe6",
                 "--dir", str(rundir))
        yield rundir
    finally:
        trimaran("down", "--dir", str(rundir), check=False)


def register_request(user: str, source: str, authorization: str = "") -> bytes:
    return (f"REGISTER sip:{DOMAIN} SIP/2.0\r\n"
            f"Via: SIP/2.0/TLS {source}:5061;branch=z9hG4bK-reg-{time.time_ns()};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:{user}@{DOMAIN}>;tag=r1\r\n"
            f"To: <sip:{user}@{DOMAIN}>\r\nCall-ID: reg-{time.time_ns()}@{source}\r\n"
            f"CSeq: 1 REGISTER\r\nContact: <sip:{user}@{source}:5061;transport=tls>\r\n"
            f"{authorization}Content-Length: 0\r\n\r\n").encode()


def test_ops6_edge_external_side_takes_tls_only_and_relays_inside_over_mutual_tls(
        edge_deployment: Path) -> None:
    with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
        probe.connect((EDGE_OUT, 5060))              # no TCP listener outside
    context = ssl.create_default_context(cafile=str(edge_deployment / "certs" / "ca.pem"))
    # A REGISTER over TLS to the Edge's external address reaches the Front End through the
    # Edge (over mutual TLS inside, plain TCP there being refused) and is challenged.
    answer = tls_request(context, EDGE_OUT, register_request("dee", BOB_HOST))
    assert answer.status == 401 and "WWW-Authenticate" in answer.headers
