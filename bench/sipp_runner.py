"""Run SIPp from a benchmark (non-interactive) and read what it measured.

A bench-local sibling of `tests/interop/sipp.py`, without pytest: `run_sipp` runs one
SIPp load to completion and returns its last statistics row, its response times
(`-trace_rtt`) and the CPU it used; `BackgroundSipp` keeps a SIPp UAS running for the
whole of a measurement. Every process is started in its own session so that it can be
ended (with its group) from `finally` blocks, Ctrl-C or not.
"""

from __future__ import annotations

import contextlib
import csv
import os
import resource
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

SCENARIOS = Path(__file__).parent / "scenarios"


def sipp_binary() -> str:
    """The sipp command (Debian package sip-tester), or an error naming the package."""
    path = shutil.which("sipp")
    if path is None:
        raise RuntimeError("sipp is not installed (Debian package sip-tester)")
    return path


def sipp_version() -> str:
    """`sipp -v` reduced to its version line."""
    out = subprocess.run([sipp_binary(), "-v"], capture_output=True, text=True, check=False)
    for line in (out.stdout + out.stderr).splitlines():
        if "SIPp v" in line:
            return line.strip()
    return "sipp (unknown version)"


def free_port(host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP on `host` at the time of asking."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as first:
            first.bind((host, 0))
            port = int(first.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as second:
                try:
                    second.bind((host, port))
                except OSError:
                    continue
                return port
    raise RuntimeError(f"no free port found on {host}")


def end_process(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM the process group of `proc`, then SIGKILL it if it lingers; reap it."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


@dataclass(frozen=True)
class SippResult:
    """How one SIPp run ended and what it measured."""

    returncode: int
    stats: dict[str, str]
    output: str
    errors: str
    wall_seconds: float
    cpu_seconds: float              # SIPp's own user+system CPU
    timed_out: bool
    # per successful call: (when it ended, ms since SIPp started; its response time, ms)
    rtts: list[tuple[float, float]] = field(default_factory=list)

    @property
    def rtts_ms(self) -> list[float]:
        """The response times (ms) of the calls traced."""
        return [rtt for _, rtt in self.rtts]

    def completion_rate(self, start_ms: float, end_ms: float) -> float | None:
        """Calls completed per second between `start_ms` and `end_ms` (ms since SIPp
        started), from the `-trace_rtt` trace; None without a trace or a window."""
        if not self.rtts or end_ms <= start_ms:
            return None
        done = sum(1 for when, _ in self.rtts if start_ms <= when <= end_ms)
        return 1000.0 * done / (end_ms - start_ms)

    def counter(self, name: str) -> int:
        """A cumulative counter such as `SuccessfulCall(C)` (0 when absent)."""
        try:
            return int(self.stats.get(name, "0") or 0)
        except ValueError:
            return 0

    @property
    def elapsed_seconds(self) -> float:
        """SIPp's own `ElapsedTime(C)` (HH:MM:SS:usec), else the wall time of the run."""
        text = self.stats.get("ElapsedTime(C)", "")
        parts = text.split(":")
        if len(parts) == 4 and all(p.isdigit() for p in parts):
            hours, minutes, seconds, micros = (int(p) for p in parts)
            return hours * 3600 + minutes * 60 + seconds + micros / 1e6
        return self.wall_seconds

    def describe(self) -> str:
        """The counters and log tails worth showing when a run went wrong."""
        keys = ("SuccessfulCall(C)", "FailedCall(C)", "Retransmissions(C)",
                "FailedMaxUDPRetrans(C)", "FailedUnexpectedMessage(C)",
                "FailedCallRejected(C)", "FailedRegexpDoesntMatch(C)")
        summary = {k: self.stats.get(k) for k in keys}
        return (f"rc={self.returncode} timed_out={self.timed_out} {summary}\n"
                f"errors:\n{self.errors[-2000:]}\noutput:\n{self.output[-1000:]}")


def run_sipp(args: list[str], workdir: Path, *, timeout: float,
             trace_rtt: bool = False) -> SippResult:
    """Run sipp with `args` in `workdir` until it ends (killed after `timeout` seconds)."""
    workdir.mkdir(parents=True, exist_ok=True)
    stat_file, err_file = workdir / "stats.csv", workdir / "errors.log"
    for stale in (stat_file, err_file, *workdir.glob("*_rtt.csv")):
        stale.unlink(missing_ok=True)
    cmd = [sipp_binary(), *args, "-nostdin", "-trace_stat", "-stf", str(stat_file),
           "-fd", "1", "-trace_err", "-error_file", str(err_file)]
    if trace_rtt:
        cmd += ["-trace_rtt", "-rtt_freq", "100"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    out_path = workdir / "sipp.out"
    with out_path.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=workdir, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        timed_out = False
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            end_process(proc, grace=2.0)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return SippResult(
        returncode=proc.returncode if proc.returncode is not None else -1,
        stats=last_stats(stat_file), output=out_path.read_text(errors="replace"),
        errors=err_file.read_text(errors="replace") if err_file.exists() else "",
        wall_seconds=wall, cpu_seconds=cpu, timed_out=timed_out,
        rtts=read_rtts(workdir) if trace_rtt else [])


def last_stats(path: Path) -> dict[str, str]:
    """The last row of a `-trace_stat` file, by column name."""
    if not path.exists():
        return {}
    with path.open(newline="", errors="replace") as handle:
        rows = [row for row in csv.reader(handle, delimiter=";") if row]
    if len(rows) < 2:
        return {}
    return dict(zip(rows[0], rows[-1], strict=False))


def read_rtts(workdir: Path) -> list[tuple[float, float]]:
    """(end of call in ms since SIPp started, response time in ms) per call, from the
    `-trace_rtt` files SIPp wrote in `workdir`."""
    values: list[tuple[float, float]] = []
    for path in workdir.glob("*_rtt.csv"):
        with path.open(newline="", errors="replace") as handle:
            for row in csv.reader(handle, delimiter=";"):
                if len(row) >= 2:
                    with contextlib.suppress(ValueError):
                        values.append((float(row[0]), float(row[1])))
    return values


def percentile(values: list[float], fraction: float) -> float | None:
    """The `fraction` (0..1) percentile by nearest rank; None without values."""
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[index]


class BackgroundSipp:
    """A SIPp (normally a UAS) running until `stop()`; use as a context manager."""

    def __init__(self, args: list[str], workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start SIPp; raise if it exits at once (bad arguments, port taken)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        cmd = [sipp_binary(), *self.args, "-nostdin", "-trace_err",
               "-error_file", str(self.workdir / "errors.log")]
        with (self.workdir / "sipp.out").open("wb") as out:
            self.proc = subprocess.Popen(cmd, cwd=self.workdir, stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        time.sleep(0.3)
        if self.proc.poll() is not None:
            output = (self.workdir / "sipp.out").read_text(errors="replace")
            raise RuntimeError(f"background sipp exited at once:\n{output[-2000:]}")

    def stop(self) -> None:
        """End SIPp (and its process group)."""
        if self.proc is not None:
            end_process(self.proc)

    def __enter__(self) -> BackgroundSipp:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
