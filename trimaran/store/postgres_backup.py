"""PostgreSQL repository of the Backup Service's receiving side. Same behaviour as
`trimaran.store.sqlite_backup`.

Applies of one source pool are serialised by a per-source advisory lock, taken before
the progress is read; the rows of each change are written with the locks the local
writers of the same keys take (contact lists, presence). An apply is retried even when
its commit's outcome is unknown: the progress commits with the rows, so a rerun skips
what was applied and stores the same blobs (idempotent by nature).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence

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
from trimaran.store.postgres_cms import (
    bump_version,
    delete_document,
    raise_version,
    read_document,
    upsert_document,
)
from trimaran.store.postgres_db import LOCK_BACKUP, LOCK_CONTACTS, LOCK_PRESENCE, PgDatabase, PgTx
from trimaran.store.postgres_db import Retry as R
from trimaran.store.postgres_meetings import (
    CONTENT_COLUMNS,
    MEETING_COLUMNS,
    content_of,
    meeting_of,
    remove_meeting_rows,
    store_blob,
    upsert_content,
    upsert_meeting,
)
from trimaran.store.postgres_presence import (
    PUBLICATION_COLUMNS,
    PUBLICATION_VALUES,
    publication_of,
)
from trimaran.store.postgres_users import (
    read_contact_list,
    read_credentials,
    read_user,
    remove_user_rows,
    upsert_credentials,
    upsert_user,
    write_contact_list,
)
from trimaran.store.sqlite_users import check_contact_list

_PUBLICATION_UPSERT = (
    f"INSERT INTO publications ({PUBLICATION_COLUMNS}) {PUBLICATION_VALUES} "
    "ON CONFLICT (etag) DO UPDATE SET aor = excluded.aor, event = excluded.event, "
    "content_type = excluded.content_type, body = excluded.body, "
    "expires_at = excluded.expires_at, server = excluded.server")


async def read_progress(tx: PgTx, source: str) -> BackupProgress:
    """The progress of `source` (zeros when never applied)."""
    row = await tx.one("SELECT seq, change_at, applied_at FROM backup_progress "
                       "WHERE source = $1", source)
    if row is None:
        return BackupProgress(source, 0, 0.0, 0.0)
    return BackupProgress(source, int(row[0]), float(row[1]), float(row[2]))


async def write_progress(tx: PgTx, p: BackupProgress) -> None:
    """Record the progress of `p.source`."""
    await tx.execute(
        "INSERT INTO backup_progress (source, seq, change_at, applied_at) "
        "VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (source) DO UPDATE SET seq = excluded.seq, "
        "change_at = excluded.change_at, applied_at = excluded.applied_at",
        p.source, p.seq, p.change_at, p.applied_at)


# --- applying one change --------------------------------------------------------------

async def _put(tx: PgTx, record: object) -> None:
    if isinstance(record, User):
        await upsert_user(tx, record)
    elif isinstance(record, Credentials):
        await upsert_credentials(tx, record)
    elif isinstance(record, ContactList):
        check_contact_list(record)
        await write_contact_list(tx, record)
    elif isinstance(record, PresenceRule):
        await tx.execute(
            "INSERT INTO presence_rules (owner, watcher, action) VALUES ($1, $2, $3) "
            "ON CONFLICT (owner, watcher) DO UPDATE SET action = excluded.action",
            record.owner, record.watcher, record.action)
    elif isinstance(record, Publication):
        p = record
        await tx.lock(LOCK_PRESENCE, p.aor)
        await tx.execute(_PUBLICATION_UPSERT, p.aor, p.etag, p.event, p.content_type, p.body,
                         p.expires_at, p.server)
    elif isinstance(record, Meeting):
        await upsert_meeting(tx, record)
    elif isinstance(record, MeetingContent):
        await upsert_content(tx, record)
    elif isinstance(record, CmsDocument):
        await raise_version(tx, record.version)
        await upsert_document(tx, record)
    else:  # pragma: no cover - check_batch decoded it through CATEGORY_TYPES
        raise TypeError(f"no category carries a {type(record).__name__}")


async def _delete_credentials(tx: PgTx, aor: str) -> None:
    await tx.execute("DELETE FROM credentials WHERE aor = $1", aor)


async def _delete_contacts(tx: PgTx, owner: str) -> None:
    await tx.lock(LOCK_CONTACTS, owner)
    await tx.execute("DELETE FROM contact_lists WHERE owner = $1", owner)


async def _delete_rules(tx: PgTx, key: str) -> None:
    await tx.executemany("DELETE FROM presence_rules WHERE owner = $1 AND watcher = $2",
                         rule_candidates(key))


async def _delete_publication(tx: PgTx, etag: str) -> None:
    await tx.execute("DELETE FROM publications WHERE etag = $1", etag)


async def _delete_content(tx: PgTx, key: str) -> None:
    parts = split_content_key(key)
    if parts is not None:
        await tx.execute("DELETE FROM meeting_contents WHERE meeting_id = $1 AND name = $2",
                         *parts)


async def _delete_cms(tx: PgTx, key: str) -> None:
    await bump_version(tx)          # the source bumped it for this delete
    await delete_document(tx, key)


_DELETES: Mapping[str, Callable[[PgTx, str], Awaitable[object]]] = {
    "user": remove_user_rows,
    "credentials": _delete_credentials,
    "contacts": _delete_contacts,
    "presence-rules": _delete_rules,
    "presence": _delete_publication,
    "meeting": remove_meeting_rows,
    "meeting-content": _delete_content,
    "cms": _delete_cms,
}


async def apply_step(tx: PgTx, step: Step) -> None:
    """Write the rows of one decoded change, without logging it."""
    if step.record is None:
        await _DELETES[step.change.category](tx, step.change.key)
    else:
        await _put(tx, step.record)


# --- reading a key back ---------------------------------------------------------------

async def _rule(tx: PgTx, key: str) -> PresenceRule | None:
    for owner, watcher in rule_candidates(key):
        action = await tx.value(
            "SELECT action FROM presence_rules WHERE owner = $1 AND watcher = $2",
            owner, watcher)
        if action is not None:
            return PresenceRule(owner, watcher, action)
    return None


async def _contact_list(tx: PgTx, owner: str) -> ContactList | None:
    if await tx.one("SELECT 1 FROM contact_lists WHERE owner = $1", owner) is None:
        return None
    return await read_contact_list(tx, owner)


async def _publication(tx: PgTx, etag: str) -> Publication | None:
    row = await tx.one(f"SELECT {PUBLICATION_COLUMNS} FROM publications WHERE etag = $1",
                       etag)
    return None if row is None else publication_of(row)


async def _meeting(tx: PgTx, meeting_id: str) -> Meeting | None:
    row = await tx.one(f"SELECT {MEETING_COLUMNS} FROM meetings WHERE id = $1", meeting_id)
    return None if row is None else meeting_of(row)


async def _content(tx: PgTx, key: str) -> MeetingContent | None:
    parts = split_content_key(key)
    if parts is None:
        return None
    row = await tx.one(f"SELECT {CONTENT_COLUMNS} FROM meeting_contents "
                       "WHERE meeting_id = $1 AND name = $2", *parts)
    return None if row is None else content_of(row)


_READERS: Mapping[str, Callable[[PgTx, str], Awaitable[object | None]]] = {
    "user": read_user,
    "credentials": read_credentials,
    "contacts": _contact_list,
    "presence-rules": _rule,
    "presence": _publication,
    "meeting": _meeting,
    "meeting-content": _content,
    "cms": read_document,
}


async def _blob_size(tx: PgTx, sha256: str) -> int | None:
    size = await tx.value("SELECT octet_length(data) FROM content_blobs WHERE sha256 = $1",
                          sha256)
    return None if size is None else int(size)


class PostgresBackupRepository(BackupRepository):
    """The paired pools' changes applied here, with their progress (see the module
    docstring)."""

    def __init__(self, db: PgDatabase) -> None:
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

        async def work(tx: PgTx) -> BackupProgress:
            await tx.lock(LOCK_BACKUP, source)
            progress = await read_progress(tx, source)
            todo = [s for s in steps if s.change.seq > progress.seq]
            for sha, data in shipped.items():
                await store_blob(tx, sha, data)
            for sha, size in needed_blobs(todo).items():
                check_blob_size(sha, size, await _blob_size(tx, sha))
            for step in todo:
                await apply_step(tx, step)
            if todo:
                last = todo[-1].change
                progress = BackupProgress(source, last.seq, last.at, now)
                await write_progress(tx, progress)
            return progress

        return await self._db.write(work, what="backup.apply", retry=R.ALWAYS)

    async def progress(self, source: str) -> BackupProgress:
        """How far `source`'s log has been applied here (seq 0 when never)."""
        return await self._db.read(lambda tx: read_progress(tx, source),
                                   what="backup.progress")

    async def reset(self, source: str, seq: int, *, now: float) -> BackupProgress:
        """Set the progress of `source` to `seq` (`change_at` 0.0: unknown here);
        `Conflict` for a negative seq."""
        if seq < 0:
            raise Conflict(f"progress of {source}: seq {seq} is negative")
        progress = BackupProgress(source, seq, 0.0, now)

        async def work(tx: PgTx) -> None:
            await tx.lock(LOCK_BACKUP, source)
            await write_progress(tx, progress)

        await self._db.write(work, what="backup.reset", retry=R.ALWAYS)
        return progress

    async def export(self, category: str, key: str) -> Change:
        """The current value of (category, key) as a change (`put`, or `delete` when
        absent; seq 0, this pool, at 0.0); `CodecError` for an unknown category."""
        check_category(category)
        record = await self._db.read(lambda tx: _READERS[category](tx, key),
                                     what="backup.export", snapshot=True)
        return export_change(self._db.pool, category, key, record)

    async def keys(self, category: str, pool: str) -> list[str]:
        """The keys of `category` belonging to users homed on `pool` (meetings and their
        content by organizer; every CMS key), sorted."""
        check_category(category)
        sql = KEYS_SQL[category].format(p="$1")
        params = (pool,) if "$1" in sql else ()
        rows = await self._db.read(lambda tx: tx.all(sql, *params), what="backup.keys")
        return sorted(str(r[0]) for r in rows)
