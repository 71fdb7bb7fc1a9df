"""SIP over TLS: listener and client on real sockets, mutual TLS between servers,
keepalives over TLS (RFC 3261 §26.2, RFC 5626 §4.4.1, SPEC OPS-6)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from tests.net.conftest import (
    Recorder,
    StreamClient,
    is_response,
    make_request,
    request_bytes,
    wait_for,
)
from trimaran.net.endpoint import SipEndpoint
from trimaran.net.tls import MTLS_REQUIRED, TlsPolicy
from trimaran.net.transport import Address, ConnectError, TransportConfig, TransportLayer
from trimaran.security.ca import init_ca, issue
from trimaran.security.tlsconf import CertFiles, client_context, server_context
from trimaran.sip.message import Request, Response

A, B, OUTSIDER = "127.0.55.11", "127.0.55.12", "127.0.55.13"
TLS_VIA = "SIP/2.0/TLS 127.0.55.12:5061;branch=z9hG4bK-tls{n};rport"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, CertFiles]:
    """Our CA with servers a and b; another CA with an intruder claiming b's address."""
    ours = tmp_path_factory.mktemp("certs")
    other = tmp_path_factory.mktemp("other-ca")
    init_ca(ours)
    init_ca(other)
    issue(ours, "a", addresses=[A])
    issue(ours, "b", addresses=[B])
    issue(other, "intruder", addresses=[B])
    intruder = CertFiles.in_directory(other, "intruder")
    return {"a": CertFiles.in_directory(ours, "a"), "b": CertFiles.in_directory(ours, "b"),
            "intruder": CertFiles(ours / "ca.pem", intruder.cert, intruder.key)}


def policy(files: CertFiles, *, mutual: bool, peers: dict[tuple[str, int], tuple[str, int]]
           | None = None, present: CertFiles | None = None) -> TlsPolicy:
    """A server's policy; `present` is the certificate shown to peers (default: its own)."""
    shown = present or files
    return TlsPolicy(server_context=server_context(files, client_certs="optional"),
                     client_context=client_context(files.ca, shown if mutual else None),
                     port=0, mutual=mutual, peers=peers or {},
                     server_hosts=frozenset({A, B}))


Factory = Callable[..., Awaitable[tuple[TransportLayer, Recorder]]]


@pytest.fixture
async def layer() -> AsyncIterator[Factory]:
    layers: list[TransportLayer] = []

    async def factory(host: str, tls: TlsPolicy, *, tcp: bool = True,
                      config: TransportConfig | None = None) -> tuple[TransportLayer, Recorder]:
        recorder = Recorder()
        made = TransportLayer(recorder.on_message, config or TransportConfig(),
                              on_flow_closed=recorder.on_closed, tls=tls)
        layers.append(made)
        if tcp:
            await made.listen_tcp(host)
        await made.listen_tls(host)
        return made, recorder

    yield factory
    for made in layers:
        await made.close(drain_timeout=1.0)


def options(n: int = 1) -> Request:
    return make_request("OPTIONS", via=TLS_VIA.format(n=n), cseq=n, call_id=f"tls-{n}@test")


async def test_request_and_response_cross_a_tls_connection(layer: Factory,
                                                           certs: dict[str, CertFiles]) -> None:
    server, heard = await layer(A, policy(certs["a"], mutual=False))
    client, answers = await layer(B, policy(certs["b"], mutual=False), tcp=False)
    flow = await client.send(options(), Address("tls", *server.local_address("tls")))
    assert flow.transport == "tls" and flow.id.startswith("tls:")
    await wait_for(lambda: heard.requests())
    request, inbound = heard.messages[0]
    assert inbound.transport == "tls" and inbound.reliable
    assert isinstance(request, Request)
    await server.send_response(Response.for_request(request, 200, "OK"), inbound)
    await wait_for(lambda: answers.messages)
    assert is_response(answers.messages[0][0], 200)
    assert client.statistics().connections_opened == 1


async def test_keepalive_pings_are_answered_over_tls(layer: Factory,
                                                     certs: dict[str, CertFiles]) -> None:
    server, _ = await layer(A, policy(certs["a"], mutual=False))
    client, _ = await layer(B, policy(certs["b"], mutual=False), tcp=False,
                            config=TransportConfig(keepalive_interval=0.05))
    await client.send(options(), Address("tls", *server.local_address("tls")))
    await wait_for(lambda: client.statistics().keepalive_pongs_received >= 2)
    assert server.statistics().keepalive_pings_received >= 2
    assert client.statistics().keepalive_timeouts == 0


async def test_mutual_tls_carries_server_to_server_requests_sent_to_the_sip_address(
        layer: Factory, certs: dict[str, CertFiles]) -> None:
    server, heard = await layer(A, policy(certs["a"], mutual=True))
    tcp_address, tls_address = server.local_address("tcp"), server.local_address("tls")
    client, _ = await layer(B, policy(certs["b"], mutual=True,
                                            peers={tcp_address: tls_address}))
    flow = await client.send(options(), Address("tcp", *tcp_address))   # upgraded to TLS
    assert flow.transport == "tls" and flow.remote == tls_address
    assert flow.local[0] == B      # bound to its own address: A knows a server speaks
    await wait_for(lambda: heard.requests())
    assert heard.messages[0][1].transport == "tls"
    assert server.statistics().server_requests_refused == 0


async def test_a_request_built_for_tcp_but_upgraded_to_tls_says_tls_in_its_via(
        layer: Factory, certs: dict[str, CertFiles]) -> None:
    # Apps, Mediation and chat build their Via for "tcp"; mutual TLS sends the request
    # over TLS instead: the Via then names TLS and the sender's TLS address (OPS-6).
    server, heard = await layer(A, policy(certs["a"], mutual=True))
    tcp_address, tls_address = server.local_address("tcp"), server.local_address("tls")
    sender = SipEndpoint(on_request=lambda incoming: None,
                         tls=policy(certs["b"], mutual=True, peers={tcp_address: tls_address}))
    try:
        await sender.listen(B)
        await sender.listen_tls(B)
        request = make_request("OPTIONS", via=sender.via("tcp"), call_id="via-tls@test")
        branch = request.top_via.branch
        await sender.send_stateless(request, Address("tcp", *tcp_address))
        await wait_for(lambda: heard.requests())
        via = heard.requests()[0].top_via
        assert (via.transport, via.host, via.port, via.branch) == \
            ("TLS", B, sender.transport.local_address("tls")[1], branch)
    finally:
        await sender.close(drain_timeout=1.0)


async def test_mutual_tls_refuses_a_certificate_of_another_ca(
        layer: Factory, certs: dict[str, CertFiles], caplog: pytest.LogCaptureFixture) -> None:
    server, heard = await layer(A, policy(certs["a"], mutual=True))
    intruder, seen = await layer(B, policy(certs["b"], mutual=True,
                                           present=certs["intruder"]), tcp=False)
    target = Address("tls", *server.local_address("tls"))
    try:
        flow = await intruder.send(options(), target)
    except ConnectError as exc:        # TLS 1.2: the handshake itself fails
        assert "alert" in str(exc) or "certificate" in str(exc)
    else:                              # TLS 1.3: the server's alert closes the connection
        await wait_for(lambda: seen.reasons(flow))
    await asyncio.sleep(0)
    assert heard.messages == []
    assert server.statistics().connections_accepted == 0
    # The refusal is counted and logged with its reason (OPS-6).
    await wait_for(lambda: server.statistics().tls_handshakes_refused == 1)
    assert "TLS handshake refused: certificate verify failed" in caplog.text


async def test_plain_tcp_from_a_server_is_refused_with_403(
        layer: Factory, certs: dict[str, CertFiles]) -> None:
    server, heard = await layer(A, policy(certs["a"], mutual=True))
    host, port = server.local_address("tcp")
    reader, writer = await asyncio.open_connection(host, port, local_addr=(B, 0))
    client = StreamClient(reader, writer)
    try:
        await client.write(request_bytes("OPTIONS", via="SIP/2.0/TCP 127.0.55.12:5060;"
                                         "branch=z9hG4bK-plain;rport"))
        answer = await client.read_message()
    finally:
        await client.close()
    assert isinstance(answer, Response) and answer.status == 403
    assert answer.reason == MTLS_REQUIRED
    assert heard.messages == []
    assert server.statistics().server_requests_refused == 1


async def test_plain_tcp_from_a_client_address_is_served(
        layer: Factory, certs: dict[str, CertFiles]) -> None:
    server, heard = await layer(A, policy(certs["a"], mutual=True))
    reader, writer = await asyncio.open_connection(*server.local_address("tcp"),
                                                   local_addr=(OUTSIDER, 0))
    client = StreamClient(reader, writer)
    try:
        await client.write(request_bytes("OPTIONS"))
        await wait_for(lambda: heard.requests())
    finally:
        await client.close()
    assert server.statistics().server_requests_refused == 0


async def test_tls_without_client_certificate_from_a_server_is_refused(
        layer: Factory, certs: dict[str, CertFiles]) -> None:
    server, heard = await layer(A, policy(certs["a"], mutual=True))
    context = client_context(certs["a"].ca)           # verifies A, presents nothing
    reader, writer = await asyncio.open_connection(*server.local_address("tls"), ssl=context,
                                                   server_hostname=A, local_addr=(B, 0))
    client = StreamClient(reader, writer)
    try:
        await client.write(request_bytes("OPTIONS", via=TLS_VIA.format(n=9)))
        answer = await client.read_message()
    finally:
        await client.close()
    assert isinstance(answer, Response) and answer.status == 403
    assert heard.messages == []


async def test_client_refuses_a_server_whose_certificate_our_ca_did_not_sign(
        layer: Factory, certs: dict[str, CertFiles]) -> None:
    server, heard = await layer(A, TlsPolicy(server_context=server_context(
        certs["intruder"], client_certs="none"), port=0))
    client, _ = await layer(B, policy(certs["b"], mutual=False), tcp=False)
    with pytest.raises(ConnectError, match="certificate verify failed"):
        await client.send(options(), Address("tls", *server.local_address("tls")))
    assert heard.messages == []
