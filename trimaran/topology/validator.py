"""Topology validation (TOP-2): every rule, every violation, in one pass.

`validate(topology)` runs the rule table `RULES` over a loaded topology and
returns every violation; `validate_file(path)` loads and validates, returning the
loader's violations (unknown keys, wrong types, YAML errors) together with the
rules' violations, each with its path and line. Errors make a topology unusable;
warnings are reported only (`has_errors` tells them apart).

Adding a rule: write a function ``(Facts) -> Iterable[Violation]`` in
`trimaran.topology.rules`, `trimaran.topology.pool_rules` or
`trimaran.topology.voice_rules` and add it to `RULES`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass

from trimaran.topology import edge_rules, pool_rules, rules, tls_rules, voice_rules
from trimaran.topology.errors import TopologyError, Violation, format_violations, has_errors
from trimaran.topology.loader import LoadResult, read_topology
from trimaran.topology.model import Topology
from trimaran.topology.rules import Check, Facts


@dataclass(frozen=True, slots=True)
class Rule:
    """One entry of the rule table: a short stable name and its check."""

    name: str
    check: Check


RULES: tuple[Rule, ...] = (
    Rule("names", rules.check_names),
    Rule("duplicate-names", rules.check_duplicate_names),
    Rule("addresses", rules.check_addresses),
    Rule("ports", rules.check_ports),
    Rule("duplicate-endpoints", rules.check_duplicate_endpoints),
    Rule("references", rules.check_references),
    Rule("site-rtt", rules.check_site_rtt),
    Rule("frontend-present", pool_rules.check_frontend_present),
    Rule("role-fields", pool_rules.check_role_fields),
    Rule("dns-servers", pool_rules.check_dns_servers),
    Rule("site-kind", pool_rules.check_site_kind),
    Rule("pool-size", pool_rules.check_pool_size),
    Rule("pairing", pool_rules.check_pairing),
    Rule("backup-registrar", pool_rules.check_backup_registrar),
    Rule("auto-failover", pool_rules.check_auto_failover),
    Rule("sbas-per-branch", pool_rules.check_sbas_per_branch),
    Rule("director-collocation", pool_rules.check_director_collocation),
    Rule("chat-servers", pool_rules.check_chat_servers),
    Rule("chat-store", pool_rules.check_chat_store),
    Rule("backend", pool_rules.check_backend),
    Rule("edge", pool_rules.check_edge),
    Rule("edge-external", edge_rules.check_edge_external),
    Rule("mediation", pool_rules.check_mediation),
    Rule("stretched-pools", pool_rules.check_stretched_pools),
    Rule("sizing", pool_rules.check_sizing),
    Rule("settings", rules.check_settings),
    Rule("tls", tls_rules.check_tls),
    Rule("voice", voice_rules.check_voice),
)


def validate(topology: Topology, rule_table: Sequence[Rule] = RULES) -> list[Violation]:
    """Every violation of every rule by `topology`, in rule-table order."""
    facts = Facts(topology)
    return [violation for rule in rule_table for violation in rule.check(facts)]


def _all_violations(result: LoadResult) -> list[Violation]:
    violations = list(result.violations)
    if result.topology is not None:
        violations.extend(
            dataclasses.replace(v, line=result.line_of(v.path)) for v in validate(result.topology)
        )
    return violations


def validate_file(path: str | os.PathLike[str]) -> list[Violation]:
    """Load the file and validate it: the loader's violations and, when the model
    could be built (unknown keys do not prevent that), every rule's violations.
    Never raises for a bad or missing file: that is a violation too."""
    return _all_violations(read_topology(path))


def validate_text(text: str, source: str = "<text>") -> list[Violation]:
    """`validate_file` for YAML text already in memory."""
    return _all_violations(read_topology(source, text=text))


def load_validated(path: str | os.PathLike[str]) -> Topology:
    """Load and validate a topology file for use (`trimaran up`, `trimaran serve`).

    Raises `TopologyError` listing every violation (warnings included) when any is
    an error; returns the topology when there are only warnings or none.
    """
    result = read_topology(path)
    violations = _all_violations(result)
    if result.topology is None or has_errors(violations):
        raise TopologyError(violations, result.source)
    return result.topology


__all__ = [
    "RULES",
    "Rule",
    "format_violations",
    "has_errors",
    "load_validated",
    "validate",
    "validate_file",
    "validate_text",
]
