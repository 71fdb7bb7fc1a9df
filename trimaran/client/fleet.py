"""A fleet of simulated users: many user agents, an IM load between them, and the
bookkeeping failover tests and benchmarks need (who is registered where and since when,
which messages were acknowledged, which were delivered)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from trimaran.client.ua import UAConfig, UserAgent
from trimaran.net.transport import Address
from trimaran.sip.transaction import TimerConfig


@dataclass(frozen=True)
class FleetConfig:
    """Who the users are and how their clients behave."""

    domain: str
    servers: tuple[Address, ...]           # the pool's servers (each user starts on one)
    users: tuple[tuple[str, str], ...]     # (name, password)
    keepalive_interval: float | None = 1.0
    keepalive_timeout: float = 1.0
    retry_jitter: float = 0.2
    timers: TimerConfig = field(default_factory=TimerConfig)
    local_host: str = "127.0.0.1"


@dataclass
class LoadResult:
    """Outcome of an IM load: every message id acknowledged (2xx) or failed, with why."""

    acknowledged: set[str] = field(default_factory=set)
    failed: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)

    @property
    def sent(self) -> int:
        """Messages whose transaction finished."""
        return len(self.acknowledged) + len(self.failed)


class Fleet:
    """Many users, each with its own user agent, spread over the pool's servers."""

    def __init__(self, config: FleetConfig) -> None:
        self.config = config
        self.agents: dict[str, UserAgent] = {}
        self.received: dict[str, set[str]] = {}
        self.registered_at: dict[str, float] = {}
        self._consumers: list[asyncio.Task[None]] = []
        servers = list(config.servers)
        for index, (name, password) in enumerate(config.users):
            rotated = tuple(servers[index % len(servers):] + servers[:index % len(servers)])
            ua = UserAgent(UAConfig(
                aor=f"sip:{name}@{config.domain}", password=password, servers=rotated,
                local_host=config.local_host, keepalive_interval=config.keepalive_interval,
                keepalive_timeout=config.keepalive_timeout, retry_jitter=config.retry_jitter,
                timers=config.timers, auto_refresh=False))
            ua.on_registered = self._registered_hook(name)
            self.agents[name] = ua
            self.received[name] = set()

    def _registered_hook(self, name: str) -> Callable[[Address], None]:
        def hook(_: Address) -> None:
            self.registered_at[name] = time.monotonic()
        return hook

    async def start(self, concurrency: int = 32) -> None:
        """Start every agent and register it (raises if any registration fails)."""
        gate = asyncio.Semaphore(concurrency)

        async def bring_up(name: str, ua: UserAgent) -> None:
            async with gate:
                await ua.start()
                response = await ua.register()
                if response.status != 200:
                    raise RuntimeError(f"{name} could not register: {response.status}")
            self._consumers.append(asyncio.ensure_future(self._consume(name, ua)))

        await asyncio.gather(*(bring_up(n, ua) for n, ua in self.agents.items()))

    async def _consume(self, name: str, ua: UserAgent) -> None:
        while True:
            message = await ua.messages.get()
            self.received[name].add(message.body.decode(errors="replace"))

    async def close(self) -> None:
        """Stop every agent."""
        for task in self._consumers:
            task.cancel()
        await asyncio.gather(*(ua.close() for ua in self.agents.values()),
                             return_exceptions=True)

    def on_server(self, server: Address) -> list[str]:
        """Users currently registered through `server`."""
        return [n for n, ua in self.agents.items() if ua.server == server and
                ua.registered.is_set()]

    async def im_load(self, rate: float, stop: asyncio.Event,
                      pick: Callable[[random.Random], tuple[str, str]] | None = None,
                      seed: int = 7) -> LoadResult:
        """Send MESSAGEs at `rate` per second until `stop`; each body is a unique id."""
        rng = random.Random(seed)
        names = list(self.agents)
        result = LoadResult()
        pending: set[asyncio.Task[None]] = set()
        counter = 0

        async def one(sender: str, recipient: str, message_id: str) -> None:
            started = time.monotonic()
            response = await self.agents[sender].send_message(
                f"sip:{recipient}@{self.config.domain}", message_id)
            if 200 <= response.status < 300:
                result.acknowledged.add(message_id)
                result.latencies.append(time.monotonic() - started)
            else:
                result.failed[message_id] = response.status

        interval = 1.0 / rate
        next_at = time.monotonic()
        while not stop.is_set():
            sender, recipient = pick(rng) if pick else tuple(rng.sample(names, 2))
            counter += 1
            message_id = f"{sender}>{recipient}#{counter}"
            task = asyncio.ensure_future(one(sender, recipient, message_id))
            pending.add(task)
            task.add_done_callback(pending.discard)
            next_at += interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, next_at - time.monotonic()))
        if pending:
            await asyncio.gather(*pending)
        return result

    def delivered(self, message_id: str) -> bool:
        """True when the recipient of `message_id` received it."""
        recipient = message_id.split(">", 1)[1].split("#", 1)[0]
        return message_id in self.received.get(recipient, set())
