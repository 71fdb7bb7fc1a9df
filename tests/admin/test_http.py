"""The admin HTTP API against a real server and a real SQLite store (SPEC OPS-3, OPS-5, OPS-6)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests import admincreds
from tests.admin.conftest import (
    ALICE,
    BOB,
    Admin,
    MakeAdmin,
    add_user,
    admin_contacts_path,
    xcap_path,
)
from trimaran.admin.http import MAX_BODY_BYTES, AdminContext, AdminServer
from trimaran.admin.metrics import Metrics
from trimaran.admin.resource_lists import CONTENT_TYPE, parse_resource_lists
from trimaran.sip.digest import Challenge
from trimaran.store.base import (
    Conflict,
    ContactListRepository,
    Store,
    StoreError,
    StoreUnavailable,
)
from trimaran.store.model import ContactEntry, ContactGroup, ContactList

XML = {"Content-Type": CONTENT_TYPE}
DOCUMENT = b"""<?xml version="1.0" encoding="UTF-8"?>
<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists">
  <list name="friends"><display-name>Friends</display-name>
    <entry uri="sip:bob@trimaran.test"><display-name>Bob</display-name></entry>
    <entry uri="sip:carol@trimaran.test"/>
  </list>
  <list name="work"><entry uri="sip:bob@trimaran.test"/></list>
  <list name=""><entry uri="tel:+15550100"><display-name>Pizza</display-name></entry></list>
</resource-lists>
"""
EXPECTED = ContactList(ALICE, (ContactGroup("friends", "Friends"), ContactGroup("work")), (
    ContactEntry("sip:bob@trimaran.test", "Bob", ("friends", "work")),
    ContactEntry("sip:carol@trimaran.test", "", ("friends",)),
    ContactEntry("tel:+15550100", "Pizza", ()),
))


async def error_of(resp: aiohttp.ClientResponse) -> str:
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert set(body) == {"error"}
    return str(body["error"])


# -- health and status (OPS-3) ----------------------------------------------------------


async def test_health_answers_200_when_healthy_and_503_with_the_reason_when_not(
        admin: Admin) -> None:
    async with await admin.request("GET", "/health") as resp:
        assert resp.status == 200
        assert await resp.json() == {"healthy": True, "reason": "serving", "server": "fe1a",
                                     "role": "frontend", "pool": "fe1"}
    admin.health[:] = [False, "store unreachable"]
    async with await admin.request("GET", "/health") as resp:
        assert resp.status == 503
        body = await resp.json()
    assert body["healthy"] is False and body["reason"] == "store unreachable"


async def test_health_never_needs_the_admin_token_and_answers_head(make_admin: MakeAdmin) -> None:
    admin = await make_admin()
    async with await admin.request("HEAD", "/health", anonymous=True) as resp:
        assert resp.status == 200


async def test_health_check_that_raises_is_reported_unhealthy(make_admin: MakeAdmin) -> None:
    def broken() -> tuple[bool, str]:
        raise RuntimeError("boom")

    admin = await make_admin(health=broken)
    async with await admin.request("GET", "/health") as resp:
        assert resp.status == 503
        assert (await resp.json())["reason"] == "health check failed: RuntimeError"


async def test_status_is_the_server_snapshot_plus_its_identity(admin: Admin) -> None:
    async with await admin.request("GET", "/status") as resp:
        assert resp.status == 200
        assert await resp.json() == {"registered": 3, "state": "up", "server": "fe1a",
                                     "role": "frontend", "pool": "fe1"}


async def test_admin_routes_need_an_admin_token_but_health_does_not(admin: Admin) -> None:
    """OPS-6: no credentials 401 with a Bearer challenge, a forged token 401, a read token
    reads, a read token may not drain (403 naming the scope), an operator token may."""
    for path in ("/status", "/metrics", admin_contacts_path(ALICE)):
        async with await admin.request("GET", path, anonymous=True) as resp:
            assert resp.status == 401, path
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
            assert "admin credentials required" in await error_of(resp)
        bad = {"Authorization": "Bearer " + admincreds.token(key=b"another deployment")}
        async with await admin.request("GET", path, headers=bad) as resp:
            assert resp.status == 401
            assert "bad token signature" in await error_of(resp)
        async with await admin.request("GET", path, headers=admincreds.headers("read")) as resp:
            assert resp.status == 200, path
    async with await admin.request("POST", "/admin/drain",
                                   headers=admincreds.headers("read")) as resp:
        assert resp.status == 403
        assert "has scope read" in await error_of(resp) and "needs operator" in \
            await error_of(resp)
    async with await admin.request("GET", "/health", anonymous=True) as resp:
        assert resp.status == 200


# -- XCAP contact lists with HTTP Digest (OPS-6) -----------------------------------------


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
async def test_contact_list_put_then_get_round_trips_with_digest(admin: Admin,
                                                                 algorithm: str) -> None:
    path = xcap_path(ALICE)
    async with await admin.digest("PUT", path, algorithm=algorithm, data=DOCUMENT,
                                  headers=XML) as resp:
        assert resp.status == 201
        assert await resp.json() == {"owner": ALICE, "groups": 2, "contacts": 3}
    async with await admin.digest("GET", path, algorithm=algorithm) as resp:
        assert resp.status == 200
        assert resp.content_type == CONTENT_TYPE
        assert parse_resource_lists(await resp.read(), ALICE) == EXPECTED
    async with await admin.digest("PUT", path, algorithm=algorithm, data=DOCUMENT,
                                  headers=XML) as resp:
        assert resp.status == 200  # replaced, not created
    assert admin.changed == [ALICE, ALICE]


async def test_digest_uri_may_be_percent_encoded_differently_from_the_request(
        admin: Admin) -> None:
    # The client library sends ".../users/sip:alice@trimaran.test/index" on the wire.
    for uri in (xcap_path(ALICE), f"/xcap/resource-lists/users/{ALICE}/index"):
        async with await admin.digest("GET", xcap_path(ALICE), digest_uri=uri) as resp:
            assert resp.status == 200, uri


async def test_challenge_offers_sha256_then_md5_with_qop_auth(admin: Admin) -> None:
    async with await admin.request("GET", xcap_path(ALICE)) as resp:
        assert resp.status == 401
        assert await error_of(resp) == "authentication required"
        challenges = [Challenge.parse(v) for v in resp.headers.getall("WWW-Authenticate")]
    assert [c.algorithm for c in challenges] == ["SHA-256", "MD5"]
    assert all(c.realm == "trimaran.test" and c.qop == ("auth",) for c in challenges)


async def test_wrong_password_gets_401_with_fresh_challenges(admin: Admin) -> None:
    async with await admin.digest("GET", xcap_path(ALICE), password="nope") as resp:
        assert resp.status == 401
        assert await error_of(resp) == "invalid credentials"
        assert len(resp.headers.getall("WWW-Authenticate")) == 2


async def test_unknown_user_looks_like_a_wrong_password(admin: Admin) -> None:
    async with await admin.digest("GET", xcap_path(ALICE), user="mallory",
                                  password="x") as resp:
        assert resp.status == 401
        assert await error_of(resp) == "invalid credentials"


async def test_another_users_list_is_forbidden(admin: Admin) -> None:
    async with await admin.digest("GET", xcap_path(ALICE), user="bob") as resp:
        assert resp.status == 403
        assert BOB in await error_of(resp)
    async with await admin.digest("PUT", xcap_path(ALICE), user="bob", data=DOCUMENT,
                                  headers=XML) as resp:
        assert resp.status == 403
    assert admin.changed == []


async def test_disabled_account_is_forbidden(admin: Admin, store: Store) -> None:
    await add_user(store, "dave", enabled=False)
    dave = "sip:dave@trimaran.test"
    async with await admin.digest("GET", xcap_path(dave), user="dave", password="secret") as resp:
        assert resp.status == 403
        assert await error_of(resp) == "account disabled"


async def test_expired_nonce_is_answered_stale_and_a_fresh_one_works(admin: Admin) -> None:
    path = xcap_path(ALICE)
    chal = await admin.challenge(path)
    async with await admin.digest("GET", path, challenge=chal) as resp:
        assert resp.status == 200
    admin.clock.now += 301  # past the 300 s nonce lifetime
    async with await admin.digest("GET", path, challenge=chal, nc=2) as resp:
        assert resp.status == 401
        assert await error_of(resp) == "nonce expired"
        fresh = [Challenge.parse(v) for v in resp.headers.getall("WWW-Authenticate")]
    assert all(c.stale for c in fresh)
    async with await admin.digest("GET", path, challenge=fresh[0]) as resp:
        assert resp.status == 200


async def test_replayed_nonce_count_is_refused(admin: Admin) -> None:
    path = xcap_path(ALICE)
    chal = await admin.challenge(path)
    async with await admin.digest("GET", path, challenge=chal, nc=1) as resp:
        assert resp.status == 200
    async with await admin.digest("GET", path, challenge=chal, nc=1) as resp:
        assert resp.status == 401


async def test_digest_for_another_path_or_malformed_header_is_400(admin: Admin) -> None:
    async with await admin.digest("GET", xcap_path(ALICE), digest_uri=xcap_path(BOB)) as resp:
        assert resp.status == 400  # credentials computed for bob's path, sent to alice's
        assert await error_of(resp) == "digest uri does not match the request target"
    bad = {"Authorization": 'Digest username="alice", realm='}
    async with await admin.request("GET", xcap_path(ALICE), headers=bad) as resp:
        assert resp.status == 400
        assert "malformed Digest authorization" in await error_of(resp)
    basic = {"Authorization": "Basic YWxpY2U6d29uZGVybGFuZA=="}
    async with await admin.request("GET", xcap_path(ALICE), headers=basic) as resp:
        assert resp.status == 401  # not Digest: challenge it


async def test_authorization_header_is_never_logged(admin: Admin,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with await admin.digest("PUT", xcap_path(ALICE), data=DOCUMENT, headers=XML) as resp:
        assert resp.status == 201
    async with await admin.digest("GET", xcap_path(ALICE), password="nope") as resp:
        assert resp.status == 401
    assert "response=" not in caplog.text and "Digest" not in caplog.text


# -- bad input (OPS-5) -------------------------------------------------------------------


@pytest.mark.parametrize("body, status, words", [
    (b"<resource-lists", 400, "malformed XML"),
    (b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
     b'<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists">&b;</resource-lists>',
     400, "DOCTYPE"),
    (b'<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists"><list name="a"><list/>'
     b"</list></resource-lists>", 409, "nested <list>"),
])
async def test_bad_documents_are_refused_and_nothing_is_stored(
        admin: Admin, store: Store, body: bytes, status: int, words: str) -> None:
    async with await admin.digest("PUT", xcap_path(ALICE), data=body, headers=XML) as resp:
        assert resp.status == status
        assert words in await error_of(resp)
    assert await store.contacts.get(ALICE) == ContactList(ALICE)
    assert admin.changed == []


async def test_oversized_body_is_413(admin: Admin) -> None:
    big = b"<!-- " + b"x" * MAX_BODY_BYTES + b" -->"
    async with await admin.request("PUT", xcap_path(ALICE), data=big, headers=XML) as resp:
        assert resp.status == 413
        assert str(MAX_BODY_BYTES) in await error_of(resp)


async def test_oversized_chunked_body_is_413_after_authentication(admin: Admin) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(MAX_BODY_BYTES // 4096 + 2):
            yield b" " * 4096

    async with await admin.digest("PUT", xcap_path(ALICE), data=chunks(), headers=XML) as resp:
        assert resp.status == 413


async def test_wrong_content_type_is_415(admin: Admin) -> None:
    async with await admin.digest("PUT", xcap_path(ALICE), data=DOCUMENT,
                                  headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == 415
        assert CONTENT_TYPE in await error_of(resp)


async def test_unknown_path_is_404_and_wrong_method_405(admin: Admin) -> None:
    async with await admin.request("GET", "/nope") as resp:
        assert resp.status == 404
        assert await error_of(resp) == "no such path: /nope"
    async with await admin.request("DELETE", xcap_path(ALICE)) as resp:
        assert resp.status == 405
        assert resp.headers["Allow"] == "GET, PUT"
        assert "DELETE" in await error_of(resp)
    async with await admin.request("POST", "/health") as resp:
        assert resp.status == 405


async def test_path_that_is_not_an_aor_is_400(admin: Admin) -> None:
    async with await admin.request("GET", "/xcap/resource-lists/users/alice/index") as resp:
        assert resp.status == 400
        assert "bad AOR in path" in await error_of(resp)


# -- admin read and store failures ----------------------------------------------------------


async def test_admin_reads_any_users_list_as_json(admin: Admin, store: Store) -> None:
    await store.contacts.put(EXPECTED, now=1.0)
    async with await admin.request("GET", admin_contacts_path(ALICE)) as resp:
        assert resp.status == 200
        assert await resp.json() == {
            "owner": ALICE,
            "groups": [{"name": "friends", "display_name": "Friends"},
                       {"name": "work", "display_name": ""}],
            "contacts": [
                {"uri": "sip:bob@trimaran.test", "display_name": "Bob",
                 "groups": ["friends", "work"]},
                {"uri": "sip:carol@trimaran.test", "display_name": "", "groups": ["friends"]},
                {"uri": "tel:+15550100", "display_name": "Pizza", "groups": []},
            ]}
    async with await admin.request("GET", admin_contacts_path("sip:zed@trimaran.test")) as resp:
        assert resp.status == 404
        assert await error_of(resp) == "no such user: sip:zed@trimaran.test"


class BrokenContacts(ContactListRepository):
    """A contact-list repository whose writes (or reads) fail with a chosen error."""

    def __init__(self, real: ContactListRepository, error: StoreError,
                 on_read: bool = False) -> None:
        self._real, self._error, self._on_read = real, error, on_read

    async def get(self, owner: str) -> ContactList:
        if self._on_read:
            raise self._error
        return await self._real.get(owner)

    async def put(self, contact_list: ContactList, *, now: float) -> None:
        raise self._error

    async def watchers_of(self, uri: str) -> list[str]:
        return await self._real.watchers_of(uri)


class StoreView(Store):
    """The real store with its contact-list repository replaced."""

    def __init__(self, real: Store, contacts: ContactListRepository) -> None:
        self.users, self.contacts = real.users, contacts

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def schema_version(self) -> int:
        return 0


@pytest.mark.parametrize("error, on_read, status", [
    (StoreUnavailable("principal down"), False, 503),
    (StoreUnavailable("principal down"), True, 503),
    (Conflict("contact in unknown group"), False, 409),
])
async def test_store_errors_become_409_or_503_with_retry_after(
        make_admin: MakeAdmin, store: Store, error: StoreError, on_read: bool,
        status: int) -> None:
    admin = await make_admin(store=StoreView(store, BrokenContacts(store.contacts, error,
                                                                   on_read)))
    async with await admin.digest("PUT", xcap_path(ALICE), data=DOCUMENT, headers=XML) as resp:
        assert resp.status == status
        message = await error_of(resp)
    if status == 503:
        assert resp.headers["Retry-After"] == "5"
        assert message == "store unavailable, retry later"
        assert admin.metrics.sample("store_errors_total") == 1
    else:
        assert "contact in unknown group" in message
    assert admin.changed == []


async def test_failing_listener_does_not_undo_an_acknowledged_put(make_admin: MakeAdmin,
                                                                  store: Store) -> None:
    async def listener(owner: str) -> None:
        raise RuntimeError("presence is down")

    admin = await make_admin(on_contacts_changed=listener)
    async with await admin.digest("PUT", xcap_path(ALICE), data=DOCUMENT, headers=XML) as resp:
        assert resp.status == 201
    assert await store.contacts.get(ALICE) == EXPECTED


# -- lifecycle -----------------------------------------------------------------------------


async def test_close_is_ordered_and_idempotent_and_frees_the_port(store: Store) -> None:
    server = AdminServer(AdminContext(
        server="fe1a", role="frontend", pool="fe1", realm="trimaran.test", store=store,
        status=dict, health=lambda: (True, "ok"), metrics=Metrics()))
    await server.close()  # before start: nothing to do
    host, port = await server.start("127.0.0.1", 0)
    assert server.address == (host, port)
    with pytest.raises(RuntimeError):
        await server.start("127.0.0.1", 0)
    await asyncio.gather(server.close(), server.close())
    assert server.address is None
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(f"http://{host}:{port}/health")


async def test_start_on_a_port_in_use_raises_and_releases_everything(admin: Admin,
                                                                      store: Store) -> None:
    port = int(admin.base.rsplit(":", 1)[1])
    other = AdminServer(AdminContext(
        server="fe1b", role="frontend", pool="fe1", realm="trimaran.test", store=store,
        status=dict, health=lambda: (True, "ok"), metrics=Metrics()))
    with pytest.raises(OSError):
        await other.start("127.0.0.1", port)
    assert other.address is None
    await other.close()
