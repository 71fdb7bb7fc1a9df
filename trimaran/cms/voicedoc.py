"""The voice configuration as servers use it (SPEC EV-1): the CMS's ``voice`` document
when one was published (`trimaran voice publish`), else the topology's ``voice:``.

The document is the YAML text of a voice section; every server parses it once per
version. A document that does not load (it was validated before publishing, so this
means a bug or a hand edit) is logged and the last good configuration stays in use.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from trimaran.cms.replica import Snapshot
from trimaran.topology.errors import has_errors
from trimaran.topology.model import Topology
from trimaran.topology.voice_loader import read_voice
from trimaran.voice.model import VoiceConfig

log = logging.getLogger(__name__)

VOICE_KEY = "voice"


class VoiceSource:
    """The current voice configuration of one server."""

    def __init__(self, topology: Topology, snapshot: Callable[[], Snapshot]) -> None:
        self._topology = topology
        self._snapshot = snapshot
        self._version = -1
        self._config: VoiceConfig | None = topology.voice

    def current(self) -> VoiceConfig | None:
        """The configuration now (None: no Enterprise Voice in this deployment)."""
        doc = self._snapshot().documents.get(VOICE_KEY)
        if doc is None or doc.version == self._version:
            return self._config
        loaded = read_voice("CMS voice document", text=doc.body)
        if loaded.config is None or has_errors(list(loaded.violations)):
            log.error("CMS voice document version %d does not load (%s); keeping the "
                      "previous configuration", doc.version,
                      "; ".join(f"{v.path}: {v.message}" for v in loaded.violations[:3]))
        else:
            self._config = loaded.config
            log.info("voice configuration version %d in use", doc.version)
        self._version = doc.version
        return self._config
