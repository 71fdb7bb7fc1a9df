"""The records of Persistent Chat (SPEC PC-1): categories, rooms, memberships,
invitations and messages.

Frozen dataclasses, no behaviour: validation lives in `trimaran.chat.rules`, storage
in `trimaran.chat.store`. Users are named by their AOR (``sip:alice@example.com``);
times are seconds since the epoch (the clock is the caller's).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

#: The largest message body, in bytes of UTF-8.
MAX_BODY_BYTES = 16 * 1024


class RoomKind(StrEnum):
    """Who sees and reads a room: everyone (open), everyone sees it but only members
    read it (closed), only members know it exists (secret)."""

    OPEN = "open"
    CLOSED = "closed"
    SECRET = "secret"


class Role(StrEnum):
    """A member's role in a room; managers change the room and its membership."""

    MEMBER = "member"
    MANAGER = "manager"


@dataclass(frozen=True, slots=True)
class Category:
    """A group of rooms."""

    name: str
    description: str = ""


@dataclass(frozen=True, slots=True)
class Room:
    """A chat room; `name` is its key. A disabled room keeps its history but takes no
    posts."""

    name: str
    category: str
    kind: RoomKind
    description: str = ""
    created_at: float = 0.0
    disabled: bool = False


@dataclass(frozen=True, slots=True)
class Membership:
    """`user` belongs to `room` with `role`."""

    room: str
    user: str
    role: Role = Role.MEMBER


@dataclass(frozen=True, slots=True)
class Invitation:
    """`invited_by` invited `user` to `room` at time `at`."""

    room: str
    user: str
    invited_by: str
    at: float


@dataclass(frozen=True, slots=True)
class Message:
    """One message of a room's history.

    `seq` numbers a room's messages 1, 2, 3 … without gaps, in commit order; the store
    assigns it (a message to post carries 0). `id` is the client's idempotency key: a
    message posted twice with one id is stored once."""

    room: str
    seq: int
    author: str
    body: str
    posted_at: float
    id: str
