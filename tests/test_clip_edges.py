"""``zarr_aac.read_clips`` at its edges: clips of chunks never written, damaged or still PCM in
every layout (1-d, stereo, channels in column chunks), the errors' exact words, and what a read
costs (requests, decode jobs, worker processes) at each threshold. Samples against a full
sequential decode of the stored chunks (support.selections.reference_decode, PyAV directly)."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import fields

import numpy as np
import pytest
import zarr
from support.arrays import tone_array
from support.chunks import Chunk, chunk_key, get_bytes, put_bytes
from support.pool import KillingJob, record_pool
from support.selections import reference_decode
from support.signals import tone_with_noise
from support.stores import RecordingStore
from zarr.core.buffer import default_buffer_prototype

import zarr_aac
from zarr_aac.codec import aac, clips, decode_pool
from zarr_aac.codec.chunk_format import PcmChunkBuilder, parse_header, parse_prefix
from zarr_aac.errors import CorruptChunkError, DecodeWorkerError, UnsupportedAudioError

RATE = 48_000
CHUNK = 120 * aac.FRAME_LENGTH
N = CHUNK * 3 - 5000
LAYOUTS = {
    "mono 1-d float32": ((N,), (CHUNK,), "float32"),
    "stereo int16": ((N, 2), (CHUNK, 2), "int16"),
    "3 channels in column chunks of 2": ((N, 3), (CHUNK, 2), "int16"),
}


def layout_array(name: str, store=None, fill_value=0, seed=11) -> zarr.Array:
    shape, chunks, dtype = LAYOUTS[name]
    return tone_array(shape, chunks, RATE, dtype=dtype, store=store, fill_value=fill_value, seed=seed)


def expected_clips(reference: np.ndarray, starts, length: int) -> np.ndarray:
    return np.stack([reference[s : s + length] for s in starts])


def chunk_keys(z: zarr.Array, number: int) -> list[str]:
    """The keys of chunk row ``number``: one per column chunk."""
    if z.ndim == 1:
        return [chunk_key(z, (number,))]
    return [chunk_key(z, (number, j)) for j in range(-(-z.shape[1] // z.chunks[1]))]


def delete(z: zarr.Array, key: str) -> None:
    asyncio.run(z.store_path.store.delete(key))


def garbage_frames(z: zarr.Array, key: str, frames: list[int]) -> None:
    """Overwrite ``frames`` of chunk ``key`` with garbage under recomputed checksums: the chunk
    passes every check the reading process makes and fails in FFmpeg."""
    chunk = Chunk.parse(get_bytes(z, key))
    payload = chunk.frames
    for frame in frames:
        payload[frame] = bytes([0xFF]) * len(payload[frame])
    chunk.payload = b"".join(payload)
    put_bytes(z, key, chunk.pack())


@pytest.fixture
def in_process():
    with zarr.config.set({decode_pool.CONFIG_KEY: 0}):
        yield


@pytest.fixture(params=[0, 2], ids=["decoded here", "decoded in 2 workers"])
def processes(request, monkeypatch):
    """Clip reads decoded in the reading process, or in the pool for any read of 2 jobs or more."""
    monkeypatch.setattr(decode_pool, "POOL_MIN_FRAMES", 1)
    record = record_pool(monkeypatch)
    with zarr.config.set({decode_pool.CONFIG_KEY: request.param}):
        yield request.param
    assert bool(record.reads) == bool(request.param)


@pytest.mark.parametrize("name", LAYOUTS)
def test_clips_of_chunks_never_written_hold_the_fill_value_beside_decoded_samples(in_process, name):
    """A clip's part in an absent chunk is the fill value, its parts in the chunks either side the
    decoded samples; in column chunks, only the absent chunk's columns."""
    fill = 0.25 if LAYOUTS[name][2] == "float32" else 7
    z = layout_array(name, fill_value=fill)
    for key in chunk_keys(z, 1)[-1:]:
        delete(z, key)
    reference = reference_decode(z)
    starts = [CHUNK - 700, CHUNK + 300, 2 * CHUNK - 900, 40]
    got = zarr_aac.read_clips(z, starts, 2000)
    np.testing.assert_array_equal(got, expected_clips(reference, starts, 2000))
    absent = got[1] if z.ndim == 1 else got[1, :, 2 * (z.shape[1] // 3) :]
    np.testing.assert_array_equal(absent, fill)
    if z.ndim == 2 and z.chunks[1] < z.shape[1]:
        assert np.any(got[1, :, :2] != fill)


def pcm_tail(z: zarr.Array, number: int, stored: int) -> np.ndarray:
    """Store chunk row ``number`` as a live writer's PCM chunks of ``stored`` samples (one per
    column chunk); their samples, (stored, channels) or (stored,)."""
    channels = z.shape[1] if z.ndim == 2 else 1
    tail = tone_with_noise(stored, channels, RATE, seed=5)
    samples = (tail * 20000).astype(np.int16) if z.dtype == np.int16 else tail.astype(np.float32)
    width = z.chunks[1] if z.ndim == 2 else 1
    for j, key in enumerate(chunk_keys(z, number)):
        builder = PcmChunkBuilder(CHUNK, width, z.dtype, RATE)
        part = np.zeros((stored, width), z.dtype)
        columns = samples[:, j * width : (j + 1) * width]
        part[:, : columns.shape[1]] = columns
        builder.extend(part)
        put_bytes(z, key, builder.chunk())
    return samples if z.ndim == 2 else samples[:, 0]


@pytest.mark.parametrize("name", LAYOUTS)
def test_clips_of_a_pcm_chunk_before_an_absent_one(in_process, name):
    """A PCM chunk's samples are copied before absent chunks are filled: neither overwrites the
    other's part of a clip that spans both."""
    z = layout_array(name, fill_value=3)
    reference = reference_decode(z)
    samples = pcm_tail(z, 1, CHUNK - 4000)
    for key in chunk_keys(z, 2):
        delete(z, key)
    reference[CHUNK : 2 * CHUNK] = 0
    reference[CHUNK : 2 * CHUNK - 4000] = samples
    reference[2 * CHUNK :] = 3
    starts = [2 * CHUNK - 1000, CHUNK - 500, CHUNK + 10, 2 * CHUNK + 1]
    np.testing.assert_array_equal(zarr_aac.read_clips(z, starts, 3000), expected_clips(reference, starts, 3000))


@pytest.mark.parametrize("name", ["mono 1-d float32", "stereo int16"])
def test_a_damaged_pcm_chunk_is_named_with_its_clips_or_filled_inside_tolerant_reads(in_process, name):
    z = layout_array(name)
    reference = reference_decode(z)
    pcm_tail(z, 1, CHUNK - 4000)
    key = chunk_keys(z, 1)[0]
    damaged = bytearray(get_bytes(z, key))
    damaged[-10] ^= 0x01
    put_bytes(z, key, bytes(damaged))
    starts = [0, CHUNK - 100, 2 * CHUNK + 50]
    with pytest.raises(CorruptChunkError, match=r"\(clips 1 take samples from this chunk\)$") as info:
        zarr_aac.read_clips(z, starts, 1000)
    assert info.value.key == key
    with zarr_aac.tolerant_reads() as report:
        got = zarr_aac.read_clips(z, starts, 1000)
    assert report.keys == [key]
    assert str(report.errors[0]) == str(info.value)
    reference[CHUNK : 2 * CHUNK] = 0
    np.testing.assert_array_equal(got, expected_clips(reference, starts, 1000))


@pytest.mark.parametrize("name", LAYOUTS)
def test_a_chunk_failing_in_the_decoder_is_filled_without_touching_its_neighbours(processes, name):
    """Inside tolerant_reads the failed chunk's part of each clip is the fill value; the parts of
    the chunks either side (decoded before the failure is settled) and of the other column chunk
    keep their samples; the chunk is reported once though two of its decode jobs failed."""
    z = layout_array(name)
    key = chunk_keys(z, 1)[0]
    reference = reference_decode(z)
    skip = parse_header(get_bytes(z, key), key).skip
    garbage_frames(z, key, [20, 100])
    if z.ndim == 1:
        reference[CHUNK : 2 * CHUNK] = 0
    else:
        reference[CHUNK : 2 * CHUNK, : z.chunks[1]] = 0
    bad = [20 * aac.FRAME_LENGTH - skip, 100 * aac.FRAME_LENGTH - skip]
    starts = [CHUNK - 10_000, CHUNK + bad[1] - 500, 50, CHUNK + bad[0]]
    with zarr_aac.tolerant_reads() as report:
        got = zarr_aac.read_clips(z, starts, 32_000)
    assert report.keys == [key]
    assert report.errors[0].reason.endswith("(clips 0, 1, 3 take samples from this chunk)")
    np.testing.assert_array_equal(got, expected_clips(reference, starts, 32_000))


def test_the_clips_a_corrupt_chunk_holds_are_listed_up_to_20(in_process):
    z = layout_array("stereo int16")
    key = chunk_keys(z, 1)[0]
    damaged = bytearray(get_bytes(z, key))
    damaged[parse_header(bytes(damaged), key).prefix_nbytes + 10] ^= 0x40
    put_bytes(z, key, bytes(damaged))
    inside = [CHUNK + 100 * i for i in range(25)]

    def named(starts):
        with pytest.raises(CorruptChunkError) as info:
            zarr_aac.read_clips(z, starts, 50)
        return info.value.reason.rsplit(" (clips ", 1)[1]

    assert named([0, *inside[:20]]) == ", ".join(map(str, range(1, 21))) + " take samples from this chunk)"
    assert named([0, *inside[:21]]) == ", ".join(map(str, range(1, 21))) + " and 1 more take samples from this chunk)"
    assert named(inside) == ", ".join(map(str, range(20))) + " and 5 more take samples from this chunk)"


def test_a_chunk_shorter_than_its_index_says_is_named_with_the_bytes_missing(in_process):
    z = layout_array("stereo int16")
    key = chunk_keys(z, 1)[0]
    intact = get_bytes(z, key)
    put_bytes(z, key, intact[:-1000])
    prefix = parse_prefix(intact, parse_header(intact, key), key)
    offsets, start = prefix.index.byte_offsets, prefix.header.prefix_nbytes
    first, stop = prefix.frames_to_fetch(prefix.index.frame_of(CHUNK - 200) - 1, prefix.header.n_frames)
    with pytest.raises(CorruptChunkError) as info:
        zarr_aac.read_clips(z, [2 * CHUNK - 200], 400)
    assert str(info.value) == (
        f"corrupt chunk {key!r}: chunk ends before byte {start + int(offsets[stop])} that its index points to "
        f"(got {int(offsets[stop] - offsets[first]) - 1000} of {int(offsets[stop] - offsets[first])} bytes) "
        "(clips 0 take samples from this chunk)"
    )


def test_a_chunk_whose_header_fails_its_checks_is_named_with_its_clips_or_filled(in_process):
    """A chunk refused on its header, before any frame is fetched (a bit of its sample rate
    flipped), names its own key and the clips it holds; inside tolerant_reads those are filled."""
    z = layout_array("stereo int16", fill_value=5)
    reference = reference_decode(z)
    key = chunk_keys(z, 1)[0]
    damaged = bytearray(get_bytes(z, key))
    damaged[8] ^= 0x01
    put_bytes(z, key, bytes(damaged))
    starts = [CHUNK + 10, 20, 2 * CHUNK - 50]
    with pytest.raises(CorruptChunkError) as info:
        zarr_aac.read_clips(z, starts, 100)
    assert info.value.key == key
    assert info.value.reason.endswith("(clips 0, 2 take samples from this chunk)")
    with zarr_aac.tolerant_reads() as report:
        got = zarr_aac.read_clips(z, starts, 100)
    assert [error.key for error in report.errors] == [key]
    reference[CHUNK : 2 * CHUNK] = 5
    np.testing.assert_array_equal(got, expected_clips(reference, starts, 100))


def test_a_chunk_deleted_after_its_index_was_cached_reads_as_the_fill_value(in_process):
    """The cached index fails against the missing chunk and is dropped: the next read asks for
    the chunk's index only."""
    z = layout_array("stereo int16", store=RecordingStore(zarr.storage.MemoryStore()), fill_value=9)
    reference = reference_decode(z)
    key = chunk_keys(z, 1)[0]
    starts = [CHUNK + 100, 10]
    np.testing.assert_array_equal(zarr_aac.read_clips(z, starts, 500), expected_clips(reference, starts, 500))
    delete(z, key)
    reference[CHUNK : 2 * CHUNK] = 9
    for requests in [2, 1]:
        z.store.log.reset()
        np.testing.assert_array_equal(zarr_aac.read_clips(z, starts, 500), expected_clips(reference, starts, 500))
        assert z.store.log.per_key[key] == requests


def test_a_chunk_rewritten_after_its_index_was_cached_reads_as_rewritten(in_process):
    """Another writer replaced the chunk (its index cached here is stale): the clips are the new
    chunk's samples, and its index is cached in place of the old one."""
    z = layout_array("stereo int16", store=RecordingStore(zarr.storage.MemoryStore()))
    other = layout_array("stereo int16", seed=12)
    key = chunk_keys(z, 1)[0]
    starts = [CHUNK + 100, 2 * CHUNK - 3000, 10]
    zarr_aac.read_clips(z, starts, 2000)
    new = get_bytes(other, key)
    asyncio.run(z.store_path.store.set(key, default_buffer_prototype().buffer.from_bytes(new)))
    reference = reference_decode(z)
    np.testing.assert_array_equal(zarr_aac.read_clips(z, starts, 2000), expected_clips(reference, starts, 2000))
    z.store.log.reset()
    np.testing.assert_array_equal(zarr_aac.read_clips(z, starts, 2000), expected_clips(reference, starts, 2000))
    assert z.store.log.per_key[key] == 1


def test_a_worker_dying_in_a_clip_read_names_the_read_and_its_chunks(monkeypatch):
    z = tone_array((N, 2), (CHUNK, 2), RATE)
    reference = reference_decode(z)
    monkeypatch.setattr(decode_pool, "POOL_MIN_FRAMES", 1)
    with zarr.config.set({decode_pool.CONFIG_KEY: 2}):
        zarr_aac.read_clips(z, [0, CHUNK], 9000)
        batch_message = decode_pool.batch_message

        def killing(output, batch, gain):
            # The batches handed to a worker kill it; the one decoded here runs as usual.
            killers = [KillingJob(*(getattr(job, field.name) for field in fields(job))) for job in batch]
            return batch_message(output, killers, gain)

        with monkeypatch.context() as patched:
            patched.setattr(decode_pool, "batch_message", killing)
            with pytest.raises(DecodeWorkerError) as info:
                zarr_aac.read_clips(z, [0, CHUNK + 5, 7], 9000)
        assert str(info.value).startswith("a decode worker process died while decoding 3 clips (chunk(s) c/")
        np.testing.assert_array_equal(
            zarr_aac.read_clips(z, [5, CHUNK], 9000), expected_clips(reference, [5, CHUNK], 9000)
        )


@pytest.mark.parametrize(
    ("starts", "length", "message"),
    [
        ([0], True, "length must be a positive number of samples, not True"),
        ([0], 10.0, "length must be a positive number of samples, not 10.0"),
        ([0], -3, "length must be a positive number of samples, not -3"),
        (
            [0.0, 5.0],
            10,
            "starts must be a 1-d sequence of integer sample numbers, not float64 of shape (2,)",
        ),
        (
            np.zeros((2, 2), np.int64),
            10,
            "starts must be a 1-d sequence of integer sample numbers, not int64 of shape (2, 2)",
        ),
        (5, 10, "starts must be a 1-d sequence of integer sample numbers, not int64 of shape ()"),
        ([10, N - 9], 10, f"clip 1 (samples {N - 9} to {N + 1}) reaches outside the array's {N} samples"),
        (
            [-2, 0, -1, N],
            10,
            f"clip 0 (samples -2 to 8) reaches outside the array's {N} samples, as do 2 other clip(s)",
        ),
        (
            [N - 5, 0, -1],
            10,
            f"clip 0 (samples {N - 5} to {N + 5}) reaches outside the array's {N} samples, as do 1 other clip(s)",
        ),
    ],
)
def test_bad_clip_requests_are_refused_in_words(starts, length, message):
    z = tone_array((N, 2), (CHUNK, 2), RATE)
    with pytest.raises(ValueError) as info:
        zarr_aac.read_clips(z, starts, length)
    assert str(info.value) == message


def test_clips_at_both_ends_of_the_array_and_none_at_all(in_process):
    z = tone_array((N, 2), (CHUNK, 2), RATE)
    reference = reference_decode(z)
    starts = np.array([N - 10, 0, N - 1], np.uint32)
    got = zarr_aac.read_clips(z, starts[:2], 10)
    np.testing.assert_array_equal(got, expected_clips(reference, starts[:2], 10))
    np.testing.assert_array_equal(zarr_aac.read_clips(z, starts[2:], 1), reference[N - 1 :][None])
    np.testing.assert_array_equal(zarr_aac.read_clips(z, np.int32(N - 1)[None], 1), reference[N - 1 :][None])
    empty = zarr_aac.read_clips(z, [], 10)
    assert empty.shape == (0, 10, 2) and empty.dtype == np.int16


@pytest.mark.parametrize("thing", [np.zeros(100, np.int16), [0, 1, 2]])
def test_what_is_not_a_zarr_array_is_refused_with_the_way_out(thing):
    with pytest.raises(UnsupportedAudioError) as info:
        zarr_aac.read_clips(thing, [0], 1)
    assert str(info.value) == (
        f"read_clips reads zarr arrays stored with the zarr_aac codec as serializer; {thing!r} is not one "
        "(read its clips with array[a:b])"
    )


def read_jobs(monkeypatch, z, starts, length) -> list[decode_pool.DecodeJob]:
    """The decode jobs of one read_clips call, decoded in this process; its samples checked."""
    jobs: list[decode_pool.DecodeJob] = []
    decode_here = decode_pool.decode_here

    def recording(read_jobs, out, gain):
        jobs.extend(read_jobs)
        return decode_here(read_jobs, out, gain)

    monkeypatch.setattr(decode_pool, "decode_here", recording)
    with zarr.config.set({decode_pool.CONFIG_KEY: 0}):
        got = zarr_aac.read_clips(z, starts, length)
    np.testing.assert_array_equal(got, expected_clips(reference_decode(z), starts, length))
    return jobs


def first_sample_of(z: zarr.Array, frame: int) -> int:
    """The first sample of chunk 0 that frame ``frame`` decodes to (frames before the chunk's
    ``skip`` samples are the encoder's lead-in)."""
    return frame * aac.FRAME_LENGTH - parse_header(get_bytes(z, chunk_key(z, (0, 0))), "c/0/0").skip


def test_each_clip_decodes_from_one_frame_before_its_own(monkeypatch):
    """A run starts one pre-roll frame before the frame of its first sample and ends with the
    frame of its last; runs with one frame between them merge, with two they do not."""
    z = tone_array((N, 2), (CHUNK, 2), RATE)
    frame = aac.FRAME_LENGTH
    jobs = read_jobs(monkeypatch, z, [first_sample_of(z, 10), first_sample_of(z, 30) + 5], frame)
    assert [(job.first_frame, job.n_frames) for job in jobs] == [(9, 2), (29, 3)]
    # Each job carries its frames' bytes and no more (they are copied to a worker), and decodes
    # with a reused decoder (this codec's chunks have PNS off); a request from group 2 on here.
    jobs += read_jobs(monkeypatch, z, [first_sample_of(z, 40)], frame)
    assert all(len(job.payload) == job.frame_offsets[-1] for job in jobs)
    assert all(job.reuse is True for job in jobs)
    # Frames 9-10, then 12-13 (frame 13's pre-roll is 12): frame 11 between them, one run.
    jobs = read_jobs(monkeypatch, z, [first_sample_of(z, 10), first_sample_of(z, 13)], frame)
    assert [(job.first_frame, job.n_frames) for job in jobs] == [(9, 5)]
    jobs = read_jobs(monkeypatch, z, [first_sample_of(z, 14), first_sample_of(z, 10)], frame)
    assert [(job.first_frame, job.n_frames) for job in jobs] == [(9, 2), (13, 2)]
    # Overlapping clips: one run from the first's pre-roll to the end of the last.
    jobs = read_jobs(monkeypatch, z, [first_sample_of(z, 11), first_sample_of(z, 10)], 5 * frame)
    assert [(job.first_frame, job.n_frames) for job in jobs] == [(9, 7)]


@pytest.mark.parametrize(("range_frames", "n_jobs"), [(1, 50), (7, 8), (40, 2), (51, 1)])
def test_long_runs_are_cut_into_ranges_each_with_its_pre_roll_frame(monkeypatch, range_frames, n_jobs):
    """Frames 9-59 (pre-roll 9): cut into ranges of range_frames frames after the first, each later
    range starting one frame before its first kept frame; a range of pre-roll alone is no job."""
    monkeypatch.setattr(clips, "MAX_RANGE_FRAMES", range_frames)
    z = tone_array((N, 2), (CHUNK, 2), RATE)
    jobs = read_jobs(monkeypatch, z, [first_sample_of(z, 10)], 50 * aac.FRAME_LENGTH)
    assert len(jobs) == n_jobs
    assert jobs[0].first_frame == 9
    assert jobs[-1].first_frame + jobs[-1].n_frames == 60
    for previous, job in itertools.pairwise(jobs):
        assert job.first_frame == previous.first_frame + previous.n_frames - 1
        assert previous.n_frames == (range_frames if previous is jobs[0] and range_frames > 1 else range_frames + 1)


def test_a_read_uses_the_pool_from_two_jobs_and_pool_min_frames_frames(monkeypatch):
    z = tone_array((N, 2), (CHUNK, 2), RATE)
    starts = [first_sample_of(z, 10), first_sample_of(z, 50)]
    length = 5 * aac.FRAME_LENGTH
    record = record_pool(monkeypatch)
    with zarr.config.set({decode_pool.CONFIG_KEY: 2}):
        for min_frames, pooled in [(12, True), (13, False)]:
            monkeypatch.setattr(decode_pool, "POOL_MIN_FRAMES", min_frames)
            record.clear()
            zarr_aac.read_clips(z, starts, length)
            assert [sum(job.n_frames for job in jobs) for jobs in record.reads] == ([12] if pooled else [])
        monkeypatch.setattr(decode_pool, "POOL_MIN_FRAMES", 1)
        record.clear()
        zarr_aac.read_clips(z, starts[:1], 30 * aac.FRAME_LENGTH)
        assert record.reads == []


def test_ranges_closer_than_max_gap_bytes_share_a_request(monkeypatch):
    """Two runs of one chunk whose bytes lie MAX_GAP_BYTES apart or less are one request (the gap
    read with them); a byte further apart, two requests of only their own frames."""
    pcm = tone_with_noise(CHUNK * 3, 2, RATE, seed=2)
    z = zarr.create_array(
        RecordingStore(zarr.storage.MemoryStore()),
        shape=pcm.shape,
        chunks=pcm.shape,
        dtype="int16",
        serializer=zarr_aac.AACCodec(sample_rate=RATE),
        compressors=None,
    )
    z[:] = (pcm * 32767).astype(np.int16)
    key = chunk_key(z, (0, 0))
    data = get_bytes(z, key)
    prefix = parse_prefix(data, parse_header(data, key), key)
    frame, skip, offsets = aac.FRAME_LENGTH, prefix.header.skip, prefix.index.byte_offsets
    starts = [10 * frame - skip, 300 * frame - skip]
    (first_a, first_b), (second_a, second_b) = prefix.frames_to_fetch(9, 11), prefix.frames_to_fetch(299, 301)
    gap = int(offsets[second_a] - offsets[first_b])
    span = int(offsets[second_b] - offsets[first_a])
    reference = reference_decode(z)
    zarr_aac.read_clips(z, [0], 1)
    for max_gap, requests, nbytes in [(gap, 1, span), (gap - 1, 2, span - gap)]:
        monkeypatch.setattr(clips, "MAX_GAP_BYTES", max_gap)
        z.store.log.reset()
        got = zarr_aac.read_clips(z, starts, frame)
        np.testing.assert_array_equal(got, expected_clips(reference, starts, frame))
        assert (z.store.log.gets, z.store.log.bytes) == (requests, nbytes)
