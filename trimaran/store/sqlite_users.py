"""SQLite repositories for users (with credentials) and contact lists (logged data)."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter

from trimaran.store.base import Conflict, ContactListRepository, NotFound, UserRepository
from trimaran.store.categories import UserRemoval
from trimaran.store.model import ContactEntry, ContactGroup, ContactList, Credentials, User
from trimaran.store.sqlite_db import SqliteDatabase, Tx

_USER_COLUMNS = "aor, pool, display_name, number, enabled"
_CREDENTIAL_COLUMNS = "aor, username, realm, ha1_md5, ha1_sha256"


def _user(row: sqlite3.Row) -> User:
    return User(row["aor"], row["pool"], row["display_name"], row["number"],
                bool(row["enabled"]))


def _credentials(row: sqlite3.Row) -> Credentials:
    return Credentials(row["aor"], row["username"], row["realm"], row["ha1_md5"],
                       row["ha1_sha256"])


def _check_number_free(tx: Tx, number: str | None, aor: str) -> None:
    if number is None:
        return
    row = tx.one("SELECT aor FROM users WHERE number = ? AND aor != ?", (number, aor))
    if row is not None:
        raise Conflict(f"number {number} is already assigned to {row[0]}")


def _check_username_free(tx: Tx, credentials: Credentials) -> None:
    row = tx.one("SELECT aor FROM credentials WHERE username = ? AND realm = ? AND aor != ?",
                 (credentials.username, credentials.realm, credentials.aor))
    if row is not None:
        raise Conflict(f"username {credentials.username!r} in realm {credentials.realm!r} "
                       f"is already used by {row[0]}")


def upsert_credentials(tx: Tx, c: Credentials) -> None:
    """Insert or replace the credentials row of `c.aor`."""
    tx.execute(
        f"INSERT INTO credentials ({_CREDENTIAL_COLUMNS}) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (aor) DO UPDATE SET username = excluded.username, realm = excluded.realm, "
        "ha1_md5 = excluded.ha1_md5, ha1_sha256 = excluded.ha1_sha256",
        (c.aor, c.username, c.realm, c.ha1_md5, c.ha1_sha256))


def upsert_user(tx: Tx, user: User) -> None:
    """Insert or replace the users row of `user.aor` (a backup apply)."""
    tx.execute(
        f"INSERT INTO users ({_USER_COLUMNS}) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (aor) DO UPDATE SET pool = excluded.pool, "
        "display_name = excluded.display_name, number = excluded.number, "
        "enabled = excluded.enabled",
        (user.aor, user.pool, user.display_name, user.number, user.enabled))


def read_user(tx: Tx, aor: str) -> User | None:
    """The user, or None."""
    row = tx.one(f"SELECT {_USER_COLUMNS} FROM users WHERE aor = ?", (aor,))
    return None if row is None else _user(row)


def read_credentials(tx: Tx, aor: str) -> Credentials | None:
    """The credentials of `aor`, or None."""
    row = tx.one(f"SELECT {_CREDENTIAL_COLUMNS} FROM credentials WHERE aor = ?", (aor,))
    return None if row is None else _credentials(row)


def remove_user_rows(tx: Tx, aor: str) -> UserRemoval:
    """Delete the user and what it owns (publications, presence rules, contact list,
    credentials, lockout); what was there."""
    etags = tuple(r[0] for r in tx.all(
        "SELECT etag FROM publications WHERE aor = ? ORDER BY etag", (aor,)))
    watchers = tuple(r[0] for r in tx.all(
        "SELECT watcher FROM presence_rules WHERE owner = ? ORDER BY watcher", (aor,)))
    tx.execute("DELETE FROM publications WHERE aor = ?", (aor,))
    tx.execute("DELETE FROM presence_rules WHERE owner = ?", (aor,))
    had_list = tx.execute("DELETE FROM contact_lists WHERE owner = ?", (aor,)).rowcount > 0
    tx.execute("DELETE FROM auth_lockouts WHERE aor = ?", (aor,))       # not logged
    had_credentials = tx.execute("DELETE FROM credentials WHERE aor = ?",
                                 (aor,)).rowcount > 0
    existed = tx.execute("DELETE FROM users WHERE aor = ?", (aor,)).rowcount > 0
    return UserRemoval(existed, etags, watchers, had_list, had_credentials)


class SqliteUserRepository(UserRepository):
    """Users and credentials; writes log `user` and `credentials` changes keyed by AOR."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def add(self, user: User, credentials: Credentials, *, now: float) -> None:
        """Create a user with credentials; `Conflict` if the AOR, number or username is taken."""
        if credentials.aor != user.aor:
            raise Conflict(f"credentials of {credentials.aor} given for user {user.aor}")

        def work(tx: Tx) -> None:
            if tx.one("SELECT 1 FROM users WHERE aor = ?", (user.aor,)) is not None:
                raise Conflict(f"user {user.aor} already exists")
            _check_number_free(tx, user.number, user.aor)
            _check_username_free(tx, credentials)
            tx.execute(f"INSERT INTO users ({_USER_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
                       (user.aor, user.pool, user.display_name, user.number, user.enabled))
            upsert_credentials(tx, credentials)
            tx.log_put("user", user.aor, user, now)
            tx.log_put("credentials", user.aor, credentials, now)

        await self._db.write(work)

    async def get(self, aor: str) -> User | None:
        """The user, or None."""
        row = await self._db.read(
            lambda tx: tx.one(f"SELECT {_USER_COLUMNS} FROM users WHERE aor = ?", (aor,)))
        return None if row is None else _user(row)

    async def list(self, pool: str | None = None) -> list[User]:
        """Every user (of `pool` when given), ordered by AOR."""
        sql = f"SELECT {_USER_COLUMNS} FROM users ORDER BY aor"
        params: tuple[str, ...] = ()
        if pool is not None:
            sql = f"SELECT {_USER_COLUMNS} FROM users WHERE pool = ? ORDER BY aor"
            params = (pool,)
        rows = await self._db.read(lambda tx: tx.all(sql, params))
        return [_user(r) for r in rows]

    async def remove(self, aor: str, *, now: float) -> None:
        """Delete the user and everything it owns; log a delete for every key removed
        (publications, presence rules, contact list, credentials, then the user)."""

        def work(tx: Tx) -> None:
            removal = remove_user_rows(tx, aor)
            if not removal.existed:
                raise NotFound(f"no user {aor}")
            removal.log(tx, aor, now)

        await self._db.write(work)

    async def set_credentials(self, credentials: Credentials, *, now: float) -> None:
        """Replace a user's credentials; `NotFound` without the user, `Conflict` if the
        username is another user's in that realm."""

        def work(tx: Tx) -> None:
            if tx.one("SELECT 1 FROM users WHERE aor = ?", (credentials.aor,)) is None:
                raise NotFound(f"no user {credentials.aor}")
            _check_username_free(tx, credentials)
            upsert_credentials(tx, credentials)
            tx.log_put("credentials", credentials.aor, credentials, now)

        await self._db.write(work)

    async def credentials(self, username: str, realm: str) -> Credentials | None:
        """Credentials for a digest username in a realm, or None."""
        row = await self._db.read(lambda tx: tx.one(
            f"SELECT {_CREDENTIAL_COLUMNS} FROM credentials WHERE username = ? AND realm = ?",
            (username, realm)))
        return None if row is None else _credentials(row)

    async def by_number(self, number: str) -> User | None:
        """The user with that E.164 number, or None."""
        row = await self._db.read(lambda tx: tx.one(
            f"SELECT {_USER_COLUMNS} FROM users WHERE number = ?", (number,)))
        return None if row is None else _user(row)


def check_contact_list(contact_list: ContactList) -> None:
    """Raise `Conflict` naming the problem unless group names and contact URIs are unique
    and every contact's groups are groups of the list (each named once)."""
    owner = contact_list.owner
    names = [g.name for g in contact_list.groups]
    duplicates = sorted(n for n, k in Counter(names).items() if k > 1)
    if duplicates:
        raise Conflict(f"contact list of {owner}: duplicate groups {', '.join(duplicates)}")
    uris = Counter(c.uri for c in contact_list.contacts)
    duplicates = sorted(u for u, k in uris.items() if k > 1)
    if duplicates:
        raise Conflict(f"contact list of {owner}: duplicate contacts {', '.join(duplicates)}")
    known = set(names)
    for contact in contact_list.contacts:
        missing = sorted(set(contact.groups) - known)
        if missing:
            raise Conflict(f"contact list of {owner}: contact {contact.uri} is in unknown "
                           f"groups {', '.join(missing)}")
        if len(set(contact.groups)) != len(contact.groups):
            raise Conflict(f"contact list of {owner}: contact {contact.uri} names a group twice")


def read_contact_list(tx: Tx, owner: str) -> ContactList:
    """The owner's list (empty when never written)."""
    groups = tuple(ContactGroup(name, display_name) for name, display_name in tx.all(
        "SELECT name, display_name FROM contact_groups WHERE owner = ? "
        "ORDER BY position", (owner,)))
    contacts = tuple(
        ContactEntry(uri, display_name, tuple(json.loads(group_names)))
        for uri, display_name, group_names in tx.all(
            "SELECT uri, display_name, group_names FROM contacts WHERE owner = ? "
            "ORDER BY position", (owner,)))
    return ContactList(owner, groups, contacts)


def write_contact_list(tx: Tx, contact_list: ContactList) -> None:
    """Replace the owner's whole list (checked by `check_contact_list`)."""
    owner = contact_list.owner
    tx.execute("DELETE FROM contact_lists WHERE owner = ?", (owner,))
    tx.execute("INSERT INTO contact_lists (owner) VALUES (?)", (owner,))
    tx.conn.executemany(
        "INSERT INTO contact_groups (owner, name, display_name, position) "
        "VALUES (?, ?, ?, ?)",
        [(owner, g.name, g.display_name, i) for i, g in enumerate(contact_list.groups)])
    tx.conn.executemany(
        "INSERT INTO contacts (owner, uri, display_name, group_names, position) "
        "VALUES (?, ?, ?, ?, ?)",
        [(owner, c.uri, c.display_name, json.dumps(list(c.groups)), i)
         for i, c in enumerate(contact_list.contacts)])


class SqliteContactListRepository(ContactListRepository):
    """Contact lists; a put logs one `contacts` change keyed by owner carrying the whole list."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def get(self, owner: str) -> ContactList:
        """The owner's list (empty when never written)."""

        return await self._db.read(lambda tx: read_contact_list(tx, owner))

    async def put(self, contact_list: ContactList, *, now: float) -> None:
        """Replace the owner's whole list; `Conflict` (nothing written) unless every
        contact's groups exist, group names and contact URIs are unique."""
        check_contact_list(contact_list)
        owner = contact_list.owner

        def work(tx: Tx) -> None:
            write_contact_list(tx, contact_list)
            tx.log_put("contacts", owner, contact_list, now)

        await self._db.write(work)

    async def watchers_of(self, uri: str) -> list[str]:
        """Owners whose lists contain `uri`, ordered."""
        rows = await self._db.read(lambda tx: tx.all(
            "SELECT DISTINCT owner FROM contacts WHERE uri = ? ORDER BY owner", (uri,)))
        return [r[0] for r in rows]
