"""The live status page in a real browser (SPEC OPS-3), real processes on 127.0.21.x: a
paired Standard Edition deployment with automatic failover and a witness in a third
site, whose page (found with `trimaran status --web`) is opened in headless Chromium.
A Front End is killed during the drill; the page, served by the witness, shows it down
and its pool failed over without a reload, while the page served by the killed server
says it is disconnected. Any JavaScript error fails the test. A
screenshot of the page is saved as a test artifact (`$TRIMARAN_ARTIFACTS`, else
`.artifacts/` in the checkout)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests import admincreds
from tests.browser import Browser, find_chromium
from tests.integration.drpair import ROOT, Node, Pair, running, se_pair

CHROMIUM = find_chromium()
pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian "
                                 "package `chromium`; `./run test` installs it as root)")]

SE1, SE2 = Node("se1", "se1", "127.0.21.1"), Node("se2", "se2", "127.0.21.2")
WITNESS = "127.0.21.9"
TOPOLOGY = se_pair("status-page", SE1, SE2, auto_failover=True, more_sites=("w",),
                   settings={"heartbeat_seconds": 0.5, "failure_detection_seconds": 2,
                             "resiliency_failover_seconds": 3,
                             "resiliency_fallback_seconds": 5},
                   more_pools="  - {name: wit, site: w, role: witness, servers: "
                              f"[{{name: wit1, address: {WITNESS}}}]}}\n")


def artifacts() -> Path:
    """Where the test saves what people look at afterwards (never committed)."""
    return Path(os.environ.get("TRIMARAN_ARTIFACTS") or ROOT / ".artifacts")


def server_is(name: str, state: str) -> str:
    return f"document.querySelector('[data-server=\"{name}\"]')?.dataset.state === '{state}'"


def pool_is(pool: str, state: str) -> str:
    return f"document.querySelector('[data-pool=\"{pool}\"]')?.dataset.failover === '{state}'"


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    async with running(tmp_path, TOPOLOGY, [SE1, SE2], {"se1": ["ann"]}) as deployment:
        yield deployment


async def test_the_page_shows_a_killed_server_down_and_its_pool_failed_over(
        pair: Pair, tmp_path: Path) -> None:
    url = pair.cli("status", "--web").stdout.split()[2]
    assert url == f"http://{WITNESS}:8080/status/page"     # the third site is preferred
    assert CHROMIUM is not None
    async with Browser.launch(CHROMIUM, tmp_path / "chromium") as browser:
        login = admincreds.basic()          # the user typed a read token (OPS-6)
        page = await browser.open(url, login)
        on_se1 = await browser.open(f"{SE1.base}/status/page", login)   # goes with the server
        try:
            await page.wait_for(" && ".join([server_is("se1", "up"), server_is("se2", "up"),
                                             server_is("wit1", "up"), pool_is("se1", "normal")]),
                                15, "every server up and se1 normal")
            assert await page.evaluate(
                "document.querySelector('[data-connection]').dataset.connection") == "live"

            pair.cli("server", "kill", "se1")
            await page.wait_for(server_is("se1", "down"), 10, "se1 shown down")
            await on_se1.wait_for("document.querySelector('[data-connection]')"
                                  ".dataset.connection === 'disconnected'", 10,
                                  "se1's own page shown disconnected")
            await page.wait_for(pool_is("se1", "failed-over"), 30, "se1 shown failed over")
            await page.wait_for("document.querySelector('tr[data-kind=\"failover\"]"
                                "[data-subject=\"se1\"]') !== null", 5,
                                "the automatic failover among the recent HA decisions")
            await page.wait_for("document.querySelector('[data-cms-master]')"
                                ".dataset.cmsMaster === 'se2'", 10,
                                "the CMS master shown on se2 (taken over with se1)")
            await page.wait_for("document.querySelector('[data-direction=\"se2>se1\"]')"
                                ".dataset.state === 'broken'", 10,
                                "shipping from se2 to the lost pool shown broken")
        finally:
            shot = await page.screenshot(artifacts() / "status-page-drill.png")
        assert page.errors == []
        assert [e for e in on_se1.errors if "ERR_CONNECTION_REFUSED" not in e] == []
    assert shot.stat().st_size > 10_000


async def test_the_browser_driver_reports_javascript_errors(tmp_path: Path) -> None:
    assert CHROMIUM is not None
    async with Browser.launch(CHROMIUM, tmp_path / "chromium") as browser:
        page = await browser.open("data:text/html,<script>console.error('bad');"
                                  "setTimeout(() => { throw new Error('worse') })</script>")
        await page.wait_for("true", 1, "the page")
        await page.evaluate("new Promise((done) => setTimeout(done, 100))")
    assert any("bad" in e for e in page.errors)
    assert any("worse" in e for e in page.errors)
