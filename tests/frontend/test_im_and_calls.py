"""IM (RFC 3428) and calls through the Front End's stateful forking proxy (RFC 3261 §16)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from tests.frontend.conftest import DOMAIN, FrontEnd
from trimaran.client.dialogs import CallFailed, CallState
from trimaran.client.ua import UserAgent

MakeUA = Callable[..., Any]
ALICE, BOB, CAROL = (f"sip:{n}@{DOMAIN}" for n in ("alice", "bob", "carol"))


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_message_reaches_every_device_of_the_recipient(
        frontend: FrontEnd, make_ua: MakeUA, transport: str) -> None:
    alice: UserAgent = await make_ua("alice", transport)
    desk: UserAgent = await make_ua("bob", "tcp")
    mobile: UserAgent = await make_ua("bob", "udp")
    response = await alice.send_message(BOB, "hello bob")
    assert response.status == 200
    for device in (desk, mobile):
        message = await device.next_message()
        assert message.body == b"hello bob"
        assert message.from_.uri.aor == ALICE


async def test_message_to_an_offline_user_is_480(frontend: FrontEnd, make_ua: MakeUA) -> None:
    alice: UserAgent = await make_ua("alice")
    assert (await alice.send_message(CAROL, "are you there?")).status == 480


async def test_message_to_an_unknown_user_is_404(frontend: FrontEnd, make_ua: MakeUA) -> None:
    alice: UserAgent = await make_ua("alice")
    assert (await alice.send_message(f"sip:nobody@{DOMAIN}", "hi")).status == 404


async def test_unauthenticated_message_is_challenged_and_not_relayed(
        frontend: FrontEnd, make_ua: MakeUA) -> None:
    bob: UserAgent = await make_ua("bob")
    stranger: UserAgent = await make_ua("alice", password="guess", register=False)
    response = await stranger.send_message(BOB, "spam")
    assert response.status == 407
    assert bob.messages.empty()
    # and a message that has been delivered would have arrived by now: prove the path works
    alice: UserAgent = await make_ua("alice")
    assert (await alice.send_message(BOB, "real")).status == 200
    assert (await bob.next_message()).body == b"real"
    assert bob.messages.empty()


async def test_sender_cannot_claim_another_users_identity(
        frontend: FrontEnd, make_ua: MakeUA) -> None:
    bob: UserAgent = await make_ua("bob")
    # mallory knows alice's password but claims to be carol in From
    mallory: UserAgent = await make_ua("carol", password="alice-secret-pw", register=False,
                                       username="alice")
    assert (await mallory.send_message(BOB, "it's carol, honest")).status == 403
    assert bob.messages.empty()


async def test_relaying_to_another_domain_is_refused(frontend: FrontEnd, make_ua: MakeUA) -> None:
    alice: UserAgent = await make_ua("alice")
    assert (await alice.send_message("sip:someone@elsewhere.example", "relay me")).status == 403


@pytest.mark.parametrize(("caller_transport", "callee_transport"),
                         [("udp", "udp"), ("tcp", "tcp"), ("udp", "tcp")])
async def test_call_between_registered_users(
        frontend: FrontEnd, make_ua: MakeUA, caller_transport: str,
        callee_transport: str) -> None:
    alice: UserAgent = await make_ua("alice", caller_transport)
    bob: UserAgent = await make_ua("bob", callee_transport)
    pending = alice.start_call(BOB, b"v=0\r\no=alice\r\n")
    incoming = await asyncio.wait_for(bob.incoming_calls.get(), 5)
    assert incoming.remote_body == b"v=0\r\no=alice\r\n"
    await incoming.answer(b"v=0\r\no=bob\r\n")
    await alice.wait_answer(pending)
    assert pending.state is CallState.ESTABLISHED
    assert pending.dialog is not None and pending.dialog.route_set, "server Record-Routes"
    await asyncio.wait_for(incoming.acked.wait(), 5)
    # the callee hangs up: its BYE follows the route set back through the server
    await incoming.bye()
    await pending.wait_ended()
    assert pending.end_reason == "remote BYE"


async def test_forked_call_answered_on_one_device_cancels_the_other(
        frontend: FrontEnd, make_ua: MakeUA) -> None:
    alice: UserAgent = await make_ua("alice")
    desk: UserAgent = await make_ua("bob", "tcp")
    mobile: UserAgent = await make_ua("bob", "udp")
    pending = alice.start_call(BOB)
    desk_call = await asyncio.wait_for(desk.incoming_calls.get(), 5)
    mobile_call = await asyncio.wait_for(mobile.incoming_calls.get(), 5)
    await desk_call.answer()
    await alice.wait_answer(pending)
    await mobile_call.wait_ended()
    assert mobile_call.end_reason == "cancelled"
    response = await pending.bye()
    assert response.status == 200
    await desk_call.wait_ended()


async def test_caller_cancel_while_ringing_gives_487(frontend: FrontEnd, make_ua: MakeUA) -> None:
    alice: UserAgent = await make_ua("alice")
    bob: UserAgent = await make_ua("bob")
    pending = alice.start_call(BOB)
    ringing = await asyncio.wait_for(bob.incoming_calls.get(), 5)
    deadline = asyncio.get_running_loop().time() + 5
    while 180 not in pending.provisional:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)
    await pending.cancel()
    with pytest.raises(CallFailed) as failure:
        await alice.wait_answer(pending)
    assert failure.value.status == 487
    await ringing.wait_ended()


async def test_rejected_call_reports_the_callees_answer(
        frontend: FrontEnd, make_ua: MakeUA) -> None:
    alice: UserAgent = await make_ua("alice")
    bob: UserAgent = await make_ua("bob")
    pending = alice.start_call(BOB)
    incoming = await asyncio.wait_for(bob.incoming_calls.get(), 5)
    await incoming.reject(486)
    with pytest.raises(CallFailed) as failure:
        await alice.wait_answer(pending)
    assert failure.value.status == 486


async def test_call_to_offline_user_is_480(frontend: FrontEnd, make_ua: MakeUA) -> None:
    alice: UserAgent = await make_ua("alice")
    with pytest.raises(CallFailed) as failure:
        await alice.invite(CAROL)
    assert failure.value.status == 480


async def test_in_dialog_request_with_a_forged_route_is_refused(
        frontend: FrontEnd, make_ua: MakeUA) -> None:
    alice: UserAgent = await make_ua("alice")
    host, port = frontend.server.sip_address
    request = alice.new_request("BYE", "sip:victim@127.0.0.1:9")
    request.headers.set("To", "<sip:victim@127.0.0.1>;tag=x")
    request.headers.add("Route", f"<sip:{host}:{port};lr;rrt=forged>")
    assert (await alice.send(request)).status == 403
