"""A paired deployment run as real processes for the DR tests: two Front End pools in
two sites, users with clients and continuous writes, and the checks of SPEC DR-5..7."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import aiohttp

from tests import admincreds
from trimaran.client.ua import UAConfig, UserAgent
from trimaran.client.writes import Ack, Writers
from trimaran.net.transport import Address

ROOT = Path(__file__).resolve().parents[2]
DOMAIN = "trimaran.test"


def trimaran(*args: str, check: bool = True,
             timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the CLI; raise with its output when it fails and `check`."""
    result = subprocess.run([sys.executable, "-m", "trimaran", *args], capture_output=True,
                            text=True, timeout=timeout, cwd=ROOT)
    if check and result.returncode != 0:
        raise AssertionError(f"trimaran {' '.join(args)} -> {result.returncode}\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


async def wait_for(condition: Callable[[], Awaitable[bool]], timeout: float,
                   what: str, interval: float = 0.1) -> float:
    """Wait until `condition()` holds; return how long it took; fail naming `what`."""
    start = time.monotonic()
    while True:
        if await condition():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(interval)


@dataclass(frozen=True)
class Node:
    """One Front End server: name, pool, address, ports."""

    name: str
    pool: str
    address: str
    sip_port: int = 5060
    admin_port: int = 8080

    @property
    def sip(self) -> Address:
        return Address("tcp", self.address, self.sip_port)

    @property
    def base(self) -> str:
        return f"http://{self.address}:{self.admin_port}"


def se_pair(name: str, one: Node, two: Node, *, settings: dict[str, float] | None = None,
            auto_failover: bool = False, more_sites: tuple[str, ...] = (),
            more_pools: str = "") -> str:
    """The topology of two paired Standard Edition pools `one` (site dc1) and `two`
    (site dc2), with optional settings, automatic failover and more sites/pools (YAML
    list items indented by two spaces)."""
    def pool(node: Node, site: str, partner: Node) -> str:
        return (f"  - name: {node.pool}\n    site: {site}\n    role: frontend\n"
                f"    edition: standard\n    backup_pool: {partner.pool}\n"
                + ("    auto_failover: true\n" if auto_failover else "")
                + f"    servers:\n      - {{name: {node.name}, address: {node.address}, "
                  f"sip_port: {node.sip_port}, admin_port: {node.admin_port}}}\n")
    sites = "".join(f"  - name: {site}\n" for site in ("dc1", "dc2", *more_sites))
    tuning = "".join(f"  {key}: {value}\n" for key, value in (settings or {}).items())
    return (f"name: {name}\nsip_domain: {DOMAIN}\nsites:\n{sites}"
            + (f"settings:\n{tuning}" if tuning else "")
            + f"pools:\n{more_pools}{pool(one, 'dc1', two)}{pool(two, 'dc2', one)}")


class Pair:
    """A running paired deployment in `rundir`."""

    def __init__(self, rundir: Path, nodes: list[Node]) -> None:
        self.admin = admincreds.for_rundir(rundir)      # an operator token of the deployment
        self.rundir = rundir
        self.nodes = nodes
        self.agents: dict[str, UserAgent] = {}

    def cli(self, *args: str, check: bool = True, timeout: float = 120,
            ) -> subprocess.CompletedProcess[str]:
        return trimaran(*args, "--dir", str(self.rundir), check=check, timeout=timeout)

    def cli_json(self, *args: str) -> dict[str, object]:
        value = json.loads(self.cli(*args, "--json").stdout)
        assert isinstance(value, dict)
        return value

    def pool_nodes(self, pool: str) -> list[Node]:
        return [n for n in self.nodes if n.pool == pool]

    def add_users(self, pool: str, names: list[str]) -> None:
        for name in names:
            self.cli("user", "add", f"sip:{name}@{DOMAIN}", "--password", f"{name}-pw",
                     "--pool", pool)

    def writers(self, names: list[str], rate: float) -> Writers:
        """Writers for `names`, trying every server of both pools; users with a client
        also publish presence."""
        bases = [n.base for n in self.nodes]
        agents = {f"sip:{n}@{DOMAIN}": ua for n, ua in self.agents.items()}
        return Writers([(f"sip:{n}@{DOMAIN}", n, f"{n}-pw") for n in names], bases,
                       domain=DOMAIN, rate=rate, agents=agents)

    async def presence_on(self, pool: str, aor: str) -> str:
        """The text of the user's current presence documents on `pool` (admin API)."""
        for node in self.pool_nodes(pool):
            url = f"{node.base}/admin/presence/{quote(aor, safe='')}"
            limit = aiohttp.ClientTimeout(total=3)
            try:
                async with aiohttp.ClientSession(timeout=limit) as s, \
                        s.get(url, headers=self.admin) as resp:
                    if resp.status == 404:
                        return ""
                    body = await resp.json()
                    return "".join(p["body"] for p in body["publications"])
            except (aiohttp.ClientError, OSError, TimeoutError):
                continue
        raise AssertionError(f"no server of {pool} answers")

    async def lost_on(self, writers: Writers, pool: str,
                      before: float | None = None) -> list[Ack]:
        """Acknowledged writes (before `before`) missing on `pool`: contacts, meetings,
        presence."""
        return await writers.lost(lambda aor: self.contacts_on(pool, aor),
                                  self.meeting_exists_on(pool), before=before,
                                  presence_of=lambda aor: self.presence_on(pool, aor))

    async def sign_in(self, names: list[str], pool: str) -> None:
        """Clients for `names`: home pool servers first, then the other pool's."""
        home = [n.sip for n in self.pool_nodes(pool)]
        others = [n.sip for n in self.nodes if n.pool != pool]
        for name in names:
            ua = UserAgent(UAConfig(aor=f"sip:{name}@{DOMAIN}", password=f"{name}-pw",
                                    servers=tuple(home + others),
                                    reregister_on_flow_loss=True))
            await ua.start()
            await ua.register()
            self.agents[name] = ua

    def on_pool(self, name: str, pool: str) -> bool:
        """True when the user's client is registered on a server of `pool`."""
        ua = self.agents[name]
        server = ua.registered_server
        addresses = {(n.address, n.sip_port) for n in self.pool_nodes(pool)}
        return server is not None and (server.host, server.port) in addresses

    async def close_agents(self) -> None:
        for ua in self.agents.values():
            await ua.close()
        self.agents.clear()

    async def contacts_on(self, pool: str, aor: str) -> set[str]:
        """The user's contact list as stored by `pool` (admin API)."""
        for node in self.pool_nodes(pool):
            url = f"{node.base}/admin/contacts/{quote(aor, safe='')}"
            limit = aiohttp.ClientTimeout(total=3)
            try:
                async with aiohttp.ClientSession(timeout=limit) as s, \
                        s.get(url, headers=self.admin) as resp:
                    if resp.status == 404:
                        return set()
                    body = await resp.json()
                    return {c["uri"] for c in body["contacts"]}
            except (aiohttp.ClientError, OSError, TimeoutError):
                continue
        raise AssertionError(f"no server of {pool} answers")

    def meeting_exists_on(self, pool: str) -> Callable[[str, str], Awaitable[bool]]:
        """A check that a meeting exists in `pool`'s store (its organizer reads it)."""
        from trimaran.client.xcap import XcapClient, XcapError

        async def exists(aor: str, meeting_id: str) -> bool:
            name = aor.split(":", 1)[1].split("@", 1)[0]
            client = XcapClient(self.pool_nodes(pool)[0].base, aor, name, f"{name}-pw")
            try:
                await client.get_meeting(meeting_id)
            except XcapError as exc:
                if exc.status == 404:
                    return False
                raise
            return True
        return exists

    def status(self, node: Node) -> dict[str, object]:
        import urllib.request
        request = urllib.request.Request(f"{node.base}/status", headers=self.admin)
        with urllib.request.urlopen(request, timeout=2) as resp:
            value = json.loads(resp.read())
        assert isinstance(value, dict)
        return value


@contextlib.asynccontextmanager
async def running(tmp_path: Path, topology: str, nodes: list[Node],
                  users: dict[str, list[str]], *, timeout: float = 120,
                  ) -> AsyncIterator[Pair]:
    """`trimaran up` of `topology` in `tmp_path`, with `users` (pool -> names) added; the
    clients closed and the deployment brought down afterwards, whatever happened."""
    path = tmp_path / "topology.yaml"
    path.write_text(topology)
    rundir = tmp_path / "run"
    trimaran("up", str(path), "--dir", str(rundir), timeout=timeout)
    deployment = Pair(rundir, nodes)
    try:
        for pool, names in users.items():
            deployment.add_users(pool, names)
        yield deployment
    finally:
        await deployment.close_agents()
        trimaran("down", "--dir", str(rundir), check=False, timeout=timeout)
