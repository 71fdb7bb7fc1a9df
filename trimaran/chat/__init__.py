"""Persistent Chat (SPEC §10, PC-1): chat rooms with durable history.

`model` holds the records, `rules` who may do what (pure), `schema` the PostgreSQL
migrations of the chat database and `store` the asyncpg-backed `ChatStore`.
"""

from trimaran.chat.model import (
    MAX_BODY_BYTES,
    Category,
    Invitation,
    Membership,
    Message,
    Role,
    Room,
    RoomKind,
)
from trimaran.chat.rules import ChatRefused
from trimaran.chat.store import (
    ChatConflict,
    ChatNotFound,
    ChatStore,
    ChatStoreError,
    ChatStoreUnavailable,
)

__all__ = [
    "MAX_BODY_BYTES",
    "Category",
    "ChatConflict",
    "ChatNotFound",
    "ChatRefused",
    "ChatStore",
    "ChatStoreError",
    "ChatStoreUnavailable",
    "Invitation",
    "Membership",
    "Message",
    "Role",
    "Room",
    "RoomKind",
]
