"""Starting and stopping the Back Ends of a deployment: PostgreSQL instances, and for a
mirrored Back End the synchronous pair and the agents beside each instance.

A chat pool that ships its log (PC-3) also has its copy in the second data center,
an asynchronous cascading hot standby of the pair, and the copy's optional mirror,
cascading from it (`clone_copy`; why, in `trimaran.deploy.chatdb`). A chat failback
re-seeds the pair behind its agents' backs, so it aligns their durable state with the
witness before starting them again (`choose_principal`, `align_agents`)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from trimaran.backend.agent_io import DurableState, StateFile
from trimaran.backend.decide import Role
from trimaran.backend.durable import DurableStateError, read_json
from trimaran.backend.instance import SUPERUSER, BackendError, PgInstance
from trimaran.backend.pair import create_pair
from trimaran.deploy.database import (
    SHIPPED_ROLES,
    ChatDatabases,
    chat_databases,
    instance,
    witness_url,
)
from trimaran.deploy.rundir import DatabaseState, DeploymentState, RunDir
from trimaran.deploy.supervisor import pid_alive, request_json
from trimaran.topology.model import Topology


def start_backends(run: RunDir, state: DeploymentState, timeout: float) -> None:
    """Create and start every instance; pairs are cloned and synchronous, then their
    agents are started and waited for; a chat pool's log-shipped copy is cloned from
    its pair once the pair is up. Raises `BackendError`."""
    started: set[str] = set()
    for database in state.databases.values():
        if database.name in started or database.role in SHIPPED_ROLES:
            continue
        if database.partner is None:
            db = instance(run, database)
            db.initdb()
            db.start(timeout=timeout)
            started.add(database.name)
            continue
        partner = state.databases[database.partner]
        principal, mirror = (database, partner) if database.role == "principal" \
            else (partner, database)
        asyncio.run(create_pair(instance(run, principal), instance(run, mirror),
                                application_name=mirror.name, timeout=timeout))
        started |= {principal.name, mirror.name}
    for pool in sorted({d.pool for d in state.databases.values() if d.role in SHIPPED_ROLES}):
        start_shipped(run, state, pool, timeout)
    for database in state.databases.values():
        if database.partner is not None:
            start_agent(run, database)
    run.save_state(state)
    waiting = [d for d in state.databases.values() if d.partner is not None]
    deadline = time.monotonic() + timeout
    while waiting:
        waiting = [d for d in waiting if not agent_healthy(d)]
        if waiting and time.monotonic() > deadline:
            raise BackendError(f"agent(s) {', '.join(d.name for d in waiting)} did not start")
        time.sleep(0.1)


def start_agent(run: RunDir, database: DatabaseState) -> int:
    """Spawn the mirroring agent of `database` (logs to RUNDIR/logs/NAME-agent.log)."""
    log_path = run.log_file(f"{database.name}-agent")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "trimaran", "agent", "--db", database.name,
             "--dir", str(run.path)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    database.agent_pid = proc.pid
    return proc.pid


def agent_healthy(database: DatabaseState) -> bool:
    """True when the agent's admin API answers /health."""
    url = f"http://{database.address}:{database.agent_port}/health"
    return request_json(url, timeout=0.5)[0] == 200


def stop_backends(run: RunDir, state: DeploymentState) -> None:
    """Stop the agents first (so none acts on a stopping instance), then the instances."""
    stop_databases(run, list(state.databases.values()))


def stop_databases(run: RunDir, databases: list[DatabaseState]) -> None:
    """Stop the agents of `databases` (SIGTERM, then SIGKILL after 10 s), then their
    instances (fast shutdown, else killed); their agent pids are cleared (save the
    state afterwards)."""
    for database in databases:
        if database.agent_pid and pid_alive(database.agent_pid):
            os.killpg(database.agent_pid, signal.SIGTERM)
    for database in databases:
        deadline = time.monotonic() + 10
        while database.agent_pid and pid_alive(database.agent_pid) and \
                time.monotonic() < deadline:
            time.sleep(0.05)
        if database.agent_pid and pid_alive(database.agent_pid):
            os.killpg(database.agent_pid, signal.SIGKILL)
        database.agent_pid = None
    for database in databases:
        db = instance(run, database)
        if db.is_running():
            try:
                db.stop()
            except BackendError:
                db.kill()


# --- a chat pool's log-shipped copy ------------------------------------------------------


def conninfo(upstreams: Sequence[DatabaseState], application_name: str) -> str:
    """``primary_conninfo`` of a cascading standby of `upstreams` (tried in order, a
    standby preferred), known to them as `application_name`."""
    hosts = ",".join(u.address for u in upstreams)
    ports = ",".join(str(u.port) for u in upstreams)
    return (f"host={hosts} port={ports} user={SUPERUSER} application_name={application_name}"
            f" target_session_attrs=prefer-standby")


def make_cascade(db: PgInstance, upstreams: Sequence[DatabaseState], name: str) -> None:
    """Set the stopped data directory `db` up as a hot standby of `upstreams` (see
    `conninfo`) that requires no synchronous standby and is not fenced (both possibly
    copied from its source by ``pg_basebackup``)."""
    first = upstreams[0]
    db.configure_standby(first.address, first.port, application_name=name)
    db.set_auto_conf({"primary_conninfo": conninfo(upstreams, name),
                      "synchronous_standby_names": None,
                      "default_transaction_read_only": None})


def clone_copy(run: RunDir, dbs: ChatDatabases, timeout: float) -> None:
    """(Re)create the log-shipped copy from the pair — from its mirror when that runs —
    and the copy's mirror from the copy, and start both, discarding what they held.
    `BackendError` when no instance of the pair runs."""
    assert dbs.shipped is not None
    sources = [d for d in dbs.pair[::-1] if instance(run, d).is_running()]
    if not sources:
        raise BackendError(f"no instance of {dbs.pool}'s pair runs: nothing to clone its "
                           f"log-shipped copy from")
    copy = instance(run, dbs.shipped)
    copy.reclone_from(sources[0].address, sources[0].port, timeout=timeout)
    make_cascade(copy, dbs.pair[::-1], dbs.shipped.name)
    copy.start(timeout=timeout)
    if dbs.shipped_mirror is not None:
        mirror = instance(run, dbs.shipped_mirror)
        mirror.reclone_from(copy.host, copy.port, timeout=timeout)
        make_cascade(mirror, [dbs.shipped], dbs.shipped_mirror.name)
        mirror.start(timeout=timeout)


def start_shipped(run: RunDir, state: DeploymentState, pool: str, timeout: float) -> None:
    """Create the log-shipped copy of `pool` (and its mirror) from the pair the first
    time, else start them (a copy promoted by a failover starts as the primary it is).
    Raises `BackendError`."""
    dbs = chat_databases(state, pool)
    if dbs.shipped is None:
        return
    if not instance(run, dbs.shipped).initialized:
        clone_copy(run, dbs, timeout)
        return
    for database in dbs.copies:
        db = instance(run, database)
        if not db.initialized:
            raise BackendError(f"{db.data_dir} is missing: the copy of {pool} is incomplete")
        db.start(timeout=timeout)


# --- the agents' durable state (a chat failback) -------------------------------------------


def _durable(run: RunDir, database: DatabaseState) -> dict[str, Any] | None:
    try:
        return read_json(run.agent_state(database.name))
    except DurableStateError as exc:
        raise BackendError(str(exc)) from None


def choose_principal(run: RunDir, topology: Topology,
                     dbs: ChatDatabases) -> tuple[DatabaseState, int]:
    """The node of the pair that is principal for its agents and witness, with the term:
    the highest term any agent file or the witness records (the witness's word on a
    tie); the node created principal, in term 1, when none records anything."""
    names = {d.name: d for d in dbs.pair}
    seen: list[tuple[int, int, str]] = []
    for database in dbs.pair:
        data = _durable(run, database)
        if data is not None and str(data.get("principal")) in names \
                and isinstance(data.get("term"), int):
            seen.append((data["term"], 0, str(data["principal"])))
    pool = next(p for p in topology.pools if p.name == dbs.pool)
    url = witness_url(topology, pool)
    if url is not None:
        status, view = request_json(f"{url}/backends/{dbs.pool}", timeout=2.0)
        term = view.get("term") if status == 200 and view is not None else None
        if view is not None and isinstance(term, int) and str(view.get("principal")) in names:
            seen.append((term, 1, str(view["principal"])))
    if not seen:
        return dbs.pair[0], 1
    term, _, principal = max(seen)
    return names[principal], term


def align_agents(run: RunDir, dbs: ChatDatabases, principal: DatabaseState,
                 term: int) -> list[str]:
    """Rewrite the agent files of the (stopped) pair that disagree with (`term`,
    `principal`); never lowers a term (`BackendError`). The nodes rewritten."""
    rewritten = []
    for database in dbs.pair:
        data = _durable(run, database) or {}
        role = Role.PRINCIPAL if database is principal else Role.MIRROR
        if (data.get("term"), data.get("role"), data.get("principal")) == \
                (term, role.value, principal.name):
            continue
        held = data.get("term")
        if isinstance(held, int) and held > term:
            raise BackendError(f"the agent of {database.name} holds term {held} above "
                               f"{term}: refusing to lower it")
        exposed = bool(data.get("exposed")) and role is Role.PRINCIPAL and held == term
        StateFile(run.agent_state(database.name), database.pool, database.name).write(
            DurableState(term, role, principal.name, exposed=exposed))
        rewritten.append(database.name)
    return rewritten
