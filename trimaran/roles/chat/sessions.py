"""The chat connections of one chat server and the room messages sent down them
(SPEC PC-1, PC-2).

A connection is the dialog of an INVITE to ``sip:chat@DOMAIN`` a Front End sent here
(`trimaran.roles.frontend.chat`); the Front End record-routes, so requests inside it
go through the Front End to the user's client. A room message is delivered as a
MESSAGE inside the connection, ``From`` the service, with the room's URI in
`ROOM_HEADER`, its author in `SENDER_HEADER`, its number in `SEQ_HEADER` and its id in
`ID_HEADER` (`trimaran.client.chat` believes them only inside its own connection).

Requests inside one connection go one at a time, in the order they were queued (an
outbox per connection), so a member sees each room's messages in order. When a member
falls behind — messages queue while one is on its way — the next request carries
every queued message at once (up to `BATCH_BYTES`): one MESSAGE of type `BATCH_TYPE`,
a JSON list of ``{room, seq, author, id, body}``. So a busy room costs a transaction
per member per round trip, not per message, and the fan-out degrades into larger
batches instead of a growing queue. A connection
whose client answers "gone" (481, 404, 408 …) or fails `MAX_FAILURES` requests in a
row is closed. The client keeps it alive with UPDATE inside the dialog: answered 200
while it exists here, 481 after this server restarted (the client then reconnects).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from trimaran.chat.model import Message
from trimaran.chat.uris import room_uri
from trimaran.client.ua import uri_address
from trimaran.net.endpoint import SipEndpoint
from trimaran.net.transport import Address, TransportError
from trimaran.sip.dialog import Dialog
from trimaran.sip.message import Request, Response

log = logging.getLogger(__name__)

ROOM_HEADER = "X-Trimaran-Room"
SENDER_HEADER = "X-Trimaran-Sender"
SEQ_HEADER = "X-Trimaran-Seq"
ID_HEADER = "X-Trimaran-Message-Id"
#: Answers meaning the dialog is gone at the other end (or unreachable for good).
GONE = frozenset({404, 408, 410, 430, 480, 481})
MAX_FAILURES = 3
#: Messages queued for one connection beyond which it is closed (a client too slow).
MAX_QUEUED = 2000
#: Content type of a MESSAGE carrying several room messages.
BATCH_TYPE = "application/vnd.trimaran.chat-batch+json"
#: Most bytes of message bodies sent in one MESSAGE (SIP messages stay under 64 KiB).
BATCH_BYTES = 40_000


@dataclass(eq=False)
class Connection:
    """One member's chat connection (a dialog of ours)."""

    user: str
    dialog: Dialog
    transport: str
    outbox: deque[Message] = field(default_factory=deque)
    sending: bool = False
    failures: int = 0
    gone: bool = False
    acked: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def key(self) -> tuple[str, str]:
        """As requests inside the dialog name it: Call-ID and our tag."""
        return self.dialog.key

    @property
    def hop(self) -> Address:
        """Where requests inside the dialog go first (the Front End that routed it)."""
        return uri_address(self.dialog.first_hop, self.transport)


class Connections:
    """Every chat connection of this server, by dialog and by user."""

    def __init__(self, endpoint: SipEndpoint, domain: str,
                 spawn: Callable[[Coroutine[Any, Any, Any]], None]) -> None:
        self.endpoint = endpoint
        self.domain = domain
        self._spawn = spawn
        self.by_key: dict[tuple[str, str], Connection] = {}
        self.by_user: dict[str, set[Connection]] = {}
        self.delivered = 0
        self.failed = 0
        self.closed = 0

    def __len__(self) -> int:
        return len(self.by_key)

    @property
    def users(self) -> set[str]:
        """Users with at least one connection here."""
        return set(self.by_user)

    def add(self, connection: Connection) -> None:
        """Start tracking `connection`."""
        self.by_key[connection.key] = connection
        self.by_user.setdefault(connection.user, set()).add(connection)

    def find(self, call_id: str, local_tag: str) -> Connection | None:
        """The connection a request inside a dialog belongs to."""
        return self.by_key.get((call_id, local_tag))

    def close(self, connection: Connection, why: str) -> None:
        """Forget `connection` (what is queued for it is dropped)."""
        connection.gone = True
        connection.outbox.clear()
        if self.by_key.pop(connection.key, None) is None:
            return
        mine = self.by_user.get(connection.user)
        if mine is not None:
            mine.discard(connection)
            if not mine:
                del self.by_user[connection.user]
        self.closed += 1
        log.info("chat connection of %s closed (%s)", connection.user, why)

    def deliver(self, message: Message, members: set[str]) -> int:
        """Queue `message` for every connection of every member but its author; how
        many connections it was queued for."""
        count = 0
        for user in members & set(self.by_user):
            if user == message.author:
                continue
            for connection in list(self.by_user.get(user, ())):
                self._send(connection, message)
                count += 1
        return count

    def _request(self, connection: Connection, batch: list[Message]) -> Request:
        request = connection.dialog.create_request(
            "MESSAGE", via=self.endpoint.via(connection.transport))
        if len(batch) == 1:
            message = batch[0]
            request.headers.add(ROOM_HEADER, f"<{room_uri(self.domain, message.room)}>")
            request.headers.add(SENDER_HEADER, f"<{message.author}>")
            request.headers.add(SEQ_HEADER, str(message.seq))
            request.headers.add(ID_HEADER, message.id)
            request.headers.add("Content-Type", "text/plain;charset=utf-8")
            request.body = message.body.encode()
            return request
        request.headers.add("Content-Type", BATCH_TYPE)
        request.body = json.dumps(
            [{"room": m.room, "seq": m.seq, "author": m.author, "id": m.id, "body": m.body}
             for m in batch], ensure_ascii=False, separators=(",", ":")).encode()
        return request

    def _send(self, connection: Connection, message: Message) -> None:
        if connection.gone:
            return
        if len(connection.outbox) >= MAX_QUEUED:
            self.close(connection, f"more than {MAX_QUEUED} messages waiting")
            return
        connection.outbox.append(message)
        if not connection.sending:
            connection.sending = True
            self._spawn(self._drain(connection))

    async def _drain(self, connection: Connection) -> None:
        try:
            while connection.outbox and not connection.gone:
                batch = [connection.outbox.popleft()]
                size = len(batch[0].body.encode())
                while connection.outbox:
                    size += len(connection.outbox[0].body.encode()) + 200
                    if size > BATCH_BYTES:
                        break
                    batch.append(connection.outbox.popleft())
                request = self._request(connection, batch)
                try:
                    response = await self.endpoint.request(request, connection.hop)
                except TransportError as exc:
                    response = Response.for_request(request, 503, str(exc)[:80])
                self._delivered(connection, request, response, len(batch))
        finally:
            connection.sending = False

    def _delivered(self, connection: Connection, request: Request,
                   response: Response, count: int) -> None:
        if 200 <= response.status < 300:
            connection.failures = 0
            self.delivered += count
            return
        connection.failures += 1
        self.failed += 1
        log.info("chat: %s to %s answered %d %s", request.method, connection.user,
                 response.status, response.reason)
        if response.status in GONE or connection.failures >= MAX_FAILURES:
            self.close(connection, f"{request.method} answered {response.status}")

    async def retransmit_2xx(self, connection: Connection, response: Response,
                             send: Callable[[Response], Coroutine[Any, Any, object]],
                             t1: float, t2: float) -> None:
        """RFC 3261 §13.3.1.4: over an unreliable transport, our 2xx again until the
        ACK comes."""
        interval, waited = t1, 0.0
        while waited < 64 * t1 and not connection.acked.is_set() and not connection.gone:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(connection.acked.wait(), interval)
            waited += interval
            if connection.acked.is_set() or connection.key not in self.by_key:
                return
            with contextlib.suppress(TransportError):
                await send(response)
            interval = min(interval * 2, t2)
