"""What a drill measured: per step the times to detect and to recover, the
acknowledged changes lost, the failed requests and the users not recovered, each
checked against its SPEC target; and the timeline of everything that happened.
Rendered as JSON (`--json`, `--report FILE.json`) or Markdown (`--report FILE.md`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Target:
    """One measured value against its bound (`limit` None: reported, not judged)."""

    what: str
    measured: float | None
    limit: float | None
    unit: str = "s"
    spec: str = ""

    @property
    def ok(self) -> bool:
        """Reached, and within the bound when there is one."""
        if self.measured is None:
            return False
        return self.limit is None or self.measured <= self.limit

    def to_json(self) -> dict[str, Any]:
        """The JSON form."""
        return {"what": self.what, "measured": self.measured, "limit": self.limit,
                "unit": self.unit, "spec": self.spec, "ok": self.ok}


@dataclass
class Step:
    """One step of a scenario: a fault, or a recovery action, and what followed."""

    name: str
    what: str
    started: float                        # seconds since the drill started
    ended: float | None = None
    detect: float | None = None           # seconds from the fault to its detection
    recover: float | None = None          # seconds from the fault to recovery (RTO)
    acked_checked: int = 0
    lost: int = 0
    lost_examples: list[str] = field(default_factory=list)
    requests: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    failure_reasons: dict[str, int] = field(default_factory=dict)
    not_recovered: list[str] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Every target of the step met."""
        return all(t.ok for t in self.targets)

    def to_json(self) -> dict[str, Any]:
        """The JSON form."""
        return {"name": self.name, "what": self.what, "started": self.started,
                "ended": self.ended, "detect_seconds": self.detect,
                "rto_seconds": self.recover, "acked_checked": self.acked_checked,
                "lost": self.lost, "lost_examples": self.lost_examples,
                "requests": self.requests, "failed": self.failed,
                "failure_reasons": self.failure_reasons,
                "users_not_recovered": len(self.not_recovered),
                "users_not_recovered_examples": self.not_recovered[:10],
                "targets": [t.to_json() for t in self.targets], "notes": self.notes,
                "passed": self.passed}


@dataclass
class Report:
    """A whole drill."""

    scenario: str
    summary: str
    procedure: list[str]
    deployment: str
    users: int
    rates: dict[str, float]
    started_at: float                     # wall clock
    steps: list[Step] = field(default_factory=list)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    duration: float = 0.0
    aborted: str | None = None

    @property
    def passed(self) -> bool:
        """The drill ran to its end and every step met its targets."""
        return self.aborted is None and bool(self.steps) and all(s.passed for s in self.steps)

    def to_json(self) -> dict[str, Any]:
        """The JSON form."""
        return {"scenario": self.scenario, "summary": self.summary,
                "procedure": self.procedure, "deployment": self.deployment,
                "users": self.users, "rates": self.rates, "started_at": self.started_at,
                "duration": self.duration, "aborted": self.aborted, "passed": self.passed,
                "steps": [s.to_json() for s in self.steps], "timeline": self.timeline}

    def dumps(self) -> str:
        """Indented JSON text."""
        return json.dumps(self.to_json(), indent=2, sort_keys=False)

    def markdown(self) -> str:
        """The report as Markdown: procedure, a table per step, the timeline."""
        verdict = "PASSED" if self.passed else \
            ("ABORTED: " + self.aborted if self.aborted else "FAILED")
        lines = [f"# Drill `{self.scenario}`: {verdict}", "", self.summary, "",
                 f"- deployment: {self.deployment}; {self.users} simulated users; load "
                 + ", ".join(f"{k} {v:g}/s" for k, v in self.rates.items()),
                 f"- duration: {self.duration:.1f} s", "", "## Procedure", ""]
        lines += [f"{i}. {text}" for i, text in enumerate(self.procedure, 1)]
        for step in self.steps:
            lines += ["", f"## Step `{step.name}`: {'passed' if step.passed else 'FAILED'}",
                      "", step.what, "", "| measure | value | target | ok |",
                      "|---|---|---|---|"]
            lines += [f"| {t.what} | {_value(t.measured, t.unit)} | "
                      f"{_limit(t)} | {'yes' if t.ok else 'NO'} |" for t in step.targets]
            if step.detect is not None:
                lines.append(f"| time to detect | {_value(step.detect, 's')} | - | - |")
            lines.append(f"| acknowledged changes checked / lost | {step.acked_checked} / "
                         f"{step.lost} | - | - |")
            lines.append(f"| requests / failed | {_counts(step.requests)} / "
                         f"{_counts(step.failed)} | - | - |")
            lines.append(f"| users not recovered | {len(step.not_recovered)} | - | - |")
            if step.failure_reasons:
                lines += ["", "Failures: " + ", ".join(
                    f"{why} x{n}" for why, n in sorted(step.failure_reasons.items()))]
            if step.lost_examples:
                lines += ["", "Lost, e.g.: " + ", ".join(step.lost_examples)]
            lines += [f"- note: {n}" for n in step.notes]
        lines += ["", "## Timeline", "", "| t (s) | event | |", "|---|---|---|"]
        lines += [f"| {e['at']:.2f} | {e['kind']} | {e['text']} |" for e in self.timeline]
        return "\n".join(lines) + "\n"


def _value(value: float | None, unit: str) -> str:
    if value is None:
        return "not reached"
    if unit == "s":
        return f"{value:.2f} s"
    return f"{value:g}{(' ' + unit) if unit else ''}"


def _limit(target: Target) -> str:
    if target.limit is None:
        return "-"
    bound = f"<= {_value(target.limit, target.unit)}"
    return f"{bound} ({target.spec})" if target.spec else bound


def _counts(counts: dict[str, int]) -> str:
    if not counts:
        return "0"
    return ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items()))
