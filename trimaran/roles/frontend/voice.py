"""Calls to phone numbers at a Front End (SPEC EV-1, EV-3, EV-4).

A call whose Request-URI is a phone number (``tel:``, ``;user=phone``, or a dial
string as a user part) is normalized with the caller's dial plan. When a user of
the deployment has that number, the call goes to the user like any call (the
Request-URI rewritten to ``sip:+E164@domain;user=phone``). Otherwise it goes to the
PSTN: the caller's voice policy gives the PSTN usages in order, each usage the
routes whose pattern matches, each route its trunks (`trimaran.voice.routing`).

Trunks are tried one after another, each through a server of its Mediation pool
(spread by Call-ID, skipping servers that failed lately):

* a Mediation server that does not answer at all within `MEDIATION_TIMEOUT` (it
  answers 100 Trying at once) or cannot be reached is remembered as failed for
  `SERVER_HOLD_DOWN` seconds and the next server of the pool gets the call (EV-2);
* an answer carrying ``X-Trimaran-Trunk-Failure`` (gateway down, 5xx, no progress
  within the fast-failover time) moves to the next trunk, then the next route and
  the next usage (EV-3);
* any other answer is the called party's and goes back to the caller.

Refusals say why in the reason phrase and a ``Warning`` (EV-7): no voice policy,
a number that does not normalize, no route, every trunk failed. Calls from the
PSTN (vouched for by a Mediation server) only ever reach users: a number nobody has
is 404, never sent back out (no trunk-to-trunk relaying).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from typing import TYPE_CHECKING

from trimaran.cms.voicedoc import VoiceSource
from trimaran.net.endpoint import IncomingRequest
from trimaran.net.transport import Address
from trimaran.roles.frontend.proxy import ForkContext, Target
from trimaran.roles.mediation import mediation_port
from trimaran.sip.headers import Headers
from trimaran.sip.message import Request, Response
from trimaran.sip.uri import URI
from trimaran.store.base import StoreUnavailable
from trimaran.topology.model import Server, Topology
from trimaran.topology.resolver import Resolver
from trimaran.voice.model import VoiceConfig
from trimaran.voice.routing import Attempt, assignment, is_dial_string, normalize, plan_call
from trimaran.voice.trust import FAILURE_HEADER, TRUNK_HEADER, trunk_header, verified_caller

if TYPE_CHECKING:
    from trimaran.roles.frontend.server import FrontEndServer

log = logging.getLogger(__name__)

MEDIATION_TIMEOUT = 2.0
SERVER_HOLD_DOWN = 30.0


def is_phone_uri(uri: URI) -> bool:
    """True when `uri` names a phone number rather than a user."""
    if uri.scheme == "tel":
        return True
    if uri.param("user") == "phone":
        return True
    return bool(uri.user) and is_dial_string(uri.user or "")


class VoiceRouting:
    """Phone-number calls of one Front End server."""

    def __init__(self, server: FrontEndServer, source: VoiceSource, secret: bytes,
                 topology: Topology) -> None:
        self.server = server
        self.source = source
        self._secret = secret
        self._resolver = Resolver(topology)
        self.failed_servers: dict[str, float] = {}     # mediation server -> until (monotonic)
        self.calls: dict[str, int] = {}                # outcome -> count

    # -- who is calling ---------------------------------------------------------------
    def caller(self, request: Request) -> str | None:
        """The PSTN caller a Mediation server vouches for, when it verifies."""
        return verified_caller(self._secret, request)

    # -- routing ------------------------------------------------------------------------
    async def route(self, incoming: IncomingRequest, sender: str, *,
                    from_pstn: bool) -> IncomingRequest | None:
        """Handle a call to a phone number: None when it was answered here (sent to the
        PSTN or refused), else the request to route to a user (maybe with a rewritten
        Request-URI)."""
        request = incoming.request
        config = self.source.current()
        if not is_phone_uri(request.uri) or config is None:
            return incoming
        dialled = request.uri.user or ""
        if from_pstn:
            return incoming                   # a user's number, or 404 on the way
        plan, policy = assignment(config, sender, await self._site_of(sender))
        normalized = normalize(plan, dialled)
        if normalized is None:
            self._refuse(incoming, 484, f"Cannot normalize {dialled[:30]!r} with dial plan "
                                        f"{plan.name if plan else '(none)'}")
            return None
        number = normalized.number
        if await self._is_user_number(number.split(";", 1)[0]):
            rewritten = request.copy()
            domain = self.server.config.domain
            rewritten.uri = URI("sip", number.split(";", 1)[0], None, domain, None,
                                (("user", "phone"),))
            return IncomingRequest(rewritten, incoming.transaction, incoming.flow)
        if policy is None:
            self._refuse(incoming, 403, f"No voice policy lets {sender} call the PSTN")
            return None
        call_plan = plan_call(config, policy, number)
        if call_plan.empty:
            self._refuse(incoming, 404, f"No route to {number} in voice policy {policy.name}")
            return None
        await self._place(incoming, config, sender, number, call_plan.attempts)
        return None

    async def _place(self, incoming: IncomingRequest, config: VoiceConfig, sender: str,
                     number: str, attempts: tuple[Attempt, ...]) -> None:
        proxy = self.server.proxy
        caller_id = await self._caller_identity(sender)
        failures: list[str] = []
        ctx: ForkContext | None = None
        for attempt in attempts:
            for server in self._mediation_servers(attempt.mediation_pool, incoming):
                target = self._target(incoming.request, attempt, server, number, caller_id)
                ctx = proxy.fork(incoming, [target], ctx)
                final = await self._settle(ctx)
                if ctx.answered or ctx.cancelled:
                    self._count("answered" if ctx.answered else "cancelled")
                    proxy.finish(ctx, None if ctx.answered else await ctx.best)
                    return
                if final is None or _server_failed(final):
                    self.failed_servers[server.name] = time.monotonic() + SERVER_HOLD_DOWN
                    why = "no answer" if final is None else f"{final.status} {final.reason}"
                    log.info("call %s: mediation server %s failed (%s); next server",
                             incoming.request.call_id, server.name, why)
                    failures.append(f"{server.name}: {why}")
                    continue
                if FAILURE_HEADER in final.headers:
                    failures.append(f"{attempt.trunk}: {final.reason}")
                    log.info("call %s to %s: trunk %s failed (%s %s); next trunk",
                             incoming.request.call_id, number, attempt.trunk, final.status,
                             final.reason)
                    break
                self._count("refused")
                proxy.finish(ctx, await ctx.best)     # the called party's answer
                return
        if ctx is not None:
            proxy.finish(ctx, None)
        self._count("all_trunks_failed")
        self._refuse(incoming, 503, f"Every trunk to {number} failed: "
                     + "; ".join(failures[-4:]), retry_after=True)

    async def _settle(self, ctx: ForkContext) -> Response | None:
        """The final answer of the attempt just forked, or None when the Mediation server
        said nothing at all within `MEDIATION_TIMEOUT` (the attempt is then abandoned)."""
        branch = ctx.branches[0]
        best = asyncio.shield(ctx.best)
        done, _ = await asyncio.wait({best}, timeout=MEDIATION_TIMEOUT)
        if not done and not branch.provisional:
            self.server.proxy.abandon(ctx)
            return None
        await best
        return branch.final

    def _target(self, request: Request, attempt: Attempt, server: Server, number: str,
                caller_id: str) -> Target:
        gateway = attempt.gateway
        uri = URI("sip", number.split(";", 1)[0], None, gateway.address, gateway.port,
                  (("user", "phone"),))
        pool = self._resolver.pool(attempt.mediation_pool)
        port = mediation_port(pool, server)
        signed = request.copy()
        signed.uri = uri
        headers = ((TRUNK_HEADER, trunk_header(self._secret, attempt.trunk, signed)),
                   ("P-Asserted-Identity", caller_id))
        return Target(uri, Address("tcp", server.address, port),
                      f"<sip:{server.address}:{port};transport=tcp;lr>",
                      f"trunk|{attempt.trunk}|{server.name}", headers)

    def _mediation_servers(self, pool: str, incoming: IncomingRequest) -> list[Server]:
        """The pool's servers, the first chosen by Call-ID, those that failed lately last."""
        servers = list(self._resolver.servers_of(pool))
        if not servers:
            return []
        first = int.from_bytes(hashlib.sha256(incoming.request.call_id.encode()).digest()[:4],
                               "big") % len(servers)
        ordered = [*servers[first:], *servers[:first]]
        now = time.monotonic()
        healthy = [s for s in ordered if self.failed_servers.get(s.name, 0.0) <= now]
        return healthy + [s for s in ordered if s not in healthy]

    # -- helpers -----------------------------------------------------------------------
    async def _site_of(self, aor: str) -> str | None:
        home = self.server.config.pool
        if self.server.dr is not None:
            with contextlib.suppress(StoreUnavailable):
                home = await self.server.dr.homing.home_pool(aor)
        try:
            return self._resolver.pool(home).site
        except LookupError:
            return None

    async def _is_user_number(self, number: str) -> bool:
        try:
            return await self.server.store.users.by_number(number) is not None
        except StoreUnavailable:
            return False

    async def _caller_identity(self, sender: str) -> str:
        """P-Asserted-Identity for the gateway: the caller's line URI when known."""
        domain = self.server.config.domain
        try:
            user = await self.server.store.users.get(sender)
        except StoreUnavailable:
            user = None
        if user is not None and user.number:
            return f"<sip:{user.number}@{domain};user=phone>"
        return f"<{sender}>"

    def _refuse(self, incoming: IncomingRequest, status: int, why: str, *,
                retry_after: bool = False) -> None:
        host, port = self.server.sip_address
        headers = Headers([("Warning", f'399 {host}:{port} "{why[:200]}"')])
        if retry_after:
            headers.add("Retry-After", "5")
        log.info("call %s refused %d: %s", incoming.request.call_id, status, why)
        self.server.reply(incoming, status, why[:120], headers=headers)

    def _count(self, outcome: str) -> None:
        self.calls[outcome] = self.calls.get(outcome, 0) + 1

    def status(self) -> dict[str, object]:
        """For /status."""
        now = time.monotonic()
        return {"calls": dict(self.calls),
                "mediation_servers_held_down": sorted(
                    name for name, until in self.failed_servers.items() if until > now)}


def _server_failed(final: Response) -> bool:
    """A synthetic 503/408 (no To tag): the Mediation server was not reached."""
    return final.status in (408, 503) and final.to.tag is None and \
        FAILURE_HEADER not in final.headers
