"""The deployment topology (TOP-1/TOP-2): model, strict loader, rule validator, resolver.

    topology = load_validated("deployment.yaml")      # raises TopologyError
    violations = validate_file("deployment.yaml")     # never raises; all violations
    Resolver(topology).servers_of("fe1")

The example topologies shipped with Trimaran are in `EXAMPLES_DIR`.
"""

from __future__ import annotations

from pathlib import Path

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

EXAMPLES_DIR = Path(__file__).parent / "examples"


def example_path(name: str) -> Path:
    """Path of a shipped example topology, e.g. ``example_path("standard-pair")``."""
    return EXAMPLES_DIR / f"{name}.yaml"


__all__ = [
    "EXAMPLES_DIR",
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
    "example_path",
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
