"""Pool failover state (SPEC DR-5, DR-6, DR-7, DR-11; DESIGN §3 "Pool failover state").

Theory of operation
-------------------
Every Front End pool has one failover record in the CMS (document
``failover/<pool>``). It says who serves the pool's users and whether they may
change persistent data:

==============  ==========================  ======================================
state           the pool's users are        persistent changes by those users
==============  ==========================  ======================================
normal          served by the pool          accepted
failing-over    served by the pool          refused (planned failover: the pool
                                            is read-only until the backup is final)
failed-over     served by the backup pool   accepted on the backup pool
failing-back    served by the backup pool   refused (the backup pool is read-only
                                            for them until its changes are home)
==============  ==========================  ======================================

Transitions (a disaster skips the read-only step)::

    normal --failover planned--> failing-over --switch--> failed-over
    normal --failover disaster-------------------------> failed-over
    failed-over --failback planned--> failing-back --switch--> normal
    failed-over --failback disaster--------------------------> normal

Every transition increments the record's `term`. A server acts on the record
with the highest term it has seen (fencing, DR-7): a pool that comes back after a
disaster reads a `failed-over` record with a term above the one it last knew and
redirects its users instead of serving them.

`plan_failover` / `plan_failback` check the order rules (DR-11 and the refusals of
DR-5) and return the next record or raise `FailoverRefused` naming the reason.
Nothing here does I/O or reads the clock.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

NORMAL = "normal"
FAILING_OVER = "failing-over"
FAILED_OVER = "failed-over"
FAILING_BACK = "failing-back"
STATES = (NORMAL, FAILING_OVER, FAILED_OVER, FAILING_BACK)
HISTORY_KEPT = 20


class FailoverRefused(Exception):
    """The asked transition breaks an order rule; the message says which and why."""


class FailoverStateError(ValueError):
    """A failover record that is not one (bad JSON, unknown state)."""


@dataclass(frozen=True, slots=True)
class FailoverEvent:
    """One transition, kept in the record's history (OPS: every HA decision observable)."""

    at: float
    action: str            # "failover" | "failback" | "switch"
    state: str             # the state entered
    term: int
    reason: str


@dataclass(frozen=True, slots=True)
class PoolFailover:
    """The failover record of one Front End pool."""

    pool: str
    backup: str | None = None        # the pool that serves ours while failed over
    state: str = NORMAL
    term: int = 0
    mode: str = ""                   # "planned" | "disaster" (of the last transition)
    since: float = 0.0
    cut_seq: int = 0                 # our last change applied on the backup at the switch
    history: tuple[FailoverEvent, ...] = field(default=())

    @property
    def served_by_backup(self) -> bool:
        """True when the backup pool serves this pool's users."""
        return self.state in (FAILED_OVER, FAILING_BACK)

    @property
    def read_only(self) -> bool:
        """True while this pool's users may not change persistent data anywhere."""
        return self.state in (FAILING_OVER, FAILING_BACK)

    def serving_pool(self) -> str:
        """The pool whose servers serve this pool's users now."""
        if self.served_by_backup and self.backup is not None:
            return self.backup
        return self.pool

    def to_json(self) -> str:
        """The CMS document body."""
        return json.dumps({
            "pool": self.pool, "backup": self.backup, "state": self.state, "term": self.term,
            "mode": self.mode, "since": self.since, "cut_seq": self.cut_seq,
            "history": [{"at": e.at, "action": e.action, "state": e.state, "term": e.term,
                         "reason": e.reason} for e in self.history]}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> PoolFailover:
        """Parse a CMS document body; `FailoverStateError` when it is not a record."""
        try:
            raw = json.loads(text)
            record = cls(
                pool=str(raw["pool"]), backup=raw.get("backup"), state=str(raw["state"]),
                term=int(raw["term"]), mode=str(raw.get("mode", "")),
                since=float(raw.get("since", 0.0)), cut_seq=int(raw.get("cut_seq", 0)),
                history=tuple(FailoverEvent(float(e["at"]), str(e["action"]), str(e["state"]),
                                            int(e["term"]), str(e["reason"]))
                              for e in raw.get("history", ())))
        except (ValueError, KeyError, TypeError) as exc:
            raise FailoverStateError(f"not a failover record: {exc}") from None
        if record.state not in STATES:
            raise FailoverStateError(f"unknown failover state {record.state!r}")
        return record

    def _enter(self, state: str, *, action: str, mode: str, now: float, reason: str,
               cut_seq: int | None = None) -> PoolFailover:
        term = self.term + 1
        event = FailoverEvent(now, action, state, term, reason)
        return replace(self, state=state, term=term, mode=mode, since=now,
                       cut_seq=self.cut_seq if cut_seq is None else cut_seq,
                       history=((*self.history, event))[-HISTORY_KEPT:])


def document_key(pool: str) -> str:
    """The CMS document holding `pool`'s record."""
    return f"failover/{pool}"


def plan_failover(record: PoolFailover, partner: PoolFailover | None, *, cms_master: str | None,
                  disaster: bool, now: float, cut_seq: int = 0,
                  reason: str | None = None) -> PoolFailover:
    """The record after `pool failover` starts (planned: `failing-over`; disaster:
    `failed-over` at once, `cut_seq` = the last of our changes the backup holds)."""
    pool = record.pool
    if record.backup is None or partner is None:
        raise FailoverRefused(f"pool {pool} has no backup pool (set backup_pool in the "
                              "topology)")
    if record.state != NORMAL:
        raise FailoverRefused(f"pool {pool} is already {record.state} (term {record.term}); "
                              f"run `trimaran pool failback {pool}` first")
    if partner.state != NORMAL:
        raise FailoverRefused(
            f"the backup pool {record.backup} is itself {partner.state} to {pool}; "
            f"fail {record.backup} back first (DR-11)")
    if cms_master == pool:
        raise FailoverRefused(f"the CMS master is on pool {pool}; move it first with "
                              f"`trimaran cms failover{' --disaster' if disaster else ''}`")
    if disaster:
        return record._enter(FAILED_OVER, action="failover", mode="disaster", now=now,
                             cut_seq=cut_seq,
                             reason=reason or f"disaster failover to {record.backup}")
    return record._enter(FAILING_OVER, action="failover", mode="planned", now=now,
                         reason=f"planned failover to {record.backup}: {pool} read-only")


def complete_failover(record: PoolFailover, *, now: float, cut_seq: int) -> PoolFailover:
    """`failing-over` → `failed-over` once the backup is final (nothing left to ship)."""
    if record.state != FAILING_OVER:
        raise FailoverRefused(f"pool {record.pool} is {record.state}, not {FAILING_OVER}")
    return record._enter(FAILED_OVER, action="switch", mode=record.mode, now=now,
                         cut_seq=cut_seq,
                         reason=f"backup final at change {cut_seq}: {record.backup} serves "
                                f"{record.pool}'s users")


def plan_failback(record: PoolFailover, *, disaster: bool, now: float) -> PoolFailover:
    """The record after `pool failback` starts (planned: `failing-back`; disaster:
    `normal` at once, losing what the backup pool did not ship back)."""
    if record.state == FAILING_BACK and not disaster:
        return record                       # resume an interrupted failback
    if record.state not in (FAILED_OVER, FAILING_BACK):
        raise FailoverRefused(f"pool {record.pool} is {record.state}, not failed over; "
                              "nothing to fail back")
    if disaster:
        return record._enter(NORMAL, action="failback", mode="disaster", now=now,
                             reason=f"disaster failback: {record.backup} given up")
    return record._enter(FAILING_BACK, action="failback", mode="planned", now=now,
                         reason=f"planned failback from {record.backup}: read-only there")


def complete_failback(record: PoolFailover, *, now: float) -> PoolFailover:
    """`failing-back` → `normal` once every change made on the backup pool is home."""
    if record.state != FAILING_BACK:
        raise FailoverRefused(f"pool {record.pool} is {record.state}, not {FAILING_BACK}")
    return record._enter(NORMAL, action="switch", mode=record.mode, now=now,
                         reason=f"changes made on {record.backup} are home: {record.pool} "
                                "serves its users again")


@dataclass(frozen=True, slots=True)
class Standing:
    """How a server treats a user, given the user's home pool and the failover records."""

    serve: bool                 # accept the user's sign-in here
    read_only: bool             # refuse the user's persistent changes
    redirect_to: str | None     # the pool to send the user to (None: ask to retry later)
    reason: str
    mode: str = "full"          # "full" | "resiliency" (DR-8) when served here


#: Liveness of a paired pool as seen by its backup registrar (`roles.frontend.partner`).
PARTNER_DOWN = frozenset({"down", "recovering"})
PARTNER_SUSPECT = "suspect"


def standing(own_pool: str, home_pool: str, records: Mapping[str, PoolFailover],
             liveness: Mapping[str, str] | None = None) -> Standing:
    """Whether `own_pool` serves a user homed on `home_pool`: failover records first
    (DR-5, DR-7); then, for a pool `own_pool` is backup registrar of (`liveness` has its
    state), resiliency mode while that pool is down by our own detection (DR-8)."""
    record = records.get(home_pool) or PoolFailover(home_pool)
    serving = record.serving_pool()
    if serving == own_pool:
        why = ("home pool" if home_pool == own_pool
               else f"{home_pool} is failed over to {own_pool}")
        if record.read_only:
            why += f" ({record.state}: read-only)"
        return Standing(True, record.read_only, None, why)
    if home_pool == own_pool:
        return Standing(False, True, serving,
                        f"{own_pool} is {record.state} to {serving} (term {record.term})")
    alive = (liveness or {}).get(home_pool)
    if serving == home_pool and alive in PARTNER_DOWN:
        return Standing(True, True, None, f"home pool {home_pool} unreachable: resiliency "
                        "mode, persistent changes refused", mode="resiliency")
    if serving == home_pool and alive == PARTNER_SUSPECT:
        return Standing(False, True, None, f"home pool {home_pool} not answering; retry "
                        "(backup registrar after its detection interval)")
    return Standing(False, True, serving, f"{home_pool} serves its own users")
