"""Running `trimaran drill` against a deployment started with `trimaran up`, for the
drill tests: the report parsed, every target of every step checked."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.integration.drpair import trimaran

USERS, RATE = "20", "20"


@contextmanager
def deployment(tmp: Path, topology: str) -> Iterator[Path]:
    """`trimaran up` the topology in `tmp`; `down` afterwards."""
    (tmp / "topology.yaml").write_text(topology)
    rundir = tmp / "run"
    trimaran("up", str(tmp / "topology.yaml"), "--dir", str(rundir), timeout=180)
    try:
        yield rundir
    finally:
        trimaran("down", "--dir", str(rundir), check=False)


def drill(rundir: Path, scenario: str, *more: str) -> dict[str, Any]:
    """Run a drill at small scale; its JSON report. Fails with the drill's own output
    (the timeline, what missed) when the drill did not pass."""
    result = trimaran("drill", scenario, "--dir", str(rundir), "--users", USERS,
                      "--rate", RATE, "--json", *more, check=False, timeout=400)
    try:
        report = json.loads(result.stdout)
    except ValueError:
        raise AssertionError(f"drill {scenario}: no JSON report (exit {result.returncode})"
                             f"\n{result.stdout}\n{result.stderr}") from None
    missed = [f"{s['name']}: {t['what']} = {t['measured']} (limit {t['limit']}, {t['spec']})"
              for s in report["steps"] for t in s["targets"] if not t["ok"]]
    assert result.returncode == 0 and report["passed"], (
        f"drill {scenario} did not pass (exit {result.returncode}); aborted: "
        f"{report['aborted']}; missed: {missed}\n{result.stderr[-4000:]}")
    return report


def step(report: dict[str, Any], name: str) -> dict[str, Any]:
    """The step of that name."""
    found = [s for s in report["steps"] if s["name"] == name]
    assert found, f"no step {name!r} in {[s['name'] for s in report['steps']]}"
    return found[0]


def target(report: dict[str, Any], step_name: str, spec: str, words: str) -> dict[str, Any]:
    """The target of a step citing `spec` whose description contains `words`."""
    for candidate in step(report, step_name)["targets"]:
        if candidate["spec"] == spec and words in candidate["what"]:
            return candidate  # type: ignore[no-any-return]
    raise AssertionError(f"no {spec} target about {words!r} in step {step_name}")
