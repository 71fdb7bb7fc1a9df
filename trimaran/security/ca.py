"""The deployment CA and the servers' certificates (SPEC OPS-6, `trimaran certs`).

Layout of a certificate directory (the run directory's ``certs/`` by default)::

    DIR/ca.pem  DIR/ca.key         the deployment CA (EC P-256, self-signed), key 0600
    DIR/NAME.pem  DIR/NAME.key     a server's certificate (signed by the CA) and key, 0600

A server certificate names the server (DNS SAN = its name, and the SIP domain) and
its addresses (IP SANs), and is good for both ends of a connection (serverAuth and
clientAuth), so the same file serves the TLS listener and mutual TLS to other servers.
Keys are written whole to a private temporary file and renamed into place; they are
never logged.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_NAME = "ca"
CA_DAYS = 3650
SERVER_DAYS = 825          # the longest validity browsers and most TLS stacks accept
WARN_DAYS = 30             # `certs list` and `status` warn below this many days left
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}\Z")


class CertError(Exception):
    """A CA or certificate operation failed: missing or unreadable files, bad input."""


@dataclass(frozen=True, slots=True)
class CertInfo:
    """What one certificate file says: who, until when, and who signed it."""

    name: str
    path: Path
    subject: str
    issuer: str
    not_after: dt.datetime
    days_left: int
    is_ca: bool
    dns_names: tuple[str, ...] = ()
    addresses: tuple[str, ...] = ()

    @property
    def expiring(self) -> bool:
        """True when fewer than `WARN_DAYS` days are left (or it has expired)."""
        return self.days_left < WARN_DAYS

    def to_json(self) -> dict[str, object]:
        """The certificate for `status --json` and `certs list --json`."""
        return {"name": self.name, "path": str(self.path), "subject": self.subject,
                "issuer": self.issuer, "not_after": self.not_after.isoformat(),
                "days_left": self.days_left, "ca": self.is_ca, "warning": self.expiring,
                "dns_names": list(self.dns_names), "addresses": list(self.addresses)}


def check_name(name: str) -> str:
    """`name` when it can name a certificate file (a server name), else `CertError`."""
    if not _NAME.match(name) or name == CA_NAME:
        raise CertError(f"bad certificate name {name!r}: use a server name (letters, digits, "
                        f"'.', '_', '-'; at most 63 characters; not {CA_NAME!r})")
    return name


def cert_path(directory: Path, name: str) -> Path:
    """Where the certificate `name` lives in `directory`."""
    return directory / f"{name}.pem"


def key_path(directory: Path, name: str) -> Path:
    """Where the key of `name` lives in `directory`."""
    return directory / f"{name}.key"


# --- creating -----------------------------------------------------------------------------


def init_ca(directory: Path, *, common_name: str = "Trimaran deployment CA",
            days: int = CA_DAYS, force: bool = False, now: dt.datetime | None = None,
            ) -> CertInfo:
    """Create the deployment CA in `directory`; refuse to replace one unless `force`."""
    _check_days(days)
    cert_file, key_file = cert_path(directory, CA_NAME), key_path(directory, CA_NAME)
    if not force and (cert_file.exists() or key_file.exists()):
        raise CertError(f"{directory} already holds a CA ({cert_file.name}); certificates "
                        f"it signed would stop verifying: pass --force to replace it")
    _make_dir(directory)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Trimaran")])
    start = _now(now)
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start - dt.timedelta(minutes=5))
            .not_valid_after(start + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    _write_key(key_file, key)
    _write_atomic(cert_file, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return _info(CA_NAME, cert_file, cert, start)


def issue(directory: Path, name: str, *, addresses: Sequence[str] = (),
          dns_names: Sequence[str] = (), days: int = SERVER_DAYS,
          now: dt.datetime | None = None) -> CertInfo:
    """Issue (or re-issue) the certificate of server `name`, signed by the CA in `directory`.

    SANs: DNS `name` and `dns_names` (e.g. the SIP domain), IP `addresses`."""
    check_name(name)
    _check_days(days)
    ips = [_ip(address) for address in addresses]
    ca_cert, ca_key = load_ca(directory)
    key = ec.generate_private_key(ec.SECP256R1())
    start = _now(now)
    dns = list(dict.fromkeys((name, *dns_names)))
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    sans += [x509.IPAddress(ip) for ip in ips]
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name),
                                     x509.NameAttribute(NameOID.ORGANIZATION_NAME,
                                                        "Trimaran")]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start - dt.timedelta(minutes=5))
            .not_valid_after(min(start + dt.timedelta(days=days),
                                 ca_cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False,
                                         crl_sign=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=True, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_file = cert_path(directory, name)
    _write_key(key_path(directory, name), key)
    _write_atomic(cert_file, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return _info(name, cert_file, cert, start)


def ensure_certificates(directory: Path, servers: Iterable[tuple[str, Sequence[str]]], *,
                        dns_names: Sequence[str] = ()) -> list[str]:
    """Create the CA when `directory` has none, and a certificate for every server
    (name, addresses) that has none; return what was created (names, "ca" first)."""
    created: list[str] = []
    if not cert_path(directory, CA_NAME).exists():
        init_ca(directory)
        created.append(CA_NAME)
    for name, addresses in servers:
        if not cert_path(directory, name).exists() or not key_path(directory, name).exists():
            issue(directory, name, addresses=addresses, dns_names=dns_names)
            created.append(name)
    return created


# --- reading --------------------------------------------------------------------------------


def load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The CA certificate and key of `directory` (`CertError` when missing or unreadable)."""
    cert_file, key_file = cert_path(directory, CA_NAME), key_path(directory, CA_NAME)
    if not cert_file.exists() or not key_file.exists():
        raise CertError(f"no CA in {directory}: create one with `trimaran certs init "
                        f"--dir {directory}`")
    cert = read_cert(cert_file)
    try:
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise CertError(f"cannot read the CA key {key_file}: {_why(exc)}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertError(f"{key_file} is not an EC private key")
    return cert, key


def read_cert(path: Path) -> x509.Certificate:
    """The certificate in the PEM file `path` (`CertError` when unreadable)."""
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except FileNotFoundError:
        raise CertError(f"no certificate at {path}") from None
    except (OSError, ValueError) as exc:
        raise CertError(f"cannot read the certificate {path}: {_why(exc)}") from None


def inspect(path: Path, *, now: dt.datetime | None = None) -> CertInfo:
    """What the certificate at `path` says, and how many days it has left."""
    return _info(path.stem, path, read_cert(path), _now(now))


def list_certs(directory: Path, *, now: dt.datetime | None = None) -> list[CertInfo]:
    """Every certificate in `directory`, the CA first, then by name."""
    if not directory.is_dir():
        raise CertError(f"{directory} is not a directory")
    paths = sorted(directory.glob("*.pem"), key=lambda p: (p.stem != CA_NAME, p.stem))
    return [inspect(path, now=now) for path in paths]


def signed_by_ca(directory: Path, path: Path) -> bool:
    """True when the certificate at `path` carries a valid signature of the CA."""
    ca_cert, _ = load_ca(directory)
    cert = read_cert(path)
    public = ca_cert.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey) or cert.signature_hash_algorithm is None:
        return False
    try:
        public.verify(cert.signature, cert.tbs_certificate_bytes,
                      ec.ECDSA(cert.signature_hash_algorithm))
    except InvalidSignature:
        return False
    return True


# --- helpers --------------------------------------------------------------------------------


def _info(name: str, path: Path, cert: x509.Certificate, now: dt.datetime) -> CertInfo:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = tuple(san.get_values_for_type(x509.DNSName))
        ips = tuple(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        dns, ips = (), ()
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    not_after = cert.not_valid_after_utc
    return CertInfo(name, path, cert.subject.rfc4514_string(), cert.issuer.rfc4514_string(),
                    not_after, (not_after - now).days, is_ca, dns, ips)


def _now(now: dt.datetime | None) -> dt.datetime:
    return now if now is not None else dt.datetime.now(dt.UTC)


def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        raise CertError(f"bad address {address!r}: give an IP address") from None


def _check_days(days: int) -> None:
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise CertError(f"days must be a positive number of days, got {days!r}")


def _why(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or \
        type(exc).__name__


def _make_dir(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CertError(f"cannot create {directory}: {_why(exc)}") from None


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    _write_atomic(path, data, 0o600)


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write `path` whole with `mode` (a private temporary file renamed into place)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CertError(f"cannot write {path}: {_why(exc)}") from None
