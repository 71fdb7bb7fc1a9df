"""Unassigned numbers and announcements as real processes (SPEC APP-5): a Standard
Edition pool runs the application; users call numbers of unassigned ranges. With an
announcement the call is answered and the audio arrives as paced PCMU RTP at the
caller's SDP address, then the application hangs up or forwards the call to another
user; without one, the call is forwarded unanswered, or refused 404 naming the range."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.apps.rtp_receiver import RtpReceiver
from tests.integration.drpair import DOMAIN, wait_for
from tests.voice.deployment import Voice, running_voice
from trimaran.apps.audio import FRAME_SAMPLES, wav_bytes
from trimaran.apps.rtp import offer_address
from trimaran.client.dialogs import CallFailed, CallState
from trimaran.client.ua import UAConfig, UserAgent
from trimaran.net.transport import Address

pytestmark = pytest.mark.timeout(180)

FE_ADDRESS = "127.0.33.1"
FE = Address("tcp", FE_ADDRESS, 5060)
MEDIA_HOST = "127.0.33.100"
PHONES = {"alice": "127.0.33.51", "bob": "127.0.33.52"}
SAMPLES = bytes((i * 7) % 256 for i in range(7990))     # ~1 s: 50 packets, the last padded
PACKETS = -(-len(SAMPLES) // FRAME_SAMPLES)
TOPOLOGY = f"""
name: announcements
sip_domain: {DOMAIN}
sites:
  - name: dc1
pools:
  - name: fe1
    site: dc1
    role: frontend
    edition: standard
    servers: [{{name: fe1a, address: {FE_ADDRESS}}}]
"""
APPS = """
audio:
  - {{name: vacant, sha256: "{sha}"}}
unassigned:
  - name: vacant-hang-up
    pool: fe1
    numbers: {{first: "+14255559000", last: "+14255559099"}}
    announcement: vacant
    then: {{action: disconnect}}
  - name: vacant-to-bob
    pool: fe1
    numbers: {{first: "+14255559100", last: "+14255559199"}}
    announcement: vacant
    then: {{action: forward, target: "sip:bob@{domain}"}}
  - name: retired-numbers
    pool: fe1
    numbers: {{first: "+14255559200", last: "+14255559299"}}
  - name: straight-to-bob
    pool: fe1
    numbers: {{first: "+14255559300", last: "+14255559399"}}
    then: {{action: forward, target: "+14255550102"}}
"""
SDP = (f"v=0\r\no=- 1 1 IN IP4 {MEDIA_HOST}\r\ns=-\r\nc=IN IP4 {MEDIA_HOST}\r\nt=0 0\r\n"
       f"m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n").encode()
BOB_SDP = SDP.replace(b"40000", b"40002")


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Voice]:
    """fe1 up; the announcement stored and the ranges published; alice and bob added."""
    tmp: Path = tmp_path_factory.mktemp("announce")
    with running_voice(tmp, TOPOLOGY) as voice:
        wav = tmp / "vacant.wav"
        wav.write_bytes(wav_bytes(SAMPLES))
        sha = voice.cli("apps", "audio", "add", str(wav)).strip()
        apps = tmp / "apps.yaml"
        apps.write_text(APPS.format(sha=sha, domain=DOMAIN))
        voice.cli("apps", "publish", str(apps))
        voice.add_user("alice", "fe1", "+14255550101")
        voice.add_user("bob", "fe1", "+14255550102")
        yield voice


@pytest.fixture
async def voice(deployment: Voice) -> AsyncIterator[Voice]:
    """alice and bob signed in, and the ranges known to the application server."""
    try:
        for name, host in PHONES.items():
            await _sign_in(deployment, name, host)
        await wait_for(lambda: _published(deployment), 15, "the ranges on fe1a")
        yield deployment
    finally:
        await deployment.close()


async def _sign_in(voice: Voice, name: str, host: str) -> None:
    """`name`'s phone, on an address of ours, registered with fe1a."""
    ua = UserAgent(UAConfig(aor=f"sip:{name}@{DOMAIN}", password=f"{name}-pw",
                            servers=(FE,), local_host=host))
    voice.agents[name] = ua
    await ua.start()
    response = await ua.register()
    assert response.status == 200, (name, response.status, response.reason)


async def _published(voice: Voice) -> bool:
    """The published ranges reached fe1a: a number of the range without announcement
    nor target is refused 404 naming the range."""
    try:
        await voice.agents["alice"].invite(_number("+14255559299"), SDP)
    except CallFailed as failed:
        return failed.status == 404 and "retired-numbers" in failed.reason
    return False


def _number(number: str) -> str:
    return f"sip:{number}@{DOMAIN};user=phone"


def _unassigned(voice: Voice) -> dict[str, object]:
    apps = voice.status(FE_ADDRESS)["apps"]
    assert isinstance(apps, dict)
    status = apps["apps"]["unassigned"]
    assert isinstance(status, dict)
    return status


async def test_an_announcement_is_played_to_the_caller_then_the_call_hung_up(
        voice: Voice) -> None:
    """APP-5: answered with PCMU from the application server; the file's µ-law samples
    arrive as consecutive PT 0 packets, paced in real time; then the application hangs
    up (BYE)."""
    before = _unassigned(voice)
    receiver = await RtpReceiver(MEDIA_HOST).open()
    try:
        call = await voice.agents["alice"].invite(_number("+14255559001"), receiver.offer())
        answer = offer_address(call.remote_body)
        assert answer is not None and answer[0] == FE_ADDRESS
        await call.wait_ended(timeout=10)
        packets = await receiver.wait_quiet(0.3, 5)
    finally:
        receiver.close()
    assert call.end_reason == "remote BYE"
    assert abs(len(packets) - PACKETS) <= 1, len(packets)
    assert {p.source for p in packets} == {answer}
    assert {(p.version, p.payload_type) for p in packets} == {(2, 0)}
    assert [p.marker for p in packets] == [True] + [False] * (len(packets) - 1)
    first = packets[0].sequence
    assert [p.sequence for p in packets] == [(first + i) & 0xFFFF for i in range(len(packets))]
    payload = receiver.payload()
    assert payload[:len(SAMPLES)] == SAMPLES
    assert set(payload[len(SAMPLES):]) <= {0xFF}              # padding of the last frame
    assert packets[-1].arrived - packets[0].arrived >= 0.8    # real time, not a burst
    after = _unassigned(voice)
    assert _count(after, "calls", "vacant-hang-up") == _count(before, "calls",
                                                              "vacant-hang-up") + 1
    assert int(str(after["announcements_played"])) >= int(str(before["announcements_played"])) + 1
    assert int(str(after["packets_sent"])) >= int(str(before["packets_sent"])) + len(packets)


async def test_a_caller_hanging_up_stops_the_announcement(voice: Voice) -> None:
    """APP-5: the caller's BYE during the announcement stops the audio at once."""
    receiver = await RtpReceiver(MEDIA_HOST).open()
    try:
        call = await voice.agents["alice"].invite(_number("+14255559002"), receiver.offer())
        await receiver.wait_packets(5, 5)
        response = await call.bye()
        packets = await receiver.wait_quiet(0.3, 5)
    finally:
        receiver.close()
    assert response.status == 200
    assert 5 <= len(packets) < PACKETS - 10, len(packets)
    await wait_for(lambda: _outcome(voice, "hung_up_during_announcement"), 5,
                   "the hang-up counted")


async def test_after_the_announcement_the_call_is_forwarded_to_the_target(
        voice: Voice) -> None:
    """APP-5: then forward — the target rings (the caller shown as the caller, its SDP
    offered), answers, and both are connected; a BYE of either reaches the other."""
    alice, bob = voice.agents["alice"], voice.agents["bob"]
    receiver = await RtpReceiver(MEDIA_HOST).open()
    try:
        call = await alice.invite(_number("+14255559150"), receiver.offer())
        ringing = await asyncio.wait_for(bob.incoming_calls.get(), 10)
        packets = receiver.packets
    finally:
        receiver.close()
    assert abs(len(packets) - PACKETS) <= 1                   # the announcement came first
    assert ringing.incoming is not None
    assert ringing.incoming.request.from_.uri.aor == f"sip:alice@{DOMAIN}"
    assert offer_address(ringing.remote_body) == (MEDIA_HOST, receiver.port)
    await ringing.answer(BOB_SDP)
    await wait_for(lambda: _outcome(voice, "forwarded"), 5, "the call bridged")
    assert call.state is CallState.ESTABLISHED and ringing.state is CallState.ESTABLISHED
    relayed = await call.reinvite(SDP)                      # leg to leg, answered by bob
    assert relayed.status == 200
    response = await ringing.bye()
    assert response.status == 200
    await call.wait_ended(timeout=5)


async def test_without_announcement_the_call_goes_to_the_target_unanswered_until_it_answers(
        voice: Voice) -> None:
    """APP-5: forward without announcement (to the target's number) — the caller hears
    the target ring and is answered with the target's SDP; its BYE reaches the target."""
    alice, bob = voice.agents["alice"], voice.agents["bob"]
    pending = asyncio.ensure_future(alice.invite(_number("+14255559301"), SDP))
    ringing = await asyncio.wait_for(bob.incoming_calls.get(), 10)
    assert not pending.done()
    await ringing.answer(BOB_SDP)
    call = await asyncio.wait_for(pending, 5)
    assert call.remote_body == BOB_SDP
    assert 180 in call.provisional
    await call.bye()
    await ringing.wait_ended(timeout=5)


async def test_a_number_without_announcement_nor_target_is_refused_404_naming_its_range(
        voice: Voice) -> None:
    """APP-5: disconnect without announcement — 404 Unassigned number (RANGE)."""
    with pytest.raises(CallFailed) as refused:
        await voice.agents["alice"].invite(_number("+14255559250"), SDP)
    assert refused.value.status == 404
    assert refused.value.reason == "Unassigned number (retired-numbers)"


def _count(status: dict[str, object], key: str, name: str) -> int:
    counts = status[key]
    assert isinstance(counts, dict)
    return int(counts.get(name, 0))


async def _outcome(voice: Voice, outcome: str) -> bool:
    outcomes = _unassigned(voice)["outcomes"]
    assert isinstance(outcomes, dict)
    return int(outcomes.get(outcome, 0)) > 0
