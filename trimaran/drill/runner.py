"""Running a drill: the timeline, the steps and their measurements, waiting on the
deployment's state with deadlines, the operator's actions, the check of every
acknowledged change, and the live progress in the terminal (rich).

A scenario (`trimaran.drill.scenarios`) drives a `Drill`: it opens a step, injects
a fault (`fault`), waits for conditions (`wait`, each a predicate on the deployment
or the clients, polled until a deadline), performs operator actions (`act`, the same
library calls the CLI commands make, run in a thread) and closes the step (`finish`),
which counts the requests that failed while the step ran and checks that every
acknowledged change is where the users are served now.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from trimaran.admin import access
from trimaran.aio import cancel
from trimaran.client.writes import Ack
from trimaran.client.xcap import XcapClient, XcapError
from trimaran.cms.failover import FAILED_OVER, FAILING_BACK
from trimaran.deploy.dr import Deployment, DrError
from trimaran.deploy.rundir import RunDir
from trimaran.deploy.sites import SiteError
from trimaran.drill.load import Load
from trimaran.drill.report import Report, Step, Target
from trimaran.drill.users import DrillUser
from trimaran.topology.model import Server

T = TypeVar("T")
HTTP_TIMEOUT = 10.0        # one read of what a pool holds (a busy pool answers late)
READ_ATTEMPTS = 3
LOST_EXAMPLES = 5


class DrillError(Exception):
    """The drill cannot go on (a prerequisite is missing, or an action failed)."""


class Drill:
    """One drill in progress."""

    def __init__(self, run: RunDir, load: Load, report: Report, users: list[DrillUser], *,
                 console: Console, live: bool) -> None:
        self.run = run
        self.load = load
        self.report = report
        self.users = {u.name: u for u in users}
        self.ops = Deployment(run)
        self.topology = self.ops.topology
        self.resolver = self.ops.resolver
        self.domain = self.topology.sip_domain
        self.console = console
        self.started = time.monotonic()
        self._fault_at: float | None = None
        #: time.monotonic() when the last fault was fully in place (the injection done)
        self.fault_done = 0.0
        #: changes a disaster lost within its RPO: not expected back in later steps
        self.written_off: set[Ack] = set()
        self._step_started = 0.0
        self._progress = Progress(SpinnerColumn(), TextColumn("{task.description}"),
                                  BarColumn(), TimeElapsedColumn(), console=console,
                                  disable=not live, transient=False)
        self._load_task: TaskID | None = None
        self._wait_task: TaskID | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession
        self._answering: dict[str, list[Server]] = {}

    # -- the terminal ---------------------------------------------------------------------
    async def __aenter__(self) -> Drill:
        self._progress.start()
        self._load_task = self._progress.add_task("load", total=None)
        self._ticker = asyncio.ensure_future(self._tick())
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.5))
        return self

    async def __aexit__(self, *_: object) -> None:
        await cancel(self._ticker)
        await self._session.close()
        self._refresh_load()
        self._progress.stop()

    async def _tick(self) -> None:
        while True:
            self._refresh_load()
            await asyncio.sleep(0.5)

    def _refresh_load(self) -> None:
        if self._load_task is None:
            return
        tally = self.load.tally(self.started)
        registered = len(self.load.agents) - len(self.load.not_registered())
        ok = sum(tally.requests.values()) - sum(tally.failed.values())
        self._progress.update(self._load_task, description=(
            f"[bold]load[/]: {registered}/{len(self.load.agents)} registered, "
            f"{ok} requests ok, {sum(tally.failed.values())} failed, "
            f"{len(self.load.writers.stats.acked)} changes acknowledged"))

    # -- the timeline ---------------------------------------------------------------------
    def now(self) -> float:
        """Seconds since the drill started."""
        return round(time.monotonic() - self.started, 3)

    def event(self, kind: str, text: str) -> None:
        """Record (and show) one event of the timeline."""
        at = self.now()
        self.report.timeline.append({"at": at, "kind": kind, "text": text})
        self.console.log(f"[{at:7.2f}s] {kind:<8} {text}", highlight=False)

    # -- steps ----------------------------------------------------------------------------
    def step(self, name: str, what: str, *, same_fault: bool = False) -> Step:
        """Open a step; its window for counting requests starts now. Its times are
        measured from its own fault, or with `same_fault` from the previous step's."""
        if not same_fault:
            self._fault_at = None
        self._step_started = time.monotonic()
        step = Step(name, what, self.now())
        self.report.steps.append(step)
        self.event("step", f"{name}: {what}")
        return step

    async def fault(self, text: str, action: Callable[[], T]) -> T:
        """Inject the step's fault (a blocking call, run in a thread); the step's times
        are measured from the moment the injection begins (a client may already react
        while the call is still waiting for the process to be gone)."""
        self._fault_at = time.monotonic()
        result = await self.act(text, action, kind="fault")
        self.fault_done = time.monotonic()
        return result

    def mark_fault(self) -> None:
        """Measure the step's times from now (a step without an injected fault)."""
        self._fault_at = self.fault_done = time.monotonic()

    def since_fault(self, moment: float | None = None) -> float:
        """Seconds from the step's fault to `moment` (default now)."""
        start = self._fault_at if self._fault_at is not None else self._step_started
        return round((moment if moment is not None else time.monotonic()) - start, 3)

    @property
    def fault_time(self) -> float:
        """time.monotonic() of the step's fault (or of its start)."""
        return self._fault_at if self._fault_at is not None else self._step_started

    async def act(self, text: str, action: Callable[[], T], *, kind: str = "action") -> T:
        """Run an operator action (a blocking call) in a thread, timed; a refusal or
        failure of it stops the drill with its message."""
        started = time.monotonic()
        try:
            result = await asyncio.to_thread(action)
        except (DrError, SiteError, OSError) as exc:
            self.event("error", f"{text}: {exc}")
            raise DrillError(f"{text}: {exc}") from exc
        self.event(kind, f"{text} ({time.monotonic() - started:.2f} s)")
        return result

    async def wait(self, what: str, predicate: Callable[[], Awaitable[bool]],
                   timeout: float, interval: float = 0.1) -> float | None:
        """Poll `predicate` until true or `timeout`; seconds since the step's fault when
        it became true, else None (recorded either way)."""
        task = self._progress.add_task(f"waiting: {what}", total=timeout)
        started = time.monotonic()
        deadline = started + timeout
        try:
            while True:
                with contextlib.suppress(OSError, aiohttp.ClientError, TimeoutError):
                    if await predicate():
                        seconds = self.since_fault()
                        self.event("reached", f"{what} ({seconds:.2f} s after the fault)"
                                   if self._fault_at is not None else
                                   f"{what} (after {time.monotonic() - started:.2f} s)")
                        return seconds
                if time.monotonic() >= deadline:
                    self.event("timeout", f"{what}: not within {timeout:.0f} s")
                    return None
                self._progress.update(task, completed=time.monotonic() - started)
                await asyncio.sleep(interval)
        finally:
            self._progress.remove_task(task)

    async def hold(self, seconds: float, what: str) -> None:
        """Let the load run for `seconds` (shown as a wait)."""
        if seconds <= 0:
            return
        task = self._progress.add_task(f"{what} ({seconds:.0f} s)", total=seconds)
        started = time.monotonic()
        try:
            while (left := seconds - (time.monotonic() - started)) > 0:
                self._progress.update(task, completed=seconds - left)
                await asyncio.sleep(min(left, 0.2))
        finally:
            self._progress.remove_task(task)
        self.event("held", f"{what} for {seconds:.1f} s")

    async def finish(self, step: Step, *, rpo: str | None = None,
                     judge: Callable[[list[Ack]], list[Target]] | None = None,
                     sent_before: float | None = None, check_writes: bool = True,
                     ) -> list[Ack]:
        """Close a step: count its requests and failures, check that every change
        acknowledged (sent before `sent_before`, a time.monotonic(), when given) is where
        its user is served now, and judge the loss: none may be lost (`rpo`, the SPEC
        requirement) or `judge` turns the lost changes into targets."""
        tally = self.load.tally(self._step_started)
        step.requests = dict(tally.requests)
        step.failed = dict(tally.failed)
        step.failure_reasons = dict(tally.reasons.most_common(12))
        lost: list[Ack] = []
        if check_writes:
            lost = await self.check_writes(step, sent_before)
            if rpo is not None:
                step.targets.append(Target("acknowledged changes lost", float(len(lost)), 0.0,
                                           "", rpo))
            if judge is not None:
                step.targets += judge(lost)
        step.not_recovered = [self.describe_user(n) for n in step.not_recovered]
        step.ended = self.now()
        verdict = "passed" if step.passed else "FAILED: " + "; ".join(
            t.what for t in step.targets if not t.ok)
        self.event("result", f"{step.name}: {verdict}")
        return lost

    # -- acknowledged changes ---------------------------------------------------------------
    async def check_writes(self, step: Step, sent_before: float | None = None,
                           sent_since: float | None = None) -> list[Ack]:
        """Every acknowledged change (sent before `sent_before` and since `sent_since`,
        time.monotonic() values, when given; not written off) checked where its user
        is served; the lost ones are recorded in the step. A change counts by when it
        was sent: one sent before a fault was complete may have been acknowledged by a
        server going down, however late its client read the answer."""
        serving = await self.serving_pools()
        # Writes go on during the check: only those acknowledged before it began are
        # judged (a later one may not be in what the check already read).
        wall_before = time.time()
        low = -1.0 if sent_since is None else _wall(sent_since)
        high = wall_before if sent_before is None else _wall(sent_before)
        acked = [a for a in self.load.writers.stats.acked if a.at < wall_before]
        judged = {a for a in acked
                  if low <= a.sent < high and a not in self.written_off}
        step.acked_checked = len(judged)
        self._answering = {pool: await self._answering_first(pool)
                           for pool in set(serving.values())}
        timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            # Read what the pools hold first, many reads at a time; then judge.
            held = await _fetch_all(
                [("contacts", a.aor, "") for a in acked if a.kind == "contact"] +
                [("presence", a.aor, "") for a in acked if a.kind == "presence"] +
                [("meeting", a.aor, a.value) for a in acked if a.kind == "meeting"],
                lambda kind, aor, value: self._read(session, serving, kind, aor, value))

            async def contacts(aor: str) -> set[str]:
                found = held["contacts", aor, ""]
                assert isinstance(found, set)
                return found

            async def presence(aor: str) -> str:
                return str(held["presence", aor, ""])

            async def meeting(aor: str, meeting_id: str) -> bool:
                return bool(held["meeting", aor, meeting_id])

            lost = [a for a in await self.load.writers.lost(
                contacts, meeting, before=wall_before, presence_of=presence)
                if a in judged]
        step.lost = len(lost)
        step.lost_examples = [f"{a.kind} {a.value}" for a in lost[:LOST_EXAMPLES]]
        if lost:
            self.event("lost", f"{len(lost)} acknowledged change(s) missing, e.g. "
                               f"{', '.join(step.lost_examples)}")
        return lost

    async def _answering_first(self, pool: str) -> list[Server]:
        """The pool's servers, those answering /health now first (a frozen or dead
        server would make every read wait for its timeout)."""
        servers = self.servers_of(pool)
        answers = await asyncio.gather(*(self.get_json(
            f"http://{s.address}:{s.admin_port}/health") for s in servers))
        return [s for s, a in zip(servers, answers, strict=True) if a is not None] + \
            [s for s, a in zip(servers, answers, strict=True) if a is None]

    async def serving_pools(self) -> dict[str, str]:
        """For each Front End pool, the pool serving its users now, as the servers see
        the failover records (the first server that answers; each pool itself when
        none does)."""
        for pool in self.ops.frontend_pools():
            for server in self.servers_of(pool):
                status = await self.status(server)
                records = (status or {}).get("failover")
                if isinstance(records, dict):
                    return {p: (str(r.get("backup")) if r.get("state") in (
                        FAILED_OVER, FAILING_BACK) and r.get("backup") else p)
                        for p, r in records.items() if isinstance(r, dict)}
        return {}

    def _pool_of(self, aor: str, serving: dict[str, str]) -> str:
        name = aor.split(":", 1)[1].split("@", 1)[0]
        home = self.users[name].pool
        return serving.get(home, home)

    async def _read(self, session: aiohttp.ClientSession, serving: dict[str, str],
                    kind: str, aor: str, value: str) -> object:
        """What the pool serving `aor` holds: its contact URIs, its presence documents'
        text, or whether meeting `value` exists."""
        if kind == "meeting":
            return await self._meeting_exists(serving, aor, value)
        body = await self._admin_get(session, self._pool_of(aor, serving),
                                     f"/admin/{kind}/{quote(aor, safe='')}")
        if kind == "contacts":
            return {c["uri"] for c in body.get("contacts", [])}
        return "".join(p["body"] for p in body.get("publications", []))

    async def _admin_get(self, session: aiohttp.ClientSession, pool: str,
                         path: str) -> dict[str, Any]:
        problem = f"pool {pool} has no server"
        for attempt in range(READ_ATTEMPTS):      # a busy pool may answer late: retry
            if attempt:
                await asyncio.sleep(attempt)
            for server in self._answering.get(pool) or self.servers_of(pool):
                url = f"http://{server.address}:{server.admin_port}{path}"
                try:
                    async with session.get(url, headers=access.headers_for("GET", url)) as resp:
                        if resp.status == 404:
                            return {}
                        if resp.status == 200:
                            value = await resp.json()
                            return value if isinstance(value, dict) else {}
                        problem = f"{server.name} answered {resp.status}"
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    problem = f"{server.name}: {exc or type(exc).__name__}"
        raise DrillError(f"cannot read {path} from pool {pool} ({READ_ATTEMPTS} rounds): "
                         f"{problem}")

    async def _meeting_exists(self, serving: dict[str, str], aor: str,
                              meeting_id: str) -> bool:
        user = self.users[aor.split(":", 1)[1].split("@", 1)[0]]
        problem = ""
        pool = self._pool_of(aor, serving)
        for attempt in range(READ_ATTEMPTS):
            if attempt:
                await asyncio.sleep(attempt)
            for server in self._answering.get(pool) or self.servers_of(pool):
                client = XcapClient(f"http://{server.address}:{server.admin_port}", aor,
                                    user.name, user.password, timeout=HTTP_TIMEOUT)
                try:
                    await client.get_meeting(meeting_id)
                except XcapError as exc:
                    if exc.status == 404:
                        return False
                    problem = str(exc)
                    continue
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    problem = str(exc) or type(exc).__name__
                    continue
                return True
        raise DrillError(f"cannot check meeting {meeting_id} of {aor}: {problem}")

    def describe_user(self, name: str) -> str:
        """A user and where their client stands now (for the not-recovered list)."""
        ua = self.load.agents.get(name)
        if ua is None or ua.registered_server is None:
            last = self.load.registrations.get(name, [])
            seen = ""
            if last:
                at = self.now() - (time.monotonic() - last[-1][0])
                seen = f", last registered on {last[-1][1]} at {at:.1f} s"
            return f"{name} (home {self.users[name].pool}): not registered{seen}"
        return (f"{name} (home {self.users[name].pool}): on {ua.registered_server.host} in "
                f"{ua.mode or 'unknown'} mode")

    async def get_json(self, url: str) -> dict[str, Any] | None:
        """GET a JSON object (1.5 s bound); None when there is no 200 answer."""
        try:
            async with self._session.get(url, headers=access.headers_for("GET", url)) as resp:
                if resp.status != 200:
                    return None
                value = await resp.json()
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    async def status(self, server: Server) -> dict[str, Any] | None:
        """A server's /status, None when it does not answer."""
        return await self.get_json(f"http://{server.address}:{server.admin_port}/status")

    # -- measures shared by scenarios --------------------------------------------------------
    def users_of(self, pools: set[str]) -> list[str]:
        """Drill users homed on one of `pools`."""
        return [n for n, u in self.users.items() if u.pool in pools and n in self.load.agents]

    def hosts_of(self, pool: str) -> list[str]:
        """The addresses of a pool's servers."""
        return [s.address for s in self.resolver.servers_of(pool)]

    def servers_of(self, pool: str) -> list[Server]:
        """A pool's servers."""
        return list(self.resolver.servers_of(pool))

    def not_back(self, names: list[str], hosts: list[str], *,
                 mode: str | None = None) -> list[str]:
        """Of `names`, those not registered on one of `hosts` since the fault (or not
        in `mode`, when given)."""
        since = self.fault_time
        return [name for name in names
                if self.load.registered_since(name, since, hosts) is None
                or self.load.server_of(name) not in hosts
                or (mode is not None and self.load.agents[name].mode != mode)]

    async def users_back(self, names: list[str], hosts: list[str], *,
                         mode: str | None = None) -> bool:
        """True when each of `names` has registered on one of `hosts` since the fault
        (and, when given, is in `mode`)."""
        return not self.not_back(names, hosts, mode=mode)

    def per_user_rto(self, names: list[str], hosts: list[str]) -> list[float]:
        """Each user's first registration on `hosts` after the fault, in seconds."""
        since = self.fault_time
        out = []
        for name in names:
            times = [at for at, host in self.load.registrations[name]
                     if at >= since and host in hosts]
            if times:
                out.append(round(times[0] - since, 3))
        return out


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (nearest rank) of `values`; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, -(-len(ordered) * q // 100) - 1))
    return ordered[int(rank)]


async def _fetch_all(keys: list[tuple[str, str, str]],
                     read: Callable[[str, str, str], Awaitable[object]],
                     concurrency: int = 32) -> dict[tuple[str, str, str], object]:
    """`read(*key)` for every distinct key, `concurrency` at a time."""
    gate = asyncio.Semaphore(concurrency)
    distinct = list(dict.fromkeys(keys))

    async def one(key: tuple[str, str, str]) -> object:
        async with gate:
            return await read(*key)
    values = await asyncio.gather(*(one(k) for k in distinct))
    return dict(zip(distinct, values, strict=True))


def _wall(moment: float) -> float:
    """The wall-clock time of a time.monotonic() moment."""
    return time.time() - (time.monotonic() - moment)
