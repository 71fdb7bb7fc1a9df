"""`trimaran admin ...`: admin tokens and the audit log of operator commands (OPS-6).

    admin token create --name WHO --scope read|operator [--days N] --dir RUNDIR
    admin token list [--json] --dir RUNDIR
    admin token revoke ID --dir RUNDIR
    admin audit [--json] [--limit N] --dir RUNDIR

A token is printed once, at creation; the run directory keeps only its claims
(``secrets/admin-tokens.json``). Revoked ids go to the CMS document ``admin/revoked``,
which every server following the CMS honours within seconds.

`audited` wraps the commands that change who serves what (pool, cms, db and chat
failover/failback, site fail/restore, server kill/stop/start/drain): each run, refused
or not, leaves one record in the CMS audit log (`trimaran.cms.audit`).
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

import click

from trimaran.admin import access
from trimaran.cli.common import (
    dir_option,
    echo_json,
    fail,
    json_option,
    last_failure,
    open_rundir,
)
from trimaran.cms.audit import AuditRecord
from trimaran.deploy import audit as audit_log
from trimaran.deploy.dr import Deployment, DrError
from trimaran.deploy.rundir import RunDir, RunDirError, resolve_rundir
from trimaran.topology.errors import TopologyError

F = TypeVar("F", bound=Callable[..., Any])

REGISTRY = "admin-tokens.json"
_NOT_ARGS = frozenset({"rundir", "as_json"})


# -- auditing of operator commands -------------------------------------------------------------

def require_operator(action: str) -> None:
    """Refuse early when the --token given cannot do `action` (read scope)."""
    token = access.current_token()
    if token is None:
        return
    try:
        claims = access.read_claims(token)
    except access.TokenError as exc:
        fail(f"--token: {exc}")
    if claims.scope != access.OPERATOR:
        fail(f"token '{claims.name}' has scope {claims.scope}; {action} needs "
             f"{access.OPERATOR}")


def audited(command: str) -> Callable[[F], F]:
    """Record every run of the click command `command` (e.g. "pool failover") in the
    audit log: who, when, its arguments, ok/refused/error and the reason, duration."""
    def wrap(func: F) -> F:
        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            started, clock = time.time(), time.monotonic()
            result, reason = "ok", ""
            try:
                require_operator(command.rsplit(" ", 1)[-1])
                return func(*args, **kwargs)
            except SystemExit as exc:
                if exc.code not in (0, None):
                    result, reason = "refused", last_failure() or f"exit status {exc.code}"
                raise
            except BaseException as exc:
                result, reason = "error", f"{type(exc).__name__}: {exc}"[:500]
                raise
            finally:
                _record(kwargs.get("rundir"), AuditRecord(
                    at=started, who=access.operator_identity(), command=command,
                    args={k: v for k, v in kwargs.items() if k not in _NOT_ARGS},
                    result=result, reason=reason[:2000],
                    seconds=round(time.monotonic() - clock, 3),
                    via="token" if access.current_token() else "key"))
        return run  # type: ignore[return-value]
    return wrap


def _record(rundir: str | None, rec: AuditRecord) -> None:
    try:
        run = resolve_rundir(rundir)
    except RunDirError:
        return                      # the command refused already: no deployment named
    if not run.topology.exists():
        return
    if audit_log.record(run, rec) == "pending":
        click.echo(f"warning: no CMS master answers: the audit record is kept in "
                   f"{audit_log.pending_path(run)} and sent with the next one", err=True)


# -- tokens ------------------------------------------------------------------------------------

def _registry(run: RunDir) -> list[dict[str, Any]]:
    path = run.path / "secrets" / REGISTRY
    if not path.exists():
        return []
    value = json.loads(path.read_text())
    return value if isinstance(value, list) else []


def _save_registry(run: RunDir, entries: list[dict[str, Any]]) -> None:
    path = run.path / "secrets" / REGISTRY
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(entries, handle, indent=2)
    os.replace(tmp, path)


@click.group()
def admin() -> None:
    """Admin API access: tokens and the audit log (OPS-6)."""


@admin.group()
def token() -> None:
    """Admin tokens: `read` (GET of status, metrics, state) or `operator` (everything)."""


@token.command("create")
@click.option("--name", required=True, help="who holds it (shown in the audit log)")
@click.option("--scope", type=click.Choice(list(access.SCOPES)), required=True)
@click.option("--days", type=float, default=90.0, show_default=True, help="valid for")
@dir_option
@json_option
def token_create(name: str, scope: str, days: float, rundir: str | None,
                 as_json: bool) -> None:
    """Mint a token signed with the deployment's admin key; it is printed only once."""
    run = open_rundir(rundir)
    try:
        value, claims = access.mint(run.admin_key(), name, scope, days=days)
    except ValueError as exc:
        fail(str(exc))
    _save_registry(run, [*_registry(run), claims.to_json()])
    if as_json:
        echo_json({"token": value, **claims.to_json()})
        return
    click.echo(value)
    click.echo(f"token {claims.id} for {name}, scope {scope}, expires "
               f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(claims.expires_at))}; "
               "it is not shown again", err=True)


def _revoked(dep: Deployment) -> tuple[str, dict[str, Any] | None, list[str]]:
    """(CMS master, the admin/revoked document, the revoked ids)."""
    master, snapshot = dep.cms_master()
    doc = next((d for d in snapshot.get("documents", [])
                if d.get("key") == access.REVOKED_KEY), None)
    ids = json.loads(doc["body"]) if doc else []
    return master, doc, [str(i) for i in ids] if isinstance(ids, list) else []


@token.command("list")
@dir_option
@json_option
def token_list(rundir: str | None, as_json: bool) -> None:
    """The tokens minted for this deployment (never the tokens themselves)."""
    run = open_rundir(rundir)
    try:
        revoked: set[str] | None = set(_revoked(Deployment(run))[2])
    except (DrError, TopologyError, OSError, ValueError):
        revoked = None                     # the deployment is down: unknown
    now = time.time()
    rows = [{**entry, "expired": entry["exp"] <= now,
             "revoked": None if revoked is None else entry["id"] in revoked}
            for entry in _registry(run)]
    if as_json:
        echo_json({"tokens": rows})
        return
    for row in rows:
        state = "expired" if row["expired"] else "revoked" if row["revoked"] else \
            "valid" if row["revoked"] is False else "valid (revocations unknown)"
        click.echo(f"{row['id']}  {row['name']:<20} {row['scope']:<8} expires "
                   f"{time.strftime('%Y-%m-%d', time.gmtime(row['exp']))}  {state}")


@token.command("revoke")
@click.argument("token_id")
@dir_option
def token_revoke(token_id: str, rundir: str | None) -> None:
    """Revoke token ID on every server following the CMS (the id from `token list`)."""
    run = open_rundir(rundir)
    require_operator("revoke")
    dep = Deployment(run)
    try:
        master, doc, ids = _revoked(dep)
    except (DrError, ValueError) as exc:
        fail(f"cannot read {access.REVOKED_KEY}: {exc}")
    if token_id in ids:
        click.echo(f"token {token_id} is already revoked")
        return
    status, answer = dep.first(master, "POST", "/cms/documents", {
        "key": access.REVOKED_KEY, "body": json.dumps(sorted({*ids, token_id})),
        "check": True, "expect_version": int(doc["version"]) if doc else None},
        key=dep.cms_key)
    if status != 200:
        fail(f"the CMS master {master} refused the revocation: {answer.get('error', status)}")
    dep.poke_all()
    click.echo(f"token {token_id} revoked (CMS version {answer.get('version')})")


# -- the audit log -----------------------------------------------------------------------------

@admin.command("audit")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True,
              help="newest records shown")
@dir_option
@json_option
def audit_show(limit: int, rundir: str | None, as_json: bool) -> None:
    """Who ran which failover/failback/site/server command, when, and how it ended."""
    run = open_rundir(rundir)
    try:
        stored, waiting = audit_log.read(run, limit)
    except (DrError, TopologyError, OSError) as exc:
        fail(f"cannot read the audit log: {exc}")
    if as_json:
        echo_json({"records": [r.to_json() for r in stored],
                   "pending": [r.to_json() for r in waiting]})
        return
    for label, records in (("", stored), (" (pending: not yet in the CMS)", waiting)):
        for r in records:
            args = " ".join(f"{k}={v}" for k, v in r.args.items() if v not in (None, False))
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.at))
            tail = f": {r.reason}" if r.reason else ""
            click.echo(f"{when}  {r.who:<24} {r.command} {args}  -> {r.result}{tail} "
                       f"({r.seconds:.2f} s){label}")
