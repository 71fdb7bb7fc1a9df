"""A Persistent Chat pool's store across two data centers, run on this machine
(SPEC PC-3, PC-4): where servers connect, the log-shipped copy, failover and failback.

Theory of operation
-------------------
*Normal.* The store is the primary data center's Back End: a principal and its
synchronous mirror with their agents and the witness (DESIGN §3), exactly like an
Enterprise pool's. The copy in the second data center (``<pool>-shipped``) is an
**asynchronous cascading hot standby**: cloned with ``pg_basebackup``, its
``primary_conninfo`` lists the pair's mirror first, then its principal (libpq
multi-host), with ``target_session_attrs=prefer-standby`` so that it streams from
whichever of the pair is the mirror now (after a Back End failover too), else from
the one that answers. Streaming from the synchronous mirror, the copy never holds a
transaction the mirror lacks, so it can follow the mirror's promotion (the standby
follows the latest timeline). The copy's optional mirror (``<pool>-shipped-mirror``)
cascades from the copy. Chat servers connect with `chat_dsn` (multi-host, read-write).

*Failover* (`failover`, ``trimaran chat failover``): the copy is promoted and
becomes the store, its mirror (if any) becomes its synchronous standby, and the CMS
``chat`` document says ``failed-over`` with the second data center's servers active.
Refused while the primary data center's store still accepts writes, unless
``force``: then its agents and instances are stopped first (fencing: a store that
keeps accepting posts nobody will read again would lose them silently). What can be
lost is what the copy had not replayed: the report gives the lag at the failure
and the time of the copy's last replayed commit.

*Failback* (`failback`): posts are refused (mode ``failing-back``) and the copy is
fenced (read-only, sessions terminated), so it no longer changes; the primary data
center's principal — the node its agents' durable state and the witness name — is
re-cloned from the copy as its standby, catches up with it, and is promoted once the
copy is stopped (every commit made during the failover is on it); its partner is
re-cloned from it as its synchronous mirror; the agents start again. The copy is then
re-cloned from the pair as the cascading standby again and the mode goes back to
``normal``. Run again after an interruption, it resumes: while the copy is a
primary, the copy holds the data; once it is a standby again (or gone), the pair does.

Terms. The agents keep their term: the witness's record (term T, principal X) still
says who may write, X is the principal again and its partner its mirror, so nothing
for the term to fence changed — the term orders role changes between the two
partners, not data copies, and the old data directories of both partners are gone
(re-cloned), so no stale instance can come back read-write. The only API that raises
a term is a failover between the partners, which would swap them for nothing. Where
the durable files disagree with each other or the witness (a crash between a vote and
its durable record), the highest term seen wins and the files are rewritten to it
before the agents start — never lowered.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from trimaran.backend.decide import sync_names_for
from trimaran.backend.instance import SUPERUSER, BackendError
from trimaran.backend.pgconf import quote
from trimaran.chat.shipping import PG_ERRORS, Lag, copy_status, measure_lag
from trimaran.cms.chatdoc import (
    CHAT_KEY,
    ChatMode,
    ChatState,
    ChatStateError,
    ChatStateRefused,
    chat_pool,
    default_state,
    document_in,
    failed_over,
    failing_back,
    normal,
    state_of,
)
from trimaran.deploy.backends import (
    agent_healthy,
    align_agents,
    choose_principal,
    clone_copy,
    start_agent,
    stop_databases,
)
from trimaran.deploy.database import (
    ChatDatabases,
    agent_url,
    chat_databases,
    instance,
    one_dsn,
)
from trimaran.deploy.dr import Deployment, DrError, Timeline, call
from trimaran.deploy.rundir import DatabaseState, DeploymentState, RunDir
from trimaran.deploy.sites import SiteError, database_site, load_failed
from trimaran.deploy.supervisor import request_json
from trimaran.topology.model import DatabaseEndpoint, PoolRole, Topology

WAIT = 30.0                 # seconds any one step may take
SERVERS_PICK_UP = 3.0       # seconds servers get to take a new mode before we go on
_POLL = 0.1


class ChatDbError(Exception):
    """A chat store operation is refused or failed; the message says why."""


# --- where servers connect ------------------------------------------------------------


def dsn_of(hosts: Sequence[DatabaseEndpoint | DatabaseState]) -> str:
    """The multi-host, read-write DSN of `hosts` (the chat database is ``trimaran``)."""
    where = ",".join(f"{h.address}:{h.port}" for h in hosts)
    return f"postgresql://{SUPERUSER}@{where}/trimaran?target_session_attrs=read-write"


def chat_dsn(topology: Topology, pool: str, mode: ChatMode) -> str:
    """Where chat servers of `pool` find the store in `mode`: the primary data center's
    pair (normal, failing-back), else the promoted copy and its mirror (failed-over).
    `LookupError` for a pool without a store (or without a copy when failed over)."""
    found = next((p for p in topology.pools if p.name == pool and p.role is PoolRole.CHAT),
                 None)
    if found is None or found.backend is None or found.backend.principal is None:
        raise LookupError(f"chat pool {pool} has no store (backend.principal)")
    if mode is ChatMode.FAILED_OVER:
        if found.log_shipping is None:
            raise LookupError(f"chat pool {pool} ships no log: it has no copy to fail over to")
        return dsn_of([db for _, db in found.log_shipping.instances])
    return dsn_of([db for db in (found.backend.principal, found.backend.mirror)
                   if db is not None])


# --- SQL, from synchronous code --------------------------------------------------------------


async def _query(dsn: str, sql: str, timeout: float) -> Any:
    conn = await asyncpg.connect(dsn, timeout=timeout, command_timeout=timeout)
    try:
        return await conn.fetchval(sql, timeout=timeout)
    finally:
        await conn.close(timeout=timeout)


def value(dsn: str, sql: str, timeout: float = 5.0) -> Any:
    """The first value of `sql` on `dsn` (one statement, its own connection); the
    database's errors are `ChatDbError`."""
    try:
        return asyncio.run(asyncio.wait_for(_query(dsn, sql, timeout), timeout * 2))
    except PG_ERRORS as exc:
        raise ChatDbError(f"{dsn.split('@', 1)[-1].split('/', 1)[0]}: "
                          f"{type(exc).__name__}: {exc}") from exc


def execute(dsn: str, *statements: str, timeout: float = 5.0) -> None:
    """Run `statements` one by one (ALTER SYSTEM cannot be in a transaction block)."""
    for sql in statements:
        value(dsn, sql, timeout)


def accepts_writes(dsn: str, timeout: float = 2.0) -> str | None:
    """``host:port`` of the instance of `dsn` that accepts writes now (a read-write
    session opens: not in recovery, not fenced), None when none does."""
    try:
        return str(value(dsn, "SELECT inet_server_addr()::text || ':' || "
                              "inet_server_port()::text", timeout))
    except ChatDbError:
        return None


def fence(dsn: str) -> None:
    """Make the instance refuse writes (as an agent fences: the default for every new
    transaction, then every client session terminated)."""
    execute(dsn, "ALTER SYSTEM SET default_transaction_read_only = on",
            "SELECT pg_reload_conf()")
    time.sleep(0.1)
    execute(dsn, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE "
                 "backend_type = 'client backend' AND pid <> pg_backend_pid()")


def require_standby(dsn: str, names: str) -> None:
    """Commits on `dsn` wait for the standbys `names` (``''``: for nobody); writable."""
    execute(dsn, f"ALTER SYSTEM SET synchronous_standby_names = '{quote(names)}'",
            "ALTER SYSTEM RESET default_transaction_read_only", "SELECT pg_reload_conf()")


def wait_until(check: Callable[[], bool], what: str, timeout: float = WAIT) -> float:
    """Poll `check` until it holds; the seconds it took (`ChatDbError` naming `what`)."""
    started = time.monotonic()
    while True:
        try:
            if check():
                return time.monotonic() - started
        except ChatDbError:
            pass
        if time.monotonic() - started > timeout:
            raise ChatDbError(f"not within {timeout:.0f} s: {what}")
        time.sleep(_POLL)


def _lsn(dsn: str, function: str) -> int:
    return int(value(dsn, f"SELECT pg_wal_lsn_diff({function}(), '0/0')::bigint"))


def _synchronous(dsn: str, name: str) -> bool:
    return bool(value(dsn, "SELECT sync_state FROM pg_stat_replication WHERE "
                           f"application_name = '{quote(name)}'") == "sync")


# --- the CMS document ----------------------------------------------------------------------


def read_state(dep: Deployment) -> tuple[str, ChatState, int | None, str | None]:
    """(CMS master, chat state in use, document version or None when there is none,
    why the document does not load or None). A bad document gives the default state."""
    try:
        master, answer = dep.cms_master()
    except DrError as exc:
        raise ChatDbError(str(exc)) from None
    found = document_in(answer)
    if found is None:
        return master, default_state(dep.topology), None, None
    body, version = found
    try:
        return master, state_of(dep.topology, body), version, None
    except ChatStateError as exc:
        return master, default_state(dep.topology), version, str(exc)


def write_state(dep: Deployment, master: str, state: ChatState, version: int | None,
                pool: str) -> int:
    """Compare-and-set the ``chat`` document at `version`; every Front End and the
    servers of `pool` pull at once. The new version."""
    status, body = dep.first(master, "POST", "/cms/documents", {
        "key": CHAT_KEY, "body": state.body(), "check": True, "expect_version": version},
        key=dep.cms_key)
    if status != 200:
        raise ChatDbError(f"the CMS master {master} refused the chat document: "
                          f"{body.get('error', status)} (run the command again if another "
                          f"change came first)")
    dep.poke_all()
    for spec in dep.resolver.servers_of(pool):
        call(spec, "POST", "/cms/refresh", {}, key=dep.cms_key, timeout=1.0)
    return int(body["version"])


def plan(change: Callable[[], ChatState]) -> ChatState:
    """A planned change, its refusal as `ChatDbError`."""
    try:
        return change()
    except ChatStateRefused as exc:
        raise ChatDbError(exc.reason) from None


def server_samples(dep: Deployment, pool: str) -> list[tuple[str, Lag]]:
    """(server, its last log-shipping sample) of every server of `pool` that has one."""
    out = []
    for spec in dep.resolver.servers_of(pool):
        status, body = call(spec, "GET", "/status", timeout=1.0)
        lag = Lag.from_json(body.get("shipping")) if status == 200 else None
        if lag is not None:
            out.append((spec.name, lag))
    return out


def _when(at: float | None) -> str | None:
    return None if at is None else datetime.fromtimestamp(at, UTC).isoformat(
        timespec="milliseconds")


def _context(dep: Deployment, pool: str) -> tuple[DeploymentState, ChatDatabases]:
    try:
        chat = chat_pool(dep.topology, pool)
    except ChatStateRefused as exc:
        raise ChatDbError(exc.reason) from None
    if chat.log_shipping is None:
        raise ChatDbError(f"chat pool {pool} ships no log (no log_shipping in the topology): "
                          f"there is no copy to fail over to or back from")
    state = dep.run.load_state()
    try:
        dbs = chat_databases(state, pool)
    except LookupError as exc:
        raise ChatDbError(str(exc)) from None
    if dbs.shipped is None:
        raise ChatDbError(f"the log-shipped copy of {pool} is not part of this deployment")
    return state, dbs


# --- failover ----------------------------------------------------------------------------


def _loss_bound(dep: Deployment, pool: str, dbs: ChatDatabases,
                timeline: Timeline) -> dict[str, Any] | None:
    """The lag at the failure: measured now when the primary answers, else the newest
    sample of the pool's servers."""
    assert dbs.shipped is not None
    now = asyncio.run(measure_lag([one_dsn(d) for d in dbs.pair], one_dsn(dbs.shipped)))
    samples = server_samples(dep, pool)
    newest = max(samples, key=lambda s: s[1].measured_at, default=None)
    if now.error is None:
        chosen, source = now, "measured now"
    elif newest is not None:
        chosen, source = newest[1], f"last sample of server {newest[0]}"
    else:
        timeline.step(f"no lag known: {now.error}; no server of {pool} has a sample")
        return None
    bound = {"bytes": chosen.bytes, "seconds": chosen.seconds, "source": source,
             "sample_age": round(time.time() - chosen.measured_at, 3)}
    timeline.step(f"lag at the failure ({source}): {chosen.bytes} bytes, "
                  f"{chosen.seconds} s (sample {bound['sample_age']} s old)")
    return bound


def failover(dep: Deployment, pool: str, *, force: bool = False) -> dict[str, Any]:
    """Make the log-shipped copy the store of `pool` (PC-4); see the module. The report
    (JSON-able); `ChatDbError` when refused or failed."""
    try:
        return _failover(dep, pool, force)
    except BackendError as exc:
        raise ChatDbError(f"chat failover of {pool} failed: {exc}") from exc


def _failover(dep: Deployment, pool: str, force: bool) -> dict[str, Any]:
    timeline = Timeline(echo=dep.echo)
    state, dbs = _context(dep, pool)
    assert dbs.shipped is not None
    master, chat_state, version, bad = read_state(dep)
    if bad is not None:
        raise ChatDbError(f"the chat document does not load ({bad}): cannot tell the pool's "
                          f"mode; fix it first")
    target = plan(lambda: failed_over(chat_state, dep.topology, pool))
    copy = instance(dep.run, dbs.shipped)
    if not copy.is_running():
        raise ChatDbError(f"the log-shipped copy {dbs.shipped.name} is not running: nothing "
                          f"to fail over to (start it: `trimaran site restore` of its site)")
    bound = _loss_bound(dep, pool, dbs, timeline)
    writable = accepts_writes(dsn_of(dbs.pair))
    if writable is not None and not force:
        raise ChatDbError(f"the primary data center's store of {pool} still accepts writes "
                          f"({writable}): failing over now would split the store; use "
                          f"--force to stop it first (fencing)")
    alive = [d.name for d in dbs.pair if instance(dep.run, d).is_running()]
    stop_databases(dep.run, list(dbs.pair))
    dep.run.save_state(state)
    timeline.step(f"primary data center fenced: {', '.join(alive) or 'nothing was running'}"
                  + (f" (it accepted writes at {writable}: --force)" if writable else ""))
    before = asyncio.run(copy_status(one_dsn(dbs.shipped)))
    if copy.standby_configured:
        copy.promote(timeout=WAIT)
        timeline.step(f"{dbs.shipped.name} promoted (last replayed commit "
                      f"{_when(before.replay_at)})")
    mirror_state = _sync_shipped_mirror(dep.run, dbs, timeline)
    new_version = write_state(dep, master, target, version, pool)
    timeline.step(f"chat document version {new_version}: {pool} failed-over, active "
                  f"{', '.join(target.of(pool).active) or 'none'}")
    since = _when(before.replay_at)
    return {"pool": pool, "mode": ChatMode.FAILED_OVER.value,
            "active": list(target.of(pool).active), "store": dsn_of(dbs.copies),
            "seconds": timeline.elapsed, "lag_at_failure": bound,
            "last_replayed_commit": before.replay_at, "last_replayed_commit_at": since,
            "loss": (f"posts acknowledged after {since} may be lost" if since else
                     "the copy had replayed no commit: every post may be lost"),
            "fenced": alive, "forced": writable is not None, "shipped_mirror": mirror_state,
            "steps": timeline.steps}


def _sync_shipped_mirror(run: RunDir, dbs: ChatDatabases, timeline: Timeline) -> str:
    """Make the copy's mirror its synchronous standby when it follows it; else the
    promoted copy commits alone (said so)."""
    assert dbs.shipped is not None
    dsn = one_dsn(dbs.shipped)
    mirror = dbs.shipped_mirror
    if mirror is None:
        require_standby(dsn, "")
        return "none"
    if not instance(run, mirror).is_running():
        require_standby(dsn, "")
        timeline.step(f"{mirror.name} is not running: the store runs without a mirror")
        return "not running"
    require_standby(dsn, sync_names_for(mirror.name))
    try:
        wait_until(lambda: _synchronous(dsn, mirror.name),
                   f"{mirror.name} synchronous with {dbs.shipped.name}", timeout=15.0)
    except ChatDbError as exc:
        require_standby(dsn, "")
        timeline.step(f"{exc}: the store runs without a synchronous mirror")
        return "not synchronous"
    timeline.step(f"{mirror.name} is {dbs.shipped.name}'s synchronous mirror")
    return "synchronous"


# --- failback ------------------------------------------------------------------------------


def _agent_state(database: DatabaseState) -> dict[str, Any]:
    status, body = request_json(f"{agent_url(database)}/state", timeout=1.0)
    return body if status == 200 and isinstance(body, dict) else {}


def pair_steady(dbs: ChatDatabases, principal: DatabaseState) -> bool:
    """The principal's agent serves (with its mirror synchronous) and the mirror's
    follows; without agents, the principal accepts writes."""
    if principal.agent_port is None:
        return accepts_writes(one_dsn(principal)) is not None
    for database in dbs.pair:
        s = _agent_state(database)
        role = "principal" if database is principal else "mirror"
        if s.get("role") != role or not s.get("serving") or not s.get("synchronous"):
            return False
    return True


def _reseed(dep: Deployment, state: DeploymentState, dbs: ChatDatabases,
            timeline: Timeline) -> tuple[DatabaseState, int]:
    """Steps 1 and 3 of a failback: fence the copy, rebuild the pair from it."""
    assert dbs.shipped is not None
    run, copy_dsn = dep.run, one_dsn(dbs.shipped)
    fence(copy_dsn)
    target = _lsn(copy_dsn, "pg_current_wal_lsn")
    timeline.step(f"{dbs.shipped.name} fenced (read-only) at LSN {target}")
    stop_databases(run, list(dbs.pair))
    run.save_state(state)
    timeline.step(f"primary data center stopped: {', '.join(d.name for d in dbs.pair)}")
    principal, term = choose_principal(run, dep.topology, dbs)
    copy = instance(run, dbs.shipped)
    first = instance(run, principal)
    first.reclone_from(copy.host, copy.port, application_name=principal.name, timeout=WAIT)
    first.set_auto_conf({"synchronous_standby_names": None,
                         "default_transaction_read_only": None})
    first.start(timeout=WAIT)
    wait_until(lambda: _lsn(one_dsn(principal), "pg_last_wal_replay_lsn") >= target,
               f"{principal.name} replays the copy up to LSN {target}")
    copy.stop(timeout=WAIT)
    first.promote(timeout=WAIT)
    timeline.step(f"{principal.name} re-cloned from {dbs.shipped.name}, caught up and "
                  f"promoted; {dbs.shipped.name} stopped")
    other = next((d for d in dbs.pair if d is not principal), None)
    if other is not None:
        db = instance(run, other)
        db.reclone_from(first.host, first.port, application_name=other.name, timeout=WAIT)
        db.start(timeout=WAIT)
        require_standby(one_dsn(principal), sync_names_for(other.name))
        wait_until(lambda: _synchronous(one_dsn(principal), other.name),
                   f"{other.name} synchronous with {principal.name}")
        timeline.step(f"{other.name} re-cloned from {principal.name}: its synchronous mirror")
    return principal, term


def _start_agents(run: RunDir, state: DeploymentState, dbs: ChatDatabases,
                  principal: DatabaseState, term: int, timeline: Timeline) -> None:
    if principal.agent_port is None:
        instance(run, principal).start(timeout=WAIT)
        return
    rewritten = align_agents(run, dbs, principal, term)
    if rewritten:
        timeline.step(f"agent state of {', '.join(rewritten)} set to term {term}, "
                      f"principal {principal.name}")
    for database in dbs.pair:
        if not agent_healthy(database):
            start_agent(run, database)
    run.save_state(state)
    wait_until(lambda: pair_steady(dbs, principal),
               f"the agents of {dbs.pool}: {principal.name} serving with a synchronous mirror")
    timeline.step(f"agents serving: {principal.name} principal in term {term}")


def failback(dep: Deployment, pool: str) -> dict[str, Any]:
    """Bring `pool`'s store back to the primary data center (PC-4); see the module. The
    report (JSON-able); `ChatDbError` when refused or failed (run it again: it resumes)."""
    try:
        return _failback(dep, pool)
    except BackendError as exc:
        raise ChatDbError(f"chat failback of {pool} failed: {exc}; run `chat failback` "
                          f"again to resume") from exc


def _failback(dep: Deployment, pool: str) -> dict[str, Any]:
    timeline = Timeline(echo=dep.echo)
    state, dbs = _context(dep, pool)
    assert dbs.shipped is not None
    run = dep.run
    master, chat_state, version, bad = read_state(dep)
    if bad is not None:
        raise ChatDbError(f"the chat document does not load ({bad}): cannot tell the pool's "
                          f"mode; fix it first")
    going = plan(lambda: failing_back(chat_state, dep.topology, pool))
    _require_sites(run, dep.topology, dbs)
    shipped = dbs.shipped
    copy = instance(run, shipped)
    copy_holds_data = copy.initialized and not copy.standby_configured
    if not copy_holds_data and chat_state.of(pool).mode is ChatMode.FAILED_OVER:
        raise ChatDbError(f"{shipped.name} does not hold the store (it is "
                          f"{'a standby' if copy.initialized else 'missing'}): the posts made "
                          f"during the failover are not there to fail back")
    if copy_holds_data and not copy.is_running():
        try:
            copy.start(timeout=WAIT)          # a failback interrupted once it was stopped
        except BackendError as exc:
            raise ChatDbError(f"{shipped.name} holds the store but does not start: "
                              f"{exc}") from None
    refused_at = time.monotonic()
    if chat_state.of(pool).mode is not ChatMode.FAILING_BACK:
        version = write_state(dep, master, going, version, pool)
        timeline.step(f"chat document version {version}: {pool} failing-back (posts refused)")
        _wait_servers(dep, pool, ChatMode.FAILING_BACK, timeline)
    if copy_holds_data:
        principal, term = _reseed(dep, state, dbs, timeline)
    else:
        principal, term = choose_principal(run, dep.topology, dbs)
        timeline.step(f"resuming: the pair holds the store ({principal.name})")
    _start_agents(run, state, dbs, principal, term, timeline)
    clone_copy(run, dbs, WAIT)
    wait_until(lambda: asyncio.run(copy_status(one_dsn(shipped))).receiving,
               f"{shipped.name} streaming from the pair")
    timeline.step(f"{shipped.name} re-cloned from the pair: streaming again")
    done = plan(lambda: normal(going, dep.topology, pool))
    version = write_state(dep, master, done, version, pool)
    refused = round(time.monotonic() - refused_at, 3)
    timeline.step(f"chat document version {version}: {pool} normal, active "
                  f"{', '.join(done.of(pool).active)} (posts refused {refused} s)")
    lag = asyncio.run(measure_lag([one_dsn(d) for d in dbs.pair], one_dsn(shipped)))
    return {"pool": pool, "mode": ChatMode.NORMAL.value, "active": list(done.of(pool).active),
            "store": dsn_of(dbs.pair), "principal": principal.name, "term": term,
            "seconds": timeline.elapsed, "writes_refused_seconds": refused,
            "lag_after": lag.to_json(), "steps": timeline.steps}


def _require_sites(run: RunDir, topology: Topology, dbs: ChatDatabases) -> None:
    try:
        failed = load_failed(run)
    except SiteError as exc:
        raise ChatDbError(str(exc)) from None
    for database in (*dbs.pair, *dbs.copies):
        site = database_site(topology, database)
        if site is not None and site in failed:
            raise ChatDbError(f"site {site} of {database.name} is failed "
                              f"({failed[site].mode.value}): restore it first with "
                              f"`trimaran site restore {site}`")


def _wait_servers(dep: Deployment, pool: str, mode: ChatMode, timeline: Timeline) -> None:
    """Wait (at most `SERVERS_PICK_UP` s) until every answering server of `pool` reports
    `mode` on /status."""
    deadline = time.monotonic() + SERVERS_PICK_UP
    pending = list(dep.resolver.servers_of(pool))
    while pending and time.monotonic() < deadline:
        answers = [(spec, call(spec, "GET", "/status", timeout=0.5)) for spec in pending]
        pending = [spec for spec, (status, body) in answers
                   if status != 0 and body.get("mode") != mode.value]
        if pending:
            time.sleep(_POLL)
    if pending:
        timeline.step(f"server(s) {', '.join(s.name for s in pending)} did not report "
                      f"{mode.value} within {SERVERS_PICK_UP:.0f} s (the store is fenced "
                      f"anyway)")
    else:
        timeline.step(f"the servers of {pool} that answer are {mode.value}")


__all__ = [
    "ChatDatabases",
    "ChatDbError",
    "accepts_writes",
    "chat_dsn",
    "dsn_of",
    "failback",
    "failover",
    "read_state",
    "server_samples",
    "write_state",
]
