"""Room messages from the chat store to the members connected to this chat server
(SPEC PC-1: "delivery to every connected member"), whichever server took the post.

Every post commits a notification ``SEQ|ROOM`` on `NOTIFY_CHANNEL` (`ChatStore.post`);
each chat server listens on one connection of its own. A notification wakes the room:
the server reads the room's messages after the last one it delivered (`ChatStore.after`,
in order) and queues each for its connected members. The notifications are only a
wake-up: the room's numbers are the truth. So a lost notification (the listening
connection broke, the principal failed over) costs nothing but latency: after every
(re)connection, and every `CATCH_UP_SECONDS` anyway, the server compares the rooms it
follows with their latest numbers and catches up.

A room is followed from the first notification seen for it (its messages before that
are history, read over the HTTP API). When the store is replaced (chat failover), a
room whose latest number is now lower than what was delivered (posts the log-shipped
copy never received) is followed from there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from trimaran.chat.model import Message
from trimaran.chat.store import NOTIFY_CHANNEL, ChatStore, ChatStoreError

log = logging.getLogger(__name__)

CATCH_UP_SECONDS = 2.0
RECONNECT_SECONDS = 0.5
PAGE = 200
MEMBERS_TTL = 2.0


class Fanout:
    """Delivers new room messages to this server's connections (`deliver`)."""

    def __init__(self, store: Callable[[], ChatStore | None], dsn: Callable[[], str | None],
                 deliver: Callable[[Message, set[str]], int],
                 wanted: Callable[[], set[str]]) -> None:
        self._store = store
        self._dsn = dsn
        self._deliver = deliver
        self._wanted = wanted                  # users connected here
        self.delivered: dict[str, int] = {}    # room -> last seq delivered
        self._dirty: dict[str, int] = {}       # room -> highest seq announced
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._members: dict[str, tuple[set[str], float]] = {}
        self._listener: asyncio.Task[None] | None = None
        self._catcher: asyncio.Task[None] | None = None
        self._reconnected = asyncio.Event()
        self.listening = False
        self.notifications = 0
        self.messages = 0

    def start(self) -> None:
        """Listen and catch up in the background."""
        self._listener = asyncio.ensure_future(self._listen())
        self._catcher = asyncio.ensure_future(self._catch_up_loop())

    async def stop(self) -> None:
        """Stop listening and delivering."""
        tasks = [t for t in (self._listener, self._catcher, *self._workers.values()) if t]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def store_replaced(self) -> None:
        """The store behind `store()` changed: listen again and catch up at once."""
        if self._listener is not None:
            self._listener.cancel()
        self._listener = asyncio.ensure_future(self._listen())

    def wake(self, room: str, seq: int) -> None:
        """`room` has messages up to `seq` (a notification, or a post taken here)."""
        if room not in self.delivered:
            self.delivered[room] = seq - 1
        if seq <= self.delivered[room]:
            return
        self._dirty[room] = max(seq, self._dirty.get(room, 0))
        worker = self._workers.get(room)
        if worker is None or worker.done():
            self._workers[room] = asyncio.ensure_future(self._work(room))

    def invalidate_members(self, room: str | None = None) -> None:
        """Forget cached memberships (of `room`, or all)."""
        if room is None:
            self._members.clear()
        else:
            self._members.pop(room, None)

    def status(self) -> dict[str, object]:
        """For /status."""
        return {"listening": self.listening, "rooms_followed": len(self.delivered),
                "notifications": self.notifications, "messages_delivered": self.messages}

    # -- the listening connection -----------------------------------------------------
    async def _listen(self) -> None:
        while True:
            dsn = self._dsn()
            conn: Any = None
            try:
                if dsn is None:
                    raise OSError("no store yet")
                conn = await asyncpg.connect(dsn, timeout=3)
                closed = asyncio.Event()
                conn.add_termination_listener(lambda _c, ended=closed: ended.set())
                await conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
                self.listening = True
                self._reconnected.set()
                while not closed.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(closed.wait(), 1.0)
                    if not closed.is_set():
                        await asyncio.wait_for(conn.fetchval("SELECT 1"), 2.0)
            except asyncio.CancelledError:
                raise
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError,
                    TimeoutError) as exc:   # unreachable, failing over, killed: again
                log.debug("chat listener: %s", exc)
            finally:
                self.listening = False
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.terminate()
            await asyncio.sleep(RECONNECT_SECONDS)

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        seq_text, _, room = payload.partition("|")
        try:
            seq = int(seq_text)
        except ValueError:
            return
        self.notifications += 1
        self.wake(room, seq)

    # -- catching up ------------------------------------------------------------------
    async def _catch_up_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reconnected.wait(), CATCH_UP_SECONDS)
            self._reconnected.clear()
            with contextlib.suppress(ChatStoreError, OSError):
                await self.catch_up()

    async def catch_up(self) -> None:
        """Compare the followed rooms with their latest numbers; deliver what is new."""
        store = self._store()
        if store is None or not self.delivered:
            return
        before = dict(self.delivered)
        latest = await store.last_seqs(list(before))
        for room, seq in latest.items():
            busy = room in self._workers and not self._workers[room].done()
            if seq < self.delivered.get(room, 0) and not busy \
                    and self.delivered.get(room) == before.get(room):
                # a replaced store lacks some posts (a read that merely started before a
                # commit delivered meanwhile is not that: `delivered` moved, or a worker runs)
                log.warning("room %s: the store's latest message is %d, %d was delivered",
                            room, seq, self.delivered[room])
                self.delivered[room] = seq
            elif seq > self.delivered.get(room, 0):
                self.wake(room, seq)

    # -- delivering one room ------------------------------------------------------------
    async def _work(self, room: str) -> None:
        while self._dirty.get(room, 0) > self.delivered.get(room, 0):
            store = self._store()
            if store is None:
                await asyncio.sleep(RECONNECT_SECONDS)
                continue
            try:
                members = await self._members_of(store, room) & self._wanted()
                if not members:                        # nobody here to tell
                    self.delivered[room] = self._dirty[room]
                    break
                batch = await store.after(room, self.delivered[room], PAGE)
            except ChatStoreError as exc:
                log.info("room %s: cannot read new messages yet (%s)", room, exc)
                await asyncio.sleep(RECONNECT_SECONDS)
                continue
            if not batch:
                break
            for message in batch:
                self._deliver(message, members)
                self.messages += 1
            self.delivered[room] = batch[-1].seq
        self._dirty.pop(room, None)

    async def _members_of(self, store: ChatStore, room: str) -> set[str]:
        cached = self._members.get(room)
        now = time.monotonic()
        if cached is not None and now - cached[1] < MEMBERS_TTL:
            return cached[0]
        members = {m.user for m in await store.members(room)}
        self._members[room] = (members, now)
        return members

