"""Starting and stopping the Back Ends of a deployment: PostgreSQL instances, and for a
mirrored Back End the synchronous pair and the agents beside each instance."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

from trimaran.backend.instance import BackendError
from trimaran.backend.pair import create_pair
from trimaran.deploy.database import instance
from trimaran.deploy.rundir import DatabaseState, DeploymentState, RunDir
from trimaran.deploy.supervisor import pid_alive, request_json


def start_backends(run: RunDir, state: DeploymentState, timeout: float) -> None:
    """Create and start every instance; pairs are cloned and synchronous, then their
    agents are started and waited for. Raises `BackendError`."""
    started: set[str] = set()
    for database in state.databases.values():
        if database.name in started:
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
    for database in state.databases.values():
        if database.agent_pid and pid_alive(database.agent_pid):
            os.killpg(database.agent_pid, signal.SIGTERM)
    for database in state.databases.values():
        deadline = time.monotonic() + 10
        while database.agent_pid and pid_alive(database.agent_pid) and \
                time.monotonic() < deadline:
            time.sleep(0.05)
        if database.agent_pid and pid_alive(database.agent_pid):
            os.killpg(database.agent_pid, signal.SIGKILL)
        database.agent_pid = None
    for database in state.databases.values():
        db = instance(run, database)
        if db.is_running():
            try:
                db.stop()
            except BackendError:
                db.kill()
