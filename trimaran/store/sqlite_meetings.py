"""SQLite repositories for meetings (logged under `meeting`) with their content (logged
under `meeting-content`, the bytes content-addressed), and the change-log reader."""

from __future__ import annotations

import json
import sqlite3

from trimaran.store.base import ChangeLog, MeetingRepository, NotFound
from trimaran.store.categories import check_content, content_key, sha256_hex
from trimaran.store.model import Change, Meeting, MeetingContent
from trimaran.store.sqlite_db import SqliteDatabase, Tx

MEETING_COLUMNS = "id, organizer, subject, created_at, expires_at, attendees"
CONTENT_COLUMNS = "meeting_id, name, sha256, size"


def meeting_of(row: sqlite3.Row) -> Meeting:
    """The meeting in a row of `MEETING_COLUMNS`."""
    return Meeting(row["id"], row["organizer"], row["subject"], row["created_at"],
                   row["expires_at"], tuple(json.loads(row["attendees"])))


def content_of(row: sqlite3.Row) -> MeetingContent:
    """The reference in a row of `CONTENT_COLUMNS`."""
    return MeetingContent(row["meeting_id"], row["name"], row["sha256"], row["size"])


def upsert_meeting(tx: Tx, m: Meeting) -> None:
    """Insert or replace the meeting's row (its content references stay)."""
    tx.execute(
        f"INSERT INTO meetings ({MEETING_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (id) DO UPDATE SET organizer = excluded.organizer, "
        "subject = excluded.subject, created_at = excluded.created_at, "
        "expires_at = excluded.expires_at, attendees = excluded.attendees",
        (m.id, m.organizer, m.subject, m.created_at, m.expires_at,
         json.dumps(list(m.attendees))))


def remove_meeting_rows(tx: Tx, meeting_id: str) -> tuple[bool, list[str]]:
    """Delete the meeting and its content references: (whether the meeting was there,
    the names of the references removed, sorted)."""
    names = [r[0] for r in tx.all(
        "SELECT name FROM meeting_contents WHERE meeting_id = ? ORDER BY name",
        (meeting_id,))]
    tx.execute("DELETE FROM meeting_contents WHERE meeting_id = ?", (meeting_id,))
    existed = tx.execute("DELETE FROM meetings WHERE id = ?", (meeting_id,)).rowcount > 0
    return existed, names


def store_blob(tx: Tx, sha256: str, data: bytes) -> None:
    """Keep `data` under its digest `sha256` (nothing when already kept)."""
    tx.execute("INSERT INTO content_blobs (sha256, data) VALUES (?, ?) "
               "ON CONFLICT (sha256) DO NOTHING", (sha256, data))


def upsert_content(tx: Tx, c: MeetingContent) -> None:
    """Insert or replace the reference (meeting_id, name)."""
    tx.execute(
        f"INSERT INTO meeting_contents ({CONTENT_COLUMNS}) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (meeting_id, name) DO UPDATE SET sha256 = excluded.sha256, "
        "size = excluded.size", (c.meeting_id, c.name, c.sha256, c.size))


class SqliteMeetingRepository(MeetingRepository):
    """Meetings; every write logs one `meeting` change keyed by meeting id, and one
    `meeting-content` change per file reference written or removed ("<id>/<name>")."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def put(self, meeting: Meeting, *, now: float) -> None:
        """Create or replace a meeting (its content stays); logged."""

        def work(tx: Tx) -> None:
            upsert_meeting(tx, meeting)
            tx.log_put("meeting", meeting.id, meeting, now)

        await self._db.write(work)

    async def get(self, meeting_id: str) -> Meeting | None:
        """The meeting, or None."""
        row = await self._db.read(lambda tx: tx.one(
            f"SELECT {MEETING_COLUMNS} FROM meetings WHERE id = ?", (meeting_id,)))
        return None if row is None else meeting_of(row)

    async def by_organizer(self, organizer: str) -> list[Meeting]:
        """The organizer's meetings, oldest first."""
        rows = await self._db.read(lambda tx: tx.all(
            f"SELECT {MEETING_COLUMNS} FROM meetings WHERE organizer = ? "
            "ORDER BY created_at, id", (organizer,)))
        return [meeting_of(r) for r in rows]

    async def remove(self, meeting_id: str, *, now: float) -> None:
        """Delete a meeting and its content references; `NotFound` if absent; logged
        (a `meeting-content` delete per reference, by name, then the `meeting` delete).
        The bytes stay."""

        def work(tx: Tx) -> None:
            existed, names = remove_meeting_rows(tx, meeting_id)
            if not existed:
                raise NotFound(f"no meeting {meeting_id}")
            for name in names:
                tx.log_delete("meeting-content", content_key(meeting_id, name), now)
            tx.log_delete("meeting", meeting_id, now)

        await self._db.write(work)

    async def attach(self, meeting_id: str, name: str, data: bytes, *,
                     now: float) -> MeetingContent:
        """Store `data` as the meeting's file `name` (replacing one of that name); the
        bytes are kept once under their SHA-256. `NotFound` without the meeting,
        `Conflict` for a name that is empty or holds "/", `ContentTooLarge` over 4 MiB."""
        check_content(name, data)
        content = MeetingContent(meeting_id, name, sha256_hex(data), len(data))

        def work(tx: Tx) -> MeetingContent:
            if tx.one("SELECT 1 FROM meetings WHERE id = ?", (meeting_id,)) is None:
                raise NotFound(f"no meeting {meeting_id}")
            store_blob(tx, content.sha256, bytes(data))
            upsert_content(tx, content)
            tx.log_put("meeting-content", content_key(meeting_id, name), content, now)
            return content

        return await self._db.write(work)

    async def contents(self, meeting_id: str) -> list[MeetingContent]:
        """The meeting's file references, by name."""
        rows = await self._db.read(lambda tx: tx.all(
            f"SELECT {CONTENT_COLUMNS} FROM meeting_contents WHERE meeting_id = ? "
            "ORDER BY name", (meeting_id,)))
        return [content_of(r) for r in rows]

    async def blob(self, sha256: str) -> bytes | None:
        """The bytes stored under `sha256`, or None."""
        row = await self._db.read(lambda tx: tx.one(
            "SELECT data FROM content_blobs WHERE sha256 = ?", (sha256,)))
        return None if row is None else bytes(row[0])


#: Per category: the last seq, how many after a seq, and the oldest of those (its seq).
SUMMARY_SQL = (
    "SELECT s.category, s.last, s.pending, COALESCE(c.at, 0.0) AS first_at FROM ("
    " SELECT category, MAX(seq) AS last,"
    " SUM(CASE WHEN seq > {p} THEN 1 ELSE 0 END) AS pending,"
    " MIN(CASE WHEN seq > {p} THEN seq END) AS first"
    " FROM change_log GROUP BY category) s"
    " LEFT JOIN change_log c ON c.seq = s.first ORDER BY s.category")


class SqliteChangeLog(ChangeLog):
    """Reads the change log written by the repositories (see `Tx.log_put`)."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def since(self, seq: int, *, limit: int = 1000) -> list[Change]:
        """Changes with sequence number > `seq`, in order, at most `limit` (none if < 1)."""
        if limit < 1:
            return []
        rows = await self._db.read(lambda tx: tx.all(
            "SELECT seq, pool, category, key, op, payload, at FROM change_log "
            "WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)))
        return [Change(r["seq"], r["pool"], r["category"], r["key"], r["op"], r["payload"],
                       r["at"]) for r in rows]

    async def last_seq(self) -> int:
        """The highest sequence number ever written (0 when none), even if later pruned."""

        def work(tx: Tx) -> int:
            row = tx.one("SELECT seq FROM sqlite_sequence WHERE name = 'change_log'")
            return 0 if row is None else int(row[0])

        return await self._db.read(work)

    async def summary(self, after: int) -> dict[str, tuple[int, int, float]]:
        """Per category with changes in the log: (its last seq, how many have seq >
        `after`, the `at` of the first of those by seq, or 0.0 when none)."""
        sql = SUMMARY_SQL.format(p=":after")
        rows = await self._db.read(lambda tx: tx.all(sql, {"after": after}))
        return {r["category"]: (int(r["last"]), int(r["pending"]), float(r["first_at"]))
                for r in rows}
