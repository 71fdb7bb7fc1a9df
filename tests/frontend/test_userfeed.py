"""Every user of the pool on every Front End server (FE-7, METRO-1): the user feed
(credentials and home pool, loaded then followed in the change log), the credential
cache it fills, and the store wrappers that report an unreachable Back End."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.frontend.conftest import DOMAIN, add_user, password_of
from trimaran.roles.frontend.cache import CredentialCache
from trimaran.roles.frontend.noticing import NoticedCredentials, NoticedLockouts, StoreWatch
from trimaran.roles.frontend.userfeed import UserFeed
from trimaran.sip import digest
from trimaran.store.base import StoreUnavailable
from trimaran.store.lockouts import LockoutPolicy
from trimaran.store.model import Credentials
from trimaran.store.sqlite import SqliteStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    opened = SqliteStore(tmp_path / "fe1.sqlite", pool="fe1")
    await opened.open()
    yield opened
    await opened.close()


def credentials(name: str, password: str, username: str | None = None) -> Credentials:
    user = username or name
    return Credentials(f"sip:{name}@{DOMAIN}", user, DOMAIN,
                       digest.ha1(user, DOMAIN, password, "MD5"),
                       digest.ha1(user, DOMAIN, password, "SHA-256"))


class Homes(dict[str, str]):
    def __call__(self, aor: str, pool: str | None) -> None:
        if pool is None:
            self.pop(aor, None)
        else:
            self[aor] = pool


async def test_the_feed_loads_the_pools_users_then_follows_their_changes(
        store: SqliteStore) -> None:
    alice = await add_user(store, "alice", pool="fe1")
    await add_user(store, "zed", pool="fe9")          # homed on another pool: not loaded
    cache, homes = CredentialCache(), Homes()
    feed = UserFeed(store, "fe1", cache, homes, page=2)

    await feed.tick()

    assert feed.loaded and cache.size == 1 and homes == {alice: "fe1"}
    held = cache.get("alice", DOMAIN)
    assert held is not None and held.ha1_md5 == digest.ha1("alice", DOMAIN,
                                                           password_of("alice"), "MD5")
    bob = await add_user(store, "bob", pool="fe1")
    await store.users.set_credentials(credentials("alice", "new", "alice2"), now=time.time())
    assert await feed.tick() == 3                     # followed, across two pages of 2
    assert homes == {alice: "fe1", bob: "fe1"}
    assert cache.get("alice", DOMAIN) is None         # the username changed: old one gone
    renamed = cache.get("alice2", DOMAIN)
    assert renamed is not None and renamed.ha1_md5 == digest.ha1("alice2", DOMAIN, "new",
                                                                 "MD5")
    await store.users.remove(bob, now=time.time())
    await feed.tick()
    assert cache.get("bob", DOMAIN) is None and homes == {alice: "fe1"}
    assert await feed.tick() == 0                     # nothing new


async def test_a_feed_whose_store_is_away_goes_on_where_it_stopped(store: SqliteStore) -> None:
    await add_user(store, "alice", pool="fe1")
    cache = CredentialCache()
    feed = UserFeed(store, "fe1", cache)
    await feed.tick()
    await store.close()
    with pytest.raises(StoreUnavailable):
        await feed.tick()
    await store.open()
    await add_user(store, "bob", pool="fe1")
    await feed.tick()
    assert cache.get("alice", DOMAIN) is not None and cache.get("bob", DOMAIN) is not None


def test_the_credential_cache_holds_one_entry_per_user() -> None:
    cache = CredentialCache()
    cache.remember(credentials("alice", "a"))
    cache.remember(credentials("alice", "b"))
    assert cache.size == 1
    held = cache.get("alice", DOMAIN)
    assert held is not None and held.ha1_md5 == digest.ha1("alice", DOMAIN, "b", "MD5")
    cache.forget(f"sip:alice@{DOMAIN}")
    cache.forget(f"sip:nobody@{DOMAIN}")
    assert cache.get("alice", DOMAIN) is None and cache.size == 0


async def test_the_authenticators_store_reads_report_an_unreachable_back_end(
        store: SqliteStore) -> None:
    """The server enters resiliency mode at the first credentials lookup the store does
    not answer, though the authenticator then carries on from its cache."""
    await add_user(store, "alice", pool="fe1")
    noticed: list[str] = []
    watch = StoreWatch(noticed.append)
    users = NoticedCredentials(store.users, watch).users
    lockouts = NoticedLockouts(store.lockouts, watch)
    found = await users.credentials("alice", DOMAIN)
    assert found is not None and await lockouts.credentials_with_lockout("alice", DOMAIN)
    assert await lockouts.get(found.aor) is None and noticed == []
    await store.close()
    with pytest.raises(StoreUnavailable):
        await users.credentials("alice", DOMAIN)
    with pytest.raises(StoreUnavailable):
        await lockouts.credentials_with_lockout("alice", DOMAIN)
    with pytest.raises(StoreUnavailable):
        await lockouts.record_failure(found.aor, LockoutPolicy(3, 60, 60), now=time.time())
    assert len(noticed) == 3 and all("closed" in why or "not open" in why for why in noticed)
    await store.open()


async def test_a_store_call_waiting_when_the_back_end_is_found_away_gives_up_at_once() -> None:
    """Another request found the Back End gone: calls still waiting on it are released
    (reads, idempotent writes), not left to their own retry budget; counted writes are
    not released."""
    watch = StoreWatch(lambda _why: None)

    async def slow(seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "answered"

    waiting = asyncio.ensure_future(watch.call(slow(30)))
    counting = asyncio.ensure_future(watch.call(slow(0.3), release=False))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    watch.set_away()
    with pytest.raises(StoreUnavailable, match="resiliency mode entered"):
        await waiting
    assert time.monotonic() - started < 0.1
    assert await counting == "answered"
    with pytest.raises(StoreUnavailable, match="held unreachable"):
        await watch.call(slow(0))
    watch.set_back()
    assert await watch.call(slow(0)) == "answered"
