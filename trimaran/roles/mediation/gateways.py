"""Gateway liveness for a Mediation server (SPEC EV-3): OPTIONS probes and call outcomes.

Every `probe_interval` seconds each gateway of the server's trunks gets an OPTIONS;
any final answer within `probe_timeout` other than 503 means it is up, silence or a
503 means it is down. A call that the gateway refuses with a 5xx or leaves without
progress for the fast-failover time also marks it down at once (`call_failed`), so
the next calls skip it without waiting; the next probe that gets an answer brings it
back. A call on a gateway that is down is refused at once with 503 and the reason,
which sends the Front End to the next trunk without delay.

Every change of state is logged with its reason (STYLE 5) and kept in `status()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from trimaran.net.endpoint import SipEndpoint
from trimaran.net.transport import Address
from trimaran.sip.headers import Headers
from trimaran.sip.ids import new_call_id, new_tag
from trimaran.sip.message import Request
from trimaran.sip.uri import URI
from trimaran.voice.model import Gateway

log = logging.getLogger(__name__)

UP, DOWN, UNKNOWN = "up", "down", "unknown"


@dataclass(frozen=True, slots=True)
class GatewayState:
    """What this server believes about one gateway, since when and why."""

    name: str
    state: str
    since: float
    reason: str
    probes: int = 0
    failures: int = 0

    def to_json(self, now: float) -> dict[str, object]:
        """For `/status`."""
        return {"gateway": self.name, "state": self.state, "for": round(now - self.since, 1),
                "reason": self.reason, "probes": self.probes, "failures": self.failures}


class GatewayMonitor:
    """Probes gateways with OPTIONS and remembers which are down."""

    def __init__(self, endpoint: SipEndpoint, *, interval: float, timeout: float,
                 from_host: str, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.endpoint = endpoint
        self.interval = interval
        self.timeout = timeout
        self.from_host = from_host
        self.monotonic = monotonic
        self.gateways: dict[str, Gateway] = {}
        self.states: dict[str, GatewayState] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def configure(self, gateways: Iterable[Gateway], *, interval: float,
                  timeout: float) -> None:
        """The gateways to watch (a new voice configuration); new ones are probed at once."""
        self.interval, self.timeout = interval, timeout
        wanted = {g.name: g for g in gateways}
        fresh = [name for name in wanted if name not in self.gateways or
                 self.gateways[name] != wanted[name]]
        self.gateways = wanted
        now = self.monotonic()
        self.states = {name: self.states[name] for name in wanted
                       if name in self.states and name not in fresh}
        for name in fresh:
            self.states[name] = GatewayState(name, UNKNOWN, now, "not probed yet")
        if fresh:
            self._wake.set()

    def start(self) -> None:
        """Probe in the background."""
        self._task = asyncio.ensure_future(self._loop())

    async def stop(self) -> None:
        """Stop probing."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def is_down(self, name: str) -> str | None:
        """Why the gateway is down, or None when it may be used (up or not probed yet)."""
        state = self.states.get(name)
        if state is None or state.state != DOWN:
            return None
        return state.reason

    def call_failed(self, name: str, reason: str) -> None:
        """A call on the gateway failed in a way that says the gateway is in trouble."""
        state = self.states.get(name)
        if state is None:
            return
        self._set(name, DOWN, reason, failures=state.failures + 1)

    def status(self) -> list[dict[str, object]]:
        """Every watched gateway's state."""
        now = self.monotonic()
        return [self.states[name].to_json(now) for name in sorted(self.states)]

    async def _loop(self) -> None:
        while True:
            gateways = list(self.gateways.values())
            await asyncio.gather(*(self._probe(g) for g in gateways))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)

    async def _probe(self, gateway: Gateway) -> None:
        request = self._options(gateway)
        target = Address(gateway.transport.value, gateway.address, gateway.port)
        try:
            response = await asyncio.wait_for(self.endpoint.request(request, target),
                                              self.timeout)
        except TimeoutError:
            self._probed(gateway.name, DOWN, f"no answer to OPTIONS within {self.timeout:g} s")
            return
        if response.status in (408, 503):
            self._probed(gateway.name, DOWN,
                         f"OPTIONS answered {response.status} {response.reason}")
        else:
            self._probed(gateway.name, UP, f"OPTIONS answered {response.status}")

    def _probed(self, name: str, state: str, reason: str) -> None:
        current = self.states.get(name)
        if current is None:
            return
        self._set(name, state, reason, probes=current.probes + 1)

    def _set(self, name: str, state: str, reason: str, *, probes: int | None = None,
             failures: int | None = None) -> None:
        current = self.states[name]
        changed = current.state != state
        if changed:
            level = logging.WARNING if state == DOWN else logging.INFO
            log.log(level, "gateway %s is %s: %s", name, state, reason)
        self.states[name] = GatewayState(
            name, state, self.monotonic() if changed else current.since,
            reason if changed or state == DOWN else current.reason,
            current.probes if probes is None else probes,
            current.failures if failures is None else failures)

    def _options(self, gateway: Gateway) -> Request:
        transport = gateway.transport.value
        uri = URI("sip", None, None, gateway.address, gateway.port)
        headers = Headers()
        headers.add("Via", self.endpoint.via(transport))
        headers.add("Max-Forwards", "70")
        headers.add("From", f"<sip:mediation@{self.from_host}>;tag={new_tag()}")
        headers.add("To", f"<sip:{gateway.address}:{gateway.port}>")
        headers.add("Call-ID", new_call_id(self.from_host))
        headers.add("CSeq", "1 OPTIONS")
        headers.add("Content-Length", "0")
        return Request("OPTIONS", uri, headers)
