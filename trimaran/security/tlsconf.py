"""`ssl.SSLContext`s of a server, from its certificate files (SPEC OPS-6).

* server side: our certificate; a client certificate is not asked for
  (``none``: the Edge's external side, where remote users and partners connect),
  verified against the deployment CA when one is presented (``optional``: a client
  without one gets in, one with a certificate of another CA is refused in the
  handshake), or demanded (``required``);
* client side: the peer is verified against the deployment CA (its certificate must
  name the address we connect to), and our certificate is presented for mutual TLS.

TLS 1.2 is the oldest version offered either way.

A handshake a listener refuses (a certificate of another CA, plain text on a TLS port,
no common protocol) is counted per context (`handshakes_refused`) and logged with its
reason (at most one line a second; the lines held back are counted in the next):
asyncio and aiohttp drop such connections silently.
"""

from __future__ import annotations

import logging
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from trimaran.security.ca import CA_NAME, CertError, cert_path, key_path

log = logging.getLogger(__name__)

ClientCerts = Literal["none", "optional", "required"]
_VERIFY = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


@dataclass(frozen=True, slots=True)
class CertFiles:
    """The files one server needs: the deployment CA, its certificate and its key."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def in_directory(cls, directory: Path, name: str) -> CertFiles:
        """The default layout: ``DIR/ca.pem``, ``DIR/NAME.pem``, ``DIR/NAME.key``."""
        return cls(cert_path(directory, CA_NAME), cert_path(directory, name),
                   key_path(directory, name))

    def missing(self) -> list[Path]:
        """The files that do not exist."""
        return [path for path in (self.ca, self.cert, self.key) if not path.exists()]


def server_context(files: CertFiles, *, client_certs: ClientCerts = "optional",
                   ) -> ssl.SSLContext:
    """The context of a TLS listener presenting `files.cert` (refused handshakes are
    counted and logged, see the module docstring)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.sslobject_class = _CountedObject
    _refused[id(context)] = _Refusals()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(context, files)
    context.verify_mode = _VERIFY[client_certs]
    if client_certs != "none":
        _load_ca(context, files.ca)
    return context


def client_context(ca: Path, files: CertFiles | None = None) -> ssl.SSLContext:
    """The context of outgoing TLS: verify the peer against `ca`; present `files.cert`
    (mutual TLS) when given."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_ca(context, ca)
    if files is not None:
        _load_chain(context, files)
    return context


def handshakes_refused(context: ssl.SSLContext | None) -> int:
    """How many handshakes listeners using `context` refused (0 for other contexts)."""
    counts = _refused.get(id(context)) if context is not None else None
    return counts.refused if counts is not None else 0


@dataclass(slots=True)
class _Refusals:
    """Refused handshakes of one server context, and its log throttle."""

    refused: int = 0
    logged_at: float = float("-inf")
    held: int = 0           # refusals not logged since the last line


_refused: dict[int, _Refusals] = {}       # id(server context) -> its refusals


class _CountedObject(ssl.SSLObject):
    """The TLS state of one accepted connection: a failed handshake is counted on its
    context and logged."""

    def do_handshake(self) -> None:
        try:
            super().do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise                   # more bytes needed: not a failure
        except ssl.SSLError as exc:
            _count_refusal(self.context, exc)
            raise


def _count_refusal(context: ssl.SSLContext, exc: ssl.SSLError) -> None:
    counts = _refused.setdefault(id(context), _Refusals())
    counts.refused += 1
    now = time.monotonic()
    if now - counts.logged_at < 1.0:
        counts.held += 1
        return
    held, counts.held, counts.logged_at = counts.held, 0, now
    detail = getattr(exc, "verify_message", None)
    reason = f"certificate verify failed ({detail})" if detail else exc.reason or str(exc)
    log.warning("TLS handshake refused: %s%s", reason,
                f" ({held} more refused since the last line)" if held else "")


def _load_chain(context: ssl.SSLContext, files: CertFiles) -> None:
    try:
        context.load_cert_chain(files.cert, files.key)
    except FileNotFoundError as exc:
        raise CertError(f"missing certificate or key: {exc.filename}") from None
    except (OSError, ssl.SSLError) as exc:
        raise CertError(f"cannot load certificate {files.cert} with key {files.key}: "
                        f"{exc}") from None


def _load_ca(context: ssl.SSLContext, ca: Path) -> None:
    try:
        context.load_verify_locations(cafile=ca)
    except FileNotFoundError:
        raise CertError(f"missing CA certificate {ca}") from None
    except (OSError, ssl.SSLError) as exc:
        raise CertError(f"cannot load CA certificate {ca}: {exc}") from None
