"""HTTP between servers over mutual TLS (SPEC OPS-6, `trimaran.security.https`): the
listener contexts, the guard of server-to-server routes and the client side, on real
sockets in one process."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from trimaran.security import https
from trimaran.security.ca import CertError, init_ca, issue
from trimaran.security.deployment import OPERATOR, http_policy, prepare
from trimaran.security.https import MTLS_REQUIRED, HttpsPolicy
from trimaran.security.tlsconf import CertFiles, client_context, server_context
from trimaran.topology.loader import parse_topology

HOST = "127.0.59.50"
TOPOLOGY = """
name: https-unit
sip_domain: trimaran.test
sites: [{name: dc1}]
pools:
  - {name: fe1, site: dc1, role: frontend, edition: standard,
     servers: [{name: fe1a, address: 127.0.59.51}]}
settings:
  tls: %s
"""


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    directory = tmp_path / "certs"
    init_ca(directory)
    issue(directory, "srv", addresses=[HOST])
    issue(directory, "peer", addresses=["127.0.59.52"])
    return directory


def policy_of(certs: Path, name: str) -> HttpsPolicy:
    files = CertFiles.in_directory(certs, name)
    return HttpsPolicy(name, client_context(files.ca, files),
                       listener=server_context(files, client_certs="optional"),
                       strict=server_context(files, client_certs="required"))


async def ok(request: web.Request) -> web.Response:
    return web.json_response({"peer": https.verified_peer(request)})


@pytest.fixture
async def server(certs: Path) -> AsyncIterator[dict[str, int]]:
    """Two listeners of server `srv`: the mixed one (port 0) and the strict one."""
    https.install(policy_of(certs, "srv"))
    runners = []
    ports = {}
    try:
        for kind in ("listener", "strict"):
            app = web.Application()
            app.router.add_get("/health", ok)
            app.router.add_get("/cms/snapshot", ok)
            runner = web.AppRunner(https.guard(app))
            await runner.setup()
            runners.append(runner)
            site = web.TCPSite(runner, HOST, 0,
                               ssl_context=https.listener_ssl(strict=kind == "strict"))
            await site.start()
            ports[kind] = runner.addresses[0][1]
        yield ports
    finally:
        https.install(None)
        for runner in runners:
            await runner.cleanup()


async def fetch(url: str, ssl_arg: ssl.SSLContext | bool) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_arg)) as session, \
            session.get(url) as response:
        return response.status, await response.json()


def test_ops6_without_mutual_tls_http_stays_plain(tmp_path: Path) -> None:
    https.install(None)
    assert https.secure("http://127.0.0.1:8080/health") == "http://127.0.0.1:8080/health"
    assert https.listener_ssl() is None and https.client_ssl() is True
    topology = parse_topology(TOPOLOGY % "{enabled: true}")
    assert http_policy(topology, tmp_path, "fe1a") is None


def test_ops6_up_issues_the_operator_certificate_with_mutual_tls(tmp_path: Path) -> None:
    topology = parse_topology(TOPOLOGY % "{enabled: true, mutual_between_servers: true}")
    assert prepare(topology, tmp_path) == ["ca", "fe1a", OPERATOR]
    policy = http_policy(topology, tmp_path, OPERATOR, listens=False)
    assert policy is not None and policy.listener is None and policy.identity == OPERATOR


async def test_ops6_server_route_over_mutual_tls_is_served(
        server: dict[str, int], certs: Path) -> None:
    peer = policy_of(certs, "peer")
    url = https.secure(f"http://{HOST}:{server['listener']}/cms/snapshot")
    assert url.startswith("https://")
    assert await fetch(url, peer.client) == (200, {"peer": "peer"})
    strict = f"https://{HOST}:{server['strict']}/cms/snapshot"
    assert await fetch(strict, peer.client) == (200, {"peer": "peer"})


async def test_ops6_server_route_without_a_client_certificate_gets_403(
        server: dict[str, int], certs: Path) -> None:
    anonymous = client_context(certs / "ca.pem")
    base = f"https://{HOST}:{server['listener']}"
    assert await fetch(f"{base}/cms/snapshot", anonymous) == (403, {"error": MTLS_REQUIRED})
    assert await fetch(f"{base}/health", anonymous) == (200, {"peer": None})
    with pytest.raises(aiohttp.ClientError):   # the strict listener: refused in the handshake
        await fetch(f"https://{HOST}:{server['strict']}/health", anonymous)


async def test_ops6_certificate_of_another_ca_or_plain_http_is_refused(
        server: dict[str, int], certs: Path, tmp_path: Path) -> None:
    init_ca(tmp_path / "other")
    issue(tmp_path / "other", "peer", addresses=["127.0.59.52"])
    stranger = client_context(certs / "ca.pem",
                              CertFiles.in_directory(tmp_path / "other", "peer"))
    for kind in ("listener", "strict"):
        with pytest.raises(aiohttp.ClientError):
            await fetch(f"https://{HOST}:{server[kind]}/health", stranger)
        with pytest.raises(aiohttp.ClientError):
            await fetch(f"http://{HOST}:{server[kind]}/health", True)


def test_ops6_with_another_ca_the_operator_certificate_must_be_provided(tmp_path: Path) -> None:
    theirs, certs = tmp_path / "their-ca", tmp_path / "certs"
    init_ca(theirs)
    issue(theirs, "fe1a", addresses=["127.0.59.51"])
    topology = parse_topology(TOPOLOGY % (
        f"{{enabled: true, mutual_between_servers: true, ca: {theirs / 'ca.pem'}, "
        f"certificates: [{{server: fe1a, cert: {theirs / 'fe1a.pem'}, "
        f"key: {theirs / 'fe1a.key'}}}]}}"))
    with pytest.raises(CertError, match=r"for operator into"):
        prepare(topology, certs)
    issue(theirs, OPERATOR)
    certs.mkdir()
    for suffix in (".pem", ".key"):
        (certs / f"{OPERATOR}{suffix}").write_bytes((theirs / f"{OPERATOR}{suffix}").read_bytes())
    assert prepare(topology, certs) == []
    policy = http_policy(topology, certs, OPERATOR, listens=False)
    assert policy is not None
