"""SQLite presence repository: rules and publications (logged), subscriptions (not logged)."""

from __future__ import annotations

import sqlite3

from trimaran.store.base import Conflict, NotFound, PresenceRepository
from trimaran.store.categories import rule_key
from trimaran.store.model import PresenceRule, Publication, Subscription
from trimaran.store.sqlite_db import SqliteDatabase, Tx

PUBLICATION_COLUMNS = "aor, etag, event, content_type, body, expires_at, server"
_SUBSCRIPTION_COLUMNS = "id, subscriber, target, event, expires_at, dialog, server"

__all__ = ["PUBLICATION_COLUMNS", "SqlitePresenceRepository", "publication_of", "rule_key"]


def publication_of(row: sqlite3.Row) -> Publication:
    """The publication in a row of `PUBLICATION_COLUMNS`."""
    return Publication(row["aor"], row["etag"], row["event"], row["content_type"],
                       bytes(row["body"]), row["expires_at"], row["server"])


def _subscription(row: sqlite3.Row) -> Subscription:
    return Subscription(row["id"], row["subscriber"], row["target"], row["event"],
                        row["expires_at"], row["dialog"], row["server"])


class SqlitePresenceRepository(PresenceRepository):
    """Presence rules (`presence-rules`, key "owner|watcher"), publications (`presence`,
    key etag; every publication is logged) and subscriptions (not logged)."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def rules(self, owner: str) -> list[PresenceRule]:
        """The owner's allow/block rules, ordered by watcher."""
        rows = await self._db.read(lambda tx: tx.all(
            "SELECT owner, watcher, action FROM presence_rules WHERE owner = ? "
            "ORDER BY watcher", (owner,)))
        return [PresenceRule(r["owner"], r["watcher"], r["action"]) for r in rows]

    async def set_rule(self, rule: PresenceRule, *, now: float) -> None:
        """Create or replace the rule for (owner, watcher); logged."""

        def work(tx: Tx) -> None:
            tx.execute(
                "INSERT INTO presence_rules (owner, watcher, action) VALUES (?, ?, ?) "
                "ON CONFLICT (owner, watcher) DO UPDATE SET action = excluded.action",
                (rule.owner, rule.watcher, rule.action))
            tx.log_put("presence-rules", rule_key(rule.owner, rule.watcher), rule, now)

        await self._db.write(work)

    async def remove_rule(self, owner: str, watcher: str, *, now: float) -> None:
        """Remove the rule for (owner, watcher); a delete is logged only if there was one."""

        def work(tx: Tx) -> None:
            cursor = tx.execute("DELETE FROM presence_rules WHERE owner = ? AND watcher = ?",
                                (owner, watcher))
            if cursor.rowcount:
                tx.log_delete("presence-rules", rule_key(owner, watcher), now)

        await self._db.write(work)

    async def publications(self, aor: str, event: str, *, now: float) -> list[Publication]:
        """Unexpired publications of `aor` for `event`, soonest expiry first."""
        rows = await self._db.read(lambda tx: tx.all(
            f"SELECT {PUBLICATION_COLUMNS} FROM publications "
            "WHERE aor = ? AND event = ? AND expires_at > ? ORDER BY expires_at, etag",
            (aor, event, now)))
        return [publication_of(r) for r in rows]

    async def publish(self, publication: Publication, *, replaces: str | None,
                      now: float) -> None:
        """Store `publication`. With `replaces`, that etag must be an unexpired publication
        of the same AOR and event (`NotFound` otherwise); it is replaced, and when the new
        etag differs the old one is deleted. Without it, an etag in use is a `Conflict`.
        Expired publications of the AOR are dropped on the way. Every key changed is logged."""
        p = publication

        def work(tx: Tx) -> None:
            if replaces is not None and tx.one(
                    "SELECT 1 FROM publications WHERE etag = ? AND aor = ? AND event = ? "
                    "AND expires_at > ?", (replaces, p.aor, p.event, now)) is None:
                raise NotFound(f"no publication {replaces} of {p.aor} for {p.event}")
            expired = [r[0] for r in tx.all(
                "SELECT etag FROM publications WHERE aor = ? AND expires_at <= ? "
                "ORDER BY etag", (p.aor, now))]
            tx.execute("DELETE FROM publications WHERE aor = ? AND expires_at <= ?",
                       (p.aor, now))
            for etag in expired:
                tx.log_delete("presence", etag, now)
            if replaces is not None and replaces != p.etag:
                tx.execute("DELETE FROM publications WHERE etag = ?", (replaces,))
                tx.log_delete("presence", replaces, now)
            if replaces != p.etag and tx.one(
                    "SELECT 1 FROM publications WHERE etag = ?", (p.etag,)) is not None:
                raise Conflict(f"etag {p.etag} is already in use")
            tx.execute(
                f"INSERT INTO publications ({PUBLICATION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (etag) DO UPDATE SET content_type = excluded.content_type, "
                "body = excluded.body, expires_at = excluded.expires_at, "
                "server = excluded.server",
                (p.aor, p.etag, p.event, p.content_type, p.body, p.expires_at, p.server))
            tx.log_put("presence", p.etag, p, now)

        await self._db.write(work)

    async def unpublish(self, aor: str, etag: str, *, now: float) -> None:
        """Remove an unexpired publication of `aor`; `NotFound` if unknown or expired."""

        def work(tx: Tx) -> None:
            cursor = tx.execute(
                "DELETE FROM publications WHERE etag = ? AND aor = ? AND expires_at > ?",
                (etag, aor, now))
            if not cursor.rowcount:
                raise NotFound(f"no publication {etag} of {aor}")
            tx.log_delete("presence", etag, now)

        await self._db.write(work)

    async def save_subscription(self, subscription: Subscription) -> None:
        """Create or replace a subscription (not logged)."""
        s = subscription
        await self._db.write(lambda tx: tx.execute(
            f"INSERT OR REPLACE INTO subscriptions ({_SUBSCRIPTION_COLUMNS}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (s.id, s.subscriber, s.target, s.event, s.expires_at, s.dialog, s.server)).rowcount)

    async def remove_subscription(self, subscription_id: str) -> None:
        """Forget a subscription (no error if absent)."""
        await self._db.write(lambda tx: tx.execute(
            "DELETE FROM subscriptions WHERE id = ?", (subscription_id,)).rowcount)

    async def subscriptions_to(self, target: str, event: str, *, now: float
                               ) -> list[Subscription]:
        """Unexpired subscriptions watching `target` for `event`, ordered by id."""
        rows = await self._db.read(lambda tx: tx.all(
            f"SELECT {_SUBSCRIPTION_COLUMNS} FROM subscriptions "
            "WHERE target = ? AND event = ? AND expires_at > ? ORDER BY id",
            (target, event, now)))
        return [_subscription(r) for r in rows]
