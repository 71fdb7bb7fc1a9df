"""Rules of the call-management applications' configuration (APP-1..APP-7).

Same contract as `trimaran.topology.rules` and `trimaran.topology.voice_rules`: each
check looks at the configuration (with its indexes, `_Apps`) and the topology (its
`Facts`), yields one violation per offending element with its path from the
document root (``call_park[0].orbits[1].first``...), never raises, and skips what
another check reports (a malformed number is reported once, by `_check_numbers`,
and ignored when looking for overlaps; an unknown pool is reported once).

`validate_apps(config, topology)` runs every check of the table `_CHECKS`, in order.

A number belongs to at most one application: orbit ranges, pickup ranges and
unassigned ranges do not overlap anywhere in the deployment, and a workflow's
number is in none of them (nor another workflow's); the second element is the one
reported, naming the first.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

from trimaran.apps.loader import DAYS
from trimaran.apps.model import (
    NUMBER_RE,
    Action,
    AppsConfig,
    BusinessHours,
    CallAction,
    Holiday,
    NumberRange,
    TimeWindow,
    split_number,
)
from trimaran.topology.errors import Violation
from trimaran.topology.model import PoolRole, Topology
from trimaran.topology.rules import Facts, error, warning
from trimaran.voice.model import aor_key

_AOR = re.compile(r"sip:([^@\s;:<>\"]+)@([^@\s;:<>\"]+)", re.IGNORECASE)
_URI = re.compile(r"(?:sips?:[^\s<>\"]+|tel:[+0-9*#][^\s<>\"]*)", re.IGNORECASE)
_SHA256 = re.compile(r"[0-9a-f]{64}")
_TIME = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])|24:00")
_NUMBER_FORM = "expected an E.164 number such as +14255550100, or * or # and 1 to 15 digits"
_URI_FORM = "a sip:, sips: or tel: URI"


# --- indexes ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Range:
    """A well-formed range (same prefix and length, first ≤ last) with where it is."""

    path: str
    what: str
    numbers: NumberRange
    prefix: str
    digits: int
    low: int
    high: int

    def overlaps(self, other: _Range) -> bool:
        return (self.prefix, self.digits) == (other.prefix, other.digits) \
            and self.low <= other.high and other.low <= self.high

    def describe(self) -> str:
        return f"{self.what} {self.numbers.first}..{self.numbers.last} ({self.path})"


def _ranges(config: AppsConfig) -> Iterator[tuple[str, str, NumberRange]]:
    """(path, what, range) of every number range, in document order."""
    for i, park in enumerate(config.call_park):
        for k, orbit in enumerate(park.orbits):
            yield f"call_park[{i}].orbits[{k}]", f"call park orbits of pool {park.pool}", orbit
    for i, pickup in enumerate(config.group_pickup):
        for k, numbers in enumerate(pickup.ranges):
            yield (f"group_pickup[{i}].ranges[{k}]", f"pickup range of pool {pickup.pool}",
                   numbers)
    for i, unassigned in enumerate(config.unassigned):
        yield f"unassigned[{i}].numbers", f"unassigned range {unassigned.name}", \
            unassigned.numbers


def _well_formed(path: str, what: str, numbers: NumberRange) -> _Range | None:
    low, high = split_number(numbers.first), split_number(numbers.last)
    if low is None or high is None or low[0] != high[0] or low[2] != high[2] \
            or low[1] > high[1]:
        return None
    return _Range(path, what, numbers, low[0], low[2], low[1], high[1])


@dataclass(frozen=True, slots=True)
class _Apps:
    """The configuration with its indexes: names of each kind, well-formed ranges."""

    config: AppsConfig
    audio: frozenset[str]
    queues: frozenset[str]
    agent_groups: frozenset[str]
    ranges: tuple[_Range, ...]

    @classmethod
    def of(cls, config: AppsConfig) -> _Apps:
        ranges = (_well_formed(*placed) for placed in _ranges(config))
        return cls(
            config,
            frozenset(a.name for a in config.audio),
            frozenset(q.name for q in config.queues),
            frozenset(g.name for g in config.agent_groups),
            tuple(r for r in ranges if r is not None),
        )


def validate_apps(config: AppsConfig, topology: Topology) -> list[Violation]:
    """Every violation of the application rules by `config` used with `topology`."""
    facts, apps = Facts(topology), _Apps.of(config)
    return [v for check in _CHECKS for v in check(facts, apps)]


# --- shared helpers -----------------------------------------------------------------


def _duplicates(named: Iterable[tuple[str, str]], kind: str) -> Iterator[Violation]:
    """(path, name) pairs: an error for each name already seen, ignoring case."""
    seen: dict[str, str] = {}
    for path, name in named:
        key = name.casefold()
        if key in seen:
            yield error(path, f"duplicate {kind} name {name!r} (first at {seen[key]})")
        else:
            seen[key] = path


def _audio_ref(apps: _Apps, path: str, name: str | None) -> Iterator[Violation]:
    if name is not None and name not in apps.audio:
        yield error(path, f"unknown audio {name!r}")


def _users(facts: Facts, path: str, aors: tuple[str, ...]) -> Iterator[Violation]:
    """Each AOR is ``sip:name@<sip_domain>``; one listed twice is a warning."""
    domain = facts.topology.sip_domain
    for k, aor in enumerate(aors):
        match = _AOR.fullmatch(aor)
        if match is None or match.group(2).casefold() != domain.casefold():
            yield error(f"{path}[{k}]", f"{aor!r} is not a user of {domain} "
                        f"(expected sip:name@{domain})")
        elif aor_key(aor) in (aor_key(a) for a in aors[:k]):
            yield warning(f"{path}[{k}]", f"{aor} is listed twice")


def _positive(path: str, key: str, value: float | None) -> Iterator[Violation]:
    if value is not None and value <= 0:
        yield error(f"{path}.{key}", f"{key} must be positive, got {value:g}")


_TARGETS = {
    Action.FORWARD: f"{_URI_FORM}, or a number",
    Action.VOICEMAIL: f"{_URI_FORM}, or a number",
    Action.QUEUE: "the name of a queue",
}


def _action(apps: _Apps, path: str, action: CallAction) -> Iterator[Violation]:
    """Forward and voicemail need a URI or number, queue an existing queue's name;
    disconnect takes no target; the announcement is a known audio file."""
    kind, target = action.action, action.target
    if kind is Action.DISCONNECT:
        if target is not None:
            yield error(f"{path}.target", f"action disconnect takes no target (got {target!r})")
    elif target is None:
        yield error(path, f"action {kind} needs a target ({_TARGETS[kind]})")
    elif kind is Action.QUEUE:
        if target not in apps.queues:
            yield error(f"{path}.target", f"unknown queue {target!r}")
    elif _URI.fullmatch(target) is None and NUMBER_RE.match(target) is None:
        yield error(f"{path}.target", f"{target!r} is not {_URI_FORM} nor a number")
    yield from _audio_ref(apps, f"{path}.announcement", action.announcement)


# --- names and owner pools ------------------------------------------------------------


def _check_names(facts: Facts, apps: _Apps) -> Iterator[Violation]:
    """Workflow, queue, agent group, unassigned range and audio names are unique among
    their kind across the deployment, ignoring case (APP-3)."""
    c = apps.config
    kinds: tuple[tuple[str, str, tuple[str, ...]], ...] = (
        ("audio", "audio", tuple(a.name for a in c.audio)),
        ("unassigned", "unassigned range", tuple(u.name for u in c.unassigned)),
        ("agent_groups", "agent group", tuple(g.name for g in c.agent_groups)),
        ("queues", "queue", tuple(q.name for q in c.queues)),
        ("workflows", "workflow", tuple(w.name for w in c.workflows)),
    )
    for key, kind, names in kinds:
        yield from _duplicates(((f"{key}[{i}].name", n) for i, n in enumerate(names)), kind)


def _check_pools(facts: Facts, apps: _Apps) -> Iterator[Violation]:
    """Owner pools exist and are Front End pools; a pool has at most one call park and
    one group pickup entry."""
    c = apps.config
    owners = (
        *((f"call_park[{i}].pool", p.pool) for i, p in enumerate(c.call_park)),
        *((f"group_pickup[{i}].pool", p.pool) for i, p in enumerate(c.group_pickup)),
        *((f"unassigned[{i}].pool", u.pool) for i, u in enumerate(c.unassigned)),
        *((f"workflows[{i}].pool", w.pool) for i, w in enumerate(c.workflows)),
    )
    for path, name in owners:
        pool = facts.pool(name)
        if pool is None:
            yield error(path, f"unknown pool {name!r}")
        elif pool.role is not PoolRole.FRONTEND:
            yield error(path, f"{pool.name} is a {pool.role} pool, not a Front End pool")
    for key, service, pools in (
        ("call_park", "call park service", tuple(p.pool for p in c.call_park)),
        ("group_pickup", "group pickup entry", tuple(p.pool for p in c.group_pickup)),
    ):
        first: dict[str, int] = {}
        for i, name in enumerate(pools):
            k = first.setdefault(name, i)
            if k != i:
                yield error(f"{key}[{i}].pool",
                            f"pool {name} already has a {service} ({key}[{k}])")


# --- numbers (APP-1, APP-3, APP-5, APP-6) -----------------------------------------------


def _number(path: str, number: str) -> Iterator[Violation]:
    if NUMBER_RE.match(number) is None:
        yield error(path, f"{number!r} is not a number ({_NUMBER_FORM})")


def _check_numbers(facts: Facts, apps: _Apps) -> Iterator[Violation]:
    """Range ends, pickup group numbers and workflow numbers are app numbers; a range's
    ends have the same prefix and length, and first ≤ last."""
    c = apps.config
    for path, _, numbers in _ranges(c):
        yield from _number(f"{path}.first", numbers.first)
        yield from _number(f"{path}.last", numbers.last)
        low, high = split_number(numbers.first), split_number(numbers.last)
        if low is None or high is None:
            continue
        if (low[0], low[2]) != (high[0], high[2]):
            yield error(f"{path}.last", f"last {numbers.last} does not have the prefix and "
                        f"length of first {numbers.first}")
        elif low[1] > high[1]:
            yield error(f"{path}.last", f"last {numbers.last} comes before first "
                        f"{numbers.first}")
    for i, pickup in enumerate(c.group_pickup):
        for j, group in enumerate(pickup.groups):
            yield from _number(f"group_pickup[{i}].groups[{j}].number", group.number)
    for i, workflow in enumerate(c.workflows):
        yield from _number(f"workflows[{i}].number", workflow.number)


def _check_overlaps(facts: Facts, apps: _Apps) -> Iterator[Violation]:
    """No number belongs to two applications: well-formed ranges do not overlap, a
    workflow number is in no range and is not another workflow's."""
    for k, numbers in enumerate(apps.ranges):
        other = next((r for r in apps.ranges[:k] if r.overlaps(numbers)), None)
        if other is not None:
            yield error(numbers.path, f"{numbers.what} {numbers.numbers.first}.."
                        f"{numbers.numbers.last} overlaps {other.describe()}")
    first: dict[str, int] = {}
    for i, workflow in enumerate(apps.config.workflows):
        path, number = f"workflows[{i}].number", workflow.number
        if NUMBER_RE.match(number) is None:
            continue
        owner = next((r for r in apps.ranges if number in r.numbers), None)
        if owner is not None:
            yield error(path, f"number {number} of workflow {workflow.name} is in "
                        f"{owner.describe()}")
        k = first.setdefault(number, i)
        if k != i:
            yield error(path, f"number {number} of workflow {workflow.name} is already the "
                        f"number of workflow {apps.config.workflows[k].name} "
                        f"(workflows[{k}].number)")


# --- Call Park and group pickup (APP-1, APP-6) ----------------------------------------------


def _check_call_park(facts: Facts, apps: _Apps) -> Iterator[Violation]:
    """A call park service has orbits, positive timeout and ring-back, a non-negative
    number of pickup attempts, a known music-on-hold file, a URI to time out to."""
    for i, park in enumerate(apps.config.call_park):
        path = f"call_park[{i}]"
        if not park.orbits:
            yield error(f"{path}.orbits", "call park without orbit range")
        yield from _positive(path, "timeout_seconds", park.timeout_seconds)
        yield from _positive(path, "ring_back_seconds", park.ring_back_seconds)
        if park.max_pickup_attempts < 0:
            yield error(f"{path}.max_pickup_attempts", f"max_pickup_attempts must be 0 or "
                        f"more, got {park.max_pickup_attempts}")
        yield from _audio_ref(apps, f"{path}.music_on_hold", park.music_on_hold)
        if park.timeout_uri is not None and _URI.fullmatch(park.timeout_uri) is None:
            yield error(f"{path}.timeout_uri", f"{park.timeout_uri!r} is not {_URI_FORM}")


def _check_group_pickup(facts: Facts, apps: _Apps) -> Iterator[Violation]:
    """A group pickup entry has ranges; each group's number is in one of them and
    belongs to one group; members are users of the domain, each in one group only."""
    numbers: dict[str, str] = {}
    members: dict[str, str] = {}
    for i, pickup in enumerate(apps.config.group_pickup):
        if not pickup.ranges:
            yield error(f"group_pickup[{i}].ranges", "group pickup without number range")
        for j, group in enumerate(pickup.groups):
            path = f"group_pickup[{i}].groups[{j}]"
            if NUMBER_RE.match(group.number) is not None:
                if not any(group.number in r for r in pickup.ranges):
                    yield error(f"{path}.number", f"number {group.number} is not in a pickup "
                                f"range of pool {pickup.pool} (group_pickup[{i}].ranges)")
                if group.number in numbers:
                    yield error(f"{path}.number", f"number {group.number} is already the "
                                f"number of the pickup group at {numbers[group.number]}")
                numbers.setdefault(group.number, path)
            if not group.members:
                yield warning(f"{path}.members", f"pickup group {group.number} has no member")
            yield from _users(facts, f"{path}.members", group.members)
            yield from _members_once(f"{path}.members", group.members, members)


def _members_once(path: str, aors: tuple[str, ...],
                  seen: dict[str, str]) -> Iterator[Violation]:
    mine: set[str] = set()
    for k, aor in enumerate(aors):
        key = aor_key(aor)
        if key in seen and key not in mine:
            yield error(f"{path}[{k}]", f"{aor} is already a member of the pickup group at "
                        f"{seen[key]}")
        elif key not in seen:
            seen[key] = f"{path}[{k}]"
            mine.add(key)


# --- unassigned numbers (APP-5) ------------------------------------------------------------


def _check_unassigned(facts: Facts, apps: _Apps) -> Iterator[Violation]:
    """An unassigned range's announcement is a known audio file; its action is valid."""
    for i, unassigned in enumerate(apps.config.unassigned):
        yield from _audio_ref(apps, f"unassigned[{i}].announcement", unassigned.announcement)
        yield from _action(apps, f"unassigned[{i}].then", unassigned.then)


# --- Response Groups (APP-3) ------------------------------------------------------------------


def _check_agent_groups(facts: Facts, apps: _Apps) -> Iterator[Violation]:
    """An agent group has agents, users of the domain, and offers calls for a positive
    time; one no queue uses is a warning."""
    used = {g for q in apps.config.queues for g in q.agent_groups}
    for i, group in enumerate(apps.config.agent_groups):
        path = f"agent_groups[{i}]"
        if not group.agents:
            yield error(f"{path}.agents", "agent group without agent")
        yield from _users(facts, f"{path}.agents", group.agents)
        yield from _positive(path, "alert_seconds", group.alert_seconds)
        if group.name not in used:
            yield warning(path, f"agent group {group.name} is used by no queue")


def _call_actions(config: AppsConfig) -> Iterator[tuple[str, CallAction]]:
    """(path, action) of every call action, in document order."""
    for i, unassigned in enumerate(config.unassigned):
        yield f"unassigned[{i}].then", unassigned.then
    for i, queue in enumerate(config.queues):
        yield f"queues[{i}].timeout_action", queue.timeout_action
        yield f"queues[{i}].overflow_action", queue.overflow_action
    for i, workflow in enumerate(config.workflows):
        yield f"workflows[{i}].closed_action", workflow.closed_action
        yield f"workflows[{i}].holiday_action", workflow.holiday_action


def _check_queues(facts: Facts, apps: _Apps) -> Iterator[Violation]:
    """A queue has agent groups, each existing; its timeout and overflow limit are
    positive when set; its actions are valid. One that no workflow (nor a call
    action) sends calls to is a warning."""
    c = apps.config
    used = {w.queue for w in c.workflows}
    used.update(a.target for _, a in _call_actions(c)
                if a.action is Action.QUEUE and a.target is not None)
    for i, queue in enumerate(c.queues):
        path = f"queues[{i}]"
        if not queue.agent_groups:
            yield error(f"{path}.agent_groups", "queue without agent group")
        for k, name in enumerate(queue.agent_groups):
            if name not in apps.agent_groups:
                yield error(f"{path}.agent_groups[{k}]", f"unknown agent group {name!r}")
        yield from _positive(path, "timeout_seconds", queue.timeout_seconds)
        yield from _positive(path, "overflow_calls", queue.overflow_calls)
        yield from _action(apps, f"{path}.timeout_action", queue.timeout_action)
        yield from _action(apps, f"{path}.overflow_action", queue.overflow_action)
        if queue.name not in used:
            yield warning(path, f"queue {queue.name} is used by no workflow nor call action")


def _check_workflows(facts: Facts, apps: _Apps) -> Iterator[Violation]:
    """A workflow's queue exists, its welcome is a known audio file, its business hours
    and holidays are well formed, its actions valid."""
    for i, workflow in enumerate(apps.config.workflows):
        path = f"workflows[{i}]"
        if workflow.queue not in apps.queues:
            yield error(f"{path}.queue", f"unknown queue {workflow.queue!r}")
        yield from _audio_ref(apps, f"{path}.welcome", workflow.welcome)
        if workflow.business_hours is not None:
            yield from _business_hours(f"{path}.business_hours", workflow.business_hours)
        for k, holiday in enumerate(workflow.holidays):
            yield from _holiday(f"{path}.holidays[{k}]", holiday)
        yield from _action(apps, f"{path}.closed_action", workflow.closed_action)
        yield from _action(apps, f"{path}.holiday_action", workflow.holiday_action)


def _business_hours(path: str, hours: BusinessHours) -> Iterator[Violation]:
    """A known time zone; days among mon..sun, each once; each day's windows valid and
    not overlapping."""
    try:
        zoneinfo.ZoneInfo(hours.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        yield error(f"{path}.timezone", f"unknown time zone {hours.timezone!r}")
    seen: set[str] = set()
    for day, windows in hours.days:
        day_path = f"{path}.days.{day}"
        if day not in DAYS:
            yield error(day_path, f"unknown day {day!r} (expected one of: {', '.join(DAYS)})")
        elif day in seen:
            yield error(day_path, f"day {day} is listed twice")
        seen.add(day)
        yield from _windows(day_path, windows)


def _minutes(time: str) -> int | None:
    match = _TIME.fullmatch(time)
    if match is None:
        return None
    return 24 * 60 if match.group(1) is None else int(match.group(1)) * 60 + int(match[2])


def _windows(path: str, windows: tuple[TimeWindow, ...]) -> Iterator[Violation]:
    valid: list[tuple[int, int, int]] = []
    for k, window in enumerate(windows):
        start, end = _minutes(window.start), _minutes(window.end)
        for key, text, value in (("start", window.start, start), ("end", window.end, end)):
            if value is None:
                yield error(f"{path}[{k}].{key}",
                            f"{text!r} is not a time HH:MM from 00:00 to 24:00")
        if start is None or end is None:
            continue
        if start >= end:
            yield error(f"{path}[{k}].end", f"end {window.end} is not after start "
                        f"{window.start}")
            continue
        other = next((j for j, s, e in valid if s < end and start < e), None)
        if other is not None:
            yield error(f"{path}[{k}]", f"window {window.start}-{window.end} overlaps "
                        f"{windows[other].start}-{windows[other].end} ({path}[{other}])")
        valid.append((k, start, end))


def _holiday(path: str, holiday: Holiday) -> Iterator[Violation]:
    """Start and end are local ISO dates or date-times, start ≤ end."""
    bounds: list[datetime] = []
    for key, text in (("start", holiday.start), ("end", holiday.end)):
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            yield error(f"{path}.{key}", f"{text!r} is not an ISO date or date-time "
                        f"(2026-12-25 or 2026-12-25T12:00)")
            continue
        if moment.tzinfo is not None:
            yield error(f"{path}.{key}", f"{text!r} has a UTC offset; a holiday is in the "
                        f"local time of its workflow")
            continue
        bounds.append(moment)
    if len(bounds) == 2 and bounds[0] > bounds[1]:
        yield error(f"{path}.end", f"end {holiday.end} is before start {holiday.start}")


# --- audio ------------------------------------------------------------------------------------


def _audio_uses(config: AppsConfig) -> set[str]:
    used = {a.announcement for _, a in _call_actions(config) if a.announcement is not None}
    used.update(p.music_on_hold for p in config.call_park if p.music_on_hold is not None)
    used.update(u.announcement for u in config.unassigned if u.announcement is not None)
    used.update(w.welcome for w in config.workflows if w.welcome is not None)
    return used


def _check_audio(facts: Facts, apps: _Apps) -> Iterator[Violation]:
    """An audio file is named by its SHA-256 (64 lowercase hex digits); one nothing
    plays is a warning."""
    used = _audio_uses(apps.config)
    for i, audio in enumerate(apps.config.audio):
        if _SHA256.fullmatch(audio.sha256) is None:
            yield error(f"audio[{i}].sha256", f"sha256 of audio {audio.name} must be 64 "
                        f"lowercase hexadecimal digits, got {audio.sha256!r}")
        if audio.name not in used:
            yield warning(f"audio[{i}]", f"audio {audio.name} is used by nothing")


_CHECKS: tuple[Callable[[Facts, _Apps], Iterator[Violation]], ...] = (
    _check_names,
    _check_pools,
    _check_numbers,
    _check_overlaps,
    _check_call_park,
    _check_group_pickup,
    _check_unassigned,
    _check_agent_groups,
    _check_queues,
    _check_workflows,
    _check_audio,
)

__all__ = ["validate_apps"]
