"""The admin HTTP API of one server (SPEC OPS-3, OPS-4, OPS-6): aiohttp app and lifecycle.

Endpoints (every error is JSON ``{"error": "..."}``):

=====================================================  ======================================
``GET|HEAD /health``                                   200 healthy / 503 not (never a token)
``GET /status``                                        200 ``ctx.status()`` + server/role/pool
``GET /metrics``                                       Prometheus text exposition
``GET|PUT /xcap/resource-lists/users/{aor}/index``     the user's contact list (RFC 4826
                                                       document), HTTP Digest, owner only;
                                                       PUT answers 201 (the list was empty)
                                                       or 200 with {owner, groups, contacts}
``GET /admin/contacts/{aor}``                          any user's contact list as JSON
``GET /admin/presence/{aor}``                          any user's current presence
                                                       publications as JSON
``PUT|GET /conf/meetings/{id}``                        a meeting (JSON {subject, attendees,
                                                       expires_at}); HTTP Digest, organizer
``PUT /conf/meetings/{id}/content/{name}``             a file of the meeting (bytes, stored
                                                       content-addressed; ≤ 4 MiB)
=====================================================  ======================================

Every route but ``/health`` needs credentials (OPS-6, `trimaran.admin.access`): the
user routes (XCAP, meetings) HTTP Digest, the server-to-server routes their HMAC or an
admin token, everything else an admin token (read scope for GET, operator otherwise),
the deployment's admin key or a TLS client certificate. Errors are converted to
responses at exactly one place, `_boundary`: client mistakes get 4xx with a message
naming the problem, an unreachable store 503 + Retry-After, our own bugs a logged 500
without a traceback.
Authorization headers and secrets are never logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler
from multidict import CIMultiDict

from trimaran.admin import access
from trimaran.admin.httpauth import HttpDigestAuth, LockoutCheck
from trimaran.admin.metrics import Metrics
from trimaran.admin.peerauth import PeerAuthError
from trimaran.admin.resource_lists import (
    CONTENT_TYPE,
    ResourceListsError,
    parse_resource_lists,
    render_resource_lists,
)
from trimaran.security import https
from trimaran.security.deployment import certificate_status
from trimaran.sip.errors import SipParseError
from trimaran.sip.uri import URI
from trimaran.store.base import Conflict, NotFound, Store, StoreError, StoreUnavailable
from trimaran.store.model import ContactList, Meeting

log = logging.getLogger(__name__)

#: Largest request body accepted (413 beyond).
MAX_BODY_BYTES = 256 * 1024
#: Largest body of a server-to-server call (a Backup Service batch with file content).
MAX_PEER_BODY_BYTES = 8 * 1024 * 1024
#: Retry-After (seconds) sent with 503 when the store is unavailable.
STORE_RETRY_AFTER = 5
#: How long close() lets in-flight requests finish before cancelling them.
SHUTDOWN_TIMEOUT = 5.0
#: Content types accepted by PUT of a resource-lists document.
ACCEPTED_PUT_TYPES = frozenset({CONTENT_TYPE, "application/xml"})

XCAP_PATH = "/xcap/resource-lists/users/{aor}/index"
ADMIN_CONTACTS_PATH = "/admin/contacts/{aor}"
ADMIN_PRESENCE_PATH = "/admin/presence/{aor}"
MEETING_PATH = "/conf/meetings/{id}"
MEETING_CONTENT_PATH = "/conf/meetings/{id}/content/{name}"
#: Largest meeting content file.
MAX_CONTENT_BYTES = 4 * 1024 * 1024


Route = tuple[str, str, tuple[tuple[str, Handler], ...]]


def add_routes(app: web.Application, routes: tuple[Route, ...]) -> None:
    """Add (path, name, ((method, handler), ...)) endpoints to `app`."""
    for path, name, handlers in routes:
        resource = app.router.add_resource(path, name=name)
        for method, handler in handlers:
            resource.add_route(method, handler)


@dataclass(frozen=True)
class AdminContext:
    """What the admin API needs from the server it runs in."""

    server: str                                   # server name, e.g. "fe1a"
    role: str                                     # "frontend", ...
    pool: str
    realm: str                                    # SIP domain = HTTP Digest realm
    store: Store
    status: Callable[[], dict[str, object]]       # JSON-able status snapshot
    health: Callable[[], tuple[bool, str]]        # (healthy, reason)
    metrics: Metrics
    wall_clock: Callable[[], float] = time.time   # epoch seconds (nonce ages, store `now`)
    # Awaited with the owner's AOR after a PUT is committed; its errors are logged only.
    on_contacts_changed: Callable[[str], Awaitable[None]] | None = None
    # No longer used: admin tokens (`trimaran.admin.access`) guard every admin route.
    admin_token: str | None = None
    # POST /admin/drain: stop new sign-ins and move the clients away (FE-5).
    on_drain: Callable[[], Awaitable[dict[str, object]]] | None = None
    # More endpoints (Backup Service, CMS, conferencing): (path, name, ((method, handler),)).
    routes: tuple[Route, ...] = ()
    # Who may change `aor`'s data here (homing, pool failover state): None when this
    # server's pool serves the user with full rights; else an `HttpError` to raise.
    write_check: Callable[[str], Awaitable[None]] | None = None
    # Account lockout (OPS-6): HTTP Digest failures count, locked users get 403.
    lockout: LockoutCheck | None = None


class HttpError(Exception):
    """A response to send instead of the normal one; `headers` may repeat names."""

    def __init__(self, status: int, message: str,
                 headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def _json(data: object, status: int = 200,
          headers: tuple[tuple[str, str], ...] = ()) -> web.Response:
    return web.Response(text=json.dumps(data, default=str), status=status,
                        content_type="application/json", headers=CIMultiDict(headers))


def _error(status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> web.Response:
    return _json({"error": message}, status, headers)


def _path_group(request: web.Request) -> str:
    resource = request.match_info.route.resource
    name = resource.name if resource is not None else None
    return name or "other"


def _from_aiohttp(exc: web.HTTPException, request: web.Request) -> web.Response:
    """Turn aiohttp's own errors (router 404/405, body too large) into our JSON form."""
    if isinstance(exc, web.HTTPNotFound):
        return _error(404, f"no such path: {request.path}")
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return _error(405, f"method {request.method} not allowed on {request.path} "
                           f"(allowed: {allowed})", (("Allow", allowed),))
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return _error(413, f"request body larger than {MAX_PEER_BODY_BYTES} bytes")
    return _error(exc.status, exc.reason)


def _owner(request: web.Request) -> str:
    """The canonical AOR named by the `{aor}` path segment (400 when it is not one)."""
    raw = request.match_info["aor"]
    try:
        uri = URI.parse(raw)
    except SipParseError as exc:
        raise HttpError(400, f"bad AOR in path: {exc.reason}") from None
    if uri.scheme == "tel" or uri.user is None:
        raise HttpError(400, f"bad AOR in path: {raw[:80]!r} is not a sip: user address")
    return uri.aor


def _contact_list_json(contact_list: ContactList) -> dict[str, object]:
    return {
        "owner": contact_list.owner,
        "groups": [{"name": g.name, "display_name": g.display_name}
                   for g in contact_list.groups],
        "contacts": [{"uri": c.uri, "display_name": c.display_name, "groups": list(c.groups)}
                     for c in contact_list.contacts],
    }


def _is_empty(contact_list: ContactList) -> bool:
    return not contact_list.groups and not contact_list.contacts


class AdminServer:
    """Serves the admin API of one server on one TCP address."""

    def __init__(self, ctx: AdminContext) -> None:
        self._ctx = ctx
        self._auth = HttpDigestAuth(ctx.realm, ctx.store.users, clock=ctx.wall_clock,
                                    lockout=ctx.lockout)
        self._runner: web.AppRunner | None = None
        self._address: tuple[str, int] | None = None
        self._started = False
        self._close_lock = asyncio.Lock()

    @property
    def address(self) -> tuple[str, int] | None:
        """The bound (host, port) while serving, else None."""
        return self._address

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Listen on (host, port); port 0 picks a free port. Returns the bound address."""
        if self._started:
            raise RuntimeError("AdminServer.start() may be called only once")
        self._started = True
        runner = web.AppRunner(https.guard(self._make_app()), shutdown_timeout=SHUTDOWN_TIMEOUT,
                               access_log=logging.getLogger("trimaran.admin.access"))
        await runner.setup()
        self._runner = runner
        try:
            await web.TCPSite(runner, host, port, ssl_context=https.listener_ssl()).start()
        except BaseException:
            await self.close()
            raise
        bound = runner.addresses[0]
        self._address = (str(bound[0]), int(bound[1]))
        log.info("admin API of %s listening on %s:%d", self._ctx.server, *self._address)
        return self._address

    async def close(self) -> None:
        """Stop accepting, let in-flight requests finish (bounded), release; idempotent."""
        async with self._close_lock:
            runner, self._runner = self._runner, None
            self._address = None
            if runner is not None:
                await runner.cleanup()

    # -- application -------------------------------------------------------------------

    def _make_app(self) -> web.Application:
        app = access.guarded_app(middlewares=[self._boundary],
                                 client_max_size=MAX_PEER_BODY_BYTES)
        routes: tuple[Route, ...] = (
            ("/health", "health", (("GET", self._health), ("HEAD", self._health))),
            ("/status", "status", (("GET", self._status),)),
            ("/metrics", "metrics", (("GET", self._metrics),)),
            (XCAP_PATH, "xcap", (("GET", self._xcap_get), ("PUT", self._xcap_put))),
            (ADMIN_CONTACTS_PATH, "admin", (("GET", self._admin_contacts),)),
            (ADMIN_PRESENCE_PATH, "admin-presence", (("GET", self._admin_presence),)),
            ("/admin/drain", "admin-drain", (("POST", self._admin_drain),)),
            (MEETING_PATH, "meeting", (("GET", self._meeting_get), ("PUT", self._meeting_put))),
            (MEETING_CONTENT_PATH, "meeting-content", (("PUT", self._meeting_content_put),)),
            *self._ctx.routes)
        add_routes(app, routes)
        return app

    @web.middleware
    async def _boundary(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """The one place where errors become HTTP responses (and requests are counted)."""
        try:
            response = await handler(request)
        except HttpError as exc:
            response = _error(exc.status, exc.message, exc.headers)
        except PeerAuthError as exc:
            log.warning("admin %s %s: peer authentication failed: %s", request.method,
                        request.path, exc)
            response = _error(403, f"peer authentication failed: {exc}")
        except ResourceListsError as exc:
            response = _error(exc.status, exc.message)
        except web.HTTPException as exc:
            response = _from_aiohttp(exc, request)
        except StoreUnavailable as exc:
            self._ctx.metrics.store_error()
            log.warning("admin %s %s: store unavailable: %s", request.method, request.path, exc)
            response = _error(503, "store unavailable, retry later",
                              (("Retry-After", str(STORE_RETRY_AFTER)),))
        except Conflict as exc:
            response = _error(409, f"conflict: {exc}")
        except NotFound as exc:
            response = _error(404, f"not found: {exc}")
        except StoreError:
            self._ctx.metrics.store_error()
            log.exception("admin %s %s: store error", request.method, request.path)
            response = _error(500, "store error")
        except Exception:
            log.exception("admin %s %s: internal error", request.method, request.path)
            response = _error(500, "internal error")
        self._ctx.metrics.http_request(_path_group(request), response.status)
        return response

    async def _authenticate_owner(self, request: web.Request, owner: str) -> None:
        """HTTP Digest (RFC 7616); the authenticated user must be `owner`."""
        aor = await self._authenticated_user(request)
        if aor != owner:
            raise HttpError(403, f"{aor} may not access the data of {owner}")

    async def _authenticated_user(self, request: web.Request) -> str:
        """The user authenticated by HTTP Digest (RFC 7616), else 401/4xx."""
        outcome = await self._auth.authenticate(
            request.headers.get("Authorization"), method=request.method,
            target=request.raw_path)
        if outcome.status == 401:
            raise HttpError(401, outcome.reason, tuple(
                ("WWW-Authenticate", c) for c in self._auth.challenges(stale=outcome.stale)))
        if outcome.status != 200 or outcome.aor is None:
            raise HttpError(outcome.status, outcome.reason)
        return outcome.aor

    # -- handlers ----------------------------------------------------------------------

    def _identity(self) -> dict[str, object]:
        return {"server": self._ctx.server, "role": self._ctx.role, "pool": self._ctx.pool}

    async def _health(self, request: web.Request) -> web.Response:
        try:
            healthy, reason = self._ctx.health()
        except Exception as exc:
            log.exception("health check of %s failed", self._ctx.server)
            healthy, reason = False, f"health check failed: {type(exc).__name__}"
        body = {"healthy": healthy, "reason": reason, **self._identity()}
        return _json(body, 200 if healthy else 503)

    async def _status(self, request: web.Request) -> web.Response:
        return _json({**self._ctx.status(), **self._identity(), **certificate_status()},
                     headers=(("Cache-Control", "no-store"),))

    async def _metrics(self, request: web.Request) -> web.Response:
        return await self._ctx.metrics.handle(request)

    async def _xcap_get(self, request: web.Request) -> web.Response:
        owner = _owner(request)
        await self._authenticate_owner(request, owner)
        contact_list = await self._ctx.store.contacts.get(owner)
        return web.Response(body=render_resource_lists(contact_list), content_type=CONTENT_TYPE,
                            charset="utf-8", headers={"Cache-Control": "no-store"})

    async def _xcap_put(self, request: web.Request) -> web.Response:
        owner = _owner(request)
        _check_length(request)
        await self._authenticate_owner(request, owner)
        if request.content_type not in ACCEPTED_PUT_TYPES:
            raise HttpError(415, f"content type must be {CONTENT_TYPE}, "
                                 f"not {request.content_type or 'none'}")
        contact_list = parse_resource_lists(await _read_body(request), owner)
        if self._ctx.write_check is not None:
            await self._ctx.write_check(owner)
        previous = await self._ctx.store.contacts.get(owner)
        await self._ctx.store.contacts.put(contact_list, now=self._ctx.wall_clock())
        log.info("contact list of %s replaced: %d groups, %d contacts", owner,
                 len(contact_list.groups), len(contact_list.contacts))
        await self._notify_contacts_changed(owner)
        return _json({"owner": owner, "groups": len(contact_list.groups),
                      "contacts": len(contact_list.contacts)},
                     201 if _is_empty(previous) else 200)

    async def _notify_contacts_changed(self, owner: str) -> None:
        # The write is committed: a failing listener must not turn it into an error.
        callback = self._ctx.on_contacts_changed
        if callback is None:
            return
        try:
            await callback(owner)
        except Exception:
            log.exception("on_contacts_changed(%s) failed after the list was stored", owner)

    async def _admin_contacts(self, request: web.Request) -> web.Response:
        owner = _owner(request)
        if await self._ctx.store.users.get(owner) is None:
            raise HttpError(404, f"no such user: {owner}")
        contact_list = await self._ctx.store.contacts.get(owner)
        return _json(_contact_list_json(contact_list), headers=(("Cache-Control", "no-store"),))


    async def _admin_presence(self, request: web.Request) -> web.Response:
        owner = _owner(request)
        if await self._ctx.store.users.get(owner) is None:
            raise HttpError(404, f"no such user: {owner}")
        publications = await self._ctx.store.presence.publications(
            owner, "presence", now=self._ctx.wall_clock())
        return _json({"aor": owner, "publications": [
            {"etag": p.etag, "content_type": p.content_type, "expires_at": p.expires_at,
             "body": p.body.decode("utf-8", errors="replace")} for p in publications]},
            headers=(("Cache-Control", "no-store"),))

    async def _meeting_get(self, request: web.Request) -> web.Response:
        meeting_id = _meeting_id(request)
        user = await self._authenticated_user(request)    # first: existence is no one's
        meeting = await self._ctx.store.meetings.get(meeting_id)   # business (OPS-6)
        if meeting is None:
            raise HttpError(404, "no such meeting")
        if user != meeting.organizer:
            raise HttpError(403, f"{user} may not access the data of {meeting.organizer}")
        contents = await self._ctx.store.meetings.contents(meeting.id)
        return _json({"id": meeting.id, "organizer": meeting.organizer,
                      "subject": meeting.subject, "attendees": list(meeting.attendees),
                      "expires_at": meeting.expires_at, "created_at": meeting.created_at,
                      "content": [{"name": c.name, "sha256": c.sha256, "size": c.size}
                                  for c in contents]}, headers=(("Cache-Control", "no-store"),))

    async def _meeting_put(self, request: web.Request) -> web.Response:
        """Schedule or change a meeting; the authenticated user is its organizer (APP-7)."""
        meeting_id = _meeting_id(request)
        organizer = await self._authenticated_user(request)
        existing = await self._ctx.store.meetings.get(meeting_id)
        if existing is not None and existing.organizer != organizer:
            raise HttpError(403, f"meeting {meeting_id} is organized by {existing.organizer}")
        meeting = _meeting_of(meeting_id, organizer, await _read_body(request),
                              existing.created_at if existing else self._ctx.wall_clock())
        if self._ctx.write_check is not None:
            await self._ctx.write_check(organizer)
        await self._ctx.store.meetings.put(meeting, now=self._ctx.wall_clock())
        return _json({"id": meeting.id, "organizer": organizer}, 200 if existing else 201)

    async def _meeting_content_put(self, request: web.Request) -> web.Response:
        meeting_id, name = _meeting_id(request), request.match_info["name"]
        if not name or len(name) > 200 or "/" in name:
            raise HttpError(400, "content name: 1-200 characters, no '/'")
        organizer = await self._authenticated_user(request)
        meeting = await self._ctx.store.meetings.get(meeting_id)
        if meeting is None:
            raise HttpError(404, "no such meeting")
        if meeting.organizer != organizer:
            raise HttpError(403, f"meeting {meeting_id} is organized by {meeting.organizer}")
        if request.content_length is not None and request.content_length > MAX_CONTENT_BYTES:
            raise HttpError(413, f"content larger than {MAX_CONTENT_BYTES} bytes")
        data = await request.read()
        if len(data) > MAX_CONTENT_BYTES:
            raise HttpError(413, f"content larger than {MAX_CONTENT_BYTES} bytes")
        if self._ctx.write_check is not None:
            await self._ctx.write_check(organizer)
        ref = await self._ctx.store.meetings.attach(meeting_id, name, data,
                                                    now=self._ctx.wall_clock())
        return _json({"name": ref.name, "sha256": ref.sha256, "size": ref.size}, 201)

    async def _admin_drain(self, request: web.Request) -> web.Response:
        if self._ctx.on_drain is None:
            raise HttpError(404, "this server cannot be drained")
        return _json(await self._ctx.on_drain())


def _meeting_id(request: web.Request) -> str:
    meeting_id = request.match_info["id"]
    if not meeting_id or len(meeting_id) > 100 or not all(
            c.isascii() and (c.isalnum() or c in "-_.") for c in meeting_id):
        raise HttpError(400, "meeting id: 1-100 characters of A-Z a-z 0-9 - _ .")
    return meeting_id


def _meeting_of(meeting_id: str, organizer: str, body: bytes, created_at: float) -> Meeting:
    try:
        raw = json.loads(body or b"{}")
    except ValueError:
        raise HttpError(400, "meeting: body is not JSON") from None
    if not isinstance(raw, dict) or set(raw) - {"subject", "attendees", "expires_at"}:
        raise HttpError(400, "meeting: an object with subject, attendees, expires_at only")
    subject, attendees, expires = raw.get("subject", ""), raw.get("attendees", []), \
        raw.get("expires_at")
    if not isinstance(subject, str) or len(subject) > 500:
        raise HttpError(400, "meeting.subject: a string of at most 500 characters")
    if not isinstance(attendees, list) or len(attendees) > 1000 or \
            not all(isinstance(a, str) and len(a) <= 300 for a in attendees):
        raise HttpError(400, "meeting.attendees: a list of at most 1000 URIs")
    if expires is not None and (not isinstance(expires, (int, float)) or
                                isinstance(expires, bool) or not math.isfinite(expires)):
        raise HttpError(400, "meeting.expires_at: epoch seconds or null")
    return Meeting(meeting_id, organizer, subject, created_at,
                   float(expires) if expires is not None else None, tuple(attendees))


def _check_length(request: web.Request) -> None:
    length = request.content_length
    if length is not None and length > MAX_BODY_BYTES:
        raise HttpError(413, f"request body of {length} bytes is larger than "
                             f"{MAX_BODY_BYTES} bytes")


async def _read_body(request: web.Request) -> bytes:
    _check_length(request)
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise HttpError(413, f"request body larger than {MAX_BODY_BYTES} bytes") from None
    if len(body) > MAX_BODY_BYTES:
        raise HttpError(413, f"request body larger than {MAX_BODY_BYTES} bytes")
    return body
