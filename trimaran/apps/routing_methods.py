"""Which agents a Response Group call is offered to next, and when it stops waiting
(SPEC APP-3). Pure: no I/O, `now` is a parameter (the application's monotonic clock).

Theory of operation.

`AgentBook` is what the application knows of its agents, in memory only (after a pool
failover the backup pool starts with an empty book: formal agents sign in again,
APP-4): which formal agents are signed in to which group, who is on a call from this
application (busy) or being alerted with one, when each agent's last call ended (for
longest idle), and the agent each group offered a call to last (for round robin).

An agent is *in* a group when the group is informal or the agent signed in to it; an
agent in the group is *available* when it is neither busy nor alerted — except for the
attendant method, which offers every agent in the group, busy or not.

`CallRouting` follows one waiting call in one queue. A *cycle* goes through the queue's
agent groups in order; each group's routing method orders its agents into *rounds*:

    serial        one agent per round, in list order
    longest_idle  one agent per round, the one whose last call ended longest ago first
                  (never had one: first of all), ties in list order
    round_robin   one agent per round, in list order starting after the agent the group
                  offered a call to last
    parallel      one round: every agent of the group
    attendant     one round: every agent of the group

When a round is reached, its agents that are available *now* are offered the call,
each for the group's `alert_seconds` (an `Offer`); a round with nobody available is
skipped. After the last round of the last group the cycle starts over — at once when
it offered the call to somebody (but not sooner than `pause` seconds after the
previous cycle began, so that agents who refuse at once are not called in a tight
loop), else the call waits for an agent to become available (a `Wait`). A call that has
waited the queue's `timeout_seconds` gives up (`TimedOut`), even during an offer: an
offer never alerts beyond the queue's deadline.

A new call overflows (`overflows`) when more than the queue's `overflow_calls` calls
would be waiting with it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from trimaran.apps.model import AgentGroup, Queue, RoutingMethod
from trimaran.voice.model import aor_key

NEVER = float("-inf")          # the idle-since of an agent who never had a call
RESTART_PAUSE = 2.0            # the shortest cycle before starting over


class AgentBook:
    """The agents as the application knows them now (see the module docstring)."""

    def __init__(self) -> None:
        self._signed_in: dict[str, set[str]] = {}      # group -> agent keys
        self._busy: Counter[str] = Counter()
        self._alerting: Counter[str] = Counter()
        self._idle_since: dict[str, float] = {}
        self._last_offered: dict[str, str] = {}        # group -> agent key

    # -- formal agents ------------------------------------------------------------------
    def sign_in(self, group: str, agent: str) -> None:
        """A formal agent of `group` takes its calls from now on."""
        self._signed_in.setdefault(group, set()).add(aor_key(agent))

    def sign_out(self, group: str, agent: str) -> None:
        """A formal agent of `group` takes none of its calls from now on."""
        self._signed_in.get(group, set()).discard(aor_key(agent))

    def is_in(self, group: AgentGroup, agent: str) -> bool:
        """True when `agent` takes the group's calls (informal, or signed in)."""
        return not group.formal or aor_key(agent) in self._signed_in.get(group.name, ())

    def signed_in(self, group: AgentGroup) -> tuple[str, ...]:
        """The group's agents in it now, in list order."""
        return tuple(a for a in group.agents if self.is_in(group, a))

    # -- calls --------------------------------------------------------------------------
    def available(self, group: AgentGroup, agent: str) -> bool:
        """True when the group may offer `agent` a call now."""
        if not self.is_in(group, agent):
            return False
        if group.routing is RoutingMethod.ATTENDANT:
            return True
        key = aor_key(agent)
        return not self._busy[key] and not self._alerting[key]

    def alerting(self, agent: str, started: bool) -> None:
        """An offer to `agent` started ringing (True) or ended (False)."""
        key = aor_key(agent)
        self._alerting[key] += 1 if started else -1
        if self._alerting[key] <= 0:
            del self._alerting[key]

    def call_started(self, agent: str) -> None:
        """`agent` answered a call of ours."""
        self._busy[aor_key(agent)] += 1

    def call_ended(self, agent: str, now: float) -> None:
        """A call of ours that `agent` answered ended at `now`."""
        key = aor_key(agent)
        self._busy[key] -= 1
        if self._busy[key] <= 0:
            del self._busy[key]
        self._idle_since[key] = now

    def busy(self, agent: str) -> bool:
        """True while `agent` is on a call of ours."""
        return self._busy[aor_key(agent)] > 0

    def idle_since(self, agent: str) -> float:
        """When `agent`'s last call of ours ended (`NEVER` when it had none)."""
        return self._idle_since.get(aor_key(agent), NEVER)

    # -- routing methods ----------------------------------------------------------------
    def rounds(self, group: AgentGroup) -> list[tuple[str, ...]]:
        """The group's agents in the order its routing method offers them (rounds of
        agents offered together), before leaving out those unavailable."""
        agents = list(group.agents)
        method = group.routing
        if method in (RoutingMethod.PARALLEL, RoutingMethod.ATTENDANT):
            return [tuple(agents)]
        if method is RoutingMethod.LONGEST_IDLE:
            agents.sort(key=self.idle_since)       # stable: ties keep list order
        elif method is RoutingMethod.ROUND_ROBIN:
            keys = [aor_key(a) for a in agents]
            last = self._last_offered.get(group.name)
            if last in keys:
                start = keys.index(last) + 1
                agents = agents[start:] + agents[:start]
        return [(a,) for a in agents]

    def offered(self, group: AgentGroup, agents: Sequence[str]) -> None:
        """The group offered a call to `agents` (round robin remembers the last)."""
        if agents:
            self._last_offered[group.name] = aor_key(agents[-1])


@dataclass(frozen=True, slots=True)
class Offer:
    """Offer the call to `agents` (of `group`) at once, until `until`."""

    group: str
    agents: tuple[str, ...]
    until: float


@dataclass(frozen=True, slots=True)
class Wait:
    """Nobody to offer the call to now: wait until `until` (None: no limit) or until an
    agent may have become available, then ask again."""

    until: float | None


@dataclass(frozen=True, slots=True)
class TimedOut:
    """The call waited the queue's timeout: the queue's `timeout_action` takes it."""

    waited: float


Step = Offer | Wait | TimedOut


def overflows(queue: Queue, waiting: int) -> bool:
    """True when a new call would make more than `overflow_calls` calls wait in `queue`
    (`waiting` are there already): the queue's `overflow_action` takes it instead."""
    return queue.overflow_calls is not None and waiting + 1 > queue.overflow_calls


class CallRouting:
    """The offers of one call waiting in one queue (see the module docstring)."""

    def __init__(self, queue: Queue, groups: Sequence[AgentGroup], arrived: float, *,
                 pause: float = RESTART_PAUSE) -> None:
        self.queue = queue
        self.groups = tuple(groups)
        self.arrived = arrived
        self.deadline = None if queue.timeout_seconds is None \
            else arrived + queue.timeout_seconds
        self.pause = pause
        self._cycle_started = arrived
        self._resume_at = arrived
        self._group = 0
        self._rounds: list[tuple[str, ...]] | None = None
        self._offered = False

    def next(self, book: AgentBook, now: float) -> Step:
        """What to do with the call now."""
        if self.deadline is not None and now >= self.deadline:
            return TimedOut(now - self.arrived)
        if now < self._resume_at:
            return Wait(self._cap(self._resume_at))
        step = self._in_cycle(book, now)
        if step is not None:
            return step
        offered, started = self._offered, self._cycle_started
        self._restart(now)
        if not offered:
            return Wait(self.deadline)
        if now - started < self.pause:
            self._resume_at = started + self.pause
            return Wait(self._cap(self._resume_at))
        step = self._in_cycle(book, now)
        return step if step is not None else Wait(self.deadline)

    def _in_cycle(self, book: AgentBook, now: float) -> Offer | None:
        while self._group < len(self.groups):
            group = self.groups[self._group]
            if self._rounds is None:
                self._rounds = book.rounds(group)
            while self._rounds:
                candidates = self._rounds.pop(0)
                agents = tuple(a for a in candidates if book.available(group, a))
                if agents:
                    self._offered = True
                    book.offered(group, agents)
                    return Offer(group.name, agents, self._cap(now + group.alert_seconds))
            self._group += 1
            self._rounds = None
        return None

    def _restart(self, now: float) -> None:
        self._cycle_started = now
        self._group = 0
        self._rounds = None
        self._offered = False

    def _cap(self, moment: float) -> float:
        return moment if self.deadline is None else min(moment, self.deadline)
