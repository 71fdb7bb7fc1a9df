"""Fixtures for the Persistent Chat tests: one PostgreSQL server per test module on
127.0.46.x (fsync off: throw-away data), an empty database per test, and builders.

The server's directory is made with `tempfile.mkdtemp` under /tmp (mode 0711), not
under pytest's tmp_path: another pytest session may reset /tmp/pytest-of-root to 0700,
and the server, running as the ``postgres`` user, could then not reach it.
"""

from __future__ import annotations

import random
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.store.conftest import free_port, fresh_database
from trimaran.backend import PgInstance, PostgresNotInstalled, find_bin_dir
from trimaran.chat import Category, ChatStore, Message, Room, RoomKind

DOMAIN = "example.com"
CATEGORY = "general"


@pytest.fixture(scope="module")
def chat_server() -> Iterator[PgInstance]:
    """A PostgreSQL server for the module on a 127.0.46.x address (skipped, saying why,
    when PostgreSQL is not installed)."""
    try:
        find_bin_dir()
    except PostgresNotInstalled as exc:
        pytest.skip(str(exc))
    base = Path(tempfile.mkdtemp(prefix="trimaran-chat-pg-"))
    base.chmod(0o711)
    host = f"127.0.46.{random.randint(2, 254)}"
    server = PgInstance(base / "data", host, free_port(host), durable=False)
    try:
        server.initdb()
        server.start(timeout=60)
        yield server
    finally:
        server.stop(mode="immediate")
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
async def chat_dsn(chat_server: PgInstance) -> AsyncIterator[str]:
    """The URL of an empty database on the module's server."""
    if not chat_server.is_running():
        chat_server.start(timeout=60)
    async with fresh_database(chat_server) as dsn:
        yield dsn


@pytest.fixture
async def chat(chat_dsn: str) -> AsyncIterator[ChatStore]:
    """An open chat store over an empty database, holding category `CATEGORY`."""
    store = ChatStore(chat_dsn, retry_for=20.0)
    await store.open()
    try:
        await store.add_category(Category(CATEGORY, "everything"))
        yield store
    finally:
        await store.close()


def aor(name: str) -> str:
    """The AOR of user `name`."""
    return f"sip:{name}@{DOMAIN}"


def room(name: str, kind: RoomKind = RoomKind.OPEN, *, disabled: bool = False) -> Room:
    """A room of category `CATEGORY`."""
    return Room(name, CATEGORY, kind, f"about {name}", created_at=1.0, disabled=disabled)


def message(room_name: str, author: str, body: str, *, msg_id: str | None = None,
            at: float = 10.0) -> Message:
    """A message to post (seq 0: the store assigns it); its id defaults to a fresh one."""
    return Message(room_name, 0, aor(author), body, at, msg_id or _next_id())


_IDS = iter(range(1, 1 << 62))


def _next_id() -> str:
    return f"msg-{next(_IDS):08d}"
