"""The SIP core interoperates with SIPp, a real SIP implementation (issue: SIP core).

SIPp drives calls and MESSAGEs into an echo UAS built from trimaran.sip + trimaran.net,
over UDP and TCP; and the client library calls a SIPp UAS and registers with a SIPp
registrar that checks its digest credentials.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.interop.sipp import SCENARIOS, free_port, run_sipp
from trimaran.client.dialogs import CallFailed
from trimaran.client.echo import EchoServer
from trimaran.client.ua import UAConfig, UserAgent
from trimaran.net.transport import Address
from trimaran.sip.transaction import TimerConfig

pytestmark = pytest.mark.interop

TRANSPORTS = {"udp": "u1", "tcp": "t1"}


@pytest.fixture
async def echo() -> AsyncIterator[EchoServer]:
    server = EchoServer("127.0.0.1")
    await server.start()
    yield server
    await server.close()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_sipp_calls_complete_against_the_echo_uas(
        echo: EchoServer, transport: str, tmp_path: Path) -> None:
    host, port = echo.address(transport)
    calls = 20
    result = await run_sipp(
        ["-sn", "uac", f"{host}:{port}", "-i", "127.0.0.1", "-p", str(free_port()),
         "-t", TRANSPORTS[transport], "-m", str(calls), "-r", "50", "-l", "10",
         "-d", "10", "-timeout", "30s", "-timeout_error", "-recv_timeout", "5000"],
        tmp_path)
    assert result.returncode == 0, result.describe()
    assert result.counter("SuccessfulCall(C)") == calls, result.describe()
    assert result.counter("FailedCall(C)") == 0, result.describe()
    assert echo.requests.get("INVITE") == calls
    assert echo.requests.get("BYE") == calls
    assert echo.acks == calls


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_sipp_messages_are_answered_by_the_echo_uas(
        echo: EchoServer, transport: str, tmp_path: Path) -> None:
    host, port = echo.address(transport)
    messages = 50
    result = await run_sipp(
        ["-sf", str(SCENARIOS / "message_uac.xml"), f"{host}:{port}", "-i", "127.0.0.1",
         "-p", str(free_port()), "-t", TRANSPORTS[transport], "-m", str(messages),
         "-r", "100", "-timeout", "30s", "-timeout_error", "-s", "echo"],
        tmp_path)
    assert result.returncode == 0, result.describe()
    assert result.counter("SuccessfulCall(C)") == messages, result.describe()
    assert echo.requests.get("MESSAGE") == messages


async def _ua(server: Address, **overrides: object) -> UserAgent:
    config = UAConfig(aor="sip:alice@sipp.test", password="s3cret-Alice", servers=(server,),
                      timers=TimerConfig(t1=0.5), auto_refresh=False)
    ua = UserAgent(config)
    await ua.start()
    return ua


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_client_library_calls_a_sipp_uas(transport: str, tmp_path: Path) -> None:
    port = free_port()
    sipp = asyncio.ensure_future(run_sipp(
        ["-sn", "uas", "-i", "127.0.0.1", "-p", str(port), "-t", TRANSPORTS[transport],
         "-m", "1", "-timeout", "20s", "-timeout_error"], tmp_path))
    ua = await _ua(Address(transport, "127.0.0.1", port))
    try:
        call = None
        for _ in range(50):  # SIPp needs a moment to bind; retry until it answers
            try:
                call = await ua.invite(f"sip:service@127.0.0.1:{port}", b"v=0\r\n")
                break
            except CallFailed as exc:  # retried until SIPp listens
                if exc.status not in (408, 503):
                    raise
                await asyncio.sleep(0.1)
        assert call is not None, "SIPp UAS never answered"
        assert 180 in call.provisional
        bye = await call.bye()
        assert bye.status == 200
        result = await sipp
        assert result.returncode == 0, result.describe()
        assert result.counter("SuccessfulCall(C)") == 1, result.describe()
    finally:
        await ua.close()
        if not sipp.done():
            sipp.cancel()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_client_library_registers_with_digest_at_a_sipp_registrar(
        transport: str, tmp_path: Path) -> None:
    port = free_port()
    sipp = asyncio.ensure_future(run_sipp(
        ["-sf", str(SCENARIOS / "registrar_digest_uas.xml"), "-i", "127.0.0.1",
         "-p", str(port), "-t", TRANSPORTS[transport], "-m", "1", "-timeout", "20s",
         "-timeout_error"], tmp_path))
    ua = await _ua(Address(transport, "127.0.0.1", port))
    try:
        response = None
        for _ in range(50):
            response = await ua.register(60)
            if response.status not in (408, 503):
                break
            await asyncio.sleep(0.1)
        assert response is not None and response.status == 200, response
        result = await sipp
        assert result.returncode == 0, result.describe()
        assert result.counter("SuccessfulCall(C)") == 1, result.describe()
        assert result.counter("FailedCall(C)") == 0, result.describe()
    finally:
        await ua.close()
        if not sipp.done():
            sipp.cancel()


async def test_wrong_password_is_refused_by_the_sipp_registrar(tmp_path: Path) -> None:
    # The negative twin of the digest test: proves SIPp really checks our digest.
    port = free_port()
    sipp = asyncio.ensure_future(run_sipp(
        ["-sf", str(SCENARIOS / "registrar_digest_uas.xml"), "-i", "127.0.0.1",
         "-p", str(port), "-t", "u1", "-m", "1", "-timeout", "20s"], tmp_path))
    config = UAConfig(aor="sip:alice@sipp.test", password="wrong", auto_refresh=False,
                      servers=(Address("udp", "127.0.0.1", port),))
    ua = UserAgent(config)
    await ua.start()
    try:
        response = None
        for _ in range(50):
            response = await ua.register(60)
            if response.status not in (408, 503):
                break
            await asyncio.sleep(0.1)
        assert response is not None and response.status == 403
        result = await sipp
        assert result.counter("FailedCall(C)") == 1, result.describe()
    finally:
        await ua.close()
        if not sipp.done():
            sipp.cancel()
