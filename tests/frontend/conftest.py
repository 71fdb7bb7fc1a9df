"""A Front End server on loopback with a real SQLite store, and users to sign in with."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from trimaran.client.ua import UAConfig, UserAgent
from trimaran.net.transport import Address, TransportError
from trimaran.roles.frontend.config import FrontEndConfig
from trimaran.roles.frontend.server import FrontEndServer
from trimaran.sip import digest
from trimaran.sip.transaction import TimerConfig
from trimaran.store.model import Credentials, User
from trimaran.store.sqlite import SqliteStore

DOMAIN = "trimaran.test"
FAST = TimerConfig(t1=0.1, t2=0.8, t4=1.0)


def password_of(name: str) -> str:
    return f"{name}-secret-pw"


async def add_user(store: SqliteStore, name: str, *, pool: str = "se1",
                   number: str | None = None) -> str:
    aor = f"sip:{name}@{DOMAIN}"
    creds = Credentials(aor, name, DOMAIN, digest.ha1(name, DOMAIN, password_of(name), "MD5"),
                        digest.ha1(name, DOMAIN, password_of(name), "SHA-256"))
    await store.users.add(User(aor, pool, name.capitalize(), number), creds, now=time.time())
    return aor


@dataclass
class FrontEnd:
    server: FrontEndServer
    store: SqliteStore
    path: Path

    def address(self, transport: str = "udp") -> Address:
        host, port = self.server.sip_address
        return Address(transport, host, port)

    @property
    def admin_url(self) -> str:
        assert self.server.admin_address is not None
        host, port = self.server.admin_address
        return f"http://{host}:{port}"


async def start_frontend(path: Path, **overrides: object) -> FrontEnd:
    store = SqliteStore(path / "store.sqlite", pool="se1")
    await store.open()
    settings: dict[str, object] = {
        "server": "se1", "pool": "se1", "domain": DOMAIN, "host": "127.0.0.1", "sip_port": 0,
        "admin_port": 0, "secret": b"0123456789abcdef0123456789abcdef", "timers": FAST,
        "housekeeping_interval": 0.2}
    settings.update(overrides)
    for _ in range(10):
        # Port 0 picks a free UDP port; the same TCP port may be taken by a client
        # connection's ephemeral port: then try another.
        server = FrontEndServer(FrontEndConfig(**settings), store)  # type: ignore[arg-type]
        try:
            await server.start()
        except TransportError:
            await server.stop()
            continue
        return FrontEnd(server, store, path)
    raise AssertionError("no free SIP port found for the test server")


@pytest.fixture
async def frontend(tmp_path: Path) -> AsyncIterator[FrontEnd]:
    fe = await start_frontend(tmp_path)
    for name in ("alice", "bob", "carol"):
        await add_user(fe.store, name)
    yield fe
    await fe.server.stop()
    await fe.store.close()


MakeUA = Callable[..., "AsyncIterator[UserAgent]"]


@pytest.fixture
async def make_ua(frontend: FrontEnd) -> AsyncIterator[Callable[..., object]]:
    agents: list[UserAgent] = []

    async def make(name: str, transport: str = "tcp", *, password: str | None = None,
                   register: bool = True, **kw: object) -> UserAgent:
        config = UAConfig(aor=f"sip:{name}@{DOMAIN}",
                          password=password if password is not None else password_of(name),
                          servers=(frontend.address(transport),), timers=FAST,
                          auto_refresh=False, **kw)  # type: ignore[arg-type]
        ua = UserAgent(config)
        await ua.start()
        agents.append(ua)
        if register:
            response = await ua.register()
            assert response.status == 200, response
        return ua

    yield make
    for ua in agents:
        await ua.close()
