"""A configuration document of the CMS as a server uses it: parsed once per version,
the last good value kept when a version does not load (it was validated before it
was published, so that means a bug or a hand edit, and is logged), a default when the
document does not exist. `VoiceSource`, `AppsSource` and `EdgeSource` are instances."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Generic, TypeVar

from trimaran.cms.replica import Snapshot

log = logging.getLogger(__name__)

T = TypeVar("T")


class DocumentError(ValueError):
    """A document's text does not load; the message says why."""


class CmsDocumentSource(Generic[T]):
    """The value of CMS document `key` now, for one server."""

    def __init__(self, key: str, snapshot: Callable[[], Snapshot],
                 parse: Callable[[str], T], default: T) -> None:
        self.key = key
        self._snapshot = snapshot
        self._parse = parse
        self._default = default
        self._version = -1
        self._value = default

    def current(self) -> T:
        """The document's value (the default while there is no document)."""
        doc = self._snapshot().documents.get(self.key)
        if doc is None:
            self._version, self._value = -1, self._default
            return self._value
        if doc.version == self._version:
            return self._value
        try:
            self._value = self._parse(doc.body)
            log.info("CMS %s document version %d in use", self.key, doc.version)
        except DocumentError as exc:
            log.error("CMS %s document version %d does not load (%s); keeping the previous "
                      "value", self.key, doc.version, exc)
        self._version = doc.version
        return self._value

    def document(self, key: str) -> str | None:
        """Another document's body (None when absent), from the same replica."""
        doc = self._snapshot().documents.get(key)
        return doc.body if doc is not None else None
