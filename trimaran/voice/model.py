"""Enterprise Voice configuration (EV-1), as frozen values.

The voice configuration is the optional ``voice:`` section of a topology, or a
document of its own published to the CMS. It says how a dialled string becomes
an E.164 number and where the call to that number goes:

    user ──(user / site / default assignment)──► dial plan + voice policy
    dialled "425 555 0123" ──dial plan: first matching normalization rule──► +14255550123
    voice policy ──ordered PSTN usages──► routes having that usage (file order),
        whose pattern matches the number ──ordered trunks──► trunk
    trunk = mediation pool (or SBA) + gateway

Every cross reference is a name (`Trunk.gateway`, `Route.trunks`,
`SiteVoice.site`...); `VoiceConfig`'s lookup helpers turn names into values and
raise `KeyError` for a name it does not have. The rules that make a configuration
valid are in `trimaran.topology.voice_rules`; the loader is
`trimaran.topology.voice_loader`; call routing is `trimaran.voice.routing`.

Patterns and translations use Python `re` syntax and are matched against the
whole string (`re.fullmatch`); a translation refers to the pattern's groups as
``$1``..``$9`` and writes a literal dollar as ``$$``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, TypeVar

DEFAULT_GATEWAY_PORT = 5060
DEFAULT_FAST_FAILOVER_SECONDS = 10.0
DEFAULT_PROBE_INTERVAL_SECONDS = 5.0
DEFAULT_PROBE_TIMEOUT_SECONDS = 2.0


class GatewayTransport(StrEnum):
    """How a Mediation server reaches a PSTN gateway."""

    UDP = "udp"
    TCP = "tcp"


@dataclass(frozen=True, slots=True)
class Gateway:
    """A PSTN gateway: where it accepts SIP, and optionally the site it is in."""

    name: str
    address: str
    port: int = DEFAULT_GATEWAY_PORT
    transport: GatewayTransport = GatewayTransport.UDP
    site: str | None = None

    @property
    def endpoint(self) -> tuple[str, int]:
        """The gateway's ``(address, port)``."""
        return (self.address, self.port)

    @property
    def hostport(self) -> str:
        """``127.0.26.50:5060`` or ``[::1]:5060``."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Trunk:
    """A mediation pool (or an SBA, which contains one) paired with a gateway."""

    name: str
    mediation_pool: str
    gateway: str


@dataclass(frozen=True, slots=True)
class NormalizationRule:
    """Rewrites a dialled string that fully matches `pattern` into `translation`."""

    name: str
    pattern: str
    translation: str


@dataclass(frozen=True, slots=True)
class DialPlan:
    """Ordered normalization rules: the first whose pattern matches wins."""

    name: str
    rules: tuple[NormalizationRule, ...] = ()

    def rule(self, name: str) -> NormalizationRule:
        """The rule named `name` (KeyError when there is none)."""
        return _find(self.rules, name, "normalization rule")


@dataclass(frozen=True, slots=True)
class Route:
    """Numbers fully matching `pattern` may go out through `trunks`, in order, for a
    caller whose voice policy has one of `usages`."""

    name: str
    pattern: str
    trunks: tuple[str, ...] = ()
    usages: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class VoicePolicy:
    """Ordered PSTN usages a user may call through; later usages are failover."""

    name: str
    usages: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SiteVoice:
    """The dial plan and/or voice policy of users whose home pool is in `site`."""

    site: str
    dial_plan: str | None = None
    voice_policy: str | None = None


@dataclass(frozen=True, slots=True)
class UserVoice:
    """The dial plan and/or voice policy of one user (an AOR ``sip:name@domain``)."""

    user: str
    dial_plan: str | None = None
    voice_policy: str | None = None


@dataclass(frozen=True, slots=True)
class VoiceConfig:
    """A deployment's Enterprise Voice configuration (EV-1, EV-3).

    fast_failover_seconds   a gateway that shows no progress (18x/2xx) in this time
                            loses the call to the next trunk (EV-3; model: 10 s)
    probe_interval_seconds  interval of OPTIONS probes to each gateway
    probe_timeout_seconds   a probe unanswered this long marks the gateway down
    """

    gateways: tuple[Gateway, ...] = ()
    trunks: tuple[Trunk, ...] = ()
    routes: tuple[Route, ...] = ()
    voice_policies: tuple[VoicePolicy, ...] = ()
    dial_plans: tuple[DialPlan, ...] = ()
    default_dial_plan: str | None = None
    default_voice_policy: str | None = None
    sites: tuple[SiteVoice, ...] = ()
    users: tuple[UserVoice, ...] = ()
    fast_failover_seconds: float = DEFAULT_FAST_FAILOVER_SECONDS
    probe_interval_seconds: float = DEFAULT_PROBE_INTERVAL_SECONDS
    probe_timeout_seconds: float = DEFAULT_PROBE_TIMEOUT_SECONDS

    # --- lookups (KeyError for an unknown name) -------------------------------------

    def gateway(self, name: str) -> Gateway:
        """The gateway named `name`."""
        return _find(self.gateways, name, "gateway")

    def trunk(self, name: str) -> Trunk:
        """The trunk named `name`."""
        return _find(self.trunks, name, "trunk")

    def route(self, name: str) -> Route:
        """The route named `name`."""
        return _find(self.routes, name, "route")

    def voice_policy(self, name: str) -> VoicePolicy:
        """The voice policy named `name`."""
        return _find(self.voice_policies, name, "voice policy")

    def dial_plan(self, name: str) -> DialPlan:
        """The dial plan named `name`."""
        return _find(self.dial_plans, name, "dial plan")

    def site_voice(self, site: str) -> SiteVoice:
        """The site-level assignment of `site`."""
        for entry in self.sites:
            if entry.site == site:
                return entry
        raise KeyError(f"no site-level voice assignment for {site!r}")

    def user_voice(self, user: str) -> UserVoice:
        """The user-level assignment of the AOR `user` (its scheme and domain compared
        without regard to case, RFC 3261 §19.1.4)."""
        key = aor_key(user)
        for entry in self.users:
            if aor_key(entry.user) == key:
                return entry
        raise KeyError(f"no user-level voice assignment for {user!r}")

    # --- relations -------------------------------------------------------------------

    def trunks_of_pool(self, pool: str) -> tuple[Trunk, ...]:
        """The trunks whose mediation pool is `pool`, in file order (maybe none)."""
        return tuple(t for t in self.trunks if t.mediation_pool == pool)

    def gateways_of_pool(self, pool: str) -> tuple[Gateway, ...]:
        """The gateways a mediation pool (or SBA) reaches through its trunks, each once,
        in file order of the trunks; a trunk naming an unknown gateway is skipped."""
        known = {g.name: g for g in reversed(self.gateways)}
        names = dict.fromkeys(t.gateway for t in self.trunks_of_pool(pool))
        return tuple(known[name] for name in names if name in known)

    def routes_of_usage(self, usage: str) -> tuple[Route, ...]:
        """The routes having `usage`, in file order."""
        return tuple(r for r in self.routes if usage in r.usages)

    @property
    def usages(self) -> tuple[str, ...]:
        """Every PSTN usage named by a voice policy or a route, each once, in the order
        first named (policies first)."""
        named = [u for p in self.voice_policies for u in p.usages]
        named.extend(u for r in self.routes for u in r.usages)
        return tuple(dict.fromkeys(named))


def aor_key(aor: str) -> str:
    """An AOR for comparison: scheme and domain lowered, the user part kept as is
    (RFC 3261 §19.1.4)."""
    scheme, colon, rest = aor.partition(":")
    if not colon:
        return aor
    user, at, domain = rest.rpartition("@")
    return f"{scheme.lower()}:{user}{at}{domain.lower()}"


class _Named(Protocol):
    @property
    def name(self) -> str: ...


_N = TypeVar("_N", bound=_Named)


def _find(items: tuple[_N, ...], name: str, kind: str) -> _N:
    for entry in items:
        if entry.name == name:
            return entry
    raise KeyError(f"no {kind} named {name!r}")
