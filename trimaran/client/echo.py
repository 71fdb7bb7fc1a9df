"""A tiny echo user agent server: answers everything, for interop tests and baselines.

OPTIONS, MESSAGE, REGISTER, SUBSCRIBE, NOTIFY, PUBLISH and BYE get 200; INVITE
gets 180 then 200 with the offer echoed back as the answer; CANCEL of a pending
INVITE gets 200 and the INVITE 487. It keeps no dialog state beyond pending
INVITEs, so it serves as a baseline for the SIP core's own cost.
"""

from __future__ import annotations

from trimaran.net.endpoint import IncomingRequest, SipEndpoint
from trimaran.net.transport import TransportConfig
from trimaran.sip.headers import Headers
from trimaran.sip.ids import new_tag
from trimaran.sip.transaction import TimerConfig

ECHO_ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE, REGISTER, SUBSCRIBE, NOTIFY, PUBLISH"
_OK_METHODS = frozenset({"OPTIONS", "MESSAGE", "REGISTER", "SUBSCRIBE", "NOTIFY", "PUBLISH",
                         "BYE", "UPDATE", "INFO"})


class EchoServer:
    """Listen on `host` (UDP and TCP) and answer every request."""

    def __init__(self, host: str = "127.0.0.1", *, timers: TimerConfig | None = None,
                 transport_config: TransportConfig | None = None) -> None:
        self.host = host
        self.endpoint = SipEndpoint(on_request=self._on_request, timers=timers,
                                    transport_config=transport_config)
        self.requests: dict[str, int] = {}
        self.acks = 0

    async def start(self, udp_port: int = 0, tcp_port: int = 0) -> None:
        """Start listening."""
        await self.endpoint.listen(self.host, udp_port=udp_port, tcp_port=tcp_port)

    def address(self, transport: str) -> tuple[str, int]:
        """Where to reach the server over `transport`."""
        return self.endpoint.contact_host_port(transport)

    async def close(self) -> None:
        """Stop listening and close connections."""
        await self.endpoint.close(drain_timeout=1.0)

    def _on_request(self, incoming: IncomingRequest) -> None:
        method = incoming.request.method
        self.requests[method] = self.requests.get(method, 0) + 1
        if method == "ACK":
            self.acks += 1
        elif method == "INVITE":
            self._answer_invite(incoming)
        elif method == "CANCEL":
            invite = self.endpoint.transactions.find_invite(incoming.request)
            self.endpoint.reply(incoming, 200 if invite else 481)
        elif method in _OK_METHODS:
            headers = Headers()
            if method == "REGISTER":
                for contact in incoming.request.headers.get_all("Contact"):
                    headers.add("Contact", contact)
            elif method == "SUBSCRIBE":
                headers.add("Contact", self._contact(incoming.flow.transport))
                headers.add("Expires", incoming.request.headers.get("Expires") or "600")
            self.endpoint.reply(incoming, 200, headers=headers, to_tag=new_tag())
        else:
            self.endpoint.reply(incoming, 405, headers=Headers([("Allow", ECHO_ALLOW)]))

    def _contact(self, transport: str) -> str:
        host, port = self.address(transport)
        suffix = "" if transport == "udp" else f";transport={transport}"
        return f"<sip:echo@{host}:{port}{suffix}>"

    def _answer_invite(self, incoming: IncomingRequest) -> None:
        tag = new_tag()
        headers = Headers([("Contact", self._contact(incoming.flow.transport))])
        self.endpoint.reply(incoming, 180, to_tag=tag)
        body = incoming.request.body
        if body:
            headers.add("Content-Type", incoming.request.headers.get("Content-Type")
                        or "application/sdp")
        self.endpoint.reply(incoming, 200, headers=headers, body=body, to_tag=tag)
