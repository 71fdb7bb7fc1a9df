"""The Persistent Chat store on a real PostgreSQL (SPEC PC-1): categories, rooms,
members and invitations; durable, gap-free, idempotent posting; history paging and
catching up; full-text search that respects who may read; survival of a crash."""

from __future__ import annotations

import asyncio

import asyncpg  # type: ignore[import-untyped]
import pytest

from tests.chat.conftest import CATEGORY, aor, message, room
from tests.store.conftest import free_port
from trimaran.backend import PgInstance
from trimaran.chat import (
    Category,
    ChatConflict,
    ChatNotFound,
    ChatRefused,
    ChatStore,
    ChatStoreUnavailable,
    Invitation,
    Membership,
    Message,
    Role,
    Room,
    RoomKind,
)
from trimaran.chat.schema import MIGRATIONS

# --- schema and connection ---------------------------------------------------------------


async def test_pc1_open_applies_the_chat_migrations_once(chat_dsn: str) -> None:
    first = ChatStore(chat_dsn)
    await first.open()
    await first.close()
    again = ChatStore(chat_dsn)
    await again.open()
    await again.close()
    assert first.applied_migrations == tuple(m.version for m in MIGRATIONS)
    assert again.applied_migrations == ()
    conn = await asyncpg.connect(chat_dsn)
    try:
        assert await conn.fetchval("SELECT max(version) FROM chat_schema_version") == \
            MIGRATIONS[-1].version
    finally:
        await conn.close()


async def test_pc1_unreachable_database_is_chat_store_unavailable() -> None:
    store = ChatStore(f"postgresql://trimaran@127.0.46.1:{free_port('127.0.46.1')}/chat",
                      connect_timeout=0.3)
    with pytest.raises(ChatStoreUnavailable):
        await store.open()
    with pytest.raises(ChatStoreUnavailable):
        await store.last_seq("lobby")


# --- categories, rooms, members, invitations ---------------------------------------------


async def test_pc1_categories_crud(chat: ChatStore) -> None:
    await chat.add_category(Category("projects", "work"))
    with pytest.raises(ChatConflict):
        await chat.add_category(Category("projects"))
    await chat.update_category(Category("projects", "all projects"))
    assert await chat.category("projects") == Category("projects", "all projects")
    assert [c.name for c in await chat.categories()] == [CATEGORY, "projects"]
    with pytest.raises(ChatNotFound):
        await chat.update_category(Category("nothing"))
    await chat.create_room(room("lobby"), aor("alice"))
    with pytest.raises(ChatConflict):
        await chat.remove_category(CATEGORY)
    assert await chat.remove_category("projects") is True
    assert await chat.remove_category("projects") is False
    with pytest.raises(ChatNotFound):
        await chat.category("projects")
    with pytest.raises(ChatRefused) as refused:
        await chat.add_category(Category("bad\x00name"))
    assert refused.value.status_hint == 400


async def test_pc1_room_creator_becomes_its_manager(chat: ChatStore) -> None:
    created = await chat.create_room(room("design", RoomKind.CLOSED), aor("alice"))
    assert await chat.room("design") == created
    assert await chat.role("design", aor("alice")) is Role.MANAGER
    assert await chat.members("design") == [Membership("design", aor("alice"), Role.MANAGER)]
    assert await chat.last_seq("design") == 0
    with pytest.raises(ChatConflict):
        await chat.create_room(room("design"), aor("bob"))
    with pytest.raises(ChatRefused) as refused:
        await chat.create_room(Room("x", "no-such", RoomKind.OPEN), aor("bob"))
    assert refused.value.status_hint == 404
    with pytest.raises(ChatNotFound):
        await chat.room("nothing")


async def test_pc1_rooms_are_changed_disabled_listed_and_deleted(chat: ChatStore) -> None:
    await chat.add_category(Category("projects"))
    await chat.create_room(room("a"), aor("alice"))
    await chat.create_room(room("b", RoomKind.SECRET), aor("alice"))
    changed = Room("a", "projects", RoomKind.CLOSED, "now closed", created_at=99.0)
    stored = await chat.update_room(changed)
    assert (stored.category, stored.kind, stored.description) == \
        ("projects", RoomKind.CLOSED, "now closed")
    assert stored.created_at == 1.0                       # creation time stays
    assert (await chat.set_disabled("a")).disabled
    assert not (await chat.set_disabled("a", False)).disabled
    assert [r.name for r in await chat.rooms()] == ["a", "b"]
    assert [r.name for r in await chat.rooms("projects")] == ["a"]
    await chat.post(message("b", "alice", "hello"))
    await chat.invite(Invitation("b", aor("bob"), aor("alice"), 5.0))
    assert await chat.delete_room("b") is True
    assert await chat.delete_room("b") is False
    assert await chat.invitations(user=aor("bob")) == []
    assert await chat.memberships(aor("alice")) == [Membership("a", aor("alice"),
                                                               Role.MANAGER)]
    with pytest.raises(ChatNotFound):
        await chat.set_disabled("b")
    with pytest.raises(ChatNotFound):
        await chat.update_room(room("b"))


async def test_pc1_memberships_crud(chat: ChatStore) -> None:
    await chat.create_room(room("team", RoomKind.CLOSED), aor("alice"))
    await chat.add_member(Membership("team", aor("bob")))
    await chat.add_member(Membership("team", aor("carol"), Role.MANAGER))
    await chat.add_member(Membership("team", aor("bob")))          # idempotent
    assert [(m.user, m.role) for m in await chat.members("team")] == [
        (aor("alice"), Role.MANAGER), (aor("bob"), Role.MEMBER), (aor("carol"), Role.MANAGER)]
    await chat.add_member(Membership("team", aor("carol"), Role.MEMBER))   # demoted
    assert await chat.role("team", aor("carol")) is Role.MEMBER
    assert await chat.remove_member("team", aor("bob")) is True
    assert await chat.remove_member("team", aor("bob")) is False
    assert await chat.role("team", aor("bob")) is None
    with pytest.raises(ChatNotFound):
        await chat.add_member(Membership("nothing", aor("bob")))
    with pytest.raises(ChatNotFound):
        await chat.members("nothing")


async def test_pc1_invitations_are_stored_accepted_and_withdrawn(chat: ChatStore) -> None:
    await chat.create_room(room("team", RoomKind.SECRET), aor("alice"))
    await chat.invite(Invitation("team", aor("bob"), aor("alice"), 5.0))
    await chat.invite(Invitation("team", aor("carol"), aor("alice"), 6.0))
    await chat.invite(Invitation("team", aor("bob"), aor("alice"), 7.0))     # renewed
    assert await chat.invitations(room="team") == [
        Invitation("team", aor("bob"), aor("alice"), 7.0),
        Invitation("team", aor("carol"), aor("alice"), 6.0)]
    assert await chat.accept_invitation("team", aor("bob")) == \
        Membership("team", aor("bob"), Role.MEMBER)
    assert await chat.role("team", aor("bob")) is Role.MEMBER
    with pytest.raises(ChatNotFound):
        await chat.accept_invitation("team", aor("bob"))
    assert await chat.withdraw_invitation("team", aor("carol")) is True
    assert await chat.withdraw_invitation("team", aor("carol")) is False
    assert await chat.invitations() == []
    with pytest.raises(ChatNotFound):
        await chat.invite(Invitation("nothing", aor("bob"), aor("alice"), 5.0))


# --- posting and history -----------------------------------------------------------------


async def test_pc1_history_pages_newest_first_without_gaps_or_duplicates(
        chat: ChatStore) -> None:
    await chat.create_room(room("lobby"), aor("alice"))
    for n in range(1, 121):
        posted = await chat.post(message("lobby", "alice", f"message {n}", at=float(n)))
        assert posted.seq == n
    pages, before = [], None
    while True:
        page = await chat.history("lobby", before_seq=before, limit=50)
        if not page:
            break
        pages.append(page)
        before = page[-1].seq
    assert [len(p) for p in pages] == [50, 50, 20]
    seqs = [m.seq for p in pages for m in p]
    assert seqs == list(range(120, 0, -1))
    assert pages[0][0].body == "message 120" and pages[-1][-1].body == "message 1"
    caught_up = await chat.after("lobby", 100, limit=50)
    assert [m.seq for m in caught_up] == list(range(101, 121))
    assert await chat.after("lobby", 120) == []
    assert await chat.last_seq("lobby") == 120
    with pytest.raises(ChatNotFound):
        await chat.history("nothing")
    with pytest.raises(ValueError):
        await chat.history("lobby", limit=0)


async def test_pc1_concurrent_posters_get_unique_gap_free_seqs(chat: ChatStore) -> None:
    await chat.create_room(room("busy"), aor("alice"))

    async def poster(n: int) -> list[int]:
        return [(await chat.post(message("busy", f"user{n}", f"from {n}: {i}"))).seq
                for i in range(5)]

    results = await asyncio.gather(*(poster(n) for n in range(20)))
    seqs = sorted(s for r in results for s in r)
    assert seqs == list(range(1, 101))
    for r in results:                       # each poster's messages are in its order
        assert r == sorted(r)
    stored = await chat.after("busy", 0, limit=1000)
    assert [m.seq for m in stored] == list(range(1, 101))
    assert await chat.last_seq("busy") == 100
    assert len(await chat.members("busy")) == 21            # they joined on first post


async def test_pc1_reposting_an_id_returns_the_first_message(chat: ChatStore) -> None:
    await chat.create_room(room("lobby"), aor("alice"))
    await chat.create_room(room("other"), aor("alice"))
    first = await chat.post(message("lobby", "alice", "once", msg_id="client-1"))
    await chat.post(message("lobby", "alice", "next"))
    again = await chat.post(message("lobby", "alice", "once (retry)", msg_id="client-1",
                                    at=99.0))
    assert again == first and again.seq == 1
    assert await chat.last_seq("lobby") == 2
    assert await chat.message("client-1") == first
    retries = await asyncio.gather(*(chat.post(message("lobby", "alice", "burst",
                                                        msg_id="client-2"))
                                     for _ in range(10)))
    assert {m.seq for m in retries} == {3}
    with pytest.raises(ChatConflict):       # the id of another room's message
        await chat.post(message("other", "alice", "once", msg_id="client-1"))
    assert await chat.last_seq("other") == 0


async def test_pc1_posting_follows_the_rules(chat: ChatStore) -> None:
    await chat.create_room(room("open"), aor("alice"))
    await chat.create_room(room("closed", RoomKind.CLOSED), aor("alice"))
    await chat.create_room(room("secret", RoomKind.SECRET), aor("alice"))

    async def refusal(room_name: str, who: str, body: str = "hi") -> int:
        with pytest.raises(ChatRefused) as refused:
            await chat.post(message(room_name, who, body))
        return refused.value.status_hint

    assert await refusal("closed", "bob") == 403
    assert await refusal("secret", "bob") == 404
    assert await refusal("nothing", "bob") == 404
    assert await refusal("open", "bob", "x" * (16 * 1024 + 1)) == 400
    assert await refusal("open", "bob", "bell\x07") == 400
    assert await chat.role("open", aor("bob")) is None
    await chat.post(message("open", "bob", "x" * 16 * 1024))
    assert await chat.role("open", aor("bob")) is Role.MEMBER          # joined
    await chat.add_member(Membership("closed", aor("bob")))
    assert (await chat.post(message("closed", "bob", "now I may"))).seq == 1
    await chat.set_disabled("closed")
    assert await refusal("closed", "bob") == 403
    assert await refusal("closed", "alice") == 403
    assert await chat.last_seq("closed") == 1


# --- search ------------------------------------------------------------------------------


async def test_pc1_search_finds_words_only_in_rooms_the_user_may_read(
        chat: ChatStore) -> None:
    await chat.create_room(room("open"), aor("alice"))
    await chat.create_room(room("closed", RoomKind.CLOSED), aor("alice"))
    await chat.create_room(room("secret", RoomKind.SECRET), aor("alice"))
    await chat.post(message("open", "alice", "The trimaran sails at dawn", at=1.0))
    await chat.post(message("open", "alice", "Lunch is at noon", at=2.0))
    await chat.post(message("closed", "alice", "trimaran budget approved", at=3.0))
    await chat.post(message("secret", "alice", "secret trimaran launch date", at=4.0))

    def bodies(found: list[Message]) -> list[str]:
        return [m.body for m in found]

    everything = await chat.search(None, "TRIMARAN", aor("alice"), limit=10)
    assert bodies(everything) == ["secret trimaran launch date", "trimaran budget approved",
                                  "The trimaran sails at dawn"]
    assert bodies(await chat.search(None, "trimaran", aor("bob"))) == \
        ["The trimaran sails at dawn"]
    assert bodies(await chat.search(None, "launch", aor("bob"))) == []
    assert bodies(await chat.search("open", '"sails at dawn"', aor("bob"))) == \
        ["The trimaran sails at dawn"]
    assert bodies(await chat.search("open", "trimaran -dawn", aor("bob"))) == []
    assert await chat.search(None, "   ", aor("bob")) == []
    for name, hint in (("secret", 404), ("closed", 403), ("nothing", 404)):
        with pytest.raises(ChatRefused) as refused:
            await chat.search(name, "trimaran", aor("bob"))
        assert refused.value.status_hint == hint
    await chat.add_member(Membership("secret", aor("bob")))
    assert bodies(await chat.search("secret", "launch", aor("bob"))) == \
        ["secret trimaran launch date"]


# --- durability --------------------------------------------------------------------------


async def test_pc1_every_acknowledged_post_survives_a_crash_of_the_database(
        chat: ChatStore, chat_dsn: str, chat_server: PgInstance) -> None:
    await chat.create_room(room("durable"), aor("alice"))
    acknowledged = await asyncio.gather(*(
        chat.post(message("durable", f"user{n % 5}", f"message {n}")) for n in range(40)))
    chat_server.kill()                      # SIGKILL: crash recovery on the next start
    with pytest.raises(ChatStoreUnavailable):
        await ChatStore(chat_dsn, connect_timeout=0.3, retry_for=0.0).open()
    chat_server.start(timeout=60)
    after_restart = await chat.after("durable", 0, limit=100)       # the pool reconnects
    assert after_restart == sorted(acknowledged, key=lambda m: m.seq)
    assert [m.seq for m in after_restart] == list(range(1, 41))
    fresh = ChatStore(chat_dsn)
    await fresh.open()
    try:
        assert await fresh.history("durable", limit=100) == after_restart[::-1]
        assert (await fresh.post(message("durable", "alice", "after"))).seq == 41
    finally:
        await fresh.close()
