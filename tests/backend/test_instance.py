"""A local PostgreSQL instance (trimaran.backend.instance): created, started, stopped,
killed and restarted with the server's own tools, as root too (it then runs as the
``postgres`` user), in a pytest tmp_path; and a clear error when PostgreSQL is absent."""

from __future__ import annotations

import asyncio
import os
import pwd
import socket
import stat
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest

from trimaran.backend import BackendError, PgInstance, PostgresNotInstalled, find_bin_dir


def _installed() -> bool:
    try:
        find_bin_dir()
    except PostgresNotInstalled:
        return False
    return True


needs_postgres = pytest.mark.skipif(not _installed(),
                                    reason="PostgreSQL server binaries are absent "
                                           "(Debian package 'postgresql')")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def query(dsn: str, sql: str) -> object:
    """The first value of `sql` (or its status for a command), over a new connection."""
    async def run() -> object:
        conn = await asyncpg.connect(dsn, timeout=5)
        try:
            if sql.lstrip().upper().startswith("SELECT"):
                return await conn.fetchval(sql)
            return await conn.execute(sql)
        finally:
            await conn.close()

    return asyncio.run(run())


def make_tools(root: Path, version: str, tools: tuple[str, ...]) -> None:
    bin_dir = root / version / "bin"
    bin_dir.mkdir(parents=True)
    for tool in tools:
        (bin_dir / tool).write_text("#!/bin/sh\n")
        (bin_dir / tool).chmod(0o755)


# --- finding PostgreSQL -----------------------------------------------------------------

def test_missing_binaries_are_a_clear_error_naming_the_debian_package(tmp_path: Path) -> None:
    instance = PgInstance(tmp_path / "data", "127.0.0.1", free_port(),
                          bin_dir=tmp_path / "no" / "bin")
    for action in (instance.initdb, instance.start, instance.stop):
        with pytest.raises(PostgresNotInstalled, match=r"no/bin.*Debian package 'postgresql'"):
            action()
    with pytest.raises(PostgresNotInstalled, match=r"empty/\*/bin.*'postgresql'"):
        find_bin_dir(root=tmp_path / "empty")
    assert not (tmp_path / "data").exists()            # nothing made on the way


def test_the_highest_complete_version_is_used(tmp_path: Path) -> None:
    full = ("initdb", "pg_ctl", "postgres")
    make_tools(tmp_path, "9.6", full)
    make_tools(tmp_path, "13", full)
    make_tools(tmp_path, "15", full)
    make_tools(tmp_path, "16", ("initdb", "pg_ctl"))          # no server binary: skipped
    assert find_bin_dir(root=tmp_path) == tmp_path / "15" / "bin"
    assert find_bin_dir(tmp_path / "13" / "bin") == tmp_path / "13" / "bin"


# --- a real instance --------------------------------------------------------------------

@needs_postgres
def test_an_instance_lives_through_initdb_start_stop_kill_and_restart(tmp_path: Path) -> None:
    instance = PgInstance(tmp_path / "be" / "data", "127.0.0.1", free_port(), durable=False)
    assert not instance.is_running() and instance.pid() is None
    instance.stop()                                       # not running: nothing to do
    instance.kill()

    assert instance.initdb() is True
    assert stat.S_IMODE(instance.data_dir.stat().st_mode) == 0o700
    if os.geteuid() == 0:                                 # the server never runs as root
        assert instance.data_dir.stat().st_uid == pwd.getpwnam("postgres").pw_uid
        for parent in instance.data_dir.parents:          # reachable, never made readable
            mode = parent.stat().st_mode
            assert mode & (stat.S_IXOTH | stat.S_IXUSR), parent
    hba = (instance.data_dir / "pg_hba.conf").read_text()
    assert "127.0.0.0/8" in hba and "0.0.0.0" not in hba and "::" not in hba

    instance.start()
    pid = instance.pid()
    assert instance.is_running() and pid is not None
    assert query(instance.dsn, "SELECT current_user || '@' || current_database()") == \
        "trimaran@trimaran"
    query(instance.dsn, "CREATE TABLE kept (x integer); INSERT INTO kept VALUES (42)")
    with pytest.raises(OSError):                          # its own address only
        query(instance.dsn.replace("127.0.0.1", "127.0.0.2"), "SELECT 1")
    instance.start()                                      # running: nothing to do
    assert instance.pid() == pid
    assert instance.log_path.exists() and "ready to accept" in instance.log_tail()

    instance.stop()
    assert not instance.is_running()
    with pytest.raises(OSError):                          # really down
        query(instance.dsn, "SELECT 1")
    assert instance.initdb() is False                     # idempotent: data kept
    instance.start()
    assert query(instance.dsn, "SELECT x FROM kept") == 42

    instance.kill()                                       # a crash: SIGKILL, no shutdown
    assert not instance.is_running()
    with pytest.raises(OSError):
        query(instance.dsn, "SELECT 1")
    instance.start()                                      # crash recovery
    assert query(instance.dsn, "SELECT x FROM kept") == 42
    instance.stop(mode="immediate")
    assert not instance.is_running()


@needs_postgres
def test_a_directory_with_other_content_is_refused_and_left_alone(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "precious.txt").write_text("keep me")
    with pytest.raises(BackendError, match="not an empty directory"):
        PgInstance(data, "127.0.0.1", free_port()).initdb()
    assert (data / "precious.txt").read_text() == "keep me"


def test_a_bad_stop_mode_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="smart, fast, immediate"):
        PgInstance(tmp_path / "data", "127.0.0.1", 5432).stop(mode="gentle")
