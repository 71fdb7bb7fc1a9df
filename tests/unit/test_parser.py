"""Parsing SIP messages from datagrams and streams (RFC 3261 §7, §18.3, §20; RFC 5626 §4.4.1)."""

from __future__ import annotations

import pytest

from trimaran.sip.errors import SipParseError
from trimaran.sip.message import Message, Request, Response
from trimaran.sip.parser import (
    BadMessage,
    Frame,
    KeepAlive,
    Limits,
    StreamParser,
    error_response,
    parse_message,
)

SDP = (b"v=0\r\no=alice 2890844526 2890844526 IN IP4 192.0.2.101\r\ns=-\r\n"
       b"c=IN IP4 192.0.2.101\r\nt=0 0\r\nm=audio 49172 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
INVITE_HEADERS = [
    "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds",
    "Max-Forwards: 70",
    "To: Bob <sip:bob@biloxi.example.com>",
    'From: "Alice" <sip:alice@atlanta.example.com>;tag=1928301774',
    "Call-ID: a84b4c76e66710@pc33.atlanta.example.com",
    "CSeq: 314159 INVITE",
    "Contact: <sip:alice@pc33.atlanta.example.com>",
    "Content-Type: application/sdp",
]


def build(start: str = "INVITE sip:bob@biloxi.example.com SIP/2.0",
          headers: list[str] | None = None, body: bytes = b"", *,
          length: bool = True, eol: str = "\r\n") -> bytes:
    """A message from its parts; Content-Length is appended unless `length` is false."""
    lines = [start, *(INVITE_HEADERS if headers is None else headers)]
    if length:
        lines.append(f"Content-Length: {len(body)}")
    return (eol.join(lines) + eol + eol).encode() + body


def with_header(*extra: str, replace: str | None = None) -> list[str]:
    """INVITE_HEADERS without the `replace` header (by name prefix) plus `extra` lines."""
    kept = [h for h in INVITE_HEADERS if replace is None or not h.startswith(replace + ":")]
    return [*kept, *extra]


def parse_error(data: bytes, limits: Limits | None = None) -> SipParseError:
    """The SipParseError parse_message raises for `data`."""
    with pytest.raises(SipParseError) as info:
        parse_message(data) if limits is None else parse_message(data, limits)
    return info.value


def parse_request(data: bytes) -> Request:
    """Parse `data`, which must be a request."""
    message = parse_message(data)
    assert isinstance(message, Request)
    return message


def parse_response(data: bytes) -> Response:
    """Parse `data`, which must be a response."""
    message = parse_message(data)
    assert isinstance(message, Response)
    return message


def assert_equivalent(a: Message, b: Message) -> None:
    """Same start line, same headers (Content-Length aside), same body."""
    assert a.start_line() == b.start_line()
    assert [h for h in a.headers if h[0] != "Content-Length"] == \
           [h for h in b.headers if h[0] != "Content-Length"]
    assert a.body == b.body


class TestRequests:
    """§7.1 Request-Line = Method SP Request-URI SP SIP-Version CRLF."""

    def test_invite_with_sdp_body(self) -> None:
        message = parse_message(build(body=SDP))
        assert isinstance(message, Request)
        assert (message.method, str(message.uri), message.version) == (
            "INVITE", "sip:bob@biloxi.example.com", "SIP/2.0")
        assert message.call_id == "a84b4c76e66710@pc33.atlanta.example.com"
        assert message.headers.get("Content-Type") == "application/sdp"
        assert message.content_type == "application/sdp"
        assert message.body == SDP
        assert message.content_length == len(SDP)

    def test_unknown_method_is_any_token(self) -> None:
        """§7.1, RFC 4475 §3.1.1.2: a method is a token; unknown ones parse."""
        headers = with_header("CSeq: 1 NEW-METHOD.x", replace="CSeq")
        message = parse_request(build("NEW-METHOD.x sip:b@h SIP/2.0", headers))
        assert message.method == "NEW-METHOD.x"

    def test_method_is_case_sensitive(self) -> None:
        """§7.1: methods are case-sensitive; `invite` does not match CSeq `INVITE`."""
        assert parse_error(build("invite sip:b@h SIP/2.0")).status_hint == 400

    def test_cseq_method_must_match_the_request_method(self) -> None:
        """§8.1.1.5, RFC 4475 §3.1.2.17 mismatch01: 400."""
        error = parse_error(build(headers=with_header("CSeq: 1 OPTIONS", replace="CSeq")))
        assert error.status_hint == 400

    def test_crlf_before_the_start_line_is_ignored(self) -> None:
        """§7.5: CRLFs preceding the start line are ignored."""
        assert parse_request(b"\r\n\r\n" + build()).method == "INVITE"

    def test_bare_lf_line_endings_are_accepted(self) -> None:
        """§7: CRLF is required, but we deliberately accept bare LF (being liberal)."""
        message = parse_message(build(body=b"hello", eol="\n"))
        assert message.call_id == "a84b4c76e66710@pc33.atlanta.example.com"
        assert message.body == b"hello"

    @pytest.mark.parametrize("header", ["Via", "From", "To", "Call-ID", "CSeq"])
    def test_mandatory_header_missing_is_a_400(self, header: str) -> None:
        """§8.1.1: To, From, CSeq, Call-ID, Max-Forwards (optional here) and Via."""
        assert parse_error(build(headers=with_header(replace=header))).status_hint == 400

    @pytest.mark.parametrize("start", [
        "INVITE  sip:bob@h SIP/2.0", "INVITE sip:bob@h SIP/2.0 ", "INVITE sip:bob@h",
        "INVITE sip:bob@h; lr SIP/2.0", "INVITE <sip:bob@h> SIP/2.0", "IN<VITE sip:b@h SIP/2.0",
        "INVITE sip:bob@h?Route=%3Csip:x%3E SIP/2.0", "INVITE sip:bob@h HTTP/1.1",
    ])
    def test_malformed_request_line_is_a_400(self, start: str) -> None:
        """RFC 4475 §3.1.2.7-11: we reject these rather than repair them."""
        assert parse_error(build(start)).status_hint == 400

    def test_headers_that_are_not_utf8_are_a_400(self) -> None:
        data = build(headers=with_header("Subject: caf\xe9")).replace(b"caf\xc3\xa9", b"caf\xe9")
        assert parse_error(data).status_hint == 400

    @pytest.mark.parametrize("line", ["NoColonHere", "Bad Name: x", ": no name", "Via;x: y"])
    def test_malformed_header_line_is_a_400(self, line: str) -> None:
        assert parse_error(build(headers=with_header(line))).status_hint == 400


class TestResponses:
    """§7.2 Status-Line = SIP-Version SP Status-Code SP Reason-Phrase CRLF."""

    HEADERS = [h for h in INVITE_HEADERS if not h.startswith("Max-Forwards")]

    def test_status_reason_and_headers(self) -> None:
        message = parse_message(build("SIP/2.0 180 Ringing", self.HEADERS))
        assert isinstance(message, Response)
        assert (message.status, message.reason) == (180, "Ringing")
        assert message.cseq.method == "INVITE"

    def test_reason_phrase_may_hold_utf8_and_punctuation(self) -> None:
        """RFC 4475 §3.1.1.12 unreason."""
        reason = "= 2**3 * 5**2 \u043d\u043e \u0441\u0442\u043e"
        assert parse_response(build(f"SIP/2.0 200 {reason}", self.HEADERS)).reason == reason

    @pytest.mark.parametrize("start", ["SIP/2.0 100 ", "SIP/2.0 100"])
    def test_reason_phrase_may_be_empty(self, start: str) -> None:
        """RFC 4475 §3.1.1.13 noreason; a missing SP is tolerated (liberal receiver)."""
        assert parse_response(build(start, self.HEADERS)).reason == ""

    @pytest.mark.parametrize("start", ["SIP/2.0 4294967301 better not break", "SIP/2.0 099 x",
                                       "SIP/2.0 700 x", "SIP/2.0 20 OK", "SIP/2.0 2OO OK",
                                       "SIP/2.0 \u0662\u0660\u0660 OK", "SIP/2.0"])
    def test_bad_status_code_is_rejected(self, start: str) -> None:
        """RFC 4475 §3.1.2.19 bigcode: 3 digits, 100-699 (§7.2, §21)."""
        parse_error(build(start, self.HEADERS))

    def test_other_sip_version_is_505(self) -> None:
        assert parse_error(build("SIP/3.0 200 OK", self.HEADERS)).status_hint == 505


class TestHeaderFields:
    def test_folded_lines_are_joined_with_one_space(self) -> None:
        """§7.3.1: a line starting with SP or HTAB continues the previous header."""
        headers = with_header("Subject: I know you're there,\r\n  pick up the phone\r\n\tnow")
        assert parse_message(build(headers=headers)).headers.get("Subject") == \
            "I know you're there, pick up the phone now"

    def test_folding_may_split_a_structured_value_anywhere_whitespace_is_allowed(self) -> None:
        headers = with_header("Via: SIP/2.0/UDP\r\n first.example.com\r\n ;branch=z9hG4bK1,\r\n"
                              " SIP/2.0/TCP second.example.com;branch=z9hG4bK2",
                              "CSeq: 314159\r\n INVITE", replace="CSeq")
        message = parse_message(build(headers=headers))
        assert [v.host for v in message.vias] == ["pc33.atlanta.example.com",
                                                  "first.example.com", "second.example.com"]
        assert message.cseq.seq == 314159

    def test_continuation_line_without_a_header_is_a_400(self) -> None:
        assert parse_error(build(headers=[" folded", *INVITE_HEADERS])).status_hint == 400

    def test_empty_header_value(self) -> None:
        """RFC 4475 §3.1.1.1: `s :` is an empty Subject."""
        assert parse_message(build(headers=with_header("s :"))).headers.get("Subject") == ""

    def test_compact_forms_mean_the_same_headers(self) -> None:
        """§7.3.3: v, f, t, i, m, c, k, s, l are Via, From, To, Call-ID, Contact, ..."""
        compact = [
            "v: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds",
            "t: Bob <sip:bob@biloxi.example.com>",
            'f: "Alice" <sip:alice@atlanta.example.com>;tag=1928301774',
            "i: a84b4c76e66710@pc33.atlanta.example.com", "CSeq: 314159 INVITE",
            "m: <sip:alice@pc33.atlanta.example.com>", "c: application/sdp", "k: path",
            "s: hi", "Max-Forwards: 70", f"l: {len(SDP)}",
        ]
        short = parse_message(build(headers=compact, body=SDP, length=False))
        assert short.from_.tag == "1928301774"
        assert short.contacts[0].uri.user == "alice"
        assert short.tokens("Supported") == ["path"]
        assert short.headers.get("Subject") == "hi"
        assert short.body == SDP

    def test_header_names_are_case_insensitive(self) -> None:
        """§7.3.1 and RFC 4475 §3.1.1.1: `MaX-fOrWaRdS`, `cseq`, `TO`."""
        headers = ["vIa: SIP/2.0/UDP h;branch=z9hG4bK1", "TO : <sip:b@h>", "from: <sip:a@h>;tag=1",
                   "CALL-ID: x", "cseq: 1 INVITE", "MaX-fOrWaRdS: 0068"]
        message = parse_message(build(headers=headers))
        assert message.max_forwards == 68
        assert message.to.uri.user == "b"

    def test_list_headers_combine_across_lines_and_commas_in_order(self) -> None:
        """§7.3.1: a comma-separated list equals several header fields, order kept."""
        headers = ["Via: SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2",
                   *INVITE_HEADERS[1:], "v: SIP/2.0/TCP c;branch=z9hG4bK3",
                   "Route: <sip:p1.example.com;lr>,<sip:p2.example.com;lr>",
                   "Route: <sip:p3.example.com;lr>",
                   "Record-Route: <sip:rr2.example.com;lr>, <sip:rr1.example.com;lr>"]
        message = parse_message(build(headers=headers))
        assert [v.host for v in message.vias] == ["a", "b", "c"]
        assert message.top_via.branch == "z9hG4bK1"
        assert [r.uri.host for r in message.routes] == ["p1.example.com", "p2.example.com",
                                                        "p3.example.com"]
        assert [r.uri.host for r in message.record_routes] == ["rr2.example.com",
                                                               "rr1.example.com"]

    def test_option_tags_and_methods_are_tokens(self) -> None:
        """§20.32 Require, §20.37 Supported, §20.5 Allow."""
        headers = with_header("Require: 100rel", "Supported: path, outbound", "k: gruu",
                              "Allow: INVITE, ACK,OPTIONS, BYE")
        message = parse_message(build(headers=headers))
        assert message.tokens("Require") == ["100rel"]
        assert message.tokens("Supported") == ["path", "outbound", "gruu"]
        assert message.tokens("Allow") == ["INVITE", "ACK", "OPTIONS", "BYE"]
        assert message.tokens("Proxy-Require") == []
        with pytest.raises(SipParseError):  # checked when read
            parse_message(build(headers=with_header("Require: 100rel, bad tag"))).tokens("Require")

    def test_digest_credentials_stay_one_value(self) -> None:
        """§20.7, §20.44: the commas of a challenge or credentials do not split it."""
        challenge = ('Digest realm="atlanta.example.com", qop="auth,auth-int", '
                     'nonce="ea9c8e88df84f1cec4341ae6cbe5a359", opaque="", stale=FALSE, '
                     "algorithm=MD5")
        credentials = ('Digest username="alice", realm="atlanta.example.com", nonce="ea9c", '
                       'uri="sip:bob@biloxi.example.com", response="dfe56131d1958046689d8330",'
                       ' algorithm=MD5, cnonce="0a4f113b", qop=auth, nc=00000001')
        headers = with_header(f"WWW-Authenticate: {challenge}", f"Authorization: {credentials}",
                              f"Proxy-Authorization: {credentials}")
        message = parse_message(build(headers=headers))
        assert message.headers.get_all("WWW-Authenticate") == [challenge]
        assert message.headers.get_all("Authorization") == [credentials]
        assert message.headers.get_all("Proxy-Authorization") == [credentials]


class TestStructuredViews:
    def test_from_and_to_tags(self) -> None:
        """§8.1.1.3: From carries a tag; To has none outside a dialog."""
        message = parse_message(build())
        assert message.from_.tag == "1928301774"
        assert message.from_.display_name == "Alice"
        assert message.to.tag is None
        assert message.to.display_name == "Bob"

    def test_quoted_display_names_and_params_with_escapes(self) -> None:
        headers = with_header('From: "J Rosenberg \\\\\\"" <sip:jdrosen@example.com>;tag=98',
                              'Contact: "Quoted string \\"\\"" <sip:jdrosen@example.com>;'
                              'newparam="a \\"b\\" c";q=0.33', replace="From")
        message = parse_message(build(headers=headers))
        assert message.from_.display_name == 'J Rosenberg \\"'
        assert message.contacts[1].display_name == 'Quoted string ""'
        assert message.contacts[1].param("newparam") == 'a "b" c'

    def test_register_contacts_with_expires_q_instance_and_reg_id(self) -> None:
        """§10.2.1.2 expires/q, RFC 5626 §4.2 +sip.instance and reg-id."""
        contact = ('<sip:alice@192.0.2.10:5060;transport=tcp>;expires=3600;q=0.7;reg-id=1;'
                   '+sip.instance="<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>", '
                   '"Alice, mobile" <sip:alice@198.51.100.7>;expires=60')
        headers = with_header(f"Contact: {contact}", "Expires: 7200", replace="Contact")
        message = parse_message(build(headers=headers))
        first, second = message.contacts
        assert first.param("expires") == "3600"
        assert first.param("q") == "0.7"
        assert first.param("reg-id") == "1"
        assert first.param("+sip.instance") == "<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>"
        assert second.display_name == "Alice, mobile"
        assert message.expires == 7200
        assert not message.is_star_contact

    def test_star_contact(self) -> None:
        """§10.2.2: `Contact: *` removes every binding."""
        message = parse_message(build(headers=with_header("Contact: *", "Expires: 0",
                                                          replace="Contact")))
        assert message.is_star_contact
        assert message.contacts == []

    def test_star_contact_mixed_with_addresses_is_a_400(self) -> None:
        """§20.10: Contact is either STAR or a list of addresses."""
        headers = with_header("Contact: *", "Contact: <sip:a@h>", replace="Contact")
        assert parse_error(build(headers=headers)).status_hint == 400

    def test_max_forwards_and_expires_absent_are_none(self) -> None:
        message = parse_message(build(headers=with_header(replace="Max-Forwards")))
        assert message.max_forwards is None
        assert message.expires is None

    @pytest.mark.parametrize(("header", "value"), [
        ("Max-Forwards", "256"), ("Max-Forwards", "-1"), ("Max-Forwards", "seventy"),
        ("Max-Forwards", "\u00b2"), ("Expires", "4294967296"), ("Expires", "1" + "0" * 100),
        ("CSeq", "36893488147419103232 INVITE"), ("Call-ID", "two words"),
    ])
    def test_scalar_out_of_range_is_a_400(self, header: str, value: str) -> None:
        """RFC 4475 §3.1.2.4 scalar02: Max-Forwards 0-255, CSeq and Expires below 2**32."""
        error = parse_error(build(headers=with_header(f"{header}: {value}", replace=header)))
        assert error.status_hint == 400

    @pytest.mark.parametrize("header", ["Call-ID: other@h", "CSeq: 2 INVITE", "To: <sip:o@h>",
                                        "From: <sip:o@h>;tag=2", "Max-Forwards: 5"])
    def test_single_valued_header_given_twice_is_a_400(self, header: str) -> None:
        """§7.3.1 and RFC 4475 §3.3.8 multi01."""
        assert parse_error(build(headers=with_header(header))).status_hint == 400


class TestDatagramBody:
    """§18.3: on datagrams Content-Length, when present, gives the body size."""

    def test_octets_after_content_length_are_discarded(self) -> None:
        """RFC 4475 §3.1.1.8 dblreq: the extra octets are noise, not a second message."""
        data = build(body=b"") + build()
        assert parse_message(data).body == b""

    def test_without_content_length_the_body_is_the_rest_of_the_datagram(self) -> None:
        assert parse_message(build(body=SDP, length=False)).body == SDP

    def test_binary_body_with_nuls_is_kept_exactly(self) -> None:
        body = bytes(range(256)) + b"\r\n\r\n\x00"
        assert parse_message(build(body=body)).body == body

    def test_body_shorter_than_content_length_is_a_400(self) -> None:
        """RFC 4475 §3.1.2.2 clerr."""
        data = build(headers=with_header("Content-Length: 9999"), body=SDP, length=False)
        assert parse_error(data).status_hint == 400

    @pytest.mark.parametrize("value", ["-999", "five", "", "1.5", "0x10", "\u0665"])
    def test_non_numeric_content_length_is_a_400(self, value: str) -> None:
        """RFC 4475 §3.1.2.3 ncl."""
        data = build(headers=with_header(f"Content-Length: {value}"), length=False)
        assert parse_error(data).status_hint == 400

    def test_two_content_lengths_are_a_400(self) -> None:
        """RFC 4475 §3.3.9 mcl01."""
        data = build(headers=with_header("Content-Length: 0", "l: 0"), length=False)
        assert parse_error(data).status_hint == 400

    def test_missing_blank_line_is_a_400(self) -> None:
        assert parse_error(build().rstrip(b"\r\n")).status_hint == 400


def feed_all(parser: StreamParser, chunks: list[bytes]) -> list[Frame]:
    """Every frame produced by feeding `chunks` in order."""
    return [frame for chunk in chunks for frame in parser.feed(chunk)]


class TestStreamFraming:
    """§18.3: on streams Content-Length is mandatory and delimits the message."""

    def test_one_message_in_one_read(self) -> None:
        (frame,) = StreamParser().feed(build(body=SDP))
        assert isinstance(frame, Request)
        assert frame.body == SDP

    def test_partial_reads_wait_for_the_whole_message(self) -> None:
        data = build(body=SDP)
        parser = StreamParser()
        assert parser.feed(data[:40]) == []
        assert parser.feed(data[40 : len(data) - 10]) == []
        assert parser.buffered == len(data) - 10
        (frame,) = parser.feed(data[len(data) - 10 :])
        assert isinstance(frame, Request)
        assert frame.body == SDP
        assert parser.buffered == 0

    def test_several_messages_in_one_read(self) -> None:
        second = build(headers=with_header("Call-ID: second", replace="Call-ID"), body=b"x")
        frames = StreamParser().feed(build(body=SDP) + second + build()[:30])
        assert [f.call_id for f in frames if isinstance(f, Message)] == [
            "a84b4c76e66710@pc33.atlanta.example.com", "second"]

    def test_byte_at_a_time_gives_the_same_messages_as_one_read(self) -> None:
        data = b"\r\n\r\n" + build(body=SDP) + b"\r\n" + build(body=b"\r\n\r\nbody") + build()
        whole = StreamParser().feed(data)
        single = feed_all(StreamParser(), [data[i : i + 1] for i in range(len(data))])
        assert [type(f) for f in single] == [type(f) for f in whole] == [
            KeepAlive, Request, KeepAlive, Request, Request]
        for a, b in zip(whole, single, strict=True):
            if isinstance(a, Message) and isinstance(b, Message):
                assert_equivalent(a, b)

    def test_body_is_framed_by_content_length_even_if_it_looks_like_a_message(self) -> None:
        inner = build()
        (frame,) = StreamParser().feed(build(body=inner))
        assert isinstance(frame, Message)
        assert frame.body == inner

    def test_missing_content_length_breaks_the_stream(self) -> None:
        with pytest.raises(SipParseError):
            StreamParser().feed(build(length=False))

    @pytest.mark.parametrize("value", ["-1", "five", "1 2"])
    def test_bad_content_length_breaks_the_stream(self, value: str) -> None:
        """RFC 4475 §3.1.2.3 ncl: the framing error is not recoverable; close the connection."""
        with pytest.raises(SipParseError):
            StreamParser().feed(build(headers=with_header(f"Content-Length: {value}"),
                                      length=False))

    def test_conflicting_content_lengths_break_the_stream(self) -> None:
        with pytest.raises(SipParseError):
            StreamParser().feed(build(headers=with_header("Content-Length: 3", "l: 5"),
                                      length=False))

    def test_folded_content_length_is_honoured(self) -> None:
        """§7.3.1 folding applies to Content-Length too."""
        data = build(headers=with_header("Content-Length:\r\n 4"), body=b"abcd", length=False)
        (frame,) = StreamParser().feed(data + build())[:1]
        assert isinstance(frame, Message)
        assert frame.body == b"abcd"

    def test_continuation_line_is_not_taken_for_a_content_length(self) -> None:
        data = build(headers=with_header("Subject: a\r\n l: 99"))
        (frame,) = StreamParser().feed(data)
        assert isinstance(frame, Message)
        assert frame.headers.get("Subject") == "a l: 99"

    def test_well_framed_bad_message_is_reported_and_the_stream_goes_on(self) -> None:
        bad = build(headers=with_header(replace="Call-ID"), body=b"abc")
        frames = StreamParser().feed(bad + build())
        assert isinstance(frames[0], BadMessage)
        assert frames[0].error.status_hint == 400
        assert frames[0].raw == bad
        assert isinstance(frames[1], Request)


class TestKeepAlive:
    """RFC 5626 §4.4.1: a CRLFCRLF ping is answered by a CRLF pong."""

    def test_double_crlf_is_a_ping(self) -> None:
        assert StreamParser().feed(b"\r\n\r\n") == [KeepAlive("ping")]

    def test_single_crlf_followed_by_a_message_is_a_pong(self) -> None:
        assert StreamParser().feed(b"\r\n" + build())[0] == KeepAlive("pong")

    def test_lone_crlf_waits_for_the_rest_of_a_possible_ping(self) -> None:
        parser = StreamParser()
        assert parser.feed(b"\r\n") == []
        assert parser.feed(b"\r") == []
        assert parser.feed(b"\n") == [KeepAlive("ping")]

    def test_client_side_parser_takes_a_lone_crlf_as_a_pong_at_once(self) -> None:
        assert StreamParser(expect_ping=False).feed(b"\r\n") == [KeepAlive("pong")]


class TestLimits:
    SMALL = Limits(max_message_size=2000, max_body_size=500, max_headers=12,
                   max_line_length=200, max_uri_length=100)

    def test_datagram_over_max_message_size_is_513(self) -> None:
        data = build(body=b"x" * 1900)
        assert parse_error(data, self.SMALL).status_hint == 513

    def test_stream_head_over_max_message_size_is_513(self) -> None:
        with pytest.raises(SipParseError) as info:
            StreamParser(self.SMALL).feed(b"INVITE sip:b@h SIP/2.0\r\nX: " + b"y" * 2000)
        assert info.value.status_hint == 513

    def test_stream_message_over_max_message_size_is_513(self) -> None:
        limits = Limits(max_message_size=1000, max_body_size=5000)
        with pytest.raises(SipParseError) as info:
            StreamParser(limits).feed(build(headers=with_header("Content-Length: 900"),
                                            length=False))
        assert info.value.status_hint == 513

    @pytest.mark.parametrize("length", ["501", "4294967296", "9" * 50, "0" * 40 + "501"])
    def test_content_length_over_max_body_size_is_413(self, length: str) -> None:
        data = build(headers=with_header(f"Content-Length: {length}"), length=False)
        assert parse_error(data, self.SMALL).status_hint == 413
        with pytest.raises(SipParseError) as info:
            StreamParser(self.SMALL).feed(data)
        assert info.value.status_hint == 413

    def test_content_length_with_leading_zeros_is_fine(self) -> None:
        data = build(headers=with_header("Content-Length: " + "0" * 40 + "3"), length=False)
        assert parse_message(data + b"abc", self.SMALL).body == b"abc"

    def test_too_many_headers_is_400_counting_comma_separated_values(self) -> None:
        data = build(headers=with_header("Route: " + ", ".join(["<sip:p;lr>"] * 4)))
        error = parse_error(data, self.SMALL)
        assert (error.status_hint, error.reason) == (400, "too many headers")
        (frame,) = StreamParser(self.SMALL).feed(data)
        assert isinstance(frame, BadMessage)
        assert frame.error.status_hint == 400

    @pytest.mark.parametrize("line", ["Subject: " + "x" * 200, "Subject: x\r\n " + "y" * 200])
    def test_header_line_over_max_line_length_is_400(self, line: str) -> None:
        """The limit applies after unfolding (§7.3.1)."""
        error = parse_error(build(headers=with_header(line)), self.SMALL)
        assert (error.status_hint, error.reason) == (400, "header line too long")

    @pytest.mark.parametrize("size", [101, 1500])
    def test_request_uri_over_max_uri_length_is_414(self, size: int) -> None:
        data = build("INVITE sip:" + "a" * size + "@h SIP/2.0")
        assert parse_error(data, self.SMALL).status_hint == 414
        (frame,) = StreamParser(self.SMALL).feed(data)
        assert isinstance(frame, BadMessage)
        assert frame.error.status_hint == 414

    def test_unsupported_version_is_505(self) -> None:
        """RFC 4475 §3.1.2.16 badvers."""
        data = build("INVITE sip:b@h SIP/7.0")
        assert parse_error(data).status_hint == 505
        (frame,) = StreamParser().feed(data)
        assert isinstance(frame, BadMessage)
        assert frame.error.status_hint == 505

    def test_unsupported_request_uri_scheme_is_416(self) -> None:
        """§8.2.2.1 and RFC 4475 §3.3.2 unkscm."""
        data = build("INVITE nobodyKnowsThisScheme:totallyopaquecontent SIP/2.0")
        assert parse_error(data).status_hint == 416
        (frame,) = StreamParser().feed(data)
        assert isinstance(frame, BadMessage)
        assert frame.error.status_hint == 416


class TestErrorResponse:
    """§8.2.6: a response copies Via, From, To, Call-ID and CSeq from the request."""

    def test_400_copies_the_identifying_headers(self) -> None:
        raw = build(headers=with_header("Via: SIP/2.0/TCP second.example.com;branch=z9hG4bK2",
                                        "Max-Forwards: bogus", replace="Max-Forwards"))
        error = parse_error(raw)
        response = error_response(raw, error)
        assert response is not None
        assert response.status == 400
        assert [v.host for v in response.vias] == ["pc33.atlanta.example.com",
                                                   "second.example.com"]
        assert response.from_.tag == "1928301774"
        assert str(response.to.uri) == "sip:bob@biloxi.example.com"
        assert response.call_id == "a84b4c76e66710@pc33.atlanta.example.com"
        assert str(response.cseq) == "314159 INVITE"
        assert "Max-Forwards" not in response.headers
        assert response.reason == error.reason
        parse_message(response.to_bytes())

    def test_status_comes_from_the_error_hint(self) -> None:
        raw = build("INVITE sip:b@h SIP/7.0")
        response = error_response(raw, parse_error(raw))
        assert response is not None
        assert response.status == 505

    def test_folded_via_is_copied_whole(self) -> None:
        raw = build(headers=["Via: SIP/2.0/UDP\r\n host.example.com;branch=z9hG4bK9",
                             *INVITE_HEADERS[1:], "Expires: never"])
        response = error_response(raw, parse_error(raw))
        assert response is not None
        assert response.top_via.host == "host.example.com"

    def test_values_that_cannot_be_split_are_echoed_whole(self) -> None:
        """§8.2.6.2: Via values are copied; RFC 4475 §3.1.2.1 badinv01 still gets its 400."""
        raw = build(headers=["Via: SIP/2.0/UDP 192.0.2.15;;,;,,", *INVITE_HEADERS[1:]])
        response = error_response(raw, parse_error(raw))
        assert response is not None
        assert response.headers.get_all("Via") == ["SIP/2.0/UDP 192.0.2.15;;,;,,"]

    def test_reason_is_made_printable(self) -> None:
        response = error_response(build(), SipParseError("bad\r\nthing\x00", 400))
        assert response is not None
        assert response.reason == "badthing"

    def test_answers_bad_message_from_a_stream(self) -> None:
        (frame,) = StreamParser().feed(build(headers=with_header("Max-Forwards: 300",
                                                                 replace="Max-Forwards")))
        assert isinstance(frame, BadMessage)
        response = error_response(frame.raw, frame.error)
        assert response is not None
        assert response.status == 400

    @pytest.mark.parametrize("raw", [
        build("SIP/2.0 200 OK"),  # responses are never answered
        build("ACK sip:b@h SIP/2.0"),  # §17.2.1: no response to an ACK
        build(headers=with_header(replace="Call-ID")),
        build(headers=with_header(replace="Via")),
        b"", b"\x00\xff garbage", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        build("INVITE sip:b@h SIP/2.0", ["Via:", *INVITE_HEADERS[1:]]),
    ])
    def test_unanswerable_input_gives_none(self, raw: bytes) -> None:
        assert error_response(raw, SipParseError("bad")) is None
