"""Answering one DNS query (wire bytes in, wire bytes out) from a `Zone`.

Authoritative only: names outside the domain are REFUSED (no recursion, never an open
resolver), unknown names in it get NXDOMAIN with the SOA, known names without the
asked type get an empty answer with the SOA (NODATA). A message that does not parse is
answered FORMERR when it has at least a header (its ID is kept), else dropped; a
response (QR set) is dropped (no reflection loops). `answer` never raises; its `count`
callback hears of every query as (type label, rcode label) for the metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from trimaran.roles.dns.zone import SRV, Zone

log = logging.getLogger("trimaran.dns")

UDP_PAYLOAD = 512
MAX_UDP_PAYLOAD = 4096
TCP_PAYLOAD = 65535
_HEADER = 12
#: Query types that get their own label value; others count as "other", a query
#: whose question could not be read as "none".
COUNTED_TYPES = frozenset({"A", "AAAA", "ANY", "CNAME", "MX", "NAPTR", "NS", "PTR", "SOA",
                           "SRV", "TXT"})
#: The rcode label of a query that got no answer (dropped).
DROPPED = "dropped"

QueryCounter = Callable[[str, str], None]


def _formerr(wire: bytes) -> bytes | None:
    if len(wire) < _HEADER or wire[2] & 0x80:
        return None  # not even a header, or a response: drop
    reply = dns.message.Message(id=int.from_bytes(wire[:2], "big"))
    reply.flags = dns.flags.QR
    reply.set_rcode(dns.rcode.FORMERR)
    return reply.to_wire()


def answer(zone: Zone, wire: bytes, tcp: bool = False,
           count: QueryCounter | None = None) -> bytes | None:
    """The response to the query `wire`, None when it is to be dropped."""
    reply, qtype = _respond(zone, wire, tcp)
    if count is not None:
        count(qtype, dns.rcode.to_text(dns.rcode.Rcode.make(reply[3] & 0x0F))
              if reply is not None else DROPPED)
    return reply


def _respond(zone: Zone, wire: bytes, tcp: bool) -> tuple[bytes | None, str]:
    """(the response or None, the query type label)."""
    try:
        query = dns.message.from_wire(wire)
    except dns.exception.DNSException:
        return _formerr(wire), "none"
    except Exception:  # dnspython raises a few non-DNSException errors on garbage
        log.debug("unparseable query", exc_info=True)
        return _formerr(wire), "none"
    qtype = _type_label(query)
    try:
        return _answer(zone, query, tcp), qtype
    except Exception:
        log.exception("failed to answer a query")
        return _formerr(wire), qtype


def _type_label(query: dns.message.Message) -> str:
    if len(query.question) != 1:
        return "none"
    name = dns.rdatatype.to_text(query.question[0].rdtype)
    return name if name in COUNTED_TYPES else "other"


def _answer(zone: Zone, query: dns.message.Message, tcp: bool) -> bytes | None:
    if query.flags & dns.flags.QR:
        return None
    response = dns.message.make_response(query)
    response.flags &= ~dns.flags.RA
    if query.opcode() != dns.opcode.QUERY:
        response.set_rcode(dns.rcode.NOTIMP)
        return response.to_wire()
    if len(query.question) != 1:
        response.set_rcode(dns.rcode.FORMERR)
        return response.to_wire()
    question = query.question[0]
    name = question.name.canonicalize()
    if question.rdclass not in (dns.rdataclass.IN, dns.rdataclass.ANY) \
            or not name.is_subdomain(zone.origin):
        response.set_rcode(dns.rcode.REFUSED)
        return response.to_wire()
    response.flags |= dns.flags.AA
    _fill(zone, response, name, question.rdtype)
    edns = query.payload if query.edns >= 0 else 0
    limit = TCP_PAYLOAD if tcp else min(max(UDP_PAYLOAD, edns), MAX_UDP_PAYLOAD)
    try:
        return response.to_wire(max_size=limit)
    except dns.exception.TooBig:
        response.answer.clear()
        response.authority.clear()
        response.additional.clear()
        response.flags |= dns.flags.TC
        return response.to_wire(max_size=limit)


def _fill(zone: Zone, response: dns.message.Message, name: dns.name.Name,
          rdtype: dns.rdatatype.RdataType) -> None:
    if name not in zone.names:
        response.set_rcode(dns.rcode.NXDOMAIN)
        response.authority.append(zone.soa)
        return
    if rdtype == dns.rdatatype.ANY:
        found = zone.of_name(name)
    else:
        rrset = zone.get(name, rdtype)
        found = [rrset] if rrset is not None else []
    if not found:
        response.authority.append(zone.soa)
        return
    response.answer.extend(found)
    for rrset in found:
        if rrset.rdtype == SRV:
            _glue(zone, response, rrset)


def _glue(zone: Zone, response: dns.message.Message, srv: dns.rrset.RRset) -> None:
    seen: set[dns.name.Name] = set()
    for rdata in srv:
        target = rdata.target
        if target in seen:
            continue
        seen.add(target)
        for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            glue = zone.get(target, rdtype)
            if glue is not None:
                response.additional.append(glue)
