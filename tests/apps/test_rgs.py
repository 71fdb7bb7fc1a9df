"""Response Groups end to end (SPEC APP-3), as real processes: an Enterprise pool of two
Front End servers on one PostgreSQL Back End, agents signed in on different servers,
callers dialling workflow numbers. Each routing method (serial, parallel, round robin,
longest idle, attendant), formal agents signing in, queue timeout and overflow, and a
closed workflow's announcement."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.drpair import DOMAIN, wait_for
from tests.voice.deployment import SDP, Voice, running_voice
from trimaran.apps.audio import wav_bytes
from trimaran.client.dialogs import Call, CallFailed
from trimaran.client.ua import UserAgent
from trimaran.net.transport import Address

pytestmark = pytest.mark.timeout(300)

FE1A, FE1B = "127.0.32.1", "127.0.32.2"
SERVERS = {"fe1a": Address("tcp", FE1A, 5060), "fe1b": Address("tcp", FE1B, 5060)}
# Who is signed in where: agents and callers on both servers of the pool.
USERS = {"alice": "fe1a", "bob": "fe1b", "carol": "fe1a", "dave": "fe1b", "frank": "fe1b",
         "oscar": "fe1a"}
AGENT_SDP = SDP.replace(b"40000", b"40002")
NUMBERS = {"serial": "+14255556001", "parallel": "+14255556002", "round_robin": "+14255556003",
           "longest_idle": "+14255556004", "attendant": "+14255556005",
           "formal": "+14255556006", "timeout": "+14255556007", "overflow": "+14255556008",
           "closed": "+14255556009"}
TOPOLOGY = f"""
name: rgs
sip_domain: {DOMAIN}
sites:
  - name: dc1
pools:
  - name: fe1
    site: dc1
    role: frontend
    edition: enterprise
    servers: [{{name: fe1a, address: {FE1A}}}, {{name: fe1b, address: {FE1B}}}]
    backend: {{principal: {{address: 127.0.32.21, port: 5432}}}}
"""


METHODS = ("serial", "parallel", "round_robin", "longest_idle", "attendant")


def _apps(closed_sha: str) -> str:
    """One workflow, queue and agent group (alice and bob) per routing method, a formal
    group, a queue that times out to oscar, one that overflows, a closed workflow."""
    pair = f"['sip:alice@{DOMAIN}', 'sip:bob@{DOMAIN}']"
    frank = f"['sip:frank@{DOMAIN}']"
    lines = ["audio:", f"  - {{name: closed, sha256: {closed_sha}}}", "agent_groups:"]
    lines += [f"  - {{name: {m}-agents, agents: {pair}, routing: {m}, "
              f"alert_seconds: {2 if m == 'serial' else 5}}}" for m in METHODS]
    lines += [f"  - {{name: formal-agents, agents: {frank}, formal: true}}",
              f"  - {{name: night-agents, agents: {frank}, formal: true}}", "queues:"]
    lines += [f"  - {{name: {m}, agent_groups: [{m}-agents]}}" for m in METHODS]
    lines += ["  - {name: formal, agent_groups: [formal-agents]}",
              "  - {name: timeout, agent_groups: [night-agents], timeout_seconds: 2,",
              f"     timeout_action: {{action: forward, target: 'sip:oscar@{DOMAIN}'}}}}",
              "  - {name: overflow, agent_groups: [night-agents], overflow_calls: 1,",
              "     overflow_action: {action: disconnect}}", "workflows:"]
    lines += [f"  - {{name: {name}, pool: fe1, number: '{number}', queue: {name}}}"
              for name, number in NUMBERS.items() if name != "closed"]
    lines += [f"  - {{name: closed, pool: fe1, number: '{NUMBERS['closed']}', queue: serial,",
              "     business_hours: {timezone: Europe/Paris, days: {mon: []}},",
              "     closed_action: {action: disconnect, announcement: closed}}"]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def deployment() -> Iterator[Voice]:
    """The pool, its users and the applications. Its directory is under /tmp (0711),
    not pytest's (0700, reset by any pytest starting meanwhile), so that the
    ``postgres`` user can always reach the Back End's data."""
    tmp = Path(tempfile.mkdtemp(prefix="trimaran-rgs-"))
    tmp.chmod(0o711)
    try:
        yield from _deployed(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _deployed(tmp: Path) -> Iterator[Voice]:
    with running_voice(tmp, TOPOLOGY) as voice:
        for number, name in enumerate(USERS, start=101):
            voice.add_user(name, "fe1", f"+1425555{number:04d}")
        wav = tmp / "closed.wav"
        wav.write_bytes(wav_bytes(b"\xff" * 1600))          # 0.2 s of silence
        sha = voice.cli("apps", "audio", "add", str(wav)).strip()
        apps = tmp / "apps.yaml"
        apps.write_text(_apps(sha))
        voice.cli("apps", "publish", str(apps))
        yield voice


def _rgs(voice: Voice, address: str = FE1A) -> Any:
    """The Response Group status of a server's application server (JSON)."""
    apps: Any = voice.status(address)["apps"]
    return apps["apps"]["workflow"]


@pytest.fixture
async def rgs(deployment: Voice) -> AsyncIterator[Voice]:
    """Everyone signed in on their server; afterwards no call left bridged."""
    async def published() -> bool:
        return all(len(_rgs(deployment, a).get("workflows", {})) == len(NUMBERS)
                   for a in (FE1A, FE1B))
    await wait_for(published, 30, "the applications configuration on both servers")
    try:
        for name, server in USERS.items():
            await deployment.sign_in(name, (SERVERS[server],))
        yield deployment
    finally:
        await deployment.close_agents()

    async def idle() -> bool:
        return _rgs(deployment)["calls_bridged"] == 0 and \
            not any(q["waiting"] for q in _rgs(deployment)["queues"].values())
    await wait_for(idle, 10, "no Response Group call left")


def _call(voice: Voice, caller: str, workflow: str) -> Call:
    return voice.agents[caller].start_call(f"sip:{NUMBERS[workflow]}@{DOMAIN};user=phone", SDP)


async def _rings(ua: UserAgent, timeout: float = 5.0) -> Call:
    return await asyncio.wait_for(ua.incoming_calls.get(), timeout)


async def _first_to_ring(voice: Voice, names: tuple[str, ...] = ("alice", "bob"),
                         timeout: float = 5.0) -> Call:
    """The offer of whichever of `names` rings first (the others' stay queued)."""
    async def rung() -> bool:
        return any(not voice.agents[n].incoming_calls.empty() for n in names)
    await wait_for(rung, timeout, f"a call ringing {' or '.join(names)}", interval=0.02)
    return next(voice.agents[n].incoming_calls.get_nowait() for n in names
                if not voice.agents[n].incoming_calls.empty())


async def _answered(voice: Voice, caller: str, call: Call) -> None:
    await asyncio.wait_for(voice.agents[caller].wait_answer(call), 5)


async def _hang_up(call: Call, offer: Call) -> None:
    await call.bye()
    await offer.wait_ended()


async def test_serial_offers_the_next_agent_when_the_first_one_rejects(rgs: Voice) -> None:
    """APP-3 serial: alice (on fe1a) declines; bob (on fe1b) is offered and answers; the
    caller heard 182 Queued and 180, and talks to bob (his SDP)."""
    call = _call(rgs, "carol", "serial")
    first = await _rings(rgs.agents["alice"])
    await first.reject(603)
    second = await _rings(rgs.agents["bob"])
    await second.answer(AGENT_SDP)
    await _answered(rgs, "carol", call)
    assert call.remote_body == AGENT_SDP
    assert 182 in call.provisional and 180 in call.provisional, call.provisional
    assert second.remote_body == SDP
    await _hang_up(call, second)


async def test_serial_moves_on_when_an_agent_does_not_answer_in_alert_seconds(
        rgs: Voice) -> None:
    """APP-3: alice lets it ring: after the group's 2 s her phone stops, bob's rings."""
    call = _call(rgs, "carol", "serial")
    first = await _rings(rgs.agents["alice"])
    second = await _rings(rgs.agents["bob"], 5)
    await first.wait_ended(2)
    assert first.end_reason == "cancelled"
    await second.answer(AGENT_SDP)
    await _answered(rgs, "carol", call)
    await _hang_up(call, second)


async def test_parallel_rings_both_agents_and_cancels_the_other(rgs: Voice) -> None:
    """APP-3 parallel: both ring at once; bob answers; alice's phone stops ringing;
    the agent hanging up ends the caller's call."""
    call = _call(rgs, "dave", "parallel")
    alice, bob = await _rings(rgs.agents["alice"]), await _rings(rgs.agents["bob"])
    await bob.answer(AGENT_SDP)
    await _answered(rgs, "dave", call)
    await alice.wait_ended(3)
    assert alice.end_reason == "cancelled"
    await bob.bye()
    await call.wait_ended(3)


async def test_a_caller_hanging_up_while_agents_ring_stops_their_phones(rgs: Voice) -> None:
    """APP-3: CANCEL of a call being offered: 487 to the caller, the offers cancelled."""
    call = _call(rgs, "carol", "parallel")
    alice, bob = await _rings(rgs.agents["alice"]), await _rings(rgs.agents["bob"])
    await call.cancel()
    with pytest.raises(CallFailed) as cancelled:
        await _answered(rgs, "carol", call)
    assert cancelled.value.status == 487
    for offer in (alice, bob):
        await offer.wait_ended(3)
        assert offer.end_reason == "cancelled"


async def test_round_robin_starts_consecutive_calls_at_different_agents(rgs: Voice) -> None:
    """APP-3 round robin: the second call starts after the agent offered the first."""
    firsts = []
    for caller in ("carol", "dave"):
        call = _call(rgs, caller, "round_robin")
        offer = await _first_to_ring(rgs)
        firsts.append(offer.ua.aor.user)
        await offer.answer(AGENT_SDP)
        await _answered(rgs, caller, call)
        await _hang_up(call, offer)
    assert firsts[0] != firsts[1], firsts


async def test_longest_idle_offers_the_agent_idle_longest(rgs: Voice) -> None:
    """APP-3 longest idle: of two agents, the one whose call ended first is offered the
    next call first."""
    calls = []
    for caller in ("carol", "dave"):      # both agents on a call, one each
        call = _call(rgs, caller, "longest_idle")
        offer = await _first_to_ring(rgs)
        await offer.answer(AGENT_SDP)
        await _answered(rgs, caller, call)
        calls.append((call, offer))
    for call, offer in reversed(calls):    # the second agent's call ends first
        await _hang_up(call, offer)
    idle_longest = str(calls[1][1].ua.aor.user)
    call = _call(rgs, "carol", "longest_idle")
    offer = await _rings(rgs.agents[idle_longest])
    other = "alice" if idle_longest == "bob" else "bob"
    assert rgs.agents[other].incoming_calls.empty()
    await offer.answer(AGENT_SDP)
    await _answered(rgs, "carol", call)
    await _hang_up(call, offer)


async def test_attendant_offers_busy_agents_too(rgs: Voice) -> None:
    """APP-3 attendant: alice is on a Response Group call, yet both she and bob ring."""
    busy = _call(rgs, "carol", "serial")
    alice_call = await _rings(rgs.agents["alice"])
    await alice_call.answer(AGENT_SDP)
    await _answered(rgs, "carol", busy)
    call = _call(rgs, "dave", "attendant")
    alice, bob = await _rings(rgs.agents["alice"]), await _rings(rgs.agents["bob"])
    await alice.answer(AGENT_SDP)
    await _answered(rgs, "dave", call)
    await bob.wait_ended(3)
    await _hang_up(call, alice)
    await _hang_up(busy, alice_call)


async def test_a_formal_agent_is_offered_calls_only_after_signing_in(rgs: Voice) -> None:
    """APP-3: frank (formal, on fe1b) is not offered the waiting call until he sends
    sign-in to his group; someone not of the group may not sign in (403)."""
    group = f"sip:rgs-agent+formal-agents@{DOMAIN}"
    refused = await rgs.agents["carol"].send_message(group, "sign-in")
    assert refused.status == 403
    call = _call(rgs, "carol", "formal")

    async def waiting() -> bool:
        return bool(_rgs(rgs)["queues"]["formal"]["waiting"] == 1)
    await wait_for(waiting, 5, "the call waiting in queue formal")
    assert _rgs(rgs)["queues"]["formal"]["offers"] == 0
    assert rgs.agents["frank"].incoming_calls.empty()
    assert 182 in call.provisional
    answer = await rgs.agents["frank"].send_message(group, "sign-in")
    assert (answer.status, answer.body) == (200, b"signed-in")
    assert _rgs(rgs)["agent_groups"]["formal-agents"]["signed_in"] == [f"sip:frank@{DOMAIN}"]
    offer = await _rings(rgs.agents["frank"])
    await offer.answer(AGENT_SDP)
    await _answered(rgs, "carol", call)
    await _hang_up(call, offer)
    answer = await rgs.agents["frank"].send_message(group, "sign-out")
    assert (answer.status, answer.body) == (200, b"signed-out")


async def test_queue_timeout_forwards_the_call_to_the_operator(rgs: Voice) -> None:
    """APP-3: nobody can take the call; after the queue's 2 s it rings oscar."""
    before = _rgs(rgs)["queues"]["timeout"]["timeouts"]
    call = _call(rgs, "dave", "timeout")
    offer = await _rings(rgs.agents["oscar"], 6)
    await offer.answer(AGENT_SDP)
    await _answered(rgs, "dave", call)
    assert _rgs(rgs)["queues"]["timeout"]["timeouts"] == before + 1
    await _hang_up(call, offer)


async def test_a_call_over_the_queue_limit_overflows(rgs: Voice) -> None:
    """APP-3: with one call waiting (the limit), the next takes the overflow action
    (disconnect: refused with the reason); the waiting one keeps waiting."""
    first = _call(rgs, "carol", "overflow")

    async def waiting() -> bool:
        return bool(_rgs(rgs)["queues"]["overflow"]["waiting"] == 1)
    await wait_for(waiting, 5, "one call waiting in queue overflow")
    second = _call(rgs, "dave", "overflow")
    with pytest.raises(CallFailed) as failed:
        await _answered(rgs, "dave", second)
    assert failed.value.status == 603
    assert "full" in failed.value.reason
    assert _rgs(rgs)["queues"]["overflow"]["overflows"] >= 1
    await first.cancel()
    with pytest.raises(CallFailed) as cancelled:
        await _answered(rgs, "carol", first)
    assert cancelled.value.status == 487


async def test_a_closed_workflow_plays_its_announcement_then_refuses(rgs: Voice) -> None:
    """APP-3: outside business hours: the announcement (early media), then 480."""
    call = _call(rgs, "carol", "closed")
    with pytest.raises(CallFailed) as failed:
        await _answered(rgs, "carol", call)
    assert failed.value.status == 480
    assert "business hours" in failed.value.reason
    assert 183 in call.provisional
    workflows = _rgs(rgs)["workflows"]
    assert workflows["closed"]["closed"] >= 1, json.dumps(workflows)
