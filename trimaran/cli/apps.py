"""`trimaran apps ...`: the call-management applications (SPEC APP-1..APP-7).

    apps validate FILE [--topology T | --dir RUNDIR]   check an applications file
    apps publish FILE --dir RUNDIR                      validate, then make it the CMS's
    apps audio add FILE --dir RUNDIR                    store an audio file (by SHA-256)
    apps show --dir RUNDIR [--json]                     the configuration in use
    apps status --dir RUNDIR [--json]                   each pool's application servers
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import click

from trimaran.apps.loader import dump_apps, read_apps
from trimaran.apps.model import AppsConfig
from trimaran.apps.rules import validate_apps
from trimaran.apps.server import AUDIO_PREFIX
from trimaran.cli.cmsdoc import (
    checked,
    document_of,
    master_snapshot,
    topology_of,
    write_document,
)
from trimaran.cli.common import dir_option, echo_json, fail, json_option, open_rundir
from trimaran.cms.appsdoc import APPS_KEY
from trimaran.deploy.dr import Deployment, call
from trimaran.topology.errors import Violation, format_violations
from trimaran.topology.loader import load_topology
from trimaran.topology.model import PoolRole, Topology

MAX_AUDIO_BYTES = 700 * 1024       # base64 of it fits a CMS document (1 MiB)


@click.group()
def apps() -> None:
    """Call Park, group pickup, Response Groups, unassigned numbers, conferences."""


def _checked(file: str, topology: Topology) -> tuple[AppsConfig, list[Violation]]:
    return checked(file, topology, read_apps, validate_apps,
                   "applications configuration")


@apps.command("validate")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--topology", "topology_file", type=click.Path(exists=True, dir_okay=False),
              help="the topology to check references against (default: the deployment's)")
@dir_option
def validate_cmd(file: str, topology_file: str | None, rundir: str | None) -> None:
    """Check an applications configuration FILE."""
    _, violations = _checked(file, topology_of(topology_file, rundir))
    if violations:
        click.echo(format_violations(violations))
    click.echo(f"{file}: valid")


@apps.command("publish")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@dir_option
@json_option
def publish_cmd(file: str, rundir: str | None, as_json: bool) -> None:
    """Validate FILE and make it the deployment's applications configuration (CMS);
    every audio file it names must have been added (`apps audio add`)."""
    dep = Deployment(open_rundir(rundir))
    config, violations = _checked(file, dep.topology)
    for violation in violations:
        click.echo(f"warning: {violation.path}: {violation.message}", err=True)
    _, snapshot = master_snapshot(dep)
    keys = {str(d.get("key")) for d in snapshot.get("documents", [])}
    missing = [a.name for a in config.audio if AUDIO_PREFIX + a.sha256 not in keys]
    if missing:
        fail(f"audio not in the CMS: {', '.join(missing)} (add each with `trimaran apps "
             f"audio add FILE`)")
    answer = write_document(dep, APPS_KEY, dump_apps(config))
    result = {"version": answer["version"], "master": answer["master"],
              "workflows": len(config.workflows), "call_park": len(config.call_park),
              "unassigned": len(config.unassigned), "group_pickup": len(config.group_pickup)}
    if as_json:
        echo_json(result)
        return
    click.echo(f"applications published at CMS version {answer['version']} on "
               f"{answer['master']}: {len(config.call_park)} call park, "
               f"{len(config.group_pickup)} group pickup, {len(config.workflows)} response "
               f"group workflow(s), {len(config.unassigned)} unassigned range(s)")


@apps.group("audio")
def audio() -> None:
    """Audio files for announcements, welcome messages and music on hold."""


@audio.command("add")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@dir_option
@json_option
def audio_add(file: str, rundir: str | None, as_json: bool) -> None:
    """Store FILE (WAV: G.711 µ-law or 16-bit PCM, 8 kHz mono) in the CMS under its
    SHA-256; print the SHA-256 to name it in the applications file."""
    data = Path(file).read_bytes()
    if len(data) > MAX_AUDIO_BYTES:
        fail(f"{file} is {len(data)} bytes; audio files are limited to {MAX_AUDIO_BYTES}")
    from trimaran.apps.audio import AudioError, read_wav
    try:
        read_wav(data)
    except AudioError as exc:
        fail(f"{file}: {exc}")
    sha = hashlib.sha256(data).hexdigest()
    answer = write_document(Deployment(open_rundir(rundir)), AUDIO_PREFIX + sha,
                    base64.b64encode(data).decode())
    if as_json:
        echo_json({"sha256": sha, "bytes": len(data), "version": answer["version"]})
        return
    click.echo(sha)


@apps.command("show")
@dir_option
@json_option
def show_cmd(rundir: str | None, as_json: bool) -> None:
    """The applications configuration in use."""
    dep = Deployment(open_rundir(rundir))
    _, snapshot = master_snapshot(dep)
    doc = document_of(snapshot, APPS_KEY)
    if doc is None:
        fail("no applications configuration was published (`trimaran apps publish FILE`)")
    if as_json:
        echo_json({"version": doc["version"], "yaml": doc["body"]})
        return
    click.echo(f"# applications configuration, CMS version {doc['version']}")
    click.echo(str(doc["body"]))


@apps.command("status")
@dir_option
@json_option
def status_cmd(rundir: str | None, as_json: bool) -> None:
    """Each Front End server's application server: calls and applications."""
    run = open_rundir(rundir)
    topology = load_topology(run.topology)
    rows = []
    for pool in topology.pools:
        if pool.role is not PoolRole.FRONTEND:
            continue
        for spec in pool.servers:
            status, body = call(spec, "GET", "/status", timeout=1.5)
            rows.append({"server": spec.name, "pool": pool.name, "reachable": status == 200,
                         "apps": body.get("apps") if status == 200 else None})
    if as_json:
        echo_json(rows)
        return
    for row in rows:
        click.echo(f"{row['server']:<12} {row['pool']:<10} "
                   + (str(row["apps"]) if row["reachable"] else "unreachable"))
