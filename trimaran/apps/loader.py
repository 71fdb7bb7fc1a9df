"""Strict YAML → `AppsConfig` loading (APP-1..APP-7), and back.

The applications' configuration is one YAML document (the CMS document ``apps``,
`trimaran apps publish FILE`) whose top-level keys are the fields of `AppsConfig`.
`read_apps` reports violations the same way as the topology and voice loaders
(`trimaran.topology.loadkit`), with paths from the document root
(``call_park[0].orbits[1].first``, ``workflows[2].business_hours.days.mon[0].start``):
unknown keys (with a "did you mean"), wrong types and missing keys, never coerced,
all of them in one pass. Only structure is checked here; the rules are
`trimaran.apps.rules`.

Two YAML traps are worth a word in messages: an unquoted ``13:00`` is a number
(sexagesimal 780) and an unquoted ``+14255550100`` is an integer, so times and
numbers must be quoted strings; an unquoted ``*7000`` is an alias (refused) and an
unquoted ``#7000`` a comment.

In YAML, `BusinessHours.days` is a mapping of day name (``mon`` … ``sun``) to its
list of windows; in the model it is a tuple of (day, windows) pairs in the order of
the mapping.

`dump_apps` writes a configuration as YAML that `read_apps` loads back to an equal
configuration (how it is stored as a CMS document).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from trimaran.apps.model import (
    Action,
    AgentGroup,
    AppsConfig,
    Audio,
    BusinessHours,
    CallAction,
    CallPark,
    GroupPickup,
    Holiday,
    NumberRange,
    PickupGroup,
    Queue,
    RoutingMethod,
    TimeWindow,
    UnassignedRange,
    Workflow,
)
from trimaran.topology.errors import Violation
from trimaran.topology.loadkit import (
    Context,
    Fields,
    Invalid,
    as_bool,
    as_int,
    as_number,
    as_str,
    as_str_list,
    bad,
    dump_yaml,
    enum_of,
    is_path,
    line_of,
    list_of,
    parse_yaml,
    read_text,
)

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

APPS_ROOT = ""
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DOCUMENT = "call-management configuration"


@dataclass(frozen=True, slots=True)
class AppsLoad:
    """What `read_apps` found: the configuration (None when it could not be built),
    the loader's violations, and the 1-based line of each path present in the file."""

    config: AppsConfig | None
    violations: tuple[Violation, ...]
    lines: Mapping[str, int] = field(default_factory=dict)
    source: str = "<text>"

    def line_of(self, path: str) -> int | None:
        """The line of `path`, or of its nearest ancestor present in the file."""
        return line_of(self.lines, path)


# --- scalars ---------------------------------------------------------------------


def _number(ctx: Context, value: object, path: str) -> str | None:
    """A number as a string (``'+14255550100'``, ``'*7001'``); its form is a rule."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        bad(ctx, value, path, "a quoted string (YAML reads an unquoted +14255550100 as "
            "an integer)")
        return None
    bad(ctx, value, path, "a string")
    return None


def _time(ctx: Context, value: object, path: str) -> str | None:
    """A time of day as a string ``'HH:MM'``; its form is a rule."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        bad(ctx, value, path, "a quoted string 'HH:MM' (YAML reads an unquoted 13:00 as "
            "the number 780)")
        return None
    bad(ctx, value, path, "a string 'HH:MM'")
    return None


# --- builders --------------------------------------------------------------------


def _range(ctx: Context, value: object, path: str) -> NumberRange | None:
    f = Fields(ctx, value, path, "number range", ("first", "last"))
    first = f.required("first", _number)
    last = f.required("last", _number)
    return None if first is None or last is None else NumberRange(first, last)


def _action(ctx: Context, value: object, path: str) -> CallAction | None:
    f = Fields(ctx, value, path, "call action", ("action", "target", "announcement"))
    action = f.required("action", enum_of(Action))
    target = f.optional("target", as_str, None)
    announcement = f.optional("announcement", as_str, None)
    return None if action is None else CallAction(action, target, announcement)


def _audio(ctx: Context, value: object, path: str) -> Audio | None:
    f = Fields(ctx, value, path, "audio file", ("name", "sha256"))
    name = f.required("name", as_str)
    sha256 = f.required("sha256", as_str)
    return None if name is None or sha256 is None else Audio(name, sha256)


def _call_park(ctx: Context, value: object, path: str) -> CallPark | None:
    f = Fields(ctx, value, path, "call park", (
        "pool", "orbits", "timeout_seconds", "max_pickup_attempts", "ring_back_seconds",
        "music_on_hold", "timeout_uri"))
    defaults = CallPark("", ())
    pool = f.required("pool", as_str)
    orbits = f.required("orbits", list_of(_range))
    timeout = f.optional("timeout_seconds", as_number, defaults.timeout_seconds)
    attempts = f.optional("max_pickup_attempts", as_int, defaults.max_pickup_attempts)
    ring_back = f.optional("ring_back_seconds", as_number, defaults.ring_back_seconds)
    music = f.optional("music_on_hold", as_str, None)
    timeout_uri = f.optional("timeout_uri", as_str, None)
    if pool is None or orbits is None:
        return None
    return CallPark(pool, orbits, timeout, attempts, ring_back, music, timeout_uri)


def _pickup_group(ctx: Context, value: object, path: str) -> PickupGroup | None:
    f = Fields(ctx, value, path, "pickup group", ("number", "members"))
    number = f.required("number", _number)
    members = f.required("members", as_str_list)
    return None if number is None or members is None else PickupGroup(number, members)


def _group_pickup(ctx: Context, value: object, path: str) -> GroupPickup | None:
    f = Fields(ctx, value, path, "group pickup", ("pool", "ranges", "groups"))
    pool = f.required("pool", as_str)
    ranges = f.required("ranges", list_of(_range))
    groups = f.optional("groups", list_of(_pickup_group), GroupPickup("", ()).groups)
    return None if pool is None or ranges is None else GroupPickup(pool, ranges, groups)


def _unassigned(ctx: Context, value: object, path: str) -> UnassignedRange | None:
    f = Fields(ctx, value, path, "unassigned number range",
               ("name", "pool", "numbers", "announcement", "then"))
    name = f.required("name", as_str)
    pool = f.required("pool", as_str)
    numbers = f.required("numbers", _range)
    announcement = f.optional("announcement", as_str, None)
    then = f.optional("then", _action, CallAction())
    if name is None or pool is None or numbers is None:
        return None
    return UnassignedRange(name, pool, numbers, announcement, then)


def _agent_group(ctx: Context, value: object, path: str) -> AgentGroup | None:
    f = Fields(ctx, value, path, "agent group",
               ("name", "agents", "routing", "formal", "alert_seconds"))
    defaults = AgentGroup("", ())
    name = f.required("name", as_str)
    agents = f.required("agents", as_str_list)
    routing = f.optional("routing", enum_of(RoutingMethod), defaults.routing)
    formal = f.optional("formal", as_bool, defaults.formal)
    alert = f.optional("alert_seconds", as_number, defaults.alert_seconds)
    if name is None or agents is None:
        return None
    return AgentGroup(name, agents, routing, formal, alert)


def _queue(ctx: Context, value: object, path: str) -> Queue | None:
    f = Fields(ctx, value, path, "queue", (
        "name", "agent_groups", "timeout_seconds", "timeout_action", "overflow_calls",
        "overflow_action"))
    name = f.required("name", as_str)
    groups = f.required("agent_groups", as_str_list)
    timeout = f.optional("timeout_seconds", as_number, None)
    timeout_action = f.optional("timeout_action", _action, CallAction())
    overflow = f.optional("overflow_calls", as_int, None)
    overflow_action = f.optional("overflow_action", _action, CallAction())
    if name is None or groups is None:
        return None
    return Queue(name, groups, timeout, timeout_action, overflow, overflow_action)


def _window(ctx: Context, value: object, path: str) -> TimeWindow | None:
    f = Fields(ctx, value, path, "time window", ("start", "end"))
    start = f.required("start", _time)
    end = f.required("end", _time)
    return None if start is None or end is None else TimeWindow(start, end)


def _days(ctx: Context, value: object,
          path: str) -> tuple[tuple[str, tuple[TimeWindow, ...]], ...] | None:
    f = Fields(ctx, value, path, "opening days", DAYS)
    if not f.is_mapping:
        return None
    days: list[tuple[str, tuple[TimeWindow, ...]]] = []
    for day in f.data:
        if day in DAYS:
            windows = f.required(day, list_of(_window))
            if windows is not None:
                days.append((day, windows))
    return tuple(days)


def _business_hours(ctx: Context, value: object, path: str) -> BusinessHours | None:
    f = Fields(ctx, value, path, "business hours", ("timezone", "days"))
    if not f.is_mapping:
        return None
    defaults = BusinessHours()
    timezone = f.optional("timezone", as_str, defaults.timezone)
    days = f.optional("days", _days, defaults.days)
    return BusinessHours(timezone, days)


def _holiday(ctx: Context, value: object, path: str) -> Holiday | None:
    f = Fields(ctx, value, path, "holiday", ("name", "start", "end"))
    name = f.required("name", as_str)
    start = f.required("start", as_str)
    end = f.required("end", as_str)
    return None if name is None or start is None or end is None else Holiday(name, start, end)


def _workflow(ctx: Context, value: object, path: str) -> Workflow | None:
    f = Fields(ctx, value, path, "workflow", (
        "name", "pool", "number", "queue", "welcome", "business_hours", "holidays",
        "closed_action", "holiday_action"))
    name = f.required("name", as_str)
    pool = f.required("pool", as_str)
    number = f.required("number", _number)
    queue = f.required("queue", as_str)
    welcome = f.optional("welcome", as_str, None)
    hours = f.optional("business_hours", _business_hours, None)
    holidays = f.optional("holidays", list_of(_holiday), Workflow("", "", "", "").holidays)
    closed = f.optional("closed_action", _action, CallAction())
    holiday = f.optional("holiday_action", _action, CallAction())
    if name is None or pool is None or number is None or queue is None:
        return None
    return Workflow(name, pool, number, queue, welcome, hours, holidays, closed, holiday)


_LISTS: dict[str, Any] = {
    "audio": list_of(_audio),
    "call_park": list_of(_call_park),
    "group_pickup": list_of(_group_pickup),
    "unassigned": list_of(_unassigned),
    "agent_groups": list_of(_agent_group),
    "queues": list_of(_queue),
    "workflows": list_of(_workflow),
}
APPS_KEYS = tuple(_LISTS)


def build_apps(ctx: Context, value: object, path: str = APPS_ROOT) -> AppsConfig | None:
    """The `AppsConfig` of the mapping `value` found at `path`, reporting every problem
    to `ctx`; None when a required or ill-typed value prevents it."""
    fatal_before, ctx.fatal = ctx.fatal, False
    f = Fields(ctx, value, path, _DOCUMENT, APPS_KEYS)
    defaults = AppsConfig()
    values = {key: f.optional(key, parse, getattr(defaults, key))
              for key, parse in _LISTS.items()}
    built = None if ctx.fatal else AppsConfig(**values)
    ctx.fatal = ctx.fatal or fatal_before
    return built


# --- public API --------------------------------------------------------------------


def read_apps(source: str | os.PathLike[str], text: str | None = None) -> AppsLoad:
    """Load an apps configuration document without raising: an `AppsLoad` with the
    configuration (when buildable) and every loader violation, paths from the
    document root. `source` is a file path, unless `text` is given (then `source`
    only names it) or `source` itself is YAML text (it contains a newline)."""
    ctx = Context()
    name = os.fspath(source)
    if text is None:
        if is_path(source):
            text = read_text(source, ctx, document=_DOCUMENT, root=APPS_ROOT)
        else:
            text, name = name, "<text>"
    config: AppsConfig | None = None
    if text is not None:
        data = parse_yaml(text, ctx, document=_DOCUMENT, root=APPS_ROOT)
        if not isinstance(data, Invalid):
            config = build_apps(ctx, data, APPS_ROOT)
    return AppsLoad(config, tuple(ctx.violations), MappingProxyType(dict(ctx.lines)), name)


def apps_data(config: AppsConfig) -> dict[str, object]:
    """The configuration as plain data (what `dump_apps` writes): every field, except
    optional values that are not set, top-level keys in the order of `APPS_KEYS`;
    business hours' days as a mapping of day name to windows."""
    data = _fields(config)
    return {key: data[key] for key in APPS_KEYS if key in data}


def _fields(value: DataclassInstance) -> dict[str, object]:
    return {fd.name: _plain(getattr(value, fd.name))
            for fd in dataclasses.fields(value) if getattr(value, fd.name) is not None}


def _plain(value: object) -> object:
    if isinstance(value, BusinessHours):
        return {"timezone": value.timezone,
                "days": {day: _plain(windows) for day, windows in value.days}}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _fields(value)
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, StrEnum):
        return value.value
    return value


def dump_apps(config: AppsConfig) -> str:
    """The configuration as a YAML document that `read_apps` loads back equal."""
    return dump_yaml(apps_data(config))


__all__ = [
    "APPS_KEYS",
    "APPS_ROOT",
    "DAYS",
    "AppsLoad",
    "apps_data",
    "build_apps",
    "dump_apps",
    "read_apps",
]
