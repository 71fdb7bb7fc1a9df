"""Prometheus metrics of one server (SPEC OPS-4).

Each `Metrics` owns a private `CollectorRegistry`, never the process-global one, so
several servers can live in one process (tests, `trimaran demo`). Label values are
bounded: unknown SIP methods count as "other", status codes are folded into classes.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import generate_latest

#: SIP methods that get their own label value (RFC 3261 and the extensions we serve).
KNOWN_METHODS: frozenset[str] = frozenset({
    "ACK", "BYE", "CANCEL", "INFO", "INVITE", "MESSAGE", "NOTIFY", "OPTIONS",
    "PRACK", "PUBLISH", "REFER", "REGISTER", "SUBSCRIBE", "UPDATE",
})

#: Admin HTTP path groups that get their own label value; anything else is "other".
PATH_GROUPS: frozenset[str] = frozenset({"health", "status", "metrics", "xcap", "admin"})

OTHER = "other"


def method_label(method: str) -> str:
    """The `method` label for a SIP method: itself when known, else "other"."""
    upper = method.upper()
    return upper if upper in KNOWN_METHODS else OTHER


def code_class(code: int) -> str:
    """The `code_class` label of a status code: "1xx".."6xx", else "other"."""
    return f"{code // 100}xx" if 100 <= code <= 699 else OTHER


def _http_status_label(status: int) -> str:
    return str(status) if 100 <= status <= 599 else OTHER


class Metrics:
    """The counters and gauges a server exposes on `/metrics`.

    Callers use the method-named helpers (`request("REGISTER")`, `response(200)`, ...);
    `registry` is what gets rendered.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._requests = Counter(
            "sip_requests", "SIP requests received, by method", ["method"], registry=r)
        self._responses = Counter(
            "sip_responses", "SIP responses sent, by status class", ["code_class"], registry=r)
        self._auth_failures = Counter(
            "sip_auth_failures", "SIP digest authentications that failed", registry=r)
        self._bad_messages = Counter(
            "sip_bad_messages", "SIP messages rejected as malformed", registry=r)
        self._store_errors = Counter(
            "store_errors", "Store operations that failed", registry=r)
        self._http = Counter(
            "http_requests", "Admin HTTP requests, by path group and status",
            ["path_group", "status"], registry=r)
        self._bindings = Gauge(
            "registered_bindings", "Registered contact bindings served here", registry=r)
        self._subscriptions = Gauge(
            "active_subscriptions", "Subscriptions this server is notifier for", registry=r)
        self._calls = Gauge("calls_active", "Calls in progress through this server", registry=r)

    def request(self, method: str) -> None:
        """Count a SIP request received."""
        self._requests.labels(method=method_label(method)).inc()

    def response(self, code: int) -> None:
        """Count a SIP response sent."""
        self._responses.labels(code_class=code_class(code)).inc()

    def auth_failure(self) -> None:
        """Count a failed SIP digest authentication."""
        self._auth_failures.inc()

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

    def sample(self, name: str, **labels: str) -> float:
        """The current value of a sample (e.g. ``sample("sip_requests_total",
        method="INVITE")``); 0.0 when it was never touched."""
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition of the registry and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
