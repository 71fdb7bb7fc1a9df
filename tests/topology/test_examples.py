"""The example topologies shipped with Trimaran load and validate cleanly (TOP-1, TOP-2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.topology import EXAMPLES_DIR, example_path
from trimaran.topology import Edition, PoolRole, load_validated, validate_file

EXAMPLES = sorted(EXAMPLES_DIR.glob("*.yaml"))


def test_the_three_examples_are_shipped() -> None:
    assert {p.stem for p in EXAMPLES} >= {"standard-pair", "standard-single", "enterprise-pool"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_validates_without_any_violation(path: Path) -> None:
    assert validate_file(path) == []


def test_standard_pair_is_two_paired_se_pools_in_two_sites() -> None:
    topology = load_validated(example_path("standard-pair"))
    assert topology.sip_domain == "trimaran.test"
    assert [s.name for s in topology.sites] == ["dc1", "dc2"]
    se1, se2 = topology.pools
    assert (se1.name, se1.site, se2.name, se2.site) == ("se1", "dc1", "se2", "dc2")
    for pool, partner in ((se1, se2), (se2, se1)):
        assert pool.role is PoolRole.FRONTEND and pool.edition is Edition.STANDARD
        assert pool.backup_pool == partner.name  # DR-1: reciprocal
        assert pool.backup_registrar == partner.name
        assert pool.backend is None
    assert [(s.name, s.address) for s in topology.servers] == [
        ("se1", "127.0.1.1"), ("se2", "127.0.2.1")
    ]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_examples_pair_pools_with_the_documented_backup_pool_key(path: Path) -> None:
    assert "paired_with" not in path.read_text()


def test_standard_single_is_one_se_pool_in_one_site() -> None:
    topology = load_validated(example_path("standard-single"))
    [pool] = topology.pools
    assert len(topology.sites) == 1
    assert (pool.edition, pool.paired_with, len(pool.servers)) == (Edition.STANDARD, None, 1)


def test_enterprise_pool_is_three_servers_sharing_one_back_end() -> None:
    topology = load_validated(example_path("enterprise-pool"))
    [pool] = topology.pools
    assert (pool.name, pool.edition) == ("fe1", Edition.ENTERPRISE)
    assert [s.address for s in pool.servers] == ["127.0.1.11", "127.0.1.12", "127.0.1.13"]
    assert pool.backend is not None and pool.backend.principal is not None
    assert str(pool.backend.principal.endpoint) == "127.0.1.21:5432"
    assert pool.backend.scheme == "single"
    assert pool.capacity_users == 3 * 6660  # FE-6 model figure


def test_metro_is_one_pool_stretched_two_and_two_with_its_back_end_split_and_a_third_site_witness(
) -> None:
    topology = load_validated(example_path("metro"))
    fe1, witness = topology.pools
    assert (fe1.name, fe1.edition, fe1.sites) == ("fe1", Edition.ENTERPRISE, ("a", "b"))
    assert [(s.name, fe1.site_of(s)) for s in fe1.servers] == [
        ("fe1a", "a"), ("fe1b", "a"), ("fe1c", "b"), ("fe1d", "b")]
    backend = fe1.backend
    assert backend is not None and backend.principal is not None and backend.mirror is not None
    assert (backend.principal.site, backend.mirror.site, backend.scheme) == (
        "a", "b", "mirrored+witness")
    assert witness.role is PoolRole.WITNESS and witness.sites == ("c",)
    a, b, _ = topology.sites
    assert (a.rtt_to("b"), a.metro, b.metro) == (2.0, "metro1", "metro1")
