"""Repository interfaces of the store, with their contracts.

Every method is a coroutine so that blocking backends (SQLite, in a worker
thread) and networked ones (PostgreSQL) look the same to the roles.

Contracts that hold for every backend:

* **Durability.** A method that returns has committed its write durably; the
  caller may acknowledge it to a client (SPEC BE-1: nothing acknowledged is lost).
* **Atomicity.** Each method is one transaction. Writes of user or conference
  data (`users`, `credentials`, `contacts`, `presence-rules`, persistent
  `presence`, `meeting`, `meeting-content`) and of the CMS (`cms`) append exactly
  one `Change` per changed key to the change log in that same transaction, so the
  log and the data never disagree (the Backup Service ships the log). Bindings,
  subscriptions, heartbeats and non-persistent publications are not logged:
  clients re-create them. Nor are account lockouts (runtime state of the pool: a
  backup pool serving its users counts their failures afresh). Changes applied by the Backup Service
  (`BackupRepository.apply`) are not logged either: they are the paired pool's.
* **Time.** Methods that need the time take `now` (epoch seconds); the store
  never reads the clock.
* **Errors.** `StoreUnavailable` (retryable: the database is away) and
  `StoreError` subclasses for the caller's mistakes (`NotFound`, `Conflict`).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence

from trimaran.store.lockouts import LockoutPolicy
from trimaran.store.model import (
    BackupProgress,
    Binding,
    Change,
    CmsDocument,
    ContactList,
    Credentials,
    Heartbeat,
    Lockout,
    Meeting,
    MeetingContent,
    PresenceRule,
    Publication,
    Subscription,
    User,
)


class StoreError(Exception):
    """Root of store errors."""


class StoreUnavailable(StoreError):
    """The database cannot be reached or refused the operation for now; retry later."""


class NotFound(StoreError):
    """The record does not exist."""


class Conflict(StoreError):
    """The write contradicts existing data (duplicate key, stale precondition)."""


class UserRepository(abc.ABC):
    """Users of the pool and their digest credentials."""

    @abc.abstractmethod
    async def add(self, user: User, credentials: Credentials, *, now: float) -> None:
        """Create a user with credentials; `Conflict` if the AOR exists. Logged."""

    @abc.abstractmethod
    async def get(self, aor: str) -> User | None:
        """The user, or None."""

    @abc.abstractmethod
    async def list(self, pool: str | None = None) -> list[User]:
        """Every user (of `pool` when given), ordered by AOR."""

    @abc.abstractmethod
    async def remove(self, aor: str, *, now: float) -> None:
        """Delete the user, credentials, contact list, rules and publications; `NotFound`
        if absent. Logged."""

    @abc.abstractmethod
    async def set_credentials(self, credentials: Credentials, *, now: float) -> None:
        """Replace a user's credentials; `NotFound` if the user is absent. Logged."""

    @abc.abstractmethod
    async def credentials(self, username: str, realm: str) -> Credentials | None:
        """Credentials for a digest username in a realm, or None."""

    @abc.abstractmethod
    async def by_number(self, number: str) -> User | None:
        """The user with that E.164 number, or None."""


class BindingRepository(abc.ABC):
    """Registrations (not logged: clients re-register)."""

    @abc.abstractmethod
    async def for_aor(self, aor: str, *, now: float) -> list[Binding]:
        """Unexpired bindings of `aor`, highest q first."""

    @abc.abstractmethod
    async def apply(self, aor: str, *, upsert: Sequence[Binding], remove: Sequence[str],
                    now: float) -> list[Binding]:
        """Atomically remove the bindings whose `key` is in `remove`, insert or replace
        `upsert` (matched by `key`), drop expired ones; return the resulting bindings."""

    @abc.abstractmethod
    async def remove_all(self, aor: str) -> int:
        """Remove every binding of `aor`; return how many."""

    @abc.abstractmethod
    async def purge_server(self, server: str) -> int:
        """Remove the bindings served by `server` (declared dead); return how many."""

    @abc.abstractmethod
    async def purge_flow(self, server: str, flow_id: str) -> int:
        """Remove the bindings registered over flow `flow_id` of `server` (RFC 5626 §5.2:
        a failed flow invalidates its bindings); return how many."""

    @abc.abstractmethod
    async def purge_expired(self, *, now: float) -> int:
        """Remove expired bindings; return how many."""

    @abc.abstractmethod
    async def count(self, *, now: float, server: str | None = None) -> int:
        """Unexpired bindings (of `server` when given)."""


class ContactListRepository(abc.ABC):
    """Per-user contact lists (groups and contacts). Logged under `contacts`."""

    @abc.abstractmethod
    async def get(self, owner: str) -> ContactList:
        """The owner's list (empty when never written)."""

    @abc.abstractmethod
    async def put(self, contact_list: ContactList, *, now: float) -> None:
        """Replace the owner's whole list; every contact's groups must exist (`Conflict`)."""

    @abc.abstractmethod
    async def watchers_of(self, uri: str) -> list[str]:
        """Owners whose lists contain `uri`."""


class PresenceRepository(abc.ABC):
    """Presence rules, publications and subscriptions."""

    @abc.abstractmethod
    async def rules(self, owner: str) -> list[PresenceRule]:
        """The owner's allow/block rules."""

    @abc.abstractmethod
    async def set_rule(self, rule: PresenceRule, *, now: float) -> None:
        """Create or replace the rule for (owner, watcher). Logged under `presence-rules`."""

    @abc.abstractmethod
    async def remove_rule(self, owner: str, watcher: str, *, now: float) -> None:
        """Remove the rule for (owner, watcher) if any. Logged."""

    @abc.abstractmethod
    async def publications(self, aor: str, event: str, *, now: float) -> list[Publication]:
        """Unexpired publications of `aor` for `event`."""

    @abc.abstractmethod
    async def publish(self, publication: Publication, *, replaces: str | None,
                      now: float) -> None:
        """Store a publication; with `replaces`, the etag it refreshes/modifies must exist
        (`NotFound` otherwise, RFC 3903 §6 → 412). Logged under `presence`."""

    @abc.abstractmethod
    async def unpublish(self, aor: str, etag: str, *, now: float) -> None:
        """Remove a publication; `NotFound` if the etag is unknown. Logged."""

    @abc.abstractmethod
    async def save_subscription(self, subscription: Subscription) -> None:
        """Create or replace a subscription (not logged)."""

    @abc.abstractmethod
    async def remove_subscription(self, subscription_id: str) -> None:
        """Forget a subscription (no error if absent)."""

    @abc.abstractmethod
    async def subscriptions_to(self, target: str, event: str, *, now: float
                               ) -> list[Subscription]:
        """Unexpired subscriptions watching `target` for `event`."""


class MeetingRepository(abc.ABC):
    """Conferences. Logged under `meeting`."""

    @abc.abstractmethod
    async def put(self, meeting: Meeting, *, now: float) -> None:
        """Create or replace a meeting."""

    @abc.abstractmethod
    async def get(self, meeting_id: str) -> Meeting | None:
        """The meeting, or None."""

    @abc.abstractmethod
    async def by_organizer(self, organizer: str) -> list[Meeting]:
        """The organizer's meetings."""

    @abc.abstractmethod
    async def remove(self, meeting_id: str, *, now: float) -> None:
        """Delete a meeting and its content references; `NotFound` if absent."""

    @abc.abstractmethod
    async def attach(self, meeting_id: str, name: str, data: bytes, *,
                     now: float) -> MeetingContent:
        """Store `data` as the meeting's file `name` (replacing one of that name): the
        bytes under their SHA-256 (kept once however often attached), the reference
        logged under `meeting-content` with key "<meeting_id>/<name>". `NotFound` if
        the meeting is absent."""

    @abc.abstractmethod
    async def contents(self, meeting_id: str) -> list[MeetingContent]:
        """The meeting's file references, by name."""

    @abc.abstractmethod
    async def blob(self, sha256: str) -> bytes | None:
        """The bytes stored under `sha256`, or None."""


class HeartbeatRepository(abc.ABC):
    """Liveness rows of the pool's servers (not logged)."""

    @abc.abstractmethod
    async def beat(self, heartbeat: Heartbeat) -> None:
        """Record a server's heartbeat (upsert)."""

    @abc.abstractmethod
    async def all(self, pool: str | None = None) -> list[Heartbeat]:
        """The last heartbeat of every server (of `pool` when given)."""


class LockoutRepository(abc.ABC):
    """Failed digest responses per user and the account locks they lead to
    (`trimaran.store.lockouts`). Not logged: runtime state of the pool, shared by its
    servers so that they all count into and see the same lock."""

    @abc.abstractmethod
    async def get(self, aor: str) -> Lockout | None:
        """The user's row, or None (never failed, or unlocked since)."""

    @abc.abstractmethod
    async def credentials_with_lockout(self, username: str, realm: str
                                       ) -> tuple[Credentials, Lockout | None] | None:
        """`UserRepository.credentials` and the user's row, in one read (what a server
        needs for every authenticated request); None for an unknown username."""

    @abc.abstractmethod
    async def record_failure(self, aor: str, policy: LockoutPolicy, *, now: float) -> Lockout:
        """Atomically apply `lockouts.after_failure` to the user's row and return the
        row after it (concurrent calls for one AOR are serialised: none is lost)."""

    @abc.abstractmethod
    async def unlock(self, aor: str, *, now: float) -> bool:
        """Forget the user's failures and lock; True when the user was locked at `now`."""

    @abc.abstractmethod
    async def locked(self, *, now: float) -> list[Lockout]:
        """The rows locked at `now`, ordered by AOR."""

    @abc.abstractmethod
    async def count_locked(self, *, now: float) -> int:
        """How many users are locked at `now`."""


class ChangeLog(abc.ABC):
    """The change log (outbox) read by the Backup Service."""

    @abc.abstractmethod
    async def since(self, seq: int, *, limit: int = 1000) -> list[Change]:
        """Changes with sequence number > `seq`, in order, at most `limit`."""

    @abc.abstractmethod
    async def last_seq(self) -> int:
        """The highest sequence number written (0 when empty)."""

    @abc.abstractmethod
    async def summary(self, after: int) -> dict[str, tuple[int, int, float]]:
        """Per category with changes: (last seq overall, how many have seq > `after`,
        the `at` of the oldest of those, or 0.0 when none) — backup status per category."""


class CmsRepository(abc.ABC):
    """The central management store's documents (DESIGN §3 "CMS"). Every write bumps
    the CMS version (max over all documents + 1) and is logged under `cms`."""

    @abc.abstractmethod
    async def get(self, key: str) -> CmsDocument | None:
        """The document, or None."""

    @abc.abstractmethod
    async def all(self) -> list[CmsDocument]:
        """Every document, ordered by key."""

    @abc.abstractmethod
    async def version(self) -> int:
        """The CMS version: the highest document version (0 when empty)."""

    @abc.abstractmethod
    async def put(self, key: str, body: str, *, now: float,
                  expect_version: int | None = None, check: bool = False) -> CmsDocument:
        """Write a document at the next CMS version and return it. With `check`, the
        document's current version must equal `expect_version` (None: must not exist),
        else `Conflict` (compare-and-set for failover state transitions)."""

    @abc.abstractmethod
    async def remove(self, key: str, *, now: float) -> None:
        """Delete a document (bumps the version); no error if absent."""


class BackupRepository(abc.ABC):
    """The receiving side of the Backup Service: the paired pool's changes applied
    here, idempotently, with the progress per source pool (DR-2)."""

    @abc.abstractmethod
    async def apply(self, source: str, changes: Sequence[Change], *, now: float,
                    blobs: Mapping[str, bytes] | None = None) -> BackupProgress:
        """In one transaction: apply, in order, the changes of `source`'s log whose seq
        is above the recorded progress (others are skipped: re-delivery is harmless),
        without logging them; store `blobs` (sha256 hex -> bytes; `Conflict` when a
        blob's digest differs or a `meeting-content` put references a blob neither
        given nor stored); record the new progress. Changes must be `source`'s and in
        increasing seq order (`Conflict` otherwise); a malformed payload is a
        `CodecError` and nothing is applied. Returns the progress after the batch."""

    @abc.abstractmethod
    async def progress(self, source: str) -> BackupProgress:
        """How far `source`'s log has been applied here (seq 0 when never)."""

    @abc.abstractmethod
    async def reset(self, source: str, seq: int, *, now: float) -> BackupProgress:
        """Set the progress of `source` to `seq` (failback skips a fenced pool's tail
        that was never shipped; a rebuilt pool starts again from 0)."""

    @abc.abstractmethod
    async def export(self, category: str, key: str) -> Change:
        """The current value of (category, key) here as a change: a `put` with the
        encoded record, or a `delete` when absent (seq 0, this pool, at 0.0)."""

    @abc.abstractmethod
    async def keys(self, category: str, pool: str) -> list[str]:
        """The keys of `category` that belong to users homed on `pool` (for a
        failback's reconciliation and `backup sync --category`)."""


class Store(abc.ABC):
    """One pool's store: the repositories over one database."""

    users: UserRepository
    bindings: BindingRepository
    contacts: ContactListRepository
    presence: PresenceRepository
    meetings: MeetingRepository
    heartbeats: HeartbeatRepository
    lockouts: LockoutRepository
    changes: ChangeLog
    cms: CmsRepository
    backup: BackupRepository

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and apply pending schema migrations."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections/threads; idempotent."""

    @abc.abstractmethod
    async def schema_version(self) -> int:
        """The applied schema version."""
