"""`trimaran voice ...`: Enterprise Voice configuration and its state (SPEC EV-1, EV-3, EV-7).

    voice validate FILE [--topology T | --dir RUNDIR]   check a voice section file
    voice publish FILE --dir RUNDIR                      validate, then make it the CMS's
    voice show --dir RUNDIR [--json]                     the configuration in use
    voice route NUMBER --user AOR --dir RUNDIR [--json]  what dialling NUMBER would do
    voice status --dir RUNDIR [--json]                   gateways and calls per mediation server
    voice features [--json]                              what works in each failure mode (EV-7)
"""

from __future__ import annotations

import sys
from urllib.parse import quote

import click

from trimaran.cli.cmsdoc import checked, topology_of, write_document
from trimaran.cli.common import dir_option, echo_json, fail, json_option, open_rundir
from trimaran.cms.voicedoc import VOICE_KEY
from trimaran.deploy.dr import Deployment, DrError, call
from trimaran.roles.mediation import mediation_port
from trimaran.topology.errors import Violation, format_violations
from trimaran.topology.loader import load_topology
from trimaran.topology.model import PoolRole, Topology
from trimaran.topology.resolver import Resolver
from trimaran.topology.voice_loader import dump_voice, read_voice
from trimaran.topology.voice_rules import validate_voice
from trimaran.voice.features import markdown_table, table_rows
from trimaran.voice.model import VoiceConfig
from trimaran.voice.routing import explain


@click.group()
def voice() -> None:
    """Enterprise Voice: dial plans, voice policies, routes, trunks, gateways."""


def _checked(file: str, topology: Topology) -> tuple[VoiceConfig, list[Violation]]:
    return checked(file, topology, read_voice, validate_voice, "voice configuration")


@voice.command("validate")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--topology", "topology_file", type=click.Path(exists=True, dir_okay=False),
              help="the topology to check references against (default: the deployment's)")
@dir_option
def validate_cmd(file: str, topology_file: str | None, rundir: str | None) -> None:
    """Check a voice configuration FILE (the `voice:` section on its own)."""
    _, violations = _checked(file, topology_of(topology_file, rundir))
    if violations:
        click.echo(format_violations(violations))
    click.echo(f"{file}: valid")


@voice.command("publish")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@dir_option
@json_option
def publish_cmd(file: str, rundir: str | None, as_json: bool) -> None:
    """Validate FILE and make it the deployment's voice configuration (CMS)."""
    run = open_rundir(rundir)
    dep = Deployment(run)
    config, violations = _checked(file, dep.topology)
    for violation in violations:
        click.echo(f"warning: {violation.path}: {violation.message}", err=True)
    body = write_document(dep, VOICE_KEY, dump_voice(config))
    master = body["master"]
    result = {"version": body["version"], "master": master, "routes": len(config.routes),
              "trunks": len(config.trunks), "gateways": len(config.gateways)}
    if as_json:
        echo_json(result)
        return
    click.echo(f"voice configuration published at CMS version {body['version']} on {master}: "
               f"{len(config.routes)} route(s), {len(config.trunks)} trunk(s), "
               f"{len(config.gateways)} gateway(s); servers pick it up within seconds")


def _current(dep: Deployment) -> tuple[VoiceConfig | None, str]:
    """The configuration in use: the CMS document, else the topology's."""
    try:
        _, snapshot = dep.cms_master()
    except DrError:
        return dep.topology.voice, "topology (CMS master unreachable)"
    doc = next((d for d in snapshot.get("documents", []) if d.get("key") == VOICE_KEY), None)
    if doc is None:
        return dep.topology.voice, "topology"
    loaded = read_voice("CMS voice document", text=str(doc["body"]))
    return loaded.config, f"CMS version {doc['version']}"


@voice.command("show")
@dir_option
@json_option
def show_cmd(rundir: str | None, as_json: bool) -> None:
    """The voice configuration in use."""
    dep = Deployment(open_rundir(rundir))
    config, source = _current(dep)
    if config is None:
        fail("this deployment has no voice configuration (add `voice:` to the topology or "
             "run `trimaran voice publish FILE`)")
    if as_json:
        echo_json({"source": source, "yaml": dump_voice(config)})
        return
    click.echo(f"# voice configuration from the {source}")
    click.echo(dump_voice(config))


@voice.command("route")
@click.argument("number")
@click.option("--user", "user_aor", required=True, help="the caller, e.g. sip:alice@example.com")
@dir_option
@json_option
def route_cmd(number: str, user_aor: str, rundir: str | None, as_json: bool) -> None:
    """What dialling NUMBER as --user would do: normalization, policy, trunks in order."""
    dep = Deployment(open_rundir(rundir))
    config, _ = _current(dep)
    if config is None:
        fail("this deployment has no voice configuration")
    site = _home_site(dep, user_aor)
    result = explain(config, user_aor, site, number)
    if as_json:
        echo_json(result)
        return
    for key, value in result.items():
        if key != "attempts":
            click.echo(f"{key:<12} {value}")
    for i, attempt in enumerate(result.get("attempts", []) or [], 1):
        click.echo(f"  {i}. {attempt}")
    if not result.get("attempts"):
        sys.exit(1)


def _home_site(dep: Deployment, aor: str) -> str | None:
    """The site of the user's home pool, asked of the Front End pools' homing API."""
    user = aor.removeprefix("sip:").split("@", 1)[0]
    for pool in [*dep.resolver.pools(PoolRole.FRONTEND), *dep.resolver.pools(PoolRole.SBA)]:
        status, body = dep.first(pool.name, "GET", f"/cms/homing/{quote(user, safe='')}"
                                 f"?realm={quote(dep.topology.sip_domain)}", key=dep.cms_key)
        if status == 200:
            try:
                return dep.resolver.pool(str(body.get("pool"))).site
            except LookupError:
                return None
    return None


@voice.command("status")
@dir_option
@json_option
def status_cmd(rundir: str | None, as_json: bool) -> None:
    """Gateways as each Mediation server probes them, and its calls."""
    run = open_rundir(rundir)
    topology = load_topology(run.topology)
    rows = []
    for pool in Resolver(topology).pools(PoolRole.MEDIATION):
        for spec in pool.servers:
            status, body = call(spec, "GET", "/status", timeout=1.5)
            rows.append({"server": spec.name, "pool": pool.name, "reachable": status == 200,
                         "sip": f"{spec.address}:{mediation_port(pool, spec)}",
                         **(body if status == 200 else {"error": body.get("error")})})
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("no Mediation pools in this deployment")
    for row in rows:
        if not row["reachable"]:
            click.echo(f"{row['server']:<12} {row['pool']:<10} unreachable ({row['error']})")
            continue
        gateways = ", ".join(f"{g['gateway']} {g['state']}" for g in row.get("gateways", []))
        click.echo(f"{row['server']:<12} {row['pool']:<10} calls active "
                   f"{row.get('calls_active')}  {row.get('calls')}  gateways: {gateways}")


@voice.command("features")
@json_option
def features_cmd(as_json: bool) -> None:
    """Which features work in each failure mode (EV-7)."""
    if as_json:
        echo_json(table_rows())
        return
    click.echo(markdown_table())

