"""Calls and subscriptions held by the client user agent (signalling only)."""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from trimaran.sip.dialog import Dialog
from trimaran.sip.headers import Headers
from trimaran.sip.message import Request, Response

if TYPE_CHECKING:
    from trimaran.client.ua import Exchange, UserAgent
    from trimaran.net.endpoint import IncomingRequest


class CallState(enum.Enum):
    """Where a call is in its life."""

    CALLING = "calling"
    RINGING = "ringing"
    ESTABLISHED = "established"
    ENDED = "ended"
    FAILED = "failed"


class CallFailed(Exception):
    """An outgoing call was not answered with a 2xx."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


@dataclass(eq=False)
class Call:
    """One call, outgoing or incoming. `ended` is set when either side hangs up."""

    ua: UserAgent
    call_id: str
    outgoing: bool
    invite: Request | None = None
    dialog: Dialog | None = None
    state: CallState = CallState.CALLING
    remote_body: bytes = b""
    provisional: list[int] = field(default_factory=list)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    acked: asyncio.Event = field(default_factory=asyncio.Event)
    incoming: IncomingRequest | None = None
    local_tag: str | None = None
    end_reason: str = ""
    pending: asyncio.Future[Exchange] | None = None

    async def bye(self) -> Response:
        """Hang up an established call (§15.1.1)."""
        if self.dialog is None or self.state is not CallState.ESTABLISHED:
            raise RuntimeError(f"cannot hang up a call in state {self.state.value}")
        response = await self.ua.send_in_dialog(self.dialog, "BYE")
        self._end("local BYE")
        return response

    async def reinvite(self, body: bytes = b"") -> Response:
        """Send a re-INVITE inside the dialog and ACK its 2xx (§14.1)."""
        if self.dialog is None or self.state is not CallState.ESTABLISHED:
            raise RuntimeError(f"cannot re-INVITE a call in state {self.state.value}")
        return await self.ua.reinvite(self, body)

    async def answer(self, body: bytes = b"", content_type: str = "application/sdp") -> None:
        """Answer an incoming call with 200 OK and wait for nothing (ACK arrives later)."""
        await self.ua.answer_call(self, 200, body, content_type)

    async def reject(self, status: int = 486) -> None:
        """Refuse an incoming call with a final error response."""
        await self.ua.answer_call(self, status, b"", None)

    async def cancel(self) -> None:
        """CANCEL an outgoing call that has not been answered yet (§9.1)."""
        await self.ua.cancel_call(self)

    async def wait_ended(self, timeout: float = 5.0) -> None:
        """Wait until the call ends (BYE either way, CANCEL, failure)."""
        await asyncio.wait_for(self.ended.wait(), timeout)

    def _end(self, reason: str, state: CallState = CallState.ENDED) -> None:
        if self.state not in (CallState.ENDED, CallState.FAILED):
            self.state = state
            self.end_reason = reason
        self.ended.set()


@dataclass(eq=False)
class Subscription:
    """A SUBSCRIBE dialog (RFC 6665) and the NOTIFYs received in it."""

    ua: UserAgent
    event: str
    target: str
    dialog: Dialog | None = None
    notifications: asyncio.Queue[Request] = field(default_factory=asyncio.Queue)
    terminated: asyncio.Event = field(default_factory=asyncio.Event)
    state: str = "pending"
    expires: int = 0

    async def next_notify(self, timeout: float = 5.0) -> Request:
        """The next NOTIFY received (waits up to `timeout`)."""
        return await asyncio.wait_for(self.notifications.get(), timeout)

    async def refresh(self, expires: int | None = None) -> Response:
        """Refresh (or with 0, end) the subscription inside its dialog."""
        if self.dialog is None:
            raise RuntimeError("subscription has no dialog")
        headers = Headers()
        headers.add("Event", self.event)
        headers.add("Expires", str(self.expires if expires is None else expires))
        return await self.ua.send_in_dialog(self.dialog, "SUBSCRIBE", headers=headers)

    async def unsubscribe(self) -> Response:
        """End the subscription (SUBSCRIBE with Expires: 0, RFC 6665 §4.1.2.3)."""
        return await self.refresh(0)
