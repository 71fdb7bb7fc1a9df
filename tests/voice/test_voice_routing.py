"""Voice routing as tables (SPEC EV-1): dialled strings normalized by a dial plan,
the dial plan and policy a user gets, and the trunks a call is planned over."""

from __future__ import annotations

import pytest

from trimaran.voice.model import (
    DialPlan,
    Gateway,
    NormalizationRule,
    Route,
    SiteVoice,
    Trunk,
    UserVoice,
    VoiceConfig,
    VoicePolicy,
)
from trimaran.voice.routing import (
    Normalized,
    assignment,
    clean_dialled,
    explain,
    is_dial_string,
    normalize,
    parse_translation,
    plan_call,
)

REDMOND = DialPlan("redmond", (
    NormalizationRule("extension", r"^(\d{5})$", "+14255550100;ext=$1"),
    NormalizationRule("local", r"^(\d{7})$", "+1425$1"),
    NormalizationRule("national", r"^1?(\d{10})$", "+1$1"),
    NormalizationRule("international", r"^011(\d{7,15})$", "+$1"),
))


# --- normalization (EV-1) --------------------------------------------------------------

NORMALIZATION = [
    # dialled                     number                     rule
    ("12345",                     "+14255550100;ext=12345",  "extension"),
    ("5550123",                   "+14255550123",            "local"),
    ("4255550123",                "+14255550123",            "national"),
    ("14255550123",               "+14255550123",            "national"),
    ("(425) 555-0123",            "+14255550123",            "national"),
    ("1.425.555.0123",            "+14255550123",            "national"),
    ("  425 555 0123 ",           "+14255550123",            "national"),
    ("011 44 20 7123 4567",       "+442071234567",           "international"),
    ("+442071234567",             "+442071234567",           None),
    ("+1 (425) 555-0123",         "+14255550123",            None),
    ("+14255550100;ext=12345",    "+14255550100;ext=12345",  None),
]


@pytest.mark.parametrize(("dialled", "number", "rule"), NORMALIZATION)
def test_ev1_dialled_strings_normalize_to_e164(dialled: str, number: str,
                                               rule: str | None) -> None:
    """EV-1: the first matching rule rewrites the cleaned string; E.164 is kept as is."""
    assert normalize(REDMOND, dialled) == Normalized(number, rule)


@pytest.mark.parametrize("dialled", ["911", "123", "abc", "+0123456789", "425555012x", ""])
def test_ev1_a_string_no_rule_matches_and_not_e164_cannot_be_normalized(dialled: str) -> None:
    """EV-1: nothing matches and it is not E.164: no number (the call is refused)."""
    assert normalize(REDMOND, dialled) is None


def test_ev1_the_first_matching_rule_wins() -> None:
    """EV-1: rules are ordered; a later rule matching too is not used."""
    plan = DialPlan("p", (NormalizationRule("five", r"^(\d{5})$", "+1555$1"),
                          NormalizationRule("any", r"^(\d+)$", "+$1")))
    assert normalize(plan, "12345") == Normalized("+155512345", "five")
    assert normalize(plan, "123456") == Normalized("+123456", "any")


def test_ev1_without_a_dial_plan_only_e164_numbers_are_kept() -> None:
    """EV-1: a user with no dial plan can dial E.164 numbers only."""
    assert normalize(None, "+1 425 555 0123") == Normalized("+14255550123")
    assert normalize(None, "4255550123") is None


CLEANING = [
    ("(425) 555-0123", "4255550123"),
    ("+1 425.555.0123", "+14255550123"),
    ("*72#", "*72#"),
    ("12345;ext=67", "12345;ext=67"),
    ("+1 425 555 0100;EXT=12 3", "+14255550100;ext=123"),
    ("555-FLOWERS", "555FLOWERS"),
]


@pytest.mark.parametrize(("dialled", "cleaned"), CLEANING)
def test_ev1_visual_separators_are_dropped_before_matching(dialled: str, cleaned: str) -> None:
    """EV-1: spaces, '-', '.', '(' and ')' go; digits, '+', '*', '#', ';ext=' stay;
    letters stay so that they match no rule."""
    assert clean_dialled(dialled) == cleaned


DIAL_STRINGS = [
    ("4255550123", True), ("+14255550123", True), ("(425) 555-0123", True),
    ("*72", True), ("#", True), ("+14255550100;ext=123", True),
    ("alice", False), ("+", False), ("", False), ("425-555-CALL", False),
    ("sip:4255550123", False),
]


@pytest.mark.parametrize(("user_part", "expected"), DIAL_STRINGS)
def test_ev1_a_dial_string_is_what_a_phone_dials(user_part: str, expected: bool) -> None:
    """EV-1: only a dial string in a Request-URI's user part goes to normalization."""
    assert is_dial_string(user_part) is expected


def test_ev1_translations_use_numbered_groups_and_double_dollar() -> None:
    """EV-1: '$1'..'$9' are the pattern's groups, '$$' a dollar; anything else after
    '$' is refused."""
    assert parse_translation("+1$1") == ("+1", 1)
    assert parse_translation("+1425$1;ext=$2") == ("+1425", 1, ";ext=", 2)
    assert parse_translation("$$5") == ("$5",)
    for bad in ("+$0", "+$a", "+1$"):
        with pytest.raises(ValueError, match="must be followed by a group number"):
            parse_translation(bad)


def test_ev1_a_group_that_did_not_match_translates_to_nothing() -> None:
    """EV-1: an optional group absent from the match leaves no text."""
    plan = DialPlan("p", (NormalizationRule("opt", r"^(1)?(\d{10})$", "+1$2$1"),))
    assert normalize(plan, "4255550123") == Normalized("+14255550123", "opt")


# --- assignment (EV-1) ---------------------------------------------------------------

OTHER = DialPlan("other")
ASSIGNED = VoiceConfig(
    routes=(Route("r", r"^\+.*$", ("t",), ("u",)),),
    voice_policies=(VoicePolicy("default", ("u",)), VoicePolicy("branch", ("u",)),
                    VoicePolicy("vip", ("u",))),
    dial_plans=(REDMOND, OTHER),
    default_dial_plan="redmond",
    default_voice_policy="default",
    sites=(SiteVoice("b1", voice_policy="branch"), SiteVoice("dc2", dial_plan="other")),
    users=(UserVoice("sip:alice@example.com", voice_policy="vip"),
           UserVoice("sip:bob@example.com", dial_plan="other", voice_policy="vip")),
)

ASSIGNMENTS = [
    # user                        site    dial plan   voice policy
    ("sip:carol@example.com",     "dc1",  "redmond",  "default"),   # defaults
    ("sip:carol@example.com",     None,   "redmond",  "default"),
    ("sip:carol@example.com",     "b1",   "redmond",  "branch"),    # site sets the policy
    ("sip:carol@example.com",     "dc2",  "other",    "default"),   # site sets the plan
    ("sip:alice@example.com",     "b1",   "redmond",  "vip"),       # user over site
    ("sip:alice@EXAMPLE.COM",     "dc2",  "other",    "vip"),       # per field; domain case
    ("sip:bob@example.com",       "b1",   "other",    "vip"),
    ("sip:Alice@example.com",     "dc1",  "redmond",  "default"),   # user part is exact
]


@pytest.mark.parametrize(("user", "site", "plan", "policy"), ASSIGNMENTS)
def test_ev1_user_entry_beats_site_entry_beats_defaults_per_field(
        user: str, site: str | None, plan: str, policy: str) -> None:
    """EV-1: the dial plan and the voice policy are each taken from the user entry, else
    the site of the user's home pool, else the defaults."""
    got_plan, got_policy = assignment(ASSIGNED, user, site)
    assert (got_plan.name if got_plan else None, got_policy.name if got_policy else None) \
        == (plan, policy)


def test_ev1_no_entry_and_no_default_assigns_nothing() -> None:
    """EV-1: without defaults a user with no entry has no dial plan and no policy."""
    assert assignment(VoiceConfig(), "sip:carol@example.com", "dc1") == (None, None)


# --- call planning (EV-1, EV-3) -------------------------------------------------------

GATEWAYS = tuple(Gateway(f"gw-{n}", f"127.0.26.{50 + i}") for i, n in enumerate("abcd"))
PLANNED = VoiceConfig(
    gateways=GATEWAYS,
    trunks=(Trunk("a", "med1", "gw-a"), Trunk("b", "med1", "gw-b"),
            Trunk("c", "med2", "gw-c"), Trunk("d", "sba1", "gw-d")),
    routes=(
        Route("local", r"^\+1425\d{7}$", ("a", "b"), ("local",)),
        Route("national", r"^\+1\d{10}$", ("b", "c"), ("national",)),
        Route("national-backup", r"^\+1\d{10}$", ("d", "a"), ("national",)),
        Route("premium", r"^\+1900\d{7}$", ("c",), ("premium",)),
        Route("anything", r"^\+\d+$", ("c",), ("international",)),
    ),
    voice_policies=(VoicePolicy("default", ("local", "national")),
                    VoicePolicy("national-first", ("national", "local")),
                    VoicePolicy("international", ("local", "international")),
                    VoicePolicy("local-only", ("local",))),
)

PLANS = [
    # policy              number                     (usage, route, trunk) in order
    ("default",           "+14255550123",            [("local", "local", "a"),
                                                      ("local", "local", "b"),
                                                      ("national", "national", "c"),
                                                      ("national", "national-backup", "d")]),
    ("national-first",    "+14255550123",            [("national", "national", "b"),
                                                      ("national", "national", "c"),
                                                      ("national", "national-backup", "d"),
                                                      ("national", "national-backup", "a")]),
    ("default",           "+12065550123",            [("national", "national", "b"),
                                                      ("national", "national", "c"),
                                                      ("national", "national-backup", "d"),
                                                      ("national", "national-backup", "a")]),
    ("international",     "+442071234567",           [("international", "anything", "c")]),
    ("default",           "+442071234567",           []),
    ("local-only",        "+12065550123",            []),
    ("local-only",        "+14255550100;ext=12345",  [("local", "local", "a"),
                                                      ("local", "local", "b")]),
    ("default",           "+19005550123",            [("national", "national", "b"),
                                                      ("national", "national", "c"),
                                                      ("national", "national-backup", "d"),
                                                      ("national", "national-backup", "a")]),
]


@pytest.mark.parametrize(("policy", "number", "expected"), PLANS)
def test_ev1_calls_try_usages_then_routes_then_trunks_each_trunk_once(
        policy: str, number: str, expected: list[tuple[str, str, str]]) -> None:
    """EV-1, EV-3: usage order of the policy, then route file order, then trunk order;
    a trunk already planned is not repeated; ';ext=' is ignored for matching."""
    plan = plan_call(PLANNED, PLANNED.voice_policy(policy), number)
    assert [(a.usage, a.route, a.trunk) for a in plan.attempts] == expected
    assert plan.empty is (not expected)
    assert plan.number == number


def test_ev1_an_attempt_carries_the_mediation_pool_and_gateway_of_its_trunk() -> None:
    """EV-1: a trunk is a mediation pool and a gateway."""
    [first, *_] = plan_call(PLANNED, PLANNED.voice_policy("default"), "+14255550123").attempts
    assert (first.mediation_pool, first.gateway) == ("med1", GATEWAYS[0])


def test_ev1_without_a_voice_policy_there_is_no_way_out() -> None:
    """EV-1: a user without a voice policy cannot call the PSTN."""
    assert plan_call(PLANNED, None, "+14255550123").empty


def test_ev1_explain_tells_what_dialling_does_and_why_nothing_matched() -> None:
    """EV-1: `trimaran voice route` shows plan, policy, number, rule, attempts or why not."""
    config = VoiceConfig(gateways=PLANNED.gateways, trunks=PLANNED.trunks,
                         routes=PLANNED.routes, voice_policies=PLANNED.voice_policies,
                         dial_plans=(REDMOND,), default_dial_plan="redmond",
                         default_voice_policy="local-only")
    routed = explain(config, "sip:carol@example.com", "dc1", "555 0123")
    assert (routed["dial_plan"], routed["voice_policy"], routed["number"], routed["rule"],
            routed["reason"]) == ("redmond", "local-only", "+14255550123", "local", None)
    assert [a["trunk"] for a in routed["attempts"]] == ["a", "b"]
    assert routed["attempts"][0]["gateway_address"] == "127.0.26.50:5060"
    far = explain(config, "sip:carol@example.com", "dc1", "206 555 0123")
    assert far["attempts"] == []
    assert far["reason"] == ("no route of voice policy local-only (usages: local) matches "
                             "+12065550123")
    unknown = explain(config, "sip:carol@example.com", "dc1", "911")
    assert unknown["reason"] == ("'911' matches no rule (dial plan redmond) and is not an "
                                 "E.164 number")
    no_policy = explain(VoiceConfig(), "sip:carol@example.com", None, "+14255550123")
    assert no_policy["reason"] == "no voice policy: the user may not call the PSTN"
