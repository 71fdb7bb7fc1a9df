"""Error types of the SIP layer, split by who is to blame."""

from __future__ import annotations


class SipError(Exception):
    """Root of every error raised by trimaran.sip."""


class SipParseError(SipError):
    """The remote sent something we cannot accept; `status_hint` is the response to send."""

    def __init__(self, reason: str, status_hint: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status_hint = status_hint
