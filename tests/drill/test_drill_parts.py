"""The drill's pure parts: the report (verdicts, Markdown, JSON), the plan of drill
users, percentiles, and the load's tally of outcomes by time window."""

from __future__ import annotations

import json

from trimaran.drill.load import Clients, Load, Outcome, Rates
from trimaran.drill.report import Report, Step, Target
from trimaran.drill.runner import percentile
from trimaran.drill.users import DrillUser, plan
from trimaran.net.transport import Address


def _report() -> Report:
    report = Report("pool-loss", "A pool is lost.", ["kill it", "fail it over"], "pair", 20,
                    {"im": 9.0}, 0.0)
    fault = Step("fault", "kill se1", 0.0, detect=2.5, recover=6.0, acked_checked=40)
    fault.targets = [Target("command -> full service", 3.1, 30.0, "s", "DR-5"),
                     Target("acknowledged changes lost", 0.0, 0.0, "", "DR-2")]
    fault.requests, fault.failed = {"im": 50, "write": 20}, {"im": 3}
    fault.failure_reasons = {"im 503": 3}
    report.steps.append(fault)
    report.timeline.append({"at": 0.1, "kind": "fault", "text": "kill se1"})
    return report


def test_a_target_is_met_only_when_reached_within_its_limit() -> None:
    assert Target("x", 3.0, 5.0).ok
    assert not Target("x", 6.0, 5.0).ok
    assert not Target("x", None, 5.0).ok                # never reached
    assert Target("x", 100.0, None).ok                  # reported, not judged
    assert Target("lost", 0.0, 0.0, "").ok and not Target("lost", 1.0, 0.0, "").ok


def test_a_report_passes_only_when_every_step_meets_every_target() -> None:
    report = _report()
    assert report.passed
    report.steps[0].targets.append(Target("writes back", None, 10.0, "s", "BE-2"))
    assert not report.passed
    aborted = _report()
    aborted.aborted = "the back end is not a synchronous pair"
    assert not aborted.passed
    empty = _report()
    empty.steps.clear()
    assert not empty.passed


def test_the_markdown_report_has_the_verdict_targets_failures_and_timeline() -> None:
    text = _report().markdown()
    assert text.startswith("# Drill `pool-loss`: PASSED")
    assert "| command -> full service | 3.10 s | <= 30.00 s (DR-5) | yes |" in text
    assert "| time to detect | 2.50 s |" in text
    assert "Failures: im 503 x3" in text
    assert "| 0.10 | fault | kill se1 |" in text


def test_the_json_report_round_trips_with_its_verdicts() -> None:
    value = json.loads(_report().dumps())
    step = value["steps"][0]
    assert value["passed"] is True and step["passed"] is True
    assert step["rto_seconds"] == 6.0 and step["detect_seconds"] == 2.5
    assert [t["ok"] for t in step["targets"]] == [True, True]


def test_drill_users_are_spread_over_the_pools_and_kept_across_runs() -> None:
    first = plan([], 5, ["se1", "se2"])
    assert [u.pool for u in first] == ["se1", "se2", "se1", "se2", "se1"]
    assert len({u.name for u in first}) == 5 and len({u.password for u in first}) == 5
    more = plan(first, 7, ["se1", "se2"])
    assert len(more) == 2 and not {u.name for u in more} & {u.name for u in first}
    assert plan(first, 3, ["se1"]) == []


def test_percentile_is_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 99) == 99.0
    assert percentile(values, 50) == 50.0
    assert percentile([4.0], 99) == 4.0
    assert percentile([], 99) is None


def test_the_tally_counts_requests_and_failures_in_a_window() -> None:
    users = [DrillUser("u1", "pw", "se1"), DrillUser("u2", "pw", "se1")]
    servers = (Address("tcp", "127.0.0.1", 5060),)
    http = {"se1": ["http://127.0.0.1:8080"]}
    load = Load(users, "trimaran.test", Clients({"se1": servers}, http), Rates())
    load.outcomes += [Outcome(1.0, "im", True, "200"), Outcome(2.0, "im", False, "503"),
                      Outcome(3.0, "call", False, "480"), Outcome(9.0, "im", False, "408")]
    tally = load.tally(1.5, 5.0)
    assert tally.requests == {"im": 1, "call": 1}
    assert tally.failed == {"im": 1, "call": 1}
    assert tally.reasons == {"im 503": 1, "call 480": 1}
    assert load.tally(0.0).requests["im"] == 3


def test_users_are_spread_over_their_home_servers_with_the_backup_registrar_after() -> None:
    users = [DrillUser(f"u{i}", "pw", "se1") for i in range(3)]
    home = (Address("tcp", "127.0.9.1", 5060), Address("tcp", "127.0.9.2", 5060))
    backup = (Address("tcp", "127.0.9.3", 5060),)
    clients = Clients({"se1": home + backup}, {"se1": ["http://127.0.9.1:8080"]}, {"se1": 2})
    load = Load(users, "trimaran.test", clients, Rates())
    lists = [load.agents[u.name].config.servers for u in users]
    assert lists[0] == (home[0], home[1], backup[0])
    assert lists[1] == (home[1], home[0], backup[0])
    assert all(servers[-1] == backup[0] for servers in lists)   # never the backup first
