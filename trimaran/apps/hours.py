"""Whether a Response Group workflow is open (SPEC APP-3): business hours and holidays.

Pure: the wall clock is a parameter (seconds since the epoch, `time.time()`), and
every comparison is made in the workflow's local time (its business hours' time zone,
UTC without business hours), so summer time moves the hours with the clock on the wall.

* A holiday closes the workflow from its `start` (inclusive) to its `end` (exclusive);
  a date alone means midnight (``2026-12-25`` to ``2026-12-26`` is Christmas day).
  Holidays win over business hours: a holiday on a Monday is a holiday.
* Without business hours a workflow is open whenever it is not a holiday.
* With business hours it is open within one of the day's windows, from `start`
  (inclusive) to `end` (exclusive, ``24:00`` meaning midnight); a day that is not
  listed, or listed without windows, is closed all day.
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from datetime import datetime, tzinfo
from enum import StrEnum

from trimaran.apps.model import BusinessHours, Holiday, Workflow

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")   # datetime.weekday() order


class Openness(StrEnum):
    """What a workflow does with a call now."""

    OPEN = "open"              # the call waits in the queue
    CLOSED = "closed"          # outside business hours: `closed_action`
    HOLIDAY = "holiday"        # during a holiday: `holiday_action`


@dataclass(frozen=True, slots=True)
class HoursDecision:
    """Whether a workflow is open, and why (for logs and the caller's reason)."""

    state: Openness
    reason: str


def zone_of(hours: BusinessHours | None) -> tzinfo:
    """The time zone a workflow's hours and holidays are in (UTC when none is given).
    Raises ValueError for an unknown zone (the rules refuse one before publishing)."""
    name = hours.timezone if hours is not None else "UTC"
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, OSError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc


def _minutes(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def _local(text: str, zone: tzinfo) -> datetime:
    """A holiday bound (an ISO date or date-time without offset) in `zone`."""
    return datetime.fromisoformat(text).replace(tzinfo=zone)


def holiday_at(holidays: tuple[Holiday, ...], moment: datetime) -> Holiday | None:
    """The first holiday covering `moment` (an aware local time), if any."""
    zone = moment.tzinfo
    assert zone is not None
    for holiday in holidays:
        if _local(holiday.start, zone) <= moment < _local(holiday.end, zone):
            return holiday
    return None


def within_hours(hours: BusinessHours, moment: datetime) -> bool:
    """True when `moment` (an aware local time) is inside one of its day's windows."""
    day = DAYS[moment.weekday()]
    windows = next((w for d, w in hours.days if d == day), ())
    minute = moment.hour * 60 + moment.minute
    return any(_minutes(w.start) <= minute < _minutes(w.end) for w in windows)


def decide(workflow: Workflow, now: float) -> HoursDecision:
    """Open, closed or holiday at wall-clock time `now` (seconds since the epoch)."""
    zone = zone_of(workflow.business_hours)
    moment = datetime.fromtimestamp(now, zone)
    holiday = holiday_at(workflow.holidays, moment)
    if holiday is not None:
        return HoursDecision(Openness.HOLIDAY, f"Closed for {holiday.name}")
    hours = workflow.business_hours
    if hours is None or within_hours(hours, moment):
        return HoursDecision(Openness.OPEN, "open")
    return HoursDecision(Openness.CLOSED, "Closed: outside business hours "
                         f"({moment:%a %H:%M} {hours.timezone})")
