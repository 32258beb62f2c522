"""Sharded zarr_aac arrays (zarr's sharding codec with zarr_aac as the inner serializer) read exactly
as plain ones: in every layout below, written whole or in blocks that do and do not align with the
shards, the inner chunks a shard holds are the bytes of the plain array's chunks, and every read
equals the full sequential decode of those chunks (support.selections.reference_decode of the plain
array). A sharded array left to the default bitrate stores other bytes than a plain one of the same
chunks, because zarr chooses it from other shapes (docs/claims.md, "aac_codec.py's read side, the
last of it"); it still reads its own chunks' sequential decode."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st
from support.chunks import Chunk, decode_chunk_sequentially, get_bytes, put_bytes
from support.selections import assert_selections_match, reference_decode, to_int16
from support.signals import tone_with_noise
from zarr.storage import MemoryStore

from zarr_aac import AACCodec
from zarr_aac.codec import aac
from zarr_aac.errors import CorruptChunkError, GenerationLossWarning

RATE = 48_000
CHUNK = 10 * aac.FRAME_LENGTH
NO_INDEX_ENTRY = 2**64 - 1

LAYOUTS = {
    # name: (shape, inner chunks, shards, dtype, samples per written block (None: one write), bitrate)
    "mono, 2 chunks a shard, partial last shard": ((5 * CHUNK + 300,), (CHUNK,), (2 * CHUNK,), "int16", None, None),
    "mono float32, 3 chunks a shard, unaligned blocks": (
        (7 * CHUNK + 5,),
        (CHUNK,),
        (3 * CHUNK,),
        "float32",
        2500,
        None,
    ),
    "stereo chunks, 2 along time": ((5 * CHUNK + 100, 2), (CHUNK, 2), (2 * CHUNK, 2), "int16", None, None),
    "mono chunks of stereo, 2 along time and channels, shard-aligned blocks": (
        (5 * CHUNK + 100, 2),
        (CHUNK, 1),
        (2 * CHUNK, 2),
        "int16",
        2 * CHUNK,
        130_000,
    ),
    "mono chunks of stereo, 2 along channels, half-chunk blocks": (
        (3 * CHUNK + 7, 2),
        (CHUNK, 1),
        (CHUNK, 2),
        "int16",
        CHUNK // 2,
        130_000,
    ),
    "stereo chunks of 4 channels, 2 along time and channels": (
        (4 * CHUNK + 11, 4),
        (CHUNK, 2),
        (2 * CHUNK, 4),
        "float32",
        3 * CHUNK,
        160_000,
    ),
}


def samples_for(shape, dtype, seed):
    channels = shape[1] if len(shape) == 2 else 1
    pcm = tone_with_noise(shape[0], channels, RATE, seed=seed).reshape(shape)
    return (pcm * 32767).astype(np.int16) if dtype == "int16" else pcm


def written(pcm, chunks, *, shards=None, dtype, block, bitrate, compressors=None) -> zarr.Array:
    """An in-memory zarr_aac array holding ``pcm``, written whole or in blocks of ``block`` samples."""
    z = zarr.create_array(
        MemoryStore(),
        shape=pcm.shape,
        chunks=chunks,
        shards=shards,
        dtype=dtype,
        fill_value=0,
        serializer=AACCodec(sample_rate=RATE, bitrate=bitrate),
        compressors=compressors,
    )
    with warnings.catch_warnings():
        # Blocks that end inside a chunk re-encode it, the same way in both arrays.
        warnings.simplefilter("ignore", GenerationLossWarning)
        for start in range(0, pcm.shape[0], block or pcm.shape[0]):
            z[start : start + (block or pcm.shape[0])] = pcm[start : start + (block or pcm.shape[0])]
    return z


def inner_chunks(z: zarr.Array, chunks, shards) -> dict[tuple[int, ...], bytes]:
    """Each stored inner chunk by its coordinates in the array's grid of inner chunks, cut from
    the shards with the index the sharding codec's specification lays out at a shard's end: an
    (offset, nbytes) pair of little-endian uint64 a chunk, in C order, then its CRC32C."""
    per_shard = tuple(s // c for s, c in zip(shards, chunks, strict=True))
    n = int(np.prod(per_shard))
    found = {}
    for shard in itertools.product(*(range(-(-a // s)) for a, s in zip(z.shape, shards, strict=True))):
        data = get_bytes(z, z.metadata.encode_chunk_key(shard))
        if data is None:
            continue
        index = np.frombuffer(data[-(16 * n + 4) : -4], dtype="<u8").reshape(*per_shard, 2)
        for inner in itertools.product(*(range(k) for k in per_shard)):
            offset, nbytes = (int(v) for v in index[inner])
            if offset != NO_INDEX_ENTRY:
                coords = tuple(s * k + i for s, k, i in zip(shard, per_shard, inner, strict=True))
                found[coords] = data[offset : offset + nbytes]
    return found


def plain_chunks(z: zarr.Array) -> dict[tuple[int, ...], bytes]:
    grid = (-(-a // c) for a, c in zip(z.shape, z.chunks, strict=True))
    found = {}
    for coords in itertools.product(*(range(k) for k in grid)):
        data = get_bytes(z, z.metadata.encode_chunk_key(coords))
        if data is not None:
            found[coords] = data
    return found


@pytest.fixture(scope="module", params=list(LAYOUTS), ids=list(LAYOUTS))
def layout(request):
    """(sharded array, plain array of the same inner chunks and samples, the plain array's
    reference decode, layout) for one layout."""
    shape, chunks, shards, dtype, block, bitrate = LAYOUTS[request.param]
    pcm = samples_for(shape, dtype, seed=len(request.param))
    sharded = written(pcm, chunks, shards=shards, dtype=dtype, block=block, bitrate=bitrate)
    plain = written(pcm, chunks, dtype=dtype, block=block, bitrate=bitrate)
    return sharded, plain, reference_decode(plain), (chunks, shards)


def test_shards_hold_the_plain_arrays_chunks(layout):
    """The encode side: each inner chunk is byte for byte the plain array's chunk there."""
    sharded, plain, _, (chunks, shards) = layout
    assert inner_chunks(sharded, chunks, shards) == plain_chunks(plain)


def test_a_sharded_array_reads_the_sequential_decode_of_its_chunks(layout):
    """The read side: the whole array, reads across inner-chunk and shard ends, and random
    selections of every kind equal the full sequential decode, as the plain array's do."""
    sharded, plain, reference, (chunks, shards) = layout
    np.testing.assert_array_equal(plain[...], reference)
    np.testing.assert_array_equal(sharded[...], reference)
    n = sharded.shape[0]
    for end in sorted({*range(chunks[0], n, chunks[0]), *range(shards[0], n, shards[0])}):
        for before, after in ((700, 900), (1, 1), (chunks[0] + 5, 3)):
            lo, hi = max(end - before, 0), min(end + after, n)
            np.testing.assert_array_equal(sharded[lo:hi], reference[lo:hi])
    np.testing.assert_array_equal(sharded[n - 5 :], reference[n - 5 :])
    np.testing.assert_array_equal(sharded[::997], reference[::997])
    assert_selections_match(sharded, reference, np.random.default_rng(len(sharded.shape) + n), rounds=4)


@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_selections_of_a_sharded_array_read_like_the_plain_arrays(layout, data):
    """Any slice, with any step, of time and channels reads the plain array's values."""
    sharded, plain, reference, _ = layout
    n = sharded.shape[0]
    start = data.draw(st.integers(0, n - 1), label="start")
    stop = data.draw(st.integers(start + 1, n), label="stop")
    step = data.draw(st.sampled_from([1, 1, 2, 7, 1024, 5000]), label="step")
    selection: tuple = (slice(start, stop, step),)
    if sharded.ndim == 2:
        first = data.draw(st.integers(0, sharded.shape[1] - 1), label="first channel")
        selection += (slice(first, data.draw(st.integers(first + 1, sharded.shape[1]), label="channels end")),)
    np.testing.assert_array_equal(sharded[selection], reference[selection])
    np.testing.assert_array_equal(sharded[selection], plain[selection])


@pytest.mark.parametrize("compressors", [None, "auto"], ids=["inner reads in parts", "inner chunks compressed"])
def test_a_sharded_array_left_to_the_default_bitrate_reads_its_own_chunks(compressors):
    """Mono inner chunks of a stereo array, no bitrate given: zarr evolves a sharded array's inner
    codec from the inner chunk's shape (one channel: 130 kbps) and a plain array's codec from the
    array's (two: 160 kbps), so the two store other bytes; each reads its own chunks exactly."""
    shape, chunks, shards = (4 * CHUNK + 50, 2), (CHUNK, 1), (2 * CHUNK, 2)
    pcm = samples_for(shape, "int16", seed=5)
    sharded = written(pcm, chunks, shards=shards, dtype="int16", block=None, bitrate=None, compressors=compressors)
    (sharding,) = sharded.metadata.codecs
    assert sharding.codecs[0].bitrate == aac.default_bitrate(1, RATE)
    plain = written(pcm, chunks, dtype="int16", block=None, bitrate=None)
    assert plain.metadata.codecs[0].bitrate == aac.default_bitrate(2, RATE)
    expected = np.zeros(shape, dtype=np.int16)
    unpacked = written(pcm, chunks, shards=shards, dtype="int16", block=None, bitrate=None)
    for (i, j), data in inner_chunks(unpacked, chunks, shards).items():
        rows = slice(i * CHUNK, min((i + 1) * CHUNK, shape[0]))
        expected[rows, j] = to_int16(decode_chunk_sequentially(data), 0.25)[: rows.stop - rows.start, 0]
    np.testing.assert_array_equal(sharded[...], expected)
    np.testing.assert_array_equal(sharded[CHUNK - 300 : 2 * CHUNK + 300, 1], expected[CHUNK - 300 : 2 * CHUNK + 300, 1])
    np.testing.assert_array_equal(plain[...], reference_decode(plain))


def test_a_corrupt_inner_chunk_raises():
    """An inner chunk whose frames fail their checksums raises CorruptChunkError on a read of part
    of it, read through the sharding codec's byte getter, which has no path or store to name."""
    shape, chunks, shards = (4 * CHUNK, 2), (CHUNK, 2), (2 * CHUNK, 2)
    z = written(samples_for(shape, "int16", seed=9), chunks, shards=shards, dtype="int16", block=None, bitrate=None)
    key = z.metadata.encode_chunk_key((0, 0))
    data = bytearray(get_bytes(z, key))
    first = inner_chunks(z, chunks, shards)[0, 0]
    assert data.startswith(first)
    data[Chunk.parse(first).prefix_nbytes + 40] ^= 0xFF  # a byte of the shard's first inner chunk's frames
    put_bytes(z, key, bytes(data))
    with pytest.raises(CorruptChunkError, match="checksum"):
        z[100:200]
