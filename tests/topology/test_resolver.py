"""Name lookups over a validated topology (servers, pools, pairs, addresses)."""

from __future__ import annotations

import pytest

from tests.topology import example_path
from trimaran.topology import (
    Endpoint,
    PoolRole,
    Resolver,
    TopologyError,
    UnknownNameError,
    load_validated,
    parse_topology,
)


@pytest.fixture
def pair() -> Resolver:
    return Resolver(load_validated(example_path("standard-pair")))


def test_server_pool_and_site_by_name(pair: Resolver) -> None:
    assert pair.server("se2").address == "127.0.2.1"
    assert pair.pool_of("se2").name == "se2"
    assert pair.site_of("se1").name == "dc1"
    assert [s.name for s in pair.servers_of("se1")] == ["se1"]
    assert [p.name for p in pair.pools(role=PoolRole.FRONTEND, site="dc2")] == ["se2"]


def test_paired_pool_and_backup_registrar(pair: Resolver) -> None:
    paired = pair.paired_pool("se1")
    assert paired is not None and paired.name == "se2"
    assert [p.name for p in pair.registrar_pools("se2")] == ["se2", "se1"]


def test_an_unpaired_pool_has_no_partner_and_only_its_home_registrar() -> None:
    single = Resolver(load_validated(example_path("standard-single")))
    assert single.paired_pool("se1") is None
    assert single.backup_registrar("se1") is None
    assert [p.name for p in single.registrar_pools("se1")] == ["se1"]


def test_backup_registrar_defaults_to_the_paired_pool() -> None:
    text = example_path("standard-pair").read_text().replace("    backup_registrar: se2\n", "")
    resolver = Resolver(parse_topology(text))
    backup = resolver.backup_registrar("se1")
    assert backup is not None and backup.name == "se2"


def test_addresses_of_servers_and_pools(pair: Resolver) -> None:
    assert pair.sip_address("se1") == Endpoint("127.0.1.1", 5060)
    assert str(pair.admin_address("se2")) == "127.0.2.1:8080"
    enterprise = Resolver(load_validated(example_path("enterprise-pool")))
    assert [str(e) for e in enterprise.pool_sip_addresses("fe1")] == [
        "127.0.1.11:5060", "127.0.1.12:5060", "127.0.1.13:5060"
    ]


def test_ipv6_endpoints_are_bracketed() -> None:
    assert str(Endpoint("::1", 5060)) == "[::1]:5060"


def test_local_domain_is_case_insensitive(pair: Resolver) -> None:
    assert pair.is_local_domain("Trimaran.TEST")
    assert not pair.is_local_domain("example.com")
    assert pair.federation_route() is None


def test_unknown_names_raise_a_lookup_error_that_is_a_topology_error(pair: Resolver) -> None:
    with pytest.raises(UnknownNameError) as caught:
        pair.pool_of("nope")
    assert isinstance(caught.value, TopologyError) and isinstance(caught.value, LookupError)
    assert str(caught.value) == "no server named 'nope'"
    with pytest.raises(LookupError):
        pair.pool("fe9")
    with pytest.raises(LookupError):
        pair.site("dc9")
