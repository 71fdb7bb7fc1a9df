"""`up`, `down`, `status`, `server kill|stop|start|drain` and the internal `serve`."""

from __future__ import annotations

import asyncio
import gc
import shutil
import signal
import sys

import click

from trimaran.admin import access
from trimaran.backend.instance import BackendError
from trimaran.cli.admin import audited
from trimaran.cli.common import dir_option, echo_json, fail, json_option, open_rundir
from trimaran.cli.status_page import print_page_urls
from trimaran.deploy.backends import start_backends, stop_backends
from trimaran.deploy.database import databases_of, instance
from trimaran.deploy.rundir import (
    DeploymentState,
    RunDir,
    ServerState,
    remember_rundir,
)
from trimaran.deploy.sites import SiteError, clear_all, load_failed
from trimaran.deploy.supervisor import (
    fetch_json,
    health,
    pid_alive,
    post_json,
    signal_server,
    start_server,
    stop_all,
    stop_server,
    wait_exit,
    wait_healthy,
)
from trimaran.security import https
from trimaran.security.ca import CertError
from trimaran.security.deployment import (
    OPERATOR,
    agent_identity,
    http_policy,
    server_certificate,
    sip_transports,
)
from trimaran.topology.loader import load_topology
from trimaran.topology.model import PoolRole, Topology
from trimaran.topology.validator import format_violations, has_errors, validate_file

START_TIMEOUT = 30.0


RUNNABLE = frozenset({PoolRole.FRONTEND, PoolRole.WITNESS, PoolRole.DNS, PoolRole.DIRECTOR,
                      PoolRole.MEDIATION, PoolRole.SBA, PoolRole.EDGE, PoolRole.CHAT})


def runnable(topology: Topology) -> list[ServerState]:
    """The servers `up` starts (witnesses first); refuses roles not runnable yet."""
    servers = []
    ordered = sorted(topology.pools, key=lambda p: p.role is not PoolRole.WITNESS)
    for pool in ordered:
        if pool.role not in RUNNABLE:
            fail(f"pool {pool.name}: {pool.role.value} pools cannot be run by this version "
                 "yet (Front End, Director, Edge, Mediation, SBA, chat, witness and dns pools "
                 "can)")
        for srv in pool.servers:
            servers.append(ServerState(srv.name, pool.name, pool.role.value, srv.address,
                                       srv.sip_port, srv.admin_port))
    return servers


def load_valid(file: str) -> Topology:
    """Load and validate a topology, refusing with every violation listed."""
    violations = validate_file(file)
    if has_errors(violations):
        fail(f"{file} is not a valid topology:\n{format_violations(violations)}")
    return load_topology(file)


def log_tail(rundir: RunDir, server: str, lines: int = 15) -> str:
    """The last lines of a server's log."""
    path = rundir.log_file(server)
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def start_deployment(file: str, run: RunDir, timeout: float) -> DeploymentState:
    """Validate FILE, start every server into `run`, wait until all are healthy."""
    topology = load_valid(file)
    servers = runnable(topology)
    if run.state_file.exists():
        alive = [s.name for s in run.load_state().servers.values() if pid_alive(s.pid)]
        if alive:
            fail(f"a deployment is already running in {run.path} ({', '.join(alive)}); "
                 "stop it with `trimaran down` first")
    run.create()
    access.use_rundir(run)           # creates the admin key with the other secrets
    try:   # OPS-6: the deployment CA and the server certificates, when TLS is on
        created = run.prepare_tls(topology)
        https.install(http_policy(topology, run.certs, OPERATOR, listens=False))
    except CertError as exc:
        fail(f"TLS: {exc}")
    if created:
        click.echo(f"created TLS certificates in {run.certs}: {', '.join(created)}")
    shutil.copyfile(file, run.topology)
    databases = databases_of(topology)
    state = DeploymentState(topology.name, {s.name: s for s in servers},
                            {d.name: d for d in databases})
    run.save_state(state)
    witnesses = [s for s in servers if s.role == PoolRole.WITNESS.value]
    for server in witnesses:  # the agents of mirrored Back Ends ask them from the start
        start_server(run, server)
    try:
        start_backends(run, state, timeout)
    except BackendError as exc:
        stop_all(state)
        stop_databases(run, state)
        fail(f"the back end could not start: {exc}")
    for server in servers:
        if server not in witnesses:
            run.secret(server.pool)
            start_server(run, server)
    run.save_state(state)
    remember_rundir(run)
    failed = wait_healthy(servers, timeout)
    if failed:
        details = "\n".join(f"--- {name} ---\n{log_tail(run, name)}" for name in failed)
        stop_all(state)
        stop_databases(run, state)
        fail(f"server(s) {', '.join(failed)} did not become healthy in {timeout:.0f}s; "
             f"stopped the deployment.\n{details}")
    return state


def describe(state: DeploymentState, run: RunDir) -> None:
    """Print where each server of a started deployment listens."""
    click.echo(f"deployment {state.topology!r} is up ({len(state.servers)} server(s)), "
               f"dir {run.path}")
    topology = load_topology(run.topology)
    for s in state.servers.values():
        click.echo(f"  {s.name:<12} pool {s.pool:<10} sip {s.address}:{s.sip_port} "
                   f"({sip_transports(topology, s.role)})  "
                   f"admin {https.scheme()}://{s.address}:{s.admin_port}  pid {s.pid}")


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@dir_option
@click.option("--timeout", default=START_TIMEOUT, show_default=True,
              help="seconds to wait for every server to be healthy")
def up(file: str, rundir: str | None, timeout: float) -> None:
    """Start every server of FILE on this machine and wait until all are healthy."""
    if rundir is None:
        fail("up needs --dir RUNDIR (where state, data and logs of the deployment go)")
    run = RunDir(rundir)
    describe(start_deployment(file, run, timeout), run)


@click.command()
@dir_option
def down(rundir: str | None) -> None:
    """Stop every server of the deployment (ordered shutdown, then SIGKILL)."""
    run = open_rundir(rundir)
    state = run.load_state()
    stop_all(state)
    stop_databases(run, state)
    for server in state.servers.values():
        server.pid = None
    run.save_state(state)
    try:
        cleared = clear_all(run)
    except SiteError as exc:
        click.echo(f"warning: {exc}", err=True)
        cleared = []
    if cleared:
        click.echo(f"failed sites forgotten: {', '.join(cleared)}")
    click.echo(f"deployment in {run.path} is down")


def stop_databases(run: RunDir, state: DeploymentState) -> None:
    """Stop every Back End agent and instance of the deployment (fast shutdown)."""
    stop_backends(run, state)


def pool_summaries(topology: Topology, rows: list[dict[str, object]],
                   users: dict[str, int | None]) -> list[dict[str, object]]:
    """Per pool: users, servers up, and what one more failure would mean (FE-6)."""
    out: list[dict[str, object]] = []
    for pool in topology.pools:
        if pool.role is not PoolRole.FRONTEND:
            continue
        members = [r for r in rows if r["pool"] == pool.name]
        up = [r for r in members if r["healthy"]]
        registered = sum(_bindings_of(r) for r in up)
        per_server = pool.capacity.users_per_server
        planned = users.get(pool.name)
        load = max(registered, planned or 0)
        warnings = []
        if len(up) < len(members):
            warnings.append(f"{len(members) - len(up)} of {len(members)} server(s) down")
        if up and load / len(up) > per_server:
            warnings.append(f"{load / len(up):.0f} users per server now, over the capacity "
                            f"of {per_server}")
        survivors = len(up) - 1
        what_if: dict[str, object] = {"servers_left": survivors}
        if survivors > 0:
            per = load / survivors
            what_if["users_per_server"] = round(per, 1)
            what_if["over_capacity"] = per > per_server
            if per > per_server:
                warnings.append(f"if one more server fails: {per:.0f} users per server, over "
                                f"the capacity of {per_server}")
        elif members:
            what_if["users_per_server"] = None
            warnings.append("if one more server fails the pool is down")
        summary: dict[str, object] = {
            "pool": pool.name, "edition": pool.edition.value if pool.edition else None,
            "servers": len(members), "servers_up": len(up), "users": planned,
            "registered": registered, "capacity_per_server": per_server,
            "what_if_one_more_fails": what_if, "warnings": warnings}
        out.append(summary)
    return out


def _draining(row: dict[str, object]) -> bool:
    status = row.get("status")
    return isinstance(status, dict) and bool(status.get("draining"))


def _bindings_of(row: dict[str, object]) -> int:
    status = row.get("status")
    value = status.get("bindings") if isinstance(status, dict) else None
    return value if isinstance(value, int) else 0


def count_users(run: RunDir, topology: Topology) -> dict[str, int | None]:
    """Users homed on each Front End pool (None when its store cannot be read now)."""
    from trimaran.cli.users import pool_store
    from trimaran.store.base import StoreError

    async def count(pool: str) -> int | None:
        store = pool_store(run, topology, pool)
        try:
            await store.open()
            try:
                return len(await store.users.list(pool))
            finally:
                await store.close()
        except StoreError:
            return None

    return {p.name: asyncio.run(count(p.name)) for p in topology.pools
            if p.role is PoolRole.FRONTEND}


@click.command()
@dir_option
@json_option
@click.option("--web", is_flag=True,
              help="print the URL of the live status web page (served by the witness, "
                   "Front End and Director servers) instead")
def status(rundir: str | None, as_json: bool, web: bool) -> None:
    """Health of every server of the deployment, and per-pool capacity (FE-6)."""
    run = open_rundir(rundir)
    state = run.load_state()
    if web:
        print_page_urls(state, as_json)
        return
    topology = load_topology(run.topology)
    rows: list[dict[str, object]] = []
    for s in state.servers.values():
        running = pid_alive(s.pid)
        healthy, reason = health(s, timeout=1.0) if running else (False, "not running")
        detail = fetch_json(s, "/status") if running else None
        rows.append({"server": s.name, "pool": s.pool, "role": s.role, "pid": s.pid,
                     "running": running, "healthy": healthy, "reason": reason,
                     "sip": f"{s.address}:{s.sip_port}", "status": detail or {}})
        cert = server_certificate(topology, run.certs, s.name)   # OPS-6: expiry warnings
        if cert is not None:
            rows[-1]["certificate"] = cert.to_json()
    databases = [{"name": d.name, "pool": d.pool, "role": d.role,
                  "address": f"{d.address}:{d.port}",
                  "running": instance(run, d).is_running()} for d in state.databases.values()]
    pools = pool_summaries(topology, rows, count_users(run, topology))
    try:
        sites: dict[str, object] = {n: f.to_json() for n, f in load_failed(run).items()}
    except SiteError as exc:
        sites = {"error": str(exc)}
    if as_json:
        echo_json({"deployment": state.topology, "dir": str(run.path), "servers": rows,
                   "databases": databases, "pools": pools, "sites": sites})
        return
    click.echo(f"deployment {state.topology!r} in {run.path}")
    for name, failed in sites.items():
        click.echo(f"  site {name}: FAILED ({failed['mode']})" if isinstance(failed, dict)
                   else f"  sites: {failed}")
    for row in rows:
        why = row["reason"]
        health_text = "healthy" if row["healthy"] else \
            ("DRAINING" if why == "HTTP 503" and _draining(row) else f"DOWN ({why})")
        extra = row["status"]
        bindings = ""
        if isinstance(extra, dict) and "calls_active" in extra:       # a Mediation server
            bindings = f"  calls {extra.get('calls_active')}"
        elif isinstance(extra, dict) and extra:
            bindings = f"  bindings {extra.get('bindings')}"
        click.echo(f"  {row['server']:<12} {row['pool']:<10} {row['sip']:<20} "
                   f"{health_text}{bindings}")
        cert_json = row.get("certificate")
        if isinstance(cert_json, dict):
            click.echo(f"    certificate until {cert_json['not_after']} "
                       f"({cert_json['days_left']} days left)"
                       + ("  WARNING: renew it (`trimaran certs issue`)"
                          if cert_json["warning"] else ""))
    for database in databases:
        click.echo(f"  {database['name']:<23} {database['address']:<20} "
                   f"{'running' if database['running'] else 'STOPPED'}")
    for pool in pools:
        click.echo(f"  pool {pool['pool']}: {pool['servers_up']}/{pool['servers']} servers up, "
                   f"{pool['users']} users, {pool['registered']} registered")
        for warning in pool["warnings"]:  # type: ignore[attr-defined]
            click.echo(f"    warning: {warning}")


@click.group()
def server() -> None:
    """Act on one server of the running deployment."""


def _server_state(rundir: str | None, name: str) -> tuple[RunDir, DeploymentState, ServerState]:
    run = open_rundir(rundir)
    state = run.load_state()
    if name not in state.servers:
        fail(f"no server named {name!r} in the deployment (servers: "
             f"{', '.join(sorted(state.servers))})")
    return run, state, state.servers[name]


@server.command("kill")
@click.argument("name")
@dir_option
@audited("server kill")
def server_kill(name: str, rundir: str | None) -> None:
    """SIGKILL a server (a crash: no goodbye to anybody)."""
    _, _, srv = _server_state(rundir, name)
    if not signal_server(srv, signal.SIGKILL):
        fail(f"server {name} is not running")
    wait_exit(srv, 5.0)
    click.echo(f"server {name} killed")


@server.command("stop")
@click.argument("name")
@dir_option
@audited("server stop")
def server_stop(name: str, rundir: str | None) -> None:
    """Stop a server in order (SIGTERM, drain, exit)."""
    _, _, srv = _server_state(rundir, name)
    if not pid_alive(srv.pid):
        fail(f"server {name} is not running")
    stop_server(srv)
    click.echo(f"server {name} stopped")


@server.command("drain")
@click.argument("name")
@dir_option
@audited("server drain")
def server_drain(name: str, rundir: str | None) -> None:
    """Stop new sign-ins on a server and move its clients to the others (FE-5)."""
    _, _, srv = _server_state(rundir, name)
    if not pid_alive(srv.pid):
        fail(f"server {name} is not running")
    answer = post_json(srv, "/admin/drain")
    if answer is None:
        fail(f"server {name} did not accept the drain request")
    click.echo(f"server {name} draining: new sign-ins refused, clients moving "
               f"({answer.get('bindings')} binding(s) left)")


@server.command("start")
@click.argument("name")
@dir_option
@click.option("--timeout", default=START_TIMEOUT, show_default=True)
@audited("server start")
def server_start(name: str, rundir: str | None, timeout: float) -> None:
    """Start a stopped or killed server and wait until it is healthy."""
    run, state, srv = _server_state(rundir, name)
    if pid_alive(srv.pid):
        fail(f"server {name} is already running (pid {srv.pid})")
    start_server(run, srv)
    run.save_state(state)
    if wait_healthy([srv], timeout):
        fail(f"server {name} did not become healthy in {timeout:.0f}s:\n"
             f"{log_tail(run, name)}")
    click.echo(f"server {name} started (pid {srv.pid})")


@click.command(hidden=True)
@click.option("--db", "name", required=True, help="Back End instance name")
@dir_option
def agent(name: str, rundir: str | None) -> None:
    """Run the mirroring agent beside one Back End instance (used by `up`)."""
    from trimaran.backend.agent import run_agent
    from trimaran.deploy.database import agent_config
    from trimaran.deploy.serve import setup_logging

    access.use_token(None)           # a server signs with the deployment's key, always
    run = open_rundir(rundir)
    state = run.load_state()
    if name not in state.databases:
        fail(f"no Back End instance named {name!r}")
    setup_logging(f"{name}-agent")
    topology = load_topology(run.topology)
    try:   # OPS-6: the agent's API is HTTPS with its own certificate under mutual TLS
        https.install(http_policy(topology, run.certs, agent_identity(name)))
    except CertError as exc:
        fail(f"TLS: {exc}")
    config = agent_config(run, topology, state.databases, name)
    asyncio.run(run_agent(config))


@click.command(hidden=True)
@click.option("--server", "name", required=True, help="server name in the topology")
@dir_option
def serve(name: str, rundir: str | None) -> None:
    """Run one server of the deployment in this process (used by `up`)."""
    from trimaran.deploy.serve import serve as run_server
    from trimaran.deploy.serve import setup_logging

    access.use_token(None)           # a server signs with the deployment's key, always
    run = open_rundir(rundir)
    setup_logging(name)
    # A server keeps tens of thousands of live objects (transactions linger for the
    # RFC 3261 timers): full collections of all of them stalled calls by 50-200 ms.
    # Collect the young generation less often; `serve` freezes what start-up made.
    gc.set_threshold(5000, 20, 20)
    sys.exit(asyncio.run(run_server(run, name)))
