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
from trimaran.store.base import StoreError, StoreUnavailable
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
        """RFC 5626 §5.2: outbound bindings registered over a failed flow are invalid.
        Exactly those go — by flow, not by binding key: the same client may already
        have registered again, over another flow or at another server, under the same
        key (its instance and reg-id), and that binding must stay."""
        srv = self.server
        log.info("flow %s closed (%s): dropping %d outbound binding(s)", flow.id, reason,
                 len(bindings))
        aors = sorted({aor for aor, _ in bindings})
        srv.cache.forget_flow(srv.config.server, flow.id, aors)
        try:
            removed = await srv.store.bindings.purge_flow(srv.config.server, flow.id)
            now = srv.wall_clock()
            for aor in aors:
                after = await srv.store.bindings.for_aor(aor, now=now)
                srv.cache.remember(aor, after)
                if removed and not after:   # the user went offline with the flow
                    srv.presence.schedule_notify(aor)
        except StoreUnavailable:
            return  # resiliency mode: the cache no longer routes to the flow

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
        """`tick` every housekeeping interval; in resiliency mode every heartbeat interval
        when that is shorter, so that full service (persistent changes, bindings seen by
        every server) resumes soon after the Back End does (BE-8, METRO-1)."""
        cfg = self.server.config
        while True:
            await self.tick()
            pause = cfg.housekeeping_interval if self.server.mode == "full" else \
                min(cfg.housekeeping_interval, cfg.heartbeat_interval)
            await asyncio.sleep(pause)

    async def users_loop(self) -> None:
        """Keep every pool user's credentials and home pool here (`UserFeed`): load them,
        then follow the change log, every housekeeping interval while the store answers."""
        srv = self.server
        assert srv.user_feed is not None
        while True:
            if srv.mode == "full":
                try:
                    await srv.user_feed.tick()
                except StoreUnavailable as exc:
                    log.debug("users not refreshed, store unavailable: %s", exc)
                except StoreError as exc:
                    log.warning("users not refreshed: %s", exc)
            await asyncio.sleep(srv.config.housekeeping_interval)

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
                srv.leave_resiliency()
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
