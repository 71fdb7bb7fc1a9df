"""SQLite repository of the CMS documents (logged under `cms`, key = document key).

The CMS version is a counter kept in the one row of ``cms_version``: every write
(a put, or the removal of a document that was there) bumps it by one, and a document
written carries the new value, so the counter is the highest document version until a
delete, after which it stays ahead: it never goes backwards, and a replica comparing
versions sees deletes too. The single writer of SQLite serialises the bumps.
"""

from __future__ import annotations

import sqlite3

from trimaran.store.base import CmsRepository, Conflict
from trimaran.store.model import CmsDocument
from trimaran.store.sqlite_db import SqliteDatabase, Tx

CMS_COLUMNS = "key, body, version, updated_at"


def document_of(row: sqlite3.Row) -> CmsDocument:
    """The document in a row of `CMS_COLUMNS`."""
    return CmsDocument(row["key"], row["body"], row["version"], row["updated_at"])


def read_document(tx: Tx, key: str) -> CmsDocument | None:
    """The document, or None."""
    row = tx.one(f"SELECT {CMS_COLUMNS} FROM cms_documents WHERE key = ?", (key,))
    return None if row is None else document_of(row)


def cms_version(tx: Tx) -> int:
    """The CMS counter."""
    row = tx.one("SELECT version FROM cms_version WHERE id = 1")
    return 0 if row is None else int(row[0])


def bump_version(tx: Tx) -> int:
    """Add one to the CMS counter; the new value."""
    tx.execute("UPDATE cms_version SET version = version + 1 WHERE id = 1")
    return cms_version(tx)


def raise_version(tx: Tx, version: int) -> None:
    """Bring the CMS counter up to `version` (never down)."""
    tx.execute("UPDATE cms_version SET version = MAX(version, ?) WHERE id = 1", (version,))


def upsert_document(tx: Tx, doc: CmsDocument) -> None:
    """Insert or replace the document's row."""
    tx.execute(
        f"INSERT INTO cms_documents ({CMS_COLUMNS}) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (key) DO UPDATE SET body = excluded.body, version = excluded.version, "
        "updated_at = excluded.updated_at", (doc.key, doc.body, doc.version, doc.updated_at))


def delete_document(tx: Tx, key: str) -> bool:
    """Delete the document's row; whether there was one."""
    return tx.execute("DELETE FROM cms_documents WHERE key = ?", (key,)).rowcount > 0


def check_expected(key: str, current: CmsDocument | None, expect_version: int | None) -> None:
    """`Conflict` unless the document's version is `expect_version` (None: absent)."""
    have = None if current is None else current.version
    if have != expect_version:
        raise Conflict(f"CMS document {key}: expected "
                       f"{'absent' if expect_version is None else f'version {expect_version}'}"
                       f", found {'absent' if have is None else f'version {have}'}")


class SqliteCmsRepository(CmsRepository):
    """The CMS documents and the CMS version counter (see the module docstring)."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def get(self, key: str) -> CmsDocument | None:
        """The document, or None."""
        return await self._db.read(lambda tx: read_document(tx, key))

    async def all(self) -> list[CmsDocument]:
        """Every document, ordered by key."""
        rows = await self._db.read(lambda tx: tx.all(
            f"SELECT {CMS_COLUMNS} FROM cms_documents ORDER BY key"))
        return [document_of(r) for r in rows]

    async def version(self) -> int:
        """The CMS version: the counter (the highest document version, or above it once
        a document was removed; 0 when nothing was ever written)."""
        return await self._db.read(cms_version)

    async def put(self, key: str, body: str, *, now: float,
                  expect_version: int | None = None, check: bool = False) -> CmsDocument:
        """Write the document at the next CMS version and return it; logged. With
        `check`, `Conflict` (nothing written) unless its current version is
        `expect_version` (None: it must not exist)."""

        def work(tx: Tx) -> CmsDocument:
            if check:
                check_expected(key, read_document(tx, key), expect_version)
            doc = CmsDocument(key, body, bump_version(tx), now)
            upsert_document(tx, doc)
            tx.log_put("cms", key, doc, now)
            return doc

        return await self._db.write(work)

    async def remove(self, key: str, *, now: float) -> None:
        """Delete the document, bumping the version and logging a delete; nothing at all
        when there is no such document."""

        def work(tx: Tx) -> None:
            if delete_document(tx, key):
                bump_version(tx)
                tx.log_delete("cms", key, now)

        await self._db.write(work)
