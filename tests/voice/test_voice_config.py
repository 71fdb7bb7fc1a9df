"""The Enterprise Voice configuration (SPEC EV-1, EV-3, EV-5): the strict loader of the
``voice:`` section (in a topology or on its own), its YAML round trip, and every rule,
each asserted by the path and message of its violation."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path
from typing import Any

import pytest

from trimaran.topology import TopologyError, parse_topology, validate_text
from trimaran.topology.errors import Violation
from trimaran.topology.voice_loader import dump_voice, read_voice
from trimaran.topology.voice_rules import validate_voice
from trimaran.voice.model import (
    DialPlan,
    Gateway,
    GatewayTransport,
    NormalizationRule,
    Route,
    SiteVoice,
    Trunk,
    UserVoice,
    VoiceConfig,
    VoicePolicy,
)

# A deployment with a mediation pool med1 in dc1 (its next hop the Front End pool se1)
# and an SBA in branch b1.
TOPOLOGY = """\
name: voice
sip_domain: example.com
sites:
  - {name: dc1}
  - {name: dc2}
  - {name: b1, kind: branch}
pools:
  - {name: se1, site: dc1, role: frontend, edition: standard, paired_with: se2,
     servers: [{name: se1, address: 127.0.26.1}]}
  - {name: se2, site: dc2, role: frontend, edition: standard, paired_with: se1,
     servers: [{name: se2, address: 127.0.26.2}]}
  - {name: med1, site: dc1, role: mediation, next_hop: se1,
     servers: [{name: med1a, address: 127.0.26.11}, {name: med1b, address: 127.0.26.12}]}
  - {name: sba1, site: b1, role: sba, backup_registrar: se1,
     servers: [{name: sba1, address: 127.0.26.21}]}
"""

VOICE = r"""
voice:
  fast_failover_seconds: 10
  probe_interval_seconds: 5
  probe_timeout_seconds: 2
  gateways:
    - {name: gw-dc1a, address: 127.0.26.50, port: 5060, transport: udp, site: dc1}
    - {name: gw-dc1b, address: 127.0.26.51, port: 5070, transport: tcp, site: dc1}
    - {name: gw-b1, address: 127.0.26.60, site: b1}
  trunks:
    - {name: dc1a, mediation_pool: med1, gateway: gw-dc1a}
    - {name: dc1b, mediation_pool: med1, gateway: gw-dc1b}
    - {name: b1, mediation_pool: sba1, gateway: gw-b1}
  routes:
    - {name: local, pattern: '^\+1425\d{7}$', usages: [local], trunks: [dc1a, dc1b]}
    - {name: national, pattern: '^\+1\d{10}$', usages: [national], trunks: [dc1b, dc1a]}
    - {name: branch, pattern: '^\+1\d{10}$', usages: [branch], trunks: [b1, dc1a]}
  voice_policies:
    - {name: default, usages: [local, national]}
    - {name: branch, usages: [branch, national]}
  dial_plans:
    - name: redmond
      rules:
        - {name: extension, pattern: '^(\d{5})$', translation: '+14255550100;ext=$1'}
        - {name: national, pattern: '^1?(\d{10})$', translation: '+1$1'}
        - {name: international, pattern: '^011(\d{7,15})$', translation: '+$1'}
  default_dial_plan: redmond
  default_voice_policy: default
  sites:
    - {site: b1, voice_policy: branch}
  users:
    - {user: 'sip:alice@example.com', voice_policy: branch, dial_plan: redmond}
"""

TOPO = parse_topology(TOPOLOGY)
_WITH_VOICE = parse_topology(TOPOLOGY + VOICE).voice
assert _WITH_VOICE is not None
VALID: VoiceConfig = _WITH_VOICE

Found = list[tuple[str, str, str]]


def found(violations: list[Violation]) -> Found:
    """(path, severity, message) of every violation, in order."""
    return [(v.path, v.severity, v.message) for v in violations]


def check(config: VoiceConfig) -> Found:
    """Every voice rule violation of `config` used with the test topology."""
    return found(validate_voice(config, TOPO))


def change(config: VoiceConfig, field: str, index: int, **changes: Any) -> VoiceConfig:
    """`config` with the element `index` of its tuple `field` changed."""
    items = list(getattr(config, field))
    items[index] = dataclasses.replace(items[index], **changes)
    replaced: dict[str, Any] = {field: tuple(items)}
    return dataclasses.replace(config, **replaced)


def add(config: VoiceConfig, field: str, *entries: object) -> VoiceConfig:
    """`config` with `entries` appended to its tuple `field`."""
    extended: dict[str, Any] = {field: (*getattr(config, field), *entries)}
    return dataclasses.replace(config, **extended)


def loader_errors(voice_yaml: str) -> Found:
    """The loader's violations of a standalone voice document."""
    return found(list(read_voice("voice.yaml", text=textwrap.dedent(voice_yaml)).violations))


# --- a full example (EV-1) -----------------------------------------------------------------


def test_ev1_a_full_voice_section_loads_with_defaults_and_is_valid() -> None:
    """EV-1: every key of the section is read; omitted ones take their defaults."""
    assert validate_text(TOPOLOGY + VOICE) == []
    assert VALID.gateway("gw-b1") == Gateway("gw-b1", "127.0.26.60", 5060,
                                             GatewayTransport.UDP, "b1")
    assert VALID.gateway("gw-dc1b").endpoint == ("127.0.26.51", 5070)
    assert VALID.route("local") == Route("local", r"^\+1425\d{7}$", ("dc1a", "dc1b"),
                                         ("local",))
    assert VALID.dial_plan("redmond").rule("national").translation == "+1$1"
    assert VALID.users == (UserVoice("sip:alice@example.com", "redmond", "branch"),)
    assert VALID.sites == (SiteVoice("b1", None, "branch"),)
    assert (VALID.fast_failover_seconds, VALID.probe_interval_seconds,
            VALID.probe_timeout_seconds) == (10.0, 5.0, 2.0)
    assert VALID.usages == ("local", "national", "branch")
    assert [t.name for t in VALID.trunks_of_pool("med1")] == ["dc1a", "dc1b"]
    assert VALID.gateways_of_pool("sba1") == (VALID.gateway("gw-b1"),)
    with pytest.raises(KeyError):
        VALID.trunk("nope")


def test_ev1_a_topology_without_voice_section_has_none() -> None:
    """EV-1: the section is optional; `voice: null` is the same as leaving it out."""
    assert TOPO.voice is None
    assert parse_topology(TOPOLOGY + "voice: null\n").voice is None
    assert parse_topology(TOPOLOGY + "voice: {}\n").voice == VoiceConfig()


def test_ev1_the_section_round_trips_through_dump_voice_and_read_voice() -> None:
    """EV-1: the CMS document written by dump_voice loads back to an equal config."""
    text = dump_voice(VALID)
    loaded = read_voice("<cms>", text=text)
    assert loaded.violations == ()
    assert loaded.config == VALID
    assert text.startswith("fast_failover_seconds: 10.0\n")


def test_ev1_awkward_strings_survive_the_round_trip() -> None:
    """EV-1: YAML-special strings (numbers, booleans, quotes, '#', '$', non-ASCII)
    are written so that they load back as the same strings."""
    tricky = VoiceConfig(
        gateways=(Gateway("5060", "::1", 5061, GatewayTransport.TCP),),
        trunks=(Trunk("yes", "null", "5060"),),
        routes=(Route("~", r"^\+1 #'\"$", ("yes",), ("on", "1.5")),),
        voice_policies=(VoicePolicy("true", ()),),
        dial_plans=(DialPlan("plan: x", (NormalizationRule("é", r"^(\d+)$", "+$$1 $1"),)),
                    DialPlan("empty")),
        default_voice_policy="true",
        users=(UserVoice("sip:bob@example.com"),),
        fast_failover_seconds=0.5,
    )
    loaded = read_voice("<cms>", text=dump_voice(tricky))
    assert loaded.violations == ()
    assert loaded.config == tricky


def test_ev1_a_voice_file_is_read_with_paths_and_lines_under_voice(tmp_path: Path) -> None:
    """EV-1: `trimaran voice publish FILE` reads the section on its own (its top level
    is the mapping); paths start with 'voice.' and lines are those of the file."""
    body = textwrap.dedent(VOICE).split("voice:\n", 1)[1]
    path = tmp_path / "voice.yaml"
    path.write_text(textwrap.dedent(body).replace("port: 5070", "port: '5070'"))
    loaded = read_voice(path)
    assert loaded.config is None
    assert found(list(loaded.violations)) == [
        ("voice.gateways[1].port", "error", "expected an integer, got string '5070'"),
    ]
    assert loaded.violations[0].line == 6
    assert loaded.line_of("voice.gateways[1].port") == 6
    assert loaded.source == str(path)
    good = tmp_path / "good.yaml"
    good.write_text(textwrap.dedent(body))
    assert read_voice(good).config == VALID
    assert read_voice(str(good)).config == VALID


def test_ev1_a_missing_voice_file_is_a_violation_not_an_exception(tmp_path: Path) -> None:
    """EV-1: the loader never raises for bad input."""
    loaded = read_voice(tmp_path / "absent.yaml")
    assert loaded.config is None
    [violation] = loaded.violations
    assert violation.path == "voice" and violation.message.startswith("cannot read ")


# --- strict loading (EV-1) ------------------------------------------------------------------

LOADER_CASES = [
    ("unknown key",
     "gateways: [{name: g, address: 127.0.0.9, colour: red}]",
     [("voice.gateways[0].colour", "error",
       "unknown key 'colour' in gateway (allowed: name, address, port, transport, site)")]),
    ("misspelt key with a hint",
     "voice_policy: [{name: p, usages: [a]}]",
     [("voice.voice_policy", "error",
       "unknown key 'voice_policy' in voice configuration (allowed: fast_failover_seconds, "
       "probe_interval_seconds, probe_timeout_seconds, gateways, trunks, routes, "
       "voice_policies, dial_plans, default_dial_plan, default_voice_policy, sites, users); "
       "did you mean 'voice_policies'?")]),
    ("string port",
     "gateways: [{name: g, address: 127.0.0.9, port: '5060'}]",
     [("voice.gateways[0].port", "error", "expected an integer, got string '5060'")]),
    ("unknown transport",
     "gateways: [{name: g, address: 127.0.0.9, transport: tls}]",
     [("voice.gateways[0].transport", "error", "'tls' is not one of: udp, tcp")]),
    ("missing required key",
     "trunks: [{name: t, mediation_pool: med1}]",
     [("voice.trunks[0].gateway", "error", "required key 'gateway' of trunk is missing")]),
    ("number in a list of names",
     "routes: [{name: r, pattern: x, usages: [local], trunks: [dc1a, 5]}]",
     [("voice.routes[0].trunks[1]", "error", "expected a string, got number 5")]),
    ("scalar instead of a list",
     "routes: [{name: r, pattern: x, usages: local, trunks: [t]}]",
     [("voice.routes[0].usages", "error", "expected a list of strings, got string 'local'")]),
    ("string timer",
     "fast_failover_seconds: '10'",
     [("voice.fast_failover_seconds", "error", "expected a finite number, got string '10'")]),
    ("boolean is not a number",
     "probe_interval_seconds: true",
     [("voice.probe_interval_seconds", "error",
       "expected a finite number, got boolean True")]),
    ("rules must be a list of mappings",
     "dial_plans: [{name: d, rules: [x]}]",
     [("voice.dial_plans[0].rules[0]", "error",
       "expected a mapping (normalization rule), got string 'x'")]),
    ("user entry without its user",
     "users: [{voice_policy: p}]",
     [("voice.users[0].user", "error", "required key 'user' of user voice assignment is "
       "missing")]),
    ("site entry with an unknown key",
     "sites: [{site: b1, policy: p}]",
     [("voice.sites[0].policy", "error",
       "unknown key 'policy' in site voice assignment (allowed: site, dial_plan, "
       "voice_policy); did you mean 'voice_policy'?")]),
]


@pytest.mark.parametrize(("case", "voice_yaml", "expected"), LOADER_CASES,
                         ids=[c[0] for c in LOADER_CASES])
def test_ev1_bad_structure_is_reported_at_its_path_never_coerced(
        case: str, voice_yaml: str, expected: Found) -> None:
    """EV-1: unknown keys, wrong types, missing keys: one violation each, with its path,
    the same in a standalone file and in a topology's voice section."""
    assert loader_errors(voice_yaml) == expected
    with pytest.raises(TopologyError) as caught:
        parse_topology(TOPOLOGY + "voice:\n" + textwrap.indent(voice_yaml, "  ") + "\n")
    assert found(caught.value.violations) == expected


def test_ev1_unknown_keys_do_not_stop_the_rules_from_running() -> None:
    """EV-1: like the rest of the topology, an unknown key is reported with the rules'
    violations in one pass, each with its line."""
    text = TOPOLOGY + VOICE.replace("transport: udp, site: dc1}", "transport: udp, site: dc9,"
                                    " colour: red}")
    violations = validate_text(text)
    assert found(violations) == [
        ("voice.gateways[0].colour", "error",
         "unknown key 'colour' in gateway (allowed: name, address, port, transport, site)"),
        ("voice.gateways[0].site", "error", "unknown site 'dc9'"),
    ]
    assert violations[1].line == text.splitlines().index(
        "    - {name: gw-dc1a, address: 127.0.26.50, port: 5060, transport: udp, site: dc9,"
        " colour: red}") + 1


def test_ev1_the_voice_document_itself_must_be_a_mapping_without_aliases() -> None:
    """EV-1: a list, an empty document and YAML aliases are refused at path 'voice'."""
    assert loader_errors("- a\n") == [
        ("voice", "error", "expected a mapping (voice configuration), got a list")]
    assert loader_errors("# nothing\n") == [("voice", "error", "voice configuration is empty")]
    [(path, _, message)] = loader_errors("a: &x [1]\nb: *x\n")
    assert path == "voice"
    assert "YAML aliases (*name) are not allowed in a voice configuration" in message


# --- names (EV-1) ----------------------------------------------------------------------------

DUPLICATES = [
    ("gateways", Gateway("gw-dc1a", "127.0.26.59"), "voice.gateways[3].name",
     "duplicate gateway name 'gw-dc1a' (first at voice.gateways[0].name)"),
    ("trunks", Trunk("dc1a", "med1", "gw-dc1b"), "voice.trunks[3].name",
     "duplicate trunk name 'dc1a' (first at voice.trunks[0].name)"),
    ("routes", Route("Local", r"^\+1206\d{7}$", ("dc1a",), ("local",)), "voice.routes[3].name",
     "duplicate route name 'Local' (first at voice.routes[0].name)"),
    ("voice_policies", VoicePolicy("default", ("local",)), "voice.voice_policies[2].name",
     "duplicate voice policy name 'default' (first at voice.voice_policies[0].name)"),
    ("dial_plans", DialPlan("redmond"), "voice.dial_plans[1].name",
     "duplicate dial plan name 'redmond' (first at voice.dial_plans[0].name)"),
    ("sites", SiteVoice("b1", dial_plan="redmond"), "voice.sites[1].site",
     "duplicate site entry 'b1' (first at voice.sites[0].site)"),
    ("users", UserVoice("sip:alice@EXAMPLE.com", voice_policy="default"), "voice.users[1].user",
     "duplicate user entry 'sip:alice@EXAMPLE.com' (first at voice.users[0].user)"),
]


@pytest.mark.parametrize(("field", "entry", "path", "message"), DUPLICATES,
                         ids=[d[0] for d in DUPLICATES])
def test_ev1_names_and_entries_are_unique_ignoring_case(
        field: str, entry: object, path: str, message: str) -> None:
    """EV-1: a second element with a name (or site, or user) already used is an error."""
    assert check(add(VALID, field, entry)) == [(path, "error", message)]


def test_ev1_rule_names_are_unique_within_a_dial_plan() -> None:
    """EV-1: two rules of one plan cannot share a name (plans may reuse each other's)."""
    plan = VALID.dial_plans[0]
    twice = dataclasses.replace(plan, rules=(*plan.rules, NormalizationRule(
        "National", r"^(\d{7})$", "+1425$1")))
    assert check(dataclasses.replace(VALID, dial_plans=(twice,))) == [
        ("voice.dial_plans[0].rules[3].name", "error",
         "duplicate rule name 'National' (first at voice.dial_plans[0].rules[1].name)")]
    other = DialPlan("other", (NormalizationRule("national", r"^(\d{10})$", "+1$1"),))
    assert check(add(VALID, "dial_plans", other)) == []


# --- gateways (EV-1, EV-3) -------------------------------------------------------------------

GATEWAY_CASES = [
    ({"address": "gw.example.com"}, "voice.gateways[0].address",
     "'gw.example.com' is not an IP address literal (gateway gw-dc1a)"),
    ({"address": "0.0.0.0"}, "voice.gateways[0].address",
     "0.0.0.0 cannot be a gateway's address (gateway gw-dc1a)"),
    ({"address": "224.0.0.1"}, "voice.gateways[0].address",
     "224.0.0.1 cannot be a gateway's address (gateway gw-dc1a)"),
    ({"port": 0}, "voice.gateways[0].port", "port 0 is not in 1..65535 (gateway gw-dc1a)"),
    ({"port": 65536}, "voice.gateways[0].port",
     "port 65536 is not in 1..65535 (gateway gw-dc1a)"),
    ({"address": "127.0.26.1"}, "voice.gateways[0].address",
     "127.0.26.1:5060 (gateway gw-dc1a) is already used by SIP of server se1 at "
     "pools[0].servers[0].sip_port"),
    ({"address": "127.0.26.11", "port": 8080}, "voice.gateways[0].address",
     "127.0.26.11:8080 (gateway gw-dc1a) is already used by admin API of server med1a at "
     "pools[2].servers[0].admin_port"),
    ({"site": "dc9"}, "voice.gateways[0].site", "unknown site 'dc9'"),
]


@pytest.mark.parametrize(("changes", "path", "message"), GATEWAY_CASES)
def test_ev1_a_gateway_is_an_ip_and_port_of_its_own(
        changes: dict[str, Any], path: str, message: str) -> None:
    """EV-1: an IP literal a peer can send to, a port in 1..65535, an endpoint no server
    of the topology listens on, a known site."""
    assert check(change(VALID, "gateways", 0, **changes)) == [(path, "error", message)]


def test_ev1_any_ip_literal_is_a_gateway_address() -> None:
    """EV-1: not only 127.0.0.0/8: any unicast IPv4 or IPv6 literal."""
    assert check(change(VALID, "gateways", 0, address="192.0.2.10")) == []
    assert check(change(VALID, "gateways", 0, address="2001:db8::10")) == []


def test_ev1_two_gateways_cannot_share_an_endpoint() -> None:
    """EV-1: a second gateway on the same address and port is an error."""
    config = change(VALID, "gateways", 1, port=5060, address="127.0.26.50")
    assert check(config) == [
        ("voice.gateways[1].address", "error",
         "127.0.26.50:5060 (gateway gw-dc1b) is already used by gateway gw-dc1a at "
         "voice.gateways[0]")]
    assert check(change(VALID, "gateways", 1, port=5061, address="127.0.26.50")) == []


def test_ev1_a_gateway_no_trunk_uses_is_a_warning() -> None:
    """EV-1: a gateway no trunk names carries no call."""
    config = add(VALID, "gateways", Gateway("gw-spare", "127.0.26.70"))
    assert check(config) == [
        ("voice.gateways[3]", "warning", "gateway gw-spare is used by no trunk")]


# --- trunks (EV-1, EV-5) ---------------------------------------------------------------------


def test_ev1_a_trunk_starts_at_a_mediation_pool_or_sba_and_ends_at_a_known_gateway() -> None:
    """EV-1: trunk = mediation pool (or SBA) + gateway, both existing."""
    assert check(change(VALID, "trunks", 0, mediation_pool="se1")) == [
        ("voice.trunks[0].mediation_pool", "error",
         "se1 is a frontend pool, not a mediation pool or SBA")]
    assert check(change(VALID, "trunks", 0, mediation_pool="med9")) == [
        ("voice.trunks[0].mediation_pool", "error", "unknown pool 'med9'")]
    assert check(change(VALID, "trunks", 0, gateway="gw-x")) == [
        ("voice.gateways[0]", "warning", "gateway gw-dc1a is used by no trunk"),
        ("voice.trunks[0].gateway", "error", "unknown gateway 'gw-x'")]


def test_ev1_a_mediation_pool_carrying_a_trunk_needs_a_front_end_next_hop() -> None:
    """EV-1: inbound PSTN calls go from the mediation pool to its next hop, a Front End
    pool; a next hop may be set on a mediation pool (not only on an Edge pool)."""
    no_hop = TOPOLOGY.replace(" next_hop: se1,", "")
    assert found(validate_voice(VALID, parse_topology(no_hop))) == [
        ("pools[2].next_hop", "error", "mediation pool med1 carries trunk dc1a but has no "
         "next hop (the Front End pool it hands PSTN calls to)")]
    assert validate_text(no_hop) == []   # no voice configuration: no trunk, no need
    wrong_hop = TOPOLOGY.replace("next_hop: se1", "next_hop: sba1")
    assert found(validate_text(wrong_hop)) == [
        ("pools[2].next_hop", "error",
         "next hop sba1 is a sba pool; a mediation pool hands calls to a Front End pool")]
    director = TOPOLOGY.replace("role: mediation", "role: director")
    assert ("pools[2].next_hop", "error",
            "next_hop does not apply to a director pool (only: edge, mediation)") \
        in found(validate_text(director))


def test_ev5_an_sba_trunk_to_a_gateway_in_another_site_is_a_warning() -> None:
    """EV-5: a branch keeps PSTN calls with its WAN down only through a local gateway."""
    config = change(VALID, "gateways", 2, site="dc1")
    assert check(config) == [
        ("voice.trunks[2].gateway", "warning", "gateway gw-b1 is in site dc1 but SBA sba1 is "
         "in site b1: the branch loses this trunk when its WAN link is down")]
    assert check(change(VALID, "gateways", 2, site=None)) == []


# --- routes and voice policies (EV-1) --------------------------------------------------------


def test_ev1_a_route_needs_a_trunk_and_its_trunks_must_exist() -> None:
    """EV-1: a route without trunk goes nowhere; each trunk it names exists, once."""
    assert check(change(VALID, "routes", 0, trunks=())) == [
        ("voice.routes[0].trunks", "error", "route without trunk")]
    assert check(change(VALID, "routes", 0, trunks=("dc1a", "zz", "dc1a"))) == [
        ("voice.routes[0].trunks[1]", "error", "unknown trunk 'zz'"),
        ("voice.routes[0].trunks[2]", "warning", "trunk dc1a is listed twice")]


def test_ev1_a_route_needs_a_usage() -> None:
    """EV-1: a route is chosen through a usage; without one nothing can reach it (and a
    policy naming the usage it had now names an unknown usage)."""
    assert check(change(VALID, "routes", 0, usages=())) == [
        ("voice.routes[0].usages", "error", "route without usage"),
        ("voice.voice_policies[0].usages[0]", "error",
         "unknown usage 'local' (no route has it)")]


def test_ev1_a_route_pattern_must_compile() -> None:
    """EV-1: the re error is the message."""
    assert check(change(VALID, "routes", 0, pattern=r"^(\+1")) == [
        ("voice.routes[0].pattern", "error",
         "invalid pattern: missing ), unterminated subpattern at position 1")]


def test_ev1_a_route_no_voice_policy_reaches_is_a_warning() -> None:
    """EV-1: a route whose usages no policy lists is unreachable."""
    config = add(VALID, "routes", Route("premium", r"^\+1900\d{7}$", ("dc1a",),
                                        ("premium", "toll")))
    assert check(config) == [
        ("voice.routes[3].usages", "warning",
         "unreachable: no voice policy uses usage(s) premium, toll")]


def test_ev1_a_route_with_an_earlier_routes_pattern_and_usage_is_shadowed() -> None:
    """EV-1: same pattern and a shared usage as an earlier route: that one's trunks are
    always tried first (same pattern, other usages: not shadowed)."""
    config = add(VALID, "routes", Route("national2", r"^\+1\d{10}$", ("dc1a",),
                                        ("local", "national")))
    assert check(config) == [
        ("voice.routes[3].pattern", "warning", "shadowed: route national (voice.routes[1]) "
         "has the same pattern and usage national and comes first")]


def test_ev1_a_voice_policy_names_only_usages_some_route_has() -> None:
    """EV-1: a usage no route has would route nothing; each usage once."""
    assert check(change(VALID, "voice_policies", 0, usages=("local", "mobile", "local"))) == [
        ("voice.voice_policies[0].usages[1]", "error",
         "unknown usage 'mobile' (no route has it)"),
        ("voice.voice_policies[0].usages[2]", "warning", "usage local is listed twice")]


def test_ev1_a_voice_policy_needs_a_usage() -> None:
    """EV-1: a policy without usage allows no PSTN call (its routes become unreachable)."""
    assert check(change(VALID, "voice_policies", 0, usages=())) == [
        ("voice.routes[0].usages", "warning", "unreachable: no voice policy uses usage(s) "
         "local"),
        ("voice.voice_policies[0].usages", "error", "voice policy without usage")]


# --- dial plans (EV-1) -----------------------------------------------------------------------

RULE_CASES = [
    ({"pattern": r"^(\d{5}$"}, "voice.dial_plans[0].rules[0].pattern", "error",
     "invalid pattern: missing ), unterminated subpattern at position 1"),
    ({"pattern": r"^(\d{3})(\d{7})$", "translation": "+1$1$3"},
     "voice.dial_plans[0].rules[0].translation", "error",
     "translation uses $3 but the pattern has 2 group(s)"),
    ({"translation": "+1$x"}, "voice.dial_plans[0].rules[0].translation", "error",
     "invalid translation: '$' at position 3 must be followed by a group number 1-9 or "
     "by '$'"),
    ({"translation": "1425555$1"}, "voice.dial_plans[0].rules[0].translation", "warning",
     "translation '1425555$1' cannot give an E.164 number (it should start with '+' and a "
     "digit or a group)"),
    ({"translation": "$1"}, "voice.dial_plans[0].rules[0].translation", "warning",
     "translation '$1' cannot give an E.164 number (it should start with '+' and a digit "
     "or a group)"),
    ({"pattern": r"^1?(\d{10})$"}, "voice.dial_plans[0].rules[1].pattern", "warning",
     "shadowed: rule extension (voice.dial_plans[0].rules[0]) has the same pattern and "
     "comes first"),
]


@pytest.mark.parametrize(("changes", "path", "severity", "message"), RULE_CASES)
def test_ev1_normalization_rules_compile_use_their_groups_and_give_e164(
        changes: dict[str, Any], path: str, severity: str, message: str) -> None:
    """EV-1: a rule's pattern compiles, its translation refers only to groups the pattern
    has; a rule after one with the same pattern never applies; a translation that does
    not start with '+' and a digit or a group cannot give an E.164 number."""
    plan = VALID.dial_plans[0]
    rules = list(plan.rules)
    rules[0] = dataclasses.replace(rules[0], **changes)
    config = dataclasses.replace(VALID, dial_plans=(dataclasses.replace(
        plan, rules=tuple(rules)),))
    assert check(config) == [(path, severity, message)]


def test_ev1_translations_starting_with_plus_and_a_group_are_e164() -> None:
    """EV-1: '+$1' (international) and '+1$1' are fine; '$$' is a literal dollar."""
    rule = NormalizationRule("x", r"^(\d+)$", "+$1$$")
    assert check(add(VALID, "dial_plans", DialPlan("other", (rule,)))) == []


# --- assignments (EV-1) ------------------------------------------------------------------------

ASSIGNMENT_CASES = [
    (dataclasses.replace(VALID, default_dial_plan="nyc"), "voice.default_dial_plan", "error",
     "unknown dial plan 'nyc'"),
    (dataclasses.replace(VALID, default_voice_policy="gold"), "voice.default_voice_policy",
     "error", "unknown voice policy 'gold'"),
    (change(VALID, "sites", 0, site="b9"), "voice.sites[0].site", "error",
     "unknown site 'b9'"),
    (change(VALID, "sites", 0, dial_plan="nyc"), "voice.sites[0].dial_plan", "error",
     "unknown dial plan 'nyc'"),
    (change(VALID, "sites", 0, voice_policy="gold"), "voice.sites[0].voice_policy", "error",
     "unknown voice policy 'gold'"),
    (change(VALID, "users", 0, dial_plan="nyc"), "voice.users[0].dial_plan", "error",
     "unknown dial plan 'nyc'"),
    (change(VALID, "users", 0, voice_policy="gold"), "voice.users[0].voice_policy", "error",
     "unknown voice policy 'gold'"),
    (change(VALID, "users", 0, user="sip:alice@other.com"), "voice.users[0].user", "error",
     "'sip:alice@other.com' is not a user of example.com (expected sip:name@example.com)"),
    (change(VALID, "users", 0, user="alice"), "voice.users[0].user", "error",
     "'alice' is not a user of example.com (expected sip:name@example.com)"),
    (change(VALID, "users", 0, user="sip:@example.com"), "voice.users[0].user", "error",
     "'sip:@example.com' is not a user of example.com (expected sip:name@example.com)"),
    (change(VALID, "sites", 0, voice_policy=None), "voice.sites[0]", "warning",
     "the entry of site b1 assigns neither a dial plan nor a voice policy"),
    (change(VALID, "users", 0, voice_policy=None, dial_plan=None), "voice.users[0]",
     "warning", "the entry of user sip:alice@example.com assigns neither a dial plan nor a "
     "voice policy"),
]


@pytest.mark.parametrize(("config", "path", "severity", "message"), ASSIGNMENT_CASES)
def test_ev1_assignments_name_existing_plans_policies_sites_and_users(
        config: VoiceConfig, path: str, severity: str, message: str) -> None:
    """EV-1: defaults, site entries and user entries refer to plans and policies of the
    configuration, sites of the topology, users of its SIP domain."""
    assert check(config) == [(path, severity, message)]


def test_ev1_a_user_aor_domain_is_compared_without_case() -> None:
    """EV-1: sip:alice@EXAMPLE.COM is a user of example.com."""
    assert check(change(VALID, "users", 0, user="sip:alice@EXAMPLE.COM")) == []


# --- timers (EV-3) ---------------------------------------------------------------------------

TIMER_CASES = [
    ({"fast_failover_seconds": 0.0}, "voice.fast_failover_seconds",
     "fast_failover_seconds must be more than 0 and at most 60, got 0"),
    ({"fast_failover_seconds": 61.0}, "voice.fast_failover_seconds",
     "fast_failover_seconds must be more than 0 and at most 60, got 61"),
    ({"probe_interval_seconds": 0.0}, "voice.probe_interval_seconds",
     "probe_interval_seconds must be positive, got 0"),
    ({"probe_timeout_seconds": -1.0}, "voice.probe_timeout_seconds",
     "probe_timeout_seconds must be positive, got -1"),
    ({"probe_timeout_seconds": 5.0}, "voice.probe_timeout_seconds",
     "probe timeout (5 s) must be shorter than the probe interval (5 s)"),
]


@pytest.mark.parametrize(("changes", "path", "message"), TIMER_CASES)
def test_ev3_failover_and_probe_timers_are_bounded(
        changes: dict[str, Any], path: str, message: str) -> None:
    """EV-3: fast failover in (0, 60] s (model: 10 s); probes every positive interval,
    each timing out before the next one."""
    assert check(dataclasses.replace(VALID, **changes)) == [(path, "error", message)]


def test_ev3_sixty_seconds_of_fast_failover_is_the_limit() -> None:
    """EV-3: the upper bound is included."""
    assert check(dataclasses.replace(VALID, fast_failover_seconds=60.0)) == []


def test_ev1_voice_rules_run_with_the_topologys_rules() -> None:
    """EV-1: `trimaran topology validate` reports the voice rules, with lines."""
    text = TOPOLOGY + VOICE.replace("trunks: [dc1a, dc1b]}", "trunks: []}")
    [violation] = validate_text(text)
    assert (violation.path, violation.message) == ("voice.routes[0].trunks",
                                                   "route without trunk")
    assert violation.line == text.splitlines().index(
        r"    - {name: local, pattern: '^\+1425\d{7}$', usages: [local], trunks: []}") + 1
