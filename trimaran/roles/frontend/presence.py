"""Presence: PUBLISH (RFC 3903) and SUBSCRIBE/NOTIFY (RFC 6665) for the `presence` event.

The Front End is the presence server of its users. A watcher sees a
presentity's published state only when the presentity allows it — the watcher
is in the presentity's contact list or an `allow` rule names it (or `*`), and no
`block` rule names it. Anyone else is told "offline" (polite blocking), as is
everybody when the presentity has no registered device.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from xml.sax.saxutils import quoteattr

from trimaran.net.endpoint import IncomingRequest, SipEndpoint
from trimaran.net.transport import Address, Flow
from trimaran.sip.dialog import Dialog
from trimaran.sip.headers import Headers, NameAddr
from trimaran.sip.ids import new_tag
from trimaran.store.base import NotFound, Store
from trimaran.store.model import Publication
from trimaran.store.model import Subscription as StoredSubscription

log = logging.getLogger(__name__)

PIDF = "application/pidf+xml"
MAX_PUBLICATION = 16_384


def basic_pidf(entity: str, basic: str, note: str = "") -> bytes:
    """A minimal PIDF document (RFC 3863) with one tuple."""
    note_xml = f"<note>{note}</note>" if note else ""
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity={quoteattr(entity)}>'
            f'<tuple id="t0"><status><basic>{basic}</basic></status>{note_xml}</tuple>'
            f"</presence>").encode()


@dataclass(eq=False)
class _Watch:
    """A live presence subscription we notify."""

    id: str
    watcher: str
    target: str
    dialog: Dialog
    flow: Flow
    expires_at: float


class PresenceService:
    """Publications and subscriptions of one Front End server."""

    def __init__(self, endpoint: SipEndpoint, store: Store, *, server: str,
                 wall_clock: Callable[[], float], default_expires: int,
                 min_expires: int, max_expires: int,
                 reach: Callable[[Flow, str], Address | Flow]) -> None:
        self.endpoint = endpoint
        self.store = store
        self.server = server
        self.wall_clock = wall_clock
        self.default_expires = default_expires
        self.min_expires = min_expires
        self.max_expires = max_expires
        self._reach = reach
        self.on_change: Callable[[str], None] | None = None
        self.watches: dict[str, _Watch] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # -- PUBLISH --------------------------------------------------------------
    async def publish(self, incoming: IncomingRequest, user: str) -> None:
        """Handle a PUBLISH from authenticated `user` (RFC 3903 §6)."""
        request = incoming.request
        reply = self.endpoint.reply
        if request.uri.aor != user:
            reply(incoming, 403, "Only your own presence can be published")
            return
        event = (request.headers.get("Event") or "").split(";")[0].strip()
        if event != "presence":
            reply(incoming, 489, headers=Headers([("Allow-Events", "presence")]))
            return
        if request.body and request.content_type != PIDF:
            reply(incoming, 415, headers=Headers([("Accept", PIDF)]))
            return
        if len(request.body) > MAX_PUBLICATION:
            reply(incoming, 413)
            return
        expires = request.expires if request.expires is not None else self.default_expires
        if 0 < expires < self.min_expires:
            reply(incoming, 423, headers=Headers([("Min-Expires", str(self.min_expires))]))
            return
        expires = min(expires, self.max_expires)
        now = self.wall_clock()
        if_match = request.headers.get("SIP-If-Match")
        try:
            if expires == 0:
                if if_match is None:
                    reply(incoming, 400, "Removal needs SIP-If-Match")
                    return
                await self.store.presence.unpublish(user, if_match.strip(), now=now)
                reply(incoming, 200, headers=Headers([("Expires", "0")]))
                self.schedule_notify(user)
                return
            body = request.body
            if if_match is None and not body:
                reply(incoming, 400, "Initial PUBLISH needs a body")
                return
            if not body:  # a refresh keeps the body it refreshes
                current = [p for p in await self.store.presence.publications(
                    user, "presence", now=now) if p.etag == if_match]
                if not current:
                    reply(incoming, 412)
                    return
                body = current[0].body
            etag = secrets.token_hex(8)
            publication = Publication(user, etag, "presence", PIDF, body, now + expires,
                                      self.server)
            await self.store.presence.publish(publication, replaces=if_match, now=now)
        except NotFound:
            reply(incoming, 412)
            return
        reply(incoming, 200, headers=Headers([("SIP-ETag", etag), ("Expires", str(expires))]))
        self.schedule_notify(user)

    # -- SUBSCRIBE ------------------------------------------------------------
    async def subscribe(self, incoming: IncomingRequest, watcher: str) -> None:
        """Handle a presence SUBSCRIBE from authenticated `watcher` (RFC 6665 §4.2)."""
        request = incoming.request
        event = (request.headers.get("Event") or "").split(";")[0].strip()
        if event != "presence":
            self.endpoint.reply(incoming, 489, headers=Headers([("Allow-Events", "presence")]))
            return
        target = request.uri.aor
        if request.to.tag:  # refresh or removal inside an existing subscription
            await self._refresh(incoming, watcher)
            return
        if await self.store.users.get(target) is None:
            self.endpoint.reply(incoming, 404, "No such user")
            return
        if not request.contacts:
            self.endpoint.reply(incoming, 400, "SUBSCRIBE needs a Contact")
            return
        expires = self._expires(request.expires)
        if expires is None:
            self.endpoint.reply(incoming, 423,
                                headers=Headers([("Min-Expires", str(self.min_expires))]))
            return
        tag = new_tag()
        dialog = Dialog.from_uas(request, tag)
        now = self.wall_clock()
        watch = _Watch(f"{request.call_id}|{tag}", watcher, target, dialog, incoming.flow,
                       now + expires)
        host, port = self.endpoint.contact_host_port(incoming.flow.transport)
        contact = f"<sip:{host}:{port}" + \
            ("" if incoming.flow.transport == "udp" else f";transport={incoming.flow.transport}") \
            + ">"
        self.endpoint.reply(incoming, 200, headers=Headers([("Contact", contact),
                            ("Expires", str(expires))]), to_tag=tag)
        if expires:
            self.watches[watch.id] = watch
            await self.store.presence.save_subscription(StoredSubscription(
                watch.id, watcher, target, "presence", watch.expires_at,
                json.dumps({"call_id": request.call_id, "tag": tag}), self.server))
        await self._notify(watch, terminated="timeout" if expires == 0 else None)

    async def _refresh(self, incoming: IncomingRequest, watcher: str) -> None:
        request = incoming.request
        watch = self.watches.get(f"{request.call_id}|{request.to.tag}")
        if watch is None or watch.watcher != watcher:
            self.endpoint.reply(incoming, 481)
            return
        expires = self._expires(request.expires)
        if expires is None:
            self.endpoint.reply(incoming, 423,
                                headers=Headers([("Min-Expires", str(self.min_expires))]))
            return
        watch.dialog.accepts_remote_cseq(request)
        watch.expires_at = self.wall_clock() + expires
        watch.flow = incoming.flow
        self.endpoint.reply(incoming, 200, headers=Headers([("Expires", str(expires))]))
        if expires == 0:
            await self._end(watch, "timeout")
        else:
            await self._notify(watch)

    def _expires(self, asked: int | None) -> int | None:
        expires = self.default_expires if asked is None else asked
        if 0 < expires < self.min_expires:
            return None
        return min(expires, self.max_expires)

    # -- NOTIFY ---------------------------------------------------------------
    def schedule_notify(self, target: str, *, local_only: bool = False) -> None:
        """Notify every watcher of `target` soon (after a publish or sign-in/out); unless
        `local_only`, tell the other servers of the pool too (their watchers)."""
        if not local_only and self.on_change is not None:
            self.on_change(target)
        task = asyncio.ensure_future(self.notify_all(target))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def notify_all(self, target: str) -> None:
        """Send the current state of `target` to each of its watchers."""
        for watch in [w for w in self.watches.values() if w.target == target]:
            await self._notify(watch)

    async def expire(self) -> None:
        """End subscriptions whose time is up (RFC 6665 §4.2.2: reason=timeout)."""
        now = self.wall_clock()
        for watch in [w for w in self.watches.values() if w.expires_at <= now]:
            await self._end(watch, "timeout")

    async def _end(self, watch: _Watch, reason: str) -> None:
        self.watches.pop(watch.id, None)
        await self.store.presence.remove_subscription(watch.id)
        await self._notify(watch, terminated=reason)

    async def state_for(self, watcher: str, target: str) -> bytes:
        """The PIDF `watcher` may see of `target`."""
        now = self.wall_clock()
        if not await self.allowed(watcher, target):
            return basic_pidf(target, "closed")
        if not await self.store.bindings.for_aor(target, now=now):
            return basic_pidf(target, "closed", "offline")
        publications = await self.store.presence.publications(target, "presence", now=now)
        if publications:
            return max(publications, key=lambda p: p.expires_at).body
        return basic_pidf(target, "open")

    async def allowed(self, watcher: str, target: str) -> bool:
        """Presence authorization (see module docstring)."""
        if watcher == target:
            return True
        rules = {r.watcher: r.action for r in await self.store.presence.rules(target)}
        if rules.get(watcher) == "block":
            return False
        if rules.get(watcher) == "allow" or rules.get("*") == "allow":
            return True
        return (await self.store.contacts.get(target)).has_contact(watcher)

    async def _notify(self, watch: _Watch, terminated: str | None = None) -> None:
        now = self.wall_clock()
        headers = Headers([("Event", "presence")])
        if terminated:
            headers.add("Subscription-State", f"terminated;reason={terminated}")
        else:
            remaining = max(0, int(watch.expires_at - now))
            headers.add("Subscription-State", f"active;expires={remaining}")
        body = await self.state_for(watch.watcher, watch.target)
        headers.add("Content-Type", PIDF)
        transport = watch.flow.transport
        host, port = self.endpoint.contact_host_port(transport)
        contact = NameAddr.parse(f"<sip:{host}:{port}>")
        request = watch.dialog.create_request("NOTIFY", via=self.endpoint.via(transport),
                                              contact=contact)
        for name, value in headers:
            request.headers.add(name, value)
        request.body = body
        response = await self.endpoint.request(request, self._reach(watch.flow,
                                                                    str(watch.dialog.remote_target)))
        if response.status in (404, 408, 410, 480, 481) or response.status >= 500:
            log.info("presence subscription %s dropped after NOTIFY got %s", watch.id,
                     response.status)
            self.watches.pop(watch.id, None)
            await self.store.presence.remove_subscription(watch.id)
