"""Small durable JSON records (the agent's term and role, the witness's terms).

Contract: `write_json` replaces the file atomically and durably — the data is written
to a temporary file beside it, fsynced, renamed over the old file and the directory
fsynced — so a reader (or a restart after a crash at any point) sees either the old
record or the new one, never a mix; once it returns, the new record survives a crash
of the machine. `read_json` returns None when the file does not exist and raises
`DurableStateError` when it exists but is not a JSON object (never guessed around:
a term must not silently go back to zero).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trimaran.backend.instance import BackendError


class DurableStateError(BackendError):
    """A durable record exists but cannot be read."""


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Replace `path` with `data` as JSON, atomically and durably (see the module)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "w", encoding="utf-8") as out:
        json.dump(dict(data), out, sort_keys=True, indent=1)
        out.write("\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in `path`; None when there is no such file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DurableStateError(f"cannot read {path}: {exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DurableStateError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise DurableStateError(f"{path} does not hold a JSON object")
    return data
