"""The worker groups of tests/conftest.py: modules binding the same loopback range never
run at the same time on two workers."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import ROOT, address_groups, group_of_nodeid


def _group_of(groups: dict[Path, str], name: str) -> str:
    return groups[ROOT / name]


def test_modules_sharing_a_range_share_a_group_and_others_do_not() -> None:
    names = ["tests/integration/test_drills_enterprise.py",   # 127.0.20.x
             "tests/integration/test_drills_pair.py",         # 127.0.20.x
             "tests/integration/test_interpool.py",           # 127.0.23.x
             "tests/frontend/test_interpool.py",              # 127.0.23.x
             "tests/chat/test_chat_pool.py"]                  # 127.0.47.x only
    groups = address_groups([ROOT / n for n in names])
    assert _group_of(groups, names[0]) == _group_of(groups, names[1])
    assert _group_of(groups, names[2]) == _group_of(groups, names[3])
    assert len({_group_of(groups, n) for n in names}) == 3


def test_ranges_of_imported_test_helpers_count() -> None:
    # test_metro names 127.0.53/54 itself and imports tests.integration.enterprise,
    # which holds the enterprise pool's 127.0.4.x deployment
    names = ["tests/integration/test_metro.py", "tests/integration/test_enterprise_pool.py"]
    groups = address_groups([ROOT / n for n in names])
    assert _group_of(groups, names[0]) == _group_of(groups, names[1])


def test_pure_modules_join_no_group() -> None:
    # the validator's tests name many ranges but bind none
    names = ["tests/topology/test_validator.py", "tests/integration/test_enterprise_pool.py",
             "tests/pool/test_pool.py"]
    groups = address_groups([ROOT / n for n in names])
    assert len(set(groups.values())) == 3


def test_the_scheduler_groups_tests_by_their_modules_group() -> None:
    enterprise = group_of_nodeid("tests/integration/test_drills_enterprise.py::test_x")
    assert enterprise == group_of_nodeid("tests/integration/test_drills_pair.py::test_y")
    assert enterprise != group_of_nodeid("tests/chat/test_chat_pool.py::test_z")
    assert group_of_nodeid("elsewhere/test_q.py::test_q") == "elsewhere/test_q.py"
