"""Metropolitan site resiliency: what a pool stretched over two sites pays for the distance
between them (SPEC METRO-1 and its 20 ms rule).

Starts (`trimaran up`) one Enterprise pool stretched over sites a and b: Front End
server fe1a and the Back End principal in a, fe1b and the synchronous mirror in b, the
witness in a third site. The link between a and b gets a round-trip delay of 0
(baseline), 15, 20 and 30 ms (`bench/wan.py`: a delaying TCP relay every cross-site TCP
connection is steered through; whether netem could have been used instead is checked and
printed with the mode). Clients are in their own site (a user of site a on
fe1a, a user of site b on fe1b), so only the traffic between the sites' servers and
databases crosses the link: PostgreSQL replication (every commit waits for the mirror's
flush), a Front End's store queries to the principal in the other site, SIP between
the Front Ends.

Measured one at a time (p50, p99 of `--samples` each), with the ratio of each p50 to the
0 ms baseline of the same run:

* sign-in through a server of site a: a new client's REGISTER, challenge and
  authenticated REGISTER; the binding's commit waits for the mirror across the link;
* sign-in through a server of site b: the same, every store query crossing too;
* IM from a user on a to a user on b, and back: MESSAGE until its 200;
* contact-list write (HTTP PUT with digest) through a server of a, and of b.

    ./run bench metro [--quick] [--rtts 0,15,20,30] [--samples N] [--quiet-wait S]
                      [--output FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))   # tests.integration
from machine import machine_lines
from wan import DelayRelay, Wan, WanError, descendants, netem_problem

from tests.integration.enterprise import create_users, password
from trimaran.admin import access
from trimaran.client.ua import UAConfig, UserAgent
from trimaran.client.xcap import XcapClient
from trimaran.deploy.database import instance
from trimaran.deploy.rundir import RunDir
from trimaran.deploy.supervisor import request_json
from trimaran.net.transport import Address
from trimaran.store.model import ContactEntry, ContactList
from trimaran.topology.validator import validate_text

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "metro.md"
DOMAIN = "trimaran.test"
SIP, ADMIN, DB = 5550, 8550, 5550
FE = {"fe1a": "127.0.53.61", "fe1b": "127.0.54.61"}
SITE_OF = {"fe1a": "a", "fe1b": "b"}
PRINCIPAL, MIRROR, WITNESS = "127.0.53.71", "127.0.54.71", "127.0.53.81"
RELAY = ("127.0.53.91", 5551)
RTTS = (0.0, 15.0, 20.0, 30.0)
STEERED: list[int] = []      # connections the relay carried (proof the link was in use)
CROSSED: dict[str, int] = {}   # the connections that crossed, by original destination
BUSY: dict[float, float] = {}  # how busy the CPUs were just before each delay's samples
QUIET_BUSY = 0.35
NO_NAMESPACES = "`trimaran up` does not run a site in a network namespace of its own yet"
LIMIT_MS = 20.0

TOPOLOGY = f"""\
name: metro-bench
sip_domain: {DOMAIN}
sites:
  - {{name: a, metro: m1, rtt_ms: {{b: RTT}}}}
  - {{name: b, metro: m1}}
  - {{name: c}}
pools:
  - name: fe1
    site: a
    role: frontend
    edition: enterprise
    servers:
      - {{name: fe1a, address: {FE["fe1a"]}, sip_port: {SIP}, admin_port: {ADMIN}}}
      - {{name: fe1b, address: {FE["fe1b"]}, sip_port: {SIP}, admin_port: {ADMIN}, site: b}}
    backend:
      principal: {{address: {PRINCIPAL}, port: {DB}}}
      mirror: {{address: {MIRROR}, port: {DB}, site: b}}
      witness: {{server: wit1}}
  - name: witness1
    site: c
    role: witness
    servers:
      - {{name: wit1, address: {WITNESS}, admin_port: {ADMIN + 1}}}
settings:
  failure_detection_seconds: 2
  heartbeat_seconds: 0.5
  keepalive_seconds: 1
"""


def topology(rtt: float) -> str:
    return TOPOLOGY.replace("RTT", f"{rtt:g}")


def cli(*args: str, prefix: tuple[str, ...] = ()) -> str:
    done = subprocess.run([*prefix, sys.executable, "-m", "trimaran", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"trimaran {' '.join(args)} failed ({done.returncode}):\n"
                           f"{done.stdout}\n{done.stderr}")
    return done.stdout


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def sip(server: str) -> Address:
    return Address("tcp", FE[server], SIP)


def synchronous() -> bool:
    """The principal (in a) reports its mirror synchronous."""
    status, state = request_json(f"http://{PRINCIPAL}:{DB + 10_000}/state", timeout=1.0)
    instance_state = state.get("instance") if status == 200 and state else None
    standby = instance_state.get("standby") if isinstance(instance_state, dict) else None
    return isinstance(standby, dict) and standby.get("sync_state") == "sync"


def serving(server: str) -> bool:
    status, state = request_json(f"http://{FE[server]}:{ADMIN}/status", timeout=1.0)
    members = state.get("pool_members") if status == 200 and state else None
    return (state is not None and state.get("mode") == "full" and isinstance(members, dict)
            and sorted(members.get("alive", [])) == sorted(FE))


async def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(predicate):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.2)


async def place_sites(wan: Wan, run: RunDir) -> None:
    """Put every process of sites a and b in its site's cgroup, then make the
    connections that cross the link again so that they are steered: the Front End
    servers are restarted inside their cgroups, the mirror's walreceiver reconnects."""
    state = run.load_state()
    for database in state.databases.values():
        site = "a" if database.address == PRINCIPAL else "b"
        pid = instance(run, database).pid()
        wan.place(site, [*(descendants(pid) if pid else []), *(
            descendants(database.agent_pid) if database.agent_pid else [])])
    for server, site in SITE_OF.items():
        await asyncio.to_thread(cli, "server", "stop", server, "--dir", str(run.path))
        await asyncio.to_thread(cli, "server", "start", server, "--dir", str(run.path),
                                prefix=tuple(wan.joiner(site)))
    connection = await asyncpg.connect(f"postgresql://trimaran@{PRINCIPAL}:{DB}/trimaran")
    try:
        await connection.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_replication")
    finally:
        await connection.close()


async def timed(action: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    await action()
    return time.perf_counter() - started


class Measures:
    """The measurements of one delay, in seconds."""

    def __init__(self) -> None:
        self.values: dict[str, list[float]] = {}

    def add(self, name: str, value: float) -> None:
        self.values.setdefault(name, []).append(value)


async def sign_in(server: str, name: str) -> float:
    ua = UserAgent(UAConfig(aor=f"sip:{name}@{DOMAIN}", password=password(name),
                            servers=(sip(server),), auto_refresh=False,
                            reregister_on_flow_loss=False))
    await ua.start()
    try:
        started = time.perf_counter()
        response = await ua.register()
        took = time.perf_counter() - started
        if response.status != 200:
            raise RuntimeError(f"sign-in of {name} at {server}: {response.status}")
        await ua.unregister()
        return took
    finally:
        await ua.close()


async def measure(samples: int, users: dict[str, UserAgent]) -> Measures:
    m = Measures()
    connection = await asyncpg.connect(f"postgresql://trimaran@{PRINCIPAL}:{DB}/trimaran")
    try:   # a one-row insert from site a: its commit waits for the mirror's flush
        await connection.execute("CREATE TABLE IF NOT EXISTS metro_bench (n integer)")
        for i in range(samples):
            m.add("one-row commit on the principal (waits for the mirror in b)",
                  await timed(lambda i=i: connection.execute(  # type: ignore[misc]
                      "INSERT INTO metro_bench VALUES ($1)", i)))
    finally:
        await connection.close()
    for i in range(samples):
        m.add("sign-in through a server of site a", await sign_in("fe1a", f"sa{i}"))
        m.add("sign-in through a server of site b", await sign_in("fe1b", f"sb{i}"))
    for direction, (sender, recipient) in (("IM from a user on a to a user on b", ("ua", "ub")),
                                           ("IM from a user on b to a user on a", ("ub", "ua"))):
        for i in range(2 * samples):
            started = time.perf_counter()
            answer = await users[sender].send_message(f"sip:{recipient}@{DOMAIN}", f"m{i}")
            m.add(direction, time.perf_counter() - started)
            if answer.status != 200:
                raise RuntimeError(f"{direction}: {answer.status}")
            await users[recipient].next_message(timeout=5)
    for server, site in SITE_OF.items():
        writer = f"w{site}"
        client = XcapClient(f"http://{FE[server]}:{ADMIN}", f"sip:{writer}@{DOMAIN}", writer,
                            password(writer))
        for i in range(samples):
            document = ContactList(client.aor, (), tuple(
                ContactEntry(f"sip:c{k}@{DOMAIN}") for k in range(i % 5 + 1)))
            m.add(f"contact-list write through a server of site {site}",
                  await timed(lambda c=client, d=document: c.put(d)))  # type: ignore[misc]
    return m


def busy_fraction(seconds: float = 1.0) -> float:
    """How busy the machine's CPUs were over the next `seconds` (0..1, from /proc/stat)."""
    def sample() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]          # total, idle + iowait
    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    return 1.0 - (idle1 - idle0) / max(total1 - total0, 1)


def wait_quiet(limit: float, busy: float = QUIET_BUSY) -> float:
    """Wait (at most `limit` s) until the CPUs are less than `busy` busy; return how busy
    they were at the last look (the rest of the machine skews latencies)."""
    deadline = time.monotonic() + limit
    now = busy_fraction()
    while now >= busy and time.monotonic() < deadline:
        now = busy_fraction()
    return now


async def bench(run: RunDir, rtts: tuple[float, ...], samples: int,
                quiet_wait: float) -> dict[float, Measures]:
    wan = Wan(f"{os.getpid()}", DelayRelay(*RELAY), {"a": (FE["fe1a"], PRINCIPAL),
                                                       "b": (FE["fe1b"], MIRROR)})
    await wan.open()
    users: dict[str, UserAgent] = {}
    try:
        await place_sites(wan, run)
        await wait_for(lambda: synchronous() and all(serving(s) for s in FE), 60,
                       "the pair synchronous and both servers serving, through the link")
        for name, server in (("ua", "fe1a"), ("ub", "fe1b")):
            users[name] = UserAgent(UAConfig(aor=f"sip:{name}@{DOMAIN}",
                                             password=password(name), servers=(sip(server),),
                                             auto_refresh=False))
            await users[name].start()
            if (await users[name].register()).status != 200:
                raise RuntimeError(f"{name} could not sign in at {server}")
        results: dict[float, Measures] = {}
        for rtt in rtts:
            wan.relay.one_way = rtt / 2000
            await asyncio.sleep(1)
            await wait_for(synchronous, 30, f"the pair synchronous at {rtt:g} ms")
            busy = await asyncio.to_thread(wait_quiet, quiet_wait)
            BUSY[rtt] = busy
            print(f"  measuring at {rtt:g} ms RTT (CPUs {busy:.0%} busy) ...", flush=True)
            await measure(1, users)   # warm the connections at this delay
            results[rtt] = await measure(samples, users)
        print(f"  relay: connections steered through the link, by destination: "
              f"{wan.relay.connections}")
        STEERED.append(sum(wan.relay.connections.values()))
        CROSSED.update(wan.relay.connections)
        return results
    finally:
        for ua in users.values():
            await ua.close()
        await wan.close()


def report(results: dict[float, Measures], mode: str, samples: int) -> list[str]:
    rtts = sorted(results)
    base = results[rtts[0]]
    head = " | ".join(f"{r:g} ms RTT p50 / p99 (p50 x)" for r in rtts)
    lines = [f"| measure | {head} |", "|---|" + "---|" * len(rtts)]
    for name, values in base.values.items():
        cells = []
        for rtt in rtts:
            got = results[rtt].values[name]
            p50, p99 = pct(got, 50) * 1000, pct(got, 99) * 1000
            ratio = p50 / (pct(values, 50) * 1000)
            cells.append(f"{p50:.1f} / {p99:.1f} ms" + ("" if rtt == rtts[0] else
                                                        f" (x{ratio:.1f})"))
        lines.append(f"| {name} | {' | '.join(cells)} |")
    refused = [v for v in validate_text(topology(30)) if v.severity == "error"]
    lines += ["", "CPUs busy just before each delay's samples (the deployment idle, the rest "
              "of the machine included): " + ", ".join(f"{r:g} ms {BUSY.get(r, 0):.0%}"
                                                       for r in rtts) + "."]
    crossed = ", ".join(f"{where} x{n}" for where, n in sorted(CROSSED.items()))
    lines += ["", f"Delay mode: {mode}; {sum(STEERED)} connections crossed the link "
              f"(by destination: {crossed}). "
              f"Samples per measure and delay: {samples} ({2 * samples} for IM), taken one at "
              "a time, after one warm-up round.",
              "", f"The topology validator at {max(rtts):g} ms: "
              + ("; ".join(f"`{v.path}`: {v.message}" for v in refused) or "accepted"), ""]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 0 and 30 ms, 10 samples; saves only with --output")
    parser.add_argument("--rtts", default=None, help="comma-separated RTTs in ms")
    parser.add_argument("--samples", type=int, default=None)
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--quiet-wait", type=float, default=None,
                        help=f"before each delay, wait up to S s for the CPUs to be less than "
                             f"{QUIET_BUSY * 100:.0f} %% busy (default 15, --quick 0)")
    args = parser.parse_args()
    rtts = tuple(float(r) for r in args.rtts.split(",")) if args.rtts else \
        ((0.0, 30.0) if args.quick else RTTS)
    samples = args.samples or (10 if args.quick else 40)
    output = args.output or (None if args.quick else RESULTS)
    why_not_netem = netem_problem() or NO_NAMESPACES
    mode = ("relay: an in-process asyncio TCP relay holding each chunk RTT/2 each way; "
            "cross-site TCP connections steered into it by netfilter NAT per site cgroup "
            f"(netem not used: {why_not_netem})")
    print(f"delay mode: {mode}", flush=True)
    started, load_before = time.monotonic(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="trimaran-metro-") as tmp:
        os.chmod(tmp, 0o755)
        topo = Path(tmp) / "metro.yaml"
        topo.write_text(topology(2))
        run = RunDir(Path(tmp) / "run")
        cli("up", str(topo), "--dir", str(run.path))
        access.use_rundir(run)           # admin calls signed with the deployment's key
        try:
            asyncio.run(create_users(["ua", "ub", "wa", "wb", *(
                f"s{site}{i}" for site in "ab" for i in range(samples))], pool="fe1",
                database=f"postgresql://trimaran@{PRINCIPAL}:{DB}/trimaran"))
            quiet = args.quiet_wait if args.quiet_wait is not None else \
                (0.0 if args.quick else 15.0)
            results = asyncio.run(bench(run, rtts, samples, quiet))
        except WanError as exc:
            raise SystemExit(f"metro bench: {exc}") from None
        finally:
            cli("down", "--dir", str(run.path))
    took = time.monotonic() - started
    lines = ["# Metropolitan site resiliency: latency across the link between the two sites",
             "", *machine_lines(), f"- run time: {took:.0f} s; load average (1 min) "
             f"{load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end "
             f"(2 would be every core busy)", "",
             *report(results, mode, samples), *METHOD]
    print("\n".join(lines))
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text("\n".join(lines))


METHOD = [
    "Method: `trimaran up` of one Enterprise pool stretched over sites a and b (Front End "
    "fe1a and the Back End principal in a; fe1b and the synchronous mirror in b; the "
    "witness in site c). The processes of each site are put in a cgroup of their own "
    "(the Front End servers are restarted inside it, the mirror's walreceiver "
    "reconnects), and every new TCP connection from one site's processes to the other "
    "site's addresses goes through the delay (connections made before the placement "
    "and kept, like the mirroring agents' links to each other, are not). The bench's "
    "clients are in their own "
    "site (not delayed): a user of site a signs in on fe1a, one of site b on fe1b. "
    "Sign-in: a new client each time (its TCP connection, REGISTER, 401, REGISTER with "
    "digest, 200; the binding committed on the principal and its mirror). IM: MESSAGE "
    "to its 200 (the recipient answers at once). Write: a contact-list PUT (with its "
    "digest challenge) until 200/201. UDP (the servers' OPTIONS pings) is not delayed.",
    ""]


if __name__ == "__main__":
    main()
