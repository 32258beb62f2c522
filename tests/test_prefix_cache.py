"""The cache of parsed chunk prefixes: a repeated partial read is one request, and a cached
entry is only ever a hint that the frames' group checksums confirm or reject."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import zarr
from support.selections import reference_decode
from support.signals import tone_with_noise
from support.stores import RecordingStore

import zarr_aac
from zarr_aac.codec.chunk_format import parse_header, parse_prefix
from zarr_aac.codec.prefix_cache import PrefixCache, location_of, prefixes

CHUNK = 48_000


@pytest.fixture
def stored():
    """A 3-chunk stereo array on a counting MemoryStore, its request log and the PCM it holds."""
    pcm = (tone_with_noise(3 * CHUNK, 2, 48000, seed=3) * 32767).astype(np.int16)
    store = RecordingStore(zarr.storage.MemoryStore())
    z = zarr.create_array(
        store,
        shape=pcm.shape,
        chunks=(CHUNK, 2),
        dtype="int16",
        serializer=zarr_aac.AACCodec(sample_rate=48000),
        compressors=None,
    )
    z[:] = pcm
    return z, store


def _raw(store: RecordingStore, key: str) -> bytes:
    return store._store._store_dict[key].to_bytes()


def _replace(store: RecordingStore, key: str, data: bytes) -> None:
    """Rewrite a chunk behind zarr's back, as another process would (the cache is not told)."""
    proto = zarr.core.buffer.default_buffer_prototype()
    asyncio.run(store._store.set(key, proto.buffer.from_bytes(data)))


def test_a_rewritten_chunk_is_read_from_its_new_bytes(stored):
    z, store = stored
    window = slice(CHUNK + 1000, CHUNK + 3000)
    z[window]
    other = (tone_with_noise(CHUNK, 2, 48000, seed=99) * 32767).astype(np.int16)
    other_array = zarr.create_array(
        zarr.storage.MemoryStore(),
        shape=other.shape,
        chunks=other.shape,
        dtype="int16",
        serializer=zarr_aac.AACCodec(sample_rate=48000),
        compressors=None,
    )
    other_array[:] = other
    _replace(store, "c/1/0", other_array.store_path.store._store_dict["c/0/0"].to_bytes())
    store.log.reset()
    np.testing.assert_array_equal(z[window], reference_decode(other_array)[1000:3000])
    assert store.log.per_key["c/1/0"] == 3, "stale frames (1 request), then prefix and frames afresh (2)"
    store.log.reset()
    z[window]
    assert store.log.per_key["c/1/0"] == 1


def test_a_damaged_prefix_behind_a_cached_index_still_reads_verified_samples(stored):
    z, store = stored
    reference = reference_decode(z)
    window = slice(CHUNK + 1000, CHUNK + 3000)
    z[window]
    damaged = bytearray(_raw(store, "c/1/0"))
    damaged[20] ^= 0x55
    _replace(store, "c/1/0", bytes(damaged))
    np.testing.assert_array_equal(z[window], reference[window])
    with pytest.raises(zarr_aac.CorruptChunkError, match="/c/1/0': header"):
        z[CHUNK : 2 * CHUNK]
    prefixes.clear()
    with pytest.raises(zarr_aac.CorruptChunkError, match="/c/1/0': header"):
        z[window]


def test_damaged_frames_behind_a_cached_index_raise(stored):
    z, store = stored
    window = slice(CHUNK + 1000, CHUNK + 3000)
    z[window]
    data = _raw(store, "c/1/0")
    prefix = parse_prefix(data, parse_header(data, None), None)
    frame = int(prefix.index.frame_of(2000))
    damaged = bytearray(data)
    damaged[prefix.header.prefix_nbytes + int(prefix.index.byte_offsets[frame]) + 3] ^= 0x01
    _replace(store, "c/1/0", bytes(damaged))
    with pytest.raises(zarr_aac.CorruptChunkError, match="/c/1/0': checksum mismatch in frames"):
        z[window]


def test_a_deleted_chunk_behind_a_cached_index_reads_as_fill_value(stored):
    z, store = stored
    z[CHUNK + 10 : CHUNK + 20]
    asyncio.run(store._store.delete("c/1/0"))
    np.testing.assert_array_equal(z[CHUNK + 10 : CHUNK + 20], 0)


def test_the_cache_is_bounded_by_memory_and_keeps_recent_entries(stored):
    _, store = stored
    data = _raw(store, "c/0/0")
    prefix = parse_prefix(data, parse_header(data, None), None)
    cache = PrefixCache(max_bytes=3 * prefix.nbytes)
    for i in range(5):
        cache.put(f"memory://x/c/{i}/0", prefix)
    assert cache.get("memory://x/c/4/0") is prefix
    assert cache.get("memory://x/c/0/0") is None
    tiny = PrefixCache(max_bytes=prefix.nbytes - 1)
    tiny.put("a", prefix)
    assert tiny.get("a") is None


def test_only_store_paths_have_a_location(stored):
    z, _ = stored
    assert location_of(z.store_path / "c/0/0").endswith("/c/0/0")
    assert location_of(object()) is None


def test_each_kept_prefix_counts_at_least_the_memory_of_its_index():
    """The bound is memory, not a count: a prefix counts at least what its frame index and
    checksums hold (numpy's own figure for the arrays), so a cache of four such indexes keeps no
    more than four prefixes of a 10 s chunk, whatever else each costs."""
    rate = 48_000
    pcm = (tone_with_noise(10 * rate, 1, rate, seed=1) * 32767).astype(np.int16)
    data = zarr_aac.AACCodec(sample_rate=rate).encode_pcm(pcm)
    prefix = parse_prefix(data, parse_header(data, None), None)
    held = prefix.index.byte_offsets.nbytes + prefix.group_checksums.nbytes
    cache = PrefixCache(max_bytes=4 * held)
    for i in range(20):
        cache.put(f"memory://x/c/{i}", prefix)
    kept = [i for i in range(20) if cache.get(f"memory://x/c/{i}") is not None]
    assert 1 <= len(kept) <= 4
    assert kept == list(range(20 - len(kept), 20))
