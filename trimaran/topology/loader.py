"""Strict YAML → `Topology` loading (TOP-1, TOP-2).

Theory of operation. The text is parsed by PyYAML's safe loader into a node tree
(aliases refused, so no "billion laughs"; at most `MAX_TOPOLOGY_BYTES`), the tree
is turned into plain dicts/lists/scalars while recording the line of every path
and reporting duplicate keys and exotic tags, and then each model type is built
by a small function that reads exactly its keys. Nothing is coerced: ``"5060"``
is not a port, ``"yes"`` is not a boolean, ``10.5`` is not an integer. Those
primitives are shared with the voice loader and live in
`trimaran.topology.loadkit`; the optional ``voice:`` section is built by
`trimaran.topology.voice_loader.build_voice`.

Every problem is appended to one list of `Violation`s and loading carries on, so
one run reports all of them. Unknown keys are reported but do not stop the model
from being built (they are simply not read), which lets `validate_file` run the
semantic rules on the same pass; a missing or ill-typed value does stop it.

Public: `load_topology`, `parse_topology` (raise `TopologyError`) and
`read_topology` (returns a `LoadResult`, never raises for bad input).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from trimaran.topology.errors import TopologyError, Violation
from trimaran.topology.loadkit import (
    MAX_DOCUMENT_BYTES,
    Context,
    Fields,
    Invalid,
    Parse,
    as_bool,
    as_int,
    as_number,
    as_str,
    as_str_list,
    bad,
    child,
    enum_of,
    is_path,
    line_of,
    list_of,
    parse_yaml,
    read_text,
)
from trimaran.topology.model import (
    AbuseLimits,
    Backend,
    Capacity,
    DatabaseEndpoint,
    Edition,
    FederatedPartner,
    LogShipping,
    Pool,
    PoolRole,
    Server,
    ServerCertificate,
    Settings,
    Site,
    SiteKind,
    SiteRtt,
    TlsSettings,
    Topology,
    Witness,
)
from trimaran.topology.voice_loader import build_voice

MAX_TOPOLOGY_BYTES = MAX_DOCUMENT_BYTES


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What `read_topology` found: the model (None when it could not be built), the
    violations, and the 1-based line of each path present in the file."""

    source: str
    topology: Topology | None
    violations: tuple[Violation, ...]
    lines: Mapping[str, int] = field(default_factory=dict)

    def line_of(self, path: str) -> int | None:
        """The line of `path`, or of its nearest ancestor present in the file."""
        return line_of(self.lines, path)


# --- model builders -------------------------------------------------------------


def _rtt(ctx: Context, value: object, path: str) -> tuple[SiteRtt, ...] | None:
    if not isinstance(value, dict):
        bad(ctx, value, path, "a mapping of site name to milliseconds")
        return None
    entries = [(site, as_number(ctx, ms, child(path, site))) for site, ms in value.items()]
    return tuple(SiteRtt(site, ms) for site, ms in entries if ms is not None)


def _site(ctx: Context, value: object, path: str) -> Site | None:
    f = Fields(ctx, value, path, "site", ("name", "kind", "metro", "rtt_ms"))
    name = f.required("name", as_str)
    kind = f.optional("kind", enum_of(SiteKind), SiteKind.CENTRAL)
    metro = f.optional("metro", as_str, None)
    no_rtt: tuple[SiteRtt, ...] = ()
    rtt = f.optional("rtt_ms", _rtt, no_rtt)
    return None if name is None else Site(name, kind, metro, rtt)


def _server(ctx: Context, value: object, path: str) -> Server | None:
    f = Fields(ctx, value, path, "server", ("name", "address", "sip_port", "admin_port", "site",
                                                     "dns_port", "external_address",
                                                     "external_port"))
    name = f.required("name", as_str)
    address = f.required("address", as_str)
    defaults = Server("", "")
    sip_port = f.optional("sip_port", as_int, defaults.sip_port)
    admin_port = f.optional("admin_port", as_int, defaults.admin_port)
    site = f.optional("site", as_str, None)
    dns_port = f.optional("dns_port", as_int, None)
    external_address = f.optional("external_address", as_str, None)
    external_port = f.optional("external_port", as_int, None)
    if name is None or address is None:
        return None
    return Server(name, address, sip_port, admin_port, site, dns_port, external_address,
                  external_port)


def _database(ctx: Context, value: object, path: str) -> DatabaseEndpoint | None:
    f = Fields(ctx, value, path, "database", ("address", "port", "site"))
    address = f.required("address", as_str)
    port = f.optional("port", as_int, DatabaseEndpoint("").port)
    site = f.optional("site", as_str, None)
    return None if address is None else DatabaseEndpoint(address, port, site)


def _witness(ctx: Context, value: object, path: str) -> Witness | None:
    f = Fields(ctx, value, path, "witness", ("server", "address", "port", "site"))
    return Witness(
        server=f.optional("server", as_str, None),
        address=f.optional("address", as_str, None),
        port=f.optional("port", as_int, None),
        site=f.optional("site", as_str, None),
    )


def _backend(ctx: Context, value: object, path: str) -> Backend | None:
    f = Fields(ctx, value, path, "backend", ("principal", "mirror", "witness"))
    return Backend(
        principal=f.optional("principal", _database, None),
        mirror=f.optional("mirror", _database, None),
        witness=f.optional("witness", _witness, None),
    )


def _shipped_database(ctx: Context, value: object, path: str) -> DatabaseEndpoint | None:
    """An instance of a log-shipped copy: its site is the copy's (no ``site`` key)."""
    f = Fields(ctx, value, path, "database", ("address", "port"))
    address = f.required("address", as_str)
    port = f.optional("port", as_int, DatabaseEndpoint("").port)
    return None if address is None else DatabaseEndpoint(address, port)


def _log_shipping(ctx: Context, value: object, path: str) -> LogShipping | None:
    f = Fields(ctx, value, path, "log_shipping", ("site", "principal", "mirror"))
    site = f.required("site", as_str)
    principal = f.required("principal", _shipped_database)
    mirror = f.optional("mirror", _shipped_database, None)
    return None if site is None or principal is None else LogShipping(site, principal, mirror)


def _capacity(ctx: Context, value: object, path: str) -> Capacity | None:
    f = Fields(ctx, value, path, "capacity", ("users_per_server", "users_per_pool"))
    defaults = Capacity()
    return Capacity(
        users_per_server=f.optional("users_per_server", as_int, defaults.users_per_server),
        users_per_pool=f.optional("users_per_pool", as_int, defaults.users_per_pool),
    )


_POOL_KEYS = (
    "name", "site", "role", "servers", "edition", "backup_pool", "paired_with",
    "backup_registrar", "backend", "capacity", "expected_users", "edge_pool", "next_hop",
    "active_servers", "auto_failover", "federation", "dns_view", "log_shipping",
)


def _backup_pool(f: Fields, path: str) -> str | None:
    """The paired pool (DR-1): ``backup_pool``, or its older name ``paired_with``.

    Both may be given only with the same value. A pool that writes ``backup_pool``
    gets the rules' ``paired_with`` violations on that key's line.
    """
    preferred = f.optional("backup_pool", as_str, None)
    legacy = f.optional("paired_with", as_str, None)
    new_path, old_path = child(path, "backup_pool"), child(path, "paired_with")
    if preferred is not None and legacy is not None and preferred != legacy:
        f.ctx.report(new_path, f"backup_pool {preferred!r} and paired_with {legacy!r} "
                     f"disagree; paired_with is the older name of backup_pool: give only "
                     f"backup_pool")
        return None
    if preferred is not None and new_path in f.ctx.lines:
        f.ctx.lines.setdefault(old_path, f.ctx.lines[new_path])
    return preferred if preferred is not None else legacy


def _pool(ctx: Context, value: object, path: str) -> Pool | None:
    f = Fields(ctx, value, path, "pool", _POOL_KEYS)
    name = f.required("name", as_str)
    site = f.required("site", as_str)
    role = f.required("role", enum_of(PoolRole))
    servers = f.required("servers", list_of(_server))
    pool_args: dict[str, Any] = {
        "edition": f.optional("edition", enum_of(Edition), None),
        "paired_with": _backup_pool(f, path),
        "backup_registrar": f.optional("backup_registrar", as_str, None),
        "backend": f.optional("backend", _backend, None),
        "capacity": f.optional("capacity", _capacity, Capacity()),
        "expected_users": f.optional("expected_users", as_int, None),
        "edge_pool": f.optional("edge_pool", as_str, None),
        "next_hop": f.optional("next_hop", as_str, None),
        "active_servers": f.optional("active_servers", as_str_list, None),
        "auto_failover": f.optional("auto_failover", as_bool, False),
        "federation": f.optional("federation", as_bool, False),
        "dns_view": f.optional("dns_view", as_str, "internal"),
        "log_shipping": f.optional("log_shipping", _log_shipping, None),
    }
    if name is None or site is None or role is None or servers is None:
        return None
    return Pool(name, site, role, servers, **pool_args)


def _fields_of(ctx: Context, value: object, path: str, what: str,
               defaults: Any) -> dict[str, Any]:
    """The fields of the dataclass value `defaults`, each read by its default's type
    (a tuple: strings, an int: an integer, a float: a number; a dataclass: a mapping of
    its own), absent ones at their defaults."""
    fields = dataclasses.fields(defaults)
    f = Fields(ctx, value, path, what, tuple(fd.name for fd in fields))
    values: dict[str, Any] = {}
    for fd in fields:
        default = getattr(defaults, fd.name)
        parse: Parse[Any] = _abuse if isinstance(default, AbuseLimits) \
            else _tls if isinstance(default, TlsSettings) \
            else as_str_list if isinstance(default, tuple) \
            else as_int if isinstance(default, int) else as_number
        values[fd.name] = f.optional(fd.name, parse, default)
    return values


def _settings(ctx: Context, value: object, path: str) -> Settings | None:
    return Settings(**_fields_of(ctx, value, path, "settings", Settings()))


def _abuse(ctx: Context, value: object, path: str) -> AbuseLimits | None:
    return AbuseLimits(**_fields_of(ctx, value, path, "abuse limits", AbuseLimits()))


def _tls(ctx: Context, value: object, path: str) -> TlsSettings | None:
    f = Fields(ctx, value, path, "tls settings",
               ("enabled", "sip_port", "mutual_between_servers", "ca", "certificates"))
    defaults = TlsSettings()
    no_certificates: tuple[ServerCertificate, ...] = ()
    return TlsSettings(
        enabled=f.optional("enabled", as_bool, defaults.enabled),
        sip_port=f.optional("sip_port", as_int, defaults.sip_port),
        mutual_between_servers=f.optional("mutual_between_servers", as_bool,
                                          defaults.mutual_between_servers),
        ca=f.optional("ca", as_str, None),
        certificates=f.optional("certificates", list_of(_server_certificate), no_certificates),
    )


def _server_certificate(ctx: Context, value: object, path: str) -> ServerCertificate | None:
    f = Fields(ctx, value, path, "server certificate", ("server", "cert", "key"))
    server = f.required("server", as_str)
    cert = f.required("cert", as_str)
    key = f.required("key", as_str)
    if server is None or cert is None or key is None:
        return None
    return ServerCertificate(server, cert, key)


def _partner(ctx: Context, value: object, path: str) -> FederatedPartner | None:
    f = Fields(ctx, value, path, "federation partner", ("domain", "edges"))
    domain = f.required("domain", as_str)
    edges = f.required("edges", as_str_list)
    return None if domain is None or edges is None else FederatedPartner(domain, edges)


_TOPOLOGY_KEYS = ("name", "sip_domain", "sites", "pools", "settings", "federation_route",
                  "voice", "federation_partners")


def _topology(ctx: Context, value: object) -> Topology | None:
    f = Fields(ctx, value, "", "topology", _TOPOLOGY_KEYS)
    name = f.required("name", as_str)
    sip_domain = f.required("sip_domain", as_str)
    sites = f.required("sites", list_of(_site))
    pools = f.required("pools", list_of(_pool))
    settings = f.optional("settings", _settings, Settings())
    federation_route = f.optional("federation_route", as_str, None)
    voice = f.optional("voice", build_voice, None)
    no_partners: tuple[FederatedPartner, ...] = ()
    partners = f.optional("federation_partners", list_of(_partner), no_partners)
    if ctx.fatal or name is None or sip_domain is None or sites is None or pools is None:
        return None
    return Topology(name, sip_domain, sites, pools, settings, federation_route, voice, partners)


# --- public API -------------------------------------------------------------------


def read_topology(source: str | os.PathLike[str], *, text: str | None = None) -> LoadResult:
    """Load without raising: a `LoadResult` with the model (when buildable) and every
    loader violation. `source` is a file path, unless `text` is given, in which case
    `source` only names it in messages."""
    ctx = Context()
    name = os.fspath(source)
    if text is None:
        text = read_text(source, ctx)
    topology: Topology | None = None
    if text is not None:
        data = parse_yaml(text, ctx)
        if not isinstance(data, Invalid):
            topology = _topology(ctx, data)
    return LoadResult(name, topology, tuple(ctx.violations), MappingProxyType(dict(ctx.lines)))


def parse_topology(text: str, source: str = "<text>") -> Topology:
    """Build a `Topology` from YAML text; `TopologyError` lists every loader violation.

    Only structure is checked here (keys, types, required values); the rules of
    TOP-2 are `trimaran.topology.validator.validate`.
    """
    return _raise_or_return(read_topology(source, text=text))


def load_topology(source: str | os.PathLike[str]) -> Topology:
    """Load a topology from a file path (a `Path`, or a one-line string) or, when
    `source` is a string containing a newline, from that YAML text.

    Raises `TopologyError` listing every loader violation (unknown keys included).
    """
    if is_path(source):
        return _raise_or_return(read_topology(source))
    return parse_topology(str(source))


def _raise_or_return(result: LoadResult) -> Topology:
    if result.violations or result.topology is None:
        raise TopologyError(result.violations, result.source)
    return result.topology


__all__ = [
    "MAX_TOPOLOGY_BYTES",
    "LoadResult",
    "load_topology",
    "parse_topology",
    "read_topology",
]
