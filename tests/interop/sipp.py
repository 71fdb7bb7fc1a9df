"""Run SIPp (the real SIP load/interop peer) from tests and read its statistics."""

from __future__ import annotations

import asyncio
import csv
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

import pytest

SCENARIOS = Path(__file__).parent / "scenarios"


def sipp_binary() -> str:
    """The sipp command, or skip when it is missing (./run installs it when root)."""
    path = shutil.which("sipp")
    if path is None:
        pytest.skip("sipp is not installed (Debian package sip-tester; ./run installs it)")
    return path


def free_port(kind: int = socket.SOCK_DGRAM, host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP on `host` at the time of asking."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, kind) as first:
            first.bind((host, 0))
            port = first.getsockname()[1]
            other = socket.SOCK_STREAM if kind == socket.SOCK_DGRAM else socket.SOCK_DGRAM
            with socket.socket(socket.AF_INET, other) as second:
                try:
                    second.bind((host, port))
                except OSError:
                    continue
                return int(port)
    raise RuntimeError("no free port found")


@dataclass(frozen=True)
class SippResult:
    """How a SIPp run ended: exit code, final statistics, and its logs."""

    returncode: int
    stats: dict[str, str]
    stdout: str
    errors: str

    def counter(self, name: str) -> int:
        """A cumulative counter such as `SuccessfulCall(C)`."""
        return int(self.stats.get(name, "0") or 0)

    def describe(self) -> str:
        """Everything useful when an assertion fails."""
        keys = ("SuccessfulCall(C)", "FailedCall(C)", "Retransmissions(C)",
                "FailedCallRegexpDoesntMatch(C)", "FailedUnexpectedMessage(C)",
                "FailedMaxUDPRetrans(C)", "FailedCallRejected(C)")
        summary = {k: self.stats.get(k) for k in keys}
        return f"rc={self.returncode} {summary}\nerrors:\n{self.errors[-3000:]}" \
               f"\nstdout:\n{self.stdout[-2000:]}"


async def run_sipp(args: list[str], workdir: Path, *, timeout: float = 60.0) -> SippResult:
    """Run sipp with `args` in `workdir` (non-interactive), collecting stats and errors."""
    stat_file = workdir / "stats.csv"
    err_file = workdir / "errors.log"
    cmd = [sipp_binary(), *args, "-nostdin", "-trace_stat", "-stf", str(stat_file),
           "-fd", "1", "-trace_err", "-error_file", str(err_file)]
    proc = await asyncio.create_subprocess_exec(
        *cmd, cwd=workdir, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
    rc = proc.returncode if proc.returncode is not None else -1
    return SippResult(rc, _last_stats(stat_file), out.decode(errors="replace"),
                      err_file.read_text(errors="replace") if err_file.exists() else "")


def _last_stats(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle, delimiter=";"))
    if len(rows) < 2:
        return {}
    return dict(zip(rows[0], rows[-1], strict=False))
