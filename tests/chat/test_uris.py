"""Room URIs: any room name survives the trip through a SIP URI (SPEC PC-1)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trimaran.chat.uris import is_chat, room_of, room_uri, service_uri
from trimaran.sip.parser import parse_message
from trimaran.sip.uri import URI

NAMES = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=80)


@given(NAMES)
def test_any_room_name_round_trips_through_its_uri(name: str) -> None:
    uri = URI.parse(room_uri("example.com", name))
    assert is_chat(uri)
    assert room_of(uri) == name


@given(NAMES)
def test_a_room_uri_survives_a_request_line(name: str) -> None:
    text = (f"MESSAGE {room_uri('example.com', name)} SIP/2.0\r\n"
            "Via: SIP/2.0/TCP 127.0.0.1;branch=z9hG4bK1\r\nMax-Forwards: 70\r\n"
            "From: <sip:a@example.com>;tag=1\r\nTo: <sip:chat@example.com>\r\n"
            "Call-ID: c\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n").encode()
    request = parse_message(text)
    assert room_of(request.uri) == name     # type: ignore[union-attr]


def test_the_service_uri_names_no_room() -> None:
    uri = URI.parse(service_uri("example.com"))
    assert is_chat(uri) and room_of(uri) is None
    assert not is_chat(URI.parse("sip:alice@example.com"))
    assert room_of(URI.parse("sip:chat@example.com;opaque=app:conf:focus:id:1")) is None


def test_a_room_name_that_is_not_utf8_is_an_error() -> None:
    with pytest.raises(UnicodeDecodeError):
        room_of(URI.parse("sip:chat@example.com;opaque=room:%FF"))
