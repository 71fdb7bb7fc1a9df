"""The mirroring decision core (trimaran.backend.decide), table-driven with a fake
clock: every rule of the table, each case naming the SPEC rule it shows."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from trimaran.backend.decide import (
    RULES,
    Action,
    Decision,
    Instance,
    ManualKind,
    ManualRequest,
    Observation,
    PartnerView,
    Policy,
    Role,
    Timeouts,
    WitnessView,
    decide,
    sync_names_for,
)

NOW = 1000.0
T = Timeouts()          # unreachable 2 s, mirror lost 2 s, restart grace 10 s, stream 15 s

#: What a healthy principal ``a`` sees: running read-write, ``b`` attached synchronous.
PRIMARY = Instance(running=True, reachable=True, sync_names=sync_names_for("b"),
                   current_lsn=5000, standby_state="streaming", standby_sync="sync",
                   standby_flush_lsn=5000)
#: What a healthy mirror ``b`` sees: a streaming standby.
STANDBY = Instance(running=True, reachable=True, in_recovery=True, standby_configured=True,
                   streaming=True)
DETACHED = replace(PRIMARY, standby_state=None, standby_sync=None, standby_flush_lsn=None)
DOWN = Instance(running=False)


def witness(*, term: int = 1, principal: str | None = "a", exposed: bool = False,
            silent: float = 0.3, partner_serving_age: float | None = 0.3) -> WitnessView:
    """The witness's answer (principal timeout 4 s, mirror timeout 4 s)."""
    return WitnessView(term, principal, exposed, silent, 4.0, partner_serving_age, 4.0)


def partner(role: Role, *, term: int = 1, principal: str = "a", serving: bool = True,
            synchronous: bool = True, exposed: bool = False) -> PartnerView:
    """The partner agent's answer."""
    return PartnerView(role, term, principal, serving, synchronous, exposed)


def principal(**changes: Any) -> Observation:
    """Node ``a``, principal in term 1, everything healthy; `changes` replace fields."""
    base = Observation(
        node="a", partner="b", role=Role.PRINCIPAL, term=1, principal="a", exposed=False,
        policy=Policy.AVAILABLE, instance=PRIMARY, witness_configured=True,
        partner_view=partner(Role.MIRROR), partner_seen_at=NOW - 0.2,
        witness_view=witness(partner_serving_age=0.3), witness_seen_at=NOW - 0.2,
        timeouts=T)
    return replace(base, **changes)


def mirror(**changes: Any) -> Observation:
    """Node ``b``, mirror in term 1 of principal ``a``, synchronous, everything healthy."""
    base = Observation(
        node="b", partner="a", role=Role.MIRROR, term=1, principal="a", exposed=False,
        policy=Policy.AVAILABLE, instance=STANDBY, witness_configured=True,
        partner_view=partner(Role.PRINCIPAL), partner_seen_at=NOW - 0.2,
        witness_view=witness(), witness_seen_at=NOW - 0.2, was_synchronous=True,
        timeouts=T)
    return replace(base, **changes)


LOST = NOW - 10.0                      # a contact time long past `unreachable_after`
PRINCIPAL_GONE = {"partner_seen_at": LOST}
WITNESS_GONE = {"witness_seen_at": LOST}
WITNESS_AGREES = {"witness_view": witness(silent=4.5)}
PLANNED = ManualRequest(ManualKind.PLANNED, "b", NOW + 30)
FORCED = ManualRequest(ManualKind.FORCED, "b", NOW + 30)
FENCED = replace(PRIMARY, read_only=True)

# (case id: behaviour and SPEC rule, observation, action, rule, resulting term)
CASES: list[tuple[str, Observation, Action, str, int]] = [
    # --- principal: steady state, quorum and fencing (BE-1, BE-3) ---------------------------
    ("principal with synchronous mirror stays (BE-1)",
     principal(), Action.STAY, "mirror-synchronous", 1),
    ("principal alone fences (BE-3)",
     principal(instance=DETACHED, **PRINCIPAL_GONE, **WITNESS_GONE),
     Action.FENCE, "principal-alone", 1),
    ("principal alone, fenced already, waits (BE-3)",
     principal(instance=replace(DETACHED, read_only=True), **PRINCIPAL_GONE, **WITNESS_GONE),
     Action.WAIT, "principal-alone-fenced", 1),
    ("principal losing only the witness keeps serving (BE-3)",
     principal(**WITNESS_GONE), Action.STAY, "mirror-synchronous", 1),
    ("principal whose mirror streams but whose agent is cut is not alone (BE-3)",
     principal(**PRINCIPAL_GONE, **WITNESS_GONE), Action.STAY, "mirror-synchronous", 1),
    ("fenced principal with quorum and term confirmed by the witness unfences",
     principal(instance=FENCED), Action.UNFENCE, "principal-unfence", 1),
    ("fenced principal confirmed by the partner alone unfences",
     principal(instance=FENCED, **WITNESS_GONE), Action.UNFENCE, "principal-unfence", 1),
    ("fenced principal without confirmation of its term waits",
     principal(instance=FENCED, witness_view=witness(principal="x"),
               partner_view=partner(Role.MIRROR, principal="x")),
     Action.WAIT, "principal-fenced-unconfirmed", 1),
    ("partner also principal in the same term: fence (BE-3)",
     principal(partner_view=partner(Role.PRINCIPAL, principal="b"),
               witness_view=witness(principal="b")),
     Action.FENCE, "two-principals", 1),
    ("principal made so by --force stands alone without fencing (BE-4)",
     principal(instance=replace(DETACHED, sync_names=""), exposed=True, forced=True,
               **PRINCIPAL_GONE, **WITNESS_GONE), Action.STAY, "exposed", 1),
    ("principal without a witness configured never fences for quorum (BE-4)",
     principal(witness_configured=False, **PRINCIPAL_GONE), Action.STAY,
     "mirror-synchronous", 1),
    # --- terms (BE-3) -----------------------------------------------------------------------
    ("old principal seeing a higher term at the witness steps down",
     principal(witness_view=witness(term=2, principal="b")), Action.ADOPT,
     "higher-term-elsewhere", 2),
    ("old principal seeing a higher term at the partner steps down",
     principal(partner_view=partner(Role.PRINCIPAL, term=3, principal="b"), **WITNESS_GONE),
     Action.ADOPT, "higher-term-elsewhere", 3),
    ("mirror granted a vote before a crash adopts the term as principal",
     mirror(witness_view=witness(term=2, principal="b")), Action.ADOPT,
     "higher-term-elsewhere", 2),
    ("a stale witness answer is no evidence of a higher term",
     principal(witness_view=witness(term=2, principal="b"), **WITNESS_GONE), Action.STAY,
     "mirror-synchronous", 1),
    # --- principal: its own instance ----------------------------------------------------
    ("principal instance down at agent start, term confirmed: start it",
     principal(instance=DOWN), Action.START, "principal-down-restart", 1),
    ("principal instance just crashed, synchronous mirror could take over: wait",
     principal(instance=DOWN, crashed_at=NOW - 1.0), Action.WAIT, "principal-down-grace", 1),
    ("principal instance crashed, mirror not synchronous: restart at once",
     principal(instance=DOWN, crashed_at=NOW - 1.0,
               partner_view=partner(Role.MIRROR, synchronous=False)),
     Action.START, "principal-down-restart", 1),
    ("principal instance crashed while exposed: restart at once (BE-5)",
     principal(instance=DOWN, crashed_at=NOW - 1.0, exposed=True,
               witness_view=witness(exposed=True)), Action.START, "principal-down-restart", 1),
    ("principal instance crashed longer than the grace: restart",
     principal(instance=DOWN, crashed_at=NOW - 11.0), Action.START,
     "principal-down-restart", 1),
    ("principal instance down, nobody confirms the term: never start it read-write",
     principal(instance=DOWN, **PRINCIPAL_GONE, **WITNESS_GONE), Action.WAIT,
     "principal-down-unconfirmed", 1),
    ("principal instance runs but does not answer: wait",
     principal(instance=Instance(running=True)), Action.WAIT, "principal-not-answering", 1),
    ("holding the term with a standby instance: promote it",
     principal(term=2, instance=STANDBY, witness_view=witness(term=2)),
     Action.PROMOTE, "principal-promote", 2),
    ("holding the term, nobody reachable: do not promote",
     principal(term=2, instance=STANDBY, **PRINCIPAL_GONE, **WITNESS_GONE), Action.WAIT,
     "principal-promote-no-quorum", 2),
    # --- principal: synchronous mirror and exposure (BE-1, BE-5) ----------------------------
    ("commits must wait for the mirror",
     principal(instance=replace(PRIMARY, sync_names="")), Action.REQUIRE_SYNC,
     "require-sync", 1),
    ("mirror lost, witness does not hear it, policy available: run exposed (BE-5)",
     principal(instance=DETACHED, sync_lost_at=NOW - 3.0, **PRINCIPAL_GONE,
               witness_view=witness(partner_serving_age=None)),
     Action.EXPOSE, "expose", 1),
    ("mirror's agent says its standby is down: expose at once (BE-5)",
     principal(instance=DETACHED, sync_lost_at=NOW - 0.1,
               partner_view=partner(Role.MIRROR, serving=False),
               witness_view=witness(partner_serving_age=None)), Action.EXPOSE, "expose", 1),
    ("no witness configured, mirror lost: run exposed (BE-5)",
     principal(instance=DETACHED, sync_lost_at=NOW - 3.0, witness_configured=False,
               **PRINCIPAL_GONE), Action.EXPOSE, "expose", 1),
    ("mirror lost but the witness still hears it streaming: writes wait (BE-5)",
     principal(instance=DETACHED, sync_lost_at=NOW - 3.0, **PRINCIPAL_GONE),
     Action.WAIT, "exposure-refused", 1),
    ("mirror not synchronous for a moment only: writes wait",
     principal(instance=replace(PRIMARY, standby_sync="potential"), sync_lost_at=NOW - 0.5),
     Action.WAIT, "exposure-refused", 1),
    ("mirror lost, witness unreachable: no exposure",
     principal(instance=DETACHED, sync_lost_at=NOW - 3.0, **WITNESS_GONE),
     Action.WAIT, "exposure-refused", 1),
    ("policy strict: writes wait for the mirror (BE-5)",
     principal(instance=DETACHED, sync_lost_at=NOW - 30.0, policy=Policy.STRICT,
               **PRINCIPAL_GONE, witness_view=witness(partner_serving_age=None)),
     Action.WAIT, "strict-waits", 1),
    ("exposed, mirror streaming and caught up: require it again (BE-5)",
     principal(exposed=True, instance=replace(PRIMARY, sync_names="", standby_sync="async")),
     Action.RESTORE_SYNC, "restore-sync", 1),
    ("exposed, mirror a little behind: require it again, commits will wait (BE-5)",
     principal(exposed=True, instance=replace(PRIMARY, sync_names="", standby_sync="async",
                                               standby_flush_lsn=4000)),
     Action.RESTORE_SYNC, "restore-sync", 1),
    ("exposed, mirror absent: stay exposed (BE-5)",
     principal(exposed=True, instance=replace(DETACHED, sync_names="")), Action.STAY,
     "exposed", 1),
    ("exposed, mirror synchronous past the restore point: exposure ends (BE-5)",
     principal(exposed=True, restore_lsn=4500), Action.END_EXPOSURE, "end-exposure", 1),
    ("exposed, mirror synchronous but not yet past the restore point: wait (BE-5)",
     principal(exposed=True, restore_lsn=6000), Action.WAIT, "exposed-resyncing", 1),
    ("exposed, mirror lost again while resynchronising: drop it again (BE-5)",
     principal(exposed=True, instance=replace(DETACHED), sync_lost_at=NOW - 3.0,
               **PRINCIPAL_GONE, witness_view=witness(exposed=True, partner_serving_age=None)),
     Action.EXPOSE, "re-expose", 1),
    # --- planned failover on the principal (BE-4) -------------------------------------------
    ("planned failover: stop writes first",
     principal(manual=PLANNED), Action.FENCE, "planned-fence", 1),
    ("planned failover: wait until the mirror has everything",
     principal(manual=PLANNED, instance=replace(FENCED, standby_flush_lsn=4900)),
     Action.WAIT, "planned-catch-up", 1),
    ("planned failover: mirror caught up, hand term 2 over",
     principal(manual=PLANNED, instance=FENCED), Action.HANDOVER, "planned-handover", 2),
    ("planned failover without a streaming mirror is abandoned",
     principal(manual=PLANNED, instance=DETACHED), Action.ABORT, "planned-no-mirror", 1),
    ("planned failover past its deadline is abandoned",
     principal(manual=replace(PLANNED, deadline=NOW - 1), instance=FENCED), Action.ABORT,
     "planned-expired", 1),
    ("quorum loss beats a planned failover: fence (BE-3)",
     principal(manual=PLANNED, instance=DETACHED, **PRINCIPAL_GONE, **WITNESS_GONE),
     Action.FENCE, "principal-alone", 1),
    # --- mirror (BE-2, BE-3) ------------------------------------------------------------
    ("mirror following a serving principal stays",
     mirror(), Action.STAY, "mirror-following", 1),
    ("both partners see the witness but not each other: stay, no failover (BE-3)",
     mirror(**PRINCIPAL_GONE), Action.STAY, "partners-cut", 1),
    ("mirror + witness agree, mirror was synchronous: promote with term+1 (BE-2)",
     mirror(**PRINCIPAL_GONE, **WITNESS_AGREES), Action.ELECT, "elect", 2),
    ("principal's agent answers but its instance is down: elect (BE-2)",
     mirror(partner_view=partner(Role.PRINCIPAL, serving=False), **WITNESS_AGREES),
     Action.ELECT, "elect", 2),
    ("mirror not synchronous: wait, never promote (BE-3)",
     mirror(was_synchronous=False, **PRINCIPAL_GONE, **WITNESS_AGREES), Action.WAIT,
     "mirror-not-synchronous", 1),
    ("exposed principal: no failover possible until resynced (BE-5)",
     mirror(**PRINCIPAL_GONE, witness_view=witness(silent=9.0, exposed=True)), Action.WAIT,
     "principal-exposed", 1),
    ("mirror alone never promotes (BE-3)",
     mirror(**PRINCIPAL_GONE, **WITNESS_GONE), Action.WAIT, "mirror-alone", 1),
    ("no witness: no automatic failover (BE-4)",
     mirror(witness_configured=False, **PRINCIPAL_GONE), Action.WAIT, "no-witness", 1),
    ("a principal of another term is no principal to follow",
     mirror(term=2, principal="a", partner_view=partner(Role.PRINCIPAL, term=1),
            witness_view=witness(term=2, silent=4.5)), Action.ELECT, "elect", 3),
    ("forced failover: promote at term+1, whatever the witness says (BE-4)",
     mirror(manual=FORCED, **PRINCIPAL_GONE, **WITNESS_GONE), Action.FORCE_PROMOTE,
     "forced-failover", 2),
    ("forced failover while the principal serves is refused (BE-4)",
     mirror(manual=FORCED), Action.ABORT, "forced-principal-serving", 1),
    ("forced failover past its deadline is abandoned",
     mirror(manual=replace(FORCED, deadline=NOW), **PRINCIPAL_GONE), Action.ABORT,
     "forced-expired", 1),
    # --- rejoin (BE-3, BE-6) ------------------------------------------------------------
    ("old principal back read-write with a lower term: fence it first (BE-3)",
     mirror(term=2, principal="a", instance=PRIMARY,
            partner_view=partner(Role.PRINCIPAL, term=2)), Action.FENCE,
     "mirror-read-write", 2),
    ("old principal fenced, new principal serving: rejoin (BE-6)",
     mirror(term=2, instance=FENCED, partner_view=partner(Role.PRINCIPAL, term=2)),
     Action.REJOIN, "mirror-rejoin", 2),
    ("old principal fenced, new principal not reachable: wait",
     mirror(term=2, instance=FENCED, **PRINCIPAL_GONE), Action.WAIT,
     "mirror-rejoin-later", 2),
    ("mirror instance down and set up as a standby: start it",
     mirror(instance=replace(DOWN, standby_configured=True)), Action.START, "mirror-down", 1),
    ("mirror instance down and not a standby (old principal): rejoin (BE-6)",
     mirror(instance=DOWN), Action.REJOIN, "mirror-rejoin", 1),
    ("mirror not streaming from the serving principal for long: rejoin (BE-6)",
     mirror(instance=replace(STANDBY, streaming=False), stream_lost_at=NOW - 20.0),
     Action.REJOIN, "mirror-rejoin", 1),
    ("mirror not streaming for a moment: keep following",
     mirror(instance=replace(STANDBY, streaming=False), stream_lost_at=NOW - 2.0),
     Action.STAY, "mirror-following", 1),
    ("mirror instance runs but does not answer: wait",
     mirror(instance=Instance(running=True)), Action.WAIT, "mirror-not-answering", 1),
]


@pytest.mark.parametrize(("observation", "action", "rule", "term"),
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_rule_table(observation: Observation, action: Action, rule: str, term: int) -> None:
    decision = decide(observation, NOW)
    assert (decision.action, decision.rule, decision.term) == (action, rule, term), \
        decision.reason
    assert decision.reason


def test_every_rule_of_the_table_is_specified_by_a_case() -> None:
    covered = {case[3] for case in CASES}
    assert covered == {rule.name for rule in RULES}


def test_rule_names_are_unique() -> None:
    names = [rule.name for rule in RULES]
    assert len(names) == len(set(names))


def test_the_decision_is_a_function_of_the_observation_and_the_time() -> None:
    obs = mirror(**PRINCIPAL_GONE)
    assert decide(obs, NOW) == decide(obs, NOW)
    # the same observation later: the witness's answer has gone stale, no quorum
    assert decide(obs, NOW + T.unreachable_after).rule == "mirror-alone"


def test_adopting_a_term_names_its_principal() -> None:
    down = decide(principal(witness_view=witness(term=4, principal="b")), NOW)
    up = decide(mirror(witness_view=witness(term=4, principal="b")), NOW)
    assert (down.principal, up.principal) == ("b", "b")
    assert "as mirror" in down.reason and "as principal" in up.reason


def test_an_old_principal_returns_through_fence_and_rejoin() -> None:
    """BE-3, BE-6: the sequence of decisions of a returning old principal, each
    observation as the agent would see it after the previous action."""
    new_principal = partner(Role.PRINCIPAL, term=2, principal="b")
    back = principal(instance=PRIMARY, partner_view=new_principal,
                     witness_view=witness(term=2, principal="b"))
    step = decide(back, NOW)
    assert (step.action, step.term, step.principal) == (Action.ADOPT, 2, "b")
    adopted = replace(back, role=Role.MIRROR, term=2, principal="b", partner="b", node="a")
    assert decide(adopted, NOW).action is Action.FENCE
    fenced = replace(adopted, instance=FENCED)
    assert decide(fenced, NOW).action is Action.REJOIN
    rejoined = replace(adopted, instance=STANDBY)
    assert decide(rejoined, NOW).rule == "mirror-following"


def test_an_unexpected_state_is_a_wait_naming_it() -> None:
    impossible = mirror(role=Role.PRINCIPAL, instance=replace(STANDBY, reachable=False,
                                                              running=True))
    decision = decide(impossible, NOW)
    assert isinstance(decision, Decision) and decision.action is Action.WAIT


def test_instance_lag_and_states() -> None:
    assert PRIMARY.standby_lag == 0 and DETACHED.standby_lag is None
    assert replace(PRIMARY, standby_flush_lsn=4000).standby_lag == 1000
    assert PRIMARY.primary and not PRIMARY.standby and STANDBY.standby
    assert not DOWN.primary and not DOWN.standby
