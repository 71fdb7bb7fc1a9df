"""Violations of the topology rules and the one exception that carries them (TOP-2).

Every problem found in a topology — a YAML syntax error, an unknown key, a wrong
type, a broken rule — is a `Violation` with the path of the offending element.
Paths use one style everywhere: keys joined by dots, list items by their index in
the file, e.g. ``pools[1].servers[0].address`` or ``settings.keepalive_seconds``.
The empty path is the document itself. `line` is the 1-based line in the YAML
file when it is known.

`TopologyError` is the root of every error raised by `trimaran.topology`; it always
lists every violation found, never just the first.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken rule: where (`path`, `line`), what (`message`), how bad (`severity`).

    Errors make a topology unusable (`trimaran topology validate` exits 1);
    warnings are reported but do not stop a deployment.
    """

    path: str
    message: str
    severity: Severity = "error"
    line: int | None = None

    @property
    def is_error(self) -> bool:
        """True when this violation makes the topology invalid."""
        return self.severity == "error"

    def __str__(self) -> str:
        where = self.path or "(document)"
        if self.line is not None:
            where = f"{where} (line {self.line})"
        return f"{self.severity}: {where}: {self.message}"


def has_errors(violations: Iterable[Violation]) -> bool:
    """True when at least one violation is an error (warnings alone are acceptable)."""
    return any(v.is_error for v in violations)


def format_violations(violations: Sequence[Violation]) -> str:
    """Human-readable report: errors first, then warnings, then a count line.

    The order within each severity is the order in which they were found, which
    follows the file for loader violations and the rule table for rule violations.
    """
    if not violations:
        return "no violations"
    errors = [v for v in violations if v.is_error]
    warnings = [v for v in violations if not v.is_error]
    lines = [str(v) for v in (*errors, *warnings)]
    lines.append(f"{_count(len(errors), 'error')}, {_count(len(warnings), 'warning')}")
    return "\n".join(lines)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


class TopologyError(Exception):
    """A topology could not be loaded or is invalid; `violations` lists every problem.

    `source` names where the topology came from (a file path or ``<text>``).
    """

    def __init__(self, violations: Sequence[Violation], source: str = "<topology>") -> None:
        self.violations: list[Violation] = list(violations)
        self.source = source
        super().__init__(self.violations)

    def __str__(self) -> str:
        return f"{self.source}: invalid topology\n{format_violations(self.violations)}"


class UnknownNameError(TopologyError, LookupError):
    """A resolver lookup named a site, pool or server that the topology does not have."""

    def __init__(self, kind: str, name: str) -> None:
        self.kind = kind
        self.name = name
        super().__init__([Violation("", f"no {kind} named {name!r}")])

    def __str__(self) -> str:
        return f"no {self.kind} named {self.name!r}"
