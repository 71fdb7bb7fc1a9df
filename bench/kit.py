"""Small pieces every benchmark uses: its work directory, quantiles, failure counts."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def workspace(name: str, keep: bool) -> Iterator[Path]:
    """A fresh work directory for bench `name`, removed afterwards unless `keep` or the
    bench failed (then its path is printed: the run directory and logs are in it)."""
    path = Path(tempfile.mkdtemp(prefix=f"trimaran-bench-{name}-"))
    failed = True
    try:
        yield path
        failed = False
    finally:
        if keep or failed:
            print(f"work directory kept: {path}", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)


def quantile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank quantile, None without values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def int_list(text: str) -> tuple[int, ...]:
    """"1,2,5" -> (1, 2, 5) (a command-line list)."""
    return tuple(int(v) for v in text.split(",") if v.strip())


def why(failures: Mapping[str, int]) -> str:
    """"0", or the count of failures with each reason's count."""
    if not failures:
        return "0"
    return f"{sum(failures.values())} (" + ", ".join(
        f"{n} {reason}" for reason, n in sorted(failures.items())) + ")"


class BenchError(Exception):
    """The bench cannot go on (the deployment did not start, a check or wait failed)."""


class BenchDeployment:
    """A deployment a bench runs with the `trimaran` CLI in `work/run`."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.rundir = work / "run"
        # `up` remembers its run directory in ~/.trimaran-last-dir: not the real home's
        self.env = {**os.environ, "HOME": str(work)}
        self.started = False

    def cli(self, *args: str, timeout: float = 120.0,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        """`trimaran ARGS --dir RUNDIR` (except for `up`, which names it itself)."""
        command = [sys.executable, "-m", "trimaran", *args]
        if args[0] != "up":
            command += ["--dir", str(self.rundir)]
        done = subprocess.run(command, cwd=ROOT, env=self.env, capture_output=True, text=True,
                              timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise BenchError(f"trimaran {' '.join(args)} failed ({done.returncode}):\n"
                             f"{done.stdout}\n{done.stderr}")
        return done
