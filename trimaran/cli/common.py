"""Helpers shared by the subcommands: the run directory option, errors, JSON output."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click

from trimaran.admin import access
from trimaran.deploy.rundir import RunDir, RunDirError, resolve_rundir
from trimaran.security.ca import CertError
from trimaran.security.deployment import install_operator

F = TypeVar("F", bound=Callable[..., Any])


class _Failure:
    message = ""      # the last refusal of this process (for the audit log)


def fail(message: str) -> NoReturn:
    """Refuse: message on stderr, exit code 1 (DESIGN §4)."""
    _Failure.message = message
    click.echo(f"trimaran: {message}", err=True)
    sys.exit(1)


def last_failure() -> str:
    """The message of the last `fail` in this process ("" when none)."""
    return _Failure.message


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
    if (rundir.path / "secrets").is_dir():
        try:                   # act for the deployment: its admin key signs our calls
            access.use_rundir(rundir)
        except OSError as exc:
            if access.current_token() is None:
                fail(f"cannot read the admin key of {rundir.path} ({exc.strerror}); "
                     "pass --token or set TRIMARAN_ADMIN_TOKEN")
    try:                       # OPS-6: HTTPS with the operator certificate under mutual TLS
        install_operator(rundir.topology, rundir.certs)
    except CertError as exc:   # `down` must still work; calls to servers will say why not
        click.echo(f"warning: TLS: {exc}; calls to the servers will fail", err=True)
    return rundir


def echo_json(value: object) -> None:
    """Print `value` as indented JSON."""
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=str))
