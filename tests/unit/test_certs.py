"""The deployment CA, server certificates, TLS contexts and `trimaran certs` (OPS-6)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from trimaran.cli.main import cli
from trimaran.security.ca import (
    CertError,
    init_ca,
    inspect,
    issue,
    list_certs,
    read_cert,
    signed_by_ca,
)
from trimaran.security.deployment import prepare, server_policy
from trimaran.security.tlsconf import CertFiles, client_context, server_context
from trimaran.topology.loader import parse_topology
from trimaran.topology.validator import validate_text

HOST = "127.0.55.200"


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "certs"
    init_ca(directory)
    return directory


def test_ops6_init_creates_ca_with_private_key(tmp_path: Path) -> None:
    directory = tmp_path / "certs"
    info = init_ca(directory)
    assert info.is_ca and "Trimaran deployment CA" in info.subject
    assert stat.S_IMODE((directory / "ca.key").stat().st_mode) == 0o600
    assert info.days_left >= 3649


def test_ops6_init_refuses_to_overwrite_without_force(ca_dir: Path) -> None:
    before = (ca_dir / "ca.pem").read_bytes()
    with pytest.raises(CertError, match=r"already holds a CA.*--force"):
        init_ca(ca_dir)
    assert (ca_dir / "ca.pem").read_bytes() == before
    init_ca(ca_dir, force=True)
    assert (ca_dir / "ca.pem").read_bytes() != before


def test_ops6_issued_certificate_names_server_domain_and_addresses(ca_dir: Path) -> None:
    info = issue(ca_dir, "fe1a", addresses=["127.0.55.1"], dns_names=["example.com"])
    assert info.dns_names == ("fe1a", "example.com") and info.addresses == ("127.0.55.1",)
    assert not info.is_ca and info.issuer == inspect(ca_dir / "ca.pem").subject
    cert = read_cert(ca_dir / "fe1a.pem")
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.55.1")]
    assert stat.S_IMODE((ca_dir / "fe1a.key").stat().st_mode) == 0o600
    assert signed_by_ca(ca_dir, ca_dir / "fe1a.pem")


def test_ops6_certificate_of_another_ca_is_not_signed_by_ours(ca_dir: Path,
                                                               tmp_path: Path) -> None:
    other = tmp_path / "other"
    init_ca(other)
    issue(other, "intruder", addresses=[HOST])
    assert not signed_by_ca(ca_dir, other / "intruder.pem")


def test_ops6_list_reports_days_left_and_warns_below_30_days(ca_dir: Path) -> None:
    issue(ca_dir, "fe1a", addresses=["127.0.55.1"], days=10)
    issue(ca_dir, "fe1b", addresses=["127.0.55.2"])
    found = {info.name: info for info in list_certs(ca_dir)}
    assert list(found) == ["ca", "fe1a", "fe1b"]
    assert found["fe1a"].expiring and found["fe1a"].days_left in (9, 10)
    assert not found["fe1b"].expiring
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=11)
    assert inspect(ca_dir / "fe1a.pem", now=later).days_left < 0


def test_ops6_issue_refuses_bad_input(ca_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(CertError, match="bad certificate name"):
        issue(ca_dir, "../etc/passwd")
    with pytest.raises(CertError, match="bad certificate name"):
        issue(ca_dir, "ca")
    with pytest.raises(CertError, match=r"bad address 'example\.com'"):
        issue(ca_dir, "fe1a", addresses=["example.com"])
    with pytest.raises(CertError, match="no CA in"):
        issue(tmp_path / "empty", "fe1a")
    (ca_dir / "ca.key").write_text("not a key")
    with pytest.raises(CertError, match="cannot read the CA key"):
        issue(ca_dir, "fe1a")


# --- contexts over a real socket pair ---------------------------------------------------------


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> dict[str, object]:
    """One TLS handshake on HOST; returns the server side's view of the client cert."""
    seen: dict[str, object] = {}
    with socket.create_server((HOST, 0)) as listener:
        port = listener.getsockname()[1]

        def accept() -> None:
            conn, _ = listener.accept()
            try:
                with server.wrap_socket(conn, server_side=True) as tls:
                    seen["peer"] = tls.getpeercert()
                    tls.recv(1)
            except (ssl.SSLError, OSError) as exc:
                seen["error"] = exc

        thread = threading.Thread(target=accept)
        thread.start()
        try:
            with socket.create_connection((HOST, port), timeout=5) as raw, \
                    client.wrap_socket(raw, server_hostname=HOST) as tls:
                tls.sendall(b"x")
                tls.recv(1)  # the server closes: EOF, or an alert for a refused cert
        except (ssl.SSLError, OSError) as exc:
            seen["client_error"] = exc
        thread.join(5)
    return seen


def test_ops6_mutual_tls_accepts_deployment_certificate(ca_dir: Path) -> None:
    issue(ca_dir, "fe1a", addresses=[HOST])
    issue(ca_dir, "fe1b", addresses=["127.0.55.201"])
    a, b = CertFiles.in_directory(ca_dir, "fe1a"), CertFiles.in_directory(ca_dir, "fe1b")
    seen = _handshake(server_context(a, client_certs="required"), client_context(b.ca, b))
    assert "error" not in seen and "client_error" not in seen
    assert ("commonName", "fe1b") in [item for rdn in seen["peer"]["subject"]  # type: ignore[index]
                                      for item in rdn]


def test_ops6_client_certificate_from_another_ca_fails_verification(ca_dir: Path,
                                                                    tmp_path: Path) -> None:
    issue(ca_dir, "fe1a", addresses=[HOST])
    other = tmp_path / "other"
    init_ca(other)
    issue(other, "intruder", addresses=["127.0.55.201"])
    ours = CertFiles.in_directory(ca_dir, "fe1a")
    theirs = CertFiles.in_directory(other, "intruder")
    seen = _handshake(server_context(ours, client_certs="optional"),
                      client_context(ours.ca, theirs))
    assert isinstance(seen.get("error"), ssl.SSLError)
    assert "certificate verify failed" in str(seen["error"])


def test_ops6_client_refuses_server_certificate_from_another_ca(ca_dir: Path,
                                                                tmp_path: Path) -> None:
    other = tmp_path / "other"
    init_ca(other)
    issue(other, "intruder", addresses=[HOST])
    seen = _handshake(server_context(CertFiles.in_directory(other, "intruder"),
                                     client_certs="none"),
                      client_context(ca_dir / "ca.pem"))
    assert isinstance(seen.get("client_error"), ssl.SSLCertVerificationError)


def test_ops6_contexts_report_missing_files(ca_dir: Path) -> None:
    with pytest.raises(CertError, match="missing certificate or key"):
        server_context(CertFiles.in_directory(ca_dir, "nobody"))
    with pytest.raises(CertError, match="missing CA certificate"):
        client_context(ca_dir / "nope.pem")


# --- the CLI --------------------------------------------------------------------------------


def test_ops6_certs_cli_init_issue_list(tmp_path: Path) -> None:
    runner = CliRunner()
    directory = str(tmp_path / "c")
    assert runner.invoke(cli, ["certs", "init", "--dir", directory]).exit_code == 0
    again = runner.invoke(cli, ["certs", "init", "--dir", directory])
    assert again.exit_code == 1 and "--force" in again.output
    issued = runner.invoke(cli, ["certs", "issue", "fe1a", "--dir", directory,
                                 "--address", "127.0.55.1", "--days", "5"])
    assert issued.exit_code == 0, issued.output
    listed = runner.invoke(cli, ["certs", "list", "--dir", directory])
    assert listed.exit_code == 0
    line = next(row for row in listed.output.splitlines() if row.startswith("fe1a"))
    assert "days left" in line and "WARNING" in line


def test_ops6_certs_cli_errors_are_clear(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(cli, ["certs", "issue", "fe1a", "--dir", str(tmp_path)])
    assert missing.exit_code == 1 and "no CA in" in missing.output
    assert runner.invoke(cli, ["certs", "init", "--dir", str(tmp_path)]).exit_code == 0
    bad = runner.invoke(cli, ["certs", "issue", "a b", "--dir", str(tmp_path)])
    assert bad.exit_code == 1 and "bad certificate name" in bad.output
    (tmp_path / "broken.pem").write_text("garbage")
    unreadable = runner.invoke(cli, ["certs", "list", "--dir", str(tmp_path)])
    assert unreadable.exit_code == 1 and "cannot read the certificate" in unreadable.output


# --- the topology ---------------------------------------------------------------------------

TOPOLOGY = """
name: t
sip_domain: example.com
sites: [{name: dc1}]
pools:
  - name: fe1
    site: dc1
    role: frontend
    edition: standard
    servers:
      - {name: fe1a, address: 127.0.55.1}
settings:
  tls: %s
"""


def _messages(tls: str) -> list[str]:
    return [f"{v.path}: {v.message}" for v in validate_text(TOPOLOGY % tls)]


def test_ops6_topology_tls_section_is_validated() -> None:
    assert _messages("{enabled: true, mutual_between_servers: true}") == []
    assert any("mutual_between_servers needs TLS" in m
               for m in _messages("{mutual_between_servers: true}"))
    assert any("settings.tls.sip_port" in m for m in _messages("{enabled: true, sip_port: 5060}"))
    assert any("settings.tls.colour" in m for m in _messages("{colour: blue}"))
    named = _messages("{enabled: true, certificates: [{server: nobody, cert: rel.pem, "
                      "key: /k.key}]}")
    assert any("no server named 'nobody'" in m for m in named)
    assert any("cert must be an absolute path" in m for m in named)


def test_ops6_up_creates_missing_certificates_and_names_missing_files(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    topology = parse_topology(TOPOLOGY % "{enabled: true, mutual_between_servers: true}")
    # mutual TLS: HTTP between servers needs the operator CLI's certificate too
    assert prepare(topology, certs) == ["ca", "fe1a", "operator"]
    assert prepare(topology, certs) == []                  # idempotent
    policy = server_policy(topology, certs, "fe1a")
    assert policy is not None and policy.mutual
    assert policy.peers[("127.0.55.1", 5060)] == ("127.0.55.1", 5061)
    named = parse_topology(TOPOLOGY % (
        "{enabled: true, certificates: [{server: fe1a, cert: /nonexistent/fe1a.pem, "
        "key: /nonexistent/fe1a.key}]}"))
    with pytest.raises(CertError, match=r"certificates\[0\]\.cert: /nonexistent/fe1a\.pem"):
        prepare(named, certs)
    assert prepare(parse_topology(TOPOLOGY % "{enabled: false}"), tmp_path / "none") == []
