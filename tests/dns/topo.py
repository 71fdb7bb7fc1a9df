"""A small two-site topology with dns servers, for the dns role's tests."""

from __future__ import annotations

from trimaran.topology.loader import parse_topology
from trimaran.topology.model import Topology

DOMAIN = "trimaran.test"
TEXT = """
name: dns-test
sip_domain: trimaran.test
sites: [{name: dc1}, {name: dc2}]
pools:
  - name: fe1
    site: dc1
    role: frontend
    edition: enterprise
    backend: {principal: {address: 127.0.16.30}}
    servers:
      - {name: fe1a, address: 127.0.16.11, sip_port: 5160, admin_port: 8160}
      - {name: fe1b, address: 127.0.16.12, sip_port: 5161, admin_port: 8161}
  - name: se2
    site: dc2
    role: frontend
    edition: standard
    servers: [{name: se2, address: 127.0.16.21, sip_port: 5170, admin_port: 8170}]
  - name: dns1
    site: dc1
    role: dns
    servers: [{name: ns1, address: 127.0.16.51, dns_port: 5353, admin_port: 8151}]
  - name: dns2
    site: dc2
    role: dns
    servers: [{name: ns2, address: 127.0.16.52, dns_port: 5353, admin_port: 8152}]
"""


def topology(text: str = TEXT) -> Topology:
    return parse_topology(text)
