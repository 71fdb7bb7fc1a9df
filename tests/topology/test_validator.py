"""The topology rules (TOP-2): each rule fires at the offending element's path, and a
topology breaking many rules reports every violation in one go."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.topology import EXAMPLES_DIR
from trimaran.topology import (
    RULES,
    TopologyError,
    Violation,
    format_violations,
    has_errors,
    load_validated,
    parse_topology,
    validate,
    validate_file,
    validate_text,
)

HEAD = "name: t\nsip_domain: trimaran.test\n"
TWO_SITES = HEAD + "sites: [{name: dc1}, {name: dc2}]\n"


def check(text: str) -> list[Violation]:
    """Every violation (loader and rules) of a YAML topology."""
    return validate_text(textwrap.dedent(text))


def found(text: str) -> set[tuple[str, str]]:
    """(path, severity) of every violation."""
    return {(v.path, v.severity) for v in check(text)}


def message(text: str, path: str) -> str:
    """The one message at `path`."""
    [match] = [v.message for v in check(text) if v.path == path]
    return match


def se(name: str, site: str, address: str, extra: str = "") -> str:
    """A Standard Edition pool entry (YAML lines) with one server of the same name."""
    return (f"  - {{name: {name}, site: {site}, role: frontend, edition: standard,{extra}\n"
            f"     servers: [{{name: {name}, address: {address}}}]}}\n")


def ee(name: str, site: str, octet: int, servers: int = 1, extra: str = "") -> str:
    """An Enterprise Edition pool entry with `servers` servers and a principal."""
    members = ", ".join(f"{{name: {name}{chr(97 + k)}, address: 127.0.{octet}.{11 + k}}}"
                        for k in range(servers))
    return (f"  - name: {name}\n    site: {site}\n    role: frontend\n    edition: enterprise\n"
            f"    servers: [{members}]\n"
            f"    backend: {{principal: {{address: 127.0.{octet}.21}}}}\n{extra}")


SINGLE = HEAD + "sites: [{name: dc1}]\npools:\n" + se("se1", "dc1", "127.0.1.1")
PAIR = TWO_SITES + "pools:\n" + se("se1", "dc1", "127.0.1.1", " paired_with: se2,") + se(
    "se2", "dc2", "127.0.2.1", " paired_with: se1,")


def test_helpers_build_valid_topologies() -> None:
    assert check(SINGLE) == []
    assert check(PAIR) == []
    assert check(HEAD + "sites: [{name: dc1}]\npools:\n" + ee("fe1", "dc1", 1, 3)) == []


# --- names and addresses -------------------------------------------------------------------------


def test_names_must_be_host_name_like() -> None:
    text = (HEAD.replace("trimaran.test", "'bad domain'") + "sites: [{name: 'dc 1'}]\npools:\n"
            + se("-se1", "'dc 1'", "127.0.1.1").replace("name: -se1}", "name: a_b}"))
    assert found(text) == {
        ("sip_domain", "error"), ("sites[0].name", "error"), ("pools[0].name", "error"),
        ("pools[0].servers[0].name", "error"),
    }


def test_duplicate_names_are_errors_ignoring_case() -> None:
    text = (HEAD + "sites: [{name: dc1}, {name: DC1}]\npools:\n" + se("se1", "dc1", "127.0.1.1")
            + se("SE1", "dc1", "127.0.1.2"))
    assert found(text) == {
        ("sites[1].name", "error"), ("pools[1].name", "error"),
        ("pools[1].servers[0].name", "error"),
    }
    assert message(text, "pools[1].name") == "duplicate pool name 'SE1' (first at pools[0].name)"


def test_server_names_are_unique_across_the_whole_deployment() -> None:
    text = PAIR.replace("{name: se2, address", "{name: se1, address")
    assert found(text) == {("pools[1].servers[0].name", "error")}


def test_addresses_must_be_ip_literals_a_server_can_bind() -> None:
    text = (HEAD + "sites: [{name: dc1}]\npools:\n" + ee("fe1", "dc1", 1, 3)
            .replace("127.0.1.11", "fe1a.example.com").replace("127.0.1.12", "0.0.0.0")
            .replace("127.0.1.13", "224.0.0.1").replace("127.0.1.21", "db.local"))
    assert found(text) == {
        ("pools[0].servers[0].address", "error"), ("pools[0].servers[1].address", "error"),
        ("pools[0].servers[2].address", "error"), ("pools[0].backend.principal.address", "error"),
    }
    assert message(text, "pools[0].servers[0].address") == (
        "'fe1a.example.com' is not an IP address literal (SIP of server fe1a)"
    )


def test_ipv6_literals_are_accepted() -> None:
    assert check(SINGLE.replace("127.0.1.1", "'::1'")) == []


def test_ports_must_be_in_range() -> None:
    text = SINGLE.replace("127.0.1.1}", "127.0.1.1, sip_port: 70000, admin_port: 0}")
    assert found(text) == {
        ("pools[0].servers[0].sip_port", "error"), ("pools[0].servers[0].admin_port", "error"),
    }


def test_two_listeners_on_one_address_and_port_are_an_error() -> None:
    # A second server on the same SIP address:port, an admin port colliding with another
    # server's SIP port, and a database on a server's admin port.
    text = (HEAD + "sites: [{name: dc1}]\npools:\n" + ee("fe1", "dc1", 1, 3)
            .replace("127.0.1.12}", "127.0.1.11}")
            .replace("127.0.1.13}", "127.0.1.11, sip_port: 5070, admin_port: 5060}")
            .replace("127.0.1.21}", "127.0.1.11, port: 8080}"))
    assert found(text) == {
        ("pools[0].servers[1].sip_port", "error"), ("pools[0].servers[1].admin_port", "error"),
        ("pools[0].servers[2].admin_port", "error"), ("pools[0].backend.principal.port", "error"),
    }
    assert message(text, "pools[0].servers[2].admin_port") == (
        "127.0.1.11:5060 (admin API of server fe1c) is already used by SIP of server fe1a "
        "at pools[0].servers[0].sip_port"
    )


def test_one_servers_sip_and_admin_ports_must_differ() -> None:
    text = SINGLE.replace("127.0.1.1}", "127.0.1.1, admin_port: 5060}")
    assert found(text) == {("pools[0].servers[0].admin_port", "error")}


def test_ipv6_addresses_are_compared_as_addresses_not_strings() -> None:
    text = PAIR.replace("127.0.1.1", "'::1'").replace("127.0.2.1", "'0:0::1'")
    assert ("pools[1].servers[0].sip_port", "error") in found(text)


# --- references ----------------------------------------------------------------------------------


def test_unknown_references_are_errors_at_the_referring_field() -> None:
    text = """\
    name: t
    sip_domain: trimaran.test
    federation_route: edge9
    sites: [{name: dc1, rtt_ms: {dc9: 2}}]
    pools:
      - name: fe1
        site: dc1
        role: frontend
        edition: enterprise
        paired_with: fe9
        backup_registrar: fe8
        edge_pool: edge7
        servers: [{name: fe1a, address: 127.0.1.11, site: dc6}]
        backend:
          principal: {address: 127.0.1.21, site: dc5}
          mirror: {address: 127.0.1.22}
          witness: {server: w9}
      - {name: chat1, site: dc4, role: chat, active_servers: [pc9],
         servers: [{name: pc1, address: 127.0.1.31}]}
    """
    assert found(text) == {
        ("federation_route", "error"), ("sites[0].rtt_ms.dc9", "error"),
        ("pools[0].paired_with", "error"), ("pools[0].backup_registrar", "error"),
        ("pools[0].edge_pool", "error"), ("pools[0].servers[0].site", "error"),
        ("pools[0].backend.principal.site", "error"), ("pools[0].backend.witness.server", "error"),
        ("pools[1].site", "error"), ("pools[1].active_servers[0]", "error"),
    }
    assert message(text, "pools[0].paired_with") == "unknown pool 'fe9'"


# --- sites ---------------------------------------------------------------------------------------


def test_site_rtts_are_to_other_sites_non_negative_and_consistent() -> None:
    text = PAIR.replace("sites: [{name: dc1}, {name: dc2}]",
                        "sites: [{name: dc1, rtt_ms: {dc1: 0, dc2: 3}},"
                        " {name: dc2, rtt_ms: {dc1: 4}}, {name: dc3, rtt_ms: {dc1: -1}}]")
    assert found(text) == {
        ("sites[0].rtt_ms.dc1", "error"), ("sites[1].rtt_ms.dc1", "warning"),
        ("sites[2].rtt_ms.dc1", "error"),
    }


def test_an_sba_belongs_in_a_branch_and_a_front_end_in_a_central_site() -> None:
    text = (HEAD + "sites: [{name: dc1}, {name: b1, kind: branch}]\npools:\n"
            + se("se1", "b1", "127.0.1.1")
            + "  - {name: sba1, site: dc1, role: sba, backup_registrar: se1,\n"
            + "     servers: [{name: sba1, address: 127.0.3.1}]}\n")
    assert found(text) == {("pools[0].site", "error"), ("pools[1].site", "error")}


# --- pools ---------------------------------------------------------------------------------------


def test_a_deployment_needs_a_front_end_pool() -> None:
    text = HEAD + "sites: [{name: dc1}]\npools: []\n"
    assert found(text) == {("pools", "error")}


def test_role_specific_fields_only_on_their_roles_and_front_ends_need_an_edition() -> None:
    text = SINGLE + (
        "  - name: dir1\n"
        "    site: dc1\n"
        "    role: director\n"
        "    edition: standard\n"
        "    paired_with: se1\n"
        "    capacity: {users_per_pool: 10}\n"
        "    next_hop: se1\n"
        "    servers: [{name: dir1a, address: 127.0.1.5}]\n"
        "  - {name: fe2, site: dc1, role: frontend, servers: [{name: fe2, address: 127.0.1.6}]}\n"
    )
    assert found(text) == {
        ("pools[1].edition", "error"), ("pools[1].paired_with", "error"),
        ("pools[1].capacity", "error"), ("pools[1].next_hop", "error"),
        ("pools[2].edition", "error"),
    }
    assert message(text, "pools[1].next_hop") == (
        "next_hop does not apply to a director pool (only: edge, mediation)"
    )


def test_pool_sizes_se_one_server_ee_at_most_16_sba_one_none_empty() -> None:
    text = (HEAD + "sites: [{name: dc1}, {name: b1, kind: branch}]\npools:\n"
            + se("se1", "dc1", "127.0.1.1").replace("}]}", "}, {name: se1b, address: 127.0.1.2}]}")
            + ee("fe1", "dc1", 2, 17)
            + "  - {name: sba1, site: b1, role: sba, backup_registrar: se1, servers: [\n"
            + "     {name: sba1, address: 127.0.3.1}, {name: sba1b, address: 127.0.3.2}]}\n"
            + "  - {name: med1, site: dc1, role: mediation, servers: []}\n")
    assert found(text) == {
        ("pools[0].servers", "error"), ("pools[1].servers", "error"),
        ("pools[2].servers", "error"), ("pools[3].servers", "error"),
    }
    assert message(text, "pools[1].servers") == "a Front End pool has at most 16 servers, not 17"


def test_sixteen_front_end_servers_are_allowed() -> None:
    assert check(HEAD + "sites: [{name: dc1}]\npools:\n" + ee("fe1", "dc1", 2, 16)) == []


def test_more_than_two_sbas_per_branch_is_an_error() -> None:
    sbas = "".join(f"  - {{name: sba{k}, site: b1, role: sba, backup_registrar: se1,\n"
                   f"     servers: [{{name: sba{k}, address: 127.0.3.{k}}}]}}\n"
                   for k in (1, 2, 3))
    text = (HEAD + "sites: [{name: dc1}, {name: b1, kind: branch}]\npools:\n"
            + se("se1", "dc1", "127.0.1.1") + sbas)
    assert found(text) == {("pools[3].site", "error")}
    assert message(text, "pools[3].site") == (
        "branch b1 already has 2 SBAs (sba1, sba2); at most 2 per branch"
    )


def test_a_director_is_not_collocated_with_another_role() -> None:
    text = (HEAD + "sites: [{name: dc1}]\npools:\n" + ee("fe1", "dc1", 1, 1)
            + "  - {name: dir1, site: dc1, role: director, servers: [\n"
            + "     {name: dir1a, address: 127.0.1.11, sip_port: 5070, admin_port: 8070},\n"
            + "     {name: dir1b, address: 127.0.1.21, sip_port: 5070, admin_port: 8070},\n"
            + "     {name: dir1c, address: 127.0.1.99}]}\n")
    assert found(text) == {
        ("pools[1].servers[0].address", "error"), ("pools[1].servers[1].address", "error"),
    }
    assert "shares 127.0.1.11 with server fe1a of frontend pool fe1" in message(
        text, "pools[1].servers[0].address")


def test_chat_pool_at_most_8_servers_and_4_active() -> None:
    def chat(count: int, active: str = "") -> str:
        members = ", ".join(f"{{name: pc{k}, address: 127.0.1.{30 + k}}}" for k in range(count))
        return (f"  - name: chat1\n    site: dc1\n    role: chat\n{active}"
                f"    servers: [{members}]\n")

    assert check(SINGLE + chat(8, "    active_servers: [pc0, pc1, pc2, pc3]\n")) == []
    assert found(SINGLE + chat(9, "    active_servers: [pc0]\n")) == {
        ("pools[1].servers", "error")
    }
    assert found(SINGLE + chat(5)) == {("pools[1].servers", "error")}
    active = "    active_servers: [pc0, pc1, pc2, pc3, pc4, pc0]\n"
    assert found(SINGLE + chat(6, active)) == {
        ("pools[1].active_servers", "error"), ("pools[1].active_servers[5]", "error"),
    }


# --- pairing and backup registrars (DR-1, DR-8) --------------------------------------------------


def test_pairing_must_be_reciprocal_and_one_to_one() -> None:
    text = (HEAD + "sites: [{name: dc1}, {name: dc2}, {name: dc3}]\npools:\n"
            + se("se1", "dc1", "127.0.1.1", " paired_with: se2,")
            + se("se2", "dc2", "127.0.2.1", " paired_with: se3,")
            + se("se3", "dc3", "127.0.3.1", " paired_with: se2,"))
    assert found(text) == {("pools[0].paired_with", "error")}
    assert message(text, "pools[0].paired_with") == (
        "se1 is paired with se2 but se2 is paired with se3; pairing is 1:1 and reciprocal"
    )


def test_pairing_with_an_unpaired_pool_is_not_reciprocal() -> None:
    text = PAIR.replace(" paired_with: se1,", "")
    assert message(text, "pools[0].paired_with").endswith("se2 is not paired; pairing is 1:1 "
                                                          "and reciprocal")


def test_a_pool_is_not_paired_with_itself_or_with_a_non_front_end() -> None:
    text = (PAIR.replace("paired_with: se2", "paired_with: se1")
            .replace("paired_with: se1,\n     servers: [{name: se2",
                     "paired_with: dir1,\n     servers: [{name: se2")
            + "  - {name: dir1, site: dc1, role: director, servers: "
            + "[{name: dir1a, address: 127.0.1.5}]}\n")
    assert found(text) == {("pools[0].paired_with", "error"), ("pools[1].paired_with", "error")}
    assert message(text, "pools[0].paired_with") == "a pool cannot be paired with itself"


def test_paired_pools_are_in_different_sites() -> None:
    text = PAIR.replace("site: dc2", "site: dc1")
    assert found(text) == {("pools[0].paired_with", "error")}  # reported once per pair


def test_standard_pairs_with_standard_and_enterprise_with_enterprise() -> None:
    text = (TWO_SITES + "pools:\n" + se("se1", "dc1", "127.0.1.1", " paired_with: fe2,")
            + ee("fe2", "dc2", 2, 2, "    paired_with: se1\n"))
    assert found(text) == {("pools[0].paired_with", "error")}
    assert "SE pairs with SE, EE with EE" in message(text, "pools[0].paired_with")


def test_paired_pools_use_the_same_back_end_ha_scheme() -> None:
    fe1 = ee("fe1", "dc1", 1, 2, "    paired_with: fe2\n").replace(
        "127.0.1.21}}", "127.0.1.21}, mirror: {address: 127.0.1.22}}")
    text = TWO_SITES + "pools:\n" + fe1 + ee("fe2", "dc2", 2, 2, "    paired_with: fe1\n")
    assert found(text) == {("pools[0].paired_with", "error")}
    assert "fe1's Back End is mirrored but fe2's is single" in message(
        text, "pools[0].paired_with")


def test_a_pair_may_be_written_with_backup_pool_paired_with_or_both() -> None:
    assert check(PAIR.replace("paired_with", "backup_pool")) == []
    assert check(PAIR.replace("paired_with: se2", "backup_pool: se2")) == []  # mixed spellings
    both = PAIR.replace("paired_with: se2,", "backup_pool: se2, paired_with: se2,")
    assert check(both) == []


def test_pairing_rules_apply_to_backup_pool_as_to_paired_with() -> None:
    text = (HEAD + "sites: [{name: dc1}, {name: dc2}, {name: dc3}]\npools:\n"
            + se("se1", "dc1", "127.0.1.1", " backup_pool: se2,")
            + se("se2", "dc2", "127.0.2.1", " backup_pool: se3,")
            + se("se3", "dc3", "127.0.3.1", " backup_pool: se2,"))
    assert message(text, "pools[0].paired_with") == (
        "se1 is paired with se2 but se2 is paired with se3; pairing is 1:1 and reciprocal"
    )
    assert found(PAIR.replace("paired_with", "backup_pool").replace("site: dc2", "site: dc1")) \
        == {("pools[0].paired_with", "error")}


def test_a_backup_pool_conflicting_with_paired_with_is_reported_at_backup_pool() -> None:
    text = PAIR.replace("paired_with: se2,", "backup_pool: se2, paired_with: se3,")
    assert found(text) == {("pools[0].backup_pool", "error")}


def test_a_backup_pool_violation_carries_the_line_of_backup_pool(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(TWO_SITES + "pools:\n"
                    + "  - name: se1\n    site: dc1\n    role: frontend\n    edition: standard\n"
                    + "    servers: [{name: se1, address: 127.0.1.1}]\n    backup_pool: se2\n"
                    + se("se2", "dc1", "127.0.2.1", " backup_pool: se1,"))
    [violation] = validate_file(path)
    assert (violation.path, violation.line) == ("pools[0].paired_with", 10)
    assert "are both in site dc1" in violation.message


def test_only_a_front_end_pool_has_a_backup_pool() -> None:
    text = SINGLE + ("  - {name: dir1, site: dc1, role: director, backup_pool: se1,\n"
                     "     servers: [{name: dir1a, address: 127.0.1.5}]}\n")
    assert message(text, "pools[1].paired_with") == (
        "backup_pool (paired_with) does not apply to a director pool (only: frontend)"
    )


def test_a_mirror_with_a_witness_and_one_without_are_different_ha_schemes() -> None:
    mirrored = "127.0.{0}.21}}, mirror: {{address: 127.0.{0}.22}}}}"
    fe1 = ee("fe1", "dc1", 1, 2, "    backup_pool: fe2\n").replace(
        "127.0.1.21}}", mirrored.format(1)[:-1] + ", witness: {server: w1}}")
    fe2 = ee("fe2", "dc2", 2, 2, "    backup_pool: fe1\n").replace(
        "127.0.2.21}}", mirrored.format(2))
    witness = "  - {name: wit, site: w, role: witness, servers: [{name: w1, address: 127.0.9.1}]}\n"
    text = HEAD + "sites: [{name: dc1}, {name: dc2}, {name: w}]\npools:\n" + fe1 + fe2 + witness
    assert found(text) == {("pools[0].paired_with", "error")}
    assert "fe1's Back End is mirrored+witness but fe2's is mirrored" in message(
        text, "pools[0].paired_with")
    assert check(text.replace("127.0.2.22}}", "127.0.2.22}, witness: {server: w1}}")) == []


STRETCHED_PAIR = """\
name: t
sip_domain: trimaran.test
sites: [{name: dc1, rtt_ms: {dc2: 2, dc3: 2}}, {name: dc2}, {name: dc3}, {name: dc4}]
pools:
  - name: fe1
    site: dc1
    role: frontend
    edition: enterprise
    backup_pool: fe2
    servers: [{name: fe1a, address: 127.0.1.11}, {name: fe1b, address: 127.0.3.11, site: dc3}]
    backend: {principal: {address: 127.0.1.21}, mirror: {address: 127.0.3.21, site: dc3},
              witness: {address: 127.0.4.31, port: 8600, site: dc4}}
  - name: fe2
    site: dc2
    role: frontend
    edition: enterprise
    backup_pool: fe1
    servers: [{name: fe2a, address: 127.0.2.11}]
    backend: {principal: {address: 127.0.2.21}, mirror: {address: 127.0.2.22},
              witness: {address: 127.0.4.32, port: 8600, site: dc4}}
"""


def test_a_stretched_pool_shares_no_site_with_its_backup_pool() -> None:
    assert check(STRETCHED_PAIR) == []
    text = STRETCHED_PAIR.replace("127.0.3.11, site: dc3", "127.0.3.11, site: dc2")
    assert found(text) == {("pools[0].paired_with", "error")}  # reported once per pair
    assert message(text, "pools[0].paired_with") == (
        "paired pools fe1 and fe2 both have servers in site dc2; losing it would take down "
        "both (a pair spans two sites)"
    )


def test_backup_registrar_rules() -> None:
    text = (HEAD + "sites: [{name: dc1}, {name: dc2}, {name: dc3}, {name: b1, kind: branch}]\n"
            + "pools:\n"
            + se("se1", "dc1", "127.0.1.1", " paired_with: se2, backup_registrar: se3,")
            + se("se2", "dc2", "127.0.2.1", " paired_with: se1,")
            + se("se3", "dc3", "127.0.3.1", " backup_registrar: se3,")
            + se("se4", "dc3", "127.0.3.2", " backup_registrar: se3,")
            + "  - {name: sba1, site: b1, role: sba, backup_registrar: med1,\n"
            + "     servers: [{name: sba1, address: 127.0.4.1}]}\n"
            + "  - {name: sba2, site: b1, role: sba, servers: [{name: sba2, address: 127.0.4.2}]}\n"
            + "  - {name: med1, site: dc1, role: mediation,"
            + " servers: [{name: med1a, address: 127.0.1.40}]}\n")
    assert found(text) == {
        ("pools[0].backup_registrar", "error"), ("pools[2].backup_registrar", "error"),
        ("pools[3].backup_registrar", "error"), ("pools[4].backup_registrar", "error"),
        ("pools[5].backup_registrar", "warning"),
    }
    assert message(text, "pools[0].backup_registrar") == (
        "se1 is paired with se2, which is therefore its backup registrar, not se3"
    )
    assert message(text, "pools[2].backup_registrar") == (
        "a pool cannot be its own backup registrar"
    )
    assert message(text, "pools[3].backup_registrar") == (
        "backup registrar se3 is in the same site (dc3) as se4"
    )
    assert message(text, "pools[4].backup_registrar") == (
        "an SBA's backup registrar must be a Front End pool; med1 is a mediation pool"
    )


# --- Back End (BE-1, BE-2) -----------------------------------------------------------------------


def test_edition_decides_whether_a_back_end_is_needed() -> None:
    text = (HEAD + "sites: [{name: dc1}]\npools:\n"
            + se("se1", "dc1", "127.0.1.1", " backend: {principal: {address: 127.0.1.21}},")
            + ee("fe1", "dc1", 2, 2).replace("    backend: {principal: {address: 127.0.2.21}}\n",
                                             ""))
    assert found(text) == {("pools[0].backend", "error"), ("pools[1].backend", "error")}


WITNESS_POOL = ("  - {name: wit, site: w, role: witness,"
                " servers: [{name: w1, address: 127.0.9.1}]}\n")


def test_a_mirror_needs_a_principal_and_a_witness_needs_a_mirror() -> None:
    text = (HEAD + "sites: [{name: dc1}, {name: w}]\npools:\n"
            + ee("fe1", "dc1", 1).replace("{principal: {address: 127.0.1.21}}",
                                          "{mirror: {address: 127.0.1.22}}")
            + ee("fe2", "dc1", 2).replace("127.0.2.21}}",
                                          "127.0.2.21}, witness: {server: w1}}")
            + WITNESS_POOL)
    assert found(text) == {("pools[0].backend.mirror", "error"),
                           ("pools[1].backend.witness", "error")}
    assert message(text, "pools[0].backend.mirror") == "a mirror without a principal"
    assert message(text, "pools[1].backend.witness") == "a witness without a mirror"


def _mirrored(witness: str, extra_pools: str = "") -> str:
    fe1 = ee("fe1", "dc1", 1, 2).replace(
        "{principal: {address: 127.0.1.21}}",
        f"{{principal: {{address: 127.0.1.21}}, mirror: {{address: 127.0.2.21, site: dc2}},"
        f"\n              witness: {witness}}}")
    return (HEAD + "sites: [{name: dc1}, {name: dc2}, {name: w}]\npools:\n" + fe1
            + WITNESS_POOL + extra_pools)


def test_a_witness_in_a_third_site_is_fine() -> None:
    assert check(_mirrored("{server: w1}")) == []
    assert check(_mirrored("{address: 127.0.9.2, port: 7000, site: w}")) == []


def test_a_witness_in_the_principals_or_mirrors_site_is_a_warning() -> None:
    text = _mirrored("{address: 127.0.9.2, port: 7000, site: dc2}")
    assert found(text) == {("pools[0].backend.witness", "warning")}
    assert not has_errors(check(text))


def test_a_witness_is_a_witness_server_or_an_address_with_a_port() -> None:
    assert found(_mirrored("{server: fe1a}")) == {
        ("pools[0].backend.witness.server", "error"),
        ("pools[0].backend.witness", "warning"),  # and fe1a is in the principal's site
    }
    assert found(_mirrored("{server: w1, port: 7000}")) == {("pools[0].backend.witness", "error")}
    assert found(_mirrored("{address: 127.0.9.2}")) == {("pools[0].backend.witness.port", "error")}
    assert found(_mirrored("{site: w}")) == {("pools[0].backend.witness", "error")}


# --- Edge (EDGE-3..5) ----------------------------------------------------------------------------


def test_edge_next_hop_edge_pool_and_federation_route_point_at_the_right_roles() -> None:
    text = (SINGLE.replace("edition: standard,", "edition: standard, edge_pool: med1,")
            + "  - {name: edge1, site: dc1, role: edge,\n"
            + "     servers: [{name: e1, address: 127.0.1.50, external_address: 127.0.101.50}]}\n"
            + "  - {name: edge2, site: dc1, role: edge, next_hop: med1,\n"
            + "     servers: [{name: e2, address: 127.0.1.51, external_address: 127.0.101.51}]}\n"
            + "  - {name: med1, site: dc1, role: mediation,"
            + " servers: [{name: m1, address: 127.0.1.52}]}\n"
            + "federation_route: se1\n")
    assert found(text) == {
        ("pools[0].edge_pool", "error"), ("pools[1].next_hop", "error"),
        ("pools[2].next_hop", "error"), ("federation_route", "error"),
    }


# --- stretched pools (METRO-1) -------------------------------------------------------------------


def _stretched(sites: str, far: str = "dc2", role: str = "frontend") -> str:
    return (HEAD + f"sites: [{sites}]\npools:\n"
            + f"  - {{name: fe1, site: dc1, role: {role}, servers: [{{name: fe1a, address: "
            + f"127.0.1.11}}, {{name: fe1b, address: 127.0.2.11, site: {far}}}]}}\n"
            + ("" if role == "frontend" else se("se1", "dc1", "127.0.1.1")))


METRO_BACKEND = ("backend: {principal: {address: 127.0.1.21}, mirror: {address: 127.0.2.21, "
                 "site: dc2}, witness: {address: 127.0.9.31, port: 8600, site: dc3}}")


def _stretched_ee(backend: str = METRO_BACKEND) -> str:
    return _stretched("{name: dc1, rtt_ms: {dc2: 20}}, {name: dc2}, {name: dc3}").replace(
        "role: frontend,", f"role: frontend, edition: enterprise, {backend},")


def test_a_stretched_pool_within_the_metro_rtt_limit_is_fine() -> None:
    ok = _stretched_ee()
    assert check(ok) == []
    same_metro = ok.replace("{name: dc1, rtt_ms: {dc2: 20}}, {name: dc2}",
                            "{name: dc1, metro: m}, {name: dc2, metro: m}")
    assert check(same_metro) == []


def test_a_stretched_pools_back_end_must_survive_either_site() -> None:
    """METRO-1: principal in one site, mirror in the other, witness in a third."""
    no_mirror = _stretched_ee("backend: {principal: {address: 127.0.1.21}}")
    assert found(no_mirror) == {("pools[0].backend.mirror", "warning")}
    assert "losing site dc1 stops every write" in message(no_mirror, "pools[0].backend.mirror")
    same_site = _stretched_ee(METRO_BACKEND.replace("site: dc2}", "site: dc1}"))
    assert found(same_site) == {("pools[0].backend.mirror.site", "warning")}
    witness_in_b = _stretched_ee(METRO_BACKEND.replace("site: dc3", "site: dc2"))
    assert found(witness_in_b) == {("pools[0].backend.witness", "warning")}
    assert "put the witness in a third site" in message(witness_in_b,
                                                        "pools[0].backend.witness")
    no_witness = _stretched_ee(METRO_BACKEND.replace(
        ", witness: {address: 127.0.9.31, port: 8600, site: dc3}", ""))
    assert found(no_witness) == {("pools[0].backend.witness", "warning")}


def test_a_stretched_pool_beyond_the_rtt_limit_is_an_error() -> None:
    text = _stretched("{name: dc1}, {name: dc2, rtt_ms: {dc1: 35}}", role="director")
    assert found(text) == {("pools[0].servers[1].site", "error")}
    assert message(text, "pools[0].servers[1].site") == (
        "pool fe1 stretches from dc1 to dc2, 35 ms apart; the limit is 20 ms"
    )


@pytest.mark.parametrize("rtt", [30, 20.5])
def test_the_metro_example_stretched_over_more_than_20_ms_is_refused_at_the_far_server(
        rtt: float, tmp_path: Path) -> None:
    """METRO-1: examples/metro.yaml with sites a and b `rtt` ms apart (a declared common
    metro does not excuse a measured RTT over the limit)."""
    text = (EXAMPLES_DIR / "metro.yaml").read_text()
    assert "rtt_ms: {b: 2}" in text
    assert check(text.replace("rtt_ms: {b: 2}", "rtt_ms: {b: 20}")) == []
    far = text.replace("rtt_ms: {b: 2}", f"rtt_ms: {{b: {rtt}}}")
    assert found(far) == {("pools[0].servers[2].site", "error")}  # fe1c, first one in b
    assert message(far, "pools[0].servers[2].site") == (
        f"pool fe1 stretches from a to b, {rtt:g} ms apart; the limit is 20 ms")
    (tmp_path / "far.yaml").write_text(far)
    with pytest.raises(TopologyError, match=r"pools\[0\]\.servers\[2\]\.site.*limit is 20 ms"):
        load_validated(tmp_path / "far.yaml")


def test_a_stretched_pool_with_unknown_distance_is_an_error() -> None:
    text = _stretched("{name: dc1, metro: a}, {name: dc2, metro: b}", role="director")
    assert found(text) == {("pools[0].servers[1].site", "error")}


def test_chat_pools_span_data_centers_by_design() -> None:
    assert check(_stretched("{name: dc1}, {name: dc2}", role="chat")) == []


# --- sizing (FE-6) -------------------------------------------------------------------------------


def test_expected_users_beyond_server_capacity_is_an_error() -> None:
    text = HEAD + "sites: [{name: dc1}]\npools:\n" + ee("fe1", "dc1", 1, 3,
                                                        "    expected_users: 20000\n")
    assert message(text, "pools[0].expected_users") == (
        "20,000 users exceed 3 server(s) x 6,660 users per server"
    )


def test_expected_users_beyond_the_pool_limit_is_an_error() -> None:
    text = HEAD + "sites: [{name: dc1}]\npools:\n" + ee("fe1", "dc1", 1, 16,
                                                        "    expected_users: 90000\n")
    assert message(text, "pools[0].expected_users") == (
        "90,000 users exceed the pool limit of 80,000"
    )


def test_survivors_of_one_server_failure_over_capacity_is_a_warning() -> None:
    text = HEAD + "sites: [{name: dc1}]\npools:\n" + ee("fe1", "dc1", 1, 3,
                                                        "    expected_users: 15000\n")
    assert found(text) == {("pools[0].expected_users", "warning")}


def test_capacity_overrides_are_used_and_must_be_positive() -> None:
    base = HEAD + "sites: [{name: dc1}]\npools:\n"
    roomy = "    expected_users: 20000\n    capacity: {users_per_server: 10000}\n"
    assert check(base + ee("fe1", "dc1", 1, 3, roomy)) == []
    bad = "    capacity: {users_per_server: 0, users_per_pool: -1}\n"
    assert found(base + ee("fe1", "dc1", 1, 3, bad)) == {
        ("pools[0].capacity.users_per_server", "error"),
        ("pools[0].capacity.users_per_pool", "error"),
    }


def test_each_paired_pool_must_carry_both_pools_users() -> None:
    text = (PAIR.replace("paired_with: se2,", "paired_with: se2, expected_users: 4000,")
            .replace("paired_with: se1,", "paired_with: se1, expected_users: 3000,"))
    assert found(text) == {("pools[0].expected_users", "error"),
                           ("pools[1].expected_users", "error")}
    assert message(text, "pools[1].expected_users") == (
        "se2 must carry its users and se1's when either fails over: "
        "3,000 + 4,000 = 7,000 > 6,660"
    )
    fits = text.replace("4000", "3000")
    assert check(fits) == []


# --- settings ------------------------------------------------------------------------------------


def test_default_settings_are_consistent() -> None:
    assert check(SINGLE) == []


def test_failure_detection_and_keepalive_must_be_shorter_than_min_registration_expiry() -> None:
    text = SINGLE + ("settings: {registration_min_expires: 30, failure_detection_seconds: 30,"
                     " keepalive_seconds: 45}\n")
    assert found(text) == {("settings.failure_detection_seconds", "error"),
                           ("settings.keepalive_seconds", "error")}
    assert message(text, "settings.failure_detection_seconds") == (
        "failure detection (30 s) must be shorter than the minimum registration expiry (30 s)"
    )


def test_registration_expiries_must_be_ordered_min_default_max() -> None:
    text = SINGLE + ("settings: {registration_min_expires: 300, registration_default_expires: 200,"
                     " registration_max_expires: 100}\n")
    assert found(text) == {("settings.registration_default_expires", "error"),
                           ("settings.registration_max_expires", "error")}


def test_heartbeats_must_be_shorter_than_detection_and_fit_twice() -> None:
    assert found(SINGLE + "settings: {heartbeat_seconds: 10}\n") == {
        ("settings.heartbeat_seconds", "error")
    }
    assert found(SINGLE + "settings: {heartbeat_seconds: 6}\n") == {
        ("settings.heartbeat_seconds", "warning")
    }


def test_timers_must_be_positive() -> None:
    text = SINGLE + "settings: {resiliency_failover_seconds: 0, resiliency_fallback_seconds: -5}\n"
    assert found(text) == {("settings.resiliency_failover_seconds", "error"),
                           ("settings.resiliency_fallback_seconds", "error")}


# --- a full deployment, many violations at once, reporting ---------------------------------------

FULL = """\
name: full
sip_domain: trimaran.test
federation_route: edge1
federation_partners: [{domain: partner.test, edges: ['192.0.2.10:5061']}]
sites:
  - {name: dc1, rtt_ms: {dc2: 30, w: 40}}
  - {name: dc2, rtt_ms: {w: 40}}
  - {name: w}
  - {name: b1, kind: branch}
pools:
  - name: dir1
    site: dc1
    role: director
    servers: [{name: dir1a, address: 127.0.1.1}, {name: dir1b, address: 127.0.1.2}]
  - name: fe1
    site: dc1
    role: frontend
    edition: enterprise
    paired_with: fe2
    expected_users: 10000
    edge_pool: edge1
    servers:
      - {name: fe1a, address: 127.0.1.11}
      - {name: fe1b, address: 127.0.1.12}
      - {name: fe1c, address: 127.0.1.13}
    backend:
      principal: {address: 127.0.1.21}
      mirror: {address: 127.0.1.22}
      witness: {server: w1}
  - name: fe2
    site: dc2
    role: frontend
    edition: enterprise
    paired_with: fe1
    expected_users: 8000
    servers:
      - {name: fe2a, address: 127.0.2.11}
      - {name: fe2b, address: 127.0.2.12}
      - {name: fe2c, address: 127.0.2.13}
    backend:
      principal: {address: 127.0.2.21}
      mirror: {address: 127.0.2.22}
      witness: {server: w1}
  - {name: med1, site: dc1, role: mediation, servers: [{name: med1a, address: 127.0.1.31}]}
  - {name: edge1, site: dc1, role: edge, next_hop: dir1, federation: true,
     servers: [{name: edge1a, address: 127.0.1.41, external_address: 127.0.101.41},
               {name: edge1b, address: 127.0.1.42, external_address: 127.0.101.42}]}
  - name: chat1
    site: dc1
    role: chat
    active_servers: [pc1, pc2]
    servers:
      - {name: pc1, address: 127.0.1.51}
      - {name: pc2, address: 127.0.1.52}
      - {name: pc3, address: 127.0.2.51, site: dc2}
      - {name: pc4, address: 127.0.2.52, site: dc2}
    backend: {principal: {address: 127.0.1.61}}
  - {name: sba1, site: b1, role: sba, backup_registrar: fe1,
     servers: [{name: sba1, address: 127.0.3.1}]}
  - {name: wit, site: w, role: witness, servers: [{name: w1, address: 127.0.9.1}]}
settings:
  failure_detection_seconds: 5
  heartbeat_seconds: 1
  keepalive_seconds: 15
"""


def test_a_full_deployment_of_every_role_is_valid() -> None:
    assert check(FULL) == []


BROKEN = """\
name: broken
sip_domain: trimaran.test
sites: [{name: dc1}, {name: dc1}, {name: b1, kind: branch}]
pools:
  - name: se1
    site: dc1
    role: frontend
    edition: standard
    paired_with: fe2
    backup_registrar: se1
    expected_users: 14000
    servers: [{name: se1, address: 127.0.1.1, colour: red}, {name: se1b, address: localhost}]
  - name: fe2
    site: dc1
    role: frontend
    edition: enterprise
    servers: [{name: se1, address: 127.0.1.1}]
    backend: {mirror: {address: 127.0.1.22}}
  - {name: dir1, site: dc9, role: director, servers: [{name: d1, address: 127.0.1.1, sip_port: 5070,
     admin_port: 8070}]}
  - {name: sba1, site: b1, role: sba, backup_registrar: dir1,
     servers: [{name: s1, address: 127.0.3.1}]}
settings: {failure_detection_seconds: 90}
"""


def test_a_topology_breaking_many_rules_reports_every_violation_at_once() -> None:
    violations = check(BROKEN)
    assert {(v.path, v.severity) for v in violations} == {
        ("pools[0].servers[0].colour", "error"),         # unknown key
        ("sites[1].name", "error"),                      # duplicate site
        ("pools[1].servers[0].name", "error"),           # duplicate server name
        ("pools[0].servers[1].address", "error"),        # not an IP literal
        ("pools[1].servers[0].sip_port", "error"),       # same address:port as se1
        ("pools[1].servers[0].admin_port", "error"),
        ("pools[2].site", "error"),                      # unknown site
        ("pools[0].servers", "error"),                   # SE with 2 servers
        ("pools[0].paired_with", "error"),               # not reciprocal (+ same site, SE/EE)
        ("pools[0].backup_registrar", "error"),          # itself
        ("pools[3].backup_registrar", "error"),          # SBA's backup is a Director
        ("pools[2].servers[0].address", "error"),        # Director collocated
        ("pools[1].backend.mirror", "error"),            # mirror without principal
        ("pools[0].expected_users", "error"),            # over one server's capacity
        ("settings.failure_detection_seconds", "error"),  # >= min registration expiry
    }
    paired = [v.message for v in violations if v.path == "pools[0].paired_with"]
    assert len(paired) == 3
    assert all(v.line is not None for v in violations)


def test_load_validated_raises_one_error_listing_every_violation(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    with pytest.raises(TopologyError) as caught:
        load_validated(path)
    assert caught.value.violations == validate_file(path)
    assert len(caught.value.violations) == 17
    assert str(path) in str(caught.value)


def test_load_validated_accepts_warnings_only(tmp_path: Path) -> None:
    path = tmp_path / "warn.yaml"
    path.write_text(textwrap.dedent(SINGLE) + "settings: {heartbeat_seconds: 6}\n")
    assert load_validated(path).settings.heartbeat_seconds == 6.0


def test_rule_violations_carry_the_line_of_their_path(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(PAIR.replace("site: dc2", "site: dc1"))
    [violation] = validate_file(path)
    assert (violation.path, violation.line) == ("pools[0].paired_with", 5)


def test_validate_runs_on_a_model_and_returns_plain_violations() -> None:
    violations = validate(parse_topology(PAIR.replace("site: dc2", "site: dc1")))
    assert [(v.path, v.line) for v in violations] == [("pools[0].paired_with", None)]
    assert len({rule.name for rule in RULES}) == len(RULES)


def test_format_violations_lists_errors_then_warnings_and_counts() -> None:
    violations = [
        Violation("settings.heartbeat_seconds", "slow", "warning", 9),
        Violation("pools[0].name", "bad", "error", 4),
        Violation("", "whole file", "error"),
    ]
    assert format_violations(violations) == (
        "error: pools[0].name (line 4): bad\n"
        "error: (document): whole file\n"
        "warning: settings.heartbeat_seconds (line 9): slow\n"
        "2 errors, 1 warning"
    )
    assert format_violations([]) == "no violations"
    assert has_errors(violations)
    assert not has_errors(violations[:1])
