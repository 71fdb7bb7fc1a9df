"""Requests of Persistent Chat: from a signed-in user to the chat pool (SPEC PC-1, PC-2).

A user opens a chat connection with an INVITE to ``sip:chat@DOMAIN`` and posts with a
MESSAGE to a room URI (`trimaran.chat.uris`). The Front End authenticates the user
(digest, like any request) and sends the request to a server of the chat pool with a
signed claim (`AppClaim` kind ``chat``: the pool, the room, the user), so a chat server
believes who the user is without knowing any password. It record-routes, so the
connection's dialog (keepalives, deliveries of room messages) passes through it.

Which chat server: the pool's *active* servers (the CMS ``chat`` document,
`trimaran.cms.chatdoc`: which servers accept new connections, and after a chat
failover the second data center's), the first chosen by the user (a stable hash, so a
user's requests meet the server holding the connection), those that failed lately
last. A server that cannot be reached, says nothing within `CHAT_TIMEOUT`, or answers
that it is not active (`INACTIVE_HEADER`) is held down for `SERVER_HOLD_DOWN` seconds
and the next one takes the request: when an active server dies, its users' next
requests — their reconnection — land on the other active servers (PC-2).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from trimaran.chat.uris import is_chat, room_of
from trimaran.cms.chatdoc import ChatState
from trimaran.net.endpoint import IncomingRequest
from trimaran.net.transport import Address
from trimaran.roles.frontend.proxy import ForkContext, Target
from trimaran.sip.headers import Headers
from trimaran.sip.message import Request, Response
from trimaran.sip.uri import URI
from trimaran.topology.model import PoolRole, Server, Topology
from trimaran.voice.trust import APP_HEADER, AppClaim, app_header

if TYPE_CHECKING:
    from trimaran.roles.frontend.server import FrontEndServer

log = logging.getLogger(__name__)

KIND = "chat"
CHAT_TIMEOUT = 2.0
SERVER_HOLD_DOWN = 10.0
#: A chat server's answer saying it takes no new connections (not active now).
INACTIVE_HEADER = "X-Trimaran-Chat-Inactive"
METHODS = frozenset({"INVITE", "MESSAGE", "OPTIONS"})


class ChatRouter:
    """Sends chat requests of signed-in users to the chat pool's active servers."""

    def __init__(self, server: FrontEndServer, state: Callable[[], ChatState], secret: bytes,
                 topology: Topology) -> None:
        self.server = server
        self.state = state
        self._secret = secret
        pools = [p for p in topology.pools if p.role is PoolRole.CHAT]
        self._pool = pools[0] if pools else None
        self.failed_servers: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    async def route(self, incoming: IncomingRequest, sender: str) -> bool:
        """True when `incoming` was a chat request (forwarded or refused here)."""
        request = incoming.request
        if not is_chat(request.uri) or request.method not in METHODS:
            return False
        if self._pool is None:
            self._refuse(incoming, 404, "This deployment has no Persistent Chat pool")
            return True
        try:
            room = room_of(request.uri)
        except UnicodeDecodeError:
            self._refuse(incoming, 400, "The room name is not UTF-8")
            return True
        if request.method == "MESSAGE" and room is None:
            self._refuse(incoming, 404, "Post to a room URI (sip:chat@DOMAIN;opaque=room:NAME)")
            return True
        servers = self._servers(sender)
        if not servers:
            self._refuse(incoming, 503, f"No active server in chat pool {self._pool.name}")
            return True
        await self._place(incoming, AppClaim(KIND, self._pool.name, room or "", sender),
                          servers)
        return True

    def _servers(self, user: str) -> list[Server]:
        """The active servers, the user's first, those that failed lately last."""
        assert self._pool is not None
        try:
            active = set(self.state().of(self._pool.name).active)
        except KeyError:
            active = set()
        servers = [s for s in self._pool.servers if s.name in active]
        if not servers:
            return []
        servers.sort(key=lambda s: hashlib.sha256(f"{user}|{s.name}".encode()).digest())
        now = time.monotonic()
        healthy = [s for s in servers if self.failed_servers.get(s.name, 0.0) <= now]
        return healthy + [s for s in servers if s not in healthy]

    async def _place(self, incoming: IncomingRequest, claim: AppClaim,
                     servers: list[Server]) -> None:
        proxy = self.server.proxy
        ctx: ForkContext | None = None
        failures: list[str] = []
        for server in servers:
            ctx = proxy.fork(incoming, [self._target(incoming.request, claim, server)], ctx)
            final = await self._settle(ctx)
            if ctx.answered or ctx.cancelled:
                self._count("answered" if ctx.answered else "cancelled")
                proxy.finish(ctx, None if ctx.answered else await ctx.best)
                return
            if final is None or _unreached(final) or INACTIVE_HEADER in final.headers:
                self.failed_servers[server.name] = time.monotonic() + SERVER_HOLD_DOWN
                why = "no answer" if final is None else f"{final.status} {final.reason}"
                log.info("%s %s: chat server %s failed (%s); next server",
                         incoming.request.method, incoming.request.call_id, server.name, why)
                failures.append(f"{server.name}: {why}")
                continue
            self._count("refused")
            proxy.finish(ctx, await ctx.best)       # the chat server's own answer
            return
        if ctx is not None:
            proxy.finish(ctx, None)
        self._count("no_server")
        self._refuse(incoming, 503, "No chat server answered: " + "; ".join(failures[-4:]))

    async def _settle(self, ctx: ForkContext) -> Response | None:
        """The final answer of the attempt just forked; None when the chat server said
        nothing within `CHAT_TIMEOUT` (the attempt is then abandoned)."""
        branch = ctx.branches[0]
        best = asyncio.shield(ctx.best)
        done, _ = await asyncio.wait({best}, timeout=CHAT_TIMEOUT)
        if not done and not branch.provisional:
            self.server.proxy.abandon(ctx)
            return None
        await best
        return branch.final

    def _target(self, request: Request, claim: AppClaim, server: Server) -> Target:
        uri = URI("sip", KIND, None, server.address, server.sip_port)
        signed = request.copy()
        signed.uri = uri
        return Target(uri, Address("tcp", server.address, server.sip_port),
                      f"<sip:{server.address}:{server.sip_port};transport=tcp;lr>",
                      f"chat|{server.name}",
                      ((APP_HEADER, app_header(self._secret, claim, signed)),))

    def _refuse(self, incoming: IncomingRequest, status: int, why: str) -> None:
        host, port = self.server.sip_address
        log.info("%s %s refused %d: %s", incoming.request.method, incoming.request.call_id,
                 status, why)
        self.server.reply(incoming, status, why[:120], headers=Headers([
            ("Warning", f'399 {host}:{port} "{why[:200]}"'), ("Retry-After", "2")]))

    def _count(self, outcome: str) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + 1

    def status(self) -> dict[str, object]:
        """For /status."""
        now = time.monotonic()
        return {"requests": dict(self.counts),
                "chat_servers_held_down": sorted(
                    name for name, until in self.failed_servers.items() if until > now)}


def _unreached(final: Response) -> bool:
    """A synthetic 503/408 (no To tag): the chat server was not reached."""
    return final.status in (408, 503) and final.to.tag is None
