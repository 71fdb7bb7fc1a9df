"""The status page's endpoints and the gathering behind them (SPEC OPS-3), against real
sockets on 127.0.21.6x: one round of requests however many pages ask, silent servers
shown down with the reason, the page and its assets served read-only under a strict
Content-Security-Policy."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources

import aiohttp
import pytest
from aiohttp import web

from trimaran.admin.http import add_routes
from trimaran.admin.overview import Overview
from trimaran.admin.statuspage import StatusPage
from trimaran.topology.loader import parse_topology
from trimaran.topology.model import Topology

FAKE, SILENT, CLOSED = "127.0.21.61", "127.0.21.62", "127.0.21.63"

Serve = Callable[[web.Application, str], Awaitable[int]]


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Serve apps on loopback addresses (port 0); their ports."""
    runners: list[web.AppRunner] = []

    async def start(app: web.Application, host: str) -> int:
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, host, 0)
        await site.start()
        return int(runner.addresses[0][1])

    yield start
    for runner in runners:
        await runner.cleanup()


def topology(fake_port: int, silent_port: int) -> Topology:
    return parse_topology(f"""
name: page-test
sip_domain: trimaran.test
sites: [{{name: dc1}}]
pools:
  - name: se1
    site: dc1
    role: frontend
    edition: standard
    servers:
      - {{name: alive, address: {FAKE}, admin_port: {fake_port}}}
      - {{name: frozen, address: {SILENT}, admin_port: {silent_port}}}
      - {{name: gone, address: {CLOSED}, admin_port: 9}}
""")


def fake_frontend(asked: list[str]) -> web.Application:
    async def answer(request: web.Request) -> web.Response:
        asked.append(request.path)
        return web.json_response({"healthy": True, "reason": "serving", "bindings": 2})
    app = web.Application()
    app.router.add_get("/health", answer)
    app.router.add_get("/status", answer)
    return app


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    """A listener that accepts connections and never answers (a frozen server)."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, SILENT, 0)
    yield int(server.sockets[0].getsockname()[1])
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


async def test_one_round_serves_every_page_until_it_is_a_second_old(
        serve: Serve, silent_port: int) -> None:
    asked: list[str] = []
    port = await serve(fake_frontend(asked), FAKE)
    clock = Clock()
    overview = Overview(topology(port, silent_port), server="alive", timeout=0.3,
                        monotonic=clock)
    try:
        documents = await asyncio.gather(*(overview.document() for _ in range(5)))
        assert asked.count("/health") == 1
        assert all(d is documents[0] for d in documents)
        clock.now += 0.5
        await overview.document()
        assert asked.count("/health") == 1
        clock.now += 0.6
        await overview.document()
        assert asked.count("/health") == 2
    finally:
        await overview.close()


async def test_silent_and_absent_servers_are_shown_down_with_the_reason(
        serve: Serve, silent_port: int) -> None:
    port = await serve(fake_frontend([]), FAKE)
    overview = Overview(topology(port, silent_port), server="alive", timeout=0.3)
    try:
        servers = {s["name"]: s for s in (await overview.document())["servers"]}
    finally:
        await overview.close()
    assert (servers["alive"]["state"], servers["alive"]["bindings"]) == ("up", 2)
    assert (servers["frozen"]["state"], servers["frozen"]["reason"]) == \
        ("down", "no answer within 0.3 s")
    assert (servers["gone"]["state"], servers["gone"]["reason"]) == \
        ("down", "Connection refused")


async def test_the_page_its_assets_and_the_document_are_served_read_only(
        serve: Serve, silent_port: int) -> None:
    overview = Overview(topology(9, silent_port), server="alive", timeout=0.3)
    app = web.Application()
    add_routes(app, StatusPage(overview).routes())
    base = f"http://{FAKE}:{await serve(app, FAKE)}"
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/status/page") as page:
                assert page.status == 200 and page.content_type == "text/html"
                policy = page.headers["Content-Security-Policy"]
                assert "script-src 'self'" in policy and "default-src 'none'" in policy
                assert "/status/page/status.js" in await page.text()
            async with session.get(f"{base}/status/page/status.js") as script:
                assert script.status == 200 and script.content_type == "text/javascript"
            async with session.get(f"{base}/status/page/secrets.txt") as missing:
                assert missing.status == 404
                assert "no such asset" in (await missing.json())["error"]
            async with session.get(f"{base}/status/deployment") as document:
                assert document.headers["Cache-Control"] == "no-store"
                body = await document.json()
            async with session.post(f"{base}/status/deployment") as post:
                assert post.status == 405
    finally:
        await overview.close()
    assert body["served_by"] == "alive"
    assert [s["state"] for s in body["servers"]] == ["down", "down", "down"]


def test_the_script_puts_data_into_the_page_only_as_text() -> None:
    script = resources.files("trimaran.admin").joinpath("static/status.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script
