"""An HTTP client for signed server-to-server calls (see `trimaran.admin.peerauth`)."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import aiohttp

from trimaran.admin.peerauth import sign
from trimaran.security import https

#: What a call that got no usable answer reports instead of an HTTP status.
UNREACHABLE = 0


class PeerClient:
    """Signed JSON calls to other servers' admin APIs; never raises for network
    failures: a call that got no answer returns status 0 and the reason."""

    def __init__(self, key_id: str, secret: bytes, *, timeout: float = 2.0,
                 local_host: str | None = None) -> None:
        self.key_id = key_id
        self.local_host = local_host      # our own address: calls leave from it (a site cut
                                          # by address then cuts them too)
        self._secret = secret
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = https.connector(self.local_host)     # OPS-6: HTTPS under mTLS
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self._session

    async def close(self) -> None:
        """Release the connection pool; idempotent."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def call(self, method: str, url: str, body: object | None = None, *,
                   timeout: float | None = None) -> tuple[int, dict[str, object]]:
        """(status, JSON object) — (0, {"error": why}) when nothing usable answered."""
        data = b"" if body is None else json.dumps(body).encode()
        url = https.secure(url)
        parts = urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        headers = sign(self.key_id, self._secret, method, target, data)
        headers["Content-Type"] = "application/json"
        # Only an explicit ClientTimeout: `timeout=None` would turn the session's off.
        limit = aiohttp.ClientTimeout(total=timeout if timeout is not None else self.timeout)
        try:
            async with self._client().request(method, url, data=data or None,
                                              headers=headers, timeout=limit) as response:
                raw = await response.read()
                status = response.status
        except (TimeoutError, OSError, aiohttp.ClientError) as exc:
            return UNREACHABLE, {"error": f"{type(exc).__name__}: {exc}".strip(": ")}
        try:
            value = json.loads(raw) if raw else {}
        except ValueError:
            return status, {"error": "answer is not JSON"}
        return status, value if isinstance(value, dict) else {"value": value}
