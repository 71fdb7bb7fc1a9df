"""`Dialog.key` and `Dialog.first_hop` (RFC 3261 §12): what every dialog of ours uses to
find itself and to send a request inside it."""

from __future__ import annotations

from typing import cast

from trimaran.sip.dialog import Dialog
from trimaran.sip.message import Request
from trimaran.sip.parser import parse_message


def _invite(record_route: str | None) -> Request:
    lines = ["INVITE sip:focus@127.0.0.1 SIP/2.0",
             "Via: SIP/2.0/TCP 127.0.0.9:5060;branch=z9hG4bK-1",
             "Max-Forwards: 70",
             "From: <sip:alice@trimaran.test>;tag=a1",
             "To: <sip:focus@trimaran.test>",
             "Call-ID: call-1",
             "CSeq: 1 INVITE",
             "Contact: <sip:alice@127.0.0.7:5072;transport=tcp>"]
    if record_route is not None:
        lines.append(f"Record-Route: {record_route}")
    data = ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()
    return cast(Request, parse_message(data))


def test_key_is_call_id_and_our_tag() -> None:
    dialog = Dialog.from_uas(_invite(None), "ours")
    assert dialog.key == ("call-1", "ours")


def test_first_hop_is_the_first_route_else_the_remote_target() -> None:
    routed = Dialog.from_uas(_invite("<sip:127.0.0.5:5060;transport=tcp;lr>"), "t")
    assert str(routed.first_hop) == "sip:127.0.0.5:5060;transport=tcp;lr"
    direct = Dialog.from_uas(_invite(None), "t")
    assert direct.first_hop == direct.remote_target
    assert str(direct.first_hop) == "sip:alice@127.0.0.7:5072;transport=tcp"
