"""PostgreSQL errors and connection strings: what the store makes of them.

Errors are converted here, at one boundary, so no asyncpg or socket exception leaves
the store: integrity violations become `Conflict`; values PostgreSQL refuses (SQLSTATE
class 22) or asyncpg cannot send `StoreError`; "the database is away for now"
(connection failures, shutdowns, timeouts, lack of resources) `Retryable`, which
`postgres_db` retries and finally raises as `StoreUnavailable`; a serialisation
failure, a deadlock or a read-only server are `Retryable` too and, since they abort
the transaction, never leave its outcome unknown.
"""

from __future__ import annotations

import re

import asyncpg  # type: ignore[import-untyped]

from trimaran.store.base import Conflict, StoreError, StoreUnavailable

# SQLSTATE classes and codes meaning "not now": the transaction did not commit.
_NOT_COMMITTED = frozenset({"40001", "40P01"})               # serialization, deadlock
_READ_ONLY = frozenset({"25006"})                            # read_only_sql_transaction
_AWAY_PREFIXES = ("08", "53", "57P", "58")                   # connection, resources, shutdown
_AWAY = frozenset({"57014"})                                 # query_canceled (timeouts)
#: Connection refusals retrying will not fix: authentication, no such database.
MISCONFIGURED_PREFIXES = ("28", "3D")


class Retryable(Exception):
    """An attempt failed for a reason that may go away; `ambiguous` when it happened
    while committing (the transaction may or may not have committed)."""

    def __init__(self, message: str, *, ambiguous: bool = False) -> None:
        super().__init__(message)
        self.ambiguous = ambiguous


class ConnectFailed(Exception):
    """No host of the DSN gave a usable connection; `permanent` when every host refused
    us for a reason retrying will not fix (authentication, unknown database)."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


def split_hosts(dsn: str) -> list[str]:
    """One URL per host of a multi-host URL (``postgresql://u@h1:p1,h2:p2/db?…``), in
    order; ``[dsn]`` for anything else (one host, key=value strings)."""
    match = re.match(r"^(postgres(?:ql)?://)([^/?#]*)(.*)$", dsn, re.DOTALL)
    if match is None:
        return [dsn]
    scheme, netloc, rest = match.groups()
    userinfo, at, hosts = netloc.rpartition("@")
    if "," not in hosts:
        return [dsn]
    return [f"{scheme}{userinfo}{at}{host}{rest}" for host in hosts.split(",")]


def where_of(dsn: str) -> str:
    """The host:port part of a one-host URL, for messages (never the password)."""
    match = re.match(r"^postgres(?:ql)?://(?:[^@/?#]*@)?([^/?#]*)", dsn)
    return match.group(1) if match else "the database"


def describe(exc: BaseException) -> str:
    """A one-line account of a database error: class, SQLSTATE, message and detail."""
    text = str(exc) or type(exc).__name__
    state = getattr(exc, "sqlstate", None)
    detail = getattr(exc, "detail", None)
    head = f"{type(exc).__name__}" + (f" [{state}]" if state else "")
    return f"{head}: {text}" + (f" ({detail})" if detail else "")


def translate(exc: BaseException, where: str, *, committing: bool = False,
              broken: bool = False) -> BaseException:
    """The store error (or `Retryable`) for an exception from asyncpg, the socket or
    the work itself. `committing`: it was raised by ``COMMIT``; `broken`: the connection
    is closed."""
    if isinstance(exc, StoreError | Retryable):
        return exc
    if isinstance(exc, ConnectFailed):
        if exc.permanent:
            return StoreUnavailable(f"{where}: {exc}")
        return Retryable(f"{where}: {exc}")
    message = f"{where}: {describe(exc)}"
    if isinstance(exc, asyncpg.PostgresError):
        state = str(exc.sqlstate or "")
        if state.startswith("23"):
            return Conflict(message)
        if state in _NOT_COMMITTED or state in _READ_ONLY:
            return Retryable(message)
        if state in _AWAY or state.startswith(_AWAY_PREFIXES):
            return Retryable(message, ambiguous=committing)
        if state.startswith(MISCONFIGURED_PREFIXES):
            return StoreUnavailable(message)
        if state.startswith("22"):
            return StoreError(f"{where}: value cannot be stored: {describe(exc)}")
        return StoreError(message)
    if (isinstance(exc, OSError | TimeoutError | asyncpg.InternalClientError)
            or (broken and isinstance(exc, asyncpg.InterfaceError))):
        return Retryable(message, ambiguous=committing)
    if isinstance(exc, asyncpg.InterfaceError | ValueError | TypeError | OverflowError):
        # Values asyncpg cannot send: ints beyond 64 bits, lone surrogates, NUL in text…
        return StoreError(f"{where}: value cannot be stored: {describe(exc)}")
    return exc


def final_error(exc: BaseException, where: str, *, broken: bool = False) -> BaseException:
    """Like `translate`, for callers that do not retry: "retryable" becomes
    `StoreUnavailable`."""
    error = translate(exc, where, broken=broken)
    if isinstance(error, Retryable):
        return StoreUnavailable(str(error))
    return error
