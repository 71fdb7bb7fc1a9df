"""Enterprise Voice (EV-1, EV-7): configuration model, call routing, features by mode.

    from trimaran.voice.routing import assignment, normalize, plan_call

    config = topology.voice                            # or read_voice("voice.yaml").config
    plan, policy = assignment(config, "sip:alice@example.com", "dc1")
    number = normalize(plan, "425 555 0123")            # Normalized("+14255550123", "national")
    plan_call(config, policy, number.number).attempts   # trunks to try, in order

Modules: `model` (frozen configuration types), `routing` (pure routing functions),
`features` (what works in each failure mode, and why not). The loader and the
rules are in `trimaran.topology.voice_loader` and `trimaran.topology.voice_rules`.
Nothing here does I/O or reads the clock.
"""

from __future__ import annotations

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

__all__ = [
    "DialPlan",
    "Gateway",
    "GatewayTransport",
    "NormalizationRule",
    "Route",
    "SiteVoice",
    "Trunk",
    "UserVoice",
    "VoiceConfig",
    "VoicePolicy",
]
