"""Disaster-recovery operations on a running deployment: CMS failover, pool failover
and failback, backup status and sync (SPEC DR-3..DR-7, DR-9, DR-11).

The operations run in the operator's process. They talk to the servers' admin APIs
(signed with the deployment's keys from the run directory), write the failover
records in the CMS master with compare-and-set, and wait for the servers to act
on them. Every step is recorded with its time so the command can report the
timeline. `DrError` carries the refusal or failure message for the CLI.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from trimaran.admin import access
from trimaran.backup.protocol import pair_key
from trimaran.cms.edgedoc import EdgeStateError, document_in, state_of
from trimaran.cms.failover import (
    FAILED_OVER,
    FailoverRefused,
    PoolFailover,
    complete_failback,
    complete_failover,
    document_key,
    plan_failback,
    plan_failover,
)
from trimaran.cms.follower import CMS_KEY_ID, initial_master
from trimaran.cms.replica import MASTER_KEY, MasterLocator
from trimaran.deploy.rundir import RunDir
from trimaran.security import https
from trimaran.topology.loader import load_topology
from trimaran.topology.model import PoolRole, Server, Topology
from trimaran.topology.resolver import Resolver

WAIT_SERVERS = 10.0


class DrError(Exception):
    """A DR operation is refused or failed; the message says why."""


@dataclass
class Timeline:
    """What an operation did and when (seconds since its start)."""

    started: float = field(default_factory=time.monotonic)
    steps: list[dict[str, object]] = field(default_factory=list)
    echo: Callable[[str], None] | None = None

    def step(self, what: str, **details: object) -> None:
        """Record (and show) one step."""
        at = round(time.monotonic() - self.started, 3)
        self.steps.append({"at": at, "step": what, **details})
        if self.echo is not None:
            self.echo(f"  [{at:7.2f}s] {what}")

    @property
    def elapsed(self) -> float:
        """Seconds since the operation started."""
        return round(time.monotonic() - self.started, 3)


def call(spec: Server, method: str, path: str, body: object | None = None, *,
          key: tuple[str, bytes] | None = None,
          timeout: float = 2.0) -> tuple[int, dict[str, Any]]:
    """One admin API call: (status, JSON); 0 = no answer. Credentials: the --token when
    one was given, else a signature with `key` (pair/CMS key) or the admin key."""
    data = b"" if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json",
               **access.client_headers(method, path, data, key=key)}
    request = urllib.request.Request(f"http://{spec.address}:{spec.admin_port}{path}",
                                     data=data if method != "GET" else None, method=method,
                                     headers=headers)
    try:
        with https.urlopen(request, timeout=timeout) as response:  # loopback only
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (urllib.error.URLError, OSError):
        return 0, {"error": f"{spec.name} unreachable"}
    try:
        value = json.loads(raw or b"{}")
    except ValueError:
        return status, {"error": "answer is not JSON"}
    return status, value if isinstance(value, dict) else {}


class Deployment:
    """A running deployment seen from the operator's side."""

    def __init__(self, run: RunDir, echo: Callable[[str], None] | None = None) -> None:
        self.run = run
        self.topology: Topology = load_topology(run.topology)
        self.resolver = Resolver(self.topology)
        self.cms_key = (CMS_KEY_ID, run.cms_secret())
        self.echo = echo

    # -- plumbing ----------------------------------------------------------------------
    def frontend_pools(self) -> list[str]:
        """Names of the Front End pools."""
        return [p.name for p in self.resolver.pools(PoolRole.FRONTEND)]

    def pair(self, pool: str) -> str:
        """The pool's backup pool; `DrError` when it has none."""
        if pool not in self.frontend_pools():
            raise DrError(f"no Front End pool named {pool!r} (pools: "
                          f"{', '.join(self.frontend_pools())})")
        partner = self.resolver.paired_pool(pool)
        if partner is None:
            raise DrError(f"pool {pool} has no backup pool (set backup_pool in the topology)")
        return partner.name

    def pair_key(self, pool: str) -> tuple[str, bytes]:
        """The Backup Service key of `pool` and its partner."""
        partner = self.pair(pool)
        return pair_key(pool, partner), self.run.pair_secret(pool, partner)

    def first(self, pool: str, method: str, path: str, body: object | None = None, *,
              key: tuple[str, bytes] | None = None, timeout: float = 2.0,
              ) -> tuple[int, dict[str, Any]]:
        """Call the pool's servers in order until one answers (not 0/503)."""
        answer: tuple[int, dict[str, Any]] = (0, {"error": f"pool {pool} has no server"})
        for spec in self.resolver.servers_of(pool):
            answer = call(spec, method, path, body, key=key, timeout=timeout)
            if answer[0] not in (0, 503):
                return answer
        return answer

    def reachable(self, pool: str) -> bool:
        """True when a server of the pool answers its admin API."""
        return any(call(s, "GET", "/health", timeout=1.0)[0] in (200, 503)
                   for s in self.resolver.servers_of(pool))

    def poke_all(self) -> None:
        """Ask every Front End server to pull the CMS now."""
        for pool in self.frontend_pools():
            for spec in self.resolver.servers_of(pool):
                call(spec, "POST", "/cms/refresh", {}, key=self.cms_key, timeout=1.0)

    # -- CMS ------------------------------------------------------------------------------
    def cms_master(self) -> tuple[str, dict[str, Any]]:
        """(master pool, its full snapshot answer); `DrError` when no master answers."""
        candidates = [initial_master(self.topology)]
        partner = self.resolver.paired_pool(candidates[0])
        if partner is not None:
            candidates.append(partner.name)
        answers = []
        for pool in candidates:
            status, body = self.first(pool, "GET", "/cms/snapshot?since=0", key=self.cms_key)
            if status == 200:
                answers.append((int(body.get("term", 0)), pool, body))
        if not answers:
            raise DrError("no CMS master answers (pools tried: " + ", ".join(candidates) +
                          "); if the master's site is lost, run `trimaran cms failover "
                          "--disaster`")
        _, pool, body = max(answers, key=lambda a: a[0])
        return pool, body

    def records(self) -> tuple[str, dict[str, tuple[PoolFailover, int]]]:
        """(CMS master, every pool's failover record with its document version)."""
        master, body = self.cms_master()
        records = {}
        for doc in body.get("documents", []):
            if str(doc.get("key", "")).startswith("failover/"):
                record = PoolFailover.from_json(doc["body"])
                records[record.pool] = (record, int(doc["version"]))
        for pool in self.frontend_pools():
            if pool not in records:
                partner = self.resolver.paired_pool(pool)
                records[pool] = (PoolFailover(pool, partner.name if partner else None), -1)
        return master, records

    def write_record(self, master: str, record: PoolFailover, version: int) -> int:
        """Compare-and-set the pool's record on the master; return the new version."""
        status, body = self.first(master, "POST", "/cms/documents", {
            "key": document_key(record.pool), "body": record.to_json(), "check": version >= 0,
            "expect_version": version if version >= 0 else None}, key=self.cms_key)
        if status != 200:
            raise DrError(f"cannot write the failover record of {record.pool} on the CMS "
                          f"master {master}: {body.get('error', status)}")
        return int(body["version"])

    def wait_servers_see(self, pool: str, subject: str, term: int,
                         timeout: float = WAIT_SERVERS) -> list[str]:
        """Wait until every answering server of `pool` acts on `subject`'s record at
        `term`; return the servers that did not answer (taken as down)."""
        deadline = time.monotonic() + timeout
        pending = {s.name: s for s in self.resolver.servers_of(pool)}
        silent: set[str] = set()
        while pending and time.monotonic() < deadline:
            for name, spec in list(pending.items()):
                status, body = call(spec, "GET", "/status", timeout=1.0)
                if status == 0:
                    silent.add(name)
                    del pending[name]
                    continue
                seen = body.get("failover", {}).get(subject, {})
                if int(seen.get("term", -1)) >= term:
                    del pending[name]
            if pending:
                call(next(iter(pending.values())), "POST", "/cms/refresh", {},
                      key=self.cms_key, timeout=1.0)
                time.sleep(0.05)
        if pending:
            raise DrError(f"servers of {pool} did not take the failover record of {subject} "
                          f"(term {term}) within {timeout:.0f} s: {', '.join(sorted(pending))}")
        return sorted(silent)

    def backup_status(self, pool: str) -> dict[str, Any] | None:
        """The outgoing Backup Service status of `pool` (None when unreachable)."""
        status, body = self.first(pool, "GET", "/backup/status", key=self.pair_key(pool),
                                  timeout=4.0)
        return body if status == 200 else None

    def sync(self, pool: str, timeout: float = 60.0) -> dict[str, Any]:
        """Ship `pool`'s log to its partner now and wait; `DrError` when it cannot."""
        status, body = self.first(pool, "POST", "/backup/sync", {"timeout": timeout},
                                  key=self.pair_key(pool), timeout=timeout + 5)
        if status != 200:
            raise DrError(f"backup sync of {pool} failed: {body.get('error', status)}")
        if not body.get("synced"):
            raise DrError(f"backup sync of {pool} did not catch up within {timeout:.0f} s: "
                          f"{body.get('reason')}")
        return body

    def progress_on(self, pool: str, source: str) -> dict[str, Any] | None:
        """How far `pool` has applied `source`'s log (None when unreachable)."""
        status, body = self.first(pool, "GET", f"/backup/progress?source={source}",
                                  key=self.pair_key(pool))
        return body if status == 200 else None

    # -- operations --------------------------------------------------------------------------
    def cms_failover(self, disaster: bool) -> dict[str, object]:
        """Move the CMS master to its paired pool (DR-9)."""
        timeline = Timeline(echo=self.echo)
        if disaster:
            master = self._last_known_master()
        else:
            master, _ = self.cms_master()
        target = self.pair(master)
        timeline.step(f"CMS master is {master}; moving it to {target}")
        lost_after = None
        if disaster:
            progress = self.progress_on(target, master)
            if progress is None:
                raise DrError(f"the backup pool {target} does not answer")
            lost_after = progress.get("change_at")
            status, body = self.first(target, "POST", "/cms/takeover", {}, key=self.cms_key)
            if status != 200:
                raise DrError(f"{target} refused the takeover: {body.get('error', status)}")
            timeline.step(f"{target} took the master over at term {body['term']}",
                          copied_up_to=progress.get("seq"))
        else:
            _, snap = self.cms_master()
            term = int(snap.get("term", 1)) + 1
            status, body = self.first(master, "POST", "/cms/documents", {
                "key": MASTER_KEY, "body": MasterLocator(target, term).to_json()},
                key=self.cms_key)
            if status != 200:
                raise DrError(f"cannot write the master locator: {body.get('error', status)}")
            timeline.step(f"{master} names {target} master at term {term}; replicating")
            self.sync(master)
            timeline.step(f"replication check passed: {target} holds every CMS change")
        self.poke_all()
        deadline = time.monotonic() + WAIT_SERVERS
        while time.monotonic() < deadline:
            try:
                now_master, _ = self.cms_master()
            except DrError:
                now_master = ""
            if now_master == target:
                break
            time.sleep(0.05)
        else:
            raise DrError(f"{target} does not answer as CMS master")
        timeline.step(f"{target} serves the CMS")
        return {"from": master, "to": target, "disaster": disaster,
                "seconds": timeline.elapsed, "steps": timeline.steps,
                "changes_after_this_time_lost": lost_after}

    def _last_known_master(self) -> str:
        try:
            return self.cms_master()[0]
        except DrError:
            pass
        best: tuple[int, str] | None = None
        for pool in self.frontend_pools():
            for spec in self.resolver.servers_of(pool):
                status, body = call(spec, "GET", "/status", timeout=1.0)
                cms = body.get("cms") if status == 200 else None
                if isinstance(cms, dict) and cms.get("master"):
                    entry = (int(cms.get("term", 0)), str(cms["master"]))
                    best = entry if best is None or entry > best else best
        if best is None:
            return initial_master(self.topology)
        return best[1]

    def pool_failover(self, pool: str, disaster: bool) -> dict[str, object]:
        """Serve `pool`'s users from its backup pool (DR-5)."""
        timeline = Timeline(echo=self.echo)
        backup = self.pair(pool)
        master, records = self.records()
        self._refuse_edge_next_hop(pool)
        record, version = records[pool]
        partner = records.get(backup, (None, -1))[0]
        if not disaster and not self.reachable(pool):
            raise DrError(f"pool {pool} does not answer: a planned failover needs it; "
                          f"use --disaster")
        if not self.reachable(backup):
            raise DrError(f"the backup pool {backup} does not answer")
        now = time.time()
        cut_seq, lost_after = 0, None
        if disaster:
            progress = self.progress_on(backup, pool) or {}
            cut_seq, lost_after = int(progress.get("seq", 0)), progress.get("change_at")
        try:
            nxt = plan_failover(record, partner, cms_master=master, disaster=disaster, now=now,
                                cut_seq=cut_seq)
        except FailoverRefused as exc:
            raise DrError(str(exc)) from None
        version = self.write_record(master, nxt, version)
        timeline.step(f"{pool}: {nxt.state} (term {nxt.term})")
        self.poke_all()
        if not disaster:
            self.wait_servers_see(pool, pool, nxt.term)
            timeline.step(f"{pool} is read-only")
            synced = self.sync(pool)
            cut_seq = int(synced["applied_seq"])
            timeline.step(f"backup {pool} -> {backup} final at change {cut_seq}")
            nxt = complete_failover(nxt, now=time.time(), cut_seq=cut_seq)
            self.write_record(master, nxt, version)
            self.poke_all()
        self.wait_servers_see(backup, pool, nxt.term)
        timeline.step(f"{backup} serves {pool}'s users (state {FAILED_OVER}, term {nxt.term})")
        return {"pool": pool, "backup": backup, "disaster": disaster, "term": nxt.term,
                "cut_seq": cut_seq, "changes_after_this_time_lost": lost_after,
                "seconds": timeline.elapsed, "steps": timeline.steps}

    def _refuse_edge_next_hop(self, pool: str) -> None:
        """EDGE-4: a pool that is an Edge pool's next hop (CMS ``edge`` document, else the
        topology) is not failed over until the next hop moves."""
        found = document_in(self.cms_master()[1])
        try:
            state = state_of(self.topology, None if found is None else found[0])
        except EdgeStateError as exc:
            raise DrError(f"cannot tell which pools are Edge next hops: {exc}; rewrite it "
                          f"with `trimaran edge next-hop set EDGE POOL`") from None
        behind = state.edges_behind(pool)
        if behind:
            edge, more = behind[0], "".join(f" and of {e}" for e in behind[1:])
            raise DrError(f"pool {pool} is the next hop of Edge pool {edge}{more}: remote users "
                          f"and federation would be cut off; move it first with `trimaran edge "
                          f"next-hop set {edge} <other pool>` (EDGE-4)")

    def pool_failback(self, pool: str, disaster: bool) -> dict[str, object]:
        """Bring `pool`'s users home with the changes made on the backup pool (DR-6)."""
        timeline = Timeline(echo=self.echo)
        backup = self.pair(pool)
        master, records = self.records()
        record, version = records[pool]
        if not self.reachable(pool):
            raise DrError(f"pool {pool} does not answer: start it first "
                          f"(`trimaran site restore` or `server start`)")
        if not disaster and not self.reachable(backup):
            raise DrError(f"the backup pool {backup} does not answer; use --disaster to "
                          "fail back without the changes made there")
        try:
            nxt = plan_failback(record, disaster=disaster, now=time.time())
        except FailoverRefused as exc:
            raise DrError(str(exc)) from None
        lost_after, superseded = None, 0
        if nxt is not record:
            version = self.write_record(master, nxt, version)
        timeline.step(f"{pool}: {nxt.state} (term {nxt.term})")
        self.poke_all()
        if disaster:
            progress = self.progress_on(pool, backup) or {}
            lost_after = progress.get("change_at")
        else:
            self.wait_servers_see(backup, pool, nxt.term)
            timeline.step(f"{backup} is read-only for {pool}'s users")
            synced = self.sync(backup)
            timeline.step(f"changes made on {backup} are on {pool} "
                          f"(change {synced['applied_seq']})")
            own = self.backup_status(pool)
            if own is None:
                raise DrError(f"pool {pool} does not answer its backup status")
            tail = int(own["last_seq"]) > record.cut_seq
            if tail:     # a disaster cut changes off: the backup pool's copy of them wins
                status, body = self.first(pool, "POST", "/backup/reconcile",
                                          {"after": record.cut_seq}, key=self.pair_key(pool),
                                          timeout=60.0)
                if status != 200:
                    raise DrError(f"cannot reconcile {pool}: {body.get('error', status)}")
                superseded = int(body["keys"])
                timeline.step(f"{superseded} key(s) {pool} changed after change "
                              f"{record.cut_seq} (never shipped) now hold {backup}'s copy")
            status, body = self.first(backup, "POST", "/backup/reset",
                                      {"seq": int(own["last_seq"])}, key=self.pair_key(pool))
            if status != 200:
                raise DrError(f"cannot reset {backup}'s progress: {body.get('error')}")
            nxt = complete_failback(nxt, now=time.time())
            self.write_record(master, nxt, version)
            self.poke_all()
        self.wait_servers_see(pool, pool, nxt.term)
        timeline.step(f"{pool} serves its users again (term {nxt.term})")
        return {"pool": pool, "backup": backup, "disaster": disaster, "term": nxt.term,
                "changes_on_backup_after_this_time_lost": lost_after,
                "superseded_keys": superseded,
                "seconds": timeline.elapsed, "steps": timeline.steps}
