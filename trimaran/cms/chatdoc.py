"""The Persistent Chat state as servers and operators use it (SPEC PC-2, PC-4): the
CMS's ``chat`` document when one was written (`trimaran chat ...`), else what the
topology says.

Per chat pool, two things change at run time without editing the topology: its
*mode* and its *active servers* (those accepting new connections, at most
`MAX_CHAT_ACTIVE_SERVERS`). The document is the JSON form of `ChatState`
(`ChatState.to_json`); a document that does not parse raises `ChatStateError`
naming the offending field.

Theory of operation — the modes of one pool
-------------------------------------------
``normal``        the store is the primary data center's mirrored pair; its log is
                  shipped to the copy in the second data center (PC-3).
``failed-over``   ``chat failover``: the shipped copy was promoted and is the store;
                  the active servers are the pool's servers in the second data center.
``failing-back``  ``chat failback`` runs: servers refuse posts while the primary data
                  center is re-seeded from the copy (a store that no longer changes);
                  run again, it finishes an interrupted failback.

`TRANSITIONS` is the table: (mode, event) -> next mode. Any other pair is refused
(`ChatStateRefused` naming the mode and the event): failing over a pool already
failed over, failing back one that is not, or skipping ``failing-back`` (the only
way posts written in the second data center reach the first).

Changes are planned here, without I/O: `set_active`, `failed_over`, `failing_back` and
`normal` return the new state or raise `ChatStateRefused` with the reason; the caller
writes the result compare-and-set on the CMS master. `ChatSource` is a server's view:
the document parsed once per version, the last good state kept when a version does
not load (logged), `default_state` while there is none.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from trimaran.cms.document import CmsDocumentSource, DocumentError
from trimaran.cms.replica import Snapshot
from trimaran.topology.model import MAX_CHAT_ACTIVE_SERVERS, Pool, PoolRole, Topology

CHAT_KEY = "chat"


class ChatMode(StrEnum):
    """Where a chat pool's store is (see the module)."""

    NORMAL = "normal"
    FAILED_OVER = "failed-over"
    FAILING_BACK = "failing-back"


class ChatStateError(ValueError):
    """A ``chat`` document that is not a valid chat state; the message says where."""


class ChatStateRefused(Exception):
    """A change of the chat state is refused; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


#: (mode, event) -> the mode after it; every other pair is refused.
TRANSITIONS: Mapping[tuple[ChatMode, str], ChatMode] = {
    (ChatMode.NORMAL, "failover"): ChatMode.FAILED_OVER,
    (ChatMode.FAILED_OVER, "failback"): ChatMode.FAILING_BACK,
    (ChatMode.FAILING_BACK, "failback"): ChatMode.FAILING_BACK,     # finish an interrupted one
    (ChatMode.FAILING_BACK, "failback-done"): ChatMode.NORMAL,
}
_WHY_NOT = {
    "failover": {ChatMode.FAILED_OVER: "it is failed over already",
                 ChatMode.FAILING_BACK: "a failback is in progress: run `chat failback` "
                                        "again to finish it"},
    "failback": {ChatMode.NORMAL: "it is not failed over"},
    "failback-done": {ChatMode.NORMAL: "no failback is in progress",
                      ChatMode.FAILED_OVER: "the store has not been failed back yet"},
}


@dataclass(frozen=True)
class ChatPoolState:
    """One chat pool's mode and the servers accepting new connections (file order)."""

    mode: ChatMode = ChatMode.NORMAL
    active: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """The JSON value of the pool's entry."""
        return {"mode": self.mode.value, "active": list(self.active)}


@dataclass(frozen=True)
class ChatState:
    """Every chat pool's state, by pool name. Treat the dict as read-only: changes make
    a new state."""

    pools: dict[str, ChatPoolState]

    def of(self, pool: str) -> ChatPoolState:
        """The state of chat pool `pool` (`KeyError` when there is no such chat pool)."""
        return self.pools[pool]

    def to_json(self) -> dict[str, Any]:
        """The JSON value (the document's body is its ``json.dumps``; `chat status`)."""
        return {"pools": {name: s.as_dict() for name, s in sorted(self.pools.items())}}

    def body(self) -> str:
        """The ``chat`` document body."""
        return json.dumps(self.to_json(), sort_keys=True)

    @classmethod
    def from_json(cls, raw: object, topology: Topology) -> ChatState:
        """Parse a ``chat`` document (its text, or the JSON value) against `topology`:
        pools it does not mention get `default_state`'s entry; `ChatStateError` names
        what is wrong (not JSON, unknown keys, an unknown pool or server, a bad mode,
        more than `MAX_CHAT_ACTIVE_SERVERS` active)."""
        if isinstance(raw, str | bytes):
            try:
                raw = json.loads(raw)
            except ValueError as exc:
                raise ChatStateError(f"chat document is not JSON: {exc}") from None
        if not isinstance(raw, dict) or set(raw) != {"pools"} \
                or not isinstance(raw["pools"], dict):
            raise ChatStateError('chat document: expected {"pools": {POOL: {"mode", '
                                 '"active"}}}')
        chat_pools = {p.name: p for p in topology.pools if p.role is PoolRole.CHAT}
        pools = dict(default_state(topology).pools)
        for name, entry in raw["pools"].items():
            pool = chat_pools.get(name)
            if pool is None:
                raise ChatStateError(f"chat document: pools.{name}: no chat pool of that "
                                     f"name (chat pools: {', '.join(chat_pools) or 'none'})")
            pools[name] = _pool_entry(pool, entry, f"pools.{name}")
        return cls(pools)


def _pool_entry(pool: Pool, entry: object, path: str) -> ChatPoolState:
    if not isinstance(entry, dict) or set(entry) != {"mode", "active"}:
        raise ChatStateError(f'chat document: {path}: expected {{"mode", "active"}}')
    try:
        mode = ChatMode(entry["mode"])
    except ValueError:
        raise ChatStateError(f"chat document: {path}.mode: {entry['mode']!r} is not one of "
                             f"{', '.join(m.value for m in ChatMode)}") from None
    active = entry["active"]
    if not isinstance(active, list) or not all(isinstance(a, str) for a in active):
        raise ChatStateError(f"chat document: {path}.active: expected a list of server names")
    try:
        _check_servers(pool, active, allow_empty=True)
    except ChatStateRefused as exc:
        raise ChatStateError(f"chat document: {path}.active: {exc.reason}") from None
    return ChatPoolState(mode, tuple(active))


# --- the state the topology declares -----------------------------------------------------


def chat_pool(topology: Topology, name: str) -> Pool:
    """The chat pool `name` (`ChatStateRefused` when there is none)."""
    chat_pools = [p for p in topology.pools if p.role is PoolRole.CHAT]
    for pool in chat_pools:
        if pool.name == name:
            return pool
    raise ChatStateRefused(f"no chat pool named {name!r} (chat pools: "
                           f"{', '.join(p.name for p in chat_pools) or 'none'})")


def declared_active(pool: Pool) -> tuple[str, ...]:
    """The servers the topology makes active: `Pool.active_servers`, else the pool's
    servers in its own site (at most `MAX_CHAT_ACTIVE_SERVERS`, file order)."""
    if pool.active_servers is not None:
        return pool.active_servers
    home = [s.name for s in pool.servers if pool.site_of(s) == pool.site]
    return tuple(home[:MAX_CHAT_ACTIVE_SERVERS])


def second_site_servers(pool: Pool) -> tuple[str, ...]:
    """The pool's servers in its log-shipping site (at most `MAX_CHAT_ACTIVE_SERVERS`,
    file order); none without log shipping."""
    if pool.log_shipping is None:
        return ()
    site = pool.log_shipping.site
    there = [s.name for s in pool.servers if pool.site_of(s) == site]
    return tuple(there[:MAX_CHAT_ACTIVE_SERVERS])


def default_state(topology: Topology) -> ChatState:
    """Every chat pool in mode normal with the topology's active servers."""
    return ChatState({p.name: ChatPoolState(ChatMode.NORMAL, declared_active(p))
                      for p in topology.pools if p.role is PoolRole.CHAT})


def state_of(topology: Topology, body: str | None) -> ChatState:
    """The state in use: the document `body` when there is one, else the default;
    `ChatStateError` when the document is bad."""
    return default_state(topology) if body is None else ChatState.from_json(body, topology)


def document_in(answer: Mapping[str, Any]) -> tuple[str, int] | None:
    """(body, version) of the ``chat`` document in a ``GET /cms/snapshot`` answer."""
    for doc in answer.get("documents", []):
        if isinstance(doc, dict) and doc.get("key") == CHAT_KEY:
            return str(doc["body"]), int(doc["version"])
    return None


# --- planned changes (no I/O) ------------------------------------------------------------

IsUp = Callable[[str], bool]


def _check_servers(pool: Pool, servers: list[str] | tuple[str, ...], *,
                   allow_empty: bool = False) -> None:
    if not servers and not allow_empty:
        raise ChatStateRefused(f"name at least one server of pool {pool.name} to be active")
    for k, name in enumerate(servers):
        if name not in pool.server_names:
            raise ChatStateRefused(f"{name!r} is not a server of pool {pool.name} (servers: "
                                   f"{', '.join(pool.server_names)})")
        if name in servers[:k]:
            raise ChatStateRefused(f"{name} is named twice")
    if len(servers) > MAX_CHAT_ACTIVE_SERVERS:
        raise ChatStateRefused(f"at most {MAX_CHAT_ACTIVE_SERVERS} servers of a chat pool "
                               f"are active (PC-2), not {len(servers)}")


def _next(state: ChatState, pool: str, event: str) -> ChatMode:
    mode = state.of(pool).mode
    nxt = TRANSITIONS.get((mode, event))
    if nxt is None:
        why = _WHY_NOT.get(event, {}).get(mode, "not possible now")
        raise ChatStateRefused(f"chat pool {pool} is {mode.value}: {event} refused ({why})")
    return nxt


def _with(state: ChatState, pool: str, entry: ChatPoolState) -> ChatState:
    return ChatState({**state.pools, pool: entry})


def set_active(state: ChatState, topology: Topology, pool: str,
               servers: list[str] | tuple[str, ...], is_up: IsUp | None = None) -> ChatState:
    """Make `servers` the pool's active servers (PC-2, PC-4 ``chat active-servers``):
    servers of the pool, 1 to `MAX_CHAT_ACTIVE_SERVERS`, each up (when `is_up` is
    given: its /health answers); while failed over only servers of the second data
    center (the first one's store is gone); refused while failing back."""
    chat = chat_pool(topology, pool)
    _check_servers(chat, servers)
    current = state.of(pool)
    if current.mode is ChatMode.FAILING_BACK:
        raise ChatStateRefused(f"chat pool {pool} is failing back: set the active servers "
                               f"once `chat failback` has finished")
    if current.mode is ChatMode.FAILED_OVER and chat.log_shipping is not None:
        site = chat.log_shipping.site
        away = [s for s in servers if _site(chat, s) != site]
        if away:
            raise ChatStateRefused(f"chat pool {pool} is failed over: only its servers in "
                                   f"site {site} may be active, not {', '.join(away)}")
    if is_up is not None:
        down = [s for s in servers if not is_up(s)]
        if down:
            raise ChatStateRefused(f"server(s) {', '.join(down)} not up (no 200 from "
                                   f"/health): start them first")
    return _with(state, pool, replace(current, active=tuple(servers)))


def _site(pool: Pool, server: str) -> str:
    return next(pool.site_of(s) for s in pool.servers if s.name == server)


def failed_over(state: ChatState, topology: Topology, pool: str) -> ChatState:
    """``chat failover`` done (PC-4): mode failed-over, the active servers those of the
    pool in its log-shipping site (at most `MAX_CHAT_ACTIVE_SERVERS`, file order)."""
    chat = chat_pool(topology, pool)
    if chat.log_shipping is None:
        raise ChatStateRefused(f"chat pool {pool} ships no log (no log_shipping in the "
                               f"topology): there is no copy to fail over to")
    mode = _next(state, pool, "failover")
    return _with(state, pool, ChatPoolState(mode, second_site_servers(chat)))


def failing_back(state: ChatState, topology: Topology, pool: str) -> ChatState:
    """``chat failback`` starts (or starts again): mode failing-back, the active servers
    unchanged."""
    chat_pool(topology, pool)
    mode = _next(state, pool, "failback")
    return _with(state, pool, replace(state.of(pool), mode=mode))


def normal(state: ChatState, topology: Topology, pool: str) -> ChatState:
    """``chat failback`` done: mode normal, the topology's active servers again."""
    chat = chat_pool(topology, pool)
    mode = _next(state, pool, "failback-done")
    return _with(state, pool, ChatPoolState(mode, declared_active(chat)))


# --- a server's view -----------------------------------------------------------------------


class ChatSource(CmsDocumentSource[ChatState]):
    """The current chat state of one server: the CMS document's, else the default."""

    def __init__(self, topology: Topology, snapshot: Callable[[], Snapshot]) -> None:
        def parse(body: str) -> ChatState:
            try:
                return ChatState.from_json(body, topology)
            except ChatStateError as exc:
                raise DocumentError(str(exc)) from None
        super().__init__(CHAT_KEY, snapshot, parse, default_state(topology))


__all__ = [
    "CHAT_KEY",
    "TRANSITIONS",
    "ChatMode",
    "ChatPoolState",
    "ChatSource",
    "ChatState",
    "ChatStateError",
    "ChatStateRefused",
    "IsUp",
    "chat_pool",
    "declared_active",
    "default_state",
    "document_in",
    "failed_over",
    "failing_back",
    "normal",
    "second_site_servers",
    "set_active",
    "state_of",
]
