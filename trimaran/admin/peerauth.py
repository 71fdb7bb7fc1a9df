"""Authentication of server-to-server HTTP calls (Backup Service, CMS replication).

The caller signs ``METHOD PATH?QUERY``, a timestamp and the SHA-256 of the body with
a secret both sides hold (the pair secret of two paired pools, or the deployment's
CMS secret)::

    X-Trimaran-Peer: <key id> <unix time> <hex HMAC-SHA256>

The receiver recomputes the HMAC and refuses a signature older or newer than
`MAX_SKEW` seconds. The secret never travels and is never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Mapping

HEADER = "X-Trimaran-Peer"
MAX_SKEW = 60.0


class PeerAuthError(Exception):
    """A server-to-server request is not signed by a known peer."""


def _mac(secret: bytes, method: str, target: str, stamp: str, body: bytes) -> str:
    text = "\n".join((method.upper(), target, stamp, hashlib.sha256(body).hexdigest()))
    return hmac.new(secret, text.encode(), hashlib.sha256).hexdigest()


def sign(key_id: str, secret: bytes, method: str, target: str, body: bytes = b"", *,
         now: float | None = None) -> dict[str, str]:
    """The header that authenticates this request (`target` is path plus query)."""
    stamp = str(int(now if now is not None else time.time()))
    return {HEADER: f"{key_id} {stamp} {_mac(secret, method, target, stamp, body)}"}


def verify(headers: Mapping[str, str], secrets: Callable[[str], bytes | None], method: str,
           target: str, body: bytes = b"", *, now: float | None = None) -> str:
    """Check the signature; return the key id. `PeerAuthError` says what is wrong."""
    value = headers.get(HEADER)
    if not value:
        raise PeerAuthError(f"missing {HEADER} header")
    parts = value.split()
    if len(parts) != 3 or not parts[1].isdigit():
        raise PeerAuthError(f"malformed {HEADER} header")
    key_id, stamp, given = parts
    secret = secrets(key_id)
    if secret is None:
        raise PeerAuthError(f"unknown peer key {key_id[:40]!r}")
    current = now if now is not None else time.time()
    if abs(current - int(stamp)) > MAX_SKEW:
        raise PeerAuthError("signature expired (clock skew over 60 s?)")
    if not hmac.compare_digest(given, _mac(secret, method, target, stamp, body)):
        raise PeerAuthError("bad signature")
    return key_id
