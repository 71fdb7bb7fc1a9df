"""Client side of Persistent Chat (SPEC PC-1, PC-2): a member's connection to the chat
pool, posting, receiving room messages, and the HTTP API for history and search —
with `UserAgent`'s public API.

`ChatMember.connect` opens the connection (an INVITE to ``sip:chat@DOMAIN`` through
the user's Front End); its 200 brings the chat server's name, a bearer token and the
API's address. Room messages arrive as MESSAGEs inside the connection
(`trimaran.roles.chat.sessions`: one per MESSAGE, or a batch when the member is
behind), believed only there. The member keeps the
connection alive with an UPDATE inside it (RFC 3311, a session refresh) every
`keepalive` seconds; when that fails (the chat server died: the Front End cannot
reach it; or it restarted: 481) the member connects again — its Front End picks
another active server — and may read what it missed from the history (`history`,
`everything`).

`post` is acknowledged only once the store committed the message; a post that gets
no answer, or a 503 or 408, is sent again with the same message id (stored once) after
reconnecting, for up to `retry_for` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp

from trimaran.chat.uris import room_of, room_uri, service_uri
from trimaran.client.conference import im_offer
from trimaran.client.dialogs import Call, CallFailed, CallState
from trimaran.client.ua import UserAgent
from trimaran.net.transport import TransportError
from trimaran.roles.chat.server import API_HEADER, SERVER_HEADER, TOKEN_HEADER
from trimaran.roles.chat.sessions import (
    BATCH_TYPE,
    ID_HEADER,
    ROOM_HEADER,
    SENDER_HEADER,
    SEQ_HEADER,
)
from trimaran.sip.errors import SipParseError
from trimaran.sip.headers import NameAddr
from trimaran.sip.message import Request
from trimaran.sip.transaction import TransactionError

log = logging.getLogger(__name__)

RETRYABLE = frozenset({408, 480, 500, 503, 504})


class ChatError(Exception):
    """The chat pool refused (`status`, `reason`)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class RoomMessage:
    """A room message as a member receives or reads it."""

    room: str
    seq: int
    author: str
    body: str
    id: str


@dataclass(eq=False)
class ChatMember:
    """One user's chat client on top of a signed-in `UserAgent`."""

    ua: UserAgent
    domain: str
    keepalive: float = 15.0
    retry_for: float = 30.0
    call: Call | None = None
    server: str | None = None
    token: str | None = None
    api: str | None = None
    received: asyncio.Queue[RoomMessage] = field(default_factory=asyncio.Queue)
    reconnections: int = 0
    _tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    _http: aiohttp.ClientSession | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    # -- the connection -----------------------------------------------------------------
    async def connect(self) -> None:
        """Open the chat connection (`ChatError` when refused) and start listening."""
        await self._open()
        if not self._tasks:
            self._tasks = [asyncio.ensure_future(self._pump()),
                           asyncio.ensure_future(self._keep_alive())]

    async def _open(self) -> None:
        call = self.ua.start_call(service_uri(self.domain), im_offer(self.ua.config.local_host))
        try:
            response = await self.ua.wait_answer(call)
        except CallFailed as exc:
            raise ChatError(exc.status, exc.reason) from exc
        self.call = call
        self.server = response.headers.get(SERVER_HEADER)
        self.token = response.headers.get(TOKEN_HEADER)
        self.api = response.headers.get(API_HEADER)

    async def reconnect(self, deadline: float | None = None) -> None:
        """Open a new connection (the old one is dropped), retrying until `deadline`."""
        async with self._lock:
            old = self.call
            deadline = deadline or time.monotonic() + self.retry_for
            while True:
                if self.call is not old and self.call is not None:
                    return                     # another task reconnected meanwhile
                try:
                    await self._open()
                    self.reconnections += 1
                    log.info("%s: chat connection moved to %s", self.ua.config.aor, self.server)
                    return
                except (ChatError, TransportError, TransactionError, OSError) as exc:
                    if time.monotonic() > deadline:
                        raise ChatError(503, f"cannot reconnect: {exc}") from exc
                await asyncio.sleep(0.3)

    async def close(self) -> None:
        """Hang up the connection, stop the background tasks."""
        for task in self._tasks:
            task.cancel()
        self._tasks = []
        call = self.call
        if call is not None and call.state is CallState.ESTABLISHED:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(call.bye(), 2.0)
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self.keepalive)
            call = self.call
            if call is None or call.dialog is None:
                continue
            try:
                response = await self.ua.send_in_dialog(call.dialog, "UPDATE")
                alive = 200 <= response.status < 300
                if not alive:
                    log.info("%s: chat keepalive answered %d %s", self.ua.config.aor,
                             response.status, response.reason)
            except (TransportError, TransactionError, OSError) as exc:
                log.info("%s: chat keepalive failed: %s", self.ua.config.aor, exc)
                alive = False
            if not alive and self.call is call:
                with contextlib.suppress(ChatError):
                    await self.reconnect()

    async def _pump(self) -> None:
        while True:
            message = await self.ua.messages.get()
            for found in self._room_messages(message):
                self.received.put_nowait(found)

    def _room_messages(self, message: Request) -> list[RoomMessage]:
        """The room messages `message` carries: one, several (a batch), or none when it
        is not from our connection or does not parse."""
        call = self.call
        if call is None or call.dialog is None or not call.dialog.matches(message):
            return []
        if (message.content_type or "").split(";")[0].strip().lower() == BATCH_TYPE:
            try:
                return [_from_json(raw) for raw in json.loads(message.body)]
            except (ValueError, TypeError, KeyError):
                return []
        try:
            room = room_of(NameAddr.parse(message.headers.get(ROOM_HEADER) or "").uri)
            author = NameAddr.parse(message.headers.get(SENDER_HEADER) or "").uri.aor
            seq = int(message.headers.get(SEQ_HEADER) or "")
        except (SipParseError, ValueError):
            return []
        if room is None:
            return []
        return [RoomMessage(room, seq, author, message.body.decode("utf-8", "replace"),
                            message.headers.get(ID_HEADER) or "")]

    async def next_message(self, timeout: float = 5.0) -> RoomMessage:
        """The next room message received (`TimeoutError` after `timeout`)."""
        return await asyncio.wait_for(self.received.get(), timeout)

    # -- posting ------------------------------------------------------------------------
    async def post(self, room: str, text: str, message_id: str | None = None) -> int:
        """Post `text` to `room`; its number once the store committed it. Retried with
        the same id (after reconnecting) on 408/503/no answer for `retry_for` seconds;
        `ChatError` for a refusal."""
        message_id = message_id or f"{self.ua.config.aor}/{secrets.token_hex(8)}"
        deadline = time.monotonic() + self.retry_for
        while True:
            request = self.ua.new_request("MESSAGE", room_uri(self.domain, room))
            request.headers.add(ID_HEADER, message_id)
            request.headers.add("Content-Type", "text/plain;charset=utf-8")
            request.body = text.encode()
            try:
                response = await self.ua.send(request)
                status, reason = response.status, response.reason
            except (TransportError, TransactionError, OSError) as exc:
                status, reason, response = 503, str(exc), None
            if response is not None and 200 <= status < 300:
                return int(response.headers.get(SEQ_HEADER) or "0")
            if status not in RETRYABLE or time.monotonic() > deadline:
                raise ChatError(status, reason)
            await asyncio.sleep(0.2)
            if status != 503 or "failback" not in reason:
                with contextlib.suppress(ChatError):
                    await self.reconnect(deadline)

    # -- the HTTP API ---------------------------------------------------------------------
    async def request(self, method: str, path: str, body: object | None = None,
                      **params: str | int) -> Any:
        """Call the chat API of our server (`ChatError` for an error answer)."""
        if self.api is None or self.token is None:
            raise ChatError(503, "not connected")
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        query = {k: str(v) for k, v in params.items()}
        deadline = time.monotonic() + self.retry_for
        while True:
            async with self._http.request(method, self.api + path, json=body, params=query,
                                          headers={"Authorization": f"Bearer {self.token}"}
                                          ) as response:
                data = await response.json(content_type=None)
                if response.status < 400:
                    return data
                error = ChatError(response.status, str((data or {}).get("error", "")))
            # a read is retried while the server says its store is away for a moment
            if method != "GET" or error.status != 503 or time.monotonic() > deadline:
                raise error
            await asyncio.sleep(0.5)

    async def history(self, room: str, before: int | None = None,
                      limit: int = 50) -> list[RoomMessage]:
        """A page of `room`'s history, newest first."""
        params: dict[str, str | int] = {"limit": limit}
        if before is not None:
            params["before"] = before
        data = await self.request("GET", f"/rooms/{quote(room, safe='')}/messages", **params)
        return [_from_json(m) for m in data["messages"]]

    async def everything(self, room: str) -> list[RoomMessage]:
        """The whole history of `room`, oldest first (paging through it)."""
        out: list[RoomMessage] = []
        after = 0
        while True:
            data = await self.request("GET", f"/rooms/{quote(room, safe='')}/messages",
                                      after=after, limit=200)
            page = [_from_json(m) for m in data["messages"]]
            if not page:
                return out
            out.extend(page)
            after = page[-1].seq

    async def search(self, text: str, room: str | None = None,
                     limit: int = 50) -> list[RoomMessage]:
        """Messages of readable rooms matching `text`."""
        params: dict[str, str | int] = {"q": text, "limit": limit}
        if room is not None:
            params["room"] = room
        data = await self.request("GET", "/search", **params)
        return [_from_json(m) for m in data["messages"]]


def _from_json(raw: dict[str, Any]) -> RoomMessage:
    return RoomMessage(str(raw["room"]), int(raw["seq"]), str(raw["author"]),
                       str(raw["body"]), str(raw["id"]))

