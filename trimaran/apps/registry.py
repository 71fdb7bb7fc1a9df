"""The applications every application server hosts (one factory per application kind,
called with the server's `AppContext`)."""

from __future__ import annotations

from collections.abc import Callable

from trimaran.apps import rgs
from trimaran.apps.announce import announcements
from trimaran.apps.conference import ConferenceFocus
from trimaran.apps.park import call_park
from trimaran.apps.pickup import group_pickup
from trimaran.apps.server import App, AppContext

APPLICATIONS: list[Callable[[AppContext], App]] = [
    *rgs.APPLICATIONS,      # APP-3, APP-4: workflows and agent sign-in share one service
    ConferenceFocus,        # APP-7
    announcements,          # APP-5
    call_park,              # APP-1, APP-2
    group_pickup,           # APP-6
]
