"""SIP, SIPS and tel URIs (RFC 3261 §19.1, §25.1; RFC 3966)."""

from __future__ import annotations

import pytest

from trimaran.sip.errors import SipParseError
from trimaran.sip.uri import MAX_URI_LENGTH, URI, split_host_port


class TestSipUriComponents:
    """§19.1.1: sip:user:password@host:port;uri-parameters?headers."""

    def test_every_component_is_recognised(self) -> None:
        uri = URI.parse("sip:alice:secret@example.com:5061;transport=tcp;lr?subject=hi&x=1")
        assert uri.scheme == "sip"
        assert uri.user == "alice"
        assert uri.password == "secret"
        assert uri.host == "example.com"
        assert uri.port == 5061
        assert uri.params == (("transport", "tcp"), ("lr", None))
        assert uri.headers == (("subject", "hi"), ("x", "1"))

    def test_host_only_uri_has_no_user_and_no_port(self) -> None:
        uri = URI.parse("sip:registrar.example.com")
        assert (uri.user, uri.password, uri.host, uri.port) == (None, None,
                                                               "registrar.example.com", None)

    def test_sips_scheme_is_kept(self) -> None:
        assert URI.parse("sips:bob@example.com").scheme == "sips"

    def test_scheme_is_case_insensitive_and_lower_cased(self) -> None:
        """§19.1.4: the scheme compares case-insensitively."""
        assert URI.parse("SIP:bob@example.com").scheme == "sip"

    def test_ipv4_host(self) -> None:
        assert URI.parse("sip:bob@192.0.2.4:5060").host == "192.0.2.4"

    def test_ipv6_reference_host_with_port(self) -> None:
        """§25.1 IPv6reference = "[" IPv6address "]"."""
        uri = URI.parse("sip:bob@[2001:db8::10]:5070")
        assert (uri.host, uri.port) == ("[2001:db8::10]", 5070)
        assert str(uri) == "sip:bob@[2001:db8::10]:5070"

    def test_ipv6_reference_host_without_port(self) -> None:
        assert URI.parse("sips:[::1]").host == "[::1]"

    def test_empty_password_is_distinct_from_no_password(self) -> None:
        assert URI.parse("sip:alice:@example.com").password == ""
        assert URI.parse("sip:alice@example.com").password is None

    def test_escaped_user_is_kept_escaped(self) -> None:
        """§19.1.2: the user part may contain escapes; they are kept on the wire form."""
        uri = URI.parse("sip:sips%3Auser%40example.com@example.net")
        assert uri.user == "sips%3Auser%40example.com"

    def test_user_may_contain_semicolon_parameters(self) -> None:
        """RFC 4475 §3.1.1.9: the user part is "user;par=u%40example.net"."""
        uri = URI.parse("sip:user;par=u%40example.net@example.com")
        assert uri.user == "user;par=u%40example.net"
        assert uri.host == "example.com"
        assert uri.params == ()

    def test_user_may_contain_question_mark_and_password_punctuation(self) -> None:
        """RFC 4475 §3.1.1.2: '?' is a user-unreserved character, '@' still ends userinfo."""
        uri = URI.parse("sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:"
                        "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com")
        assert uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
        assert uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
        assert uri.host == "example.com"
        assert uri.headers == ()


class TestUriParameters:
    """§19.1.1 uri-parameters; names are case-insensitive (§19.1.4)."""

    def test_parameter_names_are_lower_cased_values_kept(self) -> None:
        uri = URI.parse("sip:bob@example.com;Transport=TCP;LR")
        assert uri.params == (("transport", "TCP"), ("lr", None))

    def test_parameter_without_value_reads_as_empty_string(self) -> None:
        uri = URI.parse("sip:proxy.example.com;lr")
        assert uri.param("lr") == ""
        assert uri.has_param("lr")
        assert uri.param("maddr") is None
        assert not uri.has_param("maddr")

    def test_lookup_is_case_insensitive(self) -> None:
        assert URI.parse("sip:h;maddr=192.0.2.1").param("MADDR") == "192.0.2.1"

    def test_with_param_adds_or_replaces_and_without_param_removes(self) -> None:
        uri = URI.parse("sip:h;transport=udp")
        assert str(uri.with_param("lr")) == "sip:h;transport=udp;lr"
        assert str(uri.with_param("transport", "tcp")) == "sip:h;transport=tcp"
        assert str(uri.without_param("transport")) == "sip:h"

    def test_duplicate_parameter_is_rejected(self) -> None:
        """§19.1.1: any given uri-parameter must not appear more than once."""
        with pytest.raises(SipParseError):
            URI.parse("sip:h;lr;lr")

    def test_escaped_parameter_names_and_values_are_accepted(self) -> None:
        """RFC 4475 §3.1.1.3: "value%41" is not unescaped (no recursive unescaping)."""
        uri = URI.parse("sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31")
        assert uri.param("n%61me") == "v%61lue%25%34%31"

    @pytest.mark.parametrize(("text", "transport"), [
        ("sip:h", "udp"), ("sips:h", "tls"), ("sip:h;transport=TCP", "tcp"),
        ("sip:h;transport=ws", "ws"),
    ])
    def test_transport_comes_from_the_parameter_or_the_scheme(self, text: str,
                                                             transport: str) -> None:
        """§19.1.2 transport-param; sips implies TLS (§26.2.2)."""
        assert URI.parse(text).transport == transport


class TestUriHeaders:
    """§19.1.1 headers component: ?name=value&name=value."""

    def test_headers_keep_their_order_and_escapes(self) -> None:
        uri = URI.parse("sip:bob@example.com?Route=%3Csip:proxy.example.com%3E&Subject=x")
        assert uri.headers == (("Route", "%3Csip:proxy.example.com%3E"), ("Subject", "x"))

    @pytest.mark.parametrize("text", ["sip:h?", "sip:h?novalue", "sip:h?a=b&"])
    def test_malformed_header_is_rejected(self, text: str) -> None:
        with pytest.raises(SipParseError):
            URI.parse(text)


class TestTelUri:
    """RFC 3966 tel: URIs; the number is in `user`, host is empty."""

    def test_global_number_with_visual_separators(self) -> None:
        uri = URI.parse("tel:+1-201-555-0123")
        assert (uri.scheme, uri.user, uri.host) == ("tel", "+1-201-555-0123", "")

    def test_local_number_with_phone_context(self) -> None:
        uri = URI.parse("tel:7042;phone-context=example.com")
        assert uri.param("phone-context") == "example.com"
        assert str(uri) == "tel:7042;phone-context=example.com"

    @pytest.mark.parametrize("text", ["tel:", "tel:abc xyz", "tel:+1@example.com"])
    def test_bad_number_is_rejected(self, text: str) -> None:
        with pytest.raises(SipParseError):
            URI.parse(text)


class TestAddressOfRecord:
    """§10.3: the registrar key is the To URI canonicalised to sip:user@host."""

    def test_port_parameters_and_headers_are_dropped(self) -> None:
        uri = URI.parse("sip:bob@example.com:5070;transport=tcp?subject=x")
        assert uri.aor == "sip:bob@example.com"

    def test_host_is_lower_cased_user_is_not(self) -> None:
        """§19.1.4: user compares case-sensitively, host case-insensitively."""
        assert URI.parse("sip:Bob@EXAMPLE.Com").aor == "sip:Bob@example.com"

    def test_user_is_unescaped(self) -> None:
        """§19.1.4: escaped and unescaped characters are equivalent."""
        assert URI.parse("sip:%61lice@example.com").aor == URI.parse("sip:alice@example.com").aor

    def test_sips_and_sip_share_one_aor(self) -> None:
        assert URI.parse("sips:bob@example.com").aor == "sip:bob@example.com"

    def test_escaped_null_does_not_shorten_the_user(self) -> None:
        """RFC 4475 §3.1.1.4: unescaping %00 must not truncate the AOR."""
        assert URI.parse("sip:null-%00-null@example.com").aor == "sip:null-\x00-null@example.com"

    def test_distinct_escaped_nulls_give_distinct_aors(self) -> None:
        one = URI.parse("sip:%00@example.com").aor
        two = URI.parse("sip:%00%00@example.com").aor
        assert one != two

    def test_password_is_dropped(self) -> None:
        assert URI.parse("sip:bob:pw@example.com").aor == "sip:bob@example.com"

    def test_tel_aor_is_the_number(self) -> None:
        assert URI.parse("tel:+15551234;phone-context=x").aor == "tel:+15551234"


class TestSerialisation:
    @pytest.mark.parametrize("text", [
        "sip:alice@example.com",
        "sip:alice:secret@example.com:5061;transport=tcp;lr?subject=hi&x=1",
        "sips:[2001:db8::1]:5061;maddr=192.0.2.1",
        "sip:user;par=u%40example.net@example.com",
        "tel:+1-201-555-0123;phone-context=example.com",
    ])
    def test_str_gives_back_the_text(self, text: str) -> None:
        assert str(URI.parse(text)) == text

    def test_uri_is_an_immutable_value(self) -> None:
        assert URI.parse("sip:a@b;lr") == URI.parse("sip:a@b;lr")
        assert hash(URI.parse("sip:a@b")) == hash(URI.parse("sip:a@b"))


class TestRejectedUris:
    @pytest.mark.parametrize("text", ["http://example.com/", "mailto:bob@example.com",
                                      "urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
                                      "nobodyKnowsThisScheme:totallyopaquecontent"])
    def test_well_formed_uri_with_another_scheme_gets_416(self, text: str) -> None:
        """§8.2.2.1: a Request-URI scheme we do not understand is answered 416."""
        with pytest.raises(SipParseError) as info:
            URI.parse(text)
        assert info.value.status_hint == 416

    @pytest.mark.parametrize("text", ["<sip:user@example.com>", "example.com", "",
                                      ":nothing", "1sip:a@b", "s p:a@b"])
    def test_text_that_is_not_a_uri_gets_400(self, text: str) -> None:
        """RFC 4475 §3.1.2.7: a Request-URI in angle brackets is a 400, not a 416."""
        with pytest.raises(SipParseError) as info:
            URI.parse(text)
        assert info.value.status_hint == 400

    def test_overlong_uri_gets_414(self) -> None:
        with pytest.raises(SipParseError) as info:
            URI.parse("sip:" + "a" * MAX_URI_LENGTH + "@example.com")
        assert info.value.status_hint == 414

    @pytest.mark.parametrize("text", [
        "sip:bob@example.com; lr", "sip:bob @example.com", "sip:bob@exa\tmple.com",
        'sip:"bob"@example.com', "sip:<bob>@example.com",
    ])
    def test_whitespace_quotes_and_brackets_are_not_allowed(self, text: str) -> None:
        """RFC 4475 §3.1.2.8: LWS inside a URI is illegal."""
        with pytest.raises(SipParseError) as info:
            URI.parse(text)
        assert info.value.status_hint == 400

    @pytest.mark.parametrize("text", [
        "sip:bob@", "sip:bob@-bad.example.com", "sip:bob@exa_mple.com", "sip:bob@999.1.1.1",
        "sip:bob@1.2.3", "sip:bob@[2001:db8::1", "sip:bob@[not:an:address]",
        "sip:bob@[::1]junk", "sip:@example.com", "sip:bo%zzb@example.com",
        "sip:bob:pass:word@example.com",
    ])
    def test_malformed_user_or_host_is_rejected(self, text: str) -> None:
        with pytest.raises(SipParseError):
            URI.parse(text)

    @pytest.mark.parametrize("port", ["0", "65536", "99999999", "-1", "abc", "", "\u00b2",
                                      "\u0663", "5060 "])
    def test_port_must_be_1_to_65535_in_ascii_digits(self, port: str) -> None:
        """§25.1 port = 1*DIGIT, DIGIT being %x30-39; Unicode digits are not DIGIT."""
        with pytest.raises(SipParseError):
            URI.parse(f"sip:bob@example.com:{port}")


class TestSplitHostPort:
    """Host and port as found in a Via sent-by (§20.42)."""

    def test_name_with_port(self) -> None:
        assert split_host_port("example.com:5060") == ("example.com", 5060)

    def test_ipv6_reference_with_and_without_port(self) -> None:
        assert split_host_port("[2001:db8::1]:5061") == ("[2001:db8::1]", 5061)
        assert split_host_port("[2001:db8::1]") == ("[2001:db8::1]", None)

    @pytest.mark.parametrize("text", ["", ":5060", "example.com:", "a:b:c", "[::1]:x"])
    def test_malformed_is_rejected(self, text: str) -> None:
        with pytest.raises(SipParseError):
            split_host_port(text)
