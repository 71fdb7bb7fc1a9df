"""Persistent Chat as real processes (SPEC PC-1..PC-4): rooms over SIP and HTTP, a chat
server killed under posting load, the store's principal killed, the whole primary data
center lost and recovered with `chat failover` / `chat failback`.

The tests share one deployment (`tests.chat.deployment`) and run in file order: each
leaves it healthy for the next.
"""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chat.deployment import DC1_CHAT, DC2_CHAT, Chat, PostLoad, running_chat
from tests.integration.drpair import DOMAIN, wait_for
from trimaran.client.chat import ChatError, ChatMember

pytestmark = [
    pytest.mark.timeout(600),
    pytest.mark.skipif(not Path("/usr/lib/postgresql").exists(),
                       reason="PostgreSQL server binaries missing (./run installs them)"),
]

USERS = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi")


def aor(name: str) -> str:
    return f"sip:{name}@{DOMAIN}"


@pytest.fixture(scope="module")
def chat() -> Iterator[Chat]:
    tmp = Path(tempfile.mkdtemp(prefix="trimaran-chat-"))
    with running_chat(tmp) as deployment:
        deployment.add_users(*USERS)
        deployment.cli("chat", "category", "add", "teams")
        deployment.cli("chat", "room", "add", "ops", "--category", "teams", "--kind", "closed",
                       "--manager", aor("alice"))
        deployment.cli("chat", "room", "add", "lobby", "--category", "teams", "--kind", "open",
                       "--manager", aor("alice"))
        yield deployment


async def _members(chat: Chat, *names: str) -> list[ChatMember]:
    return [await chat.member(name) for name in names]


async def _all_ids(member: ChatMember, room: str) -> dict[str, int]:
    return {m.id: m.seq for m in await member.everything(room)}


async def _received(member: ChatMember, predicate: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        message = await member.next_message(max(0.1, deadline - time.monotonic()))
        if predicate(message):
            return message


async def test_rooms_membership_posting_history_and_search_over_real_sockets(
        chat: Chat) -> None:
    try:
        alice, bob, dave = await _members(chat, "alice", "bob", "dave")
        # membership of a closed room: only its manager adds members
        with pytest.raises(ChatError) as refused:
            await dave.request("PUT", f"/rooms/ops/members/{aor('dave')}", {"role": "member"})
        assert refused.value.status == 403
        await alice.request("PUT", f"/rooms/ops/members/{aor('bob')}", {"role": "member"})
        # a post over SIP, delivered to the other connected member, on any server
        seq = await bob.post("ops", "deploy at noon")
        got = await _received(alice, lambda m: m.room == "ops" and m.seq == seq)
        assert (got.author, got.body) == (aor("bob"), "deploy at noon")
        # a non-member may neither post to nor read a closed room; unknown rooms 404
        with pytest.raises(ChatError) as refused:
            await dave.post("ops", "let me in")
        assert refused.value.status == 403
        with pytest.raises(ChatError) as refused:
            await dave.history("ops")
        assert refused.value.status == 403
        with pytest.raises(ChatError) as refused:
            await dave.post("no such room", "hello")
        assert refused.value.status == 404
        # paging: 120 posts, read back 50 at a time, each exactly once, in order
        seqs = [await bob.post("ops", f"line {i} of the runbook") for i in range(120)]
        assert seqs == list(range(seq + 1, seq + 121))
        pages, before = [], None
        while True:
            page = await alice.history("ops", before=before, limit=50)
            if not page:
                break
            pages.extend(page)
            before = page[-1].seq
        assert [m.seq for m in pages] == list(range(seq + 120, 0, -1))
        found = await alice.search("runbook", room="ops")
        assert found and all("runbook" in m.body for m in found)
        assert await dave.search("runbook") == []       # not readable by him
        # an open room: anyone posts (and joins), everyone connected hears it
        lobby = await dave.post("lobby", "hello lobby")
        assert lobby == 1
    finally:
        await chat.close_members()


async def test_active_servers_take_new_connections_and_the_others_keep_theirs(
        chat: Chat) -> None:
    alice = await chat.member("alice")
    for name in ("carol", "erin", "frank", "grace", "heidi"):
        await alice.request("PUT", f"/rooms/ops/members/{aor(name)}", {"role": "member"})
    try:
        members = await _members(chat, "bob", "carol", "erin", "frank")
        kept = [m for m in members if m.server == "pc3"] or members[:1]
        leaving = kept[0].server
        assert leaving is not None
        others = [s for s in DC1_CHAT if s != leaving]
        chat.cli("chat", "active-servers", "set", "pchat", *others)
        await wait_for(lambda: _inactive(chat, leaving), 10, f"{leaving} inactive")
        # new connections go to the active servers only
        for name in ("grace", "heidi"):
            newcomer = await chat.member(name)
            assert newcomer.server in others, newcomer.server
        # a connection the inactive server holds goes on: it still delivers
        seq = await alice.post("ops", "to everyone, old connections too")
        for member in kept:
            assert member.server == leaving
            await _received(member, lambda m, s=seq: m.seq == s)
    finally:
        await chat.close_members()
        chat.cli("chat", "active-servers", "set", "pchat", *DC1_CHAT)


async def _inactive(chat: Chat, server: str) -> bool:
    return chat.status(server)["active"] is False


async def test_killing_an_active_chat_server_under_posting_load_loses_no_post(
        chat: Chat) -> None:
    names = ("bob", "carol", "erin", "frank", "grace", "heidi")
    alice = await chat.member("alice")
    for name in names:
        await alice.request("PUT", f"/rooms/ops/members/{aor(name)}", {"role": "member"})
    members = await _members(chat, *names)
    try:
        by_server: dict[str, list[ChatMember]] = {}
        for member in members:
            assert member.server in DC1_CHAT, member.server
            by_server.setdefault(member.server, []).append(member)
        victim = max(by_server, key=lambda s: len(by_server[s]))
        moved = by_server[victim]
        load = PostLoad(members, "ops")
        load.start()
        await asyncio.sleep(2)
        chat.cli("server", "kill", victim)
        killed_at = time.monotonic()
        await wait_for(lambda: _all_moved(moved, victim), 20,
                       f"members of {victim} on another active server")
        moved_after = time.monotonic() - killed_at
        await asyncio.sleep(2)
        await load.stop()
        print(f"\n{victim} killed: {len(moved)} members moved in {moved_after:.1f} s; "
              f"{len(load.acked)} posts acknowledged, {len(load.failures)} failed attempts")
        assert all(m.server in DC1_CHAT and m.server != victim for m in moved)
        stored = await _all_ids(alice, "ops")
        lost = [p.id for p in load.acked if p.id not in stored]
        assert lost == [], f"acknowledged posts lost: {lost[:5]}"
        assert all(stored[p.id] == p.seq for p in load.acked)
        # the moved members hear new posts on their new server
        seq = await alice.post("ops", "after the failure")
        for member in moved:
            await _received(member, lambda m, s=seq: m.seq == s)
    finally:
        await chat.close_members()
        chat.cli("server", "start", victim)


async def _all_moved(moved: list[ChatMember], victim: str) -> bool:
    return all(m.server != victim for m in moved)


async def test_killing_the_store_principal_loses_no_acknowledged_post(chat: Chat) -> None:
    status = chat.cli_json("chat", "status")
    principal = _principal_name(status)
    members = await _members(chat, "bob", "carol", "erin")
    try:
        load = PostLoad(members, "ops")
        load.start()
        await asyncio.sleep(2)
        pid = int((chat.rundir / "db" / principal / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)
        killed_at = time.time()
        await wait_for(lambda: _acked_after(load, killed_at), 30, "posts acknowledged again")
        await asyncio.sleep(1)
        await load.stop()
        resumed = min(p.acked for p in load.acked if p.started > killed_at) - killed_at
        print(f"\nprincipal {principal} killed: posts acknowledged again after {resumed:.1f} s; "
              f"{len(load.acked)} acknowledged")
        stored = await _all_ids(members[0], "ops")
        lost = [p.id for p in load.acked if p.id not in stored]
        assert lost == [], f"acknowledged posts lost: {lost[:5]}"
        assert _principal_name(chat.cli_json("chat", "status")) != principal
    finally:
        await chat.close_members()


async def _acked_after(load: PostLoad, moment: float) -> bool:
    return any(p.started > moment for p in load.acked)


def _principal_name(status: Any) -> str:
    pool = status["pools"][0]
    for instance in pool["store"]["pair"]:
        if instance.get("role") == "principal":
            return str(instance["name"])
    raise AssertionError(f"no principal in {pool['store']}")


async def test_losing_the_primary_data_center_then_failing_back(chat: Chat) -> None:
    members = await _members(chat, "bob", "carol", "erin", "frank")
    try:
        await wait_for(lambda: _synchronous_and_shipping(chat), 60, "pair synchronous, shipping")
        load = PostLoad(members, "ops")
        load.start()
        await asyncio.sleep(3)
        shown = chat.cli_json("chat", "status")["pools"][0]["shipping"]
        chat.cli("site", "fail", "dc1")
        failed_at = time.time()
        await load.stop()
        chat.cli("cms", "failover", "--disaster")
        report = chat.cli_json("chat", "failover")
        print(f"\nshipping lag shown before the failure: {shown}; failover report: {report}")
        lag = float(report["lag_at_failure"]["seconds"] or 0.0)
        # every post acknowledged more than the shown lag before the failure is there
        for member in members:
            await member.reconnect()
            assert member.server in DC2_CHAT, member.server
        stored = await _all_ids(members[0], "ops")
        bound = failed_at - lag - 1.0          # 1 s: the lag is sampled every second
        lost = [p.id for p in load.acked if p.acked < bound and p.id not in stored]
        assert lost == [], f"posts acknowledged before {bound} lost: {lost[:5]}"
        during = PostLoad(members[:2], "ops")
        during.start()
        await asyncio.sleep(2)
        await during.stop()
        assert during.acked, during.failures[:3]
        # failback: the primary data center comes back with the posts made meanwhile
        chat.cli("site", "restore", "dc1")
        back = chat.cli_json("chat", "failback")
        print(f"failback report: {back}")
        for member in members:
            await member.reconnect()
            assert member.server in DC1_CHAT, member.server
        stored = await _all_ids(members[0], "ops")
        lost = [p.id for p in during.acked if p.id not in stored]
        assert lost == [], f"posts made during the failover lost: {lost[:5]}"
        status = chat.cli_json("chat", "status")["pools"][0]
        assert status["mode"] == "normal"
        await wait_for(lambda: _synchronous_and_shipping(chat), 60, "shipping again")
    finally:
        await chat.close_members()


async def _synchronous_and_shipping(chat: Chat) -> bool:
    pool = (await asyncio.to_thread(chat.cli_json, "chat", "status"))["pools"][0]
    shipping = pool.get("shipping") or {}
    return shipping.get("bytes") == 0 and bool(pool["store"].get("synchronous"))

