"""Front End pool behaviour (SPEC FE-1..FE-5, FE-7) with three servers on one store."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from tests.frontend.conftest import DOMAIN, FAST, add_user, password_of
from tests.pool.conftest import Pool, wait_for
from trimaran.client.ua import UAConfig, UserAgent
from trimaran.client.xcap import XcapClient, XcapError
from trimaran.roles.frontend.presence import basic_pidf
from trimaran.sip import digest
from trimaran.store.model import ContactEntry, ContactGroup, ContactList, Credentials

ALICE, BOB, CAROL = (f"sip:{n}@{DOMAIN}" for n in ("alice", "bob", "carol"))


async def test_users_on_different_servers_reach_each_other(pool: Pool) -> None:
    # FE-1/FE-4: any server signs in any user; requests are relayed over the holder's flow.
    alice = await pool.user("alice", "fe1a")
    bob = await pool.user("bob", "fe1b")
    assert (await alice.send_message(BOB, "hi from fe1a")).status == 200
    assert (await bob.next_message()).body == b"hi from fe1a"
    pending = alice.start_call(BOB)
    incoming = await asyncio.wait_for(bob.incoming_calls.get(), 5)
    await incoming.answer()
    await alice.wait_answer(pending)
    await asyncio.wait_for(incoming.acked.wait(), 5)
    await incoming.bye()  # the callee's BYE travels back through both servers
    await pending.wait_ended()


async def test_presence_notify_crosses_servers(pool: Pool) -> None:
    alice = await pool.user("alice", "fe1a")
    bob = await pool.user("bob", "fe1b")
    xcap = XcapClient(f"http://{pool.peers['fe1a'].host}:"
                      f"{pool.servers['fe1a'].admin_address[1]}",  # type: ignore[index]
                      ALICE, "alice", "alice-secret-pw")
    await xcap.put(ContactList(ALICE, (ContactGroup("g"),), (ContactEntry(BOB, "", ("g",)),)))
    subscription, response = await bob.subscribe(ALICE)
    assert response.status == 200
    await subscription.next_notify()
    await alice.publish(basic_pidf(ALICE, "open", "across the pool"))
    notify = await subscription.next_notify()
    assert b"across the pool" in notify.body


async def test_dead_server_is_declared_and_its_bindings_purged(pool: Pool) -> None:
    # FE-3: a server that stops heartbeating is declared dead within the bound and its
    # bindings are no longer used, then purged.
    await pool.user("bob", "fe1b", reregister_on_flow_loss=False)
    store = pool.store()
    assert len(await store.bindings.for_aor(BOB, now=time.time())) == 1
    stopped_at = time.monotonic()
    await pool.stop("fe1b")
    fe1a = pool.servers["fe1a"]
    assert fe1a.membership is not None
    took = await wait_for(lambda: fe1a.membership.is_dead("fe1b"), 3.0,  # type: ignore[union-attr]
                          "fe1b declared dead")
    assert took <= 1.0 + 0.2 + 0.5  # detection bound + one heartbeat + slack
    deadline = time.monotonic() + 2
    while await store.bindings.for_aor(BOB, now=time.time()):
        assert time.monotonic() < deadline, "bindings of the dead server not purged"
        await asyncio.sleep(0.05)
    assert any(d.action == "purge" and d.server == "fe1b"
               for s in pool.servers.values() if s.membership
               for d in s.membership.history)
    assert time.monotonic() - stopped_at < 3


async def test_clients_of_a_failed_server_come_back_on_another_and_are_reachable(
        pool: Pool) -> None:
    # FE-2: the failed server's users re-register elsewhere at once and IM works again.
    alice = await pool.user("alice", "fe1a")
    bob = await pool.user("bob", "fe1b", "fe1c", "fe1a")
    bob.registered.clear()
    failed_at = time.monotonic()
    await pool.stop("fe1b")
    await wait_for(bob.registered.is_set, 5.0, "bob registered again")
    assert bob.server == pool.address("fe1c")
    response = await alice.send_message(BOB, "are you back?")
    assert response.status == 200
    assert (await bob.next_message()).body == b"are you back?"
    assert time.monotonic() - failed_at < 5.0


async def test_message_in_flight_to_a_moving_user_is_retried_not_lost(pool: Pool) -> None:
    # A request whose binding went stale is retried on the user's fresh binding.
    alice = await pool.user("alice", "fe1a")
    bob = await pool.user("bob", "fe1b", "fe1c")
    await pool.stop("fe1b")
    response = await alice.send_message(BOB, "sent while you moved")  # no waiting first
    assert response.status == 200
    assert (await bob.next_message()).body == b"sent while you moved"


async def test_drain_moves_clients_and_refuses_new_sign_ins(pool: Pool) -> None:
    # FE-5: drain stops new sign-ins, moves the clients, no IM fails meanwhile.
    alice = await pool.user("alice", "fe1a")
    bob = await pool.user("bob", "fe1b", "fe1c")
    await pool.servers["fe1b"].drain()
    assert pool.servers["fe1b"].health() == (False, "draining")
    carol = UserAgent(bob.config.__class__(
        aor=CAROL, password="carol-secret-pw", servers=(pool.address("fe1b"),),
        timers=bob.config.timers, auto_refresh=False))
    await carol.start()
    pool.agents.append(carol)
    refused = await carol.register()
    assert refused.status == 503 and refused.headers.get("Retry-After")
    sent = 0
    while bob.server != pool.address("fe1c") or not bob.registered.is_set():
        assert (await alice.send_message(BOB, f"m{sent}")).status == 200
        sent += 1
        assert sent < 200, "bob never moved"
    for i in range(5):
        assert (await alice.send_message(BOB, f"after{i}")).status == 200
    bodies = [(await bob.next_message()).body for _ in range(sent + 5)]
    assert set(bodies) == {f"m{i}".encode() for i in range(sent)} | \
        {f"after{i}".encode() for i in range(5)}
    assert bob.messages.empty()


async def test_back_end_outage_keeps_calls_and_im_in_resiliency_mode(pool: Pool) -> None:
    # FE-7: the Back End is unreachable; registered users keep IM and calls from the
    # caches, persistent changes are refused with 503 and a reason; service resumes.
    alice = await pool.user("alice", "fe1a")
    bob = await pool.user("bob", "fe1b")
    assert (await alice.send_message(BOB, "warm the caches")).status == 200
    await bob.next_message()
    for store in pool.stores.values():
        await store.close()  # every server loses the database
    response = await alice.send_message(BOB, "during the outage")
    assert response.status == 200
    assert (await bob.next_message()).body == b"during the outage"
    pending = alice.start_call(BOB)
    incoming = await asyncio.wait_for(bob.incoming_calls.get(), 5)
    await incoming.answer()
    await alice.wait_answer(pending)
    await pending.bye()
    refresh = await bob.register()
    assert refresh.status == 200
    assert refresh.headers.get("X-Trimaran-Mode") == "resiliency"
    published = await alice.publish(basic_pidf(ALICE, "open"))
    assert published.status == 503
    assert "resiliency" in published.reason and published.headers.get("Retry-After")
    xcap = XcapClient(f"http://{pool.peers['fe1a'].host}:"
                      f"{pool.servers['fe1a'].admin_address[1]}",  # type: ignore[index]
                      ALICE, "alice", "alice-secret-pw")
    try:
        await xcap.put(ContactList(ALICE))
    except XcapError as exc:
        assert exc.status == 503
    else:
        raise AssertionError("a contact list change was accepted without a back end")
    for store in pool.stores.values():
        await store.open()  # the Back End returns: full service without restarts
    await wait_for(lambda: all(s.mode == "full" for s in pool.servers.values()), 5,
                   "full service again")
    assert (await alice.publish(basic_pidf(ALICE, "open"))).status == 200
    assert (await bob.register()).headers.get("X-Trimaran-Mode") == "full"


# -- every user's credentials on every server (FE-2, FE-7, METRO-1) ---------------------------


def holds(pool: Pool, username: str, ha1: str | None) -> bool:
    """Every server's credential cache has `username` with that MD5 HA1 (None: has none)."""
    found = [s.auth.cache.get(username, DOMAIN) for s in pool.servers.values()]
    return all((c.ha1_md5 if c is not None else None) == ha1 for c in found)


async def test_every_server_holds_every_pool_users_credentials_and_follows_changes(
        pool: Pool) -> None:
    await wait_for(lambda: all(s.user_feed is not None and s.user_feed.loaded
                               for s in pool.servers.values()), 5, "users loaded")
    for name in ("alice", "bob", "carol", "dave"):  # none of them ever signed in
        await wait_for(lambda n=name: holds(pool, n, digest.ha1(  # type: ignore[misc]
            n, DOMAIN, password_of(n), "MD5")), 5, f"{name}'s credentials everywhere")
    store = pool.store()
    erin = await add_user(store, "erin", pool="fe1")     # added later: followed
    await wait_for(lambda: holds(pool, "erin", digest.ha1("erin", DOMAIN, password_of("erin"),
                                                           "MD5")), 5, "a new user's")
    changed = Credentials(erin, "erin", DOMAIN, digest.ha1("erin", DOMAIN, "new-pw", "MD5"),
                          digest.ha1("erin", DOMAIN, "new-pw", "SHA-256"))
    await store.users.set_credentials(changed, now=time.time())
    await wait_for(lambda: holds(pool, "erin", changed.ha1_md5), 5, "a changed password")
    await store.users.remove(erin, now=time.time())
    await wait_for(lambda: holds(pool, "erin", None), 5, "a removed user forgotten")
    status = pool.servers["fe1b"].status()["credentials"]
    assert status == {"loaded": True, "cached": 4}


async def test_a_user_signs_in_where_it_never_did_while_the_back_end_is_away(
        pool: Pool) -> None:
    """FE-7 for users moving during a Back End outage (a stretched pool losing the
    principal's site, METRO-1): fe1c never saw carol, yet signs her in from the pool's
    credentials, and she reaches alice on fe1a through the peers; a wrong password is
    still refused."""
    alice = await pool.user("alice", "fe1a")
    await wait_for(lambda: holds(pool, "carol", digest.ha1("carol", DOMAIN,
                                                            password_of("carol"), "MD5")),
                   5, "carol's credentials everywhere")
    for store in pool.stores.values():
        await store.close()
    try:
        carol = await pool.user("carol", "fe1c")
        assert carol.mode == "resiliency"
        assert (await carol.send_message(ALICE, "from fe1c")).status == 200
        assert (await alice.next_message()).body == b"from fe1c"
        assert (await alice.send_message(CAROL, "to fe1c")).status == 200
        assert (await carol.next_message()).body == b"to fe1c"
        intruder = UserAgent(UAConfig(aor=CAROL, password="wrong", timers=FAST,
                                      servers=(pool.address("fe1b"),), auto_refresh=False))
        await intruder.start()
        try:
            assert (await intruder.register()).status in (401, 403)
        finally:
            await intruder.close()
    finally:
        for store in pool.stores.values():
            await store.open()


async def test_full_service_resumes_within_a_heartbeat_once_the_back_end_is_back(
        pool: Pool) -> None:
    """In resiliency mode a server probes its store every heartbeat interval (0.2 s here),
    not every housekeeping interval (2 s here), so writes work again soon (BE-8)."""
    await pool.stop("fe1a")
    server = await pool.start("fe1a", housekeeping_interval=2.0)
    alice = await pool.user("alice", "fe1a")
    await pool.stores["fe1a"].close()
    try:
        assert (await alice.register()).headers.get("X-Trimaran-Mode") == "resiliency"
        await asyncio.sleep(2.2)      # a housekeeping tick has found the store still away
    finally:
        await pool.stores["fe1a"].open()
    took = await wait_for(lambda: server.mode == "full", 3, "full service again")
    assert took < 1.0, f"full service after {took:.2f} s"


class RacingBindings:
    """fe1a's binding repository, where the client registers again elsewhere just as
    fe1a removes the bindings of the client's failed flow (before that write lands)."""

    def __init__(self, real: Any, moving: Callable[[], Awaitable[None]]) -> None:
        self._real, self._moving = real, moving

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    async def apply(self, aor: str, *, upsert: Any, remove: Any, now: float) -> Any:
        if remove:
            await self._moving()
        return await self._real.apply(aor, upsert=upsert, remove=remove, now=now)

    async def purge_flow(self, server: str, flow_id: str) -> int:
        await self._moving()
        return int(await self._real.purge_flow(server, flow_id))


async def test_dropping_a_failed_flows_bindings_keeps_the_clients_new_registration(
        pool: Pool) -> None:
    """RFC 5626 §5.2: when fe1a loses alice's flow it drops the bindings of that flow
    only. Alice's client, registered again at fe1b meanwhile (same instance and reg-id:
    the same binding key) while fe1a was dropping, stays reachable (FE-2)."""
    alice = await pool.user("alice", "fe1a", reregister_on_flow_loss=False)
    bob = await pool.user("bob", "fe1c")
    again = UserAgent(UAConfig(aor=ALICE, password=password_of("alice"), timers=FAST,
                               servers=(pool.address("fe1b"),), auto_refresh=False,
                               instance_id=alice.config.instance_id))
    pool.agents.append(again)
    moved = asyncio.Event()

    async def register_again() -> None:
        if not moved.is_set():
            moved.set()
            await again.start()
            assert (await again.register()).status == 200

    fe1a = pool.servers["fe1a"]
    fe1a.store.bindings = RacingBindings(fe1a.store.bindings,  # type: ignore[assignment]
                                         register_again)
    [flow_id] = list(fe1a.outbound)
    flow = fe1a.endpoint.transport.flow(flow_id)
    assert flow is not None
    await fe1a.endpoint.transport.close_flow(flow, drain_timeout=0.1)  # alice's flow fails
    await wait_for(moved.is_set, 5, "the drop under way")
    await asyncio.sleep(0.3)
    bindings = await pool.store().bindings.for_aor(ALICE, now=time.time())
    assert [b.server for b in bindings] == ["fe1b"]
    assert (await bob.send_message(ALICE, "still there?")).status == 200
    assert (await again.next_message()).body == b"still there?"
