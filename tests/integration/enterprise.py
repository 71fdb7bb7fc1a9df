"""A real Enterprise pool for integration tests: `trimaran up` of three Front End
processes on one PostgreSQL Back End, users created in the Back End, CLI helpers."""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from trimaran.client.fleet import Fleet, FleetConfig
from trimaran.net.transport import Address
from trimaran.sip import digest
from trimaran.sip.transaction import TimerConfig
from trimaran.store.model import Credentials, User
from trimaran.store.postgres import PostgresStore

ROOT = Path(__file__).resolve().parents[2]
DOMAIN = "trimaran.test"
SERVERS = {"fe4a": "127.0.4.11", "fe4b": "127.0.4.12", "fe4c": "127.0.4.13"}
SIP_PORT, ADMIN_PORT, DB = 5460, 8460, ("127.0.4.21", 5460)

TOPOLOGY = f"""
name: pool-test
sip_domain: {DOMAIN}
sites:
  - name: dc1
pools:
  - name: fe4
    site: dc1
    role: frontend
    edition: enterprise
    servers:
""" + "".join(f"""      - name: {name}
        address: {address}
        sip_port: {SIP_PORT}
        admin_port: {ADMIN_PORT}
""" for name, address in SERVERS.items()) + f"""    backend:
      principal:
        address: {DB[0]}
        port: {DB[1]}
settings:
  failure_detection_seconds: 2
  heartbeat_seconds: 0.5
  keepalive_seconds: 1
"""


def trimaran(*args: str, check: bool = True, timeout: float = 120) -> str:
    """Run the CLI; return stdout (fail with both streams when `check`)."""
    result = subprocess.run([sys.executable, "-m", "trimaran", *args], capture_output=True,
                            text=True, timeout=timeout, cwd=ROOT)
    if check and result.returncode != 0:
        raise AssertionError(f"trimaran {' '.join(args)} -> {result.returncode}\n"
                             f"{result.stdout}\n{result.stderr}")
    return result.stdout


def password(name: str) -> str:
    return f"{name}-pw"


@dataclass
class Deployment:
    """A running pool and what tests need to act on it."""

    rundir: Path

    def address(self, server: str) -> Address:
        return Address("tcp", SERVERS[server], SIP_PORT)

    def pid(self, server: str) -> int:
        state = json.loads((self.rundir / "state.json").read_text())
        return int(state["servers"][server]["pid"])

    def signal(self, server: str, sig: signal.Signals) -> float:
        """Signal a server's process; returns the monotonic time it was sent."""
        at = time.monotonic()
        os.kill(self.pid(server), sig)
        return at

    def cli(self, *args: str, check: bool = True) -> str:
        return trimaran(*args, "--dir", str(self.rundir), check=check)

    def status(self) -> dict[str, object]:
        value = json.loads(self.cli("status", "--json"))
        assert isinstance(value, dict)
        return value

    def healthy(self, server: str) -> bool:
        servers = self.status()["servers"]
        assert isinstance(servers, list)
        return any(s["server"] == server and s["healthy"] for s in servers)

    def restore(self) -> None:
        """Bring every server back after a test that broke one."""
        for server in SERVERS:
            try:
                os.kill(self.pid(server), signal.SIGCONT)
                alive = True
            except ProcessLookupError:
                alive = False
            if not alive:
                self.cli("server", "start", server)
        deadline = time.monotonic() + 30
        while not all(self.healthy(s) for s in SERVERS):
            assert time.monotonic() < deadline, "servers did not come back"
            time.sleep(0.3)

    def fleet(self, names: list[str], **overrides: object) -> Fleet:
        config = FleetConfig(domain=DOMAIN, servers=tuple(self.address(s) for s in SERVERS),
                             users=tuple((n, password(n)) for n in names),
                             timers=TimerConfig(t1=0.5), **overrides)  # type: ignore[arg-type]
        return Fleet(config)


def dsn() -> str:
    return f"postgresql://trimaran@{DB[0]}:{DB[1]}/trimaran"


async def create_users(names: list[str], *, database: str | None = None,
                       pool: str = "fe4") -> None:
    """Users `names` (password `password(name)`) of `pool` in its store at `database`
    (default: this deployment's); those already there are kept."""
    store = PostgresStore(database or dsn(), pool=pool)
    await store.open()
    try:
        now = time.time()
        for name in names:
            aor = f"sip:{name}@{DOMAIN}"
            if await store.users.get(aor) is not None:
                continue
            await store.users.add(User(aor, pool), Credentials(
                aor, name, DOMAIN, digest.ha1(name, DOMAIN, password(name), "MD5"),
                digest.ha1(name, DOMAIN, password(name), "SHA-256")), now=now)
    finally:
        await store.close()


def start(tmp: Path, users: list[str]) -> Deployment:
    topology = tmp / "pool.yaml"
    topology.write_text(TOPOLOGY)
    rundir = tmp / "run"
    trimaran("up", str(topology), "--dir", str(rundir))
    asyncio.run(create_users(users))
    return Deployment(rundir)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[index]
