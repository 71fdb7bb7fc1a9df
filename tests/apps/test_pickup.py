"""Group call pickup with real processes (SPEC APP-6, EV-7): an Enterprise pool of two
Front End servers; pickup group *8001 has members mia and max. A call from carl rings
mia on one server; max, on the other, picks it up. The last test stops the Back End."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.apps.parkdeploy import ParkPool, apps, connect, running_pool, sdp
from tests.integration.drpair import DOMAIN, wait_for
from trimaran.client.dialogs import CallFailed, CallState
from trimaran.client.park import ParkFailed, park

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(not Path("/usr/lib/postgresql").exists(),
                       reason="PostgreSQL server binaries missing (Debian package postgresql)"),
]

SERVERS = {"fe1a": "127.0.31.11", "fe1b": "127.0.31.12"}
DB = "127.0.31.22"
CLIENTS = ("127.0.31.41", "127.0.31.42", "127.0.31.43", "127.0.31.44")
USERS = ["mia", "max", "carl", "nina"]
GROUP = f"sip:*8001@{DOMAIN};user=phone"
APPS = apps(timeout=60, ring_back=20, attempts=1, timeout_uri=f"sip:nina@{DOMAIN}",
            members=("mia", "max"))
CARL_SDP, MIA_SDP, MAX_SDP, NINA_SDP = (sdp(CLIENTS[i], 41000 + 2 * i) for i in range(4))


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ParkPool]:
    with running_pool(tmp_path_factory.mktemp("pickup"), name="pickup", servers=SERVERS,
                      db=DB, clients=CLIENTS, users=USERS, apps_yaml=APPS) as pool:
        yield pool


@pytest.fixture
async def pool(deployment: ParkPool) -> AsyncIterator[ParkPool]:
    try:
        yield deployment
    finally:
        await deployment.close_phones()


async def test_app6_a_member_picks_up_a_call_ringing_another_member_on_the_other_server(
        pool: ParkPool) -> None:
    """APP-6: carl's call rings mia (fe1a); max (fe1b) dials the group number and is
    connected to carl with each other's SDP; mia's phone stops ringing (its INVITE is
    cancelled); a BYE from one ends the other."""
    mia, max_ = await pool.sign_in("mia", "fe1a"), await pool.sign_in("max", "fe1b")
    carl = await pool.sign_in("carl", "fe1b")
    call = carl.start_call(str(mia.aor), CARL_SDP)
    ringing = await asyncio.wait_for(mia.incoming_calls.get(), 5)

    picked = await max_.invite(GROUP, MAX_SDP)

    assert picked.remote_body == CARL_SDP
    await asyncio.wait_for(carl.wait_answer(call), 5)
    assert call.remote_body == MAX_SDP
    await ringing.wait_ended()
    assert ringing.end_reason == "cancelled"
    await call.bye()
    await picked.wait_ended()
    stats = pool.app_status("fe1a", "pickup")["stats"]
    assert isinstance(stats, dict) and stats["picked_up"] == 1


async def test_app6_the_oldest_ringing_call_is_picked_up_first(pool: ParkPool) -> None:
    """APP-6: two calls ring mia (from carl, then nina): a pickup takes carl's."""
    mia, max_ = await pool.sign_in("mia", "fe1b"), await pool.sign_in("max", "fe1a")
    carl, nina = await pool.sign_in("carl", "fe1b"), await pool.sign_in("nina", "fe1b")
    first = carl.start_call(str(mia.aor), CARL_SDP)
    await asyncio.wait_for(mia.incoming_calls.get(), 5)
    second = nina.start_call(str(mia.aor), NINA_SDP)
    still_ringing = await asyncio.wait_for(mia.incoming_calls.get(), 5)

    picked = await max_.invite(GROUP, MAX_SDP)

    assert picked.remote_body == CARL_SDP
    await asyncio.wait_for(carl.wait_answer(first), 5)
    assert still_ringing.state is CallState.RINGING
    await still_ringing.reject(486)
    with pytest.raises(CallFailed):
        await asyncio.wait_for(nina.wait_answer(second), 5)
    await picked.bye()
    await first.wait_ended()


async def test_app6_a_non_member_is_refused_403(pool: ParkPool) -> None:
    """APP-6: only members of the group may pick up its calls."""
    mia, nina = await pool.sign_in("mia", "fe1a"), await pool.sign_in("nina", "fe1b")
    carl = await pool.sign_in("carl", "fe1a")
    call = carl.start_call(str(mia.aor), CARL_SDP)
    ringing = await asyncio.wait_for(mia.incoming_calls.get(), 5)

    with pytest.raises(CallFailed) as failed:
        await nina.invite(GROUP, NINA_SDP)

    assert failed.value.status == 403
    assert ringing.state is CallState.RINGING
    await ringing.answer(MIA_SDP)
    await asyncio.wait_for(carl.wait_answer(call), 5)


async def test_app6_nothing_ringing_is_480_nothing_to_pick_up(pool: ParkPool) -> None:
    """APP-6: a member dialling the group number with no call ringing another member."""
    max_ = await pool.sign_in("max", "fe1b")

    with pytest.raises(CallFailed) as failed:
        await max_.invite(GROUP, MAX_SDP)

    assert failed.value.status == 480
    assert failed.value.reason == "Nothing to pick up"


async def test_app6_a_call_answered_by_its_callee_is_not_picked_up(pool: ParkPool) -> None:
    """APP-6: an established call is not ringing any more."""
    mia, max_ = await pool.sign_in("mia", "fe1a"), await pool.sign_in("max", "fe1b")
    carl = await pool.sign_in("carl", "fe1a")
    await connect(carl, mia, CARL_SDP, MIA_SDP)

    with pytest.raises(CallFailed) as failed:
        await max_.invite(GROUP, MAX_SDP)

    assert failed.value.status == 480


async def test_ev7_pickup_and_park_are_refused_in_resiliency_mode_with_the_reason(
        pool: ParkPool) -> None:
    """EV-7 / APP-6: with the Back End stopped the servers run in resiliency mode, where
    group pickup and call park are not available: refused 503, saying why."""
    mia, max_ = await pool.sign_in("mia", "fe1a"), await pool.sign_in("max", "fe1b")
    carl = await pool.sign_in("carl", "fe1b")
    pool.cli("db", "stop", "fe1")

    async def resiliency() -> bool:
        return all(pool.status(s).get("mode") == "resiliency" for s in SERVERS)
    await wait_for(resiliency, 20, "resiliency mode on both servers")
    call = carl.start_call(str(mia.aor), CARL_SDP)
    ringing = await asyncio.wait_for(mia.incoming_calls.get(), 5)

    with pytest.raises(CallFailed) as failed:
        await max_.invite(GROUP, MAX_SDP)

    assert failed.value.status == 503
    assert "pickup" in failed.value.reason.lower()
    assert "resiliency mode" in failed.value.reason
    await ringing.answer(MIA_SDP)
    await asyncio.wait_for(carl.wait_answer(call), 5)
    with pytest.raises(ParkFailed) as refused:
        await park(carl, call)
    assert refused.value.status == 503
    assert "park" in refused.value.reason.lower()
