"""Automatic pool failover (DR-10) in the topology: both pools of a pair, a witness in
a third site."""

from __future__ import annotations

import textwrap

from trimaran.topology import validate_text

PAIR = """
name: t
sip_domain: trimaran.test
sites: [{{name: dc1}}, {{name: dc2}}, {{name: w}}]
pools:
  - {{name: se1, site: dc1, role: frontend, edition: standard, backup_pool: se2,
     auto_failover: {a}, servers: [{{name: se1, address: 127.0.1.1}}]}}
  - {{name: se2, site: dc2, role: frontend, edition: standard, backup_pool: se1,
     auto_failover: {b}, servers: [{{name: se2, address: 127.0.2.1}}]}}
{witness}
"""
WITNESS_W = "  - {name: wit, site: w, role: witness, servers: [{name: wit1, address: 127.0.9.1}]}"
WITNESS_DC1 = "  - {name: wit, site: dc1, role: witness, servers: [{name: wit1, " \
              "address: 127.0.9.1}]}"


def errors(a: str = "true", b: str = "true", witness: str = WITNESS_W) -> dict[str, str]:
    text = textwrap.dedent(PAIR.format(a=a, b=b, witness=witness))
    return {v.path: v.message for v in validate_text(text) if v.severity == "error"}


def test_a_pair_with_a_third_site_witness_is_valid() -> None:
    assert errors() == {}


def test_auto_failover_on_one_pool_only_is_refused() -> None:
    assert "both pools of the pair" in errors(b="false")["pools[0].auto_failover"]


def test_auto_failover_needs_a_witness_in_a_third_site() -> None:
    assert "third site" in errors(witness=WITNESS_DC1)["pools[0].auto_failover"]
    assert "third site" in errors(witness="")["pools[1].auto_failover"]


def test_auto_failover_must_be_a_boolean() -> None:
    assert "true or false" in errors(a='"yes"')["pools[0].auto_failover"]
