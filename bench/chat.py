"""Persistent Chat benchmark: fan-out of room posts to 100 connected members, the
log-shipping lag under that load, against PostgreSQL alone and a bare TCP fan-out
(SPEC PC-1, PC-2, PC-3).

Starts (`trimaran up`, loopback addresses 127.0.51.x) two data centers with a Standard
Edition Front End pool each (fe1 in dc1, fe2 in dc2, each the other's backup), a witness
site, a chat pool of six servers (pc1..pc4 active in dc1, pc5 and pc6 idle in dc2), its
store (principal + synchronous mirror + witness in dc1) and the log-shipped copy in dc2.
100 users (m000..m049 homed on fe1, m050..m099 on fe2; each signs in to its home Front
End first) sign in, connect to the chat pool and are members of one open room.

1. Fan-out: 10 of the members post to the room, each waiting for the acknowledgement
   (the store's commit on the principal and its synchronous mirror) before its next
   post, paced so that all of them together offer R posts/s, for a fixed time per
   rate, at increasing rates; after each rate the bench waits (bounded) for the
   deliveries, and stops raising the rate once they no longer all arrive in time.
   Every member records each room message it receives: none may be missing,
   duplicated or out of order. The send time is in the body.
2. The log-shipping lag (`trimaran.chat.shipping.measure_lag`, the function behind
   `trimaran chat status`) every 0.5 s during each rate.
3. Baselines in the same process and at the same rates: the same posting pattern
   straight into PostgreSQL (`ChatStore.post` on the pool's mirrored DSN: a
   transaction per post, no SIP, no delivery; run before the fan-out, on the idle
   deployment), and a bare asyncio TCP fan-out (one sender, 99 receivers on loopback
   sockets; run before the deployment starts).

    ./run bench chat                 # about 4 minutes on 2 cores
    ./run bench chat --quick         # 2 rates of 5 s, under 1.5 minutes; saves nothing
                                     # unless --output is given

Results: `bench/results/chat.md`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))
from kit import BenchDeployment, BenchError, int_list, quantile, why, workspace
from machine import machine_lines
from registrar import host_busy_seconds, table

from trimaran.admin import access
from trimaran.chat.model import Membership, Message, Role
from trimaran.chat.shipping import Lag, measure_lag
from trimaran.chat.store import ChatStore, ChatStoreError
from trimaran.client.chat import ChatError, ChatMember
from trimaran.client.ua import UAConfig, UserAgent
from trimaran.cms.chatdoc import ChatMode
from trimaran.deploy.chatdb import chat_dsn
from trimaran.deploy.database import chat_databases, one_dsn, pool_store
from trimaran.deploy.rundir import RunDir
from trimaran.net.transport import Address, TransportError
from trimaran.sip import digest
from trimaran.sip.transaction import TransactionError
from trimaran.store.model import Credentials, User
from trimaran.topology.loader import load_topology

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "chat.md"

DOMAIN = "chat.bench"
NET = "127.0.51"
FRONT_ENDS = {"fe1": f"{NET}.1", "fe2": f"{NET}.2"}
FE_SERVERS = {"fe1": "fe1a", "fe2": "fe2a"}
WITNESS = f"{NET}.9"
ACTIVE = ("pc1", "pc2", "pc3", "pc4")          # dc1
IDLE = ("pc5", "pc6")                          # dc2
CHAT = {name: f"{NET}.{21 + i}" for i, name in enumerate((*ACTIVE, *IDLE))}
PRINCIPAL, MIRROR, SHIPPED = f"{NET}.31", f"{NET}.32", f"{NET}.41"
AGENT_HOST = f"{NET}.100"                      # the members' UserAgents
TCP_HOST = f"{NET}.200"                        # the bare TCP fan-out
SIP_PORT = 5060
POOL, CATEGORY, ROOM, BASELINE_ROOM = "pchat", "bench", "lobby", "baseline"

MEMBERS = 100
POSTERS = 10
# posts/s offered, all posters together: each post is 99 deliveries (20 posts/s: ~2,000
# deliveries/s, about what 2 cores carry), and 10 posters with one post outstanding each
# are bound by the acknowledgement time; a rate whose deliveries do not all arrive ends
# the climb
RATES = (2, 10, 20, 50, 100)
QUICK_RATES = (2, 20)
SECONDS = 20.0                                 # posting time per rate
BASELINE_SECONDS = 10.0                        # the PostgreSQL baseline, per rate
DRAIN = 25.0                                   # at most, after posting, for deliveries
STALL = 6.0                                    # ... ending earlier once none came this long
LAG_INTERVAL = 0.5
KEEPALIVE = 15.0                               # a member's UPDATE inside its connection
RETRY_FOR = 10.0                               # a post unanswered is sent again this long
WARMUP_POSTS = 3
TCP_SECONDS = 3.0
QUIET_LIMIT = 25.0          # % of one core used by the rest of the machine ...
QUIET_STEP_WAIT = 10.0      # ... waited for, at most, before one step
CLK_TCK = os.sysconf("SC_CLK_TCK")

TOPOLOGY = f"""name: bench-chat
sip_domain: {DOMAIN}
sites: [{{name: dc1}}, {{name: dc2}}, {{name: w}}]
pools:
  - {{name: fe1, site: dc1, role: frontend, edition: standard, backup_pool: fe2,
     servers: [{{name: fe1a, address: {FRONT_ENDS['fe1']}}}]}}
  - {{name: fe2, site: dc2, role: frontend, edition: standard, backup_pool: fe1,
     servers: [{{name: fe2a, address: {FRONT_ENDS['fe2']}}}]}}
  - {{name: wit, site: w, role: witness,
     servers: [{{name: w1, address: {WITNESS}, admin_port: 8099}}]}}
  - name: {POOL}
    site: dc1
    role: chat
    servers:
""" + "".join(f"      - {{name: {n}, address: {CHAT[n]}}}\n" for n in ACTIVE) + "".join(
    f"      - {{name: {n}, address: {CHAT[n]}, site: dc2}}\n" for n in IDLE) + f"""\
    active_servers: [{', '.join(ACTIVE)}]
    backend:
      principal: {{address: {PRINCIPAL}}}
      mirror: {{address: {MIRROR}}}
      witness: {{server: w1}}
    log_shipping:
      site: dc2
      principal: {{address: {SHIPPED}}}
"""


def aor(name: str) -> str:
    return f"sip:{name}@{DOMAIN}"


def password(name: str) -> str:
    return f"{name}-pw"


def member_names() -> list[str]:
    return [f"m{i:03d}" for i in range(MEMBERS)]


def home_pool(name: str) -> str:
    """m000..m049 on fe1, the others on fe2."""
    return "fe1" if int(name[1:]) < MEMBERS // 2 else "fe2"


# --- CPU, per group of processes ----------------------------------------------------------

def _proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, CPU ticks), one pass over /proc. The ticks include the children
    that ended and were waited for (PostgreSQL's short-lived backends, the CLI runs)."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            rest = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            out[int(entry)] = (int(rest[1]), sum(int(v) for v in rest[11:15]))
    return out


def _tree_seconds(roots: Sequence[int], procs: Mapping[int, tuple[int, int]]) -> float:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    seen, todo, ticks = set(), list(roots), 0
    while todo:
        pid = todo.pop()
        if pid in seen or pid not in procs:
            continue
        seen.add(pid)
        ticks += procs[pid][1]
        todo.extend(children.get(pid, []))
    return ticks / CLK_TCK


# --- the deployment ----------------------------------------------------------------------

class Deployment(BenchDeployment):
    """The deployment under test, run with the `trimaran` CLI in `work/run`."""

    def up(self) -> None:
        """`trimaran up`, the users in their home pools' stores, the category and rooms."""
        self.work.mkdir(parents=True, exist_ok=True)
        topology = self.work / "topology.yaml"
        topology.write_text(TOPOLOGY)
        self.started = True
        self.cli("up", str(topology), "--dir", str(self.rundir), "--timeout", "120",
                 timeout=300)
        access.use_rundir(RunDir(self.rundir))   # admin calls signed with its key
        asyncio.run(self._add_users())
        self.cli("chat", "category", "add", CATEGORY)
        # the baseline's room: managed and posted to by nobody connected (nothing to deliver)
        for room, manager in ((ROOM, "m000"), (BASELINE_ROOM, "base-admin")):
            self.cli("chat", "room", "add", room, "--category", CATEGORY, "--kind", "open",
                     "--manager", aor(manager))

    async def _add_users(self) -> None:
        """What `trimaran user add AOR --pool P` does, for every member in one process
        (a CLI run per user would take a second each)."""
        run = RunDir(self.rundir)
        topology = load_topology(run.topology)
        for pool in FRONT_ENDS:
            store = pool_store(run, topology, pool)
            await store.open()
            try:
                for name in (n for n in member_names() if home_pool(n) == pool):
                    creds = Credentials(aor(name), name, DOMAIN,
                                        digest.ha1(name, DOMAIN, password(name), "MD5"),
                                        digest.ha1(name, DOMAIN, password(name), "SHA-256"))
                    await store.users.add(User(aor(name), pool), creds, now=time.time())
            finally:
                await store.close()

    def store_dsn(self) -> str:
        """The chat servers' DSN in mode normal: principal and mirror, read-write."""
        run = RunDir(self.rundir)
        return chat_dsn(load_topology(run.topology), POOL, ChatMode.NORMAL)

    def lag_dsns(self) -> tuple[list[str], str]:
        """(the pair's DSNs, the log-shipped copy's DSN)."""
        dbs = chat_databases(RunDir(self.rundir).load_state(), POOL)
        if dbs.shipped is None:
            raise BenchError(f"{POOL} has no log-shipped copy in the run directory")
        return [one_dsn(d) for d in dbs.pair], one_dsn(dbs.shipped)

    def process_groups(self) -> dict[str, list[int]]:
        """'fe', 'chat', 'db' (PostgreSQL and the mirroring agents), 'other servers'
        -> root pids."""
        groups: dict[str, list[int]] = {"fe": [], "chat": [], "db": [], "other servers": []}
        with contextlib.suppress(OSError, ValueError, KeyError):
            state = RunDir(self.rundir).load_state()
            for name, server in state.servers.items():
                if server.pid is None:
                    continue
                group = ("fe" if name in FE_SERVERS.values() else
                         "chat" if name in CHAT else "other servers")
                groups[group].append(server.pid)
            for name, db in state.databases.items():
                if db.agent_pid:
                    groups["db"].append(db.agent_pid)
                with contextlib.suppress(OSError, ValueError, IndexError):
                    first = (self.rundir / "db" / name / "postmaster.pid").read_text()
                    groups["db"].append(int(first.split()[0]))
        return groups

    def warnings(self, per_server: int = 8) -> list[str]:
        """The warnings and errors of the Front Ends and chat servers (their JSON-lines
        logs), at most `per_server` of each, with how many there were."""
        out = []
        for server in (*FE_SERVERS.values(), *CHAT):
            found = []
            with contextlib.suppress(OSError):
                for line in (self.rundir / "logs" / f"{server}.log").read_text(
                        errors="replace").splitlines():
                    with contextlib.suppress(ValueError):
                        entry = json.loads(line)
                        if isinstance(entry, dict) and entry.get("level") in (
                                "warning", "error", "critical"):
                            found.append(entry)
            for entry in found[:per_server]:
                at = time.strftime("%H:%M:%S", time.localtime(float(entry.get("ts", 0.0))))
                out.append(f"{at} {server} {entry.get('level')} {entry.get('logger')}: "
                           f"{str(entry.get('msg')).splitlines()[0][:200]}")
            if len(found) > per_server:
                out.append(f"         {server}: {len(found) - per_server} more")
        return out

    def chat_status(self) -> dict[str, Any] | None:
        """`trimaran chat status --json` (None when it fails)."""
        done = self.cli("chat", "status", "--json", check=False, timeout=60)
        with contextlib.suppress(ValueError):
            value = json.loads(done.stdout)
            if isinstance(value, dict):
                return value
        return None

    def down(self) -> None:
        """`trimaran down`, then SIGKILL whatever server is left."""
        if not self.started:
            return
        pids = [p for group in self.process_groups().values() for p in group]
        with contextlib.suppress(subprocess.TimeoutExpired, BenchError):
            self.cli("down", timeout=120, check=False)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        self.started = False


@dataclass(frozen=True)
class Cpu:
    """Who used the CPUs during a step, in % of one core."""

    fe: float
    chat: float
    db: float
    bench: float
    others: float


@dataclass
class Meter:
    """Starts measuring at its creation; `read` ends it."""

    deployment: Deployment | None
    started: float = field(default_factory=time.monotonic)
    host: float = field(default_factory=host_busy_seconds)
    start: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.start = self._groups()

    def _groups(self) -> dict[str, float]:
        procs = _proc_table()
        roots = self.deployment.process_groups() if self.deployment is not None else {}
        out = {name: _tree_seconds(pids, procs) for name, pids in roots.items()}
        out["bench"] = _tree_seconds([os.getpid()], procs)
        return out

    def read(self) -> Cpu:
        wall = max(time.monotonic() - self.started, 1e-6)
        host = host_busy_seconds() - self.host
        now = self._groups()
        used = {k: max(0.0, now[k] - self.start.get(k, now[k])) for k in now}
        others = max(0.0, host - sum(used.values()))
        def share(key: str) -> float:
            return 100.0 * used.get(key, 0.0) / wall
        return Cpu(share("fe"), share("chat"), share("db"), share("bench"),
                   100.0 * others / wall)


async def wait_quiet(deployment: Deployment, budget: list[float]) -> float:
    """Wait (at most `QUIET_STEP_WAIT` s, `budget[0]` s in all) for the rest of the
    machine to use under `QUIET_LIMIT` % of a core; the others' last load."""
    started = time.monotonic()
    deadline = started + min(QUIET_STEP_WAIT, max(0.0, budget[0]))
    while True:
        meter = Meter(deployment)
        await asyncio.sleep(0.5)
        others = meter.read().others
        if others < QUIET_LIMIT or time.monotonic() >= deadline:
            budget[0] -= time.monotonic() - started
            return others


# --- the members ---------------------------------------------------------------------------

@dataclass
class Post:
    """A post the pool acknowledged."""

    step: str
    author: str
    id: str
    seq: int
    sent: float                 # wall clock, also in the body
    acked: float


@dataclass
class Inbox:
    """What one member received: (seq, wall-clock arrival, body) in arrival order."""

    name: str
    got: list[tuple[int, float, str]] = field(default_factory=list)


class Members:
    """100 members signed in, connected and listening."""

    def __init__(self) -> None:
        self.members: dict[str, ChatMember] = {}
        self.inboxes: dict[str, Inbox] = {}
        self._listeners: list[asyncio.Task[None]] = []

    async def start(self, concurrency: int = 20) -> None:
        gate = asyncio.Semaphore(concurrency)

        async def one(name: str) -> None:
            async with gate:
                await self._connect(name)
        results = await asyncio.gather(*(one(n) for n in member_names()),
                                       return_exceptions=True)
        failed = [f"{n}: {r}" for n, r in zip(member_names(), results, strict=True)
                  if isinstance(r, BaseException)]
        if failed:
            raise BenchError(f"{len(failed)} member(s) could not connect: {failed[:3]}")

    async def _connect(self, name: str) -> None:
        home = home_pool(name)
        other = next(p for p in FRONT_ENDS if p != home)
        ua = UserAgent(UAConfig(aor=aor(name), password=password(name),
                                servers=(Address("tcp", FRONT_ENDS[home], SIP_PORT),
                                         Address("tcp", FRONT_ENDS[other], SIP_PORT)),
                                local_host=AGENT_HOST))
        await ua.start()
        response = await ua.register()
        if response.status != 200:
            await ua.close()
            raise BenchError(f"{name} could not sign in: {response.status} {response.reason}")
        member = ChatMember(ua, DOMAIN, keepalive=KEEPALIVE, retry_for=RETRY_FOR)
        try:
            await member.connect()
        except ChatError:
            await ua.close()
            raise
        self.members[name] = member
        inbox = self.inboxes[name] = Inbox(name)
        self._listeners.append(asyncio.ensure_future(self._listen(member, inbox)))

    @staticmethod
    async def _listen(member: ChatMember, inbox: Inbox) -> None:
        while True:
            message = await member.received.get()
            if message.room == ROOM:
                inbox.got.append((message.seq, time.time(), message.body))

    def spread(self) -> Counter[str]:
        return Counter(m.server or "?" for m in self.members.values())

    def reconnections(self) -> int:
        return sum(m.reconnections for m in self.members.values())

    def received(self) -> int:
        return sum(len(i.got) for i in self.inboxes.values())

    async def close(self) -> None:
        for task in self._listeners:
            task.cancel()

        async def one(member: ChatMember) -> None:
            with contextlib.suppress(TransportError, TransactionError, OSError, ChatError):
                await member.close()
            with contextlib.suppress(TransportError, OSError):
                await member.ua.close()
        await asyncio.gather(*(one(m) for m in self.members.values()))


def body(step: str, author: str, n: int, sent: float) -> str:
    return f"bench {step} {author} #{n} sent={sent:.6f}"


def sent_of(text: str) -> float | None:
    """The send time stamped in a body."""
    _, _, stamp = text.rpartition("sent=")
    try:
        return float(stamp)
    except ValueError:
        return None


@dataclass
class Pacer:
    """`posters` loops offering `rate` posts/s in all for `seconds`, each waiting for
    its answer before the next (never more than one outstanding per poster: a post
    due while the previous one is unanswered goes as soon as the answer comes; nothing
    is sent after the window)."""

    rate: float
    posters: int
    seconds: float
    acked: list[tuple[float, float]] = field(default_factory=list)    # (sent, answered)
    failures: Counter[str] = field(default_factory=Counter)

    async def run(self, post: Callable[[int, int, float], Awaitable[None]],
                  ) -> tuple[float, float]:
        """Run `post(i, n, sent)` per send; (start, end) in wall-clock time: the
        window's start, and when the last answer came (the window's end at least)."""
        start_mono, start = time.monotonic() + 0.2, time.time() + 0.2
        end_mono = start_mono + self.seconds

        async def loop(i: int) -> None:
            n = 0
            while True:
                due = start_mono + (n * self.posters + i) / self.rate
                if due >= end_mono or time.monotonic() >= end_mono:
                    return
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                sent = time.time()
                try:
                    await post(i, n, sent)
                    self.acked.append((sent, time.time()))
                except (ChatError, ChatStoreError) as exc:
                    self.failures[_why(exc)] += 1
                n += 1
        await asyncio.gather(*(loop(i) for i in range(self.posters)))
        return start, max(time.time(), start + self.seconds)


def _why(exc: Exception) -> str:
    if isinstance(exc, ChatError):
        return f"{exc.status} {exc.reason}"[:60]
    return type(exc).__name__


# --- results ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class LagSummary:
    samples: int
    errors: int
    bytes_p50: float | None
    bytes_max: float | None
    seconds_p50: float | None
    seconds_max: float | None


def summarize_lag(samples: Sequence[Lag], start: float, end: float) -> LagSummary:
    mine = [s for s in samples if start <= s.measured_at <= end]
    good = [s for s in mine if s.error is None and s.bytes is not None]
    sizes = [float(s.bytes) for s in good if s.bytes is not None]
    ages = [s.seconds for s in good if s.seconds is not None]
    return LagSummary(len(mine), len(mine) - len(good), quantile(sizes, 0.5),
                      max(sizes, default=None), quantile(ages, 0.5), max(ages, default=None))


@dataclass(frozen=True)
class FanoutStep:
    """One offered rate through Trimaran."""

    label: str                  # in the posts' ids
    rate: int
    seconds: float
    posts: int                  # acknowledged
    failures: Mapping[str, int]
    acked_per_s: float
    ack_ms: tuple[float | None, float | None]
    expected: int               # deliveries: each acknowledged post to the 99 others
    delivered: int              # of those, received by the end of the drain
    delivered_per_s: float | None
    missing: int                # expected, not received by the end of the drain
    missing_at_end: int         # ... nor by the end of the bench
    duplicates: int
    out_of_order: int
    unacked_delivered: int      # deliveries of posts whose answer did not come
    delivery_ms: tuple[float | None, float | None]
    drain: float                # seconds after posting until the last delivery
    reconnections: int
    lag: LagSummary
    cpu: Cpu
    window: tuple[float, float]


@dataclass(frozen=True)
class BaselineStep:
    rate: int
    seconds: float
    posts: int
    failures: Mapping[str, int]
    per_s: float
    ms: tuple[float | None, float | None]
    cpu: Cpu


@dataclass(frozen=True)
class TcpResult:
    mode: str
    deliveries: int
    seconds: float

    @property
    def per_s(self) -> float:
        return self.deliveries / self.seconds


@dataclass
class Results:
    spread: Counter[str] = field(default_factory=Counter)
    fanout: list[FanoutStep] = field(default_factory=list)
    baseline: list[BaselineStep] = field(default_factory=list)
    tcp: list[TcpResult] = field(default_factory=list)
    status: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    log_lines: list[str] = field(default_factory=list)


def ack_ms(acked: Sequence[tuple[float, float]]) -> tuple[float | None, float | None]:
    waits = [1000.0 * (done - sent) for sent, done in acked]
    return quantile(waits, 0.5), quantile(waits, 0.99)


@dataclass
class Check:
    """What the members received of some posts."""

    delivered: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    latencies: list[float] = field(default_factory=list)     # s, post -> delivery
    last: float | None = None                                 # the last arrival
    missing: dict[str, int] = field(default_factory=dict)     # member -> posts missing
    twice: dict[str, list[int]] = field(default_factory=dict)  # member -> seqs received again

    @property
    def missed(self) -> int:
        return sum(self.missing.values())


def check_deliveries(posts: Sequence[Post], inboxes: Mapping[str, Inbox]) -> Check:
    """Every inbox against `posts`: each member must have every post but its own's,
    once, in increasing order."""
    seqs = {p.seq for p in posts}
    check = Check()
    for name, inbox in inboxes.items():
        seen: set[int] = set()
        previous = 0
        for seq, arrived, text in inbox.got:
            if seq not in seqs:
                continue
            if seq in seen:
                check.duplicates += 1
                check.twice.setdefault(name, []).append(seq)
                continue
            seen.add(seq)
            if seq < previous:
                check.out_of_order += 1
            previous = max(previous, seq)
            check.delivered += 1
            stamp = sent_of(text)
            if stamp is not None:
                check.latencies.append(arrived - stamp)
            check.last = arrived if check.last is None else max(check.last, arrived)
        missing = sum(1 for p in posts if p.author != aor(name) and p.seq not in seen)
        if missing:
            check.missing[name] = missing
    return check


def chat_servers_status() -> dict[str, dict[str, Any]]:
    """Each chat server's /status ({} for one that does not answer)."""
    out: dict[str, dict[str, Any]] = {}
    for name, host in CHAT.items():
        out[name] = {}
        url = f"http://{host}:8080/status"
        request = urllib.request.Request(url, headers=access.headers_for("GET", url))
        with contextlib.suppress(OSError, ValueError), urllib.request.urlopen(
                request, timeout=2) as answer:
            value = json.loads(answer.read())
            if isinstance(value, dict):
                out[name] = value
    return out


def shortfall(check: Check, members: Members, statuses: Mapping[str, Mapping[str, Any]],
              ) -> str:
    """Where the missing deliveries are: per chat server, the members short and the
    deliveries missing, with what the server's /status says."""
    by_server: dict[str, list[int]] = {}
    for name, count in check.missing.items():
        server = members.members[name].server or "?"
        by_server.setdefault(server, []).append(count)
    parts = []
    for server in sorted(set(by_server) | set(ACTIVE)):
        counts = by_server.get(server, [])
        status = statuses.get(server, {})
        sent = (status.get("deliveries") or {}).get("sent")
        failed = (status.get("deliveries") or {}).get("failed")
        fanout = (status.get("fanout") or {}).get("messages_delivered")
        parts.append(f"{server}: {len(counts)} member(s) short of {sum(counts)} deliveries"
                     f" (server: {status.get('connections')} connections, {sent} sent,"
                     f" {failed} failed, {fanout} messages taken from the store)")
    return "; ".join(parts)


# --- the steps -------------------------------------------------------------------------------

@dataclass
class Lab:
    deployment: Deployment
    members: Members
    posts: list[Post] = field(default_factory=list)
    lags: list[Lag] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    steps: int = 0

    def posters(self) -> list[ChatMember]:
        """Every tenth member: spread over both Front Ends and the chat servers."""
        names = member_names()[::MEMBERS // POSTERS]
        return [self.members.members[n] for n in names]

    async def sample_lag(self, pair: list[str], shipped: str) -> None:
        while True:
            started = time.monotonic()
            self.lags.append(await measure_lag(pair, shipped, timeout=1.0))
            await asyncio.sleep(max(0.0, LAG_INTERVAL - (time.monotonic() - started)))

    async def warm_up(self) -> None:
        """A few posts every member must receive before the measured steps."""
        posters = self.posters()
        for n in range(WARMUP_POSTS):
            member = posters[n % len(posters)]
            sent = time.time()
            text = body("warm-up", member.ua.config.aor, n, sent)
            seq = await member.post(ROOM, text, f"warm-up/{n}/{sent:.6f}")
            self.posts.append(Post("warm-up", member.ua.config.aor, "", seq, sent, time.time()))
        warm = [p for p in self.posts if p.step == "warm-up"]
        expected = len(warm) * (MEMBERS - 1)
        deadline = time.monotonic() + 20.0
        while time.monotonic() < deadline and self.members.received() < expected:
            await asyncio.sleep(0.2)
        check = check_deliveries(warm, self.members.inboxes)
        if check.delivered >= expected:
            return
        raise BenchError(f"warm-up: {check.delivered} of {expected} deliveries within 20 s "
                         f"({check.missed} missing): the fan-out does not work")

    async def fanout(self, rate: int, seconds: float) -> FanoutStep:
        self.steps += 1
        step = f"s{self.steps}r{rate}"          # in the ids: each step posts new messages
        posters = self.posters()
        mine: list[Post] = []

        async def post(i: int, n: int, sent: float) -> None:
            member = posters[i]
            who = member.ua.config.aor
            message_id = f"{step}/{who}/{n}"
            seq = await member.post(ROOM, body(step, who, n, sent), message_id)
            mine.append(Post(step, who, message_id, seq, sent, time.time()))

        reconnections = self.members.reconnections()
        before = self.members.received()
        meter = Meter(self.deployment)
        pacer = Pacer(rate, len(posters), seconds)
        start, end = await pacer.run(post)
        expected = len(mine) * (MEMBERS - 1)
        waited_from, last_count, last_change = time.monotonic(), -1, time.monotonic()
        while time.monotonic() - waited_from < DRAIN:
            delivered = self.members.received() - before     # (cheap: stragglers too)
            if delivered >= expected:
                break
            if delivered != last_count:
                last_count, last_change = delivered, time.monotonic()
            elif time.monotonic() - last_change > STALL:
                break
            await asyncio.sleep(0.25)
        cpu = meter.read()
        self.posts += mine
        check = check_deliveries(mine, self.members.inboxes)
        if check.twice:
            self.notes.append(f"{rate} posts/s: received twice: " + ", ".join(
                f"{name} (on {self.members.members[name].server}) seq "
                + " ".join(map(str, seqs[:5])) + (" ..." if len(seqs) > 5 else "")
                for name, seqs in sorted(check.twice.items())[:10])
                + (f" and {len(check.twice) - 10} other member(s)"
                   if len(check.twice) > 10 else ""))
        if check.missing:
            statuses = await asyncio.to_thread(chat_servers_status)
            self.notes.append(f"{rate} posts/s, {DRAIN:g} s after posting: "
                              + shortfall(check, self.members, statuses))
        first = min((p.sent for p in mine), default=start)
        last = check.last
        span = (last - first) if last is not None else 0.0
        acked_seqs = {p.seq for p in self.posts}
        low = min((p.seq for p in mine), default=0)
        high = max((p.seq for p in mine), default=0)
        unacked = sum(1 for inbox in self.members.inboxes.values()
                      for seq, _, _ in inbox.got if low <= seq <= high
                      and seq not in acked_seqs)
        return FanoutStep(
            step, rate, seconds, len(mine), dict(pacer.failures), len(mine) / (end - start),
            ack_ms(pacer.acked), expected, check.delivered,
            check.delivered / span if span > 0 else None, check.missed, check.missed,
            check.duplicates, check.out_of_order, unacked,
            (ms_of(quantile(check.latencies, 0.5)), ms_of(quantile(check.latencies, 0.99))),
            max(0.0, (last or end) - end), self.members.reconnections() - reconnections,
            summarize_lag(self.lags, start, time.time()), cpu, (start, time.time()))

    async def settle(self, bound: float) -> None:
        """Wait (at most `bound` s, less once none came for `STALL` s) until every
        acknowledged post reached every other member."""
        posts = [p for p in self.posts if p.step != "warm-up"]
        expected = len(posts) * (MEMBERS - 1)
        started, last_count, last_change = time.monotonic(), -1, time.monotonic()
        while time.monotonic() - started < bound:
            delivered = check_deliveries(posts, self.members.inboxes).delivered
            if delivered >= expected:
                return
            if delivered != last_count:
                last_count, last_change = delivered, time.monotonic()
            elif time.monotonic() - last_change > STALL:
                break
            await asyncio.sleep(1.0)
        check = check_deliveries(posts, self.members.inboxes)
        if not check.missing:
            return
        statuses = await asyncio.to_thread(chat_servers_status)
        self.notes.append(f"at the end ({time.monotonic() - started:.0f} s later, none"
                          f" delivered in the last {STALL:g} s): "
                          + shortfall(check, self.members, statuses))

    def recount(self, step: FanoutStep) -> FanoutStep:
        """`missing_at_end`: what is missing once the whole bench is over."""
        mine = [p for p in self.posts if p.step == step.label]
        return replace(step, missing_at_end=check_deliveries(mine, self.members.inboxes).missed)


def ms_of(seconds: float | None) -> float | None:
    return None if seconds is None else 1000.0 * seconds


async def baseline(dsn: str, rate: int, seconds: float, deployment: Deployment) -> BaselineStep:
    """The posting pattern straight into PostgreSQL: `ChatStore.post`, one transaction
    each, on the mirrored DSN, by authors nobody connected has (so no chat server has
    anyone to deliver them to)."""
    label = f"b{rate}-{time.time():.3f}"       # in the ids: every run posts new messages
    store = ChatStore(dsn, connect_timeout=5.0, retry_for=5.0, max_size=POSTERS)
    await store.open()
    try:
        async def post(i: int, n: int, sent: float) -> None:
            who = aor(f"base{i:02d}")
            await store.post(Message(BASELINE_ROOM, 0, who, body(label, who, n, sent),
                                     sent, f"{label}/{who}/{n}"))
        meter = Meter(deployment)
        pacer = Pacer(rate, POSTERS, seconds)
        start, end = await pacer.run(post)
        cpu = meter.read()
    finally:
        await store.close()
    return BaselineStep(rate, seconds, len(pacer.acked), dict(pacer.failures),
                        len(pacer.acked) / (end - start), ack_ms(pacer.acked), cpu)


async def tcp_fanout(acknowledged: bool, seconds: float = TCP_SECONDS) -> TcpResult:
    """One sender, 99 receivers on loopback sockets, flat out: each 'post' is one line
    to every receiver. `acknowledged`: each receiver answers every line and the sender
    has one line outstanding per receiver (like a chat server's outbox per
    connection); else the sender streams (awaiting only the sockets' buffers)."""
    received = 0
    line = (body("tcp", aor("m000"), 0, time.time()) + "\n").encode()

    async def receive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal received
        with contextlib.suppress(ConnectionError):
            while await reader.readline():
                received += 1
                if acknowledged:
                    writer.write(b"200\n")
        writer.close()

    server = await asyncio.start_server(receive, TCP_HOST, 0)
    port = server.sockets[0].getsockname()[1]
    links = [await asyncio.open_connection(TCP_HOST, port) for _ in range(MEMBERS - 1)]
    started = time.monotonic()
    end = started + seconds
    try:
        if acknowledged:
            async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                while time.monotonic() < end:
                    writer.write(line)
                    await writer.drain()
                    await reader.readline()
            await asyncio.gather(*(one(r, w) for r, w in links))
        else:
            while time.monotonic() < end:
                for _, writer in links:
                    writer.write(line)
                await asyncio.gather(*(w.drain() for _, w in links))
        count, elapsed = received, time.monotonic() - started
    finally:
        for _, writer in links:
            writer.close()
        server.close()
        with contextlib.suppress(ConnectionError):
            await server.wait_closed()
    return TcpResult("one line, answered, one outstanding per receiver" if acknowledged
                     else "one line, streamed", count, elapsed)


# --- the run -----------------------------------------------------------------------------------

def print_row(header: Sequence[str], row: Sequence[str]) -> None:
    print("   " + " | ".join(f"{h}: {v}" for h, v in zip(header, row, strict=True)),
          flush=True)


async def measure(deployment: Deployment, args: argparse.Namespace, results: Results) -> None:
    members = Members()
    sampler: asyncio.Task[None] | None = None
    try:
        started = time.monotonic()
        await members.start()
        results.spread = members.spread()
        print(f"{len(members.members)} members signed in and connected in "
              f"{time.monotonic() - started:.1f} s; spread: "
              + ", ".join(f"{s} {n}" for s, n in sorted(results.spread.items())), flush=True)
        wrong = set(results.spread) - set(ACTIVE)
        if wrong or len(results.spread) != len(ACTIVE):
            results.notes.append(f"members are not spread over the {len(ACTIVE)} active "
                                 f"servers: {dict(results.spread)}")
            print(f"   WARNING: {results.notes[-1]}", flush=True)
        # every member of the room (what `chat member add` does, in one connection)
        dsn = deployment.store_dsn()
        store = ChatStore(dsn, connect_timeout=5.0, retry_for=5.0)
        await store.open()
        try:
            for name in member_names()[1:]:          # m000 manages it already
                await store.add_member(Membership(ROOM, aor(name), Role.MEMBER))
        finally:
            await store.close()
        await asyncio.sleep(2.5)           # the servers' cached memberships expire (2 s)
        lab = Lab(deployment, members)
        sampler = asyncio.ensure_future(lab.sample_lag(*deployment.lag_dsns()))
        await lab.warm_up()
        print(f"warm-up: {WARMUP_POSTS} posts reached all {MEMBERS - 1} other members",
              flush=True)
        budget = [args.quiet_wait]
        print(f"== PostgreSQL baseline, {args.baseline_seconds:g} s per rate", flush=True)
        for rate in args.rates:
            await wait_quiet(deployment, budget)
            base = await baseline(dsn, rate, args.baseline_seconds, deployment)
            results.baseline.append(base)
            print_row(BASELINE_HEADER, baseline_row(base))
        for rate in args.rates:
            await wait_quiet(deployment, budget)
            print(f"== fan-out: {rate} posts/s offered for {args.seconds:g} s", flush=True)
            step = await lab.fanout(rate, args.seconds)
            results.fanout.append(step)
            print_row(FANOUT_HEADER, fanout_row(step))
            if step.missing:
                skipped = [r for r in args.rates if r > rate]
                results.notes.append(
                    f"at {rate} posts/s the deliveries did not all arrive within {DRAIN:g} s"
                    f" of the end of posting: the pool's fan-out is saturated"
                    + (f"; the higher rates ({', '.join(map(str, skipped))} posts/s) were"
                       " not run (they would only queue more)" if skipped else ""))
                print(f"   {results.notes[-1]}", flush=True)
                break
        # the deliveries still on their way: do they all come?
        await lab.settle(args.final_wait)
        results.fanout = [lab.recount(s) for s in results.fanout]
        results.notes += lab.notes
        results.status = await asyncio.to_thread(deployment.chat_status)
        results.log_lines = deployment.warnings()
    finally:
        if sampler is not None:
            sampler.cancel()
        await members.close()


async def run(deployment: Deployment, args: argparse.Namespace) -> Results:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, task.cancel)
    results = Results()
    print("== bare TCP fan-out (1 sender, 99 receivers)", flush=True)
    for acknowledged in (False, True):
        results.tcp.append(await tcp_fanout(acknowledged))
        print(f"   {results.tcp[-1].mode}: {results.tcp[-1].per_s:.0f} deliveries/s",
              flush=True)
    started = time.monotonic()
    await asyncio.to_thread(deployment.up)
    print(f"deployment up in {time.monotonic() - started:.1f} s ({deployment.rundir})",
          flush=True)
    await measure(deployment, args, results)
    return results


# --- the report ----------------------------------------------------------------------------

def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def pct(value: float) -> str:
    return f"{value:.0f}"


def ratio(a: float | None, b: float | None, digits: int = 2) -> str:
    return "-" if a is None or b is None or b <= 0 else f"{a / b:.{digits}f}"


FANOUT_HEADER = ("offered posts/s", "posts acked", "acked/s", "failed", "ack p50/p99 ms",
                 "deliveries / expected", "deliveries/s", "missing (at end)", "dup",
                 "out of order", "post->delivery p50/p99 ms", "drain s", "reconn",
                 "FE CPU %", "chat CPU %", "DB CPU %", "bench CPU %", "others CPU %")


def fanout_row(s: FanoutStep) -> list[str]:
    return [str(s.rate), str(s.posts), f"{s.acked_per_s:.1f}", why(s.failures),
            f"{ms(s.ack_ms[0])} / {ms(s.ack_ms[1])}", f"{s.delivered} / {s.expected}",
            "-" if s.delivered_per_s is None else f"{s.delivered_per_s:.0f}",
            f"{s.missing} ({s.missing_at_end})", str(s.duplicates), str(s.out_of_order),
            f"{ms(s.delivery_ms[0])} / {ms(s.delivery_ms[1])}", f"{s.drain:.1f}",
            str(s.reconnections), pct(s.cpu.fe), pct(s.cpu.chat), pct(s.cpu.db),
            pct(s.cpu.bench), pct(s.cpu.others)]


LAG_HEADER = ("offered posts/s", "samples", "failed samples", "bytes p50", "bytes max",
              "seconds p50", "seconds max")


def number(value: object, fmt: str) -> str:
    return format(value, fmt) if isinstance(value, int | float) else "-"


def lag_row(s: FanoutStep) -> list[str]:
    lag = s.lag
    return [str(s.rate), str(lag.samples), str(lag.errors), number(lag.bytes_p50, ".0f"),
            number(lag.bytes_max, ".0f"), number(lag.seconds_p50, ".3f"),
            number(lag.seconds_max, ".3f")]


BASELINE_HEADER = ("offered posts/s", "posts", "posts/s", "failed", "p50 ms", "p99 ms",
                   "DB CPU %", "bench CPU %")


def baseline_row(b: BaselineStep) -> list[str]:
    return [str(b.rate), str(b.posts), f"{b.per_s:.1f}", why(b.failures), ms(b.ms[0]),
            ms(b.ms[1]), pct(b.cpu.db), pct(b.cpu.bench)]


RATIO_HEADER = ("offered posts/s", "acked/s Trimaran / PostgreSQL", "throughput ratio",
                "ack p99 ms Trimaran / PostgreSQL", "p99 ratio", "p50 ratio")


def ratio_rows(results: Results) -> list[list[str]]:
    rows = []
    for t in results.fanout:
        b = next((b for b in results.baseline if b.rate == t.rate), None)
        if b is None:
            continue
        rows.append([str(t.rate), f"{t.acked_per_s:.1f} / {b.per_s:.1f}",
                     ratio(t.acked_per_s, b.per_s), f"{ms(t.ack_ms[1])} / {ms(b.ms[1])}",
                     ratio(t.ack_ms[1], b.ms[1], 1), ratio(t.ack_ms[0], b.ms[0], 1)])
    return rows


def tcp_rows(results: Results) -> list[list[str]]:
    best = max((s.delivered_per_s or 0.0 for s in results.fanout), default=None)
    return [[t.mode, f"{t.seconds:.1f}", str(t.deliveries), f"{t.per_s:.0f}",
             ratio(best, t.per_s, 3)] for t in results.tcp]


def spread_rows(results: Results) -> list[list[str]]:
    return [[server, "dc1, active" if server in ACTIVE else "dc2, idle",
             str(results.spread.get(server, 0))] for server in (*ACTIVE, *IDLE)]


def status_lines(status: dict[str, Any] | None) -> list[str]:
    """`chat status --json` at the end, briefly."""
    if status is None:
        return ["`trimaran chat status --json` did not answer with JSON."]
    lines = []
    for pool in status.get("pools", []):
        if not isinstance(pool, dict):
            continue
        store = pool.get("store") if isinstance(pool.get("store"), dict) else {}
        lag = store.get("lag") if store else None
        lag = lag if lag is not None else pool.get("shipping")
        servers = [f"{r.get('server')} {r.get('health')}" for r in pool.get("servers", [])
                   if isinstance(r, dict)]
        lines.append(f"- {pool.get('pool')}: mode {pool.get('mode')}, active "
                     f"{', '.join(map(str, pool.get('active', [])))}; servers: "
                     f"{', '.join(servers)}; shipping lag: "
                     + (f"{lag.get('bytes')} bytes, {number(lag.get('seconds'), '.3f')} s"
                        if isinstance(lag, dict) else "not shown"))
    return lines or ["`trimaran chat status --json` showed no pool."]


def run_lines() -> list[str]:
    commit = "unknown"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                capture_output=True, text=True, check=False,
                                timeout=10).stdout.strip() or "unknown"
    pg = "unknown"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
        if found:
            pg = subprocess.run([str(found[-1]), "--version"], capture_output=True, text=True,
                                check=False, timeout=10).stdout.strip()
    return [*machine_lines(), f"- kernel: {platform.system()} {platform.release()}",
            f"- Trimaran commit: {commit} (with the working tree's changes, if any)",
            f"- PostgreSQL: {pg}"]


def method_lines(args: argparse.Namespace) -> list[str]:
    return [
        "## Method", "",
        f"`trimaran up` on loopback {NET}.x: a Standard Edition Front End pool in each data"
        f" center (fe1a {FRONT_ENDS['fe1']} in dc1, fe2a {FRONT_ENDS['fe2']} in dc2, each"
        " the other's backup), a witness site, the chat pool `pchat`: pc1..pc4 active in"
        " dc1, pc5 and pc6 idle in dc2; its store: principal + synchronous mirror + witness"
        " in dc1, a log-shipped copy (asynchronous hot standby) in dc2. Every process"
        f" shares this machine's {os.cpu_count()} CPU(s), the bench's own included.", "",
        f"{MEMBERS} users (m000..m049 homed on fe1, m050..m099 on fe2) are created in their"
        " home pools' stores (what `trimaran user add` does, in one process), sign in over"
        " TCP to their home Front End first, connect to the chat pool (`ChatMember`,"
        f" keepalive {KEEPALIVE:g} s) and are members of the open room `{ROOM}` (made with"
        " `trimaran chat room add`; the memberships written as `chat member add` writes"
        f" them). {WARMUP_POSTS} warm-up posts must reach every other member first.", "",
        f"* **Fan-out**: {POSTERS} members (every tenth: both Front Ends, every server) post"
        f" for {args.seconds:g} s per offered rate ({', '.join(map(str, args.rates))} posts/s"
        f" in all, each poster paced at rate/{POSTERS} and never more than one post"
        " outstanding: a post waits for the acknowledgement of the previous one, which the"
        " pool gives once the store committed it on the principal and its synchronous"
        " mirror); nothing is sent after the posting time. *acked/s* is the posts"
        " acknowledged divided by the time from the start to the last answer. Every"
        f" acknowledged post must reach the {MEMBERS - 1} other members: each member's"
        " received messages are checked for missing, duplicated and out-of-order numbers."
        " After the posting time the bench waits for the deliveries (at most"
        f" {DRAIN:g} s, less once none came for {STALL:g} s); when some are still missing"
        " then, the fan-out is saturated and no higher rate is run. *deliveries/s* is the"
        " deliveries of the step's posts divided by the time from its first post to its"
        " last delivery; *missing (at end)*: not received by the end of that wait (nor by"
        f" the end of the bench, which waits up to {args.final_wait:g} s more for them)."
        " *post->delivery* is the arrival time in the member's client minus the send"
        " time stamped in the body; *ack* is post to acknowledgement (200). *reconn*"
        " counts members that reconnected (a connection closed by its server). CPU is"
        " utime+stime (with ended children) over the step in % of one core: both Front"
        " End servers, the six"
        " chat servers, PostgreSQL (all four instances) and the mirroring agents, the"
        " bench's process (100 clients, the posters, the lag sampler), and *others* (the"
        " rest of the machine's busy time, /proc/stat; other servers"
        " of the deployment — the witness — included).",
        f"* **Shipping lag**: `measure_lag` (the pair's and the copy's DSNs) every"
        f" {LAG_INTERVAL:g} s from the start of each rate to the end of its deliveries: the"
        " WAL bytes the copy has not replayed and the age of its last replayed commit.",
        f"* **PostgreSQL baseline**, in the same process, every rate before the fan-out"
        f" (the deployment idle, the members connected): {POSTERS} posters"
        f" with the same pacing for {args.baseline_seconds:g} s, each post"
        " `ChatStore.post` (one transaction: lock the room, check the id, insert, bump the"
        " counter, notify) on the chat servers' DSN (principal + synchronous mirror) into"
        f" the room `{BASELINE_ROOM}`, by authors nobody connected has: no SIP, no delivery.",
        f"* **Bare TCP fan-out**, before the deployment starts: one asyncio sender, {MEMBERS - 1}"
        f" receivers on loopback sockets ({TCP_HOST}), {TCP_SECONDS:g} s flat out, lines of"
        " a chat body's size; streamed, and with an answer per line and one line"
        " outstanding per receiver (as a chat server sends down a connection to a member"
        " that keeps up; one that falls behind gets its queued messages in one batch).",
        f"* Before each step the bench waits (up to {QUIET_STEP_WAIT:g} s,"
        f" {args.quiet_wait:g} s in all) for the others to use under {QUIET_LIMIT:g} %"
        " of a core.",
    ]


def report(results: Results, args: argparse.Namespace, minutes: float) -> str:
    out = ["# Persistent Chat benchmark: fan-out to 100 members, log-shipping lag, "
           "vs PostgreSQL and bare TCP", "",
           "Generated by `bench/chat.py` (`./run bench chat`); rewritten by every full run.",
           "", *run_lines(), f"- the bench ran {minutes:.1f} minutes", "",
           *method_lines(args), "",
           "## Members per chat server", "",
           table(("server", "where", "members connected"), spread_rows(results)), "",
           "## Fan-out: posts through the pool, each to the 99 other members", "",
           table(FANOUT_HEADER, [fanout_row(s) for s in results.fanout]), "",
           "## Log-shipping lag during each rate", "",
           table(LAG_HEADER, [lag_row(s) for s in results.fanout]), "",
           "## Baseline: the same posting pattern straight into PostgreSQL", "",
           table(BASELINE_HEADER, [baseline_row(b) for b in results.baseline]), "",
           table(RATIO_HEADER, ratio_rows(results)), "",
           "## Baseline: bare asyncio TCP fan-out (1 sender, 99 receivers)", "",
           table(("mode", "seconds", "deliveries", "deliveries/s",
                  "Trimaran's best deliveries/s ratio"), tcp_rows(results)), "",
           "## `trimaran chat status --json` at the end", "", *status_lines(results.status),
           ""]
    if results.notes:
        out += ["## Notes", "", *(f"- {n}" for n in results.notes), ""]
    if results.log_lines:
        out += ["## Warnings and errors the Front Ends and chat servers logged", "", "```",
                *results.log_lines, "```", ""]
    return "\n".join(out)


# --- main --------------------------------------------------------------------------------

def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"smaller run: rates {','.join(map(str, QUICK_RATES))} for 5 s "
                             "each; saves nothing unless --output is given")
    parser.add_argument("--rates", type=int_list, default=None,
                        help=f"offered posts/s, all posters together (default {RATES})")
    parser.add_argument("--seconds", type=float, default=None,
                        help=f"posting time per rate ({SECONDS:g}, --quick 5)")
    parser.add_argument("--baseline-seconds", type=float, default=None,
                        help=f"PostgreSQL baseline time per rate ({BASELINE_SECONDS:g}, "
                             "--quick 5)")
    parser.add_argument("--final-wait", type=float, default=None,
                        help="seconds, at most, to wait at the end for the deliveries still "
                             "on their way (default 45, --quick 20)")
    parser.add_argument("--output", type=Path, default=None,
                        help=f"markdown report (default {RESULTS.relative_to(ROOT)})")
    parser.add_argument("--quiet-wait", type=float, default=None,
                        help="seconds, in all, to wait before steps for the rest of the "
                             f"machine to use under {QUIET_LIMIT:g} %% of a core (default "
                             "40, --quick 10)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work directory (run directory, servers' logs)")
    args = parser.parse_args(argv)
    if args.rates is None:
        args.rates = QUICK_RATES if args.quick else RATES
    if args.seconds is None:
        args.seconds = 5.0 if args.quick else SECONDS
    if args.baseline_seconds is None:
        args.baseline_seconds = 5.0 if args.quick else BASELINE_SECONDS
    if args.final_wait is None:
        args.final_wait = 20.0 if args.quick else 45.0
    if args.quiet_wait is None:
        args.quiet_wait = 10.0 if args.quick else 40.0
    if args.output is None and not args.quick:
        args.output = RESULTS
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    with workspace("chat", args.keep) as work:
        deployment = Deployment(work)
        try:
            results = asyncio.run(run(deployment, args))
        finally:
            deployment.down()
    text = report(results, args, (time.monotonic() - started) / 60)
    print("\n" + text)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
        print(f"\nwritten to {args.output}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as error:
        print(f"bench failed: {error}", file=sys.stderr)
        sys.exit(1)
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; every process the bench started was stopped", file=sys.stderr)
        sys.exit(130)
