"""Start, stop and watch the server processes of a deployment on this machine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable

from trimaran.admin import access
from trimaran.deploy.rundir import DeploymentState, RunDir, ServerState
from trimaran.security import https


class SupervisorError(Exception):
    """A server could not be started or stopped as asked."""


def pid_alive(pid: int | None) -> bool:
    """True when `pid` is a live (non-zombie) process."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return True


def start_server(rundir: RunDir, server: ServerState) -> int:
    """Spawn `trimaran serve` for `server`, logging to its log file; return the pid."""
    log_path = rundir.log_file(server.name)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "trimaran", "serve", "--server", server.name,
             "--dir", str(rundir.path)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    server.pid = proc.pid
    return proc.pid


def health(server: ServerState, timeout: float = 1.0) -> tuple[bool, str]:
    """Ask the server's admin API for /health."""
    url = f"http://{server.address}:{server.admin_port}/health"
    try:
        with https.urlopen(url, timeout=timeout) as response:
            body = json.loads(response.read() or b"{}")
            return True, str(body.get("reason", "serving"))
    except urllib.error.HTTPError as exc:
        return False, f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return False, str(getattr(exc, "reason", exc))


def request_json(url: str, body: dict[str, object] | None = None,
                 timeout: float = 1.0) -> tuple[int, dict[str, object] | None]:
    """GET (or POST `body` as JSON) an admin URL: (HTTP status, JSON object or None);
    status 0 when nothing answered."""
    data = json.dumps(body).encode() if body is not None else None
    method = "POST" if data is not None else "GET"
    request = urllib.request.Request(url, data=data, method=method, headers={
        "Content-Type": "application/json", **access.headers_for(method, url, data or b"")})
    try:
        with https.urlopen(request, timeout=timeout) as response:  # loopback only
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (urllib.error.URLError, OSError):
        return 0, None
    try:
        value = json.loads(raw)
    except ValueError:
        return status, None
    return status, value if isinstance(value, dict) else None


def fetch_json(server: ServerState, path: str, timeout: float = 1.0) -> dict[str, object] | None:
    """GET a JSON document from the server's admin API, None when unreachable or refused."""
    status, value = request_json(f"http://{server.address}:{server.admin_port}{path}",
                                 timeout=timeout)
    return value if status == 200 else None


def post_json(server: ServerState, path: str, timeout: float = 5.0) -> dict[str, object] | None:
    """POST to the server's admin API; the JSON answer, None when refused/unreachable."""
    status, value = request_json(f"http://{server.address}:{server.admin_port}{path}", {},
                                 timeout=timeout)
    return value if status == 200 else None


def wait_healthy(servers: Iterable[ServerState], timeout: float) -> list[str]:
    """Wait until every server answers /health with 200; return those that never did."""
    pending = {s.name: s for s in servers}
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for name, server in list(pending.items()):
            if not pid_alive(server.pid):
                continue
            ok, _ = health(server, timeout=0.5)
            if ok:
                del pending[name]
        if pending:
            time.sleep(0.1)
    return sorted(pending)


def signal_server(server: ServerState, sig: signal.Signals) -> bool:
    """Send `sig` to the server's process group; False when it was not running."""
    if not pid_alive(server.pid):
        return False
    assert server.pid is not None
    try:
        os.killpg(server.pid, sig)
    except ProcessLookupError:
        return False
    return True


def wait_exit(server: ServerState, timeout: float) -> bool:
    """Wait for the server's process to end; True when it did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(server.pid):
            return True
        time.sleep(0.05)
    return not pid_alive(server.pid)


def stop_server(server: ServerState, timeout: float = 10.0) -> None:
    """SIGTERM (ordered shutdown), then SIGKILL if it lingers."""
    if signal_server(server, signal.SIGTERM) and not wait_exit(server, timeout):
        signal_server(server, signal.SIGKILL)
        wait_exit(server, 5.0)


def stop_all(state: DeploymentState, timeout: float = 10.0) -> None:
    """Stop every server of the deployment."""
    for server in state.servers.values():
        signal_server(server, signal.SIGTERM)
    for server in state.servers.values():
        if not wait_exit(server, timeout):
            signal_server(server, signal.SIGKILL)
            wait_exit(server, 5.0)
