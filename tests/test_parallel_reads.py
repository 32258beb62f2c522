"""Which ``z[a:b]`` reads decode in the decode pool's worker processes, with its thresholds as
shipped: long spans (split over the workers), the large chunks of one read at once; short reads
stay in the reading process unless other reads are in flight (tests/test_decode_workers.py).
Results against a full sequential decode (support.chunks, through PyAV directly);
tests/test_decode_pool.py checks the pool's results at every split."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from support.chunks import chunk_key, get_bytes
from support.pool import pool_on
from support.selections import reference_decode
from support.signals import tone_with_noise

from zarr_aac import AACCodec
from zarr_aac.codec import aac, aac_codec, decode_pool

RATE = 48_000
CHUNK = 400 * aac.FRAME_LENGTH
PROCESSES = 2


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """Two and a half chunks of 400 frames, stereo int16, in a LocalStore; with the sequential
    reference decode."""
    pcm = tone_with_noise(CHUNK * 5 // 2, 2, RATE, seed=3)
    z = zarr.create_array(
        zarr.storage.LocalStore(tmp_path_factory.mktemp("parallel") / "a.zarr"),
        shape=pcm.shape,
        chunks=(CHUNK, 2),
        dtype="int16",
        serializer=AACCodec(sample_rate=RATE),
        compressors=None,
    )
    z[:] = (pcm * 32767).astype(np.int16)
    assert get_bytes(z, chunk_key(z, (2, 0))) is not None
    return z, reference_decode(z)


@pytest.fixture
def pool_reads(monkeypatch):
    """The pool on, with PROCESSES workers; the jobs of each read that used it."""
    with pool_on(monkeypatch, PROCESSES) as record:
        yield record


def test_short_reads_alone_decode_in_the_reading_process(stored, pool_reads):
    z, reference = stored
    for start, stop in ((5000, 5100), (5000, 5000 + RATE)):
        np.testing.assert_array_equal(z[start:stop], reference[start:stop])
    assert pool_reads.reads == []


def test_a_long_read_of_one_chunk_is_split_over_the_workers(stored, pool_reads):
    z, reference = stored
    start, stop = 5000, 5000 + 300 * aac.FRAME_LENGTH
    np.testing.assert_array_equal(z[start:stop], reference[start:stop])
    ((first, second),) = pool_reads.reads
    # The 301 frames holding the span (it starts mid-frame), and a pre-roll frame for each range.
    assert first.n_frames + second.n_frames == 301 + 2
    assert second.first_frame == first.first_frame + first.n_frames - 1
    assert first.n_frames >= aac_codec.SPLIT_MIN_FRAMES
    # The reading process decodes the last range itself, HANDOFF_FRAMES longer than a worker's.
    assert pool_reads.here == [second]
    assert abs(second.n_frames - first.n_frames - aac_codec.HANDOFF_FRAMES) <= 1  # rounding


def test_the_large_chunks_of_a_read_decode_in_the_pool_and_a_short_read_here(stored, pool_reads):
    """A 6 s read across a chunk end decodes about 141 frames of each chunk: both go to the
    workers whole (the event loop meanwhile fetches and hands out the other); a 1 s read inside a
    chunk decodes 48, which stay in the reading process."""
    z, reference = stored
    np.testing.assert_array_equal(
        z[CHUNK - 3 * RATE : CHUNK + 3 * RATE], reference[CHUNK - 3 * RATE : CHUNK + 3 * RATE]
    )
    assert len(pool_reads.reads) == 2
    assert all(sum(job.n_frames for job in jobs) >= decode_pool.POOL_MIN_FRAMES for jobs in pool_reads.reads)
    assert pool_reads.here == []
    pool_reads.clear()
    np.testing.assert_array_equal(z[1000 : 1000 + RATE], reference[1000 : 1000 + RATE])
    assert pool_reads.reads == []


def test_a_whole_array_read_equals_the_sequential_decode(stored, pool_reads):
    z, reference = stored
    np.testing.assert_array_equal(z[:], reference)
    assert len(pool_reads.reads) == 3


def test_sparse_rows_decode_in_the_reading_process(stored, pool_reads):
    z, reference = stored
    rows = np.arange(1000, CHUNK, 997)
    np.testing.assert_array_equal(z.oindex[rows, :], reference[rows])
    assert pool_reads.reads == []
