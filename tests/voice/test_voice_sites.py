"""Voice that survives losing a branch WAN link, a branch appliance or a central site, as
real processes with SIPp gateways (SPEC EV-4, EV-5, EV-6, EV-7).

Two paired Standard Edition pools in dc1 and dc2, each with a Mediation pool and a
gateway; a branch site with an SBA (registrar + mediation, backup registrar fe1) and
its own gateway. Branch users call out through the branch gateway first, then the
central routes; central users through dc1, then dc2."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.integration.drpair import DOMAIN, wait_for
from tests.voice.deployment import SDP, Voice, running_voice
from tests.voice.gateway import SippCaller
from trimaran.client.ua import UAConfig, UserAgent
from trimaran.deploy.sites import cut_between, netfilter_problem, uncut
from trimaran.net.transport import Address
from trimaran.roles.frontend.presence import basic_pidf

pytestmark = pytest.mark.timeout(420)

FE1, FE2 = Address("tcp", "127.0.28.1", 5060), Address("tcp", "127.0.28.2", 5060)
SBA = Address("tcp", "127.0.28.21", 5060)
BRANCH_CLIENTS = ("127.0.28.31", "127.0.28.32")
GATEWAYS = {"gw-dc1": "127.0.28.51", "gw-dc2": "127.0.28.52", "gw-branch": "127.0.28.53"}
CENTRAL = ("127.0.28.1", "127.0.28.2", "127.0.28.11", "127.0.28.12", "127.0.28.51",
           "127.0.28.52")
BRANCH = ("127.0.28.21", "127.0.28.53", *BRANCH_CLIENTS)
TOPOLOGY = rf"""
name: voice-sites
sip_domain: {DOMAIN}
sites:
  - name: dc1
  - name: dc2
  - {{name: branch1, kind: branch}}
settings:
  heartbeat_seconds: 0.5
  failure_detection_seconds: 2
  resiliency_failover_seconds: 3
  resiliency_fallback_seconds: 5
pools:
  - {{name: fe1, site: dc1, role: frontend, edition: standard, backup_pool: fe2,
     servers: [{{name: fe1a, address: 127.0.28.1}}]}}
  - {{name: fe2, site: dc2, role: frontend, edition: standard, backup_pool: fe1,
     servers: [{{name: fe2a, address: 127.0.28.2}}]}}
  - {{name: med1, site: dc1, role: mediation, next_hop: fe1,
     servers: [{{name: med1a, address: 127.0.28.11}}]}}
  - {{name: med2, site: dc2, role: mediation, next_hop: fe2,
     servers: [{{name: med2a, address: 127.0.28.12}}]}}
  - {{name: sba1, site: branch1, role: sba, backup_registrar: fe1,
     servers: [{{name: sba1a, address: 127.0.28.21}}]}}
voice:
  fast_failover_seconds: 2
  probe_interval_seconds: 1
  probe_timeout_seconds: 0.5
  gateways:
    - {{name: gw-dc1, address: 127.0.28.51, site: dc1}}
    - {{name: gw-dc2, address: 127.0.28.52, site: dc2}}
    - {{name: gw-branch, address: 127.0.28.53, site: branch1}}
  trunks:
    - {{name: dc1, mediation_pool: med1, gateway: gw-dc1}}
    - {{name: dc2, mediation_pool: med2, gateway: gw-dc2}}
    - {{name: branch, mediation_pool: sba1, gateway: gw-branch}}
  routes:
    - {{name: central, pattern: '^\+1\d{{10}}$', usages: [central], trunks: [dc1, dc2]}}
    - {{name: branch-local, pattern: '^\+1\d{{10}}$', usages: [branch], trunks: [branch]}}
  voice_policies:
    - {{name: central-users, usages: [central]}}
    - {{name: branch-users, usages: [branch, central]}}
  dial_plans:
    - name: us
      rules:
        - {{name: national, pattern: '^1?(\d{{10}})$', translation: '+1$1'}}
  default_dial_plan: us
  default_voice_policy: central-users
  sites:
    - {{site: branch1, voice_policy: branch-users}}
"""


@pytest.fixture(scope="module")
def voice(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Voice]:
    with running_voice(tmp_path_factory.mktemp("voice-sites"), TOPOLOGY) as deployment:
        deployment.add_user("a1", "fe1", "+14255550101")
        deployment.add_user("b1", "sba1", "+14255550201")
        deployment.add_user("b2", "sba1", "+14255550202")
        yield deployment


@pytest.fixture
async def gateways(voice: Voice, tmp_path: Path) -> AsyncIterator[Voice]:
    try:
        await voice.start_gateways(GATEWAYS, tmp_path)
        for mediation, gateway in (("127.0.28.11", "gw-dc1"), ("127.0.28.12", "gw-dc2"),
                                   ("127.0.28.21", "gw-branch")):
            await voice.wait_gateway([mediation], gateway, "up")
        yield voice
    finally:
        await voice.close()


async def branch_user(voice: Voice, name: str, local: str) -> UserAgent:
    """A branch user's client on its own branch address: the SBA first, then its backup
    registrar."""
    ua = UserAgent(UAConfig(aor=f"sip:{name}@{DOMAIN}", password=f"{name}-pw",
                            servers=(SBA, FE1), local_host=local,
                            reregister_on_flow_loss=True))
    await ua.start()
    response = await ua.register()
    assert response.status == 200, (name, response.status, response.reason)
    voice.agents[name] = ua
    return ua


def _on(ua: UserAgent, address: Address) -> bool:
    server = ua.registered_server
    return server is not None and (server.host, server.port) == (address.host, address.port)


async def _is(value: bool) -> bool:
    return value


async def answer_one(ua: UserAgent) -> None:
    call = await asyncio.wait_for(ua.incoming_calls.get(), 10)
    await call.answer(SDP)


async def test_a_cut_branch_wan_keeps_branch_users_calling_through_the_branch_gateway(
        gateways: Voice) -> None:
    """EV-5: WAN down — branch users stay on the SBA, call the PSTN through the branch
    gateway, call and message each other."""
    problem = netfilter_problem()
    if problem is not None:
        pytest.skip(problem)
    voice = gateways
    b1 = await branch_user(voice, "b1", BRANCH_CLIENTS[0])
    b2 = await branch_user(voice, "b2", BRANCH_CLIENTS[1])
    chain = "TRIMARAN-VOICE-WAN"
    cut_between(chain, BRANCH, CENTRAL)
    try:
        branch_gw = voice.gateways["gw-branch"]
        before = len(branch_gw.received())
        call, _ = await voice.dial("b1", "4255550123")
        assert branch_gw.received()[before].request_uri.startswith("sip:+14255550123@")
        await call.bye()
        pending = asyncio.ensure_future(voice.dial("b1", "4255550202"))    # b2's number
        await answer_one(b2)
        call, _ = await pending
        await call.bye()
        response = await b1.send_message(f"sip:b2@{DOMAIN}", "over the branch only")
        assert response.status == 200
        message = await b2.next_message(5)
        assert message.body == b"over the branch only"
        assert _on(b1, SBA) and _on(b2, SBA) and b1.mode == "full"
    finally:
        uncut(chain)


async def test_a_dead_sba_sends_branch_users_to_the_backup_registrar_still_calling(
        gateways: Voice) -> None:
    """EV-5, EV-6: SBA killed — branch users sign in to fe1 in resiliency mode, call out
    through the central gateway, and calls to their numbers reach them there."""
    voice = gateways
    b1 = await branch_user(voice, "b1", BRANCH_CLIENTS[0])
    voice.cli("server", "kill", "sba1a")
    try:
        await wait_for(lambda: _is(_on(b1, FE1)), 30, "b1 signed in to fe1")
        assert b1.mode == "resiliency"
        refused = await b1.publish(basic_pidf(f"sip:b1@{DOMAIN}", "open", "busy"))
        assert refused.status == 503                      # EV-7: refused, and told why
        assert "presence" in (refused.headers.get("Warning") or "").lower(), refused
        central = voice.gateways["gw-dc1"]
        before = len(central.received())
        call, _ = await voice.dial("b1", "4255550124")
        assert central.received()[before].request_uri.startswith("sip:+14255550124@")
        await call.bye()
        answering = asyncio.ensure_future(answer_one(b1))
        result = await SippCaller(GATEWAYS["gw-dc1"], "127.0.28.11:5060",
                                  to_number="+14255550201").run(calls=1, hold_ms=200)
        await asyncio.wait_for(answering, 15)
        assert result.successful == 1, result.describe()
    finally:
        voice.cli("server", "start", "sba1a")


async def test_a_lost_central_site_leaves_its_users_calling_through_the_other_site(
        gateways: Voice) -> None:
    """EV-4: dc1 lost — its users sign in to fe2 in resiliency mode, call out through
    dc2's Mediation pool and gateway, and receive calls from dc2's gateway."""
    voice = gateways
    a1 = await voice.sign_in("a1", (FE1, FE2))
    voice.cli("site", "fail", "dc1")
    await voice.gateways.pop("gw-dc1").kill()       # the site's gateway went with it
    try:
        await wait_for(lambda: _is(_on(a1, FE2)), 30, "a1 signed in to fe2")
        assert a1.mode == "resiliency"
        dc2 = voice.gateways["gw-dc2"]
        before = len(dc2.received())
        call, _ = await voice.dial("a1", "4255550125")
        assert dc2.received()[before].request_uri.startswith("sip:+14255550125@")
        await call.bye()
        answering = asyncio.ensure_future(answer_one(a1))
        result = await SippCaller(GATEWAYS["gw-dc2"], "127.0.28.12:5060",
                                  to_number="+14255550101").run(calls=1, hold_ms=200)
        await asyncio.wait_for(answering, 15)
        assert result.successful == 1, result.describe()
    finally:
        voice.cli("site", "restore", "dc1")
