"""The CMS on one Front End server: master API when its pool holds the master, and
the follower that keeps this server's replica (DESIGN §3 "CMS"; SPEC TOP-3, DR-9).

Endpoints (every one signed with the deployment's CMS key, `trimaran.admin.peerauth`):

=========================  ==============================================================
``GET /cms/snapshot``      ``?since=V``: documents changed after version V and every key;
                           409 ``{"master": P, "term": t}`` when this pool is not master
``POST /cms/documents``    ``{"key", "body", "check", "expect_version"}``: compare-and-set
                           write on the master (409 when not master or on a conflict)
``POST /cms/takeover``     make this pool the master at a higher term (`cms failover`)
``POST /cms/refresh``      pull now (the CLI pokes every server after a change)
=========================  ==============================================================

Where the master is: the `master` document of the master pool's own store names
it. A CMS failover moves it only to the paired pool, so a follower asks the pool
its replica names and that pool's partner, and believes the answer with the
highest term (a master that comes back after a disaster takeover has a lower
term and is ignored: fencing).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from trimaran.admin.http import HttpError, Route
from trimaran.admin.peerauth import verify
from trimaran.admin.peerclient import PeerClient
from trimaran.cms.failover import PoolFailover, document_key
from trimaran.cms.replica import (
    MASTER_KEY,
    TOPOLOGY_KEY,
    CmsError,
    MasterLocator,
    Snapshot,
    load_replica,
    save_replica,
)
from trimaran.store.base import Conflict, Store, StoreUnavailable
from trimaran.store.model import CmsDocument
from trimaran.topology.model import PoolRole, Topology
from trimaran.topology.resolver import Resolver

log = logging.getLogger(__name__)

CMS_KEY_ID = "cms"
MAX_DOCUMENT_BYTES = 1024 * 1024


def _doc_json(doc: CmsDocument) -> dict[str, object]:
    return {"key": doc.key, "body": doc.body, "version": doc.version,
            "updated_at": doc.updated_at}


def _doc_of(raw: object) -> CmsDocument:
    if not isinstance(raw, dict):
        raise CmsError("document is not an object")
    try:
        return CmsDocument(str(raw["key"]), str(raw["body"]), int(raw["version"]),
                           float(raw["updated_at"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise CmsError(f"bad document: {exc}") from None


def initial_master(topology: Topology) -> str:
    """The pool that hosts the CMS when a deployment first starts: the first Front End
    pool of the topology."""
    pools = Resolver(topology).pools(PoolRole.FRONTEND)
    if not pools:
        raise CmsError("the topology has no Front End pool to host the CMS")
    return pools[0].name


class CmsService:
    """This server's CMS master API and replica follower."""

    def __init__(self, *, server: str, pool: str, store: Store, topology: Topology,
                 topology_text: str, replica_path: Path, secret: bytes,
                 wall_clock: Callable[[], float] = time.time, poll_interval: float = 1.0,
                 on_change: Callable[[Snapshot], None] | None = None,
                 local_host: str | None = None) -> None:
        self.server = server
        self.pool = pool
        self.store = store
        self.topology = topology
        self.topology_text = topology_text
        self.replica_path = replica_path
        self.wall_clock = wall_clock
        self.poll_interval = poll_interval
        self.on_change = on_change
        self._secret = secret
        self._resolver = Resolver(topology)
        self._client = PeerClient(CMS_KEY_ID, secret, timeout=1.5, local_host=local_host)
        self.snapshot = load_replica(replica_path)
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.last_error = ""

    # -- lifecycle ------------------------------------------------------------------
    async def start(self, *, first_pull_timeout: float = 3.0) -> None:
        """Bootstrap the CMS when this pool is the first master, try one pull (bounded),
        then follow in the background. The saved replica is used until a pull works."""
        with contextlib.suppress(StoreUnavailable):
            await self._bootstrap()
        deadline = time.monotonic() + first_pull_timeout
        while time.monotonic() < deadline and not await self.pull_once():
            await asyncio.sleep(0.2)
        if self.on_change is not None:
            self.on_change(self.snapshot)
        self._task = asyncio.ensure_future(self._loop())

    async def stop(self) -> None:
        """Stop following; idempotent."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._client.close()

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
                ("/cms/refresh", "cms-refresh", (("POST", self._post_refresh),)))

    def status(self) -> dict[str, object]:
        """This server's replica, for /status."""
        master = self.snapshot.master
        return {"version": self.snapshot.version, "pulled_at": self.snapshot.pulled_at,
                "master": master.pool if master else None,
                "term": master.term if master else 0, "error": self.last_error}

    # -- follower ---------------------------------------------------------------------
    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)
            self._wake.clear()
            try:
                await self.pull_once()
            except Exception:
                log.exception("CMS pull failed")

    def wake(self) -> None:
        """Pull now."""
        self._wake.set()

    def _candidates(self) -> list[str]:
        first = self.snapshot.master.pool if self.snapshot.master else \
            initial_master(self.topology)
        pools = [first]
        partner = self._resolver.paired_pool(first)
        if partner is not None:
            pools.append(partner.name)
        return pools

    async def pull_once(self) -> bool:
        """Ask the candidate pools (at once); apply the master's answer. True when a
        master answered."""
        known = self.snapshot.master
        results = await asyncio.gather(*(self._ask_pool(pool) for pool in self._candidates()))
        answers = [(term, pool, body) for pool, (term, body, _) in
                   zip(self._candidates(), results, strict=True) if body is not None]
        errors = [e for _, _, errs in results for e in errs]
        if not answers:
            self.last_error = "no CMS master reachable: " + "; ".join(errors[:4])
            return False
        term, pool, body = max(answers, key=lambda a: a[0])
        if known is not None and term < known.term:
            self.last_error = f"ignoring {pool}: term {term} below {known.term} (fenced)"
            return False
        try:
            self._apply(MasterLocator(pool, term), body)
        except CmsError as exc:
            self.last_error = f"bad answer from {pool}: {exc}"
            return False
        self.last_error = ""
        return True

    async def _ask_pool(self, pool: str) -> tuple[int, dict[str, object] | None, list[str]]:
        """(term, snapshot answer or None, errors) from the first server of `pool` that
        answers; None when the pool is not the master or nobody answers."""
        known = self.snapshot.master
        errors: list[str] = []
        for spec in self._resolver.servers_of(pool):
            since = self.snapshot.version if known and known.pool == pool else 0
            url = f"http://{spec.address}:{spec.admin_port}/cms/snapshot?since={since}"
            status, body = await self._client.call("GET", url)
            if status == 200:
                term = body.get("term")
                return (term if isinstance(term, int) else 0), body, errors
            if status == 409:
                break
            errors.append(f"{spec.name}: {body.get('error', status)}")
        return 0, None, errors

    def _apply(self, master: MasterLocator, body: dict[str, object]) -> None:
        version, docs, keys = body.get("version"), body.get("documents"), body.get("keys")
        if not isinstance(version, int) or not isinstance(docs, list) or \
                not isinstance(keys, list):
            raise CmsError("snapshot answer lacks version/documents/keys")
        changed = [_doc_of(d) for d in docs]
        moved = self.snapshot.master != master
        base = Snapshot() if moved else self.snapshot
        before = (self.snapshot.version, self.snapshot.master)
        self.snapshot = base.merged(master, version, changed, {str(k) for k in keys},
                                    self.wall_clock())
        if (version, master) != before:
            save_replica(self.replica_path, self.snapshot)
            log.info("CMS replica at version %d (master %s, term %d)", version, master.pool,
                     master.term)
            if self.on_change is not None:
                self.on_change(self.snapshot)

    # -- master side --------------------------------------------------------------------
    def _verify(self, request: web.Request, body: bytes) -> None:
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
        documents = await self.store.cms.all()
        version = await self.store.cms.version()
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

    async def _post_refresh(self, request: web.Request) -> web.Response:
        await self._read(request)
        await self.pull_once()
        return web.json_response(self.status())
