"""The drill's simulated users: real users of the deployment, homed round-robin on its
Front End pools, created once per run directory and reused by later drills.

Their passwords are random and kept in ``RUNDIR/drill/users.json`` (mode 0600), the
only place they exist in clear; the pools hold digest hashes, as for any user.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from trimaran.deploy.database import pool_store
from trimaran.deploy.rundir import RunDir
from trimaran.sip import digest
from trimaran.store.base import Conflict
from trimaran.store.model import Credentials, User
from trimaran.topology.model import Topology

PREFIX = "drill"


@dataclass(frozen=True, slots=True)
class DrillUser:
    """One simulated user."""

    name: str
    password: str
    pool: str          # home pool

    def aor(self, domain: str) -> str:
        """The user's address of record."""
        return f"sip:{self.name}@{domain}"


def users_file(run: RunDir) -> Path:
    """Where the drill users of a run directory are kept."""
    return run.path / "drill" / "users.json"


def load_users(run: RunDir) -> list[DrillUser]:
    """The drill users created so far in this run directory."""
    path = users_file(run)
    if not path.exists():
        return []
    raw = json.loads(path.read_text())
    return [DrillUser(u["name"], u["password"], u["pool"]) for u in raw["users"]]


def _save(run: RunDir, users: list[DrillUser]) -> None:
    path = users_file(run)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"users": [{"name": u.name, "password": u.password, "pool": u.pool}
                             for u in users]}, handle)
    os.replace(tmp, path)


def plan(existing: list[DrillUser], count: int, pools: list[str]) -> list[DrillUser]:
    """The users to create so that there are `count`, spread round-robin over `pools`
    (existing users are kept as they are)."""
    if not pools:
        raise ValueError("the deployment has no Front End pool to home drill users on")
    names = {u.name for u in existing}
    new: list[DrillUser] = []
    index = 0
    while len(existing) + len(new) < count:
        name = f"{PREFIX}{index:05d}"
        if name not in names:
            new.append(DrillUser(name, secrets.token_urlsafe(12),
                                 pools[(len(existing) + len(new)) % len(pools)]))
        index += 1
    return new


async def ensure_users(run: RunDir, topology: Topology, count: int,
                       pools: list[str]) -> list[DrillUser]:
    """At least `count` drill users exist (created in their home pool's store as
    `trimaran user add` does); returns the first `count`."""
    existing = load_users(run)
    new = plan(existing, count, pools)
    realm = topology.sip_domain
    by_pool: dict[str, list[DrillUser]] = {}
    for user in new:
        by_pool.setdefault(user.pool, []).append(user)
    created: list[DrillUser] = []
    try:
        for pool, users in by_pool.items():
            store = pool_store(run, topology, pool)
            await store.open()
            try:
                for user in users:
                    aor = user.aor(realm)
                    creds = Credentials(aor, user.name, realm,
                                        digest.ha1(user.name, realm, user.password, "MD5"),
                                        digest.ha1(user.name, realm, user.password, "SHA-256"))
                    try:
                        await store.users.add(User(aor, pool), creds, now=time.time())
                    except Conflict:   # left by an interrupted drill: give it our password
                        await store.users.set_credentials(creds, now=time.time())
                    created.append(user)
            finally:
                await store.close()
    finally:
        if created:
            _save(run, existing + created)
    return (existing + created)[:count]
