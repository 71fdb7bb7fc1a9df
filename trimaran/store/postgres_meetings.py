"""PostgreSQL repositories for meetings (logged under `meeting`) and the change-log reader.
Same behaviour as `trimaran.store.sqlite_meetings`."""

from __future__ import annotations

import json

from trimaran.store.base import ChangeLog, MeetingRepository, NotFound
from trimaran.store.model import Change, Meeting
from trimaran.store.postgres_db import PgDatabase, PgTx, Record
from trimaran.store.postgres_db import Retry as R

_MEETING_COLUMNS = "id, organizer, subject, created_at, expires_at, attendees"


def _meeting(row: Record) -> Meeting:
    return Meeting(row["id"], row["organizer"], row["subject"], row["created_at"],
                   row["expires_at"], tuple(json.loads(row["attendees"])))


class PostgresMeetingRepository(MeetingRepository):
    """Meetings; every write logs one `meeting` change keyed by meeting id."""

    def __init__(self, db: PgDatabase) -> None:
        self._db = db

    async def put(self, meeting: Meeting, *, now: float) -> None:
        """Create or replace a meeting; logged."""
        m = meeting

        async def work(tx: PgTx) -> None:
            await tx.execute(
                f"INSERT INTO meetings ({_MEETING_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) "
                "ON CONFLICT (id) DO UPDATE SET organizer = excluded.organizer, "
                "subject = excluded.subject, created_at = excluded.created_at, "
                "expires_at = excluded.expires_at, attendees = excluded.attendees",
                m.id, m.organizer, m.subject, m.created_at, m.expires_at,
                json.dumps(list(m.attendees)))
            tx.log_put("meeting", m.id, m, now)

        await self._db.write(work, what="meetings.put", retry=R.UNCOMMITTED)

    async def get(self, meeting_id: str) -> Meeting | None:
        """The meeting, or None."""
        row = await self._db.read(lambda tx: tx.one(
            f"SELECT {_MEETING_COLUMNS} FROM meetings WHERE id = $1", meeting_id),
            what="meetings.get")
        return None if row is None else _meeting(row)

    async def by_organizer(self, organizer: str) -> list[Meeting]:
        """The organizer's meetings, oldest first."""
        rows = await self._db.read(lambda tx: tx.all(
            f"SELECT {_MEETING_COLUMNS} FROM meetings WHERE organizer = $1 "
            "ORDER BY created_at, id", organizer), what="meetings.by_organizer")
        return [_meeting(r) for r in rows]

    async def remove(self, meeting_id: str, *, now: float) -> None:
        """Delete a meeting; `NotFound` if absent; logged."""

        async def work(tx: PgTx) -> None:
            if not await tx.count("DELETE FROM meetings WHERE id = $1", meeting_id):
                raise NotFound(f"no meeting {meeting_id}")
            tx.log_delete("meeting", meeting_id, now)

        await self._db.write(work, what="meetings.remove", retry=R.UNCOMMITTED)


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
