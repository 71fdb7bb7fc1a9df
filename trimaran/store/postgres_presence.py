"""PostgreSQL presence repository: rules and publications (logged), subscriptions (not
logged). Same behaviour as `trimaran.store.sqlite_presence`; the writes of one AOR's
publications are serialised by a per-AOR advisory lock (also taken by `users.remove`)."""

from __future__ import annotations

from trimaran.store.base import Conflict, NotFound, PresenceRepository
from trimaran.store.categories import rule_key
from trimaran.store.model import PresenceRule, Publication, Subscription
from trimaran.store.postgres_db import LOCK_PRESENCE, PgDatabase, PgTx, Record
from trimaran.store.postgres_db import Retry as R

PUBLICATION_COLUMNS = "aor, etag, event, content_type, body, expires_at, server"
_SUBSCRIPTION_COLUMNS = "id, subscriber, target, event, expires_at, dialog, server"
PUBLICATION_VALUES = "VALUES ($1, $2, $3, $4, $5, $6, $7)"


def publication_of(row: Record) -> Publication:
    """The publication in a row of `PUBLICATION_COLUMNS`."""
    return Publication(row["aor"], row["etag"], row["event"], row["content_type"],
                       bytes(row["body"]), row["expires_at"], row["server"])


def _subscription(row: Record) -> Subscription:
    return Subscription(row["id"], row["subscriber"], row["target"], row["event"],
                        row["expires_at"], row["dialog"], row["server"])


class PostgresPresenceRepository(PresenceRepository):
    """Presence rules (`presence-rules`, key "owner|watcher"), publications (`presence`,
    key etag; every publication is logged) and subscriptions (not logged)."""

    def __init__(self, db: PgDatabase) -> None:
        self._db = db

    async def rules(self, owner: str) -> list[PresenceRule]:
        """The owner's allow/block rules, ordered by watcher."""
        rows = await self._db.read(lambda tx: tx.all(
            "SELECT owner, watcher, action FROM presence_rules WHERE owner = $1 "
            "ORDER BY watcher", owner), what="presence.rules")
        return [PresenceRule(r["owner"], r["watcher"], r["action"]) for r in rows]

    async def set_rule(self, rule: PresenceRule, *, now: float) -> None:
        """Create or replace the rule for (owner, watcher); logged."""

        async def work(tx: PgTx) -> None:
            await tx.execute(
                "INSERT INTO presence_rules (owner, watcher, action) VALUES ($1, $2, $3) "
                "ON CONFLICT (owner, watcher) DO UPDATE SET action = excluded.action",
                rule.owner, rule.watcher, rule.action)
            tx.log_put("presence-rules", rule_key(rule.owner, rule.watcher), rule, now)

        await self._db.write(work, what="presence.set_rule", retry=R.UNCOMMITTED)

    async def remove_rule(self, owner: str, watcher: str, *, now: float) -> None:
        """Remove the rule for (owner, watcher); a delete is logged only if there was one."""

        async def work(tx: PgTx) -> None:
            if await tx.count("DELETE FROM presence_rules WHERE owner = $1 AND watcher = $2",
                              owner, watcher):
                tx.log_delete("presence-rules", rule_key(owner, watcher), now)

        await self._db.write(work, what="presence.remove_rule", retry=R.UNCOMMITTED)

    async def publications(self, aor: str, event: str, *, now: float) -> list[Publication]:
        """Unexpired publications of `aor` for `event`, soonest expiry first."""
        rows = await self._db.read(lambda tx: tx.all(
            f"SELECT {PUBLICATION_COLUMNS} FROM publications "
            "WHERE aor = $1 AND event = $2 AND expires_at > $3 ORDER BY expires_at, etag",
            aor, event, now), what="presence.publications")
        return [publication_of(r) for r in rows]

    async def publish(self, publication: Publication, *, replaces: str | None,
                      now: float) -> None:
        """Store `publication`. With `replaces`, that etag must be an unexpired publication
        of the same AOR and event (`NotFound` otherwise); it is replaced, and when the new
        etag differs the old one is deleted. Without it, an etag in use is a `Conflict`.
        Expired publications of the AOR are dropped on the way. Every key changed is logged."""
        p = publication

        async def work(tx: PgTx) -> None:
            await tx.lock(LOCK_PRESENCE, p.aor)
            if replaces is not None and await tx.one(
                    "SELECT 1 FROM publications WHERE etag = $1 AND aor = $2 AND event = $3 "
                    "AND expires_at > $4", replaces, p.aor, p.event, now) is None:
                raise NotFound(f"no publication {replaces} of {p.aor} for {p.event}")
            expired = sorted(r[0] for r in await tx.all(
                "DELETE FROM publications WHERE aor = $1 AND expires_at <= $2 RETURNING etag",
                p.aor, now))
            for etag in expired:
                tx.log_delete("presence", etag, now)
            if replaces is not None and replaces != p.etag:
                await tx.execute("DELETE FROM publications WHERE etag = $1", replaces)
                tx.log_delete("presence", replaces, now)
            values = (p.aor, p.etag, p.event, p.content_type, p.body, p.expires_at, p.server)
            if replaces == p.etag:
                await tx.execute(
                    f"INSERT INTO publications ({PUBLICATION_COLUMNS}) {PUBLICATION_VALUES} "
                    "ON CONFLICT (etag) DO UPDATE SET content_type = excluded.content_type, "
                    "body = excluded.body, expires_at = excluded.expires_at, "
                    "server = excluded.server", *values)
            else:
                if await tx.one("SELECT 1 FROM publications WHERE etag = $1",
                                p.etag) is not None:
                    raise Conflict(f"etag {p.etag} is already in use")
                # A plain INSERT: another AOR taking the etag meanwhile is a Conflict too.
                await tx.execute(
                    f"INSERT INTO publications ({PUBLICATION_COLUMNS}) {PUBLICATION_VALUES}",
                    *values)
            tx.log_put("presence", p.etag, p, now)

        await self._db.write(work, what="presence.publish", retry=R.UNCOMMITTED)

    async def unpublish(self, aor: str, etag: str, *, now: float) -> None:
        """Remove an unexpired publication of `aor`; `NotFound` if unknown or expired."""

        async def work(tx: PgTx) -> None:
            await tx.lock(LOCK_PRESENCE, aor)
            if not await tx.count(
                    "DELETE FROM publications WHERE etag = $1 AND aor = $2 AND expires_at > $3",
                    etag, aor, now):
                raise NotFound(f"no publication {etag} of {aor}")
            tx.log_delete("presence", etag, now)

        await self._db.write(work, what="presence.unpublish", retry=R.UNCOMMITTED)

    async def save_subscription(self, subscription: Subscription) -> None:
        """Create or replace a subscription (not logged; an upsert by id: retried even when
        the commit's outcome is unknown)."""
        s = subscription

        async def work(tx: PgTx) -> None:
            await tx.execute(
                f"INSERT INTO subscriptions ({_SUBSCRIPTION_COLUMNS}) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7) "
                "ON CONFLICT (id) DO UPDATE SET subscriber = excluded.subscriber, "
                "target = excluded.target, event = excluded.event, "
                "expires_at = excluded.expires_at, dialog = excluded.dialog, "
                "server = excluded.server",
                s.id, s.subscriber, s.target, s.event, s.expires_at, s.dialog, s.server)

        await self._db.write(work, what="presence.save_subscription", retry=R.ALWAYS)

    async def remove_subscription(self, subscription_id: str) -> None:
        """Forget a subscription (no error if absent)."""

        async def work(tx: PgTx) -> None:
            await tx.execute("DELETE FROM subscriptions WHERE id = $1", subscription_id)

        await self._db.write(work, what="presence.remove_subscription", retry=R.ALWAYS)

    async def subscriptions_to(self, target: str, event: str, *, now: float
                               ) -> list[Subscription]:
        """Unexpired subscriptions watching `target` for `event`, ordered by id."""
        rows = await self._db.read(lambda tx: tx.all(
            f"SELECT {_SUBSCRIPTION_COLUMNS} FROM subscriptions "
            "WHERE target = $1 AND event = $2 AND expires_at > $3 ORDER BY id",
            target, event, now), what="presence.subscriptions_to")
        return [_subscription(r) for r in rows]
