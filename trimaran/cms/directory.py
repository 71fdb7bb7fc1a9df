"""Where users are homed, looked up in the Front End pools through their CMS homing
API (`/cms/homing/{user}`, signed with the deployment's CMS key), with a short cache:
the Directors' credential source, and the Front Ends' way to find the home pool of a
user of a pool they hold no copy of."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from urllib.parse import quote

from trimaran.admin.peerclient import PeerClient
from trimaran.cms.follower import CMS_KEY_ID
from trimaran.store.model import Credentials
from trimaran.topology.model import PoolRole, Server, Topology
from trimaran.topology.resolver import Resolver

HOMING_TTL = 30.0
HOMING_LIMIT = 100_000


class Directory:
    """User homing looked up in the Front End pools (no user state kept beyond a short
    cache): the `users` of a `RequestAuthenticator`."""

    def __init__(self, topology: Topology, secret: bytes, *, local_host: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._pools = Resolver(topology).pools(PoolRole.FRONTEND)
        self._client = PeerClient(CMS_KEY_ID, secret, timeout=1.5, local_host=local_host)
        self._clock = clock
        self._cache: dict[tuple[str, str], tuple[float, Credentials, str]] = {}
        self.homes: dict[str, str] = {}            # AOR -> home pool (last looked up)

    @property
    def users(self) -> Directory:
        """The credential lookup (this object)."""
        return self

    async def close(self) -> None:
        """Release connections."""
        await self._client.close()

    async def credentials(self, username: str, realm: str) -> Credentials | None:
        """The user's credentials from whichever pool answers first (None: unknown)."""
        key = (username, realm)
        cached = self._cache.get(key)
        if cached is not None and self._clock() - cached[0] < HOMING_TTL:
            return cached[1]
        answers = await asyncio.gather(*(self._ask(p.servers, username, realm)
                                         for p in self._pools))
        for answer in answers:
            if answer is not None:
                creds, pool = answer
                if len(self._cache) >= HOMING_LIMIT:
                    self._cache.clear()
                self._cache[key] = (self._clock(), creds, pool)
                self.homes[creds.aor] = pool
                return creds
        return None

    async def _ask(self, servers: tuple[Server, ...], username: str,
                   realm: str) -> tuple[Credentials, str] | None:
        for spec in servers:
            status, body = await self._client.call(
                "GET", f"http://{spec.address}:{spec.admin_port}/cms/homing/"
                       f"{quote(username, safe='')}?realm={quote(realm, safe='')}")
            if status == 404:
                return None
            if status != 200:
                continue
            try:
                creds = Credentials(str(body["aor"]), str(body["username"]),
                                    str(body["realm"]), str(body["ha1_md5"]),
                                    str(body["ha1_sha256"]))
                return creds, str(body["pool"])
            except KeyError:
                return None
        return None
