"""Client side of IM conferences (SPEC APP-7): join a meeting's focus, watch its roster,
say something, hear what the others say — with `UserAgent`'s public API only.

A meeting's focus URI is `trimaran.roles.frontend.apps.focus_uri(organizer, id)`.
Messages from the conference arrive as MESSAGEs inside the joined call's dialog, From
the focus, naming their author in ``X-Trimaran-Sender`` (`trimaran.apps.conference`);
`heard` believes that header only on a MESSAGE inside the call's own dialog.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from trimaran.apps.conference import SENDER_HEADER
from trimaran.apps.conference_info import (
    CONTENT_TYPE,
    EVENT,
    ConferenceInfoError,
    Roster,
    RosterGap,
    parse,
)
from trimaran.client.dialogs import Call, Subscription
from trimaran.client.ua import UserAgent
from trimaran.sip.errors import SipParseError
from trimaran.sip.headers import Headers, NameAddr
from trimaran.sip.message import Request, Response


class ConferenceError(Exception):
    """The focus refused a subscription (`status`, `reason`)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


def im_offer(host: str) -> bytes:
    """An SDP offer for an IM session (``m=message``, text/plain)."""
    family = "IP6" if ":" in host else "IP4"
    return (f"v=0\r\no=- 0 0 IN {family} {host}\r\ns=im\r\nc=IN {family} {host}\r\n"
            "t=0 0\r\nm=message 5060 sip null\r\na=accept-types:text/plain\r\n").encode()


async def join(ua: UserAgent, focus: str) -> Call:
    """Join the conference at `focus` (an IM session); the established call, or
    `CallFailed` with the focus's answer (404 for a meeting that does not exist)."""
    return await ua.invite(focus, im_offer(ua.config.local_host))


async def say(ua: UserAgent, call: Call, text: str) -> Response:
    """Send `text` to the conference inside the joined call; the focus's answer."""
    if call.dialog is None:
        raise RuntimeError("the call has no dialog (not joined)")
    return await ua.send_in_dialog(call.dialog, "MESSAGE",
                                   headers=Headers([("Content-Type", "text/plain")]),
                                   body=text.encode())


@dataclass(frozen=True, slots=True)
class ConferenceMessage:
    """A message someone wrote in the conference."""

    sender: str                   # the author's AOR
    display: str | None
    text: str
    request: Request


def received(call: Call, message: Request) -> ConferenceMessage | None:
    """`message` as a conference message of `call` (None when it is not one: outside
    the call's dialog, or without a sender)."""
    dialog = call.dialog
    if dialog is None or not dialog.matches(message):
        return None
    value = message.headers.get(SENDER_HEADER)
    if value is None:
        return None
    try:
        sender = NameAddr.parse(value)
    except SipParseError:
        return None
    return ConferenceMessage(sender.uri.aor, sender.display_name,
                             message.body.decode("utf-8", "replace"), message)


async def heard(ua: UserAgent, call: Call, timeout: float = 5.0) -> ConferenceMessage:
    """The next message of the conference joined with `call` (`TimeoutError` after
    `timeout`). Other MESSAGEs the agent receives meanwhile go back to its queue,
    after any that arrived since."""
    deadline = time.monotonic() + timeout
    others: list[Request] = []
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no conference message within {timeout} s")
            message = await ua.next_message(left)
            found = received(call, message)
            if found is not None:
                return found
            others.append(message)
    finally:
        for message in others:
            ua.messages.put_nowait(message)


@dataclass(eq=False)
class RosterWatch:
    """A subscription to a conference's roster and what it has told us so far."""

    ua: UserAgent
    focus: str
    subscription: Subscription
    roster: Roster = field(default_factory=Roster)
    notifications: int = 0

    @property
    def participants(self) -> list[str]:
        """Who is in the conference now, as far as we know (AORs)."""
        return self.roster.participants()

    async def next_update(self, timeout: float = 5.0) -> Roster:
        """Wait for the next NOTIFY and apply it. A version we missed makes us refresh
        the subscription (which brings the full state)."""
        notify = await self.subscription.next_notify(timeout)
        self.notifications += 1
        try:
            self.roster.apply(parse(notify.body))
        except RosterGap:
            await self.subscription.refresh()
        except ConferenceInfoError:
            pass              # an unusable document: the next one will tell
        return self.roster

    async def wait_until(self, predicate: Callable[[Roster], bool],
                         timeout: float = 5.0) -> Roster:
        """Apply NOTIFYs until `predicate(roster)` holds (`TimeoutError` after
        `timeout`)."""
        deadline = time.monotonic() + timeout
        while not predicate(self.roster):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"roster of {self.focus}: condition not met in {timeout} s")
            await self.next_update(left)
        return self.roster

    async def close(self) -> Response:
        """Unsubscribe (Expires: 0)."""
        return await self.subscription.unsubscribe()


async def roster(ua: UserAgent, focus: str, *, expires: int = 600) -> RosterWatch:
    """Subscribe to the roster of the conference at `focus` (RFC 4575);
    `ConferenceError` when the focus refuses (404: no such meeting)."""
    subscription, response = await ua.subscribe(focus, event=EVENT, expires=expires,
                                                accept=CONTENT_TYPE)
    if not 200 <= response.status < 300:
        raise ConferenceError(response.status, response.reason)
    return RosterWatch(ua, focus, subscription)

