"""The logged categories, backend-neutral: their change-log keys, meeting content
limits, and the checks `BackupRepository.apply` makes before it writes anything.

What each category logs (key; payload record; rows a put / a delete touches). A
backup `apply` writes exactly these rows, `export` reads them back:

===============  ==================  ==============  ======================================
category         key                 payload         rows
===============  ==================  ==============  ======================================
user             AOR                 User            ``users``; a delete also removes what
                                                     `users.remove` cascades (publications,
                                                     rules, contact list, credentials), each
                                                     of which the source logged first
credentials      AOR                 Credentials     ``credentials``
contacts         owner AOR           ContactList     ``contact_lists`` + groups + contacts
presence-rules   "owner|watcher"     PresenceRule    ``presence_rules``
presence         etag                Publication     ``publications``
meeting          meeting id          Meeting         ``meetings``; a delete also removes the
                                                     meeting's content references (logged
                                                     first, one delete per reference)
meeting-content  "meeting_id/name"   MeetingContent  ``meeting_contents`` (the bytes are in
                                                     ``content_blobs``, by SHA-256, shipped
                                                     beside the batch)
cms              document key        CmsDocument     ``cms_documents`` and the CMS counter
===============  ==================  ==============  ======================================

Meeting content: a file name is non-empty and holds no "/" (so the key splits back
unambiguously at its last "/"); the bytes are at most `MAX_CONTENT_SIZE`, else
`ContentTooLarge` (a `Conflict`: the write contradicts a limit of the store).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from trimaran.store.base import Conflict
from trimaran.store.codec import CATEGORY_TYPES, CodecError, decode_change, encode
from trimaran.store.model import (
    Change,
    CmsDocument,
    ContactList,
    Credentials,
    Meeting,
    MeetingContent,
    PresenceRule,
    Publication,
    User,
)

#: The largest meeting file (and shipped blob) the store keeps: 4 MiB.
MAX_CONTENT_SIZE = 4 * 1024 * 1024

#: Every logged category, in the order of the table above.
CATEGORIES: tuple[str, ...] = tuple(CATEGORY_TYPES)


class ContentTooLarge(Conflict):
    """Meeting content (or a shipped blob) larger than `MAX_CONTENT_SIZE`."""


def sha256_hex(data: bytes) -> str:
    """The hex SHA-256 of `data` (the content address of meeting files)."""
    return hashlib.sha256(data).hexdigest()


def rule_key(owner: str, watcher: str) -> str:
    """The change-log key of a presence rule."""
    return f"{owner}|{watcher}"


def rule_candidates(key: str) -> list[tuple[str, str]]:
    """Every (owner, watcher) whose `rule_key` is `key` (one, unless an owner or a
    watcher holds a "|")."""
    return [(key[:i], key[i + 1:]) for i, ch in enumerate(key) if ch == "|"]


def content_key(meeting_id: str, name: str) -> str:
    """The change-log key of a meeting file reference."""
    return f"{meeting_id}/{name}"


def split_content_key(key: str) -> tuple[str, str] | None:
    """(meeting id, name) of a `content_key`, or None when `key` is not one."""
    meeting_id, slash, name = key.rpartition("/")
    return (meeting_id, name) if slash and name else None


def check_content(name: str, data: bytes) -> None:
    """`Conflict` unless `name` is a file name (non-empty, no "/"); `ContentTooLarge`
    when `data` is over `MAX_CONTENT_SIZE`."""
    if not name or "/" in name:
        raise Conflict(f"meeting content name {name!r}: must be non-empty, without '/'")
    check_size(len(data), name)


def check_size(size: int, what: str) -> None:
    """`ContentTooLarge` when `size` is over `MAX_CONTENT_SIZE`."""
    if size > MAX_CONTENT_SIZE:
        raise ContentTooLarge(f"{what}: {size} bytes, over the limit of "
                              f"{MAX_CONTENT_SIZE} bytes")


def key_of(record: object) -> str:
    """The change-log key the repositories use for `record` (`CodecError` for a record
    no category carries)."""
    if isinstance(record, User | Credentials):
        return record.aor
    if isinstance(record, ContactList):
        return record.owner
    if isinstance(record, PresenceRule):
        return rule_key(record.owner, record.watcher)
    if isinstance(record, Publication):
        return record.etag
    if isinstance(record, Meeting):
        return record.id
    if isinstance(record, MeetingContent):
        return content_key(record.meeting_id, record.name)
    if isinstance(record, CmsDocument):
        return record.key
    raise CodecError(f"no change-log category carries a {type(record).__name__}")


def check_category(category: str) -> None:
    """`CodecError` unless `category` is a logged category."""
    if category not in CATEGORY_TYPES:
        raise CodecError(f"unknown category {category!r}")


def export_change(pool: str, category: str, key: str, record: object | None) -> Change:
    """(category, key) as `BackupRepository.export` reports it: a `put` of `record`, or a
    `delete` when None; seq 0, at 0.0."""
    if record is None:
        return Change(0, pool, category, key, "delete", "", 0.0)
    return Change(0, pool, category, key, "put", encode(record), 0.0)


# --- apply: the checks before anything is written -------------------------------------

@dataclass(frozen=True, slots=True)
class Step:
    """One change of a batch, decoded: `record` is the new value (None for a delete)."""

    change: Change
    record: object | None


def check_batch(source: str, pool: str, changes: Sequence[Change]) -> list[Step]:
    """The changes decoded, or an error with nothing written: `Conflict` when `source`
    is this `pool`, a change is not `source`'s or seqs do not increase; `CodecError`
    when a payload is malformed or its key is not the one its record is logged under."""
    if source == pool:
        raise Conflict(f"pool {pool} cannot apply its own change log")
    steps: list[Step] = []
    previous: int | None = None
    for change in changes:
        if change.pool != source:
            raise Conflict(f"change {change.seq} is pool {change.pool}'s, not {source}'s")
        if previous is not None and change.seq <= previous:
            raise Conflict(f"change {change.seq} follows change {previous}: "
                           "changes must be in increasing seq order")
        previous = change.seq
        record = decode_change(change)
        if record is not None and key_of(record) != change.key:
            raise CodecError(f"change {change.seq}: key {change.key!r} is not the key of "
                             f"its {change.category} ({key_of(record)!r})")
        if record is None and change.category == "meeting-content" \
                and split_content_key(change.key) is None:
            raise CodecError(f"change {change.seq}: {change.key!r} is not meeting/name")
        steps.append(Step(change, record))
    return steps


def check_blobs(blobs: Mapping[str, bytes] | None) -> dict[str, bytes]:
    """The shipped blobs, each checked: `Conflict` when the bytes do not hash to their
    name, `ContentTooLarge` when over the limit."""
    checked: dict[str, bytes] = {}
    for sha, data in (blobs or {}).items():
        check_size(len(data), f"blob {sha[:16]}")
        if sha256_hex(data) != sha:
            raise Conflict(f"blob {sha[:16]}…: the bytes hash to {sha256_hex(data)[:16]}…")
        checked[sha] = bytes(data)
    return checked


def needed_blobs(steps: Sequence[Step]) -> dict[str, int]:
    """sha256 -> size of the blobs the meeting-content puts of `steps` reference."""
    return {s.record.sha256: s.record.size for s in steps
            if isinstance(s.record, MeetingContent)}


def check_blob_size(sha: str, expected: int, actual: int | None) -> None:
    """`Conflict` when the blob a reference names is absent (`actual` None) or of
    another size than the reference says."""
    if actual is None:
        raise Conflict(f"meeting content references blob {sha[:16]}…, neither shipped "
                       "nor stored here")
    if actual != expected:
        raise Conflict(f"meeting content says blob {sha[:16]}… has {expected} bytes; "
                       f"it has {actual}")


# --- removing a user: what is logged --------------------------------------------------

class ChangeWriter(Protocol):
    """What logs deletes: a transaction of either backend."""

    def log_delete(self, category: str, key: str, at: float) -> None:
        """Append a `delete` change."""


@dataclass(frozen=True, slots=True)
class UserRemoval:
    """What removing a user's rows removed (to log, or to ignore when applying)."""

    existed: bool
    etags: tuple[str, ...] = ()
    watchers: tuple[str, ...] = ()
    had_list: bool = False
    had_credentials: bool = False

    def log(self, tx: ChangeWriter, aor: str, now: float) -> None:
        """Log a delete for every key removed: publications, rules, contact list,
        credentials, then the user."""
        for etag in self.etags:
            tx.log_delete("presence", etag, now)
        for watcher in self.watchers:
            tx.log_delete("presence-rules", rule_key(aor, watcher), now)
        if self.had_list:
            tx.log_delete("contacts", aor, now)
        if self.had_credentials:
            tx.log_delete("credentials", aor, now)
        tx.log_delete("user", aor, now)


# --- keys of a pool's users, per category ---------------------------------------------

#: Per category, the query of `BackupRepository.keys` (one column, the key); ``{p}``,
#: where present, stands for the backend's placeholder of the pool. Both dialects
#: share the SQL.
KEYS_SQL: Mapping[str, str] = {
    "user": "SELECT aor FROM users WHERE pool = {p}",
    "credentials": "SELECT c.aor FROM credentials c JOIN users u ON u.aor = c.aor "
                   "WHERE u.pool = {p}",
    "contacts": "SELECT l.owner FROM contact_lists l JOIN users u ON u.aor = l.owner "
                "WHERE u.pool = {p}",
    "presence-rules": "SELECT r.owner || '|' || r.watcher FROM presence_rules r "
                      "JOIN users u ON u.aor = r.owner WHERE u.pool = {p}",
    "presence": "SELECT p.etag FROM publications p JOIN users u ON u.aor = p.aor "
                "WHERE u.pool = {p}",
    "meeting": "SELECT m.id FROM meetings m JOIN users u ON u.aor = m.organizer "
               "WHERE u.pool = {p}",
    "meeting-content": "SELECT c.meeting_id || '/' || c.name FROM meeting_contents c "
                       "JOIN meetings m ON m.id = c.meeting_id "
                       "JOIN users u ON u.aor = m.organizer WHERE u.pool = {p}",
    # The CMS is everybody's: every key, whatever the pool (the query takes no pool).
    "cms": "SELECT key FROM cms_documents",
}
