"""How a chunk read parses its selection's first axis and what it asks of the store, each against an
independent reference (the full sequential decode of support.selections.reference_decode, the chunk
laid out by support.chunks): reads counted in flight by the rows they ask for, every kind of
first-axis selector, a chunk whose index outgrows the first request, the name a chunk's errors give
it, and arrays whose chunks zarr decodes whole (docs/claims.md, "aac_codec.py's read side, the last
of it")."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import google_crc32c
import numpy as np
import pytest
import zarr
from support.arrays import aac_array, tone_array
from support.chunks import Chunk, chunk_key, decode_chunk_sequentially, get_bytes, put_bytes
from support.media import ffmpeg_aac, pyav_decode, require_tool, write_wav
from support.pool import pool_on
from support.selections import reference_decode, to_int16
from support.signals import tone_with_noise
from support.stores import RecordingStore
from zarr.abc.store import ByteRequest, RangeByteRequest, Store
from zarr.codecs import Crc32cCodec
from zarr.core.array_spec import ArrayConfig, ArraySpec
from zarr.core.buffer import Buffer, BufferPrototype, cpu, default_buffer_prototype
from zarr.storage import LocalStore, MemoryStore, WrapperStore

from zarr_aac import AACCodec, open_aac_file, tolerant_reads
from zarr_aac.codec import aac, decode_pool
from zarr_aac.codec.chunk_format import PcmChunkBuilder
from zarr_aac.codec.prefix_cache import prefixes
from zarr_aac.errors import AudioDecodeError, ChunkReadError, CorruptChunkError, MissingChunkError

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


@pytest.mark.parametrize("dtype", ["uint64", "uint32", "uint16", "int32"])
def test_rows_of_any_integer_dtype_read_the_reference(two_chunks, dtype):
    """Sorted, an index array of any integer dtype reads its rows (zarr hands a chunk those of
    uint64 as float64 numbers)."""
    z, reference, _ = two_chunks
    rows = np.array([5, 7, CHUNK - 1, CHUNK + 2000], dtype=dtype)
    np.testing.assert_array_equal(z.oindex[rows], reference[rows.astype(np.int64)])
    np.testing.assert_array_equal(z.oindex[rows, [1]], reference[rows.astype(np.int64)][:, [1]])


@pytest.mark.parametrize("dtype", ["uint64", "uint32", "uint16"])
def test_rows_zarr_hands_the_wrong_chunk_are_refused(two_chunks, dtype):
    """zarr 3.1 gives each chunk the rows of an unsorted index array of unsigned integers that lie
    in the other chunk (a plain zarr array raises IndexError for them): refused, where they would
    read as samples the read did not ask for."""
    z, _, _ = two_chunks
    with pytest.raises(IndexError, match=rf"chunk of {CHUNK} samples for its sample -?\d+, which it does not hold"):
        z.oindex[np.array([5, CHUNK + 2000, 7], dtype=dtype)]


@pytest.mark.parametrize("selection", [np.s_[:CHUNK, 1], np.s_[CHUNK:, 1:], np.s_[:, [1, 0]]])
def test_whole_chunks_keep_the_selections_other_axes(two_chunks, selection):
    """A read of whole chunks (one request each) applies the channels the selection picks."""
    z, reference, _ = two_chunks
    got = z.oindex[selection] if isinstance(selection[1], list) else z[selection]
    np.testing.assert_array_equal(got, reference[selection])


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


class Watching(WrapperStore[Store]):
    """Keeps the buffer prototype of every request for a chunk of a root array, and fails those
    ``fails`` picks by their byte range with ``ConnectionResetError("peer went away")``."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.prototypes: list[BufferPrototype] = []
        self.fails = lambda byte_range: False

    def _with_store(self, store: Store) -> Watching:
        return self

    async def get(self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None) -> Buffer | None:
        if key.startswith("c/"):
            self.prototypes.append(prototype)
            if self.fails(byte_range):
                raise ConnectionResetError("peer went away")
        return await self._store.get(key, prototype, byte_range)


class TaggedBuffer(cpu.Buffer):
    """A CPU buffer of its own class: a read given a prototype of it must ask the store for it."""


def test_the_indexs_second_request_carries_the_reads_prototype_and_names_the_chunk_if_it_fails(one_checksum_a_frame):
    """As every other request of a read: the buffer prototype the read was given, and a store
    failure raised as a ChunkReadError naming the chunk."""
    z, chunk, _ = one_checksum_a_frame
    watching = Watching(z.store_path.store)
    watched = zarr.open_array(watching, path=z.path, mode="r+")
    tagged = BufferPrototype(buffer=TaggedBuffer, nd_buffer=cpu.NDBuffer)
    reference = reference_decode(z)
    np.testing.assert_array_equal(
        watched.get_orthogonal_selection(np.s_[20_000:21_000], prototype=tagged), reference[20_000:21_000]
    )
    assert len(watching.prototypes) == 3 and all(prototype is tagged for prototype in watching.prototypes)
    prefixes.clear()
    watching.fails = lambda byte_range: (
        isinstance(byte_range, RangeByteRequest) and byte_range.end == chunk.prefix_nbytes
    )
    with pytest.raises(ChunkReadError) as caught:
        watched[20_000:21_000]
    assert caught.value.key == str(watched.store_path / chunk_key(z, (0, 0)))
    assert isinstance(caught.value.__cause__, ConnectionResetError)


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


@dataclass(frozen=True)
class PathOnlyGetter:
    """A byte getter as zarr's ByteGetter protocol allows one: ``get`` and, here, a ``path``, but no
    ``store`` to name the chunk's location by."""

    path: str
    data: bytes

    async def get(self, prototype: BufferPrototype, byte_range: ByteRequest | None = None) -> Buffer | None:
        assert isinstance(byte_range, RangeByteRequest | None)
        chosen = self.data if byte_range is None else self.data[byte_range.start : byte_range.end]
        return prototype.buffer.from_bytes(chosen)


def chunk_spec(z: zarr.Array) -> ArraySpec:
    """The spec zarr gives the codec for a chunk of ``z`` (one chunk of its own shape)."""
    return ArraySpec(
        shape=z.chunks,
        dtype=z.metadata.data_type,
        fill_value=0,
        config=ArrayConfig.from_dict({}),
        prototype=default_buffer_prototype(),
    )


@pytest.mark.parametrize("selection", [np.s_[20_000:21_000], np.s_[[5, 20_500]], np.s_[:]])
def test_a_byte_getter_without_a_store_names_the_chunk_by_its_path(selection):
    """A chunk key alone is all such a getter has to name the chunk by: its errors give it."""
    z = stored_take(MemoryStore(), None, (CHUNK, 2))
    key = chunk_key(z, (0, 0))
    corrupt_a_frame(z, key)
    getter = PathOnlyGetter(key, get_bytes(z, key))
    with pytest.raises(CorruptChunkError) as caught:
        asyncio.run(z.metadata.codecs[0].decode_partial([(getter, (selection, slice(None)), chunk_spec(z))]))
    assert caught.value.key == key == "c/0/0"


@pytest.mark.parametrize(
    ("rows", "outside"),
    [([5, CHUNK, 7], CHUNK), ([0, 7, CHUNK + 10], CHUNK + 10), ([5, -3], -3), ([-3, CHUNK + 10], -3)],
    ids=["the first row after", "the last of several", "one before", "before and after"],
)
def test_a_chunk_asked_for_rows_it_does_not_hold_names_the_first_one_outside(rows, outside):
    """The refusal's message names the row: the first one before the chunk if any, else its last;
    a row at the chunk's length is outside it."""
    z = stored_take(MemoryStore(), None, (CHUNK, 2))
    getter = PathOnlyGetter(chunk_key(z, (0, 0)), get_bytes(z, chunk_key(z, (0, 0))))
    with pytest.raises(IndexError) as caught:
        asyncio.run(z.metadata.codecs[0].decode_partial([(getter, (np.array(rows), slice(None)), chunk_spec(z))]))
    assert str(caught.value) == (
        f"zarr asked a chunk of {CHUNK} samples for its sample {outside}, which it does not hold "
        "(zarr 3.1 does so for an unsorted index array of unsigned integers: index with int64 instead)"
    )


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


def test_rows_in_the_first_frame_fetch_only_the_groups_holding_them(two_chunks):
    """In a chunk whose first samples are in frame 0 (skip 0, as in a file without priming), rows
    there and in frame 1 need frames 0 and 1 alone, frame 0 their pre-roll: one request for the
    first checksum group, nothing past it."""
    z, _, log = two_chunks
    key = chunk_key(z, (1, 0))
    original = get_bytes(z, key)
    chunk = Chunk.parse(original)
    put_bytes(z, key, chunk.pack(skip=0))
    try:
        reference = reference_decode(z)
        rows = np.array([CHUNK + 5, CHUNK + 2000])
        log.reset()
        np.testing.assert_array_equal(z.oindex[rows], reference[rows])
        _, frames = log.requests
        group_end = chunk.prefix_nbytes + int(chunk.sizes[: chunk.fields["checksum_group"]].sum())
        assert (frames.start, frames.stop) == (chunk.prefix_nbytes, group_end)
    finally:
        put_bytes(z, key, original)


def test_a_frame_ffmpeg_refuses_raises_naming_the_chunk_and_ffmpegs_reason(no_idle_decoders):
    """A frame of zeros (a mono element in a stereo stream) whose checksums were recomputed passes
    every check of the format, then FFmpeg refuses it: the read's CorruptChunkError names the
    chunk and gives FFmpeg's refusal as FrameDecoder reports it."""
    z = tone_array((CHUNK, 2), (CHUNK, 2), RATE, seed=28)
    key = chunk_key(z, (0, 0))
    chunk = Chunk.parse(get_bytes(z, key))
    frames = chunk.frames
    bad = (20_500 + chunk.fields["skip"]) // aac.FRAME_LENGTH
    frames[bad] = bytes(20)
    chunk.sizes = np.array([len(frame) for frame in frames], dtype="<u2")
    chunk.payload = b"".join(frames)
    put_bytes(z, key, chunk.pack(payload_nbytes=len(chunk.payload)))
    with pytest.raises(AudioDecodeError) as refused:
        aac.FrameDecoder(chunk.asc, 2).decode(frames[bad - 1 : bad + 1])
    for selection in (np.s_[20_000:21_000], np.s_[[5, 20_500]], np.s_[:]):
        with pytest.raises(CorruptChunkError) as caught:
            z[selection]
        assert (caught.value.key, caught.value.reason) == (str(z.store_path / key), str(refused.value))


def test_a_pcm_chunks_second_request_carries_the_reads_prototype():
    """A live recording's PCM chunk larger than the first request is fetched whole by a second:
    with the buffer prototype the read was given, as every request."""
    watching = Watching(MemoryStore())
    z = aac_array((CHUNK, 2), (CHUNK, 2), RATE, store=watching)
    stored = (tone_with_noise(2000, 2, RATE, seed=29) * 20_000).astype(np.int16)
    builder = PcmChunkBuilder(CHUNK, 2, np.dtype("int16"), RATE)
    builder.extend(stored)
    put_bytes(z, chunk_key(z, (0, 0)), builder.chunk())
    tagged = BufferPrototype(buffer=TaggedBuffer, nd_buffer=cpu.NDBuffer)
    got = z.get_orthogonal_selection(np.s_[100:1500], prototype=tagged)
    np.testing.assert_array_equal(got, stored[100:1500])
    assert len(watching.prototypes) == 2 and all(prototype is tagged for prototype in watching.prototypes)


def test_a_file_of_another_encoder_gets_a_fresh_decoder_for_every_read(no_idle_decoders, tmp_path):
    """An .m4a of FFmpeg's encoder with PNS on, one chunk without checksums whose first samples are
    in frame 1: PNS noise depends on every frame decoded before, which a flushed decoder does not
    forget, so no decoder is kept, and a second read equals the file's sequential decode as the
    first did."""
    pcm = tone_with_noise(RATE, 2, RATE, seed=30)
    m4a = ffmpeg_aac(require_tool("ffmpeg"), write_wav(tmp_path / "a.wav", pcm, RATE), tmp_path / "a.m4a", pns=True)
    reference = pyav_decode(m4a)
    array = open_aac_file(m4a, dtype="float32", chunk_length=reference.shape[0], index_path=False)
    assert array.attrs["source"]["priming"] == aac.FRAME_LENGTH
    for _ in range(2):
        np.testing.assert_array_equal(array[:], reference)
        assert no_idle_decoders == {}


@pytest.mark.parametrize("selection", [np.s_[:], np.s_[:CHUNK, 1], np.s_[100:5000], np.s_[[5, CHUNK + 9]]])
def test_every_read_undoes_the_arrays_own_gain(selection):
    """An array whose gain is not its dtype's default: whole chunks, spans and rows all undo it,
    the second time from the chunk's kept index as the first."""
    z = tone_array((2 * CHUNK, 2), (CHUNK, 2), RATE, gain=GAIN, seed=31)
    reference = reference_decode(z)
    for _ in range(2):
        got = z.oindex[selection] if isinstance(selection, tuple) and isinstance(selection[0], list) else z[selection]
        np.testing.assert_array_equal(got, reference[selection])


def test_a_partial_read_names_a_chunk_whose_index_fails_its_checksum(two_chunks):
    z, _, _ = two_chunks
    key = chunk_key(z, (1, 0))
    original = get_bytes(z, key)
    chunk = Chunk.parse(original)
    damaged = bytearray(original)
    damaged[48 + len(chunk.asc) + 3] ^= 0x01
    put_bytes(z, key, bytes(damaged))
    try:
        with pytest.raises(CorruptChunkError, match="header/index checksum mismatch") as caught:
            z[CHUNK + 20_000 : CHUNK + 21_000]
        assert caught.value.key == str(z.store_path / key)
    finally:
        put_bytes(z, key, original)
