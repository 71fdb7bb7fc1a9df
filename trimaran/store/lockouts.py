"""Account lockout after repeated failed digest responses (SPEC OPS-6), backend-neutral.

Theory of operation. A failed response (a wrong password or HA1 — the caller decides
what counts) is recorded against the user's AOR in the pool's store, so every server
of the pool counts into the same row and sees the same lock. The window slides: the
times of the last failures are kept (at most `LockoutPolicy.failures` - 1 of them,
those younger than the window); the failure that makes `failures` within `window`
seconds locks the account for `duration` seconds and clears the list. Failures while
locked are not counted (they neither extend nor renew the lock). A lock ends by
itself when `duration` has passed, or when an administrator unlocks the user (the
row is deleted).

`after_failure` is the whole rule, a pure function of the previous row and `now`;
both backends run it inside the transaction that reads and rewrites the row.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from trimaran.store.model import Lockout

#: Bounds of a policy: a row never keeps more than MAX_FAILURES - 1 times.
MAX_FAILURES = 1000


@dataclass(frozen=True, slots=True)
class LockoutPolicy:
    """`failures` failed responses within `window` seconds lock an account for
    `duration` seconds."""

    failures: int
    window: float
    duration: float

    def __post_init__(self) -> None:
        if not 1 <= self.failures <= MAX_FAILURES:
            raise ValueError(f"failures must be within 1..{MAX_FAILURES}")
        for name in ("window", "duration"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds")

    def describe(self) -> str:
        """The policy in words, for a Warning header or a log line."""
        return (f"{self.failures} failed authentications within {self.window:g} s lock "
                f"the account for {self.duration:g} s")


def after_failure(previous: Lockout | None, aor: str, policy: LockoutPolicy,
                  now: float) -> Lockout:
    """The row after one more failed response at `now` (see the module header)."""
    if previous is not None and previous.locked(now):
        return previous
    recent = tuple(t for t in (previous.failures if previous else ()) if t > now - policy.window)
    recent += (now,)
    if len(recent) >= policy.failures:
        return Lockout(aor, (), locked_at=now, locked_until=now + policy.duration)
    return Lockout(aor, recent[-(policy.failures - 1):])


def lockout_to_json(row: Lockout | None) -> dict[str, object] | None:
    """A row as the Directors are sent it (`trimaran.cms.directory`)."""
    if row is None:
        return None
    return {"aor": row.aor, "failures": list(row.failures), "locked_at": row.locked_at,
            "locked_until": row.locked_until}


def lockout_from_json(value: object) -> Lockout | None:
    """The row of `lockout_to_json` (None for null); ValueError when malformed."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError("a lockout is a JSON object")
    try:
        failures = tuple(float(t) for t in value.get("failures", ()))
        return Lockout(str(value["aor"]), failures[-MAX_FAILURES:],
                       float(value.get("locked_at", 0.0)),
                       float(value.get("locked_until", 0.0)))
    except (KeyError, TypeError) as exc:
        raise ValueError(f"malformed lockout: {exc}") from None


def encode_failures(failures: tuple[float, ...]) -> str:
    """The failure times as stored (a JSON array)."""
    return json.dumps(list(failures))


def decode_failures(text: str) -> tuple[float, ...]:
    """The failure times from their stored form."""
    return tuple(float(t) for t in json.loads(text))
