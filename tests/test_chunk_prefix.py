"""A chunk's prefix (header, AudioSpecificConfig, frame index, group checksums) parsed from
exactly its own bytes, as a reader does when its first request was too short and it fetched the
prefix again at its true length; the layout is read independently by ``support.chunks``."""

from __future__ import annotations

import numpy as np
import pytest
from support.chunks import Chunk
from support.signals import tone_with_noise

from zarr_aac.codec.aac_codec import AACCodec
from zarr_aac.codec.chunk_format import parse_header, parse_prefix
from zarr_aac.errors import CorruptChunkError


@pytest.fixture(scope="module")
def chunk_bytes() -> bytes:
    pcm = np.round(tone_with_noise(48000, 2, 16000, seed=5) * 16000).astype(np.int16)
    return AACCodec(sample_rate=16000, bitrate=64000, gain=0.25).encode_pcm(pcm)


def test_a_prefix_of_exactly_its_length_is_parsed(chunk_bytes):
    reference = Chunk.parse(chunk_bytes)
    prefix_bytes = chunk_bytes[: reference.prefix_nbytes]
    header = parse_header(prefix_bytes, "c/0")
    assert header.prefix_nbytes == reference.prefix_nbytes
    prefix = parse_prefix(prefix_bytes, header, "c/0")
    assert prefix.asc == reference.asc
    np.testing.assert_array_equal(np.diff(prefix.index.byte_offsets), reference.sizes)
    assert int(prefix.index.byte_offsets[0]) == 0
    np.testing.assert_array_equal(prefix.group_checksums, reference.checksums)


def test_a_prefix_one_byte_short_is_refused_with_both_lengths(chunk_bytes):
    reference = Chunk.parse(chunk_bytes)
    short = chunk_bytes[: reference.prefix_nbytes - 1]
    with pytest.raises(CorruptChunkError) as info:
        parse_prefix(short, parse_header(short, "c/0"), "c/0")
    message = str(info.value)
    assert "c/0" in message
    assert f"chunk is {reference.prefix_nbytes - 1} bytes, shorter than its {reference.prefix_nbytes}-byte" in message


def test_a_header_of_exactly_its_length_is_parsed(chunk_bytes):
    reference = Chunk.parse(chunk_bytes)
    header = parse_header(chunk_bytes[:48], "c/0")
    assert header.n_frames == reference.fields["n_frames"] and header.n_samples == reference.fields["n_samples"]
    with pytest.raises(CorruptChunkError) as info:
        parse_header(chunk_bytes[:47], "c/0")
    assert str(info.value).endswith("47 bytes is shorter than the 48-byte header")
    assert "c/0" in str(info.value)


@pytest.mark.parametrize(
    ("version", "message"),
    [
        (
            1,
            (
                "chunk format 1 (zarr-aac 0.1, no frame checksums) is not read by this version (format 2): "
                "import the recording again"
            ),
        ),
        (3, "format version 3 is not supported (this reader knows 2)"),
    ],
)
def test_other_format_versions_are_refused_naming_the_chunk(chunk_bytes, version, message):
    data = bytearray(chunk_bytes)
    data[4] = version
    with pytest.raises(CorruptChunkError) as info:
        parse_header(bytes(data), "c/0")
    assert "c/0" in str(info.value)
    assert str(info.value).endswith(message)
