"""Audio for announcements and music on hold (SPEC APP-5): WAV files to G.711 µ-law
frames, and the RTP packets that carry them (RFC 3550, payload type 0, RFC 3551).

A WAV file is accepted when it is 8 kHz mono, either G.711 µ-law already (format 7)
or 16-bit linear PCM (format 1, encoded here with the G.711 µ-law table), also when
its fmt chunk is the WAVE_FORMAT_EXTENSIBLE form of one of those. No I/O, no clock:
`rtp_packets` returns the packets; `trimaran.apps.rtp` sends them.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass

FRAME_SAMPLES = 160                 # 20 ms at 8 kHz
PCMU = 0
MAX_WAV_BYTES = 4 * 1024 * 1024
_BIAS, _CLIP = 0x84, 32635
_FORMAT_PCM, _FORMAT_ULAW, _FORMAT_EXTENSIBLE = 1, 7, 0xFFFE


class AudioError(ValueError):
    """The file is not audio we can play."""


@dataclass(frozen=True, slots=True)
class Audio:
    """G.711 µ-law samples (one byte each) at 8 kHz."""

    ulaw: bytes

    @property
    def seconds(self) -> float:
        """Duration."""
        return len(self.ulaw) / 8000

    def frames(self) -> list[bytes]:
        """20 ms frames (the last one padded with µ-law silence, 0xFF)."""
        data = self.ulaw
        out = [data[i:i + FRAME_SAMPLES] for i in range(0, len(data), FRAME_SAMPLES)]
        if out and len(out[-1]) < FRAME_SAMPLES:
            out[-1] = out[-1] + b"\xff" * (FRAME_SAMPLES - len(out[-1]))
        return out


def linear_to_ulaw(sample: int) -> int:
    """One 16-bit signed sample to G.711 µ-law (ITU-T G.711)."""
    sign = 0x80 if sample < 0 else 0
    magnitude = min(-sample if sample < 0 else sample, _CLIP) + _BIAS
    exponent = 7
    mask = 0x4000
    while exponent > 0 and not magnitude & mask:
        exponent -= 1
        mask >>= 1
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


@functools.cache
def _ulaw_table() -> bytes:
    """µ-law of every 16-bit sample, indexed by the sample + 32768."""
    return bytes(linear_to_ulaw(s) for s in range(-32768, 32768))


def read_wav(data: bytes) -> Audio:
    """Parse a RIFF/WAVE file into µ-law samples; `AudioError` naming the problem."""
    if len(data) > MAX_WAV_BYTES:
        raise AudioError(f"larger than {MAX_WAV_BYTES} bytes")
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise AudioError("not a RIFF/WAVE file")
    fmt: tuple[int, int, int, int] | None = None
    pos = 12
    while pos + 8 <= len(data):
        chunk, size = data[pos:pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body = data[pos + 8:pos + 8 + size]
        if len(body) < size:
            raise AudioError(f"chunk {chunk!r} truncated")
        if chunk == b"fmt ":
            fmt = _format(body)
        elif chunk == b"data":
            if fmt is None:
                raise AudioError("data before fmt")
            return _decode(fmt, body)
        pos += 8 + size + (size & 1)
    raise AudioError("no data chunk")


def _format(body: bytes) -> tuple[int, int, int, int]:
    """(format tag, channels, rate, bits) of a fmt chunk; an extensible one gives the
    tag of its sub-format (the first two bytes of its GUID)."""
    if len(body) < 16:
        raise AudioError("fmt chunk too short")
    tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", body)
    if tag == _FORMAT_EXTENSIBLE:
        if len(body) < 26:
            raise AudioError("extensible fmt chunk too short")
        tag = struct.unpack_from("<H", body, 24)[0]
    return tag, channels, rate, bits


def _decode(fmt: tuple[int, int, int, int], body: bytes) -> Audio:
    tag, channels, rate, bits = fmt
    if channels != 1 or rate != 8000:
        raise AudioError(f"need 8000 Hz mono, got {rate} Hz with {channels} channel(s)")
    if not body:
        raise AudioError("data chunk holds no samples")
    if tag == _FORMAT_ULAW and bits == 8:
        return Audio(bytes(body))
    if tag == _FORMAT_PCM and bits == 16:
        if len(body) % 2:
            raise AudioError(f"16-bit PCM data of {len(body)} bytes: not whole samples")
        table = _ulaw_table()
        samples = struct.unpack(f"<{len(body) // 2}h", body)
        return Audio(bytes(table[s + 32768] for s in samples))
    raise AudioError(f"need G.711 µ-law (format 7, 8 bits) or 16-bit PCM (format 1), "
                     f"got format {tag} with {bits} bits")


def wav_bytes(ulaw: bytes) -> bytes:
    """A µ-law WAV file holding `ulaw` (tests and examples make their files with it)."""
    fmt = struct.pack("<HHIIHH", 7, 1, 8000, 8000, 1, 8) + struct.pack("<H", 0)
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt + \
        b"data" + struct.pack("<I", len(ulaw)) + ulaw + (b"\x00" if len(ulaw) & 1 else b"")
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


def rtp_packets(audio: Audio, *, ssrc: int, sequence: int = 0,
                timestamp: int = 0) -> list[bytes]:
    """The RTP packets (version 2, PT 0, marker on the first) carrying `audio`."""
    packets = []
    for i, frame in enumerate(audio.frames()):
        header = struct.pack("!BBHII", 0x80, (0x80 if i == 0 else 0) | PCMU,
                             (sequence + i) & 0xFFFF,
                             (timestamp + i * FRAME_SAMPLES) & 0xFFFFFFFF, ssrc)
        packets.append(header + frame)
    return packets
