"""The registrar (RFC 3261 §10.3, RFC 5626 §6): bindings of AORs to contacts.

A binding remembers which Front End server holds the client's flow and which
flow it is, so requests for the user are sent back over the connection the
client registered on (FE-4). Bindings replace each other by RFC 5626 instance
and reg-id when present, else by contact URI.
"""

from __future__ import annotations

from dataclasses import dataclass

from trimaran.net.transport import Flow
from trimaran.sip.errors import SipParseError
from trimaran.sip.headers import Headers, NameAddr
from trimaran.sip.message import Request
from trimaran.store.model import Binding


class RegistrationRefused(Exception):
    """The REGISTER cannot be honoured; carries the response to send."""

    def __init__(self, status: int, reason: str, headers: Headers | None = None) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.headers = headers or Headers()


@dataclass(frozen=True, slots=True)
class RegisterPlan:
    """What one REGISTER asks for: bindings to upsert and binding keys to remove."""

    aor: str
    upsert: tuple[Binding, ...]
    remove: tuple[str, ...]
    remove_all: bool
    fetch_only: bool


def flow_source(flow: Flow) -> str:
    """`transport:host:port` of the far end of a flow."""
    host, port = flow.remote
    return f"{flow.transport}:{host}:{port}"


def plan_register(request: Request, *, aor: str, existing: list[Binding], server: str,
                  flow: Flow, now: float, min_expires: int, max_expires: int,
                  default_expires: int) -> RegisterPlan:
    """Turn a REGISTER into a plan (§10.3 steps 6-7), or raise `RegistrationRefused`."""
    header_expires = request.expires
    if request.is_star_contact:
        # §10.3 step 6: "*" only with Expires: 0 and no other Contact.
        if header_expires != 0 or request.contacts:
            raise RegistrationRefused(400, "Contact: * needs Expires: 0 and no other Contact")
        return RegisterPlan(aor, (), tuple(b.key for b in existing), True, False)
    contacts = request.contacts
    if not contacts:
        return RegisterPlan(aor, (), (), False, True)
    by_key = {b.key: b for b in existing}
    call_id, cseq = request.call_id, request.cseq.seq
    upsert: list[Binding] = []
    remove: list[str] = []
    for contact in contacts:
        expires = _contact_expires(contact, header_expires, default_expires)
        if 0 < expires < min_expires:
            raise RegistrationRefused(423, "Interval Too Brief",
                                      Headers([("Min-Expires", str(min_expires))]))
        expires = min(expires, max_expires)
        binding = _binding(contact, aor=aor, expires_at=now + expires, call_id=call_id,
                           cseq=cseq, server=server, flow=flow)
        old = by_key.get(binding.key)
        if old is not None and old.call_id == call_id and cseq <= old.cseq:
            # §10.3 step 7: an out-of-order REGISTER of the same Call-ID.
            raise RegistrationRefused(500, "Out of order REGISTER",
                                      Headers([("Retry-After", "1")]))
        if expires == 0:
            remove.append(binding.key)
        else:
            upsert.append(binding)
    return RegisterPlan(aor, tuple(upsert), tuple(remove), False, False)


def _contact_expires(contact: NameAddr, header: int | None, default: int) -> int:
    value = contact.param("expires")
    if value is not None:
        if not value.isdigit() or len(value) > 10:
            raise SipParseError(f"bad expires parameter {value[:20]!r}")
        return int(value)
    return header if header is not None else default


def _binding(contact: NameAddr, *, aor: str, expires_at: float, call_id: str, cseq: int,
             server: str, flow: Flow) -> Binding:
    instance = contact.param("+sip.instance")
    reg_id_text = contact.param("reg-id")
    reg_id = int(reg_id_text) if reg_id_text and reg_id_text.isdigit() else None
    q_text = contact.param("q")
    try:
        q = float(q_text) if q_text else 1.0
    except ValueError:
        raise SipParseError(f"bad q value {(q_text or '')[:10]!r}") from None
    if not 0.0 <= q <= 1.0:
        raise SipParseError("q must be within 0..1")
    kept = tuple((k, v) for k, v in contact.params if k not in ("expires",))
    params = "".join(f";{k}" if v is None else f";{k}={v}" for k, v in kept)
    return Binding(aor=aor, contact=str(contact.uri), expires_at=expires_at, call_id=call_id,
                   cseq=cseq, server=server, flow_id=flow.id, source=flow_source(flow),
                   instance_id=instance or None, reg_id=reg_id, q=q, params=params)


def contact_headers(bindings: list[Binding], now: float) -> Headers:
    """The Contact headers of a 200 to REGISTER, each with its remaining expiry (§10.3 step 8)."""
    headers = Headers()
    for binding in bindings:
        remaining = max(0, int(binding.expires_at - now))
        headers.add("Contact", f"<{binding.contact}>{binding.params};expires={remaining}")
    return headers
