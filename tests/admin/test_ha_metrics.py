"""The HA state of a Front End on /metrics (SPEC OPS-4), scraped as Prometheus would:
registrations and transactions counted, registrar mode and draining, pool membership,
failover records and the Backup Service's lag, each in a real state of real servers
on loopback; and the sources' contract: described at every scrape, refreshed first,
and a failing one never fails the scrape."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.admin.scrape import Scrape, scrape, scrape_until
from tests.frontend.conftest import DOMAIN, FAST, FrontEnd, add_user, password_of, start_frontend
from tests.interop.sipp import free_port
from tests.pool.conftest import Pool
from trimaran import __version__
from trimaran.admin import metrics as admin_metrics
from trimaran.admin.metrics import Families, ServerMetrics, register_result
from trimaran.backup.service import BackupService
from trimaran.client.ua import UAConfig, UserAgent
from trimaran.cms.failover import PoolFailover, document_key, plan_failover
from trimaran.cms.replica import Snapshot
from trimaran.net.transport import Address
from trimaran.roles.frontend.config import FrontEndConfig
from trimaran.roles.frontend.homing import DisasterRecovery, Homing
from trimaran.roles.frontend.pool import Peer
from trimaran.roles.frontend.server import FrontEndServer
from trimaran.sip.message import Response
from trimaran.store.base import StoreUnavailable
from trimaran.store.model import CmsDocument
from trimaran.store.sqlite import SqliteStore
from trimaran.topology.model import Server

PAIR_KEY = b"pair-secret-0123456789abcdef0123"


def exposition(body: tuple[bytes, str]) -> Scrape:
    return Scrape(body[0].decode())


# --- sources ------------------------------------------------------------------------------

async def test_sources_describe_the_state_at_every_scrape_after_their_refresh() -> None:
    metrics = ServerMetrics(server="fe1a", role="frontend", pool="fe1")
    mode, refreshed = ["full"], [0]

    async def refresh() -> None:
        refreshed[0] += 1

    def describe(families: Families) -> None:
        families.state("registrar_mode", "mode", ("full", "resiliency"), mode[0])
        families.gauge("refreshes", "refreshes", refreshed[0], target="se2")

    metrics.add_source("test", describe, refresh)
    first = exposition(await metrics.scrape())
    mode[0] = "resiliency"
    second = exposition(await metrics.scrape())
    assert first("trimaran_server_info", server="fe1a", pool="fe1", role="frontend",
                 version=__version__) == 1
    assert first.one_hot("registrar_mode") == "full"
    assert first("registrar_mode", state="resiliency") == 0
    assert first("refreshes", target="se2") == 1
    assert second.one_hot("registrar_mode") == "resiliency"
    assert second("refreshes", target="se2") == 2


async def test_a_failing_source_never_fails_the_scrape_and_is_counted(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(admin_metrics, "REFRESH_TIMEOUT", 0.05)
    metrics = ServerMetrics()

    async def store_away() -> None:
        raise StoreUnavailable("back end unreachable")

    async def hangs() -> None:
        await asyncio.sleep(30)

    def broken(families: Families) -> None:
        families.gauge("half_described", "doc", 1.0)
        raise KeyError("a bug")

    metrics.add_source("store", lambda f: f.gauge("from_memory", "doc", 7.0), store_away)
    metrics.add_source("slow", lambda f: f.gauge("also_known", "doc", 1.0), hangs)
    metrics.add_source("broken", broken)
    started = time.monotonic()
    exposition(await metrics.scrape())
    got = exposition(await metrics.scrape())
    assert time.monotonic() - started < 2.0
    assert got("from_memory") == 7 and got("also_known") == 1 and got("half_described") == 1
    assert got("metrics_source_errors_total", source="store") == 2
    assert got("metrics_source_errors_total", source="slow") == 2
    assert got("metrics_source_errors_total", source="broken") == 1


@pytest.mark.parametrize(("code", "mode", "result"), [
    (200, "full", "accepted_full"), (200, "resiliency", "accepted_resiliency"),
    (302, None, "redirected"), (401, None, "challenged"), (407, None, "challenged"),
    (503, None, "unavailable"), (423, None, "rejected"), (500, None, "rejected")])
def test_register_results_say_what_the_client_was_told(code: int, mode: str | None,
                                                       result: str) -> None:
    assert register_result(code, mode) == result


# --- a Front End ---------------------------------------------------------------------------

@pytest.fixture
async def frontend(tmp_path: Path) -> AsyncIterator[FrontEnd]:
    fe = await start_frontend(tmp_path, host="127.0.22.1")
    await add_user(fe.store, "alice")
    yield fe
    await fe.server.stop()
    await fe.store.close()


async def signed_in(fe: FrontEnd, name: str = "alice") -> tuple[UserAgent, Response]:
    host, port = fe.server.sip_address
    ua = UserAgent(UAConfig(aor=f"sip:{name}@{DOMAIN}", password=password_of(name),
                            servers=(Address("tcp", host, port),), timers=FAST,
                            auto_refresh=False))
    await ua.start()
    return ua, await ua.register()


async def test_a_register_moves_the_registration_and_transaction_counters(
        frontend: FrontEnd) -> None:
    ua, response = await signed_in(frontend)
    try:
        assert response.status == 200
        got = await scrape_until(frontend.admin_url, lambda m: m("registered_bindings") == 1,
                                 what="the binding counted by housekeeping")
    finally:
        await ua.close()
    assert got("trimaran_server_info", server="se1", pool="se1", role="frontend",
               version=__version__) == 1
    assert got("registrar_registers_total", result="challenged") == 1
    assert got("registrar_registers_total", result="accepted_full") == 1
    assert got("sip_transactions_total", side="server", method="REGISTER", result="4xx") == 1
    assert got("sip_transactions_total", side="server", method="REGISTER", result="2xx") == 1
    assert got.one_hot("registrar_mode") == "full"
    assert got("registrar_draining") == 0
    assert got("failover_state", pool="se1", state="normal") is None   # no DR here


async def test_a_draining_server_says_so_and_counts_the_sign_ins_it_refuses(
        frontend: FrontEnd) -> None:
    """FE-5 seen from monitoring: draining, and REGISTERs answered 503."""
    await frontend.server.drain()
    ua, response = await signed_in(frontend)
    await ua.close()
    assert response.status == 503
    got = await scrape(frontend.admin_url)
    assert got("registrar_draining") == 1
    assert got("registrar_registers_total", result="unavailable") == 1
    assert got("registrar_registers_total", result="accepted_full") == 0


async def test_a_dead_peer_shows_in_the_pool_membership(tmp_path: Path) -> None:
    """FE-3 seen from monitoring: the survivor counts its peer dead."""
    peers = {name: Peer(name, f"127.0.22.{i + 11}", free_port(host=f"127.0.22.{i + 11}"))
             for i, name in enumerate(("fe1a", "fe1b"))}
    pool = Pool(tmp_path, peers)
    try:
        fe1a = await pool.start("fe1a")
        await pool.start("fe1b")
        assert fe1a.admin_address is not None
        url = "http://{}:{}".format(*fe1a.admin_address)
        alive = await scrape_until(url, lambda m: m("pool_peer_up", peer="fe1b") == 1
                                   and m("pool_peer_heartbeat_age_seconds", peer="fe1b")
                                   is not None, what="fe1b alive")
        assert alive("pool_members", state="alive") == 2
        assert alive("pool_members", state="dead") == 0
        await pool.stop("fe1b")
        dead = await scrape_until(url, lambda m: m("pool_peer_up", peer="fe1b") == 0,
                                  what="fe1b declared dead")
    finally:
        for name in list(pool.servers):
            await pool.stop(name)
    assert dead("pool_members", state="alive") == 1
    assert dead("pool_members", state="dead") == 1
    age = dead("pool_peer_heartbeat_age_seconds", peer="fe1b")
    assert age is not None and age >= 1.0        # failure_detection is 1 s


# --- a paired Front End: failover records and the Backup Service -------------------------

@dataclass
class Paired:
    """A Standard Edition server of a pair: pool `se<n>` on 127.0.22.2<n>, admin port
    18080 + n, its Backup Service shipping to the other."""

    server: FrontEndServer
    store: SqliteStore
    homing: Homing

    @property
    def url(self) -> str:
        return "http://{}:{}".format(*self.server.admin_address or ("", 0))

    async def stop(self) -> None:
        await self.server.stop()
        await self.store.close()


def paired_spec(pool: str) -> Server:
    number = int(pool[-1])
    return Server(pool, f"127.0.22.2{number}", admin_port=18080 + number)


async def start_paired(path: Path, pool: str, partner: str) -> Paired:
    spec = paired_spec(pool)
    path.mkdir()
    store = SqliteStore(path / "store.sqlite", pool=pool)
    await store.open()
    homing = Homing(pool, store)
    backup = BackupService(pool=pool, partner=partner, partner_servers=(paired_spec(partner),),
                           store=store, secret=PAIR_KEY, records=lambda: homing.records,
                           poll_interval=0.05)
    config = FrontEndConfig(server=pool, pool=pool, domain=DOMAIN, host=spec.address,
                            sip_port=free_port(host=spec.address), admin_port=spec.admin_port,
                            secret=PAIR_KEY, timers=FAST, housekeeping_interval=0.2)
    server = FrontEndServer(config, store, dr=DisasterRecovery(homing, None, backup))
    await server.start()
    return Paired(server, store, homing)


async def test_backup_lag_shows_unshipped_changes_until_the_partner_applies_them(
        tmp_path: Path) -> None:
    """DR-3 seen from monitoring: the lag is the RPO, and a failover fences shipping."""
    se1 = await start_paired(tmp_path / "se1", "se1", "se2")
    se2: Paired | None = None
    try:
        for name in ("alice", "bob"):
            await add_user(se1.store, name, pool="se1")
        written = await se1.store.changes.last_seq()
        labels = {"source": "se1", "target": "se2"}
        cut = await scrape(se1.url)                                  # se2 is not running
        assert cut("backup_lag_changes", **labels) == written > 0
        lag = cut("backup_lag_seconds", **labels)
        assert lag is not None and lag >= 0
        assert cut.one_hot("backup_state", **labels) == "broken"
        assert cut("backup_changes_shipped_total", **labels) == 0
        assert cut("backup_shipper", **labels) == 1
        assert cut.one_hot("failover_state", pool="se1") == "normal"

        se2 = await start_paired(tmp_path / "se2", "se2", "se1")
        steady = await scrape_until(
            se1.url, lambda m: m("backup_lag_changes", **labels) == 0,
            what="se2 applying se1's changes")
        assert steady.one_hot("backup_state", **labels) == "steady"
        assert steady("backup_lag_seconds", **labels) == 0
        assert steady("backup_changes_shipped_total", **labels) == written

        record = plan_failover(PoolFailover("se1", backup="se2"), PoolFailover("se2"),
                               cms_master="se2", disaster=True, now=time.time())
        se1.homing.update(Snapshot(version=2, documents={
            document_key("se1"): CmsDocument(document_key("se1"), record.to_json(), 2, 0.0)}))
        fenced = await scrape(se1.url)
    finally:
        for paired in (se1, se2):
            if paired is not None:
                await paired.stop()
    assert fenced.one_hot("failover_state", pool="se1") == "failed-over"
    assert fenced("failover_term", pool="se1") == record.term == 1
    assert fenced.one_hot("backup_state", **labels) == "broken"      # fenced: not shipping
