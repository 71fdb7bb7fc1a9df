"""The call-management applications' configuration (SPEC APP-1..APP-7): the strict
loader of the ``apps`` document, its YAML round trip, and every rule, each asserted by
the path and message of its violation."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path
from typing import Any

import pytest

from trimaran.apps.loader import apps_data, dump_apps, read_apps
from trimaran.apps.model import (
    Action,
    AgentGroup,
    AppsConfig,
    Audio,
    BusinessHours,
    CallAction,
    CallPark,
    GroupPickup,
    Holiday,
    NumberRange,
    PickupGroup,
    Queue,
    RoutingMethod,
    TimeWindow,
    UnassignedRange,
    Workflow,
)
from trimaran.apps.rules import validate_apps
from trimaran.topology import parse_topology
from trimaran.topology.errors import Violation

# Two paired Standard Edition Front End pools, fe1 in dc1 and fe2 in dc2.
TOPOLOGY = """\
name: apps
sip_domain: trimaran.test
sites:
  - {name: dc1}
  - {name: dc2}
pools:
  - {name: fe1, site: dc1, role: frontend, edition: standard, backup_pool: fe2,
     servers: [{name: fe1, address: 127.0.27.1}]}
  - {name: fe2, site: dc2, role: frontend, edition: standard, backup_pool: fe1,
     servers: [{name: fe2, address: 127.0.27.2}]}
"""

WELCOME = "280d44ab1e9f79b5cce2dd4f58f5fe91f0fbacdac9f7447dffc318ceb79f2d02"
CLOSED = "c3eefb58d7c42440a9d4abec51d629544d635a6d936ff3c4d3fca96d611b3cf3"
MUSIC = "80f189984e5ca70287d13342f6daa0db45cba3c131c4e46dc81360f3a4c4f690"

APPS = f"""\
audio:
  - {{name: welcome, sha256: {WELCOME}}}
  - {{name: closed, sha256: {CLOSED}}}
  - {{name: music, sha256: {MUSIC}}}
call_park:
  - pool: fe1
    orbits: [{{first: '*7000', last: '*7099'}}, {{first: '*7200', last: '*7249'}}]
    timeout_seconds: 90
    max_pickup_attempts: 2
    ring_back_seconds: 15
    music_on_hold: music
    timeout_uri: 'sip:operator@trimaran.test'
  - pool: fe2
    orbits: [{{first: '*7100', last: '*7199'}}]
group_pickup:
  - pool: fe1
    ranges: [{{first: '*8000', last: '*8099'}}]
    groups:
      - {{number: '*8001', members: ['sip:alice@trimaran.test', 'sip:bob@trimaran.test']}}
      - {{number: '*8002', members: ['sip:carol@trimaran.test']}}
unassigned:
  - name: old-numbers
    pool: fe1
    numbers: {{first: '+14255558000', last: '+14255558999'}}
    announcement: closed
    then: {{action: forward, target: 'sip:operator@trimaran.test'}}
agent_groups:
  - {{name: helpdesk-agents, agents: ['sip:alice@trimaran.test', 'sip:bob@trimaran.test'],
     routing: longest_idle, formal: true, alert_seconds: 15}}
  - {{name: backup-agents, agents: ['sip:dave@trimaran.test']}}
queues:
  - name: helpdesk
    agent_groups: [helpdesk-agents]
    timeout_seconds: 120
    timeout_action: {{action: queue, target: overflow}}
    overflow_calls: 10
    overflow_action: {{action: voicemail, target: 'sip:helpdesk@trimaran.test'}}
  - name: overflow
    agent_groups: [backup-agents]
workflows:
  - name: helpdesk
    pool: fe1
    number: '+14255556000'
    queue: helpdesk
    welcome: welcome
    business_hours:
      timezone: Europe/Paris
      days:
        tue: [{{start: '08:00', end: '17:00'}}]
        mon: [{{start: '08:00', end: '12:00'}}, {{start: '13:00', end: '24:00'}}]
        sat: []
    holidays:
      - {{name: christmas, start: '2026-12-25', end: '2026-12-26'}}
      - {{name: strike, start: '2026-05-01T12:00', end: '2026-05-01T18:30'}}
    closed_action: {{action: forward, target: 'tel:+14255550100'}}
    holiday_action: {{action: disconnect, announcement: closed}}
"""

TOPO = parse_topology(TOPOLOGY)
_LOADED = read_apps("apps.yaml", text=APPS)
assert _LOADED.violations == (), _LOADED.violations
assert _LOADED.config is not None
VALID: AppsConfig = _LOADED.config

Found = list[tuple[str, str, str]]


def found(violations: list[Violation] | tuple[Violation, ...]) -> Found:
    """(path, severity, message) of every violation, in order."""
    return [(v.path, v.severity, v.message) for v in violations]


def check(config: AppsConfig) -> Found:
    """Every rule violation of `config` used with the test topology."""
    return found(validate_apps(config, TOPO))


def change(config: AppsConfig, field: str, index: int, **changes: Any) -> AppsConfig:
    """`config` with the element `index` of its tuple `field` changed."""
    items = list(getattr(config, field))
    items[index] = dataclasses.replace(items[index], **changes)
    replaced: dict[str, Any] = {field: tuple(items)}
    return dataclasses.replace(config, **replaced)


def add(config: AppsConfig, field: str, *entries: object) -> AppsConfig:
    """`config` with `entries` appended to its tuple `field`."""
    extended: dict[str, Any] = {field: (*getattr(config, field), *entries)}
    return dataclasses.replace(config, **extended)


def loader_errors(apps_yaml: str) -> Found:
    """The loader's violations of an apps document."""
    return found(read_apps("apps.yaml", text=textwrap.dedent(apps_yaml)).violations)


# --- a full example ----------------------------------------------------------------------


def test_app_a_full_configuration_loads_with_defaults_and_is_valid() -> None:
    """APP-1..APP-6: every key is read; omitted ones take the model's defaults."""
    assert check(VALID) == []
    assert VALID.park_of("fe1") == CallPark(
        "fe1", (NumberRange("*7000", "*7099"), NumberRange("*7200", "*7249")), 90.0, 2, 15.0,
        "music", "sip:operator@trimaran.test")
    assert VALID.park_of("fe2") == CallPark("fe2", (NumberRange("*7100", "*7199"),))
    assert VALID.pickup_of("fe1") == GroupPickup("fe1", (NumberRange("*8000", "*8099"),), (
        PickupGroup("*8001", ("sip:alice@trimaran.test", "sip:bob@trimaran.test")),
        PickupGroup("*8002", ("sip:carol@trimaran.test",))))
    assert VALID.unassigned == (UnassignedRange(
        "old-numbers", "fe1", NumberRange("+14255558000", "+14255558999"), "closed",
        CallAction(Action.FORWARD, "sip:operator@trimaran.test")),)
    assert VALID.agent_group("helpdesk-agents").routing is RoutingMethod.LONGEST_IDLE
    assert VALID.agent_group("backup-agents") == AgentGroup(
        "backup-agents", ("sip:dave@trimaran.test",), RoutingMethod.SERIAL, False, 20.0)
    assert VALID.queue("overflow") == Queue("overflow", ("backup-agents",))
    assert VALID.queue("helpdesk").timeout_action == CallAction(Action.QUEUE, "overflow")
    assert VALID.audio_named("music") == Audio("music", MUSIC)
    [workflow] = VALID.workflows
    assert workflow.business_hours == BusinessHours("Europe/Paris", (
        ("tue", (TimeWindow("08:00", "17:00"),)),
        ("mon", (TimeWindow("08:00", "12:00"), TimeWindow("13:00", "24:00"))),
        ("sat", ())))
    assert workflow.holidays[0] == Holiday("christmas", "2026-12-25", "2026-12-26")
    assert workflow.holiday_action == CallAction(Action.DISCONNECT, None, "closed")


def test_app_owner_of_follows_the_configured_numbers() -> None:
    """APP-1, APP-3, APP-5, APP-6: a number's application and owner pool."""
    assert VALID.owner_of("*7150") == ("park", "fe2")
    assert VALID.owner_of("*8002") == ("pickup", "fe1")
    assert VALID.owner_of("*8003") is None
    assert VALID.owner_of("+14255556000") == ("workflow", "fe1")
    assert VALID.owner_of("+14255558123") == ("unassigned", "fe1")


def test_app_an_empty_document_mapping_is_an_empty_configuration() -> None:
    """Every top-level key is optional."""
    assert read_apps("x", text="{}\n").config == AppsConfig()
    assert check(AppsConfig()) == []


def test_app_the_configuration_round_trips_through_dump_apps_and_read_apps() -> None:
    """The CMS document written by dump_apps loads back to an equal configuration,
    business hours' days in their order, as a mapping."""
    text = dump_apps(VALID)
    loaded = read_apps("<cms>", text=text)
    assert loaded.violations == ()
    assert loaded.config == VALID
    assert text.startswith("audio:\n- name: welcome\n")
    data = apps_data(VALID)
    assert list(data) == ["audio", "call_park", "group_pickup", "unassigned", "agent_groups",
                          "queues", "workflows"]
    workflow = data["workflows"]
    assert isinstance(workflow, list)
    assert workflow[0]["business_hours"] == {
        "timezone": "Europe/Paris",
        "days": {"tue": [{"start": "08:00", "end": "17:00"}],
                 "mon": [{"start": "08:00", "end": "12:00"}, {"start": "13:00", "end": "24:00"}],
                 "sat": []}}
    assert "welcome" not in apps_data(dataclasses.replace(
        VALID, workflows=(dataclasses.replace(VALID.workflows[0], welcome=None),)))["workflows"][0]


def test_app_yaml_special_strings_survive_the_round_trip() -> None:
    """Strings YAML would read as numbers, times, dates, booleans, aliases or comments
    are written quoted, so they load back as the same strings."""
    tricky = AppsConfig(
        audio=(Audio("yes", "13:00"),),
        call_park=(CallPark("null", (NumberRange("*7000", "#7001"),), 0.5, -1, 1e9, "on"),),
        group_pickup=(GroupPickup("~", (), (PickupGroup("+1425", ("2026-12-25", "é")),)),),
        unassigned=(UnassignedRange("1.5", "true", NumberRange("#1", "12:30"),
                                    then=CallAction(Action.QUEUE, "*x", "&a")),),
        agent_groups=(AgentGroup("#c", (), RoutingMethod.ATTENDANT, True, 3),),
        queues=(Queue("- q", ("a: b",), 0.25, CallAction(), 0),),
        workflows=(Workflow("w", "fe1", "'", '"', None,
                            BusinessHours("", (("sun", (TimeWindow("7:00", "08:00"),)),)),
                            (Holiday("h", "2026-01-01", "2026-01-01T00:00"),)),),
    )
    loaded = read_apps("<cms>", text=dump_apps(tricky))
    assert loaded.violations == ()
    assert loaded.config == tricky


def test_app_a_file_is_read_with_paths_and_lines_from_the_root(tmp_path: Path) -> None:
    """`trimaran apps publish FILE`: paths start at the document root, lines are those
    of the file."""
    path = tmp_path / "apps.yaml"
    path.write_text(APPS.replace("ring_back_seconds: 15", "ring_back_seconds: '15'"))
    loaded = read_apps(path)
    assert loaded.config is None
    assert found(loaded.violations) == [
        ("call_park[0].ring_back_seconds", "error", "expected a finite number, got string '15'"),
    ]
    line = APPS.splitlines().index("    ring_back_seconds: 15") + 1
    assert loaded.violations[0].line == line
    assert loaded.line_of("call_park[0].ring_back_seconds") == line
    assert loaded.line_of("call_park[0].orbits[1].first") == line - 3
    assert loaded.source == str(path)
    good = tmp_path / "good.yaml"
    good.write_text(APPS)
    assert read_apps(good).config == VALID
    assert read_apps(str(good)).config == VALID
    assert read_apps(APPS).config == VALID


def test_app_a_missing_file_is_a_violation_not_an_exception(tmp_path: Path) -> None:
    """The loader never raises for bad input."""
    loaded = read_apps(tmp_path / "absent.yaml")
    assert loaded.config is None
    [violation] = loaded.violations
    assert violation.path == "" and violation.message.startswith("cannot read ")


def test_app_the_document_itself_must_be_a_mapping_without_aliases() -> None:
    """A list, an empty document and YAML aliases (an unquoted *7000) are refused at
    the root."""
    assert loader_errors("- a\n") == [
        ("", "error", "expected a mapping (call-management configuration), got a list")]
    assert loader_errors("# nothing\n") == [("", "error", "call-management configuration is empty")]
    [(path, _, message)] = loader_errors("call_park: [{pool: fe1, orbits: [{first: *7000, "
                                         "last: '*7099'}]}]\n")
    assert path == ""
    assert "YAML aliases (*name) are not allowed in a call-management configuration" in message


# --- strict loading ------------------------------------------------------------------------

_GROUP = "group_pickup: [{pool: fe1, ranges: [], groups: [%s]}]"
_HOURS = "workflows: [{name: w, pool: fe1, number: '+1', queue: q, business_hours: %s}]"

LOADER_CASES = [
    ("misspelt top-level key with a hint",
     "callpark: []",
     [("callpark", "error",
       "unknown key 'callpark' in call-management configuration (allowed: audio, call_park, "
       "group_pickup, unassigned, agent_groups, queues, workflows); did you mean "
       "'call_park'?")]),
    ("unknown key in a range",
     "call_park: [{pool: fe1, orbits: [{first: '*1', last: '*2'}, {first: '*3', lats: '*4'}]}]",
     [("call_park[0].orbits[1].lats", "error",
       "unknown key 'lats' in number range (allowed: first, last); did you mean 'last'?"),
      ("call_park[0].orbits[1].last", "error",
       "required key 'last' of number range is missing")]),
    ("unquoted E.164 number",
     "unassigned: [{name: u, pool: fe1, numbers: {first: +14255558000, last: '+1'}}]",
     [("unassigned[0].numbers.first", "error",
       "expected a quoted string (YAML reads an unquoted +14255550100 as an integer), got "
       "number 14255558000")]),
    ("unquoted hash number is a comment",
     "call_park: [{pool: fe1, orbits: [{first: #7000\n  , last: '#7099'}]}]",
     [("call_park[0].orbits[0].first", "error", "expected a string, got null")]),
    ("unquoted time after 09:59",
     _HOURS % "{days: {mon: [{start: '08:00', end: 13:00}]}}",
     [("workflows[0].business_hours.days.mon[0].end", "error",
       "expected a quoted string 'HH:MM' (YAML reads an unquoted 13:00 as the number 780), "
       "got number 780")]),
    ("unknown day with a hint",
     _HOURS % "{days: {monday: []}}",
     [("workflows[0].business_hours.days.monday", "error",
       "unknown key 'monday' in opening days (allowed: mon, tue, wed, thu, fri, sat, sun); "
       "did you mean 'mon'?")]),
    ("days as a list",
     _HOURS % "{days: [mon]}",
     [("workflows[0].business_hours.days", "error",
       "expected a mapping (opening days), got a list")]),
    ("unknown key in business hours",
     _HOURS % "{time_zone: UTC}",
     [("workflows[0].business_hours.time_zone", "error",
       "unknown key 'time_zone' in business hours (allowed: timezone, days); did you mean "
       "'timezone'?")]),
    ("unquoted holiday date",
     "workflows: [{name: w, pool: fe1, number: '+1', queue: q, "
     "holidays: [{name: h, start: 2026-12-25, end: '2026-12-26'}]}]",
     [("workflows[0].holidays[0].start", "error",
       "unsupported YAML tag 'tag:yaml.org,2002:timestamp'")]),
    ("unknown routing method",
     "agent_groups: [{name: g, agents: [], routing: random}]",
     [("agent_groups[0].routing", "error",
       "'random' is not one of: serial, longest_idle, round_robin, parallel, attendant")]),
    ("yes is not a boolean",
     "agent_groups: [{name: g, agents: [], formal: 'yes'}]",
     [("agent_groups[0].formal", "error", "expected true or false, got string 'yes'")]),
    ("agents as a string",
     "agent_groups: [{name: g, agents: 'sip:a@trimaran.test'}]",
     [("agent_groups[0].agents", "error",
       "expected a list of strings, got string 'sip:a@trimaran.test'")]),
    ("a call action needs its action",
     "queues: [{name: q, agent_groups: [g], timeout_action: {target: 'sip:a@b'}}]",
     [("queues[0].timeout_action.action", "error",
       "required key 'action' of call action is missing")]),
    ("unknown action",
     "queues: [{name: q, agent_groups: [g], overflow_action: {action: transfer}}]",
     [("queues[0].overflow_action.action", "error",
       "'transfer' is not one of: disconnect, forward, queue, voicemail")]),
    ("overflow_calls is an integer",
     "queues: [{name: q, agent_groups: [g], overflow_calls: 2.5}]",
     [("queues[0].overflow_calls", "error", "expected an integer, got number 2.5")]),
    ("unknown key in a pickup group",
     _GROUP % "{number: '*1', member: []}",
     [("group_pickup[0].groups[0].member", "error",
       "unknown key 'member' in pickup group (allowed: number, members); did you mean "
       "'members'?"),
      ("group_pickup[0].groups[0].members", "error",
       "required key 'members' of pickup group is missing")]),
    ("a member that is not a string",
     _GROUP % "{number: '*1', members: ['sip:a@trimaran.test', 7]}",
     [("group_pickup[0].groups[0].members[1]", "error", "expected a string, got number 7")]),
    ("audio without its hash",
     "audio: [{name: a}]",
     [("audio[0].sha256", "error", "required key 'sha256' of audio file is missing")]),
    ("a call park entry that is not a mapping",
     "call_park: [fe1]",
     [("call_park[0]", "error", "expected a mapping (call park), got string 'fe1'")]),
    ("a section that is not a list",
     "workflows: {name: w}",
     [("workflows", "error", "expected a list, got a mapping")]),
]


_UNKNOWN_KEYS_ONLY = {"misspelt top-level key with a hint", "unknown day with a hint",
                      "unknown key in business hours"}


@pytest.mark.parametrize(("case", "apps_yaml", "expected"), LOADER_CASES,
                         ids=[c[0] for c in LOADER_CASES])
def test_app_bad_structure_is_reported_at_its_path_never_coerced(
        case: str, apps_yaml: str, expected: Found) -> None:
    """Unknown keys (with a hint), wrong types, missing keys: one violation each, with its
    path from the document root; the configuration is not built (an unknown key alone
    does not stop it)."""
    loaded = read_apps("apps.yaml", text=apps_yaml + "\n")
    assert found(loaded.violations) == expected
    assert (loaded.config is None) == (case not in _UNKNOWN_KEYS_ONLY)


def test_app_one_pass_reports_every_problem_of_the_document() -> None:
    """Problems in different sections are all reported, in document order."""
    text = APPS.replace("timeout_seconds: 90", "timeout_seconds: 'ninety'") \
        .replace("routing: longest_idle", "routing: longest") \
        .replace("sat: []", "sat: [{start: '09:00'}]") \
        .replace("holiday_action:", "holiday_actions:")
    assert found(read_apps("apps.yaml", text=text).violations) == [
        ("call_park[0].timeout_seconds", "error",
         "expected a finite number, got string 'ninety'"),
        ("agent_groups[0].routing", "error",
         "'longest' is not one of: serial, longest_idle, round_robin, parallel, attendant"),
        ("workflows[0].holiday_actions", "error",
         "unknown key 'holiday_actions' in workflow (allowed: name, pool, number, queue, "
         "welcome, business_hours, holidays, closed_action, holiday_action); did you mean "
         "'holiday_action'?"),
        ("workflows[0].business_hours.days.sat[0].end", "error",
         "required key 'end' of time window is missing"),
    ]


# --- number ranges ---------------------------------------------------------------------------

CONTAINS = [
    (NumberRange("*7000", "*7099"), "*7000", True),
    (NumberRange("*7000", "*7099"), "*7099", True),
    (NumberRange("*7000", "*7099"), "*7050", True),
    (NumberRange("*7000", "*7099"), "*7100", False),
    (NumberRange("*7000", "*7099"), "*700", False),        # shorter
    (NumberRange("*7000", "*7099"), "*07000", False),      # longer
    (NumberRange("*7000", "*7099"), "#7050", False),       # other prefix
    (NumberRange("*0000", "*0099"), "*0042", True),        # leading zeros
    (NumberRange("+14255558000", "+14255558999"), "+14255558123", True),
    (NumberRange("+14255558000", "+14255558999"), "14255558123", False),
    (NumberRange("+14255558000", "+14255558999"), "+14255559000", False),
    (NumberRange("*7000", "*7099"), 7050, False),          # not a string
    (NumberRange("*7000", "x"), "*7050", False),           # malformed range
]


@pytest.mark.parametrize(("numbers", "number", "inside"), CONTAINS)
def test_app_a_range_contains_numbers_of_its_prefix_and_length_between_its_ends(
        numbers: NumberRange, number: object, inside: bool) -> None:
    """Numbers are compared as prefix, length and value of the digits."""
    assert (number in numbers) is inside


NUMBERS = [
    (NumberRange("*7000", "*7003"), ["*7000", "*7001", "*7002", "*7003"]),
    (NumberRange("#0098", "#0101"), ["#0098", "#0099", "#0100", "#0101"]),
    (NumberRange("+14255550100", "+14255550100"), ["+14255550100"]),
    (NumberRange("*7001", "*7000"), []),
    (NumberRange("*7000", "oops"), []),
]


@pytest.mark.parametrize(("numbers", "expected"), NUMBERS)
def test_app_a_range_lists_its_numbers_in_order_with_their_leading_zeros(
        numbers: NumberRange, expected: list[str]) -> None:
    """Orbits are allocated from `numbers()`."""
    assert numbers.numbers() == expected


# --- numbers and ranges (APP-1, APP-3, APP-5, APP-6) -------------------------------------------

_FORM = "expected an E.164 number such as +14255550100, or * or # and 1 to 15 digits"


def _orbits(*ranges: NumberRange) -> AppsConfig:
    return change(VALID, "call_park", 1, orbits=ranges)


NUMBER_CASES = [
    (_orbits(NumberRange("7100", "*7199")), "call_park[1].orbits[0].first",
     f"'7100' is not a number ({_FORM})"),
    (_orbits(NumberRange("*7100", "*71a9")), "call_park[1].orbits[0].last",
     f"'*71a9' is not a number ({_FORM})"),
    (_orbits(NumberRange("+0123", "+1299")), "call_park[1].orbits[0].first",
     f"'+0123' is not a number ({_FORM})"),
    (_orbits(NumberRange("*7100", "*71999")), "call_park[1].orbits[0].last",
     "last *71999 does not have the prefix and length of first *7100"),
    (_orbits(NumberRange("*7100", "#7199")), "call_park[1].orbits[0].last",
     "last #7199 does not have the prefix and length of first *7100"),
    (_orbits(NumberRange("*7199", "*7100")), "call_park[1].orbits[0].last",
     "last *7100 comes before first *7199"),
    (change(VALID, "unassigned", 0, numbers=NumberRange("+1425555800", "+14255558999")),
     "unassigned[0].numbers.last",
     "last +14255558999 does not have the prefix and length of first +1425555800"),
    (change(VALID, "workflows", 0, number="sip:helpdesk@trimaran.test"),
     "workflows[0].number", f"'sip:helpdesk@trimaran.test' is not a number ({_FORM})"),
]


@pytest.mark.parametrize(("config", "path", "message"), NUMBER_CASES)
def test_app_numbers_are_e164_or_short_codes_and_ranges_are_ordered(
        config: AppsConfig, path: str, message: str) -> None:
    """Range ends and app numbers match NUMBER_RE; a range's ends have the same prefix
    and length, first ≤ last."""
    assert check(config) == [(path, "error", message)]


def test_app_a_malformed_pickup_group_number_is_reported_once() -> None:
    """APP-6: not also as 'not in a pickup range'."""
    config = change(VALID, "group_pickup", 0, groups=(PickupGroup("8001", ()),))
    assert check(config) == [
        ("group_pickup[0].groups[0].number", "error", f"'8001' is not a number ({_FORM})"),
        ("group_pickup[0].groups[0].members", "warning", "pickup group 8001 has no member")]


OVERLAP_CASES = [
    (_orbits(NumberRange("*7050", "*7150")), "call_park[1].orbits[0]",
     "call park orbits of pool fe2 *7050..*7150 overlaps call park orbits of pool fe1 "
     "*7000..*7099 (call_park[0].orbits[0])"),
    (_orbits(NumberRange("*7100", "*7199"), NumberRange("*7199", "*7199")),
     "call_park[1].orbits[1]",
     "call park orbits of pool fe2 *7199..*7199 overlaps call park orbits of pool fe2 "
     "*7100..*7199 (call_park[1].orbits[0])"),
    (change(VALID, "group_pickup", 0, ranges=(NumberRange("*8000", "*8099"),
                                              NumberRange("*7240", "*7300"))),
     "group_pickup[0].ranges[1]",
     "pickup range of pool fe1 *7240..*7300 overlaps call park orbits of pool fe1 "
     "*7200..*7249 (call_park[0].orbits[1])"),
    (add(VALID, "unassigned", UnassignedRange("more", "fe2", NumberRange("+14255558999",
                                                                          "+14255559999"))),
     "unassigned[1].numbers",
     "unassigned range more +14255558999..+14255559999 overlaps unassigned range "
     "old-numbers +14255558000..+14255558999 (unassigned[0].numbers)"),
]


@pytest.mark.parametrize(("config", "path", "message"), OVERLAP_CASES)
def test_app_ranges_do_not_overlap_anywhere_in_the_deployment(
        config: AppsConfig, path: str, message: str) -> None:
    """A number belongs to one application: the second of two overlapping ranges is
    reported, naming the first (in the same entry, the same pool or another one)."""
    assert check(config) == [(path, "error", message)]


def test_app_ranges_of_other_prefixes_or_lengths_do_not_overlap() -> None:
    """*7000 and #7000, *7000 and *70000 are different numbers."""
    config = _orbits(NumberRange("#7000", "#7099"), NumberRange("*70000", "*70999"))
    assert check(config) == []


def test_app_a_workflow_number_is_in_no_range_and_is_not_another_workflows() -> None:
    """APP-3: a Response Group's number belongs to it alone."""
    in_range = change(VALID, "workflows", 0, number="+14255558500")
    assert check(in_range) == [
        ("workflows[0].number", "error", "number +14255558500 of workflow helpdesk is in "
         "unassigned range old-numbers +14255558000..+14255558999 (unassigned[0].numbers)")]
    in_orbits = change(VALID, "workflows", 0, number="*7100")
    assert check(in_orbits) == [
        ("workflows[0].number", "error", "number *7100 of workflow helpdesk is in call park "
         "orbits of pool fe2 *7100..*7199 (call_park[1].orbits[0])")]
    second = dataclasses.replace(VALID.workflows[0], name="sales", pool="fe2")
    assert check(add(VALID, "workflows", second)) == [
        ("workflows[1].number", "error", "number +14255556000 of workflow sales is already "
         "the number of workflow helpdesk (workflows[0].number)")]


# --- owner pools ---------------------------------------------------------------------------------

POOL_CASES = [
    (change(VALID, "call_park", 0, pool="fe9"), "call_park[0].pool", "unknown pool 'fe9'"),
    (change(VALID, "group_pickup", 0, pool="fe9"), "group_pickup[0].pool",
     "unknown pool 'fe9'"),
    (change(VALID, "unassigned", 0, pool="fe9"), "unassigned[0].pool", "unknown pool 'fe9'"),
    (change(VALID, "workflows", 0, pool="fe9"), "workflows[0].pool", "unknown pool 'fe9'"),
    (change(VALID, "workflows", 0, pool="med1"), "workflows[0].pool",
     "med1 is a mediation pool, not a Front End pool"),
    (change(VALID, "call_park", 1, pool="fe1"), "call_park[1].pool",
     "pool fe1 already has a call park service (call_park[0])"),
    (add(VALID, "group_pickup", GroupPickup("fe1", (NumberRange("*8100", "*8199"),))),
     "group_pickup[1].pool", "pool fe1 already has a group pickup entry (group_pickup[0])"),
]


@pytest.mark.parametrize(("config", "path", "message"), POOL_CASES)
def test_app_items_belong_to_a_front_end_pool_with_one_park_and_pickup_service_each(
        config: AppsConfig, path: str, message: str) -> None:
    """APP-1, APP-2: an owner pool is a Front End pool of the topology (its backup pool
    runs its applications after failover); one Call Park service and one group pickup
    entry per pool."""
    with_mediation = TOPOLOGY + (
        "  - {name: med1, site: dc1, role: mediation, next_hop: fe1,\n"
        "     servers: [{name: med1, address: 127.0.27.11}]}\n")
    assert found(validate_apps(config, parse_topology(with_mediation))) == [
        (path, "error", message)]


# --- group pickup (APP-6) ----------------------------------------------------------------------


def _groups(*groups: PickupGroup) -> AppsConfig:
    return change(VALID, "group_pickup", 0, groups=groups)


PICKUP_CASES = [
    (_groups(PickupGroup("*8100", ("sip:alice@trimaran.test",))),
     "group_pickup[0].groups[0].number",
     "number *8100 is not in a pickup range of pool fe1 (group_pickup[0].ranges)"),
    (_groups(PickupGroup("*8001", ("sip:alice@trimaran.test",)),
             PickupGroup("*8001", ("sip:bob@trimaran.test",))),
     "group_pickup[0].groups[1].number",
     "number *8001 is already the number of the pickup group at group_pickup[0].groups[0]"),
    (_groups(PickupGroup("*8001", ("sip:alice@trimaran.test", "bob"))),
     "group_pickup[0].groups[0].members[1]",
     "'bob' is not a user of trimaran.test (expected sip:name@trimaran.test)"),
    (_groups(PickupGroup("*8001", ("sip:alice@example.com",))),
     "group_pickup[0].groups[0].members[0]",
     "'sip:alice@example.com' is not a user of trimaran.test (expected "
     "sip:name@trimaran.test)"),
    (_groups(PickupGroup("*8001", ("sip:alice@trimaran.test",)),
             PickupGroup("*8002", ("sip:carol@trimaran.test", "sip:alice@TRIMARAN.test"))),
     "group_pickup[0].groups[1].members[1]",
     "sip:alice@TRIMARAN.test is already a member of the pickup group at "
     "group_pickup[0].groups[0].members[0]"),
    (change(VALID, "group_pickup", 0, ranges=(), groups=()), "group_pickup[0].ranges",
     "group pickup without number range"),
]


@pytest.mark.parametrize(("config", "path", "message"), PICKUP_CASES)
def test_app_pickup_groups_take_numbers_of_their_pools_ranges_and_members_once(
        config: AppsConfig, path: str, message: str) -> None:
    """APP-6: a group's number is in a pickup range of its own entry, used by one group;
    members are users of the SIP domain, each in one group."""
    assert check(config) == [(path, "error", message)]


def test_app_a_member_listed_twice_in_one_group_is_a_warning() -> None:
    """APP-6: harmless, but a mistake."""
    config = _groups(PickupGroup("*8001", ("sip:alice@trimaran.test",
                                           "sip:alice@trimaran.test")))
    assert check(config) == [("group_pickup[0].groups[0].members[1]", "warning",
                              "sip:alice@trimaran.test is listed twice")]


# --- names (APP-3) --------------------------------------------------------------------------------

DUPLICATES = [
    ("audio", Audio("Welcome", MUSIC), "audio[3].name",
     "duplicate audio name 'Welcome' (first at audio[0].name)"),
    ("unassigned", UnassignedRange("old-numbers", "fe2", NumberRange("*9000", "*9009")),
     "unassigned[1].name",
     "duplicate unassigned range name 'old-numbers' (first at unassigned[0].name)"),
    ("agent_groups", AgentGroup("backup-agents", ("sip:erin@trimaran.test",)),
     "agent_groups[2].name",
     "duplicate agent group name 'backup-agents' (first at agent_groups[1].name)"),
    ("queues", Queue("Overflow", ("backup-agents",)), "queues[2].name",
     "duplicate queue name 'Overflow' (first at queues[1].name)"),
    ("workflows", Workflow("helpdesk", "fe2", "+14255556001", "overflow"), "workflows[1].name",
     "duplicate workflow name 'helpdesk' (first at workflows[0].name)"),
]


@pytest.mark.parametrize(("field", "entry", "path", "message"), DUPLICATES,
                         ids=[d[0] for d in DUPLICATES])
def test_app_names_are_unique_among_their_kind_ignoring_case(
        field: str, entry: object, path: str, message: str) -> None:
    """APP-3: names are unique across the deployment: a second workflow, queue, agent
    group, unassigned range or audio file with a used name is an error (the new entry
    being unused, it may also be warned about)."""
    errors = [v for v in check(add(VALID, field, entry)) if v[1] == "error"]
    assert errors == [(path, "error", message)]


def test_app_the_same_name_in_two_kinds_is_allowed() -> None:
    """APP-3: a workflow and its queue may share a name (the example does)."""
    assert VALID.workflows[0].name == VALID.queues[0].name == "helpdesk"
    assert check(VALID) == []


# --- Response Groups (APP-3) -------------------------------------------------------------------

RESPONSE_GROUP_CASES = [
    (change(VALID, "agent_groups", 1, agents=()), "agent_groups[1].agents",
     "agent group without agent"),
    (change(VALID, "agent_groups", 1, agents=("sip:dave@trimaran.test", "dave")),
     "agent_groups[1].agents[1]",
     "'dave' is not a user of trimaran.test (expected sip:name@trimaran.test)"),
    (change(VALID, "agent_groups", 1, alert_seconds=0.0), "agent_groups[1].alert_seconds",
     "alert_seconds must be positive, got 0"),
    (change(VALID, "queues", 1, agent_groups=()), "queues[1].agent_groups",
     "queue without agent group"),
    (change(VALID, "queues", 0, agent_groups=("helpdesk-agents", "backup-agents",
                                               "sales-agents")),
     "queues[0].agent_groups[2]", "unknown agent group 'sales-agents'"),
    (change(VALID, "queues", 0, timeout_seconds=-5.0), "queues[0].timeout_seconds",
     "timeout_seconds must be positive, got -5"),
    (change(VALID, "queues", 0, overflow_calls=0), "queues[0].overflow_calls",
     "overflow_calls must be positive, got 0"),
    (change(VALID, "workflows", 0, queue="sales"), "workflows[0].queue",
     "unknown queue 'sales'"),
]


@pytest.mark.parametrize(("config", "path", "message"), RESPONSE_GROUP_CASES)
def test_app_response_groups_have_agents_queues_and_positive_limits(
        config: AppsConfig, path: str, message: str) -> None:
    """APP-3: an agent group has agents of the domain and a positive alert time; a queue
    has existing agent groups, and a positive timeout and overflow limit when set; a
    workflow's queue exists."""
    errors = [v for v in check(config) if v[1] == "error"]
    assert errors == [(path, "error", message)]


# --- call actions ------------------------------------------------------------------------------


def _timeout_action(action: CallAction) -> AppsConfig:
    return change(VALID, "queues", 0, timeout_action=action)


ACTION_CASES = [
    (CallAction(Action.FORWARD), "queues[0].timeout_action",
     "action forward needs a target (a sip:, sips: or tel: URI, or a number)"),
    (CallAction(Action.VOICEMAIL), "queues[0].timeout_action",
     "action voicemail needs a target (a sip:, sips: or tel: URI, or a number)"),
    (CallAction(Action.FORWARD, "operator"), "queues[0].timeout_action.target",
     "'operator' is not a sip:, sips: or tel: URI nor a number"),
    (CallAction(Action.FORWARD, "sip:operator @trimaran.test"),
     "queues[0].timeout_action.target",
     "'sip:operator @trimaran.test' is not a sip:, sips: or tel: URI nor a number"),
    (CallAction(Action.QUEUE), "queues[0].timeout_action",
     "action queue needs a target (the name of a queue)"),
    (CallAction(Action.QUEUE, "sales"), "queues[0].timeout_action.target",
     "unknown queue 'sales'"),
    (CallAction(Action.DISCONNECT, "sip:operator@trimaran.test"),
     "queues[0].timeout_action.target",
     "action disconnect takes no target (got 'sip:operator@trimaran.test')"),
    (CallAction(Action.DISCONNECT, None, "goodbye"), "queues[0].timeout_action.announcement",
     "unknown audio 'goodbye'"),
]


@pytest.mark.parametrize(("action", "path", "message"), ACTION_CASES)
def test_app_a_call_action_has_the_target_its_action_needs(
        action: CallAction, path: str, message: str) -> None:
    """Forward and voicemail need a URI or number, queue an existing queue, disconnect
    nothing; an announcement is a known audio file. (Without the queue action, queue
    overflow is sent calls by no one: a warning.)"""
    errors = [v for v in check(_timeout_action(action)) if v[1] == "error"]
    assert errors == [(path, "error", message)]


VALID_TARGETS = ["sip:operator@trimaran.test", "sips:operator@trimaran.test;transport=tls",
                 "tel:+14255550100", "+14255550100", "*7001", "#7001",
                 "SIP:operator@trimaran.test"]


@pytest.mark.parametrize("target", VALID_TARGETS)
def test_app_forward_targets_are_sip_sips_or_tel_uris_or_numbers(target: str) -> None:
    """A forward (or voicemail) target is a URI or a number a dial plan produced."""
    config = _timeout_action(CallAction(Action.FORWARD, target))
    assert [v for v in check(config) if v[1] == "error"] == []


def test_app_every_call_action_is_checked_where_it_is() -> None:
    """Unassigned ranges' `then`, queues' timeout and overflow actions, workflows'
    closed and holiday actions: the same rules, at their own paths."""
    bad = CallAction(Action.QUEUE, "sales")
    config = change(VALID, "unassigned", 0, then=bad)
    config = change(config, "queues", 1, overflow_action=bad)
    config = change(config, "workflows", 0, closed_action=bad, holiday_action=bad)
    assert check(config) == [
        ("unassigned[0].then.target", "error", "unknown queue 'sales'"),
        ("queues[1].overflow_action.target", "error", "unknown queue 'sales'"),
        ("workflows[0].closed_action.target", "error", "unknown queue 'sales'"),
        ("workflows[0].holiday_action.target", "error", "unknown queue 'sales'"),
    ]


# --- audio -------------------------------------------------------------------------------------


AUDIO_CASES = [
    (change(VALID, "call_park", 0, music_on_hold="jazz"), [
        ("call_park[0].music_on_hold", "error", "unknown audio 'jazz'"),
        ("audio[2]", "warning", "audio music is used by nothing")]),
    (change(VALID, "unassigned", 0, announcement="gone"), [
        ("unassigned[0].announcement", "error", "unknown audio 'gone'")]),
    (change(VALID, "workflows", 0, welcome="hello"), [
        ("workflows[0].welcome", "error", "unknown audio 'hello'"),
        ("audio[0]", "warning", "audio welcome is used by nothing")]),
    (change(VALID, "audio", 0, sha256=WELCOME.upper()), [
        ("audio[0].sha256", "error", f"sha256 of audio welcome must be 64 lowercase "
         f"hexadecimal digits, got {WELCOME.upper()!r}")]),
    (change(VALID, "audio", 0, sha256=WELCOME[:-1]), [
        ("audio[0].sha256", "error", f"sha256 of audio welcome must be 64 lowercase "
         f"hexadecimal digits, got {WELCOME[:-1]!r}")]),
    (add(VALID, "audio", Audio("spare", MUSIC)), [
        ("audio[3]", "warning", "audio spare is used by nothing")]),
]


@pytest.mark.parametrize(("config", "expected"), AUDIO_CASES)
def test_app_audio_is_named_by_its_sha256_and_referenced_by_name(
        config: AppsConfig, expected: Found) -> None:
    """Music on hold, announcements and welcome messages name audio entries, each of
    which is a CMS document ``audio/<sha256>``; an entry nothing plays is a warning."""
    assert check(config) == expected


# --- business hours and holidays (APP-3) -------------------------------------------------------

_BASE = "workflows[0].business_hours"


def _hours(timezone: str = "Europe/Paris", **days: tuple[TimeWindow, ...]) -> AppsConfig:
    hours = BusinessHours(timezone, tuple(days.items()))
    return change(VALID, "workflows", 0, business_hours=hours)


def _w(start: str, end: str) -> TimeWindow:
    return TimeWindow(start, end)


HOURS_CASES = [
    (_hours("Europe/Pariss"), f"{_BASE}.timezone", "unknown time zone 'Europe/Pariss'"),
    (_hours("../etc/passwd"), f"{_BASE}.timezone", "unknown time zone '../etc/passwd'"),
    (_hours(""), f"{_BASE}.timezone", "unknown time zone ''"),
    (_hours(mon=(_w("8:00", "12:00"),)), f"{_BASE}.days.mon[0].start",
     "'8:00' is not a time HH:MM from 00:00 to 24:00"),
    (_hours(mon=(_w("08:00", "24:01"),)), f"{_BASE}.days.mon[0].end",
     "'24:01' is not a time HH:MM from 00:00 to 24:00"),
    (_hours(mon=(_w("08:00", "12:60"),)), f"{_BASE}.days.mon[0].end",
     "'12:60' is not a time HH:MM from 00:00 to 24:00"),
    (_hours(fri=(_w("12:00", "12:00"),)), f"{_BASE}.days.fri[0].end",
     "end 12:00 is not after start 12:00"),
    (_hours(fri=(_w("13:00", "17:00"), _w("08:00", "13:30"))), f"{_BASE}.days.fri[1]",
     f"window 08:00-13:30 overlaps 13:00-17:00 ({_BASE}.days.fri[0])"),
    (_hours(fri=(_w("08:00", "18:00"), _w("10:00", "11:00"))), f"{_BASE}.days.fri[1]",
     f"window 10:00-11:00 overlaps 08:00-18:00 ({_BASE}.days.fri[0])"),
    (_hours(friday=()), f"{_BASE}.days.friday",
     "unknown day 'friday' (expected one of: mon, tue, wed, thu, fri, sat, sun)"),
]


@pytest.mark.parametrize(("config", "path", "message"), HOURS_CASES)
def test_app_business_hours_have_a_time_zone_and_ordered_windows_per_day(
        config: AppsConfig, path: str, message: str) -> None:
    """APP-3: a known time zone; windows of HH:MM times from 00:00 to 24:00, each
    ending after it starts, not overlapping the day's other windows."""
    assert check(config) == [(path, "error", message)]


def test_app_touching_windows_and_a_whole_day_are_fine() -> None:
    """APP-3: 08:00-12:00 then 12:00-24:00; 00:00-24:00."""
    assert check(_hours("UTC", mon=(_w("08:00", "12:00"), _w("12:00", "24:00")),
                        sun=(_w("00:00", "24:00"),))) == []


def test_app_a_day_listed_twice_is_an_error() -> None:
    """APP-3: a configuration built in code cannot name a day twice (YAML cannot)."""
    hours = BusinessHours("UTC", (("mon", ()), ("mon", (_w("08:00", "09:00"),))))
    config = change(VALID, "workflows", 0, business_hours=hours)
    assert check(config) == [(f"{_BASE}.days.mon", "error", "day mon is listed twice")]


def _holidays(*holidays: Holiday) -> AppsConfig:
    return change(VALID, "workflows", 0, holidays=holidays)


HOLIDAY_CASES = [
    (Holiday("h", "25/12/2026", "2026-12-26"), "workflows[0].holidays[0].start",
     "'25/12/2026' is not an ISO date or date-time (2026-12-25 or 2026-12-25T12:00)"),
    (Holiday("h", "2026-12-25", "2026-13-01"), "workflows[0].holidays[0].end",
     "'2026-13-01' is not an ISO date or date-time (2026-12-25 or 2026-12-25T12:00)"),
    (Holiday("h", "2026-12-26", "2026-12-25"), "workflows[0].holidays[0].end",
     "end 2026-12-25 is before start 2026-12-26"),
    (Holiday("h", "2026-12-25T18:00", "2026-12-25T08:00"), "workflows[0].holidays[0].end",
     "end 2026-12-25T08:00 is before start 2026-12-25T18:00"),
    (Holiday("h", "2026-12-25T08:00+01:00", "2026-12-26"), "workflows[0].holidays[0].start",
     "'2026-12-25T08:00+01:00' has a UTC offset; a holiday is in the local time of its "
     "workflow"),
]


@pytest.mark.parametrize(("holiday", "path", "message"), HOLIDAY_CASES)
def test_app_holidays_are_local_iso_periods_that_end_after_they_start(
        holiday: Holiday, path: str, message: str) -> None:
    """APP-3: start and end are ISO dates or date-times (local time), start ≤ end."""
    assert check(_holidays(holiday)) == [(path, "error", message)]


def test_app_a_one_day_holiday_and_a_date_to_date_time_holiday_are_fine() -> None:
    """APP-3: start = end, and a date compared with a date-time (its midnight)."""
    assert check(_holidays(Holiday("a", "2026-12-25", "2026-12-25"),
                           Holiday("b", "2026-12-31", "2026-12-31T23:59"))) == []


# --- Call Park (APP-1) -------------------------------------------------------------------------

PARK_CASES = [
    ({"timeout_seconds": 0.0}, "call_park[0].timeout_seconds",
     "timeout_seconds must be positive, got 0"),
    ({"ring_back_seconds": -1.0}, "call_park[0].ring_back_seconds",
     "ring_back_seconds must be positive, got -1"),
    ({"max_pickup_attempts": -1}, "call_park[0].max_pickup_attempts",
     "max_pickup_attempts must be 0 or more, got -1"),
    ({"timeout_uri": "operator@trimaran.test"}, "call_park[0].timeout_uri",
     "'operator@trimaran.test' is not a sip:, sips: or tel: URI"),
    ({"orbits": ()}, "call_park[0].orbits", "call park without orbit range"),
]


@pytest.mark.parametrize(("changes", "path", "message"), PARK_CASES)
def test_app_call_park_settings_are_positive_and_its_timeout_uri_a_uri(
        changes: dict[str, Any], path: str, message: str) -> None:
    """APP-1: parked calls ring back after a positive timeout, for a positive time, a
    non-negative number of times, then go to a URI."""
    assert check(change(VALID, "call_park", 0, **changes)) == [(path, "error", message)]


def test_app_no_ring_back_attempt_is_allowed() -> None:
    """APP-1: max_pickup_attempts 0 sends a timed-out call straight to timeout_uri."""
    assert check(change(VALID, "call_park", 0, max_pickup_attempts=0)) == []


# --- unused items (warnings) ---------------------------------------------------------------------


def test_app_a_queue_or_agent_group_nothing_uses_is_a_warning() -> None:
    """APP-3: a queue no workflow (nor call action) sends calls to, an agent group no
    queue uses."""
    config = add(VALID, "agent_groups", AgentGroup("idle", ("sip:erin@trimaran.test",)))
    config = add(config, "queues", Queue("nobody", ("backup-agents",)))
    assert check(config) == [
        ("agent_groups[2]", "warning", "agent group idle is used by no queue"),
        ("queues[2]", "warning", "queue nobody is used by no workflow nor call action"),
    ]
    unreferenced = _timeout_action(CallAction())
    assert check(unreferenced) == [
        ("queues[1]", "warning", "queue overflow is used by no workflow nor call action")]
