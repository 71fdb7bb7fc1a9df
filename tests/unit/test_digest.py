"""Tests for trimaran.sip.digest (RFC 2617 / RFC 7616 / RFC 8760 Digest authentication)."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trimaran.sip.digest import (
    Challenge,
    Credentials,
    DigestAuthenticator,
    answer,
    ha1,
    new_cnonce,
)
from trimaran.sip.errors import SipParseError

REALM = "example.com"
SECRET = b"0123456789abcdef-server-secret"
USERS = {"alice": "wonderland", "bob": "builder"}
URI = "sip:example.com"


def lookup(username: str, algorithm: str) -> str | None:
    password = USERS.get(username)
    return None if password is None else ha1(username, REALM, password, algorithm)


def make_auth(**kwargs: object) -> DigestAuthenticator:
    return DigestAuthenticator(REALM, SECRET, **kwargs)  # type: ignore[arg-type]


def first_challenge(
    auth: DigestAuthenticator, now: float = 1000.0, algorithm: str = "SHA-256"
) -> Challenge:
    return auth.challenge(now, algorithms=(algorithm,))[0]


def respond(
    chal: Challenge,
    *,
    nc: int = 1,
    username: str = "alice",
    password: str = "wonderland",
    method: str = "REGISTER",
    uri: str = URI,
) -> Credentials:
    return answer(
        chal, method=method, uri=uri, username=username, password=password, cnonce="c0ffee", nc=nc
    )


# RFC 2617 §3.5 and RFC 7616 §3.9.1 worked examples


RFC2617_CHALLENGE = (
    'Digest realm="testrealm@host.com", qop="auth,auth-int", '
    'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
)
RFC2617_AUTHORIZATION = (
    'Digest username="Mufasa", realm="testrealm@host.com", '
    'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", qop=auth, '
    'nc=00000001, cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1", '
    'opaque="5ccc069c403ebaf9f0171e9517f40e41"'
)


def test_rfc2617_worked_example_response_is_reproduced() -> None:
    chal = Challenge.parse(RFC2617_CHALLENGE)
    creds = answer(
        chal,
        method="GET",
        uri="/dir/index.html",
        username="Mufasa",
        password="Circle Of Life",
        cnonce="0a4f113b",
        nc=1,
    )
    assert creds == Credentials.parse(RFC2617_AUTHORIZATION)
    assert creds.response == "6629fae49393a05397450978507c4ef1"
    assert creds.qop == "auth"
    assert creds.nc == 1


def test_rfc2617_ha1_matches_known_value_and_can_replace_password() -> None:
    stored = ha1("Mufasa", "testrealm@host.com", "Circle Of Life", "MD5")
    assert stored == "939e7578ed9e3c518a452acee763bce9"
    chal = Challenge.parse(RFC2617_CHALLENGE)
    creds = answer(
        chal,
        method="GET",
        uri="/dir/index.html",
        username="Mufasa",
        ha1=stored,
        cnonce="0a4f113b",
        nc=1,
    )
    assert creds.response == "6629fae49393a05397450978507c4ef1"


def test_rfc7616_sha256_worked_example_response_is_reproduced() -> None:
    # RFC 7616 §3.9.1 uses the password "Circle of Life" (lower-case "of").
    chal = Challenge.parse(
        'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=SHA-256, '
        'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
        'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
    )
    creds = answer(
        chal,
        method="GET",
        uri="/dir/index.html",
        username="Mufasa",
        password="Circle of Life",
        cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
        nc=1,
    )
    expected = "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
    assert creds.response == expected
    assert creds.algorithm == "SHA-256"
    reparsed = Credentials.parse(str(creds))
    assert reparsed == creds


# Client answers


def test_answer_without_qop_uses_rfc2069_form() -> None:
    chal = Challenge(realm="r", nonce="n", algorithm="MD5")
    creds = answer(chal, method="INVITE", uri="sip:x", username="u", password="p", cnonce="c", nc=1)
    ha2 = hashlib.md5(b"INVITE:sip:x").hexdigest()
    want = hashlib.md5(f"{ha1('u', 'r', 'p', 'MD5')}:n:{ha2}".encode()).hexdigest()
    assert creds.response == want
    assert creds.qop is None and creds.nc is None and creds.cnonce is None
    assert "qop" not in str(creds) and "nc=" not in str(creds)


def test_answer_with_only_auth_int_offered_hashes_the_body() -> None:
    chal = Challenge(realm="r", nonce="n", qop=("auth-int",))
    a = answer(chal, method="M", uri="u", username="x", password="p", cnonce="c", nc=1, body=b"a")
    b = answer(chal, method="M", uri="u", username="x", password="p", cnonce="c", nc=1, body=b"b")
    assert a.qop == "auth-int"
    assert a.response != b.response


def test_answer_rejects_challenge_offering_only_unknown_qop() -> None:
    chal = Challenge(realm="r", nonce="n", qop=("auth-conf",))
    with pytest.raises(SipParseError):
        answer(chal, method="M", uri="u", username="x", password="p", cnonce="c", nc=1)


def test_answer_requires_exactly_one_of_password_and_ha1() -> None:
    chal = Challenge(realm="r", nonce="n", qop=("auth",))
    with pytest.raises(ValueError):
        answer(chal, method="M", uri="u", username="x", cnonce="c", nc=1)
    with pytest.raises(ValueError):
        answer(
            chal, method="M", uri="u", username="x", password="p", ha1="0" * 32, cnonce="c", nc=1
        )


def test_answer_error_for_bad_ha1_does_not_contain_it() -> None:
    chal = Challenge(realm="r", nonce="n", qop=("auth",))
    secret_ha1 = "deadbeef" * 3
    with pytest.raises(ValueError) as info:
        answer(chal, method="M", uri="u", username="x", ha1=secret_ha1, cnonce="c", nc=1)
    assert secret_ha1 not in str(info.value)


def test_new_cnonce_is_random_hex() -> None:
    values = {new_cnonce() for _ in range(50)}
    assert len(values) == 50
    assert all(len(v) == 32 and int(v, 16) >= 0 for v in values)


def test_ha1_differs_per_algorithm_and_rejects_unknown_algorithm() -> None:
    assert len(ha1("a", "r", "p", "MD5")) == 32
    assert len(ha1("a", "r", "p", "sha-256")) == 64
    with pytest.raises(ValueError):
        ha1("a", "r", "p", "SHA-512-256")


# Server: challenges and verification


def test_challenges_offer_sha256_first_then_md5_with_qop_auth() -> None:
    auth = make_auth(opaque="op")
    chals = auth.challenge(1000.0)
    assert [c.algorithm for c in chals] == ["SHA-256", "MD5"]
    assert all(c.qop == ("auth",) and c.realm == REALM and c.opaque == "op" for c in chals)
    assert chals[0].nonce != chals[1].nonce
    assert not chals[0].stale
    assert all(c.stale for c in auth.challenge(1000.0, stale=True))


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
def test_round_trip_challenge_answer_verify_succeeds(algorithm: str) -> None:
    auth = make_auth()
    chal = Challenge.parse(str(first_challenge(auth, algorithm=algorithm)))
    creds = Credentials.parse(str(respond(chal)))
    result = auth.verify(creds, method="REGISTER", now=1001.0, lookup_ha1=lookup, request_uri=URI)
    assert result.ok and result.username == "alice" and not result.stale


def test_lookup_receives_username_and_algorithm() -> None:
    auth = make_auth()
    calls: list[tuple[str, str]] = []

    def spy(username: str, algorithm: str) -> str | None:
        calls.append((username, algorithm))
        return lookup(username, algorithm)

    auth.verify(
        respond(first_challenge(auth, algorithm="MD5")),
        method="REGISTER",
        now=1000.0,
        lookup_ha1=spy,
    )
    assert calls == [("alice", "MD5")]


def test_wrong_password_is_rejected() -> None:
    auth = make_auth()
    creds = respond(first_challenge(auth), password="wrong")
    result = auth.verify(creds, method="REGISTER", now=1000.0, lookup_ha1=lookup)
    assert not result.ok and not result.stale and result.username is None


def test_unknown_user_is_rejected_with_same_reason_as_wrong_password() -> None:
    auth = make_auth()
    bad_pw = auth.verify(
        respond(first_challenge(auth), password="wrong"),
        method="REGISTER",
        now=1000.0,
        lookup_ha1=lookup,
    )
    no_user = auth.verify(
        respond(first_challenge(auth), username="mallory"),
        method="REGISTER",
        now=1000.0,
        lookup_ha1=lookup,
    )
    assert not no_user.ok and not no_user.stale
    assert no_user.reason == bad_pw.reason


def test_wrong_method_is_rejected() -> None:
    auth = make_auth()
    creds = respond(first_challenge(auth), method="INVITE")
    assert not auth.verify(creds, method="REGISTER", now=1000.0, lookup_ha1=lookup).ok


def test_tampered_nonce_is_rejected() -> None:
    auth = make_auth()
    chal = first_challenge(auth)
    for i in (0, 10, len(chal.nonce) - 1):
        flipped = "A" if chal.nonce[i] != "A" else "B"
        nonce = chal.nonce[:i] + flipped + chal.nonce[i + 1 :]
        creds = respond(dataclasses.replace(chal, nonce=nonce))
        result = auth.verify(creds, method="REGISTER", now=1000.0, lookup_ha1=lookup)
        assert not result.ok and not result.stale
        assert result.reason == "invalid nonce"


def test_nonce_from_other_secret_or_realm_is_rejected() -> None:
    ours = make_auth()
    for other in (
        DigestAuthenticator(REALM, b"another-secret-of-16+bytes"),
        DigestAuthenticator("other.example.com", SECRET),
    ):
        chal = dataclasses.replace(first_challenge(other), realm=REALM)
        result = ours.verify(respond(chal), method="REGISTER", now=1000.0, lookup_ha1=lookup)
        assert not result.ok and result.reason == "invalid nonce"


def test_garbage_nonce_is_rejected() -> None:
    auth = make_auth()
    chal = Challenge(realm=REALM, nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", qop=("auth",))
    result = auth.verify(respond(chal), method="REGISTER", now=1000.0, lookup_ha1=lookup)
    assert not result.ok and result.reason == "invalid nonce"


def test_expired_nonce_with_correct_digest_is_stale() -> None:
    auth = make_auth(nonce_ttl=300.0)
    creds = respond(first_challenge(auth, now=1000.0))
    result = auth.verify(creds, method="REGISTER", now=1301.0, lookup_ha1=lookup)
    assert not result.ok and result.stale


def test_expired_nonce_with_wrong_password_is_not_stale() -> None:
    auth = make_auth(nonce_ttl=300.0)
    creds = respond(first_challenge(auth, now=1000.0), password="wrong")
    result = auth.verify(creds, method="REGISTER", now=1301.0, lookup_ha1=lookup)
    assert not result.ok and not result.stale


def test_nonce_from_the_future_is_stale() -> None:
    auth = make_auth()
    creds = respond(first_challenge(auth, now=2000.0))
    assert auth.verify(creds, method="REGISTER", now=1000.0, lookup_ha1=lookup).stale


def test_replayed_nonce_count_is_rejected() -> None:
    auth = make_auth()
    creds = respond(first_challenge(auth), nc=1)
    assert auth.verify(creds, method="REGISTER", now=1000.0, lookup_ha1=lookup).ok
    replay = auth.verify(creds, method="REGISTER", now=1001.0, lookup_ha1=lookup)
    assert not replay.ok and not replay.stale


def test_increasing_nonce_count_is_accepted_and_lower_count_rejected() -> None:
    auth = make_auth()
    chal = first_challenge(auth)
    for nc in (1, 2, 5):
        assert auth.verify(
            respond(chal, nc=nc), method="REGISTER", now=1000.0 + nc, lookup_ha1=lookup
        ).ok
    lower = auth.verify(respond(chal, nc=4), method="REGISTER", now=1010.0, lookup_ha1=lookup)
    assert not lower.ok and not lower.stale
    assert auth.statistics().replayed == 1


def test_failed_attempt_does_not_consume_the_nonce_count() -> None:
    auth = make_auth()
    chal = first_challenge(auth)
    assert not auth.verify(
        respond(chal, password="x"), method="REGISTER", now=1000.0, lookup_ha1=lookup
    ).ok
    assert auth.verify(respond(chal), method="REGISTER", now=1000.0, lookup_ha1=lookup).ok


def test_qop_auth_without_cnonce_or_nc_is_rejected() -> None:
    auth = make_auth()
    creds = respond(first_challenge(auth))
    for broken in (dataclasses.replace(creds, cnonce=None), dataclasses.replace(creds, nc=None)):
        result = auth.verify(broken, method="REGISTER", now=1000.0, lookup_ha1=lookup)
        assert not result.ok


def test_rfc2069_form_is_accepted_for_md5_only() -> None:
    auth = make_auth()
    for algorithm, accepted in (("MD5", True), ("SHA-256", False)):
        chal = dataclasses.replace(first_challenge(auth, algorithm=algorithm), qop=())
        creds = respond(chal)
        assert creds.qop is None
        result = auth.verify(creds, method="REGISTER", now=1000.0, lookup_ha1=lookup)
        assert result.ok is accepted


def test_realm_mismatch_is_rejected() -> None:
    auth = make_auth()
    other = DigestAuthenticator("elsewhere.org", SECRET)
    creds = answer(
        first_challenge(auth),
        method="REGISTER",
        uri=URI,
        username="alice",
        ha1=lookup("alice", "SHA-256"),
        cnonce="c",
        nc=1,
    )
    result = other.verify(creds, method="REGISTER", now=1000.0, lookup_ha1=lookup)
    assert not result.ok and result.reason == "realm mismatch"


def test_request_uri_mismatch_is_rejected_only_when_checked() -> None:
    auth = make_auth()
    chal = first_challenge(auth)
    creds = respond(chal, uri="sip:other.example.com")
    checked = auth.verify(creds, method="REGISTER", now=1000.0, lookup_ha1=lookup, request_uri=URI)
    assert not checked.ok and checked.reason == "uri mismatch"
    assert auth.verify(creds, method="REGISTER", now=1000.0, lookup_ha1=lookup).ok


def test_opaque_must_be_echoed_when_configured() -> None:
    auth = make_auth(opaque="xyz")
    creds = respond(first_challenge(auth))
    assert creds.opaque == "xyz"
    tampered = dataclasses.replace(creds, opaque="abc")
    assert not auth.verify(tampered, method="REGISTER", now=1000.0, lookup_ha1=lookup).ok
    assert auth.verify(creds, method="REGISTER", now=1000.0, lookup_ha1=lookup).ok


def test_max_nonces_eviction_bounds_memory() -> None:
    auth = make_auth(max_nonces=3)
    chals = [first_challenge(auth, now=1000.0 + i) for i in range(10)]
    for i, chal in enumerate(chals):
        assert auth.verify(respond(chal), method="REGISTER", now=1010.0 + i, lookup_ha1=lookup).ok
        assert auth.statistics().nonces_tracked <= 3
    assert auth.statistics().nonces_tracked == 3
    # An evicted nonce cannot be replayed: its count history is gone, so it is re-challenged.
    replay = auth.verify(respond(chals[0]), method="REGISTER", now=1030.0, lookup_ha1=lookup)
    assert not replay.ok and replay.stale
    # Recent nonces are still tracked and keep their counts.
    assert auth.verify(
        respond(chals[-1], nc=2), method="REGISTER", now=1030.0, lookup_ha1=lookup
    ).ok


def test_expired_nonces_are_forgotten() -> None:
    auth = make_auth(nonce_ttl=10.0)
    auth.verify(
        respond(first_challenge(auth, now=1000.0)), method="REGISTER", now=1000.0, lookup_ha1=lookup
    )
    assert auth.statistics().nonces_tracked == 1
    auth.verify(
        respond(first_challenge(auth, now=2000.0)), method="REGISTER", now=2000.0, lookup_ha1=lookup
    )
    assert auth.statistics().nonces_tracked == 1


def test_statistics_count_each_outcome() -> None:
    auth = make_auth(nonce_ttl=100.0)
    chal = first_challenge(auth, now=1000.0)
    auth.verify(respond(chal), method="REGISTER", now=1000.0, lookup_ha1=lookup)
    auth.verify(respond(chal), method="REGISTER", now=1000.0, lookup_ha1=lookup)
    auth.verify(respond(chal, password="x"), method="REGISTER", now=1000.0, lookup_ha1=lookup)
    auth.verify(respond(chal, nc=9), method="REGISTER", now=1200.0, lookup_ha1=lookup)
    stats = auth.statistics()
    assert (stats.verified_ok, stats.replayed, stats.verified_failed, stats.stale) == (1, 1, 1, 1)


def test_authenticator_repr_does_not_leak_secret() -> None:
    auth = make_auth()
    assert SECRET.decode() not in repr(auth)
    assert "secret" not in repr(auth).lower()


def test_authenticator_rejects_short_secret() -> None:
    with pytest.raises(ValueError):
        DigestAuthenticator(REALM, b"short")


# Parsing and formatting


def test_challenge_parse_format_round_trip_with_escapes() -> None:
    chal = Challenge(
        realm='a "quoted" \\ realm',
        nonce="abc/+=",
        algorithm="SHA-256",
        qop=("auth", "auth-int"),
        opaque="",
        stale=True,
        domain="sip:a.example sip:b.example",
    )
    text = str(chal)
    assert text.startswith("Digest ")
    assert 'realm="a \\"quoted\\" \\\\ realm"' in text
    assert Challenge.parse(text) == chal


def test_credentials_parse_format_round_trip() -> None:
    creds = Credentials.parse(RFC2617_AUTHORIZATION)
    assert creds.username == "Mufasa" and creds.uri == "/dir/index.html"
    assert creds.nc == 1 and creds.cnonce == "0a4f113b" and creds.algorithm == "MD5"
    assert Credentials.parse(str(creds)) == creds
    assert "nc=00000001" in str(creds) and "qop=auth" in str(creds)


def test_parse_is_lenient_about_case_whitespace_and_quoting_style() -> None:
    chal = Challenge.parse(
        '  dIgEsT   REALM = "r" ,NONCE="n",, Algorithm=sha-256 , QOP="Auth" , stale=true'
    )
    assert chal == Challenge(realm="r", nonce="n", algorithm="SHA-256", qop=("auth",), stale=True)
    creds = Credentials.parse(
        'Digest username="u", realm="r", nonce="n", uri="sip:x", qop="auth", nc=0000000A, '
        f'cnonce="c", response="{"AB" * 16}"'
    )
    assert creds.qop == "auth" and creds.nc == 10 and creds.response == "ab" * 16


def test_quoted_values_keep_inner_whitespace_and_unescape_pairs() -> None:
    chal = Challenge.parse(r'Digest realm=" r\\x\y ", nonce="\"n\""')
    assert chal.realm == " r\\xy " and chal.nonce == '"n"'


def test_missing_algorithm_means_md5() -> None:
    assert Challenge.parse('Digest realm="r", nonce="n"').algorithm == "MD5"


def test_unknown_parameters_are_ignored() -> None:
    chal = Challenge.parse('Digest realm="r", nonce="n", charset=UTF-8, future="x"')
    assert chal == Challenge(realm="r", nonce="n")


@pytest.mark.parametrize(
    "value",
    [
        "",
        "Digest",
        'Basic realm="r"',
        'Digestrealm="r", nonce="n"',
        'Digest realm="r"',
        'Digest nonce="n"',
        'Digest realm="r, nonce="n"',
        'Digest realm="r", nonce="n\\',
        'Digest realm="r", nonce="n", REALM="x"',
        'Digest realm="r", nonce="n" opaque="o"',
        'Digest realm="r", nonce',
        'Digest realm="r", nonce=',
        'Digest realm="r", ="n"',
        'Digest realm="r", nonce=sip:x',
        'Digest realm="r", nonce="n", algorithm=SHA-512-256',
        'Digest realm="r", nonce="n", stale=maybe',
        'Digest realm="r", nonce="n", qop=""',
        'Digest realm="r\r\n", nonce="n"',
        'Digest realm="r", nonce="n\x00"',
        'Digest realm="' + "x" * 5000 + '", nonce="n"',
        "Digest " + ", ".join(f"p{i}=v" for i in range(100)) + ', realm="r", nonce="n"',
        'Digest realm="r", nonce="' + "n" * 9000 + '"',
    ],
)
def test_malformed_challenge_raises_sip_parse_error_400(value: str) -> None:
    with pytest.raises(SipParseError) as info:
        Challenge.parse(value)
    assert info.value.status_hint == 400


@pytest.mark.parametrize(
    "value",
    [
        'Digest realm="r", nonce="n", uri="u", response="' + "0" * 32 + '"',
        'Digest username="u", realm="r", nonce="n", uri="u"',
        'Digest username="u", realm="r", nonce="n", uri="u", response="xyz"',
        'Digest username="u", realm="r", nonce="n", uri="u", response="' + "0" * 64 + '"',
        'Digest username="u", realm="r", nonce="n", uri="u", response="' + "0" * 32 + '", nc=1',
        'Digest username="u", realm="r", nonce="n", uri="u", response="'
        + "0" * 32
        + '", nc=0000000g',
        'Digest username="u", username="v", realm="r", nonce="n", uri="u", response="'
        + "0" * 32
        + '"',
    ],
)
def test_malformed_credentials_raise_sip_parse_error_400(value: str) -> None:
    with pytest.raises(SipParseError) as info:
        Credentials.parse(value)
    assert info.value.status_hint == 400


def test_sess_algorithms_are_rejected_with_clear_reason() -> None:
    with pytest.raises(SipParseError) as info:
        Challenge.parse('Digest realm="r", nonce="n", algorithm=md5-sess')
    assert "MD5-sess" in info.value.reason


def test_formatting_refuses_header_injection() -> None:
    with pytest.raises(ValueError):
        Challenge(realm="r\r\nVia: evil", nonce="n")
    with pytest.raises(ValueError):
        Credentials(username="u\n", realm="r", nonce="n", uri="u", response="0" * 32)


# Robustness: nothing but SipParseError may escape parse, whatever the input.


def _parse_both(value: str) -> None:
    for cls in (Challenge, Credentials):
        try:
            parsed = cls.parse(value)
        except SipParseError:
            continue
        assert cls.parse(str(parsed)) == parsed


@settings(max_examples=2000)
@given(st.text())
def test_arbitrary_text_only_raises_sip_parse_error(value: str) -> None:
    _parse_both(value)
    _parse_both("Digest " + value)


@settings(max_examples=2000)
@given(st.binary())
def test_arbitrary_latin1_bytes_only_raise_sip_parse_error(raw: bytes) -> None:
    _parse_both(raw.decode("latin-1"))
    _parse_both("Digest " + raw.decode("latin-1"))


_EXTRA_NAMES = ["algorithm", "qop", "nc", "cnonce", "opaque", "stale", "domain", "NC", "x"]
_TOKENS = ["MD5", "sha-256", "MD5-sess", "auth", "auth,auth-int", "true", "00000001", ""]


@st.composite
def _header_like(draw: st.DrawFn) -> str:
    """Mostly well-formed Digest headers with random values, quoting and extra parameters."""
    printable = st.characters(exclude_categories=("Cc", "Cs"))
    text = st.one_of(st.text(printable, max_size=12), st.text(max_size=12))
    if draw(st.booleans()):
        params = [("realm", draw(text)), ("nonce", draw(text))]
    else:
        response = draw(st.sampled_from(["0" * 32, "0" * 32, "A" * 64, "0"]))
        params = [(name, draw(text)) for name in ("username", "realm", "nonce", "uri")]
        params.append(("response", response))
    for _ in range(draw(st.integers(0, 3))):
        value = draw(st.one_of(st.sampled_from(_TOKENS), text))
        params.append((draw(st.sampled_from(_EXTRA_NAMES)), value))
    parts = []
    for name, value in draw(st.permutations(params)):
        if draw(st.integers(0, 7)):  # usually quoted
            value = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        parts.append(f"{name}={value}")
    return "Digest " + draw(st.sampled_from([", ", ",", " , ", ",, "])).join(parts)


@settings(max_examples=2000)
@given(_header_like())
def test_header_like_input_only_raises_sip_parse_error(value: str) -> None:
    _parse_both(value)
