"""Requests for users another pool serves (`roles.frontend.interpool`; SPEC FE-4 across
pools, DR-5, DR-8): the sender's identity asserted between pools, which pool serves a
user, the way there, and the header never leaving a Front End unless we put it there.

Pools: se1 (dc1) and se2 (dc2) are paired Standard Edition pools; ee3 (dc3) is an
Enterprise Edition pool of three servers, paired with ee4 (dc4). No socket is opened
except by the `Proxy.prepare` tests (127.0.23.0/24).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import pytest

from trimaran.cms.directory import Directory
from trimaran.cms.failover import PoolFailover, document_key, plan_failover
from trimaran.cms.replica import Snapshot
from trimaran.net.endpoint import IncomingRequest, SipEndpoint
from trimaran.net.transport import Address
from trimaran.roles.frontend.homing import Homing
from trimaran.roles.frontend.interpool import InterPool
from trimaran.roles.frontend.proxy import ASSERTED, Proxy, Target
from trimaran.sip.headers import Headers, NameAddr
from trimaran.sip.message import Request
from trimaran.sip.uri import URI
from trimaran.store.base import Store, StoreUnavailable
from trimaran.store.model import CmsDocument, Credentials, User
from trimaran.store.sqlite import SqliteStore
from trimaran.topology.loader import parse_topology
from trimaran.topology.model import Topology

DOMAIN = "trimaran.test"
KEY = b"interpool-test-deployment-key-01"
ALICE, BOB, CAROL = (f"sip:{n}@{DOMAIN}" for n in ("alice", "bob", "carol"))
TOPOLOGY = f"""
name: interpool-unit
sip_domain: {DOMAIN}
sites: [{{name: dc1}}, {{name: dc2}}, {{name: dc3}}, {{name: dc4}}]
pools:
  - name: se1
    site: dc1
    role: frontend
    edition: standard
    backup_pool: se2
    servers: [{{name: se1, address: 127.0.23.101, sip_port: 5060, admin_port: 8080}}]
  - name: se2
    site: dc2
    role: frontend
    edition: standard
    backup_pool: se1
    servers: [{{name: se2, address: 127.0.23.102, sip_port: 5060, admin_port: 8080}}]
  - name: ee3
    site: dc3
    role: frontend
    edition: enterprise
    backup_pool: ee4
    backend: {{principal: {{address: 127.0.23.130, port: 5432}}}}
    servers:
      - {{name: ee3c, address: 127.0.23.133, sip_port: 5070, admin_port: 8083}}
      - {{name: ee3a, address: 127.0.23.131, sip_port: 5071, admin_port: 8081}}
      - {{name: ee3b, address: 127.0.23.132, sip_port: 5072, admin_port: 8082}}
  - name: ee4
    site: dc4
    role: frontend
    edition: enterprise
    backup_pool: ee3
    backend: {{principal: {{address: 127.0.23.140, port: 5432}}}}
    servers: [{{name: ee4a, address: 127.0.23.141, sip_port: 5060, admin_port: 8080}}]
"""
SE1, SE2 = PoolFailover("se1", backup="se2"), PoolFailover("se2", backup="se1")
EE3, EE4 = PoolFailover("ee3", backup="ee4"), PoolFailover("ee4", backup="ee3")


@pytest.fixture(scope="module")
def topology() -> Topology:
    return parse_topology(TOPOLOGY)


def message(*, call_id: str = "c1@127.0.23.1", cseq: int = 7, method: str = "MESSAGE",
            to: str = BOB, sender: str = ALICE) -> Request:
    headers = Headers()
    headers.add("Via", "SIP/2.0/TCP 127.0.23.1:5060;branch=z9hG4bK-interpool-1")
    headers.add("Max-Forwards", "70")
    headers.add("From", f"<{sender}>;tag=from-1")
    headers.add("To", f"<{to}>")
    headers.add("Call-ID", call_id)
    headers.add("CSeq", f"{cseq} {method}")
    return Request(method, URI.parse(to), headers, b"hello")


def carrying(request: Request, value: str) -> Request:
    """`request` with an X-Trimaran-Asserted header of `value`."""
    request.headers.add(ASSERTED, value)
    return request


def snapshot(*records: PoolFailover) -> Snapshot:
    docs = {document_key(r.pool): CmsDocument(document_key(r.pool), r.to_json(), i + 1, 0.0)
            for i, r in enumerate(records)}
    return Snapshot(len(docs), None, docs, 0.0)


def disaster(record: PoolFailover, partner: PoolFailover) -> PoolFailover:
    return plan_failover(record, partner, cms_master=partner.pool, disaster=True, now=1.0)


class FakeDirectory:
    """The CMS homing lookup of `trimaran.cms.directory.Directory`, from a table."""

    def __init__(self, users: dict[str, str]) -> None:
        self._users = users                  # AOR -> home pool
        self.homes: dict[str, str] = {}
        self.asked: list[tuple[str, str]] = []

    async def credentials(self, username: str, realm: str) -> Credentials | None:
        self.asked.append((username, realm))
        aor = f"sip:{username}@{realm}"
        if aor not in self._users:
            return None
        self.homes[aor] = self._users[aor]
        return Credentials(aor, username, realm, "0" * 32, "0" * 64)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    """se2's store: its own user bob and, copied by the Backup Service, se1's alice."""
    async with SqliteStore(tmp_path / "se2.sqlite", pool="se2") as opened:
        for aor, pool in ((ALICE, "se1"), (BOB, "se2")):
            name = URI.parse(aor).user or ""
            await opened.users.add(User(aor, pool),
                                   Credentials(aor, name, DOMAIN, "0" * 32, "0" * 64), now=1)
        yield opened


def on_pool(pool: str, topology: Topology, store: SqliteStore,
            directory: FakeDirectory | None = None,
            *records: PoolFailover) -> tuple[InterPool, Homing]:
    homing = Homing(pool, store, topology)
    homing.update(snapshot(*records))
    return InterPool(pool, KEY, topology, homing, cast(Directory, directory)), homing


# -- the sender's identity -------------------------------------------------------------

async def test_an_assertion_made_by_one_pool_verifies_on_another(
        topology: Topology, store: SqliteStore) -> None:
    se1, _ = on_pool("se1", topology, store)
    se2, _ = on_pool("se2", topology, store)
    request = message()
    value = se1.assertion(ALICE, request)
    assert value.startswith(f"<{ALICE}>;token=")
    assert se2.asserted(carrying(request, value)) == ALICE
    assert se1.asserted(carrying(message(method="INVITE"),
                                 se1.assertion(ALICE, message(method="INVITE")))) == ALICE


async def test_a_request_without_an_assertion_asserts_nobody(
        topology: Topology, store: SqliteStore) -> None:
    se2, _ = on_pool("se2", topology, store)
    assert se2.asserted(message()) is None


async def test_a_forged_token_or_another_deployments_key_asserts_nobody(
        topology: Topology, store: SqliteStore) -> None:
    se2, homing = on_pool("se2", topology, store)
    request = message()
    genuine = se2.assertion(ALICE, request)
    token = genuine.split("token=", 1)[1]
    forged = token[:-1] + ("0" if token[-1] != "0" else "1")
    assert se2.asserted(carrying(message(), f"<{ALICE}>;token={forged}")) is None
    assert se2.asserted(carrying(message(), f"<{ALICE}>;token={token[:16]}")) is None
    other = InterPool("se1", b"another-deployment-key-000000000", topology, homing)
    assert se2.asserted(carrying(message(), other.assertion(ALICE, message()))) is None


@pytest.mark.parametrize(("field", "changed"), [
    ("call_id", message(call_id="c2@127.0.23.1")),
    ("cseq", message(cseq=8)),
    ("method", message(method="INVITE")),
])
async def test_an_assertion_is_bound_to_its_request(
        topology: Topology, store: SqliteStore, field: str, changed: Request) -> None:
    """A token seen on one request cannot be replayed on another Call-ID, CSeq or method."""
    se2, _ = on_pool("se2", topology, store)
    value = se2.assertion(ALICE, message())
    assert se2.asserted(carrying(changed, value)) is None, field


async def test_an_assertion_is_bound_to_its_sender(
        topology: Topology, store: SqliteStore) -> None:
    se2, _ = on_pool("se2", topology, store)
    token = se2.assertion(ALICE, message()).split("token=", 1)[1]
    assert se2.asserted(carrying(message(), f"<{CAROL}>;token={token}")) is None
    # the same AOR written differently is the same sender (canonical AOR)
    assert se2.asserted(carrying(message(), f'"Alice" <sip:alice@TRIMARAN.test>;token={token}'
                                 )) == ALICE


@pytest.mark.parametrize("value", [
    "", "   ", "garbage", f"<{ALICE}", f"<{ALICE}>", f"<{ALICE}>;token", f"<{ALICE}>;token=",
    f"<{ALICE};token=00112233445566778899aabbccddeeff>", "<>;token=00",
    "<mailto:alice@trimaran.test>;token=00", f'<{ALICE}>;token="\u00e9t\u00e9"',
    f"<{ALICE}>;token=" + "f" * 5000,
])
async def test_a_malformed_assertion_asserts_nobody(
        topology: Topology, store: SqliteStore, value: str) -> None:
    se2, _ = on_pool("se2", topology, store)
    assert se2.asserted(carrying(message(), value)) is None


# -- which pool serves the user ----------------------------------------------------------

async def test_a_user_served_here_stays_here(topology: Topology, store: SqliteStore) -> None:
    se2, _ = on_pool("se2", topology, store, None, SE1, SE2)
    assert await se2.serving_pool(BOB, URI.parse(BOB)) is None


async def test_a_user_of_the_paired_pool_is_sent_to_it(
        topology: Topology, store: SqliteStore) -> None:
    se2, _ = on_pool("se2", topology, store, None, SE1, SE2)
    assert await se2.serving_pool(ALICE, URI.parse(ALICE)) == "se1"


async def test_a_failed_over_pools_users_are_sent_to_its_backup_pool(
        topology: Topology, store: SqliteStore) -> None:
    """DR-5/DR-7: se1 came back fenced after a failover to se2: its own user goes to se2;
    se2 serves that user itself."""
    se1, _ = on_pool("se1", topology, store, None, disaster(SE1, SE2), SE2)
    assert await se1.serving_pool(ALICE, URI.parse(ALICE)) == "se2"
    se2, _ = on_pool("se2", topology, store, None, disaster(SE1, SE2), SE2)
    assert await se2.serving_pool(ALICE, URI.parse(ALICE)) is None


async def test_the_backup_registrar_serves_a_down_home_pools_users_and_tries_a_suspect_one(
        topology: Topology, store: SqliteStore) -> None:
    """DR-8: se2 holds se1's users while se1 is down by its own detection (resiliency
    mode); while se1 is only suspect, the request still goes to se1."""
    se2, homing = on_pool("se2", topology, store, None, SE1, SE2)
    homing.liveness["se1"] = "down"
    assert await se2.serving_pool(ALICE, URI.parse(ALICE)) is None
    homing.liveness["se1"] = "suspect"
    assert await se2.serving_pool(ALICE, URI.parse(ALICE)) == "se1"


class AwayUsers:
    async def get(self, aor: str) -> User | None:
        raise StoreUnavailable("back end unreachable")


class AwayStore:
    """A store whose Back End is unreachable (FE-7)."""

    users = AwayUsers()


async def test_while_the_back_end_is_away_a_user_the_server_routes_to_stays_here(
        topology: Topology) -> None:
    """FE-7: a user the binding cache knows but whose home pool was never looked up is
    routed here (as before other pools were asked), not refused for want of the store."""
    homing = Homing("se2", cast(Store, AwayStore()), topology)
    homing.update(snapshot(SE1, SE2))
    se2 = InterPool("se2", KEY, topology, homing)
    assert await se2.serving_pool(BOB, URI.parse(BOB)) is None


async def test_a_user_unknown_here_is_looked_up_in_the_cms_directory(
        topology: Topology, store: SqliteStore) -> None:
    directory = FakeDirectory({f"sip:dave@{DOMAIN}": "ee3", f"sip:erin@{DOMAIN}": "se2"})
    se2, _ = on_pool("se2", topology, store, directory, SE1, SE2, EE3, EE4)
    dave = URI.parse(f"sip:dave@{DOMAIN}")
    assert await se2.serving_pool(None, dave) == "ee3"
    assert directory.asked == [("dave", DOMAIN)]
    # ee3 failed over to ee4: its users are ee4's now
    se2, _ = on_pool("se2", topology, store, directory, SE1, SE2, disaster(EE3, EE4), EE4)
    assert await se2.serving_pool(None, dave) == "ee4"
    # a user the directory homes here, or nobody knows, stays here (404 from this pool)
    assert await se2.serving_pool(None, URI.parse(f"sip:erin@{DOMAIN}")) is None
    assert await se2.serving_pool(None, URI.parse(f"sip:nobody@{DOMAIN}")) is None


async def test_without_a_directory_a_user_unknown_here_stays_here(
        topology: Topology, store: SqliteStore) -> None:
    se2, _ = on_pool("se2", topology, store, None, SE1, SE2)
    assert await se2.serving_pool(None, URI.parse(f"sip:dave@{DOMAIN}")) is None


# -- the way there ---------------------------------------------------------------------------

async def test_targets_are_the_pools_servers_in_order_each_asserting_the_sender(
        topology: Topology, store: SqliteStore) -> None:
    se2, _ = on_pool("se2", topology, store)
    ee3, _ = on_pool("ee3", topology, store)
    request = message(to=f"sip:dave@{DOMAIN}", sender=BOB)
    targets = se2.targets("ee3", request.uri, BOB, request)
    assert [t.via for t in targets] == [Address("tcp", "127.0.23.133", 5070),
                                        Address("tcp", "127.0.23.131", 5071),
                                        Address("tcp", "127.0.23.132", 5072)]
    assert [t.route for t in targets] == [
        "<sip:127.0.23.133:5070;transport=tcp;lr>", "<sip:127.0.23.131:5071;transport=tcp;lr>",
        "<sip:127.0.23.132:5072;transport=tcp;lr>"]
    assert len({t.key for t in targets}) == 3          # each server is a distinct branch
    for target in targets:
        assert target.uri == request.uri                # the Request-URI is the user's
        (name, value), = target.headers
        assert name == ASSERTED
        assert ee3.asserted(carrying(message(to=f"sip:dave@{DOMAIN}", sender=BOB),
                                     value)) == BOB


@pytest.fixture
async def proxy() -> AsyncIterator[Proxy]:
    async def ignore(_: IncomingRequest) -> None:
        return None
    endpoint = SipEndpoint(on_request=ignore)  # type: ignore[arg-type]
    await endpoint.listen("127.0.23.110")
    yield Proxy(endpoint, b"0123456789abcdef0123456789abcdef")
    await endpoint.close(drain_timeout=0.1)


async def test_a_forwarded_request_carries_only_the_assertion_its_target_was_given(
        topology: Topology, store: SqliteStore, proxy: Proxy) -> None:
    """A client's own X-Trimaran-Asserted (here: claiming carol) never leaves the server;
    a target of another pool gets ours, a local target none."""
    se2, _ = on_pool("se2", topology, store)
    incoming = carrying(carrying(message(), f"<{CAROL}>;token=00112233445566778899aabbccddeeff"),
                        f"<{CAROL}>;token=ffeeddccbbaa99887766554433221100")
    incoming.headers.add("Proxy-Authorization", 'Digest username="alice"')
    local = Target(URI.parse("sip:bob@127.0.23.50:5062;transport=tcp"),
                   Address("tcp", "127.0.23.50", 5062))
    out = proxy.prepare(incoming, local, record_route=False)
    assert out.headers.get_all(ASSERTED) == []
    assert out.headers.get_all("Proxy-Authorization") == []

    remote, = se2.targets("se1", URI.parse(ALICE), BOB, incoming)
    out = proxy.prepare(incoming, remote, record_route=True)
    values = out.headers.get_all(ASSERTED)
    assert values == [se2.assertion(BOB, incoming)]
    assert NameAddr.parse(values[0]).uri.aor == BOB
    assert out.routes[0].uri.host == "127.0.23.101"
    assert incoming.headers.get_all(ASSERTED)[0].startswith(f"<{CAROL}>"), "input untouched"
