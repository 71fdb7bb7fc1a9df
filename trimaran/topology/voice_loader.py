"""Strict YAML → `VoiceConfig` loading (EV-1), and back.

The voice configuration is read from the ``voice:`` section of a topology (the
topology loader calls `build_voice`) or from a document of its own whose top level
is that mapping (`read_voice`, for ``trimaran voice publish FILE``). Both report
violations the same way as the topology loader (`trimaran.topology.loadkit`),
with paths starting ``voice.``: unknown keys, wrong types and missing keys, never
coerced. Only structure is checked here; the rules are
`trimaran.topology.voice_rules`.

`dump_voice` writes a configuration as YAML that `read_voice` loads back to an
equal configuration (how it is stored as a CMS document).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from trimaran.topology.errors import Violation
from trimaran.topology.loadkit import (
    Context,
    Fields,
    Invalid,
    as_int,
    as_number,
    as_str,
    as_str_list,
    dump_yaml,
    enum_of,
    is_path,
    line_of,
    list_of,
    parse_yaml,
    read_text,
)
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

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

VOICE_ROOT = "voice"
_DOCUMENT = "voice configuration"


@dataclass(frozen=True, slots=True)
class VoiceLoad:
    """What `read_voice` found: the configuration (None when it could not be built),
    the loader's violations, and the 1-based line of each path present in the file."""

    config: VoiceConfig | None
    violations: tuple[Violation, ...]
    lines: Mapping[str, int] = field(default_factory=dict)
    source: str = "<text>"

    def line_of(self, path: str) -> int | None:
        """The line of `path`, or of its nearest ancestor present in the file."""
        return line_of(self.lines, path)


# --- builders --------------------------------------------------------------------


def _gateway(ctx: Context, value: object, path: str) -> Gateway | None:
    f = Fields(ctx, value, path, "gateway", ("name", "address", "port", "transport", "site"))
    name = f.required("name", as_str)
    address = f.required("address", as_str)
    defaults = Gateway("", "")
    port = f.optional("port", as_int, defaults.port)
    transport = f.optional("transport", enum_of(GatewayTransport), defaults.transport)
    site = f.optional("site", as_str, None)
    if name is None or address is None:
        return None
    return Gateway(name, address, port, transport, site)


def _trunk(ctx: Context, value: object, path: str) -> Trunk | None:
    f = Fields(ctx, value, path, "trunk", ("name", "mediation_pool", "gateway"))
    name = f.required("name", as_str)
    pool = f.required("mediation_pool", as_str)
    gateway = f.required("gateway", as_str)
    if name is None or pool is None or gateway is None:
        return None
    return Trunk(name, pool, gateway)


def _route(ctx: Context, value: object, path: str) -> Route | None:
    f = Fields(ctx, value, path, "route", ("name", "pattern", "usages", "trunks"))
    name = f.required("name", as_str)
    pattern = f.required("pattern", as_str)
    usages = f.required("usages", as_str_list)
    trunks = f.required("trunks", as_str_list)
    if name is None or pattern is None or usages is None or trunks is None:
        return None
    return Route(name, pattern, trunks, usages)


def _policy(ctx: Context, value: object, path: str) -> VoicePolicy | None:
    f = Fields(ctx, value, path, "voice policy", ("name", "usages"))
    name = f.required("name", as_str)
    usages = f.required("usages", as_str_list)
    return None if name is None or usages is None else VoicePolicy(name, usages)


def _rule(ctx: Context, value: object, path: str) -> NormalizationRule | None:
    f = Fields(ctx, value, path, "normalization rule", ("name", "pattern", "translation"))
    name = f.required("name", as_str)
    pattern = f.required("pattern", as_str)
    translation = f.required("translation", as_str)
    if name is None or pattern is None or translation is None:
        return None
    return NormalizationRule(name, pattern, translation)


def _dial_plan(ctx: Context, value: object, path: str) -> DialPlan | None:
    f = Fields(ctx, value, path, "dial plan", ("name", "rules"))
    name = f.required("name", as_str)
    rules = f.required("rules", list_of(_rule))
    return None if name is None or rules is None else DialPlan(name, rules)


def _site(ctx: Context, value: object, path: str) -> SiteVoice | None:
    f = Fields(ctx, value, path, "site voice assignment", ("site", "dial_plan", "voice_policy"))
    site = f.required("site", as_str)
    plan = f.optional("dial_plan", as_str, None)
    policy = f.optional("voice_policy", as_str, None)
    return None if site is None else SiteVoice(site, plan, policy)


def _user(ctx: Context, value: object, path: str) -> UserVoice | None:
    f = Fields(ctx, value, path, "user voice assignment", ("user", "dial_plan", "voice_policy"))
    user = f.required("user", as_str)
    plan = f.optional("dial_plan", as_str, None)
    policy = f.optional("voice_policy", as_str, None)
    return None if user is None else UserVoice(user, plan, policy)


_TIMERS = ("fast_failover_seconds", "probe_interval_seconds", "probe_timeout_seconds")
_LISTS: dict[str, Any] = {
    "gateways": list_of(_gateway),
    "trunks": list_of(_trunk),
    "routes": list_of(_route),
    "voice_policies": list_of(_policy),
    "dial_plans": list_of(_dial_plan),
    "sites": list_of(_site),
    "users": list_of(_user),
}
VOICE_KEYS = (*_TIMERS, "gateways", "trunks", "routes", "voice_policies", "dial_plans",
              "default_dial_plan", "default_voice_policy", "sites", "users")


def build_voice(ctx: Context, value: object, path: str) -> VoiceConfig | None:
    """The `VoiceConfig` of the mapping `value` found at `path` (``voice``), reporting
    every problem to `ctx`; None when a required or ill-typed value prevents it."""
    fatal_before, ctx.fatal = ctx.fatal, False
    f = Fields(ctx, value, path, _DOCUMENT, VOICE_KEYS)
    defaults = VoiceConfig()
    values: dict[str, Any] = {}
    for key in _TIMERS:
        values[key] = f.optional(key, as_number, getattr(defaults, key))
    for key, parse in _LISTS.items():
        values[key] = f.optional(key, parse, getattr(defaults, key))
    for key in ("default_dial_plan", "default_voice_policy"):
        values[key] = f.optional(key, as_str, None)
    built = None if ctx.fatal else VoiceConfig(**values)
    ctx.fatal = ctx.fatal or fatal_before
    return built


# --- public API --------------------------------------------------------------------


def read_voice(source: str | os.PathLike[str], text: str | None = None) -> VoiceLoad:
    """Load a voice configuration document without raising: a `VoiceLoad` with the
    configuration (when buildable) and every loader violation, paths starting
    ``voice.``. `source` is a file path, unless `text` is given (then `source` only
    names it) or `source` itself is YAML text (it contains a newline)."""
    ctx = Context()
    name = os.fspath(source)
    if text is None:
        if is_path(source):
            text = read_text(source, ctx, document=_DOCUMENT, root=VOICE_ROOT)
        else:
            text, name = name, "<text>"
    config: VoiceConfig | None = None
    if text is not None:
        data = parse_yaml(text, ctx, document=_DOCUMENT, root=VOICE_ROOT)
        if not isinstance(data, Invalid):
            config = build_voice(ctx, data, VOICE_ROOT)
    return VoiceLoad(config, tuple(ctx.violations), MappingProxyType(dict(ctx.lines)), name)


def voice_data(config: VoiceConfig) -> dict[str, object]:
    """The configuration as plain data (what `dump_voice` writes): every field, except
    optional references that are not set, keys in the order of `VOICE_KEYS`."""
    data = _fields(config)
    return {key: data[key] for key in VOICE_KEYS if key in data}


def _fields(value: DataclassInstance) -> dict[str, object]:
    return {fd.name: _plain(getattr(value, fd.name))
            for fd in dataclasses.fields(value) if getattr(value, fd.name) is not None}


def _plain(value: object) -> object:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _fields(value)
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, GatewayTransport):
        return value.value
    return value


def dump_voice(config: VoiceConfig) -> str:
    """The configuration as a YAML document that `read_voice` loads back equal."""
    return dump_yaml(voice_data(config))


__all__ = [
    "VOICE_KEYS",
    "VOICE_ROOT",
    "VoiceLoad",
    "build_voice",
    "dump_voice",
    "read_voice",
    "voice_data",
]
