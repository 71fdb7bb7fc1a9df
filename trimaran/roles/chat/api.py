"""The HTTP API of a Persistent Chat server (SPEC PC-1): room history, search, rooms,
members, invitations and categories for chat clients.

Use: ``app.add_routes(chat_routes(ChatApi(...)))`` on the server's
`aiohttp.web.Application`. The routes bring their own authentication and error
handling (no middleware), so they share an application with other endpoints; they
read at most `MAX_REQUEST_BYTES` of a body themselves, whatever the application's
``client_max_size``. Room names and user addresses go in the path percent-encoded,
``/`` as ``%2F`` and a name of dots only (``.``, ``..``) as ``%2E`` (else the path is
normalised before it is matched).

=================================================  ====================================
``GET /chat/v1/rooms[?category=C]``                the rooms the user may see
``POST /chat/v1/rooms``                            {name, category, kind, description?}
                                                   → 201 room (creator: manager)
``GET /chat/v1/rooms/{room}``                      room (+ members when readable)
``PATCH /chat/v1/rooms/{room}``                    {description?, kind?, category?,
                                                   disabled?} (managers) → room
``GET /chat/v1/rooms/{room}/messages``             ``?before=SEQ&limit=N``: newest first,
                                                   {messages, next_before};
                                                   ``?after=SEQ&limit=N``: oldest first,
                                                   {messages, next_after}
``POST /chat/v1/rooms/{room}/messages``            {body, id?} → 201 message (200: the
                                                   message stored earlier with this id)
``PUT /chat/v1/rooms/{room}/members/{user}``       {role?} (default member) → membership
``DELETE /chat/v1/rooms/{room}/members/{user}``    → 204 (404 when not a member)
``POST /chat/v1/rooms/{room}/invitations``         {user} (managers) → 201 invitation
``GET /chat/v1/invitations``                       the user's pending invitations
``POST /chat/v1/invitations/{room}/accept``        → membership
``GET /chat/v1/search?q=T[&room=R][&limit=N]``     matching messages the user may read
``GET /chat/v1/categories``                        every category
``POST /chat/v1/categories``                       {name, description?} (admins) → 201
=================================================  ====================================

A room is ``{name, category, kind, description, disabled, created_at, role, last_seq}``
(`role`: the user's, or null; `last_seq`: null when the user may not read the room); a
message ``{room, seq, author, body, posted_at, id}``. `limit` is 1 to `MAX_PAGE`
(default `DEFAULT_LIMIT`); a page's `next_before`/`next_after` is the value to ask for
the next page with, null when there is none.

**Authentication.** Every request needs ``Authorization: Bearer <token>``, a token of
`trimaran.chat.tokens` for this pool: 401 with ``WWW-Authenticate`` otherwise, before
anything else is looked at. The header is never logged.

**Rules.** Who may do what is `trimaran.chat.rules`, applied here to the room and the
user's role in it (or by the store for posting and search). A secret room the user is
not in answers exactly like a missing one (404 "no such room") on every route.

**Errors** become responses at one place (`_endpoint`), always JSON ``{"error": ...}``:
a bad body, parameter or field 400 naming it, a body over `MAX_REQUEST_BYTES` 413, a
`ChatRefused` its `status_hint` and reason, `ChatNotFound` 404, `ChatConflict` 409, the
store unavailable or `ChatApi.writable` refusing a write 503 with ``Retry-After``,
anything else a 500 logged with its stack (never the request body).
"""

from __future__ import annotations

import json
import logging
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TypeVar

from aiohttp import web
from multidict import CIMultiDict

from trimaran.chat import rules
from trimaran.chat.model import Category, Invitation, Membership, Message, Role, Room, RoomKind
from trimaran.chat.rules import ChatRefused
from trimaran.chat.store import ChatConflict, ChatNotFound, ChatStore, ChatStoreUnavailable
from trimaran.chat.tokens import verify_token

log = logging.getLogger(__name__)

E = TypeVar("E", bound=StrEnum)

#: The path every route of the API starts with.
PREFIX = "/chat/v1"
#: The largest request body accepted (413 beyond).
MAX_REQUEST_BYTES = 64 * 1024
#: Messages per page when the request does not say, and at most.
DEFAULT_LIMIT = 50
MAX_PAGE = 200
#: The longest search text, in characters.
MAX_QUERY = 1024
#: Retry-After (seconds) of a 503.
RETRY_AFTER = 2

_CHALLENGE = 'Bearer realm="trimaran-chat"'
_MAX_SEQ = 2 ** 63 - 1                       # PostgreSQL bigint
_NO_STORE = (("Cache-Control", "no-store"),)


@dataclass(frozen=True)
class ChatApi:
    """What the chat HTTP API needs from the chat server it runs in."""

    store: Callable[[], ChatStore]               # the current store (swapped on failover)
    secret: bytes                                # the deployment's token secret
    pool: str                                    # this chat pool: tokens must name it
    clock: Callable[[], float] = time.time       # epoch seconds (tokens, posted_at)
    # None, or why writes are refused now (503 + Retry-After for every write).
    writable: Callable[[], str | None] = lambda: None
    # Awaited with each newly stored message; its errors are logged only.
    on_posted: Callable[[Message], Awaitable[None]] | None = None
    # The users (AORs) who may create categories.
    admins: frozenset[str] = field(default_factory=frozenset)


class ApiError(Exception):
    """A response to send instead of the normal one."""

    def __init__(self, status: int, message: str,
                 headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


@dataclass(frozen=True)
class _Call:
    """One authenticated request: the API, the request, the token's user and the store
    this request uses throughout."""

    api: ChatApi
    request: web.Request
    user: str
    store: ChatStore


_Handler = Callable[[_Call], Awaitable[web.Response]]


# --- responses and the error boundary ----------------------------------------------------

def _json(data: object, status: int = 200,
          headers: tuple[tuple[str, str], ...] = ()) -> web.Response:
    return web.Response(text=json.dumps(data), status=status, content_type="application/json",
                        headers=CIMultiDict(_NO_STORE + headers))


def _error(status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> web.Response:
    return _json({"error": message}, status, headers)


def _stack(exc: BaseException) -> str:
    """Where `exc` was raised, without its message (which may quote the request)."""
    return "".join(traceback.format_list(traceback.extract_tb(exc.__traceback__))).rstrip()


def _authenticate(api: ChatApi, request: web.Request) -> str:
    """The user of the request's bearer token; 401 when there is none valid."""
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "a bearer token is required", (("WWW-Authenticate", _CHALLENGE),))
    user = verify_token(api.secret, token.strip(), api.pool, api.clock())
    if user is None:
        raise ApiError(401, "the token is invalid or expired", (
            ("WWW-Authenticate", _CHALLENGE + ', error="invalid_token"'),))
    return user


def _check_writable(api: ChatApi) -> None:
    reason = api.writable()
    if reason is not None:
        raise ApiError(503, f"writes are refused now: {reason}",
                       (("Retry-After", str(RETRY_AFTER)),))


def _endpoint(api: ChatApi, handler: _Handler, *, writes: bool
              ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """`handler` behind authentication (and the write check), errors turned into
    responses."""
    async def serve(request: web.Request) -> web.StreamResponse:
        try:
            user = _authenticate(api, request)
            if writes:
                _check_writable(api)
            return await handler(_Call(api, request, user, api.store()))
        except ApiError as exc:
            return _error(exc.status, exc.message, exc.headers)
        except ChatRefused as exc:
            return _error(exc.status_hint, exc.reason)
        except ChatNotFound as exc:
            return _error(404, str(exc))
        except ChatConflict as exc:
            return _error(409, str(exc))
        except ChatStoreUnavailable as exc:
            log.warning("chat API %s %s: %s", request.method, request.path, exc)
            return _error(503, "the chat store is unavailable, retry later",
                          (("Retry-After", str(RETRY_AFTER)),))
        except web.HTTPException as exc:
            return _error(exc.status, exc.reason)
        except Exception as exc:  # noqa: BLE001 - logged with its stack, not its message
            log.error("chat API %s %s: internal error %s\n%s", request.method, request.path,
                      type(exc).__name__, _stack(exc))
            return _error(500, "internal error")

    return serve


# --- reading requests --------------------------------------------------------------------

class _Body:
    """A request's JSON object; each accessor answers 400 naming a field that is missing
    or of the wrong type."""

    def __init__(self, values: dict[str, object]) -> None:
        self._values = values

    def __contains__(self, key: str) -> bool:
        return key in self._values

    def text(self, key: str, default: str | None = None) -> str:
        value = self._values.get(key, default)
        if key not in self._values and default is None:
            raise ApiError(400, f"{key}: required")
        if not isinstance(value, str):
            raise ApiError(400, f"{key}: must be a string")
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self._values.get(key, default)
        if not isinstance(value, bool):
            raise ApiError(400, f"{key}: must be true or false")
        return value


def _no_constants(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


async def _read(request: web.Request) -> bytes:
    """The request body; 413 beyond `MAX_REQUEST_BYTES` (read no further)."""
    if request.content_length is not None and request.content_length > MAX_REQUEST_BYTES:
        raise ApiError(413, f"the body is larger than {MAX_REQUEST_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.readany():
        size += len(chunk)
        if size > MAX_REQUEST_BYTES:
            raise ApiError(413, f"the body is larger than {MAX_REQUEST_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _body(call: _Call, fields: Collection[str]) -> _Body:
    """The request's JSON object (an empty body is ``{}``), holding only `fields`."""
    raw = await _read(call.request)
    if not raw.strip():
        return _Body({})
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ApiError(400, "the body is not JSON (UTF-8)") from None
    if not isinstance(value, dict):
        raise ApiError(400, "the body must be a JSON object")
    for key in value:
        if key not in fields:
            raise ApiError(400, f"{key[:80]!r}: unknown field (expected "
                                f"{', '.join(sorted(fields))})")
    return _Body(value)


def _query(call: _Call, allowed: Collection[str]) -> Mapping[str, str]:
    """The query parameters, each at most once and all in `allowed`."""
    query = call.request.query
    for key in query:
        if key not in allowed:
            raise ApiError(400, f"{key[:80]!r}: unknown parameter")
        if len(query.getall(key)) > 1:
            raise ApiError(400, f"{key}: given more than once")
    return query


def _number(query: Mapping[str, str], key: str, low: int, high: int) -> int | None:
    text = query.get(key)
    if text is None:
        return None
    if not (text.isascii() and text.isdigit() and len(text) <= 19) or not \
            low <= int(text) <= high:
        raise ApiError(400, f"{key}: a whole number from {low} to {high}")
    return int(text)


def _enum(kind: type[E], value: str, key: str) -> E:
    try:
        return kind(value)
    except ValueError:
        raise ApiError(400, f"{key}: one of {', '.join(k.value for k in kind)}") from None


def _checked(refusal: ChatRefused | None) -> None:
    if refusal is not None:
        raise refusal


def _room_name(call: _Call, key: str = "room") -> str:
    """The room named by the path (400 when no room could have that name)."""
    name = call.request.match_info[key]
    _checked(rules.check_name(name))
    return name


def _category_name(name: str) -> str:
    _checked(rules.check_name(name, "category name"))
    return name


def _aor(value: str) -> str:
    _checked(rules.check_aor(value))
    return value


async def _room_and_role(call: _Call, name: str) -> tuple[Room | None, Role | None]:
    """The room (None when there is none) and the user's role in it: what rules take."""
    try:
        room = await call.store.room(name)
    except ChatNotFound:
        return None, None
    return room, await call.store.role(name, call.user)


def _visible_room(room: Room | None, role: Role | None) -> Room:
    """`room` when the user may know it exists, else the 404 of a missing room."""
    if room is None or not rules.visible(room, role):
        raise ChatRefused(404, rules.NO_SUCH_ROOM)
    return room


# --- JSON of the records -----------------------------------------------------------------

def _room_json(room: Room, role: Role | None, last_seq: int | None) -> dict[str, object]:
    return {"name": room.name, "category": room.category, "kind": room.kind.value,
            "description": room.description, "disabled": room.disabled,
            "created_at": room.created_at, "role": None if role is None else role.value,
            "last_seq": last_seq}


def _message_json(message: Message) -> dict[str, object]:
    return {"room": message.room, "seq": message.seq, "author": message.author,
            "body": message.body, "posted_at": message.posted_at, "id": message.id}


def _membership_json(membership: Membership) -> dict[str, object]:
    return {"room": membership.room, "user": membership.user, "role": membership.role.value}


def _invitation_json(invitation: Invitation) -> dict[str, object]:
    return {"room": invitation.room, "user": invitation.user,
            "invited_by": invitation.invited_by, "at": invitation.at}


# --- rooms -------------------------------------------------------------------------------

async def _list_rooms(call: _Call) -> web.Response:
    category = _query(call, ("category",)).get("category")
    rooms = await call.store.rooms(None if category is None else _category_name(category))
    roles = {m.room: m.role for m in await call.store.memberships(call.user)}
    shown = [r for r in rooms if rules.visible(r, roles.get(r.name))]
    readable = [r.name for r in shown if rules.may_read(r, roles.get(r.name)) is None]
    last_seqs = await call.store.last_seqs(readable) if readable else {}
    return _json({"rooms": [_room_json(r, roles.get(r.name), last_seqs.get(r.name))
                            for r in shown]})


async def _create_room(call: _Call) -> web.Response:
    body = await _body(call, ("name", "category", "kind", "description"))
    name, category = body.text("name"), _category_name(body.text("category"))
    kind = _enum(RoomKind, body.text("kind"), "kind")
    room = Room(name, category, kind, body.text("description", ""),
                created_at=call.api.clock())
    created = await call.store.create_room(room, call.user)
    log.info("chat room %r (%s) created by %s", created.name, created.kind.value, call.user)
    return _json(_room_json(created, Role.MANAGER, 0), 201)


async def _get_room(call: _Call) -> web.Response:
    _query(call, ())
    room, role = await _room_and_role(call, _room_name(call))
    room = _visible_room(room, role)
    if rules.may_read(room, role) is not None:
        return _json({**_room_json(room, role, None), "members": None})
    members = await call.store.members(room.name)
    last_seq = await call.store.last_seq(room.name)
    return _json({**_room_json(room, role, last_seq),
                  "members": [{"user": m.user, "role": m.role.value} for m in members]})


async def _change_room(call: _Call) -> web.Response:
    name = _room_name(call)
    body = await _body(call, ("description", "kind", "category", "disabled"))
    room, role = await _room_and_role(call, name)
    _checked(rules.may_change_room(room, role))
    assert room is not None
    new = replace(room, description=body.text("description", room.description),
                  kind=_enum(RoomKind, body.text("kind", room.kind.value), "kind"),
                  category=_category_name(body.text("category", room.category)),
                  disabled=body.flag("disabled", room.disabled))
    _checked(rules.may_change_room(room, role, new))
    if new != room:
        new = await call.store.update_room(new)
        log.info("chat room %r changed by %s", name, call.user)
    return _json(_room_json(new, role, await call.store.last_seq(name)))


# --- messages ----------------------------------------------------------------------------

async def _messages(call: _Call) -> web.Response:
    query = _query(call, ("before", "after", "limit"))
    before = _number(query, "before", 0, _MAX_SEQ)
    after = _number(query, "after", 0, _MAX_SEQ)
    limit = _number(query, "limit", 1, MAX_PAGE) or DEFAULT_LIMIT
    if before is not None and after is not None:
        raise ApiError(400, "before, after: give one of them, not both")
    room, role = await _room_and_role(call, _room_name(call))
    _checked(rules.may_read(room, role))
    assert room is not None
    if after is not None:
        page = await call.store.after(room.name, after, limit)
        return _json({"messages": [_message_json(m) for m in page],
                      "next_after": page[-1].seq if len(page) == limit else None})
    page = await call.store.history(room.name, before, limit)
    more = len(page) == limit and page[-1].seq > 1
    return _json({"messages": [_message_json(m) for m in page],
                  "next_before": page[-1].seq if more else None})


async def _post(call: _Call) -> web.Response:
    name = _room_name(call)
    body = await _body(call, ("body", "id"))
    text = body.text("body")
    message_id = body.text("id") if "id" in body else f"srv-{uuid.uuid4().hex}"
    message = Message(name, 0, call.user, text, call.api.clock(), message_id)
    stored = await call.store.post(message)
    # The store answers a known id with the message stored then: an earlier post of it.
    created = (stored.posted_at, stored.body) == (message.posted_at, message.body)
    if created and call.api.on_posted is not None:
        try:
            await call.api.on_posted(stored)
        except Exception as exc:  # noqa: BLE001 - the post is committed: log, do not fail it
            log.error("on_posted(%r #%d) failed: %s\n%s", stored.room, stored.seq,
                      type(exc).__name__, _stack(exc))
    return _json(_message_json(stored), 201 if created else 200)


# --- members and invitations -------------------------------------------------------------

async def _put_member(call: _Call) -> web.Response:
    name, user = _room_name(call), _aor(call.request.match_info["user"])
    body = await _body(call, ("role",))
    membership = Membership(name, user, _enum(Role, body.text("role", "member"), "role"))
    room, role = await _room_and_role(call, name)
    _checked(rules.may_add_member(room, role, call.user, membership))
    await call.store.add_member(membership)
    log.info("chat room %r: %s is %s (by %s)", name, user, membership.role.value, call.user)
    return _json(_membership_json(membership))


async def _delete_member(call: _Call) -> web.Response:
    name, user = _room_name(call), _aor(call.request.match_info["user"])
    room, role = await _room_and_role(call, name)
    _checked(rules.may_remove_member(room, role, call.user, user))
    if not await call.store.remove_member(name, user):
        raise ApiError(404, f"{user} is not a member of the room")
    log.info("chat room %r: %s removed (by %s)", name, user, call.user)
    return web.Response(status=204, headers=CIMultiDict(_NO_STORE))


async def _invite(call: _Call) -> web.Response:
    name = _room_name(call)
    invitee = _aor((await _body(call, ("user",))).text("user"))
    room, role = await _room_and_role(call, name)
    _checked(rules.may_invite(room, role, invitee))
    invitation = Invitation(name, invitee, call.user, call.api.clock())
    await call.store.invite(invitation)
    return _json(_invitation_json(invitation), 201)


async def _invitations(call: _Call) -> web.Response:
    _query(call, ())
    pending = await call.store.invitations(user=call.user)
    return _json({"invitations": [_invitation_json(i) for i in pending]})


async def _accept(call: _Call) -> web.Response:
    name = _room_name(call)
    try:
        membership = await call.store.accept_invitation(name, call.user)
    except ChatNotFound:
        raise ApiError(404, "no invitation to this room") from None
    return _json(_membership_json(membership))


# --- search and categories ---------------------------------------------------------------

async def _search(call: _Call) -> web.Response:
    query = _query(call, ("q", "room", "limit"))
    text = query.get("q")
    if text is None:
        raise ApiError(400, "q: required")
    if len(text) > MAX_QUERY or any(c == "\x00" or "\ud800" <= c <= "\udfff" for c in text):
        raise ApiError(400, f"q: at most {MAX_QUERY} characters, no NUL")
    room = query.get("room")
    if room is not None:
        _checked(rules.check_name(room))
    limit = _number(query, "limit", 1, MAX_PAGE) or DEFAULT_LIMIT
    found = await call.store.search(room, text, call.user, limit)
    return _json({"messages": [_message_json(m) for m in found]})


async def _categories(call: _Call) -> web.Response:
    _query(call, ())
    return _json({"categories": [{"name": c.name, "description": c.description}
                                 for c in await call.store.categories()]})


async def _create_category(call: _Call) -> web.Response:
    if call.user not in call.api.admins:
        raise ApiError(403, "only chat administrators may create categories")
    body = await _body(call, ("name", "description"))
    category = Category(body.text("name"), body.text("description", ""))
    await call.store.add_category(category)
    log.info("chat category %r created by %s", category.name, call.user)
    return _json({"name": category.name, "description": category.description}, 201)


# --- routes ------------------------------------------------------------------------------

# Any segment, braces included (aiohttp's default pattern refuses "{" and "}").
_ROOM_PARAM = "{room:[^/]+}"
_ROOM = f"{PREFIX}/rooms/{_ROOM_PARAM}"

#: (method, path, route name, handler, whether it writes)
_ROUTES: tuple[tuple[str, str, str, _Handler, bool], ...] = (
    ("GET", f"{PREFIX}/rooms", "chat-rooms", _list_rooms, False),
    ("POST", f"{PREFIX}/rooms", "chat-rooms", _create_room, True),
    ("GET", _ROOM, "chat-room", _get_room, False),
    ("PATCH", _ROOM, "chat-room", _change_room, True),
    ("GET", f"{_ROOM}/messages", "chat-messages", _messages, False),
    ("POST", f"{_ROOM}/messages", "chat-messages", _post, True),
    ("PUT", f"{_ROOM}/members/{{user:[^/]+}}", "chat-member", _put_member, True),
    ("DELETE", f"{_ROOM}/members/{{user:[^/]+}}", "chat-member", _delete_member, True),
    ("POST", f"{_ROOM}/invitations", "chat-room-invitations", _invite, True),
    ("GET", f"{PREFIX}/invitations", "chat-invitations", _invitations, False),
    ("POST", f"{PREFIX}/invitations/{_ROOM_PARAM}/accept", "chat-accept", _accept, True),
    ("GET", f"{PREFIX}/search", "chat-search", _search, False),
    ("GET", f"{PREFIX}/categories", "chat-categories", _categories, False),
    ("POST", f"{PREFIX}/categories", "chat-categories", _create_category, True),
)


def chat_routes(api: ChatApi) -> list[web.RouteDef]:
    """The routes of the chat API served with `api`, for ``app.add_routes``."""
    return [web.route(method, path, _endpoint(api, handler, writes=writes), name=name)
            for method, path, name, handler, writes in _ROUTES]
