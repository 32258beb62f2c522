"""Every refusal of ``codec/chunk_format.py`` read in full: the chunk it names, what is wrong with
it (the lengths, checksums, fields and sample types it found against those it expected) and, where
there is one, what to do. Chunks are forged with ``support.chunks``' own layout of docs/spec.md
(checksums made afresh, so each forged field reaches the check past them), and the checksums a
message quotes are computed here with google_crc32c, not taken from the package."""

from __future__ import annotations

import struct

import google_crc32c
import numpy as np
import pytest
from support.chunks import HEADER, Chunk, PcmChunk
from support.signals import tone_with_noise

from zarr_aac.codec.aac_codec import AACCodec
from zarr_aac.codec.chunk_format import (
    PcmChunkBuilder,
    check_chunk_geometry,
    parse_header,
    parse_pcm_chunk,
    parse_prefix,
    verify_payload,
)
from zarr_aac.errors import CorruptChunkError

KEY = "take/c/3/0"
CRC_OFFSET = HEADER.size - 4


@pytest.fixture(scope="module")
def aac_chunk() -> bytes:
    """One AAC chunk of 3 s of 16 kHz stereo, with frame checksums."""
    pcm = np.round(tone_with_noise(48000, 2, 16000, seed=7) * 16000).astype(np.int16)
    return AACCodec(sample_rate=16000, bitrate=64000, gain=0.25).encode_pcm(pcm)


@pytest.fixture(scope="module")
def pcm_chunk() -> bytes:
    """A PCM chunk of 10 of 16 stereo int16 samples."""
    builder = PcmChunkBuilder(16, 2, np.dtype("<i2"), 48000)
    builder.extend(np.arange(20, dtype="<i2").reshape(10, 2))
    return builder.chunk()


def refusal(call, *args) -> str:
    with pytest.raises(CorruptChunkError) as caught:
        call(*args)
    assert caught.value.key == KEY
    return str(caught.value)


def crc_of_header(data: bytes, *, extra: bytes = b"") -> int:
    return google_crc32c.extend(google_crc32c.value(data[:CRC_OFFSET]), extra)


def test_a_chunk_of_another_kind_of_data_names_its_first_bytes():
    data = b"RIFF" + bytes(60)
    assert refusal(parse_header, data, KEY) == (
        f"corrupt chunk {KEY!r}: not a zarr_aac chunk (starts with b'RIFF', expected b'ZAAC')"
    )


def test_a_short_header_names_the_chunk_and_both_lengths():
    assert refusal(parse_header, b"ZAAC" + bytes(10), KEY) == (
        f"corrupt chunk {KEY!r}: 14 bytes is shorter than the 48-byte header"
    )


def test_a_format_1_chunk_says_to_import_again(aac_chunk):
    data = bytearray(aac_chunk)
    data[4] = 1
    assert refusal(parse_header, bytes(data), KEY) == (
        f"corrupt chunk {KEY!r}: chunk format 1 (zarr-aac 0.1, no frame checksums) is not read by this "
        "version (format 2): import the recording again"
    )


@pytest.mark.parametrize(
    ("changed", "claims"),
    [
        ({"channels": 9, "payload_nbytes": 9 * 10 * 2}, "9 channels"),
        ({"aac_sample_rate": 44000}, "sample rate 44000"),
        ({"frame_length": 3, "payload_nbytes": 10 * 2 * 3}, "3 bytes a sample"),
        ({"asc_nbytes": 2, "skip": 3, "checksum_group": 4}, "AudioSpecificConfig of 2 bytes, skip 3, checksum group 4"),
        ({"n_frames": 17, "payload_nbytes": 17 * 4}, "17 stored of 16 samples"),
        ({"payload_nbytes": 41}, "41 payload bytes for 10 samples of 2 x 2 bytes"),
        ({"channels": 0, "frame_length": 4}, "0 channels, 40 payload bytes for 10 samples of 0 x 4 bytes"),
    ],
)
def test_a_pcm_header_names_each_field_it_got_wrong(pcm_chunk, changed, claims):
    forged = PcmChunk.parse(pcm_chunk).pack(**changed)
    assert refusal(parse_header, forged, KEY) == f"corrupt chunk {KEY!r}: PCM chunk header claims {claims}"


def test_a_pcm_chunk_of_another_length_names_both(pcm_chunk):
    header = parse_header(pcm_chunk, KEY)
    assert refusal(parse_pcm_chunk, pcm_chunk[:-1], header, np.int16, KEY) == (
        f"corrupt chunk {KEY!r}: chunk is {len(pcm_chunk) - 1} bytes, its header describes {len(pcm_chunk)}"
    )


def test_a_pcm_chunk_with_a_damaged_header_quotes_both_checksums(pcm_chunk):
    data = bytearray(pcm_chunk)
    data[CRC_OFFSET] ^= 0xFF
    (stored,) = struct.unpack_from("<I", data, CRC_OFFSET)
    computed = crc_of_header(pcm_chunk, extra=pcm_chunk[HEADER.size : HEADER.size + 4])
    assert refusal(parse_pcm_chunk, bytes(data), parse_header(pcm_chunk, KEY), np.int16, KEY) == (
        f"corrupt chunk {KEY!r}: header checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
    )


def test_a_pcm_chunk_with_damaged_samples_quotes_both_checksums(pcm_chunk):
    data = bytearray(pcm_chunk)
    data[-1] ^= 0x01
    (stored,) = struct.unpack_from("<I", pcm_chunk, HEADER.size)
    computed = google_crc32c.value(bytes(data[HEADER.size + 4 :]))
    assert refusal(parse_pcm_chunk, bytes(data), parse_header(pcm_chunk, KEY), np.int16, KEY) == (
        f"corrupt chunk {KEY!r}: checksum mismatch in the PCM samples (stored {stored:#010x}, "
        f"computed {computed:#010x})"
    )


def test_a_pcm_chunk_of_another_sample_type_names_both(pcm_chunk):
    assert refusal(parse_pcm_chunk, pcm_chunk, parse_header(pcm_chunk, KEY), np.float32, KEY) == (
        f"corrupt chunk {KEY!r}: PCM chunk holds int16 samples, the array is float32"
    )


def test_a_pcm_chunk_has_no_frame_index(pcm_chunk):
    assert refusal(parse_prefix, pcm_chunk, parse_header(pcm_chunk, KEY), KEY) == (
        f"corrupt chunk {KEY!r}: a PCM chunk (a live recording's unfinished tail) has no frame index"
    )


@pytest.mark.parametrize(
    ("shape", "expects"),
    [((48000, 1), "48000 x 1"), ((48001, 2), "48001 x 2"), ((48000,), "48000 x 1")],
)
def test_a_chunk_of_another_array_shape_names_both_shapes(aac_chunk, shape, expects):
    header = parse_header(aac_chunk, KEY)
    assert refusal(check_chunk_geometry, header, shape, KEY) == (
        f"corrupt chunk {KEY!r}: chunk holds 48000 samples x 2 channels, the array expects {expects}"
    )


def test_a_prefix_shorter_than_its_header_says_names_both_lengths(aac_chunk):
    size = Chunk.parse(aac_chunk).prefix_nbytes
    assert refusal(parse_prefix, aac_chunk[: size - 5], parse_header(aac_chunk, KEY), KEY) == (
        f"corrupt chunk {KEY!r}: chunk is {size - 5} bytes, shorter than its {size}-byte header and index"
    )


def test_a_damaged_frame_index_quotes_both_checksums(aac_chunk):
    reference = Chunk.parse(aac_chunk)
    data = bytearray(aac_chunk)
    data[HEADER.size + len(reference.asc)] ^= 0x01  # the first frame's size
    (stored,) = struct.unpack_from("<I", aac_chunk, CRC_OFFSET)
    computed = crc_of_header(aac_chunk, extra=bytes(data[HEADER.size : reference.prefix_nbytes]))
    assert refusal(parse_prefix, bytes(data), parse_header(aac_chunk, KEY), KEY) == (
        f"corrupt chunk {KEY!r}: header/index checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
    )


def test_frame_sizes_that_disagree_with_the_payload_length_name_both(aac_chunk):
    reference = Chunk.parse(aac_chunk)
    total = int(reference.sizes.astype(np.int64).sum())
    forged = reference.pack(payload_nbytes=total + 3)
    assert refusal(parse_prefix, forged, parse_header(forged, KEY), KEY) == (
        f"corrupt chunk {KEY!r}: frame sizes add up to {total}, header says {total + 3}"
    )


def test_a_whole_chunk_of_another_length_names_both(aac_chunk):
    prefix = parse_prefix(aac_chunk, parse_header(aac_chunk, KEY), KEY)
    assert refusal(verify_payload, aac_chunk + b"\0", prefix, KEY) == (
        f"corrupt chunk {KEY!r}: chunk is {len(aac_chunk) + 1} bytes, its header describes {len(aac_chunk)}"
    )


def test_a_damaged_frame_names_its_group_and_both_checksums(aac_chunk):
    reference = Chunk.parse(aac_chunk)
    n = reference.sizes.size
    last_group = (n - 1) // 16 * 16
    data = bytearray(aac_chunk)
    data[-1] ^= 0x01  # the last frame, in the last (short) group
    damaged = Chunk.parse(bytes(data))
    stored = int(reference.checksums[-1])
    computed = int(damaged.group_checksums(16)[-1])
    prefix = parse_prefix(aac_chunk, parse_header(aac_chunk, KEY), KEY)
    assert refusal(verify_payload, bytes(data), prefix, KEY) == (
        f"corrupt chunk {KEY!r}: checksum mismatch in frames {last_group}-{n - 1} "
        f"(stored {stored:#010x}, computed {computed:#010x})"
    )
