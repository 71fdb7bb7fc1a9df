"""Which users a Front End serves follows the failover records in its CMS copy (DR-5, DR-7)."""

from __future__ import annotations

from pathlib import Path

import pytest

from trimaran.admin.http import HttpError
from trimaran.cms.failover import PoolFailover, document_key, plan_failover
from trimaran.cms.replica import Snapshot
from trimaran.roles.frontend.homing import Homing
from trimaran.store.model import CmsDocument, Credentials, User
from trimaran.store.sqlite import SqliteStore

A, B = PoolFailover("a", backup="b"), PoolFailover("b", backup="a")


def snapshot(*records: PoolFailover) -> Snapshot:
    docs = {document_key(r.pool): CmsDocument(document_key(r.pool), r.to_json(), i + 1, 0.0)
            for i, r in enumerate(records)}
    return Snapshot(len(docs), None, docs, 0.0)


async def test_backup_pool_serves_the_failed_pools_users_and_tells_who_moved(
        tmp_path: Path) -> None:
    async with SqliteStore(tmp_path / "b.sqlite", pool="b") as store:
        await store.users.add(User("sip:ann@x", "a"), Credentials("sip:ann@x", "ann", "x",
                                                                  "0" * 32, "0" * 64), now=1)
        homing = Homing("b", store)
        homing.ready = True                      # as after the start's CMS read
        moved: list[set[str]] = []
        homing.on_records_changed = moved.append
        homing.update(snapshot(A, B))
        st = await homing.standing("sip:ann@x")
        assert (st.serve, st.redirect_to) == (False, "a")      # normal: sent home
        assert moved == []
        homing.update(snapshot(plan_failover(A, B, cms_master="b", disaster=True, now=1), B))
        st = await homing.standing("sip:ann@x")
        assert st.serve and not st.read_only                     # failed over: full rights
        assert moved == [{"a"}]
        await homing.check_write("sip:ann@x")                    # no HttpError
        homing.update(snapshot(A, B))
        assert moved == [{"a"}, {"a"}]
        st = await homing.standing("sip:ann@x")
        assert not st.serve and "a serves its own users" in st.reason


async def test_nothing_changes_before_the_server_has_read_the_cms(tmp_path: Path) -> None:
    """DR-7: a server coming back reads the CMS before anything of a user may change
    through it; its copy on disk may predate a failover of its pool."""
    async with SqliteStore(tmp_path / "a.sqlite", pool="a") as store:
        await store.users.add(User("sip:ann@x", "a"), Credentials("sip:ann@x", "ann", "x",
                                                                  "0" * 32, "0" * 64), now=1)
        homing = Homing("a", store)
        homing.update(snapshot(A, B))            # the old copy: "normal", ann served here
        with pytest.raises(HttpError) as refused:
            await homing.check_write("sip:ann@x")
        assert refused.value.status == 503 and "not read the CMS" in refused.value.message
        homing.ready = True
        await homing.check_write("sip:ann@x")
