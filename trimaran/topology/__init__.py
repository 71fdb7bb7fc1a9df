"""The deployment topology (TOP-1/TOP-2): model, strict loader, rule validator, resolver.

    topology = load_validated("deployment.yaml")      # raises TopologyError
    violations = validate_file("deployment.yaml")     # never raises; all violations
    Resolver(topology).servers_of("fe1")

Example topologies are in the repository's top-level ``examples/`` directory.
"""

from __future__ import annotations

from trimaran.topology.errors import (
    Severity,
    TopologyError,
    UnknownNameError,
    Violation,
    format_violations,
    has_errors,
)
from trimaran.topology.loader import (
    MAX_TOPOLOGY_BYTES,
    LoadResult,
    load_topology,
    parse_topology,
    read_topology,
)
from trimaran.topology.model import (
    Backend,
    Capacity,
    DatabaseEndpoint,
    Edition,
    Endpoint,
    Pool,
    PoolRole,
    Server,
    Settings,
    Site,
    SiteKind,
    SiteRtt,
    Topology,
    Witness,
)
from trimaran.topology.resolver import Resolver
from trimaran.topology.validator import (
    RULES,
    Rule,
    load_validated,
    validate,
    validate_file,
    validate_text,
)

__all__ = [
    "MAX_TOPOLOGY_BYTES",
    "RULES",
    "Backend",
    "Capacity",
    "DatabaseEndpoint",
    "Edition",
    "Endpoint",
    "LoadResult",
    "Pool",
    "PoolRole",
    "Resolver",
    "Rule",
    "Server",
    "Settings",
    "Severity",
    "Site",
    "SiteKind",
    "SiteRtt",
    "Topology",
    "TopologyError",
    "UnknownNameError",
    "Violation",
    "Witness",
    "format_violations",
    "has_errors",
    "load_topology",
    "load_validated",
    "parse_topology",
    "read_topology",
    "validate",
    "validate_file",
    "validate_text",
]
