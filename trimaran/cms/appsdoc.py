"""The applications' configuration as servers use it (SPEC APP-1..APP-7): the CMS's
``apps`` document (`trimaran apps publish`); nothing published means no applications.
Audio files are documents of their own (``audio/<sha256>``, `document`)."""

from __future__ import annotations

from collections.abc import Callable

from trimaran.apps.loader import read_apps
from trimaran.apps.model import AppsConfig
from trimaran.cms.document import CmsDocumentSource, DocumentError
from trimaran.cms.replica import Snapshot
from trimaran.topology.errors import has_errors

APPS_KEY = "apps"


def parse_apps(text: str) -> AppsConfig:
    """An apps document's configuration; `DocumentError` naming the first problems."""
    loaded = read_apps("CMS apps document", text=text)
    if loaded.config is None or has_errors(list(loaded.violations)):
        raise DocumentError("; ".join(f"{v.path}: {v.message}" for v in loaded.violations[:3]))
    return loaded.config


class AppsSource(CmsDocumentSource[AppsConfig]):
    """The current applications' configuration of one server."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        super().__init__(APPS_KEY, snapshot, parse_apps, AppsConfig())
