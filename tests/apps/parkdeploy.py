"""An Enterprise pool of two Front End servers run as real processes, with Call Park and
group pickup configured, for the tests of APP-1, APP-2 and APP-6: users are created in
the Back End directly, each phone is pinned to one server (given only its address)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests import admincreds
from tests.integration.drpair import DOMAIN, trimaran, wait_for
from trimaran.client.dialogs import Call
from trimaran.client.ua import UAConfig, UserAgent
from trimaran.net.transport import Address
from trimaran.sip import digest
from trimaran.store.model import Credentials, User
from trimaran.store.postgres import PostgresStore

POOL = "fe1"
SIP_PORT, ADMIN_PORT, DB_PORT = 5060, 8080, 5432


def sdp(host: str, port: int) -> bytes:
    """A phone's SDP (signalling only: nothing listens)."""
    return (f"v=0\r\no=- 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n").encode()


def topology(name: str, fe1a: str, fe1b: str, db: str) -> str:
    """One Enterprise pool `fe1` of fe1a and fe1b on a PostgreSQL principal at `db`."""
    return f"""
name: {name}
sip_domain: {DOMAIN}
sites:
  - name: dc1
settings:
  heartbeat_seconds: 0.5
  failure_detection_seconds: 2
pools:
  - name: {POOL}
    site: dc1
    role: frontend
    edition: enterprise
    servers:
      - {{name: fe1a, address: {fe1a}}}
      - {{name: fe1b, address: {fe1b}}}
    backend:
      principal: {{address: {db}, port: {DB_PORT}}}
"""


def apps(*, timeout: float, ring_back: float, attempts: int, timeout_uri: str,
         members: tuple[str, ...], music: str | None = None) -> str:
    """Call Park orbits *7000-*7009 (music on hold: the audio file of SHA-256 `music`)
    and pickup group *8001 of pool fe1."""
    aors = ", ".join(f"'sip:{m}@{DOMAIN}'" for m in members)
    audio = f"audio: [{{name: music, sha256: {music}}}]\n" if music else ""
    moh = "\n    music_on_hold: music" if music else ""
    return audio + f"""
call_park:
  - pool: {POOL}
    orbits: [{{first: '*7000', last: '*7009'}}]
    timeout_seconds: {timeout}
    ring_back_seconds: {ring_back}
    max_pickup_attempts: {attempts}
    timeout_uri: '{timeout_uri}'{moh}
group_pickup:
  - pool: {POOL}
    ranges: [{{first: '*8000', last: '*8009'}}]
    groups:
      - {{number: '*8001', members: [{aors}]}}
"""


@dataclass
class ParkPool:
    """A running pool and the phones of one test."""

    rundir: Path
    servers: dict[str, str]                  # name -> address
    clients: tuple[str, ...]                 # local addresses for phones, in turn
    phones: dict[str, UserAgent] = field(default_factory=dict)

    def cli(self, *args: str, check: bool = True, timeout: float = 60) -> str:
        result = trimaran(*args, "--dir", str(self.rundir), check=check, timeout=timeout)
        return result.stdout + ("" if check else result.stderr)

    def status(self, server: str) -> dict[str, object]:
        url = f"http://{self.servers[server]}:{ADMIN_PORT}/status"
        request = urllib.request.Request(url, headers=admincreds.headers("read"))
        with urllib.request.urlopen(request, timeout=2) as response:
            value = json.loads(response.read())
        assert isinstance(value, dict)
        return value

    def app_status(self, server: str, kind: str) -> dict[str, object]:
        apps = self.status(server)["apps"]
        assert isinstance(apps, dict)
        value = apps["apps"][kind]
        assert isinstance(value, dict)
        return value

    def address(self, server: str) -> Address:
        return Address("tcp", self.servers[server], SIP_PORT)

    async def sign_in(self, name: str, server: str) -> UserAgent:
        """`name`'s phone, signed in on `server` only."""
        local = self.clients[len(self.phones) % len(self.clients)]
        ua = UserAgent(UAConfig(aor=f"sip:{name}@{DOMAIN}", password=f"{name}-pw",
                                servers=(self.address(server),), local_host=local))
        await ua.start()
        self.phones[name] = ua
        response = await ua.register()
        assert response.status == 200, (name, response.status, response.reason)
        return ua

    async def close_phones(self) -> None:
        for ua in self.phones.values():
            with contextlib.suppress(Exception):
                await ua.close()
        self.phones.clear()


async def connect(caller: UserAgent, callee: UserAgent, caller_sdp: bytes,
                  callee_sdp: bytes) -> tuple[Call, Call]:
    """`caller` calls `callee`, who answers: both sides of the established call."""
    call = caller.start_call(str(callee.aor), caller_sdp)
    incoming = await asyncio.wait_for(callee.incoming_calls.get(), 5)
    await incoming.answer(callee_sdp)
    await asyncio.wait_for(caller.wait_answer(call), 5)
    return call, incoming


async def create_users(db: str, names: list[str]) -> None:
    store = PostgresStore(f"postgresql://trimaran@{db}:{DB_PORT}/trimaran", pool=POOL)
    await store.open()
    try:
        now = time.time()
        for name in names:
            aor = f"sip:{name}@{DOMAIN}"
            password = f"{name}-pw"
            await store.users.add(User(aor, POOL), Credentials(
                aor, name, DOMAIN, digest.ha1(name, DOMAIN, password, "MD5"),
                digest.ha1(name, DOMAIN, password, "SHA-256")), now=now)
    finally:
        await store.close()


@contextlib.contextmanager
def running_pool(tmp: Path, *, name: str, servers: dict[str, str], db: str,
                 clients: tuple[str, ...], users: list[str], apps_yaml: str,
                 audio: tuple[bytes, ...] = ()) -> Iterator[ParkPool]:
    """`trimaran up` of the pool, users, the `audio` files (WAV) added, the applications
    published and in use on both servers; `trimaran down` afterwards whatever happened."""
    path = tmp / "topology.yaml"
    path.write_text(topology(name, servers["fe1a"], servers["fe1b"], db))
    rundir = tmp / "run"
    trimaran("up", str(path), "--dir", str(rundir), timeout=120)
    admincreds.for_rundir(rundir)        # this process now holds the deployment's key
    try:
        asyncio.run(create_users(db, users))
        pool = ParkPool(rundir, servers, clients)
        for i, data in enumerate(audio):
            wav = tmp / f"audio{i}.wav"
            wav.write_bytes(data)
            pool.cli("apps", "audio", "add", str(wav))
        config = tmp / "apps.yaml"
        config.write_text(apps_yaml)
        pool.cli("apps", "publish", str(config))

        async def in_use() -> bool:
            try:
                return all(pool.app_status(s, "park").get("orbits_configured") and
                           pool.app_status(s, "pickup").get("groups_configured")
                           for s in servers)
            except (OSError, KeyError):
                return False
        asyncio.run(wait_for(in_use, 20, "the applications configuration in use"))
        yield pool
    finally:
        trimaran("down", "--dir", str(rundir), check=False, timeout=120)
