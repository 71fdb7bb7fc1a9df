"""Finding a domain's SIP servers through DNS (RFC 3263 §4), as a real client does.

`resolve_servers` asks one DNS server (normally the deployment's dns role of the
client's site) for ``_sip._<transport>.<domain>`` SRV records, orders them by
priority and, within a priority, by RFC 2782 weighted random selection, and looks up
the A/AAAA records of each target (the additional section is not trusted: each target
is asked for). Without SRV records it falls back to the domain's own A/AAAA records
on port 5060 (RFC 3263 §4.2). NAPTR is not used (optional in RFC 3263 when the
client supports one transport at a time).

A remote client asks the deployment's external dns view (EDGE-2): the same lookup then
gives the Edge servers' external endpoints, Edge pool by Edge pool in SRV priority
order (weighted random within a pool), so a `UserAgent` given that list moves on to the
next Edge pool when every server of one fails. `resolve_federation` finds a partner
domain's federation Edge servers from ``_sipfederationtls._tcp`` (EDGE-3); it has no
address fallback (a domain without that SRV does not offer open federation).
"""

from __future__ import annotations

import random

import dns.asyncresolver
import dns.exception
import dns.rdatatype
import dns.resolver

from trimaran.net.transport import Address

DEFAULT_PORT = 5060
FEDERATION_SRV = "_sipfederationtls._tcp"
_NO_ANSWER = (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer)


class ResolveError(Exception):
    """The domain has no usable SIP server in DNS, or the DNS server did not answer."""


def _resolver(dns_server: tuple[str, int], timeout: float) -> dns.asyncresolver.Resolver:
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = [dns_server[0]]
    resolver.port = dns_server[1]
    resolver.timeout = resolver.lifetime = timeout
    resolver.cache = None
    return resolver


def order_srv(records: list[tuple[int, int, int, str]],
              rng: random.Random | None = None) -> list[tuple[int, int, int, str]]:
    """(priority, weight, port, target) records in RFC 2782 order: ascending priority,
    weighted random within a priority (zero weights last)."""
    rng = rng or random.Random()
    ordered: list[tuple[int, int, int, str]] = []
    for priority in sorted({r[0] for r in records}):
        group = sorted((r for r in records if r[0] == priority), key=lambda r: r[1])
        while group:
            total = sum(r[1] for r in group)
            if total == 0:
                ordered.extend(group)
                break
            pick, running = rng.uniform(0, total), 0
            for index, record in enumerate(group):
                running += record[1]
                if running >= pick and record[1] > 0:
                    ordered.append(group.pop(index))
                    break
    return ordered


async def _addresses(resolver: dns.asyncresolver.Resolver, name: str) -> list[str]:
    found: list[str] = []
    for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
        try:
            answer = await resolver.resolve(name, rdtype)
        except _NO_ANSWER:
            continue
        found.extend(rdata.address for rdata in answer)
    return found


async def _srv_targets(resolver: dns.asyncresolver.Resolver, qname: str,
                       rng: random.Random | None) -> list[tuple[str, int]]:
    """(host, port) of the SRV records of `qname` in RFC 2782 order, each target's
    addresses in turn, without repeats. Raises NXDOMAIN/NoAnswer when there is no SRV."""
    srv = await resolver.resolve(qname, dns.rdatatype.SRV)
    records = [(r.priority, r.weight, r.port, r.target.to_text()) for r in srv]
    found: list[tuple[str, int]] = []
    for _, _, port, target in order_srv(records, rng):
        if target == ".":
            continue
        for host in await _addresses(resolver, target):
            if (host, port) not in found:
                found.append((host, port))
    return found


def _failed(domain: str, dns_server: tuple[str, int], exc: Exception) -> ResolveError:
    return ResolveError(f"DNS lookup of {domain} via {dns_server[0]}:{dns_server[1]} "
                        f"failed: {exc}")


async def resolve_servers(domain: str, dns_server: tuple[str, int], transport: str = "tcp",
                          timeout: float = 2.0,
                          rng: random.Random | None = None) -> tuple[Address, ...]:
    """The servers to try for `domain` over `transport` ("udp" or "tcp"), in order.

    Raises `ResolveError` when DNS gives nothing usable or does not answer.
    """
    if transport not in ("udp", "tcp"):
        raise ValueError(f"unsupported transport {transport!r}")
    resolver = _resolver(dns_server, timeout)
    try:
        try:
            found = await _srv_targets(resolver, f"_sip._{transport}.{domain}", rng)
        except _NO_ANSWER:
            hosts = await _addresses(resolver, domain)
            if not hosts:
                raise ResolveError(f"{domain} has neither SIP SRV nor address records") \
                    from None
            return tuple(Address(transport, host, DEFAULT_PORT) for host in hosts)
    except dns.exception.DNSException as exc:
        raise _failed(domain, dns_server, exc) from exc
    if not found:
        raise ResolveError(f"no address for any SRV target of {domain}")
    return tuple(Address(transport, host, port) for host, port in found)


async def resolve_federation(domain: str, dns_server: tuple[str, int], timeout: float = 2.0,
                             rng: random.Random | None = None) -> list[tuple[str, int]]:
    """The (host, port) of `domain`'s federation Edge servers to try, in order: its
    ``_sipfederationtls._tcp`` SRV records by priority, then weight (EDGE-3).

    Raises `ResolveError` when the domain has no such SRV record or no address for any
    of its targets, or when DNS does not answer.
    """
    resolver = _resolver(dns_server, timeout)
    try:
        found = await _srv_targets(resolver, f"{FEDERATION_SRV}.{domain}", rng)
    except _NO_ANSWER:
        raise ResolveError(f"{domain} publishes no {FEDERATION_SRV} record: it does not "
                           f"federate") from None
    except dns.exception.DNSException as exc:
        raise _failed(domain, dns_server, exc) from exc
    if not found:
        raise ResolveError(f"no address for any federation SRV target of {domain}")
    return found
