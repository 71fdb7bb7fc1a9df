"""The dns pool role in the topology: loading `dns_port` and its rules."""

from __future__ import annotations

from trimaran.topology.errors import Violation
from trimaran.topology.loader import parse_topology
from trimaran.topology.model import DEFAULT_DNS_PORT, PoolRole
from trimaran.topology.validator import validate_text

BASE = """\
name: t
sip_domain: trimaran.test
sites: [{name: dc1}, {name: b1, kind: branch}]
pools:
  - {name: se1, site: dc1, role: frontend, edition: standard,
     servers: [{name: se1, address: 127.0.16.1}]}
"""


def check(extra: str) -> list[Violation]:
    return validate_text(BASE + extra)


def test_a_dns_pool_loads_with_its_dns_port_and_defaults_to_53() -> None:
    topology = parse_topology(BASE + """\
  - {name: dns1, site: dc1, role: dns, servers: [
      {name: ns1, address: 127.0.16.5, dns_port: 5353, admin_port: 8095},
      {name: ns2, address: 127.0.16.6}]}
""")
    pool = topology.pools[1]
    assert pool.role is PoolRole.DNS
    assert pool.servers[0].dns_port == 5353
    assert pool.servers[0].dns_endpoint.port == 5353
    assert pool.servers[1].dns_port is None
    assert pool.servers[1].dns_endpoint.port == DEFAULT_DNS_PORT


def test_a_valid_dns_pool_has_no_violations_in_a_central_or_branch_site() -> None:
    assert check("""\
  - {name: dns1, site: dc1, role: dns, servers: [{name: ns1, address: 127.0.16.5,
     dns_port: 5353}]}
  - {name: dns2, site: b1, role: dns, servers: [{name: ns2, address: 127.0.16.6}]}
""") == []


def test_dns_port_on_another_role_is_an_error_at_its_path() -> None:
    text = BASE.replace("address: 127.0.16.1}", "address: 127.0.16.1, dns_port: 5353}")
    violations = validate_text(text)
    assert [(v.path, v.severity) for v in violations] == [
        ("pools[0].servers[0].dns_port", "error")]
    assert "only: dns" in violations[0].message


def test_dns_port_is_checked_for_range_and_clashes() -> None:
    violations = check("""\
  - {name: dns1, site: dc1, role: dns, servers: [
      {name: ns1, address: 127.0.16.5, dns_port: 70000},
      {name: ns2, address: 127.0.16.5, dns_port: 8080, sip_port: 5062}]}
""")
    paths = {(v.path, v.severity) for v in violations}
    assert ("pools[1].servers[0].dns_port", "error") in paths
    # ns2's DNS port is its own admin port (default 8080)... and ns1's admin port too.
    assert any(v.path == "pools[1].servers[1].dns_port" and "already used" in v.message
               for v in violations)


def test_dns_port_must_be_an_integer() -> None:
    violations = check("""\
  - {name: dns1, site: dc1, role: dns, servers: [
      {name: ns1, address: 127.0.16.5, dns_port: "53"}]}
""")
    assert [v.path for v in violations] == ["pools[1].servers[0].dns_port"]
