"""The applications' configuration as servers use it (SPEC APP-1..APP-7): the CMS's
``apps`` document (`trimaran apps publish`), parsed once per version; nothing
published means no applications. A document that does not load is logged and the last
good configuration stays in use (it was validated before publishing)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from trimaran.apps.loader import read_apps
from trimaran.apps.model import AppsConfig
from trimaran.cms.replica import Snapshot
from trimaran.topology.errors import has_errors

log = logging.getLogger(__name__)

APPS_KEY = "apps"


class AppsSource:
    """The current applications' configuration of one server."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot
        self._version = -1
        self._config = AppsConfig()

    def current(self) -> AppsConfig:
        """The configuration now (empty when none was published)."""
        doc = self._snapshot().documents.get(APPS_KEY)
        if doc is None or doc.version == self._version:
            return self._config
        loaded = read_apps("CMS apps document", text=doc.body)
        if loaded.config is None or has_errors(list(loaded.violations)):
            log.error("CMS apps document version %d does not load (%s); keeping the "
                      "previous configuration", doc.version,
                      "; ".join(f"{v.path}: {v.message}" for v in loaded.violations[:3]))
        else:
            self._config = loaded.config
            log.info("applications configuration version %d in use", doc.version)
        self._version = doc.version
        return self._config

    def document(self, key: str) -> str | None:
        """A CMS document's body (audio files), None when absent."""
        doc = self._snapshot().documents.get(key)
        return doc.body if doc is not None else None
