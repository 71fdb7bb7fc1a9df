"""The drill's load: every simulated user signed in with a real SIP client, doing a
realistic mix until stopped — instant messages between users, presence queries,
short calls, and persistent writes (contact-list changes, meetings, presence
publications; `trimaran.client.writes`), each acknowledged write recorded so that
the drill can check afterwards that none was lost.

Every request's outcome is recorded with its time, so a step of the drill can count
what failed while it ran. A client signs in the way the deployment tells it to: to
the Director pool when there is one, else to its home pool's servers followed by the
backup pool's (the backup registrar, SPEC DR-8); it keeps its TCP flow alive with
CRLF keepalives and re-registers when the flow dies (FE-2).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field

from trimaran.aio import cancel
from trimaran.client.dialogs import Call, CallFailed
from trimaran.client.ua import RedirectError, UAConfig, UserAgent
from trimaran.client.writes import Writers
from trimaran.drill.users import DrillUser
from trimaran.net.transport import Address, TransportError
from trimaran.sip.errors import SipError

log = logging.getLogger(__name__)

SDP = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=drill\r\nc=IN IP4 127.0.0.1\r\n"
       b"t=0 0\r\nm=audio 9 RTP/AVP 0\r\n")


@dataclass(frozen=True, slots=True)
class Rates:
    """Requests per second of each activity, over all users."""

    im: float = 10.0
    presence: float = 2.0
    calls: float = 1.0
    writes: float = 5.0
    call_seconds: float = 2.0       # how long an answered call lasts


@dataclass(frozen=True, slots=True)
class Outcome:
    """One request's result."""

    at: float            # time.monotonic() when it finished
    kind: str
    ok: bool
    status: str          # status code, or what went wrong


@dataclass(frozen=True, slots=True)
class Clients:
    """Where each pool's users sign in and write. Users are spread over the first
    `spread[pool]` servers of their list (their home pool's, or the Directors); the
    rest (the backup registrar) come after, in order."""

    sign_in: dict[str, tuple[Address, ...]]   # pool -> SIP servers, in order
    http: dict[str, list[str]]                # pool -> admin API base URLs, in order
    spread: dict[str, int] = field(default_factory=dict)


@dataclass
class Tally:
    """Requests and failures by kind over a window."""

    requests: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)


class Load:
    """The simulated users of a drill and what they do."""

    def __init__(self, users: list[DrillUser], domain: str, clients: Clients, rates: Rates,
                 *, keepalive: float = 1.0, seed: int = 11) -> None:
        self.users = {u.name: u for u in users}
        self.domain = domain
        self.rates = rates
        self.outcomes: list[Outcome] = []
        self.registrations: dict[str, list[tuple[float, str]]] = {u.name: [] for u in users}
        self.agents: dict[str, UserAgent] = {}
        self._rng = random.Random(seed)
        self._tasks: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._answerers: list[asyncio.Task[None]] = []
        for index, user in enumerate(users):
            servers = clients.sign_in[user.pool]
            first = servers[:clients.spread.get(user.pool, len(servers))] or servers
            shift = index % len(first)
            rotated = first[shift:] + first[:shift] + servers[len(first):]
            self.agents[user.name] = UserAgent(UAConfig(
                aor=user.aor(domain), password=user.password, servers=rotated,
                keepalive_interval=keepalive, keepalive_timeout=keepalive,
                reregister_on_flow_loss=True))
        self.writers = Writers(
            [(u.aor(domain), u.name, u.password) for u in users], domain=domain,
            rate=rates.writes, bases_of={u.aor(domain): clients.http[u.pool] for u in users},
            agents={u.aor(domain): self.agents[u.name] for u in users}, read_first=True,
            tag=f".{secrets.token_hex(3)}")
        self._acks_seen = self._failures_seen = 0

    # -- life cycle -------------------------------------------------------------------
    async def sign_in(self, concurrency: int = 64) -> list[str]:
        """Start every client and register it; the users that could not register."""
        gate = asyncio.Semaphore(concurrency)
        failed: list[str] = []

        async def one(name: str, ua: UserAgent) -> None:
            async with gate:
                ua.on_registered = self._registered_hook(name)
                await ua.start()
                self._answerers.append(asyncio.ensure_future(self._answer_calls(ua)))
                status = await self._register(ua)
                if not status:
                    failed.append(name)

        await asyncio.gather(*(one(n, ua) for n, ua in self.agents.items()))
        return failed

    async def _register(self, ua: UserAgent) -> bool:
        try:
            response = await ua.register()
        except RedirectError as exc:
            self._record("register", False, f"redirect: {exc}")
            return False
        ok = 200 <= response.status < 300
        self._record("register", ok, str(response.status))
        return ok

    def _registered_hook(self, name: str) -> Callable[[Address], None]:
        def registered(server: Address) -> None:
            self.registrations[name].append((time.monotonic(), server.host))
        return registered

    def start(self) -> None:
        """Start the activities (again, after `stop`)."""
        self.writers.start()
        for kind, rate, action in (("im", self.rates.im, self._one_im),
                                   ("presence", self.rates.presence, self._one_presence),
                                   ("call", self.rates.calls, self._one_call)):
            if rate > 0:
                self._loops.append(asyncio.ensure_future(self._paced(kind, rate, action)))

    async def stop(self) -> None:
        """Stop the activities and wait for the requests in flight."""
        for task in self._loops:
            await cancel(task)
        self._loops.clear()
        await self.writers.stop()
        self._collect_writes()
        pending = [t for t in self._tasks if not t.done()]
        if pending:   # requests in flight end within a transaction timeout (64*T1)
            await asyncio.wait(pending, timeout=35.0)

    async def close(self) -> None:
        """Stop everything and close every client."""
        await self.stop()
        for task in [*self._tasks, *self._answerers]:
            await cancel(task)
        await asyncio.gather(*(ua.close() for ua in self.agents.values()),
                             return_exceptions=True)

    # -- what the users see -----------------------------------------------------------
    def registered(self, name: str) -> bool:
        """True while the user's client holds a registration."""
        return self.agents[name].registered_server is not None

    def server_of(self, name: str) -> str | None:
        """The host the user is registered on, or None."""
        server = self.agents[name].registered_server
        return server.host if server is not None else None

    def on_hosts(self, hosts: Iterable[str]) -> list[str]:
        """Users registered on one of `hosts` now."""
        wanted = set(hosts)
        return [n for n in self.agents if self.server_of(n) in wanted]

    def not_registered(self, names: Iterable[str] | None = None) -> list[str]:
        """Of `names` (default: everyone), those without a registration now."""
        return [n for n in (names if names is not None else self.agents)
                if not self.registered(n)]

    def registered_since(self, name: str, since: float,
                         hosts: Iterable[str] | None = None) -> float | None:
        """When the user last registered after `since` (on one of `hosts` when given)."""
        allowed = set(hosts) if hosts is not None else None
        times = [at for at, host in self.registrations[name]
                 if at >= since and (allowed is None or host in allowed)]
        return times[-1] if times else None

    def tally(self, since: float, until: float | None = None) -> Tally:
        """Requests and failures that finished in [since, until)."""
        self._collect_writes()
        end = until if until is not None else float("inf")
        tally = Tally()
        for outcome in self.outcomes:
            if since <= outcome.at < end:
                tally.requests[outcome.kind] += 1
                if not outcome.ok:
                    tally.failed[outcome.kind] += 1
                    tally.reasons[f"{outcome.kind} {outcome.status}"] += 1
        return tally

    # -- activities -------------------------------------------------------------------
    def _record(self, kind: str, ok: bool, status: str) -> None:
        self.outcomes.append(Outcome(time.monotonic(), kind, ok, status))

    def _collect_writes(self) -> None:
        """Fold the writers' results in: acknowledged writes and failed attempts."""
        stats = self.writers.stats
        offset = time.monotonic() - time.time()
        for ack in stats.acked[self._acks_seen:]:
            self.outcomes.append(Outcome(ack.at + offset, "write", True, ack.kind))
        for at, why in stats.failures[self._failures_seen:]:
            self.outcomes.append(Outcome(at + offset, "write", False, why))
        self._acks_seen, self._failures_seen = len(stats.acked), len(stats.failures)

    def _spawn(self, coro: Coroutine[object, object, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _paced(self, kind: str, rate: float,
                     action: Callable[[], Awaitable[None]]) -> None:
        interval = 1.0 / rate
        next_at = time.monotonic()
        while True:
            self._spawn(_guarded(self, kind, action))
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    def _pair(self) -> tuple[str, str] | None:
        names = [n for n in self.agents if self.registered(n)]
        if len(names) < 2:
            return None
        first, second = self._rng.sample(names, 2)
        return first, second

    async def _one_im(self) -> None:
        pair = self._pair()
        if pair is None:
            return
        sender, recipient = pair
        status = await _status_of(self.agents[sender].send_message(
            f"sip:{recipient}@{self.domain}", f"drill message to {recipient}"))
        self._record("im", status.isdigit() and 200 <= int(status) < 300, status)

    async def _one_presence(self) -> None:
        pair = self._pair()
        if pair is None:
            return
        watcher, target = pair
        try:   # a one-time query: SUBSCRIBE with Expires 0 (RFC 6665 §4.4.3)
            _, response = await self.agents[watcher].subscribe(
                f"sip:{target}@{self.domain}", expires=0)
        except (SipError, TransportError, OSError, TimeoutError) as exc:
            self._record("presence", False, type(exc).__name__)
            return
        self._record("presence", 200 <= response.status < 300, str(response.status))

    async def _one_call(self) -> None:
        pair = self._pair()
        if pair is None:
            return
        caller, callee = pair
        ua = self.agents[caller]
        try:
            call = await ua.invite(f"sip:{callee}@{self.domain}", SDP)
        except CallFailed as exc:
            self._record("call", False, str(exc.status))
            return
        except (SipError, TransportError, OSError, TimeoutError) as exc:
            self._record("call", False, type(exc).__name__)
            return
        self._record("call", True, "200")
        await asyncio.sleep(self.rates.call_seconds)
        status = await _status_of(call.bye())
        self._record("bye", status.isdigit() and 200 <= int(status) < 300, status)

    async def _answer_calls(self, ua: UserAgent) -> None:
        while True:
            call: Call = await ua.incoming_calls.get()
            with contextlib.suppress(SipError, TransportError, OSError):
                await call.answer(SDP)


async def _status_of(request: Awaitable[object]) -> str:
    """The status code of a request's final response, or why there was none."""
    try:
        response = await request
    except (SipError, TransportError, OSError, TimeoutError, RuntimeError) as exc:
        return type(exc).__name__
    status = getattr(response, "status", None)
    return str(status) if isinstance(status, int) else "no response"


async def _guarded(load: Load, kind: str, action: Callable[[], Awaitable[None]]) -> None:
    """Run one activity; an unexpected error is counted as a failed request of its kind
    (and logged), never allowed to stop the load."""
    try:
        await action()
    except asyncio.CancelledError:
        raise
    except Exception as exc:   # reported as the request's outcome
        log.debug("drill %s failed", kind, exc_info=True)
        load.outcomes.append(Outcome(time.monotonic(), kind, False, type(exc).__name__))
