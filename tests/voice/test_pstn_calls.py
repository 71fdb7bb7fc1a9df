"""Calls to and from the PSTN through a Mediation pool, as real processes with SIPp
gateways (SPEC EV-1, EV-2, EV-3): normalization and route selection end to end, trunk
failover when a gateway is stopped, refuses with 503 or never answers, a probed-down
gateway skipped at once and used again when it is back, a Mediation server killed under
load, and calls from a gateway reaching the user whose number was called."""

from __future__ import annotations

import asyncio
import json
import textwrap
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests import admincreds
from tests.integration.drpair import DOMAIN, wait_for
from tests.voice.deployment import SDP, Voice, running_voice
from tests.voice.gateway import SippCaller, SippGateway
from trimaran.client.dialogs import CallFailed
from trimaran.net.transport import Address

pytestmark = pytest.mark.timeout(420)

FE = Address("tcp", "127.0.27.1", 5060)
MEDIATION = ["127.0.27.11", "127.0.27.12"]
GATEWAYS = {"gw1": "127.0.27.51", "gw2": "127.0.27.52"}
FAST_FAILOVER = 2.0
VOICE = rf"""
fast_failover_seconds: {FAST_FAILOVER}
probe_interval_seconds: 1
probe_timeout_seconds: 0.5
gateways:
  - {{name: gw1, address: 127.0.27.51, site: dc1}}
  - {{name: gw2, address: 127.0.27.52, site: dc1}}
trunks:
  - {{name: t1, mediation_pool: med1, gateway: gw1}}
  - {{name: t2, mediation_pool: med1, gateway: gw2}}
routes:
  - {{name: national, pattern: '^\+1\d{{10}}$', usages: [national], trunks: [t1, t2]}}
voice_policies:
  - {{name: default, usages: [national]}}
dial_plans:
  - name: redmond
    rules:
      - {{name: extension, pattern: '^(\d{{5}})$', translation: '+14255550100;ext=$1'}}
      - {{name: national, pattern: '^1?(\d{{10}})$', translation: '+1$1'}}
default_dial_plan: redmond
default_voice_policy: default
"""
TOPOLOGY = rf"""
name: voice-calls
sip_domain: {DOMAIN}
sites:
  - name: dc1
pools:
  - name: fe1
    site: dc1
    role: frontend
    edition: standard
    servers: [{{name: fe1a, address: 127.0.27.1}}]
  - name: med1
    site: dc1
    role: mediation
    next_hop: fe1
    servers: [{{name: med1a, address: 127.0.27.11}}, {{name: med1b, address: 127.0.27.12}}]
voice:
{textwrap.indent(VOICE, "  ")}"""


@pytest.fixture(scope="module")
def voice(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Voice]:
    tmp: Path = tmp_path_factory.mktemp("voice")
    with running_voice(tmp, TOPOLOGY) as deployment:
        deployment.add_user("alice", "fe1", "+14255550101")
        deployment.add_user("bob", "fe1", "+14255550102")
        yield deployment


@pytest.fixture
async def healthy(voice: Voice, tmp_path: Path) -> AsyncIterator[Voice]:
    """Both gateways answering, as every Mediation server sees them; alice and bob
    signed in (all closed after the test)."""
    try:
        await voice.start_gateways(GATEWAYS, tmp_path)
        await voice.wait_gateway(MEDIATION, "gw1", "up")
        await voice.wait_gateway(MEDIATION, "gw2", "up")
        await voice.sign_in("alice", (FE,))
        await voice.sign_in("bob", (FE,))
        yield voice
    finally:
        await voice.close()


def _uris(gateway: SippGateway) -> list[str]:
    return [r.request_uri for r in gateway.received()]


async def test_a_dialled_national_number_reaches_the_first_gateway_as_e164(
        healthy: Voice) -> None:
    """EV-1: the dial plan normalizes 425-555-0123 to +14255550123; the route's first
    trunk carries it."""
    before = len(_uris(healthy.gateways["gw1"]))
    call, _ = await healthy.dial("alice", "425-555-0123")
    await healthy.gateways["gw1"].wait_received(before + 1, 5)
    uri = _uris(healthy.gateways["gw1"])[-1]
    assert uri.startswith("sip:+14255550123@127.0.27.51"), uri
    assert "user=phone" in uri
    response = await call.bye()
    assert response.status == 200


async def test_a_number_of_a_user_rings_the_user_not_the_pstn(healthy: Voice) -> None:
    """EV-1: after normalization, a number a user has is an internal call."""
    before = [len(_uris(g)) for g in healthy.gateways.values()]
    bob = healthy.agents["bob"]
    pending = asyncio.ensure_future(healthy.dial("alice", "4255550102"))
    incoming = await asyncio.wait_for(bob.incoming_calls.get(), 5)
    await incoming.answer(SDP)
    call, _ = await pending
    assert [len(_uris(g)) for g in healthy.gateways.values()] == before
    await call.bye()


async def test_a_number_that_does_not_normalize_is_refused_with_the_reason(
        healthy: Voice) -> None:
    """EV-7: the user is told why (484 and a Warning)."""
    with pytest.raises(CallFailed) as failed:
        await healthy.dial("alice", "12")
    assert failed.value.status == 484
    assert "normalize" in failed.value.reason


async def test_a_stopped_gateway_fails_over_to_the_next_trunk_then_is_skipped_then_used_again(
        healthy: Voice) -> None:
    """EV-3: gw1 killed → the call completes on gw2 within the fast-failover time; once
    the probes see gw1 down it is skipped without waiting; back when it answers."""
    gw1, gw2 = healthy.gateways["gw1"], healthy.gateways["gw2"]
    await gw1.kill()
    before = len(_uris(gw2))
    call, seconds = await healthy.dial("alice", "4255550123")
    assert len(_uris(gw2)) == before + 1
    assert seconds < FAST_FAILOVER + 1.5, seconds
    await call.bye()
    await healthy.wait_gateway(MEDIATION, "gw1", "down")
    call, seconds = await healthy.dial("alice", "4255550124")
    assert seconds < 1.0, f"a probed-down gateway cost {seconds:.2f} s"
    assert _uris(gw2)[-1].startswith("sip:+14255550124@")
    await call.bye()
    await gw1.start()
    await healthy.wait_gateway(MEDIATION, "gw1", "up")
    before1 = len(_uris(gw1))
    call, _ = await healthy.dial("alice", "4255550125")
    await gw1.wait_received(before1 + 1, 5)
    await call.bye()


async def test_a_gateway_answering_503_fails_over_to_the_next_trunk(healthy: Voice) -> None:
    """EV-3: a 503 from the gateway → the next trunk, at once."""
    gw1, gw2 = healthy.gateways["gw1"], healthy.gateways["gw2"]
    await gw1.set_mode("reject503")
    await healthy.wait_gateway(MEDIATION, "gw1", "up")
    before1, before2 = len(_uris(gw1)), len(_uris(gw2))
    call, seconds = await healthy.dial("alice", "4255550126")
    assert len(_uris(gw1)) == before1 + 1, "gw1 was tried first"
    assert len(_uris(gw2)) == before2 + 1, "gw2 carried the call"
    assert seconds < FAST_FAILOVER, seconds
    await call.bye()


async def test_a_gateway_that_never_answers_fails_over_after_the_fast_failover_time(
        healthy: Voice) -> None:
    """EV-3: no progress from gw1 within the fast-failover time → gw2."""
    gw1, gw2 = healthy.gateways["gw1"], healthy.gateways["gw2"]
    await gw1.set_mode("silent")
    await healthy.wait_gateway(MEDIATION, "gw1", "up")    # it answers OPTIONS
    before2 = len(_uris(gw2))
    call, seconds = await healthy.dial("alice", "4255550127")
    assert len(_uris(gw2)) == before2 + 1
    assert FAST_FAILOVER - 0.2 <= seconds < FAST_FAILOVER + 1.5, seconds
    await call.bye()


async def test_a_call_from_the_pstn_reaches_the_user_whose_number_was_called(
        healthy: Voice) -> None:
    """EV-2: a gateway's call to +14255550101 through either Mediation server rings
    alice; a source that is not a gateway of the pool is refused; a number nobody has
    is 404 (no relaying from trunk to trunk)."""
    alice = healthy.agents["alice"]

    async def answer_all(count: int) -> None:
        for _ in range(count):
            call = await asyncio.wait_for(alice.incoming_calls.get(), 10)
            await call.answer(SDP)

    for mediation in MEDIATION:
        answering = asyncio.ensure_future(answer_all(2))
        caller = SippCaller("127.0.27.51", f"{mediation}:5060", to_number="+14255550101",
                            from_number="+12065550199")
        result = await caller.run(calls=2, rate=2, hold_ms=200)
        await asyncio.wait_for(answering, 15)
        assert result.successful == 2, result.describe()
    stranger = SippCaller("127.0.27.60", "127.0.27.11:5060", to_number="+14255550101",
                          from_number="+12065550199")
    refused = await stranger.run(calls=1, rate=1, hold_ms=0)
    assert refused.successful == 0 and refused.final_codes.get(403) == 1, refused.describe()
    unassigned = await SippCaller("127.0.27.52", "127.0.27.12:5060",
                                  to_number="+14255559999").run(calls=1, rate=1)
    assert unassigned.final_codes.get(404) == 1, unassigned.describe()   # never sent out again
    metrics = _metrics("127.0.27.12")
    assert 'mediation_calls_total{direction="inbound",result="answered"} 2.0' in metrics
    assert 'mediation_gateway_up{gateway="gw1"} 1.0' in metrics


async def test_killing_a_mediation_server_under_load_loses_no_new_call(
        healthy: Voice) -> None:
    """EV-2: calls keep being placed while med1a is killed; every call started after the
    kill completes through med1b. Prints calls per second and failures."""
    results: list[tuple[float, str]] = []
    killed_at = 0.0

    async def one(i: int) -> None:
        started = time.monotonic()
        try:
            call, _ = await healthy.dial("alice", f"42555{i:05d}")
            await call.bye()
            results.append((started, "ok"))
        except CallFailed as exc:
            results.append((started, f"{exc.status} {exc.reason}"))

    tasks = []
    begin = time.monotonic()
    for i in range(60):
        tasks.append(asyncio.ensure_future(one(i)))
        if i == 20:
            healthy.cli("server", "kill", "med1a")
            killed_at = time.monotonic()
        await asyncio.sleep(0.05)
    await asyncio.gather(*tasks)
    elapsed = time.monotonic() - begin
    failures = [r for t, r in results if r != "ok"]
    after = [r for t, r in results if t > killed_at]
    print(f"\n{len(results)} calls in {elapsed:.1f} s ({len(results) / elapsed:.1f} calls/s), "
          f"{len(failures)} failed: {failures}; {len(after)} started after the kill")
    assert all(r == "ok" for r in after), failures
    healthy.cli("server", "start", "med1a")
    await wait_for(lambda: _up("127.0.27.11"), 20, "med1a back")


async def _up(address: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{address}:8080/health", timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


async def test_a_published_voice_configuration_is_used_by_the_servers(
        healthy: Voice, tmp_path: Path) -> None:
    """EV-1: `voice publish` puts a new configuration in the CMS (validated first: a
    route without trunk is refused with its path); `voice route` explains a dial; the
    next calls follow the new trunk order (gw2 first)."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(VOICE.replace("trunks: [t1, t2]", "trunks: []"))
    refused = healthy.cli("voice", "publish", str(bad), check=False)
    assert "routes[0].trunks" in refused, refused
    good = tmp_path / "voice.yaml"
    good.write_text(VOICE.replace("trunks: [t1, t2]", "trunks: [t2, t1]"))
    try:
        healthy.cli("voice", "publish", str(good))
        explained = json.loads(healthy.cli("voice", "route", "425 555 0199", "--user",
                                           f"sip:alice@{DOMAIN}", "--json"))
        assert explained["number"] == "+14255550199"
        assert [a["trunk"] for a in explained["attempts"]] == ["t2", "t1"]
        gw2 = healthy.gateways["gw2"]

        async def follows_the_new_order() -> bool:
            before = len(_uris(gw2))
            call, _ = await healthy.dial("alice", "4255550199")
            await call.bye()
            return len(_uris(gw2)) == before + 1
        await wait_for(follows_the_new_order, 15, "calls on gw2 first", interval=0.5)
    finally:
        original = tmp_path / "original.yaml"
        original.write_text(VOICE)
        healthy.cli("voice", "publish", str(original))


def _metrics(address: str) -> str:
    request = urllib.request.Request(f"http://{address}:8080/metrics",
                                     headers=admincreds.headers("read"))
    with urllib.request.urlopen(request, timeout=2) as resp:
        return str(resp.read().decode())
