"""A local PostgreSQL server instance: create it (`initdb`, or `clone_from` another as its
hot standby), start, stop and kill it.

Used by `trimaran up` to run a pool's Back End on this machine and by the tests
(real PostgreSQL, no mocks: DESIGN §5).

Theory of operation: everything goes through the server's own tools (``initdb``,
``pg_ctl``, ``postgres --single``) found in `bin_dir`, else in the highest
``/usr/lib/postgresql/<version>/bin`` (Debian's layout). The instance listens on one
TCP address (`host`, meant to be a 127.x loopback address) and on a Unix socket in
its data directory (not when mirrored: TCP only); authentication is ``trust`` for
local sockets and for 127.0.0.0/8 only (replication included, for the mirroring
agent), and the superuser is ``trimaran``, owner of a database ``trimaran``. `dsn` is
the URL to reach it.

Root: PostgreSQL refuses to run as root. When this process is root, every server
tool runs as the ``postgres`` system user (created by Debian's ``postgresql``
package); the data directory (mode 0700) and the log file are chowned to it, and
every ancestor directory of both that ``postgres`` could not traverse gets the
``o+x`` bit — search only, never read or write. That is what makes pytest's
``tmp_path`` usable (its base, ``/tmp/pytest-of-root``, is 0700): the change is logged.

The server's log goes to `log_path` (default ``<data_dir>.log``, beside the data
directory). A Unix socket path longer than the kernel allows (107 bytes) is not
created: the instance then listens on TCP only.

Mirroring (`mirrored=True`; DESIGN §3 "Back End mirroring"): the instance also gets
`REPLICATION_SETTINGS` — streaming replication, ``synchronous_commit=on``, and what
``pg_rewind`` needs (``wal_log_hints``, ``full_page_writes``, WAL kept for a returning
partner). Every per-instance setting (address, port, these) is given on the command
line at each start, never in a configuration file: ``pg_rewind`` and
``pg_basebackup`` copy the partner's files, and a command-line setting cannot be
overwritten by a copy. The settings the mirroring agent changes while the server runs
(``synchronous_standby_names``, ``default_transaction_read_only``) and the standby
configuration (``primary_conninfo``, ``standby.signal``) live in
``postgresql.auto.conf`` and the data directory, where ``ALTER SYSTEM``,
`configure_standby` and `set_auto_conf` write them — hence never on the command line,
which would override them. `promote`, `rewind_from` and `reclone_from` are the other
tools the agent (`trimaran.backend.agent`) needs.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import pwd
import re
import shlex
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from trimaran.backend.pgconf import parse_conf, render_conf

log = logging.getLogger(__name__)

#: Where Debian installs the server binaries, one directory per major version.
DEBIAN_ROOT = Path("/usr/lib/postgresql")
#: The Debian package that provides them (and the ``postgres`` system user).
DEBIAN_PACKAGE = "postgresql"
#: The system user the server runs as when we are root.
SYSTEM_USER = "postgres"
#: The superuser role and the database every instance has.
SUPERUSER = "trimaran"
DATABASE = "trimaran"

_STOP_MODES = ("smart", "fast", "immediate")
_MAX_SOCKET_PATH = 107                    # sun_path minus its NUL (PostgreSQL's limit)
# Not flushed to disk, but written to the OS at every commit: survives a crash (or kill)
# of PostgreSQL, not one of the machine.
_NOT_DURABLE = {"fsync": "off", "full_page_writes": "off"}

#: Server settings of a mirrored instance (principal or mirror), on top of the others.
REPLICATION_SETTINGS: Mapping[str, str] = {
    "wal_level": "replica",
    "max_wal_senders": "10",
    "hot_standby": "on",
    "synchronous_commit": "on",
    "wal_log_hints": "on",                # pg_rewind needs it (or data checksums)
    "full_page_writes": "on",             # pg_rewind needs it, even when not durable
    "wal_keep_size": "512MB",             # WAL a returning partner rewinds or streams from
    "wal_retrieve_retry_interval": "1s",  # a standby reconnects within a second
    "wal_receiver_status_interval": "1s",
    "wal_sender_timeout": "10s",
    "wal_receiver_timeout": "10s",
}

_AUTO_CONF = "postgresql.auto.conf"
_STANDBY_SIGNAL = "standby.signal"

_HBA = """\
# Written by Trimaran: trust on the local socket and on loopback (127.0.0.0/8) only.
# TYPE  DATABASE     USER  ADDRESS       METHOD
local   all          all                 trust
host    all          all   127.0.0.0/8   trust
local   replication  all                 trust
host    replication  all   127.0.0.0/8   trust
"""


class BackendError(Exception):
    """Root of the Back End errors (PostgreSQL instances and their mirroring)."""


class PostgresNotInstalled(BackendError):
    """The PostgreSQL server binaries (or its system user) are not on this machine."""


def find_bin_dir(bin_dir: Path | None = None, *, root: Path | None = None) -> Path:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``: `bin_dir` when given,
    else the highest version under `root` (default `DEBIAN_ROOT`). `PostgresNotInstalled`
    names the package."""
    root = DEBIAN_ROOT if root is None else root
    if bin_dir is not None:
        candidates = [bin_dir]
    else:
        versions = root.glob("*/bin") if root.is_dir() else iter(())
        candidates = sorted(versions, key=_version_key, reverse=True)
    for candidate in candidates:
        if all(os.access(candidate / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "postgres")):
            return candidate
    where = str(bin_dir) if bin_dir is not None else f"{root}/*/bin"
    raise PostgresNotInstalled(
        f"PostgreSQL server binaries (initdb, pg_ctl, postgres) not found in {where}: "
        f"install the Debian package '{DEBIAN_PACKAGE}' (apt-get install {DEBIAN_PACKAGE})")


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", path.parent.name)) or (0,)


class PgInstance:
    """One PostgreSQL server: its data directory, its loopback address and port.

    `durable=False` turns fsync off everywhere (initdb, single-user mode and the
    server): for tests only, a crash of the machine (not of PostgreSQL, which a test
    may kill) may then lose data. `mirrored=True` adds `REPLICATION_SETTINGS` (the
    instance is, or will be, one of a mirrored pair). `settings`
    are extra server settings (``name -> value``) given at every start.
    """

    def __init__(self, data_dir: Path, host: str, port: int, *, bin_dir: Path | None = None,
                 log_path: Path | None = None, durable: bool = True, mirrored: bool = False,
                 settings: Mapping[str, str] | None = None) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.host = host
        self.port = port
        self.bin_dir = bin_dir
        self.log_path = (Path(log_path).absolute() if log_path is not None
                         else self.data_dir.with_name(self.data_dir.name + ".log"))
        self.durable = durable
        self.mirrored = mirrored
        self.settings = dict(settings or {})

    def __repr__(self) -> str:
        return f"PgInstance({str(self.data_dir)!r}, {self.host!r}, {self.port})"

    @property
    def dsn(self) -> str:
        """The URL of the instance's ``trimaran`` database as its superuser."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"postgresql://{SUPERUSER}@{host}:{self.port}/{DATABASE}"

    @property
    def initialized(self) -> bool:
        """True once `initdb` has created the data directory."""
        return (self.data_dir / "PG_VERSION").exists()

    # --- lifecycle ----------------------------------------------------------------------

    def initdb(self) -> bool:
        """Create the data directory, the ``trimaran`` superuser and database; False (doing
        nothing) when it already exists. A failure leaves no half-made directory."""
        bins = find_bin_dir(self.bin_dir)
        if self.initialized:
            return False
        self._prepare_data_dir()
        try:
            self._run([str(bins / "initdb"), "-D", str(self.data_dir), "-U", SUPERUSER,
                       "--auth-local=trust", "--auth-host=trust", "--encoding=UTF8",
                       "--locale=C", *([] if self.durable else ["--no-sync"]),
                       *(["--data-checksums"] if self.mirrored else [])],
                      what="initdb", timeout=120)
            self._write_owned(self.data_dir / "pg_hba.conf", _HBA)
            self._create_database(bins)
        except BaseException:
            self._wipe_data_dir()
            raise
        log.info("postgres: initialised %s", self.data_dir)
        return True

    def clone_from(self, host: str, port: int, *, timeout: float = 300.0,
                   application_name: str | None = None) -> bool:
        """Create the data directory as a copy of the running server at `host`:`port`
        (``pg_basebackup -R``): once started, this instance is a hot standby streaming
        from it — as `application_name` when given (what the primary's
        ``synchronous_standby_names`` names; see `configure_standby`). False (doing
        nothing) when the data directory exists already."""
        bins = find_bin_dir(self.bin_dir)
        if self.initialized:
            return False
        self._prepare_data_dir()
        try:
            self._run([str(bins / "pg_basebackup"), "-h", host, "-p", str(port),
                       "-U", SUPERUSER, "-D", str(self.data_dir), "-R", "-X", "stream",
                       "-c", "fast", *([] if self.durable else ["--no-sync"])],
                      what="pg_basebackup", timeout=timeout)
        except BaseException:
            self._wipe_data_dir()
            raise
        log.info("postgres: cloned %s:%d into %s", host, port, self.data_dir)
        if application_name is not None:
            self.configure_standby(host, port, application_name=application_name)
        return True

    def start(self, timeout: float = 30.0) -> None:
        """Start the server and wait until it accepts connections (at most `timeout`
        seconds); nothing when it runs already. `BackendError` with the log's tail."""
        bins = find_bin_dir(self.bin_dir)
        if self.is_running():
            return
        if not self.initialized:
            raise BackendError(f"{self.data_dir} is not a PostgreSQL data directory: "
                               "call initdb() first")
        self._clear_stale_locks()
        self._prepare_log()
        options = " ".join(f"-c {shlex.quote(f'{k}={v}')}"
                           for k, v in self._server_settings().items())
        try:
            self._run([str(bins / "pg_ctl"), "start", "-D", str(self.data_dir),
                       "-l", str(self.log_path), "-w", "-t", str(max(1, math.ceil(timeout))),
                       "-o", options], what="pg_ctl start", timeout=timeout + 10)
        except BackendError as exc:
            raise BackendError(f"{exc}\n--- {self.log_path} (tail) ---\n{self.log_tail()}"
                               ) from exc
        log.info("postgres: started %s on %s:%d", self.data_dir, self.host, self.port)

    def stop(self, mode: str = "fast", timeout: float = 30.0) -> None:
        """Stop the server (``smart``, ``fast`` or ``immediate`` shutdown) and wait for it;
        nothing when it is not running."""
        if mode not in _STOP_MODES:
            raise ValueError(f"stop mode must be one of {', '.join(_STOP_MODES)}, not {mode!r}")
        bins = find_bin_dir(self.bin_dir)
        if not self.is_running():
            return
        self._run([str(bins / "pg_ctl"), "stop", "-D", str(self.data_dir), "-m", mode,
                   "-w", "-t", str(max(1, math.ceil(timeout)))],
                  what="pg_ctl stop", timeout=timeout + 10)
        log.info("postgres: stopped %s (%s)", self.data_dir, mode)

    def kill(self, timeout: float = 10.0) -> None:
        """SIGKILL the postmaster and its backends (its process group), as a crash of
        the host would; wait until they are gone. Nothing when it is not running. The
        next `start` runs crash recovery."""
        pid = self.pid()
        if pid is None:
            return
        try:
            group = os.getpgid(pid)
        except ProcessLookupError:        # died meanwhile
            group = -1
        with contextlib.suppress(ProcessLookupError):
            if group == pid:              # pg_ctl makes the postmaster a session leader
                os.killpg(group, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while _alive(pid) or (group == pid and _group_alive(group)):
            if time.monotonic() > deadline:
                raise BackendError(f"postgres {pid} of {self.data_dir} survived SIGKILL")
            time.sleep(0.02)
        self._clear_stale_locks()
        log.warning("postgres: killed %s (pid %d)", self.data_dir, pid)

    def pid(self) -> int | None:
        """The running postmaster's process id, or None."""
        try:
            first = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
            pid = int(first)
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) and _is_postgres(pid) else None

    def is_running(self) -> bool:
        """True while the postmaster runs (it may still be starting or stopping)."""
        return self.pid() is not None

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the server log ("" when there is none)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # --- mirroring ----------------------------------------------------------------------

    @property
    def standby_configured(self) -> bool:
        """True when the data directory is set up to start as a standby
        (``standby.signal`` exists)."""
        return (self.data_dir / _STANDBY_SIGNAL).exists()

    def promote(self, timeout: float = 30.0) -> None:
        """Turn the running standby into a primary (``pg_ctl promote``) and wait until it
        accepts writes. `BackendError` when it is not running or not a standby."""
        bins = find_bin_dir(self.bin_dir)
        if not self.is_running():
            raise BackendError(f"{self.data_dir} is not running: cannot promote it")
        self._run([str(bins / "pg_ctl"), "promote", "-D", str(self.data_dir), "-w",
                   "-t", str(max(1, math.ceil(timeout)))],
                  what="pg_ctl promote", timeout=timeout + 10)
        log.info("postgres: promoted %s", self.data_dir)

    def rewind_from(self, host: str, port: int, *, timeout: float = 120.0) -> str:
        """Make the stopped data directory a copy of the running server at `host`:`port`
        that can follow it (``pg_rewind``): the blocks changed since the histories
        diverged are copied back, and the files ``pg_rewind`` copies whole
        (``postgresql.auto.conf`` among them) are the source's. A directory left by a
        crash goes through crash recovery first (single-user mode, ``pg_rewind``'s
        default). Returns the tool's output ("no rewind required" when nothing diverged);
        `BackendError` when it fails — the directory may then be unusable: re-clone it
        (`reclone_from`)."""
        bins = find_bin_dir(self.bin_dir)
        if self.is_running():
            raise BackendError(f"{self.data_dir} is running: stop it before pg_rewind")
        self._clear_stale_locks()
        self._finish_crash_recovery(bins, timeout=timeout)
        source = f"host={host} port={port} user={SUPERUSER} dbname={DATABASE}"
        out = self._run([str(bins / "pg_rewind"), "--target-pgdata", str(self.data_dir),
                         "--source-server", source, "--no-ensure-shutdown",
                         *([] if self.durable else ["--no-sync"])],
                        what="pg_rewind", timeout=timeout)
        log.info("postgres: rewound %s from %s:%d", self.data_dir, host, port)
        return out

    def reclone_from(self, host: str, port: int, *, application_name: str | None = None,
                     timeout: float = 300.0) -> None:
        """Throw the data directory away and clone it again from the running server at
        `host`:`port` (`clone_from`): the last resort of a returning partner that cannot
        be rewound. Stops the instance first (immediately) when it runs."""
        if self.is_running():
            self.stop(mode="immediate")
        log.warning("postgres: discarding %s to clone it again from %s:%d", self.data_dir,
                    host, port)
        self._wipe_data_dir()
        self.clone_from(host, port, timeout=timeout, application_name=application_name)

    def configure_standby(self, host: str, port: int, *, application_name: str) -> None:
        """Set the stopped data directory up to start as a hot standby of `host`:`port`,
        known to it as `application_name`: ``primary_conninfo`` in
        ``postgresql.auto.conf`` and ``standby.signal``."""
        if self.is_running():
            raise BackendError(f"{self.data_dir} is running: stop it before configuring "
                               "it as a standby")
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", application_name):
            raise ValueError(f"application name {application_name!r} must be letters, "
                             "digits, '_', '.' or '-'")
        conninfo = (f"host={host} port={port} user={SUPERUSER} "
                    f"application_name={application_name}")
        self.set_auto_conf({"primary_conninfo": conninfo, "primary_slot_name": None})
        self._write_owned(self.data_dir / _STANDBY_SIGNAL, "")

    def drop_standby_signal(self) -> None:
        """Remove ``standby.signal``: the next start is not as a standby (unless it is
        configured again). Nothing when there is none."""
        (self.data_dir / _STANDBY_SIGNAL).unlink(missing_ok=True)

    def auto_conf(self) -> dict[str, str]:
        """The settings in ``postgresql.auto.conf`` (what ``ALTER SYSTEM`` wrote)."""
        try:
            return parse_conf((self.data_dir / _AUTO_CONF).read_text())
        except FileNotFoundError:
            return {}

    def set_auto_conf(self, changes: Mapping[str, str | None]) -> None:
        """Change ``postgresql.auto.conf`` of the stopped instance as ``ALTER SYSTEM SET``
        (a value) or ``RESET`` (None) would; written atomically."""
        if self.is_running():
            raise BackendError(f"{self.data_dir} is running: use ALTER SYSTEM instead")
        settings = self.auto_conf()
        for name, value in changes.items():
            if value is None:
                settings.pop(name.lower(), None)
            else:
                settings[name.lower()] = value
        lines = ["# Do not edit this file manually!",
                 "# It will be overwritten by the ALTER SYSTEM command.",
                 render_conf(settings)]
        path = self.data_dir / _AUTO_CONF
        temporary = path.with_name(_AUTO_CONF + ".trimaran")
        self._write_owned(temporary, "\n".join(lines))
        os.replace(temporary, path)

    def cluster_state(self) -> str:
        """The state ``pg_controldata`` reports ("in production", "shut down", "shut down
        in recovery", "in crash recovery", ...); "" when it cannot be read."""
        bins = find_bin_dir(self.bin_dir)
        try:
            out = self._run([str(bins / "pg_controldata"), "-D", str(self.data_dir)],
                            what="pg_controldata", timeout=30)
        except BackendError:
            return ""
        match = re.search(r"^Database cluster state:\s*(.+)$", out, re.MULTILINE)
        return match.group(1).strip() if match else ""

    def _finish_crash_recovery(self, bins: Path, *, timeout: float) -> None:
        """Run crash recovery in single-user mode when the directory was not shut down
        cleanly — with this instance's settings, so that ``wal_log_hints`` stays on
        (``pg_rewind``'s own recovery run would turn it off and then refuse to work)."""
        if self.cluster_state() in ("shut down", "shut down in recovery"):
            return
        self.drop_standby_signal()        # single-user mode cannot run as a standby
        options = [arg for name, value in self._server_settings().items()
                   if name not in ("listen_addresses", "unix_socket_directories")
                   for arg in ("-c", f"{name}={value}")]
        self._run([str(bins / "postgres"), "--single", "-D", str(self.data_dir), *options,
                   "template1"], what="crash recovery", timeout=timeout, input="")
        log.info("postgres: crash recovery of %s done (single-user mode)", self.data_dir)

    # --- helpers ------------------------------------------------------------------------

    def _server_settings(self) -> dict[str, str]:
        sockets = str(self.data_dir)
        if len(sockets) + len(f"/.s.PGSQL.{self.port}.lock") > _MAX_SOCKET_PATH:
            sockets = ""                  # too long for a Unix socket: TCP only
        if self.mirrored:
            sockets = ""                  # pg_rewind would try to copy a socket file
        settings = {"listen_addresses": self.host, "port": str(self.port),
                    "unix_socket_directories": sockets}
        if not self.durable:
            settings.update(_NOT_DURABLE)
        if self.mirrored:
            settings.update(REPLICATION_SETTINGS)
        settings.update(self.settings)
        return settings

    def _create_database(self, bins: Path) -> None:
        """CREATE DATABASE in single-user mode: no server, no network needed yet."""
        fsync = [] if self.durable else ["-c", "fsync=off"]
        out = self._run([str(bins / "postgres"), "--single", "-D", str(self.data_dir), *fsync,
                         "-c", "exit_on_error=on", "postgres"],
                        what="CREATE DATABASE", timeout=120,
                        input=f'CREATE DATABASE "{DATABASE}" OWNER "{SUPERUSER}";\n')
        if "ERROR" in out:
            raise BackendError(f"CREATE DATABASE {DATABASE} failed: {out.strip()}")

    def _prepare_data_dir(self) -> None:
        """Create the (empty) data directory, 0700, owned by the server's user; refuse a
        directory that holds something else (it is never wiped)."""
        if self.data_dir.exists() and (not self.data_dir.is_dir()
                                       or any(self.data_dir.iterdir())):
            raise BackendError(f"{self.data_dir} exists and is not an empty directory: "
                               "refusing to create a PostgreSQL data directory there")
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.data_dir.chmod(0o700)
        owner = _system_user()
        if owner is not None:
            os.chown(self.data_dir, owner.pw_uid, owner.pw_gid)
            _make_traversable(self.data_dir.parent, owner)

    def _prepare_log(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.touch(mode=0o600, exist_ok=True)
        owner = _system_user()
        if owner is not None:
            os.chown(self.log_path, owner.pw_uid, owner.pw_gid)
            _make_traversable(self.log_path.parent, owner)

    def _write_owned(self, path: Path, text: str) -> None:
        path.write_text(text)
        path.chmod(0o600)
        owner = _system_user()
        if owner is not None:
            os.chown(path, owner.pw_uid, owner.pw_gid)

    def _wipe_data_dir(self) -> None:
        """Empty the data directory after a failed initdb, so the next one can run."""
        if not self.data_dir.is_dir():
            return
        for entry in self.data_dir.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)

    def _clear_stale_locks(self) -> None:
        """Remove the lock files of a postmaster that is gone (killed): a zombie left
        unreaped by init would otherwise make the next postmaster refuse to start."""
        if self.is_running():
            return
        (self.data_dir / "postmaster.pid").unlink(missing_ok=True)
        (self.data_dir / f".s.PGSQL.{self.port}.lock").unlink(missing_ok=True)

    def _run(self, args: Sequence[str], *, what: str, timeout: float,
             input: str | None = None) -> str:
        """Run a server tool (as the ``postgres`` user when we are root); its output."""
        owner = _system_user()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        try:
            if owner is not None:
                env["HOME"] = owner.pw_dir
                done = subprocess.run(
                    args, input=input, capture_output=True, text=True, timeout=timeout,
                    cwd="/", env=env, check=False, user=owner.pw_uid, group=owner.pw_gid,
                    extra_groups=[])
            else:
                done = subprocess.run(args, input=input, capture_output=True, text=True,
                                      timeout=timeout, cwd="/", env=env, check=False)
        except subprocess.TimeoutExpired as exc:
            raise BackendError(f"{what} for {self.data_dir} did not finish within "
                               f"{timeout:.0f} s") from exc
        except OSError as exc:
            raise BackendError(f"{what} for {self.data_dir} could not run: {exc}") from exc
        output = (done.stdout or "") + (done.stderr or "")
        if done.returncode != 0:
            raise BackendError(f"{what} for {self.data_dir} failed "
                               f"(exit {done.returncode}): {output.strip()}")
        return output


def _system_user() -> pwd.struct_passwd | None:
    """The ``postgres`` account when we are root (the server refuses root), else None."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        raise PostgresNotInstalled(
            f"running as root, PostgreSQL must run as the '{SYSTEM_USER}' system user, which "
            f"does not exist: install the Debian package '{DEBIAN_PACKAGE}'") from None


def _make_traversable(directory: Path, owner: pwd.struct_passwd) -> None:
    """Give `owner` search access to `directory` and its ancestors by adding ``o+x`` where
    it has none (never read or write)."""
    for path in (directory, *directory.parents):
        st = path.stat()
        if (st.st_mode & stat.S_IXOTH
                or (st.st_uid == owner.pw_uid and st.st_mode & stat.S_IXUSR)
                or (st.st_gid == owner.pw_gid and st.st_mode & stat.S_IXGRP)):
            continue
        path.chmod(stat.S_IMODE(st.st_mode) | stat.S_IXOTH)
        log.info("postgres: added o+x to %s so that '%s' can reach its data", path,
                 owner.pw_name)


def _proc_state(pid: int) -> str | None:
    """The state letter of a process from /proc (None when it does not exist)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()[0]


def _alive(pid: int) -> bool:
    """True when `pid` exists and is not a zombie."""
    if Path("/proc/self").exists():
        return _proc_state(pid) not in (None, "Z", "X")
    try:                                       # no /proc: kill(0) is all we have
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_postgres(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip().startswith(("postgres", "postmaster"))
    except OSError:
        return True                            # no /proc to ask: trust the pid file


def _group_alive(group: int) -> bool:
    """True while a live (non-zombie) process of process group `group` remains."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] not in ("Z", "X"):
            return True
    return False
