"""Prometheus metrics of one server (SPEC OPS-4); the names are listed in the README.

Each server owns a `ServerMetrics` with a private `CollectorRegistry`, never the
process-global one, so several servers can live in one process (tests, `trimaran
demo`). It exposes:

* ``trimaran_server_info{server,pool,role,version} 1``;
* counters and gauges the server moves as things happen (`counter`, `gauge`; the
  Front End's SIP and HTTP ones are `Metrics`);
* *sources*: functions that describe the server's HA state into a `Families` at
  every scrape (`add_source`), so that a sample never outlives its state (a pool
  record that disappears, a peer that leaves). A source may have an async
  `refresh`, awaited before rendering (bounded by `REFRESH_TIMEOUT`), for what needs
  I/O, such as the Backup Service's lag read from the store. A refresh or a source
  that fails is logged at debug level and counted in
  ``metrics_source_errors_total{source}``; the scrape still answers with the rest.

States are one-hot gauges: one sample per possible state, labelled ``state``, 1 for
the current one. Label values are bounded: unknown SIP methods count as "other",
status codes are folded into classes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest

from trimaran import __version__
from trimaran.sip.message import KNOWN_METHODS
from trimaran.sip.transaction_layer import TransactionStats

log = logging.getLogger(__name__)

#: Admin HTTP path groups that get their own label value; anything else is "other".
PATH_GROUPS: frozenset[str] = frozenset({"health", "status", "metrics", "xcap", "admin"})
#: How long a scrape waits for one source's refresh before rendering without it.
REFRESH_TIMEOUT = 3.0
#: The ``result`` labels of a REGISTER's final answer (`register_result`).
REGISTER_RESULTS = ("accepted_full", "accepted_resiliency", "redirected", "challenged",
                    "unavailable", "rejected")

OTHER = "other"

__all__ = ["KNOWN_METHODS", "REGISTER_RESULTS", "Families", "Metrics", "ServerMetrics",
           "code_class", "describe_transactions", "method_label", "register_result"]


def method_label(method: str) -> str:
    """The `method` label for a SIP method: itself when known, else "other"."""
    upper = method.upper()
    return upper if upper in KNOWN_METHODS else OTHER


def code_class(code: int) -> str:
    """The `code_class` label of a status code: "1xx".."6xx", else "other"."""
    return f"{code // 100}xx" if 100 <= code <= 699 else OTHER


def _http_status_label(status: int) -> str:
    return str(status) if 100 <= status <= 599 else OTHER


_Family = GaugeMetricFamily | CounterMetricFamily


class Families:
    """The metric families of one scrape, as the sources describe them."""

    def __init__(self) -> None:
        self._families: dict[str, _Family] = {}
        self._labels: dict[str, tuple[str, ...]] = {}

    def gauge(self, name: str, doc: str, value: float, **labels: str) -> None:
        """Add a sample to gauge `name`."""
        self._add(GaugeMetricFamily, name, doc, value, labels)

    def counter(self, name: str, doc: str, value: float, **labels: str) -> None:
        """Add a sample to counter `name` (given without its ``_total`` suffix)."""
        self._add(CounterMetricFamily, name, doc, value, labels)

    def flag(self, name: str, doc: str, value: bool, **labels: str) -> None:
        """Add a 0/1 sample to gauge `name`."""
        self.gauge(name, doc, 1.0 if value else 0.0, **labels)

    def state(self, name: str, doc: str, states: Sequence[str], current: str,
              **labels: str) -> None:
        """Add a one-hot gauge: one sample per state of `states`, 1 for `current`."""
        for state in states:
            self.gauge(name, doc, 1.0 if state == current else 0.0, **labels, state=state)

    def metrics(self) -> list[Metric]:
        """The families described so far."""
        return list(self._families.values())

    def _add(self, kind: type[_Family], name: str, doc: str, value: float,
             labels: dict[str, str]) -> None:
        family = self._families.get(name)
        if family is None:
            family = self._families[name] = kind(name, doc, labels=sorted(labels))
            self._labels[name] = tuple(sorted(labels))
        family.add_metric([labels[key] for key in self._labels[name]], value)


Describe = Callable[[Families], None]
Refresh = Callable[[], Awaitable[None]]


class _Source:
    """A registry collector calling one `Describe` at every scrape."""

    def __init__(self, name: str, describe: Describe, refresh: Refresh | None,
                 failed: Callable[[str], None]) -> None:
        self.name = name
        self.describe_into = describe
        self.refresh = refresh
        self._failed = failed

    def describe(self) -> list[Metric]:
        return []      # names vary with the state: no up-front duplicate check

    def collect(self) -> list[Metric]:
        families = Families()
        try:
            self.describe_into(families)
        except Exception:
            log.debug("metrics source %s failed", self.name, exc_info=True)
            self._failed(self.name)
        return families.metrics()


class ServerMetrics:
    """The registry of one server's metrics and what its `/metrics` serves."""

    def __init__(self, *, server: str = "", role: str = "", pool: str = "") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        Info("trimaran_server", "This server: its name, pool, role and Trimaran version",
             registry=self.registry).info(
            {"server": server, "pool": pool, "role": role, "version": __version__})
        self._source_errors = self.counter(
            "metrics_source_errors", "Metrics sources that failed to refresh or describe",
            ["source"])
        self._sources: list[_Source] = []

    def counter(self, name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
        """A counter in this registry (`name` without ``_total``)."""
        return Counter(name, doc, list(labels), registry=self.registry)

    def gauge(self, name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
        """A gauge in this registry."""
        return Gauge(name, doc, list(labels), registry=self.registry)

    def add_source(self, name: str, describe: Describe, refresh: Refresh | None = None) -> None:
        """Describe state at every scrape, after awaiting `refresh` when given."""
        source = _Source(name, describe, refresh, self._failed)
        self._sources.append(source)
        self.registry.register(source)

    async def refresh(self) -> None:
        """Await every source's refresh; a failure or a timeout is logged and counted."""
        for source in self._sources:
            if source.refresh is None:
                continue
            try:
                await asyncio.wait_for(source.refresh(), REFRESH_TIMEOUT)
            except Exception:
                log.debug("metrics source %s: refresh failed", source.name, exc_info=True)
                self._failed(source.name)

    async def scrape(self) -> tuple[bytes, str]:
        """Refresh, then render: the body and content type of ``GET /metrics``."""
        await self.refresh()
        return self.render()

    async def handle(self, request: web.Request) -> web.Response:
        """The aiohttp handler of ``GET /metrics``."""
        body, content_type = await self.scrape()
        response = web.Response(body=body)
        response.headers["Content-Type"] = content_type
        return response

    def sample(self, name: str, **labels: str) -> float:
        """The current value of a sample (e.g. ``sample("sip_requests_total",
        method="INVITE")``); 0.0 when it was never touched."""
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition of the registry and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def _failed(self, source: str) -> None:
        self._source_errors.labels(source=source).inc()


class Metrics(ServerMetrics):
    """A Front End's metrics: SIP and admin HTTP counters, registrations, gauges.

    Callers use the method-named helpers (`request("REGISTER")`, `response(200)`, ...).
    """

    def __init__(self, *, server: str = "", role: str = "", pool: str = "") -> None:
        super().__init__(server=server, role=role, pool=pool)
        self._requests = self.counter(
            "sip_requests", "SIP requests received, by method", ["method"])
        self._responses = self.counter(
            "sip_responses", "SIP responses sent, by status class", ["code_class"])
        self._auth_failures = self.counter(
            "sip_auth_failures", "SIP digest authentications that failed")
        self._bad_messages = self.counter(
            "sip_bad_messages", "SIP messages rejected as malformed")
        self._store_errors = self.counter("store_errors", "Store operations that failed")
        self._http = self.counter(
            "http_requests", "Admin HTTP requests, by path group and status",
            ["path_group", "status"])
        self._registers = self.counter(
            "registrar_registers", "REGISTER requests answered, by result", ["result"])
        for result in REGISTER_RESULTS:
            self._registers.labels(result=result)       # exposed at 0 from the start
        self._bindings = self.gauge(
            "registered_bindings", "Registered contact bindings served here")
        self._subscriptions = self.gauge(
            "active_subscriptions", "Subscriptions this server is notifier for")
        self._calls = self.gauge("calls_active", "Calls in progress through this server")
        self._rate_limited = self.counter(
            "sip_rate_limited", "SIP requests refused (503) by the per-source rate limit, "
            "by method", ["method"])
        for method in ("REGISTER", "MESSAGE", "INVITE"):
            self._rate_limited.labels(method=method)      # exposed at 0 from the start
        self._flows_refused = self.counter(
            "registrar_flows_refused", "REGISTERs refused: the user already holds the most "
            "registrations allowed")
        self._lockouts = self.counter(
            "auth_lockouts", "Accounts locked by failed digest responses counted here")

    def request(self, method: str) -> None:
        """Count a SIP request received."""
        self._requests.labels(method=method_label(method)).inc()

    def response(self, code: int) -> None:
        """Count a SIP response sent."""
        self._responses.labels(code_class=code_class(code)).inc()

    def registration(self, code: int, mode: str | None) -> None:
        """Count a REGISTER answered with `code` (final answers only); `mode` is the
        X-Trimaran-Mode sent with it."""
        if code >= 200:
            self._registers.labels(result=register_result(code, mode)).inc()

    def auth_failure(self) -> None:
        """Count a failed SIP digest authentication."""
        self._auth_failures.inc()

    def rate_limited(self, method: str) -> None:
        """Count a request refused by the per-source rate limit."""
        self._rate_limited.labels(method=method_label(method)).inc()

    def flow_refused(self) -> None:
        """Count a REGISTER refused for the user's flow limit."""
        self._flows_refused.inc()

    def lockout(self) -> None:
        """Count an account locked by a failure counted here."""
        self._lockouts.inc()

    def bad_message(self) -> None:
        """Count a malformed SIP message (answered 400 or dropped)."""
        self._bad_messages.inc()

    def store_error(self) -> None:
        """Count a failed store operation."""
        self._store_errors.inc()

    def http_request(self, path_group: str, status: int) -> None:
        """Count an admin HTTP request answered with `status`."""
        group = path_group if path_group in PATH_GROUPS else OTHER
        self._http.labels(path_group=group, status=_http_status_label(status)).inc()

    def set_registered_bindings(self, count: int) -> None:
        """Set the number of registered bindings served by this server."""
        self._bindings.set(count)

    def set_active_subscriptions(self, count: int) -> None:
        """Set the number of subscriptions this server is notifier for."""
        self._subscriptions.set(count)

    def set_calls_active(self, count: int) -> None:
        """Set the number of calls in progress."""
        self._calls.set(count)

    def call_started(self) -> None:
        """One more call in progress."""
        self._calls.inc()

    def call_ended(self) -> None:
        """One call fewer in progress."""
        self._calls.dec()


def register_result(code: int, mode: str | None) -> str:
    """The ``result`` label (one of `REGISTER_RESULTS`) of a REGISTER finally answered
    with `code`; "unavailable" is 503, "rejected" any other refusal."""
    if 200 <= code < 300:
        return "accepted_resiliency" if mode == "resiliency" else "accepted_full"
    if 300 <= code < 400:
        return "redirected"
    if code in (401, 407):
        return "challenged"
    if code == 503:
        return "unavailable"
    return "rejected"


def describe_transactions(families: Families, stats: TransactionStats) -> None:
    """``sip_transactions_total`` and ``sip_transactions_active`` of a transaction layer."""
    for (side, method, result), count in sorted(stats.completed.items()):
        families.counter("sip_transactions", "SIP transactions ended, by side (client: sent "
                         "by this server, server: received), method and result (final "
                         "response class, timeout or transport_error)", count,
                         side=side, method=method, result=result)
    doc = "SIP transactions in progress, by side"
    families.gauge("sip_transactions_active", doc, stats.client_transactions, side="client")
    families.gauge("sip_transactions_active", doc, stats.server_transactions, side="server")

