"""Turning bytes into SIP messages and back (RFC 3261 §7, §18.3; RFC 5626 §4.4.1).

Two entry points:

* `parse_message(data)` for one datagram (UDP): the body is what follows the
  blank line, cut to Content-Length when one is given.
* `StreamParser.feed(data)` for a byte stream (TCP/TLS): frames messages by
  Content-Length across partial reads and several messages per read, and
  reports RFC 5626 keepalives (CRLFCRLF ping, CRLF pong).

Only `SipParseError` ever escapes; its `status_hint` is the response to send.
A stream whose framing is broken cannot be resynchronised: `feed` raises and
the transport closes the connection. A well-framed but invalid message is
reported as `BadMessage` and the stream goes on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from trimaran.sip.errors import SipParseError
from trimaran.sip.grammar import is_digits, is_token
from trimaran.sip.headers import (
    Headers,
    canonical_name,
    is_valid_header_name,
    split_list_value,
)
from trimaran.sip.message import SIP_VERSION, Message, Request, Response
from trimaran.sip.uri import URI


@dataclass(frozen=True, slots=True)
class Limits:
    """Input limits; every violation is a `SipParseError` with the code to answer."""

    max_message_size: int = 65_535   # whole message, head and body (513)
    max_body_size: int = 65_535      # Content-Length (413)
    max_headers: int = 256           # header fields after splitting lists (400)
    max_line_length: int = 8_192     # one header line after unfolding (400)
    max_uri_length: int = 2_048      # Request-URI (414)


DEFAULT_LIMITS = Limits()

# §7.2 Status-Line = SIP-Version SP Status-Code SP Reason-Phrase; the SP before an
# empty reason is tolerated missing (RFC 4475 §3.1.1.13) but a 4+ digit code is not.
_STATUS_RE = re.compile(r"SIP/(\d+\.\d+) (\d{3})(?: (.*))?\Z", re.IGNORECASE | re.ASCII)
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_LINE_SPLIT = re.compile(r"\r?\n")
_LINE_SPLIT_BYTES = re.compile(rb"\r?\n")


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """An RFC 5626 §4.4.1 keepalive: `ping` (CRLFCRLF, answer with a pong) or `pong` (CRLF)."""

    kind: str


@dataclass(frozen=True, slots=True)
class BadMessage:
    """A well-framed message that failed to parse; `raw` lets the caller try to answer it."""

    error: SipParseError
    raw: bytes


Frame = Message | KeepAlive | BadMessage


def parse_message(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Message:
    """Parse one complete message from a datagram."""
    if len(data) > limits.max_message_size:
        raise SipParseError("message too large", 513)
    data = data.lstrip(b"\r\n")  # §7.5: ignore CRLFs before the start line
    match = _HEAD_END.search(data)
    if match is None:
        raise SipParseError("no blank line after the headers")
    message = _parse_head(data[: match.start()], limits)
    body = data[match.end() :]
    length = _content_length(message.headers.get("Content-Length"), limits)
    if length is not None:
        if len(body) < length:
            raise SipParseError("body shorter than Content-Length")
        body = body[:length]  # §18.3: extra bytes in a datagram are discarded
    message.body = body
    message.validate()
    return message


def _content_length(value: str | None, limits: Limits) -> int | None:
    """The Content-Length value; 413 beyond `max_body_size` however many digits it has."""
    if value is None:
        return None
    value = value.strip(" \t")
    if not is_digits(value):
        raise SipParseError(f"bad Content-Length value {value[:20]!r}")  # RFC 4475 §3.1.2.3
    digits = value.lstrip("0") or "0"
    if len(digits) > len(str(limits.max_body_size)) or int(digits) > limits.max_body_size:
        raise SipParseError("body too large", 413)
    return int(digits)


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SipParseError("headers are not valid UTF-8") from None


def _parse_head(head: bytes, limits: Limits) -> Message:
    text = _decode(head)
    lines = _LINE_SPLIT.split(text)
    message = _parse_start_line(lines[0], limits)
    headers = message.headers
    current: str | None = None
    count = 0

    def flush(line: str) -> None:
        nonlocal count
        if len(line) > limits.max_line_length:
            raise SipParseError("header line too long")
        name, colon, value = line.partition(":")
        name = name.rstrip(" \t")
        if not colon or not is_valid_header_name(name):
            raise SipParseError(f"malformed header line {line[:60]!r}")
        canon = canonical_name(name)
        for part in split_list_value(canon, value.strip(" \t")):
            count += 1
            if count > limits.max_headers:
                raise SipParseError("too many headers")
            headers.add(canon, part)

    for line in lines[1:]:
        if line[:1] in (" ", "\t"):  # §7.3.1 folding: continuation of the previous line
            if current is None:
                raise SipParseError("continuation line without a header")
            current += " " + line.strip(" \t")
            if len(current) > limits.max_line_length:
                raise SipParseError("header line too long")
            continue
        if current is not None:
            flush(current)
        current = line
    if current is not None:
        flush(current)
    return message


def _parse_start_line(line: str, limits: Limits) -> Message:
    if line[:4].upper() == "SIP/":
        if len(line) > limits.max_line_length:
            raise SipParseError("status line too long")
        match = _STATUS_RE.match(line)
        if match is None:
            raise SipParseError(f"bad status line {line[:60]!r}")
        if match.group(1) != "2.0":
            raise SipParseError("unsupported SIP version", 505)
        status = int(match.group(2))
        if not 100 <= status <= 699:
            raise SipParseError(f"bad status code {status}")
        return Response(status, match.group(3) or "", Headers())
    # §7.1 Request-Line = Method SP Request-URI SP SIP-Version: exactly single spaces;
    # extra or trailing whitespace is rejected (RFC 4475 §3.1.2.9-10 allow either choice).
    parts = line.split(" ")
    if len(parts) != 3:
        raise SipParseError(f"bad request line {line[:60]!r}")
    method, uri_text, version = parts
    if len(uri_text) > limits.max_uri_length:
        raise SipParseError("Request-URI too long", 414)
    if len(method) + len(version) > limits.max_line_length:
        raise SipParseError("request line too long")
    if not is_token(method):
        raise SipParseError(f"bad method {method[:20]!r}")
    if version.upper() != SIP_VERSION:
        if version.upper().startswith("SIP/"):
            raise SipParseError("unsupported SIP version", 505)
        raise SipParseError(f"bad request line {line[:60]!r}")
    uri = URI.parse(uri_text)
    if uri.headers:
        # §19.1.1 Table 1: headers are not allowed in a Request-URI (RFC 4475 §3.1.2.11).
        raise SipParseError("Request-URI contains headers")
    return Request(method, uri, Headers())


class StreamParser:
    """Frame SIP messages on a reliable byte stream by Content-Length (§18.3).

    `expect_ping` is for the server side: a lone CRLF at the end of the buffer
    may be the first half of a CRLFCRLF ping, so it is held until more arrives.
    """

    def __init__(self, limits: Limits = DEFAULT_LIMITS, *, expect_ping: bool = True) -> None:
        self._limits = limits
        self._buffer = bytearray()
        self._expect_ping = expect_ping
        self._scan_from = 0  # the blank line cannot start before this offset

    @property
    def buffered(self) -> int:
        """Bytes received but not yet framed."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Frame]:
        """Add received bytes; return every complete frame, in order."""
        self._buffer += data
        frames: list[Frame] = []
        while self._buffer:
            frame = self._next_frame()
            if frame is None:
                break
            frames.append(frame)
        return frames

    def _next_frame(self) -> Frame | None:
        buf = self._buffer
        if buf[:1] == b"\r" or buf[:1] == b"\n":
            return self._keepalive()
        limits = self._limits
        match = _HEAD_END.search(buf, self._scan_from)
        if match is None:
            if len(buf) > limits.max_message_size:
                raise SipParseError("message head too large", 513)
            self._scan_from = max(0, len(buf) - 3)  # keeps byte-wise feeding linear
            return None
        head = bytes(buf[: match.start()])
        length = _stream_content_length(head, limits)
        end = match.end() + length
        if end > limits.max_message_size:
            raise SipParseError("message too large", 513)
        if len(buf) < end:
            return None
        body = bytes(buf[match.end() : end])
        del buf[:end]
        self._scan_from = 0
        try:
            message = _parse_head(head, limits)
            message.body = body
            message.validate()
        except SipParseError as exc:
            return BadMessage(exc, head + b"\r\n\r\n" + body)
        return message

    def _keepalive(self) -> Frame | None:
        buf = self._buffer
        self._scan_from = 0
        if buf.startswith(b"\r\n\r\n"):
            del buf[:4]
            return KeepAlive("ping")
        if self._expect_ping and len(buf) < 4 and b"\r\n\r\n".startswith(buf):
            return None  # maybe the first part of a ping
        if buf.startswith(b"\r\n"):
            del buf[:2]
            return KeepAlive("pong")
        if buf == b"\r":
            return None
        del buf[:1]  # a stray CR or LF between messages (§7.5)
        return KeepAlive("pong")


def _stream_content_length(head: bytes, limits: Limits) -> int:
    """Content-Length of a stream message; it is mandatory on streams (§18.3, §20.14).

    Header lines are found as `_parse_head` finds them: the start line is skipped
    and folded continuation lines (§7.3.1) are joined to their header.
    """
    fields: list[bytes] = []
    for line in _LINE_SPLIT_BYTES.split(head)[1:]:
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += b" " + line.strip(b" \t")
        else:
            fields.append(line)
    found: int | None = None
    for field in fields:
        name, colon, value = field.partition(b":")
        if colon and name.rstrip(b" \t").lower() in (b"content-length", b"l"):
            length = _content_length(value.decode("ascii", "replace"), limits)
            if length is None or (found is not None and found != length):
                raise SipParseError("conflicting Content-Length headers")
            found = length
    if found is None:
        raise SipParseError("Content-Length is required on stream transports")
    return found


def error_response(raw: bytes, error: SipParseError) -> Response | None:
    """Best-effort response to a message that failed to parse, or None if it cannot be answered.

    Requests only (a bad response is dropped, §18.1.2; an ACK gets no response,
    §17.2.1), and only when Via, From, To, Call-ID and CSeq are present; their
    values are copied as sent (§8.2.6.2). The reason phrase names the problem.
    """
    try:
        raw = raw.lstrip(b"\r\n")
        match = _HEAD_END.search(raw)
        text = (raw[: match.start()] if match else raw).decode("utf-8", "replace")
        lines = _LINE_SPLIT.split(text)
        first = lines[0].split()
        if (len(first) < 3 or not is_token(first[0]) or first[0] == "ACK"
                or not first[-1].upper().startswith("SIP/")):
            return None  # a response, an ACK or not a request line at all
        fields: list[str] = []
        for line in lines[1:]:
            if line[:1] in (" ", "\t") and fields:  # §7.3.1 folding
                fields[-1] += " " + line.strip(" \t")
            else:
                fields.append(line)
        headers = Headers()
        for line in fields:
            name, colon, value = line.partition(":")
            canon = canonical_name(name.strip(" \t"))
            value = value.strip(" \t")
            if not colon or not value or canon not in _ECHOED:
                continue
            try:
                parts = split_list_value(canon, value)
            except SipParseError:
                parts = [value]  # unsplittable: echo it whole
            for part in parts:
                headers.add(canon, part)
        if any(needed not in headers for needed in _ECHOED):
            return None
        reason = "".join(ch for ch in error.reason if ch.isprintable())[:120]
        return Response(error.status_hint, reason or None, headers)
    except SipParseError:
        return None


_ECHOED = ("Via", "From", "To", "Call-ID", "CSeq")
