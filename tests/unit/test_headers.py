"""Header names, the header multi-map and structured header values (RFC 3261 §7.3, §20, §25)."""

from __future__ import annotations

import pytest

from trimaran.sip.errors import SipParseError
from trimaran.sip.grammar import (
    format_params,
    get_param,
    has_param,
    is_token,
    parse_params,
    quote,
    remove_param,
    set_param,
    split_outside_quotes,
    unquote,
)
from trimaran.sip.headers import (
    COMPACT_FORMS,
    CSeq,
    Headers,
    NameAddr,
    Via,
    canonical_name,
    is_valid_header_name,
    split_list_value,
)


class TestHeaderNames:
    @pytest.mark.parametrize(("compact", "full"), [
        ("i", "Call-ID"), ("m", "Contact"), ("e", "Content-Encoding"), ("l", "Content-Length"),
        ("c", "Content-Type"), ("f", "From"), ("s", "Subject"), ("k", "Supported"),
        ("t", "To"), ("v", "Via"), ("I", "Call-ID"), ("V", "Via"),
    ])
    def test_compact_forms_expand_to_the_long_name(self, compact: str, full: str) -> None:
        """§7.3.3: compact and long forms are equivalent, in either case."""
        assert canonical_name(compact) == full

    def test_every_registered_compact_form_expands(self) -> None:
        for compact, full in COMPACT_FORMS.items():
            assert canonical_name(compact) == full

    @pytest.mark.parametrize(("name", "canonical"), [
        ("call-id", "Call-ID"), ("CALL-ID", "Call-ID"), ("cseq", "CSeq"), ("CSEQ", "CSeq"),
        ("www-authenticate", "WWW-Authenticate"), ("MaX-fOrWaRdS", "Max-Forwards"),
        ("x-custom-thing", "X-Custom-Thing"), ("NewFangledHeader", "Newfangledheader"),
    ])
    def test_names_are_case_insensitive(self, name: str, canonical: str) -> None:
        """§7.3.1: field names are case-insensitive; one canonical spelling is stored."""
        assert canonical_name(name) == canonical

    def test_valid_names_are_tokens(self) -> None:
        """§25.1 header-name = token."""
        assert is_valid_header_name("extensionHeader-!.%*+_`'~")
        for bad in ["", "Bad Name", "Bad:Name", "Bad\tName", "Na\u00efve", "<x>"]:
            assert not is_valid_header_name(bad)


class TestHeaders:
    def test_lookup_ignores_case_and_compact_form(self) -> None:
        headers = Headers([("call-id", "abc"), ("v", "SIP/2.0/UDP a")])
        assert headers.get("Call-ID") == "abc"
        assert headers.get("i") == "abc"
        assert headers.get("VIA") == "SIP/2.0/UDP a"
        assert "call-ID" in headers
        assert "Route" not in headers
        assert list(headers) == [("Call-ID", "abc"), ("Via", "SIP/2.0/UDP a")]

    def test_values_keep_their_order(self) -> None:
        headers = Headers([("Via", "1"), ("To", "t"), ("Via", "2")])
        assert headers.get_all("via") == ["1", "2"]
        assert headers.get("Via") == "1"
        assert len(headers) == 3

    def test_add_first_prepends(self) -> None:
        headers = Headers([("Via", "old")])
        headers.add("Via", "new", first=True)
        assert headers.get_all("Via") == ["new", "old"]

    def test_set_replaces_all_values_in_place_of_the_first(self) -> None:
        headers = Headers([("X-A", "1"), ("Route", "r1"), ("X-B", "2"), ("Route", "r2")])
        headers.set("route", "only")
        assert list(headers) == [("X-A", "1"), ("Route", "only"), ("X-B", "2")]
        headers.set("X-C", "3")
        assert headers.get("x-c") == "3"

    def test_remove_and_pop_first(self) -> None:
        headers = Headers([("Route", "r1"), ("Route", "r2"), ("To", "t")])
        assert headers.pop_first("Route") == "r1"
        assert headers.pop_first("Record-Route") is None
        assert headers.remove("Route") == 1
        assert list(headers) == [("To", "t")]

    def test_copy_is_independent(self) -> None:
        headers = Headers([("To", "t")])
        copy = headers.copy()
        copy.add("From", "f")
        assert headers == Headers([("To", "t")])
        assert copy != headers


class TestListValues:
    """§7.3.1: a list header may be sent comma-separated in one field."""

    def test_via_values_are_split_on_commas(self) -> None:
        assert split_list_value("Via", "SIP/2.0/UDP a;branch=1 , SIP/2.0/TCP b") == [
            "SIP/2.0/UDP a;branch=1", "SIP/2.0/TCP b"]

    def test_commas_inside_quotes_and_angle_brackets_do_not_split(self) -> None:
        value = '"Smith, J" <sip:a@b>;q=0.5, <sip:c@d;x=1,2>'
        assert split_list_value("Contact", value) == ['"Smith, J" <sip:a@b>;q=0.5',
                                                      "<sip:c@d;x=1,2>"]

    def test_token_lists_are_split(self) -> None:
        assert split_list_value("Supported", "path, outbound,gruu") == ["path", "outbound",
                                                                        "gruu"]

    def test_star_contact_is_one_value(self) -> None:
        assert split_list_value("Contact", " * ") == ["*"]

    @pytest.mark.parametrize("name", ["WWW-Authenticate", "Authorization",
                                      "Proxy-Authenticate", "Proxy-Authorization"])
    def test_credentials_and_challenges_are_never_split(self, name: str) -> None:
        """§20.7, §20.44: digest values contain commas but are one header value."""
        value = 'Digest realm="example.com", nonce="abc", qop="auth,auth-int"'
        assert split_list_value(name, value) == [value]

    def test_unknown_headers_are_not_split(self) -> None:
        """RFC 4475 §3.1.1.1: an unknown header's value is opaque."""
        assert split_list_value("UnknownHeaderWithUnusualValue", ";;,,;;,;") == [";;,,;;,;"]

    @pytest.mark.parametrize("value", ["a,,b", "a,", ",a", "SIP/2.0/UDP h;;,;,,"])
    def test_empty_elements_are_rejected(self, value: str) -> None:
        """RFC 4475 §3.1.2.1: stray commas in a Via are a 400."""
        with pytest.raises(SipParseError):
            split_list_value("Via", value)


class TestGrammar:
    """§25.1 token, quoted-string, generic-param."""

    def test_token_characters(self) -> None:
        assert is_token("!interesting-Method0123456789_*+`.%indeed'~")
        assert not is_token("")
        assert not is_token("IN VITE")
        assert not is_token("caf\u00e9")

    def test_quote_and_unquote_escape_backslash_and_quote(self) -> None:
        """§25.1 quoted-pair = "\\" (%x00-09 / %x0B-0C / %x0E-7F)."""
        assert quote('J "Rosie" \\ R') == '"J \\"Rosie\\" \\\\ R"'
        assert unquote('"J \\"Rosie\\" \\\\ R"') == 'J "Rosie" \\ R'
        assert unquote('"\\a\\b"') == "ab"

    @pytest.mark.parametrize("text", ['"open', 'no quotes', '"a"b"', '"dangling\\"', '"'])
    def test_malformed_quoted_strings_are_rejected(self, text: str) -> None:
        with pytest.raises(SipParseError):
            unquote(text)

    def test_split_ignores_separators_in_quotes_and_brackets(self) -> None:
        assert split_outside_quotes('a;"b;c";<d;e>;f', ";") == ["a", '"b;c"', "<d;e>", "f"]
        assert split_outside_quotes('"x\\";y";z', ";") == ['"x\\";y"', "z"]

    @pytest.mark.parametrize("text", ['"unterminated', "<open", "close>", "<a>>"])
    def test_split_rejects_unbalanced_text(self, text: str) -> None:
        with pytest.raises(SipParseError):
            split_outside_quotes(text, ",")

    def test_params_keep_order_lower_case_names_and_quoted_values(self) -> None:
        params = parse_params(';Tag=AbC;lr;Name="Quoted; value"; q = 0.5')
        assert params == (("tag", "AbC"), ("lr", None), ("name", '"Quoted; value"'),
                          ("q", "0.5"))
        assert get_param(params, "NAME") == "Quoted; value"
        assert get_param(params, "lr") == ""
        assert get_param(params, "missing") is None
        assert has_param(params, "LR")
        assert format_params(params) == ';tag=AbC;lr;name="Quoted; value";q=0.5'

    def test_set_and_remove_param(self) -> None:
        params = parse_params(";a=1;b")
        assert set_param(params, "B", "2") == (("a", "1"), ("b", "2"))
        assert set_param(params, "c", None) == (("a", "1"), ("b", None), ("c", None))
        assert remove_param(params, "A") == (("b", None),)

    @pytest.mark.parametrize("text", [";;", ";a;;b", ";a=", ";a=b c", ";a b=c", ";a=1;A=2",
                                      ';a="x', ";a=<x>", ";=x"])
    def test_malformed_params_are_rejected(self, text: str) -> None:
        with pytest.raises(SipParseError):
            parse_params(text)


class TestNameAddr:
    """§20.10 / §25.1: name-addr = [display-name] LAQUOT addr-spec RAQUOT, or addr-spec."""

    def test_quoted_display_name_with_escapes(self) -> None:
        addr = NameAddr.parse('"J Rosenberg \\\\\\"" <sip:jdrosen@example.com>;tag=98asjd8')
        assert addr.display_name == 'J Rosenberg \\"'
        assert addr.uri.user == "jdrosen"
        assert addr.tag == "98asjd8"

    def test_display_name_may_hold_commas_semicolons_and_brackets(self) -> None:
        addr = NameAddr.parse('"Bell, Alexander <AGB>; Esq." <sip:a.g.bell@example.com>')
        assert addr.display_name == "Bell, Alexander <AGB>; Esq."

    def test_token_display_name(self) -> None:
        addr = NameAddr.parse("token1~` token2'+_  token3*%!.- <sip:mundane@example.com>")
        assert addr.display_name == "token1~` token2'+_ token3*%!.-"

    def test_no_whitespace_needed_before_the_angle_bracket(self) -> None:
        """RFC 4475 §3.1.1.6 lwsdisp: accepted although the RFC 3261 grammar forgets it."""
        assert NameAddr.parse("caller<sip:caller@example.com>;tag=323").display_name == "caller"

    def test_params_inside_brackets_belong_to_the_uri_outside_to_the_header(self) -> None:
        addr = NameAddr.parse("<sip:bob@example.com;transport=tcp>;tag=7;expires=60")
        assert addr.uri.params == (("transport", "tcp"),)
        assert addr.params == (("tag", "7"), ("expires", "60"))

    def test_params_after_an_addr_spec_belong_to_the_header(self) -> None:
        """§20.10: in addr-spec form, ';' parameters are header parameters, not URI ones."""
        addr = NameAddr.parse("sip:+12125551212@phone2net.example.com;tag=887s")
        assert addr.uri.params == ()
        assert addr.tag == "887s"
        assert not addr.angle

    def test_whitespace_around_the_semicolon_of_an_addr_spec(self) -> None:
        """RFC 4475 §3.1.1.1: SEMI = SWS ";" SWS."""
        addr = NameAddr.parse("sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n")
        assert addr.uri.host == "chair-dnrc.example.com"
        assert addr.tag == "1918181833n"

    def test_addr_spec_with_uri_headers_is_rejected(self) -> None:
        """RFC 4475 §3.1.2.13 regbadct: a URI with '?' must use name-addr form."""
        with pytest.raises(SipParseError) as info:
            NameAddr.parse("sip:user@example.com?Route=%3Csip:sip.example.com%3E")
        assert info.value.status_hint == 400

    def test_uri_headers_are_fine_inside_angle_brackets(self) -> None:
        addr = NameAddr.parse("<sip:user@example.com?Route=%3Csip:sip.example.com%3E>")
        assert addr.uri.headers == (("Route", "%3Csip:sip.example.com%3E"),)

    def test_whitespace_inside_the_angle_brackets_is_rejected(self) -> None:
        """RFC 4475 §3.1.2.14 badaspec: we answer 400 rather than ignore the spaces."""
        with pytest.raises(SipParseError) as info:
            NameAddr.parse('"Watson, Thomas" < sip:t.watson@example.org >')
        assert info.value.status_hint == 400

    def test_unquoted_display_name_with_non_token_characters_is_rejected(self) -> None:
        """RFC 4475 §3.1.2.15 baddn."""
        with pytest.raises(SipParseError):
            NameAddr.parse("Bell, Alexander <sip:a.g.bell@example.com>;tag=43")

    def test_unterminated_display_name_quote_is_rejected(self) -> None:
        """RFC 4475 §3.1.2.6 quotbal."""
        with pytest.raises(SipParseError):
            NameAddr.parse('"Mr. J. User <sip:j.user@example.com>')

    def test_unknown_scheme_in_a_header_is_a_400_not_a_416(self) -> None:
        """§21.4.15: 416 is about the Request-URI; RFC 4475 §3.3.4 expects 400 here."""
        for text in ["<http://www.example.com>;tag=3", "isbn:2983792873", "<name:John_Smith>"]:
            with pytest.raises(SipParseError) as info:
                NameAddr.parse(text)
            assert info.value.status_hint == 400

    @pytest.mark.parametrize("text", ["", "<sip:a@b", "<sip:a@b> junk", "<sip:a@b>;;",
                                      "<>", "sip:a@b c", '"x" sip:a@b'])
    def test_malformed_addresses_are_rejected(self, text: str) -> None:
        with pytest.raises(SipParseError):
            NameAddr.parse(text)

    @pytest.mark.parametrize(("text", "wire"), [
        ('"Bob" <sip:bob@b>;tag=1', '"Bob" <sip:bob@b>;tag=1'),
        ("Bob <sip:bob@b>", '"Bob" <sip:bob@b>'),
        ("sip:bob@b;tag=1", "sip:bob@b;tag=1"),
        ("<sip:bob@b;lr>", "<sip:bob@b;lr>"),
        ('"a \\"q\\"" <sip:b@c>', '"a \\"q\\"" <sip:b@c>'),
    ])
    def test_str_gives_an_equivalent_address(self, text: str, wire: str) -> None:
        addr = NameAddr.parse(text)
        assert str(addr) == wire
        assert NameAddr.parse(str(addr)) == addr

    def test_uri_parameters_force_angle_brackets_when_serialising(self) -> None:
        """§20.10: a URI with ';', ',' or '?' must be written in name-addr form."""
        addr = NameAddr(uri=NameAddr.parse("<sip:a@b;lr>").uri, angle=False)
        assert str(addr) == "<sip:a@b;lr>"

    def test_with_and_without_param(self) -> None:
        addr = NameAddr.parse("<sip:a@b>").with_param("tag", "x")
        assert str(addr) == "<sip:a@b>;tag=x"
        assert addr.has_param("TAG")
        assert str(addr.without_param("tag")) == "<sip:a@b>"

    def test_contact_parameters_for_outbound(self) -> None:
        """RFC 5626 §4.2: +sip.instance (quoted URN) and reg-id on a Contact."""
        addr = NameAddr.parse('<sip:line1@192.0.2.2;transport=tcp>;reg-id=1;'
                              '+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"'
                              ";expires=3600;q=0.7")
        assert addr.param("+sip.instance") == "<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"
        assert addr.param("reg-id") == "1"
        assert addr.param("expires") == "3600"
        assert addr.param("q") == "0.7"


class TestVia:
    """§20.42 Via; RFC 3581 rport."""

    def test_all_parts(self) -> None:
        via = Via.parse("SIP/2.0/UDP pc33.example.com:5066;branch=z9hG4bK776asdhds;"
                        "received=192.0.2.1;rport=5070")
        assert (via.protocol, via.transport, via.host, via.port) == (
            "SIP/2.0", "UDP", "pc33.example.com", 5066)
        assert via.branch == "z9hG4bK776asdhds"
        assert via.received == "192.0.2.1"
        assert via.rport == 5070
        assert via.wants_rport

    def test_bare_rport_is_a_request_for_symmetric_response_routing(self) -> None:
        """RFC 3581 §3: a client adds `rport` without a value."""
        via = Via.parse("SIP/2.0/UDP 192.0.2.4;branch=z9hG4bKnashds7;rport")
        assert via.wants_rport
        assert via.rport is None

    def test_no_rport(self) -> None:
        via = Via.parse("SIP/2.0/TCP client.example.com;branch=z9hG4bK1")
        assert not via.wants_rport
        assert via.rport is None
        assert via.received is None

    def test_server_fills_in_received_and_rport(self) -> None:
        """RFC 3581 §4, §18.2.1: the server adds the source address and port."""
        via = Via.parse("SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1;rport")
        filled = via.with_param("received", "192.0.2.9").with_param("rport", "6000")
        assert str(filled) == "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1;rport=6000;received=192.0.2.9"
        assert Via.parse(str(filled)).rport == 6000

    def test_whitespace_around_slashes_and_colon(self) -> None:
        """RFC 4475 §3.1.1.1: SLASH and COLON allow surrounding whitespace."""
        via = Via.parse("SIP  /    2.0   / UDP  192.168.255.111 : 5060  ; branch= z9hG4bK30239")
        assert (via.protocol, via.transport, via.host, via.port) == (
            "SIP/2.0", "UDP", "192.168.255.111", 5060)
        assert via.branch == "z9hG4bK30239"

    def test_transport_is_upper_cased_and_unknown_ones_are_kept(self) -> None:
        """RFC 4475 §3.1.1.10: other-transport is a token."""
        assert Via.parse("SIP/2.0/unknown t4.example.com;branch=z9hG4bK1").transport == "UNKNOWN"

    def test_ipv6_sent_by(self) -> None:
        via = Via.parse("SIP/2.0/TLS [2001:db8::9:1]:5061;branch=z9hG4bKas;"
                        "received=2001:db8::9:255")
        assert (via.host, via.port) == ("[2001:db8::9:1]", 5061)
        assert via.received == "2001:db8::9:255"

    def test_str_gives_back_an_equivalent_via(self) -> None:
        text = "SIP/2.0/UDP h.example.com:5060;branch=z9hG4bK1;rport;received=192.0.2.1"
        assert str(Via.parse(text)) == text

    @pytest.mark.parametrize("text", [
        "", "SIP/2.0/UDP", "SIP/2.0 UDP host", "SIP/2.0/UDP host:0", "SIP/2.0/UDP host:abc",
        "SIP/2.0/UDP ho st", "SIP/2.0/U@P host", "SIP/2.0/UDP host;branch",
        "SIP/2.0/UDP host;rport=abc", "SIP/2.0/UDP host;rport=70000",
        "SIP/2.0/UDP host;rport=\u00b2", "SIP/2.0/UDP host;rport=" + "1" * 5000,
        "SIP/2.0/UDP host;received=example.com", "SIP/2.0/UDP host;received",
        "SIP/2.0/UDP host;ttl=256", "SIP/2.0/UDP host;ttl=x", "SIP/2.0/UDP host;;",
    ])
    def test_malformed_via_is_rejected(self, text: str) -> None:
        with pytest.raises(SipParseError):
            Via.parse(text)


class TestCSeq:
    """§20.16 CSeq = 1*DIGIT LWS Method."""

    def test_number_and_method(self) -> None:
        cseq = CSeq.parse("314159 INVITE")
        assert (cseq.seq, cseq.method) == (314159, "INVITE")
        assert str(cseq) == "314159 INVITE"

    def test_leading_zeros_and_extra_whitespace(self) -> None:
        """RFC 4475 §3.1.1.1: "0009" folded onto "  INVITE"."""
        assert CSeq.parse("0009 \t INVITE") == CSeq(9, "INVITE")

    def test_largest_value_is_2_to_the_32_minus_1(self) -> None:
        """§8.1.1.5: the sequence number must be expressible as a 32-bit unsigned integer."""
        assert CSeq.parse("4294967295 ACK").seq == 2**32 - 1
        with pytest.raises(SipParseError):
            CSeq.parse("4294967296 ACK")

    def test_method_is_case_sensitive_and_any_token(self) -> None:
        assert CSeq.parse("1 !interesting-Method0123456789_*+`.%indeed'~").method == \
            "!interesting-Method0123456789_*+`.%indeed'~"
        assert CSeq.parse("1 invite").method == "invite"

    @pytest.mark.parametrize("text", ["", "1", "INVITE", "1 2 INVITE", "-1 INVITE",
                                      "36893488147419103232 REGISTER", "1x INVITE",
                                      "\u00b2 INVITE", "\u0663 INVITE", "1 IN VITE",
                                      "1 INV<ITE"])
    def test_malformed_cseq_is_rejected(self, text: str) -> None:
        with pytest.raises(SipParseError):
            CSeq.parse(text)
