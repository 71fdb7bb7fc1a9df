"""Tests of trimaran.topology; `example_path` finds the repository's example topologies."""

from __future__ import annotations

from pathlib import Path

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"


def example_path(name: str) -> Path:
    """A topology from the repository's top-level examples/ directory."""
    return EXAMPLES_DIR / f"{name}.yaml"
