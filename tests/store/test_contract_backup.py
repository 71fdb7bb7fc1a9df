"""Store contract, the Backup Service's receiving side (SPEC DR-2): `BackupRepository`
applies a paired pool's changes unlogged with its progress, refuses bad batches whole,
and exports what it holds per key. Runs against every backend of the `store` fixture
(whose pool is POOL; the changes applied here are OTHER_POOL's)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from tests.store.conftest import (
    OTHER_POOL,
    POOL,
    add_user,
    aor,
    make_credentials,
    make_publication,
    make_user,
)
from trimaran.store import (
    Change,
    CodecError,
    Conflict,
    ContactEntry,
    ContactGroup,
    ContactList,
    Meeting,
    PresenceRule,
    Store,
    StoreError,
    encode,
)
from trimaran.store.categories import (
    CATEGORIES,
    MAX_CONTENT_SIZE,
    ContentTooLarge,
    key_of,
    sha256_hex,
)
from trimaran.store.model import BackupProgress, CmsDocument, MeetingContent

SOURCE = OTHER_POOL


def put(seq: int, category: str, record: object, at: float = 100.0,
        pool: str = SOURCE) -> Change:
    """A `put` of `record` as the source's log carries it."""
    return Change(seq, pool, category, key_of(record), "put", encode(record), at)


def delete(seq: int, category: str, key: str, at: float = 100.0) -> Change:
    """A `delete` as the source's log carries it."""
    return Change(seq, SOURCE, category, key, "delete", "", at)


async def nothing_applied(store: Store) -> None:
    """Assert the store is as new: no progress, no user, no meeting, no log."""
    assert await store.backup.progress(SOURCE) == BackupProgress(SOURCE, 0, 0.0, 0.0)
    assert await store.users.list() == []
    assert await store.meetings.get("m1") is None
    assert await store.cms.all() == []
    assert await store.changes.last_seq() == 0


async def apply(store: Store, changes: Sequence[Change], now: float = 500.0,
                blobs: dict[str, bytes] | None = None) -> BackupProgress:
    """Apply `changes` from SOURCE."""
    return await store.backup.apply(SOURCE, changes, now=now, blobs=blobs)


async def test_applied_changes_are_written_unlogged_and_progress_recorded(
        store: Store) -> None:
    user = make_user("zed", pool=SOURCE)
    creds = make_credentials("zed")
    meeting = Meeting("m1", user.aor, "Review", created_at=3.0)
    data = b"minutes"
    content = MeetingContent("m1", "minutes.txt", sha256_hex(data), len(data))
    doc = CmsDocument("topology", "pools: [fe1, fe2]", 9, 4.0)
    batch = [put(3, "user", user), put(4, "credentials", creds), put(7, "meeting", meeting),
             put(8, "meeting-content", content), put(11, "cms", doc, at=123.5)]
    progress = await apply(store, batch, blobs={content.sha256: data})
    assert progress == BackupProgress(SOURCE, 11, 123.5, 500.0)
    assert await store.backup.progress(SOURCE) == progress
    assert await store.backup.progress("fe9") == BackupProgress("fe9", 0, 0.0, 0.0)
    assert await store.users.get(user.aor) == user
    assert await store.users.credentials("zed", "example.com") == creds
    assert await store.meetings.get("m1") == meeting
    assert await store.meetings.contents("m1") == [content]
    assert await store.meetings.blob(content.sha256) == data
    assert await store.cms.get("topology") == doc
    assert await store.cms.version() == 9            # the source's version, not a bump
    assert await store.changes.last_seq() == 0       # not logged
    assert await store.changes.summary(0) == {}


async def test_changes_at_or_below_the_progress_are_skipped(store: Store) -> None:
    first = Meeting("m1", aor("zed"), "first")
    assert (await apply(store, [put(1, "meeting", first)])).seq == 1
    forged = Meeting("m1", aor("zed"), "re-delivered with another value")
    second = Meeting("m2", aor("zed"), "second")
    progress = await apply(store, [put(1, "meeting", forged), put(2, "meeting", second)],
                           now=600.0)
    assert progress == BackupProgress(SOURCE, 2, 100.0, 600.0)
    assert await store.meetings.get("m1") == first
    assert await store.meetings.get("m2") == second
    # A batch with nothing new changes nothing, not even the time of the last apply.
    assert await apply(store, [put(2, "meeting", forged)], now=700.0) == progress
    assert await apply(store, [], now=700.0) == progress
    assert await store.meetings.get("m2") == second


@pytest.mark.parametrize("source,batch", [
    (SOURCE, [put(2, "meeting", Meeting("m1", "o")), put(1, "meeting", Meeting("m2", "o"))]),
    (SOURCE, [put(1, "meeting", Meeting("m1", "o")), put(1, "meeting", Meeting("m2", "o"))]),
    (SOURCE, [put(1, "meeting", Meeting("m1", "o")),
              put(2, "meeting", Meeting("m2", "o"), pool="fe3")]),
    (POOL, [put(1, "meeting", Meeting("m1", "o"), pool=POOL)]),          # its own log
])
async def test_out_of_order_or_foreign_changes_are_conflicts_applying_nothing(
        store: Store, source: str, batch: list[Change]) -> None:
    with pytest.raises(Conflict):
        await store.backup.apply(source, batch, now=1.0)
    await nothing_applied(store)


@pytest.mark.parametrize("bad", [
    Change(2, SOURCE, "meeting", "m2", "put", "{not json", 1.0),
    Change(2, SOURCE, "meeting", "m2", "put", '{"id":"m2"}', 1.0),           # no organizer
    Change(2, SOURCE, "meeting", "m2", "patch", "{}", 1.0),
    Change(2, SOURCE, "meeting", "m2", "delete", '{"id":"m2"}', 1.0),
    Change(2, SOURCE, "bindings", "k", "put", "{}", 1.0),
    Change(2, SOURCE, "meeting", "other-key", "put", encode(Meeting("m2", "o")), 1.0),
    Change(2, SOURCE, "meeting-content", "no-slash", "delete", "", 1.0),
])
async def test_a_malformed_change_is_a_codec_error_applying_nothing(store: Store,
                                                                    bad: Change) -> None:
    with pytest.raises(CodecError):
        await apply(store, [put(1, "meeting", Meeting("m1", "o")), bad])
    await nothing_applied(store)


async def test_blobs_must_match_their_digest_and_be_there_for_references(
        store: Store) -> None:
    await apply(store, [put(1, "meeting", Meeting("m1", "o"))])
    data = b"content"
    ref = MeetingContent("m1", "f.txt", sha256_hex(data), len(data))
    batch = [put(2, "meeting", Meeting("m2", "o")), put(3, "meeting-content", ref)]
    before = await store.backup.progress(SOURCE)
    with pytest.raises(Conflict):
        await apply(store, batch, blobs={ref.sha256: b"tampered"})
    with pytest.raises(Conflict):
        await apply(store, batch)                                  # neither shipped nor here
    with pytest.raises(Conflict):
        await apply(store, [put(2, "meeting-content",
                                MeetingContent("m1", "f.txt", ref.sha256, 99))],
                    blobs={ref.sha256: data})                      # size differs
    with pytest.raises(ContentTooLarge):
        big = bytes(MAX_CONTENT_SIZE + 1)
        await apply(store, [], blobs={sha256_hex(big): big})
    assert await store.backup.progress(SOURCE) == before
    assert await store.meetings.get("m2") is None
    assert await store.meetings.contents("m1") == []
    assert await store.meetings.blob(ref.sha256) is None
    # A blob shipped earlier (or attached here) need not be shipped again.
    await apply(store, [], blobs={ref.sha256: data})
    assert (await apply(store, batch)).seq == 3
    assert await store.meetings.contents("m1") == [ref]


async def test_reset_sets_the_progress(store: Store) -> None:
    await apply(store, [put(5, "meeting", Meeting("m1", "o", "old"))])
    assert await store.backup.reset(SOURCE, 2, now=9.0) == BackupProgress(SOURCE, 2, 0.0, 9.0)
    assert await store.backup.progress(SOURCE) == BackupProgress(SOURCE, 2, 0.0, 9.0)
    renewed = Meeting("m1", "o", "new")
    assert (await apply(store, [put(5, "meeting", renewed)])).seq == 5   # applied again
    assert await store.meetings.get("m1") == renewed
    assert (await store.backup.reset(SOURCE, 0, now=10.0)).seq == 0
    with pytest.raises(StoreError):
        await store.backup.reset(SOURCE, -1, now=11.0)
    assert (await store.backup.progress(SOURCE)).seq == 0
    assert await store.changes.last_seq() == 0


async def test_applying_a_user_delete_removes_what_removing_the_user_removes(
        store: Store) -> None:
    user = make_user("zed", pool=SOURCE)
    owned = ContactList(user.aor, (ContactGroup("g"),), (ContactEntry(aor("amy"), "", ("g",)),))
    rule = PresenceRule(user.aor, "*", "allow")
    publication = make_publication("zed", "e1")
    await apply(store, [put(1, "user", user), put(2, "credentials", make_credentials("zed")),
                        put(3, "contacts", owned), put(4, "presence-rules", rule),
                        put(5, "presence", publication)])
    await apply(store, [delete(6, "user", user.aor)])
    assert await store.users.get(user.aor) is None
    assert await store.users.credentials("zed", "example.com") is None
    assert await store.contacts.get(user.aor) == ContactList(user.aor)
    assert await store.presence.rules(user.aor) == []
    assert await store.presence.publications(user.aor, "presence", now=1.0) == []
    for category in CATEGORIES:
        for key in await store.backup.keys(category, SOURCE):
            pytest.fail(f"{category} {key} left behind")


async def test_applied_deletes_remove_their_rows(store: Store) -> None:
    data = b"d"
    content = MeetingContent("m1", "f", sha256_hex(data), 1)
    await apply(store, [
        put(1, "user", make_user("zed", pool=SOURCE)),
        put(2, "credentials", make_credentials("zed")),
        put(3, "contacts", ContactList(aor("zed"))),
        put(4, "presence-rules", PresenceRule(aor("zed"), aor("amy"), "block")),
        put(5, "presence", make_publication("zed", "e1")),
        put(6, "meeting", Meeting("m1", aor("zed"))),
        put(7, "meeting-content", content),
        put(8, "cms", CmsDocument("k", "v", 3, 1.0)),
    ], blobs={content.sha256: data})
    assert await store.cms.version() == 3
    await apply(store, [
        delete(9, "presence", "e1"),
        delete(10, "presence-rules", f"{aor('zed')}|{aor('amy')}"),
        delete(11, "contacts", aor("zed")),
        delete(12, "meeting-content", "m1/f"),
        delete(13, "credentials", aor("zed")),
        delete(14, "meeting", "m1"),
        delete(15, "cms", "k"),
    ])
    assert await store.cms.version() == 4         # the source bumped it for the delete
    for category, key in [("presence", "e1"), ("presence-rules", f"{aor('zed')}|{aor('amy')}"),
                          ("contacts", aor("zed")), ("meeting-content", "m1/f"),
                          ("credentials", aor("zed")), ("meeting", "m1"), ("cms", "k")]:
        assert (await store.backup.export(category, key)).op == "delete", category
    assert (await store.backup.export("user", aor("zed"))).op == "put"
    assert await store.meetings.blob(content.sha256) == data


async def test_export_is_the_value_as_the_log_carries_it(store: Store) -> None:
    await add_user(store, "alice")
    await store.contacts.put(ContactList(aor("alice"), (ContactGroup("g"),)), now=2.0)
    await store.presence.set_rule(PresenceRule(aor("alice"), "*", "allow"), now=2.0)
    await store.presence.publish(make_publication("alice", "e1", body=b"\x00\xff"),
                                 replaces=None, now=2.0)
    await store.meetings.put(Meeting("m1", aor("alice"), attendees=(aor("bob"),)), now=2.0)
    await store.meetings.attach("m1", "a.txt", b"a", now=2.0)
    await store.cms.put("k", "v", now=2.0)
    latest = {(c.category, c.key): c for c in await store.changes.since(0)}
    assert {category for category, _ in latest} == set(CATEGORIES)
    for (category, key), change in latest.items():
        exported = await store.backup.export(category, key)
        assert exported == Change(0, POOL, category, key, "put", change.payload, 0.0)
    assert await store.backup.export("meeting", "nope") == \
        Change(0, POOL, "meeting", "nope", "delete", "", 0.0)
    assert (await store.backup.export("contacts", aor("bob"))).op == "delete"  # never written
    with pytest.raises(CodecError):
        await store.backup.export("bindings", aor("alice"))


async def test_keys_are_those_of_the_pools_users(store: Store) -> None:
    await add_user(store, "alice")
    await store.users.add(make_user("zed", pool=SOURCE), make_credentials("zed"), now=1.0)
    for name in ("alice", "zed"):
        await store.contacts.put(ContactList(aor(name)), now=2.0)
        await store.presence.set_rule(PresenceRule(aor(name), "*", "allow"), now=2.0)
        await store.presence.publish(make_publication(name, f"e-{name}"), replaces=None,
                                     now=2.0)
        await store.meetings.put(Meeting(f"m-{name}", aor(name)), now=2.0)
        await store.meetings.attach(f"m-{name}", "f", name.encode(), now=2.0)
    await store.meetings.put(Meeting("m-ghost", aor("ghost")), now=2.0)
    await store.cms.put("b", "1", now=2.0)
    await store.cms.put("a", "1", now=2.0)
    expected = {
        "user": [aor("zed")], "credentials": [aor("zed")], "contacts": [aor("zed")],
        "presence-rules": [f"{aor('zed')}|*"], "presence": ["e-zed"],
        "meeting": ["m-zed"], "meeting-content": ["m-zed/f"], "cms": ["a", "b"],
    }
    assert {c: await store.backup.keys(c, SOURCE) for c in CATEGORIES} == expected
    assert await store.backup.keys("meeting", POOL) == ["m-alice"]
    assert await store.backup.keys("cms", "nowhere") == ["a", "b"]
    assert await store.backup.keys("user", "nowhere") == []
    with pytest.raises(CodecError):
        await store.backup.keys("bindings", POOL)


async def test_concurrent_applies_of_one_source_apply_each_change_once(store: Store) -> None:
    batch = [put(i, "cms", CmsDocument(f"k{i}", "v", i, 1.0)) for i in range(1, 11)]
    batch += [delete(10 + i, "cms", f"k{i}") for i in range(1, 6)]   # each bumps the version
    # Every batch starts where the receiver's progress may be (nothing applied yet), as
    # the Backup Service makes sure (a batch following more than was applied is refused
    # before it reaches the store); they end at different changes and run in any order.
    ends = (15, 15, 12, 10, 6, 15)
    results = await asyncio.gather(*(apply(store, batch[:n]) for n in ends))
    assert max(r.seq for r in results) == 15
    assert (await store.backup.progress(SOURCE)).seq == 15
    assert await store.cms.version() == 15                         # no delete applied twice
    assert [d.key for d in await store.cms.all()] == sorted(f"k{i}" for i in range(6, 11))
