"""A deployment run by the CLI as real processes: up, users, kill, start, down (issue: SE FE).

Restarting the server keeps users, contact lists and published presence (they are in the
store), and clients re-register.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from trimaran.client.ua import UAConfig, UserAgent
from trimaran.client.xcap import XcapClient
from trimaran.net.transport import Address
from trimaran.roles.frontend.presence import basic_pidf
from trimaran.store.model import ContactEntry, ContactGroup, ContactList
from trimaran.store.sqlite import SqliteStore

ROOT = Path(__file__).resolve().parents[2]
DOMAIN = "trimaran.test"
TOPOLOGY = """
name: restart-test
sip_domain: trimaran.test
sites:
  - name: dc1
pools:
  - name: se9
    site: dc1
    role: frontend
    edition: standard
    servers:
      - name: se9
        address: 127.0.9.1
        sip_port: 5260
        admin_port: 8260
"""


def trimaran(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "trimaran", *args], capture_output=True,
                            text=True, timeout=60, cwd=ROOT)
    if check and result.returncode != 0:
        raise AssertionError(f"trimaran {' '.join(args)} -> {result.returncode}\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Path]:
    topology = tmp_path / "topology.yaml"
    topology.write_text(TOPOLOGY)
    rundir = tmp_path / "run"
    trimaran("up", str(topology), "--dir", str(rundir))
    try:
        yield rundir
    finally:
        trimaran("down", "--dir", str(rundir), check=False)


def agent(name: str, password: str) -> UserAgent:
    return UserAgent(UAConfig(aor=f"sip:{name}@{DOMAIN}", password=password,
                              servers=(Address("tcp", "127.0.9.1", 5260),), auto_refresh=False,
                              reregister_on_flow_loss=True))


async def test_restart_keeps_users_contacts_and_presence_and_clients_reregister(
        deployment: Path) -> None:
    for name in ("ann", "ben"):
        trimaran("user", "add", f"sip:{name}@{DOMAIN}", "--password", f"{name}-pw",
                 "--dir", str(deployment))
    ann, ben = agent("ann", "ann-pw"), agent("ben", "ben-pw")
    await ann.start()
    await ben.start()
    try:
        assert (await ann.register()).status == 200
        assert (await ben.register()).status == 200
        xcap = XcapClient("http://127.0.9.1:8260", f"sip:ann@{DOMAIN}", "ann", "ann-pw")
        await xcap.put(ContactList(f"sip:ann@{DOMAIN}", (ContactGroup("Team"),),
                                   (ContactEntry(f"sip:ben@{DOMAIN}", "Ben", ("Team",)),)))
        assert (await ann.publish(basic_pidf(f"sip:ann@{DOMAIN}", "open", "at desk"))).status \
            == 200

        trimaran("server", "kill", "se9", "--dir", str(deployment))
        trimaran("server", "start", "se9", "--dir", str(deployment))

        # the TCP flows died with the process: the clients notice and register again
        for ua in (ann, ben):
            await asyncio.wait_for(ua.registered.wait(), 15)
        listed = json.loads(trimaran("user", "list", "--json", "--dir",
                                     str(deployment)).stdout)
        assert {u["aor"] for u in listed} == {f"sip:ann@{DOMAIN}", f"sip:ben@{DOMAIN}"}
        assert (await xcap.get()).has_contact(f"sip:ben@{DOMAIN}")
        subscription, _ = await ben.subscribe(f"sip:ann@{DOMAIN}")
        notify = await subscription.next_notify()
        assert b"at desk" in notify.body  # the publication survived the restart
        assert (await ben.send_message(f"sip:ann@{DOMAIN}", "back?")).status == 200
    finally:
        await ann.close()
        await ben.close()


def test_cli_refuses_bad_input_with_clear_messages(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nsip_domain: t\nsites: []\npools: []\nsurprise: 1\n")
    result = trimaran("topology", "validate", str(bad), check=False)
    assert result.returncode == 1
    assert "surprise" in result.stderr + result.stdout
    result = trimaran("status", "--dir", str(tmp_path / "nowhere"), check=False)
    assert result.returncode == 1 and "does not exist" in result.stderr
    assert trimaran("frobnicate", check=False).returncode == 2


def test_users_are_stored_hashed_never_in_clear(deployment: Path) -> None:
    trimaran("user", "add", f"sip:cy@{DOMAIN}", "--password", "very-secret-pw",
             "--dir", str(deployment))
    store_file = deployment / "data" / "se9" / "store.sqlite"
    raw = b"".join(p.read_bytes() for p in store_file.parent.iterdir() if p.is_file())
    assert b"very-secret-pw" not in raw
    assert SqliteStore  # the store module is what `user add` wrote through
