"""The Edge in the topology and in the CMS (SPEC EDGE-1, EDGE-3..EDGE-5): loading the
external endpoints, `federation` and the federated partners; the rules, each at the
offending element's path; the ``edge`` CMS document and its refusals, without I/O."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from trimaran.cms.edgedoc import (
    EDGE_KEY,
    EdgeRefused,
    EdgeSource,
    EdgeState,
    EdgeStateError,
    set_federation_route,
    set_media_edge,
    set_next_hop,
    state_of,
)
from trimaran.cms.replica import Snapshot
from trimaran.store.model import CmsDocument
from trimaran.topology.edge_rules import parse_host_port
from trimaran.topology.errors import TopologyError, Violation
from trimaran.topology.loader import parse_topology
from trimaran.topology.model import Endpoint, FederatedPartner, Topology
from trimaran.topology.validator import validate_text

HEAD = """\
name: edge-config
sip_domain: trimaran.test
sites: [{name: dc1}, {name: dc2}]
"""
FRONT_ENDS = """\
  - {name: fe1, site: dc1, role: frontend, edition: standard, backup_pool: fe2,
     edge_pool: edge1, servers: [{name: fe1, address: 127.0.41.1}]}
  - {name: fe2, site: dc2, role: frontend, edition: standard, backup_pool: fe1,
     servers: [{name: fe2, address: 127.0.41.2}]}
  - {name: dir1, site: dc1, role: director, servers: [{name: dir1, address: 127.0.41.5}]}
  - {name: med1, site: dc1, role: mediation, next_hop: fe1,
     servers: [{name: med1, address: 127.0.41.6}]}
"""
EDGES = """\
  - name: edge1
    site: dc1
    role: edge
    next_hop: fe1
    federation: true
    servers:
      - {name: edge1a, address: 127.0.41.11, external_address: 127.0.41.111}
      - {name: edge1b, address: 127.0.41.12, external_address: 127.0.41.112,
         external_port: 5061}
  - name: edge2
    site: dc2
    role: edge
    next_hop: dir1
    servers:
      - {name: edge2a, address: 127.0.41.21, external_address: 127.0.41.121}
"""
PARTNERS = """\
federation_route: edge1
federation_partners:
  - {domain: partner.test, edges: ['127.0.42.111:5061', '[2001:db8::1]:5061']}
  - {domain: other.test, edges: ['127.0.42.121:5060']}
"""
GOOD = HEAD + PARTNERS + "pools:\n" + FRONT_ENDS + EDGES


def found(text: str) -> set[tuple[str, str]]:
    """(path, severity) of every violation, loader's and rules'."""
    return {(v.path, v.severity) for v in validate_text(text)}


def message(text: str, path: str) -> str:
    [match] = [v.message for v in validate_text(text) if v.path == path]
    return match


def loader_violations(text: str) -> list[Violation]:
    with pytest.raises(TopologyError) as caught:
        parse_topology(text)
    return caught.value.violations


def good() -> Topology:
    return parse_topology(GOOD)


# --- loading ---------------------------------------------------------------------------------


def test_external_endpoints_federation_and_partners_load_and_the_whole_is_valid() -> None:
    topology = good()
    edge1, edge2 = topology.pools[4], topology.pools[5]
    assert (edge1.federation, edge2.federation, topology.pools[0].federation) == (
        True, False, False)
    assert edge1.servers[0].external_endpoint == Endpoint("127.0.41.111", 5060)
    assert edge1.servers[1].external_endpoint == Endpoint("127.0.41.112", 5061)
    assert topology.pools[0].servers[0].external_endpoint is None
    assert topology.federation_partners == (
        FederatedPartner("partner.test", ("127.0.42.111:5061", "[2001:db8::1]:5061")),
        FederatedPartner("other.test", ("127.0.42.121:5060",)))
    assert validate_text(GOOD) == []


def test_no_partners_is_an_empty_tuple() -> None:
    topology = parse_topology(HEAD + "pools:\n" + FRONT_ENDS)
    assert topology.federation_partners == ()


def test_the_new_keys_are_strictly_typed_and_partners_allow_no_unknown_keys() -> None:
    text = (HEAD + "federation_partners:\n"
            "  - {domain: partner.test, edges: '127.0.42.111:5061'}\n"
            "  - {domain: 7, edges: [], colour: red}\n"
            "  - {edges: []}\n"
            "pools:\n" + FRONT_ENDS
            + "  - {name: edge1, site: dc1, role: edge, next_hop: fe1, federation: 'yes',\n"
              "     servers: [{name: e1, address: 127.0.41.11, external_address: 127.0.41.111,\n"
              "                external_port: '5061'}]}\n")
    violations = {v.path: v.message for v in loader_violations(text)}
    assert set(violations) == {
        "federation_partners[0].edges", "federation_partners[1].domain",
        "federation_partners[1].colour", "federation_partners[2].domain",
        "pools[4].federation", "pools[4].servers[0].external_port"}
    assert violations["federation_partners[0].edges"] == \
        "expected a list of strings, got string '127.0.42.111:5061'"
    assert violations["federation_partners[1].domain"] == "expected a string, got number 7"
    assert "unknown key 'colour' in federation partner" in \
        violations["federation_partners[1].colour"]
    assert violations["federation_partners[2].domain"] == \
        "required key 'domain' of federation partner is missing"
    assert violations["pools[4].federation"] == "expected true or false, got string 'yes'"
    assert violations["pools[4].servers[0].external_port"] == \
        "expected an integer, got string '5061'"


def test_federation_partners_must_be_a_list() -> None:
    text = HEAD + "federation_partners: {domain: partner.test}\npools:\n" + FRONT_ENDS
    assert {v.path for v in loader_violations(text)} == {"federation_partners"}


# --- rules: external endpoints (EDGE-1) -------------------------------------------------------


def test_an_edge_server_needs_an_external_address_and_no_other_server_has_one() -> None:
    text = (GOOD.replace(", external_address: 127.0.41.121", "")
            .replace("address: 127.0.41.1}", "address: 127.0.41.1, external_address: "
                     "127.0.41.101, external_port: 5070}"))
    assert found(text) == {("pools[5].servers[0].external_address", "error"),
                           ("pools[0].servers[0].external_address", "error"),
                           ("pools[0].servers[0].external_port", "error")}
    assert "only: edge" in message(text, "pools[0].servers[0].external_port")
    assert "EDGE-1" in message(text, "pools[5].servers[0].external_address")


def test_an_external_address_is_an_ip_literal_and_its_port_in_range() -> None:
    text = (GOOD.replace("external_address: 127.0.41.111", "external_address: edge.example")
            .replace("external_address: 127.0.41.121", "external_address: 0.0.0.0")
            .replace("external_port: 5061", "external_port: 70000"))
    assert found(text) == {("pools[4].servers[0].external_address", "error"),
                           ("pools[5].servers[0].external_address", "error"),
                           ("pools[4].servers[1].external_port", "error")}


def test_external_endpoints_are_unique_and_distinct_from_every_internal_listener() -> None:
    clash_internal = GOOD.replace("external_address: 127.0.41.121",
                                  "external_address: 127.0.41.1")       # fe1's SIP 5060
    assert found(clash_internal) == {("pools[5].servers[0].external_address", "error")}
    assert "SIP of server fe1" in message(clash_internal,
                                          "pools[5].servers[0].external_address")
    clash_edges = GOOD.replace(
        "{name: edge2a, address: 127.0.41.21, external_address: 127.0.41.121}",
        "{name: edge2a, address: 127.0.41.21, external_address: 127.0.41.112, "
        "external_port: 5061}")
    assert found(clash_edges) == {("pools[5].servers[0].external_port", "error")}
    assert "external SIP of server edge1b" in message(clash_edges,
                                                      "pools[5].servers[0].external_port")
    # the same external address on another port, or the server's own internal address
    # on another port, is fine
    other_port = GOOD.replace("external_address: 127.0.41.121",
                              "external_address: 127.0.41.21, external_port: 5061")
    assert found(other_port) == set()


# --- rules: federation (EDGE-3) -----------------------------------------------------------------


def test_federation_is_set_on_edge_pools_only() -> None:
    text = GOOD.replace("edge_pool: edge1,", "edge_pool: edge1, federation: true,")
    assert found(text) == {("pools[0].federation", "error")}
    assert message(text, "pools[0].federation") == \
        "federation does not apply to a frontend pool (only: edge)"


def test_the_federation_route_is_a_federation_enabled_edge_pool() -> None:
    text = GOOD.replace("federation_route: edge1", "federation_route: edge2")
    assert found(text) == {("federation_route", "error")}
    assert "edge2 is not federation-enabled" in message(text, "federation_route")
    not_edge = GOOD.replace("federation_route: edge1", "federation_route: fe1")
    assert found(not_edge) == {("federation_route", "error")}      # reported once (check_edge)


def test_a_route_without_partners_is_a_warning_partners_without_an_enabled_pool_an_error(
        ) -> None:
    no_partners = HEAD + "federation_route: edge1\npools:\n" + FRONT_ENDS + EDGES
    assert found(no_partners) == {("federation_route", "warning")}
    nothing_enabled = GOOD.replace("federation: true", "federation: false").replace(
        "federation_route: edge1\n", "")
    assert found(nothing_enabled) == {("federation_partners", "error")}
    no_route = GOOD.replace("federation_route: edge1\n", "")
    assert found(no_route) == {("federation_partners", "warning")}
    assert "edge1" in message(no_route, "federation_partners")


def test_partner_domains_are_unique_not_ours_and_their_edges_ip_port() -> None:
    text = HEAD + """\
federation_route: edge1
federation_partners:
  - {domain: partner.test, edges: ['127.0.42.111:5061', '127.0.42.111:5061']}
  - {domain: Partner.TEST, edges: ['127.0.42.112:5061']}
  - {domain: trimaran.test, edges: ['edge.partner.test:5061', '127.0.42.1', '[::1]:0']}
  - {domain: 'not a domain', edges: ['::1:5061']}
  - {domain: empty.test, edges: []}
pools:
""" + FRONT_ENDS + EDGES
    assert found(text) == {
        ("federation_partners[0].edges[1]", "error"),
        ("federation_partners[1].domain", "error"),
        ("federation_partners[2].domain", "error"),
        ("federation_partners[2].edges[0]", "error"),
        ("federation_partners[2].edges[1]", "error"),
        ("federation_partners[2].edges[2]", "error"),
        ("federation_partners[3].domain", "error"),
        ("federation_partners[3].edges[0]", "error"),
        ("federation_partners[4].edges", "error"),
    }
    assert "listed twice (first at federation_partners[0].domain)" in message(
        text, "federation_partners[1].domain")
    assert "our own SIP domain" in message(text, "federation_partners[2].domain")


@pytest.mark.parametrize(("text", "endpoint"), [
    ("192.0.2.1:5061", Endpoint("192.0.2.1", 5061)),
    ("[2001:db8::1]:5060", Endpoint("2001:db8::1", 5060)),
    ("[2001:DB8:0::1]:1", Endpoint("2001:db8::1", 1)),
    ("192.0.2.1", None), ("192.0.2.1:0", None), ("192.0.2.1:65536", None),
    ("host.example:5061", None), ("2001:db8::1:5060", None), ("[192.0.2.1]:5060", None),
    ("192.0.2.1:50 ", None), ("", None),
])
def test_partner_edges_are_ip_literals_with_a_port(text: str, endpoint: Endpoint | None) -> None:
    assert parse_host_port(text) == endpoint


# --- the CMS document (EDGE-3..EDGE-5) -----------------------------------------------------------


def test_the_state_of_the_topology_round_trips_through_json() -> None:
    state = EdgeState.from_topology(good())
    assert state == EdgeState("edge1", {"edge1": "fe1", "edge2": "dir1"}, {"fe1": "edge1"},
                              good().federation_partners)
    assert EdgeState.from_json(state.to_json()) == state
    assert json.loads(state.to_json())["partners"][1] == {"domain": "other.test",
                                                          "edges": ["127.0.42.121:5060"]}
    empty = EdgeState()
    assert EdgeState.from_json(empty.to_json()) == empty


@pytest.mark.parametrize(("body", "says"), [
    ("{not json", "not JSON"),
    ("[]", "not a JSON object"),
    ('{"federation_route": null, "next_hops": {}, "media_edges": {}}', "missing ['partners']"),
    ('{"federation_route": null, "next_hops": {}, "media_edges": {}, "partners": [], "x": 1}',
     "unknown key(s) ['x']"),
    ('{"federation_route": 3, "next_hops": {}, "media_edges": {}, "partners": []}',
     "federation_route"),
    ('{"federation_route": null, "next_hops": [], "media_edges": {}, "partners": []}',
     "next_hops: expected an object"),
    ('{"federation_route": null, "next_hops": {"edge1": 1}, "media_edges": {}, "partners": []}',
     "next_hops.edge1"),
    ('{"federation_route": null, "next_hops": {}, "media_edges": {"fe1": ""}, "partners": []}',
     "media_edges.fe1"),
    ('{"federation_route": null, "next_hops": {}, "media_edges": {}, "partners": {}}',
     "partners: expected a list"),
    ('{"federation_route": null, "next_hops": {}, "media_edges": {}, '
     '"partners": [{"domain": "p.test"}]}', "partners[0]"),
    ('{"federation_route": null, "next_hops": {}, "media_edges": {}, '
     '"partners": [{"domain": "p.test", "edges": "1.2.3.4:5"}]}', "partners[0]"),
])
def test_a_bad_document_is_refused_naming_what_is_wrong(body: str, says: str) -> None:
    with pytest.raises(EdgeStateError) as caught:
        EdgeState.from_json(body)
    assert says in str(caught.value)


def test_a_document_naming_pools_of_the_wrong_role_does_not_fit_the_topology() -> None:
    state = EdgeState("fe1", {"edge1": "med1", "fe2": "fe1"}, {"fe1": "nowhere"},
                      (FederatedPartner("p.test", ("x:1",)),))
    assert state.problems(good()) == [
        "federation_route: fe1 is a frontend pool, not an Edge pool",
        "next_hops.edge1: med1 is a mediation pool, not a Director or a Front End pool",
        "next_hops: fe2 is a frontend pool, not an Edge pool",
        "media_edges.fe1: no pool named 'nowhere'",
        "partners.p.test: 'x:1' is not ip:port",
    ]
    with pytest.raises(EdgeStateError, match="does not fit the topology"):
        state_of(good(), state.to_json())


def test_the_state_in_use_is_the_document_completed_from_the_topology() -> None:
    written = EdgeState(None, {"edge1": "fe2"}, {}, ())
    assert state_of(good(), written.to_json()) == EdgeState(
        None, {"edge1": "fe2", "edge2": "dir1"}, {"fe1": "edge1"}, ())
    assert state_of(good(), None) == EdgeState.from_topology(good())


# --- planned changes: refusals without I/O ----------------------------------------------------


def up_except(*down: str) -> Callable[[str], bool]:
    """A health probe: every pool is up except `down`."""
    return lambda pool: pool not in down


def test_the_federation_route_moves_only_to_a_federation_enabled_edge_pool_that_is_up() -> None:
    topology, state = good(), EdgeState.from_topology(good())
    for pool, reason in (("fe1", "fe1 is a frontend pool, not an Edge pool"),
                         ("edge2", "Edge pool edge2 is not federation-enabled"),
                         ("edge9", "no pool named 'edge9'")):
        with pytest.raises(EdgeRefused, match=reason):
            set_federation_route(state, topology, pool, up_except())
    with pytest.raises(EdgeRefused, match="pool edge1 is down"):
        set_federation_route(state, topology, "edge1", up_except("edge1"))
    enabled = parse_topology(GOOD.replace("next_hop: dir1\n", "next_hop: dir1\n"
                                          "    federation: true\n"))
    moved = set_federation_route(state, enabled, "edge2", up_except())
    assert moved.federation_route == "edge2" and moved.next_hops == state.next_hops


def test_a_next_hop_is_a_director_or_front_end_pool_that_is_up() -> None:
    topology, state = good(), EdgeState.from_topology(good())
    with pytest.raises(EdgeRefused, match="med1 is a mediation pool; an Edge pool's next hop"):
        set_next_hop(state, topology, "edge1", "med1", up_except())
    with pytest.raises(EdgeRefused, match="fe1 is a frontend pool, not an Edge pool"):
        set_next_hop(state, topology, "fe1", "fe2", up_except())
    with pytest.raises(EdgeRefused, match="pool fe2 is down"):
        set_next_hop(state, topology, "edge1", "fe2", up_except("fe2"))
    moved = set_next_hop(state, topology, "edge1", "fe2", up_except("fe1"))
    assert moved.next_hops == {"edge1": "fe2", "edge2": "dir1"}
    assert moved.edges_behind("fe2") == ("edge1",) and moved.edges_behind("fe1") == ()
    assert set_next_hop(moved, topology, "edge1", "dir1", up_except()).next_hops["edge1"] == \
        "dir1"


def test_a_front_end_pools_media_edge_pool_moves_to_another_edge_pool() -> None:
    topology, state = good(), EdgeState.from_topology(good())
    assert set_media_edge(state, topology, "fe1", "edge2").media_edges == {"fe1": "edge2"}
    assert set_media_edge(state, topology, "fe2", "edge2").media_edges == {
        "fe1": "edge1", "fe2": "edge2"}
    with pytest.raises(EdgeRefused, match="dir1 is a director pool; only Front End pools"):
        set_media_edge(state, topology, "dir1", "edge2")
    with pytest.raises(EdgeRefused, match="fe2 is a frontend pool, not an Edge pool"):
        set_media_edge(state, topology, "fe1", "fe2")


# --- a server's view ----------------------------------------------------------------------------


class Cms:
    """A replica whose `edge` document the test sets."""

    def __init__(self) -> None:
        self.snapshot = Snapshot()

    def put(self, body: str | None, version: int) -> None:
        docs = {} if body is None else {EDGE_KEY: CmsDocument(EDGE_KEY, body, version, 0.0)}
        self.snapshot = Snapshot(version, None, docs)


def test_a_server_uses_the_document_keeps_the_last_good_one_and_falls_back_to_the_topology(
        caplog: pytest.LogCaptureFixture) -> None:
    topology, cms = good(), Cms()
    source = EdgeSource(topology, lambda: cms.snapshot)
    assert source.current() == EdgeState.from_topology(topology)
    moved = set_next_hop(source.current(), topology, "edge1", "fe2", up_except())
    cms.put(moved.to_json(), 5)
    first = source.current()
    assert first == moved
    assert source.current() is first                   # parsed once per version
    cms.put('{"federation_route": 1}', 6)
    assert source.current() == moved                    # a bad document: the last good one
    assert "version 6 does not load" in caplog.text
    cms.put(EdgeState(None, {"edge1": "med1"}, {}, ()).to_json(), 7)
    assert source.current() == moved                    # wrong roles: also bad
    cms.put(None, 8)
    assert source.current() == EdgeState.from_topology(topology)


def test_dns_view_is_internal_or_external_and_only_on_dns_pools() -> None:
    """EDGE-2: a dns pool answers the internal or the external view."""
    from trimaran.topology.loader import parse_topology
    from trimaran.topology.validator import validate
    text = """
name: views
sip_domain: trimaran.test
sites: [{name: dc1}]
pools:
  - {name: fe1, site: dc1, role: frontend, edition: standard, dns_view: external,
     servers: [{name: fe1a, address: 127.0.41.201}]}
  - {name: dns1, site: dc1, role: dns, dns_view: outside,
     servers: [{name: dns1a, address: 127.0.41.202}]}
  - {name: dns2, site: dc1, role: dns, dns_view: external,
     servers: [{name: dns2a, address: 127.0.41.203}]}
"""
    found = {(v.path, v.message) for v in validate(parse_topology(text))}
    assert ("pools[0].dns_view", "dns_view does not apply to a frontend pool (only: dns)") \
        in found
    assert ("pools[1].dns_view", "'outside' is not one of: internal, external") in found
    assert any(p == "pools[2].dns_view" and "no Edge server" in m for p, m in found)
