"""Chat servers and a Front End in one process, over real sockets and a real PostgreSQL
(SPEC PC-1, PC-2): connections through the Front End, posting with acknowledgement
after commit, delivery to the members connected to any server, the rules on the SIP
side, the claim a chat server insists on, inactive servers, a server that goes away."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from tests import admincreds
from tests.chat.conftest import CATEGORY
from tests.frontend.conftest import DOMAIN, FAST, add_user, password_of
from tests.store.conftest import free_port
from trimaran.chat import Category, ChatStore, Membership, Role, Room, RoomKind
from trimaran.chat.model import Message
from trimaran.chat.uris import room_uri
from trimaran.client.chat import ChatError, ChatMember, RoomMessage, _from_json
from trimaran.client.ua import UAConfig, UserAgent
from trimaran.cms.chatdoc import ChatMode, ChatPoolState, ChatState
from trimaran.net.endpoint import SipEndpoint
from trimaran.net.transport import Address, TransportError
from trimaran.roles.chat.server import ChatServer, ChatServerConfig
from trimaran.roles.chat.sessions import BATCH_TYPE, SEQ_HEADER, Connection, Connections
from trimaran.roles.frontend.chat import ChatRouter
from trimaran.roles.frontend.config import FrontEndConfig
from trimaran.roles.frontend.server import FrontEndServer
from trimaran.sip.dialog import Dialog
from trimaran.sip.message import Request
from trimaran.sip.parser import parse_message
from trimaran.store.sqlite import SqliteStore
from trimaran.topology.loader import parse_topology

SECRET = b"0123456789abcdef0123456789abcdef"
NET = f"127.0.47.{random.randint(100, 200)}"


@dataclass
class Service:
    fe: FrontEndServer
    fe_store: SqliteStore
    servers: dict[str, ChatServer]
    state: dict[str, ChatState]
    store: ChatStore
    agents: list[ChatMember] = field(default_factory=list)

    def set_active(self, *names: str) -> None:
        self.state["now"] = ChatState({"pchat": ChatPoolState(ChatMode.NORMAL, names)})

    async def member(self, name: str) -> ChatMember:
        ua = UserAgent(UAConfig(aor=f"sip:{name}@{DOMAIN}", password=password_of(name),
                                servers=(Address("tcp", *self.fe.sip_address),), timers=FAST,
                                auto_refresh=False))
        await ua.start()
        assert (await ua.register()).status == 200
        member = ChatMember(ua, DOMAIN, keepalive=0.5, retry_for=10.0)
        await member.connect()
        self.agents.append(member)
        return member


@pytest.fixture
async def service(chat_dsn: str, tmp_path: Path) -> AsyncIterator[Service]:
    hosts = {"pc1": "127.0.47.98", "pc2": "127.0.47.99"}
    ports = {name: (free_port(host), free_port(host)) for name, host in hosts.items()}
    servers_yaml = ", ".join(
        f"{{name: {n}, address: {h}, sip_port: {ports[n][0]}, admin_port: {ports[n][1]}}}"
        for n, h in hosts.items())
    topology = parse_topology(f"""
name: t
sip_domain: {DOMAIN}
sites: [{{name: dc1}}]
pools:
  - {{name: se1, site: dc1, role: frontend, edition: standard,
     servers: [{{name: se1, address: 127.0.0.1}}]}}
  - {{name: pchat, site: dc1, role: chat, servers: [{servers_yaml}],
     backend: {{principal: {{address: 127.0.47.97}}}}}}
""")
    state = {"now": ChatState({"pchat": ChatPoolState(ChatMode.NORMAL, ("pc1", "pc2"))})}
    chat_servers = {}
    for name, host in hosts.items():
        config = ChatServerConfig(server=name, pool="pchat", host=host, sip_port=ports[name][0],
                                  admin_port=ports[name][1], domain=DOMAIN, secret=SECRET,
                                  dsn=lambda _mode: chat_dsn, timers=FAST)
        chat_servers[name] = ChatServer(config, lambda: state["now"])
        await chat_servers[name].start()
    fe_store = SqliteStore(tmp_path / "fe.sqlite", pool="se1")
    await fe_store.open()
    for name in ("alice", "bob", "carol", "dave"):
        await add_user(fe_store, name)
    for _ in range(10):     # port 0: the TCP twin of a free UDP port may be taken
        fe = FrontEndServer(FrontEndConfig(server="se1", pool="se1", domain=DOMAIN,
                                           host="127.0.0.1", sip_port=0, admin_port=0,
                                           secret=SECRET, timers=FAST), fe_store,
                            chat=lambda server: ChatRouter(server, lambda: state["now"],
                                                           SECRET, topology))
        try:
            await fe.start()
            break
        except TransportError:
            await fe.stop()
    store = ChatStore(chat_dsn)
    await store.open()
    await store.add_category(Category(CATEGORY))
    await store.create_room(Room("ops", CATEGORY, RoomKind.CLOSED), f"sip:alice@{DOMAIN}")
    await store.add_member(Membership("ops", f"sip:bob@{DOMAIN}", Role.MEMBER))
    await store.add_member(Membership("ops", f"sip:carol@{DOMAIN}", Role.MEMBER))
    await asyncio.wait_for(_until_stores_open(chat_servers), 10)
    service = Service(fe, fe_store, chat_servers, state, store)
    yield service
    for member in service.agents:
        await member.close()
        await member.ua.close()
    await fe.stop()
    await fe_store.close()
    for server in chat_servers.values():
        if server.started:
            await server.stop()
    await store.close()


async def _until_stores_open(servers: dict[str, ChatServer]) -> None:
    while any(s.store is None for s in servers.values()):
        await asyncio.sleep(0.05)


async def test_a_post_is_acknowledged_with_its_number_and_reaches_every_connected_member(
        service: Service) -> None:
    alice, bob, carol = [await service.member(n) for n in ("alice", "bob", "carol")]
    assert {alice.server, bob.server, carol.server} <= {"pc1", "pc2"}
    seq = await bob.post("ops", "hello, ops")
    assert seq == 1
    for member in (alice, carol):
        got = await member.next_message(5)
        assert (got.room, got.seq, got.author, got.body) == (
            "ops", 1, f"sip:bob@{DOMAIN}", "hello, ops")
    assert (await service.store.history("ops"))[0].body == "hello, ops"
    with pytest.raises(TimeoutError):       # the author does not hear his own post
        await bob.next_message(0.5)


async def test_the_rules_apply_on_the_sip_side(service: Service) -> None:
    dave = await service.member("dave")
    with pytest.raises(ChatError) as refused:
        await dave.post("ops", "may I?")
    assert refused.value.status == 403
    with pytest.raises(ChatError) as refused:
        await dave.post("nowhere", "anyone?")
    assert refused.value.status == 404
    bob = await service.member("bob")
    first = await bob.post("ops", "once", message_id="m-1")
    assert await bob.post("ops", "once", message_id="m-1") == first     # a retry: stored once
    assert await service.store.last_seq("ops") == first
    with pytest.raises(ChatError) as refused:           # another author's id
        await (await service.member("carol")).post("ops", "mine", "m-1")
    assert refused.value.status == 409


async def test_a_chat_server_refuses_requests_not_sent_by_a_front_end(
        service: Service) -> None:
    ua = UserAgent(UAConfig(aor=f"sip:mallory@{DOMAIN}", password="x",
                            servers=(Address("tcp", service.servers["pc1"].config.host,
                                             service.servers["pc1"].config.sip_port),),
                            timers=FAST, auto_refresh=False))
    await ua.start()
    try:
        response = await ua.send_message(room_uri(DOMAIN, "ops"), "forged")
        assert response.status == 403
    finally:
        await ua.close()
    assert await service.store.last_seq("ops") == 0


async def test_only_active_servers_take_new_connections(service: Service) -> None:
    service.set_active("pc2")
    members = [await service.member(n) for n in ("alice", "bob", "carol")]
    assert {m.server for m in members} == {"pc2"}


async def test_members_of_a_server_that_stops_move_to_another(service: Service) -> None:
    service.set_active("pc1")
    alice, bob = await service.member("alice"), await service.member("bob")
    assert alice.server == bob.server == "pc1"
    service.set_active("pc1", "pc2")
    await service.servers["pc1"].stop()
    service.servers["pc1"].started = False
    await asyncio.wait_for(_until(lambda: alice.server == bob.server == "pc2"), 10)
    seq = await alice.post("ops", "still here")
    got = await bob.next_message(5)
    assert got.seq == seq


async def _until(predicate: object) -> None:
    while not predicate():    # type: ignore[operator]
        await asyncio.sleep(0.05)


async def test_status_and_metrics_count_connections_and_posts(service: Service) -> None:
    bob = await service.member("bob")
    await service.member("carol")
    await bob.post("ops", "counted")
    server = service.servers[bob.server or ""]
    base = f"http://{server.config.host}:{server.config.admin_port}"
    async with aiohttp.ClientSession() as http:
        async with http.get(base + "/health") as response:
            assert response.status == 200
        async with http.get(base + "/status", headers=admincreds.headers("read")) as response:
            status = await response.json()
        async with http.get(base + "/metrics", headers=admincreds.headers("read")) as response:
            metrics = await response.text()
    assert status["active"] is True and status["connections"] >= 1
    assert status["mode"] == "normal"
    assert 'chat_requests_total{kind="post",result="200"' in metrics
    assert "chat_connections" in metrics and 'chat_mode{' in metrics


async def test_a_member_behind_gets_every_message_once_in_order_batched(
        service: Service) -> None:
    alice, bob = await service.member("alice"), await service.member("bob")
    sent = await asyncio.gather(*(bob.post("ops", f"burst {i}") for i in range(60)))
    received = [await alice.next_message(10) for _ in sent]
    assert [m.seq for m in received] == sorted(sent)
    assert {m.body for m in received} == {f"burst {i}" for i in range(60)}
    server = service.servers[alice.server or ""]
    # counted once the client's 200 is back, which may follow its reading the last one
    await asyncio.wait_for(_until(lambda: server.connections.delivered >= 60), 5)


async def test_a_batch_carries_several_messages_the_client_reads_back() -> None:
    invite = parse_message(
        b"INVITE sip:chat@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.2;branch=z9hG4bK1\r\n"
        b"From: <sip:alice@x>;tag=a\r\nTo: <sip:chat@x>\r\nCall-ID: c1\r\n"
        b"CSeq: 1 INVITE\r\nContact: <sip:alice@127.0.0.2;transport=tcp>\r\n"
        b"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
    assert isinstance(invite, Request)
    endpoint = SipEndpoint(on_request=lambda _: None)
    await endpoint.transport.listen_tcp("127.0.0.1", 0)
    connections = Connections(endpoint, "x", lambda _c: None)
    connection = Connection("sip:alice@x", Dialog.from_uas(invite, "t"), "tcp")
    one = [Message("ops", 7, "sip:bob@x", "é ü\nline", 1.0, "id-7")]
    two = [*one, Message("ops", 8, "sip:bob@x", "two", 2.0, "id-8")]
    single = connections._request(connection, one)
    assert single.headers.get(SEQ_HEADER) == "7" and single.body == "é ü\nline".encode()
    batch = connections._request(connection, two)
    assert batch.content_type == BATCH_TYPE
    assert [_from_json(raw) for raw in json.loads(batch.body)] == [
        RoomMessage("ops", 7, "sip:bob@x", "é ü\nline", "id-7"),
        RoomMessage("ops", 8, "sip:bob@x", "two", "id-8")]
    await endpoint.close()
