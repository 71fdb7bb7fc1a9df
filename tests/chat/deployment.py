"""A deployment with a Persistent Chat pool run as real processes for the chat tests:
two data centers (a Front End pool in each), a witness site, the chat pool's servers
in both data centers, its mirrored store in dc1 and the log-shipped copy in dc2."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests import admincreds
from tests.integration.drpair import DOMAIN, trimaran
from trimaran.client.chat import ChatError, ChatMember
from trimaran.client.ua import UAConfig, UserAgent
from trimaran.net.transport import Address

NET = "127.0.47"
FE1, FE2 = f"{NET}.1", f"{NET}.2"
CHAT = {"pc1": f"{NET}.21", "pc2": f"{NET}.22", "pc3": f"{NET}.23",
        "pc4": f"{NET}.24", "pc5": f"{NET}.25"}
DC1_CHAT, DC2_CHAT = ("pc1", "pc2", "pc3"), ("pc4", "pc5")
PRINCIPAL, MIRROR, SHIPPED = f"{NET}.31", f"{NET}.32", f"{NET}.41"
TOPOLOGY = f"""
name: chat-dr
sip_domain: {DOMAIN}
sites: [{{name: dc1}}, {{name: dc2}}, {{name: w}}]
settings:
  heartbeat_seconds: 0.5
  failure_detection_seconds: 2
  resiliency_failover_seconds: 3
  resiliency_fallback_seconds: 5
pools:
  - {{name: fe1, site: dc1, role: frontend, edition: standard, backup_pool: fe2,
     servers: [{{name: fe1a, address: {FE1}}}]}}
  - {{name: fe2, site: dc2, role: frontend, edition: standard, backup_pool: fe1,
     servers: [{{name: fe2a, address: {FE2}}}]}}
  - {{name: wit, site: w, role: witness,
     servers: [{{name: w1, address: {NET}.9, admin_port: 8099}}]}}
  - name: pchat
    site: dc1
    role: chat
    servers:
      - {{name: pc1, address: {CHAT['pc1']}}}
      - {{name: pc2, address: {CHAT['pc2']}}}
      - {{name: pc3, address: {CHAT['pc3']}}}
      - {{name: pc4, address: {CHAT['pc4']}, site: dc2}}
      - {{name: pc5, address: {CHAT['pc5']}, site: dc2}}
    active_servers: [pc1, pc2, pc3]
    backend:
      principal: {{address: {PRINCIPAL}}}
      mirror: {{address: {MIRROR}}}
      witness: {{server: w1}}
    log_shipping:
      site: dc2
      principal: {{address: {SHIPPED}}}
"""


@dataclass
class Chat:
    """A running chat deployment in `rundir` and its members."""

    rundir: Path
    members: dict[str, ChatMember] = field(default_factory=dict)

    def cli(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        """Run the CLI on this deployment: its output (and errors, when not `check`)."""
        result = trimaran(*args, "--dir", str(self.rundir), check=check, timeout=timeout)
        return result.stdout if check else result.stdout + result.stderr

    def cli_json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--json"))

    def status(self, server: str) -> dict[str, Any]:
        request = urllib.request.Request(f"http://{CHAT[server]}:8080/status",
                                         headers=admincreds.headers("read"))
        with urllib.request.urlopen(request, timeout=2) as resp:
            value = json.loads(resp.read())
        assert isinstance(value, dict)
        return value

    async def member(self, name: str, *, keepalive: float = 1.0) -> ChatMember:
        """`name` (a user of fe2, created on first use) signed in and connected."""
        if name in self.members:
            return self.members[name]
        ua = UserAgent(UAConfig(aor=f"sip:{name}@{DOMAIN}", password=f"{name}-pw",
                                servers=(Address("tcp", FE2, 5060), Address("tcp", FE1, 5060)),
                                reregister_on_flow_loss=True))
        await ua.start()
        response = await ua.register()
        assert response.status == 200, (name, response.status, response.reason)
        member = ChatMember(ua, DOMAIN, keepalive=keepalive, retry_for=40.0)
        await member.connect()
        self.members[name] = member
        return member

    def add_users(self, *names: str) -> None:
        for name in names:
            self.cli("user", "add", f"sip:{name}@{DOMAIN}", "--password", f"{name}-pw",
                     "--pool", "fe2")

    async def close_members(self) -> None:
        for member in self.members.values():
            await member.close()
            await member.ua.close()
        self.members.clear()


@contextmanager
def running_chat(tmp_path: Path) -> Iterator[Chat]:
    """`trimaran up` of the chat topology, brought down afterwards whatever happened."""
    path = tmp_path / "topology.yaml"
    path.write_text(TOPOLOGY)
    rundir = tmp_path / "run"
    trimaran("up", str(path), "--dir", str(rundir), timeout=180)
    admincreds.for_rundir(rundir)        # this process now holds the deployment's key
    try:
        yield Chat(rundir)
    finally:
        trimaran("down", "--dir", str(rundir), check=False, timeout=120)


@dataclass
class Posted:
    """A post the store acknowledged."""

    id: str
    seq: int
    started: float          # wall clock when the post was sent
    acked: float            # wall clock when the 200 came


class PostLoad:
    """Members posting to one room as fast as their acknowledgements come."""

    def __init__(self, members: list[ChatMember], room: str, pause: float = 0.02) -> None:
        self.members = members
        self.room = room
        self.pause = pause
        self.acked: list[Posted] = []
        self.failures: list[str] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.ensure_future(self._run(m)) for m in self.members]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _run(self, member: ChatMember) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            message_id = f"{member.ua.config.aor}/{n}/{secrets.token_hex(4)}"
            started = time.time()
            try:
                seq = await member.post(self.room, f"load {n} from {member.ua.config.aor}",
                                        message_id)
            except ChatError as exc:
                self.failures.append(f"{message_id}: {exc}")
                await asyncio.sleep(0.2)
                continue
            self.acked.append(Posted(message_id, seq, started, time.time()))
            await asyncio.sleep(self.pause)
