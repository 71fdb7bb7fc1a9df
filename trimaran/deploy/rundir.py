"""The run directory of a deployment started on this machine.

Layout::

    RUNDIR/topology.yaml          the topology the deployment runs (copied at `up`)
    RUNDIR/state.json             servers started: pid, addresses (rewritten atomically)
    RUNDIR/secrets/POOL.key       per-pool secret (nonces, Record-Route tokens), mode 0600
    RUNDIR/secrets/_admin.key     the admin key (admin tokens, run-dir calls), mode 0600
    RUNDIR/audit-pending.jsonl    audit records not yet in the CMS (master unreachable)
    RUNDIR/data/POOL/store.sqlite a Standard Edition pool's embedded store
    RUNDIR/logs/SERVER.log        each server's log
    RUNDIR/cms/SERVER.json        each server's replica of the CMS
    RUNDIR/certs/ca.pem, SERVER.pem  the deployment CA and server certificates (settings.tls)
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path

from trimaran.security import deployment as tls_deployment
from trimaran.topology.model import Topology

LAST_RUNDIR = Path.home() / ".trimaran-last-dir"


class RunDirError(Exception):
    """The run directory is missing or inconsistent."""


@dataclass
class ServerState:
    """What `up` recorded about one server process."""

    name: str
    pool: str
    role: str
    address: str
    sip_port: int
    admin_port: int
    pid: int | None = None


@dataclass
class DatabaseState:
    """A Back End PostgreSQL instance run for a pool (principal or mirror)."""

    name: str          # "<pool>-principal" / "<pool>-mirror" (the role it started with)
    pool: str
    role: str
    address: str
    port: int
    partner: str | None = None     # the other instance of a mirrored pair
    agent_port: int | None = None  # its mirroring agent's admin API (mirrored pairs)
    agent_pid: int | None = None


@dataclass
class DeploymentState:
    """Every server and database of the deployment."""

    topology: str
    servers: dict[str, ServerState] = field(default_factory=dict)
    databases: dict[str, DatabaseState] = field(default_factory=dict)


class RunDir:
    """Paths and state of one run directory."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path).resolve()

    @property
    def topology(self) -> Path:
        """The deployment's topology file."""
        return self.path / "topology.yaml"

    @property
    def state_file(self) -> Path:
        """The recorded process state."""
        return self.path / "state.json"

    def log_file(self, server: str) -> Path:
        """A server's log file."""
        return self.path / "logs" / f"{server}.log"

    def store_path(self, pool: str) -> Path:
        """A Standard Edition pool's SQLite file."""
        return self.path / "data" / pool / "store.sqlite"

    def database_dir(self, name: str) -> Path:
        """The data directory of a Back End PostgreSQL instance."""
        return self.path / "db" / name

    def agent_state(self, name: str) -> Path:
        """The durable role/term file of a mirroring agent."""
        return self.path / "db" / f"{name}.agent.json"

    def witness_dir(self, name: str) -> Path:
        """The durable records of a witness."""
        return self.path / "witness" / name

    def cms_replica(self, server: str) -> Path:
        """A server's on-disk copy of the CMS."""
        return self.path / "cms" / f"{server}.json"

    def cms_secret(self) -> bytes:
        """The deployment's key for CMS replication calls."""
        return self.secret("_cms")

    def admin_key(self) -> bytes:
        """The deployment's admin key: signs admin tokens and run-dir calls (OPS-6)."""
        return self.secret("_admin")

    def pair_secret(self, a: str, b: str) -> bytes:
        """The key two paired pools sign their Backup Service calls with."""
        first, second = sorted((a, b))
        return self.secret(f"_pair-{first}-{second}")

    def create(self) -> None:
        """Create the directory tree."""
        for sub in ("logs", "data", "secrets"):
            (self.path / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.path / "secrets", 0o700)

    @property
    def certs(self) -> Path:
        """The deployment CA and the servers' certificates (OPS-6)."""
        return tls_deployment.certs_dir(self.path)

    def prepare_tls(self, topology: Topology) -> list[str]:
        """Create the CA and server certificates a TLS topology needs and does not name;
        return what was created (`CertError` when named files are missing)."""
        return tls_deployment.prepare(topology, self.certs)

    def secret(self, pool: str) -> bytes:
        """The pool's secret, created on first use (never logged)."""
        key_file = self.path / "secrets" / f"{pool}.key"
        if not key_file.exists():
            # Servers starting together may both create it: write a private temporary
            # file whole, then link it into place (atomic; the loser reads the winner's).
            key_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = key_file.with_name(f".{key_file.name}.{os.getpid()}.{secrets.token_hex(4)}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(32))
            try:
                os.link(tmp, key_file)
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        return bytes.fromhex(key_file.read_text().strip())

    def load_state(self) -> DeploymentState:
        """The recorded state; `RunDirError` when there is none."""
        if not self.state_file.exists():
            raise RunDirError(f"{self.path} holds no deployment (no state.json); "
                              "start one with `trimaran up FILE --dir DIR`")
        raw = json.loads(self.state_file.read_text())
        servers = {name: ServerState(**value) for name, value in raw["servers"].items()}
        databases = {name: DatabaseState(**value)
                     for name, value in raw.get("databases", {}).items()}
        return DeploymentState(raw["topology"], servers, databases)

    def save_state(self, state: DeploymentState) -> None:
        """Write the state atomically."""
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"topology": state.topology,
                                   "servers": {k: asdict(v) for k, v in state.servers.items()},
                                   "databases": {k: asdict(v)
                                                 for k, v in state.databases.items()}},
                                  indent=2))
        os.replace(tmp, self.state_file)


def resolve_rundir(option: str | None) -> RunDir:
    """`--dir`, else `$TRIMARAN_DIR`, else the directory of the last `up`."""
    if option:
        return RunDir(option)
    env = os.environ.get("TRIMARAN_DIR")
    if env:
        return RunDir(env)
    if LAST_RUNDIR.exists():
        return RunDir(LAST_RUNDIR.read_text().strip())
    raise RunDirError("no run directory: pass --dir DIR or set TRIMARAN_DIR")


def remember_rundir(rundir: RunDir) -> None:
    """Make `rundir` the default for later commands."""
    with contextlib.suppress(OSError):  # a read-only home only loses the default
        LAST_RUNDIR.write_text(str(rundir.path))
