"""Small pieces every benchmark uses: its work directory, quantiles, failure counts."""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path


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
