"""Admin credentials for tests (OPS-6): tokens signed with this process's admin key, which
embedded servers check, or with a run directory's key for a deployment started by `up`."""

from __future__ import annotations

import base64
from pathlib import Path

from trimaran.admin import access
from trimaran.deploy.rundir import RunDir


def token(scope: str = access.OPERATOR, name: str = "tests", key: bytes | None = None) -> str:
    """A fresh token of `scope` for this process's admin key (or `key`)."""
    return access.mint(key if key is not None else access.admin_key(), name, scope)[0]


def headers(scope: str = access.OPERATOR, key: bytes | None = None) -> dict[str, str]:
    """``Authorization: Bearer`` with a fresh token of `scope`."""
    return {"Authorization": f"Bearer {token(scope, key=key)}"}


def basic(scope: str = access.READ) -> dict[str, str]:
    """What a browser sends once its user typed a token as the password (any user)."""
    value = base64.b64encode(f"viewer:{token(scope)}".encode()).decode()
    return {"Authorization": f"Basic {value}"}


def for_rundir(rundir: Path | str, scope: str = access.OPERATOR) -> dict[str, str]:
    """Headers a deployment started with `trimaran up --dir rundir` accepts; this process
    then also signs its own admin calls (`trimaran.deploy.dr.call`) with its key."""
    run = RunDir(rundir)
    access.use_rundir(run)
    return headers(scope, key=run.admin_key())


def needed(method: str, path: str) -> bool:
    """True when `method path` is an admin or peer route (not /health, not a user route)."""
    return access.classify(method, path.split("?", 1)[0]) in (access.ADMIN, access.PEER)
