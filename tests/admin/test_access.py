"""Admin tokens and the admin API guard (SPEC OPS-6)."""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.request
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from trimaran.admin import access, peerauth

KEY = b"k" * 32
NOW = 1_800_000_000.0


# -- tokens ------------------------------------------------------------------------------------

def test_a_minted_token_verifies_with_its_name_scope_id_and_expiry() -> None:
    token, claims = access.mint(KEY, "alice", "read", days=2, now=NOW)
    assert token.startswith("tma1.")
    assert access.verify_token(KEY, token, now=NOW + 60) == claims
    assert (claims.name, claims.scope, claims.expires_at) == ("alice", "read", NOW + 2 * 86400)
    assert access.read_claims(token) == claims


def test_a_tampered_token_is_refused() -> None:
    token, _ = access.mint(KEY, "alice", "read", now=NOW)
    prefix, payload, tag = token.split(".")
    raw = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    raw["scope"] = "operator"                                       # promote itself
    forged = base64.urlsafe_b64encode(json.dumps(raw).encode()).rstrip(b"=").decode()
    with pytest.raises(access.TokenError, match="bad token signature"):
        access.verify_token(KEY, f"{prefix}.{forged}.{tag}", now=NOW)
    with pytest.raises(access.TokenError, match="bad token signature"):
        access.verify_token(KEY, f"{prefix}.{payload}.{tag[:-2]}AA", now=NOW)
    with pytest.raises(access.TokenError, match="not an admin token"):
        access.verify_token(KEY, "s3cret", now=NOW)


def test_an_expired_token_is_refused() -> None:
    token, _ = access.mint(KEY, "alice", "operator", days=1, now=NOW)
    with pytest.raises(access.TokenError, match="has expired"):
        access.verify_token(KEY, token, now=NOW + 86400)


def test_a_token_of_another_deployment_is_refused() -> None:
    token, _ = access.mint(b"o" * 32, "alice", "operator", now=NOW)
    with pytest.raises(access.TokenError, match="another deployment"):
        access.verify_token(KEY, token, now=NOW)


def test_a_revoked_token_is_refused() -> None:
    token, claims = access.mint(KEY, "alice", "operator", now=NOW)
    with pytest.raises(access.TokenError, match="is revoked"):
        access.verify_token(KEY, token, now=NOW, revoked=frozenset({claims.id}))


@pytest.mark.parametrize(("name", "scope", "days", "problem"), [
    ("", "read", 1, "token name"), ("a b", "read", 1, "token name"),
    ("alice", "admin", 1, "scope"), ("alice", "read", 0, "days"),
    ("alice", "read", 100000, "days")])
def test_bad_token_requests_are_refused_with_the_reason(name: str, scope: str, days: float,
                                                        problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        access.mint(KEY, name, scope, days=days)


def test_scopes_read_for_get_and_head_operator_for_the_rest() -> None:
    assert access.needed_scope("GET", "/status") == "read"
    assert access.needed_scope("HEAD", "/status") == "read"
    assert access.needed_scope("POST", "/failover") == "operator"
    assert access.needed_scope("POST", "/cms/audit") == "read"
    assert access.allows("operator", "operator") and access.allows("operator", "read")
    assert access.allows("read", "read") and not access.allows("read", "operator")


# -- classification ----------------------------------------------------------------------------

@pytest.mark.parametrize(("method", "path", "kind"), [
    ("GET", "/health", "public"), ("HEAD", "/health", "public"),
    ("POST", "/health", "admin"), ("GET", "/healthz", "admin"),
    ("GET", "/status", "admin"), ("GET", "/metrics", "admin"),
    ("GET", "/status/page", "admin"), ("POST", "/failover", "admin"),
    ("GET", "/principal", "admin"), ("GET", "/admin/contacts/x", "admin"),
    ("GET", "/xcap/resource-lists/users/x/index", "user"),
    ("PUT", "/conf/meetings/m1", "user"), ("GET", "/chat/v1/rooms", "user"),
    ("GET", "/cms/snapshot", "peer"), ("POST", "/backup/branch/sba/apply", "peer"),
    ("POST", "/apps/pickup", "peer"), ("GET", "/nowhere", "admin")])
def test_every_route_is_public_user_peer_or_admin(method: str, path: str, kind: str) -> None:
    assert access.classify(method, path) == kind


# -- the middleware ----------------------------------------------------------------------------

@pytest.fixture
async def guarded() -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    """A server with one route of each class behind the guard."""
    access.use_key(KEY)
    access.use_revocations(frozenset)

    async def ok(request: web.Request) -> web.Response:
        who = access.principal(request)
        return web.json_response({"who": who.name if who else None,
                                  "authorized": access.authorized(request)})

    app = access.guarded_app()
    for method, path in (("GET", "/health"), ("GET", "/status"), ("POST", "/failover"),
                         ("GET", "/xcap/x"), ("GET", "/cms/snapshot"),
                         ("GET", "/admin/contacts/{aor}")):
        app.router.add_route(method, path, ok)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.57.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    session = aiohttp.ClientSession()
    try:
        yield f"http://{host}:{port}", session
    finally:
        await session.close()
        await runner.cleanup()
        access.use_key(None)
        access.use_revocations(frozenset)


async def _get(guarded: tuple[str, aiohttp.ClientSession], method: str, path: str,
               headers: dict[str, str] | None = None,
               body: bytes = b"") -> tuple[int, dict[str, object], aiohttp.ClientResponse]:
    base, session = guarded
    async with session.request(method, base + path, headers=headers or {},
                               data=body or None) as resp:
        return resp.status, await resp.json(), resp


async def test_no_credentials_is_401_with_bearer_and_basic_challenges(guarded: tuple) -> None:
    status, body, resp = await _get(guarded, "GET", "/status")
    assert status == 401 and "admin credentials required" in str(body["error"])
    challenges = resp.headers.getall("WWW-Authenticate")
    assert challenges[0] == access.CHALLENGE and challenges[1].startswith("Basic")
    assert (await _get(guarded, "GET", "/health"))[0] == 200
    assert (await _get(guarded, "GET", "/xcap/x"))[0] == 200    # the handler authenticates
    assert (await _get(guarded, "GET", "/cms/snapshot"))[0] == 401


async def test_a_read_token_reads_but_cannot_change_anything(guarded: tuple) -> None:
    token, _ = access.mint(KEY, "watcher", "read")
    auth = {"Authorization": f"Bearer {token}"}
    status, body, _ = await _get(guarded, "GET", "/status", auth)
    assert (status, body["who"]) == (200, "watcher")
    status, body, _ = await _get(guarded, "POST", "/failover", auth)
    assert status == 403
    assert body["error"] == "token 'watcher' has scope read; POST /failover needs operator"


async def test_an_operator_token_may_fail_over_and_a_bad_one_is_401(guarded: tuple) -> None:
    token, _ = access.mint(KEY, "ops", "operator")
    status, body, _ = await _get(guarded, "POST", "/failover",
                                 {"Authorization": f"Bearer {token}"})
    assert (status, body["who"]) == (200, "ops")
    status, _, resp = await _get(guarded, "POST", "/failover",
                                 {"Authorization": f"Bearer {token}x"})
    assert status == 401 and 'error="invalid_token"' in resp.headers["WWW-Authenticate"]


async def test_a_browser_sends_the_token_as_basic_password(guarded: tuple) -> None:
    token, _ = access.mint(KEY, "viewer", "read")
    basic = base64.b64encode(f"anyone:{token}".encode()).decode()
    status, body, _ = await _get(guarded, "GET", "/status", {"Authorization": f"Basic {basic}"})
    assert (status, body["who"]) == (200, "viewer")


async def test_the_admin_key_signature_counts_as_operator(guarded: tuple) -> None:
    body = b'{"to": "mirror"}'
    signed = peerauth.sign(access.ADMIN_KEY_ID, KEY, "POST", "/failover", body)
    status, answer, _ = await _get(guarded, "POST", "/failover", signed, body)
    assert (status, answer["who"]) == (200, "admin")
    other = peerauth.sign(access.ADMIN_KEY_ID, b"x" * 32, "POST", "/failover", body)
    assert (await _get(guarded, "POST", "/failover", other, body))[0] == 401
    replayed = peerauth.sign(access.ADMIN_KEY_ID, KEY, "POST", "/failover", b"{}")
    assert (await _get(guarded, "POST", "/failover", replayed, body))[0] == 401


async def test_the_admin_key_signs_percent_encoded_paths_as_the_server_reads_them(
        guarded: tuple) -> None:
    path = "/admin/contacts/sip%3Aann%40trimaran.test?x=a%20b"
    access.use_token(None)
    signed = access.headers_for("GET", guarded[0] + path)
    status, answer, _ = await _get(guarded, "GET", path, signed)           # aiohttp client
    assert (status, answer["who"]) == (200, "admin")
    request = urllib.request.Request(guarded[0] + path, headers=access.client_headers(
        "GET", path))

    def typed() -> object:                                                # sent as typed
        with urllib.request.urlopen(request, timeout=5) as resp:
            return json.loads(resp.read())["who"]
    assert await asyncio.to_thread(typed) == "admin"


async def test_a_peer_route_leaves_a_pair_signature_to_its_handler(guarded: tuple) -> None:
    signed = peerauth.sign("cms", b"c" * 32, "GET", "/cms/snapshot")
    status, answer, _ = await _get(guarded, "GET", "/cms/snapshot", signed)
    assert (status, answer["authorized"]) == (200, False)       # the handler verifies it
    token, _ = access.mint(KEY, "ops", "read")
    status, answer, _ = await _get(guarded, "GET", "/cms/snapshot",
                                   {"Authorization": f"Bearer {token}"})
    assert (status, answer["authorized"]) == (200, True)


async def test_a_revoked_token_is_refused_by_the_guard(guarded: tuple) -> None:
    token, claims = access.mint(KEY, "gone", "operator")
    access.use_revocations(lambda: frozenset({claims.id}))
    status, body, _ = await _get(guarded, "GET", "/status", {"Authorization": f"Bearer {token}"})
    assert status == 401 and "is revoked" in str(body["error"])
