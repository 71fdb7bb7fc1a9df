"""Who may use the admin HTTP APIs of a deployment (SPEC OPS-6): admin tokens, the
route classes, and the one aiohttp middleware every server of the deployment runs.

Theory of operation
-------------------
Every deployment has an **admin key** (``RUNDIR/secrets/_admin.key``, 0600, created
with the other secrets at ``up``). It does two things:

* it signs **admin tokens** (``trimaran admin token create --name WHO --scope S``)::

      tma1.<base64url JSON {id, name, scope, iat, exp}>.<base64url HMAC-SHA256>

  Any server holding the key verifies a token without a lookup (HMAC, expiry, scope).
  Scopes: ``read`` (GET/HEAD of admin routes) and ``operator`` (everything).
  Revoked token ids live in the CMS document ``admin/revoked`` (a JSON list); servers
  that follow the CMS refuse them (Back End agents and witnesses do not follow the
  CMS: there a revoked token works until it expires).
* it signs **run-dir calls** (``X-Trimaran-Peer: admin <time> <hmac>``,
  `trimaran.admin.peerauth`): the CLI run on the deployment's machine and the servers
  calling each other's admin routes use it; it counts as ``operator``.

Every route of every server is in one of four classes (`classify`):

=========  ==========================================================================
public     ``GET|HEAD /health`` only: liveness probes (supervisor, load balancers)
user       ``/xcap/*``, ``/conf/meetings/*`` (HTTP Digest), ``/chat/v1/*`` (chat
           bearer token): the handlers authenticate the user themselves
peer       ``/cms/*``, ``/backup/*``, ``/apps/pickup``: server-to-server routes whose
           handlers verify their own HMAC (pair or CMS key). The middleware lets a
           signed request through to that check, and accepts an admin token or a
           client certificate instead (then `authorized` tells the handler so)
admin      everything else, ``/status`` and ``/metrics`` included: an admin token,
           an admin-key signature or a verified TLS client certificate
=========  ==========================================================================

A route's class comes from the path template it matched (`route_class`), so no
spelling of a path can borrow another route's class. ``GET /admin/routes`` (admin)
lists a server's routes with their classes.

No credentials: 401 with ``WWW-Authenticate: Bearer realm="trimaran-admin"`` and a
Basic challenge (a browser on the status page: any user name, an admin token as the
password); a bad, expired or revoked token or admin-key signature: 401
(``error="invalid_token"``); a read token on a route that changes something: 403
naming the scope needed. Prometheus scrapers send a read token (``authorization:
{type: Bearer, credentials: ...}``).

Process credentials: a process acting for the deployment (``trimaran serve``,
``trimaran agent``, every CLI command given ``--dir``) calls `use_rundir`; the CLI's
``--token``/``$TRIMARAN_ADMIN_TOKEN`` calls `use_token`. `client_headers` then gives
every outgoing admin call its credentials. A process that never called `use_rundir`
(an embedded test server) gets a random key of its own. Keys and tokens are never
logged.
"""

from __future__ import annotations

import base64
import binascii
import getpass
import hashlib
import hmac
import json
import logging
import re
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from aiohttp import web
from aiohttp.typedefs import Handler
from multidict import CIMultiDict

from trimaran.admin import peerauth

if TYPE_CHECKING:
    from trimaran.deploy.rundir import RunDir

log = logging.getLogger(__name__)

TOKEN_PREFIX = "tma1"
READ, OPERATOR = "read", "operator"
SCOPES = (READ, OPERATOR)
#: The key id of admin-key signatures (`peerauth` header).
ADMIN_KEY_ID = "admin"
#: The CMS document listing revoked token ids.
REVOKED_KEY = "admin/revoked"
CHALLENGE = 'Bearer realm="trimaran-admin"'
MAX_TOKEN_DAYS = 3650
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")

PUBLIC, USER, PEER, ADMIN = "public", "user", "peer", "admin"
#: Every server's own route table (`route_table`), for operators and the OPS-6 tests.
ROUTES_PATH = "/admin/routes"
#: Routes whose handlers authenticate the user (HTTP Digest, chat bearer token).
USER_PREFIXES = ("/xcap/", "/conf/meetings/", "/chat/v1/")
#: Server-to-server routes whose handlers verify their own HMAC (pair or CMS key).
PEER_PREFIXES = ("/cms/", "/backup/", "/apps/pickup")
#: Changing routes a read token may call: appending an audit record about itself.
READ_SCOPE_WRITES = frozenset({("POST", "/cms/audit")})


class TokenError(Exception):
    """An admin token is malformed, forged, expired or revoked; the message says which."""


class AccessDenied(Exception):
    """A request may not use the route: 401 (who are you?) or 403 (not allowed)."""

    def __init__(self, status: int, message: str, *, invalid_token: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.invalid_token = invalid_token


@dataclass(frozen=True)
class TokenClaims:
    """What an admin token says about its holder."""

    id: str
    name: str
    scope: str
    issued_at: int
    expires_at: int

    def to_json(self) -> dict[str, object]:
        """The claims as the token carries them."""
        return {"id": self.id, "name": self.name, "scope": self.scope,
                "iat": self.issued_at, "exp": self.expires_at}


@dataclass(frozen=True)
class Principal:
    """Who made an admin request: a token holder, the admin key, or a TLS client."""

    name: str
    scope: str
    via: str                      # "token" | "key" | "cert"
    token_id: str | None = None


#: Request key of the authenticated `Principal` (admin and peer routes).
PRINCIPAL = web.RequestKey("trimaran.principal", Principal)


# -- tokens --------------------------------------------------------------------------------

def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _tag(key: bytes, payload: str) -> str:
    return _b64(hmac.new(key, f"{TOKEN_PREFIX}.{payload}".encode(), hashlib.sha256).digest())


def check_name(name: str) -> str:
    """`name` when it can name a token holder, else `ValueError` saying what is allowed."""
    if not _NAME.match(name):
        raise ValueError(f"token name {name[:80]!r}: 1-64 characters of A-Z a-z 0-9 . _ @ -, "
                         "starting with a letter or digit")
    return name


def mint(key: bytes, name: str, scope: str, *, days: float = 90.0,
         now: float | None = None) -> tuple[str, TokenClaims]:
    """A new token for `name` with `scope`, valid `days` days; `ValueError` on bad input."""
    check_name(name)
    if scope not in SCOPES:
        raise ValueError(f"scope {scope!r}: one of {', '.join(SCOPES)}")
    if not 0 < days <= MAX_TOKEN_DAYS:
        raise ValueError(f"days: more than 0, at most {MAX_TOKEN_DAYS}")
    issued = int(now if now is not None else time.time())
    claims = TokenClaims(secrets.token_hex(8), name, scope, issued, issued + int(days * 86400))
    payload = _b64(json.dumps(claims.to_json(), separators=(",", ":")).encode())
    return f"{TOKEN_PREFIX}.{payload}.{_tag(key, payload)}", claims


def read_claims(token: str) -> TokenClaims:
    """The claims of `token` WITHOUT checking its signature (for the CLI's messages);
    `TokenError` when it is not a token at all."""
    parts = token.strip().split(".")
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX:
        raise TokenError(f"not an admin token (expected {TOKEN_PREFIX}.<claims>.<signature>)")
    try:
        raw = json.loads(_unb64(parts[1]))
        claims = TokenClaims(str(raw["id"]), str(raw["name"]), str(raw["scope"]),
                             int(raw["iat"]), int(raw["exp"]))
    except (ValueError, binascii.Error, KeyError, TypeError):
        raise TokenError("malformed admin token claims") from None
    if claims.scope not in SCOPES:
        raise TokenError(f"unknown token scope {claims.scope[:20]!r}")
    return claims


def verify_token(key: bytes, token: str, *, now: float | None = None,
                 revoked: frozenset[str] = frozenset()) -> TokenClaims:
    """The claims of a genuine, unexpired, unrevoked token; else `TokenError`."""
    parts = token.strip().split(".")
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX:
        raise TokenError("not an admin token")
    if not hmac.compare_digest(parts[2], _tag(key, parts[1])):
        raise TokenError("bad token signature (another deployment's token, or altered)")
    claims = read_claims(token)
    if (now if now is not None else time.time()) >= claims.expires_at:
        raise TokenError(f"token {claims.id} ({claims.name}) has expired")
    if claims.id in revoked:
        raise TokenError(f"token {claims.id} ({claims.name}) is revoked")
    return claims


def needed_scope(method: str, path: str) -> str:
    """The scope a token needs for `method` on `path`."""
    if method.upper() in ("GET", "HEAD") or (method.upper(), path) in READ_SCOPE_WRITES:
        return READ
    return OPERATOR


def allows(scope: str, needed: str) -> bool:
    """True when a token of `scope` may do what needs `needed`."""
    return scope == OPERATOR or needed == READ


# -- process credentials -------------------------------------------------------------------

@dataclass
class _Process:
    key: bytes | None = None              # the deployment's admin key
    token: str | None = None              # the CLI's --token
    revoked: Callable[[], frozenset[str]] = frozenset


_process = _Process()


def use_rundir(run: RunDir) -> None:
    """Act for the deployment of `run`: its admin key signs calls and checks tokens."""
    _process.key = run.admin_key()


def use_key(key: bytes | None) -> None:
    """Use `key` as the deployment's admin key (tests, embedded servers); None: a random
    key of this process's own, made on first use."""
    _process.key = key


def use_token(token: str | None) -> None:
    """Send `token` on every admin call instead of signing with the admin key."""
    _process.token = token.strip() if token else None


def current_token() -> str | None:
    """The token given with --token/$TRIMARAN_ADMIN_TOKEN, if any."""
    return _process.token


def use_revocations(revoked: Callable[[], frozenset[str]]) -> None:
    """Where this server finds the revoked token ids (its CMS replica)."""
    _process.revoked = revoked


def admin_key() -> bytes:
    """The admin key this process uses (a random one of its own when none was set)."""
    if _process.key is None:
        _process.key = secrets.token_bytes(32)
    return _process.key


def client_headers(method: str, target: str, body: bytes = b"", *,
                   key: tuple[str, bytes] | None = None) -> dict[str, str]:
    """The credentials of one outgoing admin call: the --token when one was given, else
    a signature with `key` (a pair or CMS key) or the admin key. `target` is path+query."""
    if _process.token is not None:
        return {"Authorization": f"Bearer {_process.token}"}
    if key is not None:
        return peerauth.sign(key[0], key[1], method, target, body)
    return peerauth.sign(ADMIN_KEY_ID, admin_key(), method, signed_target(target), body)


def signed_target(target: str) -> str:
    """What an admin-key signature covers of ``path?query``: both percent-decoded, so
    that clients that re-encode a URL (aiohttp turns %3A into ':') and clients that send
    it as typed (urllib) sign the same text."""
    path, mark, query = target.partition("?")
    return unquote(path) + (mark + unquote(query) if query else "")


def headers_for(method: str, url: str, body: bytes = b"") -> dict[str, str]:
    """`client_headers` of a call to `url` (an absolute ``http://host:port/path?query``)."""
    parts = urlsplit(url)
    return client_headers(method, parts.path + (f"?{parts.query}" if parts.query else ""), body)


def operator_identity() -> str:
    """Who runs this command, for the audit: the token's name, else user@host."""
    if _process.token is not None:
        try:
            return read_claims(_process.token).name
        except TokenError:
            return "invalid-token"
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


# -- the middleware ------------------------------------------------------------------------

def classify(method: str, path: str) -> str:
    """The class of a route (see the module docstring)."""
    if path == "/health" and method.upper() in ("GET", "HEAD"):
        return PUBLIC
    if path.startswith(USER_PREFIXES):
        return USER
    if path.startswith(PEER_PREFIXES):
        return PEER
    return ADMIN


def route_class(request: web.Request) -> str:
    """The class of the route `request` matched (by its path template, so that no path
    spelling can borrow another route's class); unmatched paths by their own path."""
    resource = request.match_info.route.resource
    template = resource.canonical if resource is not None else request.path
    return classify(request.method, template)


def authorized(request: web.Request) -> bool:
    """True when the middleware already authorized `request` by an admin token, the admin
    key or a client certificate (a peer route then skips its own HMAC check)."""
    return request.get(PRINCIPAL) is not None


def principal(request: web.Request) -> Principal | None:
    """Who made `request` (admin and peer routes), None when not known here."""
    return request.get(PRINCIPAL)


def _peer_certificate(request: web.Request) -> Principal | None:
    transport = request.transport
    cert: Any = transport.get_extra_info("peercert") if transport is not None else None
    if not cert:
        return None
    subject = dict(item[0] for item in cert.get("subject", ()) if item)
    return Principal(str(subject.get("commonName", "tls-client")), OPERATOR, "cert")


async def authenticate(request: web.Request, *, key: bytes | None = None,
                       now: float | None = None) -> Principal | None:
    """The `Principal` of an admin or peer request; None for a peer route's own signature
    (its handler verifies it). `AccessDenied` when it may not go on."""
    kind = route_class(request)
    needed = needed_scope(request.method, request.path)
    secret = key if key is not None else admin_key()
    scheme, _, given = request.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() == "basic" and given.strip():     # a browser: any user, token as password
        given = _basic_password(given.strip())
        scheme = "bearer"
    if scheme.lower() == "bearer" and given.strip():
        try:
            claims = verify_token(secret, given, now=now, revoked=_process.revoked())
        except TokenError as exc:
            raise AccessDenied(401, str(exc), invalid_token=True) from None
        if not allows(claims.scope, needed):
            raise AccessDenied(403, f"token {claims.name!r} has scope {claims.scope}; "
                                    f"{request.method} {request.path} needs {needed}")
        return Principal(claims.name, claims.scope, "token", claims.id)
    cert = _peer_certificate(request)
    if cert is not None:
        return cert
    signed = request.headers.get(peerauth.HEADER, "")
    if signed and kind == PEER and not signed.startswith(f"{ADMIN_KEY_ID} "):
        return None                         # a pair/CMS signature: the handler checks it
    if signed:
        body = await request.read() if request.can_read_body else b""
        try:
            peerauth.verify(request.headers, lambda k: secret if k == ADMIN_KEY_ID else None,
                            request.method, signed_target(request.raw_path), body, now=now)
        except peerauth.PeerAuthError as exc:
            raise AccessDenied(401, f"admin signature refused: {exc}",
                               invalid_token=True) from None
        return Principal(ADMIN_KEY_ID, OPERATOR, "key")
    raise AccessDenied(401, "admin credentials required: Authorization: Bearer <admin "
                            "token> (trimaran admin token create)")


def _basic_password(value: str) -> str:
    try:
        return base64.b64decode(value, validate=True).decode().partition(":")[2]
    except (ValueError, binascii.Error):
        return ""


def denied_response(exc: AccessDenied) -> web.Response:
    """The JSON answer to a refused request. A 401 offers Bearer (API clients) and Basic
    (a browser on the status page: any user name, the admin token as password)."""
    headers = CIMultiDict({"Cache-Control": "no-store"})
    if exc.status == 401:
        headers.add("WWW-Authenticate", CHALLENGE + (', error="invalid_token"'
                                                     if exc.invalid_token else ""))
        headers.add("WWW-Authenticate", 'Basic realm="trimaran-admin", charset="UTF-8"')
    return web.json_response({"error": exc.message}, status=exc.status, headers=headers)


def middleware(*, key: Callable[[], bytes] = admin_key) -> Any:
    """The aiohttp middleware that guards every route of a server (see `classify`)."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if route_class(request) in (PUBLIC, USER):
            return await handler(request)
        try:
            who = await authenticate(request, key=key())
        except AccessDenied as exc:
            log.info("admin %s %s refused (%d): %s", request.method, request.path,
                     exc.status, exc.message)
            return denied_response(exc)
        if who is not None:
            request[PRINCIPAL] = who
        return await handler(request)

    return guard


def guarded_app(**kwargs: Any) -> web.Application:
    """An `aiohttp.web.Application` with the admin guard as its innermost middleware
    (pass `middlewares=[...]` for outer ones, e.g. an error boundary) and
    ``GET /admin/routes``: every route of the server with its class (an admin route)."""
    outer = list(kwargs.pop("middlewares", ()))
    app = web.Application(middlewares=[*outer, middleware()], **kwargs)
    app.router.add_get(ROUTES_PATH, _route_table, name="admin-routes")
    return app


async def _route_table(request: web.Request) -> web.Response:
    return web.json_response({"routes": route_table(request.app)},
                             headers={"Cache-Control": "no-store"})


def route_table(app: web.Application) -> list[dict[str, str]]:
    """Every (method, path template) `app` serves, with the class of its route."""
    rows = []
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = str(info.get("path") or info.get("formatter") or info.get("prefix") or "")
        rows.append({"method": route.method, "path": path,
                     "class": classify(route.method, path)})
    return rows


def claims_json(claims: TokenClaims) -> dict[str, object]:
    """The claims for listings (`trimaran admin token list`)."""
    return asdict(claims)
