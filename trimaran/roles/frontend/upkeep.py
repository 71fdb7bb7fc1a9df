"""The background work of a Front End server: housekeeping (expiry, write-back of
registrations accepted in resiliency mode, the bindings gauge), pool membership
(heartbeats, declaring peers dead, rejoining after being declared dead), and the
RFC 5626 §5.2 rule that a failed flow invalidates its bindings."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from trimaran.net.transport import Flow
from trimaran.store.base import StoreUnavailable
from trimaran.store.model import Heartbeat

if TYPE_CHECKING:
    from trimaran.roles.frontend.server import FrontEndServer

log = logging.getLogger("trimaran.roles.frontend.server")


class Upkeep:
    """The background loops of one Front End server."""

    def __init__(self, server: FrontEndServer) -> None:
        self.server = server

    def on_flow_closed(self, flow: Flow, reason: str) -> None:
        """Forget the flow; drop the outbound bindings registered over it."""
        srv = self.server
        for contact in [c for c, f in srv.contact_flows.items() if f == flow.id]:
            del srv.contact_flows[contact]
        outbound = srv.outbound.pop(flow.id, None)
        srv.flow_modes.pop(flow.id, None)
        if outbound and reason != "shutdown" and not srv.draining:
            # When we shut down or drain, the clients move by themselves; their bindings
            # stay routable (requests are retried on fresh bindings) until they have.
            srv.spawn(self._drop_flow_bindings(outbound, flow, reason))

    async def _drop_flow_bindings(self, bindings: set[tuple[str, str]], flow: Flow,
                                  reason: str) -> None:
        """RFC 5626 §5.2: outbound bindings registered over a failed flow are invalid."""
        srv = self.server
        log.info("flow %s closed (%s): dropping %d outbound binding(s)", flow.id, reason,
                 len(bindings))
        now = srv.wall_clock()
        for aor in sorted({aor for aor, _ in bindings}):
            keys = {key for a, key in bindings if a == aor}
            try:
                before = await srv.store.bindings.for_aor(aor, now=now)
                stale = tuple(b.key for b in before if b.key in keys and b.flow_id == flow.id)
                after = await srv.store.bindings.apply(aor, upsert=(), remove=stale, now=now)
            except StoreUnavailable:
                srv.cache.apply(aor, (), tuple(keys), now)
                continue
            srv.cache.remember(aor, after)
            if before and not after:
                srv.presence.schedule_notify(aor)

    async def membership_loop(self) -> None:
        """Heartbeats and peer pings on their own cadence: a slow store never delays them
        (else a Back End outage would look like this server freezing)."""
        srv = self.server
        assert srv.membership is not None
        while True:
            for decision in await srv.membership.tick():
                if decision.action == "rejoin":
                    await self._rejoin()
                elif decision.action == "declare-dead":
                    srv.cache.forget_server(decision.server)
                    srv.spawn(srv.peers.abandon(decision.server))
            await asyncio.sleep(srv.config.heartbeat_interval)

    async def housekeeping_loop(self) -> None:
        """`tick` every housekeeping interval."""
        while True:
            await self.tick()
            await asyncio.sleep(self.server.config.housekeeping_interval)

    async def tick(self) -> None:
        """Write back, purge expired bindings, count, heartbeat (Standard Edition), and
        leave resiliency mode when the store answers again."""
        srv = self.server
        try:
            now = srv.wall_clock()
            if srv.cache.dirty:
                await self._write_back(now)
            await srv.store.bindings.purge_expired(now=now)
            srv.bindings_count = await srv.store.bindings.count(now=now,
                                                                server=srv.config.server)
            srv.metrics.set_registered_bindings(srv.bindings_count)
            if srv.membership is None:
                await srv.store.heartbeats.beat(Heartbeat(srv.config.server, srv.config.pool,
                                                          now))
            if srv.mode != "full":
                log.warning("back end reachable again: leaving resiliency mode")
                srv.mode = "full"
                # clients told "resiliency" meanwhile re-register and hear "full"
                srv.spawn(self.close_moved_flows())
        except StoreUnavailable as exc:
            srv.enter_resiliency(str(exc))
        await srv.presence.expire()
        srv.metrics.set_active_subscriptions(len(srv.presence.watches))

    async def _write_back(self, now: float) -> None:
        """Registrations accepted in resiliency mode go to the store once it is back."""
        srv = self.server
        for aor in sorted(srv.cache.dirty):
            local = [b for b in srv.cache.get(aor, now) if b.server == srv.config.server]
            await srv.store.bindings.apply(aor, upsert=local, remove=(), now=now)
            srv.cache.dirty.discard(aor)
        log.info("wrote back registrations accepted in resiliency mode")

    async def _rejoin(self) -> None:
        """We were silent longer than the detection bound: peers declared us dead, our
        clients moved. Drop local state so nothing stale is served (FE-3)."""
        srv = self.server
        log.warning("rejoining the pool: closing %d client flow(s) and dropping caches",
                    len(srv.outbound))
        srv.cache.clear()
        srv.contact_flows.clear()
        flows = list(srv.outbound)
        srv.outbound.clear()
        for flow_id in flows:
            flow = srv.endpoint.transport.flow(flow_id)
            if flow is not None:
                await srv.endpoint.transport.close_flow(flow, drain_timeout=0.5)
        with contextlib.suppress(StoreUnavailable):
            await srv.store.bindings.purge_server(srv.config.server)

    async def close_moved_flows(self) -> None:
        """Close the client flows of users this pool no longer serves, or now serves in
        another mode than they were told when they registered (their pool failed over
        or back, their home pool went down or came back, our Back End came back): their
        clients re-register, and are redirected or get their new mode (DR-5, DR-7,
        DR-8). While our own Back End is away nobody is moved for that alone (FE-7:
        registered users keep calls and IM)."""
        srv = self.server
        if srv.dr is None:
            return
        closing = []
        for flow_id, bindings in list(srv.outbound.items()):
            for aor, _ in bindings:
                st = await srv.dr.homing.standing(aor)
                told = srv.flow_modes.get(flow_id, "full")
                if not st.serve or (srv.mode == "full" and st.mode != told):
                    closing.append(flow_id)
                    break
        if closing:
            log.warning("closing %d client flow(s) of users now served by another pool",
                        len(closing))
        for flow_id in closing:
            flow = srv.endpoint.transport.flow(flow_id)
            if flow is not None:
                await srv.endpoint.transport.close_flow(flow, drain_timeout=0.5)
