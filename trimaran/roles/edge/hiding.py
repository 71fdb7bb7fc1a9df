"""Topology hiding at the Edge (SPEC EDGE-1): what of a message crossing from inside to
outside must change so that no internal server's address leaves the deployment.

Sans-IO and stateful only through `HiddenState` (maps the Edge keeps in memory):

* **Via**: every message crosses as a new transaction of the Edge (`server.py`), so
  the far side only ever sees the Edge's own Via.
* **Record-Route / Route**: a dialog-creating request going out carries a single
  Record-Route of the Edge's outside address; the internal entries are kept per
  Call-ID and put back on what comes in (`routes_inward`, `record_routes_inward`).
* **Contact**: an internal server's Contact (an application server, a Mediation
  server) going out becomes the Edge's outside address with a token, and back.
* **Call-ID**: a Call-ID naming an internal server (``...@127.0.1.1``) is replaced by
  a random one going out, and back coming in.
* **Warning** hosts of internal servers become the Edge's; ``X-Trimaran-*`` (but the
  mode a client is told) and ``P-Asserted-Identity`` never go out.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection
from dataclasses import dataclass, field

from trimaran.sip.errors import SipParseError
from trimaran.sip.headers import NameAddr
from trimaran.sip.uri import URI

CONTACT_TOKEN = "ec"
FLOW_TOKEN = "ef"
KEPT_PRIVATE = ("X-Trimaran-Mode",)
LIMIT = 100_000


@dataclass
class HiddenState:
    """What the Edge remembers to undo its rewriting."""

    internal: frozenset[str]                    # addresses of the deployment's servers
    outside: str                                # "host:port" of the Edge's outside side
    routes: dict[str, list[str]] = field(default_factory=dict)       # Call-ID -> Routes in
    contacts: dict[str, str] = field(default_factory=dict)           # token -> contact
    contact_tokens: dict[str, str] = field(default_factory=dict)     # contact -> token
    call_ids: dict[str, str] = field(default_factory=dict)           # internal -> outside
    call_ids_back: dict[str, str] = field(default_factory=dict)      # outside -> internal

    def _trim(self) -> None:
        for table in (self.routes, self.contacts, self.contact_tokens, self.call_ids,
                      self.call_ids_back):
            if len(table) > LIMIT:
                for key in list(table)[: LIMIT // 10]:
                    del table[key]

    # -- Call-ID --------------------------------------------------------------------
    def call_id_out(self, call_id: str) -> str:
        """The Call-ID the outside sees."""
        host = call_id.rpartition("@")[2]
        if host not in self.internal:
            return call_id
        mapped = self.call_ids.get(call_id)
        if mapped is None:
            mapped = secrets.token_hex(12)
            self.call_ids[call_id] = mapped
            self.call_ids_back[mapped] = call_id
            self._trim()
        return mapped

    def call_id_in(self, call_id: str) -> str:
        """The Call-ID the inside knows."""
        return self.call_ids_back.get(call_id, call_id)

    # -- Contact ----------------------------------------------------------------------
    def contact_out(self, value: str) -> str:
        """A Contact header value as it may go out."""
        try:
            named = NameAddr.parse(value)
        except SipParseError:
            return value
        if named.uri.host not in self.internal:
            return value
        original = str(named.uri)
        token = self.contact_tokens.get(original)
        if token is None:
            token = secrets.token_urlsafe(12)
            self.contact_tokens[original] = token
            self.contacts[token] = original
            self._trim()
        host, _, port = self.outside.rpartition(":")
        uri = URI("sip", named.uri.user, None, host, int(port),
                  (("transport", "tcp"), (CONTACT_TOKEN, token)))
        return f"<{uri}>"

    def contact_in(self, uri: URI) -> URI | None:
        """The internal contact an outside Request-URI with our token stands for."""
        token = uri.param(CONTACT_TOKEN)
        if not token:
            return None
        original = self.contacts.get(token)
        return URI.parse(original) if original else None

    # -- Record-Route and Route -------------------------------------------------------------
    def remember_routes(self, call_id: str, routes_inward: list[str]) -> None:
        """The internal Routes to put on requests of this dialog coming in."""
        self.routes[call_id] = routes_inward
        self._trim()

    def routes_inward(self, call_id: str) -> list[str]:
        """The internal Routes of a dialog (empty when none were hidden)."""
        return list(self.routes.get(call_id, ()))

    # -- other headers ----------------------------------------------------------------
    def warning_out(self, value: str) -> str:
        """A Warning whose agent is an internal server names the Edge instead."""
        parts = value.split(" ", 2)
        if len(parts) == 3 and parts[1].rpartition(":")[0] in self.internal:
            return f"{parts[0]} {self.outside} {parts[2]}"
        return value


def private_header(name: str) -> bool:
    """Headers that never leave the deployment."""
    lower = name.lower()
    if lower == "p-asserted-identity":
        return True
    return lower.startswith("x-trimaran-") and name not in KEPT_PRIVATE


def mentions(text: str, addresses: Collection[str]) -> list[str]:
    """The internal addresses that appear in `text` (for tests and self-checks)."""
    return [a for a in addresses if a in text]
