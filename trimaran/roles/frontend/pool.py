"""Pool membership: which servers of my pool are alive (SPEC FE-3).

Theory of operation
-------------------
Every server writes a heartbeat row to the pool's store every
`heartbeat_interval` and pings each peer with SIP OPTIONS. A peer is alive
while either signal is fresh: its heartbeat is younger than the detection
bound, or it answered a ping within the bound. When both go stale the peer is
declared dead: its bindings stop being used for routing at once and are purged
from the store (any server may purge; purging is idempotent).

A server can also find that *it* went silent — frozen (SIGSTOP), or cut off
— for longer than the bound. Its peers have then declared it dead and its
clients have moved; it must not serve from state that is now stale. `tick()`
reports this as `Decision("rejoin")` and the server drops its local state
before serving again.

`tick()` returns the decisions it took, each with its reason; they are logged
and shown in the status (STYLE: HA decisions are observable).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from trimaran.store.base import Store, StoreUnavailable
from trimaran.store.model import Heartbeat

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Peer:
    """Another server of the pool."""

    name: str
    host: str
    sip_port: int


@dataclass(frozen=True, slots=True)
class Decision:
    """One membership decision: `declare-dead`, `declare-alive`, `purge` or `rejoin`."""

    action: str
    server: str
    reason: str
    at: float


@dataclass(slots=True)
class _PeerState:
    heartbeat_at: float = 0.0     # wall clock of its last heartbeat row we read
    pinged_ok_at: float = 0.0     # our monotonic time of its last answered ping
    dead: bool = False
    purged: bool = False


@dataclass
class PoolView:
    """A snapshot of membership for status pages."""

    alive: list[str]
    dead: list[str]
    decisions: list[Decision] = field(default_factory=list)


Pinger = Callable[[Peer, float], Awaitable[bool]]


class PoolMembership:
    """Liveness of the servers of one pool, as seen by server `me`."""

    def __init__(self, me: str, pool: str, peers: list[Peer], store: Store, *,
                 detection: float, heartbeat_interval: float,
                 wall_clock: Callable[[], float], monotonic: Callable[[], float],
                 ping: Pinger) -> None:
        if not 0 < heartbeat_interval < detection:
            raise ValueError("need 0 < heartbeat_interval < detection")
        self.me = me
        self.pool = pool
        self.peers = {p.name: p for p in peers if p.name != me}
        self.store = store
        self.detection = detection
        self.heartbeat_interval = heartbeat_interval
        self.wall_clock = wall_clock
        self.monotonic = monotonic
        self._ping = ping
        started = monotonic()
        self._state = {name: _PeerState(pinged_ok_at=started) for name in self.peers}
        self._last_tick: float | None = None
        self.history: list[Decision] = []
        self.state = "up"

    def is_dead(self, server: str) -> bool:
        """True when `server` (a peer) has been declared dead."""
        state = self._state.get(server)
        return state is not None and state.dead

    def alive_peers(self) -> list[Peer]:
        """Peers currently considered alive."""
        return [p for name, p in self.peers.items() if not self._state[name].dead]

    def view(self) -> PoolView:
        """Who is alive and the recent decisions."""
        dead = sorted(n for n, s in self._state.items() if s.dead)
        alive = sorted([self.me, *(n for n, s in self._state.items() if not s.dead)])
        return PoolView(alive, dead, self.history[-20:])

    def heartbeat_ages(self) -> dict[str, float]:
        """Seconds since each peer's last heartbeat we saw (wall clock)."""
        now = self.wall_clock()
        return {n: round(now - s.heartbeat_at, 1) if s.heartbeat_at else -1.0
                for n, s in self._state.items()}

    async def tick(self) -> list[Decision]:
        """Beat, read the others, ping them, decide. Never raises for a store outage."""
        decisions: list[Decision] = []
        mono = self.monotonic()
        if self._last_tick is not None and mono - self._last_tick > self.detection:
            decisions.append(self._decide(
                "rejoin", self.me, f"this server was silent for {mono - self._last_tick:.1f} s "
                f"(> {self.detection:g} s): peers have declared it dead"))
        self._last_tick = mono
        store_ok = await self._beat_and_read()
        await self._ping_all()
        now_wall, mono = self.wall_clock(), self.monotonic()
        for name, state in self._state.items():
            hb_age = now_wall - state.heartbeat_at if state.heartbeat_at else float("inf")
            ping_age = mono - state.pinged_ok_at
            alive = hb_age <= self.detection or ping_age <= self.detection
            if state.dead and alive:
                state.dead = state.purged = False
                decisions.append(self._decide("declare-alive", name,
                                              f"heartbeat {hb_age:.1f} s, ping {ping_age:.1f} s"))
            elif not state.dead and not alive:
                state.dead = True
                decisions.append(self._decide(
                    "declare-dead", name, f"no heartbeat for {min(hb_age, 1e9):.1f} s and no "
                    f"answer to pings for {ping_age:.1f} s (bound {self.detection:g} s)"))
            if state.dead and not state.purged and store_ok:
                decisions += await self._purge(name)
        return decisions

    async def _beat_and_read(self) -> bool:
        try:
            # A slow or absent store must not stall the membership loop (pings go on).
            return await asyncio.wait_for(self._beat_and_read_store(), self.heartbeat_interval)
        except TimeoutError:
            log.debug("heartbeat skipped: the store did not answer in time")
            return False

    async def _beat_and_read_store(self) -> bool:
        try:
            await self.store.heartbeats.beat(Heartbeat(self.me, self.pool, self.wall_clock(),
                                                       self.state))
            for beat in await self.store.heartbeats.all(self.pool):
                state = self._state.get(beat.server)
                if state is not None:
                    state.heartbeat_at = max(state.heartbeat_at, beat.at)
        except StoreUnavailable as exc:
            log.debug("heartbeat skipped, store unavailable: %s", exc)
            return False
        return True

    async def _ping_all(self) -> None:
        timeout = min(self.heartbeat_interval, self.detection / 2)
        peers = list(self.peers.values())
        results = await asyncio.gather(*(self._ping(p, timeout) for p in peers))
        mono = self.monotonic()
        for peer, ok in zip(peers, results, strict=True):
            if ok:
                self._state[peer.name].pinged_ok_at = mono

    async def _purge(self, name: str) -> list[Decision]:
        try:
            removed = await self.store.bindings.purge_server(name)
        except StoreUnavailable:
            return []
        self._state[name].purged = True
        return [self._decide("purge", name, f"removed {removed} binding(s) of the dead server")]

    def _decide(self, action: str, server: str, reason: str) -> Decision:
        decision = Decision(action, server, reason, self.wall_clock())
        self.history.append(decision)
        del self.history[:-100]
        log.warning("pool %s: %s %s: %s", self.pool, action, server, reason)
        return decision
