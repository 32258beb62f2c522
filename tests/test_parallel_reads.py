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
from support.chunks import chunk_key, get_bytes
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


@pytest.fixture(autouse=True)
def threaded_decoding(monkeypatch):
    """Decoding in threads is off by default (docs/reading.md); these tests turn it on as a user would."""
    monkeypatch.setattr(aac_codec, "THREAD_MIN_FRAMES", 24)
    monkeypatch.setattr(aac_codec, "SPLIT_MIN_FRAMES", 96)


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


@pytest.fixture
def decode_threads(monkeypatch):
    """The names of the threads FrameDecoder.decode runs on, in call order."""
    threads: list[str] = []
    decode = aac.FrameDecoder.decode

    def recording_decode(self, frames, out=None):
        threads.append(threading.current_thread().name)
        return decode(self, frames, out)

    monkeypatch.setattr(aac.FrameDecoder, "decode", recording_decode)
    return threads


def test_a_read_alone_decodes_on_the_loop_and_a_long_one_on_a_thread_per_core(stored, cores, decode_threads):
    cores(2)
    z, _ = stored["int16"]
    z[5000:5100]
    z[5000 : 5000 + RATE]
    loop_thread, also_loop = decode_threads
    assert loop_thread == also_loop
    decode_threads.clear()
    z[5000 : 5000 + 300 * aac.FRAME_LENGTH]
    assert len(decode_threads) == 2
    assert loop_thread not in decode_threads


def test_chunks_of_one_read_decode_in_worker_threads(stored, decode_threads, tmp_path):
    """Two chunks read at once from a LocalStore (whose gets suspend, so both chunk reads are in
    flight together): each decode of 24 frames or more leaves the loop; a short one stays."""
    source, reference = stored["int16"]
    z = zarr.create_array(
        zarr.storage.LocalStore(tmp_path / "a.zarr"),
        shape=source.shape,
        chunks=source.chunks,
        dtype=source.dtype,
        serializer=AACCodec(sample_rate=RATE),
        compressors=None,
    )
    for coords in ((0, 0), (1, 0), (2, 0)):
        key = z.metadata.encode_chunk_key(coords)
        (tmp_path / "a.zarr" / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "a.zarr" / key).write_bytes(get_bytes(source, chunk_key(source, coords)))
    z[5000:5100]
    (loop_thread,) = decode_threads
    decode_threads.clear()
    np.testing.assert_array_equal(z[CHUNK - RATE : CHUNK + RATE], reference[CHUNK - RATE : CHUNK + RATE])
    assert len(decode_threads) == 2
    assert loop_thread not in decode_threads
    decode_threads.clear()
    z[CHUNK - 100 : CHUNK + 100]
    assert decode_threads == [loop_thread, loop_thread]
