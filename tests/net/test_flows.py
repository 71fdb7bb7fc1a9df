"""Flows, the flow table, Via stamping and configuration checks (no sockets)."""

from __future__ import annotations

import dataclasses

import pytest

from tests.net.conftest import make_request
from trimaran.net.flows import (
    Flow,
    FlowTable,
    format_host_port,
    is_ip_literal,
    normalize_host,
    parse_host_port,
    parse_udp_flow_id,
    udp_flow,
)
from trimaran.net.transport import TransportConfig, TransportLayer, stamp_via
from trimaran.sip.headers import Via


def test_flow_reliability() -> None:
    assert Flow("tcp:1", "tcp", ("127.0.0.1", 5060), ("127.0.0.1", 4000)).reliable
    assert not udp_flow(("127.0.0.1", 5060), ("127.0.0.1", 4000)).reliable


def test_udp_flow_id_round_trip() -> None:
    flow = udp_flow(("127.0.0.1", 5060), ("127.0.0.1", 40000))
    assert flow.id == "udp:127.0.0.1:5060>127.0.0.1:40000"
    assert parse_udp_flow_id(flow.id) == flow
    v6 = udp_flow(("::1", 5060), ("2001:db8::1", 5070))
    assert v6.id == "udp:[::1]:5060>[2001:db8::1]:5070"
    assert parse_udp_flow_id(v6.id) == v6


@pytest.mark.parametrize("flow_id", ["tcp:1", "udp:", "udp:1.2.3.4:5", "udp:a>b", "udp:x:1>y:z"])
def test_parse_udp_flow_id_rejects_others(flow_id: str) -> None:
    assert parse_udp_flow_id(flow_id) is None


def test_host_helpers() -> None:
    assert normalize_host("[2001:DB8:0:0::1]") == "2001:db8::1"
    assert normalize_host("127.0.0.1") == "127.0.0.1"
    assert normalize_host("example.com") == "example.com"
    assert is_ip_literal("[::1]") and is_ip_literal("10.0.0.1")
    assert not is_ip_literal("example.com")
    assert format_host_port(("::1", 5)) == "[::1]:5"
    assert parse_host_port("[::1]:5") == ("::1", 5)
    with pytest.raises(ValueError):
        parse_host_port("nohost")


def test_flow_table_indexes_by_id_and_remote() -> None:
    table: FlowTable[str] = FlowTable()
    a = Flow("tcp:1", "tcp", ("127.0.0.1", 5060), ("127.0.0.1", 4000))
    b = Flow("tcp:2", "tcp", ("127.0.0.1", 5060), ("127.0.0.1", 4000))
    table.add(a, "conn-a")
    table.add(b, "conn-b")
    assert len(table) == 2
    assert table.get("tcp:1") == "conn-a" and table.flow("tcp:2") == b
    assert table.by_remote("tcp", ("127.0.0.1", 4000)) == "conn-b"  # most recent
    assert table.by_remote("udp", ("127.0.0.1", 4000)) is None
    assert table.remove("tcp:2") == "conn-b"
    assert table.by_remote("tcp", ("127.0.0.1", 4000)) == "conn-a"
    assert table.remove("tcp:2") is None
    table.remove("tcp:1")
    assert table.by_remote("tcp", ("127.0.0.1", 4000)) is None
    assert table.connections() == [] and len(table) == 0


def test_stamp_via_fills_bare_rport_and_received() -> None:
    request = make_request(via="SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK-a;rport")
    request.headers.add("Via", "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK-b")
    stamp_via(request, ("127.0.0.1", 40000))
    top = request.top_via
    assert top.rport == 40000 and top.received == "127.0.0.1"
    assert top.branch == "z9hG4bK-a"
    assert [v.branch for v in request.vias] == ["z9hG4bK-a", "z9hG4bK-b"]
    assert request.vias[1].received is None


def test_stamp_via_received_only_when_host_differs() -> None:
    same = make_request(via="SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK-a")
    stamp_via(same, ("127.0.0.1", 5062))
    assert same.top_via.received is None and not same.top_via.wants_rport
    other = make_request(via="SIP/2.0/TCP client.example.com;branch=z9hG4bK-a")
    stamp_via(other, ("127.0.0.1", 40000))
    assert other.top_via.received == "127.0.0.1"
    assert other.top_via.param("rport") is None


def test_stamp_via_keeps_filled_rport_and_ipv6() -> None:
    v6 = make_request(via="SIP/2.0/UDP [::1]:5062;branch=z9hG4bK-a")
    stamp_via(v6, ("::1", 5062))
    assert v6.top_via.received is None
    filled = make_request(via="SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK-a;rport=7")
    stamp_via(filled, ("127.0.0.1", 40000))
    assert filled.top_via.rport == 7 and filled.top_via.received == "127.0.0.1"
    assert Via.parse(str(filled.top_via)) == filled.top_via


@pytest.mark.parametrize(("field", "value"), [
    ("tcp_idle_timeout", 0), ("tcp_idle_timeout", -1.0), ("tcp_idle_timeout", float("nan")),
    ("keepalive_interval", 0.0), ("keepalive_timeout", float("inf")),
    ("connect_timeout", True), ("max_connections", 0), ("max_connections", 1.5),
    ("write_buffer_limit", -5), ("limits", None),
])
def test_config_validation_names_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        TransportConfig(**{field: value})  # type: ignore[arg-type]


def test_config_defaults() -> None:
    config = TransportConfig()
    assert config.tcp_idle_timeout == 600.0 and config.keepalive_interval is None
    assert TransportConfig(keepalive_interval=25).keepalive_interval == 25


def test_statistics_is_a_frozen_snapshot() -> None:
    layer = TransportLayer(lambda message, flow: None)
    stats = layer.statistics()
    assert stats.messages_in == 0 and stats.open_connections == 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.messages_in = 3  # type: ignore[misc]
