"""Metrics of one server and their exposition on /metrics (SPEC OPS-4)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from tests.admin.conftest import Admin, xcap_path
from trimaran.admin.metrics import Metrics, code_class, method_label


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_helpers_count_with_bounded_labels() -> None:
    m = Metrics()
    m.request("REGISTER")
    m.request("register")
    m.request("FOOBAR")
    m.request("X" * 1000)
    m.response(200)
    m.response(183)
    m.response(999)
    m.auth_failure()
    m.bad_message()
    m.bad_message()
    m.store_error()
    m.http_request("xcap", 401)
    m.http_request("/some/random/path", 404)
    assert m.sample("sip_requests_total", method="REGISTER") == 2
    assert m.sample("sip_requests_total", method="other") == 2
    assert m.sample("sip_responses_total", code_class="2xx") == 1
    assert m.sample("sip_responses_total", code_class="1xx") == 1
    assert m.sample("sip_responses_total", code_class="other") == 1
    assert m.sample("sip_auth_failures_total") == 1
    assert m.sample("sip_bad_messages_total") == 2
    assert m.sample("store_errors_total") == 1
    assert m.sample("http_requests_total", path_group="xcap", status="401") == 1
    assert m.sample("http_requests_total", path_group="other", status="404") == 1


def test_gauges_follow_the_server_state() -> None:
    m = Metrics()
    m.set_registered_bindings(42)
    m.set_active_subscriptions(7)
    m.call_started()
    m.call_started()
    m.call_ended()
    assert m.sample("registered_bindings") == 42
    assert m.sample("active_subscriptions") == 7
    assert m.sample("calls_active") == 1
    m.set_calls_active(0)
    assert m.sample("calls_active") == 0


def test_each_metrics_has_its_own_registry() -> None:
    a, b = Metrics(), Metrics()
    a.request("INVITE")
    assert a.sample("sip_requests_total", method="INVITE") == 1
    assert b.sample("sip_requests_total", method="INVITE") == 0


def test_label_helpers() -> None:
    assert method_label("subscribe") == "SUBSCRIBE"
    assert method_label("BREW") == "other"
    assert [code_class(c) for c in (100, 299, 404, 503, 604, 99, 700)] == \
        ["1xx", "2xx", "4xx", "5xx", "6xx", "other", "other"]


async def test_metrics_endpoint_exposes_the_counters_in_prometheus_text(admin: Admin) -> None:
    admin.metrics.request("INVITE")
    admin.metrics.request("INVITE")
    admin.metrics.response(486)
    admin.metrics.auth_failure()
    admin.metrics.set_registered_bindings(3)
    async with await admin.request("GET", "/health"):
        pass
    async with await admin.request("GET", xcap_path("sip:alice@trimaran.test")) as resp:
        assert resp.status == 401
    async with await admin.request("GET", "/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == CONTENT_TYPE_LATEST
        text = await resp.text()
    got = samples(text)
    assert got[("sip_requests_total", (("method", "INVITE"),))] == 2
    assert got[("sip_responses_total", (("code_class", "4xx"),))] == 1
    assert got[("sip_auth_failures_total", ())] == 1
    assert got[("registered_bindings", ())] == 3
    assert got[("active_subscriptions", ())] == 0
    assert got[("calls_active", ())] == 0
    assert got[("sip_bad_messages_total", ())] == 0
    assert got[("store_errors_total", ())] == 0
    assert got[("http_requests_total", (("path_group", "health"), ("status", "200")))] == 1
    assert got[("http_requests_total", (("path_group", "xcap"), ("status", "401")))] == 1
    assert "# HELP sip_requests_total" in text
