"""The Persistent Chat store: rooms, members, invitations and durable history in
PostgreSQL (SPEC PC-1).

Theory of operation: `ChatStore` runs every operation as one transaction through the
Front End store's `PgDatabase` (connection pool, multi-host DSNs, a read-write server
only, retries with backoff; see `trimaran.store.postgres_db`), and converts its
errors at one boundary (`_boundary`): the database away → `ChatStoreUnavailable`
(retry later), a key taken → `ChatConflict`, a record missing → `ChatNotFound`. The
schema is applied from `trimaran.chat.schema` when the store opens.

**Posting.** `post` locks the room's row (``FOR UPDATE``), so the posts of one room
are serialised: it takes the room's ``last_seq + 1``, inserts the message and writes
the counter back in the same transaction. A rolled-back post consumes no number, so a
room's sequence numbers are 1, 2, 3 … without gaps, in commit order. A message is
durable when `post` returns (its ``COMMIT`` has returned, as durable as the server is
configured: ``synchronous_commit`` and the mirror). The message id is the client's
idempotency key: posting an id already stored returns the stored message, so `post`
is retried even when the connection fails while committing (`Retry.ALWAYS`).

**Rules.** The store is the data layer; the front end checks `trimaran.chat.rules`
before calling it. Two operations apply the rules themselves because the decision must
be atomic with the data: `post` (a non-member posting to an open room joins it in the
same transaction; refusals raise `ChatRefused`) and `search` (only rooms the user may
read). For an actor, a missing room and a secret room they are not in are the same
refusal, ``ChatRefused(404, "no such room")``; operations without an actor raise
`ChatNotFound`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TypeVar

from trimaran.chat import rules
from trimaran.chat.model import Category, Invitation, Membership, Message, Role, Room, RoomKind
from trimaran.chat.rules import ChatRefused
from trimaran.chat.schema import apply_migrations
from trimaran.store.base import Conflict, NotFound, StoreError, StoreUnavailable
from trimaran.store.postgres_db import PgDatabase, PgTx, Record, Retry

T = TypeVar("T")

#: The PostgreSQL notification channel a committed post is announced on ("SEQ|ROOM").
NOTIFY_CHANNEL = "trimaran_chat"
MAX_LIMIT = 1000          # most messages one history, catch-up or search call returns


class ChatStoreError(Exception):
    """Root of the chat store's errors."""


class ChatStoreUnavailable(ChatStoreError):
    """The chat database cannot be reached or refused the operation for now; retry
    later. A post that raised this may or may not be stored: post it again, with the
    same id."""


class ChatConflict(ChatStoreError):
    """The write contradicts stored data (a name taken, an id reused for another
    message, a category still holding rooms)."""


class ChatNotFound(ChatStoreError):
    """The category, room or invitation does not exist."""


_ROOM = "name, category, kind, description, created_at, disabled"
_MESSAGE = "id, room, seq, author, body, posted_at"


def _room(row: Record) -> Room:
    return Room(row["name"], row["category"], RoomKind(row["kind"]), row["description"],
                row["created_at"], row["disabled"])


def _message(row: Record) -> Message:
    return Message(row["room"], row["seq"], row["author"], row["body"], row["posted_at"],
                   row["id"])


def _invitation(row: Record) -> Invitation:
    return Invitation(row["room"], row["aor"], row["invited_by"], row["at"])


def _raise(refusal: ChatRefused | None) -> None:
    if refusal is not None:
        raise refusal


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT}, not {limit}")


async def _read_room(tx: PgTx, name: str, *, lock: bool = False) -> Room | None:
    row = await tx.one(f"SELECT {_ROOM} FROM chat_rooms WHERE name = $1"
                       + (" FOR UPDATE" if lock else ""), name)
    return None if row is None else _room(row)


async def _need_room(tx: PgTx, name: str) -> Room:
    room = await _read_room(tx, name)
    if room is None:
        raise ChatNotFound(f"no such room {name!r}")
    return room


async def _role(tx: PgTx, room: str, user: str) -> Role | None:
    value = await tx.value("SELECT role FROM chat_members WHERE room = $1 AND aor = $2",
                           room, user)
    return None if value is None else Role(value)


async def _put_member(tx: PgTx, m: Membership) -> None:
    await tx.execute("INSERT INTO chat_members (room, aor, role) VALUES ($1, $2, $3) "
                     "ON CONFLICT (room, aor) DO UPDATE SET role = excluded.role",
                     m.room, m.user, m.role.value)


class ChatStore:
    """The chat database (see the module docstring). Open it before use, close it
    after; every method is one transaction."""

    def __init__(self, dsn: str, *, connect_timeout: float = 3.0,
                 command_timeout: float = 5.0, retry_for: float = 10.0,
                 max_size: int = 10) -> None:
        self._db = PgDatabase(dsn, pool="chat", connect_timeout=connect_timeout,
                              command_timeout=command_timeout, retry_for=retry_for,
                              max_size=max_size)
        self.applied_migrations: tuple[int, ...] = ()

    @property
    def is_open(self) -> bool:
        """True between `open` and `close`."""
        return self._db.is_open

    async def open(self) -> None:
        """Connect (waiting up to `connect_timeout`) and apply pending migrations;
        nothing when open already."""
        async with _boundary():
            applied = await self._db.open(apply_migrations)
        if applied is not None:
            self.applied_migrations = tuple(applied)

    async def close(self) -> None:
        """Let operations in flight finish, then close the connections; idempotent."""
        await self._db.close()

    async def _read(self, work: Callable[[PgTx], Awaitable[T]], what: str) -> T:
        async with _boundary():
            return await self._db.read(work, what=what, snapshot=True)

    async def _write(self, work: Callable[[PgTx], Awaitable[T]], what: str,
                     retry: Retry = Retry.ALWAYS) -> T:
        async with _boundary():
            return await self._db.write(work, what=what, retry=retry)

    # --- categories ----------------------------------------------------------------------

    async def add_category(self, category: Category) -> None:
        """Create a category; `ChatConflict` when the name is taken."""
        _raise(rules.may_create_category(category))

        async def work(tx: PgTx) -> None:
            if not await tx.count("INSERT INTO chat_categories (name, description) "
                                  "VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                                  category.name, category.description):
                raise ChatConflict(f"category {category.name!r} exists already")

        await self._write(work, f"adding category {category.name!r}", Retry.UNCOMMITTED)

    async def update_category(self, category: Category) -> None:
        """Replace a category's description; `ChatNotFound` when there is none."""
        _raise(rules.check_description(category.description))

        async def work(tx: PgTx) -> None:
            if not await tx.count("UPDATE chat_categories SET description = $2 "
                                  "WHERE name = $1", category.name, category.description):
                raise ChatNotFound(f"no such category {category.name!r}")

        await self._write(work, f"updating category {category.name!r}")

    async def remove_category(self, name: str) -> bool:
        """Delete an empty category; False when there was none, `ChatConflict` when
        rooms are still in it."""
        async def work(tx: PgTx) -> bool:
            rooms = await tx.value("SELECT count(*) FROM chat_rooms WHERE category = $1", name)
            if rooms:
                raise ChatConflict(f"category {name!r} still holds {rooms} room(s)")
            return bool(await tx.count("DELETE FROM chat_categories WHERE name = $1", name))

        return await self._write(work, f"removing category {name!r}")

    async def category(self, name: str) -> Category:
        """One category; `ChatNotFound` when there is none."""
        async def work(tx: PgTx) -> Category:
            row = await tx.one("SELECT name, description FROM chat_categories "
                               "WHERE name = $1", name)
            if row is None:
                raise ChatNotFound(f"no such category {name!r}")
            return Category(row["name"], row["description"])

        return await self._read(work, f"reading category {name!r}")

    async def categories(self) -> list[Category]:
        """Every category, by name."""
        async def work(tx: PgTx) -> list[Category]:
            rows = await tx.all("SELECT name, description FROM chat_categories ORDER BY name")
            return [Category(r["name"], r["description"]) for r in rows]

        return await self._read(work, "listing categories")

    # --- rooms ---------------------------------------------------------------------------

    async def create_room(self, room: Room, creator: str) -> Room:
        """Create `room` with `creator` as its manager (`rules.may_create_room`: a
        `ChatRefused` 404 when its category does not exist); `ChatConflict` when the
        name is taken."""
        async def work(tx: PgTx) -> Room:
            row = await tx.one("SELECT name, description FROM chat_categories "
                               "WHERE name = $1 FOR KEY SHARE", room.category)
            category = None if row is None else Category(row["name"], row["description"])
            _raise(rules.may_create_room(room, category, creator))
            if not await tx.count(
                    f"INSERT INTO chat_rooms ({_ROOM}) VALUES ($1, $2, $3, $4, $5, $6) "
                    "ON CONFLICT (name) DO NOTHING", room.name, room.category,
                    room.kind.value, room.description, room.created_at, room.disabled):
                raise ChatConflict(f"room {room.name!r} exists already")
            await _put_member(tx, Membership(room.name, creator, Role.MANAGER))
            return room

        return await self._write(work, f"creating room {room.name!r}", Retry.UNCOMMITTED)

    async def room(self, name: str) -> Room:
        """One room; `ChatNotFound` when there is none."""
        async def work(tx: PgTx) -> Room:
            return await _need_room(tx, name)

        return await self._read(work, f"reading room {name!r}")

    async def rooms(self, category: str | None = None) -> list[Room]:
        """Every room (of `category`), by name."""
        async def work(tx: PgTx) -> list[Room]:
            rows = await tx.all(f"SELECT {_ROOM} FROM chat_rooms "
                                "WHERE $1::text IS NULL OR category = $1 ORDER BY name",
                                category)
            return [_room(r) for r in rows]

        return await self._read(work, "listing rooms")

    async def update_room(self, room: Room) -> Room:
        """Replace a room's category, kind, description and disabled flag (its creation
        time stays); the room as stored. `ChatNotFound` when there is none, a
        `ChatRefused` 404 when the new category does not exist."""
        _raise(rules.check_description(room.description))

        async def work(tx: PgTx) -> Room:
            await _need_room(tx, room.name)
            if await tx.value("SELECT 1 FROM chat_categories WHERE name = $1 FOR KEY SHARE",
                              room.category) is None:
                raise ChatRefused(404, f"no such category {room.category!r}")
            row = await tx.one(
                "UPDATE chat_rooms SET category = $2, kind = $3, description = $4, "
                f"disabled = $5 WHERE name = $1 RETURNING {_ROOM}", room.name,
                room.category, room.kind.value, room.description, room.disabled)
            return _room(row)

        return await self._write(work, f"updating room {room.name!r}")

    async def set_disabled(self, name: str, disabled: bool = True) -> Room:
        """Disable (or enable) a room; the room as stored. `ChatNotFound`."""
        async def work(tx: PgTx) -> Room:
            row = await tx.one(f"UPDATE chat_rooms SET disabled = $2 WHERE name = $1 "
                               f"RETURNING {_ROOM}", name, disabled)
            if row is None:
                raise ChatNotFound(f"no such room {name!r}")
            return _room(row)

        return await self._write(work, f"{'dis' if disabled else 'en'}abling room {name!r}")

    async def delete_room(self, name: str) -> bool:
        """Delete a room with its members, invitations and history; False when there
        was none."""
        async def work(tx: PgTx) -> bool:
            return bool(await tx.count("DELETE FROM chat_rooms WHERE name = $1", name))

        return await self._write(work, f"deleting room {name!r}")

    # --- members and invitations -------------------------------------------------------

    async def add_member(self, membership: Membership) -> None:
        """Make `membership.user` a member of the room with the given role (changing the
        role of a member). `ChatNotFound` when the room does not exist."""
        _raise(rules.check_aor(membership.user))

        async def work(tx: PgTx) -> None:
            await _need_room(tx, membership.room)
            await _put_member(tx, membership)

        await self._write(work, f"adding {membership.user} to {membership.room!r}")

    async def remove_member(self, room: str, user: str) -> bool:
        """Remove `user` from `room`; False when they were not a member."""
        async def work(tx: PgTx) -> bool:
            return bool(await tx.count("DELETE FROM chat_members WHERE room = $1 AND aor = $2",
                                       room, user))

        return await self._write(work, f"removing {user} from {room!r}")

    async def role(self, room: str, user: str) -> Role | None:
        """`user`'s role in `room`, None when not a member (or no such room): what the
        rules take."""
        async def work(tx: PgTx) -> Role | None:
            return await _role(tx, room, user)

        return await self._read(work, f"reading {user}'s role in {room!r}")

    async def members(self, room: str) -> list[Membership]:
        """The members of `room`, by address. `ChatNotFound` when there is no room."""
        async def work(tx: PgTx) -> list[Membership]:
            await _need_room(tx, room)
            rows = await tx.all("SELECT room, aor, role FROM chat_members WHERE room = $1 "
                                "ORDER BY aor", room)
            return [Membership(r["room"], r["aor"], Role(r["role"])) for r in rows]

        return await self._read(work, f"listing the members of {room!r}")

    async def memberships(self, user: str) -> list[Membership]:
        """The rooms `user` belongs to, by room name."""
        async def work(tx: PgTx) -> list[Membership]:
            rows = await tx.all("SELECT room, aor, role FROM chat_members WHERE aor = $1 "
                                "ORDER BY room", user)
            return [Membership(r["room"], r["aor"], Role(r["role"])) for r in rows]

        return await self._read(work, f"listing the rooms of {user}")

    async def invite(self, invitation: Invitation) -> None:
        """Store an invitation (replacing an earlier one of the same user to the same
        room). `ChatNotFound` when the room does not exist."""
        _raise(rules.check_aor(invitation.user))

        async def work(tx: PgTx) -> None:
            await _need_room(tx, invitation.room)
            await tx.execute(
                "INSERT INTO chat_invitations (room, aor, invited_by, at) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT (room, aor) DO UPDATE SET "
                "invited_by = excluded.invited_by, at = excluded.at",
                invitation.room, invitation.user, invitation.invited_by, invitation.at)

        await self._write(work, f"inviting {invitation.user} to {invitation.room!r}")

    async def invitations(self, *, room: str | None = None,
                          user: str | None = None) -> list[Invitation]:
        """The pending invitations (to `room`, of `user`), by room then user."""
        async def work(tx: PgTx) -> list[Invitation]:
            rows = await tx.all(
                "SELECT room, aor, invited_by, at FROM chat_invitations "
                "WHERE ($1::text IS NULL OR room = $1) AND ($2::text IS NULL OR aor = $2) "
                "ORDER BY room, aor", room, user)
            return [_invitation(r) for r in rows]

        return await self._read(work, "listing invitations")

    async def withdraw_invitation(self, room: str, user: str) -> bool:
        """Delete an invitation; False when there was none."""
        async def work(tx: PgTx) -> bool:
            return bool(await tx.count(
                "DELETE FROM chat_invitations WHERE room = $1 AND aor = $2", room, user))

        return await self._write(work, f"withdrawing the invitation of {user} to {room!r}")

    async def accept_invitation(self, room: str, user: str) -> Membership:
        """Turn an invitation into membership (a manager stays one), in one transaction;
        the membership. `ChatNotFound` when `user` is not invited to `room`."""
        async def work(tx: PgTx) -> Membership:
            if not await tx.count("DELETE FROM chat_invitations WHERE room = $1 AND aor = $2",
                                  room, user):
                raise ChatNotFound(f"{user} is not invited to {room!r}")
            role = await _role(tx, room, user) or Role.MEMBER
            membership = Membership(room, user, role)
            await _put_member(tx, membership)
            return membership

        return await self._write(work, f"accepting the invitation of {user} to {room!r}")

    # --- messages ------------------------------------------------------------------------

    async def post(self, message: Message) -> Message:
        """Store `message` (its `seq` is ignored) as the room's next one; the stored
        message, durable when this returns. Posting an id already stored returns the
        stored message (`ChatConflict` when it was another room's or author's). Applies
        `rules.may_post` (`ChatRefused`); a non-member posting to an open room joins it."""
        _raise(rules.check_message_id(message.id) or rules.check_aor(message.author)
               or rules.check_body(message.body))

        async def work(tx: PgTx) -> Message:
            room = await _read_room(tx, message.room, lock=True)
            stored = await _stored(tx, message)
            if stored is not None:
                return stored
            role = None if room is None else await _role(tx, room.name, message.author)
            _raise(rules.may_post(room, role))
            assert room is not None
            if rules.joins_on_post(room, role):
                await _put_member(tx, Membership(room.name, message.author, Role.MEMBER))
            seq = int(await tx.value("SELECT last_seq FROM chat_rooms WHERE name = $1",
                                     room.name)) + 1
            row = await tx.one(
                f"INSERT INTO chat_messages ({_MESSAGE}) VALUES ($1, $2, $3, $4, $5, $6) "
                f"ON CONFLICT (id) DO NOTHING RETURNING {_MESSAGE}", message.id, room.name,
                seq, message.author, message.body, message.posted_at)
            if row is None:             # the same id committed meanwhile, to another room
                stored = await _stored(tx, message)
                assert stored is not None
                return stored
            await tx.execute("UPDATE chat_rooms SET last_seq = $2 WHERE name = $1",
                             room.name, seq)
            # Delivered to the chat servers' listeners when (and only if) this commits.
            await tx.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, f"{seq}|{room.name}")
            return _message(row)

        return await self._write(work, f"posting {message.id!r} to {message.room!r}")

    async def message(self, message_id: str) -> Message:
        """The message with this id; `ChatNotFound` when there is none."""
        async def work(tx: PgTx) -> Message:
            row = await tx.one(f"SELECT {_MESSAGE} FROM chat_messages WHERE id = $1",
                               message_id)
            if row is None:
                raise ChatNotFound(f"no message {message_id!r}")
            return _message(row)

        return await self._read(work, f"reading message {message_id!r}")

    async def history(self, room: str, before_seq: int | None = None,
                      limit: int = 50) -> list[Message]:
        """Up to `limit` messages of `room` numbered below `before_seq` (default: the
        latest ones), newest first. `ChatNotFound` when there is no room."""
        _check_limit(limit)

        async def work(tx: PgTx) -> list[Message]:
            await _need_room(tx, room)
            rows = await tx.all(
                f"SELECT {_MESSAGE} FROM chat_messages WHERE room = $1 "
                "AND ($2::bigint IS NULL OR seq < $2) ORDER BY seq DESC LIMIT $3",
                room, before_seq, limit)
            return [_message(r) for r in rows]

        return await self._read(work, f"reading the history of {room!r}")

    async def after(self, room: str, seq: int, limit: int = 50) -> list[Message]:
        """Up to `limit` messages of `room` numbered above `seq`, oldest first (catching
        up from the last one seen). `ChatNotFound` when there is no room."""
        _check_limit(limit)

        async def work(tx: PgTx) -> list[Message]:
            await _need_room(tx, room)
            rows = await tx.all(
                f"SELECT {_MESSAGE} FROM chat_messages WHERE room = $1 AND seq > $2 "
                "ORDER BY seq LIMIT $3", room, seq, limit)
            return [_message(r) for r in rows]

        return await self._read(work, f"catching up on {room!r}")

    async def last_seq(self, room: str) -> int:
        """The number of the room's latest message (0 before the first). `ChatNotFound`."""
        async def work(tx: PgTx) -> int:
            value = await tx.value("SELECT last_seq FROM chat_rooms WHERE name = $1", room)
            if value is None:
                raise ChatNotFound(f"no such room {room!r}")
            return int(value)

        return await self._read(work, f"reading the last seq of {room!r}")

    async def last_seqs(self, rooms: Sequence[str]) -> dict[str, int]:
        """The latest message number of each of `rooms` that exists (one query)."""
        async def work(tx: PgTx) -> dict[str, int]:
            rows = await tx.all("SELECT name, last_seq FROM chat_rooms WHERE name = ANY($1)",
                                list(rooms))
            return {str(r["name"]): int(r["last_seq"]) for r in rows}

        return await self._read(work, "reading the rooms' last seqs")

    async def beat(self, server: str, at: float) -> None:
        """Record that chat server `server` is alive at `at`: a commit every beat keeps
        the log-shipped copy's last replayed commit time fresh, so the shipping lag in
        seconds means what it says even when nobody posts."""
        async def work(tx: PgTx) -> None:
            await tx.execute("INSERT INTO chat_heartbeats (server, at) VALUES ($1, $2) "
                             "ON CONFLICT (server) DO UPDATE SET at = EXCLUDED.at", server, at)

        await self._write(work, "recording a heartbeat")

    async def search(self, room: str | None, text: str, user: str,
                     limit: int = 50) -> list[Message]:
        """Messages matching `text` (PostgreSQL web-search syntax: words, "phrases", or,
        -word; the 'simple' configuration) in `room`, or in every room `user` may read
        (`rules.may_read`), newest first. A room `user` may not read raises
        `ChatRefused` (404 for a secret or missing one). Blank text finds nothing."""
        _check_limit(limit)
        if not text.strip():
            return []

        async def work(tx: PgTx) -> list[Message]:
            if room is not None:
                target = await _read_room(tx, room)
                role = None if target is None else await _role(tx, room, user)
                _raise(rules.may_read(target, role))
            rows = await tx.all(
                f"SELECT {', '.join('m.' + c for c in _MESSAGE.split(', '))} "
                "FROM chat_messages m JOIN chat_rooms r ON r.name = m.room "
                "WHERE m.body_tsv @@ websearch_to_tsquery('simple', $1) "
                "AND ($2::text IS NULL OR m.room = $2) "
                "AND (r.kind = ANY($3::text[]) OR EXISTS (SELECT 1 FROM chat_members c "
                "     WHERE c.room = m.room AND c.aor = $4)) "
                "ORDER BY m.posted_at DESC, m.room, m.seq DESC LIMIT $5",
                text, room, sorted(k.value for k in rules.READABLE_BY_ANYONE), user, limit)
            return [_message(r) for r in rows]

        return await self._read(work, f"searching {room or 'all rooms'!r} for {user}")


async def _stored(tx: PgTx, message: Message) -> Message | None:
    """The message stored under `message.id`, None when none; `ChatConflict` when that
    id belongs to a message of another room or author."""
    row = await tx.one(f"SELECT {_MESSAGE} FROM chat_messages WHERE id = $1", message.id)
    if row is None:
        return None
    stored = _message(row)
    if (stored.room, stored.author) != (message.room, message.author):
        raise ChatConflict(f"message id {message.id!r} is already used by another message")
    return stored


@contextlib.asynccontextmanager
async def _boundary() -> AsyncIterator[None]:
    """Convert the Front End store's errors (raised by `PgDatabase`) into chat errors."""
    try:
        yield
    except StoreUnavailable as exc:
        raise ChatStoreUnavailable(f"chat store: {exc}") from exc
    except Conflict as exc:
        raise ChatConflict(f"chat store: {exc}") from exc
    except NotFound as exc:
        raise ChatNotFound(f"chat store: {exc}") from exc
    except StoreError as exc:
        raise ChatStoreError(f"chat store: {exc}") from exc
