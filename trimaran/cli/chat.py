"""`trimaran chat ...`: a Persistent Chat pool's state and its store across two data
centers (SPEC PC-2..PC-4).

    chat status [POOL] --dir RUNDIR [--json]        mode, active servers, every server's
                                                    health and /status, the store: the
                                                    pair's agents, the shipped copy, the lag
    chat active-servers set POOL SERVER... --dir RUNDIR   which servers accept new
                                                    connections (PC-2)
    chat failover [POOL] [--force] --dir RUNDIR [--json]  to the log-shipped copy and the
                                                    second data center's servers (PC-4)
    chat failback [POOL] --dir RUNDIR [--json]      back to the primary data center
    chat category|room|member ...                   rooms (`trimaran.cli.chat_rooms`)

The state lives in the CMS ``chat`` document (`trimaran.cms.chatdoc`), written
compare-and-set on the CMS master like the Edge state (`trimaran.cli.edge`); the store
operations are `trimaran.deploy.chatdb`. Refusals name the problem and exit 1.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import click

from trimaran.chat.shipping import copy_status, measure_lag
from trimaran.cli.admin import audited
from trimaran.cli.chat_rooms import add_room_commands
from trimaran.cli.common import dir_option, echo_json, fail, json_option, open_rundir
from trimaran.cms.chatdoc import ChatMode, default_state, set_active
from trimaran.deploy.chatdb import (
    ChatDbError,
    chat_dsn,
    failback,
    failover,
    plan,
    read_state,
    value,
    write_state,
)
from trimaran.deploy.database import agent_url, chat_databases, instance, one_dsn
from trimaran.deploy.dr import Deployment, call
from trimaran.deploy.rundir import DatabaseState
from trimaran.deploy.sites import database_site
from trimaran.deploy.supervisor import request_json
from trimaran.topology.errors import TopologyError
from trimaran.topology.model import Pool, PoolRole


@click.group()
def chat() -> None:
    """Persistent Chat pools: state, active servers, failover and failback (PC-2..PC-4)."""


@chat.group("active-servers")
def active_servers() -> None:
    """The servers of a chat pool that accept new connections (PC-2)."""


def _deployment(rundir: str | None, echo: bool = False) -> Deployment:
    try:
        return Deployment(open_rundir(rundir), echo=click.echo if echo else None)
    except (TopologyError, OSError) as exc:
        fail(f"cannot read the deployment's topology: {exc}")


def _chat_pools(dep: Deployment, name: str | None) -> list[Pool]:
    """The chat pool named `name`, or every chat pool (refused when there is none)."""
    pools = [p for p in dep.topology.pools if p.role is PoolRole.CHAT]
    if not pools:
        fail("the deployment has no chat pool")
    if name is None:
        return pools
    found = [p for p in pools if p.name == name]
    if not found:
        fail(f"no chat pool named {name!r} (chat pools: {', '.join(p.name for p in pools)})")
    return found


def _one_pool(dep: Deployment, name: str | None) -> str:
    pools = _chat_pools(dep, name)
    if len(pools) > 1:
        fail(f"name the chat pool: {', '.join(p.name for p in pools)}")
    return pools[0].name


def _when(at: object) -> str:
    if not isinstance(at, int | float):
        return "never"
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")


# --- status ---------------------------------------------------------------------------------


def _server_rows(dep: Deployment, pool: Pool, active: tuple[str, ...]) -> list[dict[str, Any]]:
    rows = []
    for spec in pool.servers:
        status, body = call(spec, "GET", "/health", timeout=1.0)
        why = body.get("reason") or body.get("error") or f"HTTP {status}"
        health = {200: "up", 0: "down"}.get(status, f"unhealthy ({why})")
        detail = None
        if status == 200:
            code, answer = call(spec, "GET", "/status", timeout=1.0)
            detail = answer if code == 200 else None
        rows.append({"server": spec.name, "site": pool.site_of(spec),
                     "active": spec.name in active, "health": health, "status": detail})
    return rows


def _agent(database: DatabaseState) -> dict[str, Any] | None:
    if database.agent_port is None:
        return None
    status, body = request_json(f"{agent_url(database)}/state", timeout=1.0)
    if status != 200 or body is None:
        return None
    decision = body.get("decision")
    return {key: body.get(key) for key in ("role", "term", "serving", "synchronous",
                                           "exposed")} | {
        "decision": decision.get("reason") if isinstance(decision, dict) else None}


def _store(dep: Deployment, pool: Pool, mode: ChatMode) -> tuple[dict[str, Any],
                                                                 dict[str, Any] | None]:
    """The store's instances (each pair member's agent: its role now, its term) and
    whether commits wait for a mirror; the shipping lag (mode normal only)."""
    try:
        dbs = chat_databases(dep.run.load_state(), pool.name)
    except LookupError as exc:
        return {"error": str(exc)}, None
    run = dep.run

    def row(database: DatabaseState) -> dict[str, Any]:
        return {"name": database.name, "address": f"{database.address}:{database.port}",
                "site": database_site(dep.topology, database),
                "running": instance(run, database).is_running()}

    pair = []
    for database in dbs.pair:
        agent = _agent(database)
        pair.append(row(database) | {"role": agent and agent["role"],
                                     "term": agent and agent["term"], "agent": agent})
    copies = []
    for database in dbs.copies:
        entry = row(database)
        if entry["running"]:
            entry["replica"] = asyncio.run(copy_status(one_dsn(database))).to_json()
        copies.append(entry)
    if mode is ChatMode.FAILED_OVER:
        synchronous = dbs.shipped is not None and _has_sync_standby(one_dsn(dbs.shipped))
    else:
        synchronous = any(p["role"] == "principal" and p["agent"]["synchronous"]
                          for p in pair if p["agent"])
    lag = None
    if dbs.shipped is not None and mode is ChatMode.NORMAL:
        lag = asyncio.run(measure_lag([one_dsn(d) for d in dbs.pair],
                                      one_dsn(dbs.shipped))).to_json()
    try:
        dsn: str | None = chat_dsn(dep.topology, pool.name, mode)
    except LookupError:
        dsn = None
    return {"dsn": dsn, "synchronous": synchronous, "pair": pair, "shipped": copies}, lag


def _has_sync_standby(dsn: str) -> bool:
    try:
        return bool(value(dsn, "SELECT count(*) > 0 FROM pg_stat_replication "
                               "WHERE sync_state = 'sync'", timeout=2.0))
    except ChatDbError:
        return False


def gather(dep: Deployment, pools: list[Pool]) -> dict[str, Any]:
    """What `chat status` shows, as JSON: ``{"source", "pools": [{"pool", "mode",
    "active", "log_shipping_site", "servers": [{"server", "site", "active", "health",
    "status"}], "store": {"dsn", "synchronous", "pair": [{"name", "address", "site",
    "running", "role", "term", "agent"}], "shipped": [{..., "replica"}]}, "shipping":
    Lag | null}]}``."""
    try:
        _, state, version, bad = read_state(dep)
        source = ("topology" if version is None else f"CMS version {version}") + \
            (f" (the document does not load: {bad})" if bad else "")
    except ChatDbError as exc:
        state, source = default_state(dep.topology), f"topology (CMS master unreachable: {exc})"
    out = []
    for pool in pools:
        entry = state.of(pool.name)
        store, shipping = _store(dep, pool, entry.mode)
        out.append({"pool": pool.name, "mode": entry.mode.value, "active": list(entry.active),
                    "log_shipping_site": pool.log_shipping.site if pool.log_shipping else None,
                    "servers": _server_rows(dep, pool, entry.active),
                    "store": store, "shipping": shipping})
    return {"source": source, "pools": out}


@chat.command("status")
@click.argument("pool", required=False)
@dir_option
@json_option
def status_cmd(pool: str | None, rundir: str | None, as_json: bool) -> None:
    """Mode, active servers, servers' health, the store and the shipping lag."""
    dep = _deployment(rundir)
    report = gather(dep, _chat_pools(dep, pool))
    if as_json:
        echo_json(report)
        return
    click.echo(f"# chat state from the {report['source']}")
    for entry in report["pools"]:
        _print_pool(entry)


def _print_pool(entry: dict[str, Any]) -> None:
    click.echo(f"chat pool {entry['pool']}: {entry['mode']}, active "
               f"{', '.join(entry['active']) or '(none)'}")
    for row in entry["servers"]:
        mark = "active" if row["active"] else "idle"
        click.echo(f"  {row['server']:<12} {row['site']:<8} {mark:<7} {row['health']}")
    store = entry["store"]
    if "error" in store:
        click.echo(f"  store: {store['error']}")
        return
    for db in store["pair"]:
        role = f"{db['role']} term {db['term']}" if db["agent"] else "(no agent)"
        click.echo(f"  {db['name']:<22} {db['address']:<20} "
                   f"{'running' if db['running'] else 'STOPPED':<8} {role}")
    for db in store["shipped"]:
        replica = db.get("replica") or {}
        what = ("standby, " + ("receiving" if replica.get("receiving") else "NOT receiving")
                + f" from {replica.get('upstream')}, replayed up to "
                  f"{replica.get('replay_lsn')} (commit {_when(replica.get('replay_at'))})"
                if replica.get("standby") else "primary (promoted)") if replica else ""
        click.echo(f"  {db['name']:<22} {db['address']:<20} "
                   f"{'running' if db['running'] else 'STOPPED':<8} {what}")
    lag = entry["shipping"]
    if lag is not None:
        text = (f"{lag['bytes']} bytes, {lag['seconds']} s" if lag["error"] is None
                else f"unknown ({lag['error']})")
        click.echo(f"  shipping lag: {text}")


# --- active servers ---------------------------------------------------------------------------


def _up(dep: Deployment, pool: str, server: str) -> bool:
    spec = next(s for s in dep.resolver.servers_of(pool) if s.name == server)
    return call(spec, "GET", "/health", timeout=1.0)[0] == 200


@active_servers.command("set")
@click.argument("pool")
@click.argument("servers", nargs=-1, required=True)
@dir_option
@json_option
def active_set(pool: str, servers: tuple[str, ...], rundir: str | None, as_json: bool) -> None:
    """Make SERVERS (1 to 4 servers of POOL that are up) the ones accepting new
    connections."""
    dep = _deployment(rundir)
    name = _one_pool(dep, pool)
    try:
        master, state, version, bad = read_state(dep)
        if bad is not None:
            click.echo(f"warning: {bad}; starting again from the topology's chat state",
                       err=True)
        new = plan(lambda: set_active(state, dep.topology, name, servers,
                                      is_up=lambda server: _up(dep, name, server)))
        before, after = state.of(name).active, new.of(name).active
        result: dict[str, Any] = {"pool": name, "from": list(before), "to": list(after),
                                  "changed": before != after, "master": master,
                                  "version": version}
        if before != after or bad is not None:
            result["version"] = write_state(dep, master, new, version, name)
    except ChatDbError as exc:
        fail(str(exc))
    if as_json:
        echo_json(result)
    elif not result["changed"] and bad is None:
        click.echo(f"active servers of {name} are already {', '.join(after)}; nothing changed")
    else:
        click.echo(f"active servers of {name}: {', '.join(before) or '(none)'} -> "
                   f"{', '.join(after)} (CMS version {result['version']} on {master}); "
                   f"servers pick it up within seconds")


# --- failover and failback ---------------------------------------------------------------------


@chat.command("failover")
@click.argument("pool", required=False)
@click.option("--force", is_flag=True,
              help="the primary data center's store still accepts writes: stop it first")
@dir_option
@json_option
@audited("chat failover")
def failover_cmd(pool: str | None, force: bool, rundir: str | None, as_json: bool) -> None:
    """Switch POOL to its log-shipped copy and its second data center's servers."""
    dep = _deployment(rundir, echo=not as_json)
    name = _one_pool(dep, pool)
    if not as_json:
        click.echo(f"chat failover of {name}:")
    try:
        report = failover(dep, name, force=force)
    except ChatDbError as exc:
        fail(str(exc))
    if as_json:
        echo_json(report)
        return
    bound = report["lag_at_failure"]
    lag = ("unknown (no measurement)" if bound is None else
           f"{bound['bytes']} bytes, {bound['seconds']} s ({bound['source']}, "
           f"{bound['sample_age']} s old)")
    click.echo(f"{name} failed over in {report['seconds']:.2f} s; store {report['store']}; "
               f"active {', '.join(report['active']) or '(none)'}")
    click.echo(f"  lag at the failure: {lag}")
    click.echo(f"  last commit replayed by the copy: {report['last_replayed_commit_at']}")
    click.echo(f"  {report['loss']}")


@chat.command("failback")
@click.argument("pool", required=False)
@dir_option
@json_option
@audited("chat failback")
def failback_cmd(pool: str | None, rundir: str | None, as_json: bool) -> None:
    """Bring POOL back to its primary data center's store and servers."""
    dep = _deployment(rundir, echo=not as_json)
    name = _one_pool(dep, pool)
    if not as_json:
        click.echo(f"chat failback of {name}:")
    try:
        report = failback(dep, name)
    except ChatDbError as exc:
        fail(str(exc))
    if as_json:
        echo_json(report)
        return
    lag = report["lag_after"]
    click.echo(f"{name} back on {report['store']} in {report['seconds']:.2f} s (posts refused "
               f"{report['writes_refused_seconds']:.2f} s); principal {report['principal']} "
               f"in term {report['term']}; active {', '.join(report['active'])}")
    click.echo(f"  shipping lag now: {lag['bytes']} bytes, {lag['seconds']} s")


add_room_commands(chat)
