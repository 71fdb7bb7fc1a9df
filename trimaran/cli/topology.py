"""`trimaran topology validate FILE`."""

from __future__ import annotations

import sys

import click

from trimaran.cli.common import echo_json, json_option
from trimaran.topology.validator import format_violations, has_errors, validate_file


@click.group()
def topology() -> None:
    """Work with topology files."""


@topology.command("validate")
@click.argument("file", type=click.Path(dir_okay=False))
@json_option
def validate_cmd(file: str, as_json: bool) -> None:
    """Check FILE against every rule; list all violations (exit 1 on errors)."""
    violations = validate_file(file)
    if as_json:
        echo_json([{"path": v.path, "message": v.message, "severity": str(v.severity),
                    "line": v.line}
                   for v in violations])
    elif violations:
        click.echo(format_violations(violations), err=has_errors(violations))
    else:
        click.echo(f"{file}: valid")
    sys.exit(1 if has_errors(violations) else 0)
