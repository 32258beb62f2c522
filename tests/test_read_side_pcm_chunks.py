"""Partial reads of a PCM chunk (a live recording's unfinished last chunk): its samples exactly as
stored, from the first request when the whole chunk fits in it and from one more request of the
whole chunk otherwise; a chunk the writer encoded to AAC between those two requests decodes as
the AAC chunk it now is, with the array's gain, and one deleted between them reads as not stored."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from support.chunks import chunk_key, decode_chunk_sequentially, get_bytes, put_bytes
from support.signals import tone_with_noise
from support.stores import RecordingStore
from zarr.abc.store import ByteRequest, Store
from zarr.core.buffer import Buffer, BufferPrototype, default_buffer_prototype
from zarr.storage import MemoryStore, WrapperStore

import zarr_aac
from zarr_aac.codec import aac, aac_codec
from zarr_aac.codec.chunk_format import PcmChunkBuilder, prefix_nbytes_upper_bound
from zarr_aac.codec.prefix_cache import prefixes
from zarr_aac.errors import ChunkReadError, CorruptChunkError

RATE = 48_000
CHUNK = 40 * aac.FRAME_LENGTH
GAIN = 0.5


class ChangingStore(WrapperStore[Store]):
    """Calls ``after_first_get(chunks, key)`` once, with the wrapped store's dict of bytes, after the
    first get of a chunk key has its bytes (what a writer does to the chunk between a reader's
    requests); raises ``failing`` on every get once it is set."""

    def __init__(self, store: MemoryStore) -> None:
        super().__init__(store)
        self.after_first_get = None
        self.failing: Exception | None = None

    async def get(self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None) -> Buffer | None:
        if key.endswith("zarr.json"):
            return await self._store.get(key, prototype, byte_range)
        if self.failing is not None:
            raise self.failing
        result = await self._store.get(key, prototype, byte_range)
        if self.after_first_get is not None:
            change, self.after_first_get = self.after_first_get, None
            change(self._store._store_dict, key)
        return result


@pytest.fixture
def array():
    """A float32 stereo array of one chunk with a gain other than float32's default, its AAC chunk's
    bytes, the key, and the store (recording every request)."""
    changing = ChangingStore(MemoryStore())
    store = RecordingStore(changing)
    z = zarr.create_array(
        store,
        name="live",
        shape=(CHUNK, 2),
        chunks=(CHUNK, 2),
        dtype="float32",
        serializer=zarr_aac.AACCodec(sample_rate=RATE, gain=GAIN),
        compressors=None,
    )
    z[:] = tone_with_noise(CHUNK, 2, RATE, seed=5)
    key = chunk_key(z, (0, 0))
    prefixes.clear()
    yield z, get_bytes(z, key), key, changing, store.log
    prefixes.clear()


def pcm_chunk(samples: np.ndarray) -> bytes:
    builder = PcmChunkBuilder(CHUNK, 2, np.dtype("float32"), RATE)
    builder.extend(samples)
    return builder.chunk()


def stored_samples(count: int) -> np.ndarray:
    return (tone_with_noise(count, 2, RATE, seed=6) * 0.3).astype(np.float32)


def n_frames_bound() -> int:
    """The first request's length for a chunk of this array's length (the codec's own bound)."""
    return prefix_nbytes_upper_bound(aac.frames_for_samples(CHUNK + aac_codec.LEAD_IN + aac_codec.LEAD_OUT))


@pytest.mark.parametrize(("count", "gets"), [(10, 1), (2000, 2)])
def test_a_partial_read_of_a_pcm_chunk_gives_its_samples_as_stored(array, count, gets):
    z, _, key, _, log = array
    samples = stored_samples(count)
    data = pcm_chunk(samples)
    assert (len(data) <= n_frames_bound()) == (gets == 1)
    put_bytes(z, key, data)
    log.reset()
    got = z[3 : CHUNK - 5]
    expected = np.zeros((CHUNK, 2), np.float32)
    expected[:count] = samples
    np.testing.assert_array_equal(got, expected[3 : CHUNK - 5])
    assert log.gets == gets
    np.testing.assert_array_equal(z[[1, 7, count + 3]], expected[[1, 7, count + 3]])


def test_a_pcm_chunk_encoded_between_the_two_requests_decodes_as_aac(array):
    z, aac_chunk, key, changing, _ = array
    put_bytes(z, key, pcm_chunk(stored_samples(2000)))
    encoded = default_buffer_prototype().buffer.from_bytes(aac_chunk)
    changing.after_first_get = lambda chunks, k: chunks.__setitem__(k, encoded)
    got = z[3 : CHUNK - 5]
    expected = decode_chunk_sequentially(aac_chunk) / np.float32(GAIN)
    np.testing.assert_array_equal(got, expected[3 : CHUNK - 5])


def test_a_pcm_chunk_deleted_between_the_two_requests_reads_as_not_stored(array):
    z, _, key, changing, _ = array
    put_bytes(z, key, pcm_chunk(stored_samples(2000)))
    changing.after_first_get = lambda chunks, k: chunks.pop(k)
    np.testing.assert_array_equal(z[3 : CHUNK - 5], 0)


def test_a_store_failing_the_second_request_of_a_pcm_chunk_names_the_chunk(array):
    z, _, key, changing, _ = array
    put_bytes(z, key, pcm_chunk(stored_samples(2000)))

    def fail_from_now_on(chunks, k):
        changing.failing = TimeoutError("read timed out")

    changing.after_first_get = fail_from_now_on
    with pytest.raises(ChunkReadError) as caught:
        z[3 : CHUNK - 5]
    assert caught.value.key == key and isinstance(caught.value.__cause__, TimeoutError)


def test_a_kept_prefix_of_a_chunk_rewritten_as_pcm_is_dropped(array):
    """A reader kept the AAC chunk's prefix; the chunk is then rewritten as a PCM chunk behind its
    back. The next read tries the kept prefix (one request for frames that are not there), then
    reads the PCM chunk; the read after that no longer tries the old prefix."""
    z, _, key, changing, log = array
    z[3:2000]
    samples = stored_samples(2000)
    changing._store._store_dict[key] = default_buffer_prototype().buffer.from_bytes(pcm_chunk(samples))
    for gets in (3, 2):
        log.reset()
        np.testing.assert_array_equal(z[3:1000], samples[3:1000])
        assert log.gets == gets


@pytest.mark.parametrize("count", [10, 2000])
def test_a_partial_read_of_a_damaged_pcm_chunk_names_it(array, count):
    z, _, key, _, _ = array
    data = bytearray(pcm_chunk(stored_samples(count)))
    data[-1] ^= 1
    put_bytes(z, key, bytes(data))
    with pytest.raises(CorruptChunkError) as caught:
        z[3 : CHUNK - 5]
    assert caught.value.key == key
