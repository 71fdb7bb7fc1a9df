"""Losing a whole site, and getting it back, on a deployment run on this machine
(SPEC OPS-1 `site fail|restore`, OPS-2 "site loss"; DESIGN §5 fault injection).

Theory of operation. A site's *members* are read from the topology and the run
directory's state: the servers of its pools (a stretched pool's server by its own
site), witness servers included, and the Back End instances placed in it (a
principal's or mirror's `site`, else its pool's site) with their mirroring agents.
Its *addresses* are those of its servers and instances, plus any external witness
declared in it.

``kill`` (a power cut): SIGKILL the agents first (so none restarts its instance),
then the servers' process groups and the PostgreSQL postmasters with their
backends (`PgInstance.kill`), and wait until they are gone. ``restore`` starts them
again in `up`'s order: witnesses, then the Back End (a single instance is started;
a mirrored one gets its agent back, which decides from its durable term whether to
start its instance read-write, as a standby, or to rejoin — starting an old
principal read-write behind its agent's back could accept writes the new principal
never sees), then the other servers, and waits until all are healthy.

``partition`` (a network cut): the processes keep running, but every packet between
one of the site's addresses and an address outside the site is dropped, both ways,
by netfilter rules in the root network namespace on the loopback interface. The
rules live in a dedicated chain, ``TRIMARAN-<SITE>-<run-dir hash>`` (so two run
directories with a site of the same name do not collide), jumped to from INPUT:
every loopback packet crosses INPUT, and a packet dropped there simply never
arrives — TCP retransmits into the void, as across a real cut. (A drop in OUTPUT
would instead fail the sender's ``sendto`` at once with EPERM.) ``restore`` deletes
exactly that chain and its jump.

Limitation of a loopback cut: it tells sites apart by address only. A process of
the site that connects out without binding its own address (an HTTP or PostgreSQL
client) sends from 127.0.0.1 and is not cut; only traffic to the site, and traffic
from its bound sockets (SIP over UDP, replies on accepted connections), is.

Record. ``RUNDIR/sites.json`` (``{"version": 1, "failed": {SITE: {...}}}``, written
atomically and durably by `trimaran.backend.durable`) says which sites are failed,
how, since when, and for a partition the chain and addresses, so that ``restore``
and `status` work from another process. Operations on it are serialised by a lock
file beside it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from trimaran.backend.durable import DurableStateError, read_json, write_json
from trimaran.backend.instance import BackendError
from trimaran.deploy.backends import agent_healthy, start_agent
from trimaran.deploy.database import SHIPPED, SHIPPED_MIRROR, instance
from trimaran.deploy.rundir import DatabaseState, DeploymentState, RunDir, ServerState
from trimaran.deploy.supervisor import (
    pid_alive,
    signal_server,
    start_server,
    wait_exit,
    wait_healthy,
)
from trimaran.topology.loader import load_topology
from trimaran.topology.model import PoolRole, Topology

SITES_FILE = "sites.json"
RECORD_VERSION = 1
IPTABLES = "iptables"
IPTABLES_WAIT_SECONDS = 5          # `iptables -w`: wait for the xtables lock this long
CHAIN_PREFIX = "TRIMARAN-"
MAX_CHAIN_NAME = 28                # netfilter's limit (XT_EXTENSION_MAXNAMELEN - 1)
KILL_WAIT_SECONDS = 5.0


class SiteError(Exception):
    """A site operation refused or failed; the message says why (exit 1 in the CLI)."""


class FailMode(StrEnum):
    """How a site is failed."""

    KILL = "kill"            # every process SIGKILLed
    PARTITION = "partition"  # processes running, cut off from every other address


@dataclass(frozen=True, slots=True)
class SiteMembers:
    """What of the deployment lives in one site (names as in state.json)."""

    site: str
    witnesses: tuple[str, ...]
    servers: tuple[str, ...]      # every other server
    databases: tuple[str, ...]    # Back End instances (their agents go with them)
    addresses: tuple[str, ...]

    @property
    def empty(self) -> bool:
        """True when the deployment runs nothing in the site."""
        return not (self.witnesses or self.servers or self.databases)


@dataclass(frozen=True, slots=True)
class FailedSite:
    """The record of one failed site in sites.json."""

    site: str
    mode: FailMode
    since: float                  # time.time() of the failure
    chain: str | None = None      # partition: the netfilter chain holding the cut
    addresses: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The JSON object stored (and shown by `status --json`)."""
        return {"mode": self.mode.value, "since": self.since, "chain": self.chain,
                "addresses": list(self.addresses)}

    @classmethod
    def from_json(cls, site: str, raw: object) -> FailedSite:
        """Read one record; `SiteError` when it is not one."""
        bad = SiteError(f"{SITES_FILE}: bad record for site {site!r}")
        if not isinstance(raw, dict):
            raise bad
        chain, addresses, since = raw.get("chain"), raw.get("addresses", []), raw.get("since")
        if not (chain is None or isinstance(chain, str)) or not isinstance(addresses, list) \
                or not all(isinstance(a, str) for a in addresses) \
                or not isinstance(since, int | float):
            raise bad
        try:
            mode = FailMode(str(raw.get("mode")))
        except ValueError:
            raise bad from None
        return cls(site, mode, float(since), chain, tuple(addresses))


# --- who is where ------------------------------------------------------------------


def site_names(topology: Topology) -> tuple[str, ...]:
    """The sites of the topology, in file order."""
    return tuple(s.name for s in topology.sites)


def _database_sites(topology: Topology) -> dict[tuple[str, str], str]:
    """(pool, role) -> the site of that Back End instance: "principal" and "mirror" of
    a Back End; a chat pool's log-shipped copy, "shipped" and "shipped-mirror", in its
    log-shipping site."""
    out: dict[tuple[str, str], str] = {}
    for pool in topology.pools:
        backend = pool.backend
        if backend is not None:
            for role, db in (("principal", backend.principal), ("mirror", backend.mirror)):
                if db is not None:
                    out[(pool.name, role)] = db.site or pool.site
        shipping = pool.log_shipping
        if shipping is not None:
            for role, _ in shipping.instances:
                kind = SHIPPED if role == "principal" else SHIPPED_MIRROR
                out[(pool.name, kind)] = shipping.site
    return out


def database_site(topology: Topology, database: DatabaseState) -> str | None:
    """The site a Back End instance of the deployment lives in (None: not in the
    topology)."""
    return _database_sites(topology).get((database.pool, database.role))


def _external_witnesses(topology: Topology, site: str) -> list[str]:
    return [p.backend.witness.address for p in topology.pools
            if p.backend is not None and p.backend.witness is not None
            and p.backend.witness.address is not None and p.backend.witness.site == site]


def site_members(topology: Topology, state: DeploymentState, site: str) -> SiteMembers:
    """The servers, Back End instances and addresses of `site` in this deployment."""
    server_sites = {s.name: pool.site_of(s) for pool in topology.pools for s in pool.servers}
    db_sites = _database_sites(topology)
    witnesses: list[str] = []
    servers: list[str] = []
    databases: list[str] = []
    addresses: dict[str, None] = {}
    for server in state.servers.values():
        if server_sites.get(server.name) != site:
            continue
        is_witness = server.role == PoolRole.WITNESS.value
        (witnesses if is_witness else servers).append(server.name)
        addresses.setdefault(server.address, None)
    for database in state.databases.values():
        if db_sites.get((database.pool, database.role)) == site:
            databases.append(database.name)
            addresses.setdefault(database.address, None)
    for address in _external_witnesses(topology, site):
        addresses.setdefault(address, None)
    return SiteMembers(site, tuple(witnesses), tuple(servers), tuple(databases),
                       tuple(addresses))


def _running(run: RunDir, state: DeploymentState, members: SiteMembers) -> list[str]:
    """Names of the site's processes that are running."""
    alive = [n for n in (*members.witnesses, *members.servers)
             if pid_alive(state.servers[n].pid)]
    for name in members.databases:
        database = state.databases[name]
        if instance(run, database).is_running():
            alive.append(name)
        if pid_alive(database.agent_pid):
            alive.append(f"{name}-agent")
    return alive


# --- the record ----------------------------------------------------------------------


def sites_file(run: RunDir) -> Path:
    """Where the failed sites of the deployment in `run` are recorded."""
    return run.path / SITES_FILE


def load_failed(run: RunDir) -> dict[str, FailedSite]:
    """The failed sites recorded in `run` (none when there is no record)."""
    try:
        raw = read_json(sites_file(run))
    except DurableStateError as exc:
        raise SiteError(str(exc)) from exc
    if raw is None:
        return {}
    failed = raw.get("failed")
    if not isinstance(failed, dict):
        raise SiteError(f"{sites_file(run)} has no 'failed' object")
    return {site: FailedSite.from_json(site, value) for site, value in failed.items()}


def _save_failed(run: RunDir, failed: dict[str, FailedSite]) -> None:
    write_json(sites_file(run), {"version": RECORD_VERSION,
                                 "failed": {s: f.to_json() for s, f in failed.items()}})


@contextlib.contextmanager
def _locked(run: RunDir) -> Iterator[None]:
    """Serialise site operations on one run directory (read-modify-write of the record)."""
    with open(run.path / ".sites.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _load(run: RunDir, site: str) -> tuple[Topology, DeploymentState, SiteMembers]:
    topology = load_topology(run.topology)
    known = site_names(topology)
    if site not in known:
        raise SiteError(f"unknown site {site!r} (sites of the deployment: {', '.join(known)})")
    state = run.load_state()
    return topology, state, site_members(topology, state, site)


# --- fail and restore ------------------------------------------------------------------


def fail_site(run: RunDir, site: str, mode: FailMode) -> tuple[FailedSite, list[str]]:
    """Fail `site` (kill its processes, or cut it off) and record it.

    Returns the record and the problems met while killing (the site is recorded as
    failed even then, so that `restore_site` brings it back). Raises `SiteError`
    when refused: unknown site, already failed, nothing of it running, or a cut this
    machine cannot make.
    """
    with _locked(run):
        topology, state, members = _load(run, site)
        failed = load_failed(run)
        if site in failed:
            raise SiteError(f"site {site} is already failed ({failed[site].mode.value}); "
                            f"restore it first with `trimaran site restore {site}`")
        if members.empty:
            raise SiteError(f"site {site} runs no server or database of this deployment")
        if not _running(run, state, members):
            raise SiteError(f"nothing of site {site} is running (is the deployment up?)")
        problems: list[str] = []
        if mode is FailMode.KILL:
            problems = _kill(run, state, members)
            record = FailedSite(site, mode, time.time())
        else:
            check_partitionable(topology, state, members)
            chain = chain_name(run, site)
            cut(chain, members.addresses)
            record = FailedSite(site, mode, time.time(), chain, members.addresses)
        failed[site] = record
        _save_failed(run, failed)
        return record, problems


def restore_site(run: RunDir, site: str, timeout: float) -> tuple[FailedSite, list[str]]:
    """Undo `fail_site`: remove the cut, or start the site's processes again and wait
    until they are healthy; clear the record.

    Returns the record that was cleared and what did not come back healthy within
    `timeout` (started anyway). Raises `SiteError` for an unknown site or one that is
    not failed, or when the cut cannot be removed (then it stays recorded).
    """
    with _locked(run):
        _, state, members = _load(run, site)
        failed = load_failed(run)
        record = failed.get(site)
        if record is None:
            failed_now = ", ".join(sorted(failed)) or "none"
            raise SiteError(f"site {site} is not failed (failed sites: {failed_now})")
        problems: list[str] = []
        if record.mode is FailMode.PARTITION:
            uncut(record.chain or chain_name(run, site))
        else:
            problems = _start(run, state, members, timeout)
        del failed[site]
        _save_failed(run, failed)
        return record, problems


def _kill(run: RunDir, state: DeploymentState, members: SiteMembers) -> list[str]:
    """SIGKILL every process of the site; returns what could not be killed."""
    problems: list[str] = []
    databases = [state.databases[n] for n in members.databases]
    servers = [state.servers[n] for n in (*members.witnesses, *members.servers)]
    for database in databases:  # agents first: none may restart its instance meanwhile
        if database.agent_pid is not None and pid_alive(database.agent_pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(database.agent_pid, signal.SIGKILL)
    for server in servers:
        signal_server(server, signal.SIGKILL)
    for database in databases:
        try:
            instance(run, database).kill()
        except BackendError as exc:
            problems.append(f"{database.name}: {exc}")
    for server in servers:
        if wait_exit(server, KILL_WAIT_SECONDS):
            server.pid = None
        else:
            problems.append(f"server {server.name} (pid {server.pid}) survived SIGKILL")
    for database in databases:
        if _wait_pid_gone(database.agent_pid, KILL_WAIT_SECONDS):
            database.agent_pid = None
        else:
            problems.append(f"agent of {database.name} survived SIGKILL")
    run.save_state(state)
    return problems


def _wait_pid_gone(pid: int | None, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _start(run: RunDir, state: DeploymentState, members: SiteMembers,
           timeout: float) -> list[str]:
    """Start what of the site is not running, in `up`'s order; returns what did not
    become healthy (with why)."""
    deadline = time.monotonic() + timeout
    witnesses = _start_servers(run, state, members.witnesses)
    problems = [f"server {n} did not become healthy"
                for n in wait_healthy(witnesses, _left(deadline))]
    agents: list[DatabaseState] = []
    for name in members.databases:
        database = state.databases[name]
        if database.partner is not None:  # its agent starts the instance as its term says
            if not pid_alive(database.agent_pid):
                start_agent(run, database)
            agents.append(database)
            continue
        db_instance = instance(run, database)
        if not db_instance.is_running():
            try:
                db_instance.start(timeout=max(_left(deadline), 1.0))
            except BackendError as exc:
                problems.append(f"{name}: {exc}")
    run.save_state(state)
    while agents:
        agents = [d for d in agents if not agent_healthy(d)]
        if agents and time.monotonic() > deadline:
            problems.extend(f"agent of {d.name} did not become healthy" for d in agents)
            break
        time.sleep(0.1)
    servers = _start_servers(run, state, members.servers)
    problems.extend(f"server {n} did not become healthy"
                    for n in wait_healthy(servers, _left(deadline)))
    return problems


def _start_servers(run: RunDir, state: DeploymentState,
                   names: tuple[str, ...]) -> list[ServerState]:
    servers = [state.servers[n] for n in names]
    for server in servers:
        if not pid_alive(server.pid):
            run.secret(server.pool)
            start_server(run, server)
    run.save_state(state)
    return servers


def _left(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.0)


# --- the network cut (netfilter) ---------------------------------------------------------


def chain_name(run: RunDir, site: str) -> str:
    """The dedicated netfilter chain of `site`'s cut in this run directory."""
    tag = hashlib.sha256(str(run.path).encode()).hexdigest()[:6]
    name = f"{CHAIN_PREFIX}{site.upper()}-{tag}"
    if len(name) <= MAX_CHAIN_NAME:
        return name
    digest = hashlib.sha256(f"{run.path}\0{site}".encode()).hexdigest()
    return f"{CHAIN_PREFIX}{digest[:MAX_CHAIN_NAME - len(CHAIN_PREFIX)]}"


def netfilter_problem() -> str | None:
    """Why this machine cannot cut a site off with netfilter; None when it can."""
    if os.geteuid() != 0:
        return "cutting a site off needs root (netfilter rules on the loopback interface)"
    if shutil.which(IPTABLES) is None:
        return ("cutting a site off needs iptables, which is not installed (Debian package "
                "'iptables'; `./run test` installs it when run as root)")
    result = _iptables("-S", "INPUT")
    if result.returncode != 0:
        return f"netfilter is not usable here: {_why(result)}"
    return None


def check_partitionable(topology: Topology, state: DeploymentState,
                         members: SiteMembers) -> None:
    """Refuse a cut this machine cannot make, or one an address filter cannot express."""
    for address in members.addresses:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            raise SiteError(f"cannot cut site {members.site} off: {address!r} is not an IP "
                            f"address") from None
        if ip.version != 4 or not ip.is_loopback:
            raise SiteError(f"cannot cut site {members.site} off: {address} is not an IPv4 "
                            f"loopback address (the cut filters 127.0.0.0/8 on this machine)")
        if address == "127.0.0.1":
            raise SiteError(f"cannot cut site {members.site} off: it uses 127.0.0.1, the "
                            f"source of every unbound local socket; give its servers their "
                            f"own 127.x.y.z addresses")
    for other in site_names(topology):
        if other == members.site:
            continue
        shared = set(members.addresses) & set(site_members(topology, state, other).addresses)
        if shared:
            raise SiteError(f"cannot cut site {members.site} off: address(es) "
                            f"{', '.join(sorted(shared))} are used in site {other} too")
    problem = netfilter_problem()
    if problem is not None:
        raise SiteError(problem)


def cut(chain: str, addresses: tuple[str, ...]) -> None:
    """Drop every loopback packet between `addresses` and any other address, both ways,
    with rules in `chain` jumped to from INPUT. Raises `SiteError` (nothing left behind)."""
    _remove_chain(chain)  # a leftover of an interrupted run: start clean
    group = ",".join(addresses)
    rules: list[tuple[str, ...]] = [("-N", chain)]
    rules += [("-A", chain, "-s", a, "-d", group, "-j", "RETURN") for a in addresses]
    for address in addresses:
        rules += [("-A", chain, "-s", address, "-j", "DROP"),
                  ("-A", chain, "-d", address, "-j", "DROP")]
    rules.append(("-I", "INPUT", "1", "-i", "lo", "-j", chain))
    try:
        for rule in rules:
            _iptables_checked(*rule)
    except SiteError:
        _remove_chain(chain)
        raise


def cut_between(chain: str, one: tuple[str, ...], other: tuple[str, ...]) -> None:
    """Drop every loopback packet between the addresses of `one` and of `other` (a WAN
    link between two sites), leaving both reachable from everywhere else. Raises
    `SiteError` (nothing left behind); undone by `uncut(chain)`."""
    _remove_chain(chain)
    rules: list[tuple[str, ...]] = [("-N", chain)]
    for a in one:
        for b in other:
            rules += [("-A", chain, "-s", a, "-d", b, "-j", "DROP"),
                      ("-A", chain, "-s", b, "-d", a, "-j", "DROP")]
    rules.append(("-I", "INPUT", "1", "-i", "lo", "-j", chain))
    try:
        for rule in rules:
            _iptables_checked(*rule)
    except SiteError:
        _remove_chain(chain)
        raise


def uncut(chain: str) -> None:
    """Remove the cut held in `chain` (its jump from INPUT, its rules, the chain)."""
    if not _remove_chain(chain):
        raise SiteError(f"could not remove netfilter chain {chain}: "
                        f"{_why(_iptables('-X', chain))}")


def clear_all(run: RunDir) -> list[str]:
    """Forget every failed site of `run` (when the deployment goes down): remove the
    partitions' netfilter chains and the record. Returns the sites cleared."""
    with _locked(run):
        failed = load_failed(run)
        for record in failed.values():
            if record.chain is not None:
                _remove_chain(record.chain)
        _save_failed(run, {})
    return sorted(failed)


def chain_exists(chain: str) -> bool:
    """True when netfilter has a chain of that name."""
    return _iptables("-S", chain).returncode == 0


def _remove_chain(chain: str) -> bool:
    """Delete every jump to `chain` from INPUT, then the chain; True when it is gone."""
    if shutil.which(IPTABLES) is None:
        return True
    for _ in range(100):  # normally one jump; a bound against a runaway loop
        if _iptables("-D", "INPUT", "-i", "lo", "-j", chain).returncode != 0:
            break
    _iptables("-F", chain)
    _iptables("-X", chain)
    return not chain_exists(chain)


def _iptables(*args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run([IPTABLES, "-w", str(IPTABLES_WAIT_SECONDS), *args],
                              capture_output=True, text=True,
                              timeout=IPTABLES_WAIT_SECONDS + 10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return subprocess.CompletedProcess([IPTABLES, *args], 127, "", str(exc))


def _iptables_checked(*args: str) -> None:
    result = _iptables(*args)
    if result.returncode != 0:
        raise SiteError(f"iptables {' '.join(args)} failed: {_why(result)}")


def _why(result: subprocess.CompletedProcess[str]) -> str:
    text = (result.stderr or result.stdout or "").strip()
    return text.splitlines()[-1] if text else f"exit status {result.returncode}"
