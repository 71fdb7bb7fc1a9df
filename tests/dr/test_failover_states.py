"""The pool failover record and its order rules (SPEC DR-5, DR-6, DR-7, DR-11)."""

from __future__ import annotations

import pytest

from trimaran.cms.failover import (
    FAILED_OVER,
    FAILING_BACK,
    FAILING_OVER,
    NORMAL,
    FailoverRefused,
    FailoverStateError,
    PoolFailover,
    complete_failback,
    complete_failover,
    plan_failback,
    plan_failover,
    standing,
)

A, B = PoolFailover("a", backup="b"), PoolFailover("b", backup="a")


def test_planned_failover_goes_read_only_then_switches_with_growing_terms() -> None:
    started = plan_failover(A, B, cms_master="b", disaster=False, now=10.0)
    assert (started.state, started.term, started.read_only) == (FAILING_OVER, 1, True)
    assert started.serving_pool() == "a"
    done = complete_failover(started, now=11.0, cut_seq=42)
    assert (done.state, done.term, done.cut_seq) == (FAILED_OVER, 2, 42)
    assert done.serving_pool() == "b" and not done.read_only
    assert [e.state for e in done.history] == [FAILING_OVER, FAILED_OVER]


def test_disaster_failover_switches_at_once_and_keeps_the_cut() -> None:
    done = plan_failover(A, B, cms_master="b", disaster=True, now=5.0, cut_seq=7)
    assert (done.state, done.term, done.mode, done.cut_seq) == (FAILED_OVER, 1, "disaster", 7)


def test_failover_refused_without_backup_pool() -> None:
    with pytest.raises(FailoverRefused, match="no backup pool"):
        plan_failover(PoolFailover("a"), None, cms_master="c", disaster=False, now=0)


def test_failover_refused_while_cms_master_is_on_the_pool() -> None:
    with pytest.raises(FailoverRefused, match="cms failover --disaster"):
        plan_failover(A, B, cms_master="a", disaster=True, now=0)
    with pytest.raises(FailoverRefused, match="CMS master is on pool a"):
        plan_failover(A, B, cms_master="a", disaster=False, now=0)


def test_failing_over_the_partner_of_a_failed_over_pool_is_refused_dr11() -> None:
    a_over = plan_failover(A, B, cms_master="b", disaster=True, now=0)
    with pytest.raises(FailoverRefused, match="DR-11"):
        plan_failover(B, a_over, cms_master="c", disaster=True, now=1)


def test_failover_twice_is_refused() -> None:
    a_over = plan_failover(A, B, cms_master="b", disaster=True, now=0)
    with pytest.raises(FailoverRefused, match="already failed-over"):
        plan_failover(a_over, B, cms_master="b", disaster=True, now=1)


def test_failback_of_a_pool_that_is_not_failed_over_is_refused() -> None:
    with pytest.raises(FailoverRefused, match="not failed over"):
        plan_failback(A, disaster=False, now=0)


def test_planned_failback_is_read_only_on_the_backup_then_returns_home() -> None:
    over = plan_failover(A, B, cms_master="b", disaster=True, now=0)
    back = plan_failback(over, disaster=False, now=1)
    assert (back.state, back.serving_pool(), back.read_only) == (FAILING_BACK, "b", True)
    assert plan_failback(back, disaster=False, now=2) is back      # resumable
    home = complete_failback(back, now=3)
    assert (home.state, home.term, home.serving_pool()) == (NORMAL, 3, "a")


def test_disaster_failback_returns_at_once() -> None:
    over = plan_failover(A, B, cms_master="b", disaster=True, now=0)
    assert plan_failback(over, disaster=True, now=1).state == NORMAL


def test_impossible_completion_names_the_state() -> None:
    with pytest.raises(FailoverRefused, match="normal, not failing-over"):
        complete_failover(A, now=0, cut_seq=0)
    with pytest.raises(FailoverRefused, match="normal, not failing-back"):
        complete_failback(A, now=0)


def test_record_round_trips_and_bad_documents_are_refused() -> None:
    over = complete_failover(plan_failover(A, B, cms_master="b", disaster=False, now=1),
                             now=2, cut_seq=3)
    assert PoolFailover.from_json(over.to_json()) == over
    with pytest.raises(FailoverStateError):
        PoolFailover.from_json('{"pool": "a", "state": "sideways", "term": 1}')
    with pytest.raises(FailoverStateError):
        PoolFailover.from_json("not json")


def test_standing_follows_the_records_dr7() -> None:
    over = plan_failover(A, B, cms_master="b", disaster=True, now=0)
    records = {"a": over, "b": B}
    # the failed pool redirects its own users to the backup pool (fencing)
    st = standing("a", "a", records)
    assert (st.serve, st.redirect_to) == (False, "b")
    # the backup pool serves them with full rights
    assert standing("b", "a", records) == standing("b", "a", records)
    assert standing("b", "a", records).serve and not standing("b", "a", records).read_only
    # in normal times a pool redirects the partner's users home
    assert standing("b", "a", {"a": A}).redirect_to == "a"
    # planned failover in progress: served at home, read-only
    going = plan_failover(A, B, cms_master="b", disaster=False, now=0)
    st = standing("a", "a", {"a": going})
    assert st.serve and st.read_only
