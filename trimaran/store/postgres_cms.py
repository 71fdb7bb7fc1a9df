"""PostgreSQL repository of the CMS documents (logged under `cms`, key = document key).
Same behaviour as `trimaran.store.sqlite_cms`.

Concurrent writers are serialised by the row of the CMS counter: a write first bumps it
(``UPDATE … RETURNING``), which holds its row lock until the commit, so versions are
handed out one at a time, and a compare-and-set reads the document after taking that
lock (a new statement at READ COMMITTED sees every write committed before). The
change-log lock, taken at the commit, comes after it: always in this order, so no
deadlock.
"""

from __future__ import annotations

from trimaran.store.base import CmsRepository
from trimaran.store.model import CmsDocument
from trimaran.store.postgres_db import PgDatabase, PgTx, Record
from trimaran.store.postgres_db import Retry as R
from trimaran.store.sqlite_cms import check_expected

CMS_COLUMNS = "key, body, version, updated_at"


def document_of(row: Record) -> CmsDocument:
    """The document in a row of `CMS_COLUMNS`."""
    return CmsDocument(row["key"], row["body"], int(row["version"]), row["updated_at"])


async def read_document(tx: PgTx, key: str) -> CmsDocument | None:
    """The document, or None."""
    row = await tx.one(f"SELECT {CMS_COLUMNS} FROM cms_documents WHERE key = $1", key)
    return None if row is None else document_of(row)


async def lock_version(tx: PgTx) -> None:
    """Lock the CMS counter's row until the transaction ends (serialising CMS writes)."""
    await tx.execute("SELECT version FROM cms_version WHERE id = 1 FOR UPDATE")


async def bump_version(tx: PgTx) -> int:
    """Add one to the CMS counter (locking its row until the transaction ends); the new
    value."""
    return int(await tx.value(
        "UPDATE cms_version SET version = version + 1 WHERE id = 1 RETURNING version"))


async def raise_version(tx: PgTx, version: int) -> None:
    """Bring the CMS counter up to `version` (never down)."""
    await tx.execute("UPDATE cms_version SET version = GREATEST(version, $1) WHERE id = 1",
                     version)


async def upsert_document(tx: PgTx, doc: CmsDocument) -> None:
    """Insert or replace the document's row."""
    await tx.execute(
        f"INSERT INTO cms_documents ({CMS_COLUMNS}) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (key) DO UPDATE SET body = excluded.body, version = excluded.version, "
        "updated_at = excluded.updated_at", doc.key, doc.body, doc.version, doc.updated_at)


async def delete_document(tx: PgTx, key: str) -> bool:
    """Delete the document's row; whether there was one."""
    return await tx.count("DELETE FROM cms_documents WHERE key = $1", key) > 0


class PostgresCmsRepository(CmsRepository):
    """The CMS documents and the CMS version counter (see the module docstring)."""

    def __init__(self, db: PgDatabase) -> None:
        self._db = db

    async def get(self, key: str) -> CmsDocument | None:
        """The document, or None."""
        return await self._db.read(lambda tx: read_document(tx, key), what="cms.get")

    async def all(self) -> list[CmsDocument]:
        """Every document, ordered by key."""
        rows = await self._db.read(lambda tx: tx.all(
            f"SELECT {CMS_COLUMNS} FROM cms_documents ORDER BY key"), what="cms.all")
        return [document_of(r) for r in rows]

    async def version(self) -> int:
        """The CMS version: the counter (the highest document version, or above it once
        a document was removed; 0 when nothing was ever written)."""
        value = await self._db.read(lambda tx: tx.value(
            "SELECT version FROM cms_version WHERE id = 1"), what="cms.version")
        return 0 if value is None else int(value)

    async def put(self, key: str, body: str, *, now: float,
                  expect_version: int | None = None, check: bool = False) -> CmsDocument:
        """Write the document at the next CMS version and return it; logged. With
        `check`, `Conflict` (nothing written) unless its current version is
        `expect_version` (None: it must not exist)."""

        async def work(tx: PgTx) -> CmsDocument:
            version = await bump_version(tx)
            if check:
                check_expected(key, await read_document(tx, key), expect_version)
            doc = CmsDocument(key, body, version, now)
            await upsert_document(tx, doc)
            tx.log_put("cms", key, doc, now)
            return doc

        return await self._db.write(work, what="cms.put", retry=R.UNCOMMITTED)

    async def remove(self, key: str, *, now: float) -> None:
        """Delete the document, bumping the version and logging a delete; nothing at all
        when there is no such document."""

        async def work(tx: PgTx) -> None:
            await lock_version(tx)
            if await delete_document(tx, key):
                await bump_version(tx)
                tx.log_delete("cms", key, now)

        await self._db.write(work, what="cms.remove", retry=R.UNCOMMITTED)
