"""Announcement audio (SPEC APP-5): G.711 µ-law encoding, WAV files (µ-law and 16-bit
PCM; anything else refused with an `AudioError` naming the problem, and nothing but
`AudioError` escaping for any input), the RTP packets carrying the audio, SDP offers
and answers, and the paced sender."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import struct
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.apps.rtp_receiver import RtpReceiver, parse_rtp
from trimaran.apps.audio import (
    FRAME_SAMPLES,
    MAX_WAV_BYTES,
    Audio,
    AudioError,
    linear_to_ulaw,
    read_wav,
    rtp_packets,
    wav_bytes,
)
from trimaran.apps.rtp import RtpSender, answer_sdp, offer_address, offers_pcmu

HOST = "127.0.33.200"

# --- G.711 µ-law --------------------------------------------------------------------------

# The decision values of G.711 Table 2a (µ-law), 14-bit magnitudes x4 for 16-bit samples:
# each pair is (largest sample of a segment, its code), (first sample of the next, its code).
SEGMENT_EDGES = [
    (0, 0xFF), (3, 0xFF), (4, 0xFE),
    (123, 0xF0), (124, 0xEF),
    (379, 0xE0), (380, 0xDF),
    (891, 0xD0), (892, 0xCF),
    (1915, 0xC0), (1916, 0xBF),
    (3963, 0xB0), (3964, 0xAF),
    (8059, 0xA0), (8060, 0x9F),
    (16251, 0x90), (16252, 0x8F),
    (32635, 0x80), (32767, 0x80),       # clipped at the top of the last segment
]


@pytest.mark.parametrize(("sample", "code"), SEGMENT_EDGES)
def test_ulaw_codes_follow_the_g711_decision_values(sample: int, code: int) -> None:
    """APP-5: positive samples get the G.711 code of their interval."""
    assert linear_to_ulaw(sample) == code


@pytest.mark.parametrize(("sample", "code"), [(-1, 0x7F), (-4, 0x7E), (-124, 0x6F),
                                              (-16252, 0x0F), (-32768, 0x00)])
def test_negative_samples_are_the_positive_codes_without_the_sign_bit(sample: int,
                                                                      code: int) -> None:
    assert linear_to_ulaw(sample) == code
    assert linear_to_ulaw(sample) == linear_to_ulaw(-sample) & 0x7F


def _ulaw_to_linear(code: int) -> int:
    """The G.711 decoder: the middle of the code's interval."""
    code = ~code & 0xFF
    exponent, mantissa = (code >> 4) & 0x07, code & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return -magnitude if code & 0x80 else magnitude


def test_decoding_a_code_gives_back_the_sample_within_half_a_step() -> None:
    """Every 16-bit sample up to the clip level decodes to within half its segment's
    step, and the encoding is monotonic (a larger sample never decodes smaller)."""
    previous = -(1 << 16)
    for sample in range(-32635, 32636):
        code = linear_to_ulaw(sample)
        decoded = _ulaw_to_linear(code)
        exponent = ((~code & 0xFF) >> 4) & 0x07
        assert abs(decoded - sample) <= 4 << exponent, (sample, hex(code), decoded)
        assert decoded >= previous
        previous = decoded


def test_positive_samples_match_the_reference_implementation_of_cpython() -> None:
    """Cross-check with `audioop` (CPython's C implementation of the same table) where
    both round the same way: zero and positive samples."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            audioop = importlib.import_module("audioop")
        except ImportError:
            pytest.skip("audioop is gone (Python 3.13+)")
    samples = list(range(0, 32768))
    reference = audioop.lin2ulaw(struct.pack(f"<{len(samples)}h", *samples), 2)
    assert bytes(linear_to_ulaw(s) for s in samples) == reference


# --- WAV files ------------------------------------------------------------------------------

def _chunk(name: bytes, body: bytes) -> bytes:
    return name + struct.pack("<I", len(body)) + body + (b"\x00" if len(body) & 1 else b"")


def _fmt(tag: int = 1, channels: int = 1, rate: int = 8000, bits: int = 16) -> bytes:
    align = channels * bits // 8
    return _chunk(b"fmt ", struct.pack("<HHIIHH", tag, channels, rate, rate * align,
                                       align, bits))


def _riff(*chunks: bytes) -> bytes:
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _pcm_wav(samples: list[int]) -> bytes:
    return _riff(_fmt(), _chunk(b"data", struct.pack(f"<{len(samples)}h", *samples)))


def test_a_ulaw_wav_gives_its_samples_unchanged() -> None:
    samples = bytes(range(256)) * 3 + b"\x01"            # odd length: a pad byte follows
    audio = read_wav(wav_bytes(samples))
    assert audio.ulaw == samples
    assert audio.seconds == len(samples) / 8000


def test_a_16_bit_pcm_wav_is_encoded_to_ulaw() -> None:
    samples = [0, 1, -1, 4, 124, -124, 1000, -1000, 32767, -32768]
    audio = read_wav(_pcm_wav(samples))
    assert audio.ulaw == bytes(linear_to_ulaw(s) for s in samples)


def test_chunks_other_than_fmt_and_data_are_skipped() -> None:
    data = _riff(_chunk(b"LIST", b"INFOISFT\x03\x00\x00\x00ab\x00"), _fmt(),
                 _chunk(b"fact", struct.pack("<I", 2)), _chunk(b"data", b"\x10\x00\x20\x00"))
    assert read_wav(data).ulaw == bytes([linear_to_ulaw(16), linear_to_ulaw(32)])


def test_an_extensible_fmt_chunk_is_read_by_its_sub_format() -> None:
    guid_tail = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
    extensible = struct.pack("<HHIIHHHHI", 0xFFFE, 1, 8000, 8000, 1, 8, 22, 8, 0) + \
        struct.pack("<H", 7) + guid_tail
    data = _riff(_chunk(b"fmt ", extensible), _chunk(b"data", b"\x7f\x80"))
    assert read_wav(data).ulaw == b"\x7f\x80"


@pytest.mark.parametrize(("data", "problem"), [
    (b"", "not a RIFF/WAVE file"),
    (b"RIFF\x00\x00\x00\x00AVI LIST", "not a RIFF/WAVE file"),
    (_riff(_fmt()), "no data chunk"),
    (_riff(_chunk(b"data", b"\x00\x00"), _fmt()), "data before fmt"),
    (_riff(_chunk(b"fmt ", b"\x01\x00\x01\x00")), "fmt chunk too short"),
    (_riff(_fmt(rate=16000), _chunk(b"data", b"\x00\x00")), "need 8000 Hz mono, got 16000 Hz"),
    (_riff(_fmt(channels=2), _chunk(b"data", b"\x00\x00")), "with 2 channel(s)"),
    (_riff(_fmt(bits=8), _chunk(b"data", b"\x00\x00")), "got format 1 with 8 bits"),
    (_riff(_fmt(tag=3, bits=32), _chunk(b"data", b"\x00" * 4)), "got format 3 with 32 bits"),
    (_riff(_fmt(), _chunk(b"data", b"")), "no samples"),
    (_riff(_fmt(), _chunk(b"data", b"\x00\x00\x00")), "not whole samples"),
    (_riff(_fmt())[:-4], "truncated"),
    (_riff(_fmt(), b"data" + struct.pack("<I", 100) + b"\x00" * 10), "chunk b'data' truncated"),
    (b"RIFF" + b"\x00" * (MAX_WAV_BYTES + 1), f"larger than {MAX_WAV_BYTES} bytes"),
])
def test_a_bad_file_is_refused_naming_the_problem(data: bytes, problem: str) -> None:
    with pytest.raises(AudioError) as raised:
        read_wav(data)
    assert problem in str(raised.value)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_either_parse_or_raise_audio_error(data: bytes) -> None:
    """OPS-5 spirit: whatever the file, only `AudioError` escapes."""
    with contextlib.suppress(AudioError):
        read_wav(data)


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_a_damaged_wav_either_parses_or_raises_audio_error(data: st.DataObject) -> None:
    """Valid files with bytes overwritten and cut short: only `AudioError` escapes."""
    original = bytearray(data.draw(st.sampled_from([
        _pcm_wav([0, 100, -100, 30000]), wav_bytes(b"\x01\x02\x03"),
        _riff(_chunk(b"LIST", b"abcd"), _fmt(), _chunk(b"data", b"\x00\x01"))])))
    for _ in range(data.draw(st.integers(0, 4))):
        position = data.draw(st.integers(0, len(original) - 1))
        original[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(original)))
    with contextlib.suppress(AudioError):
        read_wav(bytes(original[:cut]))


# --- RTP packets ------------------------------------------------------------------------------

def test_frames_are_20_ms_with_the_last_padded_with_ulaw_silence() -> None:
    frames = Audio(b"\x01" * 350).frames()
    assert [len(f) for f in frames] == [FRAME_SAMPLES] * 3
    assert frames[2] == b"\x01" * 30 + b"\xff" * 130


def test_rtp_packets_have_version_2_pcmu_and_consecutive_numbers() -> None:
    """RFC 3550 §5.1, RFC 3551 PT 0: marker on the first packet only; sequence numbers +1
    and timestamps +160 per packet, both wrapping around."""
    audio = Audio(bytes(range(256)) * 5)                  # 1280 samples: 8 packets
    packets = [parse_rtp(p) for p in rtp_packets(audio, ssrc=0xDEADBEEF, sequence=65533,
                                                 timestamp=0xFFFFFF00)]
    assert len(packets) == 8
    assert {(p.version, p.payload_type, p.ssrc) for p in packets} == {(2, 0, 0xDEADBEEF)}
    assert [p.marker for p in packets] == [True] + [False] * 7
    assert [p.sequence for p in packets] == [65533, 65534, 65535, 0, 1, 2, 3, 4]
    assert [p.timestamp for p in packets] == [(0xFFFFFF00 + 160 * i) & 0xFFFFFFFF
                                              for i in range(8)]
    assert b"".join(p.payload for p in packets) == audio.ulaw


def test_an_rtp_header_has_no_padding_extension_or_csrc() -> None:
    first = rtp_packets(Audio(b"\x00" * 160), ssrc=1)[0]
    assert first[0] == 0x80 and first[1] == 0x80
    assert len(first) == 12 + FRAME_SAMPLES


# --- SDP ------------------------------------------------------------------------------------

def _sdp(*lines: str) -> bytes:
    return ("\r\n".join(["v=0", "o=- 1 1 IN IP4 10.0.0.1", "s=-", *lines]) + "\r\n").encode()


@pytest.mark.parametrize(("sdp", "address"), [
    (_sdp("c=IN IP4 10.0.0.2", "t=0 0", "m=audio 4000 RTP/AVP 0"), ("10.0.0.2", 4000)),
    (_sdp("c=IN IP4 10.0.0.2", "t=0 0", "m=audio 4000 RTP/AVP 0", "c=IN IP4 10.0.0.3"),
     ("10.0.0.3", 4000)),                                 # media-level c= wins
    (_sdp("c=IN IP4 224.2.1.1/127", "t=0 0", "m=audio 4000 RTP/AVP 0"), ("224.2.1.1", 4000)),
    (_sdp("c=IN IP4 10.0.0.2", "t=0 0", "m=video 5000 RTP/AVP 31", "c=IN IP4 10.0.0.9",
          "m=audio 4000 RTP/AVP 0"), ("10.0.0.2", 4000)),  # the audio stream's, not video's
    (_sdp("c=IN IP4 10.0.0.2", "t=0 0", "m=audio 4000 RTP/AVP 0", "m=audio 4002 RTP/AVP 0"),
     ("10.0.0.2", 4000)),                                 # the first audio stream
    (_sdp("c=IN IP4 10.0.0.2", "t=0 0", "m=audio 0 RTP/AVP 0"), None),       # declined
    (_sdp("c=IN IP4 10.0.0.2", "t=0 0", "m=audio 70000 RTP/AVP 0"), None),
    (_sdp("c=IN IP4 10.0.0.2", "t=0 0", "m=video 4000 RTP/AVP 31"), None),
    (_sdp("c=IN IP6 ::1", "t=0 0", "m=audio 4000 RTP/AVP 0"), None),
    (_sdp("t=0 0", "m=audio 4000 RTP/AVP 0"), None),
    (b"", None),
])
def test_the_offer_address_is_the_first_audio_streams(sdp: bytes,
                                                      address: tuple[str, int] | None) -> None:
    assert offer_address(sdp) == address


def test_an_offer_without_pcmu_is_recognised() -> None:
    assert offers_pcmu(_sdp("c=IN IP4 10.0.0.2", "m=audio 4000 RTP/AVP 8 0 101"))
    assert not offers_pcmu(_sdp("c=IN IP4 10.0.0.2", "m=audio 4000 RTP/AVP 8 101"))
    assert not offers_pcmu(b"")


@given(st.binary(max_size=300))
def test_any_bytes_as_an_offer_never_raise(data: bytes) -> None:
    address = offer_address(data)
    assert address is None or 0 < address[1] < 65536
    offers_pcmu(data)


def test_our_answer_is_pcmu_send_only_from_our_address() -> None:
    answer = answer_sdp("127.0.33.1", 41000, session=7)
    assert offer_address(answer) == ("127.0.33.1", 41000)
    assert offers_pcmu(answer)
    assert b"a=sendonly\r\n" in answer and b"o=trimaran 7 7 IN IP4 127.0.33.1\r\n" in answer


# --- the paced sender ------------------------------------------------------------------------

async def test_the_sender_paces_packets_every_20_ms_from_its_own_port() -> None:
    receiver = await RtpReceiver(HOST).open()
    sender = RtpSender(HOST)
    try:
        port = await sender.open()
        audio = Audio(bytes(range(200)) * 8)                  # 1600 samples: 10 packets
        sent = await sender.play(audio, (HOST, receiver.port))
        packets = await receiver.wait_packets(10, 2.0)
    finally:
        sender.close()
        receiver.close()
    assert sent == 10 == sender.sent
    assert {p.source for p in packets} == {(HOST, port)}
    assert b"".join(p.payload for p in packets) == audio.ulaw
    spread = packets[-1].arrived - packets[0].arrived
    assert 0.15 <= spread < 0.6, spread                      # 9 intervals of 20 ms


async def test_setting_stop_ends_the_play_early() -> None:
    receiver = await RtpReceiver(HOST).open()
    sender = RtpSender(HOST)
    stop = asyncio.Event()
    try:
        await sender.open()
        play = asyncio.ensure_future(sender.play(Audio(b"\x00" * 8000), (HOST, receiver.port),
                                                 stop=stop))
        await receiver.wait_packets(5, 2.0)
        stop.set()
        sent = await asyncio.wait_for(play, 1.0)
        packets = await receiver.wait_quiet(0.1, 2.0)
    finally:
        sender.close()
        receiver.close()
    assert 5 <= sent < 50
    assert len(packets) == sent
