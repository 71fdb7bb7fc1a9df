"""Record generation and query answering of the dns role (no sockets)."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.dns.topo import DOMAIN, TEXT, topology
from trimaran.roles.dns.handler import answer
from trimaran.roles.dns.zone import Zone, build_zone


def everyone(name: str) -> bool:
    return True


def ask(zone: Zone, name: str, rdtype: str) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    wire = answer(zone, query.to_wire())
    assert wire is not None
    return dns.message.from_wire(wire)


def addresses(reply: dns.message.Message) -> set[str]:
    return {r.address for rrset in reply.answer for r in rrset}


def srv(reply: dns.message.Message) -> set[tuple[int, int, int, str]]:
    return {(r.priority, r.weight, r.port, r.target.to_text()) for rrset in reply.answer
            for r in rrset}


def test_srv_prefers_the_answering_servers_own_site() -> None:
    dc1, dc2 = (build_zone(topology(), site, everyone) for site in ("dc1", "dc2"))
    for service in ("_sip._tcp", "_sip._udp"):
        assert srv(ask(dc1, f"{service}.{DOMAIN}", "SRV")) == {
            (10, 10, 5160, "fe1a.trimaran.test."), (10, 10, 5161, "fe1b.trimaran.test."),
            (20, 10, 5170, "se2.trimaran.test.")}
        assert srv(ask(dc2, f"{service}.{DOMAIN}", "SRV")) == {
            (20, 10, 5160, "fe1a.trimaran.test."), (20, 10, 5161, "fe1b.trimaran.test."),
            (10, 10, 5170, "se2.trimaran.test.")}


def test_srv_answers_carry_glue_a_records_and_a_short_ttl() -> None:
    reply = ask(build_zone(topology(), "dc1", everyone), f"_sip._tcp.{DOMAIN}", "SRV")
    assert reply.flags & dns.flags.AA
    assert not reply.flags & dns.flags.RA
    assert reply.answer[0].ttl == 5
    glue = {r.address for rrset in reply.additional for r in rrset}
    assert glue == {"127.0.16.11", "127.0.16.12", "127.0.16.21"}


def test_srv_targets_are_directors_when_there_are_director_pools() -> None:
    text = TEXT + """\
  - name: dir1
    site: dc2
    role: director
    servers: [{name: dir1a, address: 127.0.16.41, sip_port: 5180, admin_port: 8180}]
"""
    zone = build_zone(topology(text), "dc1", everyone)
    assert srv(ask(zone, f"_sip._tcp.{DOMAIN}", "SRV")) == {(20, 10, 5180, "dir1a.trimaran.test.")}


def test_a_records_for_servers_pools_and_the_domain() -> None:
    zone = build_zone(topology(), "dc1", everyone)
    assert addresses(ask(zone, f"fe1b.{DOMAIN}", "A")) == {"127.0.16.12"}
    assert addresses(ask(zone, f"ns2.{DOMAIN}", "A")) == {"127.0.16.52"}
    assert addresses(ask(zone, f"fe1.{DOMAIN}", "A")) == {"127.0.16.11", "127.0.16.12"}
    assert addresses(ask(zone, f"FE1.{DOMAIN.upper()}", "A")) == {"127.0.16.11", "127.0.16.12"}
    assert addresses(ask(zone, DOMAIN, "A")) == {"127.0.16.11", "127.0.16.12", "127.0.16.21"}


def test_unhealthy_servers_leave_pool_domain_and_srv_answers() -> None:
    zone = build_zone(topology(), "dc1", lambda name: name != "fe1a")
    assert addresses(ask(zone, f"fe1.{DOMAIN}", "A")) == {"127.0.16.12"}
    assert addresses(ask(zone, DOMAIN, "A")) == {"127.0.16.12", "127.0.16.21"}
    assert {t for *_, t in srv(ask(zone, f"_sip._tcp.{DOMAIN}", "SRV"))} == {
        "fe1b.trimaran.test.", "se2.trimaran.test."}
    # A server's own name still resolves: it designates one machine.
    assert addresses(ask(zone, f"fe1a.{DOMAIN}", "A")) == {"127.0.16.11"}


def test_an_answer_with_no_healthy_server_is_answered_with_all_of_them() -> None:
    zone = build_zone(topology(), "dc1", lambda name: name not in ("fe1a", "fe1b"))
    assert addresses(ask(zone, f"fe1.{DOMAIN}", "A")) == {"127.0.16.11", "127.0.16.12"}
    # A dead pool drops out of SRV and the domain while another pool is healthy ...
    assert srv(ask(zone, f"_sip._tcp.{DOMAIN}", "SRV")) == {(20, 10, 5170, "se2.trimaran.test.")}
    assert addresses(ask(zone, DOMAIN, "A")) == {"127.0.16.21"}
    # ... and when nothing is healthy, everything is answered rather than nothing.
    nobody = build_zone(topology(), "dc1", lambda name: False)
    assert len(srv(ask(nobody, f"_sip._tcp.{DOMAIN}", "SRV"))) == 3
    assert len(addresses(ask(nobody, DOMAIN, "A"))) == 3


def test_unknown_names_are_nxdomain_with_soa_and_outside_names_refused() -> None:
    zone = build_zone(topology(), "dc1", everyone)
    reply = ask(zone, f"nobody.{DOMAIN}", "A")
    assert reply.rcode() == dns.rcode.NXDOMAIN
    assert reply.authority[0].rdtype == dns.rdatatype.SOA
    for tls in ("_sips._tcp", "_sipinternaltls._tcp"):
        assert ask(zone, f"{tls}.{DOMAIN}", "SRV").rcode() == dns.rcode.NXDOMAIN
    refused = ask(zone, "example.com", "A")
    assert refused.rcode() == dns.rcode.REFUSED
    assert not refused.answer
    assert ask(zone, "test", "A").rcode() == dns.rcode.REFUSED


def test_known_names_without_the_type_are_nodata_and_empty_non_terminals_exist() -> None:
    zone = build_zone(topology(), "dc1", everyone)
    nodata = ask(zone, f"fe1a.{DOMAIN}", "MX")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
    assert ask(zone, f"_tcp.{DOMAIN}", "A").rcode() == dns.rcode.NOERROR
    apex = ask(zone, DOMAIN, "NS")
    assert {r.target.to_text() for r in apex.answer[0]} == {
        "ns1.trimaran.test.", "ns2.trimaran.test."}
    assert ask(zone, DOMAIN, "SOA").answer


def test_responses_and_garbage_are_dropped_or_formerr() -> None:
    zone = build_zone(topology(), "dc1", everyone)
    assert answer(zone, b"") is None
    assert answer(zone, b"\x01\x02\x03") is None
    response = dns.message.make_response(dns.message.make_query(DOMAIN, "A"))
    assert answer(zone, response.to_wire()) is None
    garbage = b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xff"
    wire = answer(zone, garbage)
    assert wire is not None
    reply = dns.message.from_wire(wire)
    assert reply.id == 0xABCD and reply.rcode() == dns.rcode.FORMERR


ZONE = build_zone(topology(), "dc1", everyone)
QUERY = dns.message.make_query(f"_sip._tcp.{DOMAIN}", "SRV", use_edns=0).to_wire()


@settings(max_examples=1500, deadline=None)
@given(st.one_of(
    st.binary(max_size=600),
    st.builds(lambda cut, tail: QUERY[:cut] + tail,
              st.integers(0, len(QUERY)), st.binary(max_size=40)),
    st.builds(lambda pos, byte: QUERY[:pos] + bytes([byte]) + QUERY[pos + 1:],
              st.integers(0, len(QUERY) - 1), st.integers(0, 255)),
))
def test_fuzzed_queries_never_raise(wire: bytes) -> None:
    for tcp in (False, True):
        reply = answer(ZONE, wire, tcp=tcp)
        if reply is not None:
            dns.message.from_wire(reply)  # whatever we send is well-formed DNS
