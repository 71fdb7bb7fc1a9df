"""What the SQLite backend adds to the store contract: the file, its journal, the worker,
error mapping, and atomicity proven by a failure injected into the change-log append."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from tests.store.conftest import (
    POOL,
    add_user,
    aor,
    make_binding,
    make_credentials,
    make_publication,
    make_user,
)
from trimaran.store import (
    Conflict,
    ContactEntry,
    ContactGroup,
    ContactList,
    Meeting,
    PresenceRule,
    SqliteStore,
    Store,
    StoreError,
    StoreUnavailable,
)
from trimaran.store.sqlite import LATEST_VERSION


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Store]:
    """An open SQLite store in tmp_path/pool.sqlite."""
    async with SqliteStore(tmp_path / "pool.sqlite", pool=POOL) as store:
        yield store


@contextlib.contextmanager
def side_connection(path: Path) -> Iterator[sqlite3.Connection]:
    """A second connection to the database file, as another process would have."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


async def test_open_creates_the_file_and_its_directory_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "pool.sqlite"
    async with SqliteStore(path, pool=POOL) as store:
        await add_user(store, "alice")
        assert path.exists()
    with side_connection(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT aor FROM users").fetchall() == [(aor("alice"),)]


async def test_a_memory_store_works_for_tests(tmp_path: Path) -> None:
    async with SqliteStore(":memory:", pool=POOL) as store:
        user = await add_user(store, "alice")
        assert await store.users.get(aor("alice")) == user
        assert await store.schema_version() == LATEST_VERSION


async def test_close_is_idempotent_and_lets_queued_writes_finish(tmp_path: Path) -> None:
    path = tmp_path / "pool.sqlite"
    store = SqliteStore(path, pool=POOL)
    await store.open()
    tasks = [asyncio.create_task(add_user(store, f"u{i}")) for i in range(50)]
    await asyncio.sleep(0)                      # every task has handed its write to the worker
    await asyncio.gather(store.close(), store.close())
    await store.close()
    await asyncio.gather(*tasks)                # all of them committed
    async with SqliteStore(path, pool=POOL) as reopened:
        assert len(await reopened.users.list()) == 50


async def test_a_closed_or_unopened_store_is_unavailable(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "pool.sqlite", pool=POOL)
    with pytest.raises(StoreUnavailable):
        await store.users.get(aor("alice"))
    await store.open()
    await store.open()                          # opening twice is harmless
    await store.close()
    with pytest.raises(StoreUnavailable):
        await add_user(store, "alice")
    await store.open()                          # and it can be opened again
    await add_user(store, "alice")
    closing = asyncio.create_task(store.close())
    await asyncio.sleep(0)
    await store.open()                          # even while the close is under way
    await closing
    assert await store.users.get(aor("alice")) is not None
    await store.close()


async def test_a_file_that_is_not_a_database_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "pool.sqlite"
    path.write_bytes(b"this is not a SQLite database, just some text " * 100)
    store = SqliteStore(path, pool=POOL)
    with pytest.raises(StoreError, match=r"pool\.sqlite") as info:
        await store.open()
    assert not isinstance(info.value, sqlite3.Error)
    with pytest.raises(StoreUnavailable):
        await store.users.list()


async def test_a_locked_database_is_unavailable_not_a_raw_sqlite_error(tmp_path: Path) -> None:
    path = tmp_path / "pool.sqlite"
    async with SqliteStore(path, pool=POOL, busy_timeout=0.05) as store:
        with side_connection(path) as other:
            other.execute("BEGIN EXCLUSIVE")
            with pytest.raises(StoreUnavailable, match="locked"):
                await add_user(store, "alice")
            other.execute("ROLLBACK")
        await add_user(store, "alice")          # retryable: works once the lock is gone


async def test_no_raw_sqlite_error_escapes_a_repository(sqlite_store: Store,
                                                        tmp_path: Path) -> None:
    with side_connection(tmp_path / "pool.sqlite") as other:
        other.execute("DROP TABLE meetings")
    with pytest.raises(StoreError) as info:
        await sqlite_store.meetings.get("m1")
    assert not isinstance(info.value, sqlite3.Error)
    assert isinstance(info.value.__cause__, sqlite3.Error)


async def test_a_value_sqlite_cannot_store_is_a_store_error(sqlite_store: Store) -> None:
    huge = make_binding("alice", "sip:alice@h", cseq=2**70)
    with pytest.raises(StoreError):
        await sqlite_store.bindings.apply(aor("alice"), upsert=[huge], remove=[], now=1.0)
    with pytest.raises(StoreError):
        await sqlite_store.meetings.put(Meeting("m\ud800", aor("alice")), now=1.0)
    assert await sqlite_store.changes.last_seq() == 0


# --- atomicity: the data write and its change-log row commit together ------------------

INJECT = ("CREATE TRIGGER fail_change_log BEFORE INSERT ON change_log "
          "BEGIN SELECT RAISE(ABORT, 'injected failure'); END")


async def _prepare(store: Store) -> None:
    await add_user(store, "alice")
    await store.contacts.put(ContactList(aor("alice"), (ContactGroup("g"),)), now=1.0)
    await store.presence.set_rule(PresenceRule(aor("alice"), "*", "allow"), now=1.0)
    await store.presence.publish(make_publication("alice", "e1"), replaces=None, now=1.0)
    await store.meetings.put(Meeting("m1", aor("alice"), "old"), now=1.0)


def _logged_writes(store: Store) -> dict[str, Callable[[], Awaitable[object]]]:
    return {
        "users.add": lambda: add_user(store, "bob"),
        "users.remove": lambda: store.users.remove(aor("alice"), now=2.0),
        "users.set_credentials": lambda: store.users.set_credentials(
            make_credentials("alice", secret="9"), now=2.0),
        "contacts.put": lambda: store.contacts.put(ContactList(aor("alice"), (), (
            ContactEntry(aor("bob")),)), now=2.0),
        "presence.set_rule": lambda: store.presence.set_rule(
            PresenceRule(aor("alice"), "*", "block"), now=2.0),
        "presence.remove_rule": lambda: store.presence.remove_rule(aor("alice"), "*",
                                                                   now=2.0),
        "presence.publish": lambda: store.presence.publish(
            make_publication("alice", "e2"), replaces="e1", now=2.0),
        "presence.unpublish": lambda: store.presence.unpublish(aor("alice"), "e1", now=2.0),
        "meetings.put": lambda: store.meetings.put(Meeting("m1", aor("alice"), "new"),
                                                   now=2.0),
        "meetings.remove": lambda: store.meetings.remove("m1", now=2.0),
    }


async def _snapshot(store: Store) -> tuple[object, ...]:
    return (await store.users.list(), await store.users.credentials("alice", "example.com"),
            await store.contacts.get(aor("alice")), await store.presence.rules(aor("alice")),
            await store.presence.publications(aor("alice"), "presence", now=1.0),
            await store.meetings.by_organizer(aor("alice")), await store.changes.since(0))


LOGGED_OPERATIONS = (
    "users.add", "users.remove", "users.set_credentials", "contacts.put",
    "presence.set_rule", "presence.remove_rule", "presence.publish", "presence.unpublish",
    "meetings.put", "meetings.remove")


@pytest.mark.parametrize("operation", LOGGED_OPERATIONS)
async def test_a_failing_change_log_append_undoes_the_data_write(
        sqlite_store: Store, tmp_path: Path, operation: str) -> None:
    await _prepare(sqlite_store)
    assert set(_logged_writes(sqlite_store)) == set(LOGGED_OPERATIONS)
    before = await _snapshot(sqlite_store)
    last_seq = await sqlite_store.changes.last_seq()
    with side_connection(tmp_path / "pool.sqlite") as other:
        other.execute(INJECT)
    with pytest.raises(StoreError, match="injected failure"):
        await _logged_writes(sqlite_store)[operation]()
    assert await _snapshot(sqlite_store) == before
    with side_connection(tmp_path / "pool.sqlite") as other:
        other.execute("DROP TRIGGER fail_change_log")
    await _logged_writes(sqlite_store)[operation]()      # the same write then goes through
    assert await sqlite_store.changes.last_seq() > last_seq


# --- secrets ---------------------------------------------------------------------------


async def test_credentials_never_show_their_secrets(sqlite_store: Store) -> None:
    creds = make_credentials("alice", secret="f")
    await sqlite_store.users.add(make_user("alice"), creds, now=1.0)
    found = await sqlite_store.users.credentials("alice", "example.com")
    assert found == creds
    for text in (repr(found), str(found), repr([found])):
        assert "f" * 32 not in text
    with pytest.raises(Conflict) as info:
        await sqlite_store.users.add(make_user("bob"), make_credentials("bob", username="alice",
                                                                        secret="e"), now=2.0)
    assert "e" * 32 not in str(info.value)
