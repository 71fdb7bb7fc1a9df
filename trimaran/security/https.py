"""HTTP between servers over mutual TLS (SPEC OPS-6, ``settings.tls.mutual_between_servers``).

With mutual TLS between servers, every admin HTTP listener of a deployment (Front End
admin API, agents, witness, Director, Edge, Mediation, chat, DNS) serves HTTPS with the
server's deployment certificate, and every HTTP call a server or the operator CLI makes
to another server goes over HTTPS, presenting its own certificate and verifying the
peer's against the deployment CA (the certificate must name the address called).

Listeners ask for a client certificate in one of two ways (`HttpsPolicy`):

* ``strict`` (the Back End agents' API: only servers and the operator CLI call it):
  a client without a certificate of the deployment CA fails the handshake;
* ``listener`` (everything else, which also serves people: XCAP, meetings, the chat
  API, the status page): a certificate is verified when presented (one of another CA
  fails the handshake), and `guard` answers 403 ``mutual TLS required between
  servers`` on the server-to-server routes (`SERVER_PREFIXES`) to a client without one.

Plain HTTP to any of these listeners fails: they speak TLS only. The operator CLI
presents the ``operator`` certificate `trimaran up` issues in RUNDIR/certs.

A process installs its policy once (`install`: `trimaran serve`, `trimaran agent`, the
CLI on a run directory); the HTTP call sites then go through `secure` (the URL),
`connector`/`client_ssl` (aiohttp), `urlopen` (urllib) and `listener_ssl` (aiohttp
sites). Without a policy (the default, mutual TLS off) all of these are plain HTTP,
unchanged.
"""

from __future__ import annotations

import logging
import ssl
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http.client import HTTPResponse
from typing import Any

import aiohttp
from aiohttp import web

log = logging.getLogger(__name__)

#: Routes only servers call (besides the operator CLI): a client without a verified
#: certificate of the deployment CA is refused there (`guard`). The peer routes of the
#: admin API (CMS replication, Backup Service, pickup) and the witness's agent routes.
SERVER_PREFIXES = ("/cms/", "/backup/", "/apps/pickup", "/backends", "/pools/")
#: The reason of the 403 refusing a server-to-server route without a client certificate.
MTLS_REQUIRED = "mutual TLS required between servers"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class HttpsPolicy:
    """How one process speaks HTTP to the deployment's servers; see the module docstring.

    `client`: verifies servers against the deployment CA and presents `identity`'s
    certificate; `listener`/`strict`: the contexts of this server's HTTP listeners
    (None in the operator CLI, which listens nowhere)."""

    identity: str
    client: ssl.SSLContext
    listener: ssl.SSLContext | None = None
    strict: ssl.SSLContext | None = None


_installed: HttpsPolicy | None = None


def install(policy: HttpsPolicy | None) -> None:
    """Make `policy` the HTTP policy of this process (None: plain HTTP)."""
    global _installed
    _installed = policy


def installed() -> HttpsPolicy | None:
    """The policy `install` set (None: plain HTTP)."""
    return _installed


def scheme() -> str:
    """``https`` under a policy, else ``http``."""
    return "https" if _installed is not None else "http"


def secure(url: str) -> str:
    """`url` with ``https://`` instead of ``http://`` under a policy; else unchanged."""
    if _installed is not None and url.startswith("http://"):
        return "https://" + url[len("http://"):]
    return url


def client_ssl() -> ssl.SSLContext | bool:
    """The ``ssl`` argument of an aiohttp connector: our client context, or aiohttp's
    default (True) without a policy."""
    return _installed.client if _installed is not None else True


def connector(local_host: str | None = None) -> aiohttp.TCPConnector:
    """An aiohttp connector for calls to other servers (leaving from `local_host`)."""
    return aiohttp.TCPConnector(local_addr=(local_host, 0) if local_host else None,
                                ssl=client_ssl())


def urlopen(request: urllib.request.Request | str, timeout: float) -> HTTPResponse:
    """`urllib.request.urlopen` of an admin URL, over HTTPS with our certificate under a
    policy (the URL's ``http://`` becomes ``https://``)."""
    if _installed is None:
        response: HTTPResponse = urllib.request.urlopen(request, timeout=timeout)
        return response
    if isinstance(request, str):
        request = urllib.request.Request(request)
    request.full_url = secure(request.full_url)
    response = urllib.request.urlopen(request, timeout=timeout,
                                      context=_installed.client)
    return response


def listener_ssl(*, strict: bool = False) -> ssl.SSLContext | None:
    """The ``ssl_context`` of an aiohttp site: None (plain HTTP) without a policy;
    `strict`: a client certificate of the deployment CA is required in the handshake."""
    if _installed is None:
        return None
    return _installed.strict if strict else _installed.listener


def verified_peer(request: web.Request) -> str | None:
    """The common name of the client certificate `request` came with (verified against
    the deployment CA in the handshake), None without one."""
    transport = request.transport
    cert: Any = transport.get_extra_info("peercert") if transport is not None else None
    if not cert:
        return None
    subject = dict(item[0] for item in cert.get("subject", ()) if item)
    return str(subject.get("commonName", "?"))


def guard(app: web.Application) -> web.Application:
    """Refuse the server-to-server routes of `app` to clients without a certificate of
    the deployment CA (403 with the reason), under a policy; returns `app`."""
    if _installed is not None:
        app.middlewares.insert(0, _require_certificate)
    return app


@web.middleware
async def _require_certificate(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith(SERVER_PREFIXES) and verified_peer(request) is None:
        peer = request.remote or "?"
        log.warning("refused %s %s from %s: %s", request.method, request.path, peer,
                    MTLS_REQUIRED)
        return web.json_response({"error": MTLS_REQUIRED}, status=403,
                                 reason=f"Forbidden ({MTLS_REQUIRED})")
    return await handler(request)
