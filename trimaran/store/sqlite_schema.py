"""The SQLite schema (as migrations) and the SQLite migration driver."""

from __future__ import annotations

import sqlite3

from trimaran.store.migrations import VERSION_TABLE, Migration, SchemaError, split_sql
from trimaran.store.sqlite_db import rollback

_V1 = """
-- Users of the pool and their digest secrets (HA1 per algorithm, never the password).
CREATE TABLE users (
    aor          TEXT PRIMARY KEY,
    pool         TEXT NOT NULL,
    display_name TEXT NOT NULL DEFAULT '',
    number       TEXT UNIQUE,
    enabled      INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1))
);
CREATE INDEX users_pool ON users (pool, aor);

CREATE TABLE credentials (
    aor        TEXT PRIMARY KEY REFERENCES users (aor) ON DELETE CASCADE,
    username   TEXT NOT NULL,
    realm      TEXT NOT NULL,
    ha1_md5    TEXT NOT NULL,
    ha1_sha256 TEXT NOT NULL,
    UNIQUE (username, realm)
);

-- Registrations; key = Binding.key (instance-id|reg-id, else the contact URI).
CREATE TABLE bindings (
    aor         TEXT NOT NULL,
    key         TEXT NOT NULL,
    contact     TEXT NOT NULL,
    expires_at  REAL NOT NULL,
    call_id     TEXT NOT NULL,
    cseq        INTEGER NOT NULL,
    server      TEXT NOT NULL,
    flow_id     TEXT NOT NULL DEFAULT '',
    source      TEXT NOT NULL DEFAULT '',
    instance_id TEXT,
    reg_id      INTEGER,
    q           REAL NOT NULL DEFAULT 1.0,
    params      TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (aor, key)
);
CREATE INDEX bindings_server ON bindings (server, flow_id);
CREATE INDEX bindings_expires ON bindings (expires_at);

-- Contact lists: a row per written list, its groups and contacts (groups as a JSON
-- array of group names), in the order the owner gave them.
CREATE TABLE contact_lists (
    owner TEXT PRIMARY KEY
);
CREATE TABLE contact_groups (
    owner        TEXT NOT NULL REFERENCES contact_lists (owner) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    display_name TEXT NOT NULL DEFAULT '',
    position     INTEGER NOT NULL,
    PRIMARY KEY (owner, name)
);
CREATE TABLE contacts (
    owner        TEXT NOT NULL REFERENCES contact_lists (owner) ON DELETE CASCADE,
    uri          TEXT NOT NULL,
    display_name TEXT NOT NULL DEFAULT '',
    group_names  TEXT NOT NULL DEFAULT '[]',
    position     INTEGER NOT NULL,
    PRIMARY KEY (owner, uri)
);
CREATE INDEX contacts_uri ON contacts (uri);

CREATE TABLE presence_rules (
    owner   TEXT NOT NULL,
    watcher TEXT NOT NULL,
    action  TEXT NOT NULL,
    PRIMARY KEY (owner, watcher)
);

CREATE TABLE publications (
    etag         TEXT PRIMARY KEY,
    aor          TEXT NOT NULL,
    event        TEXT NOT NULL,
    content_type TEXT NOT NULL,
    body         BLOB NOT NULL,
    expires_at   REAL NOT NULL,
    server       TEXT NOT NULL DEFAULT ''
);
CREATE INDEX publications_aor ON publications (aor, event);

CREATE TABLE subscriptions (
    id         TEXT PRIMARY KEY,
    subscriber TEXT NOT NULL,
    target     TEXT NOT NULL,
    event      TEXT NOT NULL,
    expires_at REAL NOT NULL,
    dialog     TEXT NOT NULL,
    server     TEXT NOT NULL DEFAULT ''
);
CREATE INDEX subscriptions_target ON subscriptions (target, event);

CREATE TABLE meetings (
    id         TEXT PRIMARY KEY,
    organizer  TEXT NOT NULL,
    subject    TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    expires_at REAL,
    attendees  TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX meetings_organizer ON meetings (organizer);

CREATE TABLE heartbeats (
    server TEXT PRIMARY KEY,
    pool   TEXT NOT NULL,
    at     REAL NOT NULL,
    state  TEXT NOT NULL,
    info   TEXT NOT NULL DEFAULT '{}'
);

-- The outbox read by the Backup Service; AUTOINCREMENT: a seq is never reused.
CREATE TABLE change_log (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    pool     TEXT NOT NULL,
    category TEXT NOT NULL,
    key      TEXT NOT NULL,
    op       TEXT NOT NULL CHECK (op IN ('put', 'delete')),
    payload  TEXT NOT NULL,
    at       REAL NOT NULL
);
"""

_V2 = """
-- Meeting files, content-addressed: the bytes once per SHA-256 (hex), however many
-- references name them; a reference per (meeting, file name). Unreferenced blobs may
-- stay (garbage, harmless).
CREATE TABLE content_blobs (
    sha256 TEXT PRIMARY KEY,
    data   BLOB NOT NULL
);
CREATE TABLE meeting_contents (
    meeting_id TEXT NOT NULL,
    name       TEXT NOT NULL,
    sha256     TEXT NOT NULL REFERENCES content_blobs (sha256),
    size       INTEGER NOT NULL,
    PRIMARY KEY (meeting_id, name)
);
CREATE INDEX meeting_contents_sha256 ON meeting_contents (sha256);

-- The CMS documents; `version` is the CMS counter's value when a document was written.
-- The counter (one row) only grows: deletes bump it too.
CREATE TABLE cms_documents (
    key        TEXT PRIMARY KEY,
    body       TEXT NOT NULL,
    version    INTEGER NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE cms_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT INTO cms_version (id, version) VALUES (1, 0);

-- How far each paired pool's change log has been applied here (Backup Service).
CREATE TABLE backup_progress (
    source     TEXT PRIMARY KEY,
    seq        INTEGER NOT NULL,
    change_at  REAL NOT NULL,
    applied_at REAL NOT NULL
);
"""

_V3 = """
-- Account lockout (OPS-6): a user's recent failed digest responses (JSON array of
-- times) and the lock they led to (locked_until 0: never locked). Not logged.
CREATE TABLE auth_lockouts (
    aor          TEXT PRIMARY KEY,
    failures     TEXT NOT NULL DEFAULT '[]',
    locked_at    REAL NOT NULL DEFAULT 0,
    locked_until REAL NOT NULL DEFAULT 0
);
CREATE INDEX auth_lockouts_locked ON auth_lockouts (locked_until);
"""

#: The SQLite schema, oldest first. Append; never edit an entry once released.
MIGRATIONS: tuple[Migration[sqlite3.Connection], ...] = (
    Migration(1, "users, credentials, bindings, contacts, presence, meetings, heartbeats, "
                 "change log", _V1),
    Migration(2, "meeting content by hash, CMS documents and version, backup progress",
              _V2),
    Migration(3, "account lockouts", _V3),
)


class SqliteMigrationDriver:
    """Applies migrations to a SQLite connection in autocommit mode (isolation_level None)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        if conn.isolation_level is not None:
            raise SchemaError("the migration driver needs a connection with isolation_level=None")
        self._conn = conn

    def applied_version(self) -> int:
        """The highest applied version (0 for a new database); creates the version table."""
        self._conn.execute(
            f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} ("
            "version INTEGER PRIMARY KEY, description TEXT NOT NULL)")
        return self._current()

    def apply(self, migration: Migration[sqlite3.Connection]) -> bool:
        """Run `migration` and record it in one transaction; False if already applied."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = self._current()
            if current >= migration.version:
                conn.execute("ROLLBACK")
                return False
            if current != migration.version - 1:
                raise SchemaError(f"cannot apply migration {migration.version} to a database "
                                  f"at version {current}")
            if isinstance(migration.step, str):
                for statement in split_sql(migration.step, sqlite3.complete_statement):
                    conn.execute(statement)
            else:
                migration.step(conn)
            conn.execute(f"INSERT INTO {VERSION_TABLE} (version, description) VALUES (?, ?)",
                         (migration.version, migration.description))
            conn.execute("COMMIT")
        except BaseException:
            rollback(conn)
            raise
        return True

    def _current(self) -> int:
        row = self._conn.execute(f"SELECT COALESCE(MAX(version), 0) FROM {VERSION_TABLE}"
                                 ).fetchone()
        return int(row[0])
