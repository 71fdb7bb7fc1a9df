"""Enterprise Voice benchmark: call setup to and from the PSTN, and how long the first call
after a fault takes, per failure kind (SPEC EV-1, EV-2, EV-3).

Starts (`trimaran up`, loopback addresses 127.0.29.x) one site with a Standard Edition
Front End pool (fe1a), a Mediation pool of two servers (med1a, med1b; next hop fe1) and
two PSTN gateways played by SIPp (`tests/voice/gateway.py`): trunk t1 on gw1, t2 on gw2,
one route for +1 numbers over t1 then t2, one voice policy and one dial plan; the voice
timers are the defaults (fast failover 10 s, OPTIONS probes every 5 s, 2 s timeout).

1. Calls to the PSTN: a SIPp UAC signed in as a user (`scenarios/voice_call_auth_uac.xml`:
   INVITE, 407, INVITE with MD5 digest, 200, ACK, 100 ms, BYE) dials 4255550123, which
   goes Front End -> Mediation server -> gw1 (answering), a fixed number of calls at each
   offered rate. Baseline, in the same run and at the same rates: the same UAC straight
   to one SIPp UAS playing the challenge and the gateway's answer
   (`scenarios/voice_baseline_uas.xml`); the report gives Trimaran / baseline ratios.
2. Calls from the PSTN: a SIPp caller from gw1's address -> med1a -> fe1a -> a signed-in
   user (a trimaran UserAgent in this process answering every call 200 with SDP).
3. Failover: the setup time of one call placed by a trimaran UserAgent right after a
   fault, per failure kind, a few rounds, against the expected and the model's figures.

    ./run bench voice                # about 3.5 minutes on 2 cores
    ./run bench voice --quick        # 2 rates, fewer calls, 1 round; saves nothing
                                     # unless --output is given

Results: `bench/results/voice.md`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))   # tests.voice
from kit import BenchDeployment, BenchError, int_list, quantile, why, workspace
from machine import machine_lines
from registrar import host_busy_seconds, table, tree_cpu_seconds
from sipp_runner import SCENARIOS, BackgroundSipp, free_port, run_sipp, sipp_version

from tests.voice.gateway import GatewayError, GatewayMode, SippCaller, SippGateway
from trimaran.admin import access
from trimaran.client.dialogs import CallFailed
from trimaran.client.ua import UAConfig, UserAgent
from trimaran.deploy.rundir import RunDir
from trimaran.net.transport import Address, TransportError
from trimaran.sip.transaction import TransactionError

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "voice.md"

DOMAIN = "voice.bench"
FE_HOST = "127.0.29.1"
MEDIATION = {"med1a": "127.0.29.11", "med1b": "127.0.29.12"}
GATEWAYS = {"gw1": "127.0.29.51", "gw2": "127.0.29.52"}
UAC_HOST = "127.0.29.100"          # the SIPp UAC of the call-setup load
AGENT_HOST = "127.0.29.101"        # the trimaran UserAgents (alice calls, bob answers)
BASELINE_HOST = "127.0.29.200"     # the SIPp UAS of the baseline
SIP_PORT, ADMIN_PORT = 5060, 8080
CALLER, ALICE, BOB = "caller", "alice", "bob"
NUMBERS = {CALLER: "+14255550100", ALICE: "+14255550101", BOB: "+14255550102"}
DIALLED = "4255550123"             # normalized to +14255550123: nobody's, so the PSTN
PSTN_CALLER = "+12065550199"
FAST_FAILOVER = 10.0               # the defaults, left as they are in the topology
PROBE_INTERVAL, PROBE_TIMEOUT = 5.0, 2.0
MEDIATION_GUARD = 2.0              # a Front End gives a silent Mediation server this long
HOLD_DOWN = 30.0                   # ... and then skips it for this long

RATES = (20, 50, 100, 200)
CALLS = 300                        # per step
INBOUND_RATES = (20, 50, 100)
ROUNDS = 3
HOLD_MS = 100                      # the UAC's pause between ACK and BYE
SIPP_BUFFER = 4 * 1024 * 1024
CALL_TIMEOUT = 30.0                # one failover call
QUIET_LIMIT = 25.0                 # % of one core used by the rest of the machine ...
QUIET_STEP_WAIT = 10.0             # ... waited for, at most, before one load step
CLK_TCK = os.sysconf("SC_CLK_TCK")

SDP = (b"v=0\r\no=- 1 1 IN IP4 127.0.29.101\r\ns=-\r\nc=IN IP4 127.0.29.101\r\nt=0 0\r\n"
       b"m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")

TOPOLOGY = rf"""name: bench-voice
sip_domain: {DOMAIN}
settings:
  digest_algorithms: [MD5, SHA-256]    # SIPp does MD5 only, and answers the first challenge
sites:
  - name: dc1
pools:
  - name: fe1
    site: dc1
    role: frontend
    edition: standard
    servers: [{{name: fe1a, address: {FE_HOST}}}]
  - name: med1
    site: dc1
    role: mediation
    next_hop: fe1
    servers: [{{name: med1a, address: {MEDIATION['med1a']}}},
              {{name: med1b, address: {MEDIATION['med1b']}}}]
voice:
  gateways:
    - {{name: gw1, address: {GATEWAYS['gw1']}, site: dc1}}
    - {{name: gw2, address: {GATEWAYS['gw2']}, site: dc1}}
  trunks:
    - {{name: t1, mediation_pool: med1, gateway: gw1}}
    - {{name: t2, mediation_pool: med1, gateway: gw2}}
  routes:
    - {{name: national, pattern: '^\+1\d{{10}}$', usages: [national], trunks: [t1, t2]}}
  voice_policies:
    - {{name: default, usages: [national]}}
  dial_plans:
    - name: redmond
      rules:
        - {{name: national, pattern: '^1?(\d{{10}})$', translation: '+1$1'}}
  default_dial_plan: redmond
  default_voice_policy: default
"""


# --- the deployment --------------------------------------------------------------------

class Deployment(BenchDeployment):
    """The deployment under test, run with the `trimaran` CLI in `work/run`."""

    def up(self) -> None:
        """`trimaran up`, then the users: the SIPp caller, alice and bob."""
        self.work.mkdir(parents=True, exist_ok=True)
        topology = self.work / "topology.yaml"
        topology.write_text(TOPOLOGY)
        self.started = True
        self.cli("up", str(topology), "--dir", str(self.rundir), "--timeout", "60")
        access.use_rundir(RunDir(self.rundir))   # admin calls signed with its key
        for name, number in NUMBERS.items():
            self.cli("user", "add", f"sip:{name}@{DOMAIN}", "--password", password(name),
                     "--pool", "fe1", "--number", number)

    def pids(self) -> dict[str, int]:
        """Server name -> pid, from the run directory's state.json."""
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            state = json.loads((self.rundir / "state.json").read_text())
            return {name: int(s["pid"]) for name, s in state["servers"].items() if s.get("pid")}
        return {}

    def down(self) -> None:
        """Wake any frozen server, `trimaran down`, then SIGKILL whatever is left."""
        if not self.started:
            return
        pids = self.pids()
        for pid in pids.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGCONT)
        with contextlib.suppress(subprocess.TimeoutExpired, BenchError):
            self.cli("down", timeout=60, check=False)
        for pid in pids.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        self.started = False

    def cpu_seconds(self, names: Sequence[str]) -> float:
        """CPU seconds used so far by the named servers (their process trees)."""
        pids = self.pids()
        return sum(tree_cpu_seconds(pids[n]) for n in names if n in pids)

    def log_entries(self, server: str) -> list[dict[str, object]]:
        """A server's log (one JSON object a line)."""
        entries = []
        with contextlib.suppress(OSError):
            for line in (self.rundir / "logs" / f"{server}.log").read_text(
                    errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    entry = json.loads(line)
                    if isinstance(entry, dict):
                        entries.append(entry)
        return entries


def password(name: str) -> str:
    return f"{name}-pw"


def http_status(host: str, path: str = "/status", timeout: float = 1.0) -> dict[str, object]:
    """A server's admin API answer ({} when it does not answer)."""
    try:
        url = f"http://{host}:{ADMIN_PORT}{path}"
        request = urllib.request.Request(url, headers=access.headers_for("GET", url))
        with urllib.request.urlopen(request, timeout=timeout) as r:
            value = json.loads(r.read())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def gateway_states() -> dict[str, dict[str, str]]:
    """Mediation server -> gateway -> state, as each server's probes see it now."""
    seen: dict[str, dict[str, str]] = {}
    for name, host in MEDIATION.items():
        gateways = http_status(host).get("gateways")
        seen[name] = {str(g["gateway"]): str(g["state"]) for g in gateways
                      if isinstance(g, dict)} if isinstance(gateways, list) else {}
    return seen


def held_down() -> list[str]:
    """The Mediation servers the Front End skips now (failed lately)."""
    voice = http_status(FE_HOST).get("voice")
    names = voice.get("mediation_servers_held_down") if isinstance(voice, dict) else None
    return [str(n) for n in names] if isinstance(names, list) else []


async def wait_until(condition: Callable[[], bool], timeout: float, what: str,
                     interval: float = 0.2) -> float:
    """Poll `condition` (in a thread: it may do HTTP) until it holds; seconds waited."""
    started = time.monotonic()
    while not await asyncio.to_thread(condition):
        if time.monotonic() - started > timeout:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(interval)
    return time.monotonic() - started


def gateways_up() -> bool:
    """Both gateways up on both Mediation servers."""
    states = gateway_states()
    return all(states.get(m, {}).get(g) == "up" for m in MEDIATION for g in GATEWAYS)


# --- SIPp message traces ---------------------------------------------------------------

@dataclass
class TracedCall:
    """A call's last INVITE (the authenticated one, after a 407) and its final answer."""

    cseq: int = 0
    sent: float | None = None
    final: int | None = None
    final_at: float | None = None


def read_trace(path: Path) -> dict[str, TracedCall]:
    """Per Call-ID, from SIPp's `-trace_shortmsg` file (tab-separated: date, time,
    epoch.usec, S|R, Call-ID, `CSeq:<n> <method>`, first line)."""
    calls: dict[str, TracedCall] = {}
    with contextlib.suppress(FileNotFoundError):
        for line in path.read_text(errors="replace").splitlines():
            fields = line.split("\t")
            if len(fields) < 7 or not fields[5].endswith(" INVITE"):
                continue
            try:
                at, seq = float(fields[2]), int(fields[5].split(":", 1)[1].split()[0])
            except (ValueError, IndexError):
                continue
            direction, first = fields[3], fields[6]
            call = calls.setdefault(fields[4], TracedCall())
            if direction == "S" and first.startswith("INVITE ") and seq > call.cseq:
                call.cseq, call.sent, call.final, call.final_at = seq, at, None, None
            elif direction == "R" and first.startswith("SIP/2.0 ") and seq == call.cseq \
                    and call.final is None:
                status = int(first.split(" ", 2)[1])
                if status >= 200:
                    call.final, call.final_at = status, at
    return calls


# --- load steps --------------------------------------------------------------------------

@dataclass(frozen=True)
class LoadStep:
    """A fixed number of calls offered at one rate along one path."""

    path: str                       # Trimaran, baseline, inbound
    rate: int
    calls: int
    successful: int                 # SIPp's SuccessfulCall(C): answered, ACKed, hung up
    failures: Mapping[str, int]     # why the others failed
    achieved: float | None          # answered calls per second, first INVITE -> last 2xx
    setups: tuple[float, ...]       # s, the (authenticated) INVITE -> its 200, per call
    retransmissions: int
    cpu: Cpu                        # who used the CPUs meanwhile

    def ms(self, q: float) -> float | None:
        value = quantile(self.setups, q)
        return None if value is None else 1000.0 * value


def load_cpu_seconds() -> float:
    """CPU seconds used so far by this process, its live descendants (the gateways, the
    baseline UAS, a running SIPp UAC) and its children that ended (SIPp runs, CLI)."""
    ended = resource.getrusage(resource.RUSAGE_CHILDREN)
    return tree_cpu_seconds(os.getpid()) + ended.ru_utime + ended.ru_stime


@dataclass(frozen=True)
class Cpu:
    """Who used the machine's CPUs during a step, each in % of one core."""

    fe: float | None            # the Front End server (None: not in the path)
    med: float | None           # both Mediation servers
    load: float                 # SIPp (UAC, UAS, gateways) and this process (bob, probes)
    others: float               # everything else on the machine
    window: tuple[float, float]  # wall-clock time (epoch) of the step


@dataclass
class Meter:
    """Starts measuring the CPUs at its creation; `read` ends it."""

    deployment: Deployment | None
    started: float = field(default_factory=time.monotonic)
    wall: float = field(default_factory=time.time)
    host: float = field(default_factory=host_busy_seconds)
    load: float = field(default_factory=load_cpu_seconds)
    fe: float = 0.0
    med: float = 0.0

    def __post_init__(self) -> None:
        if self.deployment is not None:
            self.fe = self.deployment.cpu_seconds(["fe1a"])
            self.med = self.deployment.cpu_seconds(list(MEDIATION))

    def read(self) -> Cpu:
        wall = max(time.monotonic() - self.started, 1e-6)
        host = host_busy_seconds() - self.host
        load = load_cpu_seconds() - self.load
        fe = med = 0.0
        if self.deployment is not None:
            fe = self.deployment.cpu_seconds(["fe1a"]) - self.fe
            med = self.deployment.cpu_seconds(list(MEDIATION)) - self.med
        others = max(0.0, host - fe - med - load)
        in_path = self.deployment is not None
        return Cpu(100.0 * fe / wall if in_path else None,
                   100.0 * med / wall if in_path else None,
                   100.0 * load / wall, 100.0 * others / wall, (self.wall, time.time()))


@dataclass
class Quiet:
    """Waits, before a load step, for the rest of the machine to go quiet: other work
    (test suites of other checkouts...) skews the numbers. At most `per_step` seconds
    before one step and `budget` seconds in all."""

    deployment: Deployment
    budget: float
    per_step: float = QUIET_STEP_WAIT
    limit: float = QUIET_LIMIT          # % of one core used by the others

    async def wait(self) -> float:
        """Wait; the others' last load seen, in % of one core."""
        deadline = time.monotonic() + min(self.per_step, max(0.0, self.budget))
        started = time.monotonic()
        while True:
            meter = Meter(self.deployment)
            await asyncio.sleep(0.5)
            others = meter.read().others
            if others < self.limit or time.monotonic() >= deadline:
                self.budget -= time.monotonic() - started
                return others


def summarize(path: str, rate: int, calls: int, successful: int, retransmissions: int,
              traced: Mapping[str, TracedCall], cpu: Cpu) -> LoadStep:
    answered = [c for c in traced.values() if c.final is not None and 200 <= c.final < 300]
    setups = tuple(c.final_at - c.sent for c in answered
                   if c.final_at is not None and c.sent is not None)
    failures: Counter[str] = Counter()
    for c in traced.values():
        if c.final is None:
            failures["no final answer"] += 1
        elif c.final >= 300:
            failures[f"{c.final}"] += 1
    unsent = calls - len(traced)
    if unsent > 0:
        failures["never sent"] += unsent
    lost = calls - successful - sum(failures.values())
    if lost > 0:
        failures["answered, not ended"] += lost
    sent = [c.sent for c in traced.values() if c.sent is not None]
    done = [c.final_at for c in answered if c.final_at is not None]
    span = (max(done) - min(sent)) if done and sent else 0.0
    achieved = len(answered) / span if span > 0 else None
    return LoadStep(path, rate, calls, successful, dict(failures), achieved, setups,
                    retransmissions, cpu)


async def outbound_step(deployment: Deployment | None, target: str, rate: int, calls: int,
                        workdir: Path) -> LoadStep:
    """The SIPp UAC places `calls` calls at `rate` through `target` (the Front End, or
    the baseline UAS when `deployment` is None)."""
    budget = calls / rate + 15.0
    trace = workdir / "messages.log"
    args = ["-sf", str(SCENARIOS / "voice_call_auth_uac.xml"), target, "-s", DIALLED,
            "-i", UAC_HOST, "-p", str(free_port(UAC_HOST)), "-t", "u1",
            "-key", "sender", CALLER, "-key", "domain", DOMAIN,
            "-au", CALLER, "-ap", password(CALLER), "-m", str(calls), "-r", str(rate),
            "-buff_size", str(SIPP_BUFFER), "-max_recv_loops", "10000",
            "-timeout", f"{budget:.0f}s", "-timeout_error",
            "-trace_shortmsg", "-shortmessage_file", str(trace)]
    meter = Meter(deployment)
    result = await asyncio.to_thread(run_sipp, args, workdir, timeout=budget + 10.0)
    cpu = meter.read()
    return summarize("Trimaran" if deployment else "baseline", rate, calls,
                     min(calls, result.counter("SuccessfulCall(C)")),
                     result.counter("Retransmissions(C)"), read_trace(trace), cpu)


async def inbound_step(deployment: Deployment, rate: int, calls: int,
                       workdir: Path) -> LoadStep:
    """A SIPp caller at gw1's address places `calls` calls at `rate` to bob's number
    through med1a."""
    caller = SippCaller(GATEWAYS["gw1"], f"{MEDIATION['med1a']}:{SIP_PORT}",
                        to_number=NUMBERS[BOB], from_number=PSTN_CALLER, workdir=workdir)
    meter = Meter(deployment)
    result = await caller.run(calls=calls, rate=rate, hold_ms=HOLD_MS)
    cpu = meter.read()
    traced: dict[str, TracedCall] = {}
    for trace in workdir.glob("run*/messages.log"):
        traced.update(read_trace(trace))
    return summarize("inbound", rate, calls, min(calls, result.successful),
                     result.sipp.counter("Retransmissions(C)"), traced, cpu)


async def answer_every_call(agent: UserAgent) -> None:
    """bob: 200 with SDP to every incoming call (the caller hangs up)."""
    while True:
        call = await agent.incoming_calls.get()
        with contextlib.suppress(TransactionError, TransportError):
            await call.answer(SDP)


# --- failover ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Kind:
    """A failure kind of the failover table."""

    key: str
    fault: str
    expected: str       # what Trimaran is built to do (README, Enterprise Voice)
    model: str          # the SPEC's / the model's figure


KINDS = (
    Kind("normal", "none: both gateways up", "no failover", "-"),
    Kind("gw-killed", "gw1 killed (SIGKILL), before its probes notice",
         f"fast failover: {FAST_FAILOVER:g} s, then gw2", "10 s fast failover (EV-3)"),
    Kind("gw-503", "gw1 answers every INVITE 503", "at once to gw2",
         "5xx -> next trunk (EV-3)"),
    Kind("gw-silent", "gw1 answers OPTIONS, never an INVITE",
         f"fast failover: {FAST_FAILOVER:g} s, then gw2", "10 s fast failover (EV-3)"),
    Kind("gw-probed-down", "gw1 killed and probed down on both Mediation servers",
         "gw1 skipped: no delay", "skipped while down (EV-3)"),
    Kind("med-killed", "the Mediation server tried first killed (connection refused)",
         "at once to the other server", "the others take its calls (EV-2), no time"),
    Kind("med-frozen", "the Mediation server tried first frozen (SIGSTOP)",
         f"{MEDIATION_GUARD:g} s guard, then the other server",
         "the others take its calls (EV-2), no time"),
)


@dataclass(frozen=True)
class Sample:
    """One call placed right after a fault."""

    kind: str
    round: int
    seconds: float | None       # setup time; None when the call failed
    outcome: str                # "200", or why it failed
    carried_by: str             # the gateway that answered it
    note: str = ""


@dataclass
class Lab:
    """What the failover rounds act on."""

    deployment: Deployment
    gateways: dict[str, SippGateway]
    alice: UserAgent
    samples: list[Sample] = field(default_factory=list)

    async def call(self, kind: str, round_: int, note: str = "") -> Sample:
        """alice dials the PSTN; the setup time (INVITE, 407, INVITE, 200), hung up after."""
        before = {name: len(gw.received()) for name, gw in self.gateways.items()}
        started = time.monotonic()
        try:
            call = await asyncio.wait_for(
                self.alice.invite(f"sip:{DIALLED}@{DOMAIN};user=phone", SDP), CALL_TIMEOUT)
        except CallFailed as exc:
            outcome, seconds = f"{exc.status} {exc.reason}", None
        except TimeoutError:
            outcome, seconds = f"no answer within {CALL_TIMEOUT:g} s", None
        else:
            outcome, seconds = "200", time.monotonic() - started
            with contextlib.suppress(TransactionError, TransportError, RuntimeError):
                await call.bye()
        carried = [name for name, gw in self.gateways.items()
                   if len(gw.received()) > before[name] and gw.mode == "answer" and gw.running]
        return Sample(kind, round_, seconds, outcome, "+".join(carried) or "-", note)

    def record(self, sample: Sample) -> None:
        self.samples.append(sample)
        shown = f"{sample.seconds:.3f} s" if sample.seconds is not None else "FAILED"
        print(f"   round {sample.round} {sample.kind:<15} {shown:>9}  {sample.outcome}, "
              f"carried by {sample.carried_by} {sample.note}", flush=True)

    async def healthy(self) -> None:
        """Both Mediation servers answer and see both gateways up."""
        await wait_until(gateways_up, 20.0, "both gateways up on both Mediation servers")

    async def gateway_mode(self, mode: GatewayMode) -> None:
        """gw1 in `mode` (restarted), seen up again by both Mediation servers."""
        await self.gateways["gw1"].set_mode(mode)
        await self.healthy()

    async def normal(self, round_: int) -> None:
        await self.healthy()
        self.record(await self.call("normal", round_))

    async def gateway_killed_then_probed_down(self, round_: int) -> None:
        """gw1 killed: one call at once, another once both servers probed it down."""
        await self.healthy()
        gw1 = self.gateways["gw1"]
        await gw1.kill()
        killed = time.monotonic()
        self.record(await self.call("gw-killed", round_))

        def down_on_both() -> bool:
            done = self.deployment.cli("voice", "status", "--json", check=False, timeout=30)
            try:
                rows = json.loads(done.stdout)
            except ValueError:
                return False
            return len(rows) == len(MEDIATION) and all(
                any(g.get("gateway") == "gw1" and g.get("state") == "down"
                    for g in row.get("gateways", [])) for row in rows)

        await wait_until(down_on_both, 30.0, "gw1 down on both Mediation servers", 0.5)
        seen = time.monotonic() - killed
        self.record(await self.call("gw-probed-down", round_,
                                    f"(`voice status`: down on both {seen:.1f} s after "
                                    "the kill)"))
        await gw1.start()
        await self.healthy()

    async def gateway_refusing(self, round_: int, mode: GatewayMode, kind: str) -> None:
        await self.gateway_mode(mode)
        self.record(await self.call(kind, round_))
        await self.gateway_mode("answer")

    async def mediation_fault(self, round_: int, kind: str, server: str,
                              fault: Callable[[], Awaitable[None]],
                              repair: Callable[[], Awaitable[None]]) -> None:
        """`fault` on `server`, then calls until one is sent to it first (the Front End
        picks the first server by Call-ID), `repair` after."""
        await self.healthy()
        await wait_until(lambda: server not in held_down(), HOLD_DOWN + 10.0,
                         f"the Front End to stop skipping {server}")
        await fault()
        try:
            for attempt in range(1, 9):
                sample = await self.call(kind, round_, f"({server}, attempt {attempt})")
                if server in await asyncio.to_thread(held_down):
                    self.record(sample)
                    return
            raise BenchError(f"8 calls in a row did not try {server} first")
        finally:
            await repair()

    async def mediation_killed(self, round_: int, server: str) -> None:
        async def kill() -> None:
            await asyncio.to_thread(self.deployment.cli, "server", "kill", server)

        async def start() -> None:
            await asyncio.to_thread(self.deployment.cli, "server", "start", server)
        await self.mediation_fault(round_, "med-killed", server, kill, start)

    async def mediation_frozen(self, round_: int, server: str) -> None:
        pid = self.deployment.pids()[server]

        async def freeze() -> None:
            os.kill(pid, signal.SIGSTOP)

        async def thaw() -> None:
            os.kill(pid, signal.SIGCONT)
        await self.mediation_fault(round_, "med-frozen", server, freeze, thaw)

    async def round(self, round_: int) -> None:
        """Every failure kind once: med1a is killed, med1b frozen, the gateway faults
        between them (a Front End skips a Mediation server that failed for 30 s: a round
        is longer than that, so each of the two is back in first place when its turn
        comes again)."""
        await self.normal(round_)
        await self.mediation_killed(round_, "med1a")
        await self.gateway_killed_then_probed_down(round_)
        await self.gateway_refusing(round_, "reject503", "gw-503")
        await self.mediation_frozen(round_, "med1b")
        await self.gateway_refusing(round_, "silent", "gw-silent")


# --- the run -----------------------------------------------------------------------------

@dataclass
class Results:
    outbound: list[LoadStep] = field(default_factory=list)
    inbound: list[LoadStep] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def print_step(step: LoadStep) -> None:
    print("   " + " | ".join(step_row(step)), flush=True)


async def start_gateways(work: Path) -> dict[str, SippGateway]:
    gateways = {}
    for name, address in GATEWAYS.items():
        gateway = SippGateway(address, SIP_PORT, mode="answer", workdir=work / "gateways" / name)
        gateways[name] = gateway
        await gateway.start()
    return gateways


async def sign_in(name: str) -> UserAgent:
    agent = UserAgent(UAConfig(aor=f"sip:{name}@{DOMAIN}", password=password(name),
                               servers=(Address("tcp", FE_HOST, SIP_PORT),),
                               local_host=AGENT_HOST))
    await agent.start()
    response = await agent.register()
    if response.status != 200:
        raise BenchError(f"{name} could not sign in: {response.status} {response.reason}")
    return agent


async def measure(deployment: Deployment, args: argparse.Namespace, work: Path,
                  results: Results) -> None:
    """Everything, in order; the gateways, agents and SIPp processes stopped after."""
    gateways: dict[str, SippGateway] = {}
    agents: list[UserAgent] = []
    answering: asyncio.Task[None] | None = None
    baseline = BackgroundSipp(
        ["-sf", str(SCENARIOS / "voice_baseline_uas.xml"), "-i", BASELINE_HOST,
         "-p", str(SIP_PORT), "-t", "u1", "-buff_size", str(SIPP_BUFFER),
         "-max_recv_loops", "10000"], work / "sipp" / "baseline-uas")
    try:
        gateways = await start_gateways(work)
        await wait_until(gateways_up, 30.0, "both gateways up on both Mediation servers")
        alice, bob = await sign_in(ALICE), await sign_in(BOB)
        agents += [alice, bob]
        answering = asyncio.ensure_future(answer_every_call(bob))
        baseline.start()
        front_end, uas = f"{FE_HOST}:{SIP_PORT}", f"{BASELINE_HOST}:{SIP_PORT}"
        quiet = Quiet(deployment, args.quiet_wait)
        print("== calls to the PSTN (warm-up: 20 calls each way, not counted)", flush=True)
        await outbound_step(deployment, front_end, 10, 20, work / "sipp" / "warmup-trimaran")
        await outbound_step(None, uas, 10, 20, work / "sipp" / "warmup-baseline")
        for rate in args.rates:
            await quiet.wait()
            results.outbound.append(await outbound_step(
                deployment, front_end, rate, args.calls, work / "sipp" / f"trimaran-{rate}"))
            print_step(results.outbound[-1])
            await quiet.wait()
            results.outbound.append(await outbound_step(
                None, uas, rate, args.calls, work / "sipp" / f"baseline-{rate}"))
            print_step(results.outbound[-1])
        baseline.stop()
        print("== calls from the PSTN", flush=True)
        for rate in args.inbound_rates:
            await quiet.wait()
            results.inbound.append(await inbound_step(deployment, rate, args.calls,
                                                      work / "sipp" / f"inbound-{rate}"))
            print_step(results.inbound[-1])
        print(f"== failover: {args.rounds} round(s) of {len(KINDS)} failure kinds", flush=True)
        lab = Lab(deployment, gateways, alice, results.samples)
        for round_ in range(1, args.rounds + 1):
            await lab.round(round_)
    finally:
        baseline.stop()
        if answering is not None:
            answering.cancel()
        for agent in agents:
            with contextlib.suppress(TransportError, OSError):
                await agent.close()
        for gateway in gateways.values():
            with contextlib.suppress(GatewayError, OSError):
                await gateway.kill()


async def run(deployment: Deployment, args: argparse.Namespace, work: Path) -> Results:
    """The bench in an event loop; SIGTERM and SIGHUP cancel it (cleanup runs)."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, task.cancel)
    results = Results()
    started = time.monotonic()
    await asyncio.to_thread(deployment.up)
    print(f"deployment up in {time.monotonic() - started:.1f} s ({deployment.rundir})",
          flush=True)
    await measure(deployment, args, work, results)
    results.notes += explain(deployment, results)
    return results


NOTEWORTHY = ("refused", "failed", "unreachable", "no answer", "did not answer")


def explain(deployment: Deployment, results: Results) -> list[str]:
    """What the servers logged (warnings, errors, refusals, failures) while a load step
    that lost calls ran; at most 8 lines per server and step."""
    notes = []
    for step in [*results.outbound, *results.inbound]:
        if not step.failures or step.path == "baseline":
            continue
        start, end = step.cpu.window
        for server in ("fe1a", *MEDIATION):
            lines = [entry for entry in deployment.log_entries(server)
                     if start <= float(str(entry.get("ts", 0.0))) <= end + 1.0
                     and (entry.get("level") in ("warning", "error", "critical")
                          or any(w in str(entry.get("msg", "")) for w in NOTEWORTHY))]
            notes += [f"{step.path} {step.rate}/s {server} {entry.get('level')} "
                      f"{entry.get('logger')}: {str(entry.get('msg'))[:240]}"
                      for entry in lines[:8]]
    return notes


# --- the report --------------------------------------------------------------------------

def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


STEP_HEADER = ("path", "offered calls/s", "calls", "completed", "failed (why)",
               "answered calls/s", "setup p50 ms", "setup p99 ms", "max ms", "retrans",
               "FE CPU %", "Mediation CPU %", "SIPp + bench CPU %", "others CPU %")


def step_row(step: LoadStep) -> list[str]:
    return [step.path, str(step.rate), str(step.calls), str(step.successful),
            why(step.failures),
            "-" if step.achieved is None else f"{step.achieved:.1f}",
            ms(step.ms(0.50)), ms(step.ms(0.99)), ms(step.ms(1.0)), str(step.retransmissions),
            pct(step.cpu.fe), pct(step.cpu.med), pct(step.cpu.load), pct(step.cpu.others)]


def ratio(a: float | None, b: float | None, digits: int = 1) -> str:
    return "-" if a is None or b is None or b <= 0 else f"{a / b:.{digits}f}"


def ratio_rows(steps: Sequence[LoadStep]) -> list[list[str]]:
    rows = []
    for t in (s for s in steps if s.path == "Trimaran"):
        b = next((s for s in steps if s.path == "baseline" and s.rate == t.rate), None)
        if b is None:
            continue
        rows.append([str(t.rate), f"{ms(t.ms(0.99))} / {ms(b.ms(0.99))}",
                     ratio(t.ms(0.99), b.ms(0.99)), ratio(t.ms(0.50), b.ms(0.50)),
                     ratio(t.achieved, b.achieved, 3),
                     f"{t.calls - t.successful} / {b.calls - b.successful}"])
    return rows


RATIO_HEADER = ("offered calls/s", "p99 ms Trimaran / baseline", "p99 ratio", "p50 ratio",
                "answered calls/s ratio", "failed Trimaran / baseline")


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s"


def failover_rows(samples: Sequence[Sample]) -> list[list[str]]:
    rows = []
    normal = [s.seconds for s in samples if s.kind == "normal" and s.seconds is not None]
    base = statistics.median(normal) if normal else None
    for kind in KINDS:
        mine = [s for s in samples if s.kind == kind.key]
        if not mine:
            continue
        ok = [s.seconds for s in mine if s.seconds is not None]
        carried = Counter(s.carried_by for s in mine if s.seconds is not None)
        failed = len(mine) - len(ok)
        rows.append([kind.key, kind.fault, f"{len(ok)}" + (f" ({failed} failed)" if failed
                                                             else ""),
                     seconds(min(ok) if ok else None),
                     seconds(statistics.median(ok) if ok else None),
                     seconds(max(ok) if ok else None),
                     "-" if not ok or base is None or kind.key == "normal"
                     else f"{statistics.median(ok) - base:+.3f} s",
                     ", ".join(f"{g} x{n}" for g, n in sorted(carried.items())) or "-",
                     kind.expected, kind.model])
    return rows


FAILOVER_HEADER = ("failure kind", "fault", "calls", "min", "median", "max",
                   "added (median - normal's)", "carried by", "Trimaran (designed)",
                   "model / SPEC")


def sample_rows(samples: Sequence[Sample]) -> list[list[str]]:
    return [[str(s.round), s.kind, seconds(s.seconds), s.outcome, s.carried_by, s.note]
            for s in samples]


def run_lines() -> list[str]:
    commit = "unknown"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                capture_output=True, text=True, check=False,
                                timeout=10).stdout.strip() or "unknown"
    return [*machine_lines(), f"- kernel: {platform.system()} {platform.release()}",
            f"- Trimaran commit: {commit} (with the working tree's changes, if any)",
            f"- SIPp: {sipp_version()}"]


def method_lines(args: argparse.Namespace) -> list[str]:
    return [
        "## Method", "",
        f"One site (`trimaran up`, loopback 127.0.29.x): a Standard Edition Front End pool"
        f" (fe1a, {FE_HOST}), a Mediation pool of two servers (med1a, med1b; next hop fe1)"
        " and two PSTN gateways played by SIPp (`tests/voice/gateway.py`, gw1 and gw2);"
        " trunk t1 on gw1 and t2 on gw2, one route for +1 numbers over t1 then t2, one"
        " voice policy, one dial plan (`4255550123` -> `+14255550123`). Voice timers are"
        f" the defaults: fast failover {FAST_FAILOVER:g} s, OPTIONS probes every"
        f" {PROBE_INTERVAL:g} s with a {PROBE_TIMEOUT:g} s timeout. Every process shares"
        f" this machine's {os.cpu_count()} CPU(s).",
        "",
        f"* **Calls to the PSTN**: SIPp (UDP, one socket) signed in as a user dials"
        f" `4255550123`: INVITE -> 407 -> INVITE with MD5 digest -> Front End -> Mediation"
        f" server (TCP) -> gw1 (100, 180, 200 with SDP) -> ACK, {HOLD_MS} ms, BYE."
        f" {args.calls} calls per offered rate ({', '.join(map(str, args.rates))} calls/s),"
        " after 20 warm-up calls. The **baseline**, in the same run, alternating with"
        " Trimaran rate by rate: the same SIPp UAC straight to one SIPp UAS that plays the"
        " 407 and the gateway's answer (`bench/scenarios/voice_baseline_uas.xml`).",
        "* **Calls from the PSTN**: a SIPp caller (`tests/voice/scenarios/caller_uac.xml`)"
        f" from gw1's address -> med1a -> fe1a -> bob, a trimaran UserAgent in the bench's"
        f" process that answers every call 200 with SDP; {HOLD_MS} ms, then BYE;"
        f" {args.calls} calls per rate.",
        "",
        "*setup* is the time from the (authenticated) INVITE to its 200 in SIPp's message"
        " trace (µs timestamps; the 407 round trip before it is not counted);"
        " *completed* are SIPp's successful calls (answered, ACKed, hung up); *answered"
        " calls/s* is the answered calls divided by the time from the first INVITE to the"
        " last 200. CPU is utime+stime over the step, in % of one core: of the Front End"
        " server, of both Mediation servers, of SIPp (UAC, baseline UAS, both gateways) and"
        " the bench's own process (bob, the harness), and *others*: the rest of the"
        " machine's busy time (/proc/stat; other work on the machine, the kernel). Before"
        f" each step the bench waits (up to {QUIET_STEP_WAIT:g} s, {args.quiet_wait:g} s in"
        f" all) for the others to use under {QUIET_LIMIT:g} % of a core.", "",
        f"* **Failover**: alice (a trimaran UserAgent, TCP to the Front End) dials"
        " `4255550123` right after the fault; the setup time is INVITE to 200 (with the"
        f" 407 round trip); {args.rounds} round(s), each kind once per round, in the order"
        " normal, med-killed, gw-killed, gw-probed-down, gw-503, med-frozen, gw-silent."
        " Before each call both gateways are seen up by both Mediation servers (their"
        " `/status`), except for gw-probed-down: gw1, killed for the gw-killed call, is"
        " then left dead until `trimaran voice status --json` shows it down on both"
        " servers. gw1 is restarted answering after each gateway fault. The Front End"
        " picks a call's first Mediation server by Call-ID (and skips one that failed"
        f" for {HOLD_DOWN:g} s): for the Mediation faults, calls are placed"
        " until one was sent to the faulted server first (it then appears in the Front"
        " End's `mediation_servers_held_down`), and only that one is counted; the killed"
        " server (med1a) is started again (`trimaran server start`), the frozen one"
        " (med1b) gets SIGCONT.",
    ]


def report(results: Results, args: argparse.Namespace, minutes: float) -> str:
    out = ["# Enterprise Voice benchmark: PSTN call setup, calls from the PSTN, failover", "",
           "Generated by `bench/voice.py` (`./run bench voice`); rewritten by every full run.",
           "", *run_lines(), f"- the bench ran {minutes:.1f} minutes", "",
           *method_lines(args), "",
           "## Calls to the PSTN: UAC -> Front End -> Mediation -> gateway, vs SIPp alone", "",
           table(STEP_HEADER, [step_row(s) for s in results.outbound]), "",
           table(RATIO_HEADER, ratio_rows(results.outbound)), "",
           "## Calls from the PSTN: gateway -> Mediation -> Front End -> user", "",
           table(STEP_HEADER, [step_row(s) for s in results.inbound]), "",
           "## Failover: setup time of the first call after a fault", "",
           table(FAILOVER_HEADER, failover_rows(results.samples)), "",
           "Every call counted:", "",
           table(("round", "failure kind", "setup", "outcome", "carried by", "note"),
                 sample_rows(results.samples)), ""]
    if results.notes:
        out += ["## Log lines about failed calls", "", "```", *results.notes, "```", ""]
    return "\n".join(out)


# --- main --------------------------------------------------------------------------------

def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smaller run: rates 20,50, 60 calls, 1 round; saves nothing "
                             "unless --output is given")
    parser.add_argument("--rates", type=int_list, default=None,
                        help=f"offered calls/s to the PSTN (default {RATES})")
    parser.add_argument("--inbound-rates", type=int_list, default=None,
                        help=f"offered calls/s from the PSTN (default {INBOUND_RATES})")
    parser.add_argument("--calls", type=int, default=None, help=f"calls per step ({CALLS})")
    parser.add_argument("--rounds", type=int, default=None,
                        help=f"failover rounds, each failure kind once ({ROUNDS})")
    parser.add_argument("--output", type=Path, default=None,
                        help=f"markdown report (default {RESULTS.relative_to(ROOT)})")
    parser.add_argument("--quiet-wait", type=float, default=None,
                        help="seconds, in all, to wait before load steps (at most "
                             f"{QUIET_STEP_WAIT:g} s before one) for the rest of the machine "
                             f"to use under {QUIET_LIMIT:g} %% of a core (default 60, "
                             "--quick 10)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work directory (run directory, logs, SIPp traces)")
    args = parser.parse_args(argv)
    if args.rates is None:
        args.rates = (20, 50) if args.quick else RATES
    if args.inbound_rates is None:
        args.inbound_rates = (20,) if args.quick else INBOUND_RATES
    if args.calls is None:
        args.calls = 60 if args.quick else CALLS
    if args.rounds is None:
        args.rounds = 1 if args.quick else ROUNDS
    if args.quiet_wait is None:
        args.quiet_wait = 10.0 if args.quick else 60.0
    if args.output is None and not args.quick:
        args.output = RESULTS
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    with workspace("voice", args.keep) as work:
        deployment = Deployment(work)
        try:
            results = asyncio.run(run(deployment, args, work))
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
