"""Rules of the Enterprise Voice configuration (EV-1, EV-3, EV-5).

Same contract as `trimaran.topology.rules`: `check_voice` takes `Facts`, yields one
violation per offending element with its path (``voice.routes[2].trunks[0]``...),
never raises, and skips what another check reports (an unknown trunk is reported
once, where it is named, and ignored by the checks that follow references).
Nothing is checked when the topology has no voice configuration.

`validate_voice(config, topology)` runs the same checks on a voice configuration
loaded on its own (``trimaran voice publish FILE``) against the deployment's
topology; the paths are the same.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from trimaran.topology.errors import Violation
from trimaran.topology.model import PoolRole, Topology, parse_ip
from trimaran.topology.rules import Facts, error, listeners, pool_path, warning
from trimaran.voice.model import DialPlan, Route, VoiceConfig, aor_key
from trimaran.voice.routing import translation_groups

BASE = "voice"
MAX_FAST_FAILOVER_SECONDS = 60.0
_TRUNK_ROLES = frozenset({PoolRole.MEDIATION, PoolRole.SBA})
_E164_TRANSLATION = re.compile(r"\+(?:[0-9]|\$[1-9])")
_AOR = re.compile(r"sip:([^@\s;:<>\"]+)@([^@\s;:<>\"]+)", re.IGNORECASE)


def _at(kind: str, index: int, key: str | None = None) -> str:
    path = f"{BASE}.{kind}[{index}]"
    return f"{path}.{key}" if key else path


@dataclass(frozen=True, slots=True)
class _Voice:
    """The voice configuration with its indexes: first element of each name."""

    config: VoiceConfig
    gateways: dict[str, int]
    trunks: dict[str, int]
    plans: frozenset[str]
    policies: frozenset[str]
    route_usages: frozenset[str]
    policy_usages: frozenset[str]

    @classmethod
    def of(cls, config: VoiceConfig) -> _Voice:
        def first(names: Iterable[str]) -> dict[str, int]:
            index: dict[str, int] = {}
            for i, name in enumerate(names):
                index.setdefault(name, i)
            return index

        return cls(
            config,
            first(g.name for g in config.gateways),
            first(t.name for t in config.trunks),
            frozenset(p.name for p in config.dial_plans),
            frozenset(p.name for p in config.voice_policies),
            frozenset(u for r in config.routes for u in r.usages),
            frozenset(u for p in config.voice_policies for u in p.usages),
        )


def check_voice(facts: Facts) -> Iterator[Violation]:
    """Every rule of the topology's voice configuration (nothing when it has none)."""
    config = facts.topology.voice
    if config is None:
        return
    voice = _Voice.of(config)
    for check in _CHECKS:
        yield from check(facts, voice)


def validate_voice(config: VoiceConfig, topology: Topology) -> list[Violation]:
    """Every violation of the voice rules by `config` used with `topology` (whose own
    voice section, if any, is ignored)."""
    return list(check_voice(Facts(dataclasses.replace(topology, voice=config))))


# --- timers -------------------------------------------------------------------------


def _check_timers(facts: Facts, voice: _Voice) -> Iterator[Violation]:
    """Fast failover in (0, 60] s (EV-3); probes with a positive interval and a
    timeout shorter than it."""
    c = voice.config
    if not 0 < c.fast_failover_seconds <= MAX_FAST_FAILOVER_SECONDS:
        yield error(f"{BASE}.fast_failover_seconds",
                    f"fast_failover_seconds must be more than 0 and at most "
                    f"{MAX_FAST_FAILOVER_SECONDS:g}, got {c.fast_failover_seconds:g}")
    for key in ("probe_interval_seconds", "probe_timeout_seconds"):
        if getattr(c, key) <= 0:
            yield error(f"{BASE}.{key}", f"{key} must be positive, got {getattr(c, key):g}")
    if 0 < c.probe_interval_seconds <= c.probe_timeout_seconds:
        yield error(f"{BASE}.probe_timeout_seconds",
                    f"probe timeout ({c.probe_timeout_seconds:g} s) must be shorter than the "
                    f"probe interval ({c.probe_interval_seconds:g} s)")


# --- names --------------------------------------------------------------------------


def _duplicates(named: Iterable[tuple[str, str, str]], kind: str) -> Iterator[Violation]:
    """(path, name, comparison key) triples: an error for each repeated key."""
    seen: dict[str, str] = {}
    for path, name, key in named:
        if key in seen:
            yield error(path, f"duplicate {kind} {name!r} (first at {seen[key]})")
        else:
            seen[key] = path


def _check_duplicates(facts: Facts, voice: _Voice) -> Iterator[Violation]:
    """Names of gateways, trunks, routes, policies, dial plans and of the rules of a
    plan are unique, ignoring case; so are site entries and user entries."""
    c = voice.config
    groups: tuple[tuple[str, str, tuple[str, ...]], ...] = (
        ("gateways", "gateway name", tuple(g.name for g in c.gateways)),
        ("trunks", "trunk name", tuple(t.name for t in c.trunks)),
        ("routes", "route name", tuple(r.name for r in c.routes)),
        ("voice_policies", "voice policy name", tuple(p.name for p in c.voice_policies)),
        ("dial_plans", "dial plan name", tuple(p.name for p in c.dial_plans)),
    )
    for kind, what, names in groups:
        yield from _duplicates(((_at(kind, i, "name"), n, n.casefold())
                                for i, n in enumerate(names)), what)
    for i, plan in enumerate(c.dial_plans):
        yield from _duplicates(((f"{_at('dial_plans', i)}.rules[{j}].name", r.name,
                                 r.name.casefold()) for j, r in enumerate(plan.rules)),
                               "rule name")
    yield from _duplicates(((_at("sites", i, "site"), s.site, s.site.casefold())
                            for i, s in enumerate(c.sites)), "site entry")
    yield from _duplicates(((_at("users", i, "user"), u.user, aor_key(u.user))
                            for i, u in enumerate(c.users)), "user entry")


# --- gateways and trunks ------------------------------------------------------------


def _check_gateways(facts: Facts, voice: _Voice) -> Iterator[Violation]:
    """A gateway's address is an IP literal, its port in 1..65535, its endpoint not
    used by a server, database, witness or another gateway, its site known; a
    gateway no trunk uses is a warning."""
    taken: dict[tuple[object, int], str] = {}
    for listener in listeners(facts):
        if listener.ip is not None and listener.port is not None:
            taken.setdefault((listener.ip, listener.port), f"{listener.what} at {listener.path}")
    used = {t.gateway for t in voice.config.trunks}
    for i, gateway in enumerate(voice.config.gateways):
        what = f"gateway {gateway.name}"
        ip = parse_ip(gateway.address)
        if ip is None:
            yield error(_at("gateways", i, "address"),
                        f"{gateway.address!r} is not an IP address literal ({what})")
        elif ip.is_unspecified or ip.is_multicast:
            yield error(_at("gateways", i, "address"),
                        f"{gateway.address} cannot be a gateway's address ({what})")
        if not 1 <= gateway.port <= 65535:
            yield error(_at("gateways", i, "port"),
                        f"port {gateway.port} is not in 1..65535 ({what})")
        elif ip is not None:
            other = taken.get((ip, gateway.port))
            if other is None:
                taken[(ip, gateway.port)] = f"{what} at {_at('gateways', i)}"
            else:
                yield error(_at("gateways", i, "address"),
                            f"{gateway.hostport} ({what}) is already used by {other}")
        if gateway.site is not None and gateway.site not in facts.sites:
            yield error(_at("gateways", i, "site"), f"unknown site {gateway.site!r}")
        if gateway.name not in used:
            yield warning(_at("gateways", i), f"gateway {gateway.name} is used by no trunk")


def _check_trunks(facts: Facts, voice: _Voice) -> Iterator[Violation]:
    """A trunk's mediation pool is a mediation pool or an SBA, and a mediation pool
    carrying a trunk has a next hop; its gateway exists; an SBA's gateway is in the
    SBA's site (or the branch loses it with the WAN, EV-5)."""
    c = voice.config
    without_hop: set[str] = set()
    for i, trunk in enumerate(c.trunks):
        pool = facts.pool(trunk.mediation_pool)
        gateway_index = voice.gateways.get(trunk.gateway)
        if pool is None:
            yield error(_at("trunks", i, "mediation_pool"),
                        f"unknown pool {trunk.mediation_pool!r}")
        elif pool.role not in _TRUNK_ROLES:
            yield error(_at("trunks", i, "mediation_pool"),
                        f"{pool.name} is a {pool.role} pool, not a mediation pool or SBA")
        elif pool.role is PoolRole.MEDIATION and pool.next_hop is None \
                and pool.name not in without_hop:
            without_hop.add(pool.name)
            yield error(f"{pool_path(facts.pool_index(pool.name) or 0)}.next_hop",
                        f"mediation pool {pool.name} carries trunk {trunk.name} but has no "
                        f"next hop (the Front End pool it hands PSTN calls to)")
        if gateway_index is None:
            yield error(_at("trunks", i, "gateway"), f"unknown gateway {trunk.gateway!r}")
            continue
        gateway = c.gateways[gateway_index]
        if pool is not None and pool.role is PoolRole.SBA and gateway.site is not None \
                and gateway.site != pool.site:
            yield warning(_at("trunks", i, "gateway"),
                          f"gateway {gateway.name} is in site {gateway.site} but SBA "
                          f"{pool.name} is in site {pool.site}: the branch loses this trunk "
                          f"when its WAN link is down")


# --- routes and policies --------------------------------------------------------------


def _compile_error(pattern: str) -> str | None:
    try:
        re.compile(pattern)
    except re.error as exc:
        return f"invalid pattern: {exc}"
    return None


def _check_routes(facts: Facts, voice: _Voice) -> Iterator[Violation]:
    """A route has trunks (that exist, each once), usages, and a pattern that
    compiles; a route no policy can reach, or with the same pattern as an earlier
    route sharing a usage, is a warning."""
    earlier: list[tuple[int, Route]] = []
    for i, route in enumerate(voice.config.routes):
        if not route.trunks:
            yield error(_at("routes", i, "trunks"), "route without trunk")
        for k, name in enumerate(route.trunks):
            path = f"{_at('routes', i, 'trunks')}[{k}]"
            if name not in voice.trunks:
                yield error(path, f"unknown trunk {name!r}")
            elif name in route.trunks[:k]:
                yield warning(path, f"trunk {name} is listed twice")
        if not route.usages:
            yield error(_at("routes", i, "usages"), "route without usage")
        elif not voice.policy_usages.intersection(route.usages):
            yield warning(_at("routes", i, "usages"), f"unreachable: no voice policy uses "
                          f"usage(s) {', '.join(route.usages)}")
        problem = _compile_error(route.pattern)
        if problem is not None:
            yield error(_at("routes", i, "pattern"), problem)
        yield from _shadowed_route(i, route, earlier)
        earlier.append((i, route))


def _shadowed_route(index: int, route: Route,
                    earlier: list[tuple[int, Route]]) -> Iterator[Violation]:
    for j, other in earlier:
        shared = [u for u in route.usages if u in other.usages]
        if other.pattern == route.pattern and shared:
            yield warning(_at("routes", index, "pattern"),
                          f"shadowed: route {other.name} ({_at('routes', j)}) has the same "
                          f"pattern and usage {shared[0]} and comes first")
            return


def _check_policies(facts: Facts, voice: _Voice) -> Iterator[Violation]:
    """A voice policy has usages, each of some route (each listed once)."""
    for i, policy in enumerate(voice.config.voice_policies):
        if not policy.usages:
            yield error(_at("voice_policies", i, "usages"), "voice policy without usage")
        for k, usage in enumerate(policy.usages):
            path = f"{_at('voice_policies', i, 'usages')}[{k}]"
            if usage not in voice.route_usages:
                yield error(path, f"unknown usage {usage!r} (no route has it)")
            elif usage in policy.usages[:k]:
                yield warning(path, f"usage {usage} is listed twice")


# --- dial plans -----------------------------------------------------------------------


def _check_dial_plans(facts: Facts, voice: _Voice) -> Iterator[Violation]:
    """A rule's pattern compiles and its translation uses only the pattern's groups;
    a rule after one with the same pattern, or whose translation cannot give an
    E.164 number, is a warning."""
    for i, plan in enumerate(voice.config.dial_plans):
        yield from _check_plan(f"{_at('dial_plans', i)}.rules", plan)


def _check_plan(base: str, plan: DialPlan) -> Iterator[Violation]:
    first: dict[str, int] = {}
    for j, rule in enumerate(plan.rules):
        path = f"{base}[{j}]"
        try:
            groups = re.compile(rule.pattern).groups
        except re.error as exc:
            yield error(f"{path}.pattern", f"invalid pattern: {exc}")
            groups = None
        try:
            used = translation_groups(rule.translation)
        except ValueError as exc:
            yield error(f"{path}.translation", f"invalid translation: {exc}")
            used = None
        if groups is not None and used:
            for number in sorted(set(used)):
                if number > groups:
                    yield error(f"{path}.translation",
                                f"translation uses ${number} but the pattern has {groups} "
                                f"group(s)")
        if used is not None and _E164_TRANSLATION.match(rule.translation) is None:
            yield warning(f"{path}.translation",
                          f"translation {rule.translation!r} cannot give an E.164 number "
                          f"(it should start with '+' and a digit or a group)")
        k = first.setdefault(rule.pattern, j)
        if k != j:
            yield warning(f"{path}.pattern", f"shadowed: rule {plan.rules[k].name} "
                          f"({base}[{k}]) has the same pattern and comes first")


# --- assignments ------------------------------------------------------------------------


def _unknown_references(voice: _Voice, path: str, plan: str | None,
                        policy: str | None) -> Iterator[Violation]:
    if plan is not None and plan not in voice.plans:
        yield error(f"{path}.dial_plan", f"unknown dial plan {plan!r}")
    if policy is not None and policy not in voice.policies:
        yield error(f"{path}.voice_policy", f"unknown voice policy {policy!r}")


def _check_assignments(facts: Facts, voice: _Voice) -> Iterator[Violation]:
    """Defaults, site entries and user entries name existing dial plans and policies;
    site entries name sites of the topology; users are ``sip:name@<sip_domain>``; an
    entry that assigns nothing is a warning."""
    c = voice.config
    if c.default_dial_plan is not None and c.default_dial_plan not in voice.plans:
        yield error(f"{BASE}.default_dial_plan", f"unknown dial plan {c.default_dial_plan!r}")
    if c.default_voice_policy is not None and c.default_voice_policy not in voice.policies:
        yield error(f"{BASE}.default_voice_policy",
                    f"unknown voice policy {c.default_voice_policy!r}")
    for i, site in enumerate(c.sites):
        if site.site not in facts.sites:
            yield error(_at("sites", i, "site"), f"unknown site {site.site!r}")
        yield from _unknown_references(voice, _at("sites", i), site.dial_plan,
                                       site.voice_policy)
        if site.dial_plan is None and site.voice_policy is None:
            yield warning(_at("sites", i), f"the entry of site {site.site} assigns neither "
                          f"a dial plan nor a voice policy")
    domain = facts.topology.sip_domain
    for i, user in enumerate(c.users):
        match = _AOR.fullmatch(user.user)
        if match is None or match.group(2).casefold() != domain.casefold():
            yield error(_at("users", i, "user"), f"{user.user!r} is not a user of {domain} "
                        f"(expected sip:name@{domain})")
        yield from _unknown_references(voice, _at("users", i), user.dial_plan,
                                       user.voice_policy)
        if user.dial_plan is None and user.voice_policy is None:
            yield warning(_at("users", i), f"the entry of user {user.user} assigns neither "
                          f"a dial plan nor a voice policy")


_CHECKS: tuple[Callable[[Facts, _Voice], Iterator[Violation]], ...] = (
    _check_timers,
    _check_duplicates,
    _check_gateways,
    _check_trunks,
    _check_routes,
    _check_policies,
    _check_dial_plans,
    _check_assignments,
)

__all__ = ["check_voice", "validate_voice"]
