"""Strict YAML → `Topology` loading (TOP-1, TOP-2).

Theory of operation. The text is parsed by PyYAML's safe loader into a node tree
(aliases refused, so no "billion laughs"; at most `MAX_TOPOLOGY_BYTES`), the tree
is turned into plain dicts/lists/scalars while recording the line of every path
and reporting duplicate keys and exotic tags, and then each model type is built
by a small function that reads exactly its keys. Nothing is coerced: ``"5060"``
is not a port, ``"yes"`` is not a boolean, ``10.5`` is not an integer.

Every problem is appended to one list of `Violation`s and loading carries on, so
one run reports all of them. Unknown keys are reported but do not stop the model
from being built (they are simply not read), which lets `validate_file` run the
semantic rules on the same pass; a missing or ill-typed value does stop it.

Public: `load_topology`, `parse_topology` (raise `TopologyError`) and
`read_topology` (returns a `LoadResult`, never raises for bad input).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, TypeVar

import yaml

from trimaran.topology.errors import TopologyError, Violation
from trimaran.topology.model import (
    Backend,
    Capacity,
    DatabaseEndpoint,
    Edition,
    Pool,
    PoolRole,
    Server,
    Settings,
    Site,
    SiteKind,
    SiteRtt,
    Topology,
    Witness,
)

MAX_TOPOLOGY_BYTES = 1 << 20

_T = TypeVar("_T")
_E = TypeVar("_E", bound=StrEnum)

_TAG = "tag:yaml.org,2002:"
_STR, _MAP, _SEQ, _MERGE = _TAG + "str", _TAG + "map", _TAG + "seq", _TAG + "merge"
_SCALAR_TAGS = frozenset({_STR, _TAG + "int", _TAG + "float", _TAG + "bool", _TAG + "null"})


class _Invalid:
    """Marks a value that was already reported while converting the YAML tree."""


_INVALID = _Invalid()
_MISSING = object()


class _NoAliasLoader(yaml.SafeLoader):
    """A safe loader that refuses aliases: a topology never needs them, bombs do."""

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None, None, "YAML aliases (*name) are not allowed in a topology", event.start_mark
            )
        return super().compose_node(parent, index)


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
        return _line_of(self.lines, path)


def _line_of(lines: Mapping[str, int], path: str) -> int | None:
    while path:
        if path in lines:
            return lines[path]
        cut = max(path.rfind("."), path.rfind("["))
        path = path[:cut] if cut > 0 else ""
    return lines.get("")


@dataclass
class _Context:
    """Collects violations and line numbers during one load."""

    violations: list[Violation] = field(default_factory=list)
    lines: dict[str, int] = field(default_factory=dict)
    fatal: bool = False

    def report(
        self, path: str, message: str, *, fatal: bool = True, line: int | None = None
    ) -> None:
        line = line if line is not None else _line_of(self.lines, path)
        self.violations.append(Violation(path, message, "error", line))
        self.fatal = self.fatal or fatal


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _item(path: str, index: int) -> str:
    return f"{path}[{index}]"


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {value!r}"
    if isinstance(value, int | float):
        return f"number {value!r}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


# --- YAML text → plain data ------------------------------------------------------


def _to_plain(loader: _NoAliasLoader, node: yaml.Node, path: str, ctx: _Context) -> object:
    ctx.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.ScalarNode):
        if node.tag not in _SCALAR_TAGS:
            ctx.report(path, f"unsupported YAML tag {node.tag!r}")
            return _INVALID
        try:
            return loader.construct_object(node)
        except (yaml.YAMLError, ValueError, KeyError, TypeError):
            ctx.report(path, f"{node.value!r} is not a valid {node.tag.removeprefix(_TAG)}")
            return _INVALID
    if isinstance(node, yaml.SequenceNode):
        if node.tag != _SEQ:
            ctx.report(path, f"unsupported YAML tag {node.tag!r}")
            return _INVALID
        return [_to_plain(loader, item, _item(path, i), ctx) for i, item in enumerate(node.value)]
    if isinstance(node, yaml.MappingNode) and node.tag == _MAP:
        return _mapping_to_plain(loader, node, path, ctx)
    ctx.report(path, f"unsupported YAML tag {node.tag!r}")
    return _INVALID


def _mapping_to_plain(
    loader: _NoAliasLoader, node: yaml.MappingNode, path: str, ctx: _Context
) -> dict[str, object]:
    result: dict[str, object] = {}
    for key_node, value_node in node.value:
        line = key_node.start_mark.line + 1
        if isinstance(key_node, yaml.ScalarNode) and key_node.tag == _MERGE:
            ctx.report(path, "merge keys (<<) are not allowed", line=line)
            continue
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _STR:
            ctx.report(path, "mapping keys must be strings", line=line)
            continue
        key = str(key_node.value)
        child = _child(path, key)
        if key in result:
            ctx.report(child, f"duplicate key {key!r}", line=line)
            continue
        ctx.lines[child] = line
        result[key] = _to_plain(loader, value_node, child, ctx)
    return result


def _parse_yaml(text: str, ctx: _Context) -> object:
    if len(text.encode("utf-8", "surrogatepass")) > MAX_TOPOLOGY_BYTES:
        ctx.report("", f"topology is larger than {MAX_TOPOLOGY_BYTES} bytes")
        return _INVALID
    loader: _NoAliasLoader | None = None
    try:
        loader = _NoAliasLoader(text)  # the reader already rejects unprintable characters
        node = loader.get_single_node()
        if node is None:
            ctx.report("", "topology is empty")
            return _INVALID
        return _to_plain(loader, node, "", ctx)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if mark is None:
            ctx.report("", f"YAML syntax error: {problem}")
        else:
            ctx.report("", f"YAML syntax error at column {mark.column + 1}: {problem}",
                       line=mark.line + 1)
    except yaml.YAMLError as exc:
        ctx.report("", f"YAML syntax error: {exc}")
    except RecursionError:
        ctx.report("", "YAML is nested too deeply")
    finally:
        if loader is not None:
            loader.dispose()
    ctx.fatal = True
    return _INVALID


# --- typed values ---------------------------------------------------------------

_Parse = Callable[[_Context, object, str], _T | None]


def _bad(ctx: _Context, value: object, path: str, expected: str) -> None:
    if not isinstance(value, _Invalid):
        ctx.report(path, f"expected {expected}, got {_describe(value)}")
    ctx.fatal = True


def _str(ctx: _Context, value: object, path: str) -> str | None:
    if isinstance(value, str):
        return value
    _bad(ctx, value, path, "a string")
    return None


def _bool(ctx: _Context, value: object, path: str) -> bool | None:
    if isinstance(value, bool):
        return value
    _bad(ctx, value, path, "true or false")
    return None


def _int(ctx: _Context, value: object, path: str) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    _bad(ctx, value, path, "an integer")
    return None


def _number(ctx: _Context, value: object, path: str) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    _bad(ctx, value, path, "a finite number")
    return None


def _enum(kind: type[_E]) -> _Parse[_E]:
    allowed = ", ".join(m.value for m in kind)

    def parse(ctx: _Context, value: object, path: str) -> _E | None:
        if isinstance(value, str):
            for member in kind:
                if member.value == value:
                    return member
            ctx.report(path, f"{value!r} is not one of: {allowed}")
            return None
        _bad(ctx, value, path, f"one of: {allowed}")
        return None

    return parse


def _str_list(ctx: _Context, value: object, path: str) -> tuple[str, ...] | None:
    if not isinstance(value, list):
        _bad(ctx, value, path, "a list of strings")
        return None
    items = [_str(ctx, item, _item(path, i)) for i, item in enumerate(value)]
    return tuple(s for s in items if s is not None)


def _list_of(build: _Parse[_T]) -> _Parse[tuple[_T, ...]]:
    def parse(ctx: _Context, value: object, path: str) -> tuple[_T, ...] | None:
        if not isinstance(value, list):
            _bad(ctx, value, path, "a list")
            return None
        built = [build(ctx, item, _item(path, i)) for i, item in enumerate(value)]
        return tuple(b for b in built if b is not None)

    return parse


class _Fields:
    """Reads the keys of one mapping, reporting unknown, missing and ill-typed ones."""

    def __init__(
        self, ctx: _Context, value: object, path: str, what: str, allowed: tuple[str, ...]
    ) -> None:
        self.ctx, self.path, self.what = ctx, path, what
        self.data: dict[str, object] = {}
        self.is_mapping = isinstance(value, dict)
        if not isinstance(value, dict):
            _bad(ctx, value, path, f"a mapping ({what})")
            return
        self.data = value
        for key in value:
            if key not in allowed:
                hint = difflib.get_close_matches(key, allowed, n=1)
                guess = f"; did you mean {hint[0]!r}?" if hint else ""
                ctx.report(
                    _child(path, key),
                    f"unknown key {key!r} in {what} (allowed: {', '.join(allowed)}){guess}",
                    fatal=False,
                )

    def required(self, key: str, parse: _Parse[_T]) -> _T | None:
        """The value of a key that must be present."""
        value = self.data.get(key, _MISSING)
        if value is _MISSING:
            if self.is_mapping:
                self.ctx.report(
                    _child(self.path, key), f"required key {key!r} of {self.what} is missing"
                )
            return None
        return parse(self.ctx, value, _child(self.path, key))

    def optional(self, key: str, parse: _Parse[_T], default: _T) -> _T:
        """The value of a key that may be absent (then `default`); null means absent
        only where the default is None."""
        value = self.data.get(key, _MISSING)
        if value is _MISSING or (value is None and default is None):
            return default
        parsed = parse(self.ctx, value, _child(self.path, key))
        return default if parsed is None else parsed


# --- model builders -------------------------------------------------------------


def _rtt(ctx: _Context, value: object, path: str) -> tuple[SiteRtt, ...] | None:
    if not isinstance(value, dict):
        _bad(ctx, value, path, "a mapping of site name to milliseconds")
        return None
    entries = [(site, _number(ctx, ms, _child(path, site))) for site, ms in value.items()]
    return tuple(SiteRtt(site, ms) for site, ms in entries if ms is not None)


def _site(ctx: _Context, value: object, path: str) -> Site | None:
    f = _Fields(ctx, value, path, "site", ("name", "kind", "metro", "rtt_ms"))
    name = f.required("name", _str)
    kind = f.optional("kind", _enum(SiteKind), SiteKind.CENTRAL)
    metro = f.optional("metro", _str, None)
    no_rtt: tuple[SiteRtt, ...] = ()
    rtt = f.optional("rtt_ms", _rtt, no_rtt)
    return None if name is None else Site(name, kind, metro, rtt)


def _server(ctx: _Context, value: object, path: str) -> Server | None:
    f = _Fields(ctx, value, path, "server", ("name", "address", "sip_port", "admin_port", "site",
                                                     "dns_port"))
    name = f.required("name", _str)
    address = f.required("address", _str)
    defaults = Server("", "")
    sip_port = f.optional("sip_port", _int, defaults.sip_port)
    admin_port = f.optional("admin_port", _int, defaults.admin_port)
    site = f.optional("site", _str, None)
    dns_port = f.optional("dns_port", _int, None)
    if name is None or address is None:
        return None
    return Server(name, address, sip_port, admin_port, site, dns_port)


def _database(ctx: _Context, value: object, path: str) -> DatabaseEndpoint | None:
    f = _Fields(ctx, value, path, "database", ("address", "port", "site"))
    address = f.required("address", _str)
    port = f.optional("port", _int, DatabaseEndpoint("").port)
    site = f.optional("site", _str, None)
    return None if address is None else DatabaseEndpoint(address, port, site)


def _witness(ctx: _Context, value: object, path: str) -> Witness | None:
    f = _Fields(ctx, value, path, "witness", ("server", "address", "port", "site"))
    return Witness(
        server=f.optional("server", _str, None),
        address=f.optional("address", _str, None),
        port=f.optional("port", _int, None),
        site=f.optional("site", _str, None),
    )


def _backend(ctx: _Context, value: object, path: str) -> Backend | None:
    f = _Fields(ctx, value, path, "backend", ("principal", "mirror", "witness"))
    return Backend(
        principal=f.optional("principal", _database, None),
        mirror=f.optional("mirror", _database, None),
        witness=f.optional("witness", _witness, None),
    )


def _capacity(ctx: _Context, value: object, path: str) -> Capacity | None:
    f = _Fields(ctx, value, path, "capacity", ("users_per_server", "users_per_pool"))
    defaults = Capacity()
    return Capacity(
        users_per_server=f.optional("users_per_server", _int, defaults.users_per_server),
        users_per_pool=f.optional("users_per_pool", _int, defaults.users_per_pool),
    )


_POOL_KEYS = (
    "name", "site", "role", "servers", "edition", "backup_pool", "paired_with",
    "backup_registrar", "backend", "capacity", "expected_users", "edge_pool", "next_hop",
    "active_servers", "auto_failover",
)


def _backup_pool(f: _Fields, path: str) -> str | None:
    """The paired pool (DR-1): ``backup_pool``, or its older name ``paired_with``.

    Both may be given only with the same value. A pool that writes ``backup_pool``
    gets the rules' ``paired_with`` violations on that key's line.
    """
    preferred = f.optional("backup_pool", _str, None)
    legacy = f.optional("paired_with", _str, None)
    new_path, old_path = _child(path, "backup_pool"), _child(path, "paired_with")
    if preferred is not None and legacy is not None and preferred != legacy:
        f.ctx.report(new_path, f"backup_pool {preferred!r} and paired_with {legacy!r} "
                     f"disagree; paired_with is the older name of backup_pool: give only "
                     f"backup_pool")
        return None
    if preferred is not None and new_path in f.ctx.lines:
        f.ctx.lines.setdefault(old_path, f.ctx.lines[new_path])
    return preferred if preferred is not None else legacy


def _pool(ctx: _Context, value: object, path: str) -> Pool | None:
    f = _Fields(ctx, value, path, "pool", _POOL_KEYS)
    name = f.required("name", _str)
    site = f.required("site", _str)
    role = f.required("role", _enum(PoolRole))
    servers = f.required("servers", _list_of(_server))
    pool_args: dict[str, Any] = {
        "edition": f.optional("edition", _enum(Edition), None),
        "paired_with": _backup_pool(f, path),
        "backup_registrar": f.optional("backup_registrar", _str, None),
        "backend": f.optional("backend", _backend, None),
        "capacity": f.optional("capacity", _capacity, Capacity()),
        "expected_users": f.optional("expected_users", _int, None),
        "edge_pool": f.optional("edge_pool", _str, None),
        "next_hop": f.optional("next_hop", _str, None),
        "active_servers": f.optional("active_servers", _str_list, None),
        "auto_failover": f.optional("auto_failover", _bool, False),
    }
    if name is None or site is None or role is None or servers is None:
        return None
    return Pool(name, site, role, servers, **pool_args)


def _settings(ctx: _Context, value: object, path: str) -> Settings | None:
    fields = dataclasses.fields(Settings)
    f = _Fields(ctx, value, path, "settings", tuple(fd.name for fd in fields))
    defaults = Settings()
    values: dict[str, Any] = {}
    for fd in fields:
        default = getattr(defaults, fd.name)
        parse: _Parse[Any] = _str_list if isinstance(default, tuple) \
            else _int if isinstance(default, int) else _number
        values[fd.name] = f.optional(fd.name, parse, default)
    return Settings(**values)


_TOPOLOGY_KEYS = ("name", "sip_domain", "sites", "pools", "settings", "federation_route")


def _topology(ctx: _Context, value: object) -> Topology | None:
    f = _Fields(ctx, value, "", "topology", _TOPOLOGY_KEYS)
    name = f.required("name", _str)
    sip_domain = f.required("sip_domain", _str)
    sites = f.required("sites", _list_of(_site))
    pools = f.required("pools", _list_of(_pool))
    settings = f.optional("settings", _settings, Settings())
    federation_route = f.optional("federation_route", _str, None)
    if ctx.fatal or name is None or sip_domain is None or sites is None or pools is None:
        return None
    return Topology(name, sip_domain, sites, pools, settings, federation_route)


# --- public API -------------------------------------------------------------------


def _read_text(path: str | os.PathLike[str], ctx: _Context) -> str | None:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_TOPOLOGY_BYTES + 1)
    except OSError as exc:
        ctx.report("", f"cannot read {os.fspath(path)}: {exc.strerror or exc}")
        return None
    if len(data) > MAX_TOPOLOGY_BYTES:
        ctx.report("", f"topology is larger than {MAX_TOPOLOGY_BYTES} bytes")
        return None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        ctx.report("", f"topology is not UTF-8 (byte {exc.start})")
        return None


def _is_path(source: str | os.PathLike[str]) -> bool:
    return isinstance(source, os.PathLike) or "\n" not in source


def read_topology(source: str | os.PathLike[str], *, text: str | None = None) -> LoadResult:
    """Load without raising: a `LoadResult` with the model (when buildable) and every
    loader violation. `source` is a file path, unless `text` is given, in which case
    `source` only names it in messages."""
    ctx = _Context()
    name = os.fspath(source)
    if text is None:
        text = _read_text(source, ctx)
    topology: Topology | None = None
    if text is not None:
        data = _parse_yaml(text, ctx)
        if not isinstance(data, _Invalid):
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
    if _is_path(source):
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
