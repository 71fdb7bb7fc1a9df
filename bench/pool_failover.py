"""Time-to-reachable after a Front End server is killed, for many users (SPEC FE-2).

Starts an Enterprise pool of three Front End processes on one PostgreSQL Back End
(`trimaran up`), signs in N simulated users (default 1,000) spread over the servers,
keeps an IM load running between them, `kill -9`s one server and measures, for
each of its users, the time until the user is registered on another server
(reachable again). Also counts messages acknowledged but not delivered (loss) and
failed message transactions.

Baseline, measured in the same run: the cold sign-in of the same users (how long
the whole fleet takes to register from nothing), so the failover time is read
against what the pool does anyway.

    ./run bench pool_failover [--users 1000] [--rate 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_lines

from trimaran.client.fleet import Fleet, FleetConfig
from trimaran.net.transport import Address
from trimaran.sip import digest
from trimaran.sip.transaction import TimerConfig
from trimaran.store.model import Credentials, User
from trimaran.store.postgres import PostgresStore

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "pool_failover.md"
DOMAIN = "bench.test"
SERVERS = {"fb1": "127.0.6.11", "fb2": "127.0.6.12", "fb3": "127.0.6.13"}
SIP, ADMIN, DB = 5660, 8660, ("127.0.6.21", 5660)


def topology() -> str:
    servers = "".join(f"      - name: {n}\n        address: {a}\n        sip_port: {SIP}\n"
                      f"        admin_port: {ADMIN}\n" for n, a in SERVERS.items())
    return (f"name: failover-bench\nsip_domain: {DOMAIN}\nsites:\n  - name: dc1\npools:\n"
            f"  - name: fb\n    site: dc1\n    role: frontend\n    edition: enterprise\n"
            f"    servers:\n{servers}    backend:\n      principal:\n        address: {DB[0]}\n"
            f"        port: {DB[1]}\nsettings:\n  failure_detection_seconds: 2\n"
            f"  heartbeat_seconds: 0.5\n  keepalive_seconds: 1\n")


def cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "trimaran", *args], check=True, cwd=ROOT,
                   capture_output=True, timeout=180)


async def create_users(names: list[str]) -> None:
    store = PostgresStore(f"postgresql://trimaran@{DB[0]}:{DB[1]}/trimaran", pool="fb")
    await store.open()
    try:
        for name in names:
            aor = f"sip:{name}@{DOMAIN}"
            await store.users.add(User(aor, "fb"), Credentials(
                aor, name, DOMAIN, digest.ha1(name, DOMAIN, f"{name}-pw", "MD5"),
                digest.ha1(name, DOMAIN, f"{name}-pw", "SHA-256")), now=time.time())
    finally:
        await store.close()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


async def measure(rundir: Path, users: int, rate: float) -> dict[str, float]:
    names = [f"b{i:04d}" for i in range(users)]
    await create_users(names)
    fleet = Fleet(FleetConfig(domain=DOMAIN,
                              servers=tuple(Address("tcp", a, SIP) for a in SERVERS.values()),
                              users=tuple((n, f"{n}-pw") for n in names),
                              timers=TimerConfig(t1=0.5)))
    cold_started = time.monotonic()
    await fleet.start(concurrency=64)
    cold = time.monotonic() - cold_started
    try:
        victim = Address("tcp", SERVERS["fb2"], SIP)
        moved = fleet.on_server(victim)
        stop = asyncio.Event()
        load = asyncio.ensure_future(fleet.im_load(rate=rate, stop=stop))
        await asyncio.sleep(3)
        state = json.loads((rundir / "state.json").read_text())
        killed_at = time.monotonic()
        os.kill(int(state["servers"]["fb2"]["pid"]), signal.SIGKILL)
        deadline = killed_at + 60
        while not all(fleet.registered_at.get(n, 0) > killed_at for n in moved):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        back = [fleet.registered_at[n] - killed_at for n in moved
                if fleet.registered_at.get(n, 0) > killed_at]
        await asyncio.sleep(3)
        stop.set()
        result = await load
        await asyncio.sleep(3)  # deliveries trailing their acknowledgements
        lost = [m for m in result.acknowledged if not fleet.delivered(m)]
        return {"users": users, "moved": len(moved), "back": len(back),
                "p50": pct(back, 50), "p99": pct(back, 99), "max": max(back),
                "cold": cold, "acked": len(result.acknowledged), "failed": len(result.failed),
                "lost": len(lost)}
    finally:
        await fleet.close()


def report(r: dict[str, float]) -> list[str]:
    return [
        "| measure | value |", "|---|---|",
        f"| users in the pool | {r['users']:.0f} |",
        f"| users of the killed server | {r['moved']:.0f} |",
        f"| of them registered elsewhere | {r['back']:.0f} |",
        f"| time to reachable p50 | {r['p50']:.2f} s |",
        f"| time to reachable p99 | {r['p99']:.2f} s (SPEC FE-2 target 5 s) |",
        f"| time to reachable max | {r['max']:.2f} s |",
        f"| baseline: cold sign-in of all {r['users']:.0f} users | {r['cold']:.2f} s |",
        f"| p99 / cold sign-in | {r['p99'] / r['cold']:.2f} |",
        f"| messages acknowledged during the run | {r['acked']:.0f} |",
        f"| message transactions failed | {r['failed']:.0f} |",
        f"| acknowledged but not delivered (loss) | {r['lost']:.0f} |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=50.0, help="MESSAGEs per second")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="trimaran-failover-") as tmp:
        os.chmod(tmp, 0o755)
        topo = Path(tmp) / "pool.yaml"
        topo.write_text(topology())
        rundir = Path(tmp) / "run"
        cli("up", str(topo), "--dir", str(rundir))
        try:
            result = asyncio.run(measure(rundir, args.users, args.rate))
        finally:
            cli("down", "--dir", str(rundir))
    lines = ["# Pool failover: time to reachable after `kill -9` of a Front End", "",
             *machine_lines(), "", *report(result), ""]
    print("\n".join(lines))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
