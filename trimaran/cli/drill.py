"""`trimaran drill SCENARIO`: a DR rehearsal on the running deployment (SPEC OPS-2)."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from trimaran.cli.common import dir_option, fail, json_option, open_rundir
from trimaran.deploy.dr import Deployment, DrError
from trimaran.deploy.rundir import RunDir
from trimaran.deploy.supervisor import health, pid_alive
from trimaran.drill.load import Clients, Load, Rates
from trimaran.drill.report import Report
from trimaran.drill.runner import Drill, DrillError
from trimaran.drill.scenarios import SCENARIOS, Options, Plan, Scenario, check_normal
from trimaran.drill.users import ensure_users
from trimaran.net.transport import Address
from trimaran.store.base import StoreError
from trimaran.topology.model import PoolRole

WARM_UP = 3.0            # seconds of load before the fault, so that there are writes to lose
SHARES = {"im": 0.45, "writes": 0.3, "presence": 0.15, "calls": 0.1}


def _scenario_help() -> str:
    return "\n\n".join(f"\b\n{name}: {s.summary}" for name, s in SCENARIOS.items())


@click.command(help="Rehearse a disaster on the running deployment and report detection "
                    "time, RTO, RPO (acknowledged changes lost), failed requests and users "
                    "not recovered, per step. Exit status 0 when every target was met.\n\n"
                    "Scenarios:\n\n" + _scenario_help())
@click.argument("scenario", type=click.Choice(list(SCENARIOS)))
@dir_option
@click.option("--users", default=50, show_default=True, help="simulated users")
@click.option("--rate", default=20.0, show_default=True,
              help="requests per second of the whole load (IM, writes, presence, calls)")
@click.option("--pool", default=None, help="the pool to act on (default: the scenario picks)")
@click.option("--server", default=None, help="the server to act on")
@click.option("--site", default=None, help="the site to act on")
@click.option("--hold", default=10.0, show_default=True,
              help="seconds a fault nobody repairs stays in place (wan-cut, director-kill)")
@click.option("--report", "report_file", type=click.Path(dir_okay=False), default=None,
              help="write the report there: Markdown for .md, else JSON")
@json_option
def drill(scenario: str, rundir: str | None, users: int, rate: float, pool: str | None,
          server: str | None, site: str | None, hold: float, report_file: str | None,
          as_json: bool) -> None:
    """Rehearse a disaster (see the help text built above)."""
    if users < 2:
        fail("--users must be at least 2")
    if rate <= 0:
        fail("--rate must be positive")
    run = open_rundir(rundir)
    chosen = SCENARIOS[scenario]
    opts = Options(pool=pool, server=server, site=site, hold=hold)
    try:
        ops = Deployment(run)
        _check_running(run)
        check_normal(ops)
        plan = chosen.plan(ops, run.load_state(), opts)
    except (DrillError, DrError) as exc:
        fail(f"cannot run drill {scenario}: {exc}")
    console = Console(stderr=True)
    logging.getLogger("trimaran").setLevel(logging.ERROR)   # the clients' own chatter
    rates = Rates(**{k: rate * share for k, share in SHARES.items()})
    report = Report(scenario, chosen.summary, list(chosen.procedure), ops.topology.name,
                    users, {"im": rates.im, "writes": rates.writes,
                            "presence": rates.presence, "calls": rates.calls}, time.time())
    started = time.monotonic()
    try:
        asyncio.run(_run(run, ops, chosen, plan, opts, report, console,
                         live=console.is_terminal and not as_json))
    except KeyboardInterrupt:
        report.aborted = "interrupted"
    report.duration = round(time.monotonic() - started, 2)
    _output(report, console, as_json, report_file)
    if not report.passed:
        sys.exit(1)


def _check_running(run: RunDir) -> None:
    state = run.load_state()
    down = [s.name for s in state.servers.values()
            if not pid_alive(s.pid) or not health(s, timeout=2.0)[0]]
    if down:
        raise DrillError(f"server(s) {', '.join(sorted(down))} not running or not healthy; a "
                         f"drill starts from a healthy deployment (`trimaran status`)")


def clients_of(ops: Deployment) -> Clients:
    """Where each pool's users sign in (the Directors when there are, else the home pool
    then its backup pool) and write (the home pool's admin APIs, then the backup's)."""
    directors = [s for p in ops.resolver.pools(PoolRole.DIRECTOR) for s in p.servers]
    sign_in: dict[str, tuple[Address, ...]] = {}
    http: dict[str, list[str]] = {}
    spread: dict[str, int] = {}
    for pool in ops.frontend_pools():
        partner = ops.resolver.paired_pool(pool)
        chain = [pool] + ([partner.name] if partner else [])
        servers = [s for p in chain for s in ops.resolver.servers_of(p)]
        sign_in[pool] = tuple(Address("tcp", s.address, s.sip_port)
                              for s in (directors or servers))
        spread[pool] = len(directors or ops.resolver.servers_of(pool))
        http[pool] = [f"http://{s.address}:{s.admin_port}" for s in servers]
    return Clients(sign_in, http, spread)


async def _run(run: RunDir, ops: Deployment, scenario: Scenario, plan: Plan, opts: Options,
               report: Report, console: Console, *, live: bool) -> None:
    try:
        people = await ensure_users(run, ops.topology, report.users + 1, ops.frontend_pools())
    except StoreError as exc:
        report.aborted = f"cannot create the drill users: {exc}"
        return
    rates = Rates(**{k: float(v) for k, v in report.rates.items()})
    load = Load(people[:report.users], ops.topology.sip_domain, clients_of(ops), rates)
    try:
        console.log(f"signing in {report.users} simulated users")
        failed = await load.sign_in()
        if failed:
            report.aborted = (f"{len(failed)} user(s) could not sign in before the fault, e.g. "
                              f"{', '.join(failed[:5])}")
            return
        load.start()
        await asyncio.sleep(WARM_UP)
        async with Drill(run, load, report, people, console=console, live=live) as drill:
            try:
                await scenario.run(drill, plan, opts)
            except DrillError as exc:
                report.aborted = str(exc)
                drill.event("aborted", str(exc))
    finally:
        await load.close()


def _output(report: Report, console: Console, as_json: bool, report_file: str | None) -> None:
    if report_file is not None:
        path = Path(report_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(report.markdown() if path.suffix == ".md" else report.dumps() + "\n")
    if as_json:
        click.echo(report.dumps())
        return
    table = Table(title=f"drill {report.scenario}: "
                        f"{'PASSED' if report.passed else 'FAILED'}")
    for column in ("step", "measure", "value", "target", "ok"):
        table.add_column(column)
    for step in report.steps:
        rows = [(t.what, _shown(t.measured, t.unit),
                 "" if t.limit is None else _shown(t.limit, t.unit), t.spec,
                 "ok" if t.ok else "MISSED") for t in step.targets]
        rows += [("time to detect", _shown(step.detect, "s"), "", "", ""),
                 ("RTO", _shown(step.recover, "s"), "", "", ""),
                 ("acknowledged changes lost / checked", f"{step.lost} / {step.acked_checked}",
                  "", "", ""),
                 ("failed / requests", f"{sum(step.failed.values())} / "
                  f"{sum(step.requests.values())}", "", "", ""),
                 ("users not recovered", str(len(step.not_recovered)), "", "", "")]
        for index, (what, value, limit, spec, ok) in enumerate(rows):
            table.add_row(step.name if index == 0 else "", what, value,
                          f"<= {limit} ({spec})" if limit else "", ok,
                          end_section=index == len(rows) - 1)
    Console(width=max(Console().width, 110)).print(table)
    if report.aborted:
        click.echo(f"drill aborted: {report.aborted}", err=True)
    if report_file is not None:
        click.echo(f"report written to {report_file}")


def _shown(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    return f"{value:.2f} s" if unit == "s" else f"{value:g}{unit}"
