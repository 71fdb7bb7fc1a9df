"""Is a pool alive? The backup registrar's own detection of its paired pool (SPEC DR-8),
and the witness's view of a pool for automatic failover (DR-10).

Every server of a pool asks the servers of the pool it is backup registrar for (the
witness: the pools it watches)
(`GET /health` on their admin API; any HTTP answer means the server lives) every
`interval` seconds. The pool's state, from the last time any of its servers answered:

=============  ===============================================================
``up``         answering (and, after an outage, answering for `fallback` s)
``suspect``    silent for more than two intervals, less than `detection`:
               its users are asked to retry later (503 + Retry-After)
``down``       silent for `detection` seconds: its users are served here in
               resiliency mode
``recovering`` answering again after being down, for less than `fallback`
               seconds: its users stay here (no flapping) until it is ``up``
=============  ===============================================================

`PartnerState.next` is the pure transition (time passed in); `PartnerWatch` is the
asyncio loop around it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import aiohttp

from trimaran.aio import cancel
from trimaran.security import https
from trimaran.topology.model import Server

log = logging.getLogger(__name__)

UP, SUSPECT, DOWN, RECOVERING = "up", "suspect", "down", "recovering"


@dataclass(frozen=True, slots=True)
class PartnerState:
    """What this server knows of the paired pool's liveness."""

    state: str = UP
    last_seen: float = 0.0       # monotonic time of the last answer
    since: float = 0.0           # when `state` was entered
    reason: str = "not probed yet"

    def next(self, *, now: float, answered: bool, interval: float, detection: float,
             fallback: float) -> PartnerState:
        """The state after one probe at `now`."""
        seen = now if answered else self.last_seen
        silent = now - seen
        if self.state in (DOWN, RECOVERING):
            if not answered and silent > detection:
                return replace(self, state=DOWN, last_seen=seen,
                               since=self.since if self.state == DOWN else now,
                               reason=f"silent for {silent:.1f} s")
            if self.state == DOWN and answered:
                return PartnerState(RECOVERING, seen, now, "answering again")
            if self.state == RECOVERING and now - self.since >= fallback:
                return PartnerState(UP, seen, now, f"answering for {fallback:.0f} s")
            return replace(self, last_seen=seen)
        if silent > detection:
            return PartnerState(DOWN, seen, now, f"silent for {silent:.1f} s "
                                                 f"(detection {detection:.0f} s)")
        if silent > 2 * interval:
            return PartnerState(SUSPECT, seen, self.since if self.state == SUSPECT else now,
                                f"silent for {silent:.1f} s")
        return PartnerState(UP, seen, self.since if self.state == UP else now, "answering")

    def retry_after(self, now: float, detection: float) -> float:
        """While suspect: seconds until it would be declared down."""
        return max(1.0, detection - (now - self.last_seen))


def leaving_from(local_host: str | None) -> aiohttp.ClientSession:
    """An HTTP session whose connections leave from `local_host` (a server's own
    address, so that a site cut by address cuts these probes too)."""
    return aiohttp.ClientSession(connector=https.connector(local_host))  # OPS-6


class PartnerWatch:
    """Probes the paired pool's servers and keeps its `PartnerState`."""

    def __init__(self, pool: str, servers: tuple[Server, ...], *, interval: float,
                 detection: float, fallback: float, local_host: str | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.pool = pool
        self.servers = servers
        self.interval = interval
        self.detection = detection
        self.fallback = fallback
        self.local_host = local_host
        self.monotonic = monotonic
        self.current = PartnerState(UP, monotonic(), monotonic(), "assumed up at start")
        self.on_change: Callable[[PartnerState], None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    def start(self) -> None:
        """Probe in the background."""
        self._task = asyncio.ensure_future(self._loop())

    async def stop(self) -> None:
        """Stop probing; idempotent."""
        await cancel(self._task)
        self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _loop(self) -> None:
        while True:
            answered = await self._probe()
            before = self.current
            self.current = before.next(now=self.monotonic(), answered=answered,
                                       interval=self.interval, detection=self.detection,
                                       fallback=self.fallback)
            if self.current.state != before.state:
                log.warning("paired pool %s is %s: %s", self.pool, self.current.state,
                            self.current.reason)
                if self.on_change is not None:
                    self.on_change(self.current)
            await asyncio.sleep(self.interval)

    async def _probe(self) -> bool:
        if self._session is None:
            self._session = leaving_from(self.local_host)
        limit = aiohttp.ClientTimeout(total=min(1.0, self.interval))
        results = await asyncio.gather(*(self._ask(s, limit) for s in self.servers))
        return any(results)

    async def _ask(self, spec: Server, limit: aiohttp.ClientTimeout) -> bool:
        assert self._session is not None
        url = https.secure(f"http://{spec.address}:{spec.admin_port}/health")
        try:
            async with self._session.get(url, timeout=limit) as response:
                await response.read()
                return True
        except (TimeoutError, OSError, aiohttp.ClientError):
            return False

    def status(self) -> dict[str, object]:
        """For /status."""
        now = self.monotonic()
        return {"pool": self.pool, "state": self.current.state, "reason": self.current.reason,
                "silent_for": round(now - self.current.last_seen, 1),
                "in_state_for": round(now - self.current.since, 1)}
