"""A small driver of headless Chromium over the Chrome DevTools Protocol, for the tests of
the status page: open a page, evaluate JavaScript in it, take a screenshot, and collect
every JavaScript error (uncaught exceptions, `console.error`, error log entries such as
failed loads or Content-Security-Policy violations).

Chromium runs with a fresh profile in a temporary directory, without sandbox (tests run
as root in CI), and with a proxy that does not exist for everything but loopback
(Chromium never proxies 127.0.0.0/8), so the browser sends nothing off this machine.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

START_TIMEOUT = 20.0
COMMAND_TIMEOUT = 15.0
FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
    "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-extensions",
    "--disable-default-apps", "--disable-domain-reliability", "--metrics-recording-only",
    "--proxy-server=http://127.0.0.1:9", "--window-size=1400,1000",
)


class BrowserError(Exception):
    """Chromium did not start, or a DevTools command failed."""


def find_chromium() -> str | None:
    """The Chromium executable (Debian package `chromium`), None when not installed."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """One headless Chromium process and its DevTools websocket."""

    def __init__(self, process: subprocess.Popen[bytes], session: aiohttp.ClientSession,
                 socket: aiohttp.ClientWebSocketResponse) -> None:
        self._process = process
        self._session = session
        self._socket = socket
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._pages: dict[str, Page] = {}
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    @contextlib.asynccontextmanager
    async def launch(cls, executable: str, workdir: Path) -> AsyncIterator[Browser]:
        """Start Chromium with its profile and log in `workdir`; stop it afterwards."""
        profile = workdir / "profile"
        profile.mkdir(parents=True, exist_ok=True)
        log = (workdir / "chromium.log").open("wb")
        process = subprocess.Popen([executable, *FLAGS, f"--user-data-dir={profile}",
                                    "about:blank"],
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        session = aiohttp.ClientSession()
        try:
            url = await _devtools_url(profile, process, workdir / "chromium.log")
            socket = await session.ws_connect(url, max_msg_size=0)
            browser = cls(process, session, socket)
            try:
                yield browser
            finally:
                await browser._close()
        finally:
            await session.close()
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)
            log.close()

    async def send(self, method: str, params: dict[str, Any] | None = None,
                   session_id: str | None = None) -> dict[str, Any]:
        """Run one DevTools command; its result (`BrowserError` when it failed)."""
        command_id = next(self._ids)
        message: dict[str, Any] = {"id": command_id, "method": method, "params": params or {}}
        if session_id is not None:
            message["sessionId"] = session_id
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[command_id] = future
        await self._socket.send_str(json.dumps(message))
        try:
            answer = await asyncio.wait_for(future, COMMAND_TIMEOUT)
        finally:
            self._pending.pop(command_id, None)
        if "error" in answer:
            raise BrowserError(f"{method}: {answer['error']}")
        result = answer.get("result", {})
        assert isinstance(result, dict)
        return result

    async def open(self, url: str, headers: dict[str, str] | None = None) -> Page:
        """A new tab showing `url`, loaded, its errors collected from the start; `headers`
        go with every request of the tab (e.g. the Basic credentials a user typed)."""
        target = await self.send("Target.createTarget", {"url": "about:blank"})
        attached = await self.send("Target.attachToTarget",
                                   {"targetId": target["targetId"], "flatten": True})
        page = Page(self, attached["sessionId"])
        self._pages[page.session_id] = page
        for domain in ("Runtime", "Log", "Page"):
            await page.send(f"{domain}.enable")
        if headers:
            await page.send("Network.enable")
            await page.send("Network.setExtraHTTPHeaders", {"headers": headers})
        await page.send("Page.navigate", {"url": url})
        await page.wait_for("document.readyState === 'complete'", 15, f"{url} to load")
        return page

    async def _read(self) -> None:
        async for message in self._socket:
            if message.type is not aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(message.data)
            future = self._pending.get(data.get("id", -1))
            if future is not None and not future.done():
                future.set_result(data)
            elif "method" in data and data.get("sessionId") in self._pages:
                self._pages[data["sessionId"]].on_event(data["method"], data.get("params", {}))
        for future in self._pending.values():
            if not future.done():
                future.set_exception(BrowserError("the DevTools connection closed"))

    async def _close(self) -> None:
        with contextlib.suppress(BrowserError, TimeoutError, ConnectionError):
            await self.send("Browser.close")
        await self._socket.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


class Page:
    """One tab: evaluate, wait for a condition, screenshot; `errors` holds every
    JavaScript error reported so far."""

    def __init__(self, browser: Browser, session_id: str) -> None:
        self.browser = browser
        self.session_id = session_id
        self.errors: list[str] = []

    async def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """A DevTools command for this tab."""
        return await self.browser.send(method, params, self.session_id)

    def on_event(self, method: str, params: dict[str, Any]) -> None:
        """Collect the errors among the tab's events."""
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            thrown = details.get("exception", {}).get("description") or details.get("text")
            self.errors.append(f"uncaught exception: {thrown}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            text = " ".join(str(a.get("value", a.get("description", "")))
                            for a in params.get("args", []))
            self.errors.append(f"console.{params['type']}: {text}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            self.errors.append(f"log ({entry.get('source')}): {entry.get('text')} "
                               f"{entry.get('url', '')}".strip())

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = await self.send("Runtime.evaluate", {"expression": expression,
                                                      "returnByValue": True,
                                                      "awaitPromise": True})
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result.get("result", {}).get("value")

    async def wait_for(self, expression: str, timeout: float, what: str,
                       interval: float = 0.2) -> float:
        """Wait until `expression` is truthy in the page; how long it took."""
        start = time.monotonic()
        while not await self.evaluate(expression):
            if time.monotonic() - start > timeout:
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
            await asyncio.sleep(interval)
        return time.monotonic() - start

    async def screenshot(self, path: Path) -> Path:
        """Save a PNG of the whole page (beyond the window) to `path`."""
        metrics = await self.send("Page.getLayoutMetrics")
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        shot = await self.send("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"],
                     "scale": 1}})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path


async def _devtools_url(profile: Path, process: subprocess.Popen[bytes], log: Path) -> str:
    """The browser's DevTools websocket, from the DevToolsActivePort file it writes."""
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BrowserError(f"chromium exited with {process.returncode}: "
                               f"{log.read_text(errors='replace')[-2000:]}")
        lines = port_file.read_text().split() if port_file.exists() else []
        if len(lines) >= 2:
            return f"ws://127.0.0.1:{lines[0]}{lines[1]}"
        await asyncio.sleep(0.05)
    raise BrowserError(f"chromium did not open DevTools within {START_TIMEOUT:.0f} s: "
                       f"{log.read_text(errors='replace')[-2000:]}")
