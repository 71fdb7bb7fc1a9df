"""Call Park from a client (SPEC APP-1): park the other party of a call.

`park` sends ``REFER sip:callpark@<domain>`` (RFC 3515) whose ``Refer-To`` names the
other party of the call with ``?Replaces=`` identifying the call (RFC 3891), as an
attended transfer to the Call Park service does. The service answers ``202`` with the
orbit (``X-Trimaran-Orbit``, also the ``text/plain`` body), moves the other party to
the orbit (its phone replaces our call with one to the service, and hangs up on us),
then tells the outcome in one NOTIFY (``message/sipfrag``): ``SIP/2.0 200 OK`` when
parked.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import quote

from trimaran.client.dialogs import Call, CallState, Subscription
from trimaran.client.ua import UserAgent
from trimaran.sip.dialog import Dialog
from trimaran.sip.errors import SipParseError
from trimaran.sip.uri import URI

PARK_USER = "callpark"
ORBIT_HEADER = "X-Trimaran-Orbit"


class ParkFailed(Exception):
    """The call was not parked: the service's answer, or the parked party's."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


def refer_to(call: Call) -> str:
    """The Refer-To of parking `call`: the other party, with Replaces naming the call
    as the other party sees it (its tag is the to-tag)."""
    if call.dialog is None:
        raise ValueError("the call has no dialog")
    ids = call.dialog.id
    other = call.dialog.remote.uri
    party = URI(other.scheme, other.user, None, other.host, other.port, other.params)
    replaces = f"{ids.call_id};to-tag={ids.remote_tag};from-tag={ids.local_tag}"
    return f"<{party}?Replaces={quote(replaces, safe='')}>"


async def park(ua: UserAgent, call: Call, *, timeout: float = 15.0) -> str:
    """Park the other party of an established `call`; return the orbit (e.g. ``*7001``)
    once the party is in it. `ParkFailed` when the service or the party refused."""
    if call.state is not CallState.ESTABLISHED:
        raise ValueError(f"cannot park a call in state {call.state.value}")
    request = ua.new_request("REFER", f"sip:{PARK_USER}@{ua.aor.host}")
    request.headers.add("Refer-To", refer_to(call))
    request.headers.add("Referred-By", f"<{ua.aor}>")
    request.headers.add("Contact", str(ua.contact()))
    subscription = Subscription(ua, "refer", str(request.uri))
    ua.subscriptions[request.call_id] = subscription
    try:
        exchange = await ua.transact(request)
        response = exchange.response
        if not 200 <= response.status < 300:
            raise ParkFailed(response.status, response.reason)
        orbit = (response.headers.get(ORBIT_HEADER) or response.body.decode()).strip()
        if subscription.dialog is None:       # the NOTIFY finds it by Call-ID anyway
            with contextlib.suppress(SipParseError):
                subscription.dialog = Dialog.from_uac(exchange.request, response)
        status, reason = await _outcome(subscription, timeout)
    finally:
        ua.subscriptions.pop(request.call_id, None)
    if not 200 <= status < 300:
        raise ParkFailed(status, reason)
    return orbit


async def _outcome(subscription: Subscription, timeout: float) -> tuple[int, str]:
    """The final status the REFER's NOTIFYs report (their ``message/sipfrag``)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        notify = await subscription.next_notify(max(0.0, deadline - loop.time()))
        line = notify.body.decode("utf-8", "replace").split("\r\n", 1)[0].split(" ", 2)
        if len(line) >= 2 and line[0] == "SIP/2.0" and line[1].isdigit() and \
                int(line[1]) >= 200:
            return int(line[1]), line[2] if len(line) > 2 else ""
