"""Store contract, data side: what each repository keeps and returns (trimaran.store.base).

Runs against every backend of the `store` fixture.
"""

from __future__ import annotations

import pytest

from tests.store.conftest import (
    POOL,
    add_user,
    aor,
    make_binding,
    make_credentials,
    make_publication,
    make_user,
)
from trimaran.store import (
    Conflict,
    ContactEntry,
    ContactGroup,
    ContactList,
    Heartbeat,
    Meeting,
    NotFound,
    PresenceRule,
    Publication,
    Store,
    Subscription,
)

# --- users and credentials -------------------------------------------------------------


async def test_added_user_is_found_by_aor_number_and_digest_username(store: Store) -> None:
    user = await add_user(store, "alice", number="+15550100")
    assert await store.users.get(aor("alice")) == user
    assert await store.users.by_number("+15550100") == user
    assert await store.users.credentials("alice", "example.com") == make_credentials("alice")


async def test_unknown_user_number_or_username_is_none(store: Store) -> None:
    await add_user(store, "alice", number="+15550100")
    assert await store.users.get(aor("bob")) is None
    assert await store.users.by_number("+15550199") is None
    assert await store.users.credentials("alice", "other.example") is None
    assert await store.users.credentials("bob", "example.com") is None


async def test_users_are_listed_by_aor_and_filtered_by_pool(store: Store) -> None:
    for name in ("carol", "alice", "bob"):
        await add_user(store, name)
    other = make_user("dave", pool="fe2")
    await store.users.add(other, make_credentials("dave"), now=1.0)
    assert [u.aor for u in await store.users.list()] == [
        aor("alice"), aor("bob"), aor("carol"), aor("dave")]
    assert [u.aor for u in await store.users.list(POOL)] == [aor("alice"), aor("bob"),
                                                             aor("carol")]
    assert await store.users.list("fe2") == [other]
    assert await store.users.list("nowhere") == []


async def test_adding_an_existing_aor_is_a_conflict_and_changes_nothing(store: Store) -> None:
    user = await add_user(store, "alice")
    with pytest.raises(Conflict):
        await store.users.add(make_user("alice", number="+1555"),
                              make_credentials("alice", secret="9"), now=2.0)
    assert await store.users.get(aor("alice")) == user
    assert await store.users.credentials("alice", "example.com") == make_credentials("alice")


async def test_a_number_belongs_to_one_user(store: Store) -> None:
    await add_user(store, "alice", number="+15550100")
    with pytest.raises(Conflict, match=r"\+15550100"):
        await add_user(store, "bob", number="+15550100")
    assert await store.users.get(aor("bob")) is None


async def test_a_digest_username_belongs_to_one_user_per_realm(store: Store) -> None:
    await add_user(store, "alice")
    with pytest.raises(Conflict):
        await store.users.add(make_user("bob"), make_credentials("bob", username="alice"),
                              now=1.0)
    # The same username in another realm is somebody else.
    await store.users.add(make_user("bob"),
                          make_credentials("bob", username="alice", realm="other.example"),
                          now=1.0)
    found = await store.users.credentials("alice", "other.example")
    assert found is not None and found.aor == aor("bob")


async def test_credentials_of_another_aor_are_refused(store: Store) -> None:
    with pytest.raises(Conflict):
        await store.users.add(make_user("alice"), make_credentials("bob"), now=1.0)
    assert await store.users.list() == []


async def test_set_credentials_replaces_them(store: Store) -> None:
    await add_user(store, "alice")
    new = make_credentials("alice", username="alice2", secret="7")
    await store.users.set_credentials(new, now=2.0)
    assert await store.users.credentials("alice", "example.com") is None
    assert await store.users.credentials("alice2", "example.com") == new


async def test_set_credentials_of_unknown_user_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.users.set_credentials(make_credentials("ghost"), now=1.0)


async def test_set_credentials_cannot_take_another_users_username(store: Store) -> None:
    await add_user(store, "alice")
    await add_user(store, "bob")
    with pytest.raises(Conflict):
        await store.users.set_credentials(make_credentials("bob", username="alice"), now=2.0)
    assert await store.users.credentials("bob", "example.com") == make_credentials("bob")


async def test_removing_a_user_removes_what_it_owns_and_nothing_else(store: Store) -> None:
    await add_user(store, "alice", number="+15550100")
    await add_user(store, "bob")
    await store.contacts.put(ContactList(aor("alice"), (), (ContactEntry(aor("bob")),)),
                             now=2.0)
    await store.contacts.put(ContactList(aor("bob"), (), (ContactEntry(aor("alice")),)),
                             now=2.0)
    await store.presence.set_rule(PresenceRule(aor("alice"), "*", "allow"), now=2.0)
    await store.presence.set_rule(PresenceRule(aor("bob"), aor("alice"), "block"), now=2.0)
    await store.presence.publish(make_publication("alice", "e1"), replaces=None, now=2.0)
    await store.presence.publish(make_publication("bob", "e2"), replaces=None, now=2.0)

    await store.users.remove(aor("alice"), now=3.0)

    assert await store.users.get(aor("alice")) is None
    assert await store.users.by_number("+15550100") is None
    assert await store.users.credentials("alice", "example.com") is None
    assert await store.contacts.get(aor("alice")) == ContactList(aor("alice"))
    assert await store.presence.rules(aor("alice")) == []
    assert await store.presence.publications(aor("alice"), "presence", now=3.0) == []
    # bob's data, even where it names alice, is bob's.
    assert await store.users.get(aor("bob")) is not None
    assert (await store.contacts.get(aor("bob"))).has_contact(aor("alice"))
    assert await store.presence.rules(aor("bob")) == [
        PresenceRule(aor("bob"), aor("alice"), "block")]
    assert len(await store.presence.publications(aor("bob"), "presence", now=3.0)) == 1
    # The number is free again.
    await add_user(store, "alice2", number="+15550100")


async def test_removing_an_unknown_user_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.users.remove(aor("ghost"), now=1.0)


# --- bindings --------------------------------------------------------------------------


async def test_bindings_are_returned_highest_q_first_then_latest_expiry(store: Store) -> None:
    a = make_binding("alice", "sip:alice@192.0.2.1", q=0.5, expires_at=500.0)
    b = make_binding("alice", "sip:alice@192.0.2.2", q=1.0, expires_at=300.0)
    c = make_binding("alice", "sip:alice@192.0.2.3", q=0.5, expires_at=900.0)
    result = await store.bindings.apply(aor("alice"), upsert=[a, b, c], remove=[], now=10.0)
    assert result == [b, c, a]
    assert await store.bindings.for_aor(aor("alice"), now=10.0) == [b, c, a]
    assert await store.bindings.for_aor(aor("bob"), now=10.0) == []


async def test_plain_contacts_are_matched_by_uri(store: Store) -> None:
    first = make_binding("alice", "sip:alice@192.0.2.1", cseq=1, expires_at=100.0)
    await store.bindings.apply(aor("alice"), upsert=[first], remove=[], now=10.0)
    refreshed = make_binding("alice", "sip:alice@192.0.2.1", cseq=2, expires_at=200.0)
    other = make_binding("alice", "sip:alice@192.0.2.9", cseq=2)
    result = await store.bindings.apply(aor("alice"), upsert=[refreshed, other], remove=[],
                                        now=20.0)
    assert result == [other, refreshed]


async def test_instance_and_reg_id_replace_the_binding_of_the_same_instance(
        store: Store) -> None:
    # RFC 5626 §6: same instance and reg-id, new contact URI (e.g. a new port) replaces.
    instance = "<urn:uuid:00000000-0000-0000-0000-000000000001>"
    old = make_binding("alice", "sip:alice@192.0.2.1:5060", instance_id=instance, reg_id=1,
                       flow_id="flow-1")
    await store.bindings.apply(aor("alice"), upsert=[old], remove=[], now=10.0)
    new = make_binding("alice", "sip:alice@192.0.2.1:6000", instance_id=instance, reg_id=1,
                       flow_id="flow-2", cseq=2)
    second_flow = make_binding("alice", "sip:alice@192.0.2.1:7000", instance_id=instance,
                               reg_id=2, flow_id="flow-3", expires_at=900.0)
    result = await store.bindings.apply(aor("alice"), upsert=[new, second_flow], remove=[],
                                        now=20.0)
    assert result == [new, second_flow]


async def test_apply_removes_the_given_keys(store: Store) -> None:
    a = make_binding("alice", "sip:alice@192.0.2.1")
    b = make_binding("alice", "sip:alice@192.0.2.2", instance_id="<urn:x>", reg_id=1)
    await store.bindings.apply(aor("alice"), upsert=[a, b], remove=[], now=10.0)
    result = await store.bindings.apply(aor("alice"), upsert=[], remove=[a.key, b.key, "nope"],
                                        now=20.0)
    assert result == []


async def test_expired_bindings_are_hidden_and_dropped_by_apply(store: Store) -> None:
    short = make_binding("alice", "sip:alice@192.0.2.1", expires_at=50.0)
    long = make_binding("alice", "sip:alice@192.0.2.2", expires_at=500.0)
    await store.bindings.apply(aor("alice"), upsert=[short, long], remove=[], now=10.0)
    assert await store.bindings.for_aor(aor("alice"), now=50.0) == [long]   # expires_at <= now
    assert await store.bindings.apply(aor("alice"), upsert=[], remove=[], now=60.0) == [long]
    assert await store.bindings.purge_expired(now=60.0) == 0                # already dropped


async def test_upserting_an_expired_binding_removes_its_key(store: Store) -> None:
    live = make_binding("alice", "sip:alice@192.0.2.1", expires_at=500.0)
    await store.bindings.apply(aor("alice"), upsert=[live], remove=[], now=10.0)
    dead = make_binding("alice", "sip:alice@192.0.2.1", expires_at=20.0)
    assert await store.bindings.apply(aor("alice"), upsert=[dead], remove=[], now=20.0) == []


async def test_apply_refuses_bindings_of_another_aor(store: Store) -> None:
    with pytest.raises(Conflict):
        await store.bindings.apply(aor("alice"), upsert=[make_binding("bob", "sip:bob@h")],
                                   remove=[], now=10.0)
    assert await store.bindings.count(now=10.0) == 0


async def test_remove_all_purge_and_count(store: Store) -> None:
    await store.bindings.apply(aor("alice"), upsert=[
        make_binding("alice", "sip:alice@h1", server="fe1a", flow_id="f1"),
        make_binding("alice", "sip:alice@h2", server="fe1b", flow_id="f1"),
        make_binding("alice", "sip:alice@h3", server="fe1a", expires_at=50.0)], remove=[],
        now=10.0)
    await store.bindings.apply(aor("bob"), upsert=[
        make_binding("bob", "sip:bob@h1", server="fe1a", flow_id="f2"),
        make_binding("bob", "sip:bob@h2", server="fe1b", flow_id="f3")], remove=[], now=10.0)
    assert await store.bindings.count(now=10.0) == 5
    assert await store.bindings.count(now=60.0) == 4
    assert await store.bindings.count(now=10.0, server="fe1a") == 3
    assert await store.bindings.count(now=60.0, server="fe1a") == 2

    assert await store.bindings.purge_flow("fe1a", "f1") == 1     # only fe1a's flow f1
    assert await store.bindings.purge_flow("fe1a", "") == 0       # no flow: never matched
    assert await store.bindings.purge_expired(now=60.0) == 1
    assert await store.bindings.purge_server("fe1b") == 2
    assert await store.bindings.count(now=10.0) == 1
    assert await store.bindings.remove_all(aor("bob")) == 1
    assert await store.bindings.remove_all(aor("bob")) == 0
    assert await store.bindings.count(now=10.0) == 0


# --- contact lists ---------------------------------------------------------------------

FRIENDS = ContactGroup("friends", "Friends")
WORK = ContactGroup("work")


async def test_a_list_never_written_is_empty(store: Store) -> None:
    assert await store.contacts.get(aor("alice")) == ContactList(aor("alice"))


async def test_a_contact_list_round_trips_in_order(store: Store) -> None:
    cl = ContactList(aor("alice"), (WORK, FRIENDS), (
        ContactEntry(aor("zed"), "Zed", ("friends", "work")),
        ContactEntry(aor("bob"), "", ()),
        ContactEntry(aor("carol"), "Carol", ("work",))))
    await store.contacts.put(cl, now=1.0)
    assert await store.contacts.get(aor("alice")) == cl


async def test_put_replaces_the_whole_list(store: Store) -> None:
    await store.contacts.put(ContactList(aor("alice"), (WORK,), (
        ContactEntry(aor("bob"), groups=("work",)),)), now=1.0)
    new = ContactList(aor("alice"), (FRIENDS,), (ContactEntry(aor("carol")),))
    await store.contacts.put(new, now=2.0)
    assert await store.contacts.get(aor("alice")) == new
    await store.contacts.put(ContactList(aor("alice")), now=3.0)
    assert await store.contacts.get(aor("alice")) == ContactList(aor("alice"))


async def test_watchers_of_are_the_owners_listing_the_uri(store: Store) -> None:
    for owner in ("carol", "alice", "dave"):
        contacts = (ContactEntry(aor("bob")),) if owner != "dave" else ()
        await store.contacts.put(ContactList(aor(owner), (), contacts), now=1.0)
    assert await store.contacts.watchers_of(aor("bob")) == [aor("alice"), aor("carol")]
    assert await store.contacts.watchers_of(aor("nobody")) == []


@pytest.mark.parametrize("bad", [
    ContactList(aor("alice"), (WORK,), (ContactEntry(aor("bob"), groups=("friends",)),)),
    ContactList(aor("alice"), (WORK, WORK), ()),
    ContactList(aor("alice"), (), (ContactEntry(aor("bob")), ContactEntry(aor("bob")))),
    ContactList(aor("alice"), (WORK,), (ContactEntry(aor("bob"), groups=("work", "work")),)),
], ids=["unknown-group", "duplicate-group", "duplicate-contact", "group-named-twice"])
async def test_an_inconsistent_list_is_a_conflict_and_changes_nothing(
        store: Store, bad: ContactList) -> None:
    old = ContactList(aor("alice"), (FRIENDS,), (ContactEntry(aor("carol")),))
    await store.contacts.put(old, now=1.0)
    with pytest.raises(Conflict):
        await store.contacts.put(bad, now=2.0)
    assert await store.contacts.get(aor("alice")) == old


# --- presence: rules, publications, subscriptions --------------------------------------


async def test_presence_rules_are_set_replaced_and_removed(store: Store) -> None:
    owner = aor("alice")
    await store.presence.set_rule(PresenceRule(owner, aor("bob"), "allow"), now=1.0)
    await store.presence.set_rule(PresenceRule(owner, "*", "block"), now=1.0)
    await store.presence.set_rule(PresenceRule(owner, aor("bob"), "block"), now=2.0)
    assert await store.presence.rules(owner) == [
        PresenceRule(owner, "*", "block"), PresenceRule(owner, aor("bob"), "block")]
    await store.presence.remove_rule(owner, aor("bob"), now=3.0)
    await store.presence.remove_rule(owner, aor("nobody"), now=3.0)    # absent: no error
    assert await store.presence.rules(owner) == [PresenceRule(owner, "*", "block")]
    assert await store.presence.rules(aor("bob")) == []


async def test_publications_are_per_event_and_hidden_once_expired(store: Store) -> None:
    p1 = make_publication("alice", "e1", expires_at=100.0)
    p2 = make_publication("alice", "e2", expires_at=200.0, body=bytes(range(256)))
    dialog = make_publication("alice", "e3", event="dialog")
    for p in (p2, p1, dialog):
        await store.presence.publish(p, replaces=None, now=10.0)
    assert await store.presence.publications(aor("alice"), "presence", now=10.0) == [p1, p2]
    assert await store.presence.publications(aor("alice"), "presence", now=100.0) == [p2]
    assert await store.presence.publications(aor("alice"), "dialog", now=10.0) == [dialog]
    assert await store.presence.publications(aor("bob"), "presence", now=10.0) == []


async def test_a_refresh_with_a_new_etag_replaces_the_old_one(store: Store) -> None:
    await store.presence.publish(make_publication("alice", "e1", expires_at=100.0),
                                 replaces=None, now=10.0)
    new = make_publication("alice", "e2", expires_at=200.0, body=b"<new/>")
    await store.presence.publish(new, replaces="e1", now=50.0)
    assert await store.presence.publications(aor("alice"), "presence", now=50.0) == [new]
    with pytest.raises(NotFound):       # the old etag is gone (RFC 3903 §6: 412)
        await store.presence.publish(new, replaces="e1", now=60.0)


async def test_a_modify_with_the_same_etag_updates_in_place(store: Store) -> None:
    await store.presence.publish(make_publication("alice", "e1"), replaces=None, now=10.0)
    new = make_publication("alice", "e1", body=b"<away/>", expires_at=400.0)
    await store.presence.publish(new, replaces="e1", now=20.0)
    assert await store.presence.publications(aor("alice"), "presence", now=20.0) == [new]


@pytest.mark.parametrize("replaces,why", [
    ("nope", "unknown"), ("e-bob", "another AOR's"), ("e-dialog", "another event's"),
    ("e-old", "expired")])
async def test_refreshing_an_etag_that_is_not_there_is_not_found(
        store: Store, replaces: str, why: str) -> None:
    await store.presence.publish(make_publication("bob", "e-bob"), replaces=None, now=10.0)
    await store.presence.publish(make_publication("alice", "e-dialog", event="dialog"),
                                 replaces=None, now=10.0)
    await store.presence.publish(make_publication("alice", "e-old", expires_at=20.0),
                                 replaces=None, now=10.0)
    with pytest.raises(NotFound):
        await store.presence.publish(make_publication("alice", "e-new"), replaces=replaces,
                                     now=30.0)
    assert await store.presence.publications(aor("alice"), "presence", now=10.0) != []


async def test_a_new_publication_cannot_take_an_etag_in_use(store: Store) -> None:
    await store.presence.publish(make_publication("bob", "e1"), replaces=None, now=10.0)
    with pytest.raises(Conflict):
        await store.presence.publish(make_publication("alice", "e1"), replaces=None, now=10.0)
    assert await store.presence.publications(aor("alice"), "presence", now=10.0) == []


async def test_unpublish_removes_and_unknown_etag_is_not_found(store: Store) -> None:
    await store.presence.publish(make_publication("alice", "e1"), replaces=None, now=10.0)
    with pytest.raises(NotFound):
        await store.presence.unpublish(aor("bob"), "e1", now=20.0)
    await store.presence.unpublish(aor("alice"), "e1", now=20.0)
    assert await store.presence.publications(aor("alice"), "presence", now=20.0) == []
    with pytest.raises(NotFound):
        await store.presence.unpublish(aor("alice"), "e1", now=20.0)


def _subscription(n: int, *, target: str = "bob", event: str = "presence",
                  expires_at: float = 100.0) -> Subscription:
    return Subscription(f"call-{n}|tag-{n}", aor(f"watcher{n}"), aor(target), event,
                        expires_at, dialog='{"route": []}', server="fe1a")


async def test_subscriptions_are_saved_replaced_listed_and_removed(store: Store) -> None:
    s1, s2 = _subscription(1), _subscription(2, expires_at=50.0)
    for s in (s2, s1, _subscription(3, event="dialog"), _subscription(4, target="carol")):
        await store.presence.save_subscription(s)
    assert await store.presence.subscriptions_to(aor("bob"), "presence", now=10.0) == [s1, s2]
    assert await store.presence.subscriptions_to(aor("bob"), "presence", now=50.0) == [s1]
    refreshed = _subscription(1, expires_at=300.0)
    await store.presence.save_subscription(refreshed)
    await store.presence.remove_subscription(s2.id)
    await store.presence.remove_subscription("never-existed")
    assert await store.presence.subscriptions_to(aor("bob"), "presence", now=10.0) == [
        refreshed]


# --- meetings and heartbeats -----------------------------------------------------------


async def test_meetings_are_put_replaced_listed_and_removed(store: Store) -> None:
    m1 = Meeting("m1", aor("alice"), "Standup", created_at=10.0, expires_at=None,
                 attendees=(aor("bob"), aor("carol")))
    m2 = Meeting("m2", aor("alice"), "Review", created_at=5.0, expires_at=99.5)
    m3 = Meeting("m3", aor("bob"), created_at=1.0)
    for m in (m1, m2, m3):
        await store.meetings.put(m, now=20.0)
    assert await store.meetings.get("m1") == m1
    assert await store.meetings.get("nope") is None
    assert await store.meetings.by_organizer(aor("alice")) == [m2, m1]
    changed = Meeting("m1", aor("alice"), "Standup (moved)", created_at=10.0, expires_at=70.0)
    await store.meetings.put(changed, now=21.0)
    assert await store.meetings.get("m1") == changed
    await store.meetings.remove("m2", now=22.0)
    assert await store.meetings.by_organizer(aor("alice")) == [changed]
    with pytest.raises(NotFound):
        await store.meetings.remove("m2", now=23.0)


async def test_heartbeats_keep_the_last_beat_of_each_server(store: Store) -> None:
    await store.heartbeats.beat(Heartbeat("fe1b", POOL, 10.0))
    await store.heartbeats.beat(Heartbeat("fe1a", POOL, 10.0, "up", {"version": "1"}))
    await store.heartbeats.beat(Heartbeat("fe2a", "fe2", 10.0))
    latest = Heartbeat("fe1a", POOL, 12.5, "draining", {"version": "1", "users": "42"})
    await store.heartbeats.beat(latest)
    assert await store.heartbeats.all(POOL) == [latest, Heartbeat("fe1b", POOL, 10.0)]
    assert [h.server for h in await store.heartbeats.all()] == ["fe1a", "fe1b", "fe2a"]
    assert await store.heartbeats.all("fe9") == []


async def test_publication_bodies_are_bytes_exactly(store: Store) -> None:
    body = b"\x00\xff<pidf/>\r\n" + bytes(range(256))
    p = Publication(aor("alice"), "e1", "presence", "application/pidf+xml", body, 100.0)
    await store.presence.publish(p, replaces=None, now=1.0)
    assert (await store.presence.publications(aor("alice"), "presence", now=1.0))[0].body == body
