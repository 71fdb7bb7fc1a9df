"""PostgreSQL repositories for meetings (logged under `meeting`) with their content (logged
under `meeting-content`, the bytes content-addressed), and the change-log reader. Same
behaviour as `trimaran.store.sqlite_meetings`; `attach` locks the meeting's row, so a
concurrent `remove` cannot leave a reference behind."""

from __future__ import annotations

import json

from trimaran.store.base import ChangeLog, MeetingRepository, NotFound
from trimaran.store.categories import check_content, content_key, sha256_hex
from trimaran.store.model import Change, Meeting, MeetingContent
from trimaran.store.postgres_db import PgDatabase, PgTx, Record
from trimaran.store.postgres_db import Retry as R
from trimaran.store.sqlite_meetings import SUMMARY_SQL

MEETING_COLUMNS = "id, organizer, subject, created_at, expires_at, attendees"
CONTENT_COLUMNS = "meeting_id, name, sha256, size"


def meeting_of(row: Record) -> Meeting:
    """The meeting in a row of `MEETING_COLUMNS`."""
    return Meeting(row["id"], row["organizer"], row["subject"], row["created_at"],
                   row["expires_at"], tuple(json.loads(row["attendees"])))


def content_of(row: Record) -> MeetingContent:
    """The reference in a row of `CONTENT_COLUMNS`."""
    return MeetingContent(row["meeting_id"], row["name"], row["sha256"], int(row["size"]))


async def upsert_meeting(tx: PgTx, m: Meeting) -> None:
    """Insert or replace the meeting's row (its content references stay)."""
    await tx.execute(
        f"INSERT INTO meetings ({MEETING_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) "
        "ON CONFLICT (id) DO UPDATE SET organizer = excluded.organizer, "
        "subject = excluded.subject, created_at = excluded.created_at, "
        "expires_at = excluded.expires_at, attendees = excluded.attendees",
        m.id, m.organizer, m.subject, m.created_at, m.expires_at,
        json.dumps(list(m.attendees)))


async def remove_meeting_rows(tx: PgTx, meeting_id: str) -> tuple[bool, list[str]]:
    """Delete the meeting and its content references: (whether the meeting was there,
    the names of the references removed, sorted)."""
    existed = await tx.count("DELETE FROM meetings WHERE id = $1", meeting_id) > 0
    names = sorted(r[0] for r in await tx.all(
        "DELETE FROM meeting_contents WHERE meeting_id = $1 RETURNING name", meeting_id))
    return existed, names


async def store_blob(tx: PgTx, sha256: str, data: bytes) -> None:
    """Keep `data` under its digest `sha256` (nothing when already kept)."""
    await tx.execute("INSERT INTO content_blobs (sha256, data) VALUES ($1, $2) "
                     "ON CONFLICT (sha256) DO NOTHING", sha256, data)


async def upsert_content(tx: PgTx, c: MeetingContent) -> None:
    """Insert or replace the reference (meeting_id, name)."""
    await tx.execute(
        f"INSERT INTO meeting_contents ({CONTENT_COLUMNS}) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (meeting_id, name) DO UPDATE SET sha256 = excluded.sha256, "
        "size = excluded.size", c.meeting_id, c.name, c.sha256, c.size)


class PostgresMeetingRepository(MeetingRepository):
    """Meetings; every write logs one `meeting` change keyed by meeting id, and one
    `meeting-content` change per file reference written or removed ("<id>/<name>")."""

    def __init__(self, db: PgDatabase) -> None:
        self._db = db

    async def put(self, meeting: Meeting, *, now: float) -> None:
        """Create or replace a meeting (its content stays); logged."""

        async def work(tx: PgTx) -> None:
            await upsert_meeting(tx, meeting)
            tx.log_put("meeting", meeting.id, meeting, now)

        await self._db.write(work, what="meetings.put", retry=R.UNCOMMITTED)

    async def get(self, meeting_id: str) -> Meeting | None:
        """The meeting, or None."""
        row = await self._db.read(lambda tx: tx.one(
            f"SELECT {MEETING_COLUMNS} FROM meetings WHERE id = $1", meeting_id),
            what="meetings.get")
        return None if row is None else meeting_of(row)

    async def by_organizer(self, organizer: str) -> list[Meeting]:
        """The organizer's meetings, oldest first."""
        rows = await self._db.read(lambda tx: tx.all(
            f"SELECT {MEETING_COLUMNS} FROM meetings WHERE organizer = $1 "
            "ORDER BY created_at, id", organizer), what="meetings.by_organizer")
        return [meeting_of(r) for r in rows]

    async def remove(self, meeting_id: str, *, now: float) -> None:
        """Delete a meeting and its content references; `NotFound` if absent; logged
        (a `meeting-content` delete per reference, by name, then the `meeting` delete).
        The bytes stay."""

        async def work(tx: PgTx) -> None:
            existed, names = await remove_meeting_rows(tx, meeting_id)
            if not existed:
                raise NotFound(f"no meeting {meeting_id}")
            for name in names:
                tx.log_delete("meeting-content", content_key(meeting_id, name), now)
            tx.log_delete("meeting", meeting_id, now)

        await self._db.write(work, what="meetings.remove", retry=R.UNCOMMITTED)

    async def attach(self, meeting_id: str, name: str, data: bytes, *,
                     now: float) -> MeetingContent:
        """Store `data` as the meeting's file `name` (replacing one of that name); the
        bytes are kept once under their SHA-256. `NotFound` without the meeting,
        `Conflict` for a name that is empty or holds "/", `ContentTooLarge` over 4 MiB."""
        check_content(name, data)
        content = MeetingContent(meeting_id, name, sha256_hex(data), len(data))

        async def work(tx: PgTx) -> MeetingContent:
            if await tx.one("SELECT 1 FROM meetings WHERE id = $1 FOR UPDATE",
                            meeting_id) is None:
                raise NotFound(f"no meeting {meeting_id}")
            await store_blob(tx, content.sha256, bytes(data))
            await upsert_content(tx, content)
            tx.log_put("meeting-content", content_key(meeting_id, name), content, now)
            return content

        return await self._db.write(work, what="meetings.attach", retry=R.UNCOMMITTED)

    async def contents(self, meeting_id: str) -> list[MeetingContent]:
        """The meeting's file references, by name."""
        rows = await self._db.read(lambda tx: tx.all(
            f"SELECT {CONTENT_COLUMNS} FROM meeting_contents WHERE meeting_id = $1 "
            "ORDER BY name", meeting_id), what="meetings.contents")
        return [content_of(r) for r in rows]

    async def blob(self, sha256: str) -> bytes | None:
        """The bytes stored under `sha256`, or None."""
        data = await self._db.read(lambda tx: tx.value(
            "SELECT data FROM content_blobs WHERE sha256 = $1", sha256), what="meetings.blob")
        return None if data is None else bytes(data)


class PostgresChangeLog(ChangeLog):
    """Reads the change log written by the repositories (see `PgTx.flush_log`)."""

    def __init__(self, db: PgDatabase) -> None:
        self._db = db

    async def since(self, seq: int, *, limit: int = 1000) -> list[Change]:
        """Changes with sequence number > `seq`, in order, at most `limit` (none if < 1)."""
        if limit < 1:
            return []
        rows = await self._db.read(lambda tx: tx.all(
            "SELECT seq, pool, category, key, op, payload, at FROM change_log "
            "WHERE seq > $1 ORDER BY seq LIMIT $2", seq, limit), what="changes.since")
        return [Change(r["seq"], r["pool"], r["category"], r["key"], r["op"], r["payload"],
                       r["at"]) for r in rows]

    async def last_seq(self) -> int:
        """The highest sequence number committed (0 when none)."""
        value = await self._db.read(
            lambda tx: tx.value("SELECT COALESCE(MAX(seq), 0) FROM change_log"),
            what="changes.last_seq")
        return int(value)

    async def summary(self, after: int) -> dict[str, tuple[int, int, float]]:
        """Per category with changes in the log: (its last seq, how many have seq >
        `after`, the `at` of the first of those by seq, or 0.0 when none)."""
        sql = SUMMARY_SQL.format(p="$1::bigint")
        rows = await self._db.read(lambda tx: tx.all(sql, after), what="changes.summary")
        return {r["category"]: (int(r["last"]), int(r["pending"]), float(r["first_at"]))
                for r in rows}
