"""The read side's remaining paths, each against an independent reference (the source PCM, a full
sequential decode through PyAV directly in support.chunks): the ones mutation testing found no
test for (docs/claims.md, "aac_codec.py's read side, the rest")."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from support.arrays import tone_array
from support.chunks import chunk_key, decode_chunk_sequentially, put_bytes
from support.pool import pool_on
from support.selections import reference_decode, to_int16
from support.signals import tone_with_noise
from zarr.storage import MemoryStore

from zarr_aac import AACCodec
from zarr_aac.codec import aac, decode_pool
from zarr_aac.codec.chunk_format import PcmChunkBuilder
from zarr_aac.codec.prefix_cache import prefixes

RATE = 48_000
CHUNK = 30 * aac.FRAME_LENGTH


@pytest.mark.parametrize(("dtype", "gain"), [("int16", 0.25), ("float32", 0.0625)])
def test_a_codec_without_a_gain_decodes_with_the_dtypes_default_gain(dtype, gain):
    """A codec made without ``gain`` (not yet given an array, as the importer's verification and the
    CLI may hold it) encodes at docs/spec.md's default gain for the dtype, 0.25 for int16 and
    0.0625 for float32, and ``decode_chunk`` must undo that same gain."""
    codec = AACCodec(sample_rate=RATE)
    assert codec.gain is None
    source = tone_with_noise(CHUNK, 2, RATE, seed=3)
    pcm = to_int16(source) if dtype == "int16" else source
    data = codec.encode_pcm(pcm)
    decoded = decode_chunk_sequentially(data)
    expected = to_int16(decoded, gain) if dtype == "int16" else (decoded / np.float32(gain)).astype(np.float32)
    got = codec.decode_chunk(data, (CHUNK, 2), np.dtype(dtype))
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got, expected)
    # And the samples are the source's at its own level (a wrong gain scales them by 4 or 16).
    source64, got64 = pcm.astype(np.float64).ravel(), got.astype(np.float64).ravel()
    assert float(got64 @ source64 / (source64 @ source64)) == pytest.approx(1.0, abs=0.05)


@pytest.fixture
def mono_pcm_chunk():
    """A 1-d int16 array of one chunk whose chunk is a live recording's PCM chunk of 1000 samples,
    and those samples."""
    z = zarr.create_array(
        MemoryStore(),
        name="live",
        shape=(CHUNK,),
        chunks=(CHUNK,),
        dtype="int16",
        serializer=AACCodec(sample_rate=RATE),
        compressors=None,
    )
    stored = to_int16(tone_with_noise(1000, 1, RATE, seed=4))
    builder = PcmChunkBuilder(CHUNK, 1, np.dtype("int16"), RATE)
    builder.extend(stored)
    put_bytes(z, chunk_key(z, (0,)), builder.chunk())
    yield z, stored[:, 0]
    prefixes.clear()


@pytest.mark.parametrize("selection", [slice(None), slice(10, 1500), slice(5, 900, 7)])
def test_a_mono_pcm_chunk_reads_as_its_stored_samples_then_zeros(mono_pcm_chunk, selection):
    """Read whole, and in part (its first request holds all of it), a 1-d array's PCM chunk gives
    exactly the samples stored, then the fill value, in the array's own shape."""
    z, stored = mono_pcm_chunk
    expected = np.zeros(CHUNK, dtype=np.int16)
    expected[: stored.size] = stored
    got = z[selection]
    assert got.shape == expected[selection].shape
    np.testing.assert_array_equal(got, expected[selection])


@pytest.fixture(scope="module")
def long_chunk():
    """A stereo int16 array of one chunk of 300 frames, and its full sequential decode."""
    z = tone_array((300 * aac.FRAME_LENGTH, 2), (300 * aac.FRAME_LENGTH, 2), RATE, seed=9)
    return z, reference_decode(z)


def test_a_short_span_late_in_a_chunk_decodes_in_the_reading_process(long_chunk, monkeypatch):
    """With the pool on and no other read in flight, a span whose frames, pre-roll included, are
    fewer than POOL_MIN_FRAMES decodes here wherever it lies in the chunk; one of exactly
    POOL_MIN_FRAMES goes to the workers, its last range decoded here."""
    z, reference = long_chunk
    monkeypatch.setattr(decode_pool, "reads_in_flight", decode_pool._ReadsInFlight())
    stop = 160 * aac.FRAME_LENGTH
    with pool_on(monkeypatch, 2) as record:
        for start in (150 * aac.FRAME_LENGTH + 7, stop - (decode_pool.POOL_MIN_FRAMES - 2) * aac.FRAME_LENGTH):
            np.testing.assert_array_equal(z[start:stop], reference[start:stop])
            assert record.reads == []
        # One frame more: POOL_MIN_FRAMES frames with the pre-roll frame before the span.
        start = stop - (decode_pool.POOL_MIN_FRAMES - 1) * aac.FRAME_LENGTH
        np.testing.assert_array_equal(z[start:stop], reference[start:stop])
        ((*_, last),) = record.reads
        assert sum(job.n_frames for job in record.reads[0]) - (len(record.reads[0]) - 1) == decode_pool.POOL_MIN_FRAMES
        assert record.here == [last]
        # A span long enough for two ranges: the first decodes in a worker, only the last here.
        record.clear()
        np.testing.assert_array_equal(z[10:-10], reference[10:-10])
        ((_, last),) = record.reads
        assert record.here == [last]


def test_a_short_span_beside_other_reads_goes_whole_to_the_workers(long_chunk, monkeypatch):
    """While other chunk reads of this process are in flight (here: one began beside another just
    now), a short span decodes in the workers, all of it, leaving the event loop to those reads."""
    z, reference = long_chunk
    in_flight = decode_pool._ReadsInFlight()
    in_flight.last_overlap = in_flight.begun
    monkeypatch.setattr(decode_pool, "reads_in_flight", in_flight)
    start, stop = 150 * aac.FRAME_LENGTH + 7, 160 * aac.FRAME_LENGTH
    with pool_on(monkeypatch, 2) as record:
        np.testing.assert_array_equal(z[start:stop], reference[start:stop])
        ((job,),) = record.reads
        assert job.n_frames < decode_pool.POOL_MIN_FRAMES
        assert record.here == []


def test_float32_spans_of_two_chunks_in_one_read_are_each_their_own_samples():
    """zarr decodes every chunk of a read before copying any into the result: the first chunk's
    float32 samples must not be left in the decode buffer the second chunk's decode reuses."""
    z = tone_array((4 * CHUNK, 2), (CHUNK, 2), RATE, dtype="float32", seed=11)
    reference = reference_decode(z)
    for start, stop in ((CHUNK - 5000, CHUNK + 3000), (CHUNK + 100, 3 * CHUNK - 100)):
        np.testing.assert_array_equal(z[start:stop], reference[start:stop])
