"""OPS-6 abuse limits of a Front End over real sockets: a brute-force client locks the
account per policy (then even the right password is refused, over SIP and over the
admin API's HTTP Digest) while other users sign in,
and an unlock — in the store or with `trimaran user unlock` — lets the user in again on
every server of the pool; a REGISTER flood from one source gets 503 + Retry-After while
other sources are served; a user's flow beyond the limit is refused, refreshes are not.

The server listens on 127.0.52.1; each client binds its own 127.0.52.x address."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from click.testing import CliRunner

from tests.frontend.conftest import DOMAIN, FAST, FrontEnd, add_user, password_of, start_frontend
from trimaran.cli.main import cli
from trimaran.client.ua import UAConfig, UserAgent
from trimaran.sip import digest
from trimaran.sip.message import Response
from trimaran.topology.model import AbuseLimits

SERVER = "127.0.52.1"
ATTACKER, BYSTANDER, DEVICES = "127.0.52.2", "127.0.52.3", "127.0.52.4"
ALICE, BOB = f"sip:alice@{DOMAIN}", f"sip:bob@{DOMAIN}"
#: Only the lockout (3 wrong responses within 60 s lock for 600 s); no rate or flow limit.
LOCKOUT = AbuseLimits(rate_per_second=0, max_flows_per_user=0, lockout_failures=3,
                      lockout_window_seconds=60.0, lockout_seconds=600.0, trusted_sources=())
POLICY_TEXT = "3 failed authentications within 60 s lock the account for 600 s"

Servers = Callable[..., Any]


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[Servers]:
    """Start Front End servers on 127.0.52.1 (all of one pool: one store file)."""
    started: list[FrontEnd] = []

    async def start(limits: AbuseLimits, *, path: Path = tmp_path) -> FrontEnd:
        path.mkdir(parents=True, exist_ok=True)
        fe = await start_frontend(path, host=SERVER, abuse=limits)
        if not started:
            for name in ("alice", "bob"):
                await add_user(fe.store, name)
        started.append(fe)
        return fe

    yield start
    for fe in started:
        await fe.server.stop()
        await fe.store.close()


@pytest.fixture
async def agents() -> AsyncIterator[Callable[..., Any]]:
    made: list[UserAgent] = []

    async def make(fe: FrontEnd, name: str, host: str, *, password: str | None = None,
                   transport: str = "tcp") -> UserAgent:
        ua = UserAgent(UAConfig(aor=f"sip:{name}@{DOMAIN}", local_host=host,
                                password=password or password_of(name),
                                servers=(fe.address(transport),), timers=FAST,
                                auto_refresh=False))
        await ua.start()
        made.append(ua)
        return ua

    yield make
    for ua in made:
        await ua.close()


async def answer_challenge(ua: UserAgent, password: str) -> Response:
    """REGISTER, and answer the 401 with credentials for `password`: exactly one digest
    response, as a password-guessing client sends it."""
    challenged, _ = await ua.endpoint.exchange(ua.register_request(600), ua.server)
    assert challenged.status == 401, challenged
    challenge = digest.Challenge.parse(challenged.headers.get_all("WWW-Authenticate")[0])
    request = ua.register_request(600)
    request.headers.add("Authorization", str(digest.answer(
        challenge, method="REGISTER", uri=str(request.uri), username=ua.aor.user or "",
        password=password, cnonce=digest.new_cnonce(), nc=1)))
    response, _ = await ua.endpoint.exchange(request, ua.server)
    return response


async def contact_list_status(fe: FrontEnd, name: str, password: str) -> int:
    """GET the user's contact list over HTTP Digest (the admin API's other way to try
    a password); the status."""
    path = f"/xcap/resource-lists/users/{quote(f'sip:{name}@{DOMAIN}', safe='')}/index"
    async with aiohttp.ClientSession() as session:
        async with session.get(fe.admin_url + path) as challenged:
            assert challenged.status == 401
            challenge = digest.Challenge.parse(challenged.headers.getall("WWW-Authenticate")[0])
        creds = digest.answer(challenge, method="GET", uri=path, username=name,
                              password=password, cnonce=digest.new_cnonce(), nc=1)
        async with session.get(fe.admin_url + path,
                               headers={"Authorization": str(creds)}) as response:
            return response.status


def assert_locked(response: Response) -> None:
    assert (response.status, response.reason) == (403, "Account locked"), response
    warning = response.headers.get("Warning") or ""
    assert warning.startswith(f"399 {SERVER}:") and POLICY_TEXT in warning


async def locked_users(fe: FrontEnd) -> float:
    await fe.server.metrics.refresh()
    return fe.server.metrics.sample("auth_locked_users")


async def test_brute_force_locks_the_account_per_policy_and_other_users_sign_in(
        servers: Servers, agents: Callable[..., Any]) -> None:
    fe = await servers(LOCKOUT)
    attacker = await agents(fe, "alice", ATTACKER, password="guess")
    bob = await agents(fe, "bob", BYSTANDER)
    for guess in ("guess-1", "guess-2"):
        assert (await answer_challenge(attacker, guess)).status == 401
    assert (await bob.register()).status == 200            # bob is not slowed down
    assert_locked(await answer_challenge(attacker, "guess-3"))     # the 3rd locks
    # Locked: the right password gets the same answer as a wrong one, on every request.
    assert_locked(await answer_challenge(attacker, password_of("alice")))
    assert_locked(await answer_challenge(attacker, "guess-4"))
    alice = await agents(fe, "alice", BYSTANDER)
    assert_locked(await alice.register())
    assert_locked(await alice.send_message(BOB, "hello"))
    assert await contact_list_status(fe, "alice", password_of("alice")) == 403
    assert (await bob.register()).status == 200
    assert fe.server.auth.statistics().verified_failed == 3        # nothing checked once locked
    assert fe.server.metrics.sample("auth_lockouts_total") == 1
    assert await locked_users(fe) == 1
    assert await fe.store.lockouts.unlock(ALICE, now=time.time())
    assert (await alice.register()).status == 200
    assert await contact_list_status(fe, "alice", password_of("alice")) == 200
    assert await locked_users(fe) == 0


async def test_the_lock_holds_on_every_server_of_the_pool_until_user_unlock(
        servers: Servers, agents: Callable[..., Any], tmp_path: Path) -> None:
    run = tmp_path / "run"
    pool_dir = run / "data" / "se1"               # RunDir.store_path("se1") is here
    a = await servers(LOCKOUT, path=pool_dir)
    b = await servers(LOCKOUT, path=pool_dir)
    (run / "topology.yaml").write_text(
        f"name: t\nsip_domain: {DOMAIN}\nsites: [{{name: dc1}}]\npools:\n"
        "  - {name: se1, site: dc1, role: frontend, edition: standard,\n"
        f"     servers: [{{name: se1, address: {SERVER}}}]}}\n")
    on_a = await agents(a, "alice", ATTACKER, transport="udp")
    on_b = await agents(b, "alice", ATTACKER, transport="udp")
    assert (await answer_challenge(on_a, "guess-1")).status == 401
    assert (await answer_challenge(on_b, "guess-2")).status == 401
    assert_locked(await answer_challenge(on_a, "guess-3"))     # counted together
    assert_locked(await answer_challenge(on_b, password_of("alice")))
    listed = await asyncio.to_thread(CliRunner().invoke, cli,
                                     ["user", "list", "--json", "--dir", str(run)])
    assert listed.exit_code == 0, listed.output
    by_aor = {u["aor"]: u["locked_until"] for u in json.loads(listed.output)}
    assert by_aor[BOB] is None and by_aor[ALICE] > time.time() + 500
    unlocked = await asyncio.to_thread(CliRunner().invoke, cli,
                                       ["user", "unlock", ALICE, "--dir", str(run)])
    assert unlocked.exit_code == 0, unlocked.output
    assert f"user {ALICE} unlocked" in unlocked.output
    assert (await answer_challenge(on_b, password_of("alice"))).status == 200
    assert (await answer_challenge(on_a, password_of("alice"))).status == 200
    again = await asyncio.to_thread(CliRunner().invoke, cli,
                                    ["user", "unlock", "carol", "--dir", str(run)])
    assert again.exit_code == 1 and "no user" in again.output


def register_datagram(name: str, me: tuple[str, int], i: int) -> bytes:
    host, port = me
    return (f"REGISTER sip:{DOMAIN} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bKrate{name}{i}\r\n"
            f"From: <sip:{name}@{DOMAIN}>;tag=r{i}\r\nTo: <sip:{name}@{DOMAIN}>\r\n"
            f"Call-ID: rate-{name}-{i}@{host}\r\nCSeq: 1 REGISTER\r\n"
            f"Contact: <sip:{name}@{host}:{port}>\r\nMax-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n").encode()


async def replies(sock: socket.socket, count: int) -> list[bytes]:
    loop = asyncio.get_running_loop()
    got: list[bytes] = []
    while len(got) < count:
        try:
            got.append(await asyncio.wait_for(loop.sock_recv(sock, 70000), 5))
        except TimeoutError:
            break
    return got


async def test_a_register_flood_from_one_source_gets_503_and_others_are_served(
        servers: Servers, agents: Callable[..., Any]) -> None:
    fe = await servers(AbuseLimits(rate_per_second=2.0, rate_burst=5, trusted_sources=()))
    target = fe.server.sip_address
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as flood:
        flood.bind((ATTACKER, 0))
        flood.setblocking(False)
        for i in range(20):
            flood.sendto(register_datagram("mallory", flood.getsockname(), i), target)
        answers = await replies(flood, 20)
    assert len(answers) == 20
    challenged = [a for a in answers if a.startswith(b"SIP/2.0 401")]
    refused = [a for a in answers if a.startswith(b"SIP/2.0 503 Service Unavailable "
                                                  b"(rate limit: too many REGISTER requests")]
    assert len(challenged) in (5, 6) and len(challenged) + len(refused) == 20
    assert all(b"\r\nRetry-After: 1\r\n" in a for a in refused)
    assert fe.server.metrics.sample("sip_rate_limited_total", method="REGISTER") == len(refused)
    # Other sources, and other methods of the flooding source, are not affected.
    bob = await agents(fe, "bob", BYSTANDER, transport="udp")
    assert (await bob.register()).status == 200
    mallory = await agents(fe, "alice", ATTACKER, transport="udp")
    assert (await mallory.send_message(BOB, "hi")).status == 200
    options = mallory.new_request("OPTIONS", f"sip:{DOMAIN}")
    assert (await mallory.send(options)).status == 200
    # A client that waits as told gets in (a sign-in is two REGISTERs: two tokens).
    await asyncio.sleep(1.0)
    assert (await mallory.register()).status == 200


async def test_a_flow_beyond_the_limit_is_refused_and_refreshes_are_accepted(
        servers: Servers, agents: Callable[..., Any]) -> None:
    fe = await servers(AbuseLimits(rate_per_second=0, max_flows_per_user=2, trusted_sources=()))
    phone, laptop, tablet = [await agents(fe, "alice", DEVICES) for _ in range(3)]
    assert (await phone.register()).status == 200
    assert (await laptop.register()).status == 200
    refused = await tablet.register()
    assert (refused.status, refused.reason) == (403, "Too many registrations for this user")
    assert "at most 2 registrations" in (refused.headers.get("Warning") or "")
    assert (await phone.register()).status == 200           # a refresh always passes
    assert len(await fe.store.bindings.for_aor(ALICE, now=time.time())) == 2
    assert fe.server.metrics.sample("registrar_flows_refused_total") == 1
    assert (await laptop.unregister()).status == 200
    assert (await tablet.register()).status == 200


async def test_wrong_passwords_over_http_digest_count_toward_the_same_lock(
        servers: Servers, agents: Callable[..., Any]) -> None:
    fe = await servers(LOCKOUT)
    assert [await contact_list_status(fe, "alice", f"guess-{i}") for i in range(3)] == [
        401, 401, 403]
    alice = await agents(fe, "alice", BYSTANDER)
    assert_locked(await alice.register())
    assert await contact_list_status(fe, "bob", password_of("bob")) == 200
