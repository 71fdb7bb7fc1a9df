"""`settings.abuse` (OPS-6): the Front Ends' rate limits, flows per user and account
lockout — defaults that leave normal clients alone, 0 turning a limit off, strict types
and every bad value reported at its path."""

from __future__ import annotations

import textwrap

from trimaran.topology import parse_topology, validate_text
from trimaran.topology.model import AbuseLimits

SINGLE = """\
name: t
sip_domain: trimaran.test
sites: [{name: dc1}]
pools:
  - {name: se1, site: dc1, role: frontend, edition: standard,
     servers: [{name: se1, address: 127.0.1.1}]}
"""


def with_abuse(lines: str) -> str:
    return SINGLE + "settings:\n  abuse:\n" + textwrap.indent(textwrap.dedent(lines), "    ")


def violations(text: str) -> dict[str, str]:
    return {v.path: v.message for v in validate_text(text)}


def test_defaults_limit_rates_flows_and_failed_logins_and_trust_the_loopback_host() -> None:
    abuse = parse_topology(SINGLE).settings.abuse
    assert abuse == AbuseLimits()
    assert (abuse.rate_per_second, abuse.rate_burst) == (20.0, 100)
    assert abuse.max_flows_per_user == 10
    assert (abuse.lockout_failures, abuse.lockout_window_seconds,
            abuse.lockout_seconds) == (10, 300.0, 900.0)
    assert abuse.trusted_sources == ("127.0.0.1", "::1")
    assert violations(SINGLE) == {}


def test_each_limit_is_set_and_zero_turns_it_off() -> None:
    text = with_abuse("""\
        rate_per_second: 0
        rate_burst: 0
        max_flows_per_user: 3
        lockout_failures: 0
        lockout_window_seconds: 0
        lockout_seconds: 0
        trusted_sources: [10.1.0.0/16, 192.0.2.7]
        """)
    assert parse_topology(text).settings.abuse == AbuseLimits(
        0.0, 0, 3, 0, 0.0, 0.0, ("10.1.0.0/16", "192.0.2.7"))
    assert violations(text) == {}


def test_bad_values_are_reported_at_their_paths() -> None:
    found = violations(with_abuse("""\
        rate_per_second: -1
        max_flows_per_user: -2
        lockout_failures: 5000
        trusted_sources: [10.1.0.0/16, not-a-network]
        """))
    assert set(found) == {"settings.abuse.rate_per_second", "settings.abuse.max_flows_per_user",
                          "settings.abuse.lockout_failures",
                          "settings.abuse.trusted_sources[1]"}
    assert "0 turns the limit off" in found["settings.abuse.max_flows_per_user"]
    assert "not an IP address or network" in found["settings.abuse.trusted_sources[1]"]


def test_a_rate_needs_a_burst_and_a_lockout_needs_a_window_and_a_duration() -> None:
    found = violations(with_abuse("""\
        rate_per_second: 5
        rate_burst: 0
        lockout_failures: 3
        lockout_window_seconds: 0
        lockout_seconds: 0
        """))
    assert set(found) == {"settings.abuse.rate_burst", "settings.abuse.lockout_window_seconds",
                          "settings.abuse.lockout_seconds"}


def test_types_are_strict_and_unknown_keys_are_named() -> None:
    found = violations(with_abuse("""\
        rate_burst: 10.5
        lockout_failures: '10'
        rate_per_secnd: 5
        """))
    assert "expected an integer" in found["settings.abuse.rate_burst"]
    assert "expected an integer" in found["settings.abuse.lockout_failures"]
    assert "did you mean 'rate_per_second'" in found["settings.abuse.rate_per_secnd"]
    not_a_mapping = violations(SINGLE + "settings:\n  abuse: 5\n")
    assert "expected a mapping (abuse limits)" in not_a_mapping["settings.abuse"]
