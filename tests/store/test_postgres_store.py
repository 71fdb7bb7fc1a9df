"""What the PostgreSQL backend adds to the store contract: multi-host connection strings,
outages and restarts under a running store (SPEC BE-8, FE-7), concurrent Front Ends on
one database, migrations, read-only servers, the retry rules, atomicity and errors.

The contract itself runs against PostgreSQL through the `backend` fixture; these tests
use the session's server (`pg_server`), restarting it where they say so.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest

from tests.store.conftest import (
    POOL,
    add_user,
    admin_execute,
    aor,
    free_port,
    fresh_database,
    make_binding,
    make_credentials,
    make_publication,
)
from trimaran.backend import PgInstance
from trimaran.store import (
    Conflict,
    ContactEntry,
    ContactGroup,
    ContactList,
    Meeting,
    PostgresStore,
    PresenceRule,
    SchemaTooNew,
    Store,
    StoreError,
    StoreUnavailable,
    decode_change,
)
from trimaran.store.postgres import LATEST_VERSION
from trimaran.store.postgres_errors import Retryable, split_hosts, translate
from trimaran.store.postgres_schema import MIGRATIONS

# --- helpers ---------------------------------------------------------------------------


@pytest.fixture
async def pg_db(pg_server: PgInstance) -> AsyncIterator[str]:
    """The URL of a fresh database on the session's server."""
    async with fresh_database(pg_server) as dsn:
        yield dsn


def pg_store(dsn: str, **options: Any) -> PostgresStore:
    """A store with short timeouts, so outages show within a test's patience."""
    settings: dict[str, Any] = {"connect_timeout": 0.5, "command_timeout": 2.0,
                                "retry_for": 0.5}
    settings.update(options)
    return PostgresStore(dsn, pool=POOL, **settings)


def with_hosts(dsn: str, *hosts: str) -> str:
    """`dsn` with its host:port replaced by `hosts` (a multi-host URL when several)."""
    return re.sub(r"@[^/]*/", f"@{','.join(hosts)}/", dsn, count=1)


def host_of(server: PgInstance) -> str:
    return f"{server.host}:{server.port}"


def database_of(dsn: str) -> str:
    return dsn.rsplit("/", 1)[1].split("?", 1)[0]


async def fetch_value(dsn: str, sql: str, *args: object) -> Any:
    """One value read over a plain connection (not through the store)."""
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


@contextlib.contextmanager
def hung_host() -> Iterator[str]:
    """host:port of a listener that accepts TCP connections (in the kernel's backlog) and
    never answers: a server that hangs, or a host behind a black hole."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield f"127.0.0.1:{s.getsockname()[1]}"


async def timed(call: Awaitable[object]) -> tuple[BaseException | None, float]:
    """Await `call`; the exception it raised (or None) and how long it took."""
    started = time.monotonic()
    try:
        await call
    except BaseException as exc:  # noqa: BLE001 - handed to the test to assert on
        return exc, time.monotonic() - started
    return None, time.monotonic() - started


# --- connecting ------------------------------------------------------------------------


async def test_open_without_any_reachable_host_is_unavailable_within_its_timeout() -> None:
    dead = f"postgresql://trimaran@127.0.0.1:{free_port()}/trimaran"
    store = pg_store(dead, connect_timeout=0.5)
    error, took = await timed(store.open())
    assert isinstance(error, StoreUnavailable), error
    assert took < 3.0
    with pytest.raises(StoreUnavailable):          # and nothing is half-open
        await store.users.get(aor("alice"))


async def test_a_dead_or_hung_first_host_is_skipped_for_the_live_one(
        pg_server: PgInstance, pg_db: str) -> None:
    """BE-8: the connection string names principal and mirror; a host that refuses or
    never answers costs at most its connect timeout, then the next one is used."""
    with hung_host() as hung:
        for first in (f"127.0.0.1:{free_port()}", hung):
            dsn = with_hosts(pg_db, first, host_of(pg_server))
            started = time.monotonic()
            async with pg_store(dsn, connect_timeout=0.5) as store:
                await add_user(store, f"u{first.rsplit(':', 1)[1]}")
            assert time.monotonic() - started < 5.0
    assert await fetch_value(pg_db, "SELECT count(*) FROM users") == 2


# --- outages ---------------------------------------------------------------------------


@pytest.mark.parametrize("outage", ["stop", "kill"])
async def test_calls_are_unavailable_while_the_database_is_down_and_work_again_after(
        pg_server: PgInstance, pg_db: str, outage: str) -> None:
    """FE-7/BE-8: while the Back End is away every call fails, within a bounded time and
    only with StoreUnavailable; once it is back the same store works again, unopened."""
    store = pg_store(pg_db)
    await store.open()
    try:
        await add_user(store, "alice")
        if outage == "stop":
            pg_server.stop(mode="fast")
        else:
            pg_server.kill()
        try:
            calls: list[Callable[[], Awaitable[object]]] = [
                lambda: store.users.get(aor("alice")),
                lambda: add_user(store, "bob"),
                lambda: store.bindings.apply(aor("alice"), upsert=[
                    make_binding("alice", "sip:alice@h")], remove=[], now=1.0),
                lambda: store.changes.since(0),
            ]
            for call in calls:
                error, took = await timed(call())
                assert isinstance(error, StoreUnavailable), repr(error)
                assert took < 4.0, f"{took:.1f} s"
        finally:
            pg_server.start()
        assert await store.users.get(aor("alice")) is not None
        await add_user(store, "bob")
        assert [u.aor for u in await store.users.list()] == [aor("alice"), aor("bob")]
    finally:
        await store.close()


async def test_an_operation_in_flight_rides_out_a_short_restart(
        pg_server: PgInstance, pg_db: str) -> None:
    """BE-8: an interrupted idempotent operation is retried until the database is back."""
    async with pg_store(pg_db, retry_for=15.0) as store:
        await add_user(store, "alice")
        pg_server.stop(mode="fast")
        try:
            reading = asyncio.create_task(store.users.get(aor("alice")))
            registering = asyncio.create_task(store.bindings.apply(
                aor("alice"), upsert=[make_binding("alice", "sip:alice@h")], remove=[],
                now=1.0))
            await asyncio.sleep(0.5)
            assert not reading.done() and not registering.done()
        finally:
            pg_server.start()
        assert await asyncio.wait_for(reading, 10) is not None
        assert len(await asyncio.wait_for(registering, 10)) == 1


# --- concurrency between Front End processes ---------------------------------------------


async def test_concurrent_applies_for_one_aor_from_two_front_ends_are_serialised(
        pg_db: str) -> None:
    """FE-4: two Front Ends (two pools of connections) registering contacts of the same
    AOR at once: no update is lost and each apply sees exactly the ones before it."""
    n = 15
    fe_a, fe_b = pg_store(pg_db, max_size=4), pg_store(pg_db, max_size=4)
    async with fe_a, fe_b:
        async def register(store: Store, i: int) -> int:
            b = make_binding("alice", f"sip:alice@10.0.0.{i}", expires_at=1000.0 + i)
            result = await store.bindings.apply(aor("alice"), upsert=[b], remove=[], now=1.0)
            assert b in result
            return len(result)

        sizes = await asyncio.gather(*(register(fe_a if i % 2 else fe_b, i)
                                       for i in range(2 * n)))
        assert sorted(sizes) == list(range(1, 2 * n + 1))   # a serial order exists
        assert len(await fe_a.bindings.for_aor(aor("alice"), now=1.0)) == 2 * n


async def test_concurrent_logged_writes_from_two_front_ends_keep_data_and_log_agreeing(
        pg_db: str) -> None:
    """DR-2: whatever the interleaving, a key's last change in the log is its data, and
    a race for a unique key is a Conflict for the loser, never a lost or doubled write."""
    fe_a, fe_b = pg_store(pg_db, max_size=4), pg_store(pg_db, max_size=4)
    async with fe_a, fe_b:
        results = await asyncio.gather(add_user(fe_a, "alice"), add_user(fe_b, "alice"),
                                       return_exceptions=True)
        assert sorted(type(r).__name__ for r in results) == ["Conflict", "User"]
        lists = [ContactList(aor("alice"), (ContactGroup(f"g{i}"),),
                             (ContactEntry(aor(f"c{i}"), groups=(f"g{i}",)),))
                 for i in range(12)]
        await asyncio.gather(*((fe_a if i % 2 else fe_b).contacts.put(cl, now=2.0)
                               for i, cl in enumerate(lists)))
        await asyncio.gather(*((fe_a if i % 2 else fe_b).users.set_credentials(
            make_credentials("alice", secret=str(i)), now=3.0) for i in range(10)))
        log = await fe_a.changes.since(0, limit=1000)
        assert [c.category for c in log].count("user") == 1
        last = {(c.category, c.key): c for c in log}
        assert decode_change(last["contacts", aor("alice")]) == \
            await fe_b.contacts.get(aor("alice"))
        assert decode_change(last["credentials", aor("alice")]) == \
            await fe_b.users.credentials("alice", "example.com")


async def test_migrations_are_applied_once_when_front_ends_open_a_new_database_at_once(
        pg_db: str) -> None:
    stores = [pg_store(pg_db, connect_timeout=5.0) for _ in range(3)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        # each migration applied by exactly one of them (which one may differ per step)
        applied = sorted(v for s in stores for v in s.applied_migrations)
        assert applied == list(range(1, LATEST_VERSION + 1))
        assert [await s.schema_version() for s in stores] == [LATEST_VERSION] * 3
        assert await fetch_value(pg_db, "SELECT count(*) FROM schema_version") == \
            LATEST_VERSION
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def test_a_version_1_database_is_upgraded_keeping_its_data(pg_db: str) -> None:
    conn = await asyncpg.connect(pg_db)
    try:
        step = MIGRATIONS[0].step
        assert isinstance(step, str)
        await conn.execute(step)
        await conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, "
                           "description TEXT NOT NULL)")
        await conn.execute("INSERT INTO schema_version VALUES (1, $1)",
                           MIGRATIONS[0].description)
        await conn.execute("INSERT INTO meetings (id, organizer, created_at) "
                           "VALUES ('m1', 'o', 1.0)")
    finally:
        await conn.close()
    async with pg_store(pg_db) as store:
        assert store.applied_migrations == tuple(range(2, LATEST_VERSION + 1))
        assert await store.schema_version() == LATEST_VERSION
        assert await store.meetings.get("m1") is not None
        assert await store.cms.version() == 0
        assert (await store.meetings.attach("m1", "a.txt", b"a", now=2.0)).size == 1
        assert (await store.cms.put("k", "v", now=2.0)).version == 1
        assert (await store.backup.progress("fe2")).seq == 0


async def test_a_database_written_by_a_newer_trimaran_is_refused(pg_db: str) -> None:
    async with pg_store(pg_db) as store:
        await add_user(store, "alice")
    conn = await asyncpg.connect(pg_db)
    try:
        await conn.execute("INSERT INTO schema_version VALUES (99, 'from the future')")
    finally:
        await conn.close()
    store = pg_store(pg_db)
    with pytest.raises(SchemaTooNew, match="99"):
        await store.open()
    with pytest.raises(StoreUnavailable):
        await store.users.get(aor("alice"))


# --- read-only servers -------------------------------------------------------------------


async def test_a_server_turned_read_only_gets_no_writes_and_the_store_recovers(
        pg_server: PgInstance, pg_db: str) -> None:
    """BE-3: a fenced principal (read-only) refuses writes; the store never overrides that
    and goes back to writing once a read-write server is there, without reopening."""
    name = database_of(pg_db)
    read_write = pg_store(pg_db)                                    # the default
    any_server = pg_store(f"{pg_db}?target_session_attrs=any")      # even read-only ones
    async with read_write, any_server:
        await add_user(read_write, "alice")
        await admin_execute(pg_server, f'ALTER DATABASE "{name}" '
                                       "SET default_transaction_read_only = on")
        await admin_execute(pg_server, "SELECT pg_terminate_backend(pid) FROM "
                            "pg_stat_activity WHERE datname = $1", name)
        try:
            assert await any_server.users.get(aor("alice")) is not None   # reads work
            with pytest.raises(StoreUnavailable, match="read-only"):
                await add_user(any_server, "bob")
            with pytest.raises(StoreUnavailable, match="target attribute"):
                await add_user(read_write, "bob")
        finally:
            await admin_execute(pg_server, f'ALTER DATABASE "{name}" '
                                           "RESET default_transaction_read_only")
        await add_user(read_write, "bob")
        await add_user(any_server, "carol")
    assert await fetch_value(pg_db, "SELECT count(*) FROM users") == 3


@pytest.fixture(scope="module")
def pg_standby(pg_server: PgInstance) -> Iterator[PgInstance]:
    """A hot standby streaming from the session's server."""
    base = Path(tempfile.mkdtemp(prefix="trimaran-pg-standby-"))
    base.chmod(0o711)
    standby = PgInstance(base / "data", "127.0.0.1", free_port(), durable=False)
    try:
        standby.clone_from(pg_server.host, pg_server.port)
        standby.start(timeout=60)
        yield standby
    finally:
        standby.stop(mode="immediate")
        shutil.rmtree(base, ignore_errors=True)


async def test_a_hot_standby_is_never_used_for_writes(
        pg_server: PgInstance, pg_standby: PgInstance, pg_db: str) -> None:
    """BE-8: with the standby listed first, writes go to the principal; a store that may
    only reach the standby reads but gets StoreUnavailable for every write."""
    async with pg_store(with_hosts(pg_db, host_of(pg_standby), host_of(pg_server))) as store:
        await add_user(store, "alice")
    written = await fetch_value(pg_db, "SELECT pg_current_wal_lsn()::text")
    deadline = time.monotonic() + 10
    while not await fetch_value(pg_standby.dsn,
                                "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn", written):
        assert time.monotonic() < deadline, "the standby did not replay the write"
        await asyncio.sleep(0.05)
    on_standby = with_hosts(pg_db, host_of(pg_standby))

    with pytest.raises(StoreUnavailable, match="target attribute"):
        await pg_store(on_standby).open()
    async with pg_store(f"{on_standby}?target_session_attrs=any") as store:
        assert await store.users.get(aor("alice")) is not None
        with pytest.raises(StoreUnavailable, match=r"read-only|recovery"):
            await add_user(store, "bob")
        with pytest.raises(StoreUnavailable, match=r"read-only|recovery"):
            await store.bindings.apply(aor("alice"), upsert=[
                make_binding("alice", "sip:alice@h")], remove=[], now=1.0)


# --- the retry rules -------------------------------------------------------------------

SLOW_COMMIT = """
CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS
  $$ BEGIN PERFORM pg_sleep(0.4); RETURN NULL; END $$;
CREATE CONSTRAINT TRIGGER slow_users AFTER INSERT ON users
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit();
CREATE CONSTRAINT TRIGGER slow_bindings AFTER INSERT OR UPDATE ON bindings
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit();
"""


async def cut_off_during_commit(dsn: str) -> None:
    """Wait until a backend of `dsn`'s database runs COMMIT, then terminate it."""
    deadline = time.monotonic() + 5
    while True:
        pid = await fetch_value(
            dsn, "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND query = 'COMMIT' AND state = 'active' AND pid <> pg_backend_pid()")
        if pid is not None:
            await fetch_value(dsn, "SELECT pg_terminate_backend($1)", pid)
            return
        assert time.monotonic() < deadline, "no COMMIT seen"
        await asyncio.sleep(0.02)


async def test_a_commit_cut_off_is_not_retried_for_a_logged_write(pg_db: str) -> None:
    """A connection lost during COMMIT leaves the outcome unknown: users.add is not run
    again (it would log twice or fail with Conflict) but reports StoreUnavailable at once."""
    async with pg_store(pg_db, retry_for=10.0) as store:
        conn = await asyncpg.connect(pg_db)
        try:
            await conn.execute(SLOW_COMMIT)
        finally:
            await conn.close()
        adding = asyncio.create_task(timed(add_user(store, "alice")))
        await cut_off_during_commit(pg_db)
        error, took = await adding
        assert isinstance(error, StoreUnavailable) and "may or may not" in str(error), error
        assert took < 5.0                                   # not retried for 10 s
        assert await store.users.get(aor("alice")) is None  # killed before its commit
        assert await store.changes.last_seq() == 0


async def test_a_commit_cut_off_is_retried_for_an_idempotent_write(pg_db: str) -> None:
    async with pg_store(pg_db, retry_for=10.0) as store:
        conn = await asyncpg.connect(pg_db)
        try:
            await conn.execute(SLOW_COMMIT)
        finally:
            await conn.close()
        b = make_binding("alice", "sip:alice@h")
        applying = asyncio.create_task(store.bindings.apply(aor("alice"), upsert=[b],
                                                            remove=[], now=1.0))
        await cut_off_during_commit(pg_db)
        assert await asyncio.wait_for(applying, 10) == [b]
        assert await store.bindings.for_aor(aor("alice"), now=1.0) == [b]


@pytest.mark.parametrize("error,committing,expected", [
    (asyncpg.UniqueViolationError("dup"), False, Conflict),
    (asyncpg.ForeignKeyViolationError("fk"), False, Conflict),
    (asyncpg.CheckViolationError("check"), True, Conflict),
    (asyncpg.NotNullViolationError("null"), False, Conflict),
    (asyncpg.SerializationError("serialization"), True, "retry"),
    (asyncpg.DeadlockDetectedError("deadlock"), False, "retry"),
    (asyncpg.ReadOnlySQLTransactionError("read-only"), False, "retry"),
    (asyncpg.AdminShutdownError("shutdown"), False, "retry"),
    (asyncpg.AdminShutdownError("shutdown"), True, "unknown outcome"),
    (asyncpg.CannotConnectNowError("starting up"), False, "retry"),
    (asyncpg.ConnectionDoesNotExistError("gone"), True, "unknown outcome"),
    (ConnectionResetError("reset"), False, "retry"),
    (TimeoutError(), True, "unknown outcome"),
    (asyncpg.InvalidPasswordError("password"), False, StoreUnavailable),
    (asyncpg.CharacterNotInRepertoireError("NUL"), False, StoreError),
    (asyncpg.UndefinedTableError("no table"), False, StoreError),
], ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v))
def test_database_errors_map_to_store_errors_or_retries(
        error: BaseException, committing: bool, expected: object) -> None:
    """Serialisation failures and deadlocks never committed: retried even at COMMIT.
    A lost connection at COMMIT leaves the outcome unknown (retried only when idempotent)."""
    result = translate(error, "op", committing=committing)
    if expected == "retry":
        assert isinstance(result, Retryable) and not result.ambiguous
    elif expected == "unknown outcome":
        assert isinstance(result, Retryable) and result.ambiguous
    else:
        assert type(result) is expected
        assert "op" in str(result)


def test_a_multi_host_url_is_split_into_one_url_per_host_in_order() -> None:
    dsn = "postgresql://u:p%40ss@h1:5432,h2:5433,[::1]:5434/db?target_session_attrs=read-write"
    assert split_hosts(dsn) == [
        "postgresql://u:p%40ss@h1:5432/db?target_session_attrs=read-write",
        "postgresql://u:p%40ss@h2:5433/db?target_session_attrs=read-write",
        "postgresql://u:p%40ss@[::1]:5434/db?target_session_attrs=read-write"]
    assert split_hosts("postgresql://u@h1:5432/db") == ["postgresql://u@h1:5432/db"]
    assert split_hosts("host=h1 dbname=db") == ["host=h1 dbname=db"]
    shown = repr(PostgresStore(dsn, pool=POOL))          # never the password
    assert shown == "PostgresStore('h1:5432,h2:5433,[::1]:5434', pool='fe1')"


# --- atomicity, errors, lifecycle ----------------------------------------------------------

INJECT = """
CREATE FUNCTION fail_change_log() RETURNS trigger LANGUAGE plpgsql AS
  $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$;
CREATE TRIGGER fail_change_log BEFORE INSERT ON change_log
  FOR EACH ROW EXECUTE FUNCTION fail_change_log();
"""


async def test_a_failing_change_log_append_undoes_every_logged_write(pg_db: str) -> None:
    async with pg_store(pg_db) as store:
        await add_user(store, "alice")
        await store.contacts.put(ContactList(aor("alice"), (ContactGroup("g"),)), now=1.0)
        await store.presence.set_rule(PresenceRule(aor("alice"), "*", "allow"), now=1.0)
        await store.presence.publish(make_publication("alice", "e1"), replaces=None, now=1.0)
        await store.meetings.put(Meeting("m1", aor("alice"), "old"), now=1.0)

        async def snapshot() -> tuple[object, ...]:
            return (await store.users.list(),
                    await store.users.credentials("alice", "example.com"),
                    await store.contacts.get(aor("alice")),
                    await store.presence.rules(aor("alice")),
                    await store.presence.publications(aor("alice"), "presence", now=1.0),
                    await store.meetings.by_organizer(aor("alice")),
                    await store.changes.since(0))

        writes: list[Callable[[], Awaitable[object]]] = [
            lambda: add_user(store, "bob"),
            lambda: store.users.remove(aor("alice"), now=2.0),
            lambda: store.users.set_credentials(make_credentials("alice", secret="9"), now=2.0),
            lambda: store.contacts.put(ContactList(aor("alice"), (), (
                ContactEntry(aor("bob")),)), now=2.0),
            lambda: store.presence.set_rule(PresenceRule(aor("alice"), "*", "block"), now=2.0),
            lambda: store.presence.remove_rule(aor("alice"), "*", now=2.0),
            lambda: store.presence.publish(make_publication("alice", "e2"), replaces="e1",
                                           now=2.0),
            lambda: store.presence.unpublish(aor("alice"), "e1", now=2.0),
            lambda: store.meetings.put(Meeting("m1", aor("alice"), "new"), now=2.0),
            lambda: store.meetings.remove("m1", now=2.0),
        ]
        before = await snapshot()
        conn = await asyncpg.connect(pg_db)
        try:
            await conn.execute(INJECT)
        finally:
            await conn.close()
        for write in writes:
            with pytest.raises(StoreError, match="injected failure") as info:
                await write()
            assert not isinstance(info.value, StoreUnavailable)     # not retryable
            assert await snapshot() == before


async def test_values_postgres_cannot_store_are_store_errors(pg_db: str) -> None:
    async with pg_store(pg_db) as store:
        with pytest.raises(StoreError) as info:
            await store.bindings.apply(aor("alice"), upsert=[
                make_binding("alice", "sip:alice@h", cseq=2**70)], remove=[], now=1.0)
        assert not isinstance(info.value, StoreUnavailable)
        for subject in ("m\ud800", "nul\x00"):
            with pytest.raises(StoreError) as info:
                await store.meetings.put(Meeting("m1", aor("alice"), subject), now=1.0)
            assert not isinstance(info.value, StoreUnavailable)
        assert await store.changes.last_seq() == 0
        assert await store.meetings.get("m1") is None


async def test_a_closed_or_unopened_store_is_unavailable_and_close_lets_writes_finish(
        pg_db: str) -> None:
    store = pg_store(pg_db)
    with pytest.raises(StoreUnavailable):
        await store.users.get(aor("alice"))
    await store.open()
    await store.open()                          # opening twice is harmless
    tasks = [asyncio.create_task(add_user(store, f"u{i:02}")) for i in range(30)]
    await asyncio.sleep(0)                      # every write has started
    await asyncio.gather(store.close(), store.close())
    await asyncio.gather(*tasks)                # and all of them committed
    with pytest.raises(StoreUnavailable):
        await add_user(store, "alice")
    await store.open()                          # it can be opened again
    try:
        assert len(await store.users.list()) == 30
    finally:
        await store.close()
    await store.close()
