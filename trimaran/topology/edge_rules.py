"""Topology rules about what the outside sees of the Edge (TOP-2, EDGE-1, EDGE-3).

Same contract as `trimaran.topology.rules`: each check takes `Facts`, yields one
violation per offending element with its path, and skips what another rule reports
(unknown pool names are `check_references`' business; a federation route that is
not an Edge pool is `pool_rules.check_edge`'s).

- An Edge server has an external address (an IP literal), where remote users and
  federated partners reach it, and optionally an external SIP port (default: its
  SIP port); no other server has either. Every external endpoint is unique and
  distinct from every internal listener of the deployment.
- `federation: true` marks the Edge pools that may carry federation; the
  federation route (EDGE-3) is one of them.
- Federated partners are distinct domains, not ours, each with at least one Edge
  endpoint written ``"ip:port"`` (``"[v6]:port"``).

`check_edge_external` runs them all (one entry of the rule table).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from trimaran.topology.errors import Violation
from trimaran.topology.model import Endpoint, PoolRole, parse_ip
from trimaran.topology.rules import Facts, IpAddress, error, listeners, pool_path, warning

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})+")
_HOST_PORT_RE = re.compile(
    r"\[(?P<v6>[^\]]+)\]:(?P<port6>\d{1,5})|(?P<v4>[^:\[\]]+):(?P<port>\d{1,5})")


def parse_host_port(text: str) -> Endpoint | None:
    """``"192.0.2.1:5061"`` or ``"[2001:db8::1]:5061"`` as an `Endpoint`; None unless the
    host is an IP literal and the port is in 1..65535."""
    match = _HOST_PORT_RE.fullmatch(text)
    if match is None:
        return None
    host = match["v6"] or match["v4"]
    port = int(match["port6"] or match["port"])
    ip = parse_ip(host)
    if ip is None or (ip.version == 6) != (match["v6"] is not None) or not 1 <= port <= 65535:
        return None
    return Endpoint(str(ip), port)


def check_edge_external(facts: Facts) -> Iterator[Violation]:
    """Every Edge rule about external endpoints, federation and partners."""
    yield from check_external_addresses(facts)
    yield from check_external_clashes(facts)
    yield from check_federation(facts)
    yield from check_partners(facts)
    yield from check_dns_views(facts)


def check_dns_views(facts: Facts) -> Iterator[Violation]:
    """`dns_view` is "internal" or "external", set only on dns pools; an external view
    needs an Edge server with an external address to publish (EDGE-2)."""
    t = facts.topology
    edges = any(s.external_address for p in t.pools if p.role is PoolRole.EDGE
                for s in p.servers)
    for i, pool in enumerate(t.pools):
        if pool.dns_view not in ("internal", "external"):
            yield error(f"{pool_path(i)}.dns_view",
                        f"{pool.dns_view!r} is not one of: internal, external")
        elif pool.dns_view != "internal" and pool.role is not PoolRole.DNS:
            yield error(f"{pool_path(i)}.dns_view",
                        f"dns_view does not apply to a {pool.role} pool (only: dns)")
        elif pool.dns_view == "external" and not edges:
            yield error(f"{pool_path(i)}.dns_view", "an external dns view publishes the Edge "
                        "pools, and no Edge server has an external_address")


def check_external_addresses(facts: Facts) -> Iterator[Violation]:
    """`external_address`/`external_port` only on servers of Edge pools, required there;
    the address is an IP literal a server can bind, the port in 1..65535 (EDGE-1)."""
    for placed in facts.placed_servers:
        server, path = placed.server, placed.path
        if placed.pool.role is not PoolRole.EDGE:
            for key in ("external_address", "external_port"):
                if getattr(server, key) is not None:
                    yield error(f"{path}.{key}", f"{key} does not apply to a server of a "
                                f"{placed.pool.role} pool (only: edge)")
            continue
        if server.external_address is None:
            yield error(f"{path}.external_address",
                        f"Edge server {server.name} needs an external_address, where remote "
                        f"users and federated partners reach it (EDGE-1)")
        else:
            ip = parse_ip(server.external_address)
            if ip is None:
                yield error(f"{path}.external_address", f"{server.external_address!r} is not "
                            f"an IP address literal (external SIP of server {server.name})")
            elif ip.is_unspecified or ip.is_multicast:
                yield error(f"{path}.external_address", f"{server.external_address} cannot be "
                            f"a server's own address (external SIP of server {server.name})")
        port = server.external_port
        if port is not None and not 1 <= port <= 65535:
            yield error(f"{path}.external_port", f"port {port} is not in 1..65535 "
                        f"(external SIP of server {server.name})")


def check_external_clashes(facts: Facts) -> Iterator[Violation]:
    """No two Edge servers share an external endpoint, and none is also an internal
    listener (SIP, admin, DNS, database, witness) of the deployment."""
    seen: dict[tuple[IpAddress, int], str] = {}
    for listener in listeners(facts):
        if listener.ip is not None and listener.port is not None:
            seen.setdefault((listener.ip, listener.port), f"{listener.what} at {listener.path}")
    for placed in facts.placed_servers:
        server = placed.server
        endpoint = server.external_endpoint
        ip = parse_ip(endpoint.host) if endpoint is not None else None
        if placed.pool.role is not PoolRole.EDGE or endpoint is None or ip is None:
            continue
        key = "external_port" if server.external_port is not None else "external_address"
        path = f"{placed.path}.{key}"
        first = seen.get((ip, endpoint.port))
        if first is not None:
            yield error(path, f"{endpoint} (external SIP of server {server.name}) is already "
                        f"used by {first}")
        else:
            seen[(ip, endpoint.port)] = f"external SIP of server {server.name} at {path}"


def check_federation(facts: Facts) -> Iterator[Violation]:
    """`federation` is set on Edge pools only; the federation route is a
    federation-enabled Edge pool (EDGE-3); a route with no partner is a warning;
    partners without a federation-enabled Edge pool an error, without a route a
    warning."""
    t = facts.topology
    for i, pool in enumerate(t.pools):
        if pool.federation and pool.role is not PoolRole.EDGE:
            yield error(f"{pool_path(i)}.federation",
                        f"federation does not apply to a {pool.role} pool (only: edge)")
    route = facts.pool(t.federation_route)
    if route is not None and route.role is PoolRole.EDGE and not route.federation:
        yield error("federation_route", f"Edge pool {route.name} is not federation-enabled; "
                    f"set federation: true on it to make it the federation route (EDGE-3)")
    if route is not None and route.role is PoolRole.EDGE and not t.federation_partners:
        yield warning("federation_route", f"federation route {route.name} is set but "
                      f"no federation_partners are declared: no domain can federate with us")
    enabled = [p.name for p in t.pools if p.role is PoolRole.EDGE and p.federation]
    if t.federation_partners and not enabled:
        yield error("federation_partners", "federation partners are declared but no Edge pool "
                    "has federation: true; federation needs one (EDGE-3)")
    elif t.federation_partners and t.federation_route is None:
        yield warning("federation_partners", f"federation partners are declared but no "
                      f"federation_route: outbound federation has no Edge pool (set it to one "
                      f"of: {', '.join(enabled)})")


def check_partners(facts: Facts) -> Iterator[Violation]:
    """Partner domains are domain names, unique (ignoring case) and not our SIP domain;
    each partner lists at least one Edge endpoint ``"ip:port"``, each once."""
    ours = facts.topology.sip_domain.casefold()
    seen: dict[str, str] = {}
    for i, partner in enumerate(facts.topology.federation_partners):
        path = f"federation_partners[{i}]"
        domain = partner.domain.casefold()
        if _DOMAIN_RE.fullmatch(partner.domain) is None or len(partner.domain) > 253:
            yield error(f"{path}.domain", f"{partner.domain!r} is not a domain name")
        elif domain == ours:
            yield error(f"{path}.domain", f"{partner.domain} is our own SIP domain; a partner "
                        f"is another domain")
        elif domain in seen:
            yield error(f"{path}.domain", f"partner domain {partner.domain} is listed twice "
                        f"(first at {seen[domain]})")
        seen.setdefault(domain, f"{path}.domain")
        if not partner.edges:
            yield error(f"{path}.edges", f"partner {partner.domain} needs at least one Edge "
                        f"endpoint \"ip:port\"")
        endpoints: set[str] = set()
        for k, text in enumerate(partner.edges):
            endpoint = parse_host_port(text)
            if endpoint is None:
                yield error(f"{path}.edges[{k}]", f"{text!r} is not \"ip:port\" (an IP literal, "
                            f"IPv6 in brackets, and a port in 1..65535)")
            elif str(endpoint) in endpoints:
                yield error(f"{path}.edges[{k}]", f"{text} is listed twice")
            else:
                endpoints.add(str(endpoint))


__all__ = [
    "check_edge_external",
    "check_external_addresses",
    "check_external_clashes",
    "check_federation",
    "check_partners",
    "parse_host_port",
]
