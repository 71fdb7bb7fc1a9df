"""The SIP names of Persistent Chat (SPEC PC-1).

A client opens its chat connection with an INVITE to the service URI
``sip:chat@DOMAIN`` and posts to a room with a MESSAGE to the room's URI, the service
URI with the room's name (percent-encoded, UTF-8) in an ``opaque`` parameter:
``sip:chat@example.com;opaque=room:Ops%20room``. Its Front End sends both to a chat
server (`trimaran.roles.frontend.chat`).
"""

from __future__ import annotations

from urllib.parse import quote, unquote

from trimaran.sip.uri import URI

SERVICE_USER = "chat"
ROOM_PREFIX = "room:"


def service_uri(domain: str) -> str:
    """Where a chat connection is opened."""
    return f"sip:{SERVICE_USER}@{domain}"


def room_uri(domain: str, room: str) -> str:
    """The URI a post to `room` is sent to."""
    return f"{service_uri(domain)};opaque={ROOM_PREFIX}{quote(room, safe='')}"


def is_chat(uri: URI) -> bool:
    """True for the service URI or a room URI (any domain: the caller checks it)."""
    return uri.scheme in ("sip", "sips") and uri.user == SERVICE_USER


def room_of(uri: URI) -> str | None:
    """The room a room URI names; None for the bare service URI (or another opaque)."""
    opaque = uri.param("opaque") or ""
    if not opaque.startswith(ROOM_PREFIX):
        return None
    return unquote(opaque[len(ROOM_PREFIX):], errors="strict") or None
