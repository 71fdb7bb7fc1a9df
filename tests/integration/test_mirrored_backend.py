"""A mirrored Back End under the Front End's own write path (SPEC BE-2, BE-6, BE-8).

`trimaran up` runs two Front End servers, a PostgreSQL principal, its synchronous
mirror, the agent beside each, and a witness. A writer keeps changing a user's
contact list over the Front End's HTTP API, each acknowledged PUT adding one
numbered contact. The principal is killed (or frozen with its agent): the mirror
must be promoted, writes must succeed again within 10 s, and every acknowledged
number must still be there afterwards; the old principal comes back as the mirror.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import admincreds
from trimaran.client.xcap import XcapClient, XcapError
from trimaran.sip import digest
from trimaran.store.model import ContactEntry, ContactGroup, ContactList, Credentials, User
from trimaran.store.postgres import PostgresStore

pytestmark = pytest.mark.skipif(
    not Path("/usr/lib/postgresql").exists(),
    reason="PostgreSQL server binaries missing (Debian package postgresql; ./run installs it)")

ROOT = Path(__file__).resolve().parents[2]
DOMAIN = "trimaran.test"
BE2_TARGET = 10.0
DB = {"fe5-principal": ("127.0.5.21", 5560), "fe5-mirror": ("127.0.5.22", 5560)}
TOPOLOGY = f"""
name: mirrored-test
sip_domain: {DOMAIN}
sites:
  - name: dc1
  - name: w1
pools:
  - name: fe5
    site: dc1
    role: frontend
    edition: enterprise
    servers:
      - name: fe5a
        address: 127.0.5.11
        sip_port: 5560
        admin_port: 8560
      - name: fe5b
        address: 127.0.5.12
        sip_port: 5560
        admin_port: 8560
    backend:
      principal:
        address: 127.0.5.21
        port: 5560
      mirror:
        address: 127.0.5.22
        port: 5560
      witness:
        server: wit5
  - name: wit
    site: w1
    role: witness
    servers:
      - name: wit5
        address: 127.0.5.31
        admin_port: 8561
"""
OWNER = f"sip:ann@{DOMAIN}"


def trimaran(*args: str, check: bool = True) -> str:
    result = subprocess.run([sys.executable, "-m", "trimaran", *args], capture_output=True,
                            text=True, timeout=180, cwd=ROOT)
    if check and result.returncode != 0:
        raise AssertionError(f"trimaran {' '.join(args)} -> {result.returncode}\n"
                             f"{result.stdout}\n{result.stderr}")
    return result.stdout


def agent_state(name: str) -> dict[str, object] | None:
    host, port = DB[name]
    try:
        request = urllib.request.Request(f"http://{host}:{port + 10000}/state",
                                         headers=admincreds.headers("read"))
        with urllib.request.urlopen(request, timeout=1) as r:
            value = json.loads(r.read())
            return value if isinstance(value, dict) else None
    except OSError:
        return None


def principal_now() -> str | None:
    for name in DB:
        state = agent_state(name)
        if state and state.get("role") == "principal" and state.get("serving"):
            return name
    return None


def synchronous_pair() -> bool:
    principal = principal_now()
    if principal is None:
        return False
    state = agent_state(principal) or {}
    instance = state.get("instance")
    standby = instance.get("standby") if isinstance(instance, dict) else None
    return isinstance(standby, dict) and standby.get("sync_state") == "sync"


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    tmp = tmp_path_factory.mktemp("mirrored")
    (tmp / "topology.yaml").write_text(TOPOLOGY)
    rundir = tmp / "run"
    trimaran("up", str(tmp / "topology.yaml"), "--dir", str(rundir))
    admincreds.for_rundir(rundir)        # this process now holds the deployment's key
    try:
        asyncio.run(_add_owner())
        yield rundir
    finally:
        trimaran("down", "--dir", str(rundir), check=False)


async def _add_owner() -> None:
    dsn = "postgresql://trimaran@127.0.5.21:5560,127.0.5.22:5560/trimaran" \
          "?target_session_attrs=read-write"
    store = PostgresStore(dsn, pool="fe5")
    await store.open()
    try:
        if await store.users.get(OWNER) is None:
            await store.users.add(User(OWNER, "fe5"), Credentials(
                OWNER, "ann", DOMAIN, digest.ha1("ann", DOMAIN, "ann-pw", "MD5"),
                digest.ha1("ann", DOMAIN, "ann-pw", "SHA-256")), now=time.time())
    finally:
        await store.close()


def postmaster_pid(rundir: Path, name: str) -> int:
    return int((rundir / "db" / name / "postmaster.pid").read_text().split()[0])


def instance_pids(rundir: Path, name: str) -> list[int]:
    """The postmaster and every process it started (each backend is its own session,
    so signalling the postmaster's group would not reach them)."""
    postmaster = postmaster_pid(rundir, name)
    pids = [postmaster]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == postmaster:
            pids.append(int(stat.parent.name))
    return pids


def signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def agent_pid(rundir: Path, name: str) -> int:
    state = json.loads((rundir / "state.json").read_text())
    return int(state["databases"][name]["agent_pid"])


class Writer:
    """Adds contact n to the list with each PUT; n advances only when a PUT succeeded."""

    def __init__(self) -> None:
        self.client = XcapClient("http://127.0.5.11:8560", OWNER, "ann", "ann-pw")
        self.acknowledged: list[tuple[int, float]] = []   # (n, when its PUT started)
        self.failures = 0
        self.stop = asyncio.Event()
        self.mark = float("inf")        # set to the failure time by the test
        self.last_duration = 0.0        # duration of the first PUT begun after `mark`

    def document(self, n: int) -> ContactList:
        return ContactList(OWNER, (ContactGroup("numbers"),), tuple(
            ContactEntry(f"sip:n{i}@{DOMAIN}", "", ("numbers",)) for i in range(n + 1)))

    async def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                await self.client.put(self.document(n))
            except (TimeoutError, XcapError, OSError):
                self.failures += 1
                await asyncio.sleep(0.1)
                continue
            self.acknowledged.append((n, started))
            if started > self.mark and self.last_duration == 0.0:
                self.last_duration = time.monotonic() - started
            n += 1
            await asyncio.sleep(0.05)


async def fail_principal(rundir: Path, how: str) -> None:
    await asyncio.to_thread(_wait, synchronous_pair, 60, "a synchronous pair")
    victim = principal_now()
    assert victim is not None
    writer = Writer()
    task = asyncio.ensure_future(writer.run())
    await asyncio.sleep(2)
    failed_at = time.monotonic()
    writer.mark = failed_at
    if how == "kill":
        os.kill(postmaster_pid(rundir, victim), signal.SIGKILL)
    else:  # freeze the principal's host: every process of its instance, and its agent
        frozen = [*instance_pids(rundir, victim), agent_pid(rundir, victim)]
        signal_all(frozen, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 30
        while not any(started > failed_at for _, started in writer.acknowledged):
            assert time.monotonic() < deadline, "no write succeeded after the failure"
            await asyncio.sleep(0.05)
        # the first write begun after the failure that was acknowledged: it committed on
        # the new principal (time measured to its start, so an upper bound of the gap)
        first = min(started for _, started in writer.acknowledged if started > failed_at)
        again = first - failed_at + writer.last_duration
        await asyncio.sleep(1)
    finally:
        if how == "freeze":
            signal_all(frozen, signal.SIGCONT)
        writer.stop.set()
        await task
    print(f"\n{how}: writes again after {again:.2f} s; {len(writer.acknowledged)} "
          f"acknowledged, {writer.failures} failed attempts")
    assert again <= BE2_TARGET, f"writes resumed after {again:.1f} s (BE-2 target 10 s)"
    assert principal_now() not in (None, victim)
    final = await writer.client.get()
    present = {c.uri for c in final.contacts}
    missing = [n for n, _ in writer.acknowledged if f"sip:n{n}@{DOMAIN}" not in present]
    assert missing == [], f"acknowledged writes lost: {missing}"
    # the old principal rejoins as the synchronous mirror by itself (BE-6)
    await asyncio.to_thread(_wait, lambda: (agent_state(victim) or {}).get("role") == "mirror"
                            and synchronous_pair(), 60, "old principal back as mirror")


def _wait(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.2)


async def test_principal_kill_loses_no_acknowledged_write(deployment: Path) -> None:
    await fail_principal(deployment, "kill")


async def test_frozen_principal_host_fails_over_and_rejoins(deployment: Path) -> None:
    await fail_principal(deployment, "freeze")
