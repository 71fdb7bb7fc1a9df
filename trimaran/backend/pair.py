"""Create a mirrored pair of PostgreSQL instances (BE-1): a principal and its
synchronous mirror, ready for their agents (`trimaran.backend.agent`).

`create_pair` is for the first start only (tests, ``trimaran up`` of a new run
directory). Afterwards the roles may have changed (a failover), so the agents — who
hold the roles and the term durably — start the instances themselves.
"""

from __future__ import annotations

import asyncio

import asyncpg  # type: ignore[import-untyped]

from trimaran.backend.decide import sync_names_for
from trimaran.backend.instance import BackendError, PgInstance

_POLL = 0.05


async def create_pair(principal: PgInstance, mirror: PgInstance, *, application_name: str,
                      timeout: float = 60.0) -> bool:
    """Create both instances and start them: `principal` by ``initdb`` with
    ``synchronous_standby_names`` requiring `application_name`, `mirror` cloned from it
    (``pg_basebackup``) and streaming from it as `application_name` (the mirror's node
    name for its agent). Returns once ``pg_stat_replication`` shows the mirror
    synchronous: True. False, touching nothing, when both exist already.
    `BackendError` when only the mirror exists, or when it is not synchronous within
    `timeout` seconds. Both instances must be `PgInstance(..., mirrored=True)`."""
    if not (principal.mirrored and mirror.mirrored):
        raise ValueError("both instances of a pair must be created with mirrored=True")
    if principal.initialized and mirror.initialized:
        return False
    if mirror.initialized:
        raise BackendError(f"{mirror.data_dir} exists but {principal.data_dir} does not: "
                           "refusing to create a principal beside an existing mirror")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    await asyncio.to_thread(principal.initdb)
    await asyncio.to_thread(principal.start, timeout)
    await _execute(principal, "ALTER SYSTEM SET synchronous_standby_names = "
                   f"'{sync_names_for(application_name)}'", "SELECT pg_reload_conf()")
    await asyncio.to_thread(mirror.clone_from, principal.host, principal.port,
                            application_name=application_name)
    await asyncio.to_thread(mirror.start, max(1.0, deadline - loop.time()))
    while True:
        state = await _sync_state(principal, application_name)
        if state == "sync":
            return True
        if loop.time() > deadline:
            raise BackendError(f"{mirror} is not a synchronous standby of {principal} after "
                               f"{timeout:.0f} s (sync state: {state})")
        await asyncio.sleep(_POLL)


async def _execute(instance: PgInstance, *statements: str) -> None:
    conn = await asyncpg.connect(instance.dsn, timeout=10)
    try:
        for sql in statements:
            await conn.execute(sql)
    finally:
        await conn.close()


async def _sync_state(instance: PgInstance, application_name: str) -> str | None:
    conn = await asyncpg.connect(instance.dsn, timeout=10)
    try:
        value = await conn.fetchval("SELECT sync_state FROM pg_stat_replication "
                                    "WHERE application_name = $1", application_name)
    finally:
        await conn.close()
    return None if value is None else str(value)
