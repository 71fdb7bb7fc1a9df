"""The data a pool keeps, behind repository interfaces (`base`) with written contracts.

Backends: `SqliteStore` (embedded, Standard Edition) and `PostgresStore` (networked,
mirrored, Enterprise Edition). Records are the frozen values of `model`; `codec`
encodes them for change-log payloads.
"""

from trimaran.store.base import (
    BindingRepository,
    ChangeLog,
    Conflict,
    ContactListRepository,
    HeartbeatRepository,
    LockoutRepository,
    MeetingRepository,
    NotFound,
    PresenceRepository,
    Store,
    StoreError,
    StoreUnavailable,
    UserRepository,
)
from trimaran.store.codec import CATEGORY_TYPES, CodecError, decode, decode_change, encode
from trimaran.store.lockouts import LockoutPolicy
from trimaran.store.migrations import Migration, SchemaError, SchemaTooNew
from trimaran.store.model import (
    Binding,
    Change,
    ContactEntry,
    ContactGroup,
    ContactList,
    Credentials,
    Heartbeat,
    Lockout,
    Meeting,
    PresenceRule,
    Publication,
    Subscription,
    User,
)
from trimaran.store.postgres import PostgresStore
from trimaran.store.sqlite import SqliteStore

__all__ = [
    "CATEGORY_TYPES",
    "Binding",
    "BindingRepository",
    "Change",
    "ChangeLog",
    "CodecError",
    "Conflict",
    "ContactEntry",
    "ContactGroup",
    "ContactList",
    "ContactListRepository",
    "Credentials",
    "Heartbeat",
    "HeartbeatRepository",
    "Lockout",
    "LockoutPolicy",
    "LockoutRepository",
    "Meeting",
    "MeetingRepository",
    "Migration",
    "NotFound",
    "PostgresStore",
    "PresenceRepository",
    "PresenceRule",
    "Publication",
    "SchemaError",
    "SchemaTooNew",
    "SqliteStore",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "Subscription",
    "User",
    "UserRepository",
    "decode",
    "decode_change",
    "encode",
]
