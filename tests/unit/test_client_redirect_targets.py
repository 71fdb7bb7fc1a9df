"""Which servers a 3xx to REGISTER sends the client to (RFC 3261 §8.1.3.4, §21.3)."""

from __future__ import annotations

import pytest

from trimaran.client.ua import UAConfig, redirect_targets
from trimaran.net.transport import Address
from trimaran.sip.headers import Headers
from trimaran.sip.message import Response


def moved(*contacts: str) -> Response:
    return Response(302, None, Headers([("Contact", value) for value in contacts]))


def test_targets_keep_the_server_order_when_no_q() -> None:
    response = moved("<sip:127.0.2.1:5060;transport=tcp>", "<sip:127.0.2.2:5070;transport=tcp>")
    assert redirect_targets(response, "udp") == (Address("tcp", "127.0.2.1", 5060),
                                                 Address("tcp", "127.0.2.2", 5070))


def test_higher_q_first_and_default_q_is_one() -> None:
    response = moved("<sip:127.0.2.1;transport=tcp>;q=0.2", "<sip:127.0.2.2;transport=tcp>",
                     "<sip:127.0.2.3;transport=tcp>;q=0.5", "<sip:127.0.2.4;transport=tcp>;q=x")
    assert [a.host for a in redirect_targets(response, "tcp")] == [
        "127.0.2.2", "127.0.2.3", "127.0.2.1", "127.0.2.4"]


def test_transport_and_port_defaults() -> None:
    response = moved("sip:127.0.2.1", "<sips:127.0.2.2>", "<sip:[::1]:5080;transport=TCP>")
    assert redirect_targets(response, "tcp") == (Address("tcp", "127.0.2.1", 5060),
                                                 Address("tls", "127.0.2.2", 5061),
                                                 Address("tcp", "::1", 5080))


def test_unusable_contacts_are_ignored() -> None:
    response = moved("<tel:+15551234>", "<sip:fe1.example.com;transport=tcp>", "<http://x>",
                     "not an address", "<sip:127.0.2.9;transport=tcp>",
                     "<sip:127.0.2.9;transport=tcp>;q=0.1")
    assert redirect_targets(response, "tcp") == (Address("tcp", "127.0.2.9", 5060),)


def test_no_contact_no_target() -> None:
    assert redirect_targets(moved(), "tcp") == ()
    assert redirect_targets(moved("<tel:+1555>"), "tcp") == ()


def test_max_redirects_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="max_redirects"):
        UAConfig("sip:a@b", "pw", (Address("tcp", "127.0.0.1", 5060),), max_redirects=-1)


def test_a_director_spreads_a_pools_users_over_its_servers() -> None:
    from trimaran.roles.director.server import spread
    from trimaran.topology.model import Server

    servers = [Server(f"fe{i}", f"127.0.9.{i}") for i in range(1, 4)]
    firsts = {spread(servers, f"sip:u{n}@x")[0].name for n in range(60)}
    assert firsts == {"fe1", "fe2", "fe3"}                       # every server gets users
    for n in range(10):
        order = spread(servers, f"sip:u{n}@x")
        assert sorted(s.name for s in order) == ["fe1", "fe2", "fe3"]   # all, once each
        assert order == spread(servers, f"sip:u{n}@x")         # stable per user
    assert spread([], "sip:u@x") == []
