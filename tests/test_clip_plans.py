"""Which chunks and bytes ``zarr_aac.read_clips`` asks the store for: a clip at a chunk boundary
reads the chunks holding its samples and no other, runs fetched in one request are verified
group by group wherever the request begins, and an index kept for an older chunk of another length at the
same key is not trusted. Samples against a full sequential decode of the
stored chunks (support.selections.reference_decode); requests counted on a RecordingStore; chunk
layout read with the test's own parser (support.chunks.Chunk)."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from support.chunks import Chunk, chunk_key, get_bytes
from support.selections import reference_decode
from support.signals import tone_with_noise
from support.stores import RecordingStore

import zarr_aac
from zarr_aac.codec import aac, decode_pool
from zarr_aac.codec.prefix_cache import prefixes

RATE = 48_000
CHUNK = 100 * aac.FRAME_LENGTH
N = CHUNK * 3 - 2000
"""Three chunks, the last one partial."""


def recorded_array(shape, chunks, seed: int, store: RecordingStore | None = None) -> zarr.Array:
    """A stereo or multichannel tone with noise in ``store`` (a new RecordingStore by default),
    replacing any array there."""
    z = zarr.create_array(
        store if store is not None else RecordingStore(zarr.storage.MemoryStore()),
        shape=shape,
        chunks=chunks,
        dtype="int16",
        serializer=zarr_aac.AACCodec(sample_rate=RATE),
        compressors=None,
        overwrite=True,
    )
    pcm = tone_with_noise(shape[0], shape[1], RATE, seed=seed)
    z[:] = (pcm * 32767).astype(np.int16)
    return z


@pytest.fixture(scope="module", params=["stereo", "3 channels in column chunks of 2"])
def layout(request):
    """(array, reference, number of column chunks)."""
    if request.param == "stereo":
        z = recorded_array((N, 2), (CHUNK, 2), seed=3)
    else:
        z = recorded_array((N, 3), (CHUNK, 2), seed=4)
    return z, reference_decode(z), -(-z.shape[1] // z.chunks[1])


@pytest.mark.parametrize(
    ("start", "length", "rows"),
    [
        (CHUNK - 500, 500, [0]),
        (CHUNK - 501, 500, [0]),
        (CHUNK - 499, 500, [0, 1]),
        (CHUNK - 1, 1, [0]),
        (CHUNK - 1, 2, [0, 1]),
        (CHUNK, 1, [1]),
        (0, CHUNK, [0]),
        (0, CHUNK + 1, [0, 1]),
        (CHUNK - 10, CHUNK + 20, [0, 1, 2]),
        (N - 300, 300, [2]),
    ],
)
@pytest.mark.parametrize("cached", [False, True], ids=["index fetched", "index cached"])
def test_a_clip_at_a_chunk_boundary_reads_the_chunks_holding_its_samples_and_no_other(
    layout, start, length, rows, cached
):
    """Chunk rows of CHUNK samples: sample CHUNK - 1 is the last of row 0, CHUNK the first of
    row 1; each row asked for in every column chunk."""
    z, reference, column_chunks = layout
    prefixes.clear()
    if cached:
        zarr_aac.read_clips(z, [0, CHUNK, 2 * CHUNK], 1)
    z.store.log.reset()
    with zarr.config.set({decode_pool.CONFIG_KEY: 0}):
        got = zarr_aac.read_clips(z, [start], length)
    np.testing.assert_array_equal(got[0], reference[start : start + length])
    wanted = {chunk_key(z, (row, j)) for row in rows for j in range(column_chunks)}
    assert set(z.store.log.per_key) == wanted


def test_runs_fetched_in_one_request_from_a_later_checksum_group_are_verified_and_decoded():
    """Two clips' runs in adjacent checksum groups, neither the chunk's first: one request from
    the first group's first frame to the second group's end, each group checked within it."""
    z = recorded_array((CHUNK * 2, 2), (CHUNK * 2, 2), seed=6)
    key = chunk_key(z, (0, 0))
    chunk = Chunk.parse(get_bytes(z, key))
    group, skip = chunk.fields["checksum_group"], chunk.fields["skip"]
    offsets = np.concatenate([[0], np.cumsum(chunk.sizes.astype(np.int64))])
    frames = [3 * group + 4, 4 * group + 4]
    """Frames in groups 3 and 4 whose pre-roll frames lie in the same groups."""
    starts = [frame * aac.FRAME_LENGTH - skip for frame in frames]
    reference = reference_decode(z)
    zarr_aac.read_clips(z, [0], 1)
    z.store.log.reset()
    with zarr.config.set({decode_pool.CONFIG_KEY: 0}):
        got = zarr_aac.read_clips(z, starts, aac.FRAME_LENGTH)
    np.testing.assert_array_equal(got, np.stack([reference[s : s + aac.FRAME_LENGTH] for s in starts]))
    (fetched,) = z.store.log.requests
    assert (fetched.start, fetched.stop) == (
        chunk.prefix_nbytes + int(offsets[3 * group]),
        chunk.prefix_nbytes + int(offsets[5 * group]),
    )


@pytest.mark.parametrize(
    ("old_chunk", "new_chunk", "starts"),
    [(CHUNK, 2 * CHUNK, [100, 2 * CHUNK - 3000]), (2 * CHUNK, CHUNK, [100, CHUNK - 3000, CHUNK + 500])],
    ids=["longer chunks", "shorter chunks"],
)
def test_an_array_made_again_with_other_chunks_after_its_index_was_cached_reads_the_new_chunks(
    old_chunk, new_chunk, starts
):
    """The kept index of the old first chunk is for another chunk length (about 100 frames
    against 200): read_clips checks it against the array's chunk shape, as ``array[a:b]`` does,
    and starts over from the new chunk's own index; both give the new samples."""
    store = RecordingStore(zarr.storage.MemoryStore())

    def made_again() -> zarr.Array:
        """The old array, its first chunk's index kept, then the new array at the same keys."""
        prefixes.clear()
        old = recorded_array((2 * CHUNK, 2), (old_chunk, 2), seed=7, store=store)
        zarr_aac.read_clips(old, [0], 10)
        new = recorded_array((2 * CHUNK, 2), (new_chunk, 2), seed=8, store=store)
        assert chunk_key(new, (0, 0)) == chunk_key(old, (0, 0))
        return new

    with zarr.config.set({decode_pool.CONFIG_KEY: 0}):
        new = made_again()
        reference = reference_decode(new)
        got = zarr_aac.read_clips(new, starts, 2000)
        new = made_again()
        sliced = np.stack([new[s : s + 2000] for s in starts])
    expected = np.stack([reference[s : s + 2000] for s in starts])
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(sliced, expected)
