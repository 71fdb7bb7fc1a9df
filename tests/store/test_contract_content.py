"""Store contract: meeting content by hash, the CMS documents and their version, and the
change-log summary. Runs against every backend of the `store` fixture."""

from __future__ import annotations

import asyncio

import pytest

from tests.store.conftest import Backend, aor, count_rows
from tests.store.test_contract_changelog import assert_logs
from trimaran.store import Conflict, Meeting, NotFound, Store, decode_change
from trimaran.store.categories import MAX_CONTENT_SIZE, ContentTooLarge, sha256_hex
from trimaran.store.model import CmsDocument, MeetingContent

# --- meeting content -------------------------------------------------------------------


async def put_meeting(store: Store, meeting_id: str, now: float = 1.0) -> Meeting:
    """A meeting of alice's."""
    meeting = Meeting(meeting_id, aor("alice"), "Plan", created_at=now)
    await store.meetings.put(meeting, now=now)
    return meeting


async def test_attached_bytes_are_stored_once_for_two_meetings(store: Store,
                                                              backend: Backend) -> None:
    await put_meeting(store, "m1")
    await put_meeting(store, "m2")
    data = b"%PDF-1.7 slides"
    first = await store.meetings.attach("m1", "slides.pdf", data, now=2.0)
    second = await store.meetings.attach("m2", "deck.pdf", data, now=3.0)
    sha = sha256_hex(data)
    assert first == MeetingContent("m1", "slides.pdf", sha, len(data))
    assert second == MeetingContent("m2", "deck.pdf", sha, len(data))
    assert await count_rows(backend, "content_blobs") == 1
    assert await store.meetings.blob(sha) == data
    assert await store.meetings.blob(sha256_hex(b"other")) is None
    assert await store.meetings.contents("m1") == [first]
    assert await store.meetings.contents("m2") == [second]
    assert await store.meetings.contents("m3") == []


async def test_attach_logs_the_reference_and_replaces_a_file_of_that_name(
        store: Store) -> None:
    await put_meeting(store, "m1")
    changes = await assert_logs(
        store, lambda: store.meetings.attach("m1", "notes.txt", b"v1", now=2.0), 2.0,
        [("meeting-content", "m1/notes.txt", "put")])
    assert decode_change(changes[0]) == MeetingContent("m1", "notes.txt", sha256_hex(b"v1"), 2)
    await store.meetings.attach("m1", "agenda.txt", b"", now=3.0)
    replaced = await store.meetings.attach("m1", "notes.txt", b"version 2", now=4.0)
    assert await store.meetings.contents("m1") == [
        MeetingContent("m1", "agenda.txt", sha256_hex(b""), 0), replaced]
    assert await store.meetings.blob(sha256_hex(b"v1")) == b"v1"     # garbage may stay


async def test_attach_refuses_absent_meetings_bad_names_and_large_content(
        store: Store) -> None:
    await put_meeting(store, "m1")
    before = await store.changes.last_seq()
    with pytest.raises(NotFound):
        await store.meetings.attach("nope", "a.txt", b"x", now=2.0)
    for name in ("", "dir/a.txt"):
        with pytest.raises(Conflict):
            await store.meetings.attach("m1", name, b"x", now=2.0)
    with pytest.raises(ContentTooLarge) as info:
        await store.meetings.attach("m1", "big.bin", bytes(MAX_CONTENT_SIZE + 1), now=2.0)
    assert isinstance(info.value, Conflict)
    assert await store.changes.last_seq() == before
    assert await store.meetings.contents("m1") == []
    assert await store.meetings.blob(sha256_hex(b"x")) is None


async def test_removing_a_meeting_drops_and_logs_its_references(store: Store) -> None:
    await put_meeting(store, "m1")
    await put_meeting(store, "m2")
    await store.meetings.attach("m1", "b.txt", b"b", now=2.0)
    await store.meetings.attach("m1", "a.txt", b"a", now=2.0)
    await store.meetings.attach("m2", "a.txt", b"a", now=2.0)
    await assert_logs(store, lambda: store.meetings.remove("m1", now=5.0), 5.0, [
        ("meeting-content", "m1/a.txt", "delete"),
        ("meeting-content", "m1/b.txt", "delete"),
        ("meeting", "m1", "delete"),
    ])
    assert await store.meetings.contents("m1") == []
    assert [c.name for c in await store.meetings.contents("m2")] == ["a.txt"]
    assert await store.meetings.blob(sha256_hex(b"b")) == b"b"
    # Putting the meeting again keeps nothing of the old references.
    await put_meeting(store, "m1")
    assert await store.meetings.contents("m1") == []


async def test_replacing_a_meeting_keeps_its_content(store: Store) -> None:
    await put_meeting(store, "m1")
    content = await store.meetings.attach("m1", "a.txt", b"a", now=2.0)
    await store.meetings.put(Meeting("m1", aor("alice"), "Renamed"), now=3.0)
    assert await store.meetings.contents("m1") == [content]


# --- CMS -------------------------------------------------------------------------------


async def test_every_cms_write_takes_the_next_version_and_is_logged(store: Store) -> None:
    assert await store.cms.version() == 0
    assert await store.cms.get("topology") is None
    assert await store.cms.all() == []
    changes = await assert_logs(
        store, lambda: store.cms.put("topology", "pools: []", now=1.0), 1.0,
        [("cms", "topology", "put")])
    first = CmsDocument("topology", "pools: []", 1, 1.0)
    assert decode_change(changes[0]) == first
    second = await store.cms.put("master", '{"pool":"fe1"}', now=2.0)
    assert second == CmsDocument("master", '{"pool":"fe1"}', 2, 2.0)
    rewritten = await store.cms.put("topology", "pools: [fe1]", now=3.0)
    assert rewritten.version == 3
    assert await store.cms.get("topology") == rewritten
    assert await store.cms.all() == [second, rewritten]          # by key
    assert await store.cms.version() == 3


async def test_the_cms_version_never_goes_back_across_removals(store: Store) -> None:
    await store.cms.put("a", "1", now=1.0)
    await store.cms.put("b", "2", now=1.0)
    await assert_logs(store, lambda: store.cms.remove("b", now=2.0), 2.0,
                      [("cms", "b", "delete")])
    assert await store.cms.version() == 3            # above every document: b's delete
    assert await store.cms.get("b") is None
    await assert_logs(store, lambda: store.cms.remove("b", now=3.0), 3.0, [])
    await store.cms.remove("never", now=3.0)
    assert await store.cms.version() == 3            # removing nothing changes nothing
    await store.cms.remove("a", now=4.0)
    assert await store.cms.version() == 4 and await store.cms.all() == []
    assert (await store.cms.put("c", "3", now=5.0)).version == 5


async def test_cms_compare_and_set(store: Store) -> None:
    created = await store.cms.put("master", "fe1", now=1.0, check=True, expect_version=None)
    assert created.version == 1
    before = await store.changes.last_seq()
    with pytest.raises(Conflict):
        await store.cms.put("master", "fe2", now=2.0, check=True, expect_version=None)
    with pytest.raises(Conflict):
        await store.cms.put("master", "fe2", now=2.0, check=True, expect_version=7)
    with pytest.raises(Conflict):
        await store.cms.put("absent", "x", now=2.0, check=True, expect_version=1)
    assert await store.changes.last_seq() == before
    assert await store.cms.version() == 1
    assert await store.cms.get("master") == created
    moved = await store.cms.put("master", "fe2", now=3.0, check=True, expect_version=1)
    assert moved == CmsDocument("master", "fe2", 2, 3.0)
    # Without `check`, expect_version is not looked at.
    assert (await store.cms.put("master", "fe3", now=4.0, expect_version=99)).version == 3


async def test_concurrent_cms_writes_get_distinct_versions(store: Store) -> None:
    docs = await asyncio.gather(*(store.cms.put(f"k{i % 5}", str(i), now=float(i))
                                  for i in range(30)))
    assert sorted(d.version for d in docs) == list(range(1, 31))
    assert await store.cms.version() == 30
    results = await asyncio.gather(
        *(store.cms.put("once", str(i), now=1.0, check=True, expect_version=None)
          for i in range(10)), return_exceptions=True)
    assert sum(isinstance(r, CmsDocument) for r in results) == 1
    assert all(isinstance(r, CmsDocument | Conflict) for r in results)


# --- change-log summary ----------------------------------------------------------------


async def test_the_summary_counts_changes_per_category(store: Store) -> None:
    assert await store.changes.summary(0) == {}
    await put_meeting(store, "m1", now=10.0)                       # seq 1
    await store.cms.put("a", "1", now=11.0)                        # seq 2
    await store.meetings.attach("m1", "x", b"x", now=12.0)         # seq 3
    await put_meeting(store, "m2", now=13.0)                       # seq 4
    await store.cms.remove("a", now=14.0)                          # seq 5
    assert await store.changes.summary(0) == {
        "meeting": (4, 2, 10.0), "cms": (5, 2, 11.0), "meeting-content": (3, 1, 12.0)}
    assert await store.changes.summary(2) == {
        "meeting": (4, 1, 13.0), "cms": (5, 1, 14.0), "meeting-content": (3, 1, 12.0)}
    assert await store.changes.summary(5) == {
        "meeting": (4, 0, 0.0), "cms": (5, 0, 0.0), "meeting-content": (3, 0, 0.0)}

