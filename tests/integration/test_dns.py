"""The dns role run by `trimaran up`: SRV/A answers follow the topology and health, and
clients (ours and baresip) find their server through it and register (issue 7 item 2)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dns.asyncquery
import dns.message
import dns.rdatatype
import pytest

from tests.sipclients import baresip_until
from trimaran.client.resolve import resolve_servers
from trimaran.client.ua import UAConfig, UserAgent
from trimaran.net.transport import Address

ROOT = Path(__file__).resolve().parents[2]
DOMAIN = "dns.trimaran.test"
NS1, NS2 = ("127.0.16.151", 5353), ("127.0.16.152", 5353)
SE1, SE2 = Address("tcp", "127.0.16.101", 5460), Address("tcp", "127.0.16.102", 5460)
TOPOLOGY = f"""
name: dns-test
sip_domain: {DOMAIN}
sites: [{{name: dc1}}, {{name: dc2}}]
pools:
  - name: se1
    site: dc1
    role: frontend
    edition: standard
    servers: [{{name: se1, address: 127.0.16.101, sip_port: 5460, admin_port: 8460}}]
  - name: se2
    site: dc2
    role: frontend
    edition: standard
    servers: [{{name: se2, address: 127.0.16.102, sip_port: 5460, admin_port: 8460}}]
  - name: dns1
    site: dc1
    role: dns
    servers: [{{name: ns1, address: 127.0.16.151, dns_port: 5353, admin_port: 8461}}]
  - name: dns2
    site: dc2
    role: dns
    servers: [{{name: ns2, address: 127.0.16.152, dns_port: 5353, admin_port: 8461}}]
settings:
  # baresip 1.0 (libre) gives up on a REGISTER when any challenge is not MD5.
  digest_algorithms: [MD5]
"""
BARESIP_CONFIG = """\
poll_method epoll
sip_listen 127.0.16.160:5090
sip_trans_def tcp
dns_server {ns}
dns_fallback {ns}
module_path /usr/lib/baresip/modules
module account.so
module g711.so
audio_player none
audio_source none
audio_alert none
"""


def trimaran(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "trimaran", *args], capture_output=True,
                            text=True, timeout=90, cwd=ROOT)
    if check and result.returncode != 0:
        raise AssertionError(f"trimaran {' '.join(args)} -> {result.returncode}\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    base = tmp_path_factory.mktemp("dns")
    topology = base / "topology.yaml"
    topology.write_text(TOPOLOGY)
    rundir = base / "run"
    trimaran("up", str(topology), "--dir", str(rundir))
    try:
        trimaran("user", "add", f"sip:ann@{DOMAIN}", "--password", "ann-pw", "--pool", "se1",
                 "--dir", str(rundir))
        trimaran("user", "add", f"sip:bea@{DOMAIN}", "--password", "bea-pw", "--pool", "se2",
                 "--dir", str(rundir))
        yield rundir
    finally:
        trimaran("down", "--dir", str(rundir), check=False)


async def srv(ns: tuple[str, int], service: str = "_sip._tcp") -> set[tuple[int, int, str]]:
    query = dns.message.make_query(f"{service}.{DOMAIN}", "SRV")
    reply = await dns.asyncquery.udp(query, ns[0], port=ns[1], timeout=2)
    return {(r.priority, r.port, r.target.to_text()) for rrset in reply.answer for r in rrset}


async def a(ns: tuple[str, int], name: str) -> set[str]:
    reply = await dns.asyncquery.tcp(dns.message.make_query(name, "A"), ns[0], port=ns[1],
                                     timeout=2)
    return {r.address for rrset in reply.answer for r in rrset
            if rrset.rdtype == dns.rdatatype.A}


async def eventually(check: object, timeout: float = 10.0) -> None:
    """Await the coroutine function `check` until it returns True, before a deadline."""
    deadline = time.monotonic() + timeout
    while True:
        if await check():  # type: ignore[operator]
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.1)


async def test_each_sites_dns_server_prefers_its_own_site(deployment: Path) -> None:
    se1, se2 = f"se1.{DOMAIN}.", f"se2.{DOMAIN}."
    for service in ("_sip._tcp", "_sip._udp"):
        assert await srv(NS1, service) == {(10, 5460, se1), (20, 5460, se2)}
        assert await srv(NS2, service) == {(20, 5460, se1), (10, 5460, se2)}
    assert await a(NS1, DOMAIN) == await a(NS2, DOMAIN) == {"127.0.16.101", "127.0.16.102"}
    assert await a(NS2, f"se1.{DOMAIN}") == {"127.0.16.101"}
    assert await resolve_servers(DOMAIN, NS1) == (SE1, SE2)
    assert await resolve_servers(DOMAIN, NS2) == (SE2, SE1)


async def test_our_client_resolves_registers_and_a_killed_server_leaves_answers(
        deployment: Path) -> None:
    servers = await resolve_servers(DOMAIN, NS1, "tcp")
    ua = UserAgent(UAConfig(aor=f"sip:ann@{DOMAIN}", password="ann-pw", servers=servers,
                            auto_refresh=False, reregister_on_flow_loss=False))
    await ua.start()
    try:
        assert (await ua.register()).status == 200
    finally:
        await ua.close()
    trimaran("server", "kill", "se2", "--dir", str(deployment))
    try:
        async def se2_gone() -> bool:
            return (await srv(NS1) == {(10, 5460, f"se1.{DOMAIN}.")}
                    and await srv(NS2) == {(20, 5460, f"se1.{DOMAIN}.")}
                    and await a(NS2, DOMAIN) == {"127.0.16.101"})
        await eventually(se2_gone, 10)
        assert await resolve_servers(DOMAIN, NS2) == (SE1,)
    finally:
        trimaran("server", "start", "se2", "--dir", str(deployment))

    async def se2_back() -> bool:
        return len(await srv(NS2)) == 2
    await eventually(se2_back, 10)


@pytest.mark.interop
@pytest.mark.skipif(shutil.which("baresip") is None, reason="baresip is not installed")
async def test_baresip_finds_the_server_through_the_dns_role_and_registers(
        deployment: Path, tmp_path: Path) -> None:
    # The account names only the domain: baresip asks our dns server (dc1's) for
    # _sip._tcp SRV, gets se1 on port 5460 (no default port: only SRV could tell it),
    # and registers there with MD5 digest.
    config = tmp_path / "baresip"
    config.mkdir()
    (config / "config").write_text(BARESIP_CONFIG.format(ns=f"{NS1[0]}:{NS1[1]}"))
    (config / "accounts").write_text(f"<sip:ann@{DOMAIN}>;auth_pass=ann-pw;regint=600\n")
    async with baresip_until(config, tmp_path, f"ann@{DOMAIN}: {{0/TCP/v4}} 200 OK",
                             20) as seen:
        trace = "".join(seen)
    assert "-> 127.0.16.101:5460" in trace  # the REGISTER went to se1, found by SRV
    assert "[1 binding]" in trace
