"""A server's read-only copy of the CMS (DESIGN §3 "CMS"; SPEC TOP-3, DR-9).

The CMS master is the store of one Front End pool. Every server keeps a versioned
copy: it pulls the documents changed since its version from the master, and saves
the copy on disk (atomically) so that it starts, and keeps working, from it when
the master is unreachable.

Documents:

``master``              ``{"pool": P, "term": t}``: where the master is; `term` grows
                        with every CMS failover (the higher term wins)
``topology``            the published topology (YAML)
``failover/<pool>``     the pool's failover record (`trimaran.cms.failover`)
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from trimaran.cms.failover import FailoverStateError, PoolFailover
from trimaran.store.model import CmsDocument

MASTER_KEY = "master"
TOPOLOGY_KEY = "topology"
FAILOVER_PREFIX = "failover/"


class CmsError(Exception):
    """The CMS cannot do what was asked (not the master, unreachable, bad document)."""


@dataclass(frozen=True, slots=True)
class MasterLocator:
    """Where the CMS master is, and the term of that placement."""

    pool: str
    term: int

    def to_json(self) -> str:
        """The `master` document body."""
        return json.dumps({"pool": self.pool, "term": self.term}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> MasterLocator:
        """Parse a `master` document; `CmsError` when it is not one."""
        try:
            raw = json.loads(text)
            return cls(str(raw["pool"]), int(raw["term"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise CmsError(f"bad master document: {exc}") from None


@dataclass(frozen=True)
class Snapshot:
    """A copy of the CMS at one version."""

    version: int = 0
    master: MasterLocator | None = None
    documents: Mapping[str, CmsDocument] = field(default_factory=dict)
    pulled_at: float = 0.0           # when it was last confirmed by the master (0: never)

    def failover_records(self) -> dict[str, PoolFailover]:
        """Every pool's failover record (pools without one are `normal`)."""
        records = {}
        for key, doc in self.documents.items():
            if key.startswith(FAILOVER_PREFIX):
                try:
                    record = PoolFailover.from_json(doc.body)
                except FailoverStateError:
                    continue
                records[record.pool] = record
        return records

    def merged(self, master: MasterLocator, version: int, changed: list[CmsDocument],
               keys: set[str], now: float) -> Snapshot:
        """This copy updated with the master's answer: `changed` documents and the set
        of every key the master has (what is missing was deleted)."""
        documents = {k: d for k, d in self.documents.items() if k in keys}
        for doc in changed:
            documents[doc.key] = doc
        return Snapshot(version, master, documents, now)

    def to_json(self) -> dict[str, object]:
        """JSON form (the file on disk, `cms status --json`)."""
        return {"version": self.version, "pulled_at": self.pulled_at,
                "master": None if self.master is None else
                {"pool": self.master.pool, "term": self.master.term},
                "documents": {k: {"body": d.body, "version": d.version,
                                  "updated_at": d.updated_at}
                              for k, d in sorted(self.documents.items())}}

    @classmethod
    def from_json(cls, raw: Mapping[str, object]) -> Snapshot:
        """Parse `to_json`'s form; `CmsError` when malformed."""
        try:
            master_raw = raw.get("master")
            master = None
            if isinstance(master_raw, dict):
                master = MasterLocator(str(master_raw["pool"]), int(master_raw["term"]))
            docs_raw = raw.get("documents", {})
            assert isinstance(docs_raw, dict)
            documents = {str(k): CmsDocument(str(k), str(v["body"]), int(v["version"]),
                                             float(v["updated_at"]))
                         for k, v in docs_raw.items()}
            version = raw.get("version", 0)
            pulled_at = raw.get("pulled_at", 0.0)
            assert isinstance(version, int) and isinstance(pulled_at, (int, float))
            return cls(version, master, documents, float(pulled_at))
        except (KeyError, TypeError, ValueError, AssertionError) as exc:
            raise CmsError(f"bad CMS snapshot: {exc}") from None


def load_replica(path: Path) -> Snapshot:
    """The copy saved at `path` (an empty one when there is none or it is unreadable)."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return Snapshot()
    if not isinstance(raw, dict):
        return Snapshot()
    try:
        return Snapshot.from_json(raw)
    except CmsError:
        return Snapshot()


def save_replica(path: Path, snapshot: Snapshot) -> None:
    """Write the copy atomically (a crash leaves the old or the new one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as handle:
        json.dump(snapshot.to_json(), handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
