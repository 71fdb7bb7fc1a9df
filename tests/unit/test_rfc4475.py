"""The RFC 4475 SIP torture-test messages against our parser.

Each message is stored byte-exact under tests/vectors/rfc4475/ (see the README
there). Valid messages must parse, and serialising them must give an equivalent
message; invalid ones must raise `SipParseError` with the status RFC 4475 asks
for. Where RFC 4475 lets an element choose between accepting and rejecting,
the choice we made and the reason are recorded next to the vector.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from trimaran.sip.errors import SipParseError
from trimaran.sip.message import Message, Request, Response
from trimaran.sip.parser import BadMessage, StreamParser, error_response, parse_message

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "rfc4475"

# name -> RFC 4475 section; all of these must parse (§3.1.1 valid messages, plus the
# §3.2-3.3 messages whose problem lies above the parser, plus `baddate`, see below).
VALID = {
    "wsinv": "3.1.1.1", "intmeth": "3.1.1.2", "esc01": "3.1.1.3", "escnull": "3.1.1.4",
    "esc02": "3.1.1.5", "lwsdisp": "3.1.1.6", "longreq": "3.1.1.7", "dblreq": "3.1.1.8",
    "semiuri": "3.1.1.9", "transports": "3.1.1.10", "mpart01": "3.1.1.11",
    "unreason": "3.1.1.12", "noreason": "3.1.1.13",
    # 3.1.2.12: a non-GMT Date "is acceptable to reject ... though an element shouldn't do
    # that unless the contents of the Date header field were actually important". We never
    # interpret Date, so we accept it.
    "baddate": "3.1.2.12",
    # 3.2.1: branch is just the magic cookie. The parser "must not break"; the transaction
    # layer may fall back to RFC 2543 matching, so the parser accepts it.
    "badbranch": "3.2.1",
    # 3.3.x: Require/Proxy-Require, content type, auth scheme, broadcast Via, Max-Forwards 0,
    # Contact and URI parameters, Accept: all judged by the application layer, not here.
    "bext01": "3.3.5", "invut": "3.3.6", "regaut01": "3.3.7", "bcast": "3.3.10",
    "zeromf": "3.3.11", "cparam01": "3.3.12", "cparam02": "3.3.13", "regescrt": "3.3.14",
    "sdp01": "3.3.15",
    # RFC 2543 syntax (no branch, no From tag, no Content-Length, no Max-Forwards): accepted
    # over UDP for backward compatibility.
    "inv2543": "3.4",
}

# name -> (RFC 4475 section, status we answer, why)
INVALID = {
    "badinv01": ("3.1.2.1", 400, "empty Via and Contact elements: should respond 400"),
    "clerr": ("3.1.2.2", 400, "Content-Length beyond the datagram: should respond 400"),
    "ncl": ("3.1.2.3", 400, "negative Content-Length: should respond with an error"),
    "scalar02": ("3.1.2.4", 400, "CSeq over 2**32-1 (and Max-Forwards 300): should respond 400"),
    "scalarlg": ("3.1.2.5", 400, "a response with CSeq over 2**32-1: discarded"),
    "quotbal": ("3.1.2.6", 400, "unterminated quote in To: should return 400"),
    "ltgtruri": ("3.1.2.7", 400, "Request-URI in <>: reasonable always to reject with 400"),
    "lwsruri": ("3.1.2.8", 400, "LWS in the Request-URI: should respond 400"),
    # 3.1.2.9-10: "acceptable to reject"; §7.1 says single SP, and a repaired request would
    # have to be re-serialised before forwarding anyway, so we reject.
    "lwsstart": ("3.1.2.9", 400, "several SP in the Request-Line: we choose to reject"),
    "trws": ("3.1.2.10", 400, "SP after SIP-Version: we choose to reject"),
    # 3.1.2.11: "acceptable to reject with 400"; §19.1.1 Table 1 forbids headers in a
    # Request-URI and a proxy must not forward them, so we reject rather than strip them.
    "escruri": ("3.1.2.11", 400, "escaped headers in the Request-URI: we choose to reject"),
    "regbadct": ("3.1.2.13", 400, "Contact addr-spec with '?': reasonable to respond 400"),
    # 3.1.2.14: "reasonable to reject with 400"; header text is forwarded verbatim, so a
    # liberal reading would propagate the error. We reject.
    "badaspec": ("3.1.2.14", 400, "spaces inside <> in To: we choose to reject"),
    "baddn": ("3.1.2.15", 400, "unquoted non-token display names: reasonable to reject"),
    "badvers": ("3.1.2.16", 505, "SIP/7.0: should respond 505"),
    "mismatch01": ("3.1.2.17", 400, "CSeq method differs from the Request-Line: 400"),
    # 3.1.2.18: 501 is preferred, 400 acceptable. The parser does not know which methods
    # the element implements, so it reports 400; the application may answer 501 instead.
    "mismatch02": ("3.1.2.18", 400, "unknown method with CSeq mismatch: 400 acceptable"),
    "bigcode": ("3.1.2.19", 400, "status code 4294967301: the response is dropped"),
    "insuf": ("3.3.1", 400, "no Call-ID, From or To: ideally respond 400"),
    "unkscm": ("3.3.2", 416, "unknown Request-URI scheme: 416"),
    # 3.3.3: "appropriate to treat it as unknown and return a 416" when the element never
    # accepts the scheme; we only serve sip, sips and tel.
    "novelsc": ("3.3.3", 416, "soap.beep Request-URI: we never accept it, so 416"),
    # 3.3.4: a registrar "would reject this request with a 400" (the To is not a SIP AOR);
    # our message model holds only sip/sips/tel URIs in headers, so every element says 400.
    "unksm2": ("3.3.4", 400, "non-SIP URIs in To, From and Contact: 400"),
    "multi01": ("3.3.8", 400, "two Call-ID, CSeq, To, From...: would respond 400"),
    "mcl01": ("3.3.9", 400, "two different Content-Length values: 400"),
}

# Invalid messages that break stream framing (the connection is closed) or never complete.
STREAM_FRAMING_ERRORS = {"ncl", "mcl01"}
STREAM_INCOMPLETE = {"clerr", "baddn"}  # clerr waits for 9999 octets; baddn has no blank line


def load(name: str) -> bytes:
    """The exact bytes of one torture message."""
    return (VECTORS / f"{name}.dat").read_bytes()


def test_all_49_messages_are_stored_and_classified() -> None:
    names = {p.stem for p in VECTORS.glob("*.dat")}
    assert len(names) == 49
    assert names == set(VALID) | set(INVALID)
    assert not set(VALID) & set(INVALID)


def test_vectors_keep_crlf_line_endings() -> None:
    """RFC 4475 §2: the messages use CRLF; a bare LF would mean the files were mangled."""
    for name in VALID.keys() | INVALID.keys():
        data = load(name)
        if name != "mpart01":  # its binary body holds a lone LF
            assert data.count(b"\n") == data.count(b"\r\n"), name


def assert_equivalent(a: Message, b: Message) -> None:
    """Same start line, headers (Content-Length aside) and body."""
    assert a.start_line() == b.start_line()
    assert [h for h in a.headers if h[0] != "Content-Length"] == \
           [h for h in b.headers if h[0] != "Content-Length"]
    assert a.body == b.body


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_message_parses_and_round_trips(name: str) -> None:
    message = parse_message(load(name))
    again = parse_message(message.to_bytes())
    assert_equivalent(message, again)
    assert again.to_bytes() == message.to_bytes()


@pytest.mark.parametrize("name", sorted(set(VALID) - {"dblreq", "inv2543"}))
def test_valid_message_frames_alike_on_a_stream(name: str) -> None:
    """§18.3: on a stream the same bytes give the same message, whole or byte by byte."""
    data = load(name)
    (whole,) = StreamParser().feed(data)
    parser = StreamParser()
    (single,) = [f for i in range(len(data)) for f in parser.feed(data[i : i + 1])]
    assert isinstance(whole, Message)
    assert isinstance(single, Message)
    assert_equivalent(whole, parse_message(data))
    assert_equivalent(single, whole)


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_message_is_rejected_with_the_status_rfc_4475_asks(name: str) -> None:
    section, status, why = INVALID[name]
    with pytest.raises(SipParseError) as info:
        parse_message(load(name))
    assert info.value.status_hint == status, f"RFC 4475 §{section}: {why}"


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_message_on_a_stream(name: str) -> None:
    """A framing error closes the connection; a framed bad message is reported."""
    data = load(name)
    parser = StreamParser()
    if name in STREAM_FRAMING_ERRORS:
        with pytest.raises(SipParseError):
            parser.feed(data)
    elif name in STREAM_INCOMPLETE:
        assert parser.feed(data) == []
        assert parser.buffered == len(data)
    else:
        (frame,) = parser.feed(data)
        assert isinstance(frame, BadMessage)
        assert frame.error.status_hint == INVALID[name][1]


@pytest.mark.parametrize("name", ["badinv01", "quotbal", "ltgtruri", "lwsstart", "trws",
                                  "escruri", "badvers", "mismatch01", "unkscm", "multi01"])
def test_rejected_request_can_be_answered(name: str) -> None:
    """§8.2.6: the error response copies Via, From, To, Call-ID and CSeq."""
    data = load(name)
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    response = error_response(data, info.value)
    assert response is not None
    assert response.status == INVALID[name][1]
    assert response.headers.get("Call-ID") is not None


@pytest.mark.parametrize("name", ["scalarlg", "bigcode", "insuf"])
def test_unanswerable_message_gets_no_response(name: str) -> None:
    """Responses are dropped; insuf lacks the headers a response must copy."""
    data = load(name)
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    assert error_response(data, info.value) is None


def test_baddn_is_rejected_for_its_display_names_too() -> None:
    """3.1.2.15: the stored message also lacks its final CRLF; with it, the names still fail."""
    with pytest.raises(SipParseError) as info:
        parse_message(load("baddn") + b"\r\n")
    assert info.value.status_hint == 400
    assert "display name" in info.value.reason


# ------------------------------------------------------------ details of valid ones


def test_wsinv_whitespace_folding_and_unusual_forms() -> None:
    """3.1.1.1: folding everywhere, LWS around separators, mixed compact and long names."""
    message = parse_message(load("wsinv"))
    assert isinstance(message, Request)
    assert message.uri.param("unknownparam") == ""
    assert message.to.uri.host == "chair-dnrc.example.com"
    assert message.to.tag == "1918181833n"
    assert message.from_.display_name == 'J Rosenberg \\"'
    assert message.from_.tag == "98asjd8"
    assert message.max_forwards == 68
    assert (message.cseq.seq, message.cseq.method) == (9, "INVITE")
    assert [(v.transport, v.host, v.branch) for v in message.vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239")]
    assert message.headers.get("Subject") == ""
    assert message.headers.get("NewFangledHeader") == \
        "newfangled value continued newfangled value"
    assert message.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    (route,) = message.routes
    assert route.uri.params == (("lr", None), ("unknownwith", "value"),
                                ("unknown-no-value", None))
    (contact,) = message.contacts
    assert contact.display_name == 'Quoted string ""'
    assert contact.params == (("newparam", "newvalue"), ("secondparam", None), ("q", "0.33"))
    assert len(message.body) == 150


def test_intmeth_wide_range_of_valid_characters() -> None:
    """3.1.1.2: unusual method, URI, quoted NUL, UTF-8 parameter and header values."""
    message = parse_message(load("intmeth"))
    assert isinstance(message, Request)
    assert message.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert message.cseq.method == message.method
    assert message.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert message.uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert message.top_via.branch == "z9hG4bK-.!%66*_+`'~"
    assert message.to.display_name == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert message.from_.display_name == "token1~` token2'+_ token3*%!.-"
    assert message.from_.param("fromParam''~+*_!.-%") == \
        "\u0440\u0430\u0431\u043e\u0442\u0430\u044e\u0449\u0438\u0439"
    assert message.from_.tag == "_token~1'+`*%!-."
    assert message.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert message.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff\u5927\u505c\u96fb"


def test_esc01_escapes_are_kept_and_equivalent_when_compared() -> None:
    """3.1.1.3: %HEX escapes in user parts and URI parameters."""
    message = parse_message(load("esc01"))
    assert isinstance(message, Request)
    assert (message.uri.user, message.uri.host) == ("sips%3Auser%40example.com", "example.net")
    assert message.to.uri.aor == "sip:user@example.com"
    assert message.from_.uri.aor == "sip:I have spaces@example.net"
    (contact,) = message.contacts
    assert contact.uri.params == (("%6c%72", None), ("n%61me", "v%61lue%25%34%31"))
    assert message.content_type == "application/sdp"


def test_escnull_registers_two_distinct_contacts() -> None:
    """3.1.1.4: escaped NULs must not shorten the user part."""
    message = parse_message(load("escnull"))
    assert message.to.uri.aor == "sip:null-\x00-null@example.com"
    assert [c.uri.aor for c in message.contacts] == ["sip:\x00@host5.example.com",
                                                     "sip:\x00\x00@host5.example.com"]


def test_esc02_percent_is_not_an_escape_outside_uris() -> None:
    """3.1.1.5: an unknown method, "%Z%45" display names, two Contacts not three."""
    message = parse_message(load("esc02"))
    assert isinstance(message, Request)
    assert message.method == "RE%47IST%45R"
    assert message.to.display_name == "%Z%45"
    assert len(message.contacts) == 2
    assert message.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"


def test_lwsdisp_display_name_without_following_space() -> None:
    """3.1.1.6."""
    assert parse_message(load("lwsdisp")).from_.display_name == "caller"


def test_longreq_long_values_and_many_vias() -> None:
    """3.1.1.7."""
    message = parse_message(load("longreq"))
    assert len(message.vias) == 34
    assert len(message.from_.tag or "") > 100
    assert message.to.display_name is not None
    assert message.to.display_name.startswith("I have a user name of extremeextreme")


def test_dblreq_octets_after_the_body_are_ignored() -> None:
    """3.1.1.8 and §18.3: the trailing INVITE-looking octets are noise."""
    message = parse_message(load("dblreq"))
    assert isinstance(message, Request)
    assert message.method == "REGISTER"
    assert message.body == b""
    assert b"INVITE" not in message.to_bytes()


def test_semiuri_user_part_holds_a_parameter() -> None:
    """3.1.1.9."""
    message = parse_message(load("semiuri"))
    assert isinstance(message, Request)
    assert message.uri.user == "user;par=u%40example.net"
    assert message.uri.params == ()


def test_transports_every_via_transport_is_kept() -> None:
    """3.1.1.10."""
    assert [v.transport for v in parse_message(load("transports")).vias] == [
        "UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]


def test_mpart01_binary_body_is_framed_exactly() -> None:
    """3.1.1.11: the body holds NULs and CRLFs; Content-Length frames it."""
    data = load("mpart01")
    message = parse_message(data)
    assert len(message.body) == 553
    assert message.body == data[-553:]
    assert b"\x00" in message.body


def test_unreason_and_noreason_reason_phrases() -> None:
    """3.1.1.12 and 3.1.1.13."""
    unreason = parse_message(load("unreason"))
    noreason = parse_message(load("noreason"))
    assert isinstance(unreason, Response)
    assert isinstance(noreason, Response)
    assert unreason.reason == ("= 2**3 * 5**2 \u043d\u043e \u0441\u0442\u043e "
                               "\u0434\u0435\u0432\u044f\u043d\u043e\u0441\u0442\u043e "
                               "\u0434\u0435\u0432\u044f\u0442\u044c - "
                               "\u043f\u0440\u043e\u0441\u0442\u043e\u0435")
    assert (noreason.status, noreason.reason) == (100, "")


def test_application_layer_messages_keep_what_the_application_must_judge() -> None:
    """3.2.1, 3.3.5-3.3.15: parsed as written; the judgement lies above the parser."""
    assert parse_message(load("badbranch")).top_via.branch == "z9hG4bK"
    assert parse_message(load("bext01")).tokens("Proxy-Require") == [
        "noProxiesSupportThis", "norDoAnyProxiesSupportThis"]
    assert parse_message(load("invut")).content_type == "application/unknownformat"
    assert parse_message(load("regaut01")).headers.get("Authorization") == \
        "NoOneKnowsThisScheme opaque-data=here"
    assert parse_message(load("bcast")).vias[1].host == "255.255.255.255"
    assert parse_message(load("zeromf")).max_forwards == 0
    (addr_spec,) = parse_message(load("cparam01")).contacts
    assert (addr_spec.uri.params, addr_spec.params) == ((), (("unknownparam", None),))
    (name_addr,) = parse_message(load("cparam02")).contacts
    assert (name_addr.uri.params, name_addr.params) == ((("unknownparam", None),), ())
    (escaped,) = parse_message(load("regescrt")).contacts
    assert escaped.uri.headers == (("Route", "%3Csip:sip.example.com%3E"),)
    assert parse_message(load("sdp01")).headers.get("Accept") == "text/nobodyKnowsThis"


def test_inv2543_old_syntax_takes_the_rest_of_the_datagram_as_body() -> None:
    """RFC 2543 compatibility: no Content-Length on UDP means the body runs to the end."""
    data = load("inv2543")
    message = parse_message(data)
    assert message.top_via.branch is None
    assert message.from_.tag is None
    assert message.max_forwards is None
    assert message.body == data[data.index(b"\r\n\r\n") + 4 :]
