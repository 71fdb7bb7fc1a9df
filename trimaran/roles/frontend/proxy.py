"""Stateful forking proxy (RFC 3261 §16) for requests to users of the pool.

One `ForkContext` per server transaction: the request is forwarded in parallel
to every target (the user's bindings), provisional responses (except 100) are
relayed upstream, the first 2xx is relayed at once and the other branches are
cancelled, and when every branch has failed the best final response is chosen
(§16.7 step 6). A CANCEL from upstream cancels every pending branch (§16.10).

Dialog-creating requests are Record-Routed with a token bound to the Call-ID,
so a request inside a dialog is relayed only when it carries a Route that we
issued for that very dialog: the server is not an open relay.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from dataclasses import dataclass, field

from trimaran.net.endpoint import IncomingRequest, SipEndpoint
from trimaran.net.flows import NotListeningError
from trimaran.net.transport import Address, Flow
from trimaran.sip.headers import NameAddr
from trimaran.sip.message import Request, Response
from trimaran.sip.transaction import TransactionError, build_cancel
from trimaran.sip.transaction_server import ServerTransaction
from trimaran.sip.uri import URI

log = logging.getLogger(__name__)

DIALOG_METHODS = frozenset({"INVITE", "SUBSCRIBE", "REFER"})
#: The sender's identity asserted between the pools of a deployment (`interpool`).
ASSERTED = "X-Trimaran-Asserted"
#: Headers a client must not pass on: the trunk and caller tokens of `trimaran.voice.trust`
#: and P-Asserted-Identity (RFC 3325: set by the network, never taken from a user).
TRUSTED_HEADERS = ("X-Trimaran-Trunk", "X-Trimaran-Pstn", "X-Trimaran-Trunk-Failure",
                   "X-Trimaran-App", "X-Trimaran-Edge", "P-Asserted-Identity")


@dataclass(frozen=True, slots=True)
class Target:
    """Where to forward: the Request-URI, how to reach it, and an optional Route to push
    (the peer server holding the user's flow, with a flow token: FE-4)."""

    uri: URI
    via: Address | Flow
    route: str | None = None
    key: str = ""                 # identifies the binding behind the target
    headers: tuple[tuple[str, str], ...] = ()   # added for this target only


@dataclass(eq=False)
class _Branch:
    request: Request
    target: Target
    task: asyncio.Task[Response] | None = None
    provisional: bool = False
    final: Response | None = None
    cancel_wanted: bool = False
    cancel_sent: bool = False


@dataclass(eq=False)
class ForkContext:
    """The response context of one forwarded request (§16.7).

    2xx and provisional responses go upstream at once; when every branch has
    failed, `best` resolves with the best final response and the caller decides
    whether to send it upstream (`Proxy.finish`) or to try fresh targets.
    """

    incoming: IncomingRequest
    branches: list[_Branch] = field(default_factory=list)
    answered: bool = False          # a final response went upstream
    cancelled: bool = False
    relayed_provisional: bool = False
    best: asyncio.Future[Response | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())


def best_response(responses: list[Response]) -> Response | None:
    """§16.7 step 6: a 6xx if any, else the lowest class; 503 becomes 500."""
    finals = [r for r in responses if r.status >= 300]
    if not finals:
        return None
    sixes = [r for r in finals if r.status >= 600]
    pool = sixes or finals
    best = min(pool, key=lambda r: (r.status // 100, r.status != 486, r.status))
    if best.status == 503:
        best = best.copy()
        best.status, best.reason = 500, "Server Internal Error (downstream unavailable)"
    return best


class Proxy:
    """Forwards requests on behalf of a Front End server."""

    def __init__(self, endpoint: SipEndpoint, secret: bytes) -> None:
        self.endpoint = endpoint
        self._secret = secret
        self.contexts: dict[ServerTransaction, ForkContext] = {}
        self._cancels: set[asyncio.Task[Response]] = set()

    # -- Record-Route tokens --------------------------------------------------
    def rr_token(self, call_id: str) -> str:
        """The token our Record-Route carries for a dialog with this Call-ID."""
        return hmac.new(self._secret, call_id.encode(), hashlib.sha256).hexdigest()[:20]

    def record_route(self, transport: str, call_id: str) -> str:
        """Our Record-Route value (loose routing, §16.6 step 4)."""
        host, port = self.endpoint.contact_host_port(transport)
        suffix = "" if transport == "udp" else f";transport={transport}"
        return f"<sip:{host}:{port}{suffix};lr;rrt={self.rr_token(call_id)}>"

    def is_our_route(self, route: NameAddr) -> bool:
        """True when a Route header points at this server (any of its transports)."""
        uri = route.uri
        for transport in ("udp", "tcp", "tls"):
            try:
                host, port = self.endpoint.contact_host_port(transport)
            except NotListeningError:
                continue
            if uri.host == host and (uri.port or (5061 if uri.scheme == "sips" else 5060)) == port:
                return True
        return False

    def route_token_valid(self, route: NameAddr, call_id: str) -> bool:
        """True when our Route carries the token of this dialog."""
        token = route.uri.param("rrt") or ""
        return hmac.compare_digest(token, self.rr_token(call_id))

    # -- forwarding -----------------------------------------------------------
    def prepare(self, request: Request, target: Target, *, record_route: bool) -> Request:
        """The copy of `request` to send to `target` (§16.6)."""
        out = request.copy()
        out.uri = target.uri
        mf = request.max_forwards
        out.headers.set("Max-Forwards", str((70 if mf is None else mf) - 1))
        out.headers.remove("Proxy-Authorization")  # §22.3: credentials are for us
        out.headers.remove(ASSERTED)               # only a target of another pool gets one
        for name in TRUSTED_HEADERS:               # only servers of ours set these
            out.headers.remove(name)
        for name, value in target.headers:
            out.headers.add(name, value)
        if target.route is not None:
            out.headers.add("Route", target.route, first=True)
        # The transport the request really leaves by (TLS to a server with mutual TLS).
        transport = self.endpoint.transport.secure(target.via).transport
        if record_route:
            out.add_list_header("Record-Route", self.record_route(transport, request.call_id),
                                first=True)
        out.headers.add("Via", self.endpoint.via(transport), first=True)
        return out

    def fork(self, incoming: IncomingRequest, targets: list[Target],
             ctx: ForkContext | None = None) -> ForkContext:
        """Forward `incoming` to every target in parallel; relay 1xx/2xx upstream.

        Pass the `ctx` of an earlier attempt to fork again to fresh targets."""
        assert incoming.transaction is not None
        if ctx is None:
            ctx = ForkContext(incoming)
        else:
            ctx.branches = []
            ctx.best = asyncio.get_running_loop().create_future()
        self.contexts[incoming.transaction] = ctx
        record = incoming.request.method in DIALOG_METHODS and not incoming.request.to.tag
        for target in targets:
            branch = _Branch(self.prepare(incoming.request, target, record_route=record), target)
            ctx.branches.append(branch)
            branch.task = asyncio.ensure_future(self._run_branch(ctx, branch))
        return ctx

    def add_branch(self, ctx: ForkContext, target: Target) -> bool:
        """Fork a pending request to one more target (group call pickup, APP-6): False
        when the request was answered or cancelled already."""
        if ctx.answered or ctx.cancelled or ctx.best.done():
            return False
        record = ctx.incoming.request.method in DIALOG_METHODS and \
            not ctx.incoming.request.to.tag
        branch = _Branch(self.prepare(ctx.incoming.request, target, record_route=record), target)
        ctx.branches.append(branch)
        branch.task = asyncio.ensure_future(self._run_branch(ctx, branch))
        return True

    async def _run_branch(self, ctx: ForkContext, branch: _Branch) -> Response:
        def provisional(response: Response, _: Flow | None) -> None:
            branch.provisional = True
            if branch.cancel_wanted and not branch.cancel_sent:
                self._send_cancel(branch)
            if response.status > 100 and not ctx.answered:
                ctx.relayed_provisional = True
                self._relay(ctx, response)

        def retransmitted_2xx(response: Response, _: Flow | None) -> None:
            self._relay(ctx, response)  # §16.7 step 5: every 2xx goes upstream

        response = await self.endpoint.request(branch.request, branch.target.via,
                                               on_provisional=provisional,
                                               on_retransmitted_2xx=retransmitted_2xx)
        branch.final = response
        self._on_final(ctx, branch, response)
        return response

    def _on_final(self, ctx: ForkContext, branch: _Branch, response: Response) -> None:
        if 200 <= response.status < 300:
            self._relay(ctx, response)
            ctx.answered = True
            self._cancel_others(ctx, branch)
        elif response.status >= 600:
            self._cancel_others(ctx, branch)
        if all(b.final is not None for b in ctx.branches) and not ctx.best.done():
            best = None if ctx.answered else \
                best_response([b.final for b in ctx.branches if b.final is not None])
            ctx.best.set_result(best)

    def finish(self, ctx: ForkContext, response: Response | None) -> None:
        """Send the final response chosen for `ctx` upstream and forget the context."""
        if response is not None and not ctx.answered:
            self._relay(ctx, response)
            ctx.answered = True
        assert ctx.incoming.transaction is not None
        self.contexts.pop(ctx.incoming.transaction, None)

    def _relay(self, ctx: ForkContext, response: Response) -> None:
        """Send a downstream response upstream without our Via (§16.7 steps 3, 9)."""
        txn = ctx.incoming.transaction
        assert txn is not None
        upstream = response.copy()
        upstream.headers.pop_first("Via")
        if response.status == 408 and "Timeout" in response.reason:
            upstream.reason = "Request Timeout (no answer from the user's device)"
        try:
            self.endpoint.respond(txn, upstream)
        except TransactionError as exc:  # the upstream transaction already finished
            log.debug("response %s not relayed: %s", response.status, exc)

    def abandon(self, ctx: ForkContext) -> None:
        """Give up the branches still pending without ending the context (the caller
        forks again): each is cancelled once it shows life (§9.1)."""
        self._cancel_others(ctx, None)

    def cancel(self, ctx: ForkContext) -> None:
        """Cancel every branch still pending (upstream CANCEL, §16.10)."""
        ctx.cancelled = True
        self._cancel_others(ctx, None)

    def _cancel_others(self, ctx: ForkContext, keep: _Branch | None) -> None:
        for branch in ctx.branches:
            if branch is keep or branch.final is not None or branch.cancel_wanted:
                continue
            branch.cancel_wanted = True
            if branch.request.method != "INVITE":
                continue
            if branch.provisional:
                self._send_cancel(branch)
            # §9.1: without a provisional response, the CANCEL waits for one.

    def _send_cancel(self, branch: _Branch) -> None:
        branch.cancel_sent = True
        task = asyncio.ensure_future(self.endpoint.request(build_cancel(branch.request),
                                                           branch.target.via))
        self._cancels.add(task)
        task.add_done_callback(self._cancels.discard)
