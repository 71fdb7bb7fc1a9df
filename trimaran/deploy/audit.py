"""Recording operator commands in the CMS audit log from the operator's side (OPS-6).

`record` sends one `AuditRecord` to the CMS master (``POST /cms/audit``). When no
master answers (a disaster failover in progress, the master's site lost), the record
is kept in ``RUNDIR/audit-pending.jsonl`` and sent, oldest first, before the next
record that reaches a master. `read` returns the log for ``trimaran admin audit``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from trimaran.cms.audit import AuditError, AuditRecord, records_of
from trimaran.deploy.dr import Deployment, DrError
from trimaran.deploy.rundir import RunDir
from trimaran.topology.errors import TopologyError

log = logging.getLogger(__name__)

PENDING_FILE = "audit-pending.jsonl"
#: Records kept locally at most (the oldest are dropped beyond).
MAX_PENDING = 1000


def pending_path(run: RunDir) -> Path:
    """Where records wait while no CMS master answers."""
    return run.path / PENDING_FILE


def pending(run: RunDir) -> list[AuditRecord]:
    """The records not yet in the CMS, oldest first."""
    path = pending_path(run)
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(AuditRecord.from_json(json.loads(line)))
        except (ValueError, AuditError):
            log.warning("skipping a malformed line of %s", path)
    return out


def _keep(run: RunDir, records: list[AuditRecord]) -> None:
    path = pending_path(run)
    if not records:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text("".join(json.dumps(r.to_json()) + "\n" for r in records[-MAX_PENDING:]))
    os.replace(tmp, path)


def _post(dep: Deployment, master: str, rec: AuditRecord) -> bool:
    status, body = dep.first(master, "POST", "/cms/audit", rec.to_json(), key=dep.cms_key)
    if status != 200:
        log.info("audit record not accepted by %s: %s", master, body.get("error", status))
    return status == 200


def record(run: RunDir, rec: AuditRecord) -> str:
    """Append `rec` (and any pending records before it) to the CMS audit log; return
    ``"cms"``, or ``"pending"`` when it was kept in the run directory instead."""
    waiting = [*pending(run), rec]
    try:
        dep = Deployment(run)
        master, _ = dep.cms_master()
    except (DrError, TopologyError, OSError):
        _keep(run, waiting)
        return "pending"
    sent = 0
    for item in waiting:
        if not _post(dep, master, item):
            break
        sent += 1
    _keep(run, waiting[sent:])
    return "cms" if sent == len(waiting) else "pending"


def read(run: RunDir, limit: int | None = None) -> tuple[list[AuditRecord], list[AuditRecord]]:
    """(records in the CMS, records still pending here), newest last; `DrError` when no
    CMS master answers."""
    _, snapshot = Deployment(run).cms_master()
    stored = records_of(list(snapshot.get("documents", [])))
    return (stored[-limit:] if limit else stored), pending(run)
