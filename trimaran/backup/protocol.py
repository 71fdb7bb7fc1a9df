"""The Backup Service's wire format: batches of change-log rows as JSON.

A batch::

    {"source": "fe1", "after": 6, "changes": [{"seq": 7, "pool": "fe1", "category": "contacts",
      "key": "sip:alice@example.com", "op": "put", "payload": "{...}", "at": 1.5}, ...],
     "blobs": {"<sha256 hex>": "<base64>"}}

`blobs` carries the bytes of the meeting content a batch references (content-addressed:
the receiver checks each digest). `after` is the progress the sender believes the
receiver has; a receiver that has applied less (it was rebuilt, or restored from an
older copy) refuses the batch, and the sender starts again from the receiver's
progress — so a gap is never skipped. Decoding is strict: `BatchError` names what is
wrong.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping, Sequence

from trimaran.store.model import Change

#: Most changes per batch; a batch also stops growing at MAX_BATCH_BYTES of payload.
MAX_BATCH_CHANGES = 500
MAX_BATCH_BYTES = 4 * 1024 * 1024


class BatchError(ValueError):
    """A batch that is not one."""


def pair_key(a: str, b: str) -> str:
    """The key id both pools of a pair sign their Backup Service calls with."""
    first, second = sorted((a, b))
    return f"pair:{first}:{second}"


def encode_batch(source: str, changes: Sequence[Change], blobs: Mapping[str, bytes],
                 after: int = 0) -> dict[str, object]:
    """The JSON object of a batch."""
    return {"source": source, "after": after,
            "changes": [{"seq": c.seq, "pool": c.pool, "category": c.category, "key": c.key,
                         "op": c.op, "payload": c.payload, "at": c.at} for c in changes],
            "blobs": {sha: base64.b64encode(data).decode() for sha, data in blobs.items()}}


def decode_batch(value: object) -> tuple[str, list[Change], dict[str, bytes]]:
    """(source, changes, blobs) of a batch object; `BatchError` when malformed."""
    if not isinstance(value, dict):
        raise BatchError("batch: not a JSON object")
    source, raw_changes, raw_blobs = value.get("source"), value.get("changes"), \
        value.get("blobs", {})
    if not isinstance(source, str) or not source:
        raise BatchError("batch.source: a pool name is required")
    if not isinstance(raw_changes, list) or len(raw_changes) > MAX_BATCH_CHANGES:
        raise BatchError(f"batch.changes: a list of at most {MAX_BATCH_CHANGES} changes")
    if not isinstance(raw_blobs, dict):
        raise BatchError("batch.blobs: an object of sha256 -> base64")
    changes = []
    for i, raw in enumerate(raw_changes):
        try:
            change = Change(int(raw["seq"]), str(raw["pool"]), str(raw["category"]),
                            str(raw["key"]), str(raw["op"]), str(raw["payload"]),
                            float(raw["at"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise BatchError(f"batch.changes[{i}]: {exc}") from None
        changes.append(change)
    blobs = {}
    for sha, text in raw_blobs.items():
        try:
            data = base64.b64decode(str(text), validate=True)
        except (binascii.Error, ValueError):
            raise BatchError(f"batch.blobs[{sha[:16]}]: not base64") from None
        if hashlib.sha256(data).hexdigest() != sha:
            raise BatchError(f"batch.blobs[{sha[:16]}]: digest does not match the bytes")
        blobs[sha] = data
    return source, changes, blobs
