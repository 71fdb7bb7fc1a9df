"""Helpers of the mirroring tests: a real mirrored pair of PostgreSQL instances with
their agents and a witness in this process, a writer that records what was
acknowledged, and a TCP link that can be cut."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg  # type: ignore[import-untyped]

from tests import admincreds
from trimaran.backend.agent import Agent, AgentConfig
from trimaran.backend.decide import Policy, Role, Timeouts
from trimaran.backend.instance import BackendError, PgInstance
from trimaran.backend.pair import create_pair
from trimaran.backend.witness import Witness

BACKEND = "pool1"
P_HOST, M_HOST = "127.0.0.1", "127.0.0.2"
#: Faster than the defaults, still in the ratio the defaults keep (see AgentConfig).
FAST = Timeouts(unreachable_after=1.2, mirror_lost_after=1.0, restart_grace=6.0,
                stream_lost_after=10.0)
FAST_WITNESS_TIMEOUT = 2.5


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


async def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Wait until `condition()` holds (polling); the seconds it took. AssertionError
    naming `what` after `timeout` seconds."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def fetch(dsn: str, sql: str, *args: object) -> list[Any]:
    """Every row of `sql` over a new connection."""
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        return list(await conn.fetch(sql, *args, timeout=10))
    finally:
        await conn.close()


class Link:
    """A TCP relay from `listen` to `target` that can be cut (every connection closed,
    new ones refused) and healed: a network partition between two processes."""

    def __init__(self, host: str, port: int, target: tuple[str, int]) -> None:
        self.host, self.port, self.target = host, port, target
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def heal(self) -> None:
        """Listen (again)."""
        self._server = await asyncio.start_server(self._relay, self.host, self.port)

    async def cut(self) -> None:
        """Refuse new connections and drop the open ones."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        if server is not None:
            await server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        self._writers.difference_update((writer, up_writer))


@dataclass
class Writer:
    """Inserts 1, 2, 3... into ``numbers`` through the multi-host read-write DSN, each
    number retried (idempotently) until acknowledged or `give_up` seconds passed.
    `acked`: numbers whose COMMIT returned; `acked_at`: when (monotonic)."""

    dsn: str
    give_up: float = 20.0
    acked: list[int] = field(default_factory=list)
    acked_at: list[float] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    errors: int = 0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start writing in the background."""
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Finish the number in flight and stop."""
        self._stop.set()
        if self._task is not None:
            await self._task

    def acked_after(self, moment: float) -> float | None:
        """When the first write after `moment` was acknowledged (None: none yet)."""
        return next((at for at in self.acked_at if at > moment), None)

    async def _run(self) -> None:
        conn: Any = None
        number = 0
        while not self._stop.is_set():
            number += 1
            deadline = time.monotonic() + self.give_up
            while True:
                try:
                    if conn is None:
                        conn = await asyncpg.connect(self.dsn, timeout=1)
                    await conn.execute("INSERT INTO numbers VALUES ($1) ON CONFLICT DO NOTHING",
                                       number, timeout=2)
                    self.acked.append(number)
                    self.acked_at.append(time.monotonic())
                    break
                except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError,
                        asyncpg.InternalClientError):
                    self.errors += 1
                    if conn is not None:
                        conn.terminate()
                        conn = None
                    if time.monotonic() > deadline:
                        self.failed.append(number)
                        break
                    await asyncio.sleep(0.05)
            await asyncio.sleep(0.005)
        if conn is not None:
            conn.terminate()


class Pair:
    """A mirrored pair (nodes ``a``: principal at creation on 127.0.0.1, ``b``: mirror on
    127.0.0.2), an optional witness and the two agents, all in this process.

    `partner_links`: route each agent's calls to its partner's agent — and the
    mirror's replication — through `Link`s, so a test can cut the partners off from
    each other while both still reach the witness."""

    def __init__(self, base: Path, *, witness: bool = True, policy: Policy = Policy.AVAILABLE,
                 timeouts: Timeouts = FAST, witness_timeout: float = FAST_WITNESS_TIMEOUT,
                 tick: float = 0.25, partner_links: bool = False) -> None:
        self.base = base
        self.instances = {
            "a": PgInstance(base / "a" / "data", P_HOST, free_port(P_HOST), durable=False,
                            mirrored=True),
            "b": PgInstance(base / "b" / "data", M_HOST, free_port(M_HOST), durable=False,
                            mirrored=True)}
        self.api_ports = {"a": free_port(P_HOST), "b": free_port(M_HOST)}
        self.policy, self.timeouts, self.tick = policy, timeouts, tick
        self.witness_timeout = witness_timeout
        self.witness_port = free_port() if witness else None
        self.witness: Witness | None = None
        self.agents: dict[str, Agent] = {}
        self.links: dict[str, Link] = {}
        self.partner_links = partner_links

    @property
    def dsn(self) -> str:
        """What the Front Ends use: both hosts, read-write only (BE-8)."""
        a, b = self.instances["a"], self.instances["b"]
        return (f"postgresql://trimaran@{a.host}:{a.port},{b.host}:{b.port}/trimaran"
                "?target_session_attrs=read-write")

    async def create(self) -> None:
        """Create the instances (synchronous pair), the table, the witness, the agents."""
        await create_pair(self.instances["a"], self.instances["b"], application_name="b")
        await fetch(self.instances["a"].dsn, "CREATE TABLE numbers (n integer PRIMARY KEY)")
        if self.partner_links:
            for node, other in (("a", "b"), ("b", "a")):
                link = Link(P_HOST if node == "a" else M_HOST, free_port(),
                            (M_HOST if other == "b" else P_HOST, self.api_ports[other]))
                await link.heal()
                self.links[f"{node}->api"] = link
            pg = self.instances["a"]
            link = Link(M_HOST, free_port(M_HOST), (pg.host, pg.port))
            await link.heal()
            self.links["b->pg"] = link
            if self.witness_port is not None:      # and the principal's witness link
                link = Link(P_HOST, free_port(P_HOST), ("127.0.0.1", self.witness_port))
                await link.heal()
                self.links["a->witness"] = link
            mirror = self.instances["b"]           # replication through the link too
            await asyncio.to_thread(mirror.stop)
            mirror.configure_standby(link.host, link.port, application_name="b")
            await asyncio.to_thread(mirror.start)
        await self.start_witness()
        for node in ("a", "b"):
            await self.start_agent(node)

    async def start_witness(self) -> None:
        """Start (or restart) the witness, its state in ``base/witness``."""
        if self.witness_port is None:
            return
        self.witness = Witness(self.base / "witness", "127.0.0.1", self.witness_port,
                               principal_timeout=self.witness_timeout)
        await self.witness.start()

    async def stop_witness(self) -> None:
        """Stop the witness (its records stay on disk)."""
        if self.witness is not None:
            await self.witness.close()
            self.witness = None

    def config(self, node: str) -> AgentConfig:
        """The agent configuration of `node`."""
        other = "b" if node == "a" else "a"
        partner = self.instances[other]
        partner_host, partner_port = partner.host, partner.port
        partner_url = f"http://{partner.host}:{self.api_ports[other]}"
        if self.partner_links:
            api = self.links[f"{node}->api"]
            partner_url = f"http://{api.host}:{api.port}"
            if node == "b":
                pg = self.links["b->pg"]
                partner_host, partner_port = pg.host, pg.port
        witness_url = None if self.witness_port is None \
            else f"http://127.0.0.1:{self.witness_port}"
        if node == "a" and "a->witness" in self.links:
            link = self.links["a->witness"]
            witness_url = f"http://{link.host}:{link.port}"
        return AgentConfig(
            backend=BACKEND, node=node, initial_role=Role.PRINCIPAL if node == "a"
            else Role.MIRROR, instance=self.instances[node], partner=other,
            partner_host=partner_host, partner_port=partner_port, partner_url=partner_url,
            state_path=self.base / node / "agent.json", host=self.instances[node].host,
            port=self.api_ports[node],
            witness_url=witness_url, policy=self.policy, tick=self.tick, timeouts=self.timeouts,
            request_timeout=min(1.0, self.timeouts.unreachable_after / 2))

    async def start_agent(self, node: str) -> Agent:
        """Start the agent of `node`."""
        agent = Agent(self.config(node))
        await agent.start()
        self.agents[node] = agent
        return agent

    async def stop_agent(self, node: str) -> None:
        """Stop the agent of `node` (its instance keeps running)."""
        agent = self.agents.pop(node, None)
        if agent is not None:
            await agent.close()

    def decision(self, node: str) -> str:
        """The last decision's rule of `node`'s agent ("" before the first)."""
        agent = self.agents.get(node)
        d = agent.last_decision if agent is not None else None
        return d.rule if d is not None else ""

    def status(self, node: str) -> dict[str, Any]:
        """`node`'s agent status."""
        return self.agents[node].status()

    def steady(self, principal: str, term: int) -> bool:
        """`principal` serves in `term` with the other node as its synchronous mirror."""
        mirror = "b" if principal == "a" else "a"
        if principal not in self.agents or mirror not in self.agents:
            return False
        p, m = self.status(principal), self.status(mirror)
        return (p["role"] == "principal" and p["term"] == term and p["serving"]
                and p["synchronous"] and not p["exposed"] and m["role"] == "mirror"
                and m["term"] == term and m["serving"] and m["synchronous"]
                and p["partner_view"] is not None and p["partner_view"]["synchronous"])

    async def failover(self, node: str, to: str, *, force: bool = False) -> tuple[int, Any]:
        """POST /failover to `node`'s agent: (status, body)."""
        async with aiohttp.ClientSession() as session, session.post(
                f"{self.agents[node].url}/failover", json={"to": to, "force": force},
                headers=admincreds.headers(),
                timeout=aiohttp.ClientTimeout(total=60)) as response:
            return response.status, await response.json()

    async def close(self) -> None:
        """Stop everything this pair started."""
        for node in list(self.agents):
            await self.stop_agent(node)
        await self.stop_witness()
        for link in self.links.values():
            await link.cut()
        for instance in self.instances.values():
            with contextlib.suppress(BackendError):
                instance.stop(mode="immediate")


@contextlib.asynccontextmanager
async def mirrored_pair(**options: Any) -> AsyncIterator[Pair]:
    """A created `Pair` (see there for the options) under a fresh directory of /tmp
    the ``postgres`` user can reach; everything stopped and removed afterwards."""
    base = Path(tempfile.mkdtemp(prefix="trimaran-mirror-"))
    base.chmod(0o711)
    pair = Pair(base, **options)
    try:
        await pair.create()
        yield pair
    finally:
        await pair.close()
        shutil.rmtree(base, ignore_errors=True)
