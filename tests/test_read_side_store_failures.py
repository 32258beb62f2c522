"""A store that fails to deliver a chunk's bytes, at each of the read path's requests (the whole
chunk, its prefix, its frames): the read raises a ChunkReadError naming the chunk, with the store's
own error as its cause and in its message, never fill values; a chunk gone between the prefix
and the frames reads as absent; and every request carries the buffer prototype the read was given."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from support.chunks import chunk_key
from support.signals import tone_with_noise
from zarr.abc.store import ByteRequest, RangeByteRequest, Store
from zarr.core.buffer import Buffer, BufferPrototype, cpu
from zarr.storage import MemoryStore, WrapperStore

import zarr_aac
from zarr_aac.codec import aac
from zarr_aac.codec.prefix_cache import prefixes
from zarr_aac.errors import ChunkReadError

RATE = 48_000
CHUNK = 40 * aac.FRAME_LENGTH


class FailingStore(WrapperStore[Store]):
    """Fails each get of a chunk key whose byte range ``fails`` picks, with ``error``."""

    def __init__(self, store: Store, fails=lambda byte_range: False, error: Exception | None = None) -> None:
        super().__init__(store)
        self.fails = fails
        self.error = error
        self.prototypes: list[BufferPrototype] = []

    def _with_store(self, store: Store) -> FailingStore:
        return type(self)(store, self.fails, self.error)

    async def get(self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None) -> Buffer | None:
        if not key.endswith("zarr.json"):
            self.prototypes.append(prototype)
            if self.fails(byte_range):
                raise self.error
        return await self._store.get(key, prototype, byte_range)


def whole(byte_range):
    return byte_range is None


def prefix(byte_range):
    return isinstance(byte_range, RangeByteRequest) and byte_range.start == 0


def frames(byte_range):
    return isinstance(byte_range, RangeByteRequest) and byte_range.start > 0


@pytest.fixture
def array():
    store = FailingStore(MemoryStore())
    z = zarr.create_array(
        store,
        name="take",
        shape=(CHUNK, 2),
        chunks=(CHUNK, 2),
        dtype="int16",
        serializer=zarr_aac.AACCodec(sample_rate=RATE),
        compressors=None,
    )
    z[:] = (tone_with_noise(CHUNK, 2, RATE, seed=4) * 20000).astype(np.int16)
    prefixes.clear()
    yield z, store
    prefixes.clear()


@pytest.mark.parametrize(
    ("request_kind", "selection"),
    [(whole, np.s_[:]), (prefix, np.s_[1000:2000]), (frames, np.s_[1000:2000]), (prefix, np.s_[[5, 30_000]])],
)
def test_a_failing_store_raises_a_chunk_read_error_naming_the_chunk(array, request_kind, selection):
    z, store = array
    store.fails, store.error = request_kind, ConnectionResetError("peer went away")
    with pytest.raises(ChunkReadError) as caught:
        z[selection]
    assert caught.value.key == chunk_key(z, (0, 0))
    assert isinstance(caught.value.__cause__, ConnectionResetError)
    assert str(caught.value).startswith(f"cannot read chunk {chunk_key(z, (0, 0))!r} from the store: ")
    assert str(caught.value).endswith("ConnectionResetError: peer went away")


@pytest.mark.parametrize("request_kind", [prefix, frames])
def test_a_failing_store_during_a_clip_read_raises_a_chunk_read_error_naming_the_chunk(array, request_kind):
    """read_clips fetches the prefix and the clips' frames itself (codec/clips.py): the same error."""
    z, store = array
    store.fails, store.error = request_kind, ConnectionResetError("peer went away")
    with pytest.raises(ChunkReadError) as caught:
        zarr_aac.read_clips(z, [1000, 20_000], 2000)
    assert caught.value.key == chunk_key(z, (0, 0))
    assert isinstance(caught.value.__cause__, ConnectionResetError)


def test_a_failing_store_names_the_chunk_whose_prefix_was_kept_from_an_earlier_read(array):
    """The second read of a chunk starts from its kept prefix (support.chunks.put_bytes clears
    those): its one request, for the frames, fails, and the error names the chunk all the same."""
    z, store = array
    z[1000:2000]
    store.fails, store.error = lambda byte_range: True, ConnectionResetError("peer went away")
    store.prototypes.clear()
    with pytest.raises(ChunkReadError) as caught:
        z[5000:6000]
    assert len(store.prototypes) == 1
    assert caught.value.key == chunk_key(z, (0, 0)) and isinstance(caught.value.__cause__, ConnectionResetError)


def test_a_chunk_deleted_before_its_frames_are_fetched_reads_as_not_stored(array):
    """The prefix came, then the chunk was deleted before the frames' request: zarr's fill value,
    as for any chunk not stored (this array does not claim all its chunks are stored)."""
    z, store = array
    key = chunk_key(z, (0, 0))

    def deleted_before_frames(byte_range):
        if frames(byte_range):
            store._store._store_dict.pop(key)
        return False

    store.fails = deleted_before_frames
    np.testing.assert_array_equal(z[1000:2000], 0)
    assert key not in store._store._store_dict


class TaggedBuffer(cpu.Buffer):
    """A CPU buffer of its own class: a read given a prototype of it must ask the store for it."""


@pytest.mark.parametrize("selection", [np.s_[:], np.s_[1000:2000], np.s_[[5, 30_000]]])
def test_every_request_carries_the_reads_buffer_prototype(array, selection):
    z, store = array
    tagged = BufferPrototype(buffer=TaggedBuffer, nd_buffer=cpu.NDBuffer)
    expected = z[selection]
    prefixes.clear()
    store.prototypes.clear()
    got = z.get_orthogonal_selection(selection, prototype=tagged)
    np.testing.assert_array_equal(got, expected)
    assert store.prototypes and all(prototype is tagged for prototype in store.prototypes)
