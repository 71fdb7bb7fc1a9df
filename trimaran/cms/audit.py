"""The audit log of operator commands, kept in the CMS (SPEC OPS-6).

Every failover, failback, site and server command appends one `AuditRecord`: who
(the admin token's name, the TLS client's name, or ``user@host`` of whoever holds the
run directory's key), when, what (the command and its arguments), the result
(``ok``, ``refused`` or ``error``, with the reason) and how long it took.

Records live in one CMS document per UTC day, ``audit/<yyyymmdd>``: a JSON list, at
most `MAX_PER_DAY` records (the oldest are dropped and counted), days older than
`RETAIN_DAYS` are removed when a new day starts. The master appends with
compare-and-set, so concurrent commands never lose each other's records, and the
documents replicate and survive a CMS failover like any other.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from trimaran.store.base import CmsRepository, Conflict

PREFIX = "audit/"
MAX_PER_DAY = 1000
RETAIN_DAYS = 90
RESULTS = ("ok", "refused", "error")
_APPEND_ATTEMPTS = 20


class AuditError(ValueError):
    """An audit record is malformed; the message names the field."""


@dataclass(frozen=True)
class AuditRecord:
    """One operator command and how it ended."""

    at: float                     # epoch seconds when the command started
    who: str
    command: str                  # e.g. "pool failover"
    args: dict[str, Any] = field(default_factory=dict)
    result: str = "ok"            # ok | refused | error
    reason: str = ""
    seconds: float = 0.0
    via: str = "key"              # how `who` was authenticated: token | key | cert

    def to_json(self) -> dict[str, Any]:
        """The record as stored."""
        return asdict(self)

    @classmethod
    def from_json(cls, raw: object) -> AuditRecord:
        """A record from JSON; `AuditError` naming the bad field."""
        if not isinstance(raw, dict):
            raise AuditError("an audit record is a JSON object")
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise AuditError(f"unknown audit field(s): {', '.join(sorted(unknown))}")
        for name, kind in (("at", (int, float)), ("seconds", (int, float)), ("who", str),
                           ("command", str), ("result", str), ("reason", str), ("via", str),
                           ("args", dict)):
            if name in raw and (not isinstance(raw[name], kind) or isinstance(raw[name], bool)):
                raise AuditError(f"audit.{name}: wrong type")
        if not raw.get("command") or len(str(raw["command"])) > 100:
            raise AuditError("audit.command: 1-100 characters")
        if raw.get("result", "ok") not in RESULTS:
            raise AuditError(f"audit.result: one of {', '.join(RESULTS)}")
        if len(json.dumps(raw.get("args", {}))) > 2000 or len(str(raw.get("reason", ""))) > 2000:
            raise AuditError("audit.args/reason: at most 2000 characters")
        return cls(at=float(raw.get("at", time.time())), who=str(raw.get("who", ""))[:200],
                   command=str(raw["command"]), args=dict(raw.get("args", {})),
                   result=str(raw.get("result", "ok")), reason=str(raw.get("reason", "")),
                   seconds=round(float(raw.get("seconds", 0.0)), 3),
                   via=str(raw.get("via", "key")))


def day_key(at: float) -> str:
    """The document holding records of the UTC day of `at`."""
    return PREFIX + time.strftime("%Y%m%d", time.gmtime(at))


def _parse(body: str) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except ValueError:
        value = None
    if not isinstance(value, dict) or not isinstance(value.get("records"), list):
        return {"records": [], "dropped": 0}
    return value


async def append(store: CmsRepository, record: AuditRecord, *, now: float) -> int:
    """Append `record` to its day's document on the master store (compare-and-set,
    retried on a concurrent append); return the document's new version."""
    key = day_key(record.at)
    for _ in range(_APPEND_ATTEMPTS):
        doc = await store.get(key)
        value: dict[str, Any] = _parse(doc.body) if doc is not None else \
            {"records": [], "dropped": 0}
        records = [*value["records"], record.to_json()]
        dropped = int(value.get("dropped", 0)) + max(0, len(records) - MAX_PER_DAY)
        body = json.dumps({"records": records[-MAX_PER_DAY:], "dropped": dropped})
        try:
            written = await store.put(key, body, now=now, check=True,
                                      expect_version=doc.version if doc else None)
        except Conflict:             # another append won: back off a little, read again
            await asyncio.sleep(random.uniform(0.0, 0.02))
            continue
        if doc is None:
            await _forget_old_days(store, now)
        return written.version
    raise Conflict(f"{key}: {_APPEND_ATTEMPTS} concurrent appends in a row")


async def _forget_old_days(store: CmsRepository, now: float) -> None:
    oldest = day_key(now - RETAIN_DAYS * 86400)
    for doc in await store.all():
        if doc.key.startswith(PREFIX) and doc.key < oldest:
            await store.remove(doc.key, now=now)


def records_of(documents: list[dict[str, Any]]) -> list[AuditRecord]:
    """Every audit record of a CMS snapshot's documents, oldest first."""
    out: list[AuditRecord] = []
    for doc in documents:
        if not str(doc.get("key", "")).startswith(PREFIX):
            continue
        for raw in _parse(str(doc.get("body", ""))).get("records", []):
            try:
                out.append(AuditRecord.from_json(raw))
            except AuditError:
                continue
    return sorted(out, key=lambda r: r.at)
