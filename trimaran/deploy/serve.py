"""`trimaran serve --server NAME`: run one server of the topology in this process."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import signal
import sys
import time
from collections.abc import Callable
from typing import Protocol

from trimaran.admin import access
from trimaran.admin.overview import Overview
from trimaran.admin.overview_model import AgentEndpoint
from trimaran.admin.statuspage import StatusPage
from trimaran.apps.registry import APPLICATIONS
from trimaran.apps.server import APP_PORT_OFFSET, AppServer, AppServerConfig
from trimaran.backend.witness import run_witness
from trimaran.backup.service import BackupService
from trimaran.cms.appsdoc import AppsSource
from trimaran.cms.autofailover import AutoFailover
from trimaran.cms.chatdoc import ChatSource
from trimaran.cms.directory import Directory
from trimaran.cms.edgedoc import EdgeSource
from trimaran.cms.follower import CmsFollower
from trimaran.cms.liveness import PartnerWatch
from trimaran.cms.replica import Snapshot
from trimaran.cms.service import CmsService
from trimaran.cms.voicedoc import VoiceSource
from trimaran.deploy.chatdb import chat_dsn
from trimaran.deploy.database import agent_url, databases_of, pool_dsn
from trimaran.deploy.rundir import RunDir
from trimaran.deploy.sites import SiteError, load_failed
from trimaran.roles.chat.server import ChatServer, ChatServerConfig
from trimaran.roles.director.server import DirectorConfig, DirectorServer
from trimaran.roles.dns.server import DnsConfig, run_dns
from trimaran.roles.edge.server import EdgeConfig, EdgeServer
from trimaran.roles.frontend.apps import AppRouter
from trimaran.roles.frontend.chat import ChatRouter
from trimaran.roles.frontend.config import FrontEndConfig
from trimaran.roles.frontend.federation import FederationRoute
from trimaran.roles.frontend.homing import DisasterRecovery, Homing
from trimaran.roles.frontend.interpool import InterPool
from trimaran.roles.frontend.pool import Peer
from trimaran.roles.frontend.server import FrontEndServer
from trimaran.roles.frontend.voice import VoiceRouting
from trimaran.roles.mediation import mediation_port
from trimaran.roles.mediation.server import MediationConfig, MediationServer
from trimaran.security.ca import CertError
from trimaran.security.deployment import certs_dir, install_server
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


def stop_on_signals() -> asyncio.Event:
    """An event SIGTERM or SIGINT sets: the server's cue for its ordered shutdown."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


class _Service(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def revoked_tokens(snapshot: Callable[[], Snapshot]) -> Callable[[], frozenset[str]]:
    """The ids of revoked admin tokens, read from the CMS replica (OPS-6)."""
    def revoked() -> frozenset[str]:
        doc = snapshot().documents.get(access.REVOKED_KEY)
        if doc is None:
            return frozenset()
        try:
            ids = json.loads(doc.body)
        except ValueError:
            log.warning("CMS document %s is not JSON: no token counts as revoked",
                        access.REVOKED_KEY)
            return frozenset()
        return frozenset(str(i) for i in ids) if isinstance(ids, list) else frozenset()
    return revoked


async def run_following(name: str, follower: CmsFollower, server: _Service) -> int:
    """Follow the CMS, run `server` until SIGTERM/SIGINT, then stop both in order."""
    access.use_revocations(revoked_tokens(lambda: follower.snapshot))
    stop = stop_on_signals()
    try:
        await follower.start()
        await server.start()
        gc.collect()
        gc.freeze()          # start-up's objects live as long as the process: never rescan
        log.info("server %s ready", name)
        await stop.wait()
    finally:
        await server.stop()
        await follower.stop()
    return 0


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
        failure_detection=settings.failure_detection_seconds, abuse=settings.abuse,
        deployment_hosts=tuple(sorted({s.address for s in topology.servers})))


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
    if pool.role is PoolRole.SBA:
        backup = branch_backup(topology, rundir, name, pool, store, homing)
    elif partner is not None:
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
    branches = tuple(
        (liveness_watch(topology, sba, resolver.server(name).address),
         BackupService(pool=pool.name, partner=sba.name, partner_servers=sba.servers,
                       store=store, secret=rundir.pair_secret(sba.name, pool.name),
                       records=lambda: homing.records, prefix=branch_prefix(sba.name),
                       local_host=resolver.server(name).address))
        for sba in resolver.pools(PoolRole.SBA)
        if sba.backup_registrar == pool.name and pool.role is PoolRole.FRONTEND)
    return DisasterRecovery(homing, cms, backup, watch, auto, branches=branches)


def branch_prefix(sba: str) -> str:
    """Where an SBA's one-way backup lands on its backup registrar (EV-5)."""
    return f"/backup/branch/{sba}"


def branch_backup(topology: Topology, rundir: RunDir, name: str, pool: Pool, store: Store,
                  homing: Homing) -> BackupService | None:
    """An SBA's Backup Service: its users and data shipped to its backup registrar."""
    resolver = Resolver(topology)
    central = resolver.backup_registrar(pool.name)
    if central is None:
        return None
    return BackupService(pool=pool.name, partner=central.name,
                         partner_servers=central.servers, store=store,
                         secret=rundir.pair_secret(pool.name, central.name),
                         records=lambda: homing.records, prefix=branch_prefix(pool.name),
                         local_host=resolver.server(name).address)


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
    access.use_revocations(revoked_tokens(lambda: follower.snapshot))
    watches = {p.name: liveness_watch(topology, p, spec.address)
               for p in Resolver(topology).pools(PoolRole.FRONTEND)}
    overview = status_overview(topology, rundir, name)
    director = DirectorServer(config, topology, follower, watches,
                              Directory(topology, rundir.cms_secret(), local_host=spec.address),
                              routes=StatusPage(overview).routes())
    stop = stop_on_signals()
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
    stop = stop_on_signals()
    await run_dns(DnsConfig(topology, spec, pool.site_of(spec)), stop)
    return 0


def application_server(topology: Topology, rundir: RunDir, name: str, pool: Pool,
                       store: Store, source: AppsSource) -> AppServer:
    """The application server beside Front End server `name`, with every application."""
    spec = Resolver(topology).server(name)
    config = AppServerConfig(server=name, pool=pool.name, host=spec.address,
                             sip_port=spec.sip_port + APP_PORT_OFFSET,
                             frontend_port=spec.sip_port, domain=topology.sip_domain,
                             secret=rundir.cms_secret())
    server = AppServer(config, source.current, source.document, store=store)
    for make in APPLICATIONS:
        server.add(make(server.context))
    return server


def mediation_config(topology: Topology, rundir: RunDir, name: str, pool: Pool, *,
                     admin: bool = True) -> MediationConfig:
    """The configuration of Mediation server `name` (or of an SBA's mediation half):
    inbound calls go to the next-hop Front End pool (an SBA: itself), then to that
    pool's backup registrar."""
    resolver = Resolver(topology)
    spec = resolver.server(name)
    if pool.role is PoolRole.SBA:
        hops: tuple[Server, ...] = (spec,)
        home = pool.name
    else:
        home = pool.next_hop or ""
        hops = resolver.servers_of(home) if home else ()
    registrar = resolver.backup_registrar(home) if home else None
    return MediationConfig(
        server=name, pool=pool.name, host=spec.address, sip_port=mediation_port(pool, spec),
        admin_port=spec.admin_port if admin else None, domain=topology.sip_domain,
        secret=rundir.cms_secret(), next_hops=hops,
        fallback_hops=registrar.servers if registrar is not None else ())


async def serve_mediation(topology: Topology, rundir: RunDir, name: str, pool: Pool) -> int:
    """Run Mediation server `name` until SIGTERM/SIGINT (EV-2, EV-3)."""
    spec = Resolver(topology).server(name)
    follower = CmsFollower(server=name, pool=pool.name, topology=topology,
                           replica_path=rundir.cms_replica(name), secret=rundir.cms_secret(),
                           local_host=spec.address)
    source = VoiceSource(topology, lambda: follower.snapshot)
    server = MediationServer(mediation_config(topology, rundir, name, pool), source.current)
    return await run_following(name, follower, server)


async def serve_edge(topology: Topology, rundir: RunDir, name: str, pool: Pool) -> int:
    """Run Edge server `name` until SIGTERM/SIGINT (EDGE-1, EDGE-3, EDGE-4)."""
    spec = Resolver(topology).server(name)
    outside = spec.external_endpoint
    if outside is None:
        log.error("edge server %s has no external_address", name)
        return 1
    follower = CmsFollower(server=name, pool=pool.name, topology=topology,
                           replica_path=rundir.cms_replica(name), secret=rundir.cms_secret(),
                           local_host=spec.address)
    source = EdgeSource(topology, lambda: follower.snapshot)
    internal = frozenset(s.address for s in topology.servers)
    tls = topology.settings.tls    # OPS-6: with TLS, the external side is the TLS port only
    config = EdgeConfig(server=name, pool=pool.name, domain=topology.sip_domain,
                        secret=rundir.cms_secret(), inside=(spec.address, spec.sip_port),
                        outside=(outside.host, tls.sip_port if tls.enabled else outside.port),
                        admin_port=spec.admin_port, internal=internal,
                        outside_tls=tls.enabled)
    server = EdgeServer(config, topology, source.current)
    return await run_following(name, follower, server)


def chat_config(topology: Topology, rundir: RunDir, name: str, pool: Pool) -> ChatServerConfig:
    """The configuration of chat server `name` (PC-1..PC-4)."""
    spec = Resolver(topology).server(name)
    shipping = None
    if pool.log_shipping is not None and pool.backend is not None:
        primaries = tuple(f"postgresql://trimaran@{db.address}:{db.port}/trimaran"
                          for db in (pool.backend.principal, pool.backend.mirror)
                          if db is not None)
        copy = pool.log_shipping.principal
        shipping = (primaries, f"postgresql://trimaran@{copy.address}:{copy.port}/trimaran")
    return ChatServerConfig(
        server=name, pool=pool.name, host=spec.address, sip_port=spec.sip_port,
        admin_port=spec.admin_port, domain=topology.sip_domain, secret=rundir.cms_secret(),
        dsn=lambda mode: chat_dsn(topology, pool.name, mode), shipping=shipping)


async def serve_chat(topology: Topology, rundir: RunDir, name: str, pool: Pool) -> int:
    """Run chat server `name` until SIGTERM/SIGINT (PC-1..PC-4)."""
    spec = Resolver(topology).server(name)
    follower = CmsFollower(server=name, pool=pool.name, topology=topology,
                           replica_path=rundir.cms_replica(name), secret=rundir.cms_secret(),
                           local_host=spec.address)
    source = ChatSource(topology, lambda: follower.snapshot)
    server = ChatServer(chat_config(topology, rundir, name, pool), source.current)
    return await run_following(name, follower, server)


def chat_router(topology: Topology, rundir: RunDir,
                snapshot: Callable[[], Snapshot]) -> Callable[[FrontEndServer], ChatRouter] | None:
    """How a Front End sends its users' chat requests, when the deployment has chat."""
    if not any(p.role is PoolRole.CHAT for p in topology.pools):
        return None
    source = ChatSource(topology, snapshot)
    return lambda fe: ChatRouter(fe, source.current, rundir.cms_secret(), topology)


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
    access.use_rundir(rundir)        # the admin key: checks tokens, signs our admin calls
    try:
        pool = Resolver(topology).pool_of(name)
    except LookupError:
        log.error("the topology has no server named %s", name)
        return 1
    try:   # OPS-6: every SIP endpoint of this process uses the server's TLS policy
        install_server(topology, certs_dir(rundir.path), name)   # SIP and HTTP
    except CertError as exc:
        log.error("server %s: TLS: %s", name, exc)
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
    if pool.role is PoolRole.MEDIATION:
        return await serve_mediation(topology, rundir, name, pool)
    if pool.role is PoolRole.EDGE:
        return await serve_edge(topology, rundir, name, pool)
    if pool.role is PoolRole.CHAT:
        return await serve_chat(topology, rundir, name, pool)
    if pool.role not in (PoolRole.FRONTEND, PoolRole.SBA):
        log.error("server %s: %s pools are not runnable by this version yet", name, pool.role)
        return 1
    config = frontend_config(topology, rundir, name)
    store = await open_store(topology, rundir, pool)
    overview = status_overview(topology, rundir, name)
    dr = disaster_recovery(topology, rundir, name, pool, store)
    local = Resolver(topology).server(name).address
    directory = Directory(topology, rundir.cms_secret(), local_host=local)
    cms = dr.cms
    assert cms is not None
    access.use_revocations(revoked_tokens(lambda: cms.snapshot))
    voice_source = VoiceSource(topology, lambda: cms.snapshot)
    mediation = None
    app_server = None
    apps_source = AppsSource(lambda: cms.snapshot)
    if pool.role is PoolRole.SBA:    # EV-5: the branch's own mediation, beside the registrar
        mediation = MediationServer(
            mediation_config(topology, rundir, name, pool, admin=False), voice_source.current)
    else:                            # APP-1..7: the pool's applications
        app_server = application_server(topology, rundir, name, pool, store, apps_source)
    server = FrontEndServer(config, store, wall_clock=time.time, dr=dr,
                            routes=StatusPage(overview).routes()
                            + (mediation.status_routes() if mediation else ())
                            + __import__("trimaran.roles.frontend.pickup", fromlist=["_"])
                            .pickup_routes(lambda: server, rundir.cms_secret()),  # type: ignore[has-type]
                            interpool=InterPool(pool.name, rundir.cms_secret(), topology,
                                                dr.homing, directory),
                            voice=lambda fe: VoiceRouting(fe, voice_source,
                                                          rundir.cms_secret(), topology),
                            apps=None if app_server is None else
                            lambda fe: AppRouter(fe, apps_source.current,
                                                 rundir.cms_secret(), topology),
                            app_status=app_server.status if app_server else None,
                            federation=FederationRoute(
                                topology, EdgeSource(topology, lambda: cms.snapshot).current,
                                rundir.cms_secret()),
                            chat=chat_router(topology, rundir, lambda: cms.snapshot))
    stop = stop_on_signals()
    try:
        await server.start()
        if mediation is not None:
            await mediation.start()
        if app_server is not None:
            await app_server.start()
        gc.collect()
        gc.freeze()          # start-up's objects live as long as the process: never rescan
        log.info("server %s ready", name)
        await stop.wait()
        log.info("server %s stopping", name)
    finally:
        if mediation is not None:
            await mediation.stop()
        if app_server is not None:
            await app_server.stop()
        await server.stop()
        await directory.close()
        await overview.close()
        await store.close()
    return 0
