"""The admin HTTP API of a server: health, status, metrics, per-user contact lists.

`AdminServer(AdminContext(...))` serves it; `Metrics` is the server's Prometheus
registry; `resource_lists` is the RFC 4826 codec; `httpauth` the HTTP Digest check.
"""

from trimaran.admin.http import AdminContext, AdminServer
from trimaran.admin.metrics import Metrics

__all__ = ["AdminContext", "AdminServer", "Metrics"]
