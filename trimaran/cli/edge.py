"""`trimaran edge ...`: the Edge state of a running deployment (SPEC EDGE-3..EDGE-5).

    edge status --dir RUNDIR [--json]                  route, next hops, media Edge pools,
                                                       partners, every Edge server's health
    edge federation-route set EDGE_POOL --dir RUNDIR   move outbound federation (EDGE-3)
    edge next-hop set EDGE_POOL POOL --dir RUNDIR      move what is behind an Edge pool (EDGE-4)
    pool set-edge POOL EDGE_POOL --dir RUNDIR          (in `trimaran.cli.dr`) move a Front End
                                                       pool's media relay (EDGE-5)

Each change reads the CMS ``edge`` document (or, when there is none, the topology's
state), plans the change (`trimaran.cms.edgedoc`, which refuses with the reason), and
writes the document compare-and-set on the CMS master at the version it read, like
`trimaran voice publish`; servers pick it up with their next CMS pull.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from trimaran.cli.common import dir_option, echo_json, fail, json_option, open_rundir
from trimaran.cms.edgedoc import (
    EDGE_KEY,
    EdgeRefused,
    EdgeState,
    EdgeStateError,
    document_in,
    set_federation_route,
    set_media_edge,
    set_next_hop,
    state_of,
)
from trimaran.deploy.dr import Deployment, DrError, call
from trimaran.topology.errors import TopologyError
from trimaran.topology.model import PoolRole

Plan = Callable[[EdgeState, Deployment], EdgeState]


@click.group()
def edge() -> None:
    """Edge pools: federation route, next hops, media relay (EDGE-3..EDGE-5)."""


@edge.group("federation-route")
def federation_route() -> None:
    """The Edge pool outbound federation goes through (EDGE-3)."""


@edge.group("next-hop")
def next_hop() -> None:
    """The Director or Front End pool behind an Edge pool (EDGE-4)."""


def _deployment(rundir: str | None) -> Deployment:
    try:
        return Deployment(open_rundir(rundir))
    except (TopologyError, OSError) as exc:
        fail(f"cannot read the deployment's topology: {exc}")


def pool_up(dep: Deployment, pool: str) -> bool:
    """True when a server of `pool` answers /health with 200."""
    return any(call(spec, "GET", "/health", timeout=1.0)[0] == 200
               for spec in dep.resolver.servers_of(pool))


def _read(dep: Deployment) -> tuple[str, EdgeState, int | None, bool]:
    """(CMS master, state in use, version of the document or None when there is none,
    whether the document is bad). A document that does not load is replaced by the
    topology's state (with a warning)."""
    try:
        master, answer = dep.cms_master()
    except DrError as exc:
        fail(str(exc))
    found = document_in(answer)
    if found is None:
        return master, EdgeState.from_topology(dep.topology), None, False
    body, version = found
    try:
        return master, state_of(dep.topology, body), version, False
    except EdgeStateError as exc:
        click.echo(f"warning: {exc}; starting again from the topology's Edge state", err=True)
        return master, EdgeState.from_topology(dep.topology), version, True


def change(rundir: str | None, plan: Plan, what: Callable[[EdgeState], object],
           label: str, as_json: bool) -> None:
    """Apply `plan` to the current state and write it compare-and-set; print `label`
    with `what` (the changed setting) before and after."""
    dep = _deployment(rundir)
    master, state, version, bad = _read(dep)
    try:
        new = plan(state, dep)
    except EdgeRefused as exc:
        fail(str(exc))
    before, after = what(state), what(new)
    result: dict[str, Any] = {"setting": label, "from": before, "to": after,
                              "changed": before != after, "master": master, "version": version}
    if before != after or bad:
        status, body = dep.first(master, "POST", "/cms/documents", {
            "key": EDGE_KEY, "body": new.to_json(), "check": True, "expect_version": version},
            key=dep.cms_key)
        if status != 200:
            fail(f"the CMS master {master} refused the Edge state: {body.get('error', status)}"
                 f" (run the command again if another change came first)")
        dep.poke_all()
        result["version"] = body["version"]
    if as_json:
        echo_json(result)
    elif before == after and not bad:
        click.echo(f"{label} is already {after}; nothing changed")
    else:
        click.echo(f"{label}: {before} -> {after} (CMS version {result['version']} on "
                   f"{master}); servers pick it up within seconds")


@federation_route.command("set")
@click.argument("edge_pool")
@dir_option
@json_option
def federation_route_set(edge_pool: str, rundir: str | None, as_json: bool) -> None:
    """Send outbound federation through EDGE_POOL (federation-enabled, up)."""
    change(rundir, lambda s, dep: set_federation_route(s, dep.topology, edge_pool,
                                                       lambda p: pool_up(dep, p)),
           lambda s: s.federation_route, "federation route", as_json)


@next_hop.command("set")
@click.argument("edge_pool")
@click.argument("pool")
@dir_option
@json_option
def next_hop_set(edge_pool: str, pool: str, rundir: str | None, as_json: bool) -> None:
    """Make POOL (a Director or Front End pool that is up) EDGE_POOL's next hop."""
    change(rundir, lambda s, dep: set_next_hop(s, dep.topology, edge_pool, pool,
                                               lambda p: pool_up(dep, p)),
           lambda s: s.next_hops.get(edge_pool), f"next hop of {edge_pool}", as_json)


def set_edge(pool: str, edge_pool: str, rundir: str | None, as_json: bool) -> None:
    """`pool set-edge`: relay POOL's media through EDGE_POOL (EDGE-5); a warning when
    no server of EDGE_POOL answers."""
    def plan(state: EdgeState, dep: Deployment) -> EdgeState:
        new = set_media_edge(state, dep.topology, pool, edge_pool)
        if not pool_up(dep, edge_pool):
            click.echo(f"warning: Edge pool {edge_pool} is down (no server answers /health); "
                       f"{pool}'s media relay fails until it is up", err=True)
        return new
    change(rundir, plan, lambda s: s.media_edges.get(pool), f"media Edge pool of {pool}",
           as_json)


def _health(dep: Deployment) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for pool in dep.resolver.pools(PoolRole.EDGE):
        for spec in pool.servers:
            status, body = call(spec, "GET", "/health", timeout=1.0)
            why = body.get("reason") or body.get("error") or f"HTTP {status}"
            health = {200: "up", 0: "down"}.get(status, f"unhealthy ({why})")
            rows.append({"server": spec.name, "pool": pool.name, "health": health,
                         "internal": str(spec.sip_endpoint),
                         "external": str(spec.external_endpoint or "")})
    return rows


@edge.command("status")
@dir_option
@json_option
def status_cmd(rundir: str | None, as_json: bool) -> None:
    """The Edge state in use (CMS, else topology) and every Edge server's health."""
    dep = _deployment(rundir)
    try:
        _, answer = dep.cms_master()
        found = document_in(answer)
        source = "topology" if found is None else f"CMS version {found[1]}"
        state = state_of(dep.topology, None if found is None else found[0])
    except DrError:
        state, source = EdgeState.from_topology(dep.topology), "topology (CMS master unreachable)"
    except EdgeStateError as exc:
        state, source = EdgeState.from_topology(dep.topology), f"topology ({exc})"
    rows = _health(dep)
    if as_json:
        echo_json({"source": source, **state.as_dict(), "servers": rows})
        return
    click.echo(f"# Edge state from the {source}")
    click.echo(f"federation route  {state.federation_route or '(none)'}")
    for name, hop in sorted(state.next_hops.items()):
        click.echo(f"next hop          {name} -> {hop}")
    for name, edge_pool in sorted(state.media_edges.items()):
        click.echo(f"media Edge        {name} -> {edge_pool}")
    for partner in state.partners:
        click.echo(f"partner           {partner.domain} via {', '.join(partner.edges)}")
    for row in rows:
        click.echo(f"  {row['server']:<12} {row['pool']:<10} {row['health']:<10} "
                   f"internal {row['internal']}  external {row['external']}")
