"""The backup registrar's own detection of its paired pool and the resiliency-mode
standing it gives that pool's users (SPEC DR-8), with time passed in."""

from __future__ import annotations

from trimaran.cms.failover import PoolFailover, plan_failover, standing
from trimaran.cms.liveness import DOWN, RECOVERING, SUSPECT, UP, PartnerState

TIMING = {"interval": 1.0, "detection": 10.0, "fallback": 30.0}


def run(state: PartnerState, answers: list[tuple[float, bool]]) -> list[str]:
    seen = []
    for now, answered in answers:
        state = state.next(now=now, answered=answered, **TIMING)
        seen.append(state.state)
    return seen


def test_a_silent_pool_is_suspect_then_down_after_the_detection_interval() -> None:
    start = PartnerState(UP, last_seen=0.0, since=0.0)
    states = run(start, [(1, True), (2, False), (4, False), (10.5, False), (11.5, False)])
    assert states == [UP, UP, SUSPECT, SUSPECT, DOWN]


def test_a_returning_pool_is_up_only_after_the_fallback_interval() -> None:
    down = PartnerState(DOWN, last_seen=0.0, since=11.0)
    states = run(down, [(20, True), (35, True), (49.9, True), (50, True)])
    assert states == [RECOVERING, RECOVERING, RECOVERING, UP]


def test_a_pool_that_falls_silent_again_while_recovering_stays_down() -> None:
    down = PartnerState(DOWN, last_seen=0.0, since=11.0)
    states = run(down, [(20, True), (25, False), (31, False)])
    assert states == [RECOVERING, RECOVERING, DOWN]


def test_retry_after_while_suspect_counts_down_to_detection() -> None:
    suspect = PartnerState(SUSPECT, last_seen=0.0, since=3.0)
    assert suspect.retry_after(4.0, 10.0) == 6.0
    assert suspect.retry_after(9.9, 10.0) == 1.0


def test_users_of_a_down_home_pool_are_served_read_only_in_resiliency_mode() -> None:
    records = {"a": PoolFailover("a", backup="b"), "b": PoolFailover("b", backup="a")}
    st = standing("b", "a", records, {"a": DOWN})
    assert (st.serve, st.read_only, st.mode) == (True, True, "resiliency")
    assert "unreachable" in st.reason
    assert standing("b", "a", records, {"a": RECOVERING}).mode == "resiliency"
    suspect = standing("b", "a", records, {"a": SUSPECT})
    assert not suspect.serve and suspect.redirect_to is None       # retry later
    assert standing("b", "a", records, {"a": UP}).redirect_to == "a"
    # the admin failed the pool over: full mode on the backup pool
    records["a"] = plan_failover(records["a"], records["b"], cms_master="b", disaster=True,
                                 now=0)
    st = standing("b", "a", records, {"a": DOWN})
    assert (st.serve, st.read_only, st.mode) == (True, False, "full")
    # a pool's own users are never in "resiliency" by the partner's liveness
    assert standing("b", "b", records, {"a": DOWN}).mode == "full"
