"""Bad input never crashes the Front End and nothing is relayed (OPS-5, OPS-6)."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Callable
from typing import Any

from tests.frontend.conftest import DOMAIN, FrontEnd
from trimaran.client.ua import UserAgent
from trimaran.sip.parser import parse_message

MakeUA = Callable[..., Any]
BOB = f"sip:bob@{DOMAIN}"

GARBAGE = [
    b"\x00\x01\x02\xff" * 50,
    b"INVITE\r\n\r\n",
    b"REGISTER sip:trimaran.test SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4\r\n",  # truncated
    b"OPTIONS sip:x SIP/3.0\r\n\r\n",
    b"SIP/2.0 200 OK\r\nVia: nonsense\r\n\r\n",
    "MESSAGE sip:bob@trimaran.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKx\r\n"
    "From: <sip:a@b>;tag=1\r\nTo: <sip:bob@trimaran.test>\r\nCall-ID: é\xff\r\n"
    "CSeq: 99999999999 MESSAGE\r\nContent-Length: 5\r\n\r\nhi".encode("utf-8", "replace"),
]


def valid_options(port: int, branch: str) -> bytes:
    return (f"OPTIONS sip:{DOMAIN} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{branch}\r\n"
            f"From: <sip:probe@{DOMAIN}>;tag=p\r\nTo: <sip:{DOMAIN}>\r\n"
            f"Call-ID: probe-{branch}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n").encode()


async def udp_exchange(sock: socket.socket, target: tuple[str, int], data: bytes,
                       timeout: float = 2.0) -> bytes | None:
    loop = asyncio.get_running_loop()
    sock.sendto(data, target)
    try:
        return await asyncio.wait_for(loop.sock_recv(sock, 70000), timeout)
    except TimeoutError:
        return None


async def probe(sock: socket.socket, target: tuple[str, int], data: bytes, marker: bytes,
                attempts: int = 5) -> bytes | None:
    """Send `data` like a UDP client would (retransmitting) until a reply with `marker`."""
    loop = asyncio.get_running_loop()
    for _ in range(attempts):
        sock.sendto(data, target)
        deadline = loop.time() + 1.0
        while loop.time() < deadline:
            try:
                reply = await asyncio.wait_for(loop.sock_recv(sock, 70000),
                                               deadline - loop.time())
            except TimeoutError:
                break
            if marker in reply:
                return reply
    return None


async def test_garbage_on_udp_is_dropped_or_answered_400_and_server_keeps_serving(
        frontend: FrontEnd) -> None:
    target = frontend.server.sip_address
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        port = sock.getsockname()[1]
        rng = random.Random(4475)
        noise = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400)))
                 for _ in range(200)]
        for data in GARBAGE + noise:
            sock.sendto(data, target)
        oversized = valid_options(port, "big").replace(b"Content-Length: 0",
                                                        b"X-Pad: " + b"a" * 66000 +
                                                        b"\r\nContent-Length: 0")
        sock.sendto(oversized[:65000], target)
        reply = await probe(sock, target, valid_options(port, "alive"), b"probe-alive")
        assert reply is not None, "server stopped answering after garbage"
        assert parse_message(reply).start_line() == "SIP/2.0 200 OK"  # type: ignore[attr-defined]


async def test_bad_request_on_tcp_gets_400_then_the_connection_still_works(
        frontend: FrontEnd) -> None:
    host, port = frontend.server.sip_address
    reader, writer = await asyncio.open_connection(host, port)
    try:
        bad = (f"OPTIONS sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKb\r\n"
               f"From: <sip:probe@{DOMAIN}>;tag=p\r\nTo: <sip:{DOMAIN}>\r\nCall-ID: c1\r\n"
               "CSeq: 1 NOTOPTIONS\r\nContent-Length: 0\r\n\r\n").encode()
        writer.write(bad)
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), 3)
        assert status.startswith(b"SIP/2.0 400")
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
        writer.write(valid_options(9, "tcp").replace(b"UDP", b"TCP"))
        await writer.drain()
        assert (await asyncio.wait_for(reader.readline(), 3)).startswith(b"SIP/2.0 200")
    finally:
        writer.close()


async def test_oversized_stream_message_is_refused_and_the_server_survives(
        frontend: FrontEnd) -> None:
    host, port = frontend.server.sip_address
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(valid_options(9, "huge").replace(b"Content-Length: 0",
                                                   b"Content-Length: 10000000"))
    await writer.drain()
    status = await asyncio.wait_for(reader.readline(), 3)
    assert status.startswith(b"SIP/2.0 413")
    assert await asyncio.wait_for(reader.read(), 3) is not None  # connection closed by server
    writer.close()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        reply = await udp_exchange(sock, (host, port),
                                   valid_options(sock.getsockname()[1], "after"))
        assert reply is not None and reply.startswith(b"SIP/2.0 200")


async def test_flood_of_unauthenticated_registers_is_challenged_and_keeps_no_state(
        frontend: FrontEnd, make_ua: MakeUA) -> None:
    host, port = frontend.server.sip_address
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        me = sock.getsockname()[1]
        loop = asyncio.get_running_loop()
        challenged = 0
        for i in range(500):
            if i % 50 == 0 and i:  # bursts of 50, like a registration storm
                challenged += await count_challenges(loop, sock, 50)
            sock.sendto((f"REGISTER sip:{DOMAIN} SIP/2.0\r\n"
                         f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bKflood{i}\r\n"
                         f"From: <sip:user{i}@{DOMAIN}>;tag=f{i}\r\nTo: <sip:user{i}@{DOMAIN}>\r\n"
                         f"Call-ID: flood-{i}\r\nCSeq: 1 REGISTER\r\n"
                         f"Contact: <sip:user{i}@127.0.0.1:{me}>\r\nMax-Forwards: 70\r\n"
                         "Content-Length: 0\r\n\r\n").encode(), (host, port))
        challenged += await count_challenges(loop, sock, 50)
        assert challenged == 500
    assert frontend.server.auth.statistics().nonces_tracked == 0
    alice: UserAgent = await make_ua("alice")  # real users still get in
    assert alice.registered.is_set()


async def count_challenges(loop: asyncio.AbstractEventLoop, sock: socket.socket,
                           expected: int) -> int:
    got = 0
    while got < expected:
        try:
            data = await asyncio.wait_for(loop.sock_recv(sock, 70000), 5)
        except TimeoutError:
            break
        if data.startswith(b"SIP/2.0 401"):
            got += 1
    return got


async def test_unauthenticated_message_to_a_user_is_not_relayed(
        frontend: FrontEnd, make_ua: MakeUA) -> None:
    bob: UserAgent = await make_ua("bob")
    host, port = frontend.server.sip_address
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        me = sock.getsockname()[1]
        raw = (f"MESSAGE {BOB} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bKspam\r\n"
               f"From: <sip:alice@{DOMAIN}>;tag=s\r\nTo: <{BOB}>\r\nCall-ID: spam-1\r\n"
               "CSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\nContent-Type: text/plain\r\n"
               "Content-Length: 4\r\n\r\nspam").encode()
        reply = await udp_exchange(sock, (host, port), raw)
        assert reply is not None and reply.startswith(b"SIP/2.0 407")
    assert bob.messages.empty()
