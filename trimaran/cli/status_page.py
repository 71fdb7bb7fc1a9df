"""`trimaran status --web`: where the live status page of a running deployment is served
(SPEC OPS-3). Nothing is started: the page is part of every Front End's, Director's and
witness's admin API."""

from __future__ import annotations

import urllib.error
import urllib.request

import click

from trimaran.admin import access
from trimaran.cli.common import echo_json, fail
from trimaran.deploy.rundir import DeploymentState, ServerState
from trimaran.deploy.supervisor import pid_alive
from trimaran.security import https
from trimaran.topology.model import PoolRole

PAGE_PATH = "/status/page"
#: The roles serving the page, in order of preference: a witness sits in a third site
#: and shows the deployment when a data center is lost.
PAGE_ROLES = (PoolRole.WITNESS.value, PoolRole.FRONTEND.value, PoolRole.DIRECTOR.value)


def page_url(server: ServerState) -> str:
    """The status page on `server`'s admin API."""
    return https.secure(f"http://{server.address}:{server.admin_port}{PAGE_PATH}")


def serves_page(server: ServerState, timeout: float = 1.0) -> bool:
    """True when `server` runs and answers its status page now."""
    if not pid_alive(server.pid):
        return False
    try:
        url = page_url(server)
        request = urllib.request.Request(url, headers=access.headers_for("GET", url))
        with https.urlopen(request, timeout=timeout) as response:  # loopback
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def page_servers(state: DeploymentState) -> list[ServerState]:
    """The servers answering the page now, witnesses first, then Front Ends, Directors."""
    candidates = sorted((s for s in state.servers.values() if s.role in PAGE_ROLES),
                        key=lambda s: PAGE_ROLES.index(s.role))
    return [s for s in candidates if serves_page(s)]


def print_page_urls(state: DeploymentState, as_json: bool) -> None:
    """Print the page URL of the preferred reachable server and the alternates."""
    servers = page_servers(state)
    if not servers:
        fail("no server of the deployment answers the status page now (it is served by "
             "the witness, Front End and Director servers)")
    if as_json:
        echo_json({"url": page_url(servers[0]), "server": servers[0].name,
                   "alternates": [{"url": page_url(s), "server": s.name} for s in servers[1:]]})
        return
    first, *others = servers
    click.echo(f"status page: {page_url(first)}  ({first.name}, {first.role})")
    click.echo("  log in with any user name and an admin token as the password "
               "(`trimaran admin token create --scope read`)")
    if others:
        click.echo("also served by:")
        for server in others:
            click.echo(f"  {page_url(server)}  ({server.name}, {server.role})")
