"""Backup registrar and resiliency mode between two paired Standard Edition pools run as
real processes (SPEC DR-8): no admin action when the home pool dies; its users sign in
on the backup pool in resiliency mode after the backup pool's own detection, can call
and IM users of both pools, cannot change persistent data; they go home when the home
pool is healthy again for the fallback interval; an admin failover switches them to
full mode without signing in again by hand."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.integration.drpair import DOMAIN, Node, Pair, running, se_pair, wait_for
from trimaran.client.xcap import XcapClient, XcapError
from trimaran.roles.frontend.presence import basic_pidf
from trimaran.store.model import ContactEntry, ContactList

pytestmark = pytest.mark.timeout(300)

HEARTBEAT, DETECTION, FALLBACK = 0.5, 3.0, 4.0
SE1, SE2 = Node("se1", "se1", "127.0.17.1"), Node("se2", "se2", "127.0.17.2")
TOPOLOGY = se_pair("backup-registrar", SE1, SE2, settings={
    "heartbeat_seconds": HEARTBEAT, "failure_detection_seconds": 2,
    "resiliency_failover_seconds": DETECTION, "resiliency_fallback_seconds": FALLBACK})
A_USERS, B_USERS = ["ra0", "ra1", "ra2", "ra3"], ["rb0"]
# Detection + one heartbeat + the client's retry backoff (capped at a few seconds) + slack.
SIGN_IN_BOUND = DETECTION + HEARTBEAT + 6.0


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    users = {"se1": A_USERS, "se2": B_USERS}
    async with running(tmp_path, TOPOLOGY, [SE1, SE2], users) as deployment:
        await deployment.sign_in(A_USERS, "se1")
        await deployment.sign_in(B_USERS, "se2")
        yield deployment


def all_on(pair: Pair, names: list[str], pool: str, mode: str) -> bool:
    return all(pair.on_pool(n, pool) and pair.agents[n].mode == mode for n in names)


async def _is(value: bool) -> bool:
    return value


async def test_home_pool_loss_gives_resiliency_mode_then_users_go_home(pair: Pair) -> None:
    # normal times: the backup pool sends a home pool's user home
    assert all_on(pair, A_USERS, "se1", "full")
    pair.cli("server", "kill", "se1")
    took = await wait_for(lambda: _is(all_on(pair, A_USERS, "se2", "resiliency")),
                          SIGN_IN_BOUND + 10, "se1's users in resiliency mode on se2")
    assert took <= SIGN_IN_BOUND, f"{took:.1f} s > {SIGN_IN_BOUND} s"
    print(f"resiliency sign-in after the kill: {took:.1f} s (bound {SIGN_IN_BOUND} s)")

    ra0, ra1, rb0 = (pair.agents[n] for n in ("ra0", "ra1", "rb0"))
    # IM both ways between the pools' users, and between resiliency users
    assert (await ra0.send_message(f"sip:rb0@{DOMAIN}", "from ra0")).status == 200
    assert (await asyncio.wait_for(rb0.next_message(), 5)).body == b"from ra0"
    assert (await rb0.send_message(f"sip:ra1@{DOMAIN}", "from rb0")).status == 200
    assert (await asyncio.wait_for(ra1.next_message(), 5)).body == b"from rb0"
    # a call from the backup pool's user to a resiliency user
    call = rb0.start_call(f"sip:ra0@{DOMAIN}", b"v=0\r\n")
    incoming = await asyncio.wait_for(ra0.incoming_calls.get(), 5)
    await incoming.answer(b"v=0\r\n")
    assert (await rb0.wait_answer(call)).status == 200
    assert (await call.bye()).status == 200
    # persistent changes are refused with the reason
    client = XcapClient(SE2.base, f"sip:ra0@{DOMAIN}", "ra0", "ra0-pw")
    with pytest.raises(XcapError) as refused:
        await client.put(ContactList(f"sip:ra0@{DOMAIN}", (), (ContactEntry("sip:x@y"),)))
    assert refused.value.status == 503 and "resiliency" in str(refused.value)
    presence = await ra1.publish(basic_pidf(f"sip:ra1@{DOMAIN}", "open", "away"))
    assert presence.status == 503 and "resiliency" in presence.reason

    # home pool back: after the fallback interval everybody is home in full mode
    pair.cli("server", "start", "se1")
    back_at = time.monotonic()
    await wait_for(lambda: _is(all_on(pair, A_USERS, "se1", "full")), FALLBACK + 20,
                   "se1's users back home in full mode")
    took = time.monotonic() - back_at
    assert took >= FALLBACK - 1.0      # not before the fallback interval (no flapping)
    print(f"home again {took:.1f} s after se1 started (fallback {FALLBACK} s)")


async def test_admin_failover_during_resiliency_gives_full_mode_without_new_sign_in(
        pair: Pair) -> None:
    pair.cli("server", "kill", "se1")
    await wait_for(lambda: _is(all_on(pair, A_USERS, "se2", "resiliency")),
                   SIGN_IN_BOUND + 10, "resiliency mode on se2")
    pair.cli("cms", "failover", "--disaster")
    pair.cli("pool", "failover", "se1", "--disaster")
    await wait_for(lambda: _is(all_on(pair, A_USERS, "se2", "full")), 20,
                   "full mode on se2 without a manual sign-in")
    client = XcapClient(SE2.base, f"sip:ra2@{DOMAIN}", "ra2", "ra2-pw")
    assert await client.put(ContactList(f"sip:ra2@{DOMAIN}", (),
                                        (ContactEntry("sip:x@y"),))) in (200, 201)
