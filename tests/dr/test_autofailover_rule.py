"""The automatic pool failover rule (DR-10): only when the backup pool and the witness
both see the pool down, and only from the normal state."""

from __future__ import annotations

from trimaran.cms.autofailover import decide
from trimaran.cms.liveness import DOWN, RECOVERING, SUSPECT, UP


def test_fails_over_only_when_both_see_the_pool_down() -> None:
    assert decide(ours=DOWN, witness=DOWN, record_state="normal", pool="a").action == \
        "failover"


def test_a_partition_between_the_sites_is_not_a_failover() -> None:
    decision = decide(ours=DOWN, witness=UP, record_state="normal", pool="a")
    assert decision.action == "wait" and "partition" in decision.reason
    assert decide(ours=DOWN, witness=SUSPECT, record_state="normal", pool="a").action == \
        "wait"


def test_no_failover_without_the_witness_or_before_our_own_detection() -> None:
    assert decide(ours=DOWN, witness=None, record_state="normal", pool="a").action == "wait"
    for ours in (UP, SUSPECT, RECOVERING):
        assert decide(ours=ours, witness=DOWN, record_state="normal", pool="a").action == \
            "wait"


def test_never_twice_nor_during_an_admin_operation() -> None:
    for state in ("failing-over", "failed-over", "failing-back"):
        assert decide(ours=DOWN, witness=DOWN, record_state=state, pool="a").action == "wait"
