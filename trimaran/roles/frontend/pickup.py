"""Group call pickup at a Front End (SPEC APP-6): hand a ringing call to the pickup
application.

The Front End that routed a call to a user keeps its INVITE transaction in
`FrontEndServer.ringing` (by callee AOR) while it rings; its fork context is
`proxy.contexts[transaction]`, in the order the calls arrived. The pool's application
server asks each Front End server in turn::

    POST /apps/pickup   {"members": [AOR, ...], "uri": "sip:pickup@HOST:PORT;transport=tcp",
                         "token": "..."}
    → 200 {"taken": {"call_id", "caller", "callee"}}   or   200 {"taken": null}

signed with the deployment's key (`trimaran.admin.peerauth`, key id ``cms``). The
oldest call still ringing one of `members` here gets one more branch, to `uri` (an
application server of this pool, nothing else), carrying a claim (kind ``pickup``,
target ``take:<token>``) signed like every application request; the proxy then sends
the application server's 2xx to the caller and cancels the branches still ringing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import web

from trimaran.admin import access
from trimaran.admin.http import HttpError, Route
from trimaran.admin.peerauth import verify
from trimaran.apps.pickup import PICKUP_PATH, TAKE_PREFIX
from trimaran.apps.server import APP_PORT_OFFSET
from trimaran.cms.follower import CMS_KEY_ID
from trimaran.net.transport import Address
from trimaran.roles.frontend.proxy import Target
from trimaran.sip.errors import SipParseError
from trimaran.sip.uri import URI
from trimaran.voice.model import aor_key
from trimaran.voice.trust import APP_HEADER, AppClaim, app_header

if TYPE_CHECKING:
    from trimaran.roles.frontend.server import FrontEndServer

MAX_BODY = 64 * 1024


def pickup_routes(server: Callable[[], FrontEndServer], secret: bytes) -> tuple[Route, ...]:
    """The admin route of group pickup; `server` gives the Front End once it exists,
    `secret` is the deployment's key (CMS key)."""
    handler = PickupRoute(server, secret)
    return ((PICKUP_PATH, "apps-pickup", (("POST", handler.post),)),)


class PickupRoute:
    """``POST /apps/pickup``."""

    def __init__(self, server: Callable[[], FrontEndServer], secret: bytes) -> None:
        self._server = server
        self._secret = secret

    async def post(self, request: web.Request) -> web.Response:
        """Hand the oldest call ringing a member here to the application server."""
        body = await request.read()
        if len(body) > MAX_BODY:
            raise HttpError(413, f"body larger than {MAX_BODY} bytes")
        if not access.authorized(request):       # else an admin token/key (OPS-6)
            verify(request.headers, lambda key: self._secret if key == CMS_KEY_ID else None,
                   request.method, request.path_qs, body)
        members, uri, token = _parsed(body)
        server = self._server()
        if not _is_app_server(server, uri):
            raise HttpError(403, f"{uri} is not an application server of pool "
                            f"{server.config.pool}")
        return web.json_response({"taken": hand_over(server, members, uri, token,
                                                     self._secret)})


def _parsed(body: bytes) -> tuple[list[str], URI, str]:
    try:
        value = json.loads(body or b"{}")
    except ValueError:
        raise HttpError(400, "body is not JSON") from None
    if not isinstance(value, dict):
        raise HttpError(400, "body is not a JSON object")
    unknown = sorted(set(value) - {"members", "uri", "token"})
    if unknown:
        raise HttpError(400, f"unknown keys: {', '.join(unknown)}")
    members, uri, token = value.get("members"), value.get("uri"), value.get("token")
    if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
        raise HttpError(400, "members: a list of AORs is required")
    if not isinstance(token, str) or not token or not token.isalnum():
        raise HttpError(400, "token: letters and digits are required")
    if not isinstance(uri, str):
        raise HttpError(400, "uri: a SIP URI is required")
    try:
        parsed = URI.parse(uri)
    except SipParseError as exc:
        raise HttpError(400, f"uri: {exc}") from None
    return members, parsed, token


def _is_app_server(server: FrontEndServer, uri: URI) -> bool:
    """True when `uri` is the application server beside a server of this pool."""
    config = server.config
    hosts = {(config.host, config.sip_port + APP_PORT_OFFSET)}
    hosts |= {(p.host, p.sip_port + APP_PORT_OFFSET) for p in config.peers}
    return uri.scheme == "sip" and (uri.host, uri.port) in hosts


def hand_over(server: FrontEndServer, members: list[str], uri: URI, token: str,
              secret: bytes) -> dict[str, str] | None:
    """Fork the oldest call ringing one of `members` here to `uri`: what it was, or None
    when no such call rings here."""
    wanted = {aor_key(m) for m in members}
    callee_of = {txn: callee for callee, txns in server.ringing.items()
                 if aor_key(callee) in wanted for txn in txns}
    for txn, ctx in list(server.proxy.contexts.items()):     # oldest first
        callee = callee_of.get(txn)
        if callee is None or ctx.answered or ctx.cancelled or ctx.best.done():
            continue
        request = ctx.incoming.request
        caller = str(request.from_.uri)
        claim = AppClaim("pickup", server.config.pool, TAKE_PREFIX + token, caller)
        signed = request.copy()
        signed.uri = uri
        target = Target(uri, Address("tcp", uri.host, uri.port or 5060), None,
                        f"pickup|{token}", ((APP_HEADER, app_header(secret, claim, signed)),))
        if server.proxy.add_branch(ctx, target):
            return {"call_id": request.call_id, "caller": caller, "callee": callee}
    return None
