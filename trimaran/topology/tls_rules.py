"""Rules of ``settings.tls`` (OPS-6): mutual TLS needs TLS, the TLS port is free on
every server, named certificate files are absolute paths of known servers.

Whether named files exist is checked when a deployment starts (`missing_files`, used
by `trimaran up`), not here: a topology may be validated on another machine.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from trimaran.topology.errors import Violation
from trimaran.topology.model import TlsSettings
from trimaran.topology.rules import Facts, error

BASE = "settings.tls"


def check_tls(facts: Facts) -> Iterator[Violation]:
    """See the module docstring."""
    tls = facts.topology.settings.tls
    if tls.mutual_between_servers and not tls.enabled:
        yield error(f"{BASE}.mutual_between_servers",
                    "mutual_between_servers needs TLS: set enabled: true")
    if not 1 <= tls.sip_port <= 65535:
        yield error(f"{BASE}.sip_port", f"sip_port must be a port (1-65535), got {tls.sip_port}")
    elif tls.enabled:
        for placed in facts.placed_servers:
            server = placed.server
            taken = {server.sip_port: "sip_port", server.admin_port: "admin_port"}
            if server.dns_port is not None:
                taken[server.dns_port] = "dns_port"
            if tls.sip_port in taken:
                yield error(f"{BASE}.sip_port",
                            f"TLS port {tls.sip_port} is server {server.name}'s "
                            f"{taken[tls.sip_port]}: every server listens on both")
    if tls.ca is not None and not Path(tls.ca).is_absolute():
        yield error(f"{BASE}.ca", f"ca must be an absolute path, got {tls.ca!r}")
    names = {placed.server.name for placed in facts.placed_servers}
    seen: set[str] = set()
    for index, entry in enumerate(tls.certificates):
        path = f"{BASE}.certificates[{index}]"
        if entry.server not in names:
            yield error(f"{path}.server", f"no server named {entry.server!r} in the topology")
        elif entry.server in seen:
            yield error(f"{path}.server", f"server {entry.server!r} is named twice")
        seen.add(entry.server)
        for key in ("cert", "key"):
            value = getattr(entry, key)
            if not Path(value).is_absolute():
                yield error(f"{path}.{key}", f"{key} must be an absolute path, got {value!r}")


def missing_files(tls: TlsSettings) -> list[str]:
    """The files ``settings.tls`` names that do not exist, as `path: file` lines."""
    named: list[tuple[str, str]] = []
    if tls.ca is not None:
        named.append((f"{BASE}.ca", tls.ca))
    for index, entry in enumerate(tls.certificates):
        named += [(f"{BASE}.certificates[{index}].cert", entry.cert),
                  (f"{BASE}.certificates[{index}].key", entry.key)]
    return [f"{path}: {file} does not exist" for path, file in named if not Path(file).is_file()]
