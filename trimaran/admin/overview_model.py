"""The deployment overview built from what every server answered (SPEC OPS-3): pure
functions and a small change log; no I/O, no clock (`now` is passed in).

Theory of operation
-------------------
`trimaran.admin.overview` asks every server, agent and witness of the topology for its
state in one round of concurrent requests and hands the answers to `build` as a
`Gathered`. Every answer is untrusted input: a server that did not answer, answered an
error or left a field out is shown as such (down with the reason, a value unknown),
never as an exception. `build` returns the JSON document of ``GET /status/deployment``:

=============  ======================================================================
``sites``      each site, its pools, and the `site fail` record when it is failed
``pools``      each pool: servers up, bindings, failover record, how others see it
``servers``    each server: ``up`` / ``draining`` / ``degraded`` (answers, unhealthy)
               / ``down`` (no answer), the reason, bindings, mode, CMS version
``backends``   each mirrored Back End: its agents' roles, terms, synchronisation,
               lag, last decision, and the witness's view
``backup``     both directions of each pair: state, lag in seconds and changes
``failover``   each pool's failover record (the highest term any server reported)
``cms``        the master and its term, and every server's replica version
``decisions``  recent HA decisions with their reasons, newest first (bounded)
=============  ======================================================================

Decisions come from the sources that keep a history (pool membership decisions,
mirroring agents' decision changes, failover record transitions) and, for the sources
that only report their current decision (automatic failover, liveness probes of the
paired pool by backup registrars, Directors and the witness, the CMS master), from the
`ChangeLog`, which notes when such a value changes between two rounds.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from trimaran.topology.model import Pool, PoolRole, Server, Topology

#: Decisions kept in the document (newest first).
DECISIONS_SHOWN = 40
#: Failover record transitions a Front End reports per pool in /status.
FAILOVER_HISTORY_SHOWN = 5

UP, DRAINING, DEGRADED, DOWN, UNKNOWN = "up", "draining", "degraded", "down", "unknown"

Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Answer:
    """One HTTP answer: its status (0 when nothing answered), its JSON object (None when
    the body was not one) and why nothing usable came back ("" when it did)."""

    status: int = 0
    body: Mapping[str, Any] | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        """True for a 200 answer with a JSON object."""
        return self.status == 200 and self.body is not None

    @property
    def why(self) -> str:
        """Why the answer is not usable, for people."""
        if self.error:
            return self.error
        return f"HTTP {self.status}" if self.status != 200 else "no JSON object in the answer"


@dataclass(frozen=True, slots=True)
class AgentEndpoint:
    """Where the mirroring agent beside one Back End instance answers."""

    name: str          # the instance, e.g. "fe1-principal"
    pool: str
    url: str           # base URL of the agent's admin API


@dataclass(frozen=True, slots=True)
class Gathered:
    """One round of answers. Keys: server names (``health``, ``status``), instance names
    (``agents``), witness server names (``witness``: GET /backends) and (witness server,
    pool) pairs (``watched``: GET /pools/{pool})."""

    health: Mapping[str, Answer]
    status: Mapping[str, Answer] = field(default_factory=dict)
    agents: Mapping[str, Answer] = field(default_factory=dict)
    witness: Mapping[str, Answer] = field(default_factory=dict)
    watched: Mapping[tuple[str, str], Answer] = field(default_factory=dict)
    failed_sites: Mapping[str, Any] = field(default_factory=dict)


class ChangeLog:
    """Changes of values that are reported without a history, noticed between rounds.

    The first value seen under a key is a starting point, not a change; afterwards every
    different value keeps its event (at most `limit`, oldest dropped first)."""

    def __init__(self, limit: int = 100) -> None:
        self._last: dict[tuple[str, ...], str] = {}
        self._events: deque[Json] = deque(maxlen=limit)

    def observe(self, key: tuple[str, ...], value: str, event: Json) -> None:
        """Remember `value` under `key`; keep `event` when `value` is a change."""
        previous = self._last.get(key)
        self._last[key] = value
        if previous is not None and previous != value:
            self._events.append(event)

    def events(self) -> list[Json]:
        """The events kept, oldest first."""
        return list(self._events)


# --- reading untrusted JSON ---------------------------------------------------------------

def _obj(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _num(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or \
            not math.isfinite(value):
        return None
    return float(value)


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(value: object, default: str = "") -> str:
    return value if isinstance(value, str) else default


def _flag(value: object) -> bool | None:
    return value if isinstance(value, bool) else None


def _body(answer: Answer | None) -> Mapping[str, Any]:
    return answer.body if answer is not None and answer.ok and answer.body is not None else {}


# --- the document -------------------------------------------------------------------------

def build(topology: Topology, agents: Sequence[AgentEndpoint], gathered: Gathered, *,
          now: float, served_by: str, changes: ChangeLog) -> Json:
    """The overview document of one round (see the module docstring)."""
    servers = [server_row(srv, pool, gathered.health.get(srv.name),
                          gathered.status.get(srv.name))
               for pool in topology.pools for srv in pool.servers]
    failover = failover_records(gathered.status)
    seen_by = liveness(gathered)
    cms = cms_view(topology, gathered.status)
    _note_changes(changes, gathered, seen_by, cms, now)
    return {
        "deployment": topology.name, "domain": topology.sip_domain, "served_by": served_by,
        "generated_at": now,
        "sites": sites(topology, gathered.failed_sites),
        "pools": [pool_row(pool, servers, failover.get(pool.name), seen_by.get(pool.name, []))
                  for pool in topology.pools],
        "servers": servers,
        "backends": backends(topology, agents, gathered),
        "backup": backup_directions(topology, gathered.status),
        "failover": [failover[name] for name in sorted(failover)],
        "cms": cms,
        "decisions": decisions(gathered, changes.events()),
    }


def server_row(server: Server, pool: Pool, health: Answer | None,
               status: Answer | None) -> Json:
    """One server: its state and why, and what its /status says (None when unknown)."""
    detail = _body(status)
    state, reason = server_state(health or Answer(error="not asked"), detail)
    return {
        "name": server.name, "pool": pool.name, "site": pool.site_of(server),
        "role": pool.role.value, "address": server.address, "sip_port": server.sip_port,
        "admin_port": server.admin_port, "state": state, "reason": reason,
        "bindings": _int(detail.get("bindings")), "mode": _text(detail.get("mode")) or None,
        "cms_version": _int(_obj(detail.get("cms")).get("version")),
        "uptime": _num(detail.get("uptime")), "version": _text(detail.get("version")) or None,
    }


def server_state(health: Answer, status: Mapping[str, Any]) -> tuple[str, str]:
    """(``up`` | ``draining`` | ``degraded`` | ``down``, why) from /health and /status."""
    if health.status == 0:
        return DOWN, health.why
    reason = _text(_obj(health.body).get("reason"))
    if status.get("draining") is True or reason == "draining":
        return DRAINING, "draining: new sign-ins refused, clients moving away"
    if health.status == 200:
        return UP, reason or "serving"
    return DEGRADED, reason or health.why


def pool_row(pool: Pool, servers: Sequence[Json], failover: Json | None,
             seen_by: list[Json]) -> Json:
    """One pool: its servers' states summed up, its failover record, its liveness as
    others see it."""
    members = [row for row in servers if row["pool"] == pool.name]
    return {
        "name": pool.name, "site": pool.site, "sites": list(pool.sites), "role": pool.role.value,
        "edition": pool.edition.value if pool.edition else None,
        "paired_with": pool.paired_with, "backup_registrar": pool.backup_registrar,
        "auto_failover": pool.auto_failover,
        "servers": [row["name"] for row in members],
        "servers_up": sum(1 for row in members if row["state"] == UP),
        "bindings": sum(row["bindings"] or 0 for row in members),
        "failover": failover, "seen_by": seen_by,
    }


def sites(topology: Topology, failed: Mapping[str, Any]) -> list[Json]:
    """Each site with its pools, and its `site fail` record (mode, since) when failed."""
    out = []
    for site in topology.sites:
        record = _obj(failed.get(site.name))
        out.append({
            "name": site.name, "kind": site.kind.value,
            "pools": [p.name for p in topology.pools if site.name in p.sites],
            "failed": {"mode": _text(record.get("mode"), "unknown"),
                       "since": _num(record.get("since"))} if site.name in failed else None})
    return out


def failover_records(statuses: Mapping[str, Answer]) -> dict[str, Json]:
    """Each pool's failover record: of those reported, the one with the highest term
    (the rule every server follows, DR-7)."""
    best: dict[str, Json] = {}
    for server, answer in sorted(statuses.items()):
        for pool, raw in _obj(_body(answer).get("failover")).items():
            record = _obj(raw)
            term = _int(record.get("term"))
            if term is None or not isinstance(pool, str):
                continue
            if pool in best and best[pool]["term"] >= term:
                continue
            best[pool] = {"pool": pool, "state": _text(record.get("state"), UNKNOWN),
                          "term": term, "backup": _text(record.get("backup")) or None,
                          "since": _num(record.get("since")),
                          "mode": _text(record.get("mode")) or None, "reported_by": server}
    return best


def liveness(gathered: Gathered) -> dict[str, list[Json]]:
    """Per pool, how the servers that probe it see it: the backup registrar's servers,
    the Directors and the witness (DR-8, DR-10)."""
    seen: dict[str, list[Json]] = {}

    def add(observer: str, pool: object, view: Mapping[str, Any]) -> None:
        if isinstance(pool, str) and pool:
            seen.setdefault(pool, []).append({
                "observer": observer, "state": _text(view.get("state"), UNKNOWN),
                "reason": _text(view.get("reason")),
                "in_state_for": _num(view.get("in_state_for"))})

    for server, answer in sorted(gathered.status.items()):
        body = _body(answer)
        partner = _obj(body.get("backup_registrar_of"))
        if partner:
            add(server, partner.get("pool"), partner)
        if body.get("role") == PoolRole.DIRECTOR.value:
            for pool, view in sorted(_obj(body.get("pools")).items()):
                add(server, pool, _obj(view))
    for (witness, pool), answer in sorted(gathered.watched.items()):
        if answer.ok:
            add(witness, pool, _body(answer))
    return seen


def cms_view(topology: Topology, statuses: Mapping[str, Answer]) -> Json:
    """The CMS master and term (the highest term reported), and every replica."""
    replicas = []
    for pool in topology.pools:
        if pool.role not in (PoolRole.FRONTEND, PoolRole.DIRECTOR):
            continue
        for srv in pool.servers:
            answer = statuses.get(srv.name)
            cms = _obj(_body(answer).get("cms"))
            replicas.append({
                "server": srv.name, "version": _int(cms.get("version")),
                "master": _text(cms.get("master")) or None, "term": _int(cms.get("term")),
                "pulled_at": _num(cms.get("pulled_at")), "error": _replica_error(answer, cms)})
    known = [r for r in replicas if r["master"] is not None and r["term"] is not None]
    top = max(known, key=lambda r: (r["term"], r["version"] or 0), default=None)
    return {"master": top["master"] if top else None, "term": top["term"] if top else None,
            "version": max((r["version"] for r in replicas if r["version"] is not None),
                           default=None),
            "reported_by": top["server"] if top else None, "replicas": replicas}


def _replica_error(answer: Answer | None, cms: Mapping[str, Any]) -> str:
    if cms:
        return _text(cms.get("error"))
    if answer is None:
        return "not asked"
    return "no CMS copy reported" if answer.ok else answer.why


def backends(topology: Topology, agents: Sequence[AgentEndpoint],
             gathered: Gathered) -> list[Json]:
    """Each mirrored Back End: its agents' view of their instance, the witness's view."""
    out = []
    for pool in topology.pools:
        mine = [a for a in agents if a.pool == pool.name]
        if not mine:
            continue
        nodes = [agent_row(a, gathered.agents.get(a.name)) for a in mine]
        witness = next((_witness_view(_obj(_body(answer).get(pool.name)), server)
                        for server, answer in sorted(gathered.witness.items())
                        if pool.name in _body(answer)), None)
        serving = [n for n in nodes if n["role"] == "principal" and n["serving"]]
        out.append({"pool": pool.name, "nodes": nodes, "witness": witness,
                    "principal": serving[0]["name"] if len(serving) == 1 else None,
                    "term": max((n["term"] for n in nodes if n["term"] is not None),
                                default=None)})
    return out


def agent_row(agent: AgentEndpoint, answer: Answer | None) -> Json:
    """One Back End instance as its agent reports it (down with the reason when silent)."""
    body = _body(answer)
    standby = _obj(_obj(body.get("instance")).get("standby"))
    decision = _obj(body.get("decision"))
    return {
        "name": agent.name, "state": UP if body else DOWN,
        "reason": "" if body else (answer.why if answer is not None else "not asked"),
        "role": _text(body.get("role")) or None, "term": _int(body.get("term")),
        "serving": _flag(body.get("serving")), "synchronous": _flag(body.get("synchronous")),
        "exposed": _flag(body.get("exposed")), "policy": _text(body.get("policy")) or None,
        "lag_bytes": _int(standby.get("lag_bytes")),
        "partner_contact_age": _num(body.get("partner_contact_age")),
        "witness_contact_age": _num(_obj(body.get("witness")).get("contact_age")),
        "decision": {"action": _text(decision.get("action")),
                     "reason": _text(decision.get("reason")),
                     "rule": _text(decision.get("rule")),
                     "at": _num(decision.get("at"))} if decision else None,
    }


def _witness_view(view: Mapping[str, Any], server: str) -> Json:
    return {"server": server, "term": _int(view.get("term")),
            "principal": _text(view.get("principal")) or None,
            "exposed": _flag(view.get("exposed")),
            "principal_silent_for": _num(view.get("principal_silent_for"))}


def backup_directions(topology: Topology, statuses: Mapping[str, Answer]) -> list[Json]:
    """Both directions of every pair, each as measured by its source pool's shipping
    server (``unknown`` with the reason when no such measurement came back)."""
    out = []
    for pool in topology.pools:
        target = pool.paired_with
        if pool.role is not PoolRole.FRONTEND or target is None:
            continue
        answered = [srv.name for srv in pool.servers if _body(statuses.get(srv.name))]
        row: Json = {"source": pool.name, "target": target, "state": UNKNOWN,
                     "reason": f"no server of {pool.name} answers", "lag_seconds": None,
                     "lag_changes": None, "applied_seq": None, "last_seq": None,
                     "measured_at": None, "reported_by": None}
        if answered:
            row["reason"] = "not measured yet"
        for server in answered:
            backup = _obj(_body(statuses.get(server)).get("backup"))
            lag = _obj(backup.get("lag"))
            if backup.get("shipper") is not True or not lag:
                continue
            row.update(state=_text(lag.get("state"), UNKNOWN), reason=_text(lag.get("reason")),
                       lag_seconds=_num(lag.get("lag_seconds")),
                       lag_changes=_int(lag.get("lag_changes")),
                       applied_seq=_int(lag.get("applied_seq")),
                       last_seq=_int(lag.get("last_seq")),
                       measured_at=_num(lag.get("measured_at")), reported_by=server)
            break
        out.append(row)
    return out


# --- decisions ------------------------------------------------------------------------------

def decision(at: float, kind: str, by: str, action: str, subject: str, reason: str,
             term: int | None = None) -> Json:
    """One row of the decisions list."""
    return {"at": at, "kind": kind, "by": by, "action": action, "subject": subject,
            "reason": reason, "term": term}


def decisions(gathered: Gathered, noticed: Iterable[Json],
              limit: int = DECISIONS_SHOWN) -> list[Json]:
    """Every decision reported or noticed, each once, newest first, at most `limit`."""
    rows: list[Json] = [*noticed]
    for server, answer in sorted(gathered.status.items()):
        body = _body(answer)
        rows += _membership(server, body)
        rows += _failover_history(body)
    for name, answer in sorted(gathered.agents.items()):
        body = _body(answer)
        for raw in _list(body.get("recent")):
            entry = _obj(raw)
            at = _num(entry.get("at"))
            if at is not None:
                rows.append(decision(at, "backend", name, _text(entry.get("action")),
                                     _text(body.get("backend")), _text(entry.get("reason")),
                                     _int(entry.get("term"))))
    unique = {(r["at"], r["kind"], r["by"], r["action"], r["subject"], r["reason"]): r
              for r in rows}
    return sorted(unique.values(), key=lambda r: r["at"], reverse=True)[:limit]


def _membership(server: str, body: Mapping[str, Any]) -> list[Json]:
    rows = []
    for raw in _list(body.get("decisions")):
        entry = _obj(raw)
        at = _num(entry.get("at"))
        if at is not None:
            rows.append(decision(at, "membership", server, _text(entry.get("action")),
                                 _text(entry.get("server")), _text(entry.get("reason"))))
    return rows


def _failover_history(body: Mapping[str, Any]) -> list[Json]:
    rows = []
    for pool, raw in _obj(body.get("failover")).items():
        for event in map(_obj, _list(_obj(raw).get("history"))):
            at = _num(event.get("at"))
            if at is not None and isinstance(pool, str):
                rows.append(decision(at, "failover", "cms", _text(event.get("action")), pool,
                                     f"{_text(event.get('state'))}: "
                                     f"{_text(event.get('reason'))}",
                                     _int(event.get("term"))))
    return rows


def _note_changes(changes: ChangeLog, gathered: Gathered, seen_by: Mapping[str, list[Json]],
                  cms: Mapping[str, Any], now: float) -> None:
    """Feed the change log with the values reported without a history."""
    for pool, views in seen_by.items():
        for view in views:
            since = now - view["in_state_for"] if view["in_state_for"] is not None else now
            changes.observe(("liveness", view["observer"], pool), view["state"],
                            decision(round(since, 3), "liveness", view["observer"],
                                     view["state"], pool, view["reason"]))
    for server, answer in sorted(gathered.status.items()):
        auto = _obj(_body(answer).get("auto_failover"))
        if auto and auto.get("leader") is True:
            action, reason = _text(auto.get("action")), _text(auto.get("reason"))
            changes.observe(("auto-failover", server), f"{action}\n{reason}",
                            decision(now, "auto-failover", server, action,
                                     _text(auto.get("pool")), reason))
    if cms.get("master") is not None:
        master, term = cms["master"], cms["term"]
        changes.observe(("cms",), f"{master}\n{term}",
                        decision(now, "cms", str(cms["reported_by"]), "master", master,
                                 f"the CMS master is {master} (term {term})", term))
