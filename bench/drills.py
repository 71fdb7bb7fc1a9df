"""Every `trimaran drill` scenario at scale, against the model's published figures
(SPEC OPS-2; FE-2, FE-3, BE-2, DR-2, DR-5, DR-6, DR-9, DIR-2).

Starts (`trimaran up`) `examples/drill.yaml` in a temporary directory: two sites, each
with an Enterprise Front End pool of two servers and a mirrored Back End, the pools
paired, the witness and a Director pool of two servers in a third site. Then runs each
scenario in turn,

    trimaran drill SCENARIO --dir RUNDIR --json --report bench/results/drills/SCENARIO.md \
        --users N --rate R

(N users, default 1,000, signed in through the Directors, plus one spare for the probes;
R requests/s of IM, writes, presence and calls, default 100), reads the JSON report,
and writes `bench/results/drills.md`: one row per step of each scenario (detection,
RTO, its targets, acknowledged changes lost, failed requests, users not recovered) and
the measured values next to the model's published figures (pool failover RTO 15-20 min
in SfB 2015, 30 min in Lync 2013; RPO 5 min, 30 min in Lync 2013; Back End mirroring
failover RTO/RPO 5 min; CMS failover 5 min; a Front End or Director server failure is
handled automatically, with no published figure).

A scenario that needs root (backend-partition, wan-cut: netfilter) is reported as
skipped when not run as root. One that fails, aborts or hangs is recorded and the run
goes on; unless it passed, the deployment is stopped and started again, in a fresh run
directory, before the next scenario (a passed drill leaves it as it found it).

    ./run bench drills [--users 1000] [--rate 100] [--scenarios server-kill,pool-loss]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_lines

ROOT = Path(__file__).resolve().parents[1]
TOPOLOGY = ROOT / "examples" / "drill.yaml"
RESULTS = ROOT / "bench" / "results" / "drills.md"
REPORTS = ROOT / "bench" / "results" / "drills"
SCENARIOS = ("server-kill", "server-freeze", "backend-principal-kill", "backend-partition",
             "pool-loss", "site-loss", "wan-cut", "director-kill")
NEEDS_ROOT = frozenset({"backend-partition", "wan-cut"})
DRILL_TIMEOUT = 1200.0        # bound on one `trimaran drill` run, sign-in included
MINUTE = 60.0
# The model's published figures, seconds
POOL_RTO = (15 * MINUTE, 30 * MINUTE)       # SfB 2015 (15-20 min), Lync 2013 (30 min)
POOL_RPO = (5 * MINUTE, 30 * MINUTE)        # SfB 2015 / Lync 2013
BACKEND_RTO = BACKEND_RPO = 5 * MINUTE      # synchronous mirroring with a witness
CMS_RTO = 5 * MINUTE
FAILBACK = (60 * MINUTE, 20_000)            # up to 60 min for 20,000 users
BACKUP_SYNC = 2 * MINUTE                    # the Backup Service's default interval
CLK_TCK = os.sysconf("SC_CLK_TCK")


def trimaran(*args: str, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
    """Run the CLI from the project's interpreter; never raises on its exit status."""
    return subprocess.run([sys.executable, "-m", "trimaran", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


@dataclass
class Outcome:
    """What became of one scenario."""

    scenario: str
    verdict: str                              # PASSED, FAILED, ABORTED, skipped, ...
    report: dict[str, Any] | None = None
    wall: float = 0.0                         # seconds of the `trimaran drill` command
    problem: str = ""                         # why it did not pass, in a line
    restarted: bool = False                   # the deployment was restarted after it
    cpu: Cpu | None = None                    # what the machine's CPUs did meanwhile

    @property
    def passed(self) -> bool:
        return self.verdict == "PASSED"


# -- where the CPU went ------------------------------------------------------------------


def host_busy_seconds() -> float:
    """CPU seconds the whole host has been busy, all CPUs together (/proc/stat)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        return (sum(fields) - fields[3] - fields[4]) / CLK_TCK    # all but idle and iowait
    return 0.0


def deployment_ticks(work: Path) -> dict[int, int]:
    """utime+stime ticks of each live process of the deployments in `work`: those whose
    command line names the directory (servers, agents, PostgreSQL) and their
    descendants (PostgreSQL backends)."""
    parent: dict[int, int] = {}
    ticks: dict[int, int] = {}
    ours: set[int] = set()
    marker = str(work).encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            rest = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            args = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, IndexError):
            continue
        parent[pid], ticks[pid] = int(rest[1]), int(rest[11]) + int(rest[12])
        if marker in args:
            ours.add(pid)
    grown = True
    while grown:
        more = {pid for pid, ppid in parent.items() if ppid in ours and pid not in ours}
        ours |= more
        grown = bool(more)
    return {pid: ticks[pid] for pid in ours}


def children_seconds() -> float:
    """CPU seconds of this process's finished children (the drill commands)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True)
class Cpu:
    """Average cores busy during a drill: the deployment's processes, the drill command
    (its simulated clients), and everything else on the machine."""

    deployment: float
    drill: float
    others: float

    @classmethod
    def measure(cls, work: Path, before: tuple[float, dict[int, int], float],
                wall: float) -> Cpu:
        host, ticks, children = before
        now = deployment_ticks(work)
        ours = sum(t - ticks.get(pid, 0) for pid, t in now.items()) / CLK_TCK
        drill = children_seconds() - children
        others = host_busy_seconds() - host - ours - drill
        span = max(wall, 1e-3)
        return cls(ours / span, drill / span, max(0.0, others) / span)

    @staticmethod
    def sample(work: Path) -> tuple[float, dict[int, int], float]:
        return host_busy_seconds(), deployment_ticks(work), children_seconds()


class Deployment:
    """The deployment under drill, in `work`; each start gets a fresh run directory."""

    def __init__(self, work: Path, topology: Path) -> None:
        self.work = work
        self.topology = topology
        self.starts = 0
        self.rundir = work / "run0"
        self.start_seconds: list[float] = []

    def up(self) -> None:
        self.starts += 1
        self.rundir = self.work / f"run{self.starts}"
        started = time.monotonic()
        done = trimaran("up", str(self.topology), "--dir", str(self.rundir))
        if done.returncode != 0:
            raise RuntimeError(f"trimaran up failed ({done.returncode}):\n{done.stdout}\n"
                               f"{done.stderr}")
        self.start_seconds.append(time.monotonic() - started)
        print(f"deployment up in {self.start_seconds[-1]:.1f} s ({self.rundir})", flush=True)

    def down(self) -> None:
        done = trimaran("down", "--dir", str(self.rundir))
        if done.returncode != 0:
            print(f"warning: trimaran down: {done.stderr.strip()}", file=sys.stderr)

    def restart(self) -> None:
        self.down()
        self.up()


def drill(deployment: Deployment, scenario: str, users: int, rate: float,
          reports: Path, logs: Path) -> Outcome:
    """Run one scenario; its outcome with the parsed JSON report when there is one."""
    if scenario in NEEDS_ROOT and os.geteuid() != 0:
        return Outcome(scenario, "skipped: needs root")
    report_file = reports / f"{scenario}.md"
    args = ("drill", scenario, "--dir", str(deployment.rundir), "--json", "--report",
            str(report_file), "--users", str(users), "--rate", f"{rate:g}")
    before = Cpu.sample(deployment.work)
    started = time.monotonic()
    try:
        done = trimaran(*args, timeout=DRILL_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        wall = time.monotonic() - started
        _save_log(logs, scenario, _text(exc.stderr), _text(exc.stdout))
        return Outcome(scenario, "ABORTED", wall=wall,
                       problem=f"no result within {DRILL_TIMEOUT:.0f} s (killed)",
                       cpu=Cpu.measure(deployment.work, before, wall))
    wall = time.monotonic() - started
    cpu = Cpu.measure(deployment.work, before, wall)
    _save_log(logs, scenario, done.stderr, done.stdout)
    try:
        report = json.loads(done.stdout)
    except ValueError:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        refused = "cannot run drill" in done.stderr     # refused before any fault
        return Outcome(scenario, "could not run" if refused else "CRASHED", wall=wall,
                       problem=f"exit {done.returncode}: {last}", cpu=cpu)
    if report.get("aborted"):
        return Outcome(scenario, "ABORTED", report, wall, str(report["aborted"]), cpu=cpu)
    if report.get("passed"):
        return Outcome(scenario, "PASSED", report, wall, cpu=cpu)
    missed = [f"{s['name']}: {t['what']}" for s in report.get("steps", [])
              for t in s.get("targets", []) if not t.get("ok")]
    return Outcome(scenario, "FAILED", report, wall, "missed " + "; ".join(missed), cpu=cpu)


def _text(raw: str | bytes | None) -> str:
    if raw is None:
        return ""
    return raw.decode(errors="replace") if isinstance(raw, bytes) else raw


def _save_log(logs: Path, scenario: str, stderr: str, stdout: str) -> None:
    """Keep what the drill printed: its progress (stderr) and its JSON report."""
    logs.mkdir(parents=True, exist_ok=True)
    (logs / f"{scenario}.log").write_text(stderr)
    (logs / f"{scenario}.json").write_text(stdout)


def run_all(deployment: Deployment, scenarios: list[str], args: argparse.Namespace,
            logs: Path) -> list[Outcome]:
    """Every scenario in turn; the deployment restarted after one that did not pass
    (the rest are not run when it cannot be started again)."""
    outcomes: list[Outcome] = []
    for index, scenario in enumerate(scenarios):
        print(f"== drill {scenario} ({args.users} users, {args.rate:g} requests/s)",
              flush=True)
        outcome = drill(deployment, scenario, args.users, args.rate, args.reports, logs)
        outcomes.append(outcome)
        print(f"   {outcome.verdict} in {outcome.wall:.0f} s {outcome.problem}", flush=True)
        ran = outcome.verdict in ("PASSED", "FAILED", "ABORTED", "CRASHED")
        if not ran or outcome.passed or index == len(scenarios) - 1:
            continue
        outcome.restarted = True
        print("   restarting the deployment", flush=True)
        try:
            deployment.restart()
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            why = str(exc).splitlines()[0]
            outcomes += [Outcome(s, "not run", problem=f"the deployment did not restart: "
                                 f"{why}") for s in scenarios[index + 1:]]
            break
    return outcomes


# -- the report ----------------------------------------------------------------------------


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def measured(target: dict[str, Any]) -> str:
    amount, unit = target.get("measured"), target.get("unit", "")
    if amount is None:
        return "not reached"
    return f"{amount:.2f} s" if unit == "s" else f"{amount:g}{(' ' + unit) if unit else ''}"


def bound(target: dict[str, Any]) -> str:
    limit, unit = target.get("limit"), target.get("unit", "")
    if limit is None:
        return "no bound"
    shown = f"{limit:g} s" if unit == "s" else f"{limit:g}{(' ' + unit) if unit else ''}"
    return f"<= {shown}"


def key_targets(step: dict[str, Any]) -> str:
    """The step's targets but the loss check (it has its own column), one a line."""
    cells = []
    for t in step.get("targets", []):
        if t["what"] == "acknowledged changes lost":
            continue
        spec = f"{t['spec']} " if t.get("spec") else ""
        verdict = "ok" if t.get("ok") else "**MISSED**"
        cells.append(f"{spec}{t['what']}: {measured(t)} / {bound(t)} {verdict}")
    return "<br>".join(cells) or "-"


def step_row(scenario: str, step: dict[str, Any]) -> str:
    failed, requests = sum(step["failed"].values()), sum(step["requests"].values())
    lost_ok = all(t.get("ok") for t in step.get("targets", [])
                  if t["what"] == "acknowledged changes lost")
    lost = f"{step['lost']} / {step['acked_checked']}" + ("" if lost_ok else " **MISSED**")
    verdict = "passed" if step.get("passed") else "**FAILED**"
    return (f"| {scenario} | {step['name']} | {verdict} | {seconds(step['detect_seconds'])} "
            f"| {seconds(step['rto_seconds'])} | {key_targets(step)} | {lost} "
            f"| {failed} / {requests} | {step['users_not_recovered']} |")


def steps_table(outcomes: list[Outcome]) -> list[str]:
    rows = ["| scenario | step | result | detect | RTO | targets (measured / target) "
            "| acknowledged changes lost / checked | failed / requests "
            "| users not recovered |", "|---|---|---|---|---|---|---|---|---|"]
    for o in outcomes:
        steps = (o.report or {}).get("steps", [])
        rows += [step_row(o.scenario, s) for s in steps]
        if not steps or o.verdict == "ABORTED":
            why = f": {o.problem}" if o.problem else ""
            rows.append(f"| {o.scenario} | - | {o.verdict}{why} | - | - | - | - | - | - |")
    return rows


def runs_table(outcomes: list[Outcome]) -> list[str]:
    rows = ["| scenario | result | drill duration | command (with sign-in) "
            "| cores busy: deployment / drill clients / others | report |",
            "|---|---|---|---|---|---|"]
    for o in outcomes:
        duration = seconds((o.report or {}).get("duration"))
        link = f"[drills/{o.scenario}.md](drills/{o.scenario}.md)" if o.report else "-"
        note = f" ({o.problem})" if o.problem and o.verdict != "FAILED" else ""
        restarted = "; deployment restarted after it" if o.restarted else ""
        cpu = "-" if o.cpu is None else \
            f"{o.cpu.deployment:.2f} / {o.cpu.drill:.2f} / {o.cpu.others:.2f}"
        rows.append(f"| {o.scenario} | {o.verdict}{note}{restarted} | {duration} "
                    f"| {seconds(o.wall) if o.wall else '-'} | {cpu} | {link} |")
    return rows


# -- the comparison with the model -----------------------------------------------------------


def find_step(outcomes: list[Outcome], scenario: str, name: str) -> dict[str, Any] | None:
    for o in outcomes:
        if o.scenario == scenario and o.report is not None:
            for step in o.report.get("steps", []):
                if step["name"] == name:
                    return dict(step)
    return None


def find_target(step: dict[str, Any] | None, part: str) -> dict[str, Any] | None:
    """The step's first target whose description contains `part`."""
    for t in (step or {}).get("targets", []):
        if part in t["what"]:
            return dict(t)
    return None


def value(target: dict[str, Any] | None) -> float | None:
    """A target's measured value (None: no such target, or not reached)."""
    measured = None if target is None else target.get("measured")
    return None if measured is None else float(measured)


def shown(target: dict[str, Any] | None) -> str:
    """A target's measured value for the table."""
    if target is None:
        return "-"
    return measured(target)


def users_moved(outcomes: list[Outcome], scenario: str, fallback: int) -> int:
    """How many users the scenario failed over and back (from its timeline)."""
    for o in outcomes:
        if o.scenario == scenario and o.report is not None:
            for event in o.report.get("timeline", []):
                found = re.search(r"the (\d+) users (home|served by the backup pool)",
                                  str(event.get("text", "")))
                if found:
                    return int(found.group(1))
    return fallback


def ratio(model: float | tuple[float, float], ours: float | None) -> str:
    """model / ours, as a factor ("x12"); a range for a range of model figures."""
    if ours is None:
        return "-"
    if ours <= 0:
        return "∞ (nothing lost)"
    if isinstance(model, tuple):
        return f"x{model[0] / ours:,.0f} to x{model[1] / ours:,.0f}"
    return f"x{model / ours:,.0f}"


def comparisons(outcomes: list[Outcome], users: int) -> Iterator[str]:
    """Rows: what, scenario (step), ours, the model's figure, model / ours."""
    for name in ("server-kill", "server-freeze"):
        step = find_step(outcomes, name, "fault")
        if step is not None:
            back = find_target(step, "affected users")
            yield (f"| Front End server failure: its users registered again (p99) "
                   f"| {name} (fault) | {shown(back)}; peers detect it in "
                   f"{seconds(step['detect_seconds'])} | automatic, no published time | - |")
    for name in ("backend-principal-kill", "backend-partition"):
        step = find_step(outcomes, name, "fault")
        if step is None:
            continue
        rto = find_target(step, "writes succeed again")
        yield (f"| Back End failover (mirroring + witness) RTO: writes succeed again "
               f"| {name} (fault) | {shown(rto)} | 5 min | {ratio(BACKEND_RTO, value(rto))} |")
        yield (f"| Back End failover RPO: acknowledged writes lost | {name} (fault) "
               f"| {step['lost']} of {step['acked_checked']} | 5 min "
               f"| {ratio(BACKEND_RPO, float(step['lost']) if step['lost'] else 0.0)} |")
    for name in ("pool-loss", "site-loss"):
        yield from _pool_rows(outcomes, name, users)
    step = find_step(outcomes, "wan-cut", "heal")
    if step is not None:
        yield (f"| Backup Service after a WAN cut: steady again | wan-cut (heal) "
               f"| {seconds(step['rto_seconds'])} | syncs every 2 min "
               f"| {ratio(BACKUP_SYNC, step['rto_seconds'])} |")
    step = find_step(outcomes, "director-kill", "fault")
    if step is not None:
        yield (f"| Director server failure: new sign-ins succeed again | director-kill (fault) "
               f"| {seconds(step['rto_seconds'])} | automatic, no published time | - |")


def _pool_rows(outcomes: list[Outcome], name: str, users: int) -> Iterator[str]:
    step = find_step(outcomes, name, "fault")
    if step is None:
        return
    command = find_target(step, "command -> every user")
    end_to_end = find_target(step, "fault -> every user")
    yield (f"| Pool failover RTO: command -> every user in full service on the backup "
           f"pool | {name} (fault) | {shown(command)} (end to end from the fault "
           f"{shown(end_to_end)}) | 15-20 min (SfB 2015), 30 min (Lync 2013) "
           f"| {ratio(POOL_RTO, value(command))} |")
    oldest = value(find_target(step, "oldest acknowledged change lost"))
    lag = value(find_target(step, "backup lag shown"))
    worst = None if oldest is None and lag is None else max(oldest or 0.0, lag or 0.0)
    yield (f"| Pool failover RPO: oldest acknowledged change lost / backup lag shown "
           f"before the fault | {name} (fault) | {seconds(oldest)} / {seconds(lag)} "
           f"({step['lost']} of {step['acked_checked']} lost) | 5 min (SfB 2015), "
           f"30 min (Lync 2013) | {ratio(POOL_RPO, worst)} (vs the larger) |")
    cms = find_target(step, "CMS failover")
    if cms is not None:
        yield (f"| CMS failover | {name} (fault) | {shown(cms)} | 5 min "
               f"| {ratio(CMS_RTO, value(cms))} |")
    back = find_step(outcomes, name, "failback")
    if back is not None:
        homed = users_moved(outcomes, name, (users + 1) // 2)
        pro_rata = FAILBACK[0] * homed / FAILBACK[1]
        yield (f"| Pool failback: every user home in full service | {name} (failback) "
               f"| {seconds(back['rto_seconds'])} for {homed} users | up to 60 min for "
               f"20,000 users ({pro_rata:.0f} s pro rata) "
               f"| {ratio(pro_rata, back['rto_seconds'])} (pro rata) |")


def model_table(outcomes: list[Outcome], users: int) -> list[str]:
    return ["| what | scenario (step) | ours | model (Lync 2013 / SfB 2015) | model / ours |",
            "|---|---|---|---|---|", *comparisons(outcomes, users)]


def document(outcomes: list[Outcome], args: argparse.Namespace, deployment: Deployment,
             total: float) -> list[str]:
    topology = args.topology.relative_to(ROOT) if args.topology.is_relative_to(ROOT) \
        else args.topology
    return [
        "# Drills: every `trimaran drill` scenario at scale, against the model's figures",
        "", *machine_lines(),
        f"- deployment: `{topology}` "
        "(fe1 in dc1 and fe2 in dc2, paired, two servers each with a mirrored Back End; "
        "the witness and two Directors in dc3), every process on this machine",
        f"- load: {args.users} simulated users signing in through the Directors (plus one "
        f"spare for the probes), {args.rate:g} requests/s (IM 45 %, writes 30 %, "
        "presence 15 %, calls 10 %), in the one `trimaran drill` process",
        f"- run: {len(outcomes)} scenario(s) in {total / MINUTE:.1f} min; the deployment "
        f"started {deployment.starts} time(s) (`trimaran up` "
        + ", ".join(f"{s:.0f} s" for s in deployment.start_seconds) + ")",
        *[f"- note: {n}" for n in args.notes],
        "", "## Runs", "",
        f"Cores busy: the average, over the drill command, of the CPU used by the "
        f"deployment's processes (servers, agents, PostgreSQL), by the drill command (the "
        f"simulated clients and the checks) and by everything else on the machine, of its "
        f"{os.cpu_count()} cores.", "", *runs_table(outcomes),
        "", "## Steps", "",
        "Detect and RTO are measured from the moment the step's fault was in place. Each "
        "target shows its SPEC requirement, the measured value and its bound.", "",
        *steps_table(outcomes),
        "", "## Against the model's published figures", "",
        "Model: Lync Server 2013 (and Skype for Business Server 2015 where it differs). "
        "model / ours: how many times the model's figure our measured value fits in.", "",
        *model_table(outcomes, args.users), "",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000, help="simulated users")
    parser.add_argument("--rate", type=float, default=100.0,
                        help="requests per second of the whole load")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help="comma-separated, run in this order (default: all)")
    parser.add_argument("--topology", type=Path, default=TOPOLOGY)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--reports", type=Path, default=REPORTS,
                        help="where each drill's Markdown report goes")
    parser.add_argument("--note", dest="notes", action="append", default=[],
                        help="a line for the results file (repeatable)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work directory (run directories, logs, drill output)")
    args = parser.parse_args()
    args.topology = args.topology.resolve()
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)} (known: {', '.join(SCENARIOS)})")
    work = Path(tempfile.mkdtemp(prefix="trimaran-drills-"))
    os.chmod(work, 0o755)       # PostgreSQL runs as its own user under root
    deployment = Deployment(work, args.topology)
    started = time.monotonic()
    try:
        deployment.up()
        outcomes = run_all(deployment, scenarios, args, work / "drill-output")
    finally:
        deployment.down()
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    lines = document(outcomes, args, deployment, time.monotonic() - started)
    print("\n".join(lines))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
