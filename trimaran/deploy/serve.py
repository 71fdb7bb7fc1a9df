"""`trimaran serve --server NAME`: run one server of the topology in this process."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import time

from trimaran.deploy.rundir import RunDir
from trimaran.roles.frontend.config import FrontEndConfig
from trimaran.roles.frontend.server import FrontEndServer
from trimaran.store.sqlite import SqliteStore
from trimaran.topology.loader import load_topology
from trimaran.topology.model import Edition, PoolRole, Topology
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
    return FrontEndConfig(
        server=name, pool=pool.name, domain=topology.sip_domain, host=server.address,
        sip_port=server.sip_port, admin_port=server.admin_port,
        secret=rundir.secret(pool.name),
        min_expires=settings.registration_min_expires,
        max_expires=settings.registration_max_expires,
        default_expires=settings.registration_default_expires,
        digest_algorithms=settings.digest_algorithms)


async def serve(rundir: RunDir, name: str) -> int:
    """Run server `name` until SIGTERM/SIGINT; return the exit code."""
    topology = load_topology(rundir.topology)
    try:
        pool = Resolver(topology).pool_of(name)
    except LookupError:
        log.error("the topology has no server named %s", name)
        return 1
    if pool.role is not PoolRole.FRONTEND or pool.edition is not Edition.STANDARD:
        log.error("server %s: %s pools are not runnable by this version yet", name, pool.role)
        return 1
    config = frontend_config(topology, rundir, name)
    store = SqliteStore(rundir.store_path(config.pool), pool=config.pool)
    await store.open()
    server = FrontEndServer(config, store, wall_clock=time.time)
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
        await store.close()
    return 0
