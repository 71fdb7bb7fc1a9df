"""The Persistent Chat database schema, as migrations (SPEC PC-1).

The chat store lives in its own PostgreSQL database (mirrored and log-shipped on its
own, PC-3); its tables are prefixed ``chat_`` and its applied versions are kept in
``chat_schema_version``, so it may also share a database with the Front End store
without either mistaking the other's migrations for its own.

Tables: categories; rooms, each with ``last_seq``, the room's message counter (a post
locks the room row, takes ``last_seq + 1`` and writes it back in its transaction, so
sequence numbers are gap-free and in commit order); members and invitations (removed
with their room); messages, keyed by the client's id (the idempotency key), unique
per (room, seq), with a generated ``tsvector`` over the body in the 'simple'
configuration (no stemming, no stop words: chat is multilingual) and a GIN index on
it. Text keys compare bytewise (``COLLATE "C"``), as in the Front End store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from trimaran.chat.model import MAX_BODY_BYTES
from trimaran.store.base import StoreError
from trimaran.store.migrations import Migration, SchemaError, migrate
from trimaran.store.postgres_schema import PgMigrationConnection

log = logging.getLogger(__name__)

T = TypeVar("T")

VERSION_TABLE = "chat_schema_version"
#: Advisory lock serialising chat migrations between processes opening one database.
MIGRATION_LOCK = int.from_bytes(b"trimchat", "big")

_V1 = f"""
CREATE TABLE chat_categories (
    name        TEXT COLLATE "C" PRIMARY KEY,
    description TEXT NOT NULL DEFAULT ''
);

CREATE TABLE chat_rooms (
    name        TEXT COLLATE "C" PRIMARY KEY,
    category    TEXT COLLATE "C" NOT NULL
                REFERENCES chat_categories (name) ON DELETE RESTRICT,
    kind        TEXT NOT NULL CHECK (kind IN ('open', 'closed', 'secret')),
    description TEXT NOT NULL DEFAULT '',
    created_at  DOUBLE PRECISION NOT NULL CHECK (created_at <> 'NaN'),
    disabled    BOOLEAN NOT NULL DEFAULT FALSE,
    last_seq    BIGINT NOT NULL DEFAULT 0 CHECK (last_seq >= 0)
);
CREATE INDEX chat_rooms_category ON chat_rooms (category, name);

CREATE TABLE chat_members (
    room TEXT COLLATE "C" NOT NULL REFERENCES chat_rooms (name) ON DELETE CASCADE,
    aor  TEXT COLLATE "C" NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('member', 'manager')),
    PRIMARY KEY (room, aor)
);
CREATE INDEX chat_members_aor ON chat_members (aor, room);

CREATE TABLE chat_invitations (
    room       TEXT COLLATE "C" NOT NULL REFERENCES chat_rooms (name) ON DELETE CASCADE,
    aor        TEXT COLLATE "C" NOT NULL,
    invited_by TEXT COLLATE "C" NOT NULL,
    at         DOUBLE PRECISION NOT NULL CHECK (at <> 'NaN'),
    PRIMARY KEY (room, aor)
);
CREATE INDEX chat_invitations_aor ON chat_invitations (aor, room);

CREATE TABLE chat_messages (
    id        TEXT COLLATE "C" PRIMARY KEY,
    room      TEXT COLLATE "C" NOT NULL REFERENCES chat_rooms (name) ON DELETE CASCADE,
    seq       BIGINT NOT NULL CHECK (seq > 0),
    author    TEXT COLLATE "C" NOT NULL,
    body      TEXT NOT NULL CHECK (octet_length(body) <= {MAX_BODY_BYTES}),
    posted_at DOUBLE PRECISION NOT NULL CHECK (posted_at <> 'NaN'),
    body_tsv  tsvector GENERATED ALWAYS AS (to_tsvector('simple', body)) STORED,
    UNIQUE (room, seq)
);
CREATE INDEX chat_messages_tsv ON chat_messages USING GIN (body_tsv);
"""

#: The chat schema, oldest first. Append; never edit an entry once released.
_V2 = """
CREATE TABLE chat_heartbeats (
    server TEXT PRIMARY KEY,
    at DOUBLE PRECISION NOT NULL
);
"""

MIGRATIONS: tuple[Migration[PgMigrationConnection], ...] = (
    Migration(1, "chat categories, rooms, members, invitations, messages with full-text "
                 "search", _V1),
    Migration(2, "heartbeats of the chat servers (keep log shipping's replay time fresh)",
              _V2),
)


class ChatMigrationDriver:
    """Applies chat migrations, each with its ``chat_schema_version`` row in one
    transaction under `MIGRATION_LOCK` (outside any other transaction)."""

    def __init__(self, conn: PgMigrationConnection) -> None:
        self._conn = conn

    def applied_version(self) -> int:
        """The highest applied version (0 for a new database); creates the version table.
        Only reads when it exists, so an up-to-date database opens on a read-only
        server too."""
        conn = self._conn
        if conn.fetchval(f"SELECT to_regclass('{VERSION_TABLE}') IS NOT NULL"):
            return self._current()

        def create() -> int:
            conn.execute(f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} ("
                         "version INTEGER PRIMARY KEY, description TEXT NOT NULL)")
            return self._current()

        return self._locked(create)

    def apply(self, migration: Migration[PgMigrationConnection]) -> bool:
        """Run `migration` and record it in one transaction; False if already applied."""
        conn = self._conn

        def step() -> bool:
            current = self._current()
            if current >= migration.version:
                return False
            if current != migration.version - 1:
                raise SchemaError(f"cannot apply chat migration {migration.version} to a "
                                  f"database at version {current}")
            if isinstance(migration.step, str):
                conn.execute(migration.step)
            else:
                migration.step(conn)
            conn.execute(f"INSERT INTO {VERSION_TABLE} (version, description) VALUES ($1, $2)",
                         migration.version, migration.description)
            return True

        return self._locked(step)

    def _locked(self, work: Callable[[], T]) -> T:
        conn = self._conn
        conn.execute("BEGIN")
        try:
            conn.execute("SELECT pg_advisory_xact_lock($1::int8)", MIGRATION_LOCK)
            result = work()
            conn.execute("COMMIT")
        except BaseException:
            try:
                conn.execute("ROLLBACK")
            except StoreError as exc:
                log.warning("chat store: rolling back a migration failed: %s", exc)
            raise
        return result

    def _current(self) -> int:
        return int(self._conn.fetchval(
            f"SELECT COALESCE(MAX(version), 0) FROM {VERSION_TABLE}"))


async def apply_migrations(conn: Any) -> list[int]:
    """Bring the chat database behind `conn` (a bare asyncpg connection) to the latest
    version; the versions applied here."""
    sync = PgMigrationConnection(conn, asyncio.get_running_loop())
    return await asyncio.to_thread(migrate, ChatMigrationDriver(sync), MIGRATIONS)
