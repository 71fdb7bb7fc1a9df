"""A chat pool's store in the topology (SPEC TOP-1, TOP-2, PC-3): the primary data
center's Back End and the log-shipped copy in a second one — loaded strictly, each
rule violated reported at its path."""

from __future__ import annotations

import textwrap

from tests.topology import example_path
from trimaran.deploy.database import databases_of
from trimaran.topology import load_validated, parse_topology, validate_text
from trimaran.topology.model import DatabaseEndpoint, LogShipping

HEAD = """\
name: t
sip_domain: trimaran.test
sites: [{name: dc1}, {name: dc2}, {name: w1}]
pools:
  - {name: se1, site: dc1, role: frontend, edition: standard,
     servers: [{name: se1, address: 127.0.48.10}]}
"""
SHIPPING = """\
    log_shipping:
      site: dc2
      principal: {address: 127.0.48.23, port: 5433}
      mirror: {address: 127.0.48.24}
"""


def chat(shipping: str = SHIPPING, backend: str | None = None, extra: str = "") -> str:
    """A topology with chat pool `pc` (index 1): pc1 in dc1, pc2 in dc2."""
    backend = backend if backend is not None else \
        "    backend: {principal: {address: 127.0.48.21}, mirror: {address: 127.0.48.22}}\n"
    return (HEAD + "  - name: pc\n    site: dc1\n    role: chat\n"
            "    servers:\n      - {name: pc1, address: 127.0.48.11}\n"
            "      - {name: pc2, address: 127.0.48.12, site: dc2}\n"
            + backend + shipping + extra)


def found(text: str) -> set[tuple[str, str]]:
    """(path, severity) of every violation."""
    return {(v.path, v.severity) for v in validate_text(textwrap.dedent(text))}


def message(text: str, path: str) -> str:
    """The one message at `path`."""
    [match] = [v.message for v in validate_text(text) if v.path == path]
    return match


def test_top1_log_shipping_loads_into_the_pool() -> None:
    pool = parse_topology(chat()).pools[1]
    assert pool.log_shipping == LogShipping(
        "dc2", DatabaseEndpoint("127.0.48.23", 5433), DatabaseEndpoint("127.0.48.24", 5432))
    assert [role for role, _ in pool.log_shipping.instances] == ["principal", "mirror"]
    assert found(chat()) == set()


def test_top1_log_shipping_without_a_mirror_is_one_copy() -> None:
    text = chat(SHIPPING.replace("      mirror: {address: 127.0.48.24}\n", ""))
    pool = parse_topology(text).pools[1]
    assert pool.log_shipping is not None and pool.log_shipping.mirror is None
    assert found(text) == set()


def test_top2_unknown_and_missing_log_shipping_keys_are_reported_at_their_path() -> None:
    text = chat(SHIPPING.replace("site: dc2", "site: dc2\n      lag: 5")
                .replace("{address: 127.0.48.24}", "{address: 127.0.48.24, site: dc2}"))
    assert found(text) == {("pools[1].log_shipping.lag", "error"),
                           ("pools[1].log_shipping.mirror.site", "error")}
    assert "unknown key 'lag' in log_shipping" in message(text, "pools[1].log_shipping.lag")
    missing = chat("    log_shipping: {site: dc2}\n")
    assert found(missing) == {("pools[1].log_shipping.principal", "error")}


def test_top2_log_shipping_is_for_chat_pools_only() -> None:
    text = HEAD.replace("servers: [{name: se1, address: 127.0.48.10}]}",
                        "servers: [{name: se1, address: 127.0.48.10}],\n"
                        "     log_shipping: {site: dc2, principal: {address: 127.0.48.23}}}")
    assert found(text) == {("pools[0].log_shipping", "error")}
    assert message(text, "pools[0].log_shipping") == \
        "log_shipping does not apply to a frontend pool (only: chat)"


def test_pc3_the_copy_is_in_a_second_data_center_that_exists() -> None:
    same = chat(SHIPPING.replace("site: dc2", "site: dc1"))
    assert found(same) == {("pools[1].log_shipping.site", "error")}
    assert "in site dc1 with the principal" in message(same, "pools[1].log_shipping.site")
    unknown = chat(SHIPPING.replace("site: dc2", "site: dc9"))
    assert found(unknown) == {("pools[1].log_shipping.site", "error")}
    assert message(unknown, "pools[1].log_shipping.site") == "unknown site 'dc9'"
    principal_there = chat(backend="    backend: {principal: {address: 127.0.48.21, "
                           "site: dc2}}\n")
    assert found(principal_there) == {("pools[1].log_shipping.site", "error")}


def test_pc4_a_failover_needs_servers_of_the_pool_in_the_copys_site() -> None:
    text = chat(SHIPPING.replace("site: dc2", "site: w1"))
    assert found(text) == {("pools[1].log_shipping.site", "error")}
    assert "no server of pool pc is in site w1" in message(text, "pools[1].log_shipping.site")


def test_pc3_a_chat_store_needs_a_principal() -> None:
    assert found(chat(backend="")) == {("pools[1].backend", "error")}
    assert found(chat(backend="    backend: {}\n")) == {("pools[1].backend.principal", "error")}
    assert found(chat(backend="    backend: {mirror: {address: 127.0.48.22}}\n")) == {
        ("pools[1].backend.mirror", "error")}       # a mirror without a principal
    assert found(chat(shipping="", backend="    backend: {}\n")) == {
        ("pools[1].backend.principal", "error")}


def test_top2_shipped_endpoints_are_addresses_and_ports_no_one_else_uses() -> None:
    clash = chat(SHIPPING.replace("127.0.48.23, port: 5433", "127.0.48.21, port: 5432"))
    assert found(clash) == {("pools[1].log_shipping.principal.port", "error")}
    assert "already used by back end principal of pool pc" in message(
        clash, "pools[1].log_shipping.principal.port")
    twice = chat(SHIPPING.replace("{address: 127.0.48.24}", "{address: 127.0.48.23, "
                                                             "port: 5433}"))
    assert found(twice) == {("pools[1].log_shipping.mirror.port", "error")}
    server = chat(SHIPPING.replace("127.0.48.23, port: 5433", "127.0.48.11, port: 8080"))
    assert "admin API of server pc1" in message(server, "pools[1].log_shipping.principal.port")
    bad = chat(SHIPPING.replace("127.0.48.23, port: 5433", "db.example, port: 70000"))
    assert found(bad) == {("pools[1].log_shipping.principal.address", "error")}
    port = chat(SHIPPING.replace("port: 5433", "port: 70000"))
    assert found(port) == {("pools[1].log_shipping.principal.port", "error")}
    anywhere = chat(SHIPPING.replace("127.0.48.23", "0.0.0.0"))
    assert found(anywhere) == {("pools[1].log_shipping.principal.address", "error")}


def test_pc2_active_servers_name_servers_of_the_pool() -> None:
    text = chat(extra="    active_servers: [pc1, pc7]\n")
    assert found(text) == {("pools[1].active_servers[1]", "error")}


def test_the_chat_example_validates_and_runs_its_store_in_two_data_centers() -> None:
    topology = load_validated(example_path("chat"))
    names = {d.name: (d.role, d.agent_port is not None) for d in databases_of(topology)}
    assert names == {"pc1-principal": ("principal", True), "pc1-mirror": ("mirror", True),
                     "pc1-shipped": ("shipped", False),
                     "pc1-shipped-mirror": ("shipped-mirror", False)}
