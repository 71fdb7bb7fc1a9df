"""The mirroring decision core (SPEC BE-2..BE-7): what one agent does next, and why.

Sans-IO: `decide(observation, now)` reads one frozen `Observation` (what a tick of the
agent saw) and the time, and returns one `Decision(action, reason, term)`. It never
touches PostgreSQL, the network or the clock; the agent (`trimaran.backend.agent`)
observes, calls it every tick, logs the decision and carries the action out.

Theory of operation — quorum, exactly as SQL Server database mirroring
----------------------------------------------------------------------
A Back End has three parties: the *principal* (the PostgreSQL instance serving reads
and writes), the *mirror* (its synchronous hot standby) and the *witness* (a small
process holding no data: `trimaran.backend.witness`). An agent runs beside each
instance. A role change needs a majority of the three — two of them agreeing:

* principal + mirror see each other, witness lost: nothing changes.
* principal + witness, mirror lost: the principal keeps serving. Policy ``strict``:
  commits wait for the mirror. Policy ``available``: once the witness agrees that it
  does not hear a working mirror either, the principal runs *exposed* (it drops
  synchronous replication; the witness records that durably first) and from then on
  no failover is possible until the mirror has caught up and is synchronous again.
* mirror + witness, principal lost: the mirror asks the witness for a vote for term
  ``T+1``. The witness grants it only when it has not heard the principal serving for
  its timeout, the principal is not exposed and the mirror says it was synchronous;
  it records the new term and principal durably before answering. The mirror then
  records the term durably and promotes.
* partners cut from each other, both still seeing the witness: no failover (the
  witness still hears the principal; the mirror stays).
* principal alone (neither mirror nor witness): it *fences* itself — refuses writes —
  because the other two may be electing a new principal right now.
* mirror alone: it waits; it never promotes without the witness.
* no witness configured: no automatic failover at all; a lone principal keeps
  serving; the admin fails over by hand (``--force`` when the principal is gone, which
  may lose data). A principal made by ``--force`` runs exposed and counts the admin
  as its quorum until the witness or the partner answers again.

Terms. Every role change increases the term (epoch), stored durably by the agents and
the witness; exactly one node is principal in a term. Whoever sees a higher term
than its own — from the witness or the partner — adopts it (`Action.ADOPT`) with that
term's principal, and a principal that sees it steps down, fences and rejoins as
mirror. The witness rejects any request carrying a lower term than its own. An
instance is started or promoted read-write only by the node durably holding the
current term, confirmed by the witness or the partner.

Why no acknowledged write is lost, and why two principals never both acknowledge
writes: while not exposed, the principal's ``synchronous_standby_names`` names the
mirror, so a commit is acknowledged only once the mirror has flushed it; a mirror that
promotes stops receiving from the old principal, whose commits can no longer be
acknowledged. While exposed, the witness refuses every vote. Fencing on losing quorum
(and on seeing a higher term) adds clean refusals for clients, which then move on to
the new principal (``target_session_attrs=read-write``).

The rule table
--------------
`RULES` is the ordered list of (name, predicate, decision); the first predicate that
holds decides. `Facts` derives what the predicates need from the observation and
``now`` (is the partner's answer fresh? does anybody hold a higher term? ...).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field, replace

#: An exposed principal requires its streaming mirror again once it is at most this many
#: bytes behind (commits then wait for it; the exposure ends when it has caught up).
RESTORE_SYNC_LAG = 1 << 20


class Role(enum.Enum):
    """A partner's role in the current term."""

    PRINCIPAL = "principal"
    MIRROR = "mirror"


class Policy(enum.Enum):
    """What the principal does when its mirror is lost (BE-5)."""

    STRICT = "strict"           # commits wait for the mirror
    AVAILABLE = "available"     # with the witness's agreement, run exposed


class Action(enum.Enum):
    """What the agent does this tick."""

    STAY = "stay"                       # everything is as it should be
    WAIT = "wait"                       # something is wrong, nothing may be done now
    START = "start"                     # start the own instance (standby, or as principal)
    ADOPT = "adopt"                     # record a higher term seen elsewhere, durably
    ELECT = "elect"                     # mirror: get the witness's vote, promote at T+1
    FORCE_PROMOTE = "force-promote"     # mirror, admin's --force: promote at T+1
    PROMOTE = "promote"                 # holding the term as principal: promote the standby
    FENCE = "fence"                     # make the own instance refuse writes
    UNFENCE = "unfence"                 # accept writes again
    REJOIN = "rejoin"                   # rewind (or re-clone) from the principal, follow it
    REQUIRE_SYNC = "require-sync"       # synchronous_standby_names := the mirror
    EXPOSE = "expose"                   # with the witness's agreement, drop synchronous commit
    RESTORE_SYNC = "restore-sync"       # exposed, mirror caught up: require it again
    END_EXPOSURE = "end-exposure"       # mirror synchronous again: leave the exposed state
    HANDOVER = "handover"               # planned failover: pass term T+1 to the mirror
    ABORT = "abort"                     # give up a manual request (and unfence)


class ManualKind(enum.Enum):
    """A failover asked for by the admin (BE-4)."""

    PLANNED = "planned"     # no loss: principal stops writes, mirror catches up, switch
    FORCED = "forced"       # principal unreachable: promote the mirror, may lose data


@dataclass(frozen=True, slots=True)
class ManualRequest:
    """A pending manual failover: make `target` principal before `deadline`."""

    kind: ManualKind
    target: str
    deadline: float


@dataclass(frozen=True, slots=True)
class Instance:
    """What the agent saw of its own PostgreSQL instance this tick.

    `standby_*` describe the partner as a standby of this instance (its row of
    ``pg_stat_replication``); None when it is not attached. LSNs are byte positions.
    """

    running: bool                        # a postmaster runs
    reachable: bool = False              # it answered the probe
    in_recovery: bool = False            # a standby
    read_only: bool = False              # default_transaction_read_only = on (fenced)
    standby_configured: bool = False     # standby.signal: a stopped mirror may be started
    streaming: bool = False              # standby: its WAL receiver streams
    sync_names: str = ""                 # synchronous_standby_names
    current_lsn: int | None = None       # primary: pg_current_wal_lsn()
    standby_state: str | None = None     # "streaming", "catchup", ...
    standby_sync: str | None = None      # "sync", "async", "potential", ...
    standby_flush_lsn: int | None = None

    @property
    def primary(self) -> bool:
        """Up, answering and not a standby (read-write unless fenced)."""
        return self.running and self.reachable and not self.in_recovery

    @property
    def standby(self) -> bool:
        """Up, answering and a standby."""
        return self.running and self.reachable and self.in_recovery

    @property
    def standby_lag(self) -> int | None:
        """Bytes of WAL the attached partner has not flushed yet (None: not attached)."""
        if self.current_lsn is None or self.standby_flush_lsn is None:
            return None
        return max(0, self.current_lsn - self.standby_flush_lsn)


@dataclass(frozen=True, slots=True)
class PartnerView:
    """The partner agent's own account (its ``GET /state``)."""

    role: Role
    term: int
    principal: str          # who it holds principal in `term`
    serving: bool           # principal: read-write, not fenced; mirror: standby streaming
    synchronous: bool       # principal: its mirror is synchronous; mirror: it was
    exposed: bool = False


@dataclass(frozen=True, slots=True)
class WitnessView:
    """The witness's answer to this agent's last heartbeat."""

    term: int
    principal: str | None
    exposed: bool
    principal_silent_for: float          # since the principal last reported serving
    principal_timeout: float             # the witness votes after that much silence
    partner_serving_age: float | None    # since the partner last reported serving
    mirror_timeout: float                # exposure allowed after that much mirror silence


@dataclass(frozen=True, slots=True)
class Timeouts:
    """The agent's timeouts, in seconds."""

    unreachable_after: float = 2.0   # partner or witness silent that long: unreachable
    mirror_lost_after: float = 2.0   # principal without a synchronous mirror: may expose
    restart_grace: float = 10.0      # crashed principal instance: restart it after that
    stream_lost_after: float = 15.0  # mirror not streaming from a serving principal: rejoin


@dataclass(frozen=True, slots=True)
class Observation:
    """Everything one tick of an agent saw. Times are monotonic seconds, like ``now``."""

    node: str                            # this agent's node (its application_name)
    partner: str                         # the other partner's node
    role: Role                           # durable role ...
    term: int                            # ... and term of this node
    principal: str                       # who this node holds principal in `term`
    exposed: bool                        # principal running exposed (durable)
    policy: Policy
    instance: Instance
    witness_configured: bool
    partner_view: PartnerView | None = None
    partner_seen_at: float | None = None     # last answer from the partner's agent
    witness_view: WitnessView | None = None
    witness_seen_at: float | None = None     # last answer from the witness
    was_synchronous: bool = False        # mirror: the serving principal said we were sync
    sync_lost_at: float | None = None    # principal: mirror not synchronous since
    stream_lost_at: float | None = None  # mirror: not streaming since
    crashed_at: float | None = None      # principal: own instance seen going down at
    restore_lsn: int | None = None       # exposed: LSN when the mirror was required again
    manual: ManualRequest | None = None
    forced: bool = False                 # principal by the admin's --force, nobody seen since
    timeouts: Timeouts = field(default_factory=Timeouts)


@dataclass(frozen=True, slots=True)
class Decision:
    """One action with its reason, and the term the node holds once it is done
    (`principal`: who is principal in that term, for `Action.ADOPT`; `rule`: the name
    of the rule of `RULES` that decided)."""

    action: Action
    reason: str
    term: int
    principal: str | None = None
    rule: str = ""


class Facts:
    """What the rules need, derived once from an observation and the time."""

    def __init__(self, obs: Observation, now: float) -> None:
        self.obs = obs
        self.now = now
        self.inst = obs.instance
        limit = obs.timeouts.unreachable_after
        fresh_partner = obs.partner_seen_at is not None and now - obs.partner_seen_at < limit
        fresh_witness = obs.witness_seen_at is not None and now - obs.witness_seen_at < limit
        #: The partner's and the witness's answers when recent enough, else None.
        self.p = obs.partner_view if fresh_partner else None
        self.w = obs.witness_view if fresh_witness and obs.witness_configured else None
        self.higher = self._higher_term()

    def _higher_term(self) -> tuple[int, str, str] | None:
        """(term, principal, where seen) of the highest term above ours, if any."""
        best: tuple[int, str, str] | None = None
        sources = ((self.w.term, self.w.principal, "the witness") if self.w else None,
                   (self.p.term, self.p.principal, "the partner") if self.p else None)
        for source in sources:
            if source is None or source[1] is None or source[0] <= self.obs.term:
                continue
            if best is None or source[0] > best[0]:
                best = (source[0], source[1], source[2])
        return best

    # --- principal ----------------------------------------------------------------------

    @property
    def sees_mirror(self) -> bool:
        """The mirror's agent answers, or its standby streams from us."""
        return self.p is not None or self.inst.standby_state == "streaming"

    @property
    def quorum(self) -> bool:
        """Principal: not alone (or no witness configured: no quorum needed; or made
        principal by the admin's --force, who stands in for the quorum until the
        witness or the partner answers again)."""
        return (not self.obs.witness_configured or self.obs.forced or self.w is not None
                or self.sees_mirror)

    @property
    def holds_term(self) -> bool:
        """The witness or the partner confirms this node is principal in its term (or,
        without a witness or after a forced failover, nobody reachable could
        contradict it)."""
        obs, w, p = self.obs, self.w, self.p
        if w is not None and w.term == obs.term and w.principal == obs.node:
            return True
        if p is not None and p.term == obs.term and p.principal == obs.node:
            return True
        return (not obs.witness_configured or obs.forced) and p is None and w is None

    @property
    def names_mirror(self) -> bool:
        """synchronous_standby_names requires the partner."""
        return self.inst.sync_names == sync_names_for(self.obs.partner)

    @property
    def mirror_synchronous(self) -> bool:
        """Every commit waits for the partner, which is a synchronous standby."""
        return (not self.obs.exposed and self.names_mirror
                and self.inst.standby_sync == "sync")

    @property
    def mirror_known_down(self) -> bool:
        """The mirror's agent says its standby is not streaming."""
        return self.p is not None and self.p.role is Role.MIRROR and not self.p.serving

    def elapsed(self, since: float | None) -> float:
        """Seconds from `since` to now (0 when None)."""
        return 0.0 if since is None else self.now - since

    @property
    def mirror_lost(self) -> bool:
        """No synchronous mirror for `mirror_lost_after`, or its agent says it is down."""
        return (self.mirror_known_down
                or self.elapsed(self.obs.sync_lost_at) >= self.obs.timeouts.mirror_lost_after)

    @property
    def witness_allows_exposure(self) -> bool:
        """The witness (if any) does not hear a working mirror either."""
        if not self.obs.witness_configured:
            return True
        w = self.w
        return w is not None and (w.partner_serving_age is None
                                  or w.partner_serving_age >= w.mirror_timeout)

    @property
    def failover_possible(self) -> bool:
        """Could the mirror be elected while our instance is down?"""
        w, p = self.w, self.p
        if not self.obs.witness_configured or (w is not None and w.exposed):
            return False
        return p is None or (p.role is Role.MIRROR and p.synchronous)

    # --- mirror -------------------------------------------------------------------------

    @property
    def principal_ready(self) -> bool:
        """The partner is the serving principal of our term (we can rewind from it)."""
        p = self.p
        return (p is not None and p.role is Role.PRINCIPAL and p.term == self.obs.term
                and p.serving)

    @property
    def must_rejoin(self) -> bool:
        """Our instance cannot simply follow the principal: it is read-write, not set up
        as a standby, or has not streamed from the serving principal for long."""
        inst, obs = self.inst, self.obs
        if inst.primary or (not inst.running and not inst.standby_configured):
            return True
        return (inst.standby and not inst.streaming and self.principal_ready
                and self.elapsed(obs.stream_lost_at) >= obs.timeouts.stream_lost_after)

    def manual(self, kind: ManualKind) -> ManualRequest | None:
        """The pending manual request of `kind`, if any."""
        m = self.obs.manual
        return m if m is not None and m.kind is kind else None


def sync_names_for(node: str) -> str:
    """The synchronous_standby_names value requiring the standby called `node`."""
    return f'"{node}"'


# --- decisions ------------------------------------------------------------------------------

Make = Callable[[Facts], Decision]


def _d(action: Action, reason: str | Callable[[Facts], str], *, bump: bool = False) -> Make:
    """A decision maker: `action` with its reason, at the current term (+1 with `bump`)."""
    def make(f: Facts) -> Decision:
        text = reason(f) if callable(reason) else reason
        return Decision(action, text, f.obs.term + (1 if bump else 0))
    return make


def _adopt(f: Facts) -> Decision:
    assert f.higher is not None
    term, principal, where = f.higher
    role = "principal" if principal == f.obs.node else "mirror"
    return Decision(Action.ADOPT, f"term {term} with principal {principal} seen at {where} "
                    f"(ours: {f.obs.term}): adopting it as {role}", term, principal)


def _lag(f: Facts) -> str:
    lag = f.inst.standby_lag
    return "not attached" if lag is None else f"{lag} bytes behind"


def _following(f: Facts) -> str:
    how = "synchronous" if f.obs.was_synchronous else "not synchronous yet"
    return f"following principal {f.obs.principal} ({how})"


def _is_principal(f: Facts) -> bool:
    return f.obs.role is Role.PRINCIPAL


def _is_mirror(f: Facts) -> bool:
    return f.obs.role is Role.MIRROR


def _planned(f: Facts) -> bool:
    m = f.manual(ManualKind.PLANNED)
    return (_is_principal(f) and f.inst.primary and m is not None
            and m.target == f.obs.partner)


def _forced(f: Facts) -> bool:
    m = f.manual(ManualKind.FORCED)
    return _is_mirror(f) and m is not None and m.target == f.obs.node


def _expired(f: Facts) -> bool:
    return f.obs.manual is not None and f.now >= f.obs.manual.deadline


def _serving_principal(f: Facts) -> bool:
    return _is_principal(f) and f.inst.primary and not f.inst.read_only


def _principal_unavailable(f: Facts) -> bool:
    return _is_mirror(f) and f.inst.standby and not f.principal_ready


@dataclass(frozen=True, slots=True)
class Rule:
    """One row of the table: when `when` holds, `then` decides."""

    name: str
    when: Callable[[Facts], bool]
    then: Make


RULES: tuple[Rule, ...] = (
    # --- any role: terms -------------------------------------------------------------------
    Rule("higher-term-elsewhere", lambda f: f.higher is not None, _adopt),
    Rule("two-principals",
         lambda f: (_is_principal(f) and f.inst.primary and not f.inst.read_only
                    and f.p is not None and f.p.role is Role.PRINCIPAL
                    and f.p.term == f.obs.term
                    and not (f.w is not None and f.w.principal == f.obs.node)),
         _d(Action.FENCE, lambda f: f"partner also claims principal in term {f.obs.term} "
                                    "and the witness does not confirm us: refusing writes")),
    # --- manual failover forced on the mirror (BE-4) --------------------------------------
    Rule("forced-expired", lambda f: _forced(f) and _expired(f),
         _d(Action.ABORT, "forced failover timed out")),
    Rule("forced-principal-serving", lambda f: _forced(f) and f.principal_ready,
         _d(Action.ABORT, "forced failover refused: the principal is reachable and serving; "
                          "use a planned failover (no --force)")),
    Rule("forced-failover", lambda f: _forced(f) and f.inst.standby,
         _d(Action.FORCE_PROMOTE,
            lambda f: f"forced failover by the admin, principal unreachable: promoting at "
                      f"term {f.obs.term + 1}; writes acknowledged by the old principal but "
                      "not received here are LOST", bump=True)),
    # --- principal: own instance -----------------------------------------------------------
    Rule("principal-down-restart",
         lambda f: (_is_principal(f) and not f.inst.running and f.holds_term
                    and (f.obs.crashed_at is None or not f.failover_possible
                         or f.elapsed(f.obs.crashed_at) >= f.obs.timeouts.restart_grace)),
         _d(Action.START, lambda f: f"holding term {f.obs.term} as principal: starting the "
                                    "instance read-write")),
    Rule("principal-down-unconfirmed",
         lambda f: _is_principal(f) and not f.inst.running and not f.holds_term,
         _d(Action.WAIT, "instance down and neither witness nor partner confirms our term: "
                         "not starting it read-write")),
    Rule("principal-down-grace", lambda f: _is_principal(f) and not f.inst.running,
         _d(Action.WAIT, lambda f: f"instance down {f.elapsed(f.obs.crashed_at):.1f} s: "
                                   "leaving the mirror time to take over before restarting")),
    Rule("principal-not-answering", lambda f: _is_principal(f) and not f.inst.reachable,
         _d(Action.WAIT, "instance runs but does not answer (starting or stuck)")),
    Rule("principal-promote",
         lambda f: (_is_principal(f) and f.inst.standby
                    and (f.w is not None or f.p is not None or not f.obs.witness_configured
                         or f.manual(ManualKind.FORCED) is not None)),
         _d(Action.PROMOTE, lambda f: f"holding term {f.obs.term} as principal: promoting "
                                      "the standby instance")),
    Rule("principal-promote-no-quorum", lambda f: _is_principal(f) and f.inst.standby,
         _d(Action.WAIT, "holding the term but neither witness nor partner reachable: "
                         "not promoting")),
    Rule("principal-alone", lambda f: _is_principal(f) and not f.quorum and not f.inst.read_only,
         _d(Action.FENCE, "principal sees neither mirror nor witness (no quorum): "
                          "refusing writes")),
    Rule("principal-alone-fenced", lambda f: _is_principal(f) and not f.quorum,
         _d(Action.WAIT, "fenced: principal sees neither mirror nor witness")),
    # --- principal: planned failover (BE-4) ------------------------------------------------
    Rule("planned-expired", lambda f: _planned(f) and _expired(f),
         _d(Action.ABORT, "planned failover timed out: the mirror did not catch up")),
    Rule("planned-no-mirror",
         lambda f: _planned(f) and (f.p is None or f.inst.standby_state != "streaming"),
         _d(Action.ABORT, "planned failover impossible: the mirror is not streaming")),
    Rule("planned-fence", lambda f: _planned(f) and not f.inst.read_only,
         _d(Action.FENCE, "planned failover: stopping writes")),
    Rule("planned-catch-up", lambda f: _planned(f) and f.inst.standby_lag != 0,
         _d(Action.WAIT, lambda f: f"planned failover: mirror catching up ({_lag(f)})")),
    Rule("planned-handover", _planned,
         _d(Action.HANDOVER, lambda f: f"planned failover: mirror caught up, handing term "
                                       f"{f.obs.term + 1} to {f.obs.partner}", bump=True)),
    # --- principal: fenced --------------------------------------------------------------
    Rule("principal-unfence",
         lambda f: _is_principal(f) and f.inst.read_only and f.holds_term,
         _d(Action.UNFENCE, "quorum regained and the term confirmed: accepting writes")),
    Rule("principal-fenced-unconfirmed", lambda f: _is_principal(f) and f.inst.read_only,
         _d(Action.WAIT, "fenced: waiting for the witness or the partner to confirm our term")),
    # --- principal: synchronous mirror and exposure (BE-1, BE-5) ----------------------------
    Rule("require-sync",
         lambda f: _serving_principal(f) and not f.obs.exposed and not f.names_mirror,
         _d(Action.REQUIRE_SYNC, lambda f: f"commits must wait for the mirror "
                                           f"{f.obs.partner}")),
    Rule("mirror-synchronous", lambda f: _serving_principal(f) and f.mirror_synchronous,
         _d(Action.STAY, "principal serving, mirror synchronous")),
    Rule("strict-waits",
         lambda f: _serving_principal(f) and not f.obs.exposed
         and f.obs.policy is Policy.STRICT,
         _d(Action.WAIT, lambda f: f"mirror not synchronous ({_lag(f)}), policy strict: "
                                   "commits wait for it")),
    Rule("expose",
         lambda f: (_serving_principal(f) and not f.obs.exposed and f.mirror_lost
                    and f.witness_allows_exposure),
         _d(Action.EXPOSE, "mirror lost, the witness agrees (policy available): running "
                           "exposed — no failover possible until it has resynchronised")),
    Rule("exposure-refused", lambda f: _serving_principal(f) and not f.obs.exposed,
         _d(Action.WAIT, lambda f: f"mirror not synchronous ({_lag(f)}): commits wait for it "
                                   "(not lost long enough, or the witness still hears it)")),
    Rule("restore-sync",
         lambda f: (_serving_principal(f) and f.inst.sync_names == ""
                    and f.inst.standby_state == "streaming"
                    and (f.inst.standby_lag or 0) <= RESTORE_SYNC_LAG),
         _d(Action.RESTORE_SYNC, "exposed, mirror caught up: requiring it again")),
    Rule("exposed", lambda f: _serving_principal(f) and f.inst.sync_names == "",
         _d(Action.STAY, lambda f: f"exposed: mirror absent or catching up ({_lag(f)})")),
    Rule("end-exposure",
         lambda f: (_serving_principal(f) and f.names_mirror and f.inst.standby_sync == "sync"
                    and f.inst.standby_flush_lsn is not None
                    and f.inst.standby_flush_lsn >= (f.obs.restore_lsn
                                                     or f.inst.current_lsn or 0)),
         _d(Action.END_EXPOSURE, "mirror synchronous again and caught up: leaving the "
                                 "exposed state")),
    Rule("re-expose",
         lambda f: _serving_principal(f) and f.names_mirror and f.mirror_lost
         and f.witness_allows_exposure,
         _d(Action.EXPOSE, "exposed, mirror lost again while resynchronising")),
    Rule("exposed-resyncing", _serving_principal,
         _d(Action.WAIT, lambda f: f"exposed: waiting for the mirror to be synchronous "
                                   f"({_lag(f)})")),
    # --- mirror -------------------------------------------------------------------------
    Rule("mirror-read-write",
         lambda f: _is_mirror(f) and f.inst.primary and not f.inst.read_only,
         _d(Action.FENCE, lambda f: f"not the principal in term {f.obs.term}: refusing "
                                    "writes until rejoined")),
    Rule("mirror-rejoin", lambda f: _is_mirror(f) and f.must_rejoin and f.principal_ready,
         _d(Action.REJOIN, lambda f: f"rejoining principal {f.obs.partner} in term "
                                     f"{f.obs.term} (rewind, else re-clone)")),
    Rule("mirror-rejoin-later", lambda f: _is_mirror(f) and f.must_rejoin,
         _d(Action.WAIT, "must rejoin as mirror: waiting for the serving principal")),
    Rule("mirror-down", lambda f: _is_mirror(f) and not f.inst.running,
         _d(Action.START, "starting the mirror instance as a standby")),
    Rule("mirror-not-answering", lambda f: _is_mirror(f) and not f.inst.reachable,
         _d(Action.WAIT, "instance runs but does not answer (starting or stuck)")),
    Rule("mirror-following", lambda f: _is_mirror(f) and f.principal_ready,
         _d(Action.STAY, _following)),
    Rule("no-witness",
         lambda f: _principal_unavailable(f) and not f.obs.witness_configured,
         _d(Action.WAIT, "principal unreachable and no witness: manual failover only "
                         "(db failover --to mirror --force, which may lose data)")),
    Rule("mirror-alone", lambda f: _principal_unavailable(f) and f.w is None,
         _d(Action.WAIT, "principal and witness unreachable (no quorum): never promoting")),
    Rule("mirror-not-synchronous",
         lambda f: _principal_unavailable(f) and not f.obs.was_synchronous,
         _d(Action.WAIT, "principal unreachable but this mirror was not synchronous: "
                         "never promoting (acknowledged writes could be lost)")),
    Rule("principal-exposed",
         lambda f: _principal_unavailable(f) and f.w is not None and f.w.exposed,
         _d(Action.WAIT, "principal unreachable but it ran exposed: no failover until the "
                         "mirror has resynchronised")),
    Rule("partners-cut",
         lambda f: (_principal_unavailable(f) and f.w is not None
                    and f.w.principal_silent_for < f.w.principal_timeout),
         _d(Action.STAY, "partner unreachable but the witness still hears the principal: "
                         "no failover")),
    Rule("elect", _principal_unavailable,
         _d(Action.ELECT, lambda f: f"principal unreachable, the witness agrees "
                                    f"(silent {f.w.principal_silent_for if f.w else 0:.1f} s), "
                                    f"mirror synchronous: promoting at term {f.obs.term + 1}",
            bump=True)),
)


def decide(observation: Observation, now: float) -> Decision:
    """The one action this agent takes now, with its reason and resulting term."""
    facts = Facts(observation, now)
    for rule in RULES:
        if rule.when(facts):
            return replace(rule.then(facts), rule=rule.name)
    return Decision(Action.WAIT, "no rule applies (unexpected state)", observation.term,
                    rule="none")
