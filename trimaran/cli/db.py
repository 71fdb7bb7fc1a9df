"""`trimaran db status|failover|stop|start POOL`: a pool's Back End (SPEC BE-4, BE-7)."""

from __future__ import annotations

import json

import click

from trimaran.backend.instance import BackendError
from trimaran.cli.admin import audited
from trimaran.cli.common import dir_option, echo_json, fail, json_option, open_rundir
from trimaran.deploy.database import agent_url, instance
from trimaran.deploy.rundir import DatabaseState, RunDir
from trimaran.deploy.supervisor import request_json

START_TIMEOUT = 30.0


@click.group()
def db() -> None:
    """Act on a pool's Back End database."""


def _databases(rundir: str | None, pool: str) -> tuple[RunDir, list[DatabaseState]]:
    run = open_rundir(rundir)
    found = [d for d in run.load_state().databases.values() if d.pool == pool]
    if not found:
        fail(f"pool {pool!r} has no back end in this deployment")
    return run, found


def _agent(database: DatabaseState, path: str, body: dict[str, object] | None = None,
           timeout: float = 2.0) -> tuple[int, dict[str, object] | None]:
    return request_json(agent_url(database) + path, body, timeout)


@db.command("status")
@click.argument("pool")
@dir_option
@json_option
def db_status(pool: str, rundir: str | None, as_json: bool) -> None:
    """Roles, synchronisation, lag, witness contact, term and last decision (BE-7)."""
    run, databases = _databases(rundir, pool)
    rows = []
    for database in databases:
        running = instance(run, database).is_running()
        state = _agent(database, "/state")[1] if database.agent_port else None
        rows.append({"name": database.name, "address": f"{database.address}:{database.port}",
                     "running": running, "agent": state})
    if as_json:
        echo_json({"pool": pool, "instances": rows})
        return
    click.echo(f"back end of pool {pool}:")
    for row in rows:
        agent = row["agent"]
        if not isinstance(agent, dict):
            click.echo(f"  {row['name']:<16} {row['address']:<18} "
                       f"{'running' if row['running'] else 'STOPPED'}  (no agent)")
            continue
        decision = agent.get("decision") or {}
        inst = agent.get("instance")
        standby = inst.get("standby") if isinstance(inst, dict) else None
        witness = agent.get("witness")
        if isinstance(standby, dict) and standby.get("sync_state"):
            sync = f"mirror {standby.get('sync_state')}, lag {standby.get('lag_bytes')} B"
        elif isinstance(inst, dict) and inst.get("streaming"):
            sync = "streaming from the principal"
        else:
            sync = "no mirror attached" if agent.get("role") == "principal" else "not streaming"
        contact = witness.get("contact_age") if isinstance(witness, dict) else None
        exposed = "  EXPOSED" if agent.get("exposed") else ""
        click.echo(f"  {row['name']:<16} {row['address']:<18} {agent.get('role'):<9} "
                   f"term {agent.get('term')}  {sync}  witness contact "
                   f"{'none' if contact is None else f'{contact:.1f} s ago'}{exposed}")
        if isinstance(decision, dict):
            click.echo(f"    last decision: {decision.get('action')} — {decision.get('reason')}")


@db.command("failover")
@click.argument("pool")
@click.option("--to", "to", type=click.Choice(["mirror", "primary"]), required=True,
              help="mirror: make the mirror principal; primary: back to the original")
@click.option("--force", is_flag=True,
              help="the principal is unreachable and there is no witness: may lose data")
@dir_option
@audited("db failover")
def db_failover(pool: str, to: str, force: bool, rundir: str | None) -> None:
    """Planned (no loss) or forced failover of the pool's Back End (BE-4)."""
    _, databases = _databases(rundir, pool)
    agents = [d for d in databases if d.agent_port]
    if not agents:
        fail(f"the back end of pool {pool} is not mirrored: nothing to fail over to")
    if force:
        click.echo("warning: --force promotes without the principal's agreement; writes it "
                   "acknowledged but did not ship to the mirror are lost", err=True)
    last: tuple[int, dict[str, object] | None] = (0, None)
    for database in agents:
        last = _agent(database, "/failover", {"to": to, "force": force}, timeout=90.0)
        if last[0] == 200:
            click.echo(f"failover of pool {pool} to the {to}: done "
                       f"({json.dumps(last[1])})")
            return
    fail(f"failover refused: {json.dumps(last[1]) if last[1] else 'no agent answered'}")


@db.command("stop")
@click.argument("pool")
@dir_option
@click.option("--kill", "hard", is_flag=True, help="SIGKILL the postmaster (a crash)")
def db_stop(pool: str, rundir: str | None, hard: bool) -> None:
    """Stop (or kill) the pool's Back End principal (its first instance)."""
    run, databases = _databases(rundir, pool)
    database = databases[0]
    db_instance = instance(run, database)
    if not db_instance.is_running():
        fail(f"the back end of pool {pool} is not running")
    try:
        if hard:
            db_instance.kill()
        else:
            db_instance.stop()
    except BackendError as exc:
        fail(f"back end {database.name} could not be stopped: {exc}")
    click.echo(f"back end {database.name} {'killed' if hard else 'stopped'}")


@db.command("start")
@click.argument("pool")
@dir_option
def db_start(pool: str, rundir: str | None) -> None:
    """Start the pool's Back End principal (its first instance) again."""
    run, databases = _databases(rundir, pool)
    database = databases[0]
    db_instance = instance(run, database)
    if db_instance.is_running():
        fail(f"the back end of pool {pool} is already running")
    try:
        db_instance.start(timeout=START_TIMEOUT)
    except BackendError as exc:
        fail(f"back end {database.name} could not start: {exc}")
    click.echo(f"back end {database.name} started")
