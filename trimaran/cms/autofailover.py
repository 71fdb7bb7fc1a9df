"""Automatic pool failover (SPEC DR-10, beyond the model; off unless `auto_failover` is
set on both pools of a pair and a witness runs in a third site).

The backup pool's shipping server (one per pool) looks every `interval` seconds:

* its own detection of the paired pool (`trimaran.cms.liveness`) says ``down``;
* the witness, asked over HTTP, also sees the pool ``down`` (it probes the pool itself);
* the pool's failover record is ``normal`` (no failover in progress, none done).

Only when all three hold does it fail the pool over, as `pool failover --disaster`
would: it takes the CMS master over first if the lost pool held it, then writes the
failed-over record (compare-and-set, a higher term: the same fencing as the manual
command) with the reason. A pool cut off from its backup pool but still seen by the
witness is not failed over (its users meanwhile sign in here in resiliency mode).
`decide` is the pure rule; `AutoFailover` the loop around it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from trimaran.admin import access
from trimaran.aio import cancel
from trimaran.cms.failover import NORMAL, FailoverRefused, PoolFailover, document_key, plan_failover
from trimaran.cms.liveness import DOWN, leaving_from
from trimaran.cms.service import CmsService
from trimaran.security import https
from trimaran.store.base import Conflict, StoreError
from trimaran.topology.model import Server

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AutoDecision:
    """What the controller decided this tick, and why (logged, shown in /status)."""

    action: str          # "wait" | "failover"
    reason: str


def decide(*, ours: str, witness: str | None, record_state: str, pool: str) -> AutoDecision:
    """Fail `pool` over only when we and the witness both see it down and it is normal."""
    if record_state != NORMAL:
        return AutoDecision("wait", f"{pool} is {record_state}")
    if ours != DOWN:
        return AutoDecision("wait", f"{pool} is {ours} for us")
    if witness is None:
        return AutoDecision("wait", f"{pool} is down for us; the witness does not answer")
    if witness != DOWN:
        return AutoDecision("wait", f"{pool} is down for us but {witness} for the witness "
                                    "(a partition between the sites: no failover)")
    return AutoDecision("failover", f"{pool} is down for us and for the witness")


class AutoFailover:
    """The DR-10 controller on one server of the backup pool."""

    def __init__(self, *, pool: str, partner: str, cms: CmsService, witness: Server,
                 liveness: Callable[[], str], is_leader: Callable[[], bool],
                 interval: float, wall_clock: Callable[[], float] = time.time,
                 local_host: str | None = None) -> None:
        self.pool = pool
        self.partner = partner
        self.cms = cms
        self.witness = witness
        self.liveness = liveness
        self.is_leader = is_leader
        self.interval = interval
        self.wall_clock = wall_clock
        self.local_host = local_host
        self.last = AutoDecision("wait", "not run yet")
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    def start(self) -> None:
        """Watch in the background."""
        self._task = asyncio.ensure_future(self._loop())

    async def stop(self) -> None:
        """Stop watching; idempotent."""
        await cancel(self._task)
        self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _loop(self) -> None:
        while True:
            try:
                if self.is_leader():
                    await self.tick()
            except StoreError as exc:
                log.warning("automatic failover check of %s failed: %s", self.partner, exc)
            except Exception:
                log.exception("automatic failover check of %s failed", self.partner)
            await asyncio.sleep(self.interval)

    async def tick(self) -> AutoDecision:
        """Look once; fail the partner over when the rule says so."""
        ours = self.liveness()
        record = self.cms.snapshot.failover_records().get(self.partner) or \
            PoolFailover(self.partner, backup=self.pool)
        witness = await self._witness_view() if ours == DOWN else None
        decision = decide(ours=ours, witness=witness, record_state=record.state,
                          pool=self.partner)
        if decision != self.last:
            log.info("automatic failover of %s: %s (%s)", self.partner, decision.action,
                     decision.reason)
        self.last = decision
        if decision.action == "failover":
            await self._fail_over(decision.reason)
        return decision

    async def _witness_view(self) -> str | None:
        if self._session is None:
            self._session = leaving_from(self.local_host)
        url = https.secure(
            f"http://{self.witness.address}:{self.witness.admin_port}/pools/{self.partner}")
        try:
            async with self._session.get(url, timeout=aiohttp.ClientTimeout(total=1.0),
                                         headers=access.headers_for("GET", url)) as r:
                body = await r.json()
        except (TimeoutError, OSError, aiohttp.ClientError, ValueError):
            return None
        state = body.get("state") if isinstance(body, dict) else None
        return state if isinstance(state, str) else None

    async def _fail_over(self, why: str) -> None:
        store = self.cms.store
        master = await self.cms.master()
        if master is None or master.pool != self.pool:
            if master is not None and master.pool != self.partner:
                log.error("automatic failover of %s: the CMS master is on %s", self.partner,
                          master.pool)
                return
            await self.cms.take_over(f"automatic failover: {why}")
        doc = await store.cms.get(document_key(self.partner))
        record = PoolFailover.from_json(doc.body) if doc else \
            PoolFailover(self.partner, backup=self.pool)
        own_doc = await store.cms.get(document_key(self.pool))
        own = PoolFailover.from_json(own_doc.body) if own_doc else \
            PoolFailover(self.pool, backup=self.partner)
        progress = await store.backup.progress(self.partner)
        try:
            nxt = plan_failover(record, own, cms_master=self.pool, disaster=True,
                                now=self.wall_clock(), cut_seq=progress.seq,
                                reason=f"automatic failover to {self.pool}: {why}")
        except FailoverRefused as exc:   # our copy of the CMS is behind the store: catch up
            log.info("automatic failover of %s: nothing to do (%s)", self.partner, exc)
            self.cms.wake()
            return
        try:
            await store.cms.put(document_key(self.partner), nxt.to_json(),
                                now=self.wall_clock(), check=True,
                                expect_version=doc.version if doc else None)
        except Conflict:
            log.warning("automatic failover of %s: the record changed meanwhile; "
                        "looking again", self.partner)
            return
        log.warning("automatic failover: %s failed over to %s at term %d (%s); its changes "
                    "up to %d are here", self.partner, self.pool, nxt.term, why, progress.seq)
        self.cms.wake()

    def status(self) -> dict[str, object]:
        """For /status."""
        return {"pool": self.partner, "action": self.last.action, "reason": self.last.reason,
                "leader": self.is_leader()}
