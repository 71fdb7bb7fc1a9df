"""Who may send a call to a trunk, and who vouches for a PSTN caller (EV-2, no open relay).

A Mediation server places a call on a gateway only when a Front End asks for it, and
a Front End rings a user for a PSTN caller without a digest challenge only when a
Mediation server brings the call. Both are proven with the deployment's key (the
CMS key every server holds) over the request's identity, so a client that copies
a header gets nothing:

``X-Trimaran-Trunk: <trunk>;token=HMAC``   FE → mediation: place this call on `trunk`
``X-Trimaran-Pstn: <caller URI>;token=HMAC``  mediation → FE: a caller from the PSTN

The MAC covers the header's subject, the Call-ID, the CSeq number and method, and the
Request-URI (a token cannot be replayed onto another number).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from trimaran.sip.errors import SipParseError
from trimaran.sip.headers import NameAddr
from trimaran.sip.message import Request
from trimaran.sip.uri import URI

TRUNK_HEADER = "X-Trimaran-Trunk"
PSTN_HEADER = "X-Trimaran-Pstn"
#: Why a call failed on a trunk (so the Front End moves to the next trunk): ``gateway``
#: (it refused, failed or did not answer in time) — absent when the callee answered.
FAILURE_HEADER = "X-Trimaran-Trunk-Failure"
HEADERS = (TRUNK_HEADER, PSTN_HEADER, FAILURE_HEADER, "X-Trimaran-App")
_TOKEN = ";token="


def _mac(secret: bytes, kind: str, subject: str, request: Request) -> str:
    text = (f"{kind}|{subject}|{request.call_id}|{request.cseq.seq}|{request.method}|"
            f"{request.uri}")
    return hmac.new(secret, text.encode(), hashlib.sha256).hexdigest()[:32]


def _check(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def trunk_header(secret: bytes, trunk: str, request: Request) -> str:
    """The `TRUNK_HEADER` value asking a Mediation server to place `request` on `trunk`
    (set the Request-URI first: the token covers it)."""
    return f"{trunk}{_TOKEN}{_mac(secret, 'trunk', trunk, request)}"


def verified_trunk(secret: bytes, request: Request) -> str | None:
    """The trunk a Front End asks for, when its token verifies (else None)."""
    value = request.headers.get(TRUNK_HEADER) or ""
    trunk, sep, token = value.partition(_TOKEN)
    if not sep or not trunk or not _check(token.strip(), _mac(secret, "trunk", trunk, request)):
        return None
    return trunk


def pstn_header(secret: bytes, caller: str, request: Request) -> str:
    """The `PSTN_HEADER` value vouching that `caller` (a URI) calls from the PSTN."""
    caller = str(URI.parse(caller))
    return f"<{caller}>{_TOKEN}{_mac(secret, 'pstn', caller, request)}"


def verified_caller(secret: bytes, request: Request) -> str | None:
    """The PSTN caller a Mediation server vouches for, when its token verifies."""
    value = request.headers.get(PSTN_HEADER)
    if not value:
        return None
    try:
        named = NameAddr.parse(value)
    except SipParseError:
        return None
    caller = str(named.uri)
    given = named.param("token") or ""
    return caller if _check(given, _mac(secret, "pstn", caller, request)) else None


# -- Front End → application server ------------------------------------------------------
APP_HEADER = "X-Trimaran-App"


@dataclass(frozen=True, slots=True)
class AppClaim:
    """What a Front End asks of a pool's application server: the application (`kind`),
    the pool owning the item (`owner`), the item (`target`: a number, a meeting id),
    and the authenticated sender (an AOR, or a PSTN caller's URI)."""

    kind: str
    owner: str
    target: str
    sender: str


def _app_subject(claim: AppClaim) -> str:
    return f"{claim.kind}|{claim.owner}|{claim.target}|{claim.sender}"


def app_header(secret: bytes, claim: AppClaim, request: Request) -> str:
    """The `APP_HEADER` value handing `request` to an application server (set the
    Request-URI first: the token covers it)."""
    mac = _mac(secret, "app", _app_subject(claim), request)
    return (f"<{claim.sender}>;kind={claim.kind};owner={claim.owner};"
            f"target=\"{claim.target}\"{_TOKEN}{mac}")


def verified_app(secret: bytes, request: Request) -> AppClaim | None:
    """The claim a Front End made for `request`, when its token verifies."""
    value = request.headers.get(APP_HEADER)
    if not value:
        return None
    try:
        named = NameAddr.parse(value)
    except SipParseError:
        return None
    target = (named.param("target") or "").strip('"')
    claim = AppClaim(named.param("kind") or "", named.param("owner") or "", target,
                     str(named.uri))
    given = named.param("token") or ""
    if not claim.kind or not _check(given, _mac(secret, "app", _app_subject(claim), request)):
        return None
    return claim


# -- Front End → Edge: a request of one of our users for a federated partner -------------
EDGE_HEADER = "X-Trimaran-Edge"


def edge_header(secret: bytes, request: Request) -> str:
    """The `EDGE_HEADER` value asking the federation route's Edge to send `request` out
    (set the Request-URI first: the token covers it)."""
    return _mac(secret, "edge", "federation", request)


def verified_edge(secret: bytes, request: Request) -> bool:
    """True when a Front End asked for `request` to go out (its token verifies)."""
    given = (request.headers.get(EDGE_HEADER) or "").strip()
    return bool(given) and _check(given, _mac(secret, "edge", "federation", request))


def route_token(secret: bytes, call_id: str) -> str:
    """The token an Edge's inside Record-Route carries for a dialog (`rrt`)."""
    return hmac.new(secret, f"edge-rr|{call_id}".encode(), hashlib.sha256).hexdigest()[:20]
