"""Which users a Front End serves, from their home pool and the pools' failover
records in the CMS (SPEC DR-5, DR-7; DESIGN §3 "Pool failover state").

A server serves a user when the user's home pool is its own and that pool is not
failed over, or when the user's home pool is failed over to its own pool. It
redirects everybody else to the pool that serves them (REGISTER: 302 with that
pool's servers as Contacts) and accepts no persistent change from them. While a
failover or failback is in progress the users' data is read-only: persistent
changes get 503 + Retry-After.

`DisasterRecovery` bundles what a Front End process runs for DR: the CMS replica
follower, the Backup Service and this homing view.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from trimaran.admin.http import HttpError, Route
from trimaran.backup.service import BackupService
from trimaran.cms.autofailover import AutoFailover
from trimaran.cms.failover import PARTNER_DOWN, PoolFailover, Standing, standing
from trimaran.cms.liveness import PartnerState, PartnerWatch
from trimaran.cms.replica import Snapshot
from trimaran.cms.service import CmsService
from trimaran.sip.headers import Headers
from trimaran.store.base import Store
from trimaran.topology.model import Server, Topology
from trimaran.topology.resolver import Resolver

log = logging.getLogger(__name__)

RETRY_AFTER = "5"
CACHE_LIMIT = 200_000
#: Transitions of each failover record shown in /status (newest last).
HISTORY_SHOWN = 5


class Homing:
    """The standing of users on this server's pool, kept current from the CMS."""

    def __init__(self, pool: str, store: Store, topology: Topology | None = None) -> None:
        self.pool = pool
        self.store = store
        self.topology = topology
        self._resolver = Resolver(topology) if topology is not None else None
        self.records: dict[str, PoolFailover] = {}
        self.liveness: dict[str, str] = {}      # pools we are backup registrar of (DR-8)
        self.partner: PartnerWatch | None = None
        self._home: dict[str, str] = {}
        self.on_records_changed: Callable[[set[str]], None] | None = None
        #: Counts the changes of who this pool serves (records, liveness): a request
        #: handled across one can tell that its view may be stale.
        self.generation = 0
        #: False until the server has read the CMS at start: before that its records
        #: may be an old copy (a pool failed over while this server was down), so
        #: nothing of a user may change here yet (DR-7).
        self.ready = False

    def update(self, snapshot: Snapshot) -> None:
        """New CMS copy: remember the records; tell who lost or gained users."""
        records = snapshot.failover_records()
        changed = {pool for pool in set(records) | set(self.records)
                   if _serving(pool, records) != _serving(pool, self.records)}
        moved = {pool for pool in changed
                 if pool == self.pool or
                 (records.get(pool) or PoolFailover(pool)).backup == self.pool}
        self.records = records
        if moved:
            self.generation += 1
            log.warning("failover records changed for %s: %s", sorted(moved),
                        {p: f"{records[p].state}/term {records[p].term}"
                         for p in moved if p in records})
            if self.on_records_changed is not None:
                self.on_records_changed(moved)

    def watch(self, partner: PartnerWatch) -> None:
        """Follow the liveness of the pool we are backup registrar of: its users are
        served here in resiliency mode while it is down, and sent home when it is up."""
        self.partner = partner
        self.liveness[partner.pool] = partner.current.state

        def changed(state: PartnerState) -> None:
            before = self.liveness.get(partner.pool)
            self.liveness[partner.pool] = state.state
            served = {s in PARTNER_DOWN for s in (before, state.state)}
            if len(served) > 1:
                self.generation += 1
                if self.on_records_changed is not None:
                    self.on_records_changed({partner.pool})
        partner.on_change = changed

    def retry_after(self) -> str:
        """Retry-After for a user whose home pool is suspect: when it would be down."""
        if self.partner is None:
            return RETRY_AFTER
        return str(int(self.partner.current.retry_after(self.partner.monotonic(),
                                                        self.partner.detection)) + 1)

    async def home_pool(self, aor: str) -> str:
        """The user's home pool (their store record; this pool when unknown)."""
        pool = self._home.get(aor)
        if pool is None:
            user = await self.store.users.get(aor)
            pool = user.pool if user is not None else self.pool
            if len(self._home) >= CACHE_LIMIT:
                self._home.clear()
            self._home[aor] = pool
        return pool

    def remember_home(self, aor: str, pool: str | None) -> None:
        """Note a user's home pool as the store has it (None: the user is gone), so that
        deciding whom this pool serves needs no store read (`UserFeed`; FE-7: the Back
        End may be away)."""
        if pool is None:
            self._home.pop(aor, None)
            return
        if aor not in self._home and len(self._home) >= CACHE_LIMIT:
            self._home.clear()
        self._home[aor] = pool

    async def standing(self, aor: str) -> Standing:
        """Whether this pool serves `aor` now, read-only or not, or where it goes."""
        return standing(self.pool, await self.home_pool(aor), self.records, self.liveness)

    def serves_pool(self, home_pool: str) -> bool:
        """True when users homed on `home_pool` are served by this pool now."""
        return standing(self.pool, home_pool, self.records, self.liveness).serve

    def redirect_contacts(self, pool: str, transport: str) -> Headers:
        """Contact headers naming `pool`'s servers (302 to REGISTER)."""
        if self._resolver is None:
            return Headers()
        return server_contacts(self._resolver.servers_of(pool), transport)

    async def check_write(self, aor: str) -> None:
        """The admin API's write check: `HttpError` unless `aor` may change data here."""
        if not self.ready:
            raise HttpError(503, "starting: this server has not read the CMS yet",
                            (("Retry-After", "1"),))
        st = await self.standing(aor)
        if not st.serve and st.redirect_to is None:
            raise HttpError(503, f"{aor} cannot change data now: {st.reason}",
                            (("Retry-After", self.retry_after()),))
        if not st.serve:
            raise HttpError(409, f"{aor} is served by pool {st.redirect_to}: {st.reason}",
                            (("X-Trimaran-Serving-Pool", st.redirect_to or ""),))
        if st.read_only:
            raise HttpError(503, f"{aor}'s data is read-only: {st.reason}",
                            (("Retry-After", RETRY_AFTER),))


def server_contacts(servers: Sequence[Server], transport: str) -> Headers:
    """Contact headers naming `servers` in order of preference (q 1.0, 0.9, ...): the
    targets of a 3xx to REGISTER."""
    headers = Headers()
    for i, spec in enumerate(servers):
        q = max(0.1, round(1.0 - i * 0.1, 1))
        headers.add("Contact", f"<sip:{spec.address}:{spec.sip_port};transport={transport}>"
                               f";q={q}")
    return headers


def _serving(pool: str, records: dict[str, PoolFailover]) -> tuple[str, bool]:
    """Who serves `pool`'s users and whether read-only (no record: the pool, fully)."""
    record = records.get(pool) or PoolFailover(pool)
    return record.serving_pool(), record.read_only


class DisasterRecovery:
    """The DR parts of one Front End process: CMS follower, Backup Service, homing."""

    def __init__(self, homing: Homing, cms: CmsService | None,
                 backup: BackupService | None, partner: PartnerWatch | None = None,
                 auto: AutoFailover | None = None, *,
                 branches: tuple[tuple[PartnerWatch, BackupService], ...] = ()) -> None:
        self.homing = homing
        self.cms = cms
        self.backup = backup
        self.partner = partner
        self.auto = auto
        #: The SBAs this pool is backup registrar of (EV-5): their liveness, and the
        #: receiving end of their one-way backup (routes only).
        self.branches = branches
        if partner is not None:
            homing.watch(partner)
        for watch, _ in branches:
            homing.watch(watch)
        if cms is not None:
            cms.on_change = homing.update

    def routes(self) -> tuple[Route, ...]:
        """Admin endpoints of the CMS and the Backup Service."""
        return (self.cms.routes() if self.cms else ()) + \
            (self.backup.routes() if self.backup else ()) + \
            tuple(route for _, receiver in self.branches for route in receiver.routes())

    async def start(self) -> None:
        """Read the CMS (replica, then the master) before serving (DR-7), then ship."""
        if self.cms is not None:
            await self.cms.start()
        self.homing.ready = True
        if self.backup is not None:
            self.backup.start()
        if self.partner is not None:
            self.partner.start()
        for watch, _ in self.branches:
            watch.start()
        if self.auto is not None:
            self.auto.start()

    async def stop(self) -> None:
        """Stop following, probing and shipping."""
        if self.auto is not None:
            await self.auto.stop()
        if self.partner is not None:
            await self.partner.stop()
        for watch, receiver in self.branches:
            await watch.stop()
            await receiver.stop()
        if self.backup is not None:
            await self.backup.stop()
        if self.cms is not None:
            await self.cms.stop()

    def status(self) -> dict[str, object]:
        """For /status: CMS copy, failover records (with their last transitions),
        shipping state and the lag measured by the shipping server."""
        result: dict[str, object] = {
            "failover": {p: {"state": r.state, "term": r.term, "backup": r.backup,
                             "since": r.since, "mode": r.mode,
                             "history": [{"at": e.at, "action": e.action, "state": e.state,
                                          "term": e.term, "reason": e.reason}
                                         for e in r.history[-HISTORY_SHOWN:]]}
                         for p, r in sorted(self.homing.records.items())}}
        if self.cms is not None:
            result["cms"] = self.cms.status()
        if self.partner is not None:
            result["backup_registrar_of"] = self.partner.status()
        if self.branches:
            result["branches"] = {watch.pool: watch.status() for watch, _ in self.branches}
        if self.auto is not None:
            result["auto_failover"] = self.auto.status()
        if self.backup is not None:
            st = self.backup.state
            result["backup"] = {"target": self.backup.partner, "applied_seq": st.acked_seq,
                                "error": st.error, "shipper": self.backup.is_shipper(),
                                "lag": self.backup.measured}
        return result
