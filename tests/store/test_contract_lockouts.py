"""Store contract, account lockouts (OPS-6, `trimaran.store.base.LockoutRepository`):
failures counted atomically per user, locks every reader sees, unlock, the locked list
and count, nothing logged. Runs against every backend of the `store` fixture."""

from __future__ import annotations

import asyncio

from tests.store.conftest import Backend, add_user, aor, count_rows, make_credentials
from trimaran.store import Lockout, LockoutPolicy, Store

POLICY = LockoutPolicy(failures=3, window=300.0, duration=900.0)


async def test_failures_are_counted_until_the_lock_then_the_row_says_until_when(
        store: Store) -> None:
    await add_user(store, "alice")
    alice = aor("alice")
    assert await store.lockouts.get(alice) is None
    assert await store.lockouts.record_failure(alice, POLICY, now=10.0) == Lockout(alice, (10.0,))
    await store.lockouts.record_failure(alice, POLICY, now=20.0)
    locked = await store.lockouts.record_failure(alice, POLICY, now=30.0)
    assert locked == Lockout(alice, (), locked_at=30.0, locked_until=930.0)
    assert await store.lockouts.get(alice) == locked
    assert await store.lockouts.record_failure(alice, POLICY, now=40.0) == locked


async def test_credentials_are_read_with_the_lockout_row(store: Store) -> None:
    alice = await add_user(store, "alice")
    found = await store.lockouts.credentials_with_lockout("alice", "example.com")
    assert found == (make_credentials("alice"), None)
    await store.lockouts.record_failure(alice.aor, POLICY, now=1.0)
    found = await store.lockouts.credentials_with_lockout("alice", "example.com")
    assert found == (make_credentials("alice"), Lockout(alice.aor, (1.0,)))
    assert await store.lockouts.credentials_with_lockout("alice", "other.example") is None
    assert await store.lockouts.credentials_with_lockout("bob", "example.com") is None


async def test_locked_users_are_listed_and_counted_until_their_lock_ends(store: Store) -> None:
    for name, start in (("carol", 1.0), ("alice", 1.0), ("bob", 100.0), ("dave", 1.0)):
        await add_user(store, name)
        for t in (start, start + 1, start + 2 if name != "dave" else 400.0):
            await store.lockouts.record_failure(aor(name), POLICY, now=t)
    assert [r.aor for r in await store.lockouts.locked(now=500.0)] == [
        aor("alice"), aor("bob"), aor("carol")]
    assert await store.lockouts.count_locked(now=500.0) == 3
    assert [r.aor for r in await store.lockouts.locked(now=950.0)] == [aor("bob")]
    assert await store.lockouts.locked(now=1002.0) == []
    assert await store.lockouts.count_locked(now=1002.0) == 0


async def test_unlock_clears_the_lock_and_the_failures(store: Store) -> None:
    await add_user(store, "alice")
    alice = aor("alice")
    for t in (1.0, 2.0, 3.0):
        await store.lockouts.record_failure(alice, POLICY, now=t)
    assert await store.lockouts.unlock(alice, now=4.0) is True
    assert await store.lockouts.get(alice) is None
    assert await store.lockouts.count_locked(now=4.0) == 0
    assert await store.lockouts.unlock(alice, now=5.0) is False
    await store.lockouts.record_failure(alice, POLICY, now=6.0)
    assert await store.lockouts.unlock(alice, now=7.0) is False     # counted, not locked
    assert await store.lockouts.get(alice) is None


async def test_concurrent_failures_of_one_user_are_all_counted(store: Store) -> None:
    await add_user(store, "alice")
    policy = LockoutPolicy(failures=50, window=300.0, duration=900.0)
    await asyncio.gather(*(store.lockouts.record_failure(aor("alice"), policy, now=1.0 + i)
                           for i in range(20)))
    row = await store.lockouts.get(aor("alice"))
    assert row is not None and len(row.failures) == 20


async def test_lockouts_are_not_logged_and_go_with_their_user(store: Store,
                                                              backend: Backend) -> None:
    await add_user(store, "alice")
    before = await store.changes.last_seq()
    await store.lockouts.record_failure(aor("alice"), POLICY, now=1.0)
    assert await store.changes.last_seq() == before
    await store.users.remove(aor("alice"), now=2.0)
    assert await count_rows(backend, "auth_lockouts") == 0


async def test_a_lock_survives_reopening_the_store(store: Store, backend: Backend) -> None:
    await add_user(store, "alice")
    for t in (1.0, 2.0, 3.0):
        await store.lockouts.record_failure(aor("alice"), POLICY, now=t)
    other = backend.make()
    await other.open()
    try:
        row = await other.lockouts.get(aor("alice"))
        assert row is not None and row.locked(4.0)
    finally:
        await other.close()
