"""Partial reads of a chunk whose header and index are larger than the first request of a read
takes (``prefix_nbytes_upper_bound`` of the frames this codec writes for the chunk length): a
chunk with a checksum for every frame, which docs/spec.md allows (this codec writes one per 16).
The second request asks for exactly the rest of the prefix; the samples are those of a full
sequential decode of the stored chunk; a chunk deleted between the two requests reads as not
stored, and a store failing the second request raises a ChunkReadError naming the chunk."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from support.chunks import Chunk, chunk_key, get_bytes, put_bytes
from support.selections import reference_decode
from support.signals import tone_with_noise
from support.stores import RecordingStore
from test_read_side_pcm_chunks import ChangingStore
from zarr.storage import MemoryStore

import zarr_aac
from zarr_aac.codec import aac, decode_pool
from zarr_aac.codec.aac_codec import LEAD_IN, LEAD_OUT
from zarr_aac.codec.chunk_format import prefix_nbytes_upper_bound
from zarr_aac.errors import ChunkReadError

RATE = 48_000
CHUNK = 300 * aac.FRAME_LENGTH


@pytest.fixture
def array():
    """A stereo int16 array of one chunk with a checksum a frame; the array, the chunk as
    support.chunks parses it, the bound of the first request, the store wrapper that changes
    the chunk between requests, and the request log."""
    changing = ChangingStore(MemoryStore())
    store = RecordingStore(changing)
    z = zarr.create_array(
        store,
        shape=(CHUNK, 2),
        chunks=(CHUNK, 2),
        dtype="int16",
        serializer=zarr_aac.AACCodec(sample_rate=RATE),
        compressors=None,
    )
    z[:] = (tone_with_noise(CHUNK, 2, RATE, seed=41) * 20_000).astype(np.int16)
    key = chunk_key(z, (0, 0))
    put_bytes(z, key, Chunk.parse(get_bytes(z, key)).pack(checksum_group=1))
    chunk = Chunk.parse(get_bytes(z, key))
    bound = prefix_nbytes_upper_bound(aac.frames_for_samples(CHUNK + LEAD_IN + LEAD_OUT))
    assert chunk.prefix_nbytes > bound
    with zarr.config.set({decode_pool.CONFIG_KEY: 0}):
        yield z, chunk, bound, changing, store.log


@pytest.mark.parametrize("selection", [np.s_[20_000:21_000], np.s_[[5, 150_000, CHUNK - 1]]])
def test_the_rest_of_a_large_index_is_the_second_request(array, selection):
    z, chunk, _, _, log = array
    reference = reference_decode(z)
    log.reset()
    np.testing.assert_array_equal(z[selection], reference[selection])
    first, rest, *frames = log.requests
    assert first.start == 0 and first.stop < chunk.prefix_nbytes
    assert (rest.start, rest.stop) == (first.stop, chunk.prefix_nbytes)
    assert frames and all(request.start >= chunk.prefix_nbytes for request in frames)


def test_a_chunk_deleted_between_the_two_requests_reads_as_not_stored(array):
    z, _, _, changing, log = array
    changing.after_first_get = lambda chunks, key: chunks.pop(key)
    log.reset()
    np.testing.assert_array_equal(z[20_000:21_000], 0)
    assert log.gets == 2


def test_a_store_failing_the_second_request_names_the_chunk(array):
    z, _, _, changing, _ = array

    def fail_from_now_on(chunks, key):
        changing.failing = TimeoutError("read timed out")

    changing.after_first_get = fail_from_now_on
    with pytest.raises(ChunkReadError) as caught:
        z[20_000:21_000]
    assert caught.value.key == str(z.store_path / chunk_key(z, (0, 0)))
    assert isinstance(caught.value.__cause__, TimeoutError)
