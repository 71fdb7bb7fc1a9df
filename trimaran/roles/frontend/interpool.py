"""Requests for users that another pool serves (SPEC FE-4 across pools; DR-5, DR-8).

A Front End that receives a MESSAGE or INVITE for a user of the deployment first
finds the user's home pool: its own store holds the users of its pool and, copied
by the Backup Service, those of its paired pool; a user of any other pool is looked
up through the CMS homing API (`trimaran.cms.directory`, cached). Then who serves
that pool's users now: the failover records (a failed-over pool's users are on its
backup pool) and, for the pool it is backup registrar of, its own liveness watch
(`cms.failover.standing`). When that is another pool, the request goes there — to
the pool's servers in order, the next one when a server does not answer.

The serving pool may not know the sender (a pool holds only its own and its
partner's users), so the sender's identity travels with the request:
``X-Trimaran-Asserted: <AOR>;token=HMAC`` over the AOR, Call-ID, CSeq and method
with the deployment's key (which every Front End holds). A request with a valid
assertion is delivered without a new challenge, and is never sent on to a third
pool (two pools whose failover records disagree for a moment cannot bounce it back
and forth). The header is stripped from everything a Front End forwards, and one
that does not verify is ignored: it grants nothing to a client that forges it.
"""

from __future__ import annotations

import hashlib
import hmac
import logging

from trimaran.cms.directory import Directory
from trimaran.net.transport import Address
from trimaran.roles.frontend.homing import Homing
from trimaran.roles.frontend.proxy import ASSERTED, Target
from trimaran.sip.errors import SipParseError
from trimaran.sip.headers import NameAddr
from trimaran.sip.message import Request
from trimaran.sip.uri import URI
from trimaran.store.base import StoreUnavailable
from trimaran.topology.model import Topology
from trimaran.topology.resolver import Resolver

log = logging.getLogger(__name__)

TOKEN = "token"


class InterPool:
    """Finds the pool serving a user and builds the request's way there."""

    def __init__(self, pool: str, secret: bytes, topology: Topology, homing: Homing,
                 directory: Directory | None = None) -> None:
        self.pool = pool
        self._secret = secret
        self._resolver = Resolver(topology)
        self._homing = homing
        self._directory = directory

    # -- the sender's identity -----------------------------------------------------------
    def _mac(self, aor: str, request: Request) -> str:
        text = f"{aor}|{request.call_id}|{request.cseq.seq}|{request.method}"
        return hmac.new(self._secret, text.encode(), hashlib.sha256).hexdigest()[:32]

    def assertion(self, aor: str, request: Request) -> str:
        """The header value asserting that `aor` sent `request`."""
        return f"<{aor}>;{TOKEN}={self._mac(aor, request)}"

    def asserted(self, request: Request) -> str | None:
        """The sender a peer pool asserts for `request`, when the assertion verifies."""
        value = request.headers.get(ASSERTED)
        if not value:
            return None
        try:
            named = NameAddr.parse(value)
        except SipParseError:
            return None
        aor = named.uri.aor
        given = named.param(TOKEN) or ""
        # As bytes: compare_digest refuses a str with non-ASCII characters (TypeError),
        # and a quoted token may carry any UTF-8 a client puts there.
        if not hmac.compare_digest(given.encode(), self._mac(aor, request).encode()):
            log.warning("%s %s: assertion for %s does not verify; ignored", request.method,
                        request.call_id, aor)
            return None
        return aor

    # -- where the user is served ---------------------------------------------------------
    async def serving_pool(self, aor: str | None, uri: URI) -> str | None:
        """The other pool that serves the user `aor` (None when unknown here: looked
        up by `uri`'s user part), or None when this pool serves the user (or nobody
        knows the user)."""
        if aor is None:
            if self._directory is None or uri.user is None:
                return None
            creds = await self._directory.credentials(uri.user, uri.host)
            if creds is None:
                return None
            home = self._directory.homes.get(creds.aor)
            if home is None or home == self.pool:
                return None
            record = self._homing.records.get(home)
            serving = record.serving_pool() if record is not None else home
            return None if serving == self.pool else serving
        try:
            standing = await self._homing.standing(aor)
        except StoreUnavailable:
            # FE-7: our Back End is away and the user's home pool is not cached: route
            # here, as before other pools were asked (the binding cache has the user).
            return None
        if standing.serve:
            return None
        if standing.redirect_to is not None:
            return standing.redirect_to
        home = await self._homing.home_pool(aor)
        return None if home == self.pool else home      # home pool suspect: try it

    def targets(self, pool: str, uri: URI, sender: str, request: Request) -> list[Target]:
        """One target per server of `pool`, in order, each carrying the assertion."""
        header = ((ASSERTED, self.assertion(sender, request)),)
        return [Target(uri, Address("tcp", s.address, s.sip_port),
                       f"<sip:{s.address}:{s.sip_port};transport=tcp;lr>",
                       f"pool|{pool}|{s.name}", header)
                for s in self._resolver.servers_of(pool)]
