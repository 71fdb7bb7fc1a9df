"""How many SIP messages per second `trimaran.sip.parser.parse_message` handles.

Measures a typical REGISTER (with digest credentials) and a typical INVITE (with
an SDP body), each parsed by

* ours: `parse_message`, which also validates the mandatory headers, and
* a naive baseline measured in the same run: split head and body at the blank
  line, split the head into lines, split each line at the first colon into a
  dict. It checks nothing; it is the floor any real parser is compared with.

It also times `Message.to_bytes()`. Each figure is the best of several runs of
N iterations, N chosen so that one run takes about half a second.

Run: `.venv/bin/python bench/sip_parse.py` or `./run bench sip_parse`; the table
is printed and written as markdown to bench/results/sip_parse.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_model

from trimaran.sip.message import Message
from trimaran.sip.parser import parse_message

REGISTER = (
    b"REGISTER sip:registrar.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-524287-1---a4c8e1d2f3b4;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"Contact: <sip:alice@192.0.2.10:5060;rinstance=6f8e2c1a9b3d;transport=udp>"
    b';+sip.instance="<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>";reg-id=1\r\n'
    b"To: <sip:alice@example.com>\r\n"
    b"From: <sip:alice@example.com>;tag=37f1a2b9\r\n"
    b"Call-ID: NmQ4YjM2ZTRkZjE1YTk2ZWU0MGFkOGFiNjlmMzY1ZjQ.\r\n"
    b"CSeq: 2 REGISTER\r\n"
    b"Expires: 3600\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, NOTIFY, REFER, MESSAGE, OPTIONS, INFO, SUBSCRIBE\r\n"
    b"Supported: replaces, outbound, path, gruu\r\n"
    b"User-Agent: Trimaran-Bench/1.0\r\n"
    b'Authorization: Digest username="alice",realm="example.com",'
    b'nonce="5f2e8c3b9a1d4e7f0c6b2a8d3e9f1c4b",uri="sip:registrar.example.com",'
    b'response="7a3c9e1b5d8f2a4c6e0b9d7f1a3c5e8b",cnonce="9b8d7c6e",nc=00000001,qop=auth,'
    b"algorithm=MD5\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

SDP = (
    b"v=0\r\n"
    b"o=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.0.2.10\r\n"
    b"t=0 0\r\n"
    b"m=audio 49170 RTP/AVP 0 8 101\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-16\r\n"
    b"a=ptime:20\r\n"
    b"a=sendrecv\r\n"
)

INVITE = (
    b"INVITE sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-524287-1---77ab3c9d1e2f;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"Contact: <sip:alice@192.0.2.10:5060;transport=udp>\r\n"
    b'To: "Bob" <sip:bob@example.com>\r\n'
    b'From: "Alice" <sip:alice@example.com>;tag=9fxced76sl\r\n'
    b"Call-ID: 3848276298220188511@atlanta.example.com\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Route: <sip:proxy.example.com;lr>\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, NOTIFY, REFER, MESSAGE, OPTIONS, INFO, SUBSCRIBE\r\n"
    b"Supported: replaces, timer, 100rel\r\n"
    b"Session-Expires: 1800\r\n"
    b"User-Agent: Trimaran-Bench/1.0\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(SDP)).encode() + b"\r\n"
    b"\r\n" + SDP
)

MESSAGES = {"REGISTER (digest Authorization)": REGISTER, "INVITE (SDP body)": INVITE}
RESULTS = Path(__file__).resolve().parent / "results" / "sip_parse.md"


def naive_parse(data: bytes) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """The baseline: blank-line split, line split, colon split into a dict. No checks."""
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, value = line.split(b":", 1)
        headers[name] = value
    return lines[0], headers, body


def timed(call: Callable[[], object], n: int) -> float:
    """Seconds taken by `n` calls."""
    start = time.perf_counter()
    for _ in range(n):
        call()
    return time.perf_counter() - start


def rate(call: Callable[[], object], runs: int, target: float) -> float:
    """Best calls per second over `runs` runs of about `target` seconds each."""
    n = 64
    while (elapsed := timed(call, n)) < target / 10:
        n *= 2
    n = max(1, int(n * target / elapsed))
    return max(n / timed(call, n) for _ in range(runs))


def machine() -> list[tuple[str, str]]:
    """Facts about where the numbers were taken."""
    return [
        ("host", platform.node()),
        ("CPU", cpu_model()),
        ("nproc", str(os.cpu_count())),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("OS", platform.platform()),
        ("load average at start (1/5/15 min)", " ".join(f"{x:.2f}" for x in os.getloadavg())),
        ("date", datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")),
    ]


def measure(runs: int, target: float) -> list[tuple[str, int, float, float, float]]:
    """(message, size, ours msg/s, baseline msg/s, to_bytes msg/s) for each message."""
    rows = []
    for name, data in MESSAGES.items():
        message: Message = parse_message(data)
        assert naive_parse(data)[2] == message.body
        ours = rate(partial(parse_message, data), runs, target)
        base = rate(partial(naive_parse, data), runs, target)
        out = rate(message.to_bytes, runs, target)
        rows.append((name, len(data), ours, base, out))
    return rows


def table(rows: list[tuple[str, int, float, float, float]]) -> list[str]:
    """The results as markdown table lines."""
    lines = ["| message | bytes | ours (parse_message) msg/s | baseline (naive split) msg/s "
             "| ratio baseline/ours | to_bytes() msg/s |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, size, ours, base, out in rows:
        lines.append(f"| {name} | {size} | {ours:,.0f} | {base:,.0f} | {base / ours:.1f}x "
                     f"| {out:,.0f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per figure (best is kept)")
    parser.add_argument("--seconds", type=float, default=0.5, help="target length of one run")
    parser.add_argument("--output", type=Path, default=RESULTS, help="markdown file to write")
    args = parser.parse_args()

    facts = machine()  # before measuring, so the load average is not our own
    rows = measure(args.runs, args.seconds)
    lines = table(rows)
    print("\n".join(lines))
    report = [
        "# SIP parse benchmark",
        "",
        "Generated by `bench/sip_parse.py` (`./run bench sip_parse`). Messages per second,",
        f"best of {args.runs} runs of about {args.seconds} s each, one thread.",
        "",
        *lines,
        "",
        "*ours*: `trimaran.sip.parser.parse_message`, which frames the body by Content-Length,",
        "unfolds and splits the headers and validates Via, From, To, Call-ID, CSeq, Contact,",
        "Max-Forwards and Expires. *baseline*: split at the blank line, split the head into",
        "lines, split each line at the first colon into a dict, no checks at all, measured in",
        "the same run. *to_bytes()*: serialising the already parsed message.",
        "URIs, name-addrs, Vias and CSeqs are memoised by their text (they are immutable),",
        "so parsing the same message again reuses them: this measures a warm cache, as a",
        "server sees for the From/To/Via of a dialog, not a stream of all-new addresses.",
        "",
        "## Machine",
        "",
        *(f"- {key}: {value}" for key, value in facts),
        "",
    ]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(report), encoding="utf-8")
    print("\n".join(f"{key}: {value}" for key, value in facts))
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
