"""``codec/chunk_format.py`` against the layout of docs/spec.md as ``support.chunks`` re-implements
it with ``struct``: the bound a reader's first request takes, the prefixes ``pack_prefix`` writes
from frame sizes of any integer type, the PCM chunks ``PcmChunkBuilder`` writes as samples arrive
and the PCM headers ``parse_header`` reads or refuses at the edges of each field."""

from __future__ import annotations

import numpy as np
import pytest
from support.chunks import Chunk, PcmChunk

from zarr_aac.codec.chunk_format import (
    ChunkHeader,
    PcmChunkBuilder,
    pack_prefix,
    parse_header,
    parse_pcm_chunk,
    parse_prefix,
    prefix_nbytes_upper_bound,
)
from zarr_aac.errors import CorruptChunkError

KEY = "take/c/0/0"


@pytest.mark.parametrize("n_frames", [1, 15, 16, 17, 33, 300])
def test_the_prefix_bound_is_the_prefix_of_a_chunk_with_the_longest_asc(n_frames):
    sizes = np.arange(1, n_frames + 1, dtype="<u2")
    payload = bytes(int(sizes.sum()))
    prefix = pack_prefix(bytes(64), sizes, channels=2, aac_sample_rate=48000, n_samples=1024, skip=0, payload=payload)
    assert Chunk.parse(prefix + payload).prefix_nbytes == len(prefix)
    assert prefix_nbytes_upper_bound(n_frames) == len(prefix) == 48 + 64 + 2 * n_frames + 4 * -(-n_frames // 16)


@pytest.mark.parametrize(("dtype", "channels", "n_samples"), [("<i2", 1, 5), ("<f4", 8, 3), (">i2", 2, 4)])
def test_a_pcm_chunk_builder_lays_out_the_spec_s_fields_and_checksums(dtype, channels, n_samples):
    rng = np.random.default_rng(3)
    samples = (rng.standard_normal((n_samples, channels)) * 1000).astype(dtype)
    builder = PcmChunkBuilder(n_samples, channels, np.dtype(dtype), 22050)
    versions = [builder.chunk()]
    for block in (samples[:1], samples[1:1], samples[1:]):
        builder.extend(block)
        versions.append(builder.chunk())
    for stored, data in zip([0, 1, 1, n_samples], versions, strict=True):
        chunk = PcmChunk.parse(data)
        itemsize = np.dtype(dtype).itemsize
        assert chunk.fields == {
            "magic": b"ZAAC",
            "version": 2,
            "flags": 1,
            "channels": channels,
            "asc_nbytes": 0,
            "aac_sample_rate": 22050,
            "n_frames": stored,
            "n_samples": n_samples,
            "skip": 0,
            "frame_length": itemsize,
            "payload_nbytes": stored * channels * itemsize,
            "checksum_group": 0,
            "header_crc32c": chunk.fields["header_crc32c"],
        }
        assert chunk.checksums_hold()
        assert len(data) == 48 + 4 + stored * channels * itemsize
        np.testing.assert_array_equal(chunk.samples, samples[:stored])
        header = parse_header(data, KEY)
        np.testing.assert_array_equal(parse_pcm_chunk(data, header, np.dtype(dtype), KEY), samples[:stored])


@pytest.mark.parametrize("dtype", ["<i4", "<f8", "<u2", "<i1"])
def test_a_pcm_chunk_builder_refuses_other_sample_types_by_name(dtype):
    with pytest.raises(ValueError) as caught:
        PcmChunkBuilder(4, 1, np.dtype(dtype), 48000)
    assert str(caught.value) == f"a PCM chunk stores int16 or float32 samples, not {np.dtype(dtype)}"


def test_a_pcm_chunk_builder_takes_samples_up_to_its_length_and_no_more():
    builder = PcmChunkBuilder(4, 2, np.dtype("<i2"), 48000)
    builder.extend(np.ones((3, 2), "<i2"))
    with pytest.raises(ValueError) as caught:
        builder.extend(np.ones((2, 2), "<i2"))
    assert str(caught.value) == "3 + 2 samples do not fit a chunk of 4"
    assert builder.stored == 3
    builder.extend(np.full((1, 2), 7, "<i2"))
    np.testing.assert_array_equal(PcmChunk.parse(builder.chunk()).samples, [[1, 1], [1, 1], [1, 1], [7, 7]])


@pytest.mark.parametrize(
    "changed",
    [
        {"channels": 1, "payload_nbytes": 10 * 1 * 2},
        {"channels": 8, "payload_nbytes": 10 * 8 * 2},
        {"aac_sample_rate": 96000},
        {"aac_sample_rate": 8000},
        {"frame_length": 4, "payload_nbytes": 10 * 2 * 4},
        {"n_samples": 10},
        {"n_frames": 0, "payload_nbytes": 0},
    ],
)
def test_a_pcm_header_at_the_edges_of_each_field_is_read(changed):
    builder = PcmChunkBuilder(16, 2, np.dtype("<i2"), 48000)
    builder.extend(np.arange(20, dtype="<i2").reshape(10, 2))
    fields = {**PcmChunk.parse(builder.chunk()).fields, **changed}
    header = parse_header(PcmChunk.parse(builder.chunk()).pack(**changed), KEY)
    assert header == ChunkHeader(
        channels=fields["channels"],
        aac_sample_rate=fields["aac_sample_rate"],
        n_frames=fields["n_frames"],
        n_samples=fields["n_samples"],
        skip=0,
        asc_nbytes=0,
        payload_nbytes=fields["payload_nbytes"],
        checksum_group=0,
        frame_length=fields["frame_length"],
        is_pcm=True,
    )
    assert header.prefix_nbytes == 52
    assert header.n_groups == 1


@pytest.mark.parametrize(
    ("changed", "claims"),
    [
        ({"skip": 3}, "AudioSpecificConfig of 0 bytes, skip 3, checksum group 0"),
        ({"checksum_group": 16}, "AudioSpecificConfig of 0 bytes, skip 0, checksum group 16"),
        ({"asc_nbytes": 2}, "AudioSpecificConfig of 2 bytes, skip 0, checksum group 0"),
    ],
)
def test_a_pcm_header_with_any_one_aac_field_set_is_refused(changed, claims):
    builder = PcmChunkBuilder(16, 2, np.dtype("<i2"), 48000)
    builder.extend(np.arange(20, dtype="<i2").reshape(10, 2))
    with pytest.raises(CorruptChunkError) as caught:
        parse_header(PcmChunk.parse(builder.chunk()).pack(**changed), KEY)
    assert str(caught.value) == f"corrupt chunk {KEY!r}: PCM chunk header claims {claims}"


def test_a_pcm_chunk_is_read_whatever_the_top_bits_of_its_checksums():
    """Both CRCs are unsigned: chunks whose header or sample CRC has its top bit set read as well."""
    seen = set()
    for stored in range(1, 40):
        builder = PcmChunkBuilder(64, 1, np.dtype("<i2"), 48000)
        samples = np.arange(stored, dtype="<i2").reshape(stored, 1) * 37
        builder.extend(samples)
        data = builder.chunk()
        chunk = PcmChunk.parse(data)
        seen.add((chunk.fields["header_crc32c"] >= 1 << 31, chunk.payload_crc32c >= 1 << 31))
        np.testing.assert_array_equal(parse_pcm_chunk(data, parse_header(data, KEY), np.int16, KEY), samples)
    assert seen == {(False, False), (False, True), (True, False), (True, True)}


@pytest.mark.parametrize("dtype", ["<i8", ">u2", "<u4"])
def test_frame_sizes_of_any_integer_type_are_stored_as_the_spec_s_uint16(dtype):
    """The file store hands ``pack_prefix`` sizes from its own index, not always uint16."""
    sizes = np.array([300, 7, 6000, 1], dtype=dtype)
    payload = (bytes(range(256)) * 25)[:6308]
    for checked in (payload, None):
        prefix = pack_prefix(
            bytes(2), sizes, channels=1, aac_sample_rate=48000, n_samples=3000, skip=0, payload=checked
        )
        chunk = Chunk.parse(prefix + payload)
        assert chunk.prefix_nbytes == len(prefix) == 48 + 2 + 2 * 4 + (4 if checked else 0)
        np.testing.assert_array_equal(chunk.sizes, [300, 7, 6000, 1])
        assert chunk.fields["payload_nbytes"] == len(payload)
        header = parse_header(prefix, KEY)
        assert parse_prefix(prefix, header, KEY).index.frame_sizes.tolist() == [300, 7, 6000, 1]
        if checked:
            np.testing.assert_array_equal(chunk.checksums, chunk.group_checksums(16))
