"""OPTIONS, unknown methods, and the Front End's admin API (health, status, metrics)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp

from tests import admincreds
from tests.frontend.conftest import DOMAIN, FrontEnd
from trimaran.client.ua import UserAgent

MakeUA = Callable[..., Any]


async def test_options_to_the_server_lists_allowed_methods(
        frontend: FrontEnd, make_ua: MakeUA) -> None:
    alice: UserAgent = await make_ua("alice")
    response = await alice.send(alice.new_request("OPTIONS", f"sip:{DOMAIN}"))
    assert response.status == 200
    assert "INVITE" in response.tokens("Allow")


async def test_unknown_method_gets_405_with_allow(frontend: FrontEnd, make_ua: MakeUA) -> None:
    alice: UserAgent = await make_ua("alice")
    response = await alice.send(alice.new_request("FROBNICATE", f"sip:{DOMAIN}"))
    assert response.status == 405
    assert "REGISTER" in response.tokens("Allow")


async def test_health_status_and_metrics(frontend: FrontEnd, make_ua: MakeUA) -> None:
    await make_ua("alice")
    await make_ua("bob")
    async with aiohttp.ClientSession() as session:
        async with session.get(frontend.admin_url + "/health") as resp:
            assert resp.status == 200
            assert (await resp.json())["healthy"] is True
        deadline = asyncio.get_running_loop().time() + 5
        while True:  # the binding count is refreshed by housekeeping
            async with session.get(frontend.admin_url + "/status",
                                   headers=admincreds.headers("read")) as resp:
                status = await resp.json()
            if status["bindings"] == 2:
                break
            assert asyncio.get_running_loop().time() < deadline, status
            await asyncio.sleep(0.05)
        assert status["role"] == "frontend" and status["pool"] == "se1"
        assert status["version"]
        async with session.get(frontend.admin_url + "/metrics",
                               headers=admincreds.headers("read")) as resp:
            text = await resp.text()
    assert 'sip_requests_total{method="REGISTER"}' in text
    assert "registered_bindings 2.0" in text


async def test_health_is_503_while_the_store_is_unreachable(
        frontend: FrontEnd, make_ua: MakeUA) -> None:
    await frontend.store.close()  # the database goes away under the running server
    alice: UserAgent = await make_ua("alice", register=False)
    response = await alice.register()
    assert response.status == 503
    assert response.headers.get("Retry-After")
    async with aiohttp.ClientSession() as session, \
            session.get(frontend.admin_url + "/health") as resp:
        assert resp.status == 503
    await frontend.store.open()  # and comes back: service resumes without a restart
    deadline = asyncio.get_running_loop().time() + 5
    while frontend.server.health() != (True, "serving"):
        assert asyncio.get_running_loop().time() < deadline, frontend.server.health()
        await asyncio.sleep(0.05)
    assert (await alice.register()).status == 200
