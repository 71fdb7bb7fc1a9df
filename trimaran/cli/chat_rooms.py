"""`trimaran chat category|room|member ...`: an administrator's changes to the chat
rooms of a running deployment, straight in the chat pool's current store (SPEC PC-1).

    chat category add NAME [--description TEXT] --dir RUNDIR
    chat category list --dir RUNDIR [--json]
    chat room add NAME --category C --kind open|closed|secret --manager AOR [--description T]
    chat room list [--category C] --dir RUNDIR [--json]
    chat room disable NAME / enable NAME
    chat member add ROOM AOR [--role member|manager]
    chat member remove ROOM AOR

The store is the one the chat servers use now: the primary data center's pair, or
after ``chat failover`` the promoted copy (the CMS ``chat`` document says which).
Users change rooms through the chat API instead, under the rules; an administrator is
not bound by them (a room's first manager is named here).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

from trimaran.chat.model import Category, Membership, Role, Room, RoomKind
from trimaran.chat.rules import ChatRefused
from trimaran.chat.store import ChatStore, ChatStoreError
from trimaran.cli.common import dir_option, echo_json, fail, json_option, open_rundir
from trimaran.cms.chatdoc import (
    ChatMode,
    ChatStateError,
    ChatStateRefused,
    chat_pool,
    document_in,
    state_of,
)
from trimaran.deploy.chatdb import chat_dsn
from trimaran.deploy.dr import Deployment, DrError
from trimaran.topology.loader import load_topology
from trimaran.topology.model import PoolRole, Topology

T = TypeVar("T")

pool_option = click.option("--pool", default=None,
                           help="The chat pool (default: the deployment's only one).")


def _mode(topology: Topology, rundir: str | None, pool: str) -> ChatMode:
    """The pool's mode per the CMS (normal when the CMS cannot be asked)."""
    try:
        _, snapshot = Deployment(open_rundir(rundir)).cms_master()
    except (DrError, OSError):
        return ChatMode.NORMAL
    found = document_in(snapshot)
    try:
        return state_of(topology, found[0] if found else None).of(pool).mode
    except (ChatStateError, KeyError):
        return ChatMode.NORMAL


def _run(rundir: str | None, pool: str | None,
         work: Callable[[ChatStore], Awaitable[T]]) -> T:
    run = open_rundir(rundir)
    topology = load_topology(run.topology)
    pools = [p.name for p in topology.pools if p.role is PoolRole.CHAT]
    if pool is None:
        if len(pools) != 1:
            fail(f"name the chat pool with --pool (chat pools: {', '.join(pools) or 'none'})")
        pool = pools[0]
    try:
        chat_pool(topology, pool)
    except ChatStateRefused as exc:
        fail(exc.reason)
    dsn = chat_dsn(topology, pool, _mode(topology, rundir, pool))

    async def go() -> T:
        store = ChatStore(dsn, connect_timeout=5.0, retry_for=5.0)
        try:
            await store.open()
            return await work(store)
        finally:
            await store.close()
    try:
        return asyncio.run(go())
    except ChatRefused as exc:
        fail(exc.reason)
    except ChatStoreError as exc:
        fail(f"chat store of {pool}: {exc}")


def add_room_commands(chat: click.Group) -> None:
    """Add the category, room and member commands to the `chat` group."""

    @chat.group()
    def category() -> None:
        """Chat room categories."""

    @category.command("add")
    @click.argument("name")
    @click.option("--description", default="")
    @pool_option
    @dir_option
    def category_add(name: str, description: str, pool: str | None, rundir: str | None) -> None:
        """Create a category."""
        _run(rundir, pool, lambda s: s.add_category(Category(name, description)))
        click.echo(f"category {name} added")

    @category.command("list")
    @pool_option
    @dir_option
    @json_option
    def category_list(pool: str | None, rundir: str | None, as_json: bool) -> None:
        """The categories."""
        found = _run(rundir, pool, lambda s: s.categories())
        rows = [{"name": c.name, "description": c.description} for c in found]
        if as_json:
            echo_json(rows)
            return
        for row in rows:
            click.echo(f"{row['name']}\t{row['description']}")

    @chat.group()
    def room() -> None:
        """Chat rooms."""

    @room.command("add")
    @click.argument("name")
    @click.option("--category", required=True)
    @click.option("--kind", type=click.Choice([k.value for k in RoomKind]), default="open",
                  show_default=True)
    @click.option("--manager", required=True, help="The room's first manager (an AOR).")
    @click.option("--description", default="")
    @pool_option
    @dir_option
    def room_add(name: str, category: str, kind: str, manager: str, description: str,
                 pool: str | None, rundir: str | None) -> None:
        """Create a room managed by --manager."""
        new = Room(name, category, RoomKind(kind), description, created_at=time.time())
        _run(rundir, pool, lambda s: s.create_room(new, manager))
        click.echo(f"room {name} ({kind}) added, managed by {manager}")

    @room.command("list")
    @click.option("--category", default=None)
    @pool_option
    @dir_option
    @json_option
    def room_list(category: str | None, pool: str | None, rundir: str | None,
                  as_json: bool) -> None:
        """Every room (secret ones included: this is the administrator's view)."""
        async def work(store: ChatStore) -> list[dict[str, Any]]:
            rooms = await store.rooms(category)
            seqs = await store.last_seqs([r.name for r in rooms])
            return [{"name": r.name, "category": r.category, "kind": r.kind.value,
                     "disabled": r.disabled, "messages": seqs.get(r.name, 0)} for r in rooms]
        rows = _run(rundir, pool, work)
        if as_json:
            echo_json(rows)
            return
        for row in rows:
            flag = " (disabled)" if row["disabled"] else ""
            click.echo(f"{row['name']}\t{row['category']}\t{row['kind']}\t"
                       f"{row['messages']} messages{flag}")

    for verb, disabled in (("disable", True), ("enable", False)):
        def toggle(name: str, pool: str | None, rundir: str | None,
                   _disabled: bool = disabled, _verb: str = verb) -> None:
            _run(rundir, pool, lambda s: s.set_disabled(name, _disabled))
            click.echo(f"room {name} {_verb}d")
        toggle.__doc__ = f"{verb.capitalize()} a room (its history stays readable)."
        room.command(verb)(click.argument("name")(pool_option(dir_option(toggle))))

    @chat.group()
    def member() -> None:
        """Room members and managers."""

    @member.command("add")
    @click.argument("room_name", metavar="ROOM")
    @click.argument("user")
    @click.option("--role", type=click.Choice([r.value for r in Role]), default="member",
                  show_default=True)
    @pool_option
    @dir_option
    def member_add(room_name: str, user: str, role: str, pool: str | None,
                   rundir: str | None) -> None:
        """Add USER (an AOR) to ROOM, or change its role."""
        _run(rundir, pool, lambda s: s.add_member(Membership(room_name, user, Role(role))))
        click.echo(f"{user} is a {role} of {room_name}")

    @member.command("remove")
    @click.argument("room_name", metavar="ROOM")
    @click.argument("user")
    @pool_option
    @dir_option
    def member_remove(room_name: str, user: str, pool: str | None, rundir: str | None) -> None:
        """Remove USER from ROOM."""
        removed = _run(rundir, pool, lambda s: s.remove_member(room_name, user))
        click.echo(f"{user} removed from {room_name}" if removed
                   else f"{user} was not a member of {room_name}")
