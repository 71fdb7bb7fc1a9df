"""Enterprise Voice call routing (EV-1): dialled string → E.164 number → trunks to try.

Theory of operation. Routing a PSTN call is three pure steps, each a function of
the configuration and its inputs only (no I/O, no clock, no health):

1. Assignment (`assignment`). A user's dial plan and voice policy come from their
   user-level entry, else the entry of their home pool's site, else the defaults;
   each of the two is chosen independently (a user entry may set only the policy).

2. Normalization (`normalize`). The dialled string is cleaned of visual separators
   (`clean_dialled`: spaces, ``-``, ``.``, ``(``, ``)``) and matched against the dial
   plan's rules in order; the first rule whose pattern matches the whole string
   rewrites it with its translation (``$1``..``$9`` are the pattern's groups, ``$$``
   is a dollar). A string no rule matches is kept only if it already is E.164
   (``+`` and 7 to 15 digits, optionally ``;ext=`` and digits); otherwise the call
   cannot be routed.

3. Planning (`plan_call`). For each PSTN usage of the voice policy, in order; for
   each route having that usage, in file order, whose pattern matches the whole
   number (without its ``;ext=`` part); for each of the route's trunks, in order:
   one `Attempt`. A trunk already in the plan is not repeated (it would fail the
   same way). The caller (a Front End) tries the attempts in order, skipping
   gateways known to be down and moving on after a failure or the fast-failover
   time (EV-3): next trunk, then next route, then next usage.

`explain` runs the three steps for ``trimaran voice route`` and says why nothing
matched. `is_dial_string` tells a dialled number from a user name in a Request-URI.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TypedDict

from trimaran.voice.model import (
    DialPlan,
    Gateway,
    SiteVoice,
    UserVoice,
    VoiceConfig,
    VoicePolicy,
    aor_key,
)

E164_RE = re.compile(r"\+[1-9]\d{6,14}(?:;ext=\d{1,10})?")
_SEPARATORS = frozenset(" \t-.()")
_EXT_RE = re.compile(r";ext=", re.IGNORECASE)
_DIAL_STRING_RE = re.compile(r"\+?[0-9*#\s().-]*[0-9*#][0-9*#\s().-]*(?:;ext=[0-9]{1,10})?",
                             re.IGNORECASE)
_GROUP_DIGITS = frozenset("123456789")


# --- dialled strings ---------------------------------------------------------------


def clean_dialled(text: str) -> str:
    """The dialled string without visual separators (space, tab, ``-``, ``.``, ``(``,
    ``)``), surrounding whitespace dropped; an ``;ext=`` suffix is kept (spelt in
    lower case). Other characters are kept, so that a string that is not a number
    does not match a rule by accident."""
    main, ext = _split_extension(text.strip())
    cleaned = "".join(c for c in main if c not in _SEPARATORS)
    if ext is None:
        return cleaned
    return f"{cleaned};ext={''.join(c for c in ext if c not in _SEPARATORS)}"


def strip_extension(number: str) -> str:
    """The number without its ``;ext=`` part, the part routes are matched against."""
    return _split_extension(number)[0]


def _split_extension(text: str) -> tuple[str, str | None]:
    found = _EXT_RE.search(text)
    if found is None:
        return text, None
    return text[: found.start()], text[found.end():]


def is_e164(number: str) -> bool:
    """True for ``+`` and 7 to 15 digits (no leading 0), optionally ``;ext=`` digits."""
    return E164_RE.fullmatch(number) is not None


def is_dial_string(user_part: str) -> bool:
    """True when a Request-URI's user part is what a phone dials: digits, ``*``, ``#``,
    an optional leading ``+``, visual separators, an optional ``;ext=`` suffix; at
    least one digit, ``*`` or ``#``. ``alice`` and ``+`` are not."""
    return _DIAL_STRING_RE.fullmatch(user_part) is not None


# --- translations ------------------------------------------------------------------


def parse_translation(translation: str) -> tuple[str | int, ...]:
    """The translation as literal text and group numbers, e.g. ``'+1$1'`` →
    ``('+1', 1)``; ValueError for a ``$`` not followed by a digit 1-9 or ``$``."""
    parts: list[str | int] = []
    literal = ""
    position = 0
    while position < len(translation):
        char = translation[position]
        follower = translation[position + 1:position + 2]
        if char != "$":
            literal += char
            position += 1
            continue
        if follower == "$":
            literal += "$"
        elif follower and follower in _GROUP_DIGITS:
            if literal:
                parts.append(literal)
                literal = ""
            parts.append(int(follower))
        else:
            raise ValueError(f"'$' at position {position + 1} must be followed by a group "
                             f"number 1-9 or by '$'")
        position += 2
    if literal:
        parts.append(literal)
    return tuple(parts)


def translation_groups(translation: str) -> tuple[int, ...]:
    """The group numbers a translation uses (ValueError as `parse_translation`)."""
    return tuple(p for p in parse_translation(translation) if isinstance(p, int))


def translate(pattern: str, translation: str, text: str) -> str | None:
    """`text` rewritten by a rule when `pattern` fully matches it, else None. A group
    that did not take part in the match is empty."""
    match = re.fullmatch(pattern, text)
    if match is None:
        return None
    return "".join(p if isinstance(p, str) else match.group(p) or ""
                   for p in parse_translation(translation))


# --- normalization -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Normalized:
    """A dialled string made E.164-like: the number and the rule that made it (None:
    it already was E.164 and no rule matched)."""

    number: str
    rule_name: str | None = None


def normalize(plan: DialPlan | None, dialled: str) -> Normalized | None:
    """The dialled string normalized by the first rule of `plan` whose pattern matches
    the cleaned string; else the cleaned string when it is E.164; else None."""
    cleaned = clean_dialled(dialled)
    for rule in plan.rules if plan is not None else ():
        number = translate(rule.pattern, rule.translation, cleaned)
        if number is not None:
            return Normalized(number, rule.name)
    return Normalized(cleaned) if is_e164(cleaned) else None


# --- assignment --------------------------------------------------------------------


def assignment(
    config: VoiceConfig, user_aor: str | None, site: str | None
) -> tuple[DialPlan | None, VoicePolicy | None]:
    """The dial plan and voice policy of a user: user entry, else the entry of `site`
    (the site of the user's home pool), else the defaults, each field on its own.
    KeyError when an entry names a plan or policy the configuration lacks."""
    user = _user_entry(config, user_aor)
    site_entry = _site_entry(config, site)
    plan = _first(user.dial_plan if user else None,
                  site_entry.dial_plan if site_entry else None, config.default_dial_plan)
    policy = _first(user.voice_policy if user else None,
                    site_entry.voice_policy if site_entry else None,
                    config.default_voice_policy)
    return (config.dial_plan(plan) if plan is not None else None,
            config.voice_policy(policy) if policy is not None else None)


def _user_entry(config: VoiceConfig, user_aor: str | None) -> UserVoice | None:
    if user_aor is None:
        return None
    key = aor_key(user_aor)
    return next((u for u in config.users if aor_key(u.user) == key), None)


def _site_entry(config: VoiceConfig, site: str | None) -> SiteVoice | None:
    return next((s for s in config.sites if s.site == site), None) if site else None


def _first(*names: str | None) -> str | None:
    return next((n for n in names if n is not None), None)


# --- planning ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Attempt:
    """One way out for a call: through `trunk` (of `route`, chosen for `usage`), i.e.
    from `mediation_pool` to `gateway`."""

    usage: str
    route: str
    trunk: str
    mediation_pool: str
    gateway: Gateway

    def as_dict(self) -> dict[str, object]:
        """For JSON output (`trimaran voice route`)."""
        return {"usage": self.usage, "route": self.route, "trunk": self.trunk,
                "mediation_pool": self.mediation_pool, "gateway": self.gateway.name,
                "gateway_address": self.gateway.hostport,
                "transport": self.gateway.transport.value}


@dataclass(frozen=True, slots=True)
class CallPlan:
    """The attempts for a call to `number` under `policy`, in the order to try them."""

    number: str
    policy: VoicePolicy | None
    attempts: tuple[Attempt, ...]

    @property
    def empty(self) -> bool:
        """True when no route of the policy's usages matches: the call cannot go out."""
        return not self.attempts


def plan_call(config: VoiceConfig, policy: VoicePolicy | None, number: str) -> CallPlan:
    """The trunks to try for `number`: by usage of `policy`, then route (file order)
    whose pattern fully matches the number without ``;ext=``, then trunk; each trunk
    once. No policy: an empty plan. KeyError for a route naming an unknown trunk or
    a trunk naming an unknown gateway."""
    target = strip_extension(number)
    attempts: list[Attempt] = []
    planned: set[str] = set()
    for usage in policy.usages if policy is not None else ():
        for route in config.routes_of_usage(usage):
            if re.fullmatch(route.pattern, target) is None:
                continue
            for name in route.trunks:
                if name in planned:
                    continue
                planned.add(name)
                trunk = config.trunk(name)
                attempts.append(Attempt(usage, route.name, name, trunk.mediation_pool,
                                        config.gateway(trunk.gateway)))
    return CallPlan(number, policy, tuple(attempts))


class Explanation(TypedDict):
    """What `explain` returns (a plain dict, ready for JSON)."""

    user: str | None
    site: str | None
    dialled: str
    cleaned: str
    dial_plan: str | None
    voice_policy: str | None
    number: str | None
    rule: str | None
    attempts: list[dict[str, object]]
    reason: str | None


def explain(
    config: VoiceConfig, user_aor: str | None, site: str | None, dialled: str
) -> Explanation:
    """What happens when `user_aor` (homed in `site`) dials `dialled`: dial plan,
    voice policy, normalized number and rule, the attempts in order, and `reason`
    (None when there is at least one attempt) saying why the call cannot go out."""
    plan, policy = assignment(config, user_aor, site)
    normalized = normalize(plan, dialled)
    result: Explanation = {
        "user": user_aor, "site": site, "dialled": dialled, "cleaned": clean_dialled(dialled),
        "dial_plan": plan.name if plan else None,
        "voice_policy": policy.name if policy else None,
        "number": normalized.number if normalized else None,
        "rule": normalized.rule_name if normalized else None,
        "attempts": [], "reason": None,
    }
    if normalized is None:
        where = f"dial plan {plan.name}" if plan else "no dial plan"
        result["reason"] = (f"{clean_dialled(dialled)!r} matches no rule ({where}) and is "
                            f"not an E.164 number")
        return result
    if policy is None:
        result["reason"] = "no voice policy: the user may not call the PSTN"
        return result
    call = plan_call(config, policy, normalized.number)
    result["attempts"] = [a.as_dict() for a in call.attempts]
    if call.empty:
        usages = ", ".join(policy.usages) or "none"
        result["reason"] = (f"no route of voice policy {policy.name} (usages: {usages}) "
                            f"matches {strip_extension(normalized.number)}")
    return result


__all__ = [
    "E164_RE",
    "Attempt",
    "CallPlan",
    "Explanation",
    "Normalized",
    "assignment",
    "clean_dialled",
    "explain",
    "is_dial_string",
    "is_e164",
    "normalize",
    "parse_translation",
    "plan_call",
    "strip_extension",
    "translate",
    "translation_groups",
]
