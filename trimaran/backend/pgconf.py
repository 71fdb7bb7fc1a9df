"""PostgreSQL configuration files (``postgresql.auto.conf``): read and write
``name = 'value'`` lines as ``ALTER SYSTEM`` does (quotes and backslashes doubled
inside single quotes)."""

from __future__ import annotations

import re
from collections.abc import Mapping

_LINE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*=?\s*(?:'((?:[^'\\]|''|\\.)*)'|(\S+))")


def parse_conf(text: str) -> dict[str, str]:
    """The settings of a configuration file (names lower-cased; the last one wins)."""
    settings: dict[str, str] = {}
    for line in text.splitlines():
        match = _LINE.match(line)
        if match is not None:
            name, quoted, bare = match.groups()
            settings[name.lower()] = unquote(quoted) if quoted is not None else bare
    return settings


def render_conf(settings: Mapping[str, str]) -> str:
    """Configuration lines for `settings`, each ending with a newline."""
    return "".join(f"{name} = '{quote(value)}'\n" for name, value in settings.items())


def quote(value: str) -> str:
    """`value` as written between single quotes (quotes and backslashes doubled)."""
    return value.replace("\\", "\\\\").replace("'", "''")


def unquote(quoted: str) -> str:
    """The value of a single-quoted string (``''`` and backslash escapes)."""
    return re.sub(r"''|\\(.)", lambda m: "'" if m.group(0) == "''" else m.group(1), quoted)
