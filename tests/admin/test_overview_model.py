"""The deployment overview built from fake answers (SPEC OPS-3): what the status page shows
for servers up, draining, unhealthy and silent, for answers with fields missing or of the
wrong type, and the merged list of HA decisions."""

from __future__ import annotations

from typing import Any

from trimaran.admin.overview_model import (
    AgentEndpoint,
    Answer,
    ChangeLog,
    Gathered,
    build,
    decisions,
)
from trimaran.topology.loader import parse_topology
from trimaran.topology.model import Topology

TOPOLOGY = parse_topology("""
name: overview-test
sip_domain: trimaran.test
sites: [{name: dc1}, {name: dc2}, {name: w}]
pools:
  - name: fe1
    site: dc1
    role: frontend
    edition: enterprise
    backup_pool: fe2
    servers: [{name: fe1a, address: 127.0.21.11}, {name: fe1b, address: 127.0.21.12}]
    backend:
      principal: {address: 127.0.21.21}
      mirror: {address: 127.0.21.22}
      witness: {server: wit1}
  - name: fe2
    site: dc2
    role: frontend
    edition: enterprise
    backup_pool: fe1
    servers: [{name: fe2a, address: 127.0.21.31}]
    backend:
      principal: {address: 127.0.21.41}
  - name: dir
    site: dc1
    role: director
    servers: [{name: dir1, address: 127.0.21.51}]
  - name: wit
    site: w
    role: witness
    servers: [{name: wit1, address: 127.0.21.9}]
""")
AGENTS = (AgentEndpoint("fe1-principal", "fe1", "http://127.0.21.21:15432"),
          AgentEndpoint("fe1-mirror", "fe1", "http://127.0.21.22:15432"))
NOW = 1_800_000_000.0
HEALTHY = Answer(200, {"healthy": True, "reason": "serving"})
REFUSED = Answer(error="Connection refused")


def ok(body: dict[str, Any]) -> Answer:
    return Answer(200, body)


def frontend(**extra: Any) -> dict[str, Any]:
    """A Front End's /status with the fields the overview reads."""
    return {"role": "frontend", "mode": "full", "draining": False, "bindings": 3,
            "uptime": 12.5, "version": "0.2.0",
            "cms": {"version": 7, "master": "fe1", "term": 1, "pulled_at": NOW, "error": ""},
            "failover": {"fe1": {"state": "normal", "term": 0, "backup": "fe2", "since": 0.0,
                                 "mode": "", "history": []}},
            **extra}


def everything_up() -> dict[str, Any]:
    return {
        "health": {name: HEALTHY for name in ("fe1a", "fe1b", "fe2a", "dir1", "wit1")},
        "status": {"fe1a": ok(frontend(backup={"shipper": True, "lag": {
                       "state": "steady", "reason": "keeping up", "lag_seconds": 0.02,
                       "lag_changes": 1, "last_seq": 41, "applied_seq": 40,
                       "measured_at": NOW}})),
                   "fe1b": ok(frontend(backup={"shipper": False, "lag": None})),
                   "fe2a": ok(frontend(backup_registrar_of={
                       "pool": "fe1", "state": "up", "reason": "answering",
                       "silent_for": 0.1, "in_state_for": 30.0})),
                   "dir1": ok({"role": "director", "cms": {"version": 6, "master": "fe1",
                                                           "term": 1},
                               "pools": {"fe1": {"state": "up", "reason": "answering"}}})},
        "agents": {"fe1-principal": ok({"backend": "fe1", "role": "principal", "term": 3,
                                        "serving": True, "synchronous": True,
                                        "exposed": False,
                                        "instance": {"standby": {"lag_bytes": 0}},
                                        "decision": {"action": "stay", "reason": "healthy",
                                                     "rule": "R1", "at": NOW - 5}}),
                   "fe1-mirror": ok({"backend": "fe1", "role": "mirror", "term": 3,
                                     "serving": False, "synchronous": True})},
        "witness": {"wit1": ok({"fe1": {"term": 3, "principal": "fe1-principal",
                                        "exposed": False, "principal_silent_for": 0.4}})},
    }


def overview(changes: ChangeLog | None = None, topology: Topology = TOPOLOGY,
             **answers: Any) -> dict[str, Any]:
    return build(topology, AGENTS, Gathered(**answers), now=NOW, served_by="wit1",
                 changes=changes or ChangeLog())


def row(document: dict[str, Any], section: str, key: str, name: str) -> dict[str, Any]:
    found = [r for r in document[section] if r[key] == name]
    assert len(found) == 1, f"{section}: {name} appears {len(found)} times"
    result: dict[str, Any] = found[0]
    return result


def test_a_healthy_deployment_shows_every_server_up_with_its_details() -> None:
    doc = overview(**everything_up())
    assert [(s["name"], s["state"]) for s in doc["servers"]] == [
        ("fe1a", "up"), ("fe1b", "up"), ("fe2a", "up"), ("dir1", "up"), ("wit1", "up")]
    fe1a = row(doc, "servers", "name", "fe1a")
    assert (fe1a["bindings"], fe1a["mode"], fe1a["cms_version"]) == (3, "full", 7)
    fe1 = row(doc, "pools", "name", "fe1")
    assert (fe1["servers_up"], fe1["bindings"], fe1["failover"]["state"]) == (2, 6, "normal")
    assert {v["observer"] for v in fe1["seen_by"]} == {"fe2a", "dir1"}
    assert row(doc, "sites", "name", "dc1")["pools"] == ["fe1", "dir"]


def test_a_server_that_does_not_answer_is_down_with_the_reason() -> None:
    answers = everything_up()
    answers["health"]["fe2a"] = REFUSED
    answers["status"]["fe2a"] = REFUSED
    doc = overview(**answers)
    fe2a = row(doc, "servers", "name", "fe2a")
    assert (fe2a["state"], fe2a["reason"], fe2a["bindings"]) == ("down",
                                                                  "Connection refused", None)
    assert row(doc, "pools", "name", "fe2")["servers_up"] == 0
    direction = row(doc, "backup", "source", "fe2")
    assert (direction["state"], direction["reason"]) == ("unknown", "no server of fe2 answers")
    replica = row(doc["cms"], "replicas", "server", "fe2a")
    assert (replica["version"], replica["error"]) == (None, "Connection refused")


def test_draining_and_unhealthy_servers_are_told_apart_from_down_ones() -> None:
    answers = everything_up()
    answers["health"]["fe1a"] = Answer(503, {"healthy": False, "reason": "draining"})
    answers["health"]["fe1b"] = Answer(503, {"healthy": False,
                                            "reason": "resiliency mode: back end unreachable"})
    doc = overview(**answers)
    assert row(doc, "servers", "name", "fe1a")["state"] == "draining"
    fe1b = row(doc, "servers", "name", "fe1b")
    assert (fe1b["state"], fe1b["reason"]) == ("degraded",
                                               "resiliency mode: back end unreachable")


def test_answers_with_missing_or_wrongly_typed_fields_show_unknown_values() -> None:
    doc = overview(
        health={"fe1a": Answer(200, None, "HTTP 200, not JSON"), "fe1b": ok({})},
        status={"fe1a": Answer(500, {"error": "internal error"}),
                "fe1b": ok({"bindings": "many", "mode": 3, "cms": "v7", "failover": [],
                            "decisions": [{"action": "declare-dead"}, "junk"],
                            "backup": {"shipper": True, "lag": "0 s"},
                            "backup_registrar_of": {"state": "down"}}),
                "dir1": ok({"role": "director", "pools": ["fe1"]})},
        agents={"fe1-principal": ok({"recent": [{"action": "promote"}, None],
                                     "instance": "pg", "witness": 4})},
        witness={"wit1": ok({"fe1": "principal"})},
        watched={("wit1", "fe1"): Answer(404, {"error": "not watched"})})
    fe1b = row(doc, "servers", "name", "fe1b")
    assert (fe1b["state"], fe1b["bindings"], fe1b["mode"], fe1b["cms_version"]) == \
        ("up", None, None, None)
    assert row(doc, "servers", "name", "fe2a")["reason"] == "not asked"
    assert doc["failover"] == [] and doc["decisions"] == []
    assert row(doc, "backup", "source", "fe1")["state"] == "unknown"
    principal = doc["backends"][0]["nodes"][0]
    assert (principal["state"], principal["role"], principal["term"]) == ("up", None, None)
    assert doc["backends"][0]["witness"]["term"] is None


def test_the_failover_record_with_the_highest_term_wins() -> None:
    answers = everything_up()
    answers["status"]["fe2a"] = ok(frontend(failover={"fe1": {
        "state": "failed-over", "term": 2, "backup": "fe2", "since": NOW - 3,
        "mode": "disaster"}}))
    doc = overview(**answers)
    record = row(doc, "failover", "pool", "fe1")
    assert (record["state"], record["term"], record["reported_by"]) == ("failed-over", 2, "fe2a")
    assert row(doc, "pools", "name", "fe1")["failover"]["state"] == "failed-over"


def test_back_end_roles_terms_and_the_witness_view_are_shown_per_instance() -> None:
    answers = everything_up()
    answers["agents"]["fe1-mirror"] = Answer(error="no answer within 0.8 s")
    backend = overview(**answers)["backends"][0]
    assert (backend["pool"], backend["principal"], backend["term"]) == \
        ("fe1", "fe1-principal", 3)
    principal, mirror = backend["nodes"]
    assert principal["decision"]["action"] == "stay" and principal["lag_bytes"] == 0
    assert (mirror["state"], mirror["reason"]) == ("down", "no answer within 0.8 s")
    assert backend["witness"] == {"server": "wit1", "term": 3, "principal": "fe1-principal",
                                  "exposed": False, "principal_silent_for": 0.4}


def test_decisions_are_merged_once_each_newest_first() -> None:
    failover = {"fe1": {"state": "failed-over", "term": 1, "history": [
        {"at": NOW - 10, "action": "failover", "state": "failed-over", "term": 1,
         "reason": "fe1 lost"}]}}
    statuses = {  # both servers report the same record history: it is listed once
        "fe1a": ok({"failover": failover, "decisions": [
            {"action": "declare-dead", "server": "fe1b", "reason": "silent 10 s",
             "at": NOW - 30}]}),
        "fe2a": ok({"failover": failover})}
    agents = {"fe1-mirror": ok({"backend": "fe1", "recent": [
        {"action": "promote", "rule": "R4", "term": 4, "reason": "principal silent",
         "at": NOW - 20}]})}
    noticed = [{"at": NOW - 1, "kind": "cms", "by": "fe2a", "action": "master",
                "subject": "fe2", "reason": "the CMS master is fe2 (term 2)", "term": 2}]
    rows = decisions(Gathered(health={}, status=statuses, agents=agents), noticed)
    assert [(r["kind"], r["action"], r["subject"]) for r in rows] == [
        ("cms", "master", "fe2"), ("failover", "failover", "fe1"),
        ("backend", "promote", "fe1"), ("membership", "declare-dead", "fe1b")]
    assert rows[2]["by"] == "fe1-mirror" and rows[2]["reason"] == "principal silent"
    assert len(decisions(Gathered(health={}, status=statuses, agents=agents), noticed,
                         limit=2)) == 2


def test_changes_of_current_decisions_are_noticed_between_rounds() -> None:
    changes = ChangeLog()
    answers = everything_up()
    answers["status"]["fe2a"] = ok(frontend(
        auto_failover={"pool": "fe1", "action": "wait", "reason": "fe1 is up for us",
                       "leader": True},
        backup_registrar_of={"pool": "fe1", "state": "up", "reason": "answering",
                             "in_state_for": 30.0}))
    assert overview(changes, **answers)["decisions"] == []   # first sight: nothing changed
    assert overview(changes, **answers)["decisions"] == []   # the same again: still nothing
    answers["status"]["fe2a"] = ok(frontend(
        auto_failover={"pool": "fe1", "action": "failover",
                       "reason": "fe1 is down for us and for the witness", "leader": True},
        backup_registrar_of={"pool": "fe1", "state": "down", "reason": "silent for 3.0 s",
                             "in_state_for": 2.0},
        cms={"version": 9, "master": "fe2", "term": 2}))
    doc = overview(changes, **answers)
    noticed = {(d["kind"], d["by"], d["action"], d["subject"]): d for d in doc["decisions"]}
    assert noticed[("auto-failover", "fe2a", "failover", "fe1")]["reason"] == \
        "fe1 is down for us and for the witness"
    assert noticed[("liveness", "fe2a", "down", "fe1")]["at"] == NOW - 2.0
    assert noticed[("cms", "fe2a", "master", "fe2")]["term"] == 2
