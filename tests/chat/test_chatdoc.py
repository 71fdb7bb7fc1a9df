"""The chat state in the CMS (SPEC PC-2, PC-4), planned without I/O: the default from
the topology, the modes' transition table, active servers, the document's JSON and a
server's view of it."""

from __future__ import annotations

import json

import pytest

from trimaran.cms.chatdoc import (
    CHAT_KEY,
    TRANSITIONS,
    ChatMode,
    ChatPoolState,
    ChatSource,
    ChatState,
    ChatStateError,
    ChatStateRefused,
    default_state,
    failed_over,
    failing_back,
    normal,
    set_active,
)
from trimaran.cms.replica import Snapshot
from trimaran.deploy.chatdb import chat_dsn
from trimaran.store.model import CmsDocument
from trimaran.topology import parse_topology
from trimaran.topology.model import Topology

TOPOLOGY = """\
name: t
sip_domain: trimaran.test
sites: [{name: dc1}, {name: dc2}]
pools:
  - {name: se1, site: dc1, role: frontend, edition: standard,
     servers: [{name: se1, address: 127.0.48.10}]}
  - name: pc
    site: dc1
    role: chat
    servers:
      - {name: pc1, address: 127.0.48.11}
      - {name: pc2, address: 127.0.48.12}
      - {name: pc3, address: 127.0.48.13, site: dc2}
      - {name: pc4, address: 127.0.48.14, site: dc2}
    backend: {principal: {address: 127.0.48.21}, mirror: {address: 127.0.48.22, port: 5433}}
    log_shipping:
      site: dc2
      principal: {address: 127.0.48.23}
      mirror: {address: 127.0.48.24, port: 5434}
  - name: big
    site: dc1
    role: chat
    active_servers: [b2, b7]
    servers: [{name: b1, address: 127.0.48.31}, {name: b2, address: 127.0.48.32},
              {name: b3, address: 127.0.48.33}, {name: b4, address: 127.0.48.34},
              {name: b5, address: 127.0.48.35}, {name: b6, address: 127.0.48.36},
              {name: b7, address: 127.0.48.37}]
"""


@pytest.fixture
def topology() -> Topology:
    return parse_topology(TOPOLOGY)


def test_pc2_the_default_is_normal_with_the_topologys_active_servers(
        topology: Topology) -> None:
    state = default_state(topology)
    assert state.of("pc") == ChatPoolState(ChatMode.NORMAL, ("pc1", "pc2"))  # its own site
    assert state.of("big") == ChatPoolState(ChatMode.NORMAL, ("b2", "b7"))   # declared
    with pytest.raises(KeyError):
        state.of("se1")


def test_pc4_failover_activates_the_second_data_centers_servers_and_failback_returns(
        topology: Topology) -> None:
    state = default_state(topology)
    over = failed_over(state, topology, "pc")
    assert over.of("pc") == ChatPoolState(ChatMode.FAILED_OVER, ("pc3", "pc4"))
    assert over.of("big") == state.of("big")          # other pools untouched
    back = failing_back(over, topology, "pc")
    assert back.of("pc") == ChatPoolState(ChatMode.FAILING_BACK, ("pc3", "pc4"))
    assert failing_back(back, topology, "pc") == back  # an interrupted failback runs again
    assert normal(back, topology, "pc").of("pc") == ChatPoolState(ChatMode.NORMAL,
                                                                  ("pc1", "pc2"))


@pytest.mark.parametrize(("mode", "event", "why"), [
    (ChatMode.FAILED_OVER, "failover", "it is failed over already"),
    (ChatMode.FAILING_BACK, "failover", "a failback is in progress"),
    (ChatMode.NORMAL, "failback", "it is not failed over"),
    (ChatMode.FAILED_OVER, "failback-done", "has not been failed back yet"),
    (ChatMode.NORMAL, "failback-done", "no failback is in progress"),
])
def test_pc4_an_impossible_transition_is_refused_naming_mode_and_event(
        topology: Topology, mode: ChatMode, event: str, why: str) -> None:
    assert (mode, event) not in TRANSITIONS
    state = ChatState({**default_state(topology).pools, "pc": ChatPoolState(mode, ("pc3",))})
    change = {"failover": failed_over, "failback": failing_back, "failback-done": normal}
    with pytest.raises(ChatStateRefused) as refused:
        change[event](state, topology, "pc")
    assert refused.value.reason.startswith(f"chat pool pc is {mode.value}: {event} refused")
    assert why in refused.value.reason


def test_pc4_a_pool_without_log_shipping_cannot_fail_over(topology: Topology) -> None:
    with pytest.raises(ChatStateRefused, match="ships no log"):
        failed_over(default_state(topology), topology, "big")
    with pytest.raises(ChatStateRefused, match="no chat pool named 'se1'"):
        failed_over(default_state(topology), topology, "se1")


def test_pc2_active_servers_are_one_to_four_servers_of_the_pool_that_are_up(
        topology: Topology) -> None:
    state = default_state(topology)
    assert set_active(state, topology, "pc", ["pc2", "pc3"]).of("pc").active == ("pc2", "pc3")
    refusals = {
        ("pc9",): "'pc9' is not a server of pool pc",
        (): "name at least one server",
        ("pc1", "pc1"): "pc1 is named twice",
        ("b1", "b2", "b3", "b4", "b5"): "at most 4 servers of a chat pool are active",
    }
    for servers, why in refusals.items():
        pool = "big" if servers and servers[0].startswith("b") else "pc"
        with pytest.raises(ChatStateRefused, match=why):
            set_active(state, topology, pool, servers)
    with pytest.raises(ChatStateRefused, match=r"server\(s\) pc2 not up"):
        set_active(state, topology, "pc", ["pc1", "pc2"], is_up=lambda s: s != "pc2")


def test_pc4_failed_over_only_the_second_data_centers_servers_may_be_active(
        topology: Topology) -> None:
    over = failed_over(default_state(topology), topology, "pc")
    assert set_active(over, topology, "pc", ["pc4"]).of("pc") == \
        ChatPoolState(ChatMode.FAILED_OVER, ("pc4",))
    with pytest.raises(ChatStateRefused,
                       match="only its servers in site dc2 may be active, not pc1"):
        set_active(over, topology, "pc", ["pc1", "pc3"])
    with pytest.raises(ChatStateRefused, match="failing back"):
        set_active(failing_back(over, topology, "pc"), topology, "pc", ["pc3"])


def test_the_document_round_trips_and_fills_in_pools_it_does_not_name(
        topology: Topology) -> None:
    state = failed_over(default_state(topology), topology, "pc")
    body = state.body()
    assert json.loads(body) == {"pools": {
        "big": {"mode": "normal", "active": ["b2", "b7"]},
        "pc": {"mode": "failed-over", "active": ["pc3", "pc4"]}}}
    assert ChatState.from_json(body, topology) == state
    assert ChatState.from_json(state.to_json(), topology) == state
    partial = {"pools": {"pc": {"mode": "failing-back", "active": ["pc3"]}}}
    parsed = ChatState.from_json(partial, topology)
    assert parsed.of("big") == default_state(topology).of("big")


@pytest.mark.parametrize(("raw", "where"), [
    ("{", "not JSON"),
    ({"pool": {}}, 'expected {"pools"'),
    ({"pools": {"pc9": {"mode": "normal", "active": []}}}, "pools.pc9: no chat pool"),
    ({"pools": {"pc": {"mode": "lost", "active": []}}}, "pools.pc.mode: 'lost'"),
    ({"pools": {"pc": {"mode": "normal"}}}, 'pools.pc: expected {"mode", "active"}'),
    ({"pools": {"pc": {"mode": "normal", "active": "pc1"}}}, "pools.pc.active: expected"),
    ({"pools": {"pc": {"mode": "normal", "active": ["pc8"]}}}, "pools.pc.active: 'pc8'"),
])
def test_a_bad_document_names_the_field(topology: Topology, raw: object, where: str) -> None:
    with pytest.raises(ChatStateError, match=where):
        ChatState.from_json(raw, topology)


def _snapshot(version: int, body: str | None) -> Snapshot:
    documents = {} if body is None else {CHAT_KEY: CmsDocument(CHAT_KEY, body, version, 0.0)}
    return Snapshot(version, None, documents)


def test_a_servers_source_follows_the_document_and_keeps_the_last_good_one(
        topology: Topology) -> None:
    current = [_snapshot(0, None)]
    source = ChatSource(topology, lambda: current[0])
    assert source.current() == default_state(topology)
    over = failed_over(default_state(topology), topology, "pc")
    current[0] = _snapshot(3, over.body())
    assert source.current() == over
    current[0] = _snapshot(4, '{"pools": {"pc": {"mode": "lost", "active": []}}}')
    assert source.current() == over                      # logged, the last good one kept


def test_pc4_servers_find_the_store_of_each_mode(topology: Topology) -> None:
    pair = ("postgresql://trimaran@127.0.48.21:5432,127.0.48.22:5433/trimaran"
            "?target_session_attrs=read-write")
    assert chat_dsn(topology, "pc", ChatMode.NORMAL) == pair
    assert chat_dsn(topology, "pc", ChatMode.FAILING_BACK) == pair
    assert chat_dsn(topology, "pc", ChatMode.FAILED_OVER) == (
        "postgresql://trimaran@127.0.48.23:5432,127.0.48.24:5434/trimaran"
        "?target_session_attrs=read-write")
    with pytest.raises(LookupError):
        chat_dsn(topology, "big", ChatMode.NORMAL)
