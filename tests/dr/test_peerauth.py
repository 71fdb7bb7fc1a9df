"""Server-to-server calls are signed (Backup Service and CMS transport authentication)."""

from __future__ import annotations

import pytest

from trimaran.admin.peerauth import HEADER, PeerAuthError, sign, verify

SECRET = b"k" * 32


def keys(key: str) -> bytes | None:
    return SECRET if key == "pair:a:b" else None


def test_a_signed_request_verifies_and_names_its_key() -> None:
    headers = sign("pair:a:b", SECRET, "POST", "/backup/apply", b"{}", now=1000.0)
    assert verify(headers, keys, "POST", "/backup/apply", b"{}", now=1010.0) == "pair:a:b"


@pytest.mark.parametrize(("method", "target", "body", "now", "why"), [
    ("POST", "/backup/apply", b'{"x":1}', 1000.0, "bad signature"),      # body changed
    ("POST", "/backup/reset", b"{}", 1000.0, "bad signature"),           # path changed
    ("GET", "/backup/apply", b"{}", 1000.0, "bad signature"),            # method changed
    ("POST", "/backup/apply", b"{}", 1100.0, "expired"),                 # replayed late
])
def test_tampered_or_stale_requests_are_refused(method: str, target: str, body: bytes,
                                                now: float, why: str) -> None:
    headers = sign("pair:a:b", SECRET, "POST", "/backup/apply", b"{}", now=1000.0)
    with pytest.raises(PeerAuthError, match=why):
        verify(headers, keys, method, target, body, now=now)


def test_wrong_secret_unknown_key_missing_and_malformed_headers_are_refused() -> None:
    other = sign("pair:a:b", b"x" * 32, "GET", "/p", now=5.0)
    with pytest.raises(PeerAuthError, match="bad signature"):
        verify(other, keys, "GET", "/p", now=5.0)
    with pytest.raises(PeerAuthError, match="unknown peer key"):
        verify(sign("pair:a:c", SECRET, "GET", "/p", now=5.0), keys, "GET", "/p", now=5.0)
    with pytest.raises(PeerAuthError, match="missing"):
        verify({}, keys, "GET", "/p", now=5.0)
    with pytest.raises(PeerAuthError, match="malformed"):
        verify({HEADER: "pair:a:b notanumber abc"}, keys, "GET", "/p", now=5.0)
