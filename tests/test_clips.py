"""``zarr_aac.read_clips`` against a full sequential decode of the stored chunks (support.chunks,
PyAV directly), with the requests it makes counted on a RecordingStore."""

from __future__ import annotations

import asyncio
import multiprocessing

import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.arrays import aac_array, tone_array
from support.chunks import chunk_key, get_bytes, put_bytes
from support.media import ffmpeg_aac, write_wav
from support.selections import reference_decode
from support.signals import tone_with_noise
from support.stores import RecordingStore
from zarr.core.buffer import default_buffer_prototype

import zarr_aac
from zarr_aac.codec import aac
from zarr_aac.codec.chunk_format import parse_header
from zarr_aac.codec.prefix_cache import prefixes
from zarr_aac.errors import CorruptChunkError, UnsupportedAudioError

RATE = 48_000
CHUNK = 150 * aac.FRAME_LENGTH
N = CHUNK * 3 - 5000
"""Three chunks, the last one partial."""


@pytest.fixture(scope="module")
def arrays():
    """(array, reference) for stereo int16, mono 1-d float32, and 3 channels chunked 2 + 1."""
    made = {
        "stereo": tone_array((N, 2), (CHUNK, 2), RATE, store=RecordingStore(zarr.storage.MemoryStore())),
        "mono": tone_array((N,), (CHUNK,), RATE, dtype="float32"),
        "wide": tone_array((N, 3), (CHUNK, 2), RATE),
    }
    return {name: (z, reference_decode(z)) for name, z in made.items()}


def expected_clips(reference: np.ndarray, starts, length: int) -> np.ndarray:
    return np.stack([reference[s : s + length] for s in starts])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(["stereo", "mono", "wide"]),
    length=st.integers(1, CHUNK + 3000),
    data=st.data(),
)
def test_clips_equal_the_sequential_decode(arrays, name, length, data):
    z, reference = arrays[name]
    starts = data.draw(st.lists(st.integers(0, N - length), min_size=0, max_size=40))
    if data.draw(st.booleans()):
        prefixes.clear()
    clips = zarr_aac.read_clips(z, starts, length)
    assert clips.dtype == z.dtype
    assert clips.shape == (len(starts), length, *z.shape[1:])
    if starts:
        np.testing.assert_array_equal(clips, expected_clips(reference, starts, length))


def test_dense_overlapping_and_boundary_crossing_clips(arrays):
    z, reference = arrays["stereo"]
    length = RATE // 2
    starts = [*range(0, N - length, 7919), CHUNK - 1, CHUNK - length // 2, 2 * CHUNK - 3, N - length, 0, 0]
    np.testing.assert_array_equal(zarr_aac.read_clips(z, starts, length), expected_clips(reference, starts, length))


def test_clips_in_one_chunk_cost_one_request_for_their_frames(arrays):
    """Prefix (unless cached) plus one range request per chunk when the clips lie close together."""
    z, reference = arrays["stereo"]
    log = z.store.log
    starts = [1000, 9000, 30000, 52000, 60000]
    prefixes.clear()
    log.reset()
    np.testing.assert_array_equal(zarr_aac.read_clips(z, starts, 2000), expected_clips(reference, starts, 2000))
    assert log.gets == 2
    log.reset()
    zarr_aac.read_clips(z, starts, 2000)
    assert log.gets == 1
    log.reset()
    spread = [1000, CHUNK + 1000, 2 * CHUNK + 1000]
    prefixes.clear()
    zarr_aac.read_clips(z, spread, 2000)
    assert sorted(log.per_key.values()) == [2, 2, 2]
    log.reset()
    zarr_aac.read_clips(z, spread, 2000)
    assert sorted(log.per_key.values()) == [1, 1, 1]


def test_far_apart_clips_in_one_chunk_fetch_only_their_frames():
    """Clips much further apart than MAX_GAP_BYTES are separate requests, not the bytes between them."""
    pcm = tone_with_noise(CHUNK * 6, 2, RATE, seed=1)
    z = aac_array(pcm.shape, pcm.shape, RATE, store=RecordingStore(zarr.storage.MemoryStore()))
    z[:] = (pcm * 32767).astype(np.int16)
    chunk_bytes = len(get_bytes(z, chunk_key(z, (0, 0))))
    zarr_aac.read_clips(z, [0], 10)
    z.store.log.reset()
    clips = zarr_aac.read_clips(z, [1000, CHUNK * 6 - 3000], 2000)
    assert z.store.log.gets == 2
    assert z.store.log.bytes < chunk_bytes / 4
    np.testing.assert_array_equal(clips, expected_clips(reference_decode(z), [1000, CHUNK * 6 - 3000], 2000))


def test_clips_of_a_chunk_never_written_hold_the_fill_value():
    z = aac_array((N, 2), (CHUNK, 2), RATE, fill_value=7)
    z[:CHUNK] = 100
    clips = zarr_aac.read_clips(z, [CHUNK - 10, 2 * CHUNK + 5], 20)
    np.testing.assert_array_equal(clips[0, 10:], 7)
    np.testing.assert_array_equal(clips[1], 7)
    np.testing.assert_array_equal(clips[0, :10], z[CHUNK - 10 : CHUNK])


def test_clips_through_an_fsspec_store(arrays, tmp_path):
    """An object-store path: zarr's FsspecStore, range requests through fsspec."""
    pytest.importorskip("fsspec")
    pcm = tone_with_noise(N, 2, RATE, seed=5)
    store = zarr.storage.FsspecStore.from_url(f"memory:/{tmp_path}/clips.zarr")
    z = aac_array((N, 2), (CHUNK, 2), RATE, store=store)
    z[:] = (pcm * 32767).astype(np.int16)
    starts = [0, CHUNK - 100, N - 4000]
    prefixes.clear()
    np.testing.assert_array_equal(
        zarr_aac.read_clips(z, starts, 4000), expected_clips(reference_decode(z), starts, 4000)
    )


class TestCorruptChunk:
    def setup_method(self):
        self.z = tone_array((N, 2), (CHUNK, 2), RATE)
        self.reference = reference_decode(self.z)
        self.key = key = chunk_key(self.z, (1, 0))
        self.intact = get_bytes(self.z, key)
        data = bytearray(self.intact)
        data[parse_header(bytes(data), key).prefix_nbytes + 100] ^= 0x40
        data[-3000] ^= 0x40
        self.damaged = bytes(data)
        put_bytes(self.z, key, self.damaged)
        self.starts = [100, 2 * CHUNK - 1500, CHUNK - 500, 2 * CHUNK + 100]
        """Clips 1 and 2 take samples from the damaged frames at each end of chunk 1."""

    def test_the_error_names_the_chunk_and_the_clips_it_holds(self):
        with pytest.raises(CorruptChunkError, match=r"clips 1, 2 take samples") as info:
            zarr_aac.read_clips(self.z, self.starts, 1000)
        assert info.value.key == chunk_key(self.z, (1, 0))

    def test_the_error_also_comes_from_a_cached_index(self):
        put_bytes(self.z, self.key, self.intact)
        zarr_aac.read_clips(self.z, [CHUNK + 10], 10)
        prototype = default_buffer_prototype()
        asyncio.run(self.z.store_path.store.set(self.key, prototype.buffer.from_bytes(self.damaged)))
        with pytest.raises(CorruptChunkError, match=r"clips 1, 2 take samples"):
            zarr_aac.read_clips(self.z, self.starts, 1000)

    def test_tolerant_reads_fill_the_damaged_part_and_report_it(self):
        with zarr_aac.tolerant_reads() as report:
            clips = zarr_aac.read_clips(self.z, self.starts, 1000)
        assert report.keys == [chunk_key(self.z, (1, 0))]
        np.testing.assert_array_equal(clips[0], self.reference[100:1100])
        np.testing.assert_array_equal(clips[3], self.reference[2 * CHUNK + 100 : 2 * CHUNK + 1100])
        np.testing.assert_array_equal(clips[1], 0)
        np.testing.assert_array_equal(clips[2, :500], self.reference[CHUNK - 500 : CHUNK])
        np.testing.assert_array_equal(clips[2, 500:], 0)


@pytest.mark.parametrize(
    ("starts", "length", "match"),
    [
        ([0, N - 10], 20, r"clip 1 \(samples"),
        ([-1], 10, r"clip 0"),
        ([0.5], 10, "integer sample numbers"),
        ([[0, 1]], 10, "1-d"),
        ([0], 0, "positive number of samples"),
    ],
)
def test_bad_clip_requests_are_refused_with_the_clip(arrays, starts, length, match):
    z, _ = arrays["stereo"]
    with pytest.raises(ValueError, match=match):
        zarr_aac.read_clips(z, starts, length)


def test_an_array_of_another_codec_is_refused():
    z = zarr.create_array(zarr.storage.MemoryStore(), shape=(100,), chunks=(10,), dtype="int16")
    with pytest.raises(UnsupportedAudioError, match="zarr_aac codec"):
        zarr_aac.read_clips(z, [0], 10)


def _clips_in_child(z, starts, queue):
    queue.put(zarr_aac.read_clips(z, starts, 3000))


def test_a_forked_child_reads_clips_after_its_parent_did(arrays):
    """The decode pool of the parent has no threads in a fork; the child must start its own."""
    z, reference = arrays["stereo"]
    starts = [0, CHUNK - 100, 2 * CHUNK + 7, 5000]
    zarr_aac.read_clips(z, starts, 3000)
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_clips_in_child, args=(z, starts, queue))
    child.start()
    try:
        clips = queue.get(timeout=120)
    finally:
        child.join(timeout=10)
        if child.is_alive():
            child.kill()
    np.testing.assert_array_equal(clips, expected_clips(reference, starts, 3000))


def test_clips_of_a_file_with_pns_equal_the_reads_of_each_clip(ffmpeg, tmp_path, monkeypatch):
    """An .m4a of FFmpeg's encoder with PNS on, opened in place: its noise depends on every frame
    decoded before, so each clip must be decoded as ``array[a:b]`` decodes it, not merged or split
    (not even into ranges of MAX_RANGE_FRAMES, here fewer than a clip's frames)."""
    monkeypatch.setattr("zarr_aac.codec.clips.MAX_RANGE_FRAMES", 2)
    pcm = tone_with_noise(RATE * 6, 2, RATE, seed=9)
    m4a = ffmpeg_aac(ffmpeg, write_wav(tmp_path / "a.wav", pcm, RATE), tmp_path / "a.m4a", pns=True)
    array = zarr_aac.open_aac_file(m4a, dtype="float32", chunk_length=RATE * 2, index_path=False)
    starts = [100, 900, 1500, 30_000, 31_000, RATE * 2 - 700, RATE * 4 + 5]
    expected = np.stack([array[s : s + 4000] for s in starts])
    np.testing.assert_array_equal(zarr_aac.read_clips(array, starts, 4000), expected)
