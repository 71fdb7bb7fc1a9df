"""Bearer tokens of the chat HTTP API (SPEC PC-1): a token names its user to the pool
it was issued for until it expires; any other token, and any change to a token, is
refused without an exception."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trimaran.chat.tokens import MAX_TOKEN_LENGTH, TOKEN_LIFETIME, issue_token, verify_token

SECRET = b"deployment-secret-for-chat-tokens"
POOL = "chat1.example.com"
USER = "sip:alice@example.com"
NOW = 1_700_000_000.0

#: Unicode text without lone surrogates (what a real user or pool name can be).
TEXT = st.characters(codec="utf-8")
B64URL_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def token(user: str = USER, pool: str = POOL, expires_at: float = NOW + 60) -> str:
    return issue_token(SECRET, user, pool, expires_at)


def test_pc1_a_token_names_its_user_until_it_expires() -> None:
    issued = token(expires_at=NOW + 60.9)              # kept to the second, rounded down
    assert verify_token(SECRET, issued, POOL, NOW) == USER
    assert verify_token(SECRET, issued, POOL, NOW + 59.999) == USER
    assert verify_token(SECRET, issued, POOL, NOW + 60) is None
    assert verify_token(SECRET, issued, POOL, NOW + 3600) is None
    assert verify_token(SECRET, issued, POOL, float("nan")) is None


def test_pc1_the_default_lifetime_is_twelve_hours() -> None:
    assert TOKEN_LIFETIME == 12 * 3600
    issued = token(expires_at=NOW + TOKEN_LIFETIME)
    assert verify_token(SECRET, issued, POOL, NOW + TOKEN_LIFETIME - 1) == USER
    assert verify_token(SECRET, issued, POOL, NOW + TOKEN_LIFETIME) is None


def test_pc1_a_token_is_valid_only_for_its_pool_and_secret() -> None:
    issued = token()
    assert verify_token(SECRET, issued, "chat2.example.com", NOW) is None
    assert verify_token(SECRET, issued, POOL + " ", NOW) is None
    assert verify_token(b"another-secret", issued, POOL, NOW) is None
    assert verify_token(b"", issued, POOL, NOW) is None


def test_pc1_fields_cannot_be_shifted_between_pool_and_user() -> None:
    # The same characters split differently between pool and user are other fields.
    one = issue_token(SECRET, "b|sip:c@d", "a", NOW + 60)
    assert verify_token(SECRET, one, "a|b", NOW) is None
    assert verify_token(SECRET, one, "a", NOW) == "b|sip:c@d"


def test_pc1_the_mac_is_domain_separated() -> None:
    # A MAC made with the same secret over the bare fields (another use of the secret)
    # does not make a token.
    version, payload, _ = token().split(".")
    bare = hmac.new(SECRET, f"{POOL}|{USER}|{int(NOW + 60)}".encode(), hashlib.sha256)
    forged = f"{version}.{payload}." + base64.urlsafe_b64encode(bare.digest()).decode().rstrip("=")
    assert verify_token(SECRET, forged, POOL, NOW) is None


@pytest.mark.parametrize("bad", [
    "", ".", "..", "v1", "v1..", "v2.AAAA.AAAA", "Bearer x", "v1.AAAA", "v1.AAAA.AAAA.AAAA",
    "v1.!!!!.AAAA", "v1.AAAA=.AAAA", "v1.A.AAAA", "v1.\u00e9.AAAA", "\x00", "v1." + "A" * 2000,
])
def test_pc1_malformed_tokens_are_not_valid(bad: str) -> None:
    assert verify_token(SECRET, bad, POOL, NOW) is None


def test_pc1_a_token_with_a_non_canonical_encoding_is_not_valid() -> None:
    version, payload, mac = token().split(".")
    # The last character of unpadded base64 carries unused low bits: flipping them
    # encodes the same bytes differently.
    for part in (payload, mac):
        if len(part) % 4 in (2, 3):
            index = B64URL_ALPHABET.index(part[-1])
            twin = part[:-1] + B64URL_ALPHABET[index ^ 1]
            assert base64.urlsafe_b64decode(twin + "==") == \
                base64.urlsafe_b64decode(part + "==")
            forged = f"{version}.{twin}.{mac}" if part is payload else \
                f"{version}.{payload}.{twin}"
            assert verify_token(SECRET, forged, POOL, NOW) is None


def test_pc1_tokens_longer_than_one_kib_are_refused_and_never_issued() -> None:
    assert len(token(user="sip:" + "a" * 600 + "@example.com")) <= MAX_TOKEN_LENGTH
    with pytest.raises(ValueError, match="too long"):
        token(user="sip:" + "a" * 800 + "@example.com")
    padded = token() + "A" * MAX_TOKEN_LENGTH
    assert verify_token(SECRET, padded, POOL, NOW) is None


@pytest.mark.parametrize(("secret", "user", "pool", "expires_at"), [
    (b"", USER, POOL, NOW), (SECRET, "", POOL, NOW), (SECRET, USER, "", NOW),
    (SECRET, USER, POOL, float("inf")), (SECRET, USER, POOL, float("nan")),
    (SECRET, USER, POOL, -1.0), (SECRET, "sip:\ud800@x", POOL, NOW),
    (SECRET, USER, "pool\udfff", NOW),
])
def test_pc1_issuing_refuses_bad_input(secret: bytes, user: str, pool: str,
                                       expires_at: float) -> None:
    with pytest.raises(ValueError):
        issue_token(secret, user, pool, expires_at)


@settings(max_examples=200)
@given(user=st.text(TEXT, min_size=1, max_size=200), pool=st.text(TEXT, min_size=1, max_size=60),
       expires_at=st.floats(min_value=0, max_value=4e9), ahead=st.floats(0.001, 1e6))
def test_pc1_every_issued_token_verifies_to_its_user(user: str, pool: str, expires_at: float,
                                                     ahead: float) -> None:
    issued = issue_token(SECRET, user, pool, expires_at)
    assert len(issued) <= MAX_TOKEN_LENGTH and issued.isascii()
    valid_until = int(expires_at)
    assert verify_token(SECRET, issued, pool, valid_until - ahead) == user
    assert verify_token(SECRET, issued, pool, valid_until) is None


@st.composite
def tampered(draw: st.DrawFn) -> tuple[str, str]:
    """A genuine token and a different string made from it by one or more edits."""
    original = token(user=draw(st.sampled_from([USER, "sip:bob@example.com", "sip:é@x"])))
    text = original
    for _ in range(draw(st.integers(1, 3))):
        edit = draw(st.sampled_from(["replace", "insert", "delete", "truncate", "swap"]))
        at = draw(st.integers(0, len(text) - 1)) if text else 0
        char = draw(st.sampled_from(B64URL_ALPHABET + ".=|") | st.characters())
        if edit == "replace":
            text = text[:at] + char + text[at + 1:]
        elif edit == "insert":
            text = text[:at] + char + text[at:]
        elif edit == "delete":
            text = text[:at] + text[at + 1:]
        elif edit == "truncate":
            text = text[:at]
        elif at + 1 < len(text):
            text = text[:at] + text[at + 1] + text[at] + text[at + 2:]
    if text == original:
        text = original[:-1]
    return original, text


@settings(max_examples=300)
@given(pair=tampered())
def test_pc1_any_tampering_makes_a_token_invalid(pair: tuple[str, str]) -> None:
    original, changed = pair
    assert verify_token(SECRET, original, POOL, NOW) is not None
    assert verify_token(SECRET, changed, POOL, NOW) is None


@settings(max_examples=300)
@given(anything=st.text(max_size=1500) | st.text(B64URL_ALPHABET + ".", max_size=200).map(
    lambda s: "v1." + s), pool=st.text(max_size=20), now=st.floats())
def test_pc1_verifying_never_raises(anything: str, pool: str, now: float) -> None:
    assert verify_token(SECRET, anything, pool, now) is None
