"""The state of the whole deployment, gathered from every server (SPEC OPS-3).

One round asks, concurrently and each with a short timeout, every server of the
topology for ``/health`` (and ``/status`` where its role has one), every witness for
its Back End views (``/backends``) and the pools it watches (``/pools/{pool}``), and
every mirroring agent for ``/state``. The answers become the overview document
(`trimaran.admin.overview_model.build`). A round is shared: callers within `ttl`
seconds of the last one get its document, and callers arriving while a round runs
wait for it, so any number of status pages cost one round per `ttl`.

Requests leave from the serving server's own address (`leaving_from`), so the page
shows the deployment as that server sees it: a cut site is down from the other side.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import aiohttp

from trimaran.admin import access
from trimaran.admin.overview_model import AgentEndpoint, Answer, ChangeLog, Gathered, Json, build
from trimaran.cms.liveness import leaving_from
from trimaran.security import https
from trimaran.topology.model import PoolRole, Server, Topology

#: Seconds a gathered document is served before the next round.
CACHE_SECONDS = 1.0
#: Seconds each request of a round may take (a silent server is then shown down).
REQUEST_TIMEOUT = 0.8
#: Roles whose servers answer ``GET /status``.
STATUS_ROLES = frozenset({PoolRole.FRONTEND, PoolRole.DIRECTOR, PoolRole.DNS})

K = TypeVar("K")


class Overview:
    """The deployment overview served by one server (see the module docstring).

    `failed_sites` returns the `site fail` records known on this machine (site name ->
    ``{"mode", "since"}``); `local_host` is the address requests leave from."""

    def __init__(self, topology: Topology, *, server: str,
                 agents: Sequence[AgentEndpoint] = (),
                 failed_sites: Callable[[], Mapping[str, Any]] = dict,
                 local_host: str | None = None, ttl: float = CACHE_SECONDS,
                 timeout: float = REQUEST_TIMEOUT,
                 wall_clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.topology = topology
        self.server = server
        self.agents = tuple(agents)
        self.failed_sites = failed_sites
        self.local_host = local_host
        self.ttl = ttl
        self.timeout = timeout
        self.wall_clock = wall_clock
        self.monotonic = monotonic
        self.changes = ChangeLog()
        self._lock = asyncio.Lock()
        self._document: Json | None = None
        self._made_at = 0.0
        self._session: aiohttp.ClientSession | None = None

    async def document(self) -> Json:
        """The overview document, at most `ttl` seconds old."""
        async with self._lock:
            if self._document is None or self.monotonic() - self._made_at >= self.ttl:
                gathered = await self.gather()
                self._document = build(self.topology, self.agents, gathered,
                                       now=self.wall_clock(), served_by=self.server,
                                       changes=self.changes)
                self._made_at = self.monotonic()
            return self._document

    async def gather(self) -> Gathered:
        """One round of requests (see the module docstring)."""
        health: dict[str, asyncio.Task[Answer]] = {}
        status: dict[str, asyncio.Task[Answer]] = {}
        backends: dict[str, asyncio.Task[Answer]] = {}
        watched: dict[tuple[str, str], asyncio.Task[Answer]] = {}
        for pool in self.topology.pools:
            for srv in pool.servers:
                health[srv.name] = self._ask(srv, "/health")
                if pool.role in STATUS_ROLES:
                    status[srv.name] = self._ask(srv, "/status")
                if pool.role is PoolRole.WITNESS:
                    backends[srv.name] = self._ask(srv, "/backends")
                    watched.update({(srv.name, name): self._ask(srv, f"/pools/{name}")
                                    for name in self._auto_failover_pools()})
        agents = {a.name: asyncio.ensure_future(self._fetch(f"{a.url}/state"))
                  for a in self.agents}
        return Gathered(health=await _all(health), status=await _all(status),
                        agents=await _all(agents), witness=await _all(backends),
                        watched=await _all(watched), failed_sites=self.failed_sites())

    async def close(self) -> None:
        """Release the HTTP connections; idempotent."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _auto_failover_pools(self) -> list[str]:
        """The pools a witness watches (DR-10)."""
        return [p.name for p in self.topology.pools
                if p.role is PoolRole.FRONTEND and p.auto_failover]

    def _ask(self, server: Server, path: str) -> asyncio.Task[Answer]:
        return asyncio.ensure_future(
            self._fetch(f"http://{server.address}:{server.admin_port}{path}"))

    async def _fetch(self, url: str) -> Answer:
        url = https.secure(url)       # OPS-6: HTTPS between servers under mutual TLS
        if self._session is None:
            self._session = leaving_from(self.local_host)
        limit = aiohttp.ClientTimeout(total=self.timeout)
        try:
            async with self._session.get(url, timeout=limit, allow_redirects=False,
                                         headers=access.headers_for("GET", url)) as resp:
                status, raw = resp.status, await resp.read()
        except TimeoutError:
            return Answer(error=f"no answer within {self.timeout:.1f} s")
        except aiohttp.ClientConnectorError as exc:
            errno = exc.os_error.errno
            return Answer(error=os.strerror(errno) if errno else str(exc.os_error))
        except (aiohttp.ClientError, OSError) as exc:
            return Answer(error=f"{type(exc).__name__}: {exc}"[:200])
        try:
            value = json.loads(raw)
        except ValueError:
            return Answer(status, None, f"HTTP {status}, not JSON")
        if not isinstance(value, dict):
            return Answer(status, None, f"HTTP {status}, not a JSON object")
        return Answer(status, value)


async def _all(pending: Mapping[K, asyncio.Task[Answer]]) -> dict[K, Answer]:
    """The answers of the requests in flight in `pending`, by the same keys."""
    answers = await asyncio.gather(*pending.values())
    return dict(zip(pending.keys(), answers, strict=True))
