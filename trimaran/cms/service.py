"""The CMS on one Front End server: master API when its pool holds the master, and
the follower that keeps this server's replica (DESIGN §3 "CMS"; SPEC TOP-3, DR-9).

Endpoints (every one signed with the deployment's CMS key, `trimaran.admin.peerauth`, or
called with an admin token, `trimaran.admin.access`):

=========================  ==============================================================
``GET /cms/snapshot``      ``?since=V``: documents changed after version V and every key;
                           409 ``{"master": P, "term": t}`` when this pool is not master
``POST /cms/documents``    ``{"key", "body", "check", "expect_version"}``: compare-and-set
                           write on the master (409 when not master or on a conflict)
``POST /cms/takeover``     make this pool the master at a higher term (`cms failover`)
``POST /cms/refresh``      pull now (the CLI pokes every server after a change)
``GET /cms/homing/{user}`` a user's home pool and digest HA1s (for the Directors, which
                           hold no user state); users of this pool and of its partner
``POST /cms/lockouts``     ``{"aor"}``: count a wrong digest response a Director saw
                           (OPS-6) in the user's lockout row; answers the row
``POST /cms/audit``        append an operator command's record (`trimaran.cms.audit`);
                           an admin token of read scope may call it too
=========================  ==============================================================

Where the master is: the `master` document of the master pool's own store names
it. A CMS failover moves it only to the paired pool, so a follower asks the pool
its replica names and that pool's partner, and believes the answer with the
highest term (a master that comes back after a disaster takeover has a lower
term and is ignored: fencing).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from trimaran.admin import access
from trimaran.admin.http import HttpError, Route
from trimaran.admin.peerauth import verify
from trimaran.cms import audit
from trimaran.cms.audit import AuditError, AuditRecord
from trimaran.cms.failover import PoolFailover, document_key
from trimaran.cms.follower import CMS_KEY_ID, CmsFollower, initial_master
from trimaran.cms.replica import (
    MASTER_KEY,
    TOPOLOGY_KEY,
    MasterLocator,
    Snapshot,
)
from trimaran.roles.frontend.abuse import lockout_policy
from trimaran.store.base import Conflict, Store, StoreUnavailable
from trimaran.store.lockouts import lockout_to_json
from trimaran.store.model import CmsDocument
from trimaran.topology.model import PoolRole, Topology

log = logging.getLogger(__name__)

MAX_DOCUMENT_BYTES = 1024 * 1024


def _doc_json(doc: CmsDocument) -> dict[str, object]:
    return {"key": doc.key, "body": doc.body, "version": doc.version,
            "updated_at": doc.updated_at}


class CmsService(CmsFollower):
    """This server's CMS master API and replica follower."""

    def __init__(self, *, server: str, pool: str, store: Store, topology: Topology,
                 topology_text: str, replica_path: Path, secret: bytes,
                 wall_clock: Callable[[], float] = time.time, poll_interval: float = 1.0,
                 on_change: Callable[[Snapshot], None] | None = None,
                 local_host: str | None = None) -> None:
        super().__init__(server=server, pool=pool, topology=topology,
                         replica_path=replica_path, secret=secret, wall_clock=wall_clock,
                         poll_interval=poll_interval, on_change=on_change,
                         local_host=local_host)
        self.store = store
        self.topology_text = topology_text

    async def _before_first_pull(self) -> None:
        """Bootstrap the CMS when this pool is the first master."""
        with contextlib.suppress(StoreUnavailable):
            await self._bootstrap()

    async def _bootstrap(self) -> None:
        if self.pool != initial_master(self.topology) or self.snapshot.master is not None:
            return
        if await self.store.cms.get(MASTER_KEY) is not None:
            return
        now = self.wall_clock()
        try:
            await self.store.cms.put(MASTER_KEY, MasterLocator(self.pool, 1).to_json(),
                                     now=now, check=True, expect_version=None)
        except Conflict:
            return                            # another server of the pool did it
        await self.store.cms.put(TOPOLOGY_KEY, self.topology_text, now=now)
        for pool in self._resolver.pools(PoolRole.FRONTEND):
            record = PoolFailover(pool.name, backup=pool.paired_with)
            await self.store.cms.put(document_key(pool.name), record.to_json(), now=now)
        log.info("CMS created on pool %s (term 1)", self.pool)

    def routes(self) -> tuple[Route, ...]:
        """The admin API endpoints of the CMS."""
        return (("/cms/snapshot", "cms-snapshot", (("GET", self._get_snapshot),)),
                ("/cms/documents", "cms-documents", (("POST", self._post_document),)),
                ("/cms/takeover", "cms-takeover", (("POST", self._post_takeover),)),
                ("/cms/refresh", "cms-refresh", (("POST", self._post_refresh),)),
                ("/cms/homing/{user}", "cms-homing", (("GET", self._get_homing),)),
                ("/cms/lockouts", "cms-lockouts", (("POST", self._post_lockout_failure),)),
                ("/cms/audit", "cms-audit", (("POST", self._post_audit),)))

    # -- master side --------------------------------------------------------------------
    def _verify(self, request: web.Request, body: bytes) -> None:
        if access.authorized(request):      # an admin token or the admin key (OPS-6)
            return
        verify(request.headers, lambda key: self._secret if key == CMS_KEY_ID else None,
               request.method, request.path_qs, body)

    async def master(self) -> MasterLocator | None:
        """Where this pool's store says the CMS master is."""
        doc = await self.store.cms.get(MASTER_KEY)
        return MasterLocator.from_json(doc.body) if doc is not None else None

    async def _require_master(self) -> MasterLocator:
        master = await self.master()
        if master is None or master.pool != self.pool:
            raise HttpError(409, f"pool {self.pool} is not the CMS master"
                            + (f" (the master is {master.pool}, term {master.term})"
                               if master else ""))
        return master

    async def _get_snapshot(self, request: web.Request) -> web.Response:
        self._verify(request, b"")
        try:
            since = int(request.query.get("since", "0"))
        except ValueError:
            raise HttpError(400, "since: not an integer") from None
        master = await self.master()
        if master is None or master.pool != self.pool:
            return web.json_response(
                {"error": f"pool {self.pool} is not the CMS master",
                 "master": master.pool if master else None,
                 "term": master.term if master else 0}, status=409)
        # The version first: a change committed between the two reads is then sent
        # again next time (the follower asks since this version), never skipped.
        version = await self.store.cms.version()
        documents = await self.store.cms.all()
        return web.json_response({
            "master": master.pool, "term": master.term, "version": version,
            "keys": [d.key for d in documents],
            "documents": [_doc_json(d) for d in documents if d.version > since]})

    async def _read(self, request: web.Request) -> dict[str, object]:
        body = await request.read()
        if len(body) > MAX_DOCUMENT_BYTES:
            raise HttpError(413, f"body larger than {MAX_DOCUMENT_BYTES} bytes")
        self._verify(request, body)
        try:
            value = json.loads(body or b"{}")
        except ValueError:
            raise HttpError(400, "body is not JSON") from None
        if not isinstance(value, dict):
            raise HttpError(400, "body is not a JSON object")
        return value

    async def _post_document(self, request: web.Request) -> web.Response:
        value = await self._read(request)
        key, text = value.get("key"), value.get("body")
        if not isinstance(key, str) or not key or not isinstance(text, str):
            raise HttpError(400, "key and body (strings) are required")
        await self._require_master()
        expect = value.get("expect_version")
        if expect is not None and not isinstance(expect, int):
            raise HttpError(400, "expect_version: an integer or null")
        try:
            doc = await self.store.cms.put(key, text, now=self.wall_clock(),
                                           check=bool(value.get("check")),
                                           expect_version=expect)
        except Conflict as exc:
            raise HttpError(409, f"document {key} changed meanwhile: {exc}") from None
        log.info("CMS document %s written at version %d", key, doc.version)
        self.wake()
        return web.json_response(_doc_json(doc))

    async def take_over(self, why: str) -> dict[str, object]:
        """`cms failover` (or an automatic pool failover): this pool becomes master at a
        term above any it knows."""
        current = await self.master()
        known = self.snapshot.master
        term = max(current.term if current else 0, known.term if known else 0) + 1
        if current is not None and current.pool == self.pool:
            return {"master": self.pool, "term": current.term,
                    "version": await self.store.cms.version(), "already": True}
        doc = await self.store.cms.put(MASTER_KEY, MasterLocator(self.pool, term).to_json(),
                                       now=self.wall_clock())
        log.warning("CMS master taken over by pool %s at term %d (version %d): %s",
                    self.pool, term, doc.version, why)
        self.wake()
        return {"master": self.pool, "term": term, "version": doc.version, "already": False}

    async def _post_takeover(self, request: web.Request) -> web.Response:
        await self._read(request)
        return web.json_response(await self.take_over("cms failover --disaster"))

    async def _get_homing(self, request: web.Request) -> web.Response:
        """User homing for a Director: where the user lives, and how to check them."""
        self._verify(request, b"")
        username, realm = request.match_info["user"], request.query.get("realm", "")
        if not username or len(username) > 200 or not realm:
            raise HttpError(400, "a digest username and ?realm= are required")
        creds = await self.store.users.credentials(username, realm)
        user = await self.store.users.get(creds.aor) if creds is not None else None
        if creds is None or user is None:
            raise HttpError(404, "no such user here")
        return web.json_response({
            "aor": user.aor, "pool": user.pool, "enabled": user.enabled,
            "username": creds.username, "realm": creds.realm, "ha1_md5": creds.ha1_md5,
            "ha1_sha256": creds.ha1_sha256,
            "lockout": lockout_to_json(await self.store.lockouts.get(user.aor))})

    async def _post_lockout_failure(self, request: web.Request) -> web.Response:
        """A Director saw a wrong digest response of `aor` (OPS-6): count it in the
        user's lockout row here, where the pool's Front Ends count theirs."""
        value = await self._read(request)
        aor = value.get("aor")
        if not isinstance(aor, str) or not aor:
            raise HttpError(400, "aor: a user's address is required")
        policy = lockout_policy(self.topology.settings.abuse)
        if policy is None:
            raise HttpError(409, "the account lockout is off (settings.abuse)")
        if len(aor) > 300 or await self.store.users.get(aor) is None:
            raise HttpError(404, "no such user here")
        now = self.wall_clock()
        row = await self.store.lockouts.record_failure(aor, policy, now=now)
        if row.locked_at == now:
            log.warning("account %s locked until %.0f by failures a Director counted", aor,
                        row.locked_until)
        return web.json_response({"lockout": lockout_to_json(row)})

    async def _post_audit(self, request: web.Request) -> web.Response:
        """Append an operator command's audit record (OPS-6). A token holder (read scope
        is enough) or TLS client is recorded under their own name; a caller holding the
        deployment's key names itself (``user@host``)."""
        value = await self._read(request)
        await self._require_master()
        who = access.principal(request)
        if who is not None and who.via != "key":
            value = {**value, "who": who.name, "via": who.via}
        else:
            value = {**value, "via": "key"}
        try:
            record = AuditRecord.from_json(value)
        except AuditError as exc:
            raise HttpError(400, str(exc)) from None
        try:
            version = await audit.append(self.store.cms, record, now=self.wall_clock())
        except Conflict as exc:
            raise HttpError(409, f"audit: {exc}") from None
        log.info("audit: %s %s by %s: %s", record.command, record.args, record.who,
                 record.result)
        self.wake()
        return web.json_response({"key": audit.day_key(record.at), "version": version})

    async def _post_refresh(self, request: web.Request) -> web.Response:
        await self._read(request)
        await self.pull_once()
        return web.json_response(self.status())
