"""The call-management applications move with pool failover and come back with
failback, with nothing exported or imported by hand (SPEC APP-2, APP-4, APP-5, APP-7).

Two paired Standard Edition pools; every application is configured on pool A (fe1):
a Response Group workflow with a formal agent group, a Call Park orbit range, an
unassigned range with an announcement, and a meeting organized by one of A's users
with a file. Site A is killed; the CMS and pool A fail over to B (fe2). Then, on B:
a call to A's Response Group number is answered by an agent who signed in on B; a
call parks in A's orbit range; A's unassigned range plays A's announcement; the
meeting is rejoined with its content. After failback A runs them again. The test
prints each feature with pass/fail."""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.apps.rtp_receiver import RtpReceiver
from tests.integration.drpair import DOMAIN, wait_for
from tests.voice.deployment import SDP, Voice, running_voice
from trimaran.apps.audio import FRAME_SAMPLES, wav_bytes
from trimaran.client.conference import join
from trimaran.client.park import park
from trimaran.client.ua import UAConfig, UserAgent
from trimaran.client.xcap import XcapClient
from trimaran.net.transport import Address
from trimaran.roles.frontend.apps import focus_uri

pytestmark = pytest.mark.timeout(420)

FE1, FE2 = "127.0.35.1", "127.0.35.2"
SERVERS = (Address("tcp", FE1, 5060), Address("tcp", FE2, 5060))
MEDIA = "127.0.35.100"
SAMPLES = bytes((i * 7) & 0x7F for i in range(FRAME_SAMPLES * 25))     # 0.5 s: 25 packets
TOPOLOGY = f"""
name: apps-dr
sip_domain: {DOMAIN}
sites: [{{name: dc1}}, {{name: dc2}}]
settings:
  heartbeat_seconds: 0.5
  failure_detection_seconds: 2
  resiliency_failover_seconds: 3
  resiliency_fallback_seconds: 5
pools:
  - {{name: fe1, site: dc1, role: frontend, edition: standard, backup_pool: fe2,
     servers: [{{name: fe1a, address: {FE1}}}]}}
  - {{name: fe2, site: dc2, role: frontend, edition: standard, backup_pool: fe1,
     servers: [{{name: fe2a, address: {FE2}}}]}}
"""
APPS = """
audio:
  - {{name: closed, sha256: {sha}}}
call_park:
  - {{pool: fe1, orbits: [{{first: '*7000', last: '*7099'}}], timeout_seconds: 300}}
unassigned:
  - {{name: retired, pool: fe1, numbers: {{first: '+14255558000', last: '+14255558099'}},
     announcement: closed, then: {{action: disconnect}}}}
agent_groups:
  - {{name: helpdesk-agents, agents: ['sip:agent@{domain}'], formal: true, alert_seconds: 10}}
queues:
  - {{name: helpdesk, agent_groups: [helpdesk-agents]}}
workflows:
  - {{name: helpdesk, pool: fe1, number: '+14255556000', queue: helpdesk}}
"""
USERS = {"fe1": ["agent", "parker", "retriever", "olga"], "fe2": ["caller"]}


@pytest.fixture(scope="module")
def voice() -> Iterator[Voice]:
    # Its own directory: PostgreSQL-free, but the run directory must stay reachable.
    tmp = Path(tempfile.mkdtemp(prefix="trimaran-apps-dr-"))
    with running_voice(tmp, TOPOLOGY) as deployment:
        for pool, names in USERS.items():
            for name in names:
                deployment.cli("user", "add", f"sip:{name}@{DOMAIN}", "--password",
                               f"{name}-pw", "--pool", pool)
        wav = tmp / "closed.wav"
        wav.write_bytes(wav_bytes(SAMPLES))
        sha = deployment.cli("apps", "audio", "add", str(wav)).strip()
        apps = tmp / "apps.yaml"
        apps.write_text(APPS.format(sha=sha, domain=DOMAIN))
        deployment.cli("apps", "publish", str(apps))
        yield deployment


async def phone(voice: Voice, name: str, local: str) -> UserAgent:
    """A client of `name` knowing both pools (home first)."""
    servers = SERVERS if name in USERS["fe1"] else tuple(reversed(SERVERS))
    ua = UserAgent(UAConfig(aor=f"sip:{name}@{DOMAIN}", password=f"{name}-pw",
                            servers=servers, local_host=local, reregister_on_flow_loss=True))
    await ua.start()
    response = await ua.register()
    assert response.status == 200, (name, response.status, response.reason)
    voice.agents[name] = ua
    return ua


def _number(number: str) -> str:
    return f"sip:{number}@{DOMAIN};user=phone"


async def _on(ua: UserAgent, host: str) -> bool:
    server = ua.registered_server
    return server is not None and server.host == host


async def _answer_next(ua: UserAgent) -> None:
    call = await asyncio.wait_for(ua.incoming_calls.get(), 15)
    await call.answer(SDP)


async def check_response_group(voice: Voice) -> bool:
    """A call to A's workflow number is answered by the formal agent once signed in
    (on whichever pool serves A now)."""
    agent, caller = voice.agents["agent"], voice.agents["caller"]
    signed = await agent.send_message(f"sip:rgs-agent+helpdesk-agents@{DOMAIN}", "sign-in")
    if signed.status != 200:
        return False
    answering = asyncio.ensure_future(_answer_next(agent))
    call = await caller.invite(_number("+14255556000"), SDP)
    await asyncio.wait_for(answering, 15)
    await call.bye()
    return True


async def check_call_park(voice: Voice) -> str:
    """A call between two of A's users is parked in A's orbit range, then retrieved."""
    parker, caller, retriever = (voice.agents[n] for n in ("parker", "caller", "retriever"))
    answering = asyncio.ensure_future(_answer_next(caller))
    call = await parker.invite(f"sip:caller@{DOMAIN}", SDP)
    await asyncio.wait_for(answering, 15)
    orbit = await park(parker, call)
    assert orbit.startswith("*70"), orbit
    retrieved = await retriever.invite(_number(orbit), SDP)
    await retrieved.bye()
    return orbit


async def check_announcement(voice: Voice) -> int:
    """A's unassigned range plays A's announcement: the packets carry the file."""
    receiver = await RtpReceiver(MEDIA).open()
    try:
        call = await voice.agents["caller"].invite(_number("+14255558001"), receiver.offer())
        await receiver.wait_packets(24, 10)
        await call.wait_ended(10)
        payload = receiver.payload()
    finally:
        receiver.close()
    assert payload[:len(SAMPLES)] == SAMPLES
    return len(receiver.packets)


async def check_meeting(voice: Voice, base: str) -> bool:
    """The meeting organized by olga (A) is joined at its focus, with its file."""
    olga = XcapClient(base, f"sip:olga@{DOMAIN}", "olga", "olga-pw")
    meeting = await olga.get_meeting("m1")
    if "agenda.txt" not in json.dumps(meeting):
        return False
    call = await join(voice.agents["caller"], focus_uri(f"sip:olga@{DOMAIN}", "m1"))
    await call.bye()
    return True


async def test_the_applications_of_a_failed_pool_run_on_its_backup_pool_and_come_back(
        voice: Voice) -> None:
    results: dict[str, str] = {}
    olga = XcapClient(f"http://{FE1}:8080", f"sip:olga@{DOMAIN}", "olga", "olga-pw")
    await olga.put_meeting("m1", subject="quarterly", attendees=(f"sip:caller@{DOMAIN}",))
    await olga.attach("m1", "agenda.txt", b"1. failover\n2. failback\n")
    voice.cli("backup", "sync", "fe1")
    try:
        voice.cli("site", "fail", "dc1")
        voice.cli("cms", "failover", "--disaster")
        voice.cli("pool", "failover", "fe1", "--disaster")
        locals_ = iter(f"127.0.35.{n}" for n in range(30, 40))
        for name in ("agent", "parker", "retriever", "caller"):
            await phone(voice, name, next(locals_))
        for name in ("agent", "parker", "retriever"):
            await wait_for(lambda n=name: _on(voice.agents[n], FE2), 30, f"{name} on fe2")
        checks = {
            "response group (agent signed in on B)": check_response_group(voice),
            "call park in A's orbits on B": check_call_park(voice),
            "A's announcement from B": check_announcement(voice),
            "meeting rejoined on B with its content": check_meeting(voice,
                                                                   f"http://{FE2}:8080"),
        }
        for feature, check in checks.items():
            try:
                outcome = await check
                results[feature] = "pass" if outcome else "FAIL"
            except Exception as exc:  # noqa: BLE001  (every feature listed, then the test fails)
                results[feature] = f"FAIL ({type(exc).__name__}: {exc})"[:160]
        await voice.close_agents()
        voice.cli("site", "restore", "dc1")
        voice.cli("pool", "failback", "fe1")
        for name in ("agent", "parker", "retriever", "caller"):
            await phone(voice, name, next(locals_))
        await wait_for(lambda: _on(voice.agents["agent"], FE1), 30, "agent home on fe1")
        before = _workflow_calls(voice, FE1)
        results["failback: A runs its response group again"] = \
            "pass" if await check_response_group(voice) and \
            _workflow_calls(voice, FE1) > before else "FAIL"
    finally:
        await voice.close_agents()
        print("\nfeature                                              result")
        for feature, result in results.items():
            print(f"{feature:<52} {result}")
    assert results and all(r == "pass" for r in results.values()), results


def _workflow_calls(voice: Voice, host: str) -> int:
    """Calls answered by the application server of `host` (its /status)."""
    return _find(voice.status(host).get("apps"), "answered")


def _find(value: object, key: str) -> int:
    """The sum of every `key` counter in a nested status document."""
    if isinstance(value, dict):
        return sum(int(v) if k == key and isinstance(v, int) else _find(v, key)
                   for k, v in value.items())
    if isinstance(value, list):
        return sum(_find(v, key) for v in value)
    return 0
