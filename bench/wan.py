"""A WAN link between two sites of a deployment run on this machine, with a round-trip
delay: the latency harness of `bench/metro.py` (SPEC METRO-1, the 20 ms rule).

The delay is an in-process asyncio TCP relay (`DelayRelay`) that holds every chunk for
RTT/2 in each direction, in order, without limiting throughput. The processes of each
site are told apart by a cgroup (v2) of their own, not by address: a client socket that
is not bound (a PostgreSQL walreceiver, a Front End's store pool or its SIP connection
to a peer) leaves from 127.0.0.1 whatever its site. A netfilter NAT rule in a chain of
our own (``-m cgroup --path``) sends each new TCP connection from a site-a process to a
site-b address (and the reverse) to the relay, which reads the original destination
(``SO_ORIGINAL_DST``) and connects there itself from outside both cgroups (so it is not
sent back to itself). Connections inside a site, from the bench's own clients, and UDP
are not delayed.

`tc netem` between network namespaces would delay packets in the kernel instead; it
needs every process of a site to run in the site's namespace, which `trimaran up` does
not do yet, and a kernel with `sch_netem`. `netem_problem()` says whether this machine
has it (the bench prints the answer with the mode used).

A socket is classified by the cgroup its process was in when the socket was created:
processes are placed in their site's cgroup before the connections that matter are
made (`Wan.place`), or made again afterwards (the bench restarts the Front End
servers inside their cgroups and drops the walsender so that the mirror reconnects).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

SO_ORIGINAL_DST = 80          # linux/netfilter_ipv4.h
CHUNK = 65536
IPTABLES = "iptables"


class WanError(Exception):
    """The link cannot be set up here; the message says why."""


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(list(args), capture_output=True, text=True, timeout=20,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return subprocess.CompletedProcess(list(args), 127, "", str(exc))


def _why(result: subprocess.CompletedProcess[str]) -> str:
    text = (result.stderr or result.stdout or "").strip()
    return text.splitlines()[-1] if text else f"exit status {result.returncode}"


def netem_problem() -> str | None:
    """Why a netem delay between network namespaces cannot be used here (None: it can):
    tried on the loopback of a throw-away namespace."""
    if os.geteuid() != 0:
        return "network namespaces and tc need root"
    if shutil.which("ip") is None or shutil.which("tc") is None:
        return "iproute2 (ip, tc) is not installed"
    namespace = f"trimaran-netem-probe-{os.getpid()}"
    made = _run("ip", "netns", "add", namespace)
    if made.returncode != 0:
        return f"cannot create a network namespace: {_why(made)}"
    try:
        _run("ip", "-n", namespace, "link", "set", "lo", "up")
        tried = _run("tc", "-n", namespace, "qdisc", "add", "dev", "lo", "root", "netem",
                     "delay", "1ms")
        return None if tried.returncode == 0 else f"tc netem refused: {_why(tried)}"
    finally:
        _run("ip", "netns", "del", namespace)


def cgroup2_root() -> Path | None:
    """Where the cgroup v2 hierarchy is mounted (hybrid systems: .../unified)."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return None
    for line in mounts:
        parts = line.split()
        if len(parts) >= 3 and parts[2] == "cgroup2":
            return Path(parts[1])
    return None


def relay_problem() -> str | None:
    """Why the relay mode cannot be used here (None: it can)."""
    if os.geteuid() != 0:
        return "steering connections into the relay needs root (netfilter NAT, cgroups)"
    if shutil.which(IPTABLES) is None:
        return "iptables is not installed (Debian package 'iptables')"
    if cgroup2_root() is None:
        return "no cgroup v2 hierarchy is mounted"
    listed = _run(IPTABLES, "-w", "5", "-t", "nat", "-S", "OUTPUT")
    if listed.returncode != 0:
        return f"the netfilter nat table is not usable: {_why(listed)}"
    return None


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, ()))
    return found


class DelayRelay:
    """Accepts the connections steered to it, connects to each one's original
    destination and forwards every chunk `one_way` seconds after it arrived, both ways,
    in order. `one_way` may change between measurements (new chunks use the new value)."""

    def __init__(self, host: str, port: int, one_way: float = 0.0) -> None:
        self.host, self.port, self.one_way = host, port, one_way
        self.connections: dict[str, int] = {}     # original destination -> connections
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port,
                                                  reuse_address=True)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(self._connection(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
        port = struct.unpack("!H", raw[2:4])[0]
        host = socket.inet_ntoa(raw[4:8])
        try:
            up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.close()
            return
        where = f"{host}:{port}"
        self.connections[where] = self.connections.get(where, 0) + 1
        try:
            await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for end in (writer, up_writer):
                end.close()

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    with contextlib.suppress(OSError):
                        sink.write_eof()
                    return
                sink.write(data)
                await sink.drain()

        delivering = asyncio.ensure_future(deliver())
        try:
            while True:
                data = await source.read(CHUNK)
                queue.put_nowait((loop.time() + self.one_way, data))
                if not data:
                    break
            await delivering
        finally:
            delivering.cancel()


@dataclass
class Wan:
    """The link between the processes of two sites (cgroups) and the other site's
    addresses, through one `DelayRelay`."""

    tag: str
    relay: DelayRelay
    addresses: dict[str, tuple[str, ...]]      # site -> its addresses
    chain: str = ""
    _groups: dict[str, Path] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.chain = f"TRIMARAN-WAN-{self.tag}"[:28]

    def group(self, site: str) -> str:
        """The cgroup path of a site, as `-m cgroup --path` names it."""
        return f"trimaran-wan-{self.tag}/{site}"

    async def open(self) -> None:
        """Start the relay, make the sites' cgroups and steer their cross traffic."""
        problem = relay_problem()
        if problem is not None:
            raise WanError(problem)
        await self.relay.start()
        root = cgroup2_root()
        assert root is not None
        for site in self.addresses:
            path = root / self.group(site)
            path.mkdir(parents=True, exist_ok=True)
            self._groups[site] = path
        self._remove_chain()
        rules: list[tuple[str, ...]] = [("-N", self.chain)]
        for site in self.addresses:
            far = ",".join(a for other, addrs in self.addresses.items() if other != site
                           for a in addrs)
            rules.append(("-A", self.chain, "-p", "tcp", "-m", "cgroup", "--path",
                          self.group(site), "-d", far, "-j", "DNAT", "--to-destination",
                          f"{self.relay.host}:{self.relay.port}"))
        rules.append(("-I", "OUTPUT", "1", "-j", self.chain))
        for rule in rules:
            done = _run(IPTABLES, "-w", "5", "-t", "nat", *rule)
            if done.returncode != 0:
                self._remove_chain()
                raise WanError(f"iptables -t nat {' '.join(rule)}: {_why(done)}")

    def place(self, site: str, pids: Iterable[int]) -> None:
        """Move processes (whole thread groups) into a site's cgroup: sockets they
        create from now on are steered."""
        procs = self._groups[site] / "cgroup.procs"
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, OSError):
                procs.write_text(f"{pid}\n")

    def joiner(self, site: str) -> list[str]:
        """A command prefix that runs a command inside a site's cgroup (so that every
        process it starts is born there)."""
        procs = self._groups[site] / "cgroup.procs"
        return ["sh", "-c", f'echo $$ > "{procs}" && exec "$@"', "sh"]

    async def close(self) -> None:
        """Remove the steering, empty and remove the cgroups, stop the relay."""
        self._remove_chain()
        for path in self._groups.values():
            self._empty(path)
        for path in self._groups.values():
            with contextlib.suppress(OSError):
                path.rmdir()
        with contextlib.suppress(OSError):
            next(iter(self._groups.values())).parent.rmdir()
        await self.relay.close()

    @staticmethod
    def _empty(path: Path) -> None:
        parent = path.parent.parent / "cgroup.procs"   # the hierarchy's root
        for _ in range(20):
            try:
                pids = path.joinpath("cgroup.procs").read_text().split()
            except OSError:
                return
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(OSError):
                    parent.write_text(f"{pid}\n")
            time.sleep(0.05)

    def _remove_chain(self) -> None:
        for _ in range(10):
            if _run(IPTABLES, "-w", "5", "-t", "nat", "-D", "OUTPUT", "-j",
                    self.chain).returncode != 0:
                break
        _run(IPTABLES, "-w", "5", "-t", "nat", "-F", self.chain)
        _run(IPTABLES, "-w", "5", "-t", "nat", "-X", self.chain)
