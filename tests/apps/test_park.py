"""Call Park with real processes (SPEC APP-1, APP-2): an Enterprise pool of two Front
End servers; the parker, the parked party and the retriever are signed in on different
servers. Parked calls hear music on hold, time out after 2 s and ring the parker back
twice (1.5 s each), then the operator."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.apps.parkdeploy import ParkPool, apps, connect, running_pool, sdp
from tests.integration.drpair import DOMAIN, wait_for
from trimaran.apps.audio import read_wav, wav_bytes
from trimaran.apps.park import ParkedCall, ParkError, ParkState
from trimaran.client.dialogs import CallFailed, CallState
from trimaran.client.park import ParkFailed, park, refer_to

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(not Path("/usr/lib/postgresql").exists(),
                       reason="PostgreSQL server binaries missing (Debian package postgresql)"),
]

SERVERS = {"fe1a": "127.0.31.1", "fe1b": "127.0.31.2"}
DB = "127.0.31.21"
CLIENTS = ("127.0.31.31", "127.0.31.32", "127.0.31.33", "127.0.31.34")
USERS = ["alice", "bob", "carol", "operator"]
TIMEOUT, RING_BACK = 2.0, 1.5
A_SDP, B_SDP, C_SDP, O_SDP = (sdp(CLIENTS[i], 40000 + 2 * i) for i in range(4))
MUSIC = wav_bytes(bytes(range(256)) * 8)       # 0.256 s of µ-law, played over and over
APPS = apps(timeout=TIMEOUT, ring_back=RING_BACK, attempts=2,
            timeout_uri=f"sip:operator@{DOMAIN}", members=("alice", "bob"),
            music=hashlib.sha256(MUSIC).hexdigest())


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ParkPool]:
    with running_pool(tmp_path_factory.mktemp("park"), name="park", servers=SERVERS, db=DB,
                      clients=CLIENTS, users=USERS, apps_yaml=APPS,
                      audio=(MUSIC,)) as pool:
        yield pool


@pytest.fixture
async def pool(deployment: ParkPool) -> AsyncIterator[ParkPool]:
    try:
        yield deployment
    finally:
        await deployment.close_phones()


async def _orbits_free(pool: ParkPool) -> bool:
    return not pool.app_status("fe1a", "park")["parked"]


async def test_app1_a_call_parked_on_one_server_is_retrieved_from_the_other(
        pool: ParkPool) -> None:
    """APP-1: alice (fe1a) parks bob (fe1b): alice's call ends, bob's phone now holds a
    call with the park service; carol (fe1b) dials the orbit and is connected to bob
    (both calls established; a BYE from one ends the other)."""
    alice, bob = await pool.sign_in("alice", "fe1a"), await pool.sign_in("bob", "fe1b")
    carol = await pool.sign_in("carol", "fe1b")
    call, bobs = await connect(alice, bob, A_SDP, B_SDP)

    orbit = await park(alice, call)

    assert orbit == "*7000"
    await call.wait_ended()
    await bobs.wait_ended()
    parked = await asyncio.wait_for(bob.incoming_calls.get(), 5)
    assert parked.state is CallState.ESTABLISHED
    assert parked.remote_body != A_SDP                 # the park service's SDP now
    parked_calls = pool.app_status("fe1a", "park")["parked"]
    assert isinstance(parked_calls, list) and len(parked_calls) == 1
    entry = parked_calls[0]
    assert entry["orbit"] == orbit and entry["parker"] == f"sip:alice@{DOMAIN}"
    assert entry["party"] == f"sip:bob@{DOMAIN}" and entry["state"] == "parked"

    retrieved = await carol.invite(f"sip:{orbit}@{DOMAIN};user=phone", C_SDP)

    assert retrieved.state is CallState.ESTABLISHED
    assert parked.state is CallState.ESTABLISHED
    await wait_for(lambda: _orbits_free(pool), 5, "the orbit free again")
    await retrieved.bye()
    await parked.wait_ended()
    assert parked.end_reason == "remote BYE"


async def test_app1_the_retrieved_party_hanging_up_ends_the_retrievers_call(
        pool: ParkPool) -> None:
    """APP-1: the bridge relays BYE both ways (here from the parked party)."""
    alice, bob = await pool.sign_in("alice", "fe1b"), await pool.sign_in("bob", "fe1a")
    carol = await pool.sign_in("carol", "fe1a")
    bobs, alices = await connect(bob, alice, B_SDP, A_SDP)    # bob called alice this time
    orbit = await park(alice, alices)
    parked = await asyncio.wait_for(bob.incoming_calls.get(), 5)
    await bobs.wait_ended()
    assert parked.remote_body != A_SDP

    retrieved = await carol.invite(f"sip:{orbit}@{DOMAIN};user=phone", C_SDP)
    await parked.bye()

    await retrieved.wait_ended()


async def test_app1_an_orbit_with_nothing_parked_is_404_with_the_reason(
        pool: ParkPool) -> None:
    """APP-1: calling an empty orbit fails at once, saying why."""
    carol = await pool.sign_in("carol", "fe1b")

    with pytest.raises(CallFailed) as failed:
        await carol.invite(f"sip:*7005@{DOMAIN};user=phone", C_SDP)

    assert failed.value.status == 404
    assert "*7005" in failed.value.reason


async def test_app1_timeout_rings_the_parker_back_who_answers_and_is_connected(
        pool: ParkPool) -> None:
    """APP-1: parked longer than the timeout, the call rings the parker back; the parker
    answers and is connected with the parked party."""
    alice, bob = await pool.sign_in("alice", "fe1a"), await pool.sign_in("bob", "fe1b")
    call, _ = await connect(alice, bob, A_SDP, B_SDP)
    await park(alice, call)
    parked = await asyncio.wait_for(bob.incoming_calls.get(), 5)

    ring_back = await asyncio.wait_for(alice.incoming_calls.get(), TIMEOUT + 5)
    assert ring_back.remote_body == B_SDP            # the parked party's SDP is offered
    await ring_back.answer(A_SDP)

    await wait_for(lambda: _orbits_free(pool), 5, "the orbit free again")
    assert parked.state is CallState.ESTABLISHED
    await ring_back.bye()
    await parked.wait_ended()


async def test_app1_unanswered_ring_backs_send_the_call_to_the_timeout_uri(
        pool: ParkPool) -> None:
    """APP-1: with max_pickup_attempts 2, the parker rings twice, unanswered; then the
    operator (timeout_uri) is called, answers, and is connected with the parked party."""
    alice, bob = await pool.sign_in("alice", "fe1b"), await pool.sign_in("bob", "fe1a")
    operator = await pool.sign_in("operator", "fe1b")
    call, _ = await connect(alice, bob, A_SDP, B_SDP)
    await park(alice, call)
    parked = await asyncio.wait_for(bob.incoming_calls.get(), 5)

    for attempt in range(2):
        ring = await asyncio.wait_for(alice.incoming_calls.get(), TIMEOUT + RING_BACK + 5)
        await ring.wait_ended(RING_BACK + 5)           # cancelled: nobody answered
        assert ring.end_reason == "cancelled", attempt
    offered = await asyncio.wait_for(operator.incoming_calls.get(), 5)
    await offered.answer(O_SDP)

    await wait_for(lambda: _orbits_free(pool), 5, "the orbit free again")
    assert alice.incoming_calls.empty()
    await offered.bye()
    await parked.wait_ended()
    stats = pool.app_status("fe1a", "park")["stats"]
    assert isinstance(stats, dict) and stats["timeout_uri"] >= 1


class _Rtp(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.packets: list[bytes] = []

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        self.packets.append(data)


async def test_app1_the_parked_party_hears_music_on_hold_until_retrieved(
        pool: ParkPool) -> None:
    """APP-1: the pool's music on hold is sent (RTP, PCMU) to the parked party's media
    address while parked, and stops when the call is retrieved."""
    loop = asyncio.get_running_loop()
    transport, rtp = await loop.create_datagram_endpoint(_Rtp, local_addr=(CLIENTS[1], 40002))
    try:
        alice, bob = await pool.sign_in("alice", "fe1a"), await pool.sign_in("bob", "fe1b")
        carol = await pool.sign_in("carol", "fe1a")
        call, _ = await connect(alice, bob, A_SDP, B_SDP)
        orbit = await park(alice, call)

        async def heard() -> bool:
            return len(rtp.packets) >= 10
        await wait_for(heard, 3, "music on hold at the parked party")
        assert all(p[1] & 0x7F == 0 for p in rtp.packets)      # payload type 0 (PCMU)
        assert rtp.packets[0][12:] == read_wav(MUSIC).ulaw[:160]  # the file's first 20 ms
        await carol.invite(f"sip:{orbit}@{DOMAIN};user=phone", C_SDP)
        await asyncio.sleep(0.1)                               # a packet already in flight
        count = len(rtp.packets)
        await asyncio.sleep(0.3)
        assert len(rtp.packets) == count
    finally:
        transport.close()


async def test_app1_a_party_that_does_not_take_the_call_fails_the_park(
        pool: ParkPool) -> None:
    """APP-1: when the party's phone refuses to replace the call (here: it lost the call,
    481), the parker is told (the REFER's NOTIFY), keeps the call, and the orbit is free."""
    alice, bob = await pool.sign_in("alice", "fe1a"), await pool.sign_in("bob", "fe1b")
    call, _ = await connect(alice, bob, A_SDP, B_SDP)
    bob.calls.clear()                                # bob's phone forgot the call

    with pytest.raises(ParkFailed) as failed:
        await park(alice, call)

    assert failed.value.status == 481
    assert call.state is CallState.ESTABLISHED
    assert await _orbits_free(pool)


async def test_app1_a_retrieval_while_the_parker_is_rung_back_wins(pool: ParkPool) -> None:
    """APP-1: the orbit is still retrievable while the parker is rung back; retrieving
    cancels the ring-back."""
    alice, bob = await pool.sign_in("alice", "fe1a"), await pool.sign_in("bob", "fe1b")
    carol = await pool.sign_in("carol", "fe1b")
    call, _ = await connect(alice, bob, A_SDP, B_SDP)
    orbit = await park(alice, call)
    parked = await asyncio.wait_for(bob.incoming_calls.get(), 5)
    ring_back = await asyncio.wait_for(alice.incoming_calls.get(), TIMEOUT + 5)

    retrieved = await carol.invite(f"sip:{orbit}@{DOMAIN};user=phone", C_SDP)

    await ring_back.wait_ended()
    assert ring_back.end_reason == "cancelled"
    await retrieved.bye()
    await parked.wait_ended()


def test_app1_a_parked_call_moves_only_as_the_table_says() -> None:
    """APP-1: the parked-call state table; an impossible move names both states."""
    parked = ParkedCall("*7000", "fe1", "sip:a@x", "sip:b@x", 0.0)
    for state in (ParkState.PARKED, ParkState.RINGING_BACK, ParkState.TAKEN,
                  ParkState.PARKED, ParkState.TAKEN, ParkState.ENDED):
        parked.move(state)
    with pytest.raises(ParkError, match="from ended to parked"):
        parked.move(ParkState.PARKED)


def test_app1_refer_to_names_the_other_party_and_the_call_as_it_sees_it() -> None:
    """APP-1 (RFC 3891 §3): to-tag is the other party's tag, from-tag ours."""
    from trimaran.client.dialogs import Call
    from trimaran.sip.dialog import Dialog, DialogId
    from trimaran.sip.headers import NameAddr
    from trimaran.sip.uri import URI
    dialog = Dialog(DialogId("abc@host", "mine", "theirs"), NameAddr.parse("<sip:a@x>"),
                    NameAddr.parse("<sip:b@x;user=phone>;tag=theirs"), URI.parse("sip:b@h"))
    call = Call(ua=None, call_id="abc@host", outgoing=True, dialog=dialog)  # type: ignore[arg-type]

    assert refer_to(call) == ("<sip:b@x;user=phone?Replaces=abc%40host%3Bto-tag%3Dtheirs"
                              "%3Bfrom-tag%3Dmine>")
