"""The applications every application server hosts (one factory per application,
called with the server's `AppContext`)."""

from __future__ import annotations

from collections.abc import Callable

from trimaran.apps.server import App, AppContext

APPLICATIONS: list[Callable[[AppContext], App]] = [
]
