"""How a chunk read parses its selection's first axis and what it asks of the store, each against an
independent reference (the full sequential decode of support.selections.reference_decode, the chunk
laid out by support.chunks): reads counted in flight by the rows they ask for, every kind of
first-axis selector, a chunk whose index outgrows the first request, the name a chunk's errors give
it, and arrays whose chunks zarr decodes whole (docs/claims.md, "aac_codec.py's read side, the last
of it")."""

from __future__ import annotations

import asyncio

import google_crc32c
import numpy as np
import pytest
import zarr
from support.arrays import tone_array
from support.chunks import Chunk, chunk_key, decode_chunk_sequentially, get_bytes, put_bytes
from support.pool import pool_on
from support.selections import reference_decode, to_int16
from support.signals import tone_with_noise
from support.stores import RecordingStore
from zarr.abc.store import ByteRequest, Store
from zarr.codecs import Crc32cCodec
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.storage import LocalStore, MemoryStore, WrapperStore

from zarr_aac import AACCodec, tolerant_reads
from zarr_aac.codec import aac, decode_pool
from zarr_aac.errors import ChunkReadError, CorruptChunkError, MissingChunkError

RATE = 48_000
CHUNK = 60 * aac.FRAME_LENGTH


class AnsweringLater(WrapperStore[Store]):
    """Answers each request one turn of the event loop later, as a remote store does: the chunk
    reads of a call are all in flight before the first has its bytes."""

    def _with_store(self, store: Store) -> AnsweringLater:
        return type(self)(store)

    async def get(self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None) -> Buffer | None:
        await asyncio.sleep(0)
        return await self._store.get(key, prototype, byte_range)


@pytest.fixture
def in_flight(monkeypatch):
    """A fresh count of the chunk reads in flight, none of them remembered as concurrent."""
    reads = decode_pool._ReadsInFlight()
    monkeypatch.setattr(decode_pool, "reads_in_flight", reads)
    return reads


@pytest.fixture(scope="module")
def remote_array():
    """A stereo int16 array of two chunks on a store that answers later, and its full sequential decode."""
    z = tone_array((2 * CHUNK, 2), (CHUNK, 2), RATE, store=AnsweringLater(MemoryStore()), seed=21)
    return z, reference_decode(z)


def test_a_read_across_a_chunk_end_counts_as_one_call(remote_array, in_flight, monkeypatch):
    """The two chunk reads of one call meet at the chunk end: neither counts the other as another
    call's, so with no other read in flight their short spans decode in the reading process."""
    z, reference = remote_array
    before = in_flight.last_overlap
    with pool_on(monkeypatch, 2) as record:
        np.testing.assert_array_equal(z[CHUNK - 5000 : CHUNK + 3000], reference[CHUNK - 5000 : CHUNK + 3000])
    assert in_flight.begun == 2
    assert in_flight.last_overlap == before
    assert record.reads == []


def test_reads_of_two_calls_begun_together_count_as_concurrent(remote_array, in_flight, monkeypatch):
    """Two calls gathered in one event loop begin their chunk reads in the same turn of it, at rows
    that do not continue each other: each counts the other's, so their short spans go to the
    workers whole, leaving the event loop to the other read."""
    z, reference = remote_array
    first, second = np.s_[1000:9000], np.s_[CHUNK + 20_000 : CHUNK + 26_000]

    async def both():
        return await asyncio.gather(z._async_array.getitem(first), z._async_array.getitem(second))

    with pool_on(monkeypatch, 2) as record:
        got_first, got_second = zarr.core.sync.sync(both())
    np.testing.assert_array_equal(got_first, reference[first])
    np.testing.assert_array_equal(got_second, reference[second])
    assert in_flight.begun == 2
    assert in_flight.last_overlap == 2
    assert len(record.reads) == 2
    assert all(len(jobs) == 1 for jobs in record.reads)
    assert record.here == []


@pytest.fixture(scope="module")
def two_chunks():
    """A stereo int16 array of two chunks on a store recording every request, and its full
    sequential decode."""
    z = tone_array((2 * CHUNK, 2), (CHUNK, 2), RATE, store=RecordingStore(MemoryStore()), seed=22)
    return z, reference_decode(z), z.store_path.store.log


SELECTIONS = {
    "step 2": np.s_[100:5000:2],
    "step 2 across the chunk end": np.s_[CHUNK - 3001 : CHUNK + 3000 : 2],
    "step 3 from the chunk start": np.s_[:2000:3],
    "int": np.s_[7],
    "numpy int": np.s_[np.int64(CHUNK + 9)],
    "last row": np.s_[-1],
    "int and channel": np.s_[CHUNK + 1234, 1],
    "steps and a channel": np.s_[50:40_000:1000, 0],
}


@pytest.mark.parametrize("selection", SELECTIONS.values(), ids=SELECTIONS.keys())
def test_every_first_axis_selector_reads_the_reference(two_chunks, selection):
    z, reference, _ = two_chunks
    got = z[selection]
    assert np.shape(got) == reference[selection].shape
    np.testing.assert_array_equal(got, reference[selection])


@pytest.mark.parametrize(
    "rows",
    [
        [9000, 5, 5, 9000, 3000, CHUNK - 1, 0],
        [CHUNK + 10, 40, CHUNK + 10, 2 * CHUNK - 1],
        [*range(30_000, 30_100, 7), 2047, 2048, 2049],
    ],
    ids=["unsorted with repeats", "both chunks", "frames apart and adjacent"],
)
def test_rows_in_any_order_read_the_reference(two_chunks, rows):
    """Rows given out of order and more than once (oindex, and vindex with a channel for each),
    with the channels subset, each read its own sample."""
    z, reference, _ = two_chunks
    rows = np.array(rows)
    np.testing.assert_array_equal(z.oindex[rows], reference[rows])
    np.testing.assert_array_equal(z.oindex[rows, [1]], reference[np.ix_(rows, [1])])
    channels = np.arange(rows.size) % 2
    np.testing.assert_array_equal(z.vindex[rows, channels], reference[rows, channels])
    mask = np.zeros(z.shape[0], dtype=bool)
    mask[rows] = True
    np.testing.assert_array_equal(z.oindex[mask], reference[mask])


@pytest.mark.parametrize("dtype", ["uint64", "uint32", "uint16"])
def test_rows_zarr_hands_the_wrong_chunk_are_refused(two_chunks, dtype):
    """zarr 3.1 gives each chunk the rows of an unsorted index array of unsigned integers that lie
    in the other chunk (a plain zarr array raises IndexError for them): refused, where they would
    read as samples the read did not ask for. Sorted, such an array reads the reference."""
    z, reference, _ = two_chunks
    rows = np.array([5, CHUNK + 2000, 7], dtype=dtype)
    with pytest.raises(IndexError, match=rf"chunk of {CHUNK} samples for its sample -?\d+, which it does not hold"):
        z.oindex[rows]
    rows.sort()
    np.testing.assert_array_equal(z.oindex[rows], reference[rows.astype(np.int64)])


def test_rows_covering_a_chunk_read_it_whole_in_one_request(two_chunks):
    """Every row of a chunk, given as rows, is the whole chunk: one request for all of it."""
    z, reference, log = two_chunks
    rows = np.arange(CHUNK)[::-1]
    log.reset()
    np.testing.assert_array_equal(z.oindex[rows], reference[rows])
    ((request,),) = [log.requests]
    assert (request.start, request.stop) == (0, None)


@pytest.fixture
def one_checksum_a_frame():
    """A stereo int16 array of one chunk whose chunk has a checksum for each frame (a group of 1,
    which docs/spec.md allows; this codec writes 16), so that its index is larger than the first
    request of a read takes. With the chunk as support.chunks parses it and the store's request log."""
    z = tone_array((CHUNK, 2), (CHUNK, 2), RATE, store=RecordingStore(MemoryStore()), seed=23)
    key = chunk_key(z, (0, 0))
    put_bytes(z, key, Chunk.parse(get_bytes(z, key)).pack(checksum_group=1))
    chunk = Chunk.parse(get_bytes(z, key))
    assert chunk.fields["checksum_group"] == 1
    return z, chunk, z.store_path.store.log


@pytest.mark.parametrize("selection", [np.s_[20_000:21_000], np.s_[[5, 20_000, CHUNK - 1]]])
def test_an_index_larger_than_the_first_request_is_completed_by_a_second(one_checksum_a_frame, selection):
    """The first request stops short of the index; the second asks for exactly the rest of the
    prefix, the third for the frames; the prefix is then kept, and the next read is its frames alone."""
    z, chunk, log = one_checksum_a_frame
    reference = reference_decode(z)
    log.reset()
    np.testing.assert_array_equal(z[selection], reference[selection])
    first, rest, frames = log.requests
    assert first.start == 0 and first.nbytes < chunk.prefix_nbytes
    assert (rest.start, rest.stop) == (first.nbytes, chunk.prefix_nbytes)
    assert rest.nbytes == chunk.prefix_nbytes - first.nbytes
    assert frames.start >= chunk.prefix_nbytes
    log.reset()
    np.testing.assert_array_equal(z[30_000:31_000], reference[30_000:31_000])
    assert [request.start >= chunk.prefix_nbytes for request in log.requests] == [True]


class DeletingAfterFirstGet(WrapperStore[Store]):
    """Deletes a chunk right after the first request for it has its bytes, as another process
    deleting the array would between a reader's requests."""

    def _with_store(self, store: Store) -> DeletingAfterFirstGet:
        return type(self)(store)

    async def get(self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None) -> Buffer | None:
        result = await self._store.get(key, prototype, byte_range)
        if not key.endswith("zarr.json") and result is not None:
            await self._store.delete(key)
        return result


def test_a_chunk_deleted_between_its_index_requests_reads_as_not_stored(one_checksum_a_frame):
    """Gone before the rest of its index came: zarr's fill value, as for any chunk not stored, not
    an error calling it shorter than its index."""
    z, chunk, log = one_checksum_a_frame
    deleting = zarr.open_array(DeletingAfterFirstGet(z.store_path.store), path=z.path, mode="r+")
    log.reset()
    np.testing.assert_array_equal(deleting[20_000:21_000], 0)
    first, rest = log.requests
    assert 0 < first.nbytes < chunk.prefix_nbytes
    assert (rest.start, rest.stop, rest.nbytes) == (first.nbytes, chunk.prefix_nbytes, 0)


def corrupt_a_frame(z: zarr.Array, key: str) -> None:
    """Flip a byte of the frame holding sample 20_500 of chunk ``key``, its checksums left as they were."""
    chunk = Chunk.parse(get_bytes(z, key))
    frame = (20_500 + chunk.fields["skip"]) // aac.FRAME_LENGTH
    payload = bytearray(chunk.payload)
    payload[int(chunk.sizes[:frame].sum()) + 5] ^= 0xFF
    chunk.payload = bytes(payload)
    put_bytes(z, key, chunk.pack(checksums=chunk.checksums))


def stored_take(store: Store, name: str | None, shape: tuple[int, ...]) -> zarr.Array:
    """An int16 array of one chunk holding a tone, claiming all its chunks stored (as an imported
    recording does)."""
    z = zarr.create_array(
        store,
        name=name,
        shape=shape,
        chunks=shape,
        dtype="int16",
        serializer=AACCodec(sample_rate=RATE, all_chunks_stored=True),
        compressors=None,
    )
    z[:] = (tone_with_noise(shape[0], 2, RATE, seed=24)[:, : len(shape)] * 20_000).astype(np.int16).reshape(shape)
    return z


def assert_errors_name(z: zarr.Array, key: str, name: str) -> None:
    """Reads of the chunk ``key``, damaged and then deleted, raise errors naming it ``name``."""
    corrupt_a_frame(z, key)
    for selection in (np.s_[20_000:21_000], np.s_[[5, 20_500]], np.s_[:]):
        with pytest.raises(CorruptChunkError) as caught:
            z[selection]
        assert caught.value.key == name
    asyncio.run(z.store_path.store.delete(key))
    for selection in (np.s_[20_000:21_000], np.s_[[5, 20_500]], np.s_[:]):
        with pytest.raises(MissingChunkError) as caught:
            z[selection]
        assert caught.value.key == name


@pytest.mark.parametrize("shape", [(CHUNK,), (CHUNK, 2)], ids=["1-d", "2-d"])
def test_a_chunk_of_an_array_opened_by_its_own_path_is_named_with_its_store(tmp_path, shape):
    """The chunk key alone (``c/0/0``) would name no recording: the errors of an array opened at
    its own folder name its chunks by the store's location and the key."""
    z = stored_take(LocalStore(tmp_path / "take.zarr"), None, shape)
    key = chunk_key(z, (0,) * len(shape))
    assert key == "/".join(["c"] + ["0"] * len(shape))
    assert_errors_name(z, key, f"file://{tmp_path}/take.zarr/{key}")


@pytest.mark.parametrize("shape", [(CHUNK,), (CHUNK, 2)], ids=["1-d", "2-d"])
def test_a_chunk_of_an_array_in_a_group_is_named_by_its_path(tmp_path, shape):
    z = stored_take(LocalStore(tmp_path / "archive.zarr"), "site/take", shape)
    key = chunk_key(z, (0,) * len(shape))
    assert key == "/".join(["site", "take", "c"] + ["0"] * len(shape))
    assert_errors_name(z, key, key)


class FailingLocalStore(LocalStore):
    """A local folder whose every request for a chunk fails with ``ConnectionResetError("peer went away")``."""

    async def get(self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None) -> Buffer | None:
        if "/c/" in key:
            raise ConnectionResetError("peer went away")
        return await super().get(key, prototype, byte_range)


@pytest.mark.parametrize("selection", [np.s_[20_000:21_000], np.s_[[5, 20_500]], np.s_[:]])
def test_a_store_failure_names_the_chunk_where_the_store_has_it_and_the_stores_error(tmp_path, selection):
    """The message: the chunk's name, then where the store has it (its location and key), then
    the store's exception, its type and text."""
    stored_take(LocalStore(tmp_path / "archive.zarr"), "take", (CHUNK, 2))
    failing = zarr.open_array(FailingLocalStore(tmp_path / "archive.zarr"), path="take", mode="r")
    with pytest.raises(ChunkReadError) as caught:
        failing[selection]
    assert str(caught.value) == (
        "cannot read chunk 'take/c/0/0' from the store: "
        f"file://{tmp_path}/archive.zarr/take/c/0/0: ConnectionResetError: peer went away"
    )


GAIN = 0.5


@pytest.fixture
def checksummed():
    """A stereo int16 array of two chunks with a gain other than int16's default and a CRC-32C
    after each chunk (a bytes-to-bytes codec: zarr then fetches each chunk whole and hands it to
    ``AACCodec._decode_single``), and its full sequential decode."""
    z = tone_array((2 * CHUNK, 2), (CHUNK, 2), RATE, gain=GAIN, compressors=[Crc32cCodec()], seed=26)
    reference = np.concatenate(
        [to_int16(decode_chunk_sequentially(get_bytes(z, chunk_key(z, (i, 0)))[:-4]), GAIN) for i in range(2)]
    )
    return z, reference


def with_crc32c(data: bytes) -> bytes:
    """``data`` followed by its CRC-32C, as zarr's crc32c codec stores it."""
    return data + google_crc32c.value(data).to_bytes(4, "little")


@pytest.mark.parametrize("selection", [np.s_[:], np.s_[CHUNK - 5000 : CHUNK + 3000], np.s_[[5, CHUNK + 9, 7]]])
def test_chunks_decoded_whole_undo_the_arrays_gain(checksummed, selection):
    z, reference = checksummed
    np.testing.assert_array_equal(z[selection], reference[selection])


@pytest.mark.parametrize("selection", [np.s_[:], np.s_[CHUNK - 5000 : CHUNK + 3000], np.s_[[5, CHUNK + 9, 7]]])
def test_a_corrupt_chunk_decoded_whole_raises_or_reads_as_fill_values_inside_tolerant_reads(checksummed, selection):
    z, reference = checksummed
    key = chunk_key(z, (1, 0))
    chunk = Chunk.parse(get_bytes(z, key)[:-4])
    payload = bytearray(chunk.payload)
    payload[len(payload) // 2] ^= 0xFF
    chunk.payload = bytes(payload)
    put_bytes(z, key, with_crc32c(chunk.pack(checksums=chunk.checksums)))
    with pytest.raises(CorruptChunkError, match="checksum mismatch"):
        z[selection]
    expected = reference.copy()
    expected[CHUNK:] = 0
    with tolerant_reads() as report:
        got = z[selection]
    np.testing.assert_array_equal(got, expected[selection])
    assert len(report) == 1 and "checksum mismatch" in report.errors[0].reason


@pytest.fixture
def no_idle_decoders(monkeypatch):
    """No decoder kept from earlier reads, and reads decoded in this process."""
    monkeypatch.setattr(aac, "_idle_decoders", {})
    with zarr.config.set({decode_pool.CONFIG_KEY: 0}):
        yield aac._idle_decoders


@pytest.mark.parametrize(
    "forge",
    [{}, {"checksum_group": 1}, {"skip": aac.FRAME_LENGTH}],
    ids=["as written", "a checksum a frame", "skip of one frame"],
)
def test_reads_of_a_chunk_with_checksums_leave_its_decoder_for_the_next(no_idle_decoders, forge):
    """A chunk with frame checksums is one this codec encoded, with PNS off: a flushed decoder
    decodes it as a fresh one does after the first frame, which the read drops (a pre-roll frame,
    or the first frame when the chunk skips it), so each read leaves its decoder for the next."""
    z = tone_array((CHUNK, 2), (CHUNK, 2), RATE, seed=27)
    key = chunk_key(z, (0, 0))
    chunk = Chunk.parse(get_bytes(z, key))
    put_bytes(z, key, chunk.pack(**forge))
    reference = reference_decode(z)
    for selection in (np.s_[20_000:21_000], np.s_[[5, 20_000, CHUNK - 1]], np.s_[30_000:40_000]):
        np.testing.assert_array_equal(z[selection], reference[selection])
        assert [len(kept) for kept in no_idle_decoders.values()] == [1]
    assert list(no_idle_decoders) == [chunk.asc]
