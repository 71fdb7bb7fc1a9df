"""The configuration of the call-management applications (SPEC APP-1..APP-7), as frozen
values: Call Park orbit ranges and settings, group pickup, unassigned numbers with
their announcements, Response Groups (workflows, queues, agent groups) and the named
audio files they play.

Every application item belongs to an owner pool (`pool`); the pool that serves the
owner's users now (its backup pool after a failover, DR-5) runs it — which is how
orbit ranges, response groups, unassigned ranges and pickup groups move with pool
failover and come back with failback (APP-2, APP-4, APP-5, APP-6).

Numbers are what a user dials and what a caller's dial plan produces: E.164
(``+14255557001``) or a short code (``*7001``, ``#7001``: a star or hash and digits),
compared as text. A range covers the numbers between `first` and `last` that have
the same length and prefix (the digits after it are compared as integers).

The configuration is one YAML document in the CMS (``apps``, `trimaran apps publish`);
audio files are CMS documents of their own, named by SHA-256 (``audio/<sha256>``), so
the Backup Service and the CMS replicas carry them to every server and to the paired
pool with the rest of the CMS.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, TypeVar

NUMBER_RE = re.compile(r"^(\+[1-9]\d{1,14}|[*#]\d{1,15})$")


def split_number(number: str) -> tuple[str, int, int] | None:
    """(prefix, value, digits) of an app number: ``+1425555700`` → ("+", 1425555700, 10);
    None when it is not an app number."""
    if not NUMBER_RE.match(number):
        return None
    return number[0], int(number[1:]), len(number) - 1


@dataclass(frozen=True, slots=True)
class NumberRange:
    """The numbers from `first` to `last` (same prefix and length)."""

    first: str
    last: str

    def __contains__(self, number: object) -> bool:
        if not isinstance(number, str):
            return False
        low, high, value = split_number(self.first), split_number(self.last), \
            split_number(number)
        if low is None or high is None or value is None:
            return False
        return value[0] == low[0] and value[2] == low[2] and low[1] <= value[1] <= high[1]

    def numbers(self) -> list[str]:
        """Every number of the range, in order (for allocating orbits)."""
        low, high = split_number(self.first), split_number(self.last)
        if low is None or high is None:
            return []
        return [f"{low[0]}{n:0{low[2]}d}" for n in range(low[1], high[1] + 1)]


class Action(StrEnum):
    """What to do with a call that cannot be handled as asked."""

    DISCONNECT = "disconnect"        # hang up (after the announcement, if any)
    FORWARD = "forward"              # to `target` (a SIP URI or a number)
    QUEUE = "queue"                  # to another queue (`target` names it)
    VOICEMAIL = "voicemail"          # to the `target`'s voicemail (a URI)


@dataclass(frozen=True, slots=True)
class CallAction:
    """An action, its target when it needs one, and an optional announcement."""

    action: Action = Action.DISCONNECT
    target: str | None = None
    announcement: str | None = None  # an audio name


@dataclass(frozen=True, slots=True)
class Audio:
    """A named audio file: the CMS holds its bytes under ``audio/<sha256>`` (a WAV,
    G.711 µ-law or 16-bit linear PCM, 8 kHz mono)."""

    name: str
    sha256: str


@dataclass(frozen=True, slots=True)
class CallPark:
    """A pool's Call Park service (APP-1): its orbits and settings."""

    pool: str
    orbits: tuple[NumberRange, ...]
    timeout_seconds: float = 60.0          # parked this long: ring the parker back
    max_pickup_attempts: int = 1           # ring-backs to the parker before `timeout_uri`
    ring_back_seconds: float = 20.0        # how long each ring-back rings
    music_on_hold: str | None = None       # an audio name
    timeout_uri: str | None = None         # where an unanswered ring-back goes (else hang up)


@dataclass(frozen=True, slots=True)
class PickupGroup:
    """A group call pickup group (APP-6): its number, taken from a pickup range of its
    pool, and its members (AORs); a member dials the number to answer a ringing call
    of another member."""

    number: str
    members: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class GroupPickup:
    """A pool's group pickup numbers (served by its Call Park service)."""

    pool: str
    ranges: tuple[NumberRange, ...]
    groups: tuple[PickupGroup, ...] = ()


@dataclass(frozen=True, slots=True)
class UnassignedRange:
    """Numbers nobody has (APP-5): an announcement, then `then`."""

    name: str
    pool: str
    numbers: NumberRange
    announcement: str | None = None        # an audio name
    then: CallAction = field(default_factory=CallAction)


class RoutingMethod(StrEnum):
    """How an agent group offers a call to its agents (APP-3)."""

    SERIAL = "serial"                      # in list order, one at a time
    LONGEST_IDLE = "longest_idle"          # the agent idle longest first, one at a time
    ROUND_ROBIN = "round_robin"            # after the last one offered, one at a time
    PARALLEL = "parallel"                  # every available agent at once
    ATTENDANT = "attendant"                # every signed-in agent at once, busy or not


@dataclass(frozen=True, slots=True)
class AgentGroup:
    """Agents (AORs) answering a queue's calls. Formal agents take calls only while
    signed in (`trimaran apps agent sign-in`, or over HTTP); informal ones always."""

    name: str
    agents: tuple[str, ...]
    routing: RoutingMethod = RoutingMethod.SERIAL
    formal: bool = False
    alert_seconds: float = 20.0            # how long one offer rings an agent


@dataclass(frozen=True, slots=True)
class Queue:
    """Calls waiting for an agent of its groups, in order."""

    name: str
    agent_groups: tuple[str, ...]
    timeout_seconds: float | None = None   # waited this long: `timeout_action`
    timeout_action: CallAction = field(default_factory=CallAction)
    overflow_calls: int | None = None      # more calls than this waiting: `overflow_action`
    overflow_action: CallAction = field(default_factory=CallAction)


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """Opening hours of one day: from `start` to `end` ("HH:MM", local time)."""

    start: str
    end: str


@dataclass(frozen=True, slots=True)
class BusinessHours:
    """Opening hours per weekday (``mon`` … ``sun``); a day without windows is closed."""

    timezone: str = "UTC"
    days: tuple[tuple[str, tuple[TimeWindow, ...]], ...] = ()


@dataclass(frozen=True, slots=True)
class Holiday:
    """A closed period: from `start` to `end` (ISO dates or date-times, local time)."""

    name: str
    start: str
    end: str


@dataclass(frozen=True, slots=True)
class Workflow:
    """A Response Group number (APP-3): calls to `number` go to `queue` while open."""

    name: str
    pool: str
    number: str
    queue: str
    welcome: str | None = None             # an audio name
    business_hours: BusinessHours | None = None   # None: always open
    holidays: tuple[Holiday, ...] = ()
    closed_action: CallAction = field(default_factory=CallAction)
    holiday_action: CallAction = field(default_factory=CallAction)


@dataclass(frozen=True, slots=True)
class AppsConfig:
    """Every application's configuration in the deployment."""

    call_park: tuple[CallPark, ...] = ()
    group_pickup: tuple[GroupPickup, ...] = ()
    unassigned: tuple[UnassignedRange, ...] = ()
    agent_groups: tuple[AgentGroup, ...] = ()
    queues: tuple[Queue, ...] = ()
    workflows: tuple[Workflow, ...] = ()
    audio: tuple[Audio, ...] = ()

    def park_of(self, pool: str) -> CallPark | None:
        """The Call Park service of `pool`, if any."""
        return next((p for p in self.call_park if p.pool == pool), None)

    def pickup_of(self, pool: str) -> GroupPickup | None:
        """The group pickup of `pool`, if any."""
        return next((p for p in self.group_pickup if p.pool == pool), None)

    def agent_group(self, name: str) -> AgentGroup:
        """The agent group named `name` (KeyError when none)."""
        return _named(self.agent_groups, name)

    def queue(self, name: str) -> Queue:
        """The queue named `name` (KeyError when none)."""
        return _named(self.queues, name)

    def audio_named(self, name: str) -> Audio:
        """The audio file named `name` (KeyError when none)."""
        return _named(self.audio, name)

    def owner_of(self, number: str) -> tuple[str, str] | None:
        """(application, owner pool) of a number: ``park``, ``pickup``, ``workflow`` or
        ``unassigned`` (in that order of precedence), None when no application has it."""
        for park in self.call_park:
            if any(number in r for r in park.orbits):
                return "park", park.pool
        for pickup in self.group_pickup:
            if any(g.number == number for g in pickup.groups):
                return "pickup", pickup.pool
        for workflow in self.workflows:
            if workflow.number == number:
                return "workflow", workflow.pool
        for unassigned in self.unassigned:
            if number in unassigned.numbers:
                return "unassigned", unassigned.pool
        return None


class _Named(Protocol):
    @property
    def name(self) -> str: ...


_N = TypeVar("_N", bound=_Named)


def _named(items: tuple[_N, ...], name: str) -> _N:
    for item in items:
        if item.name == name:
            return item
    raise KeyError(name)
