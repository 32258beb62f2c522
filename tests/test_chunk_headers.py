"""Headers that claim impossible chunks are refused, and those at each limit are read: the fixed
header built field by field with support.chunks' own layout of docs/spec.md, not the codec's
packer, so every bound of ``parse_header`` is checked from both sides."""

from __future__ import annotations

import numpy as np
import pytest
from support.chunks import HEADER

from zarr_aac.codec.chunk_format import ASC_MAX_NBYTES, MAX_PADDING, pack_prefix, parse_header
from zarr_aac.errors import CorruptChunkError

FRAME = 1024
KEY = "take/c/4/0"


def header(**changed):
    """A valid AAC chunk header (2 channels, 48 kHz, 100 frames for 100_000 samples after a skip
    of 1024), with ``changed`` fields."""
    fields = {
        "magic": b"ZAAC",
        "version": 2,
        "flags": 0,
        "channels": 2,
        "asc_nbytes": 2,
        "rate": 48000,
        "n_frames": 100,
        "n_samples": 100_000,
        "skip": 1024,
        "frame_length": FRAME,
        "payload_nbytes": 40_000,
        "checksum_group": 16,
        "reserved": 0,
    }
    fields.update(changed)
    return HEADER.pack(*fields.values())


@pytest.mark.parametrize(
    "changed",
    [
        {"channels": 8},
        {"channels": 1},
        {"asc_nbytes": 1},
        {"asc_nbytes": ASC_MAX_NBYTES},
        # Frames exactly holding the skip and the samples, and exactly at the padding allowed.
        {"n_frames": 100, "skip": 2400, "n_samples": 100 * FRAME - 2400},
        {"skip": MAX_PADDING, "n_frames": (MAX_PADDING + 100_000) // FRAME + 1},
        {"n_frames": 2000, "skip": 0, "n_samples": 2000 * FRAME - MAX_PADDING},
        # Padding of more than the skip is fine while under MAX_PADDING.
        {"n_frames": 1500, "skip": 0, "n_samples": 500_000},
        {"payload_nbytes": 100 * 6144},
    ],
)
def test_a_header_at_each_limit_is_read(changed):
    parsed = parse_header(header(**changed), KEY)
    assert parsed.aac_sample_rate == 48000
    assert parsed.channels == changed.get("channels", 2)
    assert parsed.asc_nbytes == changed.get("asc_nbytes", 2)
    assert parsed.n_frames == changed.get("n_frames", 100)


@pytest.mark.parametrize(
    ("changed", "claim"),
    [
        ({"channels": 9}, "9 channels"),
        ({"channels": 0}, "0 channels"),
        ({"asc_nbytes": 0}, "AudioSpecificConfig of 0 bytes"),
        ({"asc_nbytes": ASC_MAX_NBYTES + 1}, f"AudioSpecificConfig of {ASC_MAX_NBYTES + 1} bytes"),
        ({"n_frames": 100, "skip": 2401, "n_samples": 100 * FRAME - 2400}, "100 frames cannot hold 2401 + 100000"),
        # Short of skip + samples, though not of samples - skip.
        ({"n_frames": 98, "skip": 1024, "n_samples": 100_000}, "98 frames cannot hold 1024 + 100000 samples"),
        ({"skip": MAX_PADDING + 1, "n_frames": (MAX_PADDING + 100_001) // FRAME + 1}, f"{MAX_PADDING + 1} skipped"),
        (
            {"n_frames": 2001, "skip": 0, "n_samples": 2000 * FRAME - MAX_PADDING},
            f"2001 frames and 0 skipped samples for {2000 * FRAME - MAX_PADDING} samples",
        ),
        ({"n_frames": 1200, "skip": 0, "n_samples": 100}, "1200 frames and 0 skipped samples for 100 samples"),
        ({"payload_nbytes": 100 * 6144 + 1}, f"{100 * 6144 + 1} payload bytes for 100 frames"),
        ({"rate": 47999}, "sample rate 47999"),
        ({"frame_length": 960}, "frame length 960"),
        ({"flags": 0x80}, "unknown flags 0x80"),
    ],
)
def test_a_header_past_a_limit_is_refused_naming_the_chunk_and_the_claim(changed, claim):
    with pytest.raises(CorruptChunkError) as caught:
        parse_header(header(**changed), KEY)
    assert str(caught.value).startswith(f"corrupt chunk {KEY!r}: header claims ")
    assert claim in str(caught.value)


def test_every_problem_of_a_header_is_named_at_once():
    with pytest.raises(CorruptChunkError) as caught:
        parse_header(header(channels=9, asc_nbytes=0), KEY)
    assert str(caught.value) == f"corrupt chunk {KEY!r}: header claims 9 channels, AudioSpecificConfig of 0 bytes"


def test_a_pcm_header_that_claims_too_much_names_the_chunk():
    with pytest.raises(CorruptChunkError, match=rf"^corrupt chunk {KEY!r}: PCM chunk header claims 9 channels"):
        parse_header(
            header(
                flags=1,
                channels=9,
                asc_nbytes=0,
                n_frames=10,
                n_samples=10,
                skip=0,
                frame_length=2,
                payload_nbytes=180,
                checksum_group=0,
            ),
            KEY,
        )


@pytest.mark.parametrize("payload", [None, bytes(range(30)) * 10])
def test_packed_prefixes_leave_the_reserved_fields_zero_and_checksum_only_with_a_payload(payload):
    sizes = np.array([100, 100, 100], "<u2")
    asc = bytes(ASC_MAX_NBYTES)
    prefix = pack_prefix(asc, sizes, channels=2, aac_sample_rate=48000, n_samples=2000, skip=1024, payload=payload)
    fields = HEADER.unpack_from(prefix)
    flags, group = fields[2], fields[11]
    assert flags == 0
    assert fields[10] == 300  # payload bytes
    checksums = 0 if payload is None else 4  # one group of 16 frames holds all three
    assert group == (0 if payload is None else 16)
    assert len(prefix) == HEADER.size + ASC_MAX_NBYTES + 2 * 3 + checksums


def test_an_asc_longer_than_the_format_allows_is_refused_with_its_length():
    with pytest.raises(
        ValueError, match=rf"^AudioSpecificConfig of {ASC_MAX_NBYTES + 1} bytes exceeds {ASC_MAX_NBYTES}$"
    ):
        pack_prefix(
            bytes(ASC_MAX_NBYTES + 1),
            np.array([1], "<u2"),
            channels=1,
            aac_sample_rate=48000,
            n_samples=1,
            skip=0,
            payload=b"x",
        )
