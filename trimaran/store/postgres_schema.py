"""The PostgreSQL schema (as migrations) and the PostgreSQL migration driver.

The schema is the SQLite one (`trimaran.store.sqlite_schema`) in PostgreSQL types:
BOOLEAN, BIGINT for 64-bit integers, DOUBLE PRECISION for times (NaN refused by a
CHECK, as SQLite refuses it by storing NULL in a NOT NULL column), BYTEA for bodies,
TEXT for JSON (payloads are the codec's exact text), and an identity column for the
change log's sequence number (never reused). Text is compared and ordered bytewise
(``COLLATE "C"``), as SQLite's BINARY collation does, whatever the database's locale.

`MigrationDriver` is synchronous (`migrate` is shared with SQLite); asyncpg is not.
`PgMigrationConnection` bridges the two: `migrate` runs in a worker thread and every
statement is sent to the event loop that owns the connection. Each migration, with
the row recording it, is one transaction under an advisory lock, so the Front End
processes of a pool opening the database at once apply it exactly once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from trimaran.store.base import StoreError
from trimaran.store.migrations import VERSION_TABLE, Migration, SchemaError
from trimaran.store.postgres_db import MIGRATION_LOCK, Record, connection_closed
from trimaran.store.postgres_errors import final_error

log = logging.getLogger(__name__)

T = TypeVar("T")

#: A migration statement may take this long (a big ALTER TABLE), lock wait included.
MIGRATION_TIMEOUT = 600.0

_V1 = """
-- Users of the pool and their digest secrets (HA1 per algorithm, never the password).
CREATE TABLE users (
    aor          TEXT COLLATE "C" PRIMARY KEY,
    pool         TEXT COLLATE "C" NOT NULL,
    display_name TEXT COLLATE "C" NOT NULL DEFAULT '',
    number       TEXT COLLATE "C" UNIQUE,
    enabled      BOOLEAN NOT NULL DEFAULT TRUE
);
CREATE INDEX users_pool ON users (pool, aor);

CREATE TABLE credentials (
    aor        TEXT COLLATE "C" PRIMARY KEY REFERENCES users (aor) ON DELETE CASCADE,
    username   TEXT COLLATE "C" NOT NULL,
    realm      TEXT COLLATE "C" NOT NULL,
    ha1_md5    TEXT COLLATE "C" NOT NULL,
    ha1_sha256 TEXT COLLATE "C" NOT NULL,
    UNIQUE (username, realm)
);

-- Registrations; key = Binding.key (instance-id|reg-id, else the contact URI).
CREATE TABLE bindings (
    aor         TEXT COLLATE "C" NOT NULL,
    key         TEXT COLLATE "C" NOT NULL,
    contact     TEXT COLLATE "C" NOT NULL,
    expires_at  DOUBLE PRECISION NOT NULL CHECK (expires_at <> 'NaN'),
    call_id     TEXT COLLATE "C" NOT NULL,
    cseq        BIGINT NOT NULL,
    server      TEXT COLLATE "C" NOT NULL,
    flow_id     TEXT COLLATE "C" NOT NULL DEFAULT '',
    source      TEXT COLLATE "C" NOT NULL DEFAULT '',
    instance_id TEXT COLLATE "C",
    reg_id      BIGINT,
    q           DOUBLE PRECISION NOT NULL DEFAULT 1.0 CHECK (q <> 'NaN'),
    params      TEXT COLLATE "C" NOT NULL DEFAULT '',
    PRIMARY KEY (aor, key)
);
CREATE INDEX bindings_server ON bindings (server, flow_id);
CREATE INDEX bindings_expires ON bindings (expires_at);

-- Contact lists: a row per written list, its groups and contacts (groups as a JSON
-- array of group names), in the order the owner gave them.
CREATE TABLE contact_lists (
    owner TEXT COLLATE "C" PRIMARY KEY
);
CREATE TABLE contact_groups (
    owner        TEXT COLLATE "C" NOT NULL REFERENCES contact_lists (owner) ON DELETE CASCADE,
    name         TEXT COLLATE "C" NOT NULL,
    display_name TEXT COLLATE "C" NOT NULL DEFAULT '',
    position     INTEGER NOT NULL,
    PRIMARY KEY (owner, name)
);
CREATE TABLE contacts (
    owner        TEXT COLLATE "C" NOT NULL REFERENCES contact_lists (owner) ON DELETE CASCADE,
    uri          TEXT COLLATE "C" NOT NULL,
    display_name TEXT COLLATE "C" NOT NULL DEFAULT '',
    group_names  TEXT COLLATE "C" NOT NULL DEFAULT '[]',
    position     INTEGER NOT NULL,
    PRIMARY KEY (owner, uri)
);
CREATE INDEX contacts_uri ON contacts (uri);

CREATE TABLE presence_rules (
    owner   TEXT COLLATE "C" NOT NULL,
    watcher TEXT COLLATE "C" NOT NULL,
    action  TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (owner, watcher)
);

CREATE TABLE publications (
    etag         TEXT COLLATE "C" PRIMARY KEY,
    aor          TEXT COLLATE "C" NOT NULL,
    event        TEXT COLLATE "C" NOT NULL,
    content_type TEXT COLLATE "C" NOT NULL,
    body         BYTEA NOT NULL,
    expires_at   DOUBLE PRECISION NOT NULL CHECK (expires_at <> 'NaN'),
    server       TEXT COLLATE "C" NOT NULL DEFAULT ''
);
CREATE INDEX publications_aor ON publications (aor, event);

CREATE TABLE subscriptions (
    id         TEXT COLLATE "C" PRIMARY KEY,
    subscriber TEXT COLLATE "C" NOT NULL,
    target     TEXT COLLATE "C" NOT NULL,
    event      TEXT COLLATE "C" NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL CHECK (expires_at <> 'NaN'),
    dialog     TEXT COLLATE "C" NOT NULL,
    server     TEXT COLLATE "C" NOT NULL DEFAULT ''
);
CREATE INDEX subscriptions_target ON subscriptions (target, event);

CREATE TABLE meetings (
    id         TEXT COLLATE "C" PRIMARY KEY,
    organizer  TEXT COLLATE "C" NOT NULL,
    subject    TEXT COLLATE "C" NOT NULL DEFAULT '',
    created_at DOUBLE PRECISION NOT NULL CHECK (created_at <> 'NaN'),
    expires_at DOUBLE PRECISION CHECK (expires_at <> 'NaN'),
    attendees  TEXT COLLATE "C" NOT NULL DEFAULT '[]'
);
CREATE INDEX meetings_organizer ON meetings (organizer);

CREATE TABLE heartbeats (
    server TEXT COLLATE "C" PRIMARY KEY,
    pool   TEXT COLLATE "C" NOT NULL,
    at     DOUBLE PRECISION NOT NULL CHECK (at <> 'NaN'),
    state  TEXT COLLATE "C" NOT NULL,
    info   TEXT COLLATE "C" NOT NULL DEFAULT '{}'
);

-- The outbox read by the Backup Service; an identity never hands out a seq twice.
-- Appends are serialised by an advisory lock so seqs follow commit order.
CREATE TABLE change_log (
    seq      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pool     TEXT COLLATE "C" NOT NULL,
    category TEXT COLLATE "C" NOT NULL,
    key      TEXT COLLATE "C" NOT NULL,
    op       TEXT COLLATE "C" NOT NULL CHECK (op IN ('put', 'delete')),
    payload  TEXT COLLATE "C" NOT NULL,
    at       DOUBLE PRECISION NOT NULL CHECK (at <> 'NaN')
);
"""


_V2 = """
-- Meeting files, content-addressed: the bytes once per SHA-256 (hex), however many
-- references name them; a reference per (meeting, file name). Unreferenced blobs may
-- stay (garbage, harmless).
CREATE TABLE content_blobs (
    sha256 TEXT COLLATE "C" PRIMARY KEY,
    data   BYTEA NOT NULL
);
CREATE TABLE meeting_contents (
    meeting_id TEXT COLLATE "C" NOT NULL,
    name       TEXT COLLATE "C" NOT NULL,
    sha256     TEXT COLLATE "C" NOT NULL REFERENCES content_blobs (sha256),
    size       BIGINT NOT NULL,
    PRIMARY KEY (meeting_id, name)
);
CREATE INDEX meeting_contents_sha256 ON meeting_contents (sha256);

-- The CMS documents; `version` is the CMS counter's value when a document was written.
-- The counter (one row, whose lock serialises CMS writers) only grows: deletes bump it.
CREATE TABLE cms_documents (
    key        TEXT COLLATE "C" PRIMARY KEY,
    body       TEXT COLLATE "C" NOT NULL,
    version    BIGINT NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL CHECK (updated_at <> 'NaN')
);
CREATE TABLE cms_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL
);
INSERT INTO cms_version (id, version) VALUES (1, 0);

-- How far each paired pool's change log has been applied here (Backup Service).
CREATE TABLE backup_progress (
    source     TEXT COLLATE "C" PRIMARY KEY,
    seq        BIGINT NOT NULL,
    change_at  DOUBLE PRECISION NOT NULL CHECK (change_at <> 'NaN'),
    applied_at DOUBLE PRECISION NOT NULL CHECK (applied_at <> 'NaN')
);
"""

_V3 = """
-- Account lockout (OPS-6): a user's recent failed digest responses (JSON array of
-- times) and the lock they led to (locked_until 0: never locked). Not logged.
CREATE TABLE auth_lockouts (
    aor          TEXT COLLATE "C" PRIMARY KEY,
    failures     TEXT NOT NULL DEFAULT '[]',
    locked_at    DOUBLE PRECISION NOT NULL DEFAULT 0 CHECK (locked_at <> 'NaN'),
    locked_until DOUBLE PRECISION NOT NULL DEFAULT 0 CHECK (locked_until <> 'NaN')
);
CREATE INDEX auth_lockouts_locked ON auth_lockouts (locked_until);
"""


class PgMigrationConnection:
    """A synchronous face of one asyncpg connection, for `migrate` running in a worker
    thread: each call runs on `loop` (which owns the connection) and waits for it.
    asyncpg and database errors arrive as store errors."""

    def __init__(self, conn: Any, loop: asyncio.AbstractEventLoop,
                 timeout: float = MIGRATION_TIMEOUT) -> None:
        self._conn = conn
        self._loop = loop
        self._timeout = timeout

    def execute(self, sql: str, *args: object) -> str:
        """Run one statement (or, without arguments, a script of several); its status."""
        return str(self._call(lambda: self._conn.execute(sql, *args, timeout=self._timeout)))

    def fetch(self, sql: str, *args: object) -> list[Record]:
        """Every row of a query."""
        return list(self._call(lambda: self._conn.fetch(sql, *args, timeout=self._timeout)))

    def fetchval(self, sql: str, *args: object) -> Any:
        """The first column of the first row (None without rows)."""
        return self._call(lambda: self._conn.fetchval(sql, *args, timeout=self._timeout))

    def _call(self, make: Callable[[], Awaitable[T]]) -> T:
        async def guarded() -> T:
            try:
                return await make()
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                error = final_error(exc, "migrating the schema",
                                    broken=connection_closed(self._conn))
                if error is exc:
                    raise
                raise error from exc

        return asyncio.run_coroutine_threadsafe(guarded(), self._loop).result()


#: The PostgreSQL schema, oldest first. Append; never edit an entry once released.
MIGRATIONS: tuple[Migration[PgMigrationConnection], ...] = (
    Migration(1, "users, credentials, bindings, contacts, presence, meetings, heartbeats, "
                 "change log", _V1),
    Migration(2, "meeting content by hash, CMS documents and version, backup progress",
              _V2),
    Migration(3, "account lockouts", _V3),
)


class PostgresMigrationDriver:
    """Applies migrations through a `PgMigrationConnection` (outside any transaction)."""

    def __init__(self, conn: PgMigrationConnection) -> None:
        self._conn = conn

    def applied_version(self) -> int:
        """The highest applied version (0 for a new database); creates the version table
        (under the migration lock: concurrent CREATE TABLE IF NOT EXISTS can collide).
        When the table exists it is only read, so an up-to-date database opens on a
        read-only server too (where writes are then refused)."""
        conn = self._conn
        if conn.fetchval(f"SELECT to_regclass('{VERSION_TABLE}') IS NOT NULL"):
            return self._current()
        conn.execute("BEGIN")
        try:
            conn.execute("SELECT pg_advisory_xact_lock($1::int8)", MIGRATION_LOCK)
            conn.execute(f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} ("
                         "version INTEGER PRIMARY KEY, description TEXT NOT NULL)")
            current = self._current()
            conn.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        return current

    def apply(self, migration: Migration[PgMigrationConnection]) -> bool:
        """Run `migration` and record it in one transaction; False if already applied."""
        conn = self._conn
        conn.execute("BEGIN")
        try:
            conn.execute("SELECT pg_advisory_xact_lock($1::int8)", MIGRATION_LOCK)
            current = self._current()
            if current >= migration.version:
                conn.execute("ROLLBACK")
                return False
            if current != migration.version - 1:
                raise SchemaError(f"cannot apply migration {migration.version} to a database "
                                  f"at version {current}")
            if isinstance(migration.step, str):
                conn.execute(migration.step)
            else:
                migration.step(conn)
            conn.execute(f"INSERT INTO {VERSION_TABLE} (version, description) VALUES ($1, $2)",
                         migration.version, migration.description)
            conn.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        return True

    def _current(self) -> int:
        return int(self._conn.fetchval(f"SELECT COALESCE(MAX(version), 0) FROM {VERSION_TABLE}"))

    def _rollback(self) -> None:
        """Roll back; a failure is logged, not raised (the caller is already propagating
        the error that made it roll back)."""
        try:
            self._conn.execute("ROLLBACK")
        except StoreError as exc:
            log.warning("store: rolling back a migration failed: %s", exc)
