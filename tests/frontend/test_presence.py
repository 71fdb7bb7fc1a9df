"""Presence on the Front End: PUBLISH (RFC 3903), SUBSCRIBE/NOTIFY (RFC 6665), authorization."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tests.frontend.conftest import DOMAIN, FrontEnd, password_of
from trimaran.client.ua import UserAgent
from trimaran.client.xcap import XcapClient, XcapError
from trimaran.roles.frontend.presence import basic_pidf
from trimaran.store.model import ContactEntry, ContactGroup, ContactList, PresenceRule

MakeUA = Callable[..., Any]
ALICE, BOB, CAROL = (f"sip:{n}@{DOMAIN}" for n in ("alice", "bob", "carol"))


def basic(body: bytes) -> str:
    text = body.decode()
    return text[text.index("<basic>") + 7: text.index("</basic>")]


async def befriend(fe: FrontEnd, owner: str, *friends: str) -> None:
    name = owner.split(":")[1].split("@")[0]
    xcap = XcapClient(fe.admin_url, owner, name, password_of(name))
    await xcap.put(ContactList(owner, (ContactGroup("Friends"),),
                               tuple(ContactEntry(f, "", ("Friends",)) for f in friends)))


async def test_watcher_in_contact_list_sees_published_presence(
        frontend: FrontEnd, make_ua: MakeUA) -> None:
    await befriend(frontend, ALICE, BOB)
    alice: UserAgent = await make_ua("alice")
    bob: UserAgent = await make_ua("bob")
    subscription, response = await bob.subscribe(ALICE)
    assert response.status == 200
    first = await subscription.next_notify()
    assert (first.headers.get("Subscription-State") or "").startswith("active")
    assert basic(first.body) == "open"
    published = await alice.publish(basic_pidf(ALICE, "open", "busy in a meeting"))
    assert published.status == 200 and published.headers.get("SIP-ETag")
    update = await subscription.next_notify()
    assert b"busy in a meeting" in update.body


async def test_watcher_not_allowed_sees_offline(frontend: FrontEnd, make_ua: MakeUA) -> None:
    await befriend(frontend, ALICE, BOB)
    alice: UserAgent = await make_ua("alice")
    await alice.publish(basic_pidf(ALICE, "open", "here"))
    carol: UserAgent = await make_ua("carol")
    subscription, _ = await carol.subscribe(ALICE)
    notify = await subscription.next_notify()
    assert basic(notify.body) == "closed"
    assert b"here" not in notify.body


async def test_allow_rule_and_block_rule_decide_over_the_contact_list(
        frontend: FrontEnd, make_ua: MakeUA) -> None:
    await befriend(frontend, ALICE, BOB)
    now = time.time()
    await frontend.store.presence.set_rule(PresenceRule(ALICE, CAROL, "allow"), now=now)
    await frontend.store.presence.set_rule(PresenceRule(ALICE, BOB, "block"), now=now)
    await make_ua("alice")
    carol: UserAgent = await make_ua("carol")
    bob: UserAgent = await make_ua("bob")
    carol_sub, _ = await carol.subscribe(ALICE)
    bob_sub, _ = await bob.subscribe(ALICE)
    assert basic((await carol_sub.next_notify()).body) == "open"
    assert basic((await bob_sub.next_notify()).body) == "closed"


async def test_signing_out_is_seen_as_offline(frontend: FrontEnd, make_ua: MakeUA) -> None:
    await befriend(frontend, ALICE, BOB)
    alice: UserAgent = await make_ua("alice")
    bob: UserAgent = await make_ua("bob")
    subscription, _ = await bob.subscribe(ALICE)
    assert basic((await subscription.next_notify()).body) == "open"
    await alice.unregister()
    notify = await subscription.next_notify()
    assert basic(notify.body) == "closed"


async def test_offline_user_is_offline(frontend: FrontEnd, make_ua: MakeUA) -> None:
    await befriend(frontend, ALICE, BOB)
    bob: UserAgent = await make_ua("bob")
    subscription, _ = await bob.subscribe(ALICE)
    assert basic((await subscription.next_notify()).body) == "closed"


async def test_unsubscribe_terminates_the_subscription(
        frontend: FrontEnd, make_ua: MakeUA) -> None:
    bob: UserAgent = await make_ua("bob")
    subscription, _ = await bob.subscribe(ALICE)
    await subscription.next_notify()
    response = await subscription.unsubscribe()
    assert response.status == 200
    final = await subscription.next_notify()
    assert (final.headers.get("Subscription-State") or "").startswith("terminated")
    assert frontend.server.presence.watches == {}


async def test_subscribing_to_an_unknown_user_is_404(
        frontend: FrontEnd, make_ua: MakeUA) -> None:
    bob: UserAgent = await make_ua("bob")
    _, response = await bob.subscribe(f"sip:nobody@{DOMAIN}")
    assert response.status == 404


async def test_publish_refresh_with_unknown_etag_is_412(
        frontend: FrontEnd, make_ua: MakeUA) -> None:
    alice: UserAgent = await make_ua("alice")
    request = alice.new_request("PUBLISH", alice.aor)
    request.headers.add("Event", "presence")
    request.headers.add("Expires", "600")
    request.headers.add("SIP-If-Match", "not-an-etag")
    response = await alice.send(request)
    assert response.status == 412


async def test_a_client_whose_etag_is_unknown_publishes_afresh(
        frontend: FrontEnd, make_ua: MakeUA) -> None:
    """RFC 3903 §4.1: after 412 the client publishes its state without SIP-If-Match
    (what a client does when its pool failed over and the entity tag did not follow)."""
    alice: UserAgent = await make_ua("alice")
    alice._publish_etag = "not-an-etag"
    response = await alice.publish(basic_pidf(str(alice.aor), "open", "back"))
    assert response.status == 200 and response.headers.get("SIP-ETag")


async def test_publishing_someone_elses_presence_is_forbidden(
        frontend: FrontEnd, make_ua: MakeUA) -> None:
    alice: UserAgent = await make_ua("alice")
    request = alice.new_request("PUBLISH", BOB)
    request.headers.add("Event", "presence")
    request.headers.add("Content-Type", "application/pidf+xml")
    request.body = basic_pidf(BOB, "open")
    assert (await alice.send(request)).status == 403


async def test_contact_list_is_private_to_its_owner(frontend: FrontEnd) -> None:
    await befriend(frontend, ALICE, BOB)
    intruder = XcapClient(frontend.admin_url, ALICE, "bob", password_of("bob"))
    try:
        await intruder.get()
    except XcapError as exc:
        assert exc.status == 403
    else:
        raise AssertionError("bob read alice's contact list")
    own = XcapClient(frontend.admin_url, ALICE, "alice", password_of("alice"))
    assert (await own.get()).has_contact(BOB)
