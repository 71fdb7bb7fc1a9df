"""SQLite repositories for meetings (logged under `meeting`) and the change-log reader."""

from __future__ import annotations

import json
import sqlite3

from trimaran.store.base import ChangeLog, MeetingRepository, NotFound
from trimaran.store.model import Change, Meeting
from trimaran.store.sqlite_db import SqliteDatabase, Tx

_MEETING_COLUMNS = "id, organizer, subject, created_at, expires_at, attendees"


def _meeting(row: sqlite3.Row) -> Meeting:
    return Meeting(row["id"], row["organizer"], row["subject"], row["created_at"],
                   row["expires_at"], tuple(json.loads(row["attendees"])))


class SqliteMeetingRepository(MeetingRepository):
    """Meetings; every write logs one `meeting` change keyed by meeting id."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def put(self, meeting: Meeting, *, now: float) -> None:
        """Create or replace a meeting; logged."""
        m = meeting

        def work(tx: Tx) -> None:
            tx.execute(
                f"INSERT OR REPLACE INTO meetings ({_MEETING_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                (m.id, m.organizer, m.subject, m.created_at, m.expires_at,
                 json.dumps(list(m.attendees))))
            tx.log_put("meeting", m.id, m, now)

        await self._db.write(work)

    async def get(self, meeting_id: str) -> Meeting | None:
        """The meeting, or None."""
        row = await self._db.read(lambda tx: tx.one(
            f"SELECT {_MEETING_COLUMNS} FROM meetings WHERE id = ?", (meeting_id,)))
        return None if row is None else _meeting(row)

    async def by_organizer(self, organizer: str) -> list[Meeting]:
        """The organizer's meetings, oldest first."""
        rows = await self._db.read(lambda tx: tx.all(
            f"SELECT {_MEETING_COLUMNS} FROM meetings WHERE organizer = ? "
            "ORDER BY created_at, id", (organizer,)))
        return [_meeting(r) for r in rows]

    async def remove(self, meeting_id: str, *, now: float) -> None:
        """Delete a meeting; `NotFound` if absent; logged."""

        def work(tx: Tx) -> None:
            if not tx.execute("DELETE FROM meetings WHERE id = ?", (meeting_id,)).rowcount:
                raise NotFound(f"no meeting {meeting_id}")
            tx.log_delete("meeting", meeting_id, now)

        await self._db.write(work)


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
