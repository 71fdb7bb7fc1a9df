"""Name → object lookups over a validated topology, for the CLI and server processes.

`Resolver(topology)` indexes the topology once; every method is a dictionary
lookup. It assumes a topology that passed `validate` (unique names, known
references); on an invalid one the first element of a duplicated name wins.
Unknown names raise `UnknownNameError` (a `TopologyError` and a `LookupError`).

Which pool serves a user *right now* (failover states, health) is runtime state
kept by the CMS, not here: `registrar_pools` gives only the static order a
client or Director tries — the home pool, then its backup registrar.
"""

from __future__ import annotations

from trimaran.topology.errors import UnknownNameError
from trimaran.topology.model import Endpoint, Pool, PoolRole, Server, Site, Topology


class Resolver:
    """Lookups of sites, pools and servers by name, and the relations between them."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self._sites: dict[str, Site] = {}
        self._pools: dict[str, Pool] = {}
        self._servers: dict[str, tuple[Server, Pool]] = {}
        for site in topology.sites:
            self._sites.setdefault(site.name, site)
        for pool in topology.pools:
            self._pools.setdefault(pool.name, pool)
            for server in pool.servers:
                self._servers.setdefault(server.name, (server, pool))

    # --- by name -------------------------------------------------------------------

    def site(self, name: str) -> Site:
        """The site named `name`."""
        try:
            return self._sites[name]
        except KeyError:
            raise UnknownNameError("site", name) from None

    def pool(self, name: str) -> Pool:
        """The pool named `name`."""
        try:
            return self._pools[name]
        except KeyError:
            raise UnknownNameError("pool", name) from None

    def server(self, name: str) -> Server:
        """The server named `name`."""
        return self._placed(name)[0]

    def _placed(self, name: str) -> tuple[Server, Pool]:
        try:
            return self._servers[name]
        except KeyError:
            raise UnknownNameError("server", name) from None

    # --- relations -------------------------------------------------------------------

    def pool_of(self, server: str) -> Pool:
        """The pool the server named `server` belongs to."""
        return self._placed(server)[1]

    def site_of(self, server: str) -> Site:
        """The site the server named `server` lives in (its own for a stretched pool)."""
        found, pool = self._placed(server)
        return self.site(pool.site_of(found))

    def servers_of(self, pool: str) -> tuple[Server, ...]:
        """The servers of the pool named `pool`, in file order."""
        return self.pool(pool).servers

    def pools(self, role: PoolRole | None = None, site: str | None = None) -> tuple[Pool, ...]:
        """Pools in file order, optionally only those of one role and/or site."""
        return tuple(
            p
            for p in self.topology.pools
            if (role is None or p.role is role) and (site is None or p.site == site)
        )

    def paired_pool(self, pool: str) -> Pool | None:
        """The pool paired with `pool` (DR-1), None when it is not paired."""
        partner = self.pool(pool).paired_with
        return self.pool(partner) if partner is not None else None

    def backup_registrar(self, pool: str) -> Pool | None:
        """Where users of `pool` sign in when it is down (DR-8, EV-5): its declared
        backup registrar, else its paired pool, else None."""
        found = self.pool(pool)
        name = found.backup_registrar or found.paired_with
        return self.pool(name) if name is not None else None

    def registrar_pools(self, home_pool: str) -> tuple[Pool, ...]:
        """The pools a user homed on `home_pool` may register with, in order: the home
        pool, then its backup registrar if any."""
        backup = self.backup_registrar(home_pool)
        home = self.pool(home_pool)
        return (home,) if backup is None else (home, backup)

    def federation_route(self) -> Pool | None:
        """The Edge pool outbound federation goes through (EDGE-3), if declared."""
        route = self.topology.federation_route
        return self.pool(route) if route is not None else None

    def is_local_domain(self, domain: str) -> bool:
        """True when `domain` is the deployment's SIP domain (case-insensitive, RFC 3261
        §19.1.4); users of other domains are federated."""
        return domain.rstrip(".").casefold() == self.topology.sip_domain.casefold()

    # --- addresses ------------------------------------------------------------------

    def sip_address(self, server: str) -> Endpoint:
        """Where the server named `server` accepts SIP."""
        return self.server(server).sip_endpoint

    def admin_address(self, server: str) -> Endpoint:
        """Where the admin API of the server named `server` listens."""
        return self.server(server).admin_endpoint

    def pool_sip_addresses(self, pool: str) -> tuple[Endpoint, ...]:
        """The SIP addresses of every server of a pool: the list a client is given and
        tries in turn (FE-1), like a DNS name resolving to every server."""
        return tuple(s.sip_endpoint for s in self.servers_of(pool))
