"""Fixtures for the store tests.

The contract tests (`test_contract_*.py`) are written against the abstract `Store`
only, through the `store` fixture and `backend.make()` (a new, unopened store over the
same database, for reopen/durability tests). A new backend joins them by adding a
param to `backend` below. They run against SQLite and PostgreSQL (one server for the
session, `pg_server`; an empty database per test; skipped, saying why, when the
PostgreSQL binaries are absent).
"""

from __future__ import annotations

import contextlib
import itertools
import shutil
import socket
import sqlite3
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest

from trimaran.backend import PgInstance, PostgresNotInstalled, find_bin_dir
from trimaran.store import (
    Binding,
    Credentials,
    PostgresStore,
    Publication,
    SqliteStore,
    Store,
    User,
)

POOL = "fe1"
OTHER_POOL = "fe2"          # the paired pool, for the Backup Service's tests
DOMAIN = "example.com"


@dataclass(frozen=True)
class Backend:
    """A store backend under test: `make()` returns an unopened store over one database,
    which lives at `location` (the SQLite file, or the PostgreSQL database's URL)."""

    name: str
    make: Callable[[], Store]
    location: Path | str


@pytest.fixture(params=["sqlite", "postgres"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """Every backend the contract tests run against (postgres: a fresh database of the
    session's server per test)."""
    if request.param == "sqlite":
        path = tmp_path / "data" / f"{POOL}.sqlite"
        yield Backend("sqlite", lambda: SqliteStore(path, pool=POOL), path)
    elif request.param == "postgres":
        server: PgInstance = request.getfixturevalue("pg_server")
        async with fresh_database(server) as dsn:
            yield Backend("postgres", lambda: PostgresStore(dsn, pool=POOL), dsn)
    else:  # pragma: no cover
        raise AssertionError(f"unknown backend {request.param}")


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[Store]:
    """An open, empty store of each backend."""
    s = backend.make()
    await s.open()
    try:
        yield s
    finally:
        await s.close()


async def count_rows(backend: Backend, table: str) -> int:
    """How many rows `table` of the backend's database holds (read beside the store)."""
    if backend.name == "sqlite":
        conn = sqlite3.connect(backend.location)
        try:
            return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
        finally:
            conn.close()
    pg = await asyncpg.connect(str(backend.location), timeout=10)
    try:
        return int(await pg.fetchval(f"SELECT count(*) FROM {table}"))
    finally:
        await pg.close()


# --- PostgreSQL -------------------------------------------------------------------------

def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgInstance]:
    """One PostgreSQL server for the session (fsync off: throw-away data), skipped with
    the reason when PostgreSQL is not installed.

    Its directory is made here under /tmp with mode 0711 rather than under pytest's
    tmp_path (0700 when root), so the ``postgres`` user the server runs as (when we are
    root) can reach its data directory without any permission change."""
    try:
        find_bin_dir()
    except PostgresNotInstalled as exc:
        pytest.skip(str(exc))
    base = Path(tempfile.mkdtemp(prefix="trimaran-pg-"))
    base.chmod(0o711)
    server = PgInstance(base / "data", "127.0.0.1", free_port(), durable=False)
    try:
        server.initdb()
        server.start(timeout=60)
        yield server
    finally:
        server.stop(mode="immediate")
        shutil.rmtree(base, ignore_errors=True)


_DATABASE_NUMBERS = itertools.count(1)
# Databases of finished tests, emptied, ready for another — per server (the chat tests
# run their own server: a name emptied there does not exist on another one).
_EMPTIED: dict[str, list[str]] = {}


@contextlib.asynccontextmanager
async def fresh_database(server: PgInstance) -> AsyncIterator[str]:
    """An empty database on `server` for the block; its URL.

    A database is made with CREATE DATABASE test_N the first time; when the block ends
    it is emptied (sessions ended, schema dropped and re-created, settings reset) and
    handed to a later test, which cannot tell it from a new one: that costs a few
    milliseconds where CREATE DATABASE copies a template."""
    emptied = _EMPTIED.setdefault(server.dsn, [])
    if emptied:
        name = emptied.pop()
    else:
        name = f"test_{next(_DATABASE_NUMBERS)}"
        await admin_execute(server, f'CREATE DATABASE "{name}"')
    dsn = server.dsn.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield dsn
    finally:
        if server.is_running():
            try:
                await _empty(dsn, name)
                emptied.append(name)
            except (asyncpg.PostgresError, OSError):
                await admin_execute(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _empty(dsn: str, name: str) -> None:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE datname = $1 AND pid <> pg_backend_pid()", name)
        await conn.execute(f'SET default_transaction_read_only = off; '
                           f'ALTER DATABASE "{name}" RESET ALL; '
                           f'DROP SCHEMA public CASCADE; CREATE SCHEMA public')
    finally:
        await conn.close()


async def admin_execute(server: PgInstance, sql: str, *args: object) -> str:
    """Run one statement on the server's ``trimaran`` database as superuser."""
    conn = await asyncpg.connect(server.dsn, timeout=10)
    try:
        return str(await conn.execute(sql, *args))
    finally:
        await conn.close()


# --- record builders ------------------------------------------------------------------

def aor(name: str) -> str:
    """The AOR of user `name`."""
    return f"sip:{name}@{DOMAIN}"


def make_user(name: str, *, number: str | None = None, pool: str = POOL) -> User:
    """A user called `name`."""
    return User(aor(name), pool, display_name=name.title(), number=number)


def make_credentials(name: str, *, username: str | None = None,
                     realm: str = DOMAIN, secret: str = "0") -> Credentials:
    """Credentials of user `name` (fake HA1s derived from `secret`)."""
    return Credentials(aor(name), username or name, realm, ha1_md5=secret * 32,
                       ha1_sha256=secret * 64)


async def add_user(store: Store, name: str, *, number: str | None = None,
                   now: float = 1.0) -> User:
    """Add user `name` with credentials; return the user."""
    user = make_user(name, number=number)
    await store.users.add(user, make_credentials(name), now=now)
    return user


def make_binding(name: str, contact: str, *, expires_at: float = 1000.0, q: float = 1.0,
                 server: str = "fe1a", flow_id: str = "", instance_id: str | None = None,
                 reg_id: int | None = None, cseq: int = 1) -> Binding:
    """A binding of user `name`."""
    return Binding(aor(name), contact, expires_at, call_id=f"call-{name}", cseq=cseq,
                   server=server, flow_id=flow_id, source="udp:192.0.2.1:5060",
                   instance_id=instance_id, reg_id=reg_id, q=q, params=";expires=3600")


def make_publication(name: str, etag: str, *, expires_at: float = 1000.0,
                     event: str = "presence", body: bytes = b"<presence/>") -> Publication:
    """A publication of user `name`."""
    return Publication(aor(name), etag, event, "application/pidf+xml", body, expires_at,
                       server="fe1a")
