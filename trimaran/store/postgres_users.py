"""PostgreSQL repositories for users (with credentials) and contact lists (logged data).

Same behaviour as `trimaran.store.sqlite_users`, made safe for concurrent writers at
READ COMMITTED: a user's row is locked (``FOR UPDATE``) by the writes that depend on
it, a contact list is written under a per-owner advisory lock, and deletes report what
they removed (``RETURNING``) so exactly that is logged. Unique violations a concurrent
writer causes after our checks surface as `Conflict`, as the checks would.
"""

from __future__ import annotations

import json

from trimaran.store.base import Conflict, ContactListRepository, NotFound, UserRepository
from trimaran.store.categories import UserRemoval
from trimaran.store.model import ContactEntry, ContactGroup, ContactList, Credentials, User
from trimaran.store.postgres_db import LOCK_CONTACTS, LOCK_PRESENCE, PgDatabase, PgTx, Record
from trimaran.store.postgres_db import Retry as R
from trimaran.store.sqlite_users import check_contact_list

_USER_COLUMNS = "aor, pool, display_name, number, enabled"
_CREDENTIAL_COLUMNS = "aor, username, realm, ha1_md5, ha1_sha256"


def _user(row: Record) -> User:
    return User(row["aor"], row["pool"], row["display_name"], row["number"],
                bool(row["enabled"]))


def _credentials(row: Record) -> Credentials:
    return Credentials(row["aor"], row["username"], row["realm"], row["ha1_md5"],
                       row["ha1_sha256"])


async def _check_number_free(tx: PgTx, number: str | None, aor: str) -> None:
    if number is None:
        return
    owner = await tx.value("SELECT aor FROM users WHERE number = $1 AND aor <> $2",
                           number, aor)
    if owner is not None:
        raise Conflict(f"number {number} is already assigned to {owner}")


async def _check_username_free(tx: PgTx, credentials: Credentials) -> None:
    owner = await tx.value(
        "SELECT aor FROM credentials WHERE username = $1 AND realm = $2 AND aor <> $3",
        credentials.username, credentials.realm, credentials.aor)
    if owner is not None:
        raise Conflict(f"username {credentials.username!r} in realm {credentials.realm!r} "
                       f"is already used by {owner}")


async def upsert_credentials(tx: PgTx, c: Credentials) -> None:
    """Insert or replace the credentials row of `c.aor`."""
    await tx.execute(
        f"INSERT INTO credentials ({_CREDENTIAL_COLUMNS}) VALUES ($1, $2, $3, $4, $5) "
        "ON CONFLICT (aor) DO UPDATE SET username = excluded.username, realm = excluded.realm, "
        "ha1_md5 = excluded.ha1_md5, ha1_sha256 = excluded.ha1_sha256",
        c.aor, c.username, c.realm, c.ha1_md5, c.ha1_sha256)


async def upsert_user(tx: PgTx, user: User) -> None:
    """Insert or replace the users row of `user.aor` (a backup apply)."""
    await tx.execute(
        f"INSERT INTO users ({_USER_COLUMNS}) VALUES ($1, $2, $3, $4, $5) "
        "ON CONFLICT (aor) DO UPDATE SET pool = excluded.pool, "
        "display_name = excluded.display_name, number = excluded.number, "
        "enabled = excluded.enabled",
        user.aor, user.pool, user.display_name, user.number, user.enabled)


async def read_user(tx: PgTx, aor: str) -> User | None:
    """The user, or None."""
    row = await tx.one(f"SELECT {_USER_COLUMNS} FROM users WHERE aor = $1", aor)
    return None if row is None else _user(row)


async def read_credentials(tx: PgTx, aor: str) -> Credentials | None:
    """The credentials of `aor`, or None."""
    row = await tx.one(f"SELECT {_CREDENTIAL_COLUMNS} FROM credentials WHERE aor = $1", aor)
    return None if row is None else _credentials(row)


async def remove_user_rows(tx: PgTx, aor: str) -> UserRemoval:
    """Delete the user and what it owns (publications, presence rules, contact list,
    credentials, lockout), under the per-AOR presence and contact-list locks; what was there."""
    await tx.lock(LOCK_PRESENCE, aor)
    await tx.lock(LOCK_CONTACTS, aor)
    etags = tuple(sorted(r[0] for r in await tx.all(
        "DELETE FROM publications WHERE aor = $1 RETURNING etag", aor)))
    watchers = tuple(sorted(r[0] for r in await tx.all(
        "DELETE FROM presence_rules WHERE owner = $1 RETURNING watcher", aor)))
    had_list = await tx.count("DELETE FROM contact_lists WHERE owner = $1", aor) > 0
    await tx.execute("DELETE FROM auth_lockouts WHERE aor = $1", aor)   # not logged
    had_credentials = await tx.count("DELETE FROM credentials WHERE aor = $1", aor) > 0
    existed = await tx.count("DELETE FROM users WHERE aor = $1", aor) > 0
    return UserRemoval(existed, etags, watchers, had_list, had_credentials)


async def _lock_user(tx: PgTx, aor: str) -> bool:
    """Lock the user's row until the transaction ends; False when there is none."""
    return await tx.one("SELECT 1 FROM users WHERE aor = $1 FOR UPDATE", aor) is not None


class PostgresUserRepository(UserRepository):
    """Users and credentials; writes log `user` and `credentials` changes keyed by AOR."""

    def __init__(self, db: PgDatabase) -> None:
        self._db = db

    async def add(self, user: User, credentials: Credentials, *, now: float) -> None:
        """Create a user with credentials; `Conflict` if the AOR, number or username is taken.
        Not retried once its commit was sent (a second run would be a Conflict)."""
        if credentials.aor != user.aor:
            raise Conflict(f"credentials of {credentials.aor} given for user {user.aor}")

        async def work(tx: PgTx) -> None:
            if await tx.one("SELECT 1 FROM users WHERE aor = $1", user.aor) is not None:
                raise Conflict(f"user {user.aor} already exists")
            await _check_number_free(tx, user.number, user.aor)
            await _check_username_free(tx, credentials)
            await tx.execute(f"INSERT INTO users ({_USER_COLUMNS}) VALUES ($1, $2, $3, $4, $5)",
                             user.aor, user.pool, user.display_name, user.number, user.enabled)
            await upsert_credentials(tx, credentials)
            tx.log_put("user", user.aor, user, now)
            tx.log_put("credentials", user.aor, credentials, now)

        await self._db.write(work, what="users.add", retry=R.UNCOMMITTED)

    async def get(self, aor: str) -> User | None:
        """The user, or None."""
        row = await self._db.read(
            lambda tx: tx.one(f"SELECT {_USER_COLUMNS} FROM users WHERE aor = $1", aor),
            what="users.get")
        return None if row is None else _user(row)

    async def list(self, pool: str | None = None) -> list[User]:
        """Every user (of `pool` when given), ordered by AOR."""
        if pool is None:
            rows = await self._db.read(
                lambda tx: tx.all(f"SELECT {_USER_COLUMNS} FROM users ORDER BY aor"),
                what="users.list")
        else:
            rows = await self._db.read(lambda tx: tx.all(
                f"SELECT {_USER_COLUMNS} FROM users WHERE pool = $1 ORDER BY aor", pool),
                what="users.list")
        return [_user(r) for r in rows]

    async def remove(self, aor: str, *, now: float) -> None:
        """Delete the user and everything it owns; log a delete for every key removed
        (publications, presence rules, contact list, credentials, then the user)."""

        async def work(tx: PgTx) -> None:
            if not await _lock_user(tx, aor):
                raise NotFound(f"no user {aor}")
            removal = await remove_user_rows(tx, aor)
            removal.log(tx, aor, now)

        await self._db.write(work, what="users.remove", retry=R.UNCOMMITTED)

    async def set_credentials(self, credentials: Credentials, *, now: float) -> None:
        """Replace a user's credentials; `NotFound` without the user, `Conflict` if the
        username is another user's in that realm."""

        async def work(tx: PgTx) -> None:
            if not await _lock_user(tx, credentials.aor):
                raise NotFound(f"no user {credentials.aor}")
            await _check_username_free(tx, credentials)
            await upsert_credentials(tx, credentials)
            tx.log_put("credentials", credentials.aor, credentials, now)

        await self._db.write(work, what="users.set_credentials", retry=R.UNCOMMITTED)

    async def credentials(self, username: str, realm: str) -> Credentials | None:
        """Credentials for a digest username in a realm, or None."""
        row = await self._db.read(lambda tx: tx.one(
            f"SELECT {_CREDENTIAL_COLUMNS} FROM credentials WHERE username = $1 AND realm = $2",
            username, realm), what="users.credentials")
        return None if row is None else _credentials(row)

    async def by_number(self, number: str) -> User | None:
        """The user with that E.164 number, or None."""
        row = await self._db.read(lambda tx: tx.one(
            f"SELECT {_USER_COLUMNS} FROM users WHERE number = $1", number),
            what="users.by_number")
        return None if row is None else _user(row)


async def read_contact_list(tx: PgTx, owner: str) -> ContactList:
    """The owner's list (empty when never written); read it in a snapshot."""
    groups = tuple(ContactGroup(r["name"], r["display_name"]) for r in await tx.all(
        "SELECT name, display_name FROM contact_groups WHERE owner = $1 "
        "ORDER BY position", owner))
    contacts = tuple(
        ContactEntry(r["uri"], r["display_name"], tuple(json.loads(r["group_names"])))
        for r in await tx.all(
            "SELECT uri, display_name, group_names FROM contacts WHERE owner = $1 "
            "ORDER BY position", owner))
    return ContactList(owner, groups, contacts)


async def write_contact_list(tx: PgTx, contact_list: ContactList) -> None:
    """Replace the owner's whole list (checked by `check_contact_list`), under the
    per-owner contact-list lock."""
    owner = contact_list.owner
    await tx.lock(LOCK_CONTACTS, owner)
    await tx.execute("DELETE FROM contact_lists WHERE owner = $1", owner)
    await tx.execute("INSERT INTO contact_lists (owner) VALUES ($1)", owner)
    await tx.executemany(
        "INSERT INTO contact_groups (owner, name, display_name, position) "
        "VALUES ($1, $2, $3, $4)",
        [(owner, g.name, g.display_name, i) for i, g in enumerate(contact_list.groups)])
    await tx.executemany(
        "INSERT INTO contacts (owner, uri, display_name, group_names, position) "
        "VALUES ($1, $2, $3, $4, $5)",
        [(owner, c.uri, c.display_name, json.dumps(list(c.groups)), i)
         for i, c in enumerate(contact_list.contacts)])


class PostgresContactListRepository(ContactListRepository):
    """Contact lists; a put logs one `contacts` change keyed by owner carrying the whole list."""

    def __init__(self, db: PgDatabase) -> None:
        self._db = db

    async def get(self, owner: str) -> ContactList:
        """The owner's list (empty when never written), read from one snapshot."""

        return await self._db.read(lambda tx: read_contact_list(tx, owner),
                                   what="contacts.get", snapshot=True)

    async def put(self, contact_list: ContactList, *, now: float) -> None:
        """Replace the owner's whole list; `Conflict` (nothing written) unless every
        contact's groups exist, group names and contact URIs are unique."""
        check_contact_list(contact_list)
        owner = contact_list.owner

        async def work(tx: PgTx) -> None:
            await write_contact_list(tx, contact_list)
            tx.log_put("contacts", owner, contact_list, now)

        await self._db.write(work, what="contacts.put", retry=R.UNCOMMITTED)

    async def watchers_of(self, uri: str) -> list[str]:
        """Owners whose lists contain `uri`, ordered."""
        rows = await self._db.read(lambda tx: tx.all(
            "SELECT DISTINCT owner FROM contacts WHERE uri = $1 ORDER BY owner", uri),
            what="contacts.watchers_of")
        return [r[0] for r in rows]
