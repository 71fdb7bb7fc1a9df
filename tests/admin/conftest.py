"""Shared helpers for the admin API tests: a real server on 127.0.0.1:0 over a real store."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from tests import admincreds
from trimaran.admin.http import AdminContext, AdminServer
from trimaran.admin.metrics import Metrics
from trimaran.sip.digest import Challenge, answer, ha1, new_cnonce
from trimaran.store.base import Store
from trimaran.store.model import Credentials, User

REALM = "trimaran.test"
POOL = "fe1"
PASSWORDS = {"alice": "wonderland", "bob": "builder"}
ALICE = "sip:alice@trimaran.test"
BOB = "sip:bob@trimaran.test"


def xcap_path(aor: str) -> str:
    return f"/xcap/resource-lists/users/{quote(aor, safe='')}/index"


def admin_contacts_path(aor: str) -> str:
    return f"/admin/contacts/{quote(aor, safe='')}"


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


async def add_user(store: Store, name: str, *, enabled: bool = True) -> str:
    aor = f"sip:{name}@{REALM}"
    password = PASSWORDS.get(name, "secret")
    creds = Credentials(aor, name, REALM, ha1(name, REALM, password, "MD5"),
                        ha1(name, REALM, password, "SHA-256"))
    await store.users.add(User(aor, POOL, enabled=enabled), creds, now=time.time())
    return aor


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    from trimaran.store.sqlite import SqliteStore

    db = SqliteStore(tmp_path / "fe1.db", pool=POOL)
    await db.open()
    await add_user(db, "alice")
    await add_user(db, "bob")
    try:
        yield db
    finally:
        await db.close()


@dataclass
class Admin:
    """A started AdminServer, the client session to talk to it, and the knobs of its context."""

    server: AdminServer
    base: str
    session: aiohttp.ClientSession
    metrics: Metrics
    clock: Clock
    changed: list[str]
    health: list[object] = field(default_factory=lambda: [True, "serving"])

    def url(self, path: str) -> str:
        return self.base + path

    async def request(self, method: str, path: str, *, anonymous: bool = False,
                      **kwargs: Any) -> aiohttp.ClientResponse:
        """`method path`, with an operator admin token on admin routes unless `anonymous`
        or the caller gives its own Authorization."""
        headers = dict(kwargs.pop("headers", {}))
        if not anonymous and "Authorization" not in headers and admincreds.needed(method, path):
            headers.update(admincreds.headers())
        return await self.session.request(method, self.url(path), headers=headers, **kwargs)

    async def challenge(self, path: str, algorithm: str = "SHA-256") -> Challenge:
        """The Digest challenge a request without credentials gets."""
        async with await self.request("GET", path) as resp:
            assert resp.status == 401
            challenges = [Challenge.parse(v) for v in resp.headers.getall("WWW-Authenticate")]
        return next(c for c in challenges if c.algorithm == algorithm)

    async def digest(self, method: str, path: str, *, user: str = "alice",
                     password: str | None = None, algorithm: str = "SHA-256",
                     challenge: Challenge | None = None, nc: int = 1,
                     digest_uri: str | None = None, **kwargs: Any) -> aiohttp.ClientResponse:
        """`method path` answered to a fresh (or the given) challenge, as a client would."""
        chal = challenge or await self.challenge(path, algorithm)
        creds = answer(chal, method=method, uri=digest_uri or path, username=user,
                       password=password if password is not None else PASSWORDS[user],
                       cnonce=new_cnonce(), nc=nc)
        headers = {**kwargs.pop("headers", {}), "Authorization": str(creds)}
        return await self.request(method, path, headers=headers, **kwargs)


MakeAdmin = Callable[..., Awaitable[Admin]]


@pytest.fixture
async def make_admin(store: Store) -> AsyncIterator[MakeAdmin]:
    """Start an AdminServer over `store`; keyword arguments override AdminContext fields."""
    started: list[Admin] = []
    session = aiohttp.ClientSession()

    async def make(**overrides: Any) -> Admin:
        metrics, clock, changed = Metrics(), Clock(), []
        health: list[object] = [True, "serving"]

        async def contacts_changed(owner: str) -> None:
            changed.append(owner)

        fields: dict[str, Any] = {
            "server": "fe1a", "role": "frontend", "pool": POOL, "realm": REALM,
            "store": store, "metrics": metrics, "wall_clock": clock,
            "status": lambda: {"registered": 3, "state": "up"},
            "health": lambda: (bool(health[0]), str(health[1])),
            "on_contacts_changed": contacts_changed,
        }
        fields.update(overrides)
        server = AdminServer(AdminContext(**fields))
        host, port = await server.start("127.0.0.1", 0)
        admin = Admin(server, f"http://{host}:{port}", session, fields["metrics"], clock,
                      changed, health)
        started.append(admin)
        return admin

    try:
        yield make
    finally:
        for admin in started:
            await admin.server.close()
        await session.close()


@pytest.fixture
async def admin(make_admin: MakeAdmin) -> Admin:
    return await make_admin()
