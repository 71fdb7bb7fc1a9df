"""Bearer tokens of the Persistent Chat HTTP API (SPEC PC-1).

A chat server has no passwords: when a client connects over SIP (authenticated by its
Front End with digest), the chat server issues it a token naming the user, the chat
pool and an expiry; the client presents it to the chat HTTP API of any server of the
pool as ``Authorization: Bearer <token>``.

Format (version 1)::

    v1.<payload>.<mac>

``payload`` is base64url (no padding) of ``"<expiry>|<user>"`` in UTF-8, the expiry in
whole seconds since the epoch (rounded down) as a decimal without leading zeros; ``mac``
is base64url (no padding) of HMAC-SHA256 under the deployment secret over the
domain-separated fields ``chat-token``, ``v1``, pool, user and expiry, each
length-prefixed, so no field can be shifted into another and a token of one pool (or a
MAC computed for another purpose with the same secret) is never accepted for another.
Only the canonical encoding is accepted: a token whose base64 differs from what
`issue_token` would have written for the same bytes is refused, so every change to a
token's text makes it invalid.

`verify_token` never raises: a token that is malformed, longer than
`MAX_TOKEN_LENGTH`, of another pool or secret, or expired is simply not valid (None).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import re

#: How long a token is valid by default, in seconds (12 hours).
TOKEN_LIFETIME = 12 * 60 * 60.0
#: The longest token accepted, in characters; `issue_token` never writes a longer one.
MAX_TOKEN_LENGTH = 1024

_VERSION = "v1"
_DOMAIN = b"chat-token"
_B64URL = re.compile(r"[A-Za-z0-9_-]+")
_EXPIRY = re.compile(r"0|[1-9][0-9]{0,15}")


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _b64decode(text: str) -> bytes | None:
    """The bytes of canonical unpadded base64url `text`, else None."""
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        return None
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    return data if _b64encode(data) == text else None


def _field(value: bytes) -> bytes:
    return len(value).to_bytes(4, "big") + value


def _mac(secret: bytes, pool: str, user: str, expiry: int) -> bytes:
    message = b"".join(_field(part) for part in (
        _DOMAIN, _VERSION.encode("ascii"), pool.encode("utf-8"), user.encode("utf-8"),
        str(expiry).encode("ascii")))
    return hmac.new(secret, message, hashlib.sha256).digest()


def issue_token(secret: bytes, user: str, server_pool: str, expires_at: float) -> str:
    """A token saying that `user` (an AOR) may use the chat API of `server_pool` until
    `expires_at` (seconds since the epoch, kept to the second, rounded down).

    Raises ValueError for an empty secret, user or pool, text that is not valid
    Unicode (lone surrogates), an expiry that is not a finite non-negative time, or a
    user so long that the token would exceed `MAX_TOKEN_LENGTH`."""
    if not secret:
        raise ValueError("the token secret is empty")
    if not user or not server_pool:
        raise ValueError("a token needs a user and a pool")
    if not math.isfinite(expires_at) or not 0 <= expires_at < 10 ** 16:
        raise ValueError(f"bad token expiry {expires_at!r}")
    expiry = math.floor(expires_at)
    try:
        payload = f"{expiry}|{user}".encode()
        mac = _mac(secret, server_pool, user, expiry)
    except UnicodeEncodeError:
        raise ValueError("the user or pool is not valid Unicode text") from None
    token = f"{_VERSION}.{_b64encode(payload)}.{_b64encode(mac)}"
    if len(token) > MAX_TOKEN_LENGTH:
        raise ValueError(f"the user is too long for a token ({len(token)} > "
                         f"{MAX_TOKEN_LENGTH} characters)")
    return token


def verify_token(secret: bytes, token: str, pool: str, now: float) -> str | None:
    """The user named by `token` when it was issued with `secret` for `pool` and has not
    expired at `now` (seconds since the epoch); None otherwise. Never raises."""
    if not isinstance(token, str) or not secret or len(token) > MAX_TOKEN_LENGTH:
        return None
    version, _, rest = token.partition(".")
    encoded_payload, _, encoded_mac = rest.partition(".")
    if version != _VERSION:
        return None
    payload, given_mac = _b64decode(encoded_payload), _b64decode(encoded_mac)
    if payload is None or given_mac is None:
        return None
    try:
        expiry_text, _, user = payload.decode("utf-8").partition("|")
        if not user or not _EXPIRY.fullmatch(expiry_text):
            return None
        expiry = int(expiry_text)
        expected = _mac(secret, pool, user, expiry)
    except (UnicodeError, ValueError):
        return None
    if not hmac.compare_digest(given_mac, expected):
        return None
    return user if now < expiry else None
