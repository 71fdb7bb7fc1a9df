"""Property and fuzz tests of the SIP parser (RFC 3261 §7, §18.3, §25; RFC 5626 §4.4.1).

Two kinds of property:

* Round trip: a structurally valid message, generated with random header forms
  (compact names, odd case, folding §7.3.1, comma-joined lists), parses to what
  was generated, and `parse(to_bytes(parse(data)))` equals `parse(data)`.
* Robustness: for arbitrary bytes and for mutated valid messages, only
  `SipParseError` escapes `parse_message` and `StreamParser.feed` (whole,
  byte by byte, in random chunks); every structured view of a message that did
  parse either works or raises `SipParseError`; and a parsed message survives
  its own serialisation.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trimaran.sip.errors import SipParseError
from trimaran.sip.grammar import quote
from trimaran.sip.headers import NameAddr, Via
from trimaran.sip.message import Message, Request, Response
from trimaran.sip.parser import (
    BadMessage,
    Frame,
    KeepAlive,
    StreamParser,
    error_response,
    parse_message,
)


def _examples(n: int) -> settings:
    """Hypothesis settings for `n` examples, no deadline."""
    return settings(max_examples=n, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# About 3,000 examples in all; generating whole messages is what costs, so the
# robustness tests mostly mutate stored seeds. The file runs in about half a minute.
ROUND_TRIP = _examples(150)
STREAMS = _examples(100)
FUZZ_BYTES = _examples(1000)
FUZZ_SEEDS = _examples(1200)
FUZZ_GENERATED = _examples(150)
FUZZ_STREAMS = _examples(300)

TOKEN_CHARS = string.ascii_letters + string.digits + "-.!%*_+`'~"
LOWER_TOKEN_CHARS = string.ascii_lowercase + string.digits + "-.!*_+`'~"
USER_CHARS = string.ascii_letters + string.digits + "-_.!~*'()&=+$,;?/"

tokens = st.text(TOKEN_CHARS, min_size=1, max_size=12)
param_names = st.text(LOWER_TOKEN_CHARS, min_size=1, max_size=8)
ALNUM = string.ascii_lowercase + string.digits
labels = st.text(ALNUM, min_size=1, max_size=6) | st.builds(
    "{}-{}".format, st.text(ALNUM, min_size=1, max_size=3), st.text(ALNUM, min_size=1, max_size=3))
top_labels = st.builds(str.__add__, st.sampled_from(string.ascii_lowercase),
                       st.text(ALNUM, max_size=5))
hostnames = st.builds(lambda ls, top: ".".join([*ls, top]), st.lists(labels, max_size=3),
                      top_labels)
hosts = st.one_of(hostnames, st.ip_addresses(v=4).map(str),
                  st.ip_addresses(v=6).map(lambda a: f"[{a}]"))
ports = st.none() | st.integers(1, 65535)
escapes = st.integers(0, 255).map(lambda b: f"%{b:02X}")
users = st.lists(st.sampled_from(USER_CHARS) | escapes, min_size=1, max_size=10).map("".join)
printable = st.characters(min_codepoint=0x20, blacklist_categories=("Cs", "Cc"))
quoted_texts = st.text(printable, max_size=16)
METHODS = ["INVITE", "REGISTER", "OPTIONS", "BYE", "CANCEL", "ACK", "MESSAGE", "SUBSCRIBE"]
methods = st.sampled_from(METHODS) | tokens.filter(lambda t: not t.upper().startswith("SIP/"))


@st.composite
def param_lists(draw: st.DrawFn, max_size: int = 3) -> list[tuple[str, str | None]]:
    """`;name[=value]` pairs with distinct names."""
    names = draw(st.lists(param_names, max_size=max_size, unique=True))
    return [(n, draw(st.none() | tokens)) for n in names]


def fmt_params(params: list[tuple[str, str | None]]) -> str:
    """Serialise as `;a=b;c`."""
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params)


@st.composite
def sip_uris(draw: st.DrawFn) -> str:
    """A sip: or sips: URI without headers (valid everywhere, §19.1.1)."""
    scheme = draw(st.sampled_from(["sip", "sips", "SIP"]))
    userinfo = ""
    if draw(st.booleans()):
        userinfo = draw(users)
        if draw(st.booleans()):
            userinfo += ":" + draw(st.text(string.ascii_letters + string.digits + "&=+$,",
                                           max_size=6))
        userinfo += "@"
    port = draw(ports)
    hostport = draw(hosts) + (f":{port}" if port is not None else "")
    return f"{scheme}:{userinfo}{hostport}{fmt_params(draw(param_lists()))}"


@st.composite
def display_names(draw: st.DrawFn) -> tuple[str | None, str]:
    """(expected display name, its wire form): absent, tokens, or a quoted string."""
    kind = draw(st.sampled_from(["none", "tokens", "quoted"]))
    if kind == "none":
        return None, ""
    if kind == "tokens":
        words = draw(st.lists(tokens, min_size=1, max_size=3))
        return " ".join(words), " ".join(words) + " "
    text = draw(quoted_texts)
    return text, quote(text) + draw(st.sampled_from([" ", ""]))


RESERVED = frozenset({"tag", "q", "expires", "reg-id", "+sip.instance"})  # added separately


@dataclass
class Address:
    """An expected name-addr: what the parser should find."""

    display: str | None
    uri: str
    params: list[tuple[str, str | None]]
    wire: str


@st.composite
def addresses(draw: st.DrawFn, tag: str | None = None, extra: str = "") -> Address:
    """A name-addr, or an addr-spec when the URI allows it (§20.10)."""
    display, display_wire = draw(display_names())
    uri = draw(sip_uris())
    params = draw(param_lists(2).filter(lambda ps: all(k not in RESERVED for k, _ in ps)))
    if tag is not None:
        params.append(("tag", tag))
    ptext = fmt_params(params).replace(";", draw(st.sampled_from([";", " ;", " ; "])), 1)
    bare_ok = display is None and not any(c in uri for c in ";,?")
    if bare_ok and draw(st.booleans()):
        wire = uri + ptext + extra
    else:
        wire = f"{display_wire}<{uri}>{ptext}{extra}"
    return Address(display, uri, params, wire)


@dataclass
class Generated:
    """A generated message and the facts the parser should recover from it."""

    data: bytes
    is_request: bool
    method: str
    call_id: str
    cseq: int
    via_branches: list[str]
    from_tag: str
    contacts: int
    authorization: str | None
    body: bytes
    extra: dict[str, Any] = field(default_factory=dict)


NAMES = {"Via": ["Via", "v", "VIA", "via"], "From": ["From", "f", "fRoM"], "To": ["To", "t", "TO"],
         "Call-ID": ["Call-ID", "i", "call-id"], "Contact": ["Contact", "m", "CONTACT"],
         "Content-Length": ["Content-Length", "l", "content-LENGTH"],
         "Supported": ["Supported", "k"], "CSeq": ["CSeq", "cseq", "CSEQ"]}


def name_of(draw: st.DrawFn, canonical: str) -> str:
    """A random spelling (case or compact form, §7.3.3) of a header name."""
    return draw(st.sampled_from(NAMES.get(canonical, [canonical, canonical.lower()])))


def list_lines(draw: st.DrawFn, name: str, values: list[str]) -> list[str]:
    """Lines carrying a list header, comma-joined or one per value (§7.3.1).

    The lines come back as one CRLF-joined item so shuffling keeps their order.
    """
    if not values:
        return []
    if draw(st.booleans()):
        sep = draw(st.sampled_from([",", ", ", " ,\r\n ", ",\r\n\t"]))
        return [f"{name_of(draw, name)}: {sep.join(values)}"]
    return ["\r\n".join(f"{name_of(draw, name)}: {v}" for v in values)]


DIGEST = ('Digest username="alice", realm="example.com", nonce="a1b2,c3", '
          'uri="sip:example.com", response="0123456789abcdef", algorithm=MD5, qop=auth, '
          'nc=00000001, cnonce="x,y"')


@st.composite
def messages(draw: st.DrawFn, with_length: bool = True) -> Generated:
    """A structurally valid request or response with random header forms."""
    is_request = draw(st.booleans())
    method = draw(methods)
    call_id = draw(tokens) + draw(st.sampled_from(["", "@" + "host.example"]))
    cseq = draw(st.integers(0, 2**32 - 1))
    branches = draw(st.lists(tokens.map(lambda t: "z9hG4bK" + t), min_size=1, max_size=3))
    vias = []
    for branch in branches:
        port = draw(ports)
        rport = draw(st.sampled_from(["", ";rport", ";rport=5060"]))
        received = draw(st.sampled_from(["", ";received=192.0.2.1", ";received=2001:db8::1"]))
        sp = draw(st.sampled_from([" ", "  ", "\r\n  "]))
        transport = draw(st.sampled_from(["UDP", "TCP", "TLS", "WS", "SCTP"]))
        host = draw(hosts) + (f":{port}" if port is not None else "")
        vias.append(f"SIP/2.0/{transport}{sp}{host};branch={branch}{rport}{received}")
    from_tag = draw(tokens)
    frm = draw(addresses(tag=from_tag))
    to = draw(addresses(tag=draw(st.none() | tokens)))
    lines = list_lines(draw, "Via", vias)
    colon_ws = draw(st.sampled_from([" ", "", "\r\n "]))  # §7.3.1: folding after the colon
    cseq_ws = draw(st.sampled_from([" ", "\r\n "]))
    lines += [f"{name_of(draw, 'From')}:{colon_ws}{frm.wire}",
              f"{name_of(draw, 'To')}: {to.wire}",
              f"{name_of(draw, 'Call-ID')}: {call_id}",
              f"{name_of(draw, 'CSeq')}: {cseq}{cseq_ws}{method}",
              f"Max-Forwards: {draw(st.integers(0, 255))}"]
    contacts = 0
    if draw(st.booleans()):
        if draw(st.integers(0, 4)) == 0:
            lines.append(f"{name_of(draw, 'Contact')}: *")
        else:
            extras = [";expires=3600", ";q=0.7", ';+sip.instance="<urn:uuid:00000000-0000-1000>"',
                      ";reg-id=1", ""]
            values = [draw(addresses(extra=draw(st.sampled_from(extras))).map(lambda a: a.wire))
                      for _ in range(draw(st.integers(1, 3)))]
            contacts = len(values)
            lines += list_lines(draw, "Contact", values)
    routes = [f"<{draw(sip_uris())};lr>" for _ in range(draw(st.integers(0, 2)))]
    lines += list_lines(draw, draw(st.sampled_from(["Route", "Record-Route"])), routes)
    lines += list_lines(draw, "Supported", draw(st.lists(tokens, max_size=3)))
    lines += list_lines(draw, "Require", draw(st.lists(tokens, max_size=2)))
    authorization = DIGEST if draw(st.booleans()) else None
    if authorization:
        lines.append(f"{draw(st.sampled_from(['Authorization', 'authorization']))}: {DIGEST}")
    if draw(st.booleans()):
        lines.append(f"Expires: {draw(st.integers(0, 2**32 - 1))}")
    for _ in range(draw(st.integers(0, 2))):
        value = draw(st.text(printable, max_size=20)).strip(" ")
        lines.append(f"X-{draw(tokens)}: {value}")
    lines = draw(st.permutations(lines))
    body = draw(st.binary(max_size=64))
    if with_length or draw(st.booleans()):
        lines.append(f"{name_of(draw, 'Content-Length')}: {len(body)}")
    if is_request:
        uri = draw(sip_uris())
        start = f"{method} {uri} SIP/2.0"
    else:
        status = draw(st.integers(100, 699))
        reason = draw(st.text(printable, max_size=20))
        start = f"SIP/2.0 {status} {reason}"
    head = "\r\n".join([start, *lines]) + "\r\n\r\n"
    return Generated(head.encode(), is_request, method, call_id, cseq, branches, from_tag,
                     contacts, authorization, body)


def assert_equivalent(a: Message, b: Message) -> None:
    """Same start line, same headers (Content-Length aside) and same body."""
    assert type(a) is type(b)
    assert a.start_line() == b.start_line()
    if isinstance(a, Request) and isinstance(b, Request):
        assert (a.method, a.uri) == (b.method, b.uri)
    if isinstance(a, Response) and isinstance(b, Response):
        assert (a.status, a.reason) == (b.status, b.reason)
    assert [h for h in a.headers if h[0] != "Content-Length"] == \
           [h for h in b.headers if h[0] != "Content-Length"]
    assert a.body == b.body


@given(messages())
@ROUND_TRIP
def test_generated_message_parses_to_what_was_generated(gen: Generated) -> None:
    message = parse_message(gen.data + gen.body)
    assert isinstance(message, Request if gen.is_request else Response)
    assert message.call_id == gen.call_id
    assert (message.cseq.seq, message.cseq.method) == (gen.cseq, gen.method)
    assert [v.branch for v in message.vias] == gen.via_branches
    assert message.from_.tag == gen.from_tag
    assert len(message.contacts) == gen.contacts
    assert message.body == gen.body
    if gen.authorization:  # §20.7: one value, commas and all
        assert message.headers.get_all("Authorization") == [gen.authorization]


@given(messages(with_length=False))
@ROUND_TRIP
def test_serializing_a_parsed_message_gives_an_equivalent_message(gen: Generated) -> None:
    first = parse_message(gen.data + gen.body)
    second = parse_message(first.to_bytes())
    assert_equivalent(first, second)
    assert second.content_length == len(second.body)
    assert second.to_bytes() == first.to_bytes()


HANDWRITTEN = [
    b"REGISTER sip:example.com SIP/2.0\r\n"
    b"v: SIP/2.0/UDP a;branch=z9hG4bK1;rport, SIP/2.0/UDP b;branch=z9hG4bK2\r\n"
    b"t: <sip:alice@example.com>\r\nf: <sip:alice@example.com>;tag=1\r\ni: reg1\r\n"
    b"CSeq: 1 REGISTER\r\nm: *\r\nExpires: 0\r\n"
    b'Authorization: Digest username="alice", realm="example.com", nonce="n,1"\r\n\r\n',
    b"SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK3;received=192.0.2.1;rport=5070\r\n"
    b'To: "Bob, Jr." <sip:bob@h>;tag=9\r\nFrom: sip:a@h;tag=8\r\nCall-ID: c\r\n'
    b"CSeq: 7 INVITE\r\nSubject: folded\r\n value\r\nX-Empty:\r\n"
    b'Contact: "a, b" <sip:a@h>, <sip:b@h>;q=0.1\r\nl: 3\r\n\r\nabcdef',
    b"OPTIONS sip:[2001:db8::1]:5061;transport=tls SIP/2.0\n"
    b"Via: SIP/2.0/TLS [2001:db8::2];branch=z9hG4bK4\nTo: <sips:x@[2001:db8::1]>\n"
    b"From: <tel:+15551234>;tag=t\nCall-ID: v6\nCSeq: 2 OPTIONS\n\n\x00\x01",
]


@pytest.mark.parametrize("data", HANDWRITTEN)
def test_handwritten_messages_survive_serialisation(data: bytes) -> None:
    """parse -> to_bytes -> parse is stable; Content-Length is always written (§18.3)."""
    first = parse_message(data)
    second = parse_message(first.to_bytes())
    assert_equivalent(first, second)
    assert second.to_bytes() == first.to_bytes()
    assert f"\r\nContent-Length: {len(first.body)}\r\n\r\n".encode() in first.to_bytes()


def frames_equal(a: list[Frame], b: list[Frame]) -> None:
    """Two frame lists carry the same messages, keepalives and errors."""
    assert [type(f) for f in a] == [type(f) for f in b]
    for x, y in zip(a, b, strict=True):
        if isinstance(x, Message) and isinstance(y, Message):
            assert_equivalent(x, y)
        elif isinstance(x, BadMessage) and isinstance(y, BadMessage):
            assert (x.raw, x.error.status_hint) == (y.raw, y.error.status_hint)
        else:
            assert x == y


@given(st.lists(messages() | st.sampled_from([b"\r\n\r\n", b"\r\n"]), min_size=1, max_size=4),
       st.data())
@STREAMS
def test_stream_framing_does_not_depend_on_how_bytes_arrive(
        items: list[Generated | bytes], data: st.DataObject) -> None:
    """§18.3 framing by Content-Length; RFC 5626 pings and pongs between messages."""
    stream = b"".join(i if isinstance(i, bytes) else i.data + i.body for i in items)
    whole = StreamParser().feed(stream)
    expected = [i for i in items if not isinstance(i, bytes)]
    assert [f.call_id for f in whole if isinstance(f, Message)] == [g.call_id for g in expected]
    frames_equal(whole, feed_chunks(stream, chunk_splits(data, len(stream))))


def chunk_splits(data: st.DataObject, size: int) -> list[int]:
    """Random cut points in a buffer of `size` bytes."""
    cuts = data.draw(st.lists(st.integers(0, size), max_size=8))
    return sorted(set(cuts))


def feed_chunks(stream: bytes, cuts: list[int]) -> list[Frame]:
    """Feed `stream` cut at `cuts`; return every frame."""
    parser = StreamParser()
    frames: list[Frame] = []
    start = 0
    for cut in [*cuts, len(stream)]:
        frames += parser.feed(stream[start:cut])
        start = cut
    return frames


# ---------------------------------------------------------------- robustness


def exercise(message: Message) -> None:
    """Touch every structured view; anything but `SipParseError` is a bug."""
    views: list[Callable[[], object]] = [
        lambda: message.vias, lambda: message.top_via, lambda: message.from_,
        lambda: message.to, lambda: message.cseq, lambda: message.call_id,
        lambda: message.contacts, lambda: message.is_star_contact, lambda: message.routes,
        lambda: message.record_routes, lambda: message.max_forwards, lambda: message.expires,
        lambda: message.content_length, lambda: message.content_type,
        lambda: message.tokens("Require"), lambda: message.tokens("Supported"),
        lambda: message.tokens("Allow"), message.start_line, message.to_bytes,
    ]
    for view in views:
        try:
            value = view()
        except SipParseError:
            continue
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, Via):
                str(item), item.branch, item.received, item.rport, item.wants_rport
            elif isinstance(item, NameAddr):
                str(item), item.tag, item.uri.aor, item.uri.transport
    if isinstance(message, Request):
        str(message.uri), message.uri.aor


def check_datagram(data: bytes) -> None:
    """parse_message raises only SipParseError; what parses survives serialisation."""
    try:
        message = parse_message(data)
    except SipParseError as exc:
        assert 400 <= exc.status_hint <= 599
        return
    exercise(message)
    assert_equivalent(message, parse_message(message.to_bytes()))


def check_stream(data: bytes, cuts: list[int]) -> None:
    """StreamParser raises only SipParseError, whole, byte by byte or in chunks."""
    results: list[list[Frame] | None] = []
    for chunks in (None, list(range(1, len(data))), cuts):
        try:
            frames = StreamParser().feed(data) if chunks is None else feed_chunks(data, chunks)
        except SipParseError:
            results.append(None)
            continue
        for frame in frames:
            if isinstance(frame, Message):
                exercise(frame)
            elif isinstance(frame, BadMessage):
                response = error_response(frame.raw, frame.error)
                if response is not None:
                    response.to_bytes()
            else:
                assert isinstance(frame, KeepAlive)
        results.append(frames)
    whole, *others = results
    for other in others:  # how the bytes arrive never changes the outcome
        if whole is None or other is None:
            assert other is None or whole is None
        else:
            frames_equal(whole, other)


@given(st.binary(max_size=300), st.data())
@FUZZ_BYTES
def test_arbitrary_bytes_raise_only_sip_parse_error(data: bytes, draw: st.DataObject) -> None:
    check_datagram(data)
    check_stream(data, chunk_splits(draw, len(data)))


SIP_INSERTS = [
    b"\r\n", b"\r", b"\n", b":", b'"', b"<", b">", b",", b";", b" ", b"\t", b"\\", b"%",
    b"@", b"?", b"=", b"*", b"/", b"[", b"]", b"\x00", b"\xff", b"\xc3", "\u00b2".encode(),
    "\u0663".encode(), b"\r\n ", b"\r\n\r\n", b"SIP/2.0", b"Content-Length: 5", b"l:",
    b"sip:", b"tel:", b"rport", b";branch=", b"*"]
WEIRD_NUMBERS = ["9" * 11, "4294967296", "65536", "256", "0", "1" + "0" * 5000, "0" * 30 + "7",
                 "-1", "+5", "1.5", "1e3", "\u00b2", "\u0663", "\uff11", "12\u00b2", " 7 "]
STRUCTURAL = frozenset(b"0123456789=:;,<>\"@ \t/?")


def mutate(data: bytes, rng: random.Random) -> bytes:
    """`data` with one to three structure-aware corruptions chosen by `rng`.

    A seeded `random.Random` picks them: Hypothesis favours small integers, which
    would put nearly every mutation at offset 0.
    """
    out = bytearray(data)
    for _ in range(rng.choice([1, 1, 2, 3])):
        op = rng.choice(["flip", "truncate", "dup", "delete", "insert", "insert", "number",
                         "renumber", "renumber"])
        spots = [i for i, b in enumerate(out) if b in STRUCTURAL]
        if spots and rng.random() < 0.6:  # near a delimiter or a digit, where parsers err
            pos = rng.choice(spots) + rng.randint(0, 1)
        else:
            pos = rng.randint(0, max(0, len(out) - 1))
        if op == "renumber":  # replace a whole run of digits
            runs = [m.span() for m in re.finditer(rb"[0-9]+", bytes(out))]
            if runs:
                start, end = rng.choice(runs)
                out[start:end] = rng.choice(WEIRD_NUMBERS).encode()
        elif op == "flip" and out:
            out[pos % len(out)] = rng.randint(0, 255)
        elif op == "truncate":
            del out[pos:]
        elif op in ("dup", "delete"):
            lines = bytes(out).split(b"\r\n")
            i = rng.randrange(len(lines))
            if op == "dup":
                lines.insert(i, lines[i])
            else:
                del lines[i]
            out = bytearray(b"\r\n".join(lines))
        elif op == "insert":
            out[pos:pos] = rng.choice(SIP_INSERTS)
        else:
            out[pos:pos] = rng.choice(WEIRD_NUMBERS).encode()
    return bytes(out)


seeds = st.integers(0, 2**32 - 1).map(random.Random)
# Cheap, varied starting points: every RFC 4475 torture message plus the handwritten ones.
VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "rfc4475"
SEED_MESSAGES = [p.read_bytes() for p in sorted(VECTORS.glob("*.dat"))] + HANDWRITTEN
mutated_seeds = st.builds(mutate, st.sampled_from(SEED_MESSAGES), seeds)
mutated_generated = st.builds(lambda gen, rng: mutate(gen.data + gen.body, rng), messages(),
                              seeds)
KEEPALIVE_BYTES = st.sampled_from([b"\r\n\r\n", b"\r\n", b"\r", b"\n"])


@given(mutated_seeds, st.data())
@FUZZ_SEEDS
def test_mutated_torture_messages_raise_only_sip_parse_error(data: bytes,
                                                             draw: st.DataObject) -> None:
    check_datagram(data)
    check_stream(data, chunk_splits(draw, len(data)))


@given(mutated_generated, st.data())
@FUZZ_GENERATED
def test_mutated_generated_messages_raise_only_sip_parse_error(data: bytes,
                                                               draw: st.DataObject) -> None:
    check_datagram(data)
    check_stream(data, chunk_splits(draw, len(data)))


@given(st.lists(mutated_seeds | st.sampled_from(SEED_MESSAGES) | KEEPALIVE_BYTES,
                min_size=2, max_size=5), st.data())
@FUZZ_STREAMS
def test_mutated_streams_frame_alike_however_they_arrive(items: list[bytes],
                                                         draw: st.DataObject) -> None:
    stream = b"".join(items)
    check_stream(stream, chunk_splits(draw, len(stream)))
