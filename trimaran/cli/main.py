"""`trimaran`: one command for running and operating a deployment (SPEC OPS-1, DESIGN §4).

Exit codes: 0 ok, 1 refused or invalid (stderr says why), 2 usage error.
"""

from __future__ import annotations

import click

from trimaran import __version__
from trimaran.admin import access
from trimaran.cli.admin import admin
from trimaran.cli.apps import apps
from trimaran.cli.certs import certs
from trimaran.cli.chat import chat
from trimaran.cli.db import db
from trimaran.cli.demo import demo
from trimaran.cli.deploy import agent, down, serve, server, status, up
from trimaran.cli.dr import backup, cms, pool
from trimaran.cli.drill import drill
from trimaran.cli.edge import edge
from trimaran.cli.site import site
from trimaran.cli.topology import topology
from trimaran.cli.users import user
from trimaran.cli.voice import voice


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="trimaran")
@click.option("--token", envvar="TRIMARAN_ADMIN_TOKEN", default=None, metavar="TOKEN",
              help="admin token (`trimaran admin token create`) sent to the admin APIs "
                   "instead of signing with the run directory's key "
                   "[env: TRIMARAN_ADMIN_TOKEN]")
def cli(token: str | None) -> None:
    """Trimaran: a SIP unified-communications server built for HA and DR."""
    access.use_token(token)


for command in (admin, topology, up, down, status, server, site, serve, agent, db, user, demo, pool,
                backup, cms, drill, voice, apps, edge, chat):
    cli.add_command(command)
cli.add_command(certs)


def main() -> None:
    """Entry point of the `trimaran` script."""
    cli(prog_name="trimaran")
