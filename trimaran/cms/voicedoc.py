"""The voice configuration as servers use it (SPEC EV-1): the CMS's ``voice`` document
when one was published (`trimaran voice publish`), else the topology's ``voice:``.
The document is the YAML text of a voice section (`trimaran.cms.document`)."""

from __future__ import annotations

from collections.abc import Callable

from trimaran.cms.document import CmsDocumentSource, DocumentError
from trimaran.cms.replica import Snapshot
from trimaran.topology.errors import has_errors
from trimaran.topology.model import Topology
from trimaran.topology.voice_loader import read_voice
from trimaran.voice.model import VoiceConfig

VOICE_KEY = "voice"


def parse_voice(text: str) -> VoiceConfig:
    """A voice document's configuration; `DocumentError` naming the first problems."""
    loaded = read_voice("CMS voice document", text=text)
    if loaded.config is None or has_errors(list(loaded.violations)):
        raise DocumentError("; ".join(f"{v.path}: {v.message}" for v in loaded.violations[:3]))
    return loaded.config


class VoiceSource(CmsDocumentSource[VoiceConfig | None]):
    """The current voice configuration of one server (None: no Enterprise Voice)."""

    def __init__(self, topology: Topology, snapshot: Callable[[], Snapshot]) -> None:
        super().__init__(VOICE_KEY, snapshot, parse_voice, topology.voice)
