"""The Backup Service on one Front End server (SPEC DR-2, DR-3, DR-4; DESIGN §3).

Shipping: the pool's change log (the outbox every write appends to in its own
transaction) is streamed to the paired pool. One server of the pool ships (the
first live one by name; all of them for a Standard Edition pool of one): it asks
the partner how far it has applied our log, then sends the following changes in
batches (with the bytes of any meeting content they reference) and the partner
answers with its new progress — the acknowledgement. Applying is idempotent
(changes at or below the progress are skipped in the same transaction that
records it), so a batch sent twice after a cut or a restart is harmless, and
nothing is skipped: the next batch always starts after the acknowledged one.

Receiving: ``POST /backup/apply`` applies a batch into the store (not logged: the
changes are the partner's) and answers the progress; ``GET /backup/progress``.
Both are signed with the pair's key (`trimaran.admin.peerauth`); a pool whose
failover record says its users are served by its backup is fenced: its changes
are refused (DR-7), so a failed pool that comes back cannot overwrite newer data.

Branch sites (EV-5): an SBA ships its log the same way, one way, to its backup
registrar pool, under ``/backup/branch/<sba>/...`` (`prefix`): the central pool then
knows the branch users (credentials, numbers) and signs them in, in resiliency mode,
when the SBA is down. That central side only receives (never `start`ed).

Status (DR-3): ``GET /backup/status`` describes this pool's outgoing direction:
last change written and acknowledged, lag in changes and seconds, per category,
and the state: ``steady`` (lag under `steady_lag` seconds), ``behind``, ``final``
(the pool is read-only and everything is applied) or ``broken`` (with why).
``POST /backup/sync`` ships at once and waits until caught up (DR-4). The shipping
server also measures that status every `measure_interval` seconds (`measured`), so
that the server's own /status and the status page show the lag without a signed call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from trimaran.admin import access
from trimaran.admin.http import MAX_PEER_BODY_BYTES, HttpError, Route
from trimaran.admin.peerauth import verify
from trimaran.admin.peerclient import PeerClient
from trimaran.aio import cancel
from trimaran.backup.protocol import (
    MAX_BATCH_BYTES,
    MAX_BATCH_CHANGES,
    BatchError,
    decode_batch,
    encode_batch,
    pair_key,
)
from trimaran.cms.failover import PoolFailover
from trimaran.store.base import Store, StoreError, StoreUnavailable
from trimaran.store.codec import CodecError, decode
from trimaran.store.model import Change, MeetingContent
from trimaran.topology.model import Server

log = logging.getLogger(__name__)

#: How long a status request waits for the partner's progress (status stays quick when
#: the partner is cut off: it then reports `broken` with the reason).
STATUS_TIMEOUT = 1.0
#: The fields of `BackupService.status` kept in `BackupService.measured`.
MEASURED_FIELDS = ("state", "reason", "lag_seconds", "lag_changes", "last_seq", "applied_seq",
                   "shipped_at")

STEADY = "steady"
BEHIND = "behind"
FINAL = "final"
BROKEN = "broken"


@dataclass
class ShipperState:
    """What the shipping loop knows (reported by /backup/status)."""

    acked_seq: int = 0           # the partner's progress for our log (0: not known yet)
    acked_known: bool = False
    shipped_at: float = 0.0      # wall time of the last acknowledged batch
    error: str = ""              # why the last attempt failed ("" when it worked)
    batches: int = 0
    changes: int = 0


class BackupService:
    """Ships this pool's change log to the paired pool and applies the partner's."""

    def __init__(self, *, pool: str, partner: str, partner_servers: tuple[Server, ...],
                 store: Store, secret: bytes,
                 records: Callable[[], dict[str, PoolFailover]],
                 is_shipper: Callable[[], bool] = lambda: True,
                 wall_clock: Callable[[], float] = time.time, poll_interval: float = 0.1,
                 steady_lag: float = 1.0, local_host: str | None = None,
                 measure_interval: float = 1.0, prefix: str = "/backup") -> None:
        self.pool = pool
        self.prefix = prefix
        self.partner = partner
        self.partner_servers = partner_servers
        self.store = store
        self.records = records
        self.is_shipper = is_shipper
        self.wall_clock = wall_clock
        self.poll_interval = poll_interval
        self.steady_lag = steady_lag
        self.measure_interval = measure_interval
        self.key_id = pair_key(pool, partner)
        self._secret = secret
        self._client = PeerClient(self.key_id, secret, timeout=5.0, local_host=local_host)
        self.state = ShipperState()
        # The last status measured by the shipping server (None elsewhere or before).
        self.measured: dict[str, object] | None = None
        self._task: asyncio.Task[None] | None = None
        self._measuring: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._progress = asyncio.Condition()
        self._target = 0                          # index of the partner server in use

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        """Ship, and measure the lag, in the background."""
        self._task = asyncio.ensure_future(self._loop())
        self._measuring = asyncio.ensure_future(self._measure_loop())

    async def stop(self) -> None:
        """Stop shipping; idempotent."""
        await cancel(self._task)
        await cancel(self._measuring)
        self._task = self._measuring = None
        await self._client.close()

    def routes(self) -> tuple[Route, ...]:
        """The admin API endpoints of the Backup Service."""
        p = self.prefix
        name = p.strip("/").replace("/", "-")
        return ((f"{p}/apply", f"{name}-apply", (("POST", self._post_apply),)),
                (f"{p}/progress", f"{name}-progress", (("GET", self._get_progress),)),
                (f"{p}/reset", f"{name}-reset", (("POST", self._post_reset),)),
                (f"{p}/status", f"{name}-status", (("GET", self._get_status),)),
                (f"{p}/sync", f"{name}-sync", (("POST", self._post_sync),)),
                (f"{p}/export", f"{name}-export", (("POST", self._post_export),)),
                (f"{p}/reconcile", f"{name}-reconcile", (("POST", self._post_reconcile),)))

    def fenced(self) -> str | None:
        """Why our own log must not ship now (our users are served by the backup pool:
        whatever we hold beyond what was shipped is superseded), else None."""
        record = self.records().get(self.pool)
        if record is not None and record.served_by_backup:
            return f"{self.pool} is {record.state} to {record.backup} (term {record.term})"
        return None

    # -- shipping ----------------------------------------------------------------------
    async def _loop(self) -> None:
        while True:
            shipped = 0
            try:
                if self.is_shipper() and self.fenced() is None:
                    shipped = await self.ship_once()
            except StoreUnavailable as exc:
                self.state.error = f"own store unavailable: {exc}"
            except Exception as exc:
                log.exception("backup shipping to %s failed", self.partner)
                self.state.error = f"internal error: {type(exc).__name__}"
            if shipped == 0:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(),
                                           self.poll_interval if not self.state.error
                                           else max(self.poll_interval, 0.5))
                self._wake.clear()

    async def ship_once(self) -> int:
        """Send the next batch (if any); return how many changes the partner applied."""
        if not self.state.acked_known and not await self._ask_progress():
            return 0
        changes = await self.store.changes.since(self.state.acked_seq,
                                                 limit=MAX_BATCH_CHANGES)
        if not changes:
            self.state.error = ""
            return 0
        changes, blobs = await self._with_blobs(changes)
        status, body = await self._call("POST", f"{self.prefix}/apply",
                                        encode_batch(self.pool, changes, blobs,
                                                     after=self.state.acked_seq))
        if status != 200:
            self.state.acked_known = False
            self.state.error = self._why(status, body)
            return 0
        seq = body.get("seq")
        if not isinstance(seq, int) or seq < self.state.acked_seq:
            self.state.acked_known = False
            self.state.error = f"{self.partner} answered a bad progress: {seq!r}"
            return 0
        applied = seq - self.state.acked_seq
        await self._acknowledged(seq)
        self.state.batches += 1
        self.state.changes += len(changes)
        return max(applied, 1)

    async def _with_blobs(self, changes: list[Change]) -> tuple[list[Change], dict[str, bytes]]:
        """Cut the batch at MAX_BATCH_BYTES and attach the content its changes reference."""
        blobs: dict[str, bytes] = {}
        size = 0
        kept: list[Change] = []
        for change in changes:
            extra, blob = len(change.payload), None
            if change.category == "meeting-content" and change.op == "put":
                sha = decode(MeetingContent, change.payload).sha256
                if sha not in blobs:
                    data = await self.store.meetings.blob(sha)
                    if data is not None:
                        blob = (sha, data)
                        extra += len(data) * 4 // 3
            if kept and size + extra > MAX_BATCH_BYTES:
                break
            kept.append(change)
            size += extra
            if blob is not None:
                blobs[blob[0]] = blob[1]
        return kept, blobs

    async def _ask_progress(self, timeout: float | None = None) -> bool:
        status, body = await self._call("GET", f"{self.prefix}/progress?source={self.pool}",
                                        timeout=timeout)
        seq = body.get("seq")
        if status != 200 or not isinstance(seq, int):
            self.state.error = self._why(status, body)
            return False
        self.state.acked_known = True
        await self._acknowledged(seq)
        return True

    async def _acknowledged(self, seq: int) -> None:
        async with self._progress:
            self.state.acked_seq = seq
            self.state.shipped_at = self.wall_clock()
            self.state.error = ""
            self._progress.notify_all()

    async def _call(self, method: str, path: str, body: object | None = None, *,
                    timeout: float | None = None) -> tuple[int, dict[str, object]]:
        """Call the partner pool, moving to its next server when one does not answer."""
        answer: tuple[int, dict[str, object]] = (0, {"error": "no server in the backup pool"})
        for _ in range(len(self.partner_servers)):
            spec = self.partner_servers[self._target % len(self.partner_servers)]
            answer = await self._client.call(
                method, f"http://{spec.address}:{spec.admin_port}{path}", body,
                timeout=timeout)
            if answer[0] != 0 and answer[0] != 503:
                return answer
            self._target += 1
        return answer

    def _why(self, status: int, body: dict[str, object]) -> str:
        error = str(body.get("error", f"HTTP {status}"))[:300]
        if status == 0:
            return f"backup pool {self.partner} unreachable: {error}"
        return f"backup pool {self.partner} refused ({status}): {error}"

    async def wait_caught_up(self, target_seq: int, timeout: float) -> bool:
        """Wait until the partner has applied our log up to `target_seq`."""
        deadline = time.monotonic() + timeout
        if not self.is_shipper():      # another server of the pool ships: watch the partner
            while self.state.acked_seq < target_seq and time.monotonic() < deadline:
                if not await self._ask_progress():
                    await asyncio.sleep(0.1)
                elif self.state.acked_seq < target_seq:
                    await asyncio.sleep(0.05)
            return self.state.acked_seq >= target_seq
        async with self._progress:
            while self.state.acked_seq < target_seq:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._wake.set()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._progress.wait(), min(left, 0.2))
        return True

    # -- status --------------------------------------------------------------------------
    async def _measure_loop(self) -> None:
        while True:
            self.measured = await self._measure() if self.is_shipper() else None
            await asyncio.sleep(self.measure_interval)

    async def _measure(self) -> dict[str, object]:
        """The summary of `status()` (its state `broken` when it cannot be computed)."""
        try:
            status = await self.status()
        except StoreError as exc:
            status = {"state": BROKEN, "reason": f"own store unavailable: {exc}"}
        except Exception as exc:
            log.exception("measuring the backup lag to %s failed", self.partner)
            status = {"state": BROKEN, "reason": f"internal error: {type(exc).__name__}"}
        return {**{key: status.get(key) for key in MEASURED_FIELDS},
                "measured_at": self.wall_clock()}

    async def status(self) -> dict[str, object]:
        """This pool's outgoing direction (DR-3)."""
        now = self.wall_clock()
        if not self.state.acked_known or not self.is_shipper():
            await self._ask_progress(timeout=STATUS_TIMEOUT)
        last = await self.store.changes.last_seq()
        acked = self.state.acked_seq
        summary = await self.store.changes.summary(acked)
        categories = {
            cat: {"last_seq": last_cat, "lag_changes": pending,
                  "lag_seconds": round(now - oldest, 3) if pending else 0.0}
            for cat, (last_cat, pending, oldest) in sorted(summary.items())}
        lag_changes = sum(pending for _, pending, _ in summary.values())
        oldest = min((o for _, p, o in summary.values() if p), default=now)
        lag_seconds = round(now - oldest, 3) if lag_changes else 0.0
        record = self.records().get(self.pool)
        fenced = self.fenced()
        if fenced is not None:
            state, reason = BROKEN, f"not shipping: {fenced}"
        elif self.state.error:
            state, reason = BROKEN, self.state.error
        elif record is not None and record.read_only and lag_changes == 0:
            state, reason = FINAL, f"{self.pool} is read-only ({record.state}) and every " \
                                   "change is applied"
        elif lag_seconds <= self.steady_lag:
            state, reason = STEADY, "keeping up"
        else:
            state, reason = BEHIND, f"{lag_changes} change(s) not yet applied"
        return {"source": self.pool, "target": self.partner, "state": state, "reason": reason,
                "last_seq": last, "applied_seq": acked, "acknowledged_known":
                self.state.acked_known, "lag_changes": lag_changes, "lag_seconds": lag_seconds,
                "shipped_at": self.state.shipped_at, "batches": self.state.batches,
                "changes_shipped": self.state.changes, "shipper": self.is_shipper(),
                "categories": categories}

    # -- receiving side ----------------------------------------------------------------------
    def _verify(self, request: web.Request, body: bytes) -> None:
        if access.authorized(request):      # an admin token or the admin key (OPS-6)
            return
        verify(request.headers, lambda key: self._secret if key == self.key_id else None,
               request.method, request.path_qs, body)

    async def _get_progress(self, request: web.Request) -> web.Response:
        self._verify(request, b"")
        source = request.query.get("source", "")
        if source != self.partner:
            raise HttpError(400, f"source: {self.pool} backs up {self.partner}, not "
                                 f"{source[:40]!r}")
        progress = await self.store.backup.progress(source)
        return web.json_response({"source": source, "seq": progress.seq,
                                  "change_at": progress.change_at,
                                  "applied_at": progress.applied_at})

    async def _post_apply(self, request: web.Request) -> web.Response:
        raw = await request.read()
        if len(raw) > MAX_PEER_BODY_BYTES:
            raise HttpError(413, f"batch larger than {MAX_PEER_BODY_BYTES} bytes")
        self._verify(request, raw)
        try:
            value = json.loads(raw)
            source, changes, blobs = decode_batch(value)
            after = int(value.get("after", 0))
        except (ValueError, BatchError, TypeError, AttributeError) as exc:
            raise HttpError(400, f"bad batch: {exc}") from None
        if source != self.partner:
            raise HttpError(400, f"source: {self.pool} backs up {self.partner}, not {source}")
        record = self.records().get(source)
        if record is not None and record.served_by_backup:
            raise HttpError(409, f"{source} is {record.state} (term {record.term}): its "
                                 "changes are fenced until failback (DR-7)")
        current = await self.store.backup.progress(source)
        if current.seq < after:
            raise HttpError(409, f"gap: {self.pool} has applied {source}'s changes up to "
                                 f"{current.seq}, the batch follows {after}; resend from "
                                 f"{current.seq}")
        try:
            progress = await self.store.backup.apply(source, changes, blobs=blobs,
                                                     now=self.wall_clock())
        except CodecError as exc:
            raise HttpError(400, f"bad change payload: {exc}") from None
        except StoreUnavailable:
            raise
        except StoreError as exc:
            raise HttpError(409, f"batch refused: {exc}") from None
        return web.json_response({"source": source, "seq": progress.seq,
                                  "change_at": progress.change_at,
                                  "applied_at": progress.applied_at})

    async def _post_reset(self, request: web.Request) -> web.Response:
        """Failback: skip the fenced tail of the partner's log (never shipped, superseded)."""
        raw = await request.read()
        self._verify(request, raw)
        try:
            value = json.loads(raw or b"{}")
            seq = int(value["seq"])
        except (ValueError, KeyError, TypeError):
            raise HttpError(400, "body: {\"seq\": N} is required") from None
        progress = await self.store.backup.reset(self.partner, seq, now=self.wall_clock())
        log.warning("backup progress of %s reset to %d", self.partner, seq)
        return web.json_response({"source": self.partner, "seq": progress.seq})

    async def _post_export(self, request: web.Request) -> web.Response:
        """The current values of (category, key) pairs here, as changes (failback)."""
        raw = await request.read()
        self._verify(request, raw)
        try:
            items = [(str(c), str(k)) for c, k in json.loads(raw)["items"]]
        except (ValueError, KeyError, TypeError):
            raise HttpError(400, "body: {\"items\": [[category, key], ...]}") from None
        if len(items) > MAX_BATCH_CHANGES:
            raise HttpError(400, f"at most {MAX_BATCH_CHANGES} items")
        changes = [await self.store.backup.export(c, k) for c, k in items]
        changes, blobs = await self._with_blobs(changes)
        return web.json_response(encode_batch(self.pool, changes, blobs))

    async def _post_reconcile(self, request: web.Request) -> web.Response:
        """Failback after a disaster: our changes after `after` were never shipped (the
        tail the disaster cut off); the backup pool's copy of those keys wins, so both
        pools hold the same data again."""
        raw = await request.read()
        self._verify(request, raw)
        try:
            after = int(json.loads(raw)["after"])
        except (ValueError, KeyError, TypeError):
            raise HttpError(400, "body: {\"after\": seq}") from None
        items: dict[tuple[str, str], None] = {}
        seq = after
        while True:
            page = await self.store.changes.since(seq, limit=MAX_BATCH_CHANGES)
            if not page:
                break
            items.update({(c.category, c.key): None for c in page})
            seq = page[-1].seq
        source = f"reconcile:{self.partner}"
        await self.store.backup.reset(source, 0, now=self.wall_clock())
        keys = list(items)
        applied = 0
        for start in range(0, len(keys), MAX_BATCH_CHANGES):
            chunk = keys[start:start + MAX_BATCH_CHANGES]
            status, body = await self._call("POST", f"{self.prefix}/export",
                                            {"items": [list(k) for k in chunk]})
            if status != 200:
                raise HttpError(502, f"export from {self.partner} failed: "
                                     f"{self._why(status, body)}")
            try:
                _, exported, blobs = decode_batch(body)
            except BatchError as exc:
                raise HttpError(502, f"bad export from {self.partner}: {exc}") from None
            renumbered = [Change(applied + i + 1, source, c.category, c.key, c.op, c.payload,
                                 c.at) for i, c in enumerate(exported)]
            await self.store.backup.apply(source, renumbered, blobs=blobs,
                                          now=self.wall_clock())
            applied += len(renumbered)
        log.warning("failback: %d key(s) changed here after change %d were never shipped; "
                    "replaced by %s's copy", applied, after, self.partner)
        return web.json_response({"after": after, "keys": applied, "until": seq})

    async def _get_status(self, request: web.Request) -> web.Response:
        self._verify(request, b"")
        return web.json_response(await self.status())

    async def _post_sync(self, request: web.Request) -> web.Response:
        raw = await request.read()
        self._verify(request, raw)
        try:
            timeout = float(json.loads(raw or b"{}").get("timeout", 30.0))
        except (ValueError, AttributeError, TypeError):
            raise HttpError(400, "body: {\"timeout\": seconds}") from None
        fenced = self.fenced()
        if fenced is not None:
            raise HttpError(409, f"not shipping: {fenced}")
        target = await self.store.changes.last_seq()
        if not await self._ask_progress():        # the partner's own word, not our cache
            raise HttpError(503, self.state.error, (("Retry-After", "5"),))
        self._wake.set()
        done = await self.wait_caught_up(target, min(timeout, 120.0))
        return web.json_response({**await self.status(), "synced": done,
                                  "target_seq": target})
