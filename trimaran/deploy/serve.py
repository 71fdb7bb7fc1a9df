"""`trimaran serve --server NAME`: run one server of the topology in this process."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import time

from trimaran.admin.overview import Overview
from trimaran.admin.overview_model import AgentEndpoint
from trimaran.admin.statuspage import StatusPage
from trimaran.backend.witness import run_witness
from trimaran.backup.service import BackupService
from trimaran.cms.autofailover import AutoFailover
from trimaran.cms.directory import Directory
from trimaran.cms.follower import CmsFollower
from trimaran.cms.liveness import PartnerWatch
from trimaran.cms.service import CmsService
from trimaran.deploy.database import agent_url, databases_of, pool_dsn
from trimaran.deploy.rundir import RunDir
from trimaran.deploy.sites import SiteError, load_failed
from trimaran.roles.director.server import DirectorConfig, DirectorServer
from trimaran.roles.dns.server import DnsConfig, run_dns
from trimaran.roles.frontend.config import FrontEndConfig
from trimaran.roles.frontend.homing import DisasterRecovery, Homing
from trimaran.roles.frontend.interpool import InterPool
from trimaran.roles.frontend.pool import Peer
from trimaran.roles.frontend.server import FrontEndServer
from trimaran.store.base import Store, StoreUnavailable
from trimaran.store.postgres import PostgresStore
from trimaran.store.sqlite import SqliteStore
from trimaran.topology.loader import load_topology
from trimaran.topology.model import Edition, Pool, PoolRole, Server, Topology
from trimaran.topology.resolver import Resolver

log = logging.getLogger("trimaran.serve")


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line (OPS-4 structured logs)."""

    def __init__(self, server: str) -> None:
        super().__init__()
        self.server = server

    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": round(record.created, 3), "level": record.levelname.lower(),
                 "server": self.server, "logger": record.name, "msg": record.getMessage()}
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(server: str, level: str = "INFO") -> None:
    """Structured logs on stderr (the supervisor sends them to RUNDIR/logs/SERVER.log)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter(server))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def frontend_config(topology: Topology, rundir: RunDir, name: str) -> FrontEndConfig:
    """The Front End configuration of server `name` from the topology."""
    resolver = Resolver(topology)
    server, pool = resolver.server(name), resolver.pool_of(name)
    settings = topology.settings
    peers = tuple(Peer(s.name, s.address, s.sip_port) for s in pool.servers) \
        if pool.edition is Edition.ENTERPRISE else ()
    return FrontEndConfig(
        server=name, pool=pool.name, domain=topology.sip_domain, host=server.address,
        sip_port=server.sip_port, admin_port=server.admin_port,
        secret=rundir.secret(pool.name),
        min_expires=settings.registration_min_expires,
        max_expires=settings.registration_max_expires,
        default_expires=settings.registration_default_expires,
        digest_algorithms=settings.digest_algorithms, peers=peers,
        heartbeat_interval=settings.heartbeat_seconds,
        failure_detection=settings.failure_detection_seconds)


async def open_store(topology: Topology, rundir: RunDir, pool: Pool,
                     timeout: float = 30.0) -> Store:
    """The pool's store, opened: SQLite for Standard Edition, PostgreSQL for Enterprise
    (waiting for the Back End to accept connections)."""
    if pool.edition is not Edition.ENTERPRISE:
        store: Store = SqliteStore(rundir.store_path(pool.name), pool=pool.name)
        await store.open()
        return store
    # Fail fast to resiliency mode (FE-7) rather than hold requests while the Back End is away.
    # A hung host (frozen, cut off) costs at most connect_timeout before the next one.
    store = PostgresStore(pool_dsn(topology, pool.name), pool=pool.name, retry_for=2.0,
                          command_timeout=3.0, connect_timeout=1.5)
    deadline = time.monotonic() + timeout
    while True:
        try:
            await store.open()
            return store
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise
            log.info("waiting for the back end of pool %s", pool.name)
            await asyncio.sleep(0.5)


def disaster_recovery(topology: Topology, rundir: RunDir, name: str, pool: Pool,
                      store: Store) -> DisasterRecovery:
    """The CMS follower, the Backup Service (when the pool is paired) and homing."""
    resolver = Resolver(topology)
    homing = Homing(pool.name, store, topology)
    cms = CmsService(server=name, pool=pool.name, store=store, topology=topology,
                     topology_text=rundir.topology.read_text(),
                     replica_path=rundir.cms_replica(name), secret=rundir.cms_secret(),
                     local_host=resolver.server(name).address)
    backup = None
    partner = resolver.paired_pool(pool.name)
    if partner is not None:
        backup = BackupService(pool=pool.name, partner=partner.name,
                               partner_servers=partner.servers, store=store,
                               secret=rundir.pair_secret(pool.name, partner.name),
                               records=lambda: homing.records,
                               local_host=resolver.server(name).address)
    watch = None
    registrar_of = [p for p in resolver.pools(PoolRole.FRONTEND)
                    if p.name != pool.name and
                    (registrar := resolver.backup_registrar(p.name)) is not None and
                    registrar.name == pool.name]
    auto = None
    if registrar_of:      # DR-8: our own detection of the pool we are backup registrar of
        watched = registrar_of[0]
        local = resolver.server(name).address
        watch = liveness_watch(topology, watched, local)
        witness = third_site_witness(topology, (watched.site, pool.site))
        if watched.auto_failover and pool.auto_failover and witness is not None:
            auto = AutoFailover(pool=pool.name, partner=watched.name, cms=cms, witness=witness,
                                liveness=lambda: watch.current.state, is_leader=lambda: True,
                                interval=topology.settings.heartbeat_seconds,
                                local_host=local)
    return DisasterRecovery(homing, cms, backup, watch, auto)


def third_site_witness(topology: Topology, sites: tuple[str, ...]) -> Server | None:
    """A witness server outside `sites` (DR-10 needs one in a third site)."""
    for candidate in topology.pools:
        if candidate.role is PoolRole.WITNESS and not set(candidate.sites) & set(sites):
            return candidate.servers[0] if candidate.servers else None
    return None


async def serve_director(topology: Topology, rundir: RunDir, name: str, pool: Pool) -> int:
    """Run Director server `name` until SIGTERM/SIGINT (DIR-1, DIR-2)."""
    spec = Resolver(topology).server(name)
    settings = topology.settings
    config = DirectorConfig(server=name, host=spec.address, sip_port=spec.sip_port,
                            admin_port=spec.admin_port, domain=topology.sip_domain,
                            secret=rundir.secret(pool.name), cms_secret=rundir.cms_secret(),
                            pool=pool.name, digest_algorithms=settings.digest_algorithms)
    follower = CmsFollower(server=name, pool=pool.name, topology=topology,
                           replica_path=rundir.cms_replica(name), secret=rundir.cms_secret(),
                           local_host=spec.address)
    watches = {p.name: liveness_watch(topology, p, spec.address)
               for p in Resolver(topology).pools(PoolRole.FRONTEND)}
    overview = status_overview(topology, rundir, name)
    director = DirectorServer(config, topology, follower, watches,
                              Directory(topology, rundir.cms_secret(), local_host=spec.address),
                              routes=StatusPage(overview).routes())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await director.start()
        log.info("server %s ready", name)
        await stop.wait()
    finally:
        await director.stop()
        await overview.close()
    return 0


async def serve_dns(topology: Topology, name: str, pool: Pool) -> int:
    """Run dns server `name` until SIGTERM/SIGINT."""
    spec = Resolver(topology).server(name)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await run_dns(DnsConfig(topology, spec, pool.site_of(spec)), stop)
    return 0


def status_overview(topology: Topology, rundir: RunDir, name: str) -> Overview:
    """The deployment overview behind server `name`'s status page (OPS-3): every server
    of the topology, the mirroring agents, the failed sites recorded in `rundir`."""
    agents = [AgentEndpoint(d.name, d.pool, agent_url(d)) for d in databases_of(topology)
              if d.agent_port is not None]

    def failed_sites() -> dict[str, object]:
        try:
            return {site: record.to_json() for site, record in load_failed(rundir).items()}
        except SiteError as exc:
            log.debug("failed sites unknown: %s", exc)
            return {}

    return Overview(topology, server=name, agents=agents, failed_sites=failed_sites,
                    local_host=Resolver(topology).server(name).address)


def liveness_watch(topology: Topology, pool: Pool, local_host: str) -> PartnerWatch:
    """A probe of `pool`'s servers with the deployment's DR-8 timings."""
    settings = topology.settings
    return PartnerWatch(pool.name, pool.servers, interval=settings.heartbeat_seconds,
                        detection=settings.resiliency_failover_seconds,
                        fallback=settings.resiliency_fallback_seconds, local_host=local_host)


def watched_pools(topology: Topology, local_host: str) -> list[PartnerWatch]:
    """What a witness watches: the Front End pools with automatic failover (DR-10)."""
    return [liveness_watch(topology, p, local_host) for p in topology.pools
            if p.role is PoolRole.FRONTEND and p.auto_failover]


async def serve(rundir: RunDir, name: str) -> int:
    """Run server `name` until SIGTERM/SIGINT; return the exit code."""
    topology = load_topology(rundir.topology)
    try:
        pool = Resolver(topology).pool_of(name)
    except LookupError:
        log.error("the topology has no server named %s", name)
        return 1
    if pool.role is PoolRole.WITNESS:
        spec = Resolver(topology).server(name)
        log.info("witness %s serving on %s:%s", name, spec.address, spec.admin_port)
        overview = status_overview(topology, rundir, name)
        try:
            await run_witness(rundir.witness_dir(name), spec.address, spec.admin_port,
                              pools=watched_pools(topology, spec.address),
                              routes=StatusPage(overview).routes(), server=name,
                              pool=pool.name)
        finally:
            await overview.close()
        return 0
    if pool.role is PoolRole.DNS:
        return await serve_dns(topology, name, pool)
    if pool.role is PoolRole.DIRECTOR:
        return await serve_director(topology, rundir, name, pool)
    if pool.role is not PoolRole.FRONTEND:
        log.error("server %s: %s pools are not runnable by this version yet", name, pool.role)
        return 1
    config = frontend_config(topology, rundir, name)
    store = await open_store(topology, rundir, pool)
    overview = status_overview(topology, rundir, name)
    dr = disaster_recovery(topology, rundir, name, pool, store)
    local = Resolver(topology).server(name).address
    directory = Directory(topology, rundir.cms_secret(), local_host=local)
    server = FrontEndServer(config, store, wall_clock=time.time, dr=dr,
                            routes=StatusPage(overview).routes(),
                            interpool=InterPool(pool.name, rundir.cms_secret(), topology,
                                                dr.homing, directory))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
        log.info("server %s ready", name)
        await stop.wait()
        log.info("server %s stopping", name)
    finally:
        await server.stop()
        await directory.close()
        await overview.close()
        await store.close()
    return 0
