"""Strict YAML loading primitives shared by the topology and voice loaders (TOP-1, EV-1).

Theory of operation. A document's text is parsed by PyYAML's safe loader into a
node tree (aliases refused, so no "billion laughs"; at most `MAX_DOCUMENT_BYTES`),
the tree is turned into plain dicts/lists/scalars while recording the line of
every path and reporting duplicate keys and exotic tags, and then each model type
is built by a small function that reads exactly its keys through `Fields`.
Nothing is coerced: ``"5060"`` is not a port, ``"yes"`` is not a boolean, ``10.5``
is not an integer.

Every problem is reported to one `Context` and loading carries on, so one run
reports all of them. Unknown keys are reported but are not fatal (they are simply
not read); a missing or ill-typed value is (`Context.fatal`), and the builder of
the enclosing value then returns None.

A value parser has the shape ``(ctx, value, path) -> T | None`` (`Parse`): it
returns the typed value, or None after reporting why not. `as_str`, `as_int`,
`as_number`, `as_bool` and `as_str_list` are parsers; `enum_of` and `list_of`
make parsers.

`document` names the kind of document in messages ("topology", "voice
configuration"); `root` is the path of its top level ("" for a topology,
``voice`` for a voice configuration loaded on its own).
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeVar

import yaml

from trimaran.topology.errors import Violation

MAX_DOCUMENT_BYTES = 1 << 20

T = TypeVar("T")
E = TypeVar("E", bound=StrEnum)

_TAG = "tag:yaml.org,2002:"
_STR, _MAP, _SEQ, _MERGE = _TAG + "str", _TAG + "map", _TAG + "seq", _TAG + "merge"
_SCALAR_TAGS = frozenset({_STR, _TAG + "int", _TAG + "float", _TAG + "bool", _TAG + "null"})


class Invalid:
    """Marks a value that was already reported while converting the YAML tree."""


INVALID = Invalid()
MISSING = object()


class NoAliasLoader(yaml.SafeLoader):
    """A safe loader that refuses aliases: a configuration never needs them, bombs do."""

    document = "topology"

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None, None, f"YAML aliases (*name) are not allowed in a {self.document}",
                event.start_mark,
            )
        return super().compose_node(parent, index)


def line_of(lines: Mapping[str, int], path: str) -> int | None:
    """The line of `path`, or of its nearest ancestor present in `lines`."""
    while path:
        if path in lines:
            return lines[path]
        cut = max(path.rfind("."), path.rfind("["))
        path = path[:cut] if cut > 0 else ""
    return lines.get("")


@dataclass
class Context:
    """Collects violations and line numbers during one load."""

    violations: list[Violation] = field(default_factory=list)
    lines: dict[str, int] = field(default_factory=dict)
    fatal: bool = False

    def report(
        self, path: str, message: str, *, fatal: bool = True, line: int | None = None
    ) -> None:
        """Record an error at `path` (its line looked up unless given); `fatal` stops
        the enclosing value from being built."""
        line = line if line is not None else line_of(self.lines, path)
        self.violations.append(Violation(path, message, "error", line))
        self.fatal = self.fatal or fatal


def child(path: str, key: str) -> str:
    """Path of `key` under `path`, e.g. ``pools[0].name``."""
    return f"{path}.{key}" if path else key


def item(path: str, index: int) -> str:
    """Path of list item `index` under `path`, e.g. ``pools[0]``."""
    return f"{path}[{index}]"


def describe(value: object) -> str:
    """How a wrong value is named in a message: ``string '5060'``, ``a list``..."""
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


def _to_plain(loader: NoAliasLoader, node: yaml.Node, path: str, ctx: Context) -> object:
    ctx.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.ScalarNode):
        if node.tag not in _SCALAR_TAGS:
            ctx.report(path, f"unsupported YAML tag {node.tag!r}")
            return INVALID
        try:
            return loader.construct_object(node)
        except (yaml.YAMLError, ValueError, KeyError, TypeError):
            ctx.report(path, f"{node.value!r} is not a valid {node.tag.removeprefix(_TAG)}")
            return INVALID
    if isinstance(node, yaml.SequenceNode):
        if node.tag != _SEQ:
            ctx.report(path, f"unsupported YAML tag {node.tag!r}")
            return INVALID
        return [_to_plain(loader, entry, item(path, i), ctx) for i, entry in enumerate(node.value)]
    if isinstance(node, yaml.MappingNode) and node.tag == _MAP:
        return _mapping_to_plain(loader, node, path, ctx)
    ctx.report(path, f"unsupported YAML tag {node.tag!r}")
    return INVALID


def _mapping_to_plain(
    loader: NoAliasLoader, node: yaml.MappingNode, path: str, ctx: Context
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
        path_of_key = child(path, key)
        if key in result:
            ctx.report(path_of_key, f"duplicate key {key!r}", line=line)
            continue
        ctx.lines[path_of_key] = line
        result[key] = _to_plain(loader, value_node, path_of_key, ctx)
    return result


def parse_yaml(text: str, ctx: Context, *, document: str = "topology", root: str = "") -> object:
    """The plain data (dicts, lists, scalars) of a YAML document, or `INVALID` after
    reporting why (at `root`); records the line of every path under `root`."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_DOCUMENT_BYTES:
        ctx.report(root, f"{document} is larger than {MAX_DOCUMENT_BYTES} bytes")
        return INVALID
    loader: NoAliasLoader | None = None
    try:
        loader = NoAliasLoader(text)  # the reader already rejects unprintable characters
        loader.document = document
        node = loader.get_single_node()
        if node is None:
            ctx.report(root, f"{document} is empty")
            return INVALID
        return _to_plain(loader, node, root, ctx)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if mark is None:
            ctx.report(root, f"YAML syntax error: {problem}")
        else:
            ctx.report(root, f"YAML syntax error at column {mark.column + 1}: {problem}",
                       line=mark.line + 1)
    except yaml.YAMLError as exc:
        ctx.report(root, f"YAML syntax error: {exc}")
    except RecursionError:
        ctx.report(root, "YAML is nested too deeply")
    finally:
        if loader is not None:
            loader.dispose()
    ctx.fatal = True
    return INVALID


def read_text(
    path: str | os.PathLike[str], ctx: Context, *, document: str = "topology", root: str = ""
) -> str | None:
    """The UTF-8 text of a file (a BOM is dropped), None after reporting why not."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_DOCUMENT_BYTES + 1)
    except OSError as exc:
        ctx.report(root, f"cannot read {os.fspath(path)}: {exc.strerror or exc}")
        return None
    if len(data) > MAX_DOCUMENT_BYTES:
        ctx.report(root, f"{document} is larger than {MAX_DOCUMENT_BYTES} bytes")
        return None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        ctx.report(root, f"{document} is not UTF-8 (byte {exc.start})")
        return None


def is_path(source: str | os.PathLike[str]) -> bool:
    """True when `source` names a file rather than holding YAML text (no newline)."""
    return isinstance(source, os.PathLike) or "\n" not in source


# --- typed values ---------------------------------------------------------------

Parse = Callable[[Context, object, str], T | None]


def bad(ctx: Context, value: object, path: str, expected: str) -> None:
    """Report that the value at `path` is not what was `expected` (unless it was
    already reported while reading the YAML); always fatal."""
    if not isinstance(value, Invalid):
        ctx.report(path, f"expected {expected}, got {describe(value)}")
    ctx.fatal = True


def as_str(ctx: Context, value: object, path: str) -> str | None:
    """A string."""
    if isinstance(value, str):
        return value
    bad(ctx, value, path, "a string")
    return None


def as_bool(ctx: Context, value: object, path: str) -> bool | None:
    """``true`` or ``false`` (not ``yes``, not 1)."""
    if isinstance(value, bool):
        return value
    bad(ctx, value, path, "true or false")
    return None


def as_int(ctx: Context, value: object, path: str) -> int | None:
    """An integer (not a boolean, not ``10.0``)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    bad(ctx, value, path, "an integer")
    return None


def as_number(ctx: Context, value: object, path: str) -> float | None:
    """A finite integer or float, as a float."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    bad(ctx, value, path, "a finite number")
    return None


def enum_of(kind: type[E]) -> Parse[E]:
    """A parser of one of the values of the StrEnum `kind`."""
    allowed = ", ".join(m.value for m in kind)

    def parse(ctx: Context, value: object, path: str) -> E | None:
        if isinstance(value, str):
            for member in kind:
                if member.value == value:
                    return member
            ctx.report(path, f"{value!r} is not one of: {allowed}")
            return None
        bad(ctx, value, path, f"one of: {allowed}")
        return None

    return parse


def as_str_list(ctx: Context, value: object, path: str) -> tuple[str, ...] | None:
    """A list of strings, as a tuple (ill-typed items are reported and dropped)."""
    if not isinstance(value, list):
        bad(ctx, value, path, "a list of strings")
        return None
    items = [as_str(ctx, entry, item(path, i)) for i, entry in enumerate(value)]
    return tuple(s for s in items if s is not None)


def list_of(build: Parse[T]) -> Parse[tuple[T, ...]]:
    """A parser of a list whose items `build` parses, as a tuple."""

    def parse(ctx: Context, value: object, path: str) -> tuple[T, ...] | None:
        if not isinstance(value, list):
            bad(ctx, value, path, "a list")
            return None
        built = [build(ctx, entry, item(path, i)) for i, entry in enumerate(value)]
        return tuple(b for b in built if b is not None)

    return parse


class Fields:
    """Reads the keys of one mapping, reporting unknown, missing and ill-typed ones."""

    def __init__(
        self, ctx: Context, value: object, path: str, what: str, allowed: tuple[str, ...]
    ) -> None:
        self.ctx, self.path, self.what = ctx, path, what
        self.data: dict[str, object] = {}
        self.is_mapping = isinstance(value, dict)
        if not isinstance(value, dict):
            bad(ctx, value, path, f"a mapping ({what})")
            return
        self.data = value
        for key in value:
            if key not in allowed:
                hint = difflib.get_close_matches(key, allowed, n=1)
                guess = f"; did you mean {hint[0]!r}?" if hint else ""
                ctx.report(
                    child(path, key),
                    f"unknown key {key!r} in {what} (allowed: {', '.join(allowed)}){guess}",
                    fatal=False,
                )

    def required(self, key: str, parse: Parse[T]) -> T | None:
        """The value of a key that must be present."""
        value = self.data.get(key, MISSING)
        if value is MISSING:
            if self.is_mapping:
                self.ctx.report(
                    child(self.path, key), f"required key {key!r} of {self.what} is missing"
                )
            return None
        return parse(self.ctx, value, child(self.path, key))

    def optional(self, key: str, parse: Parse[T], default: T) -> T:
        """The value of a key that may be absent (then `default`); null means absent
        only where the default is None."""
        value = self.data.get(key, MISSING)
        if value is MISSING or (value is None and default is None):
            return default
        parsed = parse(self.ctx, value, child(self.path, key))
        return default if parsed is None else parsed


class _NoAliasDumper(yaml.SafeDumper):
    """Never writes anchors/aliases (the loaders refuse them)."""

    def ignore_aliases(self, data: object) -> bool:
        return True


def dump_yaml(data: object) -> str:
    """`data` (plain mappings, lists, scalars) as a YAML document the loaders read back:
    keys in the given order, no aliases, block style, long lines kept whole."""
    return yaml.dump(data, Dumper=_NoAliasDumper, sort_keys=False, allow_unicode=True,
                     default_flow_style=False, width=1_000)


__all__ = [
    "INVALID",
    "MAX_DOCUMENT_BYTES",
    "MISSING",
    "Context",
    "Fields",
    "Invalid",
    "NoAliasLoader",
    "Parse",
    "as_bool",
    "as_int",
    "as_number",
    "as_str",
    "as_str_list",
    "bad",
    "child",
    "describe",
    "dump_yaml",
    "enum_of",
    "is_path",
    "item",
    "line_of",
    "list_of",
    "parse_yaml",
    "read_text",
]
