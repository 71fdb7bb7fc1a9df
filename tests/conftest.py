"""Running the suite on several workers (`./run test` uses pytest-xdist with two).

Integration tests bind fixed loopback addresses (each module its own 127.0.X.0/24
ranges, see the modules), and a module-scoped deployment must never be started by two
workers at once. So the tests are scheduled in groups: modules that name a common
127.0.X range — in their own text, in the test helper modules they import, or in a
conftest.py above them — form one group, and a group runs on one worker, one module
after another (``--dist loadfile`` with the scheduler below, which schedules by group
instead of by file). A module naming no range is a group of its own. 127.0.0.x is left
out: tests there use ports the system picks.

The pure modules (tests/topology, tests/unit, tests/vectors) only parse and validate
addresses, never bind them, so their ranges do not join groups.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_ADDRESS = re.compile(r"127\.0\.(\d+)\.\d+")
_IMPORT = re.compile(r"^\s*(?:from|import)\s+(tests(?:\.\w+)+)", re.MULTILINE)
_PURE = ("tests/topology/", "tests/unit/", "tests/vectors/")


def _source_of(module: str) -> Path | None:
    parts = module.split(".")
    for candidate in (ROOT.joinpath(*parts).with_suffix(".py"),
                      ROOT.joinpath(*parts, "__init__.py"),
                      ROOT.joinpath(*parts[:-1]).with_suffix(".py")):   # from tests.x import name
        if candidate.is_file():
            return candidate
    return None


@cache
def _ranges_in(path: Path) -> frozenset[str]:
    """The 127.0.X ranges a file names, with those of the test helpers it imports."""
    text = path.read_text(errors="replace")
    found = {r for r in _ADDRESS.findall(text) if r != "0"}
    for module in _IMPORT.findall(text):
        source = _source_of(module)
        if source is not None and source != path:
            found |= _ranges_in(source)
    return frozenset(found)


def _ranges_of_module(path: Path) -> frozenset[str]:
    if str(path.relative_to(ROOT)).startswith(_PURE):
        return frozenset()
    found = set(_ranges_in(path))
    for directory in path.parents:
        if directory == ROOT:
            break
        if (directory / "conftest.py").is_file():
            found |= _ranges_in(directory / "conftest.py")
    return frozenset(found)


def address_groups(modules: list[Path]) -> dict[Path, str]:
    """Each module's group: modules sharing a range (transitively) share one."""
    parent = {m: m for m in modules}

    def root(m: Path) -> Path:
        while parent[m] != m:
            parent[m] = parent[parent[m]]
            m = parent[m]
        return m

    first: dict[str, Path] = {}
    for module in sorted(modules):
        for address_range in sorted(_ranges_of_module(module)):
            if address_range in first:
                parent[root(module)] = root(first[address_range])
            else:
                first[address_range] = module
    return {m: str(root(m).relative_to(ROOT)) for m in modules}


@cache
def _groups_of_suite() -> dict[str, str]:
    modules = sorted((ROOT / "tests").rglob("test_*.py"))
    return {str(m.relative_to(ROOT)): group for m, group in address_groups(modules).items()}


def group_of_nodeid(nodeid: str) -> str:
    """The group of a test (by its module; a module outside the suite is its own)."""
    module = nodeid.split("::", 1)[0]
    return _groups_of_suite().get(module, module)


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """With ``--dist loadfile``: whole groups (not just files) go to one worker."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class AddressGroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return group_of_nodeid(nodeid)

    return AddressGroupScheduling(config, log)
