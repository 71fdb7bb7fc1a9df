"""Versioned schema migrations, shared by the store backends.

A backend declares its schema as an ordered list of `Migration`s: version 1, 2, 3 …
(contiguous), each with a description and a step, either SQL text (one or more
statements, no transaction control) or a callable that receives the backend's
connection. `migrate` brings a database up to the latest version through a
`MigrationDriver`, which applies each pending migration in its own transaction
together with the row recording it in the ``schema_version`` table, so a crash
leaves the database at a version boundary, never between.

A database whose recorded version is newer than the newest migration the code
knows is refused with `SchemaTooNew`: it was written by a newer Trimaran and this
one could misread it.

The driver re-reads the version inside the migration's transaction, so two
processes opening the same database at once apply every migration exactly once.
The SQLite driver lives in `trimaran.store.sqlite_schema`; a PostgreSQL driver
implements the same two methods.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from trimaran.store.base import StoreError

C = TypeVar("C")

#: The table every backend keeps its applied versions in.
VERSION_TABLE = "schema_version"


class SchemaError(StoreError):
    """The schema cannot be brought to the version the code expects."""


class SchemaTooNew(SchemaError):
    """The database was written by a newer version of Trimaran."""


@dataclass(frozen=True, slots=True)
class Migration(Generic[C]):
    """One schema version: SQL text, or a callable run with the backend connection `C`.

    SQL text may hold several statements separated by ``;`` and must not contain
    transaction control (BEGIN/COMMIT): the driver owns the transaction.
    """

    version: int
    description: str
    step: str | Callable[[C], None]


class MigrationDriver(Protocol[C]):
    """What `migrate` needs from a backend."""

    def applied_version(self) -> int:
        """The highest applied version (0 for a new database); creates the version table."""

    def apply(self, migration: Migration[C]) -> bool:
        """In one transaction: run the step and record its version. Return False, changing
        nothing, when the version was already applied (by a concurrent process)."""


def check_sequence(migrations: Sequence[Migration[C]]) -> None:
    """Raise `SchemaError` unless the versions are 1, 2, 3 … in order with descriptions."""
    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            raise SchemaError(f"migration #{expected} has version {migration.version}, "
                              f"expected {expected}: versions must be 1, 2, 3 … in order")
        if not migration.description.strip():
            raise SchemaError(f"migration {migration.version} has no description")


def latest_version(migrations: Sequence[Migration[C]]) -> int:
    """The version a database has once every migration is applied."""
    return migrations[-1].version if migrations else 0


def pending(migrations: Sequence[Migration[C]], current: int) -> list[Migration[C]]:
    """The migrations to apply to a database at version `current`, in order.

    `SchemaTooNew` when `current` is beyond the newest known migration.
    """
    check_sequence(migrations)
    latest = latest_version(migrations)
    if current > latest:
        raise SchemaTooNew(
            f"the database schema is at version {current} but this Trimaran knows versions "
            f"up to {latest} only: it was written by a newer Trimaran; upgrade this one "
            f"(refusing to open it rather than misread it)")
    if current < 0:
        raise SchemaError(f"invalid schema version {current} in {VERSION_TABLE}")
    return [m for m in migrations if m.version > current]


def migrate(driver: MigrationDriver[C], migrations: Sequence[Migration[C]]) -> list[int]:
    """Apply the pending migrations through `driver`; return the versions applied here."""
    applied: list[int] = []
    for migration in pending(migrations, driver.applied_version()):
        if driver.apply(migration):
            applied.append(migration.version)
    return applied


def split_sql(script: str, is_complete: Callable[[str], bool]) -> list[str]:
    """Split `script` into statements at the ``;`` that end one, as told by `is_complete`
    (e.g. `sqlite3.complete_statement`, which knows strings, comments and triggers).

    Pieces that hold only blanks and ``--`` comments are dropped; trailing text that is
    not a complete statement raises `SchemaError`.
    """
    statements: list[str] = []
    buffer = ""
    for piece in script.split(";"):
        buffer += piece + ";"
        if is_complete(buffer):
            statement = buffer.strip()
            if not _only_comments(statement[:-1]):
                statements.append(statement)
            buffer = ""
    rest = buffer[:-1].strip()   # the ";" added after the last piece
    if rest and not _only_comments(rest):
        raise SchemaError(f"incomplete SQL statement at the end of a migration: {rest[:60]!r}")
    return statements


def _only_comments(text: str) -> bool:
    lines = (line.strip() for line in text.splitlines())
    return all(not line or line.startswith("--") for line in lines)
