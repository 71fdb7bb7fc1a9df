"""A deployment with Enterprise Voice run as real processes for the voice tests: Front
End pools, Mediation pools (or SBAs) and PSTN gateways played by SIPp."""

from __future__ import annotations

import contextlib
import json
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests import admincreds
from tests.integration.drpair import DOMAIN, trimaran, wait_for
from tests.voice.gateway import SippGateway
from trimaran.client.dialogs import Call
from trimaran.client.ua import UAConfig, UserAgent
from trimaran.net.transport import Address

SDP = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       b"m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


@dataclass
class Voice:
    """A running deployment in `rundir` with its gateways and clients."""

    rundir: Path
    gateways: dict[str, SippGateway] = field(default_factory=dict)
    agents: dict[str, UserAgent] = field(default_factory=dict)

    def cli(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        """Run the CLI on this deployment: its output (and errors, when not `check`)."""
        result = trimaran(*args, "--dir", str(self.rundir), check=check, timeout=timeout)
        return result.stdout if check else result.stdout + result.stderr

    def add_user(self, name: str, pool: str, number: str) -> None:
        self.cli("user", "add", f"sip:{name}@{DOMAIN}", "--password", f"{name}-pw",
                 "--pool", pool, "--number", number)

    async def sign_in(self, name: str, servers: tuple[Address, ...]) -> UserAgent:
        ua = UserAgent(UAConfig(aor=f"sip:{name}@{DOMAIN}", password=f"{name}-pw",
                                servers=servers, reregister_on_flow_loss=True))
        await ua.start()
        response = await ua.register()
        assert response.status == 200, (name, response.status, response.reason)
        self.agents[name] = ua
        return ua

    async def dial(self, name: str, dialled: str) -> tuple[Call, float]:
        """`name` dials `dialled` (a phone number as typed); the established call and
        how long its setup took."""
        ua = self.agents[name]
        started = time.monotonic()
        call = await ua.invite(f"sip:{dialled}@{DOMAIN};user=phone", SDP)
        return call, time.monotonic() - started

    def status(self, address: str, port: int = 8080,
               path: str = "/status") -> dict[str, object]:
        request = urllib.request.Request(f"http://{address}:{port}{path}",
                                         headers=admincreds.headers("read"))
        with urllib.request.urlopen(request, timeout=2) as resp:
            value = json.loads(resp.read())
        assert isinstance(value, dict)
        return value

    async def wait_gateway(self, mediation: list[str], gateway: str, state: str,
                           timeout: float = 15) -> None:
        """Wait until every Mediation server (admin addresses) sees `gateway` in `state`
        (an SBA's mediation half reports on its registrar's admin API)."""
        async def seen() -> bool:
            for address in mediation:
                try:
                    gateways = self.status(address, path="/mediation/status")["gateways"]
                except OSError:
                    return False
                assert isinstance(gateways, list)
                if not any(g["gateway"] == gateway and g["state"] == state for g in gateways):
                    return False
            return True
        await wait_for(seen, timeout, f"{gateway} {state} on {', '.join(mediation)}")


    async def close_agents(self) -> None:
        for ua in self.agents.values():
            await ua.close()
        self.agents.clear()

    async def start_gateways(self, addresses: dict[str, str], workdir: Path) -> None:
        """SIPp gateways (name -> address), answering, for one test (SIPp runs as a child
        of the test's event loop)."""
        for name, address in addresses.items():
            gateway = SippGateway(address, 5060, mode="answer", workdir=workdir / name)
            await gateway.start()
            self.gateways[name] = gateway

    async def stop_gateways(self) -> None:
        for gateway in self.gateways.values():
            with contextlib.suppress(Exception):
                await gateway.kill()
        self.gateways.clear()

    async def close(self) -> None:
        """After a test: clients and gateways gone."""
        await self.close_agents()
        await self.stop_gateways()


@contextlib.contextmanager
def running_voice(tmp_path: Path, topology: str) -> Iterator[Voice]:
    """`trimaran up` of `topology`, brought down afterwards whatever happened.
    (Synchronous: a module's tests share it, each with its own event loop; clients and
    gateways are per test.)"""
    path = tmp_path / "topology.yaml"
    path.write_text(topology)
    rundir = tmp_path / "run"
    trimaran("up", str(path), "--dir", str(rundir), timeout=120)
    admincreds.for_rundir(rundir)        # this process now holds the deployment's key
    try:
        yield Voice(rundir)
    finally:
        trimaran("down", "--dir", str(rundir), check=False, timeout=120)
