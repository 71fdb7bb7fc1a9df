"""Fresh identifiers: branches (§8.1.1.7), tags (§19.3) and Call-IDs (§8.1.1.4)."""

from __future__ import annotations

import secrets

from trimaran.sip.headers import BRANCH_MAGIC


def new_branch() -> str:
    """A Via branch unique in space and time, with the RFC 3261 magic cookie."""
    return BRANCH_MAGIC + secrets.token_hex(10)


def new_tag() -> str:
    """A From/To tag with at least 32 bits of randomness."""
    return secrets.token_hex(6)


def new_call_id(host: str) -> str:
    """A globally unique Call-ID."""
    return f"{secrets.token_hex(12)}@{host}"
