"""TLS of a deployment run on this machine: certificates in the run directory, and the
`TlsPolicy` each server process runs with (SPEC OPS-6, ``settings.tls``).

`prepare` (called by `trimaran up`) checks the files the topology names and creates
the CA and every server's certificate the topology does not name, in RUNDIR/certs;
`server_policy` (called by `trimaran serve`) builds one server's contexts.

With mutual TLS between servers, HTTP between servers is HTTPS too
(`trimaran.security.https`): `prepare` then also issues a certificate for every
other server (witnesses, DNS), for each Back End agent (``DB-agent``) and for the
operator CLI (``operator``), and `http_policy` builds the HTTPS policy of a process.
"""

from __future__ import annotations

import logging
from pathlib import Path

from trimaran.net import tls as sip_tls
from trimaran.net.tls import TlsPolicy
from trimaran.security import https
from trimaran.security.ca import (
    CA_NAME,
    CertError,
    CertInfo,
    cert_path,
    ensure_certificates,
    key_path,
)
from trimaran.security.ca import inspect as inspect_cert
from trimaran.security.https import HttpsPolicy
from trimaran.security.tlsconf import CertFiles, client_context, server_context
from trimaran.topology.errors import TopologyError
from trimaran.topology.loader import load_topology
from trimaran.topology.model import PoolRole, Topology
from trimaran.topology.tls_rules import missing_files

log = logging.getLogger(__name__)

#: Pools whose servers speak SIP (and so get a certificate).
SIP_ROLES = frozenset({PoolRole.FRONTEND, PoolRole.SBA, PoolRole.DIRECTOR, PoolRole.EDGE,
                       PoolRole.MEDIATION, PoolRole.CHAT})
#: The certificate the operator CLI presents to servers under mutual TLS.
OPERATOR = "operator"


def agent_identity(database: str) -> str:
    """The certificate name of the mirroring agent beside Back End instance `database`."""
    return f"{database}-agent"


def certs_dir(rundir: Path) -> Path:
    """Where a run directory keeps the deployment CA and the servers' certificates."""
    return rundir / "certs"


def server_files(topology: Topology, certs: Path, name: str) -> CertFiles:
    """The CA, certificate and key server `name` uses (named in the topology, or `certs`')."""
    tls = topology.settings.tls
    ca = Path(tls.ca) if tls.ca is not None else cert_path(certs, CA_NAME)
    named = tls.certificate_of(name)
    if named is not None:
        return CertFiles(ca, Path(named.cert), Path(named.key))
    default = CertFiles.in_directory(certs, name)
    return CertFiles(ca, default.cert, default.key)


def prepare(topology: Topology, certs: Path) -> list[str]:
    """Make the certificates of a TLS deployment ready before its servers start; return
    what was created. `CertError` when named files are missing, or when servers need
    certificates from the run directory's CA while the topology names another CA."""
    tls = topology.settings.tls
    if not tls.enabled:
        return []
    missing = missing_files(tls)
    if missing:
        raise CertError("files named in settings.tls are missing:\n  " + "\n  ".join(missing))
    unnamed = [(s.name, _addresses(s.address, s.external_address))
               for p in topology.pools if p.role in SIP_ROLES or tls.mutual_between_servers
               for s in p.servers if tls.certificate_of(s.name) is None]
    # HTTP between servers: the agents and the operator CLI need certificates too; with
    # another CA, in `certs` (the topology names servers' files only).
    extra = [*_agents(topology), (OPERATOR, [])] if tls.mutual_between_servers else []
    external = tls.ca is not None and Path(tls.ca) != cert_path(certs, CA_NAME)
    if external:
        absent = [name for name, _ in extra
                  if not (cert_path(certs, name).exists() and key_path(certs, name).exists())]
        if absent:
            raise CertError(f"settings.tls.ca names {tls.ca}: issue certificates of that CA "
                            f"for {', '.join(absent)} into {certs} (NAME.pem, NAME.key)")
    else:
        unnamed += extra
    if not unnamed:
        return []
    if external:
        names = ", ".join(name for name, _ in unnamed)
        raise CertError(f"settings.tls.ca names {tls.ca}, so `up` cannot issue certificates "
                        f"for {names}: name their cert and key in settings.tls.certificates")
    return ensure_certificates(certs, unnamed, dns_names=(topology.sip_domain,))


def server_policy(topology: Topology, certs: Path, name: str) -> TlsPolicy | None:
    """The TLS policy of server `name` (None when the deployment has no TLS)."""
    tls = topology.settings.tls
    if not tls.enabled:
        return None
    files = server_files(topology, certs, name)
    missing = files.missing()
    if missing:
        raise CertError(f"server {name}: missing TLS files: "
                        + ", ".join(str(path) for path in missing))
    mutual = tls.mutual_between_servers
    servers = [s for p in topology.pools if p.role in SIP_ROLES for s in p.servers]
    return TlsPolicy(
        server_context=server_context(files, client_certs="optional" if mutual else "none"),
        client_context=client_context(files.ca, files if mutual else None),
        external_context=server_context(files, client_certs="none"),
        port=tls.sip_port, mutual=mutual,
        peers={(s.address, s.sip_port): (s.address, tls.sip_port) for s in servers},
        server_hosts=frozenset(s.address for s in topology.servers))


def http_policy(topology: Topology, certs: Path, identity: str, *,
                listens: bool = True) -> HttpsPolicy | None:
    """The HTTPS policy of the process presenting certificate `identity` (a server, an
    agent, `OPERATOR`); None unless mutual TLS between servers is on. `listens`: build
    the listener contexts too (not for the operator CLI)."""
    tls = topology.settings.tls
    if not (tls.enabled and tls.mutual_between_servers):
        return None
    files = server_files(topology, certs, identity)
    missing = files.missing()
    if missing:
        raise CertError(f"{identity}: missing TLS files: "
                        + ", ".join(str(path) for path in missing))
    return HttpsPolicy(
        identity, client_context(files.ca, files),
        listener=server_context(files, client_certs="optional") if listens else None,
        strict=server_context(files, client_certs="required") if listens else None)


def install_operator(topology_file: Path, certs: Path) -> None:
    """Make the operator CLI speak HTTPS with the ``operator`` certificate to the servers
    of the deployment whose topology is `topology_file`, when it has mutual TLS between
    servers (nothing happens when the file is missing or unreadable: the command using
    it says why). `CertError` when the operator certificate is missing."""
    try:
        topology = load_topology(topology_file)
    except (OSError, TopologyError):
        return
    https.install(http_policy(topology, certs, OPERATOR, listens=False))


def sip_transports(topology: Topology, role: str) -> str:
    """How a server of `role` takes SIP, for `up`'s summary: ``udp+tcp``, plus
    ``tls PORT`` when the deployment has TLS and the role speaks SIP."""
    tls = topology.settings.tls
    speaks_sip = role in {r.value for r in SIP_ROLES}
    return f"udp+tcp, tls {tls.sip_port}" if tls.enabled and speaks_sip else "udp+tcp"


_own_certificate: list[Path] = []     # the certificate `install_server` installed


def install_server(topology: Topology, certs: Path, name: str) -> None:
    """Install server `name`'s TLS policies in this process (`trimaran serve`): SIP
    (`trimaran.net.tls`) and HTTP between servers (`trimaran.security.https`); its
    certificate then shows in `certificate_status`, and one about to expire is logged.
    `CertError` when its files are missing or unreadable."""
    tls = topology.settings.tls
    pool = next((p for p in topology.pools if any(s.name == name for s in p.servers)), None)
    certified = tls.enabled and (tls.mutual_between_servers
                                 or (pool is not None and pool.role in SIP_ROLES))
    # A witness or DNS server has no certificate (and no TLS) unless mutual TLS is on.
    sip_tls.install(server_policy(topology, certs, name) if certified else None)
    https.install(http_policy(topology, certs, name))
    _own_certificate.clear()
    if certified:
        path = server_files(topology, certs, name).cert
        _own_certificate.append(path)
        info = inspect_cert(path)
        if info.expiring:
            log.warning("server %s: TLS certificate %s expires in %d day(s) (%s): issue a "
                        "new one with `trimaran certs issue`", name, path, info.days_left,
                        info.not_after.date())


def certificate_status() -> dict[str, object]:
    """``{"certificate": ...}`` for a server's ``/status`` (days left, ``warning`` under
    30 days), read at each call; ``{}`` in a process without TLS."""
    if not _own_certificate:
        return {}
    try:
        return {"certificate": inspect_cert(_own_certificate[0]).to_json()}
    except CertError as exc:
        return {"certificate": {"path": str(_own_certificate[0]), "error": str(exc),
                                "warning": True}}


def server_certificate(topology: Topology, certs: Path, name: str) -> CertInfo | None:
    """Server `name`'s certificate (for `status`), None without TLS or without the file."""
    if not topology.settings.tls.enabled:
        return None
    path = server_files(topology, certs, name).cert
    try:
        return inspect_cert(path)
    except CertError:
        return None


def _agents(topology: Topology) -> list[tuple[str, list[str]]]:
    """(certificate name, addresses) of the agents beside mirrored Back End instances
    (named as `trimaran.deploy.database.databases_of` names the instances)."""
    out = []
    for pool in topology.pools:
        backend = pool.backend
        if backend is None or backend.principal is None or backend.mirror is None:
            continue
        out += [(agent_identity(f"{pool.name}-principal"), [backend.principal.address]),
                (agent_identity(f"{pool.name}-mirror"), [backend.mirror.address])]
    return out


def _addresses(*hosts: str | None) -> list[str]:
    return [host for host in dict.fromkeys(hosts) if host is not None]
