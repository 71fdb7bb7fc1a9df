"""The SIPp PSTN gateway harness does what the Enterprise Voice tests rely on.

Each gateway mode is driven by Trimaran's own client stack (a `UserAgent` on
127.0.26.240 acting as the Mediation server's gateway side); the SIPp caller is checked
against SIPp gateways. Everything runs on 127.0.26.0/24.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.interop.sipp import free_port
from tests.voice.gateway import GatewayMode, SippCaller, SippGateway, Transport
from trimaran.client.dialogs import Call, CallFailed, CallState
from trimaran.client.ua import UAConfig, UserAgent
from trimaran.net.transport import Address
from trimaran.sip.message import Response
from trimaran.sip.transaction import TimerConfig, build_cancel

pytestmark = pytest.mark.interop

GATEWAY_IP = "127.0.26.201"
MEDIATION_IP = "127.0.26.240"
CALLER_IP = "127.0.26.241"
CALLED = "+14255550123"
SDP = (b"v=0\r\no=- 1 1 IN IP4 127.0.26.240\r\ns=-\r\nc=IN IP4 127.0.26.240\r\nt=0 0\r\n"
       b"m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
QUICK = TimerConfig(t1=0.02, t2=0.16, t4=0.2)  # a non-INVITE request times out in 1.28 s


@contextlib.asynccontextmanager
async def gateway(tmp_path: Path, mode: GatewayMode,
                  transport: Transport = "udp") -> AsyncIterator[SippGateway]:
    gw = SippGateway(GATEWAY_IP, free_port(host=GATEWAY_IP), mode=mode, transport=transport,
                     workdir=tmp_path / "gateway", trace_messages=True)
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop()


@contextlib.asynccontextmanager
async def mediation(gw: SippGateway, timers: TimerConfig | None = None,
                    ) -> AsyncIterator[UserAgent]:
    """The Mediation server's side facing the gateway, played by the client library."""
    ua = UserAgent(UAConfig(aor=f"sip:mediation@{MEDIATION_IP}", password="unused",
                            servers=(Address(gw.transport, gw.address, gw.port),),
                            local_host=MEDIATION_IP, auto_refresh=False,
                            timers=timers or TimerConfig()))
    await ua.start()
    try:
        yield ua
    finally:
        await ua.close()


async def options(ua: UserAgent, gw: SippGateway) -> Response:
    return await ua.send(ua.new_request("OPTIONS", f"sip:{gw.target}"))


async def eventually(check: Callable[[], bool], timeout: float = 3.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.02)


async def abandon(call: Call) -> None:
    """Forget an unanswered call on our side (the UA's close fails its transaction)."""
    assert call.pending is not None
    call.pending.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await call.pending


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_answer_mode_establishes_the_call_and_answers_the_bye(
        tmp_path: Path, transport: Transport) -> None:
    async with gateway(tmp_path, "answer", transport) as gw, mediation(gw) as ua:
        call = await ua.invite(gw.uri(CALLED), SDP)
        assert call.state is CallState.ESTABLISHED
        assert call.provisional == [100, 180]
        assert b"m=audio" in call.remote_body
        assert (await options(ua, gw)).status == 200  # probes answered during a call
        assert (await call.bye()).status == 200

        [invite] = gw.received()
        assert invite.request_uri == f"sip:{CALLED}@{gw.address}:{gw.port};user=phone"
        assert invite.from_uri == f"sip:mediation@{MEDIATION_IP}"
        assert invite.call_id == call.call_id
        assert gw.answered() == 1
        stats = gw.stats()
        assert (stats.invites, stats.answered, stats.hangups, stats.options) == (1, 1, 1, 1)


async def test_reject503_mode_refuses_every_call_with_503(tmp_path: Path) -> None:
    async with gateway(tmp_path, "reject503") as gw, mediation(gw) as ua:
        with pytest.raises(CallFailed) as refused:
            await ua.invite(gw.uri(CALLED), SDP)
        assert refused.value.status == 503
        assert (await options(ua, gw)).status == 200

        assert [i.request_uri for i in gw.received()] == [gw.uri(CALLED)]
        assert gw.answered() == 0
        assert gw.stats().rejected == 1


async def test_silent_mode_never_answers_the_invite_but_answers_options(
        tmp_path: Path) -> None:
    async with gateway(tmp_path, "silent") as gw, mediation(gw) as ua:
        call = ua.start_call(gw.uri(CALLED), SDP)
        assert call.pending is not None
        done, _ = await asyncio.wait({call.pending}, timeout=2.0)
        assert not done and call.provisional == []  # not even 100 Trying in 2 s,
        # although the INVITE was retransmitted (T1 = 0.5 s) and arrived:
        assert (await options(ua, gw)).status == 200
        [invite] = await gw.wait_received(1)
        assert invite.request_uri == gw.uri(CALLED)
        assert invite.mode == "silent"
        await abandon(call)


async def test_ring_mode_rings_until_cancel_then_ends_the_invite_with_487(
        tmp_path: Path) -> None:
    async with gateway(tmp_path, "ring") as gw, mediation(gw) as ua:
        call = ua.start_call(gw.uri(CALLED), SDP)
        await eventually(lambda: 180 in call.provisional)
        assert (await options(ua, gw)).status == 200  # probes answered while ringing
        assert call.invite is not None
        cancel = await ua.endpoint.request(build_cancel(call.invite), ua.server)
        assert cancel.status == 200
        with pytest.raises(CallFailed) as ended:
            await ua.wait_answer(call)
        assert ended.value.status == 487

        assert [i.request_uri for i in gw.received()] == [gw.uri(CALLED)]
        assert gw.stats().cancelled == 1
        assert gw.answered() == 0


async def test_kill_silences_options_and_restart_answers_them_again(tmp_path: Path) -> None:
    async with gateway(tmp_path, "answer") as gw, mediation(gw, QUICK) as ua:
        assert (await options(ua, gw)).status == 200
        await gw.kill()
        assert not gw.running
        assert (await options(ua, gw)).status == 408  # Timer F: no response at all
        await gw.restart()
        assert gw.running
        assert (await options(ua, gw)).status == 200
        assert gw.stats().starts == 2


async def test_set_mode_switches_the_scenario_on_the_same_address(tmp_path: Path) -> None:
    async with gateway(tmp_path, "answer") as gw, mediation(gw) as ua:
        call = await ua.invite(gw.uri(CALLED), SDP)
        assert (await call.bye()).status == 200
        await gw.set_mode("reject503")
        with pytest.raises(CallFailed) as refused:
            await ua.invite(gw.uri(CALLED), SDP)
        assert refused.value.status == 503

        assert [i.mode for i in gw.received()] == ["answer", "reject503"]
        assert gw.answered() == 1


async def test_caller_completes_calls_through_an_answering_gateway(tmp_path: Path) -> None:
    async with gateway(tmp_path, "answer") as gw:
        caller = SippCaller(CALLER_IP, gw.target, "+14255550101", "+12065550199",
                            workdir=tmp_path / "caller")
        result = await caller.run(calls=5, rate=50, answer_timeout=5, hold_ms=50)

        assert (result.successful, result.failed) == (5, 0), result.describe()
        assert result.final_codes == {200: 5}
        assert result.provisional_codes == {100: 5, 180: 5}
        assert len(result.setup_latencies) == 5 and all(
            0 < latency < 5 for latency in result.setup_latencies)
        assert gw.answered() == 5
        invites = gw.received()
        assert {i.request_uri for i in invites} == {
            f"sip:+14255550101@{gw.target};user=phone"}
        assert {i.from_uri for i in invites} == {f"sip:+12065550199@{CALLER_IP};user=phone"}


async def test_caller_reports_every_call_refused_with_503(tmp_path: Path) -> None:
    async with gateway(tmp_path, "reject503") as gw:
        caller = SippCaller(CALLER_IP, gw.target, workdir=tmp_path / "caller")
        result = await caller.run(calls=5, rate=50, answer_timeout=5)

        assert (result.successful, result.failed) == (0, 5), result.describe()
        assert result.final_codes == {503: 5}
        assert result.setup_latencies == ()
        assert gw.stats().rejected == 5
