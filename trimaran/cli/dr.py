"""`trimaran pool|backup|cms ...`: disaster recovery (SPEC DR-3..DR-7, DR-9, DR-11)."""

from __future__ import annotations

import time
from typing import Any

import click

from trimaran.cli.admin import audited
from trimaran.cli.common import dir_option, echo_json, fail, json_option, open_rundir
from trimaran.cli.edge import set_edge
from trimaran.deploy.dr import Deployment, DrError, call
from trimaran.topology.errors import TopologyError


def _deployment(rundir: str | None, verbose: bool = True) -> Deployment:
    run = open_rundir(rundir)
    try:
        return Deployment(run, echo=click.echo if verbose else None)
    except (TopologyError, OSError) as exc:
        fail(f"cannot read the deployment's topology: {exc}")


def _run(action: Any) -> Any:
    try:
        return action()
    except DrError as exc:
        fail(str(exc))


def _when(at: object) -> str:
    if not isinstance(at, (int, float)) or not at:
        return "never"
    return f"{time.strftime('%H:%M:%S', time.localtime(at))} ({time.time() - at:.1f} s ago)"


# -- pool -------------------------------------------------------------------------------
@click.group()
def pool() -> None:
    """Fail a Front End pool over to its backup pool, and back (DR-5, DR-6)."""


@pool.command("failover")
@click.argument("name")
@click.option("--disaster", is_flag=True, help="the pool is lost: switch now, lose the lag")
@dir_option
@json_option
@audited("pool failover")
def pool_failover(name: str, disaster: bool, rundir: str | None, as_json: bool) -> None:
    """Serve POOL's users from its backup pool."""
    dep = _deployment(rundir, verbose=not as_json)
    result = _run(lambda: dep.pool_failover(name, disaster))
    if as_json:
        echo_json(result)
        return
    click.echo(f"pool {name} failed over to {result['backup']} in {result['seconds']:.2f} s "
               f"(term {result['term']})")
    if disaster:
        click.echo(f"{result['backup']} holds {name}'s changes up to one written "
                   f"{_when(result['changes_after_this_time_lost'])}; any written later "
                   f"on {name} are lost (the lag at the failure)")


@pool.command("failback")
@click.argument("name")
@click.option("--disaster", is_flag=True, help="the backup pool is lost: return without its "
              "changes")
@dir_option
@json_option
@audited("pool failback")
def pool_failback(name: str, disaster: bool, rundir: str | None, as_json: bool) -> None:
    """Return POOL's users home with the changes made on the backup pool."""
    dep = _deployment(rundir, verbose=not as_json)
    result = _run(lambda: dep.pool_failback(name, disaster))
    if as_json:
        echo_json(result)
        return
    click.echo(f"pool {name} failed back from {result['backup']} in "
               f"{result['seconds']:.2f} s (term {result['term']})")
    if disaster:
        click.echo(f"{name} holds the changes made on {result['backup']} up to one written "
                   f"{_when(result['changes_on_backup_after_this_time_lost'])}; any made "
                   "there later are lost")


@pool.command("set-edge")
@click.argument("name")
@click.argument("edge_pool")
@dir_option
@json_option
def pool_set_edge(name: str, edge_pool: str, rundir: str | None, as_json: bool) -> None:
    """Relay Front End pool POOL's media through EDGE_POOL (EDGE-5)."""
    set_edge(name, edge_pool, rundir, as_json)


# -- backup -------------------------------------------------------------------------------
@click.group()
def backup() -> None:
    """The Backup Service between paired pools (DR-2..DR-4)."""


@backup.command("status")
@click.argument("name")
@dir_option
@json_option
def backup_status(name: str, rundir: str | None, as_json: bool) -> None:
    """Both directions between POOL and its backup pool, per category."""
    dep = _deployment(rundir, verbose=False)
    partner = _run(lambda: dep.pair(name))
    directions = []
    for source, target in ((name, partner), (partner, name)):
        status = dep.backup_status(source)
        directions.append(status or {
            "source": source, "target": target, "state": "broken",
            "reason": f"no server of {source} answers"})
    if as_json:
        echo_json({"pool": name, "directions": directions})
        return
    for d in directions:
        click.echo(f"{d['source']} -> {d['target']}: {d['state']} ({d['reason']})")
        if "last_seq" not in d:
            continue
        click.echo(f"  last change {d['last_seq']}, applied {d['applied_seq']}, lag "
                   f"{d['lag_changes']} change(s) / {d['lag_seconds']:.2f} s")
        for cat, c in sorted(d.get("categories", {}).items()):
            click.echo(f"    {cat:<16} last {c['last_seq']:<8} lag {c['lag_changes']} / "
                       f"{c['lag_seconds']:.2f} s")


@backup.command("sync")
@click.argument("name")
@click.option("--timeout", default=60.0, show_default=True, help="seconds to wait")
@dir_option
@json_option
def backup_sync(name: str, timeout: float, rundir: str | None, as_json: bool) -> None:
    """Ship POOL's changes to its backup pool now and wait until they are applied."""
    dep = _deployment(rundir, verbose=False)
    result = _run(lambda: dep.sync(name, timeout))
    if as_json:
        echo_json(result)
        return
    click.echo(f"{name} -> {result['target']}: every change up to {result['target_seq']} "
               f"applied ({result['state']})")


# -- cms -------------------------------------------------------------------------------------
@click.group()
def cms() -> None:
    """The central management store (TOP-3, DR-9)."""


@cms.command("status")
@dir_option
@json_option
def cms_status(rundir: str | None, as_json: bool) -> None:
    """The master, its version, and every server's replica version."""
    dep = _deployment(rundir, verbose=False)
    try:
        master, body = dep.cms_master()
        info: dict[str, object] = {"master": master, "term": body.get("term"),
                                   "version": body.get("version")}
    except DrError as exc:
        info = {"master": None, "error": str(exc)}
    replicas = []
    for pool_name in dep.frontend_pools():
        for spec in dep.resolver.servers_of(pool_name):
            status, st = call(spec, "GET", "/status", timeout=1.0)
            cms_st = st.get("cms", {}) if status == 200 else {}
            replicas.append({"server": spec.name, "pool": pool_name,
                             "reachable": status == 200, **cms_st})
    info["replicas"] = replicas
    if as_json:
        echo_json(info)
        return
    if info.get("master") is None:
        click.echo(f"CMS master: unreachable ({info.get('error')})")
    else:
        click.echo(f"CMS master: pool {info['master']} (term {info['term']}), "
                   f"version {info['version']}")
    for r in replicas:
        if not r["reachable"]:
            click.echo(f"  {r['server']:<12} unreachable")
        else:
            click.echo(f"  {r['server']:<12} version {r.get('version')}  master "
                       f"{r.get('master')}  pulled {_when(r.get('pulled_at'))}")


@cms.command("failover")
@click.option("--disaster", is_flag=True, help="the master is lost: take over now")
@dir_option
@json_option
@audited("cms failover")
def cms_failover(disaster: bool, rundir: str | None, as_json: bool) -> None:
    """Move the CMS master to the paired pool of the pool hosting it."""
    dep = _deployment(rundir, verbose=not as_json)
    result = _run(lambda: dep.cms_failover(disaster))
    if as_json:
        echo_json(result)
        return
    click.echo(f"CMS master moved from {result['from']} to {result['to']} in "
               f"{result['seconds']:.2f} s")
