"""SQLite repository of the Backup Service's receiving side: the paired pool's changes
applied here (not logged), with the progress per source pool in the same transaction.

What a change of each category writes, and under which key, is the table of
`trimaran.store.categories`; the row writers are those of the repositories, so an
applied change leaves the rows the source's own write left.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from trimaran.store.base import BackupRepository, Conflict
from trimaran.store.categories import (
    KEYS_SQL,
    Step,
    check_batch,
    check_blob_size,
    check_blobs,
    check_category,
    export_change,
    needed_blobs,
    rule_candidates,
    split_content_key,
)
from trimaran.store.model import (
    BackupProgress,
    Change,
    CmsDocument,
    ContactList,
    Credentials,
    Meeting,
    MeetingContent,
    PresenceRule,
    Publication,
    User,
)
from trimaran.store.sqlite_cms import (
    bump_version,
    delete_document,
    raise_version,
    read_document,
    upsert_document,
)
from trimaran.store.sqlite_db import SqliteDatabase, Tx
from trimaran.store.sqlite_meetings import (
    CONTENT_COLUMNS,
    MEETING_COLUMNS,
    content_of,
    meeting_of,
    remove_meeting_rows,
    store_blob,
    upsert_content,
    upsert_meeting,
)
from trimaran.store.sqlite_presence import PUBLICATION_COLUMNS, publication_of
from trimaran.store.sqlite_users import (
    check_contact_list,
    read_contact_list,
    read_credentials,
    read_user,
    remove_user_rows,
    upsert_credentials,
    upsert_user,
    write_contact_list,
)

_PUBLICATION_UPSERT = (
    f"INSERT INTO publications ({PUBLICATION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (etag) DO UPDATE SET aor = excluded.aor, event = excluded.event, "
    "content_type = excluded.content_type, body = excluded.body, "
    "expires_at = excluded.expires_at, server = excluded.server")


def read_progress(tx: Tx, source: str) -> BackupProgress:
    """The progress of `source` (zeros when never applied)."""
    row = tx.one("SELECT seq, change_at, applied_at FROM backup_progress WHERE source = ?",
                 (source,))
    if row is None:
        return BackupProgress(source, 0, 0.0, 0.0)
    return BackupProgress(source, int(row[0]), float(row[1]), float(row[2]))


def write_progress(tx: Tx, p: BackupProgress) -> None:
    """Record the progress of `p.source`."""
    tx.execute(
        "INSERT INTO backup_progress (source, seq, change_at, applied_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (source) DO UPDATE SET seq = excluded.seq, "
        "change_at = excluded.change_at, applied_at = excluded.applied_at",
        (p.source, p.seq, p.change_at, p.applied_at))


# --- applying one change --------------------------------------------------------------

def _put(tx: Tx, record: object) -> None:
    if isinstance(record, User):
        upsert_user(tx, record)
    elif isinstance(record, Credentials):
        upsert_credentials(tx, record)
    elif isinstance(record, ContactList):
        check_contact_list(record)
        write_contact_list(tx, record)
    elif isinstance(record, PresenceRule):
        tx.execute("INSERT INTO presence_rules (owner, watcher, action) VALUES (?, ?, ?) "
                   "ON CONFLICT (owner, watcher) DO UPDATE SET action = excluded.action",
                   (record.owner, record.watcher, record.action))
    elif isinstance(record, Publication):
        p = record
        tx.execute(_PUBLICATION_UPSERT, (p.aor, p.etag, p.event, p.content_type, p.body,
                                         p.expires_at, p.server))
    elif isinstance(record, Meeting):
        upsert_meeting(tx, record)
    elif isinstance(record, MeetingContent):
        upsert_content(tx, record)
    elif isinstance(record, CmsDocument):
        upsert_document(tx, record)
        raise_version(tx, record.version)
    else:  # pragma: no cover - check_batch decoded it through CATEGORY_TYPES
        raise TypeError(f"no category carries a {type(record).__name__}")


def _delete_rules(tx: Tx, key: str) -> None:
    tx.conn.executemany("DELETE FROM presence_rules WHERE owner = ? AND watcher = ?",
                        rule_candidates(key))


def _delete_content(tx: Tx, key: str) -> None:
    parts = split_content_key(key)
    if parts is not None:
        tx.execute("DELETE FROM meeting_contents WHERE meeting_id = ? AND name = ?", parts)


def _delete_cms(tx: Tx, key: str) -> None:
    delete_document(tx, key)
    bump_version(tx)          # the source bumped it for this delete


_DELETES: Mapping[str, Callable[[Tx, str], object]] = {
    "user": remove_user_rows,
    "credentials": lambda tx, key: tx.execute("DELETE FROM credentials WHERE aor = ?", (key,)),
    "contacts": lambda tx, key: tx.execute("DELETE FROM contact_lists WHERE owner = ?",
                                           (key,)),
    "presence-rules": _delete_rules,
    "presence": lambda tx, key: tx.execute("DELETE FROM publications WHERE etag = ?", (key,)),
    "meeting": remove_meeting_rows,
    "meeting-content": _delete_content,
    "cms": _delete_cms,
}


def apply_step(tx: Tx, step: Step) -> None:
    """Write the rows of one decoded change, without logging it."""
    if step.record is None:
        _DELETES[step.change.category](tx, step.change.key)
    else:
        _put(tx, step.record)


# --- reading a key back ---------------------------------------------------------------

def _rule(tx: Tx, key: str) -> PresenceRule | None:
    for owner, watcher in rule_candidates(key):
        row = tx.one("SELECT action FROM presence_rules WHERE owner = ? AND watcher = ?",
                     (owner, watcher))
        if row is not None:
            return PresenceRule(owner, watcher, row[0])
    return None


def _contact_list(tx: Tx, owner: str) -> ContactList | None:
    if tx.one("SELECT 1 FROM contact_lists WHERE owner = ?", (owner,)) is None:
        return None
    return read_contact_list(tx, owner)


def _publication(tx: Tx, etag: str) -> Publication | None:
    row = tx.one(f"SELECT {PUBLICATION_COLUMNS} FROM publications WHERE etag = ?", (etag,))
    return None if row is None else publication_of(row)


def _meeting(tx: Tx, meeting_id: str) -> Meeting | None:
    row = tx.one(f"SELECT {MEETING_COLUMNS} FROM meetings WHERE id = ?", (meeting_id,))
    return None if row is None else meeting_of(row)


def _content(tx: Tx, key: str) -> MeetingContent | None:
    parts = split_content_key(key)
    if parts is None:
        return None
    row = tx.one(f"SELECT {CONTENT_COLUMNS} FROM meeting_contents "
                 "WHERE meeting_id = ? AND name = ?", parts)
    return None if row is None else content_of(row)


_READERS: Mapping[str, Callable[[Tx, str], object | None]] = {
    "user": read_user,
    "credentials": read_credentials,
    "contacts": _contact_list,
    "presence-rules": _rule,
    "presence": _publication,
    "meeting": _meeting,
    "meeting-content": _content,
    "cms": read_document,
}


def _blob_size(tx: Tx, sha256: str) -> int | None:
    row = tx.one("SELECT length(data) FROM content_blobs WHERE sha256 = ?", (sha256,))
    return None if row is None else int(row[0])


class SqliteBackupRepository(BackupRepository):
    """The paired pools' changes applied here, with their progress (see the module
    docstring)."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def apply(self, source: str, changes: Sequence[Change], *, now: float,
                    blobs: Mapping[str, bytes] | None = None) -> BackupProgress:
        """In one transaction: store `blobs`, apply the changes above the recorded
        progress of `source` in order, unlogged, and record the progress (unchanged
        when none was new). `Conflict` for changes not `source`'s, not in increasing
        seq order, from this very pool, for a blob whose bytes do not hash to its name,
        or a `meeting-content` put naming a blob neither shipped nor stored here;
        `CodecError` for a malformed change. Nothing is applied on any error."""
        steps = check_batch(source, self._db.pool, changes)
        shipped = check_blobs(blobs)

        def work(tx: Tx) -> BackupProgress:
            progress = read_progress(tx, source)
            todo = [s for s in steps if s.change.seq > progress.seq]
            for sha, data in shipped.items():
                store_blob(tx, sha, data)
            for sha, size in needed_blobs(todo).items():
                check_blob_size(sha, size, _blob_size(tx, sha))
            for step in todo:
                apply_step(tx, step)
            if todo:
                last = todo[-1].change
                progress = BackupProgress(source, last.seq, last.at, now)
                write_progress(tx, progress)
            return progress

        return await self._db.write(work)

    async def progress(self, source: str) -> BackupProgress:
        """How far `source`'s log has been applied here (seq 0 when never)."""
        return await self._db.read(lambda tx: read_progress(tx, source))

    async def reset(self, source: str, seq: int, *, now: float) -> BackupProgress:
        """Set the progress of `source` to `seq` (`change_at` 0.0: unknown here);
        `Conflict` for a negative seq."""
        if seq < 0:
            raise Conflict(f"progress of {source}: seq {seq} is negative")
        progress = BackupProgress(source, seq, 0.0, now)
        await self._db.write(lambda tx: write_progress(tx, progress))
        return progress

    async def export(self, category: str, key: str) -> Change:
        """The current value of (category, key) as a change (`put`, or `delete` when
        absent; seq 0, this pool, at 0.0); `CodecError` for an unknown category."""
        check_category(category)
        record = await self._db.read(lambda tx: _READERS[category](tx, key))
        return export_change(self._db.pool, category, key, record)

    async def keys(self, category: str, pool: str) -> list[str]:
        """The keys of `category` belonging to users homed on `pool` (meetings and their
        content by organizer; every CMS key), sorted."""
        check_category(category)
        sql = KEYS_SQL[category].format(p="?")
        params = (pool,) if "?" in sql else ()
        rows = await self._db.read(lambda tx: tx.all(sql, params))
        return sorted(str(r[0]) for r in rows)
