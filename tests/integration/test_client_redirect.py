"""The client user agent follows redirects of its REGISTER (RFC 3261 §8.1.3.4, §21.3).

Scripted registrars (a bare `SipEndpoint`) answer 200 or 3xx as a test says; the
targets are real Front End servers with a SQLite store, so the UA authenticates
with digest where it ends up. Everything listens on 127.0.11.x.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.frontend.conftest import DOMAIN, FrontEnd, add_user, password_of, start_frontend
from trimaran.client.ua import RedirectError, RedirectLoop, UAConfig, UserAgent
from trimaran.net.endpoint import IncomingRequest, SipEndpoint
from trimaran.net.transport import Address, Flow
from trimaran.sip.headers import Headers
from trimaran.sip.ids import new_tag
from trimaran.sip.message import Request
from trimaran.sip.transaction import TimerConfig

FAST = TimerConfig(t1=0.1, t2=0.8, t4=1.0)
UA_HOST = "127.0.11.1"


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll `predicate` until true, failing after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.01)


def contact_of(address: Address, q: float | None = None) -> str:
    value = f"<sip:{address.host}:{address.port};transport={address.transport}>"
    return value if q is None else f"{value};q={q}"


@dataclass
class ScriptedRegistrar:
    """A registrar that answers every REGISTER as `answer` says: 200 (no auth) or a 3xx."""

    host: str
    answer: tuple[int, tuple[str, ...]] = (200, ())
    expires: int = 600
    requests: list[Request] = field(default_factory=list)
    flows: list[Flow] = field(default_factory=list)
    endpoint: SipEndpoint | None = None

    async def start(self) -> None:
        self.endpoint = SipEndpoint(on_request=self._on_request, timers=FAST)
        await self.endpoint.listen(self.host, udp_port=None, tcp_port=0)

    @property
    def address(self) -> Address:
        assert self.endpoint is not None
        host, port = self.endpoint.contact_host_port("tcp")
        return Address("tcp", host, port)

    def redirect(self, status: int, *contacts: str) -> None:
        self.answer = (status, contacts)

    def accept(self) -> None:
        self.answer = (200, ())

    def _on_request(self, incoming: IncomingRequest) -> None:
        assert self.endpoint is not None
        request = incoming.request
        if request.method != "REGISTER":
            self.endpoint.reply(incoming, 405)
            return
        self.requests.append(request)
        self.flows.append(incoming.flow)
        status, contacts = self.answer
        headers = Headers()
        if status == 200:
            for value in request.headers.get_all("Contact"):
                headers.add("Contact", f"{value};expires={self.expires}")
            headers.add("X-Trimaran-Mode", "full")
        else:
            for value in contacts:
                headers.add("Contact", value)
        self.endpoint.reply(incoming, status, headers=headers, to_tag=new_tag())

    async def drop_flows(self) -> None:
        """Close every connection a client opened to us (the server side goes away)."""
        assert self.endpoint is not None
        for flow in {f.id: f for f in self.flows}.values():
            await self.endpoint.transport.close_flow(flow, drain_timeout=1.0)

    async def close(self) -> None:
        if self.endpoint is not None:
            await self.endpoint.close(drain_timeout=1.0)


@pytest.fixture
async def fe(tmp_path: Path) -> AsyncIterator[FrontEnd]:
    """A real Front End (pool se2 on 127.0.11.20) that knows alice."""
    path = tmp_path / "fe"
    path.mkdir()
    server = await start_frontend(path, host="127.0.11.20", server="se2a")
    await add_user(server.store, "alice")
    yield server
    await server.server.stop()
    await server.store.close()


@pytest.fixture
async def registrars() -> AsyncIterator[Callable[[str], Awaitable[ScriptedRegistrar]]]:
    started: list[ScriptedRegistrar] = []

    async def make(host: str) -> ScriptedRegistrar:
        registrar = ScriptedRegistrar(host)
        await registrar.start()
        started.append(registrar)
        return registrar

    yield make
    for registrar in started:
        await registrar.close()


@pytest.fixture
async def make_ua() -> AsyncIterator[Callable[..., Awaitable[UserAgent]]]:
    agents: list[UserAgent] = []

    async def make(*servers: Address, **kw: object) -> UserAgent:
        settings: dict[str, object] = {"auto_refresh": False, "retry_jitter": 0.01}
        settings.update(kw)
        ua = UserAgent(UAConfig(aor=f"sip:alice@{DOMAIN}", password=password_of("alice"),
                                servers=servers, local_host=UA_HOST, timers=FAST,
                                **settings))  # type: ignore[arg-type]
        await ua.start()
        agents.append(ua)
        return ua

    yield make
    for ua in agents:
        await ua.close()


async def fe_has_binding(fe: FrontEnd) -> bool:
    return bool(await fe.store.bindings.for_aor(f"sip:alice@{DOMAIN}", now=time.time()))


async def test_302_to_a_front_end_registers_there_with_digest(
        fe: FrontEnd, registrars: Callable[[str], Awaitable[ScriptedRegistrar]],
        make_ua: Callable[..., Awaitable[UserAgent]]) -> None:
    home = await registrars("127.0.11.2")
    home.redirect(302, "<tel:+15551234>", contact_of(fe.address("tcp")))
    ua = await make_ua(home.address)

    response = await ua.register()

    assert response.status == 200
    assert ua.registered.is_set()
    assert ua.registered_server == fe.address("tcp")
    assert ua.server == fe.address("tcp")
    assert ua.servers == (fe.address("tcp"),)
    assert ua.home_servers == (home.address,)
    assert ua.redirected
    assert ua.mode == "full"
    assert ua.auth.has_credentials  # the Front End challenged, the UA answered
    assert len(home.requests) == 1
    assert await fe_has_binding(fe)

    ua.reset_servers()
    assert ua.servers == (home.address,) and not ua.redirected


async def test_q_values_order_the_targets(
        fe: FrontEnd, registrars: Callable[[str], Awaitable[ScriptedRegistrar]],
        make_ua: Callable[..., Awaitable[UserAgent]]) -> None:
    home = await registrars("127.0.11.2")
    dead = Address("tcp", "127.0.11.99", 5060)  # nothing listens: refused at once
    home.redirect(302, contact_of(dead, 0.1), contact_of(fe.address("tcp"), 0.9))
    ua = await make_ua(home.address)

    assert (await ua.register()).status == 200
    assert ua.servers == (fe.address("tcp"), dead)
    assert ua.registered_server == fe.address("tcp")


async def test_chain_of_two_301s_ends_on_the_last(
        fe: FrontEnd, registrars: Callable[[str], Awaitable[ScriptedRegistrar]],
        make_ua: Callable[..., Awaitable[UserAgent]]) -> None:
    first = await registrars("127.0.11.2")
    second = await registrars("127.0.11.3")
    first.redirect(301, contact_of(second.address))
    second.redirect(301, contact_of(fe.address("tcp")))
    ua = await make_ua(first.address)

    response = await ua.register()

    assert response.status == 200
    assert ua.registered_server == fe.address("tcp")
    assert ua.servers == (fe.address("tcp"),)
    assert (len(first.requests), len(second.requests)) == (1, 1)
    # one registration: same Call-ID throughout, CSeq always increasing
    assert first.requests[0].call_id == second.requests[0].call_id
    assert second.requests[0].cseq.seq > first.requests[0].cseq.seq


async def test_redirect_loop_gives_up_with_redirect_loop(
        registrars: Callable[[str], Awaitable[ScriptedRegistrar]],
        make_ua: Callable[..., Awaitable[UserAgent]]) -> None:
    ping = await registrars("127.0.11.2")
    pong = await registrars("127.0.11.3")
    ping.redirect(302, contact_of(pong.address))
    pong.redirect(302, contact_of(ping.address))
    ua = await make_ua(ping.address, max_redirects=5)

    with pytest.raises(RedirectLoop):
        await asyncio.wait_for(ua.register(), 10)

    assert len(ping.requests) + len(pong.requests) == 6  # 5 followed, the 6th refused
    assert not ua.registered.is_set()
    assert ua.servers == (ping.address,)  # a failed chain leaves the list as it was


async def test_3xx_without_usable_contact_is_an_error(
        registrars: Callable[[str], Awaitable[ScriptedRegistrar]],
        make_ua: Callable[..., Awaitable[UserAgent]]) -> None:
    home = await registrars("127.0.11.2")
    home.redirect(302, "<tel:+15551234>", "<sip:fe.example.com;transport=tcp>")
    ua = await make_ua(home.address)

    with pytest.raises(RedirectError) as failure:
        await ua.register()

    assert not isinstance(failure.value, RedirectLoop)
    assert failure.value.response.status == 302
    assert ua.servers == (home.address,)


async def test_redirect_on_refresh_moves_the_registration(
        fe: FrontEnd, registrars: Callable[[str], Awaitable[ScriptedRegistrar]],
        make_ua: Callable[..., Awaitable[UserAgent]]) -> None:
    home = await registrars("127.0.11.2")
    home.expires = 2  # the UA refreshes after a second
    ua = await make_ua(home.address, auto_refresh=True)
    assert (await ua.register()).status == 200
    assert ua.registered_server == home.address

    home.redirect(302, contact_of(fe.address("tcp")))
    await wait_for(lambda: ua.registered_server == fe.address("tcp"), timeout=10)

    assert len(home.requests) == 2
    assert ua.mode == "full"
    assert await fe_has_binding(fe)

    # the application can go back to its configured servers
    home.accept()
    ua.reset_servers()
    assert (await ua.register()).status == 200
    assert ua.registered_server == home.address
    assert not ua.redirected


async def test_later_302_moves_the_ua_back(
        fe: FrontEnd, registrars: Callable[[str], Awaitable[ScriptedRegistrar]],
        make_ua: Callable[..., Awaitable[UserAgent]]) -> None:
    # home -> paired pool (a scripted one, so it can redirect back) -> home again
    home = await registrars("127.0.11.2")
    paired = await registrars("127.0.11.3")
    home.redirect(302, contact_of(paired.address))
    ua = await make_ua(home.address)
    assert (await ua.register()).status == 200
    assert ua.registered_server == paired.address

    home.accept()
    paired.redirect(302, contact_of(home.address))
    assert (await ua.register()).status == 200  # a refresh, at the paired pool
    assert ua.registered_server == home.address
    assert ua.servers == (home.address,)
    assert not ua.redirected


async def test_redirect_after_flow_loss_ends_on_the_target(
        fe: FrontEnd, registrars: Callable[[str], Awaitable[ScriptedRegistrar]],
        make_ua: Callable[..., Awaitable[UserAgent]]) -> None:
    home = await registrars("127.0.11.2")
    ua = await make_ua(home.address)
    assert (await ua.register()).status == 200
    assert ua.registered_server == home.address

    # the home pool fails over: it now redirects its users, and drops their flows
    home.redirect(302, contact_of(fe.address("tcp")))
    await home.drop_flows()

    await wait_for(lambda: ua.registered_server == fe.address("tcp") and
                   ua.registered.is_set(), timeout=10)
    assert len(home.requests) == 2  # the re-register went home first, then followed
    assert ua.mode == "full"
    assert await fe_has_binding(fe)


async def test_503_with_retry_after_fails_over_to_the_next_server(
        fe: FrontEnd, make_ua: Callable[..., Awaitable[UserAgent]]) -> None:
    # a draining server answers 503 + Retry-After: the UA tries the next of its list
    other_path = fe.path.parent / "fe2"
    other_path.mkdir()
    draining = await start_frontend(other_path, host="127.0.11.21", server="se2b")
    try:
        draining.server.draining = True
        ua = await make_ua(draining.address("tcp"), fe.address("tcp"))
        response = await ua.register()
        assert response.status == 200
        assert ua.registered_server == fe.address("tcp")
        assert not ua.redirected
    finally:
        await draining.server.stop()
        await draining.store.close()


async def test_dead_redirect_target_sends_the_ua_back_home(
        fe: FrontEnd, registrars: Callable[[str], Awaitable[ScriptedRegistrar]],
        make_ua: Callable[..., Awaitable[UserAgent]]) -> None:
    # moved to the paired pool, which then goes away entirely: the UA asks home again
    home = await registrars("127.0.11.2")
    home.redirect(302, contact_of(fe.address("tcp")))
    ua = await make_ua(home.address)
    assert (await ua.register()).status == 200
    assert ua.registered_server == fe.address("tcp")

    home.accept()
    await fe.server.stop()  # closes the UA's flow; the paired pool no longer answers

    await wait_for(lambda: ua.registered_server == home.address, timeout=10)
    assert not ua.redirected
