"""Registrar of the Standard Edition Front End (RFC 3261 §10.3, RFC 5626 instance ids)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from tests.frontend.conftest import DOMAIN, FrontEnd
from trimaran.client.ua import UserAgent

MakeUA = Callable[..., Any]
ALICE = f"sip:alice@{DOMAIN}"


async def test_register_with_digest_creates_a_binding_in_the_store(
        frontend: FrontEnd, make_ua: MakeUA) -> None:
    alice: UserAgent = await make_ua("alice")
    bindings = await frontend.store.bindings.for_aor(ALICE, now=time.time())
    assert len(bindings) == 1
    assert bindings[0].server == "se1"
    assert bindings[0].instance_id == f"<{alice.config.instance_id}>"
    assert bindings[0].flow_id.startswith("tcp:")


async def test_sha256_and_md5_are_both_offered_sha256_first(
        frontend: FrontEnd, make_ua: MakeUA) -> None:
    alice: UserAgent = await make_ua("alice", register=False)
    request = alice.register_request(600)
    response = await alice.endpoint.request(request, alice.server)
    assert response.status == 401
    algorithms = [v.split("algorithm=")[1].split(",")[0]
                  for v in response.headers.get_all("WWW-Authenticate")]
    assert algorithms == ["SHA-256", "MD5"]


async def test_wrong_password_and_unknown_user_are_refused_alike(
        frontend: FrontEnd, make_ua: MakeUA) -> None:
    wrong: UserAgent = await make_ua("alice", password="nope", register=False)
    unknown: UserAgent = await make_ua("mallory", password="nope", register=False)
    first = await wrong.register()
    second = await unknown.register()
    assert first.status == second.status == 401
    assert first.reason == second.reason
    assert await frontend.store.bindings.for_aor(ALICE, now=time.time()) == []


async def test_several_devices_of_one_user_are_all_bound(
        frontend: FrontEnd, make_ua: MakeUA) -> None:
    await make_ua("alice")
    await make_ua("alice", "udp")
    phone: UserAgent = await make_ua("alice")
    contacts = await phone.fetch_bindings()
    assert len(contacts) == 3
    assert all(c.param("expires") for c in contacts)


async def test_same_instance_replaces_its_old_binding(
        frontend: FrontEnd, make_ua: MakeUA) -> None:
    instance = "urn:uuid:11111111-2222-3333-4444-555555555555"
    first: UserAgent = await make_ua("alice", instance_id=instance)
    await make_ua("alice", instance_id=instance)
    bindings = await frontend.store.bindings.for_aor(ALICE, now=time.time())
    assert len(bindings) == 1
    assert str(first.contact().uri) != bindings[0].contact  # the newer device won


async def test_too_short_expiry_gets_423_with_min_expires(
        frontend: FrontEnd, make_ua: MakeUA) -> None:
    alice: UserAgent = await make_ua("alice")
    response = await alice.send(alice.register_request(5))
    assert response.status == 423
    assert response.headers.get("Min-Expires") == "60"


async def test_expiry_is_capped_and_refresh_extends_it(
        frontend: FrontEnd, make_ua: MakeUA) -> None:
    alice: UserAgent = await make_ua("alice", register=False)
    response = await alice.register(7200)
    assert response.status == 200
    granted = int(response.contacts[0].param("expires") or 0)
    assert 3590 <= granted <= 3600
    before = (await frontend.store.bindings.for_aor(ALICE, now=time.time()))[0].expires_at
    await alice.register(3000)
    after = (await frontend.store.bindings.for_aor(ALICE, now=time.time()))[0]
    assert after.expires_at < before  # replaced by the shorter refresh, same binding
    assert len(await frontend.store.bindings.for_aor(ALICE, now=time.time())) == 1


async def test_unregister_removes_the_binding(frontend: FrontEnd, make_ua: MakeUA) -> None:
    alice: UserAgent = await make_ua("alice")
    await make_ua("alice", "udp")
    response = await alice.unregister()
    assert response.status == 200
    assert len(await frontend.store.bindings.for_aor(ALICE, now=time.time())) == 1


async def test_star_contact_removes_every_binding(frontend: FrontEnd, make_ua: MakeUA) -> None:
    alice: UserAgent = await make_ua("alice")
    await make_ua("alice", "udp")
    request = alice.register_request(0)
    request.headers.remove("Contact")
    request.headers.add("Contact", "*")
    response = await alice.send(request)
    assert response.status == 200
    assert await frontend.store.bindings.for_aor(ALICE, now=time.time()) == []


async def test_star_contact_without_expires_zero_is_a_bad_request(
        frontend: FrontEnd, make_ua: MakeUA) -> None:
    alice: UserAgent = await make_ua("alice")
    request = alice.register_request(600)
    request.headers.remove("Contact")
    request.headers.add("Contact", "*")
    assert (await alice.send(request)).status == 400


async def test_closing_an_outbound_flow_drops_its_binding(
        frontend: FrontEnd, make_ua: MakeUA) -> None:
    # RFC 5626 §5.2: a binding registered over a flow dies with the flow.
    alice: UserAgent = await make_ua("alice", reregister_on_flow_loss=False)
    await alice.close()
    deadline = time.monotonic() + 5
    while await frontend.store.bindings.for_aor(ALICE, now=time.time()):
        assert time.monotonic() < deadline, "binding of the closed flow still present"
        await asyncio.sleep(0.05)
