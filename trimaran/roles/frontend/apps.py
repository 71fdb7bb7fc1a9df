"""Requests for the call-management applications, at a Front End (SPEC APP-1..APP-7).

A request is an application's when its Request-URI is:

* a number an application has (`AppsConfig.owner_of`: a Call Park orbit, a pickup
  group number, a Response Group workflow number, an unassigned range), as dialled
  or after the caller's dial plan;
* ``sip:callpark@<domain>`` (REFER: park a call) — the Call Park of the sender's home
  pool when it has one, else of this pool;
* ``sip:rgs-agent+<group>@<domain>`` (MESSAGE: a formal agent signs in or out);
* a conference focus, ``sip:<organizer>@<domain>;opaque=app:conf:focus:id:<meeting>``.

The item's owner pool is served now by the pool its failover record names (itself,
or its backup pool after a failover): when that is another pool, the request goes
there (`interpool`); here, it goes to the pool's active application server (the
first live server by name, then the others), with the claim signed
(`trimaran.voice.trust.AppClaim`). A user signed in here in resiliency mode (its home
pool is down) is refused the applications the model's table says are unavailable
then (EV-7), with the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from trimaran.apps.model import AppsConfig
from trimaran.apps.server import APP_PORT_OFFSET
from trimaran.net.endpoint import IncomingRequest
from trimaran.net.transport import Address
from trimaran.roles.frontend.proxy import Target
from trimaran.sip.headers import Headers
from trimaran.sip.message import Request
from trimaran.sip.uri import URI
from trimaran.store.base import StoreUnavailable
from trimaran.topology.model import Topology
from trimaran.topology.resolver import Resolver
from trimaran.voice.features import TITLES, Feature, Mode, why_unavailable
from trimaran.voice.routing import assignment, clean_dialled, normalize
from trimaran.voice.trust import APP_HEADER, AppClaim, app_header

if TYPE_CHECKING:
    from trimaran.roles.frontend.server import FrontEndServer

log = logging.getLogger(__name__)

PARK_USER = "callpark"
AGENT_PREFIX = "rgs-agent+"
FOCUS_PREFIX = "app:conf:focus:id:"
FEATURES = {"park": Feature.CALL_PARK, "pickup": Feature.GROUP_PICKUP,
            "workflow": Feature.RESPONSE_GROUPS, "agent": Feature.RESPONSE_GROUPS,
            "conference": Feature.CONFERENCING}


def focus_uri(organizer: str, meeting_id: str) -> str:
    """The conference focus URI of a meeting (`organizer` is an AOR)."""
    return f"{organizer};opaque={FOCUS_PREFIX}{meeting_id}"


class AppRouter:
    """Sends application requests to the application server that runs them now."""

    def __init__(self, server: FrontEndServer, config: Callable[[], AppsConfig],
                 secret: bytes, topology: Topology) -> None:
        self.server = server
        self.config = config
        self._secret = secret
        self._resolver = Resolver(topology)

    async def route(self, incoming: IncomingRequest, sender: str, *,
                    from_pstn: bool) -> bool:
        """True when `incoming` was an application's (forwarded or refused here)."""
        request = incoming.request
        found = await self._match(request, sender)
        if found is None:
            return False
        kind, owner, target = found
        serving = self._serving_pool(owner)
        own = self.server.config.pool
        if serving != own:
            return await self._elsewhere(incoming, serving, sender)
        feature = FEATURES.get(kind)
        if feature is not None and not from_pstn:
            why: str | None = None
            if self.server.mode != "full":       # our own Back End is away (FE-7)
                why = f"{TITLES[feature]} is not available while this pool's Back End is " \
                      f"unreachable (resiliency mode)"
            elif await self._in_resiliency(sender):
                why = why_unavailable(feature, Mode.BACKUP_REGISTRAR)
            if why is not None:
                self._refuse(incoming, 503, why)
                return True
        claim = AppClaim(kind, owner, target, sender)
        targets = self._targets(request, claim)
        if not targets:
            self._refuse(incoming, 503, f"No application server of pool {own} is up")
            return True
        await self.server.router.forward(incoming, targets[:1], _next(targets[1:]))
        return True

    # -- what the request is for --------------------------------------------------------
    async def _match(self, request: Request,
                     sender: str) -> tuple[str, str, str] | None:
        uri = request.uri
        config = self.config()
        opaque = uri.param("opaque") or ""
        if opaque.startswith(FOCUS_PREFIX) and uri.user:
            organizer = URI("sip", uri.user, None, self.server.config.domain).aor
            return "conference", await self._home_pool(organizer), opaque[len(FOCUS_PREFIX):]
        user = uri.user or ""
        if user == PARK_USER and request.method == "REFER":
            home = await self._home_pool(sender)
            owner = home if config.park_of(home) is not None else self.server.config.pool
            return "park", owner, ""
        if user.startswith(AGENT_PREFIX):
            group = user[len(AGENT_PREFIX):]
            for workflow in config.workflows:
                if group in _groups_reached(config, workflow.queue):
                    return "agent", workflow.pool, group
            return None
        if not user or request.method not in ("INVITE", "MESSAGE"):
            return None
        for number in self._numbers(user, sender):
            owner_of = config.owner_of(number)
            if owner_of is None:
                continue
            if owner_of[0] == "unassigned" and await self._assigned(number):
                return None        # a user has it now: a range is for numbers nobody has
            return owner_of[0], owner_of[1], number
        return None

    async def _assigned(self, number: str) -> bool:
        try:
            return await self.server.store.users.by_number(number) is not None
        except StoreUnavailable:
            return False

    def _numbers(self, user: str, sender: str) -> list[str]:
        """The numbers a dialled user part may be: as dialled, then normalized."""
        cleaned = clean_dialled(user)
        numbers = [cleaned]
        voice = self.server.voice.source.current() if self.server.voice else None
        if voice is not None:
            plan, _ = assignment(voice, sender, None)
            normalized = normalize(plan, cleaned)
            if normalized is not None and normalized.number not in numbers:
                numbers.append(normalized.number)
        return numbers

    async def _home_pool(self, aor: str) -> str:
        if self.server.dr is None:
            return self.server.config.pool
        try:
            return await self.server.dr.homing.home_pool(aor)
        except StoreUnavailable:
            return self.server.config.pool

    def _serving_pool(self, owner: str) -> str:
        if self.server.dr is None:
            return owner
        record = self.server.dr.homing.records.get(owner)
        return record.serving_pool() if record is not None else owner

    async def _in_resiliency(self, sender: str) -> bool:
        """True when `sender` is signed in here because its home pool is down (DR-8)."""
        if self.server.dr is None:
            return False
        try:
            standing = await self.server.dr.homing.standing(sender)
        except StoreUnavailable:
            return True
        return standing.mode == "resiliency"

    # -- where it goes ------------------------------------------------------------------
    def _targets(self, request: Request, claim: AppClaim) -> list[Target]:
        """The pool's application servers, the active one (first live by name) first."""
        membership = self.server.membership
        alive = membership.view().alive if membership is not None else \
            [self.server.config.server]
        servers = {s.name: s for s in self._resolver.servers_of(self.server.config.pool)}
        ordered = [servers[n] for n in alive if n in servers] + \
            [s for n, s in sorted(servers.items()) if n not in alive]
        targets = []
        for spec in ordered:
            port = spec.sip_port + APP_PORT_OFFSET
            uri = URI("sip", claim.kind, None, spec.address, port)
            signed = request.copy()
            signed.uri = uri
            targets.append(Target(uri, Address("tcp", spec.address, port),
                                  f"<sip:{spec.address}:{port};transport=tcp;lr>",
                                  f"app|{claim.kind}|{spec.name}",
                                  ((APP_HEADER, app_header(self._secret, claim, signed)),)))
        return targets

    async def _elsewhere(self, incoming: IncomingRequest, pool: str, sender: str) -> bool:
        interpool = self.server.interpool
        if interpool is None:
            self._refuse(incoming, 503, f"Pool {pool} runs this application now")
            return True
        targets = interpool.targets(pool, incoming.request.uri, sender, incoming.request)
        await self.server.router.forward(incoming, targets[:1], _next(targets[1:]))
        return True

    def _refuse(self, incoming: IncomingRequest, status: int, why: str) -> None:
        host, port = self.server.sip_address
        log.info("%s %s refused %d: %s", incoming.request.method, incoming.request.call_id,
                 status, why)
        self.server.reply(incoming, status, why[:120], headers=Headers([
            ("Warning", f'399 {host}:{port} "{why[:200]}"'), ("Retry-After", "5")]))


def _groups_reached(config: AppsConfig, first: str) -> set[str]:
    """The agent groups of queue `first` and of every queue its actions lead to."""
    seen: set[str] = set()
    groups: set[str] = set()
    pending = [first]
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            queue = config.queue(name)
        except KeyError:
            continue
        groups.update(queue.agent_groups)
        pending += [a.target for a in (queue.timeout_action, queue.overflow_action)
                    if a.action.value == "queue" and a.target]
    return groups


def _next(rest: list[Target]) -> Callable[[], Awaitable[list[Target]]] | None:
    """The next application server each time one fails (one at a time)."""
    if not rest:
        return None
    left = list(rest)

    async def refresh() -> list[Target]:
        return [left.pop(0)] if left else []
    return refresh
