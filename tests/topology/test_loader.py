"""The strict topology loader (TOP-1, TOP-2): structure, types, YAML safety."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from trimaran.topology import (
    MAX_TOPOLOGY_BYTES,
    Edition,
    PoolRole,
    Settings,
    SiteKind,
    TopologyError,
    Violation,
    load_topology,
    parse_topology,
    read_topology,
    validate_text,
)

MINIMAL = """\
name: t
sip_domain: trimaran.test
sites:
  - name: dc1
pools:
  - name: se1
    site: dc1
    role: frontend
    edition: standard
    servers:
      - name: se1
        address: 127.0.1.1
"""


def violations_of(text: str) -> list[Violation]:
    """The loader's violations for `text` (the test fails if loading succeeds)."""
    with pytest.raises(TopologyError) as caught:
        parse_topology(textwrap.dedent(text))
    return caught.value.violations


def by_path(violations: list[Violation]) -> dict[str, str]:
    return {v.path: v.message for v in violations}


# --- what a good file gives ----------------------------------------------------------


def test_minimal_topology_loads_with_defaults() -> None:
    topology = parse_topology(MINIMAL)
    assert topology.name == "t"
    assert topology.sip_domain == "trimaran.test"
    assert topology.sites[0].kind is SiteKind.CENTRAL
    pool = topology.pools[0]
    assert (pool.role, pool.edition) == (PoolRole.FRONTEND, Edition.STANDARD)
    server = pool.servers[0]
    assert (server.sip_port, server.admin_port, server.site) == (5060, 8080, None)
    assert str(server.sip_endpoint) == "127.0.1.1:5060"
    assert server.admin_url == "http://127.0.1.1:8080"
    assert topology.settings == Settings()
    assert topology.settings.failure_detection_seconds == 10.0  # FE-3 default


def test_model_is_frozen() -> None:
    topology = parse_topology(MINIMAL)
    with pytest.raises(dataclasses.FrozenInstanceError):
        topology.pools[0].servers[0].sip_port = 5070  # type: ignore[misc]
    assert isinstance(topology.pools, tuple)
    assert hash(topology) == hash(parse_topology(MINIMAL))


def test_every_optional_field_is_read() -> None:
    text = """\
    name: t
    sip_domain: trimaran.test
    sites:
      - {name: dc1, kind: central, metro: m, rtt_ms: {dc2: 3}}
      - {name: dc2, kind: branch}
    pools:
      - name: se1
        site: dc1
        role: frontend
        edition: standard
        servers:
          - {name: se1, address: 127.0.1.1, sip_port: 5070, admin_port: 8081, site: dc2}
        paired_with: se2
        backup_registrar: se2
        expected_users: 100
        capacity: {users_per_server: 7000}
        edge_pool: edge1
        backend:
          principal: {address: 127.0.1.21, port: 5433, site: dc1}
          mirror: {address: 127.0.2.21}
          witness: {server: w1}
    settings:
      failure_detection_seconds: 2.5
      registration_min_expires: 30
    federation_route: edge1
    """
    text = textwrap.dedent(text)
    topology = parse_topology(text)
    site = topology.sites[0]
    assert (site.metro, site.rtt_to("dc2"), site.rtt_to("dc9")) == ("m", 3.0, None)
    assert topology.sites[1].kind is SiteKind.BRANCH
    pool = topology.pools[0]
    server = pool.servers[0]
    assert (server.sip_port, server.admin_port, server.site) == (5070, 8081, "dc2")
    assert (pool.paired_with, pool.backup_registrar, pool.expected_users) == ("se2", "se2", 100)
    assert (pool.capacity.users_per_server, pool.capacity.users_per_pool) == (7000, 80_000)
    assert pool.backend is not None and pool.backend.principal is not None
    assert pool.backend.principal.endpoint.port == 5433
    assert pool.backend.mirror is not None and pool.backend.mirror.port == 5432
    assert pool.backend.witness is not None and pool.backend.witness.server == "w1"
    assert pool.backend.scheme == "mirrored+witness"
    assert topology.settings.failure_detection_seconds == 2.5
    assert topology.settings.registration_min_expires == 30
    assert topology.settings.keepalive_seconds == Settings().keepalive_seconds
    assert topology.federation_route == "edge1"


def test_null_means_absent_only_for_fields_without_a_default_value() -> None:
    ok = parse_topology(MINIMAL + "    paired_with: null\n    backend: ~\n")
    assert ok.pools[0].paired_with is None and ok.pools[0].backend is None
    bad = violations_of(MINIMAL + "        sip_port: null\n")
    assert by_path(bad) == {"pools[0].servers[0].sip_port": "expected an integer, got null"}


# --- strictness ----------------------------------------------------------------------------


def test_backup_pool_is_the_documented_name_of_paired_with() -> None:
    preferred = parse_topology(MINIMAL + "    backup_pool: se2\n").pools[0]
    legacy = parse_topology(MINIMAL + "    paired_with: se2\n").pools[0]
    assert preferred == legacy  # one setting, stored once (DR-1)
    assert (preferred.backup_pool, preferred.paired_with) == ("se2", "se2")
    unpaired = parse_topology(MINIMAL).pools[0]
    assert (unpaired.backup_pool, unpaired.paired_with) == (None, None)


def test_backup_pool_and_paired_with_may_both_be_given_only_with_one_value() -> None:
    same = parse_topology(MINIMAL + "    backup_pool: se2\n    paired_with: se2\n")
    assert same.pools[0].backup_pool == "se2"
    null_alias = parse_topology(MINIMAL + "    backup_pool: null\n    paired_with: se2\n")
    assert null_alias.pools[0].backup_pool == "se2"
    text = MINIMAL + "    backup_pool: se2\n    paired_with: se3\n"
    assert by_path(violations_of(text)) == {
        "pools[0].backup_pool": "backup_pool 'se2' and paired_with 'se3' disagree; paired_with "
                                "is the older name of backup_pool: give only backup_pool"
    }
    result = read_topology("t.yaml", text=text)
    assert result.topology is None  # ambiguous: no model is built from it
    assert [v.line for v in result.violations] == [13]  # the line of backup_pool


def test_a_misspelt_backup_pool_is_guessed() -> None:
    [violation] = violations_of(MINIMAL + "    backup_pol: se2\n")
    assert violation.path == "pools[0].backup_pol"
    assert violation.message.endswith("did you mean 'backup_pool'?")


def test_unknown_key_is_an_error_with_its_path_the_allowed_keys_and_a_guess() -> None:
    [violation] = violations_of(MINIMAL + "        sip_prot: 5070\n")
    assert violation.path == "pools[0].servers[0].sip_prot"
    assert violation.severity == "error"
    assert violation.line == 13
    assert "unknown key 'sip_prot' in server" in violation.message
    assert "allowed: name, address, sip_port, admin_port, site" in violation.message
    assert "did you mean 'sip_port'?" in violation.message


def test_unknown_keys_are_reported_at_every_level() -> None:
    text = MINIMAL.replace("name: t\n", "name: t\nversion: 2\n")
    text = text.replace("  - name: dc1\n", "  - name: dc1\n    tier: 1\n")
    text += "    colour: blue\nsettings:\n  keepalive: 5\n"
    paths = set(by_path(violations_of(text)))
    assert paths == {"version", "sites[0].tier", "pools[0].colour", "settings.keepalive"}


def test_strings_are_never_coerced_to_numbers_or_booleans() -> None:
    text = MINIMAL + '        sip_port: "5060"\n        admin_port: 80.5\n'
    text += "settings:\n  keepalive_seconds: '10'\n  registration_min_expires: 60.0\n"
    found = by_path(violations_of(text))
    assert found == {
        "pools[0].servers[0].sip_port": "expected an integer, got string '5060'",
        "pools[0].servers[0].admin_port": "expected an integer, got number 80.5",
        "settings.keepalive_seconds": "expected a finite number, got string '10'",
        "settings.registration_min_expires": "expected an integer, got number 60.0",
    }


def test_booleans_are_not_numbers_or_strings() -> None:
    # YAML 1.1 reads `yes` and `true` as booleans: they are neither names nor ports.
    text = MINIMAL.replace("name: se1\n    site", "name: yes\n    site")
    text += "        sip_port: true\n"
    found = by_path(violations_of(text))
    assert found == {
        "pools[0].name": "expected a string, got boolean True",
        "pools[0].servers[0].sip_port": "expected an integer, got boolean True",
    }


def test_non_finite_numbers_are_refused() -> None:
    found = by_path(violations_of(MINIMAL + "settings: {heartbeat_seconds: .nan}\n"))
    assert found == {"settings.heartbeat_seconds": "expected a finite number, got number nan"}


def test_enum_values_are_checked_and_listed() -> None:
    text = MINIMAL.replace("role: frontend", "role: front-end")
    text = text.replace("edition: standard", "edition: 2")
    found = by_path(violations_of(text))
    assert found["pools[0].role"] == (
        "'front-end' is not one of: frontend, director, edge, mediation, sba, chat, witness, dns"
    )
    assert found["pools[0].edition"] == "expected one of: standard, enterprise, got number 2"


def test_missing_required_keys_are_errors_at_the_missing_path() -> None:
    text = """\
    sites: [{kind: branch}]
    pools:
      - {name: p, servers: [{name: s}]}
    """
    found = by_path(violations_of(text))
    assert set(found) == {
        "name", "sip_domain", "sites[0].name", "pools[0].site", "pools[0].role",
        "pools[0].servers[0].address",
    }
    assert found["pools[0].role"] == "required key 'role' of pool is missing"


def test_wrong_container_types_are_errors() -> None:
    text = """\
    name: t
    sip_domain: trimaran.test
    sites: {dc1: central}
    pools:
      - just-a-string
    settings: [1, 2]
    """
    found = by_path(violations_of(text))
    assert found == {
        "sites": "expected a list, got a mapping",
        "pools[0]": "expected a mapping (pool), got string 'just-a-string'",
        "settings": "expected a mapping (settings), got a list",
    }


def test_all_loader_errors_are_collected_in_one_go() -> None:
    text = """\
    name: 5
    sip_domain: trimaran.test
    bogus: 1
    sites: [{name: dc1, kind: suburb, rtt_ms: {dc2: fast}}]
    pools:
      - name: se1
        site: dc1
        role: frontend
        servers: [{name: se1, address: 127.0.1.1, sip_port: "x"}, {address: 1.2.3.4}]
        backend: {mirror: {address: 1.2.3.5, port: "5432"}}
    settings: {failure_detection_seconds: "10s"}
    """
    paths = [v.path for v in violations_of(text)]
    assert sorted(paths) == sorted([
        "name", "bogus", "sites[0].kind", "sites[0].rtt_ms.dc2",
        "pools[0].servers[0].sip_port", "pools[0].servers[1].name",
        "pools[0].backend.mirror.port", "settings.failure_detection_seconds",
    ])


def test_error_names_the_source_and_lists_every_violation() -> None:
    with pytest.raises(TopologyError) as caught:
        parse_topology("name: t\n", source="deploy.yaml")
    text = str(caught.value)
    assert text.startswith("deploy.yaml: invalid topology\n")
    assert "error: sip_domain (line 1): required key 'sip_domain' of topology is missing" in text
    assert text.endswith("3 errors, 0 warnings")


# --- YAML safety and syntax ------------------------------------------------------------------


def test_yaml_syntax_error_gives_line_and_column() -> None:
    [violation] = violations_of("name: t\nsites: [a, b\npools: []\n")
    assert violation.path == ""
    assert violation.line == 3
    assert violation.message.startswith("YAML syntax error at column 6:")


def test_aliases_are_refused_so_alias_bombs_cannot_expand() -> None:
    bomb = "a: &a [x, x]\nb: &b [*a, *a]\nc: &c [*b, *b]\nd: [*c, *c]\n"
    [violation] = violations_of(bomb)
    assert "aliases" in violation.message
    assert violation.line == 2


def test_merge_keys_duplicate_keys_and_non_string_keys_are_refused() -> None:
    text = MINIMAL + "name: again\n<<: {x: 1}\n7: seven\n"
    found = violations_of(text)
    assert [(v.path, v.message, v.line) for v in found] == [
        ("name", "duplicate key 'name'", 13),
        ("", "merge keys (<<) are not allowed", 14),
        ("", "mapping keys must be strings", 15),
    ]


def test_python_tags_are_refused() -> None:
    text = MINIMAL.replace("name: t", "name: !!python/object/apply:os.system [ls]")
    found = by_path(violations_of(text))
    tag = "tag:yaml.org,2002:python/object/apply:os.system"
    assert found == {"name": f"unsupported YAML tag '{tag}'"}


def test_explicitly_tagged_garbage_is_a_violation_not_a_crash() -> None:
    found = by_path(violations_of(MINIMAL.replace("name: t", "name: !!int abc")))
    assert found == {"name": "'abc' is not a valid int"}


def test_deep_nesting_is_a_violation_not_a_crash() -> None:
    [violation] = violations_of("x: " + "[" * 2000 + "]" * 2000 + "\n")
    assert violation.message == "YAML is nested too deeply"


def test_oversized_text_is_refused() -> None:
    text = MINIMAL + "#" * MAX_TOPOLOGY_BYTES + "\n"
    [violation] = violations_of(text)
    assert "larger than" in violation.message


def test_empty_document_is_refused() -> None:
    assert [v.message for v in violations_of("# nothing\n")] == ["topology is empty"]


def test_document_that_is_not_a_mapping_is_refused() -> None:
    assert by_path(violations_of("- a\n- b\n")) == {
        "": "expected a mapping (topology), got a list"
    }


# --- files ---------------------------------------------------------------------------


def test_load_from_path_object_and_from_path_string(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(MINIMAL)
    assert load_topology(path) == load_topology(str(path)) == parse_topology(MINIMAL)


def test_load_topology_treats_multi_line_strings_as_yaml_text() -> None:
    assert load_topology(MINIMAL) == parse_topology(MINIMAL)


def test_missing_file_is_a_topology_error(tmp_path: Path) -> None:
    with pytest.raises(TopologyError) as caught:
        load_topology(tmp_path / "absent.yaml")
    [violation] = caught.value.violations
    assert violation.message.startswith("cannot read ")
    assert caught.value.source.endswith("absent.yaml")


def test_oversized_file_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_bytes(b"#" * (MAX_TOPOLOGY_BYTES + 10))
    result = read_topology(path)
    assert result.topology is None
    assert [v.message for v in result.violations] == [
        f"topology is larger than {MAX_TOPOLOGY_BYTES} bytes"
    ]


def test_non_utf8_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(MINIMAL.replace("name: t", "name: caf\xe9").encode("latin-1"))
    [violation] = read_topology(path).violations
    assert violation.message == "topology is not UTF-8 (byte 9)"


def test_read_topology_keeps_the_model_when_only_unknown_keys_are_wrong() -> None:
    result = read_topology("<t>", text=MINIMAL + "    colour: blue\n")
    assert result.topology == parse_topology(MINIMAL)
    assert [v.path for v in result.violations] == ["pools[0].colour"]
    assert result.line_of("pools[0].servers[0].address") == 12
    assert result.line_of("pools[0].paired_with") == 6  # absent: the pool's line


def test_read_topology_has_no_model_when_a_value_is_wrong() -> None:
    result = read_topology("<t>", text=MINIMAL + "        sip_port: x\n")
    assert result.topology is None


# --- fuzz: only TopologyError escapes ------------------------------------------------------


_names = st.sampled_from(["dc1", "dc2", "b1", "se1", "se2", "fe1", "x", "", "a b"])
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 70_000), st.floats(allow_nan=True), _names,
    st.sampled_from(["127.0.1.1", "::1", "0.0.0.0", "frontend", "enterprise", "branch"]),
)
_servers = st.lists(st.fixed_dictionaries(
    {"name": _names, "address": _scalars},
    optional={"sip_port": _scalars, "admin_port": _scalars, "site": _names},
), max_size=3)
_backend = st.fixed_dictionaries({}, optional={
    "principal": st.fixed_dictionaries({"address": _scalars}, optional={"site": _names}),
    "mirror": st.fixed_dictionaries({"address": _scalars}),
    "witness": st.fixed_dictionaries({}, optional={"server": _names, "address": _scalars,
                                                   "port": _scalars, "site": _names}),
})
_pools = st.lists(st.fixed_dictionaries(
    {"name": _names, "site": _names,
     "role": st.sampled_from(["frontend", "director", "edge", "sba", "chat", "witness"]),
     "servers": _servers},
    optional={"edition": st.sampled_from(["standard", "enterprise"]), "paired_with": _names,
              "backup_pool": _names,
              "backup_registrar": _names, "backend": _backend, "next_hop": _names,
              "expected_users": _scalars, "active_servers": st.lists(_names, max_size=5),
              "capacity": st.fixed_dictionaries({}, optional={"users_per_server": _scalars})},
), max_size=4)
_documents = st.fixed_dictionaries(
    {"name": _names, "sip_domain": st.sampled_from(["trimaran.test", "x", "-"]),
     "sites": st.lists(st.fixed_dictionaries(
         {"name": _names},
         optional={"kind": st.sampled_from(["central", "branch"]), "metro": _names,
                   "rtt_ms": st.dictionaries(_names, _scalars, max_size=2)}), max_size=3),
     "pools": _pools},
    optional={"settings": st.dictionaries(
        st.sampled_from(["failure_detection_seconds", "heartbeat_seconds",
                         "registration_min_expires", "bogus"]), _scalars, max_size=3),
        "federation_route": _names},
)


@settings(max_examples=100, deadline=None)
@given(_documents)
def test_any_structured_document_gives_violations_never_a_crash(document: object) -> None:
    violations = validate_text(yaml.safe_dump(document))
    assert all(isinstance(v, Violation) for v in violations)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_text_loads_or_raises_topology_error(text: str) -> None:
    try:
        parse_topology(text)
    except TopologyError as exc:
        assert exc.violations
