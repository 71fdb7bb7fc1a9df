"""The audit log of operator commands in the CMS (SPEC OPS-6)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from trimaran.cms import audit
from trimaran.cms.audit import AuditError, AuditRecord
from trimaran.deploy import audit as audit_log
from trimaran.deploy.rundir import RunDir
from trimaran.store.sqlite import SqliteStore

DAY = 1_800_000_000.0          # 2027-01-15 08:00 UTC


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    db = SqliteStore(tmp_path / "cms.db", pool="se1")
    await db.open()
    try:
        yield db
    finally:
        await db.close()


def record(n: int, at: float = DAY, result: str = "ok") -> AuditRecord:
    return AuditRecord(at=at + n, who="olga", command="pool failover", args={"name": "se2"},
                       result=result, seconds=1.5)


async def test_records_of_a_day_are_appended_in_one_document(store: SqliteStore) -> None:
    for n in range(3):
        await audit.append(store.cms, record(n), now=DAY)
    doc = await store.cms.get("audit/20270115")
    assert doc is not None
    assert [r["at"] for r in json.loads(doc.body)["records"]] == [DAY, DAY + 1, DAY + 2]
    snapshot = [{"key": doc.key, "body": doc.body}]
    assert audit.records_of(snapshot) == [record(0), record(1), record(2)]


async def test_concurrent_appends_lose_no_record(store: SqliteStore) -> None:
    await asyncio.gather(*(audit.append(store.cms, record(n), now=DAY) for n in range(8)))
    doc = await store.cms.get("audit/20270115")
    assert doc is not None and len(json.loads(doc.body)["records"]) == 8


async def test_a_day_keeps_its_newest_records_and_counts_the_dropped(
        store: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit, "MAX_PER_DAY", 3)
    for n in range(5):
        await audit.append(store.cms, record(n), now=DAY)
    doc = await store.cms.get("audit/20270115")
    assert doc is not None
    kept = json.loads(doc.body)
    assert [r["at"] for r in kept["records"]] == [DAY + 2, DAY + 3, DAY + 4]
    assert kept["dropped"] == 2


async def test_days_older_than_the_retention_are_removed(store: SqliteStore) -> None:
    old = DAY - (audit.RETAIN_DAYS + 2) * 86400
    await audit.append(store.cms, record(0, at=old), now=old)
    await audit.append(store.cms, record(0), now=DAY)          # a new day starts
    assert [d.key for d in await store.cms.all()] == ["audit/20270115"]


@pytest.mark.parametrize(("raw", "problem"), [
    ({"who": "x"}, "command"), ({"command": "x", "result": "maybe"}, "result"),
    ({"command": "x", "at": "noon"}, "audit.at"), ({"command": "x", "extra": 1}, "unknown"),
    ("a string", "JSON object")])
def test_malformed_records_are_refused_naming_the_field(raw: object, problem: str) -> None:
    with pytest.raises(AuditError, match=problem):
        AuditRecord.from_json(raw)


def test_a_record_is_kept_in_the_run_directory_while_no_master_answers(
        tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.create()
    run.topology.write_text(
        "name: lost\nsip_domain: trimaran.test\nsites: [{name: dc1}, {name: dc2}]\n"
        "pools:\n"
        "  - {name: se1, site: dc1, role: frontend, edition: standard, backup_pool: se2,\n"
        "     servers: [{name: se1a, address: 127.0.57.201, admin_port: 8990}]}\n"
        "  - {name: se2, site: dc2, role: frontend, edition: standard, backup_pool: se1,\n"
        "     servers: [{name: se2a, address: 127.0.57.202, admin_port: 8990}]}\n")
    assert audit_log.record(run, record(0)) == "pending"
    assert audit_log.record(run, record(1, result="refused")) == "pending"
    assert audit_log.pending(run) == [record(0), record(1, result="refused")]
    assert audit_log.pending_path(run).read_text().count("\n") == 2
