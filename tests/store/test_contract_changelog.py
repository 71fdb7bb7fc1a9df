"""Store contract, change-log side (SPEC DR-2: the Backup Service's outbox), durability
and concurrency. Runs against every backend of the `store` fixture."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from tests.store.conftest import (
    POOL,
    Backend,
    add_user,
    aor,
    make_binding,
    make_credentials,
    make_publication,
    make_user,
)
from trimaran.store import (
    Change,
    ContactEntry,
    ContactGroup,
    ContactList,
    Heartbeat,
    Meeting,
    PresenceRule,
    Store,
    StoreError,
    Subscription,
    decode_change,
)

Expected = list[tuple[str, str, str]]          # (category, key, op)


async def new_changes(store: Store, after: int) -> list[Change]:
    """Every change after `after`."""
    return await store.changes.since(after, limit=10_000)


async def assert_logs(store: Store, write: Callable[[], Awaitable[object]], now: float,
                      expected: Expected) -> list[Change]:
    """Run `write`; assert it appended exactly `expected`, in order, stamped `now`."""
    before = await store.changes.last_seq()
    await write()
    changes = await new_changes(store, before)
    assert [(c.category, c.key, c.op) for c in changes] == expected
    assert [c.seq for c in changes] == sorted({c.seq for c in changes})
    assert all(c.seq > before and c.pool == POOL and c.at == now for c in changes)
    assert all((c.payload == "") == (c.op == "delete") for c in changes)
    if changes:
        assert await store.changes.last_seq() == changes[-1].seq
    return changes


async def test_adding_a_user_logs_the_user_and_its_credentials(store: Store) -> None:
    user, creds = make_user("alice", number="+15550100"), make_credentials("alice")
    changes = await assert_logs(store, lambda: store.users.add(user, creds, now=5.0), 5.0,
                                [("user", aor("alice"), "put"),
                                 ("credentials", aor("alice"), "put")])
    assert [decode_change(c) for c in changes] == [user, creds]


async def test_every_logged_write_appends_its_change(store: Store) -> None:
    await add_user(store, "alice")
    new_creds = make_credentials("alice", secret="5")
    changes = await assert_logs(
        store, lambda: store.users.set_credentials(new_creds, now=2.0), 2.0,
        [("credentials", aor("alice"), "put")])
    assert decode_change(changes[0]) == new_creds

    cl = ContactList(aor("alice"), (ContactGroup("work"),),
                     (ContactEntry(aor("bob"), "Bob", ("work",)),))
    changes = await assert_logs(store, lambda: store.contacts.put(cl, now=3.0), 3.0,
                                [("contacts", aor("alice"), "put")])
    assert decode_change(changes[0]) == cl

    rule = PresenceRule(aor("alice"), aor("bob"), "allow")
    changes = await assert_logs(store, lambda: store.presence.set_rule(rule, now=4.0), 4.0,
                                [("presence-rules", f"{aor('alice')}|{aor('bob')}", "put")])
    assert decode_change(changes[0]) == rule
    await assert_logs(store, lambda: store.presence.remove_rule(aor("alice"), aor("bob"),
                                                                now=5.0), 5.0,
                      [("presence-rules", f"{aor('alice')}|{aor('bob')}", "delete")])
    await assert_logs(store, lambda: store.presence.remove_rule(aor("alice"), aor("bob"),
                                                                now=5.5), 5.5, [])

    pub = make_publication("alice", "e1", body=b"\x00\xff")
    changes = await assert_logs(store, lambda: store.presence.publish(pub, replaces=None,
                                                                      now=6.0), 6.0,
                                [("presence", "e1", "put")])
    assert decode_change(changes[0]) == pub
    refreshed = make_publication("alice", "e2")
    await assert_logs(store, lambda: store.presence.publish(refreshed, replaces="e1", now=7.0),
                      7.0, [("presence", "e1", "delete"), ("presence", "e2", "put")])
    await assert_logs(store, lambda: store.presence.unpublish(aor("alice"), "e2", now=8.0),
                      8.0, [("presence", "e2", "delete")])

    meeting = Meeting("m1", aor("alice"), "Plan", created_at=9.0, attendees=(aor("bob"),))
    changes = await assert_logs(store, lambda: store.meetings.put(meeting, now=9.0), 9.0,
                                [("meeting", "m1", "put")])
    assert decode_change(changes[0]) == meeting
    await assert_logs(store, lambda: store.meetings.remove("m1", now=10.0), 10.0,
                      [("meeting", "m1", "delete")])


async def test_publishing_drops_and_logs_the_aors_expired_publications(store: Store) -> None:
    await store.presence.publish(make_publication("alice", "old", expires_at=20.0),
                                 replaces=None, now=10.0)
    await assert_logs(store, lambda: store.presence.publish(
        make_publication("alice", "new"), replaces=None, now=30.0), 30.0,
        [("presence", "old", "delete"), ("presence", "new", "put")])


async def test_removing_a_user_logs_a_delete_for_everything_it_cascades(store: Store) -> None:
    await add_user(store, "alice")
    await store.contacts.put(ContactList(aor("alice")), now=2.0)
    await store.presence.set_rule(PresenceRule(aor("alice"), "*", "allow"), now=2.0)
    await store.presence.set_rule(PresenceRule(aor("alice"), aor("bob"), "block"), now=2.0)
    await store.presence.publish(make_publication("alice", "e1"), replaces=None, now=2.0)
    await store.presence.publish(make_publication("alice", "e2", event="dialog"),
                                 replaces=None, now=2.0)
    await assert_logs(store, lambda: store.users.remove(aor("alice"), now=3.0), 3.0, [
        ("presence", "e1", "delete"),
        ("presence", "e2", "delete"),
        ("presence-rules", f"{aor('alice')}|*", "delete"),
        ("presence-rules", f"{aor('alice')}|{aor('bob')}", "delete"),
        ("contacts", aor("alice"), "delete"),
        ("credentials", aor("alice"), "delete"),
        ("user", aor("alice"), "delete"),
    ])


async def test_a_user_without_list_rules_or_publications_logs_only_its_own_deletes(
        store: Store) -> None:
    await add_user(store, "alice")
    await assert_logs(store, lambda: store.users.remove(aor("alice"), now=3.0), 3.0, [
        ("credentials", aor("alice"), "delete"), ("user", aor("alice"), "delete")])


async def test_failed_writes_append_nothing(store: Store) -> None:
    """Atomicity: a write refused half-way leaves neither data nor change behind."""
    await add_user(store, "alice", number="+15550100")
    await store.contacts.put(ContactList(aor("alice"), (ContactGroup("work"),)), now=1.0)
    await store.presence.publish(make_publication("alice", "e1"), replaces=None, now=1.0)
    failing: list[Callable[[], Awaitable[object]]] = [
        lambda: add_user(store, "alice"),
        lambda: add_user(store, "bob", number="+15550100"),
        lambda: store.users.remove(aor("ghost"), now=2.0),
        lambda: store.users.set_credentials(make_credentials("ghost"), now=2.0),
        lambda: store.contacts.put(ContactList(aor("alice"), (), (
            ContactEntry(aor("bob"), groups=("missing",)),)), now=2.0),
        lambda: store.presence.publish(make_publication("alice", "e2"), replaces="nope",
                                       now=2.0),
        lambda: store.presence.publish(make_publication("bob", "e1"), replaces=None, now=2.0),
        lambda: store.presence.unpublish(aor("alice"), "nope", now=2.0),
        lambda: store.meetings.remove("nope", now=2.0),
    ]
    before = await store.changes.last_seq()
    for write in failing:
        with pytest.raises(StoreError):
            await write()
    assert await store.changes.last_seq() == before
    assert await new_changes(store, before) == []
    assert await store.users.get(aor("bob")) is None
    assert await store.contacts.get(aor("alice")) == ContactList(aor("alice"),
                                                                 (ContactGroup("work"),))


async def test_bindings_subscriptions_and_heartbeats_are_not_logged(store: Store) -> None:
    async def unlogged() -> None:
        b = make_binding("alice", "sip:alice@h1", flow_id="f1")
        await store.bindings.apply(aor("alice"), upsert=[b], remove=[], now=1.0)
        await store.bindings.for_aor(aor("alice"), now=1.0)
        await store.bindings.purge_flow("fe1a", "f1")
        await store.bindings.apply(aor("alice"), upsert=[b], remove=[], now=1.0)
        await store.bindings.purge_server("fe1a")
        await store.bindings.apply(aor("alice"), upsert=[b], remove=[], now=1.0)
        await store.bindings.purge_expired(now=5000.0)
        await store.bindings.remove_all(aor("alice"))
        s = Subscription("c|t", aor("bob"), aor("alice"), "presence", 100.0, "{}")
        await store.presence.save_subscription(s)
        await store.presence.remove_subscription(s.id)
        await store.heartbeats.beat(Heartbeat("fe1a", POOL, 1.0))

    await assert_logs(store, unlogged, 1.0, [])


async def test_since_pages_through_the_log_in_order(store: Store) -> None:
    assert await store.changes.last_seq() == 0
    assert await store.changes.since(0) == []
    for i in range(5):
        await store.meetings.put(Meeting(f"m{i}", aor("alice")), now=float(i))
    everything = await store.changes.since(0)
    assert [c.key for c in everything] == [f"m{i}" for i in range(5)]
    first = await store.changes.since(0, limit=2)
    rest = await store.changes.since(first[-1].seq, limit=100)
    assert first + rest == everything
    assert await store.changes.since(everything[-1].seq) == []
    assert await store.changes.since(0, limit=0) == []
    assert await store.changes.last_seq() == everything[-1].seq


# --- durability and concurrency --------------------------------------------------------


async def test_written_data_survives_close_and_reopen(backend: Backend) -> None:
    store = backend.make()
    await store.open()
    user = await add_user(store, "alice", number="+15550100")
    cl = ContactList(aor("alice"), (ContactGroup("g"),), (ContactEntry(aor("b"), "", ("g",)),))
    await store.contacts.put(cl, now=2.0)
    await store.presence.set_rule(PresenceRule(aor("alice"), "*", "allow"), now=2.0)
    pub = make_publication("alice", "e1")
    await store.presence.publish(pub, replaces=None, now=2.0)
    meeting = Meeting("m1", aor("alice"), attendees=(aor("b"),))
    await store.meetings.put(meeting, now=2.0)
    binding = make_binding("alice", "sip:alice@h1")
    await store.bindings.apply(aor("alice"), upsert=[binding], remove=[], now=2.0)
    log = await store.changes.since(0)
    await store.close()
    await store.close()          # idempotent

    reopened = backend.make()
    await reopened.open()
    try:
        assert await reopened.users.get(aor("alice")) == user
        assert await reopened.users.credentials("alice", "example.com") == \
            make_credentials("alice")
        assert await reopened.contacts.get(aor("alice")) == cl
        assert await reopened.presence.rules(aor("alice")) == [
            PresenceRule(aor("alice"), "*", "allow")]
        assert await reopened.presence.publications(aor("alice"), "presence", now=2.0) == [pub]
        assert await reopened.meetings.get("m1") == meeting
        assert await reopened.bindings.for_aor(aor("alice"), now=2.0) == [binding]
        assert await reopened.changes.since(0) == log
        # Sequence numbers keep increasing across restarts.
        await reopened.meetings.put(Meeting("m2", aor("alice")), now=3.0)
        assert (await reopened.changes.since(log[-1].seq))[0].seq > log[-1].seq
    finally:
        await reopened.close()


async def test_concurrent_writes_all_land_with_distinct_sequence_numbers(store: Store) -> None:
    n = 200
    await asyncio.gather(*(add_user(store, f"user{i:03}", now=float(i)) for i in range(n)))
    users = await store.users.list()
    assert [u.aor for u in users] == [aor(f"user{i:03}") for i in range(n)]
    changes = await store.changes.since(0, limit=10 * n)
    assert len(changes) == 2 * n
    seqs = [c.seq for c in changes]
    assert len(set(seqs)) == len(seqs) and seqs == sorted(seqs)
    # Each user's two changes are adjacent: transactions never interleave.
    for user_change, creds_change in zip(changes[::2], changes[1::2], strict=True):
        assert (user_change.category, creds_change.category) == ("user", "credentials")
        assert user_change.key == creds_change.key
        assert creds_change.seq == user_change.seq + 1


async def test_concurrent_mixed_reads_and_writes_do_not_interfere(store: Store) -> None:
    async def register(i: int) -> None:
        b = make_binding(f"u{i}", f"sip:u{i}@h", server=f"fe1{'ab'[i % 2]}")
        assert await store.bindings.apply(aor(f"u{i}"), upsert=[b], remove=[], now=1.0) == [b]

    async def publish(i: int) -> None:
        await store.presence.publish(make_publication(f"u{i}", f"e{i}"), replaces=None,
                                     now=1.0)

    await asyncio.gather(*(f(i) for i in range(100) for f in (register, publish)))
    assert await store.bindings.count(now=1.0) == 100
    assert await store.bindings.count(now=1.0, server="fe1a") == 50
    assert len(await store.changes.since(0, limit=1000)) == 100
