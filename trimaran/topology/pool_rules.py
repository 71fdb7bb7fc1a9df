"""Topology rules about pools and their roles (TOP-2, DR-1, FE-6, BE, PC-2, PC-3, METRO-1,
EV-1).

Same contract as `trimaran.topology.rules`: each rule takes `Facts`, yields one
violation per offending element with its path, and skips what another rule
reports (unknown names are `check_references`' business).
"""

from __future__ import annotations

from collections.abc import Iterator

from trimaran.topology.errors import Violation
from trimaran.topology.model import (
    MAX_CHAT_ACTIVE_SERVERS,
    MAX_CHAT_SERVERS,
    MAX_FRONTEND_SERVERS,
    MAX_SBAS_PER_BRANCH,
    METRO_RTT_LIMIT_MS,
    Capacity,
    DatabaseEndpoint,
    Edition,
    Pool,
    PoolRole,
    SiteKind,
    parse_ip,
)
from trimaran.topology.rules import (
    Facts,
    IpAddress,
    error,
    listeners,
    pool_path,
    server_path,
    warning,
)

FE, DIR, EDGE, SBA, CHAT, MEDIATION = (
    PoolRole.FRONTEND, PoolRole.DIRECTOR, PoolRole.EDGE, PoolRole.SBA, PoolRole.CHAT,
    PoolRole.MEDIATION,
)

# Which roles may set each role-specific pool field.
ROLE_FIELDS: dict[str, frozenset[PoolRole]] = {
    "edition": frozenset({FE}),
    "paired_with": frozenset({FE}),
    "auto_failover": frozenset({FE}),
    "backup_registrar": frozenset({FE, SBA}),
    "backend": frozenset({FE, CHAT}),
    "capacity": frozenset({FE}),
    "expected_users": frozenset({FE}),
    "edge_pool": frozenset({FE}),
    "next_hop": frozenset({EDGE, MEDIATION}),
    "active_servers": frozenset({CHAT}),
    "log_shipping": frozenset({CHAT}),
}
# How a field is named in messages when its file key differs from the model's.
_SHOWN_AS = {"paired_with": "backup_pool (paired_with)"}
_CENTRAL_ONLY = frozenset({FE, DIR, EDGE, CHAT})


def _is_set(pool: Pool, name: str) -> bool:
    value = getattr(pool, name)
    if isinstance(value, bool):
        return value
    return value != Capacity() if name == "capacity" else value is not None


def _roles(roles: frozenset[PoolRole]) -> str:
    return ", ".join(sorted(r.value for r in roles))


def check_role_fields(facts: Facts) -> Iterator[Violation]:
    """A role-specific field is set only on the roles it applies to; a Front End pool
    declares its edition."""
    for i, pool in enumerate(facts.topology.pools):
        for name, roles in ROLE_FIELDS.items():
            if pool.role not in roles and _is_set(pool, name):
                yield error(f"{pool_path(i)}.{name}",
                            f"{_SHOWN_AS.get(name, name)} does not apply to a {pool.role} "
                            f"pool (only: {_roles(roles)})")
        if pool.role is FE and pool.edition is None:
            yield error(f"{pool_path(i)}.edition",
                        "a Front End pool needs an edition (standard or enterprise)")


def check_dns_servers(facts: Facts) -> Iterator[Violation]:
    """`dns_port` is set only on servers of a dns pool (they answer DNS for the
    deployment's domain on it, default 53)."""
    for placed in facts.placed_servers:
        if placed.server.dns_port is not None and placed.pool.role is not PoolRole.DNS:
            yield error(f"{placed.path}.dns_port",
                        f"dns_port does not apply to a server of a {placed.pool.role} pool "
                        f"(only: dns)")


def check_site_kind(facts: Facts) -> Iterator[Violation]:
    """An SBA sits in a branch site; Front End, Director, Edge and chat pools in a
    central site (EV-5)."""
    for i, pool in enumerate(facts.topology.pools):
        site = facts.sites.get(pool.site)
        if site is None:
            continue
        if pool.role is SBA and site.kind is not SiteKind.BRANCH:
            yield error(f"{pool_path(i)}.site",
                        f"an SBA belongs in a branch site; {site.name} is {site.kind}")
        elif pool.role in _CENTRAL_ONLY and site.kind is SiteKind.BRANCH:
            yield error(f"{pool_path(i)}.site",
                        f"a {pool.role} pool belongs in a central site; {site.name} is a branch")


def check_pool_size(facts: Facts) -> Iterator[Violation]:
    """Every pool has a server; Standard Edition and SBA pools exactly one; a Front
    End pool at most 16 (FE-6)."""
    for i, pool in enumerate(facts.topology.pools):
        path, count = f"{pool_path(i)}.servers", len(pool.servers)
        if count == 0:
            yield error(path, "a pool needs at least one server")
        elif pool.role is FE and pool.edition is Edition.STANDARD and count != 1:
            yield error(path, f"a Standard Edition pool has exactly 1 server, not {count}")
        elif pool.role is SBA and count != 1:
            yield error(path, f"an SBA is one server, not {count}")
        elif pool.role is FE and count > MAX_FRONTEND_SERVERS:
            yield error(path, f"a Front End pool has at most {MAX_FRONTEND_SERVERS} servers, "
                        f"not {count}")


def check_frontend_present(facts: Facts) -> Iterator[Violation]:
    """A deployment has at least one Front End pool (someone must register users)."""
    if not any(pool.role is FE for pool in facts.topology.pools):
        yield error("pools", "the topology has no Front End pool")


def check_pairing(facts: Facts) -> Iterator[Violation]:
    """Pairing (DR-1): between two Front End pools, 1:1 and reciprocal, in different
    sites (a stretched pool's sites included), same edition, same Back End HA scheme
    (TOP-2). The setting is ``backup_pool`` (``paired_with``); the model's field and
    the violations' path are ``paired_with``."""
    for i, pool in enumerate(facts.topology.pools):
        partner = facts.pool(pool.paired_with)
        if pool.role is not FE or partner is None:
            continue
        path = f"{pool_path(i)}.paired_with"
        if partner.name == pool.name:
            yield error(path, "a pool cannot be paired with itself")
            continue
        if partner.role is not FE:
            yield error(path, f"{partner.name} is a {partner.role} pool; only Front End pools "
                        f"are paired")
            continue
        if partner.paired_with != pool.name:
            now = (f"is paired with {partner.paired_with}" if partner.paired_with
                   else "is not paired")
            yield error(path, f"{pool.name} is paired with {partner.name} but {partner.name} "
                        f"{now}; pairing is 1:1 and reciprocal")
        elif (facts.pool_index(partner.name) or 0) < i:
            continue  # the symmetric checks below were done for the partner
        yield from _pair_mismatches(path, pool, partner)


def _pair_mismatches(path: str, pool: Pool, partner: Pool) -> Iterator[Violation]:
    shared = [site for site in pool.sites if site in partner.sites]
    if partner.site == pool.site:
        yield error(path, f"paired pools {pool.name} and {partner.name} are both in site "
                    f"{pool.site}; a pair spans two sites")
    elif shared:
        yield error(path, f"paired pools {pool.name} and {partner.name} both have servers in "
                    f"site {shared[0]}; losing it would take down both (a pair spans two "
                    f"sites)")
    editions = (pool.edition, partner.edition)
    if None not in editions and editions[0] is not editions[1]:
        yield error(path, f"{pool.name} is {pool.edition} edition but {partner.name} is "
                    f"{partner.edition}; SE pairs with SE, EE with EE")
    schemes = tuple(b.scheme for b in (pool.backend, partner.backend) if b is not None)
    if len(schemes) == 2 and schemes[0] != schemes[1]:
        yield error(path, f"{pool.name}'s Back End is {schemes[0]} but {partner.name}'s is "
                    f"{schemes[1]}; paired pools use the same Back End HA scheme")


def check_auto_failover(facts: Facts) -> Iterator[Violation]:
    """Automatic pool failover (DR-10) is set on both pools of a pair and needs a witness
    in a third site (neither pool's), which must confirm the pool is down."""
    witnesses = [p for p in facts.topology.pools if p.role is PoolRole.WITNESS]
    for i, pool in enumerate(facts.topology.pools):
        if pool.role is not FE or not pool.auto_failover:
            continue
        path = f"{pool_path(i)}.auto_failover"
        partner = facts.pool(pool.paired_with)
        if partner is None:
            yield error(path, f"{pool.name} has no backup pool to fail over to")
            continue
        if not partner.auto_failover:
            yield error(path, f"set auto_failover on both pools of the pair ({pool.name} and "
                        f"{partner.name})")
        used = set(pool.sites) | set(partner.sites)
        if not any(set(w.sites).isdisjoint(used) for w in witnesses):
            yield error(path, f"automatic failover of {pool.name} needs a witness pool in a "
                        f"third site (not {', '.join(sorted(used))})")


def check_backup_registrar(facts: Facts) -> Iterator[Violation]:
    """A backup registrar (DR-8, EV-5) is a Front End pool in another site; a paired
    pool's backup registrar is its partner (DR-1); an SBA without one is a warning."""
    for i, pool in enumerate(facts.topology.pools):
        if pool.role not in (FE, SBA):
            continue
        path = f"{pool_path(i)}.backup_registrar"
        if pool.role is SBA and pool.backup_registrar is None:
            yield warning(path, f"SBA {pool.name} has no backup registrar: its users lose "
                          f"service when it fails")
        target = facts.pool(pool.backup_registrar)
        if target is None:
            continue
        if target.name == pool.name:
            yield error(path, "a pool cannot be its own backup registrar")
        elif target.role is not FE:
            who = "an SBA's" if pool.role is SBA else "a"
            yield error(path, f"{who} backup registrar must be a Front End pool; "
                        f"{target.name} is a {target.role} pool")
        elif target.site == pool.site:
            yield error(path, f"backup registrar {target.name} is in the same site "
                        f"({pool.site}) as {pool.name}")
        elif pool.paired_with is not None and target.name != pool.paired_with:
            yield error(path, f"{pool.name} is paired with {pool.paired_with}, which is "
                        f"therefore its backup registrar, not {target.name}")


def check_sbas_per_branch(facts: Facts) -> Iterator[Violation]:
    """At most 2 SBAs per branch site."""
    per_site: dict[str, list[str]] = {}
    for i, pool in enumerate(facts.topology.pools):
        if pool.role is not SBA:
            continue
        sbas = per_site.setdefault(pool.site, [])
        if len(sbas) >= MAX_SBAS_PER_BRANCH:
            yield error(f"{pool_path(i)}.site",
                        f"branch {pool.site} already has {len(sbas)} SBAs "
                        f"({', '.join(sbas)}); at most {MAX_SBAS_PER_BRANCH} per branch")
        sbas.append(pool.name)


def check_director_collocation(facts: Facts) -> Iterator[Violation]:
    """A Director server hosts nothing else: no other pool's server and no database
    on its address."""
    others: list[tuple[object, str]] = []
    for ps in facts.placed_servers:
        if ps.pool.role is not DIR:
            others.append((parse_ip(ps.server.address),
                           f"server {ps.server.name} of {ps.pool.role} pool {ps.pool.name}"))
    for pool in facts.topology.pools:
        if pool.backend is not None:
            dbs: tuple[DatabaseEndpoint | None, ...] = (pool.backend.principal,
                                                        pool.backend.mirror)
            others.extend((parse_ip(db.address), f"the Back End of pool {pool.name}")
                          for db in dbs if db is not None)
    for ps in facts.placed_servers:
        ip = parse_ip(ps.server.address)
        if ps.pool.role is not DIR or ip is None:
            continue
        shared = [what for other_ip, what in others if other_ip == ip]
        if shared:
            yield error(f"{ps.path}.address",
                        f"Director server {ps.server.name} shares {ps.server.address} with "
                        f"{', '.join(shared)}; a Director is not collocated with another role")


def check_chat_servers(facts: Facts) -> Iterator[Violation]:
    """A persistent chat pool has at most 8 servers, at most 4 of them active (PC-2)."""
    for i, pool in enumerate(facts.topology.pools):
        if pool.role is not CHAT:
            continue
        if len(pool.servers) > MAX_CHAT_SERVERS:
            yield error(f"{pool_path(i)}.servers",
                        f"a chat pool has at most {MAX_CHAT_SERVERS} servers, "
                        f"not {len(pool.servers)}")
        active = pool.active_servers if pool.active_servers is not None else pool.server_names
        if len(set(active)) > MAX_CHAT_ACTIVE_SERVERS:
            where = "active_servers" if pool.active_servers is not None else "servers"
            yield error(f"{pool_path(i)}.{where}",
                        f"a chat pool has at most {MAX_CHAT_ACTIVE_SERVERS} active servers, "
                        f"not {len(set(active))} (name the active ones in active_servers)")
        for k, name in enumerate(pool.active_servers or ()):
            if name in (pool.active_servers or ())[:k]:
                yield error(f"{pool_path(i)}.active_servers[{k}]", f"{name} is listed twice")


def check_chat_store(facts: Facts) -> Iterator[Violation]:
    """A chat pool's store (PC-3): a Back End with a principal when it has one (and
    always when it ships its log); the log-shipped copy in a known site other than the
    principal's, where some of the pool's servers are (a failover activates them,
    PC-4); its instances on IP addresses and free ports (no clash with any other
    listener, or with each other)."""
    taken: dict[tuple[IpAddress, int], str] = {}
    for listener in listeners(facts):
        if listener.ip is not None and listener.port is not None:
            taken.setdefault((listener.ip, listener.port), f"{listener.what} at {listener.path}")
    for i, pool in enumerate(facts.topology.pools):
        if pool.role is not CHAT:
            continue
        base, backend, shipping = pool_path(i), pool.backend, pool.log_shipping
        if backend is not None and backend.principal is None and backend.mirror is None:
            yield error(f"{base}.backend.principal", "the chat store needs a principal")
        if shipping is None:
            continue
        path = f"{base}.log_shipping"
        principal = backend.principal if backend is not None else None
        if principal is None:
            if backend is None:
                yield error(f"{base}.backend", "a chat pool that ships its log needs a Back "
                            "End (principal) to ship it from")
        elif shipping.site not in facts.sites:
            yield error(f"{path}.site", f"unknown site {shipping.site!r}")
        elif shipping.site == (principal.site or pool.site):
            yield error(f"{path}.site", f"the log-shipped copy is in site {shipping.site} "
                        f"with the principal: it must be in a second data center")
        elif not any(pool.site_of(s) == shipping.site for s in pool.servers):
            yield error(f"{path}.site", f"no server of pool {pool.name} is in site "
                        f"{shipping.site}: after a chat failover none would serve")
        for role, db in shipping.instances:
            yield from _check_shipped(f"{path}.{role}", db, f"log-shipped {role} of pool "
                                      f"{pool.name}", taken)


def _check_shipped(path: str, db: DatabaseEndpoint, what: str,
                   taken: dict[tuple[IpAddress, int], str]) -> Iterator[Violation]:
    ip = parse_ip(db.address)
    if ip is None:
        yield error(f"{path}.address", f"{db.address!r} is not an IP address literal ({what})")
        return
    if ip.is_unspecified or ip.is_multicast:
        yield error(f"{path}.address", f"{db.address} cannot be a server's own address "
                    f"({what})")
    if not 1 <= db.port <= 65535:
        yield error(f"{path}.port", f"port {db.port} is not in 1..65535 ({what})")
        return
    first = taken.get((ip, db.port))
    if first is not None:
        yield error(f"{path}.port", f"{db.address}:{db.port} ({what}) is already used by "
                    f"{first}")
    else:
        taken[(ip, db.port)] = f"{what} at {path}.port"


def check_backend(facts: Facts) -> Iterator[Violation]:
    """Back End (BE-1/2): an Enterprise pool has one with a principal, a Standard one
    none; no mirror without a principal, no witness without a mirror; a witness is a
    server of a witness pool or an address with a port; a witness in the principal's
    or the mirror's site is a warning."""
    for i, pool in enumerate(facts.topology.pools):
        path, backend = f"{pool_path(i)}.backend", pool.backend
        if pool.role is FE and pool.edition is Edition.STANDARD and backend is not None:
            yield error(path, "a Standard Edition pool has an embedded database, not a Back End")
            continue
        if pool.role is FE and pool.edition is Edition.ENTERPRISE and backend is None:
            yield error(path, "an Enterprise Edition pool needs a Back End (principal)")
        if backend is None:
            continue
        if backend.principal is None:
            if backend.mirror is not None:
                yield error(f"{path}.mirror", "a mirror without a principal")
            elif pool.role is FE:
                yield error(f"{path}.principal", "the Back End needs a principal")
        if backend.witness is not None and backend.mirror is None:
            yield error(f"{path}.witness", "a witness without a mirror")
        yield from _check_witness(facts, pool, path)


def _check_witness(facts: Facts, pool: Pool, path: str) -> Iterator[Violation]:
    backend = pool.backend
    witness = backend.witness if backend is not None else None
    if backend is None or witness is None:
        return
    path = f"{path}.witness"
    site: str | None = witness.site
    if witness.server is not None:
        if witness.address is not None or witness.port is not None or witness.site is not None:
            yield error(path, "a witness is either a server (server) or an external address "
                        "(address, port, site), not both")
        placed = facts.servers.get(witness.server)
        if placed is not None and placed.pool.role is not PoolRole.WITNESS:
            yield error(f"{path}.server", f"{witness.server} is a server of {placed.pool.role} "
                        f"pool {placed.pool.name}, not of a witness pool")
        site = placed.site if placed is not None else None
    elif witness.address is None:
        yield error(path, "a witness needs a server name or an address")
    elif witness.port is None:
        yield error(f"{path}.port", "an external witness needs a port")
    for role, db in (("principal", backend.principal), ("mirror", backend.mirror)):
        db_site = (db.site or pool.site) if db is not None else None
        if site is not None and site == db_site:
            yield warning(path, f"the witness is in site {site} with the {role}: losing that "
                          f"site loses the quorum (put the witness in a third site)")
            return


def check_edge(facts: Facts) -> Iterator[Violation]:
    """An Edge pool has a next hop, a Director or Front End pool (EDGE-4); a Front End
    pool's edge_pool and the federation route are Edge pools (EDGE-3, EDGE-5)."""
    t = facts.topology
    for i, pool in enumerate(t.pools):
        if pool.role is EDGE and pool.next_hop is None:
            yield error(f"{pool_path(i)}.next_hop", "an Edge pool needs a next hop (EDGE-4)")
        hop = facts.pool(pool.next_hop) if pool.role is EDGE else None
        if hop is not None and hop.role not in (DIR, FE):
            yield error(f"{pool_path(i)}.next_hop",
                        f"next hop {hop.name} is a {hop.role} pool, not a Director or Front End")
        edge = facts.pool(pool.edge_pool) if pool.role is FE else None
        if edge is not None and edge.role is not EDGE:
            yield error(f"{pool_path(i)}.edge_pool", f"{edge.name} is a {edge.role} pool, "
                        f"not an Edge pool")
    route = facts.pool(t.federation_route)
    if route is not None and route.role is not EDGE:
        yield error("federation_route", f"{route.name} is a {route.role} pool, not an Edge pool")


def check_mediation(facts: Facts) -> Iterator[Violation]:
    """A mediation pool's next hop, where it hands inbound PSTN calls, is a Front End
    pool (EV-1). (A mediation pool that carries a trunk but has no next hop is
    reported by `trimaran.topology.voice_rules`.)"""
    for i, pool in enumerate(facts.topology.pools):
        hop = facts.pool(pool.next_hop) if pool.role is MEDIATION else None
        if hop is not None and hop.role is not FE:
            yield error(f"{pool_path(i)}.next_hop",
                        f"next hop {hop.name} is a {hop.role} pool; a mediation pool hands "
                        f"calls to a Front End pool")


def check_stretched_pools(facts: Facts) -> Iterator[Violation]:
    """A pool whose servers are in two sites (METRO-1) spans at most two sites that
    are at most 20 ms apart (or declared in one metro area with no RTT); chat pools,
    which span data centers by design (PC-4), are exempt."""
    for i, pool in enumerate(facts.topology.pools):
        if pool.role is CHAT:
            continue
        reported: set[str] = set()
        for j, server in enumerate(pool.servers):
            far = pool.site_of(server)
            if far == pool.site or far in reported or far not in facts.sites:
                continue
            reported.add(far)
            path = f"{server_path(i, j)}.site"
            if len(reported) > 1:
                yield error(path, f"pool {pool.name} already stretches to another site; "
                            f"a pool spans at most two sites")
                continue
            rtt = facts.rtt(pool.site, far)
            if rtt is None and not facts.same_metro(pool.site, far):
                yield error(path, f"pool {pool.name} stretches from {pool.site} to {far} with "
                            f"no declared RTT or common metro; the limit is "
                            f"{METRO_RTT_LIMIT_MS:g} ms")
            elif rtt is not None and rtt > METRO_RTT_LIMIT_MS:
                yield error(path, f"pool {pool.name} stretches from {pool.site} to {far}, "
                            f"{rtt:g} ms apart; the limit is {METRO_RTT_LIMIT_MS:g} ms")
        if len(reported) == 1 and pool.backend is not None:
            yield from _stretched_backend(i, pool, (pool.site, next(iter(reported))))


def _stretched_backend(i: int, pool: Pool,
                       sites: tuple[str, str]) -> Iterator[Violation]:
    """METRO-1: losing either site of a stretched pool is survived only with the Back End
    principal in one site, its synchronous mirror in the other and the witness in a
    third; otherwise one of the two sites takes the only copy or the tie-breaker along."""
    backend = pool.backend
    assert backend is not None
    base = f"pools[{i}].backend"
    principal = (backend.principal.site or pool.site) if backend.principal else None
    if backend.mirror is None:
        yield warning(f"{base}.mirror", f"pool {pool.name} is stretched over sites "
                      f"{sites[0]} and {sites[1]} but its Back End has no mirror: losing "
                      f"site {principal} stops every write of the pool")
        return
    mirror = backend.mirror.site or pool.site
    if mirror == principal:
        yield warning(f"{base}.mirror.site", f"pool {pool.name} is stretched over sites "
                      f"{sites[0]} and {sites[1]} but its principal and mirror are both in "
                      f"site {mirror}: losing it stops every write; put the mirror in the "
                      f"other site")
    if backend.witness is None:   # (a witness in one of the two sites: check_backend)
        yield warning(f"{base}.witness", f"stretched pool {pool.name} has no witness: "
                      f"losing the principal's site needs a manual `db failover`")


def _partner(facts: Facts, pool: Pool) -> Pool | None:
    """The pool's partner when both are Front End pools paired with each other."""
    partner = facts.pool(pool.paired_with)
    if partner is None or partner.name == pool.name or partner.paired_with != pool.name:
        return None
    return partner if pool.role is FE and partner.role is FE else None


def check_sizing(facts: Facts) -> Iterator[Violation]:
    """Sizing (FE-6): expected users fit the pool's servers and the pool limit, and,
    for a pair, each pool can carry both pools' users; a warning when the survivors
    of one server failure could not carry them."""
    for i, pool in enumerate(facts.topology.pools):
        if pool.role is not FE:
            continue
        base, cap = pool_path(i), pool.capacity
        bad_caps = [k for k in ("users_per_server", "users_per_pool") if getattr(cap, k) <= 0]
        for key in bad_caps:
            yield error(f"{base}.capacity.{key}", f"{key} must be positive")
        users = pool.expected_users
        if users is not None and users < 0:
            yield error(f"{base}.expected_users", "expected_users cannot be negative")
        if bad_caps or not pool.servers or (users is not None and users < 0):
            continue
        if users is not None:
            yield from _check_pool_load(f"{base}.expected_users", pool, users)
        partner = _partner(facts, pool)
        theirs = partner.expected_users if partner is not None else None
        if partner is None or (theirs is None and users is None):
            continue
        both = (users or 0) + max(theirs or 0, 0)
        if both > pool.capacity_users:
            yield error(f"{base}.expected_users",
                        f"{pool.name} must carry its users and {partner.name}'s when either "
                        f"fails over: {users or 0:,} + {theirs or 0:,} = {both:,} > "
                        f"{pool.capacity_users:,}")


def _check_pool_load(path: str, pool: Pool, users: int) -> Iterator[Violation]:
    cap, n = pool.capacity, len(pool.servers)
    if users > cap.users_per_pool:
        yield error(path, f"{users:,} users exceed the pool limit of {cap.users_per_pool:,}")
    elif users > cap.users_per_server * n:
        yield error(path, f"{users:,} users exceed {n} server(s) x "
                    f"{cap.users_per_server:,} users per server")
    elif n > 1 and users > cap.of_servers(n - 1):
        yield warning(path, f"if one of {n} servers fails, the survivors can carry "
                      f"{cap.of_servers(n - 1):,} of {users:,} users")
