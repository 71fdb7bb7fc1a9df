"""The chat HTTP API (SPEC PC-1) on a real PostgreSQL and a real TCP listener on
127.0.50.x: bearer tokens on every route, the open/closed/secret rules, history paging
and catching up, search limited to readable rooms, idempotent posting, bad input, and
refusing writes while the chat service says so."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from yarl import URL

from tests.chat.conftest import CATEGORY, aor
from trimaran.chat import Category, ChatStore, ChatStoreUnavailable, Message, RoomKind
from trimaran.chat.tokens import TOKEN_LIFETIME, issue_token
from trimaran.roles.chat.api import MAX_PAGE, MAX_REQUEST_BYTES, ChatApi, chat_routes

SECRET = b"chat-api-test-secret"
POOL = "chat.example.com"
HOST = f"127.0.50.{random.randint(2, 254)}"
ADMIN = "admin"


def path(*segments: str, query: dict[str, str] | None = None) -> URL:
    """/chat/v1/<segments>, each percent-encoded (room names may hold '/', '%', '?')."""
    url = URL("/chat/v1/" + "/".join(quote(s, safe="").replace(".", "%2E") for s in segments),
              encoded=True)
    return url.with_query(query) if query else url


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str]


@dataclass
class Harness:
    """A chat API on a TCP port, with its clock, write refusal and store under the
    test's control."""

    chat: ChatStore
    current: ChatStore | None              # None: the server has no store to offer
    client: TestClient[web.Request, web.Application] | None = None
    now: float = 1_700_000_000.0
    refusal: str | None = None
    posted: list[Message] = field(default_factory=list)

    def store(self) -> ChatStore:
        if self.current is None:
            raise ChatStoreUnavailable("no chat store yet")
        return self.current

    def clock(self) -> float:
        self.now += 0.001                  # every reading is a different instant
        return self.now

    async def on_posted(self, message: Message) -> None:
        self.posted.append(message)

    def token(self, user: str, *, pool: str = POOL, secret: bytes = SECRET,
              lifetime: float = TOKEN_LIFETIME) -> str:
        return issue_token(secret, aor(user), pool, self.now + lifetime)

    async def call(self, method: str, url: URL, user: str | None = "alice", *,
                   body: object = None, data: bytes | None = None,
                   headers: dict[str, str] | None = None) -> Reply:
        assert self.client is not None
        sent = dict(headers or {})
        if user is not None:
            sent.setdefault("Authorization", f"Bearer {self.token(user)}")
        if body is not None:
            data = json.dumps(body).encode()
        async with self.client.request(method, url, data=data, headers=sent) as response:
            raw = await response.read()
            decoded = json.loads(raw) if raw else None
            return Reply(response.status, decoded, dict(response.headers))

    async def room(self, name: str, kind: RoomKind, user: str = "alice") -> None:
        reply = await self.call("POST", path("rooms"), user,
                                body={"name": name, "category": CATEGORY, "kind": kind.value})
        assert reply.status == 201, reply

    async def post(self, room: str, text: str, user: str = "alice",
                   msg_id: str | None = None) -> Reply:
        body = {"body": text} if msg_id is None else {"body": text, "id": msg_id}
        return await self.call("POST", path("rooms", room, "messages"), user, body=body)


@pytest.fixture
async def api(chat: ChatStore) -> AsyncIterator[Harness]:
    harness = Harness(chat, chat)
    chat_api = ChatApi(store=harness.store, secret=SECRET, pool=POOL,
                       clock=harness.clock, writable=lambda: harness.refusal,
                       on_posted=harness.on_posted, admins=frozenset({aor(ADMIN)}))
    app = web.Application()
    app.add_routes(chat_routes(chat_api))
    harness.client = TestClient(TestServer(app, host=HOST))
    await harness.client.start_server()
    try:
        yield harness
    finally:
        await harness.client.close()


@pytest.fixture
async def rooms(api: Harness) -> Harness:
    """alice manages open "lobby", closed "design" and secret "board"."""
    await api.room("lobby", RoomKind.OPEN)
    await api.room("design", RoomKind.CLOSED)
    await api.room("board", RoomKind.SECRET)
    return api


def route_urls(harness: Harness) -> list[tuple[str, URL]]:
    """Every (method, URL) the application serves, placeholders filled in."""
    assert harness.client is not None
    app = harness.client.app
    assert app is not None
    found = []
    for route in app.router.routes():
        canonical = route.resource.canonical if route.resource is not None else ""
        filled = canonical.replace("{room}", "lobby").replace("{user}", aor("bob"))
        found.append((route.method, URL(filled)))
    return found


# --- authentication ------------------------------------------------------------------------


async def test_pc1_every_route_answers_401_without_a_valid_token(
        rooms: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    routes = route_urls(rooms)
    assert len(routes) == 20                              # 14 and HEAD of each GET
    expired = rooms.token("alice", lifetime=-1)
    other_pool = rooms.token("alice", pool="chat2.example.com")
    other_secret = rooms.token("alice", secret=b"another deployment")
    bad_headers: list[dict[str, str]] = [
        {}, {"Authorization": ""}, {"Authorization": "Bearer"}, {"Authorization": "Bearer  "},
        {"Authorization": "Basic YWxpY2U6c2VjcmV0"}, {"Authorization": "Bearer v1.garbage.x"},
        {"Authorization": f"Bearer {expired}"}, {"Authorization": f"Bearer {other_pool}"},
        {"Authorization": f"Bearer {other_secret}"},
        {"Authorization": f"Bearer {rooms.token('alice')}x"}]
    for method, url in routes:
        for headers in bad_headers:
            reply = await rooms.call(method, url, None, headers=headers,
                                     body={"body": "hi"} if method != "GET" else None)
            assert reply.status == 401, (method, url, headers)
            assert reply.headers["WWW-Authenticate"].startswith('Bearer realm="trimaran-chat"')
            assert method == "HEAD" or set(reply.body) == {"error"}
    assert (await rooms.call("GET", path("rooms"))).status == 200
    for secret_text in (expired, other_pool, other_secret):
        assert secret_text not in caplog.text


async def test_pc1_a_token_stops_working_when_it_expires(api: Harness) -> None:
    token = api.token("alice", lifetime=60)
    headers = {"Authorization": f"Bearer {token}"}
    assert (await api.call("GET", path("rooms"), None, headers=headers)).status == 200
    api.now += 61
    assert (await api.call("GET", path("rooms"), None, headers=headers)).status == 401


# --- open, closed and secret rooms ----------------------------------------------------------


async def test_pc1_room_list_shows_what_the_user_may_see(rooms: Harness) -> None:
    await rooms.post("lobby", "hello")
    await rooms.post("design", "draft")
    mine = {r["name"]: r for r in (await rooms.call("GET", path("rooms"))).body["rooms"]}
    assert set(mine) == {"board", "design", "lobby"}
    assert mine["lobby"] == {"name": "lobby", "category": CATEGORY, "kind": "open",
                             "description": "", "disabled": False, "role": "manager",
                             "last_seq": 1, "created_at": mine["lobby"]["created_at"]}
    assert mine["design"]["last_seq"] == 1
    theirs = {r["name"]: r for r in (await rooms.call("GET", path("rooms"), "bob")).body["rooms"]}
    assert set(theirs) == {"design", "lobby"}             # secret: members only
    assert theirs["lobby"]["role"] is None and theirs["lobby"]["last_seq"] == 1
    assert theirs["design"]["last_seq"] is None           # closed: not readable by bob
    other = (await rooms.call("GET", path("rooms", query={"category": "other"}))).body
    assert other == {"rooms": []}


async def test_pc1_a_secret_room_is_not_found_on_every_route_by_a_non_member(
        rooms: Harness) -> None:
    await rooms.post("board", "confidential plans")
    requests: list[tuple[str, Callable[[str], URL], object]] = [
        ("GET", lambda r: path("rooms", r), None),
        ("PATCH", lambda r: path("rooms", r), {"description": "mine now"}),
        ("GET", lambda r: path("rooms", r, "messages"), None),
        ("GET", lambda r: path("rooms", r, "messages", query={"after": "0"}), None),
        ("POST", lambda r: path("rooms", r, "messages"), {"body": "hi"}),
        ("PUT", lambda r: path("rooms", r, "members", aor("bob")), {"role": "member"}),
        ("PUT", lambda r: path("rooms", r, "members", aor("bob")), {"role": "manager"}),
        ("DELETE", lambda r: path("rooms", r, "members", aor("bob")), None),
        ("DELETE", lambda r: path("rooms", r, "members", aor("alice")), None),
        ("POST", lambda r: path("rooms", r, "invitations"), {"user": aor("carol")}),
        ("POST", lambda r: path("invitations", r, "accept"), None),
        ("GET", lambda r: path("search", query={"q": "plans", "room": r}), None),
    ]
    for method, url, body in requests:
        secret = await rooms.call(method, url("board"), "bob", body=body)
        missing = await rooms.call(method, url("nowhere"), "bob", body=body)
        assert secret.status == 404, (method, url("board"), secret)
        assert secret.body == missing.body, (method, url("board"))
    search = await rooms.call("GET", path("search", query={"q": "plans"}), "bob")
    assert search.body == {"messages": []}
    assert (await rooms.call("GET", path("rooms", "board"))).body["members"] == [
        {"user": aor("alice"), "role": "manager"}]


async def test_pc1_a_closed_room_is_seen_by_all_and_read_by_members(rooms: Harness) -> None:
    await rooms.post("design", "the draft")
    seen = await rooms.call("GET", path("rooms", "design"), "bob")
    assert seen.status == 200
    assert (seen.body["kind"], seen.body["members"], seen.body["last_seq"]) == \
        ("closed", None, None)
    assert (await rooms.call("GET", path("rooms", "design", "messages"), "bob")).status == 403
    assert (await rooms.post("design", "let me in", "bob")).status == 403
    join = await rooms.call("PUT", path("rooms", "design", "members", aor("bob")), "bob",
                            body={"role": "member"})
    assert join.status == 403
    search = await rooms.call("GET", path("search", query={"q": "draft", "room": "design"}),
                              "bob")
    assert search.status == 403


async def test_pc1_posting_to_an_open_room_joins_it(rooms: Harness) -> None:
    reply = await rooms.post("lobby", "hi all", "bob")
    assert reply.status == 201
    assert reply.body["author"] == aor("bob") and reply.body["seq"] == 1
    room = (await rooms.call("GET", path("rooms", "lobby"), "bob")).body
    assert room["role"] == "member"
    assert {"user": aor("bob"), "role": "member"} in room["members"]


async def test_pc1_an_invitation_lets_a_user_into_a_secret_room(rooms: Harness) -> None:
    await rooms.post("board", "agenda")
    invite = await rooms.call("POST", path("rooms", "board", "invitations"),
                              body={"user": aor("bob")})
    assert invite.status == 201 and invite.body["invited_by"] == aor("alice")
    by_bob = await rooms.call("POST", path("rooms", "lobby", "invitations"), "bob",
                              body={"user": aor("carol")})
    assert by_bob.status == 403
    pending = (await rooms.call("GET", path("invitations"), "bob")).body["invitations"]
    assert [(i["room"], i["user"]) for i in pending] == [("board", aor("bob"))]
    accepted = await rooms.call("POST", path("invitations", "board", "accept"), "bob")
    assert accepted.body == {"room": "board", "user": aor("bob"), "role": "member"}
    assert (await rooms.call("POST", path("invitations", "board", "accept"), "bob")).status == 404
    history = await rooms.call("GET", path("rooms", "board", "messages"), "bob")
    assert [m["body"] for m in history.body["messages"]] == ["agenda"]


async def test_pc1_managers_manage_members_and_anyone_leaves(rooms: Harness) -> None:
    member = path("rooms", "lobby", "members", aor("bob"))
    assert (await rooms.call("PUT", member, "bob", body={})).status == 200   # joins himself
    carol = path("rooms", "lobby", "members", aor("carol"))
    assert (await rooms.call("PUT", carol, "bob", body={"role": "member"})).status == 403
    assert (await rooms.call("PUT", member, "bob", body={"role": "manager"})).status == 403
    promoted = await rooms.call("PUT", member, body={"role": "manager"})
    assert promoted.body == {"room": "lobby", "user": aor("bob"), "role": "manager"}
    assert (await rooms.call("PUT", carol, "bob", body={"role": "member"})).status == 200
    assert (await rooms.call("DELETE", carol, "bob")).status == 204
    assert (await rooms.call("DELETE", carol, "bob")).status == 404
    assert (await rooms.call("DELETE", member, "bob")).status == 204        # leaves
    alice = path("rooms", "lobby", "members", aor("alice"))
    assert (await rooms.call("DELETE", alice, "bob")).status == 403


async def test_pc1_rooms_are_created_and_changed_by_their_managers(rooms: Harness) -> None:
    name = "a/b c%?#{é}"                    # percent-encoded in the path
    await rooms.room(name, RoomKind.OPEN, "bob")
    got = await rooms.call("GET", path("rooms", name))
    assert got.status == 200 and got.body["name"] == name and got.body["role"] is None
    again = await rooms.call("POST", path("rooms"), body={"name": name, "category": CATEGORY,
                                                          "kind": "open"})
    assert again.status == 409
    nowhere = await rooms.call("POST", path("rooms"), body={
        "name": "x", "category": "no-such", "kind": "open"})
    assert nowhere.status == 404 and "no-such" in nowhere.body["error"]
    change = {"description": "closed now", "kind": "closed"}
    assert (await rooms.call("PATCH", path("rooms", name), "alice", body=change)).status == 403
    changed = await rooms.call("PATCH", path("rooms", name), "bob", body=change)
    assert (changed.status, changed.body["kind"], changed.body["description"]) == \
        (200, "closed", "closed now")
    rename = await rooms.call("PATCH", path("rooms", name), "bob", body={"name": "other"})
    assert rename.status == 400 and "name" in rename.body["error"]
    moved = await rooms.call("PATCH", path("rooms", name), "bob", body={"category": "no-such"})
    assert moved.status == 404
    disabled = await rooms.call("PATCH", path("rooms", name), "bob", body={"disabled": True})
    assert disabled.body["disabled"] is True
    assert (await rooms.post(name, "anyone?", "bob")).status == 403


async def test_pc1_only_chat_administrators_create_categories(api: Harness) -> None:
    body = {"name": "projects", "description": "work"}
    refused = await api.call("POST", path("categories"), "alice", body=body)
    assert refused.status == 403
    created = await api.call("POST", path("categories"), ADMIN, body=body)
    assert (created.status, created.body) == (201, body)
    assert (await api.call("POST", path("categories"), ADMIN, body=body)).status == 409
    bad = await api.call("POST", path("categories"), ADMIN, body={"name": " "})
    assert bad.status == 400
    listed = await api.call("GET", path("categories"), "bob")
    assert [c["name"] for c in listed.body["categories"]] == [CATEGORY, "projects"]


# --- history, catching up, search, posting -------------------------------------------------


async def test_pc1_paging_back_through_120_messages_gives_each_once_in_order(
        rooms: Harness) -> None:
    for n in range(1, 121):
        assert (await rooms.post("lobby", f"message {n}")).status == 201
    for limit in (50, 7, MAX_PAGE):
        seen: list[int] = []
        query = {"limit": str(limit)}
        while True:
            page = (await rooms.call("GET", path("rooms", "lobby", "messages", query=query),
                                     "bob")).body
            seen.extend(m["seq"] for m in page["messages"])
            assert all(m["body"] == f"message {m['seq']}" for m in page["messages"])
            if page["next_before"] is None:
                break
            query = {"limit": str(limit), "before": str(page["next_before"])}
        assert seen == list(range(120, 0, -1)), limit
    default = await rooms.call("GET", path("rooms", "lobby", "messages"))
    assert len(default.body["messages"]) == 50 and default.body["next_before"] == 71


async def test_pc1_after_catches_up_oldest_first(rooms: Harness) -> None:
    for n in range(1, 121):
        await rooms.post("lobby", f"message {n}")
    tail = await rooms.call("GET", path("rooms", "lobby", "messages", query={"after": "100"}))
    assert [m["seq"] for m in tail.body["messages"]] == list(range(101, 121))
    assert tail.body["next_after"] is None
    head = await rooms.call("GET", path("rooms", "lobby", "messages",
                                        query={"after": "0", "limit": "30"}))
    assert [m["seq"] for m in head.body["messages"]] == list(range(1, 31))
    assert head.body["next_after"] == 30
    message = head.body["messages"][0]
    assert set(message) == {"room", "seq", "author", "body", "posted_at", "id"}
    assert (message["room"], message["author"]) == ("lobby", aor("alice"))


async def test_pc1_search_finds_words_only_in_rooms_the_user_may_read(rooms: Harness) -> None:
    await rooms.post("lobby", "the harbour opens at noon")
    await rooms.post("design", "the harbour drawings")
    await rooms.post("board", "harbour acquisition")
    def bodies(reply: Reply) -> set[str]:
        return {m["body"] for m in reply.body["messages"]}
    alice = await rooms.call("GET", path("search", query={"q": "harbour"}))
    assert bodies(alice) == {"the harbour opens at noon", "the harbour drawings",
                             "harbour acquisition"}
    bob = await rooms.call("GET", path("search", query={"q": "harbour"}), "bob")
    assert bodies(bob) == {"the harbour opens at noon"}
    one = await rooms.call("GET", path("search", query={"q": "harbour", "room": "design"}))
    assert bodies(one) == {"the harbour drawings"}
    limited = await rooms.call("GET", path("search", query={"q": "harbour", "limit": "1"}))
    assert len(limited.body["messages"]) == 1
    assert (await rooms.call("GET", path("search"))).status == 400


async def test_pc1_posting_with_an_id_is_idempotent(rooms: Harness) -> None:
    first = await rooms.post("lobby", "exactly once", msg_id="client-1")
    again = await rooms.post("lobby", "exactly once", msg_id="client-1")
    assert (first.status, again.status) == (201, 200)
    assert again.body == first.body and first.body["id"] == "client-1"
    assert [m.id for m in rooms.posted] == ["client-1"]          # announced once
    history = await rooms.call("GET", path("rooms", "lobby", "messages"))
    assert [m["id"] for m in history.body["messages"]] == ["client-1"]
    assert (await rooms.post("lobby", "stolen id", "bob", msg_id="client-1")).status == 409
    assert (await rooms.post("design", "moved", msg_id="client-1")).status == 409
    generated = await rooms.post("lobby", "no id")
    assert generated.status == 201 and generated.body["id"] != "client-1"
    assert generated.body["seq"] == 2


# --- bad input, refusals and failures --------------------------------------------------------


async def test_pc1_bodies_over_64_kib_are_refused_with_413(rooms: Harness) -> None:
    big = json.dumps({"body": "x" * MAX_REQUEST_BYTES}).encode()
    reply = await rooms.call("POST", path("rooms", "lobby", "messages"), data=big)
    assert reply.status == 413 and "error" in reply.body

    async def chunks() -> AsyncIterator[bytes]:       # no Content-Length: read and counted
        for _ in range(10):
            yield b" " * 8192

    assert rooms.client is not None
    async with rooms.client.post(path("rooms", "lobby", "messages"), data=chunks(), headers={
            "Authorization": f"Bearer {rooms.token('alice')}"}) as response:
        assert response.status == 413
    assert (await rooms.call("GET", path("rooms", "lobby", "messages"))).body["messages"] == []


@pytest.mark.parametrize(("method", "segments", "data", "query", "names"), [
    ("POST", ("rooms",), b"{not json", None, "JSON"),
    ("POST", ("rooms",), b"[1, 2]", None, "object"),
    ("POST", ("rooms",), b"\xff\xfe", None, "JSON"),
    ("POST", ("rooms",), b"[" * 50_000, None, "JSON"),
    ("POST", ("rooms",), b'{"name": NaN}', None, "JSON"),
    ("POST", ("rooms",), b'{"name": "x", "category": "general"}', None, "kind"),
    ("POST", ("rooms",), b'{"name": "x", "category": "general", "kind": "public"}', None,
     "kind"),
    ("POST", ("rooms",), b'{"name": 3, "category": "general", "kind": "open"}', None, "name"),
    ("POST", ("rooms",), b'{"name": "x", "category": "gen\\u0000", "kind": "open"}', None,
     "category"),
    ("POST", ("rooms",), b'{"name": "x\\ud800", "category": "general", "kind": "open"}', None,
     "room name"),
    ("POST", ("rooms",), b'{"name": "x", "category": "general", "kind": "open", "owner": 1}',
     None, "owner"),
    ("POST", ("rooms", "lobby", "messages"), b'{"body": ""}', None, "message"),
    ("POST", ("rooms", "lobby", "messages"), b'{"body": "a\\u0000b"}', None, "message"),
    ("POST", ("rooms", "lobby", "messages"), b'{"body": "x", "id": "has space"}', None, "id"),
    ("POST", ("rooms", "lobby", "messages"), b'{"body": null}', None, "body"),
    ("PATCH", ("rooms", "lobby"), b'{"disabled": "yes"}', None, "disabled"),
    ("PUT", ("rooms", "lobby", "members", "bob"), b"{}", None, "user address"),
    ("PUT", ("rooms", "lobby", "members", aor("bob")), b'{"role": "owner"}', None, "role"),
    ("GET", ("rooms", "lobby", "messages"), None, {"limit": "201"}, "limit"),
    ("GET", ("rooms", "lobby", "messages"), None, {"limit": "0"}, "limit"),
    ("GET", ("rooms", "lobby", "messages"), None, {"before": "-1"}, "before"),
    ("GET", ("rooms", "lobby", "messages"), None, {"after": "1e3"}, "after"),
    ("GET", ("rooms", "lobby", "messages"), None, {"before": "9" * 30}, "before"),
    ("GET", ("rooms", "lobby", "messages"), None, {"before": "5", "after": "1"}, "after"),
    ("GET", ("rooms", "lobby", "messages"), None, {"since": "5"}, "since"),
    ("GET", ("rooms", "bad\x00name"), None, None, "room name"),
    ("GET", ("search",), None, {"q": "a\x00b"}, "q"),
])
async def test_pc1_bad_input_is_400_naming_the_field(
        rooms: Harness, method: str, segments: tuple[str, ...], data: bytes | None,
        query: dict[str, str] | None, names: str) -> None:
    reply = await rooms.call(method, path(*segments, query=query), data=data)
    assert reply.status == 400, reply
    assert names in reply.body["error"]


async def test_pc1_writes_are_refused_with_503_while_the_service_says_so(
        rooms: Harness) -> None:
    rooms.refusal = "the chat pool is failing over"
    writes = [(m, u) for m, u in route_urls(rooms) if m not in ("GET", "HEAD")]
    assert len(writes) == 8
    for method, url in writes:
        reply = await rooms.call(method, url, body={"body": "hi"})
        assert reply.status == 503, (method, url)
        assert reply.headers["Retry-After"] == "2"
        assert "failing over" in reply.body["error"]
    assert (await rooms.call("GET", path("rooms", "lobby", "messages"))).status == 200
    rooms.refusal = None
    assert (await rooms.post("lobby", "back")).status == 201


async def test_pc1_an_unreachable_store_is_503_with_retry_after(rooms: Harness) -> None:
    rooms.current = ChatStore("postgresql://trimaran@127.0.50.1:9/chat")   # never opened
    for method, url in route_urls(rooms):
        reply = await rooms.call(method, url, body={"body": "hi"}, user=ADMIN)
        if reply.status in (400, 403, 404):           # refused before the store is asked
            continue
        assert (reply.status, reply.headers.get("Retry-After")) == (503, "2"), (method, url)
    reply = await rooms.call("GET", path("rooms"))
    assert reply.status == 503 and reply.body == {"error": "the chat store is unavailable, "
                                                           "retry later"}
    rooms.current = None                               # not even a store to ask
    reply = await rooms.call("GET", path("rooms", "lobby", "messages"))
    assert (reply.status, reply.headers.get("Retry-After")) == (503, "2")


REQUEST_TEXT = "the secret body"


class BrokenStore(ChatStore):
    """A store whose listing fails with a bug quoting what it was given."""

    async def categories(self) -> list[Category]:
        raise RuntimeError(f"bug while handling {REQUEST_TEXT!r}")


async def test_pc1_an_internal_error_is_500_logged_without_the_request(
        rooms: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    rooms.current = BrokenStore("postgresql://trimaran@127.0.50.1:9/chat")
    token = rooms.token("alice")
    reply = await rooms.call("GET", path("categories"), None,
                             headers={"Authorization": f"Bearer {token}"})
    assert (reply.status, reply.body) == (500, {"error": "internal error"})
    assert "RuntimeError" in caplog.text and "categories" in caplog.text
    assert REQUEST_TEXT not in caplog.text and token not in caplog.text


# --- fuzzing ---------------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=8)
#: For each field, values that are often right, so that fuzzed requests also get through.
FIELD_VALUES: dict[str, st.SearchStrategy[object]] = {
    "name": st.text(max_size=20), "description": st.text(max_size=40),
    "category": st.sampled_from([CATEGORY, "nothing"]) | st.text(max_size=8),
    "kind": st.sampled_from(["open", "closed", "secret", "public"]),
    "disabled": st.booleans(), "body": st.text(min_size=1, max_size=40),
    "id": st.from_regex(r"[A-Za-z0-9._:@+=/-]{1,20}", fullmatch=True) | st.text(max_size=8),
    "role": st.sampled_from(["member", "manager", "owner"]),
    "user": st.sampled_from([aor("bob"), aor("carol"), "bob"]) | st.text(max_size=12),
}
NAMES = st.text(st.characters(codec="utf-8"), min_size=1, max_size=12)
KNOWN_ROOMS = st.sampled_from(["lobby", "design", "board"])
ROOMS = st.one_of(KNOWN_ROOMS, KNOWN_ROOMS, NAMES)
#: (method, URL of a room, the body's fields) of every route that takes a body.
WRITES: list[tuple[str, Callable[[str], URL], tuple[str, ...]]] = [
    ("POST", lambda r: path("rooms"), ("name", "category", "kind", "description")),
    ("PATCH", lambda r: path("rooms", r), ("description", "kind", "category", "disabled")),
    ("POST", lambda r: path("rooms", r, "messages"), ("body", "id")),
    ("PUT", lambda r: path("rooms", r, "members", aor("bob")), ("role",)),
    ("DELETE", lambda r: path("rooms", r, "members", aor("bob")), ()),
    ("POST", lambda r: path("rooms", r, "invitations"), ("user",)),
    ("POST", lambda r: path("invitations", r, "accept"), ()),
    ("POST", lambda r: path("categories"), ("name", "description")),
]


@st.composite
def fuzzed_writes(draw: st.DrawFn) -> tuple[str, URL, bytes]:
    """A write request: its fields with nearly right values, or any JSON, or any bytes."""
    method, url, fields = draw(st.sampled_from(WRITES))
    shape = draw(st.sampled_from(["fields", "fields", "fields", "json", "bytes"]))
    if shape == "bytes":
        return method, url(draw(ROOMS)), draw(st.binary(max_size=60))
    if shape == "json":
        return method, url(draw(ROOMS)), json.dumps(draw(JSON_VALUES)).encode()
    good = FIELD_VALUES
    body = {name: draw(st.one_of(good[name], good[name], good[name], JSON_VALUES))
            for name in fields if draw(st.integers(0, 4))}
    if draw(st.integers(0, 9)) == 0:
        body[draw(st.text(max_size=8))] = draw(JSON_VALUES)
    return method, url(draw(ROOMS)), json.dumps(body).encode()


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=fuzzed_writes(), user=st.sampled_from(["alice", "bob", ADMIN]))
async def test_pc1_fuzzed_bodies_never_cause_a_server_error(
        rooms: Harness, request: tuple[str, URL, bytes], user: str) -> None:
    method, url, data = request
    reply = await rooms.call(method, url, user, data=data)
    event(f"{method} {reply.status}")
    assert reply.status in (200, 201, 204, 400, 403, 404, 409), reply
    if reply.status >= 400:
        assert set(reply.body) == {"error"}


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(q=st.text(max_size=40), room=st.none() | ROOMS, limit=st.none() | st.text(max_size=4))
async def test_pc1_fuzzed_searches_never_cause_a_server_error(
        rooms: Harness, q: str, room: str | None, limit: str | None) -> None:
    query = {"q": q, **({"room": room} if room is not None else {}),
             **({"limit": limit} if limit is not None else {})}
    reply = await rooms.call("GET", path("search", query=query), "bob")
    event(f"search {reply.status}")
    assert reply.status in (200, 400, 403, 404), reply

