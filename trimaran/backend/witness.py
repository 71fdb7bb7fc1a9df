"""The witness of mirrored Back Ends (SPEC BE-2, BE-3, BE-5): the third vote.

The witness holds no data. For each Back End it serves (keyed by backend id, e.g. the
pool name) it records durably the current term and principal and whether the
principal runs exposed, and in memory when each agent last contacted it. It is the
arbiter of every automatic role change (see `trimaran.backend.decide` for the quorum
rules):

* a **vote** for term ``T+1`` goes to the mirror only when the principal has not
  reported serving for `principal_timeout` seconds, the principal is not exposed and
  the mirror says it was synchronous — or when the principal itself hands over
  (planned failover), or when the admin forces it (the principal silent; the new
  principal is then recorded exposed, since its mirror is gone);
* **exposure** goes to the principal only when no mirror has reported streaming for
  `mirror_timeout` seconds;
* any request with a term lower than the recorded one is refused (409, *fencing*): the
  answer carries the current view, so the stale agent learns the new term at once.

A grant is written durably (`trimaran.backend.durable`) *before* it is answered. A
principal heartbeat with a higher term than recorded is adopted (a failover forced
while the witness was away). After a restart the witness waits a full
`principal_timeout` before it votes, as if it had just heard the principal.

HTTP API (JSON bodies; errors are ``{"error": ...}``):

=====================================  ====================================================
``GET /health``                        200 ``{"healthy": true, "backends": N}``
``GET /backends``                      200 ``{id: view, ...}``
``GET /backends/{id}``                 200 view (404 unknown)
``POST /backends/{id}/heartbeat``      ``{agent, role, term, serving, synchronous,
                                       exposed, sees_partner}`` → 200 view, 409 stale term
``POST /backends/{id}/vote``           ``{candidate, term, synchronous, requested_by?,
                                       force?}`` → 200 ``{granted: true, view}``, 409
                                       ``{granted: false, error, view}``
``POST /backends/{id}/exposed``        ``{agent, term, exposed}`` → 200 ``{granted: true,
                                       view}``, 409 ``{granted: false, error, view}``
``GET /metrics``                       Prometheus text exposition (`trimaran.backend.metrics`)
=====================================  ====================================================

Run by ``trimaran serve`` it also serves the deployment's status page (`routes`, from
`trimaran.admin.statuspage`): from a third site it shows the deployment when a data
center is lost.

A view: ``{backend, term, principal, exposed, principal_silent_for,
principal_timeout, mirror_timeout, agents: {name: {role, term, serving, synchronous,
exposed, sees_partner, age, serving_age}}}`` (ages in seconds, null when never).

Durable file, one per Back End: ``<state_dir>/<id>.json`` =
``{"version": 1, "backend": id, "term": int, "principal": name|null, "exposed": bool,
"updated_at": unix time}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from aiohttp import web

from trimaran.admin import access
from trimaran.admin.http import Route, add_routes
from trimaran.admin.metrics import ServerMetrics
from trimaran.backend.durable import DurableStateError, read_json, write_json
from trimaran.backend.metrics import describe_witness
from trimaran.cms.liveness import PartnerWatch
from trimaran.cms.metrics import describe_liveness
from trimaran.security import https

log = logging.getLogger(__name__)

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
FILE_VERSION = 1
DEFAULT_PRINCIPAL_TIMEOUT = 4.0


class WitnessError(Exception):
    """A request the witness refuses: `status` is the HTTP status to answer."""

    def __init__(self, status: int, message: str, view: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.view = view


@dataclass(frozen=True, slots=True)
class Record:
    """What the witness keeps durably for one Back End."""

    term: int = 0
    principal: str | None = None
    exposed: bool = False


@dataclass(slots=True)
class Contact:
    """An agent's last heartbeat (memory only)."""

    role: str
    term: int
    serving: bool
    synchronous: bool
    exposed: bool
    sees_partner: bool
    seen_at: float
    serving_at: float | None


@dataclass(slots=True)
class _Backend:
    record: Record
    principal_contact_at: float
    contacts: dict[str, Contact] = field(default_factory=dict)


class WitnessCore:
    """The witness's rules without I/O: `now` is passed in, `save(backend, record)`
    makes a record durable (it must return only once it is)."""

    def __init__(self, save: Callable[[str, Record], None], *, now: float,
                 principal_timeout: float = DEFAULT_PRINCIPAL_TIMEOUT,
                 mirror_timeout: float | None = None,
                 records: dict[str, Record] | None = None) -> None:
        if principal_timeout <= 0 or (mirror_timeout is not None and mirror_timeout <= 0):
            raise ValueError("witness timeouts must be positive")
        self._save = save
        self.principal_timeout = principal_timeout
        self.mirror_timeout = principal_timeout if mirror_timeout is None else mirror_timeout
        self._backends = {name: _Backend(record, now) for name, record in (records or {}).items()}

    def backends(self) -> list[str]:
        """The ids of the Back Ends known."""
        return sorted(self._backends)

    def view(self, backend: str, now: float) -> dict[str, Any]:
        """The witness's view of `backend` (`WitnessError` 404 when unknown)."""
        state = self._backends.get(backend)
        if state is None:
            raise WitnessError(404, f"unknown back end {backend!r}")
        return self._view(backend, state, now)

    def heartbeat(self, backend: str, body: dict[str, Any], now: float) -> dict[str, Any]:
        """Record an agent's contact; its view (`WitnessError` 409 for a stale term)."""
        _check_backend(backend)
        agent, role, term = _name(body, "agent"), _role(body), _int(body, "term")
        serving, synchronous = _bool(body, "serving"), _bool(body, "synchronous")
        exposed = _bool(body, "exposed", False)
        state = self._state(backend, now)
        state.contacts[agent] = Contact(
            role, term, serving, synchronous, exposed, _bool(body, "sees_partner", False),
            now, now if serving else _serving_at(state.contacts.get(agent), term))
        record = state.record
        if term > record.term and role == "principal":
            self._store(backend, state, Record(term, agent, exposed or not synchronous), now,
                        f"adopted term {term} from principal {agent}'s heartbeat")
        elif term < record.term:
            raise WitnessError(409, f"stale term {term}: the current term is {record.term}",
                               self._view(backend, state, now))
        record = state.record
        if agent == record.principal and term == record.term and role == "principal":
            if serving:
                state.principal_contact_at = now
            if record.exposed and serving and synchronous and not exposed:
                self._store(backend, state, replace(record, exposed=False), now,
                            f"principal {agent} synchronous again: exposure ends")
        return self._view(backend, state, now)

    def vote(self, backend: str, body: dict[str, Any], now: float) -> dict[str, Any]:
        """Grant (durably) or refuse (`WitnessError` 409) a vote for a new principal."""
        _check_backend(backend)
        candidate, term = _name(body, "candidate"), _int(body, "term")
        synchronous = _bool(body, "synchronous")
        requested_by = _name(body, "requested_by") if "requested_by" in body else candidate
        force = _bool(body, "force", False)
        state = self._state(backend, now)
        record = state.record
        if term == record.term and record.principal == candidate:
            return {"granted": True, "view": self._view(backend, state, now)}   # a retry
        reason = self._refusal(state, candidate, term, synchronous, requested_by, force, now)
        if reason is not None:
            log.info("witness: %s: vote for %s in term %d refused: %s", backend, candidate,
                     term, reason)
            raise WitnessError(409, reason, self._view(backend, state, now))
        how = ("planned handover" if requested_by == record.principal
               else "forced by the admin" if force else "principal silent")
        self._store(backend, state, Record(term, candidate, exposed=force and
                                           requested_by != record.principal), now,
                    f"vote granted to {candidate} for term {term} ({how})")
        state.principal_contact_at = now
        return {"granted": True, "view": self._view(backend, state, now)}

    def expose(self, backend: str, body: dict[str, Any], now: float) -> dict[str, Any]:
        """Let the principal run exposed (or record that it no longer does)."""
        _check_backend(backend)
        agent, term, exposed = _name(body, "agent"), _int(body, "term"), _bool(body, "exposed")
        state = self._state(backend, now)
        record = state.record
        if term != record.term or agent != record.principal:
            raise WitnessError(409, f"{agent} is not the principal of term {term} (current: "
                               f"{record.principal} in term {record.term})",
                               self._view(backend, state, now))
        if exposed and not record.exposed:
            heard = self._mirror_heard(state, now)
            if heard is not None:
                raise WitnessError(409, f"the witness hears mirror {heard} streaming: "
                                   "no exposure", self._view(backend, state, now))
        if exposed != record.exposed:
            self._store(backend, state, replace(record, exposed=exposed), now,
                        f"principal {agent} {'runs' if exposed else 'no longer runs'} exposed")
        return {"granted": True, "view": self._view(backend, state, now)}

    # --- helpers ------------------------------------------------------------------------

    def _refusal(self, state: _Backend, candidate: str, term: int, synchronous: bool,
                 requested_by: str, force: bool, now: float) -> str | None:
        record = state.record
        if term < record.term:
            return f"stale term {term}: the current term is {record.term}"
        if term != record.term + 1:
            return f"term {term} is not the next term ({record.term + 1})"
        if record.principal is None:
            return "no principal known yet: nothing to fail over from"
        if candidate == record.principal:
            return f"{candidate} is the principal already"
        if requested_by == record.principal:
            return None if synchronous else "planned handover to a mirror not caught up"
        silent = now - state.principal_contact_at
        if silent < self.principal_timeout:
            return (f"the witness heard principal {record.principal} serving "
                    f"{silent:.1f} s ago")
        if force:
            return None
        if record.exposed:
            return "the principal ran exposed: the mirror may lack acknowledged writes"
        if not synchronous:
            return "the candidate was not synchronous"
        return None

    def _mirror_heard(self, state: _Backend, now: float) -> str | None:
        for name, contact in state.contacts.items():
            if (name != state.record.principal and contact.term == state.record.term
                    and contact.serving_at is not None
                    and now - contact.serving_at < self.mirror_timeout):
                return name
        return None

    def _state(self, backend: str, now: float) -> _Backend:
        _check_backend(backend)
        state = self._backends.get(backend)
        if state is None:
            state = self._backends[backend] = _Backend(Record(), now)
        return state

    def _store(self, backend: str, state: _Backend, record: Record, now: float,
               what: str) -> None:
        self._save(backend, record)                  # durable before anyone hears of it
        if record.principal != state.record.principal:
            state.principal_contact_at = now
        state.record = record
        log.warning("witness: %s: %s (term %d, principal %s, exposed %s)", backend, what,
                    record.term, record.principal, record.exposed)

    def _view(self, backend: str, state: _Backend, now: float) -> dict[str, Any]:
        record = state.record
        return {
            "backend": backend, "term": record.term, "principal": record.principal,
            "exposed": record.exposed,
            "principal_silent_for": round(now - state.principal_contact_at, 3),
            "principal_timeout": self.principal_timeout,
            "mirror_timeout": self.mirror_timeout,
            "agents": {name: {
                "role": c.role, "term": c.term, "serving": c.serving,
                "synchronous": c.synchronous, "exposed": c.exposed,
                "sees_partner": c.sees_partner, "age": round(now - c.seen_at, 3),
                "serving_age": (None if c.serving_at is None or c.term != record.term
                                else round(now - c.serving_at, 3)),
            } for name, c in sorted(state.contacts.items())},
        }


def _check_backend(backend: str) -> None:
    if not NAME.match(backend):
        raise WitnessError(400, f"bad back end id {backend[:80]!r}")


def _serving_at(previous: Contact | None, term: int) -> float | None:
    """The last serving time of an agent that is not serving now (same term only)."""
    if previous is None or previous.term != term:
        return None
    return previous.serving_at


def _name(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not NAME.match(value):
        raise WitnessError(400, f"{key}: a name of letters, digits, '_', '.', '-' is required")
    return value


def _role(body: dict[str, Any]) -> str:
    value = body.get("role")
    if value not in ("principal", "mirror"):
        raise WitnessError(400, "role: 'principal' or 'mirror' is required")
    return str(value)


def _int(body: dict[str, Any], key: str) -> int:
    value = body.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise WitnessError(400, f"{key}: a non-negative integer is required")
    return value


def _bool(body: dict[str, Any], key: str, default: bool | None = None) -> bool:
    value = body.get(key, default)
    if not isinstance(value, bool):
        raise WitnessError(400, f"{key}: true or false is required")
    return value


class Witness:
    """The witness service: `WitnessCore` behind an aiohttp server on `host`:`port`,
    its records in `state_dir`. `clock` is monotonic seconds (injectable for tests)."""

    def __init__(self, state_dir: Path, host: str, port: int, *,
                 principal_timeout: float = DEFAULT_PRINCIPAL_TIMEOUT,
                 mirror_timeout: float | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 pools: Sequence[PartnerWatch] = (), routes: tuple[Route, ...] = (),
                 server: str = "witness", pool: str = "") -> None:
        self.state_dir = Path(state_dir)
        # DR-10: Front End pools with automatic failover, whose liveness we confirm.
        self.pools = {watch.pool: watch for watch in pools}
        self.routes = routes          # more endpoints (the deployment's status page)
        self.host = host
        self.port = port
        self._clock = clock
        self.core = WitnessCore(self._save, now=clock(), principal_timeout=principal_timeout,
                                mirror_timeout=mirror_timeout, records=self._load())
        self._runner: web.AppRunner | None = None
        self.address: tuple[str, int] | None = None
        self.metrics = ServerMetrics(server=server, role="witness", pool=pool)
        self.metrics.add_source("backends", lambda families: describe_witness(
            families, self.core, self._clock()))
        self.metrics.add_source("pools", lambda families: describe_liveness(
            families, self.pools.values()))

    @property
    def url(self) -> str:
        """The base URL while serving (``http://host:port``)."""
        if self.address is None:
            raise RuntimeError("the witness is not serving")
        return f"http://{self.address[0]}:{self.address[1]}"

    async def start(self) -> tuple[str, int]:
        """Listen (port 0 picks one); the bound address."""
        app = access.guarded_app(middlewares=[self._boundary], client_max_size=64 * 1024)
        app.router.add_get("/health", self._health)
        app.router.add_get("/backends", self._all)
        app.router.add_get("/backends/{id}", self._get)
        app.router.add_post("/backends/{id}/heartbeat", self._post(self.core.heartbeat))
        app.router.add_post("/backends/{id}/vote", self._post(self.core.vote))
        app.router.add_post("/backends/{id}/exposed", self._post(self.core.expose))
        app.router.add_get("/pools/{pool}", self._pool)
        app.router.add_get("/metrics", self.metrics.handle)
        add_routes(app, self.routes)
        for watch in self.pools.values():
            watch.start()
        runner = web.AppRunner(https.guard(app), access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        self._runner = runner
        try:
            await web.TCPSite(runner, self.host, self.port,
                              ssl_context=https.listener_ssl()).start()
        except BaseException:
            await self.close()
            raise
        bound = runner.addresses[0]
        self.address = (str(bound[0]), int(bound[1]))
        log.info("witness listening on %s:%d (state in %s)", *self.address, self.state_dir)
        return self.address

    async def close(self) -> None:
        """Stop serving; idempotent. The records are on disk already."""
        for watch in self.pools.values():
            await watch.stop()
        runner, self._runner = self._runner, None
        self.address = None
        if runner is not None:
            await runner.cleanup()

    def _load(self) -> dict[str, Record]:
        records: dict[str, Record] = {}
        self.state_dir.mkdir(parents=True, exist_ok=True)
        for path in sorted(self.state_dir.glob("*.json")):
            data = read_json(path)
            if data is None:
                continue
            try:
                records[str(data["backend"])] = Record(
                    int(data["term"]), data["principal"], bool(data["exposed"]))
            except (KeyError, TypeError, ValueError) as exc:
                raise DurableStateError(f"{path}: not a witness record: {exc}") from exc
        return records

    def _save(self, backend: str, record: Record) -> None:
        write_json(self.state_dir / f"{backend}.json", {
            "version": FILE_VERSION, "backend": backend, "term": record.term,
            "principal": record.principal, "exposed": record.exposed,
            "updated_at": time.time()})

    @web.middleware
    async def _boundary(self, request: web.Request,
                        handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        """The one place where refusals and bad requests become responses."""
        try:
            response: web.StreamResponse = await handler(request)
        except WitnessError as exc:
            body: dict[str, Any] = {"error": exc.message}
            if exc.view is not None:
                body.update(granted=False, view=exc.view)
            response = web.json_response(body, status=exc.status)
        except web.HTTPException as exc:
            response = web.json_response({"error": exc.reason}, status=exc.status)
        except (OSError, DurableStateError) as exc:
            log.error("witness: cannot record durably: %s", exc)
            response = web.json_response({"error": "cannot record durably"}, status=503)
        return response

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"healthy": True, "backends": len(self.core.backends())})

    async def _pool(self, request: web.Request) -> web.Response:
        """How this witness sees a Front End pool (DR-10: automatic failover needs the
        witness to see the pool down too)."""
        watch = self.pools.get(request.match_info["pool"])
        if watch is None:
            raise WitnessError(404, f"this witness does not watch pool "
                                    f"{request.match_info['pool'][:40]!r}")
        return web.json_response(watch.status())

    async def _all(self, request: web.Request) -> web.Response:
        now = self._clock()
        return web.json_response({b: self.core.view(b, now) for b in self.core.backends()})

    async def _get(self, request: web.Request) -> web.Response:
        return web.json_response(self.core.view(request.match_info["id"], self._clock()))

    def _post(self, method: Callable[[str, dict[str, Any], float], dict[str, Any]]
              ) -> Callable[[web.Request], Any]:
        async def handle(request: web.Request) -> web.Response:
            try:
                body = await request.json()
            except ValueError:
                raise WitnessError(400, "the body must be a JSON object") from None
            if not isinstance(body, dict):
                raise WitnessError(400, "the body must be a JSON object")
            return web.json_response(method(request.match_info["id"], body, self._clock()))
        return handle


async def run_witness(state_dir: Path, host: str, port: int, *,
                      principal_timeout: float = DEFAULT_PRINCIPAL_TIMEOUT,
                      stop: asyncio.Event | None = None,
                      pools: Sequence[PartnerWatch] = (),
                      routes: tuple[Route, ...] = (), server: str = "witness",
                      pool: str = "") -> None:
    """Serve as a witness until `stop` is set, SIGTERM or SIGINT (the body of
    ``trimaran serve --server WITNESS``)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    witness = Witness(state_dir, host, port, principal_timeout=principal_timeout, pools=pools,
                      routes=routes, server=server, pool=pool)
    await witness.start()
    try:
        await stop.wait()
    finally:
        await witness.close()
