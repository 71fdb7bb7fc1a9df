"""`trimaran user add|list|remove|contacts|unlock`: users live in their home pool's store.

A user's account lockout (OPS-6) is a row of the store of the pool that counted the
failures: `user unlock` clears it in every Front End pool and SBA (or `--pool`), so
whichever server the user signs in to next lets them in; `user list` shows who is
locked.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click

from trimaran.cli.common import dir_option, echo_json, fail, json_option, open_rundir
from trimaran.deploy import database
from trimaran.deploy.rundir import RunDir
from trimaran.sip import digest
from trimaran.sip.errors import SipParseError
from trimaran.sip.uri import URI
from trimaran.store.base import Conflict, NotFound, Store, StoreError
from trimaran.store.model import Credentials, Lockout, User
from trimaran.topology.loader import load_topology
from trimaran.topology.model import PoolRole, Topology

T = TypeVar("T")
E164 = re.compile(r"\+[1-9][0-9]{6,14}\Z")


def frontend_pools(topology: Topology) -> list[str]:
    """Names of the deployment's Front End pools."""
    return [p.name for p in topology.pools if p.role is PoolRole.FRONTEND]


def pool_store(rundir: RunDir, topology: Topology, pool: str) -> Store:
    """The store of a Front End pool, or a refusal naming the pools there are."""
    try:
        return database.pool_store(rundir, topology, pool)
    except LookupError as exc:
        fail(str(exc))


def with_store(store: Store, action: Callable[[Store], Awaitable[T]]) -> T:
    """Open the store, run `action`, close it; store errors become refusals."""
    async def run() -> T:
        await store.open()
        try:
            return await action(store)
        finally:
            await store.close()
    try:
        return asyncio.run(run())
    except StoreError as exc:
        fail(str(exc))


def canonical_aor(text: str, domain: str) -> URI:
    """Parse a user URI (`sip:alice@domain` or `alice`), refusing other domains."""
    if ":" not in text:
        text = f"sip:{text}@{domain}"
    try:
        uri = URI.parse(text)
    except SipParseError as exc:
        fail(f"{text!r} is not a SIP URI: {exc.reason}")
    if uri.scheme != "sip" or not uri.user:
        fail(f"{text!r}: a user URI looks like sip:alice@{domain}")
    if uri.host.lower() != domain.lower():
        fail(f"{text!r}: users of this deployment are in the domain {domain}")
    return uri


def context(rundir: str | None) -> tuple[RunDir, Topology]:
    """The run directory and its topology."""
    run = open_rundir(rundir)
    if not run.topology.exists():
        fail(f"{run.path} has no topology.yaml; start a deployment with `trimaran up` first")
    return run, load_topology(run.topology)


def refuse_while_failed_over(run: RunDir, pool: str) -> None:
    """Users are added and removed on their home pool only while it serves them: a
    failed-over pool's store is fenced (DR-7), and what it writes then is replaced by
    the backup pool's copy at failback."""
    from trimaran.deploy.dr import Deployment, DrError
    try:
        _, records = Deployment(run).records()
    except (DrError, OSError, ValueError):
        return          # the deployment is not running: nothing is failed over
    record = records.get(pool)
    if record is not None and record[0].state != "normal":
        fail(f"pool {pool} is {record[0].state} to {record[0].backup} (term "
             f"{record[0].term}): add or remove its users after `trimaran pool failback "
             f"{pool}`")


def choose_pool(topology: Topology, pool: str | None) -> str:
    """`--pool`, or the only Front End pool; refuses when ambiguous."""
    pools = frontend_pools(topology)
    if pool is not None:
        return pool
    if len(pools) != 1:
        fail(f"this deployment has several Front End pools ({', '.join(pools)}); "
             "say which with --pool")
    return pools[0]


@click.group()
def user() -> None:
    """Manage users (stored in their home pool)."""


@user.command("add")
@click.argument("uri")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True,
              help="the user's password (prompted when omitted); only its hashes are kept")
@click.option("--pool", default=None, help="home pool (default: the only Front End pool)")
@click.option("--number", default=None, help="E.164 phone number, e.g. +15551230001")
@click.option("--name", "display_name", default="", help="display name")
@dir_option
def user_add(uri: str, password: str, pool: str | None, number: str | None,
             display_name: str, rundir: str | None) -> None:
    """Create a user homed on a pool."""
    run, topology = context(rundir)
    aor = canonical_aor(uri, topology.sip_domain)
    home = choose_pool(topology, pool)
    refuse_while_failed_over(run, home)
    if number is not None and not E164.match(number):
        fail(f"--number {number!r} is not an E.164 number (+ and 7 to 15 digits)")
    if not password:
        fail("--password must not be empty")
    realm = topology.sip_domain
    username = aor.user or ""
    creds = Credentials(aor.aor, username, realm,
                        digest.ha1(username, realm, password, "MD5"),
                        digest.ha1(username, realm, password, "SHA-256"))

    async def add(store: Store) -> None:
        try:
            await store.users.add(User(aor.aor, home, display_name, number), creds,
                                  now=time.time())
        except Conflict:
            taken = f" (or number {number} is taken)" if number else ""
            fail(f"user {aor.aor} already exists{taken}")

    with_store(pool_store(run, topology, home), add)
    click.echo(f"user {aor.aor} added to pool {home}")


@user.command("remove")
@click.argument("uri")
@click.option("--pool", default=None)
@dir_option
def user_remove(uri: str, pool: str | None, rundir: str | None) -> None:
    """Delete a user with their contact list and presence data."""
    run, topology = context(rundir)
    aor = canonical_aor(uri, topology.sip_domain)
    home = choose_pool(topology, pool)
    refuse_while_failed_over(run, home)

    async def remove(store: Store) -> None:
        try:
            await store.users.remove(aor.aor, now=time.time())
        except NotFound:
            fail(f"no user {aor.aor} in pool {home}")

    with_store(pool_store(run, topology, home), remove)
    click.echo(f"user {aor.aor} removed")


def user_pools(topology: Topology) -> list[str]:
    """The pools that keep users: the Front End pools, then the SBAs."""
    return frontend_pools(topology) + [p.name for p in topology.pools
                                       if p.role is PoolRole.SBA]


def _lister(pool: str, now: float) -> Callable[[Store], Awaitable[tuple[list[User],
                                                                         list[Lockout]]]]:
    async def list_pool(store: Store) -> tuple[list[User], list[Lockout]]:
        return await store.users.list(pool), await store.lockouts.locked(now=now)
    return list_pool


@user.command("list")
@click.option("--pool", default=None, help="only this pool")
@dir_option
@json_option
def user_list(pool: str | None, rundir: str | None, as_json: bool) -> None:
    """List users of every Front End pool (or one)."""
    run, topology = context(rundir)
    pools = [pool] if pool else user_pools(topology)
    now = time.time()
    users: list[User] = []
    locked: dict[str, float] = {}         # AOR -> until when (the latest of any pool)
    for name in pools:
        listed, lockouts = with_store(pool_store(run, topology, name), _lister(name, now))
        users += listed
        for lockout in lockouts:
            locked[lockout.aor] = max(locked.get(lockout.aor, 0.0), lockout.locked_until)
    if as_json:
        echo_json([{"aor": u.aor, "pool": u.pool, "name": u.display_name,
                    "number": u.number, "enabled": u.enabled,
                    "locked_until": locked.get(u.aor)} for u in users])
        return
    for u in users:
        lock = f"locked until {time.strftime('%H:%M:%S', time.localtime(locked[u.aor]))}" \
            if u.aor in locked else ""
        click.echo(f"{u.aor:<36} {u.pool:<10} {u.number or '':<16} {lock:<21} "
                   f"{u.display_name}".rstrip())


@user.command("contacts")
@click.argument("uri")
@click.option("--pool", default=None)
@dir_option
@json_option
def user_contacts(uri: str, pool: str | None, rundir: str | None, as_json: bool) -> None:
    """Show a user's contact list (groups and contacts)."""
    run, topology = context(rundir)
    aor = canonical_aor(uri, topology.sip_domain)
    home = choose_pool(topology, pool)
    contact_list = with_store(pool_store(run, topology, home),
                              lambda s: s.contacts.get(aor.aor))
    if as_json:
        echo_json({"owner": contact_list.owner,
                   "groups": [g.name for g in contact_list.groups],
                   "contacts": [{"uri": c.uri, "name": c.display_name,
                                 "groups": list(c.groups)} for c in contact_list.contacts]})
        return
    click.echo(f"contact list of {aor.aor}:")
    for group in contact_list.groups:
        click.echo(f"  [{group.name}]")
        for c in contact_list.contacts:
            if group.name in c.groups:
                click.echo(f"    {c.uri}  {c.display_name}")
    for c in contact_list.contacts:
        if not c.groups:
            click.echo(f"  {c.uri}  {c.display_name}")


@user.command("unlock")
@click.argument("uri")
@click.option("--pool", default=None,
              help="only this pool's store (default: every Front End pool and SBA)")
@dir_option
def user_unlock(uri: str, pool: str | None, rundir: str | None) -> None:
    """Lift a user's account lockout and forget their failed authentications (OPS-6)."""
    run, topology = context(rundir)
    aor = canonical_aor(uri, topology.sip_domain).aor
    pools = [pool] if pool else user_pools(topology)
    now = time.time()
    known, unlocked, unreachable = [], [], []
    for name in pools:
        store = pool_store(run, topology, name)
        try:
            exists, was_locked = asyncio.run(_unlock(store, aor, now))
        except StoreError as exc:
            unreachable.append(name)
            click.echo(f"pool {name}: {exc}", err=True)
            continue
        if exists or was_locked:
            known.append(name)
        if was_locked:
            unlocked.append(name)
    if unlocked:
        click.echo(f"user {aor} unlocked (pool {', '.join(unlocked)})")
    elif known:
        click.echo(f"user {aor} was not locked")
    elif unreachable:
        fail(f"user {aor} not found in the pools reached; unreachable: "
             f"{', '.join(unreachable)}")
    else:
        fail(f"no user {aor} in pool {', '.join(pools)}")
    if unreachable:
        fail(f"pool {', '.join(unreachable)} could not be reached: unlock again when it is "
             "back")


async def _unlock(store: Store, aor: str, now: float) -> tuple[bool, bool]:
    """(the user exists in this store, was locked there); the lock is cleared."""
    await store.open()
    try:
        exists = await store.users.get(aor) is not None
        return exists, await store.lockouts.unlock(aor, now=now)
    finally:
        await store.close()
