"""Helpers shared by the subcommands: the run directory option, errors, JSON output."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click

from trimaran.deploy.rundir import RunDir, RunDirError, resolve_rundir

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str) -> NoReturn:
    """Refuse: message on stderr, exit code 1 (DESIGN §4)."""
    click.echo(f"trimaran: {message}", err=True)
    sys.exit(1)


def dir_option(func: F) -> F:
    """The `--dir RUNDIR` option every command acting on a deployment takes."""
    return click.option("--dir", "rundir", metavar="RUNDIR", default=None,
                        help="run directory (default: $TRIMARAN_DIR or the last `up`)")(func)


def json_option(func: F) -> F:
    """The `--json` option of read commands."""
    return click.option("--json", "as_json", is_flag=True, help="machine-readable output")(func)


def open_rundir(option: str | None) -> RunDir:
    """The run directory, or a clear refusal."""
    try:
        rundir = resolve_rundir(option)
    except RunDirError as exc:
        fail(str(exc))
    if not rundir.path.is_dir():
        fail(f"run directory {rundir.path} does not exist")
    return rundir


def echo_json(value: object) -> None:
    """Print `value` as indented JSON."""
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=str))
