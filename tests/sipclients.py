"""SIP clients the integration tests drive by hand: baresip (a real client, headless)
and raw SIP over a socket of the test's own."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

from trimaran.sip.message import Response
from trimaran.sip.parser import StreamParser


class NoResponse(AssertionError):
    """The connection closed, or the deadline passed, before a response came."""


def read_response(conn: socket.socket, seconds: float = 5.0) -> Response:
    """The first SIP response read from `conn` (a blocking socket)."""
    parser = StreamParser(expect_ping=False)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        chunk = conn.recv(65536)
        if not chunk:
            break
        for frame in parser.feed(chunk):
            if isinstance(frame, Response):
                return frame
    raise NoResponse("no response before the connection closed or the deadline")


@contextlib.asynccontextmanager
async def baresip_until(config: Path, cwd: Path, line: str,
                        seconds: float) -> AsyncIterator[list[str]]:
    """Run baresip with the configuration directory `config` until it prints a line
    containing `line` (e.g. its "200 OK" to a REGISTER) within `seconds`; yield the lines
    it printed (more are not read); stop it on the way out."""
    process = await asyncio.create_subprocess_exec(
        "baresip", "-f", str(config), "-t", "30", "-s", cwd=cwd,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert process.stdout is not None
    seen: list[str] = []
    try:
        deadline = time.monotonic() + seconds
        while not any(line in printed for printed in seen):
            out = await asyncio.wait_for(process.stdout.readline(),
                                         max(0.1, deadline - time.monotonic()))
            if not out:
                raise AssertionError("baresip exited:\n" + "".join(seen[-40:]))
            seen.append(out.decode(errors="replace"))
        yield seen
    finally:
        if process.returncode is None:
            process.terminate()
            await process.wait()
