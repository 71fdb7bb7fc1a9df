"""Fixtures for the store tests.

The contract tests (`test_contract_*.py`) are written against the abstract `Store`
only, through the `store` fixture and `backend.make()` (a new, unopened store over the
same database, for reopen/durability tests). A new backend joins them by adding a
param to `backend` below.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from trimaran.store import (
    Binding,
    Credentials,
    Publication,
    SqliteStore,
    Store,
    User,
)

POOL = "fe1"
DOMAIN = "example.com"


@dataclass(frozen=True)
class Backend:
    """A store backend under test: `make()` returns an unopened store over one database."""

    name: str
    make: Callable[[], Store]
    location: Path


@pytest.fixture(params=["sqlite"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Every backend the contract tests run against."""
    if request.param == "sqlite":
        path = tmp_path / "data" / f"{POOL}.sqlite"
        return Backend("sqlite", lambda: SqliteStore(path, pool=POOL), path)
    raise AssertionError(f"unknown backend {request.param}")  # pragma: no cover


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[Store]:
    """An open, empty store of each backend."""
    s = backend.make()
    await s.open()
    try:
        yield s
    finally:
        await s.close()


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
