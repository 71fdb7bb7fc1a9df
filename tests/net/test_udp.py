"""SIP over UDP: stamping, response routing, bad datagrams (RFC 3261 §18, RFC 3581)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from tests.net.conftest import (
    LOCALHOST,
    DatagramClient,
    LayerFactory,
    is_response,
    make_request,
    request_bytes,
    wait_for,
)
from trimaran.net.transport import (
    Address,
    FlowClosedError,
    MessageTooLargeError,
    NotListeningError,
    TransportError,
    TransportLayer,
)
from trimaran.sip.message import Request, Response

UdpClientFactory = Callable[[], Awaitable[DatagramClient]]


async def test_request_gets_received_and_rport(make_layer: LayerFactory,
                                               udp_client: UdpClientFactory) -> None:
    layer, rec = await make_layer(tcp=False)
    client = await udp_client()
    client.send(request_bytes(), layer.local_address("udp"))
    await wait_for(lambda: rec.messages)
    message, flow = rec.messages[0]
    assert isinstance(message, Request) and message.method == "OPTIONS"
    via = message.top_via
    assert via.received == LOCALHOST
    assert via.rport == client.address[1]
    assert via.host == "192.0.2.10" and via.port == 5062
    assert flow.transport == "udp" and not flow.reliable
    assert flow.local == layer.local_address("udp") and flow.remote == client.address
    assert flow.id == f"udp:{LOCALHOST}:{flow.local[1]}>{LOCALHOST}:{client.address[1]}"
    assert layer.flow(flow.id) == flow and layer.is_open(flow)
    stats = layer.statistics()
    assert stats.messages_in == 1 and stats.bytes_in > 0


async def test_no_received_when_sent_by_matches_source(make_layer: LayerFactory,
                                                       udp_client: UdpClientFactory) -> None:
    layer, rec = await make_layer(tcp=False)
    client = await udp_client()
    via = f"SIP/2.0/UDP {LOCALHOST}:{client.address[1]};branch=z9hG4bK-x"
    client.send(request_bytes(via=via), layer.local_address("udp"))
    await wait_for(lambda: rec.messages)
    top = rec.messages[0][0].top_via
    assert top.received is None and top.param("rport") is None


async def test_response_goes_to_rport(make_layer: LayerFactory,
                                      udp_client: UdpClientFactory) -> None:
    layer, rec = await make_layer(tcp=False)
    client = await udp_client()
    client.send(request_bytes(), layer.local_address("udp"))  # sent-by 192.0.2.10:5062
    await wait_for(lambda: rec.messages)
    request, flow = rec.messages[0]
    assert isinstance(request, Request)
    used = await layer.send_response(Response.for_request(request, 200, to_tag="t1"), flow)
    assert used == flow
    await wait_for(lambda: client.received)
    response = client.messages()[0]
    assert is_response(response, 200)
    assert response.top_via.rport == client.address[1]
    assert layer.statistics().messages_out == 1


async def test_response_without_rport_goes_to_sent_by_port(
        make_layer: LayerFactory, udp_client: UdpClientFactory) -> None:
    layer, rec = await make_layer(tcp=False)
    sender = await udp_client()
    listener = await udp_client()
    via = f"SIP/2.0/UDP {LOCALHOST}:{listener.address[1]};branch=z9hG4bK-y"
    sender.send(request_bytes(via=via), layer.local_address("udp"))
    await wait_for(lambda: rec.messages)
    request, flow = rec.messages[0]
    assert isinstance(request, Request)
    await layer.send_response(Response.for_request(request, 180), flow)
    await wait_for(lambda: listener.received)
    assert is_response(listener.messages()[0], 180)
    assert sender.received == []


async def test_response_without_flow_uses_via(make_layer: LayerFactory,
                                              udp_client: UdpClientFactory) -> None:
    layer, _ = await make_layer(tcp=False)
    client = await udp_client()
    request = make_request(
        via=f"SIP/2.0/UDP 192.0.2.99:5062;branch=z9hG4bK-z;received={LOCALHOST};"
            f"rport={client.address[1]}")
    flow = await layer.send_response(Response.for_request(request, 200), None)
    assert flow.remote == client.address
    await wait_for(lambda: client.received)
    assert is_response(client.messages()[0], 200)


async def test_bad_datagrams_do_not_crash(make_layer: LayerFactory,
                                          udp_client: UdpClientFactory) -> None:
    layer, rec = await make_layer(tcp=False)
    client = await udp_client()
    target = layer.local_address("udp")
    for junk in (b"\x00\x01\x00\x00 stun-ish", b"\xff" * 100, b"INVITE\r\n\r\n",
                 b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n"):
        client.send(junk, target)
    await wait_for(lambda: layer.statistics().bad_messages == 4)
    client.send(request_bytes(), target)
    await wait_for(lambda: rec.messages)
    assert len(rec.messages) == 1
    assert client.received == []  # none of the junk could be answered


async def test_answerable_bad_request_gets_400_with_reason(
        make_layer: LayerFactory, udp_client: UdpClientFactory) -> None:
    layer, rec = await make_layer(tcp=False)
    client = await udp_client()
    data = request_bytes(extra=(("Max-Forwards", "lots"),)).replace(
        b"Max-Forwards: 70\r\n", b"")
    client.send(data, layer.local_address("udp"))
    await wait_for(lambda: client.received)
    response = client.messages()[0]
    assert isinstance(response, Response) and response.status == 400
    assert "Max-Forwards" in response.reason
    assert rec.messages == [] and layer.statistics().bad_messages == 1


async def test_crlf_keepalive_is_ignored(make_layer: LayerFactory,
                                         udp_client: UdpClientFactory) -> None:
    layer, rec = await make_layer(tcp=False)
    client = await udp_client()
    client.send(b"\r\n\r\n", layer.local_address("udp"))
    await wait_for(lambda: layer.statistics().keepalive_pings_received == 1)
    assert rec.messages == [] and client.received == []
    assert layer.statistics().bad_messages == 0


async def test_incoming_response_is_passed_unchanged(make_layer: LayerFactory,
                                                     udp_client: UdpClientFactory) -> None:
    layer, rec = await make_layer(tcp=False)
    client = await udp_client()
    response = Response.for_request(make_request(), 200)
    client.send(response.to_bytes(), layer.local_address("udp"))
    await wait_for(lambda: rec.messages)
    received, flow = rec.messages[0]
    assert is_response(received, 200)
    assert received.top_via.received is None
    assert flow.remote == client.address


async def test_send_to_address(make_layer: LayerFactory, udp_client: UdpClientFactory) -> None:
    layer, _ = await make_layer(tcp=False)
    client = await udp_client()
    flow = await layer.send(make_request("MESSAGE", body=b"hi"), Address("udp", *client.address))
    assert flow.local == layer.local_address("udp") and flow.remote == client.address
    await wait_for(lambda: client.received)
    message = client.messages()[0]
    assert isinstance(message, Request) and message.body == b"hi"
    # and back over the returned flow
    await layer.send(make_request("MESSAGE", body=b"again"), flow)
    await wait_for(lambda: len(client.received) == 2)


async def test_oversize_datagram_is_refused(make_layer: LayerFactory,
                                            udp_client: UdpClientFactory) -> None:
    layer, _ = await make_layer(tcp=False)
    client = await udp_client()
    with pytest.raises(MessageTooLargeError):
        await layer.send(make_request("MESSAGE", body=b"x" * 70_000),
                         Address("udp", *client.address))
    assert layer.statistics().messages_out == 0


async def test_handler_exception_is_contained(udp_client: UdpClientFactory) -> None:
    seen: list[str] = []

    def handler(message: object, flow: object) -> None:
        seen.append("called")
        raise RuntimeError("application bug")

    layer = TransportLayer(handler)
    try:
        addr = await layer.listen_udp(LOCALHOST)
        client = await udp_client()
        client.send(request_bytes(), addr)
        client.send(request_bytes(), addr)
        await wait_for(lambda: len(seen) == 2)
    finally:
        await layer.close()


async def test_errors_for_bad_targets(make_layer: LayerFactory) -> None:
    layer, _ = await make_layer(tcp=False)
    with pytest.raises(TransportError, match="IP address"):
        await layer.send(make_request(), Address("udp", "example.com", 5060))
    with pytest.raises(TransportError, match="unsupported"):
        await layer.send(make_request(), Address("sctp", LOCALHOST, 5060))
    with pytest.raises(NotListeningError):
        await layer.send(make_request(), Address("udp", "::1", 5060))
    with pytest.raises(NotListeningError):
        layer.local_address("tcp")


async def test_udp_flow_ends_with_the_socket(make_layer: LayerFactory,
                                             udp_client: UdpClientFactory) -> None:
    layer, _ = await make_layer(tcp=False)
    client = await udp_client()
    flow = await layer.send(make_request(), Address("udp", *client.address))
    await layer.close()
    assert layer.flow(flow.id) is None and not layer.is_open(flow)
    with pytest.raises(TransportError):
        await layer.send(make_request(), flow)
    with pytest.raises(NotListeningError):
        layer.local_address("udp")
    with pytest.raises(FlowClosedError):
        await TransportLayer(lambda m, f: None).send_response(
            Response.for_request(make_request(), 200), flow)
