"""`trimaran certs init|issue|list`: the deployment CA and server certificates (OPS-6).

DIR is a certificate directory; a deployment started by `trimaran up` keeps its own in
RUNDIR/certs (created there when the topology turns TLS on).
"""

from __future__ import annotations

from pathlib import Path

import click

from trimaran.cli.common import echo_json, fail, json_option
from trimaran.security.ca import (
    CA_DAYS,
    SERVER_DAYS,
    WARN_DAYS,
    CertError,
    CertInfo,
    init_ca,
    issue,
    list_certs,
)

_dir = click.option("--dir", "directory", required=True,
                    type=click.Path(file_okay=False, path_type=Path),
                    help="the certificate directory (a run directory's is RUNDIR/certs)")


@click.group()
def certs() -> None:
    """The deployment CA and the servers' certificates (SIP over TLS, mutual TLS)."""


@certs.command("init")
@_dir
@click.option("--days", type=click.IntRange(min=1), default=CA_DAYS, show_default=True,
              help="validity of the CA certificate")
@click.option("--force", is_flag=True, help="replace an existing CA (its certificates stop "
              "verifying)")
def init(directory: Path, days: int, force: bool) -> None:
    """Create the deployment CA (ca.pem, and ca.key readable by the owner only)."""
    try:
        info = init_ca(directory, days=days, force=force)
    except CertError as exc:
        fail(str(exc))
    click.echo(f"created CA {info.subject} in {directory} (until "
               f"{info.not_after:%Y-%m-%d}); keep ca.key private")


@certs.command("issue")
@click.argument("name")
@_dir
@click.option("--address", "addresses", multiple=True, metavar="IP",
              help="an IP address of the server (repeatable)")
@click.option("--dns", "dns_names", multiple=True, metavar="NAME",
              help="another DNS name, e.g. the SIP domain (repeatable)")
@click.option("--days", type=click.IntRange(min=1), default=SERVER_DAYS, show_default=True,
              help="validity of the certificate")
def issue_cmd(name: str, directory: Path, addresses: tuple[str, ...],
              dns_names: tuple[str, ...], days: int) -> None:
    """Issue server NAME's certificate and key, signed by the CA in DIR."""
    try:
        info = issue(directory, name, addresses=addresses, dns_names=dns_names, days=days)
    except CertError as exc:
        fail(str(exc))
    names = ", ".join((*info.dns_names, *info.addresses))
    click.echo(f"issued {info.path} for {names} (until {info.not_after:%Y-%m-%d})")


@certs.command("list")
@_dir
@json_option
def list_cmd(directory: Path, as_json: bool) -> None:
    """Every certificate in DIR: subject, expiry, days left (WARNING below 30)."""
    try:
        found = list_certs(directory)
    except CertError as exc:
        fail(str(exc))
    if as_json:
        echo_json([info.to_json() for info in found])
        return
    if not found:
        click.echo(f"no certificates in {directory}")
        return
    for info in found:
        click.echo(describe(info))


def describe(info: CertInfo) -> str:
    """One line about a certificate, with a warning when it expires soon."""
    warning = ""
    if info.days_left < 0:
        warning = "  WARNING: expired"
    elif info.expiring:
        warning = f"  WARNING: expires in less than {WARN_DAYS} days"
    return (f"{info.name:<14} {info.subject:<40} not after {info.not_after:%Y-%m-%d %H:%M} "
            f"UTC  {info.days_left} days left{warning}")
