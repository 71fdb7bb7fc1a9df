"""Pool failover and failback on a Standard Edition pair, with many users (SPEC DR-2,
DR-5, DR-6).

Starts (`trimaran up`) a Standard Edition pair — pool se1 (site dc1, 127.0.13.1) backed
up by pool se2 (site dc2, 127.0.13.2), the CMS on se1 — adds N users (default 2,000)
homed on se1 (straight into se1's SQLite store, as `trimaran user add` does, so the
change log ships them to se2), signs them all in over TCP with the server list
(se1, se2), and keeps W of them (default 200) writing contacts and meetings at R writes/s
(default 100, `trimaran.client.writes.Writers`). Then:

1. under that load, `trimaran backup status se1 --json` (state and lag, a few samples);
2. disaster: `trimaran server kill se1`, then `trimaran cms failover --disaster` and
   `trimaran pool failover se1 --disaster`, timed; the time from the first command
   until every client is registered on se2, and each user's sign-in completion (p50,
   p99); acknowledged writes missing on se2, and how many of them fall within the lag
   shown before the kill;
3. failback: `trimaran server start se1`, writes on se2 for a few seconds, then
   `trimaran pool failback se1`, timed, and the time until every client is back on se1;
   acknowledged writes missing on se1 that were not already lost by the disaster.

Baseline: the SPEC's targets and the model figures it replaces (DR-2 RPO model 5 min,
target 1 s; DR-5 RTO model 30 min, target 30 s; DR-6 failback model 60 min for 20,000
users, target 2 min); the table gives measured / target.

    ./run bench dr_failover [--users 2000] [--writers 200] [--rate 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_lines

from trimaran.admin import access
from trimaran.client.ua import UAConfig, UserAgent
from trimaran.client.writes import Ack, Writers
from trimaran.client.xcap import XcapClient, XcapError
from trimaran.deploy.rundir import RunDir
from trimaran.net.transport import Address
from trimaran.sip import digest
from trimaran.store.model import Credentials, User
from trimaran.store.sqlite import SqliteStore

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "dr_failover.md"
DOMAIN = "trimaran.test"
SE1, SE2 = "127.0.13.1", "127.0.13.2"
SIP, ADMIN = 5060, 8080
WAIT = 180.0          # bound on each wait for the clients to move
# SPEC figures: (target, model) in seconds
RPO = (1.0, 300.0)                 # DR-2
RTO = (30.0, 1800.0)               # DR-5
FAILBACK = (120.0, 3600.0)         # DR-6, model for 20,000 users

TOPOLOGY = f"""
name: dr-failover-bench
sip_domain: {DOMAIN}
sites:
  - name: dc1
  - name: dc2
pools:
  - name: se1
    site: dc1
    role: frontend
    edition: standard
    backup_pool: se2
    servers:
      - name: se1
        address: {SE1}
  - name: se2
    site: dc2
    role: frontend
    edition: standard
    backup_pool: se1
    servers:
      - name: se2
        address: {SE2}
"""


def trimaran(*args: str, check: bool = True,
             timeout: float = 300) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "trimaran", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise RuntimeError(f"trimaran {' '.join(args)} failed ({done.returncode}):\n"
                           f"{done.stdout}\n{done.stderr}")
    return done


def pct(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def name_of(aor: str) -> str:
    return aor.split(":", 1)[1].split("@", 1)[0]


@dataclass
class Bench:
    rundir: Path
    users: int
    writers: int
    rate: float
    agents: dict[str, UserAgent] = field(default_factory=dict)
    # user -> [(wall time, server host)] of every successful registration
    registrations: dict[str, list[tuple[float, str]]] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    # -- deployment ---------------------------------------------------------------------
    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return trimaran(*args, "--dir", str(self.rundir), check=check)

    def cli_json(self, *args: str) -> tuple[dict[str, Any], float]:
        """Run a `--json` command; its output and its wall time."""
        started = time.monotonic()
        out = self.cli(*args, "--json").stdout
        took = time.monotonic() - started
        value = json.loads(out)
        assert isinstance(value, dict)
        return value, took

    def backup_direction(self) -> dict[str, Any]:
        status, _ = self.cli_json("backup", "status", "se1")
        direction = status["directions"][0]
        assert isinstance(direction, dict)
        return direction

    async def add_users(self, names: list[str]) -> None:
        store = SqliteStore(self.rundir / "data" / "se1" / "store.sqlite", pool="se1")
        await store.open()
        try:
            for name in names:
                aor = f"sip:{name}@{DOMAIN}"
                password = f"{name}-pw"
                await store.users.add(User(aor, "se1"), Credentials(
                    aor, name, DOMAIN, digest.ha1(name, DOMAIN, password, "MD5"),
                    digest.ha1(name, DOMAIN, password, "SHA-256")), now=time.time())
        finally:
            await store.close()

    async def wait_backup_caught_up(self, timeout: float) -> float:
        started = time.monotonic()
        while True:
            d = await asyncio.to_thread(self.backup_direction)
            if d.get("state") == "steady" and int(d.get("lag_changes", 1)) == 0:
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"backup se1 -> se2 not caught up after {timeout:.0f} s: "
                                   f"{d}")
            await asyncio.sleep(0.5)

    # -- clients ------------------------------------------------------------------------
    def _hook(self, name: str, ua: UserAgent) -> Callable[[Address], None]:
        def registered(server: Address) -> None:
            self.registrations[name].append((time.time(), server.host))
        return registered

    async def sign_in(self, names: list[str], concurrency: int) -> float:
        gate = asyncio.Semaphore(concurrency)
        servers = (Address("tcp", SE1, SIP), Address("tcp", SE2, SIP))

        async def one(name: str) -> None:
            async with gate:
                ua = UserAgent(UAConfig(aor=f"sip:{name}@{DOMAIN}", password=f"{name}-pw",
                                        servers=servers, reregister_on_flow_loss=True))
                self.registrations[name] = []
                ua.on_registered = self._hook(name, ua)
                self.agents[name] = ua
                await ua.start()
                response = await ua.register()
                if not 200 <= response.status < 300:
                    raise RuntimeError(f"{name}: REGISTER -> {response.status}")

        started = time.monotonic()
        await asyncio.gather(*(one(n) for n in names))
        return time.monotonic() - started

    def on(self, host: str) -> int:
        return sum(1 for ua in self.agents.values()
                   if ua.registered_server is not None and ua.registered_server.host == host)

    async def wait_all_on(self, host: str, since: float) -> tuple[float | None, list[float]]:
        """Wait until every client is registered on `host`; the time from `since` (wall)
        until then (None on timeout) and each user's first registration there after
        `since`."""
        deadline = time.monotonic() + WAIT
        done_at: float | None = None
        while time.monotonic() < deadline:
            if self.on(host) == len(self.agents):
                done_at = time.time() - since
                break
            await asyncio.sleep(0.05)
        per_user = []
        for regs in self.registrations.values():
            firsts = [at for at, h in regs if h == host and at >= since - 30]
            later = [at for at in firsts if at >= since]
            if later:
                per_user.append(later[0] - since)
            elif firsts:       # registered there before the command (should not happen)
                per_user.append(0.0)
        return done_at, per_user

    async def close_agents(self) -> None:
        await asyncio.gather(*(ua.close() for ua in self.agents.values()),
                             return_exceptions=True)

    # -- what a pool holds ----------------------------------------------------------------
    def contacts_on(self, host: str, session: aiohttp.ClientSession,
                    ) -> Callable[[str], Awaitable[set[str]]]:
        async def contacts(aor: str) -> set[str]:
            url = f"http://{host}:{ADMIN}/admin/contacts/{quote(aor, safe='')}"
            async with session.get(url, headers=access.headers_for("GET", url)) as resp:
                if resp.status == 404:
                    return set()
                resp.raise_for_status()
                body = await resp.json()
                return {c["uri"] for c in body["contacts"]}
        return contacts

    @staticmethod
    def presence_on(host: str, session: aiohttp.ClientSession,
                    ) -> Callable[[str], Awaitable[str]]:
        async def presence(aor: str) -> str:
            url = f"http://{host}:{ADMIN}/admin/presence/{quote(aor, safe='')}"
            async with session.get(url, headers=access.headers_for("GET", url)) as resp:
                if resp.status == 404:
                    return ""
                resp.raise_for_status()
                body = await resp.json()
                return "".join(p["body"] for p in body["publications"])
        return presence

    @staticmethod
    def meeting_exists_on(host: str) -> Callable[[str, str], Awaitable[bool]]:
        async def exists(aor: str, meeting_id: str) -> bool:
            name = name_of(aor)
            client = XcapClient(f"http://{host}:{ADMIN}", aor, name, f"{name}-pw")
            try:
                await client.get_meeting(meeting_id)
            except XcapError as exc:
                if exc.status == 404:
                    return False
                raise
            return True
        return exists

    async def lost(self, writers: Writers, host: str, before: float | None = None,
                   ) -> list[Ack]:
        limit = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=limit) as session:
            return await writers.lost(self.contacts_on(host, session),
                                      self.meeting_exists_on(host), before=before,
                                      presence_of=self.presence_on(host, session))

    # -- the run ------------------------------------------------------------------------
    async def run(self) -> None:
        r = self.result
        names = [f"u{i:05d}" for i in range(self.users)]
        started = time.monotonic()
        await self.add_users(names)
        r["add_seconds"] = time.monotonic() - started
        r["replicate_seconds"] = await self.wait_backup_caught_up(120)
        r["users"] = self.users
        r["cold_signin"] = await self.sign_in(names, concurrency=64)
        print(f"{self.users} users signed in on se1 in {r['cold_signin']:.1f} s "
              f"({self.on(SE1)} on se1)", flush=True)

        wnames = names[:self.writers]
        writers = Writers([(f"sip:{n}@{DOMAIN}", n, f"{n}-pw") for n in wnames],
                          [f"http://{SE1}:{ADMIN}", f"http://{SE2}:{ADMIN}"],
                          domain=DOMAIN, rate=self.rate,
                          agents={f"sip:{n}@{DOMAIN}": self.agents[n] for n in wnames})
        writers.start()
        try:
            await self.disaster_and_failback(writers)
        finally:
            await writers.stop()

    async def disaster_and_failback(self, writers: Writers) -> None:
        r = self.result
        load_started = time.time()
        await asyncio.sleep(5)
        samples = []
        for _ in range(3):
            samples.append(await asyncio.to_thread(self.backup_direction))
            await asyncio.sleep(1)
        acked_before = len(writers.stats.acked)
        r["write_rate"] = acked_before / (time.time() - load_started)
        r["backup_states"] = sorted({str(s.get("state")) for s in samples})
        r["lag_samples"] = [float(s.get("lag_seconds", math.nan)) for s in samples]
        r["lag_changes"] = [int(s.get("lag_changes", -1)) for s in samples]
        lag_before = r["lag_samples"][-1]
        print(f"backup se1 -> se2 under load: {r['backup_states']} lag "
              f"{r['lag_samples']} s / {r['lag_changes']} changes; "
              f"{r['write_rate']:.0f} writes/s acknowledged", flush=True)

        # -- disaster ------------------------------------------------------------------
        self.cli("server", "kill", "se1")
        killed_at = time.time()
        # Stop writing: a later write re-sends a user's whole contact list and would hide
        # a contact the disaster lost. Loss is measured before writing resumes.
        await writers.stop()
        r["acked_before_kill"] = sum(1 for a in writers.stats.acked if a.at < killed_at)
        refused = self.cli("pool", "failover", "se1", "--disaster", check=False)
        r["refused_without_cms"] = refused.returncode == 1 and "cms failover" in refused.stderr
        command_at = time.time()
        cms, r["cms_cmd"] = await asyncio.to_thread(self.cli_json, "cms", "failover",
                                                    "--disaster")
        r["cms_seconds"] = float(cms["seconds"])
        pool, r["pool_cmd"] = await asyncio.to_thread(self.cli_json, "pool", "failover",
                                                      "se1", "--disaster")
        r["pool_seconds"] = float(pool["seconds"])
        r["pool_steps"] = pool["steps"]
        print(f"cms failover {r['cms_cmd']:.2f} s, pool failover {r['pool_cmd']:.2f} s",
              flush=True)
        r["rto"], per_user = await self.wait_all_on(SE2, command_at)
        r["moved"] = self.on(SE2)
        r["rto_p50"], r["rto_p99"] = pct(per_user, 50), pct(per_user, 99)
        r["rto_max"] = max(per_user) if per_user else math.nan
        r["since_kill"] = command_at - killed_at
        r["full_mode"] = sum(1 for ua in self.agents.values() if ua.mode == "full")
        print(f"{r['moved']}/{len(self.agents)} on se2; all after {r['rto']} s", flush=True)
        lost = await self.lost(writers, SE2, before=killed_at)
        acked = len(writers.stats.acked)
        writers.start()
        await asyncio.sleep(5)
        r["writes_on_se2"] = len(writers.stats.acked) - acked
        await writers.stop()
        window = max(1.0, lag_before) + 0.2
        r["lost"] = len(lost)
        r["lost_within_lag"] = sum(1 for a in lost if a.at >= killed_at - window)
        r["lost_oldest"] = max((killed_at - a.at for a in lost), default=0.0)
        r["lost_after_kill_on_se2"] = len(await self.lost_after(writers, SE2, killed_at))
        print(f"lost {r['lost']} (within the lag {r['lost_within_lag']}), oldest "
              f"{r['lost_oldest']:.2f} s before the kill", flush=True)

        # -- failback ------------------------------------------------------------------
        self.cli("server", "start", "se1")
        writers.start()
        acked = len(writers.stats.acked)
        await asyncio.sleep(5)
        r["writes_on_se2_after_restart"] = len(writers.stats.acked) - acked
        back_at = time.time()
        fb, r["failback_cmd"] = await asyncio.to_thread(self.cli_json, "pool", "failback",
                                                        "se1")
        r["failback_seconds"] = float(fb["seconds"])
        r["failback_steps"] = fb["steps"]
        print(f"pool failback {r['failback_cmd']:.2f} s", flush=True)
        r["home"], per_user = await self.wait_all_on(SE1, back_at)
        r["back"] = self.on(SE1)
        r["home_p50"], r["home_p99"] = pct(per_user, 50), pct(per_user, 99)
        r["home_max"] = max(per_user) if per_user else math.nan
        print(f"{r['back']}/{len(self.agents)} back on se1; all after {r['home']} s",
              flush=True)
        acked = len(writers.stats.acked)
        await asyncio.sleep(3)
        r["writes_on_se1"] = len(writers.stats.acked) - acked
        await writers.stop()
        r["acked_total"] = len(writers.stats.acked)
        r["refused"], r["unreachable"] = writers.stats.refused, writers.stats.unreachable
        home_lost = await self.lost(writers, SE1)
        already = set(lost)
        r["lost_home"] = len(home_lost)
        r["lost_by_failback"] = len([a for a in home_lost if a not in already])
        examples = [a for a in home_lost if a not in already][:3]
        if examples:
            self.notes.append(f"writes lost by the failback, e.g. {examples}")

    async def lost_after(self, writers: Writers, host: str, since: float) -> list[Ack]:
        """Writes acknowledged after `since` that `host` does not hold."""
        later = [a for a in writers.stats.acked if a.at >= since]
        saved = writers.stats.acked
        writers.stats.acked = later
        try:
            return await self.lost(writers, host)
        finally:
            writers.stats.acked = saved


def fmt(value: float | None, unit: str = " s") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "not reached"
    return f"{value:.2f}{unit}"


def ratio(value: float | None, reference: float) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value / reference:.3f}"


def report(b: Bench, args: argparse.Namespace) -> list[str]:
    r = b.result
    lag = max(r["lag_samples"])
    rto_total = r["rto"]
    home = r["home"]
    n = r["users"]
    scaled = FAILBACK[1] * n / 20000
    rows = [
        "| metric | measured | target | model | vs target |", "|---|---|---|---|---|",
        f"| backup se1 -> se2 under load: state | {', '.join(r['backup_states'])} | steady "
        "| - | - |",
        f"| RPO: backup lag under load (max of {len(r['lag_samples'])}) | {fmt(lag)} "
        f"({max(r['lag_changes'])} changes) | {RPO[0]:.0f} s | {RPO[1]:.0f} s "
        f"| {ratio(lag, RPO[0])} |",
        f"| acknowledged writes lost by the disaster (of {r['acked_before_kill']}) "
        f"| {r['lost']} | 0 beyond the lag | - | - |",
        f"| of them within the lag before the kill | {r['lost_within_lag']} | all | - | - |",
        f"| oldest lost write, before the kill | {fmt(r['lost_oldest'])} | <= {RPO[0]:.0f} s "
        f"| {RPO[1]:.0f} s | {ratio(r['lost_oldest'], RPO[0])} |",
        f"| writes acknowledged on se2 after the kill, missing there | "
        f"{r['lost_after_kill_on_se2']} | 0 | - | - |",
        f"| `cms failover --disaster` (command / its `seconds`) | {fmt(r['cms_cmd'])} / "
        f"{fmt(r['cms_seconds'])} | - | - | - |",
        f"| `pool failover se1 --disaster` (command / its `seconds`) | {fmt(r['pool_cmd'])} / "
        f"{fmt(r['pool_seconds'])} | - | - | - |",
        f"| RTO: first command -> all {n} clients on se2 | {fmt(rto_total)} "
        f"({r['moved']}/{n}) | {RTO[0]:.0f} s | {RTO[1]:.0f} s "
        f"| {ratio(rto_total, RTO[0])} |",
        f"| per-user sign-in on se2 after the command p50 / p99 / max "
        f"| {fmt(r['rto_p50'])} / {fmt(r['rto_p99'])} / {fmt(r['rto_max'])} "
        f"| {RTO[0]:.0f} s | {RTO[1]:.0f} s | {ratio(r['rto_p99'], RTO[0])} (p99) |",
        f"| clients in full mode on se2 | {r['full_mode']}/{n} | {n} | - | - |",
        f"| writes acknowledged on se2 in the 5 s after | {r['writes_on_se2']} | > 0 | - "
        "| - |",
        f"| writes on se2 after `server start se1` (5 s) | "
        f"{r['writes_on_se2_after_restart']} | > 0 | - | - |",
        f"| `pool failback se1` (command / its `seconds`) | {fmt(r['failback_cmd'])} / "
        f"{fmt(r['failback_seconds'])} | - | - | - |",
        f"| failback: command start -> all {n} clients on se1 | {fmt(home)} "
        f"({r['back']}/{n}) | {FAILBACK[0]:.0f} s | {FAILBACK[1]:.0f} s for 20,000 "
        f"({scaled:.0f} s pro rata) | {ratio(home, FAILBACK[0])} |",
        f"| per-user sign-in on se1 after failback p50 / p99 / max | {fmt(r['home_p50'])} / "
        f"{fmt(r['home_p99'])} / {fmt(r['home_max'])} | - | - | - |",
        f"| acknowledged writes missing on se1 after failback, beyond the disaster's "
        f"| {r['lost_by_failback']} | 0 | - | - |",
        f"| writes acknowledged in all / refused / unreachable attempts "
        f"| {r['acked_total']} / {r['refused']} / {r['unreachable']} | - | - | - |",
    ]
    head = [
        f"- users: {n} homed on se1 ({SE1}), backup pool se2 ({SE2}), one Standard "
        f"Edition server each, all processes on this machine; clients and writers in one "
        f"Python process",
        f"- writes: {args.writers} users, asked {args.rate:.0f}/s, acknowledged "
        f"{r['write_rate']:.0f}/s before the kill (contact-list PUTs, meetings and "
        "presence PUBLISHes; writes stop at the kill and resume after the loss check)",
        f"- setup: {n} users written to se1's store in {r['add_seconds']:.1f} s, shipped "
        f"to se2 in {r['replicate_seconds']:.1f} s; cold sign-in of all {n} on se1 "
        f"{r['cold_signin']:.1f} s (64 at a time)",
        f"- `pool failover` without the CMS moved first refused (DR-5): "
        f"{r['refused_without_cms']}; first command {r['since_kill']:.2f} s after the kill "
        f"(including that refused call)",
        "- vs target = measured / SPEC target (below 1 meets it); model = the figure "
        "the SPEC replaces",
    ]
    steps = ["", "Steps of `pool failover se1 --disaster`:", ""]
    steps += [f"- {s['at']:.2f} s {s['step']}" for s in r["pool_steps"]]
    steps += ["", "Steps of `pool failback se1`:", ""]
    steps += [f"- {s['at']:.2f} s {s['step']}" for s in r["failback_steps"]]
    notes = [f"- note: {n}" for n in b.notes]
    return [*head, *notes, "", *rows, *steps]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--writers", type=int, default=200)
    parser.add_argument("--rate", type=float, default=100.0, help="writes per second")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="trimaran-dr-") as tmp:
        os.chmod(tmp, 0o755)
        topo = Path(tmp) / "topology.yaml"
        topo.write_text(TOPOLOGY)
        rundir = Path(tmp) / "run"
        bench = Bench(rundir, args.users, min(args.writers, args.users), args.rate)
        trimaran("up", str(topo), "--dir", str(rundir))
        access.use_rundir(RunDir(rundir))     # admin calls signed with its key

        async def go() -> None:
            try:
                await bench.run()
            finally:
                await bench.close_agents()
        try:
            asyncio.run(go())
        finally:
            trimaran("down", "--dir", str(rundir), check=False)
    lines = ["# DR: pool failover and failback on a Standard Edition pair", "",
             *machine_lines(), *report(bench, args), ""]
    print("\n".join(lines))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
