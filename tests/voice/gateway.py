"""PSTN gateways and PSTN callers played by SIPp, for the Enterprise Voice tests and bench.

Theory of operation
-------------------
`SippGateway` is one long-running SIPp UAS on its own address (`-i`, `-p`, `-t u1|t1`)
running one of the scenarios in `scenarios/gateway_<mode>.xml`:

=========== ================================================================================
answer      100, 180, 200 with SDP (retransmitted until the ACK); the BYE gets 200. A CANCEL
            crossing the 200 gets 200 and the call goes on (the INVITE was already answered).
reject503   503 Service Unavailable, retransmitted until the ACK.
silent      never answers the INVITE (no 100 either), nor its CANCEL: a hung gateway.
ring        100, 180, then nothing until a CANCEL: 200 for it, 487 for the INVITE, the ACK.
=========== ================================================================================

In every mode an out-of-dialog OPTIONS gets 200: it carries a new Call-ID, so SIPp starts a
new "call" for it, and each scenario's first element is an optional OPTIONS branch that
answers and ends. OPTIONS inside a dialog are answered by SIPp's `-aa`.

What the gateway saw is read from the scenario's `<log>` actions (`-trace_logs`), one line
per event, flushed by SIPp on every write and read here incrementally:

    INVITE <call-id> <cseq> <request-uri> <From header value>
    ANSWERED <call-id> | REJECTED <call-id> <status> | CANCELLED <call-id>
    BYE <call-id> | OPTIONS <call-id>

The INVITE line is written by the INVITE's own `<recv>` (its Request-URI taken with an
`<ereg>` on the raw message), so every mode reports every new INVITE; retransmissions are
absorbed by SIPp before any action runs and are also de-duplicated on (Call-ID, CSeq).

`SippCaller` is a SIPp UAC (`scenarios/caller_uac.xml`) placing N calls into the
deployment the way a gateway does. Final status codes and setup latencies come from SIPp's
short message trace (`-trace_shortmsg`: one line per message with its time, direction,
Call-ID, CSeq and first line), successes and failures from SIPp's own statistics.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import ctypes
import re
import signal
import socket
import sys
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from tests.interop.sipp import SippResult, free_port, run_sipp, sipp_binary

SCENARIOS = Path(__file__).parent / "scenarios"
CALLER_SCENARIO = SCENARIOS / "caller_uac.xml"

GatewayMode = Literal["answer", "reject503", "silent", "ring"]
Transport = Literal["udp", "tcp"]
MODES: tuple[str, ...] = get_args(GatewayMode)
SIPP_TRANSPORT: dict[str, str] = {"udp": "u1", "tcp": "t1"}

PROBE_PREFIX = "gw-probe-"   # Call-IDs of the harness's own OPTIONS, kept out of the counts
POLL_INTERVAL = 0.02         # seconds between two reads of a trace while waiting
# SIPp reads at most this many messages per socket poll and runs at most this many calls
# per scheduler loop (default 1000 each); raised so a gateway keeps up with a benchmark.
MAX_LOOPS = "10000"


class GatewayError(Exception):
    """The SIPp gateway could not be started, or did not do what was waited for."""


def scenario_path(mode: str) -> Path:
    """The scenario file of a gateway mode."""
    if mode not in MODES:
        raise ValueError(f"unknown gateway mode {mode!r} (one of {', '.join(MODES)})")
    return SCENARIOS / f"gateway_{mode}.xml"


# -- what the gateway saw -------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ReceivedInvite:
    """One INVITE that reached the gateway (retransmissions counted once)."""

    call_id: str
    cseq: int
    request_uri: str
    from_uri: str
    from_header: str
    mode: str   # the gateway's mode when it arrived


@dataclass(frozen=True, slots=True)
class GatewayStats:
    """A snapshot of a gateway: its state, what it did, and SIPp's last statistics row."""

    mode: str
    transport: str
    address: str
    port: int
    running: bool
    starts: int            # SIPp processes started so far
    invites: int           # distinct INVITEs received
    answered: int          # calls answered 200
    rejected: int          # calls refused (503)
    cancelled: int         # calls ended by CANCEL (487)
    hangups: int           # BYEs answered 200
    options: int           # out-of-dialog OPTIONS answered (the harness's probes excluded)
    probes: int            # the harness's own OPTIONS answered
    sipp: Mapping[str, str] = field(default_factory=dict)


def _from_uri(header: str) -> str:
    """The URI of a From value: inside <...>, or up to the first parameter."""
    match = re.search(r"<([^>]*)>", header)
    if match:
        return match.group(1)
    return header.split(";", 1)[0].strip()


class _LineReader:
    """Reads the complete lines appended to a file since the last call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""

    def new_lines(self) -> list[str]:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
        except FileNotFoundError:
            return []
        self._offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        return [line.decode(errors="replace") for line in lines if line.strip()]


@dataclass
class _Events:
    """Everything the gateway's log lines said, across all its SIPp runs."""

    invites: dict[tuple[str, int], ReceivedInvite] = field(default_factory=dict)
    answered: set[str] = field(default_factory=set)
    rejected: set[str] = field(default_factory=set)
    cancelled: set[str] = field(default_factory=set)
    hangups: set[str] = field(default_factory=set)
    options: set[str] = field(default_factory=set)
    probes: set[str] = field(default_factory=set)

    def add(self, line: str, mode: str) -> None:
        kind, _, rest = line.partition(" ")
        if kind == "INVITE":
            parts = rest.split(" ", 3)
            if len(parts) < 4 or not parts[1].isdigit():
                return
            call_id, cseq, ruri, from_header = parts[0], int(parts[1]), parts[2], parts[3]
            from_header = from_header.strip()
            self.invites.setdefault((call_id, cseq), ReceivedInvite(
                call_id, cseq, ruri, _from_uri(from_header), from_header, mode))
            return
        call_id = rest.split(" ", 1)[0]
        target = {"ANSWERED": self.answered, "REJECTED": self.rejected,
                  "CANCELLED": self.cancelled, "BYE": self.hangups}.get(kind)
        if kind == "OPTIONS":
            target = self.probes if call_id.startswith(PROBE_PREFIX) else self.options
        if target is not None:
            target.add(call_id)


def _read_stats(path: Path) -> dict[str, str]:
    """The last complete row of a SIPp statistics file (-trace_stat), as a dict."""
    try:
        with path.open(newline="") as handle:
            rows = [row for row in csv.reader(handle, delimiter=";") if row]
    except FileNotFoundError:
        return {}
    if len(rows) < 2:
        return {}
    header = rows[0]
    complete = [row for row in rows[1:] if len(row) >= len(header) - 1]
    if not complete:
        return {}
    return {key: value for key, value in zip(header, complete[-1], strict=False) if key}


# -- OPTIONS probe (the harness's own, to know SIPp listens) ---------------------------

def _options_request(host: str, port: int, transport: str, local: tuple[str, int],
                     call_id: str) -> bytes:
    token = uuid.uuid4().hex[:16]
    return (f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/{transport.upper()} {local[0]}:{local[1]};branch=z9hG4bK{token}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:harness@{local[0]}>;tag={token[:8]}\r\n"
            f"To: <sip:{host}:{port}>\r\nCall-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n").encode()


def _status_of(data: bytes, call_id: str) -> int | None:
    """The status of a final response to our probe in `data`, else None."""
    match = re.match(rb"SIP/2\.0 (\d{3}) ", data)
    if match is None or call_id.encode() not in data:
        return None
    status = int(match.group(1))
    return status if status >= 200 else None


class _ProbeProtocol(asyncio.DatagramProtocol):
    def __init__(self, call_id: str, result: asyncio.Future[int | None]) -> None:
        self._call_id = call_id
        self._result = result

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        status = _status_of(data, self._call_id)
        if status is not None and not self._result.done():
            self._result.set_result(status)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable on our connected socket: nobody listens there (yet).
        if not self._result.done():
            self._result.set_result(None)


async def probe_options(host: str, port: int, transport: str, *, local_host: str,
                        timeout: float = 1.0) -> int | None:
    """Send one OPTIONS from `local_host` and return the final status, or None when
    nothing came within `timeout` seconds or nothing listens (ICMP unreachable, TCP
    connection refused). Not retransmitted."""
    call_id = f"{PROBE_PREFIX}{uuid.uuid4().hex}@{local_host}"
    loop = asyncio.get_running_loop()
    if transport == "udp":
        result: asyncio.Future[int | None] = loop.create_future()
        udp, _ = await loop.create_datagram_endpoint(
            lambda: _ProbeProtocol(call_id, result), local_addr=(local_host, 0),
            remote_addr=(host, port))
        try:
            udp.sendto(_options_request(host, port, transport,
                                        udp.get_extra_info("sockname")[:2], call_id))
            return await asyncio.wait_for(result, timeout)
        except TimeoutError:
            return None
        finally:
            udp.close()
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port,
                                                           local_addr=(local_host, 0))
            try:
                writer.write(_options_request(host, port, transport,
                                              writer.get_extra_info("sockname")[:2], call_id))
                return _status_of(await reader.readuntil(b"\r\n\r\n"), call_id)
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except (TimeoutError, OSError, asyncio.IncompleteReadError):
        return None


# -- processes ---------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


def _die_with_parent() -> None:
    """In the child before exec: SIPp gets SIGTERM when the test process dies, so a
    crashed or killed test run never leaves gateways holding their addresses."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _ensure_free(host: str, port: int, transport: str) -> None:
    """Refuse an address something already listens on: SIPp binds with SO_REUSEADDR, so a
    second UDP gateway on a busy port would start and share the traffic silently."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    with socket.socket(family, kind) as sock:
        if kind == socket.SOCK_STREAM:  # TIME_WAIT left by a previous run is no obstacle
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise GatewayError(f"{transport} {host}:{port} is already in use: {exc}") from exc


async def _deadline_poll(check: Callable[[], bool], timeout: float) -> bool:
    """Poll `check` until it is true or `timeout` seconds passed; its last answer."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() >= deadline:
            return check()
        await asyncio.sleep(POLL_INTERVAL)
    return True


@dataclass
class _Run:
    """One SIPp process of a gateway; its files are in `directory`."""

    mode: str
    directory: Path
    process: asyncio.subprocess.Process
    log: _LineReader


class SippGateway:
    """A PSTN gateway played by a long-running SIPp UAS on `address:port`.

    Counters and `received()` accumulate over restarts and mode changes.
    """

    def __init__(self, address: str, port: int = 5060, *, mode: GatewayMode = "answer",
                 transport: Transport = "udp", workdir: Path | None = None,
                 startup_timeout: float = 10.0, lifetime: float | None = None,
                 trace_messages: bool = False) -> None:
        """`lifetime` (seconds) makes SIPp quit by itself (default: runs until stopped);
        `trace_messages` adds SIPp's one-line-per-message trace to each run's directory."""
        scenario_path(mode)
        if transport not in SIPP_TRANSPORT:
            raise ValueError(f"unknown transport {transport!r} (udp or tcp)")
        self.address = address
        self.port = port
        self.transport: Transport = transport
        self._mode: GatewayMode = mode
        self._workdir = workdir or Path(tempfile.mkdtemp(prefix=f"sipp-gw-{address}-{port}-"))
        self._startup_timeout = startup_timeout
        self._lifetime = lifetime
        self._trace_messages = trace_messages
        self._runs: list[_Run] = []
        self._events = _Events()

    # -- identity -------------------------------------------------------------------
    @property
    def mode(self) -> GatewayMode:
        """The scenario the gateway runs (or will run at the next start)."""
        return self._mode

    @property
    def target(self) -> str:
        """`address:port`, as a Mediation server's gateway entry names it."""
        return f"{self.address}:{self.port}"

    def uri(self, number: str) -> str:
        """The Request-URI of a call to `number` through this gateway."""
        return f"sip:{number}@{self.address}:{self.port};user=phone"

    @property
    def running(self) -> bool:
        """True while the current SIPp process is alive."""
        return bool(self._runs) and self._runs[-1].process.returncode is None

    @property
    def workdir(self) -> Path:
        """Where each run's directory (log, errors, stats) is written."""
        return self._workdir

    # -- lifecycle ------------------------------------------------------------------
    async def start(self) -> None:
        """Start SIPp in the current mode and wait until it answers OPTIONS."""
        if self.running:
            raise GatewayError(f"gateway {self.target} is already running")
        _ensure_free(self.address, self.port, self.transport)
        directory = self._workdir / f"run{len(self._runs) + 1:03d}-{self._mode}"
        directory.mkdir(parents=True, exist_ok=True)
        args = [sipp_binary(), "-sf", str(scenario_path(self._mode)),
                "-i", self.address, "-p", str(self.port), "-t", SIPP_TRANSPORT[self.transport],
                "-nostdin", "-aa",
                "-trace_logs", "-log_file", str(directory / "log.txt"),
                "-trace_err", "-error_file", str(directory / "errors.log"),
                "-trace_stat", "-stf", str(directory / "stats.csv"), "-fd", "1",
                "-max_recv_loops", MAX_LOOPS, "-max_sched_loops", MAX_LOOPS]
        if self._trace_messages:
            args += ["-trace_shortmsg", "-shortmessage_file", str(directory / "messages.log")]
        if self._lifetime is not None:
            args += ["-timeout", f"{max(1, round(self._lifetime))}s"]
        with (directory / "stdout.log").open("wb") as out:
            process = await asyncio.create_subprocess_exec(
                *args, cwd=directory, stdin=asyncio.subprocess.DEVNULL, stdout=out,
                stderr=asyncio.subprocess.STDOUT, preexec_fn=_die_with_parent)
        self._runs.append(_Run(self._mode, directory, process, _LineReader(directory / "log.txt")))
        try:
            await self.wait_started(self._startup_timeout)
        except BaseException:
            await self.kill()  # never leave a half-started SIPp holding the address
            raise

    async def wait_started(self, timeout: float | None = None) -> None:
        """Wait until SIPp answers an OPTIONS of ours with 200 (it listens, it runs)."""
        if not self._runs:
            raise GatewayError(f"gateway {self.target} was never started")
        run = self._runs[-1]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self._startup_timeout if timeout is None else timeout)
        while loop.time() < deadline:
            if run.process.returncode is not None:
                raise GatewayError(f"SIPp gateway {self.target} exited with "
                                   f"{run.process.returncode}\n{self.describe()}")
            status = await self.probe(timeout=0.5)
            if status == 200:
                return
            await asyncio.sleep(POLL_INTERVAL)  # not listening yet, or the probe was lost
        raise GatewayError(f"SIPp gateway {self.target} did not answer OPTIONS within "
                           f"the deadline\n{self.describe()}")

    started = wait_started  # the name used by the Enterprise Voice brief

    async def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM the SIPp process and wait for it (SIGKILL after `timeout`)."""
        await self._end(signal.SIGTERM, timeout)

    async def kill(self) -> None:
        """SIGKILL the SIPp process: the gateway vanishes without a word."""
        await self._end(signal.SIGKILL, 5.0)

    async def restart(self) -> None:
        """Stop (if running) and start again in the same mode, on the same address."""
        await self.stop()
        await self.start()

    async def set_mode(self, mode: GatewayMode) -> None:
        """Switch to another scenario: SIPp restarts in `mode` on the same address (if it
        was running; otherwise the next `start()` uses `mode`)."""
        scenario_path(mode)
        was_running = self.running
        await self.stop()
        self._mode = mode
        if was_running:
            await self.start()

    async def _end(self, signum: int, timeout: float) -> None:
        if not self._runs:
            return
        process = self._runs[-1].process
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signum)
            try:
                await asyncio.wait_for(process.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        self._refresh()

    async def __aenter__(self) -> SippGateway:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    # -- observing ------------------------------------------------------------------
    async def probe(self, timeout: float = 1.0) -> int | None:
        """One OPTIONS from the gateway's own address: the final status, or None."""
        return await probe_options(self.address, self.port, self.transport,
                                   local_host=self.address, timeout=timeout)

    def _refresh(self) -> None:
        for run in self._runs:
            for line in run.log.new_lines():
                self._events.add(line, run.mode)

    def received(self) -> list[ReceivedInvite]:
        """Every INVITE received so far, in arrival order, in every mode and run."""
        self._refresh()
        return list(self._events.invites.values())

    def answered(self) -> int:
        """How many calls the gateway answered with 200 OK."""
        self._refresh()
        return len(self._events.answered)

    async def wait_received(self, n: int, timeout: float = 5.0) -> list[ReceivedInvite]:
        """Wait until at least `n` INVITEs were received; return them all."""
        if not await _deadline_poll(lambda: len(self.received()) >= n, timeout):
            raise GatewayError(f"gateway {self.target} received {len(self.received())} "
                               f"INVITEs, not {n}, within {timeout}s\n{self.describe()}")
        return self.received()

    async def wait_answered(self, n: int, timeout: float = 5.0) -> int:
        """Wait until at least `n` calls were answered 200; return the count."""
        if not await _deadline_poll(lambda: self.answered() >= n, timeout):
            raise GatewayError(f"gateway {self.target} answered {self.answered()} calls, "
                               f"not {n}, within {timeout}s\n{self.describe()}")
        return self.answered()

    def stats(self) -> GatewayStats:
        """An immutable snapshot of the gateway (SIPp's row is at most ~1 s old)."""
        self._refresh()
        events = self._events
        sipp = _read_stats(self._runs[-1].directory / "stats.csv") if self._runs else {}
        return GatewayStats(self._mode, self.transport, self.address, self.port, self.running,
                            len(self._runs), len(events.invites), len(events.answered),
                            len(events.rejected), len(events.cancelled), len(events.hangups),
                            len(events.options), len(events.probes), sipp)

    def describe(self) -> str:
        """The current run's errors and screen, for an assertion message."""
        if not self._runs:
            return f"gateway {self.target}: never started"
        run = self._runs[-1]
        parts = [f"gateway {self.target} mode={run.mode} rc={run.process.returncode} "
                 f"dir={run.directory}"]
        for path in (run.directory / "errors.log", run.directory / "stdout.log"):
            if path.exists():
                parts.append(f"{path.name}:\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)


# -- calls from the PSTN -----------------------------------------------------------------

@dataclass
class _CallTrace:
    """One call of a caller run, as its message trace tells it."""

    invite_sent: float | None = None
    final_at: float | None = None
    final: int | None = None
    provisional: set[int] = field(default_factory=set)


def _read_short_trace(path: Path) -> dict[str, _CallTrace]:
    """Per Call-ID: first INVITE sent, first final response to it, provisionals seen.

    A line is `date, time, epoch.usec, S|R, Call-ID, CSeq:<n> <method>, first line`,
    tab-separated (SIPp's -trace_shortmsg).
    """
    calls: dict[str, _CallTrace] = {}
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return calls
    for line in lines:
        fields = line.split("\t")
        if len(fields) < 7 or not fields[5].endswith(" INVITE"):
            continue
        at, direction, call_id, first = float(fields[2]), fields[3], fields[4], fields[6]
        call = calls.setdefault(call_id, _CallTrace())
        if direction == "S" and first.startswith("INVITE ") and call.invite_sent is None:
            call.invite_sent = at
        elif direction == "R" and first.startswith("SIP/2.0 "):
            status = int(first.split(" ", 2)[1])
            if status < 200:
                call.provisional.add(status)
            elif call.final is None:
                call.final, call.final_at = status, at
    return calls


@dataclass(frozen=True)
class CallerResult:
    """How a batch of PSTN calls went."""

    requested: int
    attempted: int                      # INVITEs sent (distinct calls)
    successful: int                     # SIPp's SuccessfulCall(C): answered, ACKed, BYE 200
    failed: int                         # SIPp's FailedCall(C)
    final_codes: Mapping[int, int]      # final status of the INVITE -> number of calls
    provisional_codes: Mapping[int, int]  # 1xx status -> number of calls that saw it
    unanswered: int                     # calls that got no final response at all
    setup_latencies: tuple[float, ...]  # seconds, INVITE sent -> 2xx received, per call
    sipp: SippResult

    def latency(self, quantile: float) -> float | None:
        """A quantile (0..1) of the setup latencies, None without answered calls."""
        if not self.setup_latencies:
            return None
        ordered = sorted(self.setup_latencies)
        return ordered[min(len(ordered) - 1, int(quantile * len(ordered)))]

    def describe(self) -> str:
        """A summary and SIPp's diagnostics, for an assertion message."""
        return (f"requested={self.requested} attempted={self.attempted} "
                f"successful={self.successful} failed={self.failed} "
                f"final={dict(self.final_codes)} unanswered={self.unanswered}\n"
                f"{self.sipp.describe()}")


class SippCaller:
    """PSTN callers behind a gateway, played by a SIPp UAC calling into the deployment."""

    def __init__(self, local_address: str, target: str, to_number: str = "+14255550101",
                 from_number: str = "+12065550199", transport: Transport = "udp", *,
                 workdir: Path | None = None) -> None:
        """`target` is the Mediation server's `ip:port`; `local_address` the gateway's."""
        if transport not in SIPP_TRANSPORT:
            raise ValueError(f"unknown transport {transport!r} (udp or tcp)")
        self.local_address = local_address
        self.target = target
        self.to_number = to_number
        self.from_number = from_number
        self.transport: Transport = transport
        self._workdir = workdir or Path(tempfile.mkdtemp(prefix=f"sipp-caller-{local_address}-"))
        self._runs = 0

    async def run(self, calls: int = 1, rate: float = 10.0, answer_timeout: float = 10.0,
                  hold_ms: int = 0, *, max_concurrent: int | None = None,
                  local_port: int | None = None, timeout: float | None = None,
                  ) -> CallerResult:
        """Place `calls` calls at `rate` per second, at most `max_concurrent` (default:
        all) at once; each answered call is held `hold_ms`, then hung up.

        A call fails (is not hung) on a 4xx-6xx answer, or when no response that the
        scenario waits for comes within `answer_timeout` seconds. SIPp is stopped after
        `timeout` seconds (default: enough for every call to take its time, plus 10 s).
        """
        self._runs += 1
        directory = self._workdir / f"run{self._runs:03d}"
        directory.mkdir(parents=True, exist_ok=True)
        port = local_port or free_port(host=self.local_address)
        trace = directory / "messages.log"
        waves = -(-calls // (max_concurrent or calls))  # calls that cannot overlap, in a row
        budget = timeout or calls / rate + waves * (answer_timeout + hold_ms / 1000) + 10
        args = ["-sf", str(CALLER_SCENARIO), self.target, "-i", self.local_address,
                "-p", str(port), "-t", SIPP_TRANSPORT[self.transport],
                "-m", str(calls), "-r", f"{rate:g}", "-l", str(max_concurrent or calls),
                "-d", str(hold_ms), "-s", self.to_number, "-key", "from_number",
                self.from_number, "-recv_timeout", str(round(answer_timeout * 1000)),
                "-timeout", f"{max(1, round(budget))}s", "-max_recv_loops", MAX_LOOPS,
                "-trace_shortmsg", "-shortmessage_file", str(trace)]
        result = await run_sipp(args, directory, timeout=budget + 10)
        traced = _read_short_trace(trace)
        finals = Counter(c.final for c in traced.values() if c.final is not None)
        provisional = Counter(code for c in traced.values() for code in c.provisional)
        latencies = tuple(c.final_at - c.invite_sent for c in traced.values()
                          if c.final is not None and 200 <= c.final < 300
                          and c.final_at is not None and c.invite_sent is not None)
        return CallerResult(
            requested=calls,
            attempted=sum(1 for c in traced.values() if c.invite_sent is not None),
            successful=result.counter("SuccessfulCall(C)"),
            failed=result.counter("FailedCall(C)"),
            final_codes=dict(finals), provisional_codes=dict(provisional),
            unanswered=sum(1 for c in traced.values()
                           if c.invite_sent is not None and c.final is None),
            setup_latencies=latencies, sipp=result)
