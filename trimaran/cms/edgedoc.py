"""The Edge state as servers and operators use it (SPEC EDGE-3, EDGE-4, EDGE-5): the
CMS's ``edge`` document when one was written (`trimaran edge ...`, `trimaran pool
set-edge`), else what the topology says.

The state is four things the operator moves at run time without editing the
topology: the federation route (the Edge pool outbound federation goes through),
each Edge pool's next hop (the Director or Front End pool behind it), each Front End
pool's media Edge pool, and the federated partners. The document is its JSON form
(`EdgeState.to_json`); a document written by hand that does not parse raises
`EdgeStateError` naming the offending field.

Changes are planned here, without I/O: `set_federation_route`, `set_next_hop` and
`set_media_edge` return the new state or raise `EdgeRefused` with the reason; the
caller passes how to tell whether a pool is up (its servers answer /health) and
writes the result compare-and-set on the CMS master.

`EdgeSource` is a server's view: the document parsed once per version, the last good
state kept when a document does not load (logged), the topology's when there is none.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from trimaran.cms.document import CmsDocumentSource, DocumentError
from trimaran.cms.replica import Snapshot
from trimaran.topology.edge_rules import parse_host_port
from trimaran.topology.model import FederatedPartner, Pool, PoolRole, Topology

log = logging.getLogger(__name__)

EDGE_KEY = "edge"
_KEYS = ("federation_route", "next_hops", "media_edges", "partners")
_NEXT_HOP_ROLES = (PoolRole.DIRECTOR, PoolRole.FRONTEND)


class EdgeStateError(ValueError):
    """An ``edge`` document that is not a valid Edge state; the message says where."""


class EdgeRefused(Exception):
    """A change of the Edge state is refused; the message says why."""


@dataclass(frozen=True)
class EdgeState:
    """Where federation goes, what is behind each Edge pool, who relays each Front End
    pool's media (names of pools), and the federated partners. Treat the dicts as
    read-only: changes make a new state."""

    federation_route: str | None = None
    next_hops: dict[str, str] = field(default_factory=dict)      # edge pool -> pool
    media_edges: dict[str, str] = field(default_factory=dict)    # FE pool -> edge pool
    partners: tuple[FederatedPartner, ...] = ()

    @classmethod
    def from_topology(cls, topology: Topology) -> EdgeState:
        """The state the topology declares."""
        return cls(
            federation_route=topology.federation_route,
            next_hops={p.name: p.next_hop for p in topology.pools
                       if p.role is PoolRole.EDGE and p.next_hop is not None},
            media_edges={p.name: p.edge_pool for p in topology.pools
                         if p.role is PoolRole.FRONTEND and p.edge_pool is not None},
            partners=topology.federation_partners)

    def with_defaults(self, topology: Topology) -> EdgeState:
        """This state, plus the topology's entries for pools it does not mention (pools
        added to the topology after the document was written)."""
        declared = EdgeState.from_topology(topology)
        return replace(self, next_hops={**declared.next_hops, **self.next_hops},
                       media_edges={**declared.media_edges, **self.media_edges})

    def edges_behind(self, pool: str) -> tuple[str, ...]:
        """The Edge pools whose next hop is `pool`, sorted."""
        return tuple(sorted(edge for edge, hop in self.next_hops.items() if hop == pool))

    def as_dict(self) -> dict[str, Any]:
        """The JSON value (the document, `edge status --json`)."""
        return {"federation_route": self.federation_route,
                "next_hops": dict(sorted(self.next_hops.items())),
                "media_edges": dict(sorted(self.media_edges.items())),
                "partners": [{"domain": p.domain, "edges": list(p.edges)}
                             for p in self.partners]}

    def to_json(self) -> str:
        """The ``edge`` document body."""
        return json.dumps(self.as_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> EdgeState:
        """Parse an ``edge`` document; `EdgeStateError` names what is wrong."""
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise EdgeStateError(f"edge document is not JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise EdgeStateError("edge document is not a JSON object")
        unknown = sorted(set(raw) - set(_KEYS))
        missing = [k for k in _KEYS if k not in raw]
        if unknown or missing:
            raise EdgeStateError(f"edge document: unknown key(s) {unknown}, missing {missing} "
                                 f"(keys: {', '.join(_KEYS)})")
        route = raw["federation_route"]
        if route is not None and not isinstance(route, str):
            raise EdgeStateError("edge document: federation_route: expected a pool name or "
                                 "null")
        return cls(route, _names(raw["next_hops"], "next_hops"),
                   _names(raw["media_edges"], "media_edges"), _partners(raw["partners"]))

    def problems(self, topology: Topology) -> list[str]:
        """Why this state does not fit `topology` (empty when it does): every name is a
        pool of the right role, every partner endpoint ``ip:port``."""
        pools = {p.name: p for p in topology.pools}
        found = []
        if self.federation_route is not None:
            found += _role_problems(pools, "federation_route", self.federation_route,
                                    (PoolRole.EDGE,))
        for edge, hop in sorted(self.next_hops.items()):
            found += _role_problems(pools, "next_hops", edge, (PoolRole.EDGE,))
            found += _role_problems(pools, f"next_hops.{edge}", hop, _NEXT_HOP_ROLES)
        for pool, edge in sorted(self.media_edges.items()):
            found += _role_problems(pools, "media_edges", pool, (PoolRole.FRONTEND,))
            found += _role_problems(pools, f"media_edges.{pool}", edge, (PoolRole.EDGE,))
        for partner in self.partners:
            found += [f"partners.{partner.domain}: {edge!r} is not ip:port"
                      for edge in partner.edges if parse_host_port(edge) is None]
        return found


def _names(value: object, path: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise EdgeStateError(f"edge document: {path}: expected an object of pool names")
    for key, name in value.items():
        if not isinstance(name, str) or not name:
            raise EdgeStateError(f"edge document: {path}.{key}: expected a pool name, got "
                                 f"{name!r}")
    return dict(value)


def _partners(value: object) -> tuple[FederatedPartner, ...]:
    if not isinstance(value, list):
        raise EdgeStateError("edge document: partners: expected a list")
    partners = []
    for i, entry in enumerate(value):
        if not isinstance(entry, dict) or set(entry) != {"domain", "edges"}:
            raise EdgeStateError(f"edge document: partners[{i}]: expected "
                                 f"{{\"domain\", \"edges\"}}")
        domain, edges = entry["domain"], entry["edges"]
        if not isinstance(domain, str) or not isinstance(edges, list) \
                or not all(isinstance(e, str) for e in edges):
            raise EdgeStateError(f"edge document: partners[{i}]: domain is a string, edges "
                                 f"a list of \"ip:port\" strings")
        partners.append(FederatedPartner(domain, tuple(edges)))
    return tuple(partners)


def _role_problems(pools: Mapping[str, Pool], where: str, name: str,
                   roles: tuple[PoolRole, ...]) -> list[str]:
    pool = pools.get(name)
    if pool is None:
        return [f"{where}: no pool named {name!r}"]
    if pool.role not in roles:
        return [f"{where}: {name} is {_a(pool.role)} pool, not {_roles(roles)}"]
    return []


def _a(role: PoolRole) -> str:
    return f"an {role}" if role.value[0] in "aeiou" else f"a {role}"


def _roles(roles: tuple[PoolRole, ...]) -> str:
    names = {PoolRole.EDGE: "an Edge", PoolRole.DIRECTOR: "a Director",
             PoolRole.FRONTEND: "a Front End"}
    return " or ".join(names.get(r, r.value) for r in roles) + " pool"


def state_of(topology: Topology, body: str | None) -> EdgeState:
    """The state in use: the document `body` (completed from the topology) when there
    is one, else the topology's; `EdgeStateError` when the document is bad."""
    if body is None:
        return EdgeState.from_topology(topology)
    state = EdgeState.from_json(body).with_defaults(topology)
    problems = state.problems(topology)
    if problems:
        raise EdgeStateError("edge document does not fit the topology: " + "; ".join(problems))
    return state


def document_in(answer: Mapping[str, Any]) -> tuple[str, int] | None:
    """(body, version) of the ``edge`` document in a ``GET /cms/snapshot`` answer."""
    for doc in answer.get("documents", []):
        if isinstance(doc, dict) and doc.get("key") == EDGE_KEY:
            return str(doc["body"]), int(doc["version"])
    return None


# --- planned changes (no I/O) ----------------------------------------------------------

IsUp = Callable[[str], bool]


def _pool(topology: Topology, name: str) -> Pool:
    for pool in topology.pools:
        if pool.name == name:
            return pool
    raise EdgeRefused(f"no pool named {name!r}")


def _edge_pool(topology: Topology, name: str) -> Pool:
    pool = _pool(topology, name)
    if pool.role is not PoolRole.EDGE:
        edges = [p.name for p in topology.pools if p.role is PoolRole.EDGE]
        raise EdgeRefused(f"{name} is {_a(pool.role)} pool, not an Edge pool (Edge pools: "
                          f"{', '.join(edges) or 'none'})")
    return pool


def _down(pool: str, is_up: IsUp) -> None:
    if not is_up(pool):
        raise EdgeRefused(f"pool {pool} is down: none of its servers answers /health")


def set_federation_route(state: EdgeState, topology: Topology, edge: str,
                         is_up: IsUp) -> EdgeState:
    """Outbound federation through Edge pool `edge` (EDGE-3): a federation-enabled Edge
    pool that is up."""
    pool = _edge_pool(topology, edge)
    if not pool.federation:
        raise EdgeRefused(f"Edge pool {edge} is not federation-enabled (set federation: "
                          f"true on it in the topology)")
    _down(edge, is_up)
    return replace(state, federation_route=edge)


def set_next_hop(state: EdgeState, topology: Topology, edge: str, target: str,
                 is_up: IsUp) -> EdgeState:
    """Edge pool `edge` hands what it relays inward to `target` (EDGE-4): a Director
    or Front End pool that is up."""
    _edge_pool(topology, edge)
    pool = _pool(topology, target)
    if pool.role not in _NEXT_HOP_ROLES:
        raise EdgeRefused(f"{target} is {_a(pool.role)} pool; an Edge pool's next hop is a "
                          f"Director or Front End pool")
    _down(target, is_up)
    return replace(state, next_hops={**state.next_hops, edge: target})


def set_media_edge(state: EdgeState, topology: Topology, pool_name: str,
                   edge: str) -> EdgeState:
    """Front End pool `pool_name` relays media through Edge pool `edge` (EDGE-5)."""
    pool = _pool(topology, pool_name)
    if pool.role is not PoolRole.FRONTEND:
        raise EdgeRefused(f"{pool_name} is {_a(pool.role)} pool; only Front End pools have a "
                          f"media Edge pool")
    _edge_pool(topology, edge)
    return replace(state, media_edges={**state.media_edges, pool_name: edge})


# --- a server's view -------------------------------------------------------------------


class EdgeSource(CmsDocumentSource[EdgeState]):
    """The current Edge state of one server: the CMS document's, else the topology's."""

    def __init__(self, topology: Topology, snapshot: Callable[[], Snapshot]) -> None:
        def parse(body: str) -> EdgeState:
            try:
                return state_of(topology, body)
            except EdgeStateError as exc:
                raise DocumentError(str(exc)) from None
        super().__init__(EDGE_KEY, snapshot, parse, EdgeState.from_topology(topology))


__all__ = [
    "EDGE_KEY",
    "EdgeRefused",
    "EdgeSource",
    "EdgeState",
    "EdgeStateError",
    "IsUp",
    "document_in",
    "set_federation_route",
    "set_media_edge",
    "set_next_hop",
    "state_of",
]
