"""Time to write again after the Back End principal is killed, and acknowledged-write loss
(SPEC BE-2: "writes succeed again within 10 s of the principal's failure; zero
acknowledged writes lost").

Starts (`trimaran up`) an Enterprise pool of one Front End server whose Back End is a
principal, a synchronous mirror and a witness server in a witness pool. A writer drives
the Front Ends' own store path — a `PostgresStore` over the pool's multi-host read-write
DSN, `retry_for` 2 s as the Front Ends use it — adding numbered users one at a time at a
steady rate. Each n whose `users.add` returned is acknowledged; a call raising
`StoreUnavailable` (or another error) is a failed attempt and the same n is tried again
after a short pause; a `Conflict` on such a retry means the ambiguous attempt had
committed, so n is counted present (acknowledged).

K times: let writes run ~3 s, SIGKILL the current principal's postmaster (its process
group), measure from the SIGKILL to the first acknowledged write whose attempt started
after the postmaster was gone (time to write again), then wait until the old principal has
rejoined as mirror and the new principal reports it synchronous before the next kill. At
the end every acknowledged n is read back (`users.get`): missing ones are lost writes.

    ./run bench be_failover [--kills 5] [--rate 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_lines

from trimaran.admin import access
from trimaran.deploy.database import agent_url, instance
from trimaran.deploy.rundir import DatabaseState, RunDir
from trimaran.sip import digest
from trimaran.store.base import Conflict
from trimaran.store.model import Credentials, User
from trimaran.store.postgres import PostgresStore

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "be_failover.md"
DOMAIN = "bench.test"
POOL = "bef"
FE = ("bef1", "127.0.8.11")
SIP, ADMIN = 5860, 8860
PRINCIPAL, MIRROR = ("127.0.8.21", 5860), ("127.0.8.22", 5860)
WITNESS = ("befw1", "127.0.8.31", 5861, 8861)
DSN = (f"postgresql://trimaran@{PRINCIPAL[0]}:{PRINCIPAL[1]},{MIRROR[0]}:{MIRROR[1]}"
       f"/trimaran?target_session_attrs=read-write")
TARGET = 10.0
WAIT = 60.0       # bound on each wait for the pair to be whole again
RETRY_PAUSE = 0.05


def topology() -> str:
    return (f"name: be-failover-bench\nsip_domain: {DOMAIN}\nsites:\n  - name: dc1\n"
            f"    kind: central\n  - name: w1\n    kind: central\npools:\n"
            f"  - name: {POOL}\n    site: dc1\n    role: frontend\n    edition: enterprise\n"
            f"    servers:\n      - name: {FE[0]}\n        address: {FE[1]}\n"
            f"        sip_port: {SIP}\n        admin_port: {ADMIN}\n"
            f"    backend:\n      principal:\n        address: {PRINCIPAL[0]}\n"
            f"        port: {PRINCIPAL[1]}\n      mirror:\n        address: {MIRROR[0]}\n"
            f"        port: {MIRROR[1]}\n      witness:\n        server: {WITNESS[0]}\n"
            f"  - name: befwit\n    site: w1\n    role: witness\n    servers:\n"
            f"      - name: {WITNESS[0]}\n        address: {WITNESS[1]}\n"
            f"        sip_port: {WITNESS[2]}\n        admin_port: {WITNESS[3]}\n"
            f"settings:\n  failure_detection_seconds: 2\n  heartbeat_seconds: 0.5\n"
            f"  keepalive_seconds: 1\n")


def cli(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "trimaran", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"trimaran {' '.join(args)} failed ({done.returncode}):\n"
                           f"{done.stdout}\n{done.stderr}")


def agent_state(database: DatabaseState) -> dict[str, object] | None:
    """The agent's GET /state, or None when it does not answer."""
    try:
        url = agent_url(database) + "/state"
        request = urllib.request.Request(url, headers=access.headers_for("GET", url))
        with urllib.request.urlopen(request, timeout=1.0) as response:
            data = json.loads(response.read())
            return data if isinstance(data, dict) else None
    except (urllib.error.URLError, OSError, ValueError):
        return None


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def credentials(aor: str, name: str) -> Credentials:
    return Credentials(aor, name, DOMAIN, digest.ha1(name, DOMAIN, f"{name}-pw", "MD5"),
                       digest.ha1(name, DOMAIN, f"{name}-pw", "SHA-256"))


@dataclass
class Writer:
    """Numbered, idempotent user records written one at a time at `rate` per second."""

    store: PostgresStore
    rate: float
    acked: list[int] = field(default_factory=list)
    by_conflict: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    # (attempt started, acknowledged) monotonic times of every acknowledged write
    acks: list[tuple[float, float]] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        n, interval, next_at = 0, 1.0 / self.rate, time.monotonic()
        while not self.stop.is_set():
            name = f"w{n}"
            aor = f"sip:{name}@{DOMAIN}"
            retried = False
            while True:   # the same n until it is known present
                started = time.monotonic()
                try:
                    await self.store.users.add(User(aor, POOL), credentials(aor, name),
                                               now=time.time())
                except Conflict:
                    if not retried:
                        raise   # a fresh n cannot exist: the bench is broken
                    self.by_conflict += 1
                except Exception as exc:  # noqa: BLE001 - every failure is a failed attempt
                    self.failed += 1
                    kind = type(exc).__name__
                    self.errors[kind] = self.errors.get(kind, 0) + 1
                    retried = True
                    await asyncio.sleep(RETRY_PAUSE)
                    continue
                self.acked.append(n)
                self.acks.append((started, time.monotonic()))
                break
            n += 1
            next_at = max(next_at + interval, time.monotonic() - interval)
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    def first_ack_started_after(self, mark: float) -> float | None:
        for started, acked in self.acks:
            if started >= mark:
                return acked
        return None


async def wait_whole(databases: list[DatabaseState], old: DatabaseState) -> float | None:
    """Seconds until `old` is mirror again and the other (principal) reports it
    synchronous; None on timeout."""
    started = time.monotonic()
    new = next(d for d in databases if d.name != old.name)
    while time.monotonic() - started < WAIT:
        old_state, new_state = await asyncio.gather(asyncio.to_thread(agent_state, old),
                                                    asyncio.to_thread(agent_state, new))
        if (old_state and new_state and old_state.get("role") == "mirror"
                and new_state.get("role") == "principal" and new_state.get("synchronous")):
            return time.monotonic() - started
        await asyncio.sleep(0.2)
    return None


async def current_principal(databases: list[DatabaseState]) -> DatabaseState | None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        states = await asyncio.gather(*(asyncio.to_thread(agent_state, d) for d in databases))
        serving = [d for d, s in zip(databases, states, strict=True)
                   if s and s.get("role") == "principal" and s.get("serving")
                   and s.get("synchronous")]
        if len(serving) == 1:
            return serving[0]
        await asyncio.sleep(0.2)
    return None


async def measure(rundir: Path, kills: int, rate: float) -> dict[str, object]:
    # the asyncpg pool logs a traceback each time it cannot refill during the outage
    logging.getLogger("asyncpg.pool").setLevel(logging.ERROR)
    run = RunDir(rundir)
    access.use_rundir(run)               # admin calls signed with the deployment's key
    databases = [d for d in run.load_state().databases.values() if d.pool == POOL]
    store = PostgresStore(DSN, pool=POOL, retry_for=2.0)
    await store.open()
    writer = Writer(store, rate)
    task = asyncio.ensure_future(writer.run())
    times: list[float | None] = []
    rejoin: list[float | None] = []
    victims: list[str] = []
    try:
        for _ in range(kills):
            principal = await current_principal(databases)
            if principal is None:
                raise RuntimeError("no synchronous principal to kill within "
                                   f"{WAIT:.0f} s")
            await asyncio.sleep(3)
            if task.done():
                task.result()
            victims.append(principal.name)
            killed_at = time.monotonic()
            await asyncio.to_thread(instance(run, principal).kill)
            gone_at = time.monotonic()
            deadline = killed_at + WAIT
            acked = writer.first_ack_started_after(gone_at)
            while acked is None and time.monotonic() < deadline and not task.done():
                await asyncio.sleep(0.01)
                acked = writer.first_ack_started_after(gone_at)
            times.append(None if acked is None else acked - killed_at)
            rejoin.append(await wait_whole(databases, principal))
            print(f"kill {len(times)}: {principal.name}, write again "
                  f"{'timeout' if acked is None else f'{acked - killed_at:.2f} s'}, "
                  f"rejoined {'timeout' if rejoin[-1] is None else f'{rejoin[-1]:.1f} s'}",
                  file=sys.stderr, flush=True)
        await asyncio.sleep(1)
    finally:
        writer.stop.set()
        try:
            await asyncio.wait_for(task, 30)
        finally:
            missing = []
            if writer.acked:
                for n in writer.acked:
                    if await store.users.get(f"sip:w{n}@{DOMAIN}") is None:
                        missing.append(n)
            await store.close()
    return {"kills": kills, "victims": victims, "times": times, "rejoin": rejoin,
            "acked": len(writer.acked), "by_conflict": writer.by_conflict,
            "failed": writer.failed, "errors": writer.errors, "lost": len(missing),
            "missing": missing[:20], "rate": rate}


def fmt(value: float | None) -> str:
    return "timeout" if value is None else f"{value:.2f} s"


def report(r: dict[str, object]) -> list[str]:
    times: list[float | None] = r["times"]  # type: ignore[assignment]
    rejoin: list[float | None] = r["rejoin"]  # type: ignore[assignment]
    done = [t for t in times if t is not None]
    worst = max(done) if done and len(done) == len(times) else None
    within = worst is not None and worst <= TARGET
    lines = [
        "| measure | value |", "|---|---|",
        f"| principal kills (SIGKILL of the postmaster) | {r['kills']} |",
        f"| time to write again p50 | {fmt(pct(done, 50) if done else None)} |",
        f"| time to write again max | {fmt(worst)} (SPEC BE-2 target {TARGET:.0f} s: "
        f"{'met' if within else 'NOT met'}) |",
        f"| time to write again, each kill | {', '.join(fmt(t) for t in times)} |",
        f"| killed instance, each kill | {', '.join(r['victims'])} |",  # type: ignore[arg-type]
        f"| then old principal back as synchronous mirror after, each kill | "
        f"{', '.join(fmt(t) for t in rejoin)} |",
        f"| write rate offered | {r['rate']:.0f}/s, one at a time |",
        f"| acknowledged writes | {r['acked']} (of them confirmed by Conflict on retry: "
        f"{r['by_conflict']}) |",
        f"| acknowledged writes lost (read back missing) | {r['lost']} (target 0) |",
        f"| failed attempts (retried) | {r['failed']} "
        f"({', '.join(f'{k} {v}' for k, v in r['errors'].items()) or 'none'}) |",  # type: ignore[attr-defined]
    ]
    if r["missing"]:
        lines.append(f"| first missing n | {r['missing']} |")
    return lines


METHOD = [
    "Method: `trimaran up` of an Enterprise pool (one Front End server) whose Back End is a",
    "principal and a synchronous mirror (PostgreSQL, each with its mirroring agent) and a",
    "witness server in a witness pool (settings: failure_detection_seconds 2). The writer:",
    "the Front Ends' store path, `PostgresStore` over the pool's multi-host read-write",
    "DSN, `retry_for` 2 s,",
    "adding users `sip:w<n>@bench.test` one at a time at the offered rate. A returned",
    "`users.add` is an acknowledged write; a raised error is a failed attempt, retried for",
    "the same n after 50 ms (a Conflict on a retry means the ambiguous attempt committed:",
    "counted present). Each kill: ~3 s of writes, SIGKILL of the current principal's",
    "postmaster process group (found via each agent's `GET /state`); time to write again is",
    "from the SIGKILL to the first acknowledged write whose attempt started after the",
    "postmaster was gone. From then, before the next kill, the bench waits (bounded 60 s,",
    "the time shown per kill) until the old principal's agent reports role mirror and the",
    "new principal reports it synchronous. At the end every acknowledged n is read back",
    "with `users.get`.",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--rate", type=float, default=50.0, help="writes per second")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="trimaran-befailover-") as tmp:
        os.chmod(tmp, 0o755)
        topo = Path(tmp) / "pool.yaml"
        topo.write_text(topology())
        rundir = Path(tmp) / "run"
        try:
            cli("up", str(topo), "--dir", str(rundir))
            result = asyncio.run(measure(rundir, args.kills, args.rate))
        finally:
            try:
                cli("down", "--dir", str(rundir))
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                print(f"warning: {exc}", file=sys.stderr)
    lines = ["# Back End failover: time to write again after `kill -9` of the principal", "",
             *machine_lines(), "", *report(result), "", *METHOD, ""]
    print("\n".join(lines))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
