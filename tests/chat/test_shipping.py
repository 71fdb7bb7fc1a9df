"""Log shipping of the chat store to the second data center (SPEC PC-3, PC-4), against
real PostgreSQL: the primary data center's synchronous pair and the copy cascading
from it (`trimaran.deploy.backends.start_shipped`), with its own mirror, as `trimaran
up` builds them; the lag measured (`trimaran.chat.shipping.measure_lag`).

The tests share one deployment and run in file order: the last ones kill the
principal and promote the copy.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest

from tests.backend.mirroring import free_port
from trimaran.backend import PostgresNotInstalled, find_bin_dir
from trimaran.backend.pair import create_pair
from trimaran.chat.shipping import Lag, copy_status, measure_lag
from trimaran.cms.chatdoc import ChatMode
from trimaran.deploy.backends import start_shipped
from trimaran.deploy.chatdb import chat_dsn, require_standby
from trimaran.deploy.database import chat_databases, databases_of, instance, one_dsn
from trimaran.deploy.rundir import DatabaseState, DeploymentState, RunDir
from trimaran.topology.loader import load_topology

#: Throw-away data directories on tmpfs when there is one: the instances are durable, as
#: `trimaran up` runs them, and fsync on a disk would dominate the test's time.
SCRATCH = "/dev/shm" if Path("/dev/shm").is_dir() else None
HOSTS = {"principal": "127.0.48.1", "mirror": "127.0.48.2", "shipped": "127.0.48.3",
         "shipped-mirror": "127.0.48.4"}


def topology_text(ports: dict[str, int]) -> str:
    """A chat pool with a mirrored store in dc1 shipping its log to dc2."""
    return f"""
name: shipping-test
sip_domain: trimaran.test
sites: [{{name: dc1}}, {{name: dc2}}]
pools:
  - {{name: se1, site: dc1, role: frontend, edition: standard,
     servers: [{{name: se1, address: 127.0.48.10}}]}}
  - name: pc
    site: dc1
    role: chat
    servers:
      - {{name: pc1, address: 127.0.48.11}}
      - {{name: pc2, address: 127.0.48.12, site: dc2}}
    backend:
      principal: {{address: {HOSTS['principal']}, port: {ports['principal']}}}
      mirror: {{address: {HOSTS['mirror']}, port: {ports['mirror']}}}
    log_shipping:
      site: dc2
      principal: {{address: {HOSTS['shipped']}, port: {ports['shipped']}}}
      mirror: {{address: {HOSTS['shipped-mirror']}, port: {ports['shipped-mirror']}}}
"""


class Store:
    """The deployment's chat store: the run directory and its instances."""

    def __init__(self, run: RunDir, state: DeploymentState) -> None:
        self.run, self.state = run, state
        self.dbs = chat_databases(state, "pc")
        self.topology = load_topology(run.topology)

    def db(self, role: str) -> DatabaseState:
        """The instance that had `role` at creation."""
        return next(d for d in self.state.databases.values() if d.role == role)

    def dsn(self, role: str) -> str:
        """The URL of that instance."""
        return one_dsn(self.db(role))

    @property
    def pair(self) -> list[str]:
        """The pair's instance URLs (what the lag is measured against)."""
        return [self.dsn("principal"), self.dsn("mirror")]

    async def lag(self) -> Lag:
        """The copy's lag now."""
        return await measure_lag(self.pair, self.dsn("shipped"))


@pytest.fixture(scope="module")
def store() -> Iterator[Store]:
    """The pair created and synchronous, the copy and its mirror cloned and streaming."""
    try:
        find_bin_dir()
    except PostgresNotInstalled as exc:
        pytest.skip(str(exc))
    base = Path(tempfile.mkdtemp(prefix="trimaran-shipping-", dir=SCRATCH))
    base.chmod(0o711)
    run = RunDir(base / "run")
    run.create()
    ports = {role: free_port(host) for role, host in HOSTS.items()}
    run.topology.write_text(topology_text(ports))
    state = DeploymentState("shipping-test", {},
                            {d.name: d for d in databases_of(load_topology(run.topology))})
    s = Store(run, state)
    try:
        asyncio.run(create_pair(instance(run, s.db("principal")), instance(run, s.db("mirror")),
                                application_name=s.db("mirror").name, timeout=60))
        asyncio.run(_execute(s.dsn("principal"),
                             "CREATE TABLE posts (n integer PRIMARY KEY, body text)"))
        start_shipped(run, state, "pc", timeout=60)
        yield s
    finally:
        for database in state.databases.values():
            instance(run, database).kill()
        shutil.rmtree(base, ignore_errors=True)


async def _execute(dsn: str, *statements: str) -> None:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        for sql in statements:
            await conn.execute(sql, timeout=10)
    finally:
        await conn.close()


async def _numbers(dsn: str) -> set[int]:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        return {row[0] for row in await conn.fetch("SELECT n FROM posts", timeout=10)}
    finally:
        await conn.close()


async def post(dsn: str, *numbers: int) -> None:
    """Commit one row per number (each acknowledged by the time this returns)."""
    await _execute(dsn, *(f"INSERT INTO posts VALUES ({n}, 'post {n}')" for n in numbers))


async def until_on(dsn: str, numbers: set[int], timeout: float = 20.0) -> None:
    """Wait until `numbers` are all readable at `dsn`."""
    deadline = time.monotonic() + timeout
    while not numbers <= await _numbers(dsn):
        assert time.monotonic() < deadline, f"{sorted(numbers)} not on {dsn} in {timeout} s"
        await asyncio.sleep(0.1)


async def test_pc3_rows_committed_on_the_principal_reach_the_copy_and_its_mirror(
        store: Store) -> None:
    await post(store.dsn("principal"), 1, 2, 3)
    await until_on(store.dsn("shipped"), {1, 2, 3})
    await until_on(store.dsn("shipped-mirror"), {1, 2, 3})
    status = await copy_status(store.dsn("shipped"))
    assert status.standby and status.receiving


async def test_pc3_the_copy_streams_from_the_synchronous_mirror(store: Store) -> None:
    status = await copy_status(store.dsn("shipped"))
    assert status.upstream == f"{HOSTS['mirror']}:{store.db('mirror').port}"
    mirror_of_copy = await copy_status(store.dsn("shipped-mirror"))
    assert mirror_of_copy.upstream == f"{HOSTS['shipped']}:{store.db('shipped').port}"
    conninfo = instance(store.run, store.db("shipped")).auto_conf()["primary_conninfo"]
    assert f"host={HOSTS['mirror']},{HOSTS['principal']} " in conninfo     # mirror first,
    assert "target_session_attrs=prefer-standby" in conninfo              # a standby wins


async def test_pc4_the_lag_is_measured_while_the_copy_does_not_replay_and_returns_to_zero(
        store: Store) -> None:
    copy = instance(store.run, store.db("shipped"))
    await until_on(store.dsn("shipped"), {1, 2, 3})
    await wait_lag(store, lambda lag: lag.bytes == 0)
    copy.stop()
    down = await store.lag()                     # never raises for a database away
    assert (down.bytes, down.seconds, down.receiving) == (None, None, False)
    assert down.error is not None and "the copy does not answer" in down.error
    await post(store.dsn("principal"), 4, 5)
    copy.start(timeout=30)
    await _execute(store.dsn("shipped"), "SELECT pg_wal_replay_pause()")
    await post(store.dsn("principal"), 6)
    behind = await wait_lag(store, lambda lag: (lag.bytes or 0) > 0)
    assert behind.seconds is not None and behind.seconds > 0
    assert behind.replay_at is not None and behind.replay_at < behind.measured_at
    assert behind.error is None
    await _execute(store.dsn("shipped"), "SELECT pg_wal_replay_resume()")
    caught_up = await wait_lag(store, lambda lag: lag.bytes == 0)
    assert caught_up.seconds == 0 and caught_up.receiving and caught_up.error is None
    await until_on(store.dsn("shipped"), {4, 5, 6})
    assert Lag.from_json(caught_up.to_json()) == caught_up


async def test_pc3_the_copy_follows_the_mirror_promoted_when_the_principal_dies(
        store: Store) -> None:
    instance(store.run, store.db("principal")).kill()
    alone = await measure_lag([store.dsn("principal")], store.dsn("shipped"), timeout=1.0)
    assert alone.bytes is None and alone.error is not None
    assert "no primary instance answers" in alone.error
    instance(store.run, store.db("mirror")).promote()
    await asyncio.to_thread(require_standby, store.dsn("mirror"), "")  # as its agent would
    await post(store.dsn("mirror"), 7, 8)
    await until_on(store.dsn("shipped"), {7, 8})
    await until_on(store.dsn("shipped-mirror"), {7, 8})
    timeline = await _value(store.dsn("shipped"),
                            "SELECT received_tli FROM pg_stat_wal_receiver")
    assert timeline == 2                         # the promoted mirror's new timeline
    status = await copy_status(store.dsn("shipped"))
    assert status.receiving and status.standby
    assert (await wait_lag(store, lambda lag: lag.bytes == 0)).error is None


async def test_pc4_the_promoted_copy_is_writable_with_its_mirror_synchronous(
        store: Store) -> None:
    instance(store.run, store.db("shipped")).promote()
    await asyncio.to_thread(require_standby, store.dsn("shipped"), '"pc-shipped-mirror"')
    deadline = time.monotonic() + 20
    while await _value(store.dsn("shipped"), "SELECT sync_state FROM pg_stat_replication "
                       "WHERE application_name = 'pc-shipped-mirror'") != "sync":
        assert time.monotonic() < deadline, "the copy's mirror is not synchronous"
        await asyncio.sleep(0.1)
    dsn = chat_dsn(store.topology, "pc", ChatMode.FAILED_OVER)
    await post(dsn, 9)
    assert {1, 2, 3, 4, 5, 6, 7, 8, 9} <= await _numbers(store.dsn("shipped-mirror"))
    status = await copy_status(store.dsn("shipped"))
    assert not status.standby


async def _value(dsn: str, sql: str) -> object:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        return await conn.fetchval(sql, timeout=10)
    finally:
        await conn.close()


async def wait_lag(store: Store, condition: Callable[[Lag], bool],
                   timeout: float = 20.0) -> Lag:
    """Measure until `condition` holds; the measurement that matched."""
    deadline = time.monotonic() + timeout
    while True:
        lag = await store.lag()
        if condition(lag):
            return lag
        assert time.monotonic() < deadline, f"lag never matched: last {lag}"
        await asyncio.sleep(0.1)
