"""`trimaran site fail|restore SITE`: lose a whole site and get it back (SPEC OPS-1, OPS-2).

The logic is `trimaran.deploy.sites`; this module parses, reports and sets the exit
code (0 done, 1 refused or failed, with the reason on stderr).
"""

from __future__ import annotations

import time

import click

from trimaran.cli.admin import audited
from trimaran.cli.common import dir_option, fail, open_rundir
from trimaran.deploy.sites import FailMode, SiteError, fail_site, restore_site

RESTORE_TIMEOUT = 30.0


@click.group()
def site() -> None:
    """Fail a whole site of the running deployment, or restore it."""


@site.command("fail")
@click.argument("name")
@click.option("--mode", type=click.Choice([m.value for m in FailMode]),
              default=FailMode.KILL.value, show_default=True,
              help="kill: SIGKILL every process of the site; partition: leave them running "
                   "but cut the site off from every other address (root, netfilter)")
@dir_option
@audited("site fail")
def site_fail(name: str, mode: str, rundir: str | None) -> None:
    """Fail site NAME: every server, database and agent in it (DR drills)."""
    run = open_rundir(rundir)
    try:
        record, problems = fail_site(run, name, FailMode(mode))
    except SiteError as exc:
        fail(str(exc))
    if record.mode is FailMode.KILL:
        click.echo(f"site {name} failed: every process killed")
    else:
        click.echo(f"site {name} cut off ({', '.join(record.addresses)}) by netfilter chain "
                   f"{record.chain}; its processes keep running")
    if problems:
        fail(f"site {name} is recorded as failed, but:\n  " + "\n  ".join(problems))


@site.command("restore")
@click.argument("name")
@dir_option
@click.option("--timeout", default=RESTORE_TIMEOUT, show_default=True,
              help="seconds to wait for the site's servers to be healthy again")
@audited("site restore")
def site_restore(name: str, rundir: str | None, timeout: float) -> None:
    """Restore failed site NAME: remove the cut, or start its processes and wait until
    they are healthy."""
    run = open_rundir(rundir)
    try:
        record, problems = restore_site(run, name, timeout)
    except SiteError as exc:
        fail(str(exc))
    down_for = time.time() - record.since
    if problems:
        fail(f"site {name} restarted, but not everything came back in {timeout:.0f}s:\n  "
             + "\n  ".join(problems))
    what = "reconnected" if record.mode is FailMode.PARTITION else "running and healthy"
    click.echo(f"site {name} restored ({record.mode.value} for {down_for:.1f}s): {what}")
