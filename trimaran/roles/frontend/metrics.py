"""A Front End's HA state as Prometheus metrics (SPEC OPS-4): registrar mode and
draining, the pool membership it sees, its SIP transactions and, with disaster
recovery, its CMS copy, the pools' failover records, the liveness of the pool it is
backup registrar of and the Backup Service's outgoing direction.

Everything but the Backup Service's lag is read from memory at scrape time; the lag
needs the store, so it is refreshed (`BackupService.status`) before each scrape.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trimaran.admin.metrics import Families, describe_transactions
from trimaran.backup.service import BEHIND, BROKEN, FINAL, STEADY, BackupService
from trimaran.cms.metrics import describe_failover_records, describe_liveness, describe_replica

if TYPE_CHECKING:
    from trimaran.roles.frontend.server import FrontEndServer

#: The states of ``registrar_mode``.
MODES = ("full", "resiliency")
#: The states of ``backup_state`` (`trimaran.backup.service`).
BACKUP_STATES = (STEADY, BEHIND, FINAL, BROKEN)


def add_frontend_sources(server: FrontEndServer) -> None:
    """Describe `server`'s HA state on its `/metrics`."""
    metrics = server.metrics
    metrics.add_source("frontend", lambda families: describe_frontend(families, server))
    metrics.add_source("sip", lambda families: describe_transactions(
        families, server.endpoint.transactions.statistics()))
    if server.limits.lockout is not None:
        locked = LockedUsers(server)
        metrics.add_source("lockouts", locked.describe, locked.refresh)
    dr = server.dr
    if dr is None:
        return
    homing, pool = dr.homing, server.config.pool
    metrics.add_source("failover", lambda families: describe_failover_records(
        families, homing.records, (pool,)))
    if dr.cms is not None:
        cms = dr.cms
        metrics.add_source("cms", lambda families: describe_replica(families, cms))
    if dr.partner is not None:
        partner = dr.partner
        metrics.add_source("backup-registrar", lambda families: describe_liveness(
            families, (partner,)))
    if dr.backup is not None:
        lag = BackupLag(dr.backup)
        metrics.add_source("backup", lag.describe, lag.refresh)


def describe_frontend(families: Families, server: FrontEndServer) -> None:
    """Registrar mode and draining; pool members alive and dead, per peer."""
    families.state("registrar_mode", "Registrar mode: full, or resiliency while the Back "
                   "End is unreachable", MODES, server.mode)
    families.flag("registrar_draining", "1 while the server is draining", server.draining)
    membership = server.membership
    if membership is None:
        return
    view = membership.view()
    doc = "Servers of the pool this server sees alive or dead (itself included)"
    families.gauge("pool_members", doc, len(view.alive), state="alive")
    families.gauge("pool_members", doc, len(view.dead), state="dead")
    for peer, age in sorted(membership.heartbeat_ages().items()):
        families.flag("pool_peer_up", "1 while a peer server of the pool is alive",
                      peer in view.alive, peer=peer)
        if age >= 0:
            families.gauge("pool_peer_heartbeat_age_seconds", "Seconds since a peer's last "
                           "heartbeat this server saw", age, peer=peer)


class LockedUsers:
    """``auth_locked_users``: users of the pool locked now, counted in the store at each
    scrape (left out while the store is away)."""

    def __init__(self, server: FrontEndServer) -> None:
        self.server = server
        self._count: int | None = None

    async def refresh(self) -> None:
        """Count the locked users (one indexed COUNT) unless in resiliency mode."""
        self._count = None
        if self.server.mode == "full":
            self._count = await self.server.store.lockouts.count_locked(
                now=self.server.wall_clock())

    def describe(self, families: Families) -> None:
        """The count of the last refresh."""
        if self._count is not None:
            families.gauge("auth_locked_users", "Users of the pool whose account is locked "
                           "after failed digest responses", self._count)


class BackupLag:
    """The Backup Service's outgoing direction, as of the last refresh."""

    def __init__(self, service: BackupService) -> None:
        self.service = service
        self._status: dict[str, object] | None = None

    async def refresh(self) -> None:
        """Read the lag (the store, and the partner's progress when not known)."""
        self._status = None
        self._status = await self.service.status()

    def describe(self, families: Families) -> None:
        """Changes shipped and whether this server ships; the lag and the state as of
        the last refresh (left out when it failed)."""
        service = self.service
        labels = {"source": service.pool, "target": service.partner}
        families.counter("backup_changes_shipped", "Changes of this pool's log this server "
                         "shipped to the paired pool", service.state.changes, **labels)
        families.flag("backup_shipper", "1 on the server of the pool that ships its log",
                      service.is_shipper(), **labels)
        status = self._status
        if status is None:
            return
        families.gauge("backup_lag_seconds", "Age of the oldest change not yet applied by "
                       "the paired pool (RPO)", _number(status["lag_seconds"]), **labels)
        families.gauge("backup_lag_changes", "Changes not yet applied by the paired pool",
                       _number(status["lag_changes"]), **labels)
        families.state("backup_state", "State of the outgoing backup direction",
                       BACKUP_STATES, str(status["state"]), **labels)


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) else float("nan")
