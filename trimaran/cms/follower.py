"""A read-only copy of the CMS kept current by pulling from the master (DESIGN §3
"CMS"): every Front End server, and the servers that hold no store (Directors), follow
the CMS this way.

Where the master is: the `master` document of the master pool's own store names
it. A CMS failover moves it only to the paired pool, so a follower asks the pool
its replica names and that pool's partner (at once), and believes the answer with
the highest term (a master that comes back after a disaster takeover has a lower
term and is ignored: fencing).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

from trimaran.admin.peerclient import PeerClient
from trimaran.aio import cancel
from trimaran.cms.replica import (
    CmsError,
    MasterLocator,
    Snapshot,
    load_replica,
    save_replica,
)
from trimaran.store.model import CmsDocument
from trimaran.topology.model import PoolRole, Topology
from trimaran.topology.resolver import Resolver

log = logging.getLogger("trimaran.cms.service")

CMS_KEY_ID = "cms"


def doc_of(raw: object) -> CmsDocument:
    """A CMS document from its JSON form; `CmsError` when it is not one."""
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


class CmsFollower:
    """Keeps a server's replica of the CMS current."""

    def __init__(self, *, server: str, pool: str, topology: Topology, replica_path: Path,
                 secret: bytes, wall_clock: Callable[[], float] = time.time,
                 poll_interval: float = 1.0,
                 on_change: Callable[[Snapshot], None] | None = None,
                 local_host: str | None = None) -> None:
        self.server = server
        self.pool = pool
        self.topology = topology
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
        """Try one pull (bounded), then follow in the background. The saved replica is
        used until a pull works."""
        await self._before_first_pull()
        deadline = time.monotonic() + first_pull_timeout
        while time.monotonic() < deadline and not await self.pull_once():
            await asyncio.sleep(0.2)
        if self.on_change is not None:
            self.on_change(self.snapshot)
        self._task = asyncio.ensure_future(self._loop())

    async def stop(self) -> None:
        """Stop following; idempotent."""
        await cancel(self._task)
        self._task = None
        await self._client.close()

    async def _before_first_pull(self) -> None:
        """Hook: what a server does before it first pulls (the master pool bootstraps)."""

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
        candidates = self._candidates()
        results = await asyncio.gather(*(self._ask_pool(pool) for pool in candidates))
        answers = [(term, pool, body) for pool, (term, body, _) in
                   zip(candidates, results, strict=True) if body is not None]
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
        changed = [doc_of(d) for d in docs]
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

