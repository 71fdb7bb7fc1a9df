"""The tokens between Front Ends and Mediation servers (SPEC EV-2; no open relay): a
trunk request or a PSTN caller is believed only with the deployment's key, and a token
does not carry over to another call, number or method."""

from __future__ import annotations

from trimaran.roles.frontend.voice import is_phone_uri
from trimaran.sip.headers import Headers
from trimaran.sip.message import Request
from trimaran.sip.uri import URI
from trimaran.voice.trust import (
    PSTN_HEADER,
    TRUNK_HEADER,
    pstn_header,
    trunk_header,
    verified_caller,
    verified_trunk,
)

KEY, OTHER_KEY = b"k" * 32, b"o" * 32


def invite(uri: str = "sip:+14255550123@127.0.0.9:5060;user=phone", call_id: str = "c1",
           method: str = "INVITE") -> Request:
    headers = Headers([("Via", "SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bK1"),
                       ("From", "<sip:alice@trimaran.test>;tag=1"),
                       ("To", "<sip:+14255550123@127.0.0.9;user=phone>"),
                       ("Call-ID", call_id), ("CSeq", f"1 {method}"),
                       ("Max-Forwards", "70")])
    return Request(method, URI.parse(uri), headers)


def with_header(request: Request, name: str, value: str) -> Request:
    out = request.copy()
    out.headers.add(name, value)
    return out


def test_a_trunk_token_made_with_the_deployment_key_names_its_trunk() -> None:
    request = invite()
    signed = with_header(request, TRUNK_HEADER, trunk_header(KEY, "t1", request))
    assert verified_trunk(KEY, signed) == "t1"


def test_a_trunk_token_is_refused_with_another_key_or_on_another_call_or_number() -> None:
    request = invite()
    value = trunk_header(KEY, "t1", request)
    assert verified_trunk(OTHER_KEY, with_header(request, TRUNK_HEADER, value)) is None
    assert verified_trunk(KEY, with_header(invite(call_id="c2"), TRUNK_HEADER, value)) is None
    other_number = invite("sip:+19005550000@127.0.0.9:5060;user=phone")
    assert verified_trunk(KEY, with_header(other_number, TRUNK_HEADER, value)) is None
    renamed = value.replace("t1;", "t2;", 1)
    assert verified_trunk(KEY, with_header(request, TRUNK_HEADER, renamed)) is None


def test_a_missing_or_malformed_trunk_header_is_no_trunk() -> None:
    assert verified_trunk(KEY, invite()) is None
    for value in ("", "t1", ";token=", "t1;token=zz", "\u00e9;token=\u00e9"):
        assert verified_trunk(KEY, with_header(invite(), TRUNK_HEADER, value)) is None


def test_a_pstn_caller_is_believed_only_with_a_valid_token() -> None:
    request = invite("sip:+14255550101@trimaran.test;user=phone")
    caller = "sip:+12065550199@trimaran.test;user=phone"
    signed = with_header(request, PSTN_HEADER, pstn_header(KEY, caller, request))
    assert verified_caller(KEY, signed) == caller
    assert verified_caller(OTHER_KEY, signed) is None
    forged = with_header(request, PSTN_HEADER, f"<{caller}>;token=" + "0" * 32)
    assert verified_caller(KEY, forged) is None
    assert verified_caller(KEY, with_header(request, PSTN_HEADER, "<<not a uri")) is None
    bye = invite("sip:+14255550101@trimaran.test;user=phone", method="BYE")
    replayed = with_header(bye, PSTN_HEADER, pstn_header(KEY, caller, request))
    assert verified_caller(KEY, replayed) is None


def test_phone_numbers_are_told_from_users() -> None:
    for uri in ("tel:+14255550123", "sip:4255550123@trimaran.test;user=phone",
                "sip:425-555-0123@trimaran.test", "sip:+14255550123@trimaran.test"):
        assert is_phone_uri(URI.parse(uri)), uri
    for uri in ("sip:alice@trimaran.test", "sip:trimaran.test", "sip:a1b2@trimaran.test"):
        assert not is_phone_uri(URI.parse(uri)), uri
