"""An Enterprise-style pool in one process: three Front End servers on one shared store.

These tests exercise the pool logic (routing across servers, failure detection,
drain, resiliency) quickly; tests/integration runs the same behaviours with real
processes and PostgreSQL.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.frontend.conftest import DOMAIN, FAST, add_user, password_of
from tests.interop.sipp import free_port
from trimaran.client.ua import UAConfig, UserAgent
from trimaran.net.transport import Address
from trimaran.roles.frontend.config import FrontEndConfig
from trimaran.roles.frontend.pool import Peer
from trimaran.roles.frontend.server import FrontEndServer
from trimaran.store.sqlite import SqliteStore

SECRET = b"pool-secret-0123456789abcdef0123"
NAMES = ("fe1a", "fe1b", "fe1c")


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0,
                   message: str = "condition") -> float:
    """Poll until `predicate()`; return the seconds it took; fail after `timeout`."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not predicate():
        if loop.time() - start > timeout:
            raise AssertionError(f"{message} not met within {timeout} s")
        await asyncio.sleep(0.02)
    return loop.time() - start


@dataclass
class Pool:
    path: Path
    peers: dict[str, Peer]
    servers: dict[str, FrontEndServer] = field(default_factory=dict)
    stores: dict[str, SqliteStore] = field(default_factory=dict)
    agents: list[UserAgent] = field(default_factory=list)

    def config(self, name: str, **overrides: Any) -> FrontEndConfig:
        peer = self.peers[name]
        settings: dict[str, Any] = {
            "server": name, "pool": "fe1", "domain": DOMAIN, "host": peer.host,
            "sip_port": peer.sip_port, "admin_port": 0, "secret": SECRET, "timers": FAST,
            "peers": tuple(self.peers.values()), "heartbeat_interval": 0.2,
            "failure_detection": 1.0, "housekeeping_interval": 0.2, "drain_grace": 0.3}
        settings.update(overrides)
        return FrontEndConfig(**settings)

    async def start(self, name: str, **overrides: Any) -> FrontEndServer:
        store = SqliteStore(self.path / "pool.sqlite", pool="fe1")
        await store.open()
        server = FrontEndServer(self.config(name, **overrides), store)
        await server.start()
        self.servers[name], self.stores[name] = server, store
        return server

    async def stop(self, name: str) -> None:
        await self.servers.pop(name).stop()
        await self.stores.pop(name).close()

    def address(self, name: str) -> Address:
        peer = self.peers[name]
        return Address("tcp", peer.host, peer.sip_port)

    async def user(self, name: str, *servers: str, **kw: Any) -> UserAgent:
        """A registered client whose server list is `servers` (first = where it registers)."""
        config = UAConfig(aor=f"sip:{name}@{DOMAIN}", password=password_of(name),
                          servers=tuple(self.address(s) for s in servers), timers=FAST,
                          auto_refresh=False, retry_jitter=0.05, **kw)
        ua = UserAgent(config)
        await ua.start()
        self.agents.append(ua)
        response = await ua.register()
        assert response.status == 200, response
        return ua

    def store(self) -> SqliteStore:
        return next(iter(self.stores.values()))


@pytest.fixture
async def pool(tmp_path: Path) -> AsyncIterator[Pool]:
    peers = {name: Peer(name, f"127.0.3.{i + 1}", free_port(host=f"127.0.3.{i + 1}"))
             for i, name in enumerate(NAMES)}
    p = Pool(tmp_path, peers)
    for name in NAMES:
        await p.start(name)
    for user in ("alice", "bob", "carol", "dave"):
        await add_user(p.store(), user, pool="fe1")
    yield p
    for ua in p.agents:
        await ua.close()
    for name in list(p.servers):
        await p.stop(name)
