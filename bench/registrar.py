"""Registrar benchmark: REGISTER and MESSAGE with digest auth, Trimaran vs Kamailio.

SIPp drives REGISTER with digest authentication (and, separately, authenticated
MESSAGEs relayed to registered users) at increasing rates against one Trimaran server
process, then against Kamailio (Debian package, `bench/kamailio/kamailio.cfg`: a minimal
registrar + proxy with digest auth) in the same run. For each server and workload it
reports the highest rate with < 0.1 % failures that was also sustained, the server CPU
used at that rate, and the Trimaran/Kamailio ratios; the tables are printed and written
to `bench/results/registrar.md`.

    .venv/bin/python bench/registrar.py            # full run (about 5-10 minutes)
    ./run bench registrar --quick                  # smoke: 2 small steps, nothing saved

One "call" is one SIPp scenario: REGISTER -> 401, REGISTER with credentials -> 200 (two
REGISTER transactions), or MESSAGE -> 407, MESSAGE with credentials relayed to the
recipient's SIPp -> 200 (two MESSAGE transactions at the server, one downstream).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from kit import workspace
from machine import machine_lines
from sipp_runner import (
    SCENARIOS,
    BackgroundSipp,
    end_process,
    free_port,
    percentile,
    run_sipp,
    sipp_version,
)

ROOT = Path(__file__).resolve().parents[1]
KAMAILIO_CFG = ROOT / "bench" / "kamailio" / "kamailio.cfg"
RESULTS = ROOT / "bench" / "results" / "registrar.md"

DOMAIN = "bench.test"
PASSWORD = "bench-secret-pw"        # every user's password, on both servers
SENDER = "sender"                   # the user sending the MESSAGEs
CLIENT_HOST = "127.0.0.1"           # SIPp (UAC and the MESSAGE receiver)
TRIMARAN_HOST = "127.0.7.1"
KAMAILIO_HOST = "127.0.7.2"

RATES = (100, 200, 300, 400, 600, 800, 1200, 1600, 2400, 3200, 4800, 6400, 9600, 12800)
MAX_CALLS = 20_000                  # per step
FAILURE_LIMIT = 0.1                 # percent of the calls of a step
SUSTAINED = 0.95                    # achieved/target below this: the rate was not kept
WARMUP_RATE = 200                   # registering every user before the measurements
REREGISTER_AFTER = 200.0            # s; the bindings' Expires is 300
RETRY_PAUSE = 3.0                   # s before a failed step is tried again
SIPP_BUFFER = 4 * 1024 * 1024
KAMAILIO_SHM_MB = 512               # the package default (64) is too small for MESSAGE loads
CLK_TCK = os.sysconf("SC_CLK_TCK")

QUIET_LIMIT = 25.0                  # % of one core used by others before a step
QUIET_STEP_WAIT = 10.0              # s, at most, before one step
WORKLOADS = ("register", "message")


class BenchError(Exception):
    """The bench cannot go on (a server did not start, a warm-up failed)."""


# --- CPU of a process tree ---------------------------------------------------------------

def _stat(pid: int) -> tuple[int, int] | None:
    """(ppid, utime+stime ticks) of `pid`, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = text.rsplit(")", 1)[1].split()
    return int(rest[1]), int(rest[11]) + int(rest[12])


def process_tree(root: int) -> list[int]:
    """`root` and all its live descendants."""
    children: dict[int, list[int]] = {}
    for pid in _pids():
        info = _stat(pid)
        if info is not None:
            children.setdefault(info[0], []).append(pid)
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def tree_cpu_seconds(root: int) -> float:
    """User+system CPU seconds used so far by `root` and its live descendants."""
    ticks = 0
    for pid in process_tree(root):
        info = _stat(pid)
        if info is not None:
            ticks += info[1]
    return ticks / CLK_TCK


def udp_receive_drops() -> int:
    """Datagrams this host dropped for lack of socket receive buffer (/proc/net/snmp)."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines()
                 if line.startswith("Udp:")]
        names, values = lines[0], lines[1]
        return int(values[names.index("RcvbufErrors")])
    return 0


def host_busy_seconds() -> float:
    """CPU seconds the whole host has been busy, all CPUs together (/proc/stat)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        return (sum(fields) - fields[3] - fields[4]) / CLK_TCK    # all but idle and iowait
    return 0.0


def wait_for_quiet(max_wait: float, limit: float = QUIET_LIMIT) -> float:
    """Wait (up to `max_wait` s) until the rest of the host uses under `limit` % of one core
    over half a second: other work on the machine (test suites...) skews the numbers.
    Return the last load seen, in % of one core."""
    deadline = time.monotonic() + max_wait
    while True:
        before, started = host_busy_seconds(), time.monotonic()
        time.sleep(0.5)
        load = 100.0 * (host_busy_seconds() - before) / (time.monotonic() - started)
        if load < limit or time.monotonic() >= deadline:
            return load


def _pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _serves_from(pid: int, rundir: Path) -> bool:
    """True when `pid` is a `trimaran serve` of the deployment in `rundir`."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"serve" in args and str(rundir).encode() in args


def pid_alive(pid: int) -> bool:
    """True when `pid` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# --- the servers -------------------------------------------------------------------------

def wait_sip_ready(host: str, port: int, timeout: float) -> bool:
    """Send OPTIONS until the server answers anything (UDP); False after `timeout`."""
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((CLIENT_HOST, 0))
        sock.settimeout(0.3)
        local = sock.getsockname()[1]
        seq = 0
        while time.monotonic() < deadline:
            seq += 1
            request = (
                f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {CLIENT_HOST}:{local};branch=z9hG4bK-ready{seq}\r\n"
                f"From: <sip:probe@{DOMAIN}>;tag=ready\r\nTo: <sip:{host}:{port}>\r\n"
                f"Call-ID: ready-{os.getpid()}-{seq}\r\nCSeq: {seq} OPTIONS\r\n"
                "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
            sock.sendto(request.encode(), (host, port))
            try:
                data = sock.recv(65535)
            except OSError:
                continue
            if data.startswith(b"SIP/2.0 "):
                return True
    return False


class Server(ABC):
    """A SIP server under test, started and stopped by the bench."""

    label: str
    slug: str                # for file names
    host: str
    port: int

    @abstractmethod
    def start(self) -> None:
        """Start the server with every bench user, ready for SIP on (host, port)."""

    @abstractmethod
    def stop(self) -> None:
        """Stop the server and every process it started (idempotent)."""

    @abstractmethod
    def root_pid(self) -> int:
        """The process whose tree is the server."""

    @abstractmethod
    def log_tail(self, lines: int = 20) -> str:
        """The end of the server's log."""

    def cpu_seconds(self) -> float:
        """CPU seconds the server's processes used so far."""
        return tree_cpu_seconds(self.root_pid())

    def process_count(self) -> int:
        """How many processes the server runs."""
        return len(process_tree(self.root_pid()))


class TrimaranServer(Server):
    """One Trimaran Front End (Standard Edition) run with `trimaran up` / `down`."""

    def __init__(self, workdir: Path, users: Sequence[str]) -> None:
        self.label = "Trimaran"
        self.slug = "trimaran"
        self.host = TRIMARAN_HOST
        self.port = free_port(TRIMARAN_HOST)
        self.workdir = workdir
        self.rundir = workdir / "run"
        self.users = users
        self.pid: int | None = None
        # `up` remembers its run directory in ~/.trimaran-last-dir: keep the bench's out of
        # the real home directory.
        self.env = {**os.environ, "HOME": str(workdir)}

    def topology(self) -> str:
        """One site, one Standard Edition Front End pool of one server; MD5 offered first
        because SIPp only implements MD5 and only answers the first challenge."""
        admin = free_port(TRIMARAN_HOST)
        return (
            "name: bench-registrar\n"
            f"sip_domain: {DOMAIN}\n"
            "settings:\n"
            "  digest_algorithms: [MD5, SHA-256]\n"
            "sites:\n"
            "  - name: bench\n"
            "    kind: central\n"
            "pools:\n"
            "  - name: bench1\n"
            "    site: bench\n"
            "    role: frontend\n"
            "    edition: standard\n"
            "    servers:\n"
            "      - name: bench1\n"
            f"        address: {TRIMARAN_HOST}\n"
            f"        sip_port: {self.port}\n"
            f"        admin_port: {admin}\n")

    async def _create_users(self) -> None:
        from trimaran.sip import digest
        from trimaran.store.model import Credentials, User
        from trimaran.store.sqlite import SqliteStore

        path = self.rundir / "data" / "bench1" / "store.sqlite"
        path.parent.mkdir(parents=True, exist_ok=True)
        store = SqliteStore(path, pool="bench1")
        await store.open()
        try:
            now = time.time()
            for name in self.users:
                aor = f"sip:{name}@{DOMAIN}"
                creds = Credentials(aor, name, DOMAIN,
                                    digest.ha1(name, DOMAIN, PASSWORD, "MD5"),
                                    digest.ha1(name, DOMAIN, PASSWORD, "SHA-256"))
                await store.users.add(User(aor, "bench1"), creds, now=now)
        finally:
            await store.close()

    def _trimaran(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "trimaran", *args], env=self.env,
                              cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                              check=False)

    def start(self) -> None:
        """Create the users in the pool's store, then `trimaran up`."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        topology = self.workdir / "topology.yaml"
        topology.write_text(self.topology())
        asyncio.run(self._create_users())
        done = self._trimaran("up", str(topology), "--dir", str(self.rundir),
                              "--timeout", "30", timeout=60)
        self._read_pid()
        if done.returncode != 0:
            raise BenchError(f"trimaran up failed (rc {done.returncode}):\n"
                             f"{done.stdout}\n{done.stderr}")
        if self.pid is None:
            raise BenchError("trimaran up recorded no pid in state.json")
        if not wait_sip_ready(self.host, self.port, 10.0):
            raise BenchError(f"Trimaran does not answer SIP on {self.host}:{self.port}")

    def _read_pid(self) -> None:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            state = json.loads((self.rundir / "state.json").read_text())
            self.pid = int(state["servers"]["bench1"]["pid"])

    def root_pid(self) -> int:
        assert self.pid is not None
        return self.pid

    def stop(self) -> None:
        """`trimaran down`; SIGKILL the server's process group if it is still there."""
        if (self.rundir / "state.json").exists():
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._trimaran("down", "--dir", str(self.rundir), timeout=30)
        # whatever is left of ours, even if `up` was interrupted before recording a pid
        left = {self.pid} if self.pid is not None else set()
        left |= {pid for pid in _pids() if _serves_from(pid, self.rundir.resolve())}
        for pid in left:
            if pid_alive(pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
        self.pid = None

    def log_tail(self, lines: int = 20) -> str:
        """The end of the server's log."""
        path = self.rundir / "logs" / "bench1.log"
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class KamailioServer(Server):
    """Kamailio with `bench/kamailio/kamailio.cfg` in the foreground, `children` UDP workers."""

    def __init__(self, workdir: Path, children: int) -> None:
        self.children = children
        self.label = f"Kamailio ({children} worker{'s' if children > 1 else ''})"
        self.slug = f"kamailio{children}"
        self.host = KAMAILIO_HOST
        self.port = free_port(KAMAILIO_HOST)
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        """The kamailio command line."""
        binary = shutil.which("kamailio") or "/usr/sbin/kamailio"
        return [binary, "-f", str(KAMAILIO_CFG), "-DD", "-E", "-w", str(self.workdir),
                "-Y", str(self.workdir), "-l", f"udp:{self.host}:{self.port}",
                "-n", str(self.children), "-m", str(KAMAILIO_SHM_MB),
                "-A", f'BENCH_PASSWORD="{PASSWORD}"']

    def start(self) -> None:
        """Start kamailio and wait until it answers SIP."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        with (self.workdir / "kamailio.log").open("wb") as log:
            self.proc = subprocess.Popen(self.command(), cwd=self.workdir,
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         start_new_session=True)
        if not wait_sip_ready(self.host, self.port, 15.0) or self.proc.poll() is not None:
            raise BenchError(f"kamailio did not start:\n{self.log_tail()}")

    def root_pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is not None:
            end_process(self.proc)

    def log_tail(self, lines: int = 20) -> str:
        """The end of kamailio's log."""
        path = self.workdir / "kamailio.log"
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def kamailio_version() -> str:
    """The first line of `kamailio -v`."""
    binary = shutil.which("kamailio") or "/usr/sbin/kamailio"
    try:
        out = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False,
                             timeout=10)
    except OSError:
        return "kamailio (not installed)"
    lines = (out.stdout or out.stderr).splitlines()
    return lines[0].strip().removeprefix("version: ") if lines else "kamailio (unknown version)"


# --- measuring ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Step:
    """One SIPp load at one target rate against one server."""

    server: str
    workload: str
    target: int
    calls: int
    successful: int
    achieved: float          # calls completed per second, steady state
    server_cpu: float        # % of one core, over the step
    sipp_cpu: float          # % of one core, SIPp sender (+ MESSAGE receiver)
    retransmissions: int
    udp_drops: int           # datagrams dropped by the host (full receive buffers)
    others_cpu: float        # % of one core used by everything else on the host
    p50_ms: float | None
    p99_ms: float | None
    timed_out: bool
    attempt: int = 1         # 2: the step was run again after failing

    @property
    def failures(self) -> float:
        """Calls that did not succeed (failed or never finished), % of the calls."""
        return 100.0 * (self.calls - self.successful) / self.calls if self.calls else 100.0

    @property
    def sustained(self) -> bool:
        """SIPp kept (nearly) the target rate."""
        return self.achieved >= SUSTAINED * self.target

    @property
    def ok(self) -> bool:
        """Under the failure limit, at the target rate, within the time allowed."""
        return self.failures < FAILURE_LIMIT and self.sustained and not self.timed_out

    def why_not(self) -> str:
        """Why this step ended the series."""
        if self.failures >= FAILURE_LIMIT:
            why = f"{self.failures:.2f} % failures at {self.target}/s"
        elif not self.sustained:
            why = f"only {self.achieved:.0f}/s achieved of {self.target}/s"
        else:
            why = f"SIPp out of time at {self.target}/s"
        busy = (self.server_cpu + self.sipp_cpu + self.others_cpu) / (os.cpu_count() or 1)
        others = f", others {self.others_cpu:.0f} %" if self.others_cpu >= 10 else ""
        return f"{why}; server CPU {self.server_cpu:.0f} %, machine {busy:.0f} % busy{others}"

    @property
    def calls_per_cpu_second(self) -> float | None:
        """Successful calls per server CPU-second."""
        return self.achieved / (self.server_cpu / 100.0) if self.server_cpu > 0 else None


@dataclass
class Context:
    """What every step needs."""

    users_csv: Path
    users: int
    receiver_port: int
    step_seconds: float
    workdir: Path
    quiet_budget: float = 0.0    # seconds left to wait for a quiet machine, whole run
    receiver_pid: int | None = None


def users_csv(path: Path, names: Sequence[str]) -> Path:
    """SIPp injection file: user;domain;[authentication ...] per line."""
    lines = ["SEQUENTIAL"] + [
        f"{n};{DOMAIN};[authentication username={n} password={PASSWORD}]" for n in names]
    path.write_text("\n".join(lines) + "\n")
    return path


def sipp_args(server: Server, workload: str, ctx: Context, rate: int, calls: int,
              budget: float) -> list[str]:
    """SIPp arguments of one load of `workload`."""
    common = [f"{server.host}:{server.port}", "-inf", str(ctx.users_csv), "-i", CLIENT_HOST,
              "-p", str(free_port(CLIENT_HOST)), "-t", "u1", "-m", str(calls),
              "-r", str(rate), "-buff_size", str(SIPP_BUFFER),
              "-timeout", f"{budget:.0f}s", "-timeout_error"]
    if workload == "register":
        return ["-sf", str(SCENARIOS / "register_digest_uac.xml"), *common,
                "-key", "contact_ip", CLIENT_HOST, "-key", "contact_port",
                str(ctx.receiver_port)]
    return ["-sf", str(SCENARIOS / "message_auth_uac.xml"), *common,
            "-key", "sender", SENDER, "-au", SENDER, "-ap", PASSWORD]


def run_step(server: Server, workload: str, rate: int, ctx: Context, *,
             calls: int | None = None, tag: str = "", attempt: int = 1) -> Step:
    """Drive `workload` at `rate` against `server` and measure it."""
    if calls is None:
        calls = max(1, min(MAX_CALLS, round(rate * ctx.step_seconds)))
    budget = calls / rate + 8.0
    if attempt > 1:
        tag += f"-try{attempt}"
    workdir = ctx.workdir / "sipp" / f"{server.slug}-{workload}-{rate}{tag}"
    if ctx.quiet_budget > 0:
        waited = time.monotonic()
        wait_for_quiet(min(QUIET_STEP_WAIT, ctx.quiet_budget))
        ctx.quiet_budget -= time.monotonic() - waited
    receiver_before = tree_cpu_seconds(ctx.receiver_pid) if ctx.receiver_pid else 0.0
    server_before = server.cpu_seconds()
    drops_before = udp_receive_drops()
    host_before = host_busy_seconds()
    started = time.monotonic()
    result = run_sipp(sipp_args(server, workload, ctx, rate, calls, budget), workdir,
                      timeout=budget + 10.0, trace_rtt=True)
    wall = max(time.monotonic() - started, 1e-6)
    server_cpu = server.cpu_seconds() - server_before
    receiver_cpu = (tree_cpu_seconds(ctx.receiver_pid) - receiver_before
                    if ctx.receiver_pid else 0.0)
    drops = udp_receive_drops() - drops_before
    sipp_cpu = result.cpu_seconds + receiver_cpu
    others = host_busy_seconds() - host_before - server_cpu - sipp_cpu
    successful = min(calls, result.counter("SuccessfulCall(C)"))
    # Steady state: calls completed per second from a warm-up of up to 1 s to the end of
    # sending; neither SIPp's start nor the final drain (latency) counts.
    sending_ms = 1000.0 * calls / rate
    steady = result.completion_rate(min(1000.0, sending_ms / 4), sending_ms)
    achieved = steady if steady is not None \
        else successful / max(result.elapsed_seconds, 1e-6)
    return Step(server=server.label, workload=workload, target=rate, calls=calls,
                successful=successful, achieved=achieved,
                server_cpu=100.0 * server_cpu / wall,
                sipp_cpu=100.0 * sipp_cpu / wall,
                retransmissions=result.counter("Retransmissions(C)"), udp_drops=drops,
                others_cpu=max(0.0, 100.0 * others / wall),
                p50_ms=percentile(result.rtts_ms, 0.50), p99_ms=percentile(result.rtts_ms, 0.99),
                timed_out=result.timed_out or result.returncode not in (0, 1),
                attempt=attempt)


def register_everyone(server: Server, ctx: Context) -> None:
    """Register every user once (contacts at the MESSAGE receiver); all must succeed."""
    rate = min(WARMUP_RATE, ctx.users)
    step = run_step(server, "register", rate, ctx, calls=ctx.users, tag="-warmup")
    if step.successful != ctx.users:
        raise BenchError(
            f"{server.label}: registering the {ctx.users} users at {rate}/s failed "
            f"({ctx.users - step.successful} not registered); see "
            f"{ctx.workdir / 'sipp'} and the server's log")


def format_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


STEP_HEADER = ("server", "workload", "target/s", "achieved/s", "fail %", "retrans",
               "UDP drops", "server CPU %", "SIPp CPU %", "others CPU %", "p50 ms", "p99 ms")


def step_row(step: Step) -> list[str]:
    target = f"{step.target}" + (" (again)" if step.attempt > 1 else "")
    return [step.server, step.workload, target, f"{step.achieved:.0f}",
            f"{step.failures:.2f}", str(step.retransmissions), str(step.udp_drops),
            f"{step.server_cpu:.0f}",
            f"{step.sipp_cpu:.0f}", f"{step.others_cpu:.0f}", format_ms(step.p50_ms),
            format_ms(step.p99_ms)]


def run_series(server: Server, workload: str, rates: Sequence[int], ctx: Context) -> list[Step]:
    """Step through `rates` until a step fails twice in a row; print each step.

    A failed step is tried once more after a pause: one hiccup (the machine is shared
    with SIPp) should not end the series."""
    steps: list[Step] = []
    for rate in rates:
        step = run_step(server, workload, rate, ctx)
        steps.append(step)
        print("  " + " | ".join(step_row(step)), flush=True)
        if not step.ok:
            time.sleep(RETRY_PAUSE)
            step = run_step(server, workload, rate, ctx, attempt=2)
            steps.append(step)
            print("  " + " | ".join(step_row(step)), flush=True)
            if not step.ok:
                break
        time.sleep(1.0)
    return steps


def measure_server(server: Server, workloads: Sequence[str], rates: Sequence[int],
                   ctx: Context) -> dict[str, list[Step]]:
    """Start `server`, run each workload's series against it, stop it."""
    series: dict[str, list[Step]] = {}
    receiver = BackgroundSipp(
        ["-sf", str(SCENARIOS / "message_uas.xml"), "-i", CLIENT_HOST,
         "-p", str(ctx.receiver_port), "-t", "u1", "-buff_size", str(SIPP_BUFFER)],
        ctx.workdir / "sipp" / f"{server.slug}-receiver")
    started = time.monotonic()
    with receiver:
        ctx.receiver_pid = receiver.proc.pid if receiver.proc else None
        try:
            print(f"\n== {server.label} on {server.host}:{server.port}", flush=True)
            server.start()
            print(f"   {server.process_count()} process(es), root pid {server.root_pid()}",
                  flush=True)
            registered_at = -REREGISTER_AFTER
            for workload in workloads:
                if time.monotonic() - registered_at >= REREGISTER_AFTER:
                    register_everyone(server, ctx)
                    registered_at = time.monotonic()
                    time.sleep(1.0)
                print(f"  -- {workload}: " + " | ".join(STEP_HEADER), flush=True)
                series[workload] = run_series(server, workload, rates, ctx)
                time.sleep(2.0)
        finally:
            server.stop()
            ctx.receiver_pid = None
            print(f"   {server.label} done in {time.monotonic() - started:.0f} s", flush=True)
    return series


# --- reporting ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Best:
    """A server's result for one workload."""

    server: str
    step: Step | None        # highest step that passed
    limit: str               # what ended the series


def best_of(steps: list[Step], max_rate: int) -> Best:
    passed = [s for s in steps if s.ok]
    failed = [s for s in steps if not s.ok]
    limit = steps[-1].why_not() if failed and not steps[-1].ok \
        else f"max rate {max_rate}/s reached"
    server = steps[0].server if steps else "?"
    return Best(server, passed[-1] if passed else None, limit)


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A markdown table (also readable as plain text)."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(header)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
            for r in rows]
    return "\n".join([line, rule, *body])


def summary_rows(bests: list[Best]) -> list[list[str]]:
    rows = []
    for best in bests:
        step = best.step
        if step is None:
            rows.append([best.server, "none", "-", "-", "-", "-", best.limit])
            continue
        per_cpu = step.calls_per_cpu_second
        rows.append([best.server, str(step.target), f"{step.achieved:.0f}",
                     f"{step.server_cpu:.0f}", f"{per_cpu:.0f}" if per_cpu else "-",
                     format_ms(step.p99_ms), best.limit])
    return rows


SUMMARY_HEADER = ("server", "max rate/s (<0.1 % fail)", "achieved/s", "CPU % (1 core)",
                  "calls per CPU-s", "p99 ms", "limited by")


def ratio_rows(trimaran: Best, others: list[Best], series: dict[str, list[Step]]) -> list[
        list[str]]:
    """Trimaran/Kamailio: max rate, calls per CPU-second at each one's max, and the CPU of
    both at the highest rate both sustained (the same load, so directly comparable)."""
    rows = []
    for other in others:
        t, k = trimaran.step, other.step
        rate_ratio = f"{t.target / k.target:.3f}" if t and k else "-"
        te, ke = (t.calls_per_cpu_second if t else None), (k.calls_per_cpu_second if k else None)
        eff_ratio = f"{te / ke:.3f}" if te and ke else "-"
        same = ["-", "-", "-", "-"]
        t_ok = {s.target: s for s in series.get(trimaran.server, []) if s.ok}
        k_ok = {s.target: s for s in series.get(other.server, []) if s.ok}
        shared = sorted(set(t_ok) & set(k_ok))
        if shared:
            ts, ks = t_ok[shared[-1]], k_ok[shared[-1]]
            same = [str(shared[-1]), f"{ts.server_cpu:.0f} / {ks.server_cpu:.0f}",
                    f"{ks.server_cpu / ts.server_cpu:.3f}" if ts.server_cpu > 0 else "-",
                    f"{ts.server_cpu / ks.server_cpu:.1f} x" if ks.server_cpu > 0 else "-"]
        rows.append([f"Trimaran / {other.server}", rate_ratio, eff_ratio, *same])
    return rows


RATIO_HEADER = ("ratio", "max rate", "calls per CPU-s, each at its max",
                "same load: rate/s", "CPU % Trimaran / Kamailio", "calls per CPU-s",
                "Trimaran CPU per call")


def run_lines() -> list[str]:
    """The machine (bench/machine.py) plus what else the numbers depend on."""
    commit = "unknown"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                capture_output=True, text=True, check=False,
                                timeout=10).stdout.strip() or "unknown"
    return [*machine_lines(), f"- kernel: {platform.system()} {platform.release()}",
            f"- Trimaran commit: {commit}", f"- Kamailio: {kamailio_version()}",
            f"- SIPp: {sipp_version()}"]


def method_lines(args: argparse.Namespace, rates: Sequence[int]) -> list[str]:
    """How the numbers were obtained, for the report."""
    return [
        "## Method", "",
        "SIPp (UDP, one socket) drives each workload at target rates"
        f" {', '.join(map(str, rates))} calls/s, {args.step_seconds:g} s per step (at most"
        f" {MAX_CALLS} calls), over {args.users} users, against one Trimaran server process"
        f" (`trimaran up`, {TRIMARAN_HOST}) and then Kamailio ({KAMAILIO_HOST},"
        f" `bench/kamailio/kamailio.cfg`, `-m {KAMAILIO_SHM_MB}`) with"
        f" {' and '.join(args.kamailio_children.split(','))} UDP worker(s) (1 is the match"
        " for Trimaran's one process), in the same run.", "",
        "* **register**: REGISTER -> 401 -> REGISTER with MD5 digest (qop=auth) -> 200."
        " Every user is registered once before the steps, so the steps refresh bindings.",
        "* **message**: MESSAGE from one authenticated sender -> 407 -> MESSAGE with"
        " digest -> relayed statefully to the recipient's registered contact (a SIPp UAS)"
        " -> 200 relayed back.", "",
        f"A step fails with >= {FAILURE_LIMIT} % of its calls not successful (failed,"
        " or not finished within the step's time budget), or when the achieved rate is"
        f" below {SUSTAINED:.0%} of the target. *achieved* is the steady-state rate: calls"
        " completed per second from 1 s into the step to the end of sending (SIPp's"
        " per-call trace), so that neither start-up nor the drain at the end counts;"
        " a server that keeps up completes calls as fast as they are offered."
        f" A failed step is run once more after {RETRY_PAUSE:g} s; the series ends when it"
        " fails again. *max rate* is the highest target rate that passed.", "",
        "*server CPU* is utime+stime of all the server's processes (/proc) over the step,"
        " in % of one core; *SIPp CPU* is the sender's plus the MESSAGE receiver's;"
        " *others CPU* is what the rest of the machine used meanwhile (other work, the"
        f" kernel); before each step the bench waits (up to {QUIET_STEP_WAIT:g} s, and"
        " `--quiet-wait` s in all) until the rest of the machine uses under"
        f" {QUIET_LIMIT:g} % of a core. *UDP drops* counts"
        " datagrams the host dropped for full socket buffers (either side). *calls per"
        " CPU-s* is achieved calls/s divided by the server's CPU. Response times are SIPp's"
        " per call (first request to final 200: both round trips), in whole milliseconds"
        " with SIPp's coarse clock.", "",
        "Equal work: every user has the same password on both servers (Kamailio has no"
        " user database: any user name with that password passes; Trimaran looks the user"
        " up in its store); Trimaran offers MD5 first (SIPp implements only MD5). Both"
        " check the digest user against To (REGISTER) / From (MESSAGE) and nonce counts."
        " Not equal: Trimaran writes each registration durably to SQLite (WAL,"
        " synchronous=FULL) while Kamailio keeps its location table in memory"
        " (usrloc db_mode 0).", "",
        f"SIPp, its MESSAGE receiver and the server share this machine's {os.cpu_count()}"
        " CPU(s). *limited by* names the first step that failed (twice), the server's CPU"
        " then and how busy the machine was ((server + SIPp + others CPU) / all CPUs):"
        " a one-process server near 100 % CPU is its own limit; a machine near"
        " 100 % busy set the maximum instead (a lower bound for that server)."
        " *same load* compares both servers at the highest rate both sustained;"
        " *Trimaran CPU per call* is how many times Kamailio's CPU Trimaran spends per call"
        " there.",
    ]


def report(results: dict[str, dict[str, list[Step]]], workloads: Sequence[str],
           args: argparse.Namespace, rates: Sequence[int], minutes: float) -> str:
    """The whole report as markdown."""
    out = ["# Registrar benchmark: Trimaran vs Kamailio", "",
           "Generated by `bench/registrar.py` (`./run bench registrar`); the tables are"
           " rewritten by every full run.", "",
           *run_lines(), f"- the bench ran {minutes:.1f} minutes", "",
           *method_lines(args, rates), ""]
    for workload in workloads:
        bests = [best_of(per[workload], max(rates)) for per in results.values()
                 if workload in per]
        out += [f"## {workload.upper()}", "", table(SUMMARY_HEADER, summary_rows(bests)), ""]
        trimaran = next((b for b in bests if b.server == "Trimaran"), None)
        others = [b for b in bests if b.server != "Trimaran"]
        if trimaran and others:
            by_server = {name: per[workload] for name, per in results.items()
                         if workload in per}
            out += [table(RATIO_HEADER, ratio_rows(trimaran, others, by_server)), ""]
    out += ["## Every step", ""]
    rows = [step_row(s) for per in results.values() for w in workloads for s in per.get(w, [])]
    out += [table(STEP_HEADER, rows), ""]
    return "\n".join(out)


# --- main --------------------------------------------------------------------------------

def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 2 short steps, 200 users, Kamailio with 1 worker; "
                             "saves nothing unless --output is given")
    parser.add_argument("--max-rate", type=int, default=None,
                        help=f"highest target rate to try (default {RATES[-1]})")
    parser.add_argument("--users", type=int, default=None, help="users (default 2000)")
    parser.add_argument("--step-seconds", type=float, default=None,
                        help="seconds of load per step (default 4)")
    parser.add_argument("--workloads", default=",".join(WORKLOADS),
                        help="comma-separated: register,message")
    parser.add_argument("--servers", default="trimaran,kamailio",
                        help="comma-separated: trimaran,kamailio")
    parser.add_argument("--kamailio-children", default=None,
                        help="Kamailio UDP worker counts to measure (default 1,4)")
    parser.add_argument("--output", type=Path, default=None,
                        help=f"markdown report (default {RESULTS.relative_to(ROOT)})")
    parser.add_argument("--quiet-wait", type=float, default=None,
                        help="seconds, in all, to wait before steps (at most "
                             f"{QUIET_STEP_WAIT:g} s before one) for the rest of the machine "
                             f"to use under {QUIET_LIMIT:g} %% of a core (default 90, "
                             "--quick 10)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work directory (logs, SIPp files)")
    args = parser.parse_args(argv)
    args.users = args.users or (200 if args.quick else 2000)
    args.step_seconds = args.step_seconds or (2.0 if args.quick else 4.0)
    args.kamailio_children = args.kamailio_children or ("1" if args.quick else "1,4")
    if args.quiet_wait is None:
        args.quiet_wait = 10.0 if args.quick else 90.0
    if args.output is None and not args.quick:
        args.output = RESULTS
    return args


def chosen_rates(args: argparse.Namespace) -> list[int]:
    rates = [r for r in RATES if args.max_rate is None or r <= args.max_rate]
    if args.max_rate is not None and (not rates or rates[-1] != args.max_rate):
        rates.append(args.max_rate)
    return rates[:2] if args.quick else rates


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    workloads = [w for w in args.workloads.split(",") if w]
    if unknown := set(workloads) - set(WORKLOADS):
        print(f"unknown workload(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    rates = chosen_rates(args)
    names = [f"u{i:05d}" for i in range(args.users)]
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _terminate)      # even where the shell made SIGINT ignored
    results: dict[str, dict[str, list[Step]]] = {}
    started = time.monotonic()
    with workspace("registrar", args.keep) as work:
        ctx = Context(users_csv(work / "users.csv", names), args.users,
                      free_port(CLIENT_HOST), args.step_seconds, work, args.quiet_wait)
        servers: list[Server] = []
        if "trimaran" in args.servers:
            servers.append(TrimaranServer(work / "trimaran", [*names, SENDER]))
        if "kamailio" in args.servers:
            servers += [KamailioServer(work / f"kamailio-{n}", int(n))
                        for n in args.kamailio_children.split(",") if n]
        print(f"rates {rates}, {args.users} users, {args.step_seconds:g} s per step; "
              f"work directory {work}", flush=True)
        for server in servers:
            try:
                results[server.label] = measure_server(server, workloads, rates, ctx)
            except BenchError as exc:
                raise BenchError(f"{exc}\n--- {server.label} log ---\n{server.log_tail()}") \
                    from exc
    text = report(results, workloads, args, rates, (time.monotonic() - started) / 60)
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
    except KeyboardInterrupt:
        print("interrupted; every process the bench started was stopped", file=sys.stderr)
        sys.exit(130)
