"""Schema migrations: the versioned mechanism (trimaran.store.migrations) with the SQLite
driver, and the SQLite store's use of it."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.store.conftest import POOL, add_user, aor
from trimaran.store import Migration, SchemaError, SchemaTooNew, SqliteStore, StoreError
from trimaran.store.migrations import check_sequence, latest_version, migrate, pending, split_sql
from trimaran.store.sqlite import LATEST_VERSION
from trimaran.store.sqlite_schema import MIGRATIONS, SqliteMigrationDriver

SqlMigration = Migration[sqlite3.Connection]

BASE: list[SqlMigration] = [
    Migration(1, "table a", "CREATE TABLE a (x INTEGER); INSERT INTO a VALUES (1);"),
    Migration(2, "table b", "CREATE TABLE b (y TEXT NOT NULL)"),
]


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """An autocommit connection to a new database file."""
    c = sqlite3.connect(tmp_path / "m.sqlite", isolation_level=None)
    try:
        yield c
    finally:
        c.close()


def tables(conn: sqlite3.Connection) -> set[str]:
    """The user tables of the database."""
    return {r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")}


def recorded(conn: sqlite3.Connection) -> list[tuple[int, str]]:
    """The rows of schema_version."""
    return conn.execute("SELECT version, description FROM schema_version ORDER BY version"
                        ).fetchall()


def test_a_new_database_gets_every_migration_in_order(conn: sqlite3.Connection) -> None:
    assert migrate(SqliteMigrationDriver(conn), BASE) == [1, 2]
    assert tables(conn) == {"schema_version", "a", "b"}
    assert recorded(conn) == [(1, "table a"), (2, "table b")]
    assert conn.execute("SELECT x FROM a").fetchall() == [(1,)]


def test_an_up_to_date_database_gets_nothing(conn: sqlite3.Connection) -> None:
    migrate(SqliteMigrationDriver(conn), BASE)
    assert migrate(SqliteMigrationDriver(conn), BASE) == []
    assert conn.execute("SELECT x FROM a").fetchall() == [(1,)]   # not run twice


def test_only_the_new_migrations_are_applied_to_an_older_database(
        conn: sqlite3.Connection) -> None:
    migrate(SqliteMigrationDriver(conn), BASE[:1])
    assert migrate(SqliteMigrationDriver(conn), BASE) == [2]
    assert SqliteMigrationDriver(conn).applied_version() == 2


def test_a_callable_step_runs_inside_the_migration_transaction(
        conn: sqlite3.Connection) -> None:
    def backfill(c: sqlite3.Connection) -> None:
        assert c.in_transaction
        c.execute("UPDATE a SET x = x + 41")

    migrate(SqliteMigrationDriver(conn), [*BASE, Migration(3, "backfill a", backfill)])
    assert conn.execute("SELECT x FROM a").fetchall() == [(42,)]


def test_a_failing_migration_leaves_the_previous_version_intact(
        conn: sqlite3.Connection) -> None:
    broken: SqlMigration = Migration(
        2, "half broken", "CREATE TABLE b (y TEXT); INSERT INTO nowhere VALUES (1)")
    with pytest.raises(sqlite3.OperationalError):
        migrate(SqliteMigrationDriver(conn), [BASE[0], broken])
    assert tables(conn) == {"schema_version", "a"}      # CREATE TABLE b rolled back
    assert recorded(conn) == [(1, "table a")]
    assert not conn.in_transaction
    assert migrate(SqliteMigrationDriver(conn), BASE) == [2]


def test_a_failing_callable_rolls_back_its_migration(conn: sqlite3.Connection) -> None:
    def explode(c: sqlite3.Connection) -> None:
        c.execute("CREATE TABLE c (z)")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        migrate(SqliteMigrationDriver(conn), [*BASE, Migration(3, "explodes", explode)])
    assert tables(conn) == {"schema_version", "a", "b"}
    assert SqliteMigrationDriver(conn).applied_version() == 2


def test_a_database_newer_than_the_code_is_refused(conn: sqlite3.Connection) -> None:
    migrate(SqliteMigrationDriver(conn), [*BASE, Migration(3, "from the future", "SELECT 1")])
    with pytest.raises(SchemaTooNew, match=r"version 3 .* up to 2") as info:
        migrate(SqliteMigrationDriver(conn), BASE)
    assert isinstance(info.value, StoreError)
    assert "newer Trimaran" in str(info.value)


def test_a_migration_applied_meanwhile_by_another_process_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    first = sqlite3.connect(path, isolation_level=None)
    second = sqlite3.connect(path, isolation_level=None)
    try:
        slow = SqliteMigrationDriver(first)
        assert slow.applied_version() == 0
        migrate(SqliteMigrationDriver(second), BASE)   # the other process wins the race
        assert slow.apply(BASE[0]) is False
        assert slow.apply(BASE[1]) is False
        assert recorded(first) == [(1, "table a"), (2, "table b")]
    finally:
        first.close()
        second.close()


@pytest.mark.parametrize("migrations,problem", [
    ([Migration(2, "two", "")], "expected 1"),
    ([Migration(1, "one", ""), Migration(3, "three", "")], "expected 2"),
    ([Migration(1, "one", ""), Migration(1, "again", "")], "expected 2"),
    ([Migration(1, " ", "")], "no description"),
])
def test_migration_lists_must_be_numbered_1_2_3_with_descriptions(
        migrations: list[SqlMigration], problem: str) -> None:
    with pytest.raises(SchemaError, match=problem):
        check_sequence(migrations)


def test_pending_and_latest_version() -> None:
    assert latest_version([]) == 0
    assert latest_version(BASE) == 2
    assert pending(BASE, 0) == BASE
    assert pending(BASE, 1) == BASE[1:]
    assert pending(BASE, 2) == []
    with pytest.raises(SchemaError):
        pending(BASE, -1)


def test_the_driver_needs_an_autocommit_connection(tmp_path: Path) -> None:
    c = sqlite3.connect(tmp_path / "x.sqlite")
    try:
        with pytest.raises(SchemaError, match="isolation_level"):
            SqliteMigrationDriver(c)
    finally:
        c.close()


def test_split_sql_knows_strings_comments_and_triggers() -> None:
    script = """
        -- a comment; with a semicolon
        CREATE TABLE t (x TEXT DEFAULT 'a;b');
        CREATE TRIGGER tr AFTER INSERT ON t BEGIN
            UPDATE t SET x = 'c;d'; DELETE FROM t WHERE x = '';
        END;
        INSERT INTO t VALUES ('e');   -- trailing comment
    """
    statements = split_sql(script, sqlite3.complete_statement)
    assert len(statements) == 3
    assert statements[1].startswith("CREATE TRIGGER") and statements[1].endswith("END;")
    with pytest.raises(SchemaError, match="incomplete"):
        split_sql("CREATE TABLE t (x); SELECT 'unterminated", sqlite3.complete_statement)


# --- the SQLite store's schema ---------------------------------------------------------


def test_the_sqlite_schema_is_a_valid_migration_list() -> None:
    check_sequence(MIGRATIONS)
    assert LATEST_VERSION == latest_version(MIGRATIONS) >= 1


async def test_a_new_store_is_at_the_latest_version_and_reopening_applies_nothing(
        tmp_path: Path) -> None:
    path = tmp_path / "pool.sqlite"
    async with SqliteStore(path, pool=POOL) as store:
        assert await store.schema_version() == LATEST_VERSION
        assert store.applied_migrations == tuple(range(1, LATEST_VERSION + 1))
        await add_user(store, "alice")
    async with SqliteStore(path, pool=POOL) as store:
        assert store.applied_migrations == ()
        assert await store.schema_version() == LATEST_VERSION
        assert await store.users.get(aor("alice")) is not None


async def test_a_store_written_by_a_newer_trimaran_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pool.sqlite"
    async with SqliteStore(path, pool=POOL):
        pass
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("INSERT INTO schema_version VALUES (?, 'from the future')", (LATEST_VERSION + 1,))
    c.close()
    store = SqliteStore(path, pool=POOL)
    with pytest.raises(SchemaTooNew, match=f"version {LATEST_VERSION + 1}"):
        await store.open()
    await store.close()                       # harmless: the failed open left nothing open


async def test_a_version_1_store_is_upgraded_keeping_its_data(tmp_path: Path) -> None:
    path = tmp_path / "pool.sqlite"
    c = sqlite3.connect(path, isolation_level=None)
    try:
        assert migrate(SqliteMigrationDriver(c), MIGRATIONS[:1]) == [1]
        c.execute("INSERT INTO meetings (id, organizer, created_at) VALUES ('m1', 'o', 1.0)")
    finally:
        c.close()
    async with SqliteStore(path, pool=POOL) as store:
        assert store.applied_migrations == tuple(range(2, LATEST_VERSION + 1))
        assert await store.schema_version() == LATEST_VERSION
        assert await store.meetings.get("m1") is not None
        assert await store.cms.version() == 0
        assert (await store.meetings.attach("m1", "a.txt", b"a", now=2.0)).size == 1
        assert (await store.cms.put("k", "v", now=2.0)).version == 1
        assert (await store.backup.progress("fe2")).seq == 0
