"""The Backup Service's key property, on both backends: a pool's change log shipped to
its paired pool in any batches — re-delivered, overlapping — leaves there exactly what
the pool holds, key by key, without the paired pool logging any of it (SPEC DR-2).

Hypothesis draws random writes on a source store S (pool POOL), then ships
``S.changes.since(...)`` to a target store T (pool OTHER_POOL) with `apply`, in
random batches, some delivered twice or overlapping the previous one, with the blobs T
lacks. Example counts are modest so each backend takes a few seconds.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.store.conftest import (
    OTHER_POOL,
    POOL,
    aor,
    fresh_database,
    make_credentials,
    make_publication,
    make_user,
)
from trimaran.backend import PgInstance
from trimaran.store import (
    Change,
    ContactEntry,
    ContactGroup,
    ContactList,
    Meeting,
    PostgresStore,
    PresenceRule,
    SqliteStore,
    Store,
    StoreError,
    decode_change,
)
from trimaran.store.categories import CATEGORIES
from trimaran.store.model import MeetingContent

NAMES = ("ann", "bob")          # small domains: writes often meet the same keys
OWNERS = (*NAMES, "cat")        # cat is never a user: nothing of hers goes with a user
ETAGS = ("e1", "e2")
MEETINGS = ("m1", "m2")
FILES = ("a.txt", "b.txt")
BLOBS = (b"", b"one", b"two")
CMS_KEYS = ("topology", "master")

Op = tuple[Any, ...]
names = st.sampled_from(NAMES)
owners = st.sampled_from(OWNERS)
watchers = st.sampled_from((*NAMES, "*"))


@st.composite
def contact_lists(draw: st.DrawFn) -> ContactList:
    """A valid contact list of one of NAMES."""
    groups = draw(st.lists(st.sampled_from(("g1", "g2")), unique=True, max_size=2))
    uris = draw(st.lists(owners, unique=True, max_size=3))
    entries = tuple(ContactEntry(aor(u), u.title(), tuple(draw(st.lists(
        st.sampled_from(groups), unique=True))) if groups else ()) for u in uris)
    return ContactList(aor(draw(owners)), tuple(ContactGroup(g) for g in groups), entries)


operations: st.SearchStrategy[Op] = st.one_of(
    st.tuples(st.just("add"), names, st.none() | st.sampled_from(("+1", "+2"))),
    st.tuples(st.just("remove_user"), names),
    st.tuples(st.just("credentials"), names, names, st.sampled_from("0123")),
    st.tuples(st.just("contacts"), contact_lists()),
    st.tuples(st.just("rule"), owners, watchers, st.sampled_from(("allow", "block"))),
    st.tuples(st.just("unrule"), owners, watchers),
    st.tuples(st.just("publish"), owners, st.sampled_from(ETAGS),
              st.none() | st.sampled_from(ETAGS), st.sampled_from((1.5, 50.0))),
    st.tuples(st.just("unpublish"), owners, st.sampled_from(ETAGS)),
    st.tuples(st.just("meeting"), st.sampled_from(MEETINGS), owners, st.sampled_from("xy")),
    st.tuples(st.just("remove_meeting"), st.sampled_from(MEETINGS)),
    st.tuples(st.just("attach"), st.sampled_from(MEETINGS), st.sampled_from(FILES),
              st.sampled_from(BLOBS)),
    st.tuples(st.just("cms"), st.sampled_from(CMS_KEYS), st.sampled_from("xyz"),
              st.booleans()),
    st.tuples(st.just("remove_cms"), st.sampled_from(CMS_KEYS)),
)


async def run(store: Store, op: Op, now: float) -> None:
    """Perform one write on the source; a refused one (Conflict, NotFound) logs nothing."""
    kind, *args = op
    try:
        if kind == "add":
            name, number = args
            await store.users.add(make_user(name, number=number), make_credentials(name),
                                  now=now)
        elif kind == "remove_user":
            await store.users.remove(aor(args[0]), now=now)
        elif kind == "credentials":
            name, username, secret = args
            await store.users.set_credentials(
                make_credentials(name, username=username, secret=secret), now=now)
        elif kind == "contacts":
            await store.contacts.put(args[0], now=now)
        elif kind == "rule":
            owner, watcher, action = args
            await store.presence.set_rule(
                PresenceRule(aor(owner), watcher if watcher == "*" else aor(watcher),
                             action), now=now)
        elif kind == "unrule":
            owner, watcher = args
            await store.presence.remove_rule(
                aor(owner), watcher if watcher == "*" else aor(watcher), now=now)
        elif kind == "publish":
            name, etag, replaces, lifetime = args
            await store.presence.publish(
                make_publication(name, etag, expires_at=now + lifetime,
                                 body=f"{name}@{now}".encode()), replaces=replaces, now=now)
        elif kind == "unpublish":
            await store.presence.unpublish(aor(args[0]), args[1], now=now)
        elif kind == "meeting":
            meeting_id, organizer, subject = args
            await store.meetings.put(Meeting(meeting_id, aor(organizer), subject,
                                             created_at=now), now=now)
        elif kind == "remove_meeting":
            await store.meetings.remove(args[0], now=now)
        elif kind == "attach":
            await store.meetings.attach(args[0], args[1], args[2], now=now)
        elif kind == "cms":
            key, body, create_only = args
            await store.cms.put(key, body, now=now, check=create_only, expect_version=None)
        elif kind == "remove_cms":
            await store.cms.remove(args[0], now=now)
        else:  # pragma: no cover
            raise AssertionError(kind)
    except StoreError:
        pass


async def blobs_for(source: Store, target: Store, batch: list[Change]) -> dict[str, bytes]:
    """The bytes the batch's meeting-content puts reference that the target lacks."""
    blobs: dict[str, bytes] = {}
    for change in batch:
        content = decode_change(change)
        if isinstance(content, MeetingContent) and \
                await target.meetings.blob(content.sha256) is None:
            data = await source.meetings.blob(content.sha256)
            assert data is not None
            blobs[content.sha256] = data
    return blobs


async def ship_and_compare(source: Store, target: Store, ops: list[Op],
                           data: st.DataObject) -> None:
    """Write `ops` on the source, ship its log in drawn batches, compare key by key."""
    for i, op in enumerate(ops):
        await run(source, op, now=float(i + 1))
    log = await source.changes.since(0, limit=10_000)
    shipped = 0
    while shipped < len(log):
        size = data.draw(st.integers(1, 6), label="batch size")
        back = data.draw(st.integers(0, 3), label="overlap with what was shipped")
        batch = log[max(0, shipped - back):shipped + size]
        blobs = await blobs_for(source, target, batch)
        progress = await target.backup.apply(POOL, batch, now=1000.0, blobs=blobs)
        assert progress.seq == batch[-1].seq and progress.change_at == batch[-1].at
        if data.draw(st.booleans(), label="deliver twice"):
            again = await target.backup.apply(POOL, batch, now=2000.0, blobs=blobs)
            assert again == progress
        shipped += size

    assert await target.changes.last_seq() == 0 and await target.changes.since(0) == []
    assert (await target.backup.progress(POOL)).seq == await source.changes.last_seq()
    assert await target.cms.version() == await source.cms.version()
    for category in CATEGORIES:
        source_keys = await source.backup.keys(category, POOL)
        assert await target.backup.keys(category, POOL) == source_keys, category
        keys = {c.key for c in log if c.category == category} | set(source_keys)
        for key in sorted(keys):
            want = await source.backup.export(category, key)
            got = await target.backup.export(category, key)
            assert (got.op, got.payload) == (want.op, want.payload), (category, key)
            assert got.pool == OTHER_POOL and want.pool == POOL


@contextlib.asynccontextmanager
async def sqlite_pair() -> AsyncIterator[tuple[Store, Store]]:
    """A source and a target store, in memory."""
    async with SqliteStore(":memory:", pool=POOL) as source, \
            SqliteStore(":memory:", pool=OTHER_POOL) as target:
        yield source, target


def postgres_pair(server: PgInstance) -> Callable[[], contextlib.AbstractAsyncContextManager[
        tuple[Store, Store]]]:
    """A source and a target store, each in a fresh database of `server`."""

    @contextlib.asynccontextmanager
    async def pair() -> AsyncIterator[tuple[Store, Store]]:
        async with fresh_database(server) as one, fresh_database(server) as two, \
                PostgresStore(one, pool=POOL) as source, \
                PostgresStore(two, pool=OTHER_POOL) as target:
            yield source, target

    return pair


OPS = st.lists(operations, min_size=12, max_size=40)


@settings(max_examples=60, deadline=None)
@given(ops=OPS, data=st.data())
async def test_shipping_the_log_reproduces_every_key_on_sqlite(ops: list[Op],
                                                               data: st.DataObject) -> None:
    async with sqlite_pair() as (source, target):
        await ship_and_compare(source, target, ops, data)


@settings(max_examples=15, deadline=None)
@given(ops=OPS, data=st.data())
async def test_shipping_the_log_reproduces_every_key_on_postgres(
        pg_server: PgInstance, ops: list[Op], data: st.DataObject) -> None:
    async with postgres_pair(pg_server)() as (source, target):
        await ship_and_compare(source, target, ops, data)
