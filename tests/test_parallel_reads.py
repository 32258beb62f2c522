"""Reads decoded in threads, and in frame ranges split over threads, against a full sequential
decode of the stored frames (support.chunks, through PyAV directly): the parallel path must give
the same samples bit for bit, wherever the range boundaries fall."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.selections import reference_decode
from support.signals import tone_with_noise

from zarr_aac import AACCodec
from zarr_aac.codec import aac, aac_codec

RATE = 48_000
CHUNK = 400 * aac.FRAME_LENGTH


@pytest.fixture(scope="module")
def stored():
    """Two and a half chunks of 400 frames, stereo; with the sequential reference decode."""
    pcm = tone_with_noise(CHUNK * 5 // 2, 2, RATE, seed=3)
    arrays = {}
    for dtype in ("int16", "float32"):
        z = zarr.create_array(
            zarr.storage.MemoryStore(),
            shape=pcm.shape,
            chunks=(CHUNK, 2),
            dtype=dtype,
            serializer=AACCodec(sample_rate=RATE),
            compressors=None,
        )
        z[:] = (pcm * 32767).astype(np.int16) if dtype == "int16" else pcm
        arrays[dtype] = (z, reference_decode(z))
    return arrays


@pytest.fixture
def cores(monkeypatch):
    """Set the core count the read path splits long runs over."""

    def set_cores(n: int) -> None:
        monkeypatch.setattr(aac_codec.os, "cpu_count", lambda: n)

    return set_cores


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    setting=st.tuples(st.sampled_from(["int16", "float32"]), st.integers(1, 7)),
    span=st.tuples(st.integers(0, CHUNK * 5 // 2 - 1), st.integers(1, CHUNK * 5 // 2)),
    channel=st.sampled_from([slice(None), 0, 1]),
)
def test_spans_split_over_threads_equal_the_sequential_decode(stored, cores, setting, span, channel):
    dtype, n_cores = setting
    cores(n_cores)
    start, length = span
    z, reference = stored[dtype]
    stop = min(start + length, z.shape[0])
    np.testing.assert_array_equal(z[start:stop, channel], reference[start:stop, channel])


@pytest.mark.parametrize("n_cores", [1, 2, 3, 8])
def test_whole_array_split_over_threads_equals_the_sequential_decode(stored, cores, n_cores):
    cores(n_cores)
    z, reference = stored["int16"]
    np.testing.assert_array_equal(z[:], reference)


def test_sparse_rows_decoded_in_a_thread_equal_the_sequential_decode(stored):
    z, reference = stored["float32"]
    rows = np.arange(1000, CHUNK, 997)
    np.testing.assert_array_equal(z.oindex[rows, :], reference[rows])


def test_long_reads_decode_off_the_event_loop_and_split_over_threads(stored, cores, monkeypatch):
    """A span of a few frames decodes on zarr's loop; a long one in worker threads, one range per core."""
    cores(2)
    z, _ = stored["int16"]
    threads: list[str] = []
    decode = aac.FrameDecoder.decode

    def recording_decode(self, frames, out=None):
        threads.append(threading.current_thread().name)
        return decode(self, frames, out)

    monkeypatch.setattr(aac.FrameDecoder, "decode", recording_decode)
    z[5000:5100]
    (loop_thread,) = threads
    threads.clear()
    z[5000 : 5000 + 300 * aac.FRAME_LENGTH]
    assert len(threads) == 2
    assert loop_thread not in threads
