"""The decode pool's parts below the hand-over (zarr_aac.codec.decode_pool), tested one by one in
the reading process, where a mutation run left them unguarded: a decode job's samples and errors,
the batches jobs are balanced into, the shared output and the blocks kept for it, the message a
worker gets and what it does with it, and the pool's size. Jobs are made here from a stored chunk
split by support.chunks (not by the package), and their samples checked against a full
sequential decode (support.selections.reference_decode)."""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.util
import os
import signal
import sys
import threading
import time
from dataclasses import replace
from multiprocessing import resource_tracker
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import zarr
from support.arrays import tone_array
from support.chunks import Chunk, chunk_key, get_bytes
from support.selections import reference_decode, stored_gain

from zarr_aac.codec import aac, decode_pool
from zarr_aac.errors import AudioDecodeError, CorruptChunkError, DecodeWorkerError

RATE = 48_000
FRAME = aac.FRAME_LENGTH
CHUNK = 40 * FRAME
KEY = "c/0/0"
EMPTY_FRAME = b"\xe0"
"""An AAC raw data block of the END element alone: FFmpeg decodes it to no samples
(tests/test_read_side_forged.py)."""
GARBAGE = 0xFF
"""A frame of these bytes FFmpeg refuses."""


@pytest.fixture(scope="module", params=["stereo int16", "stereo float32, gain 0.5"])
def stored(request):
    """A one-chunk array, its chunk's parts, its full sequential decode and its gain."""
    if request.param == "stereo int16":
        z = tone_array((CHUNK, 2), (CHUNK, 2), RATE, seed=3)
    else:
        z = tone_array((CHUNK, 2), (CHUNK, 2), RATE, dtype="float32", gain=0.5, seed=3)
    chunk = Chunk.parse(get_bytes(z, chunk_key(z, (0, 0))))
    return SimpleNamespace(chunk=chunk, reference=reference_decode(z), gain=stored_gain(z), dtype=z.dtype)


def job_of(chunk, first, stop, writes, *, frames=None, key=KEY):
    """A job decoding the chunk's frames [first, stop) (``frames`` replacing them where given), the
    first a pre-roll frame unless it is frame 0, with ``writes``."""
    frames = chunk.frames[first:stop] if frames is None else frames
    offsets = np.concatenate([[0], np.cumsum([len(frame) for frame in frames])]).astype(np.int64)
    return decode_pool.DecodeJob(
        asc=chunk.asc,
        channels=chunk.fields["channels"],
        reuse=True,
        payload=b"".join(frames),
        frame_offsets=offsets,
        first_sample=first * FRAME - chunk.fields["skip"],
        writes=tuple(writes),
        key=key,
        first_frame=first,
    )


def blank(shape, dtype):
    """An output array of a value no decode gives, so that samples written where none should be show."""
    return np.full(shape, 12345 if np.dtype(dtype) == np.int16 else np.nan, dtype)


def with_block_frames(monkeypatch, frames, channels=2):
    """Decode through buffers of ``frames`` frames (aac.SCRATCH_MAX_BYTES of float32 samples)."""
    monkeypatch.setattr(aac, "SCRATCH_MAX_BYTES", frames * 4 * FRAME * channels)


def test_a_job_writes_its_samples_where_its_writes_say(stored, monkeypatch):
    """Writes cut across the decode's blocks (3 frames each), overlap each other, take both
    channels or the first alone into another column; the samples are the sequential decode's,
    converted to the array's dtype with its gain undone, and nothing else is written."""
    with_block_frames(monkeypatch, 3)
    skip = stored.chunk.fields["skip"]
    valid = 10 * FRAME - skip  # frame 9 is the pre-roll frame
    spans = [(valid, valid + 5000), (valid + 4000, valid + 9500), (31 * FRAME - skip - 7000, 31 * FRAME - skip)]
    writes = [
        decode_pool.Write(*spans[0], (0, slice(0, 5000)), 2),
        decode_pool.Write(*spans[1], (1, slice(100, 5600)), 2),
        decode_pool.Write(*spans[2], (2, slice(1, 7001), slice(1, 2)), 1),
    ]
    out = blank((3, 7100, 2), stored.dtype)
    job_of(stored.chunk, 9, 31, writes).run(out, stored.gain)
    expected = blank((3, 7100, 2), stored.dtype)
    reference = stored.reference
    expected[0, :5000] = reference[spans[0][0] : spans[0][1]]
    expected[1, 100:5600] = reference[spans[1][0] : spans[1][1]]
    expected[2, 1:7001, 1:2] = reference[spans[2][0] : spans[2][1], :1]
    np.testing.assert_array_equal(out, expected)


def test_a_job_writes_the_first_channel_alone_for_a_1d_array(stored, monkeypatch):
    """A write with no channel count (a 1-d array's clips) takes the first channel, from the
    chunk's first frame, which needs no pre-roll frame."""
    with_block_frames(monkeypatch, 4)
    writes = [
        decode_pool.Write(0, 6000, (0, slice(0, 6000)), None),
        decode_pool.Write(9000, 12_000, (1, slice(0, 3000)), None),
    ]
    out = blank((2, 6000), stored.dtype)
    job_of(stored.chunk, 0, 20, writes).run(out, stored.gain)
    expected = blank((2, 6000), stored.dtype)
    expected[0] = stored.reference[:6000, 0]
    expected[1, :3000] = stored.reference[9000:12_000, 0]
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize(
    ("scratch_frames", "n_frames", "block_frames"),
    [
        pytest.param(5, 22, 5, id="blocks-of-the-buffer"),
        pytest.param(5.5, 22, 5, id="whole-frames-of-the-buffer"),
        pytest.param(0.5, 22, 1, id="buffer-under-a-frame"),
        pytest.param(100, 22, 22, id="one-block-of-a-short-job"),
    ],
)
def test_a_job_decodes_in_blocks_of_as_many_frames_as_the_buffer_holds(
    stored, monkeypatch, scratch_frames, n_frames, block_frames
):
    monkeypatch.setattr(aac, "SCRATCH_MAX_BYTES", int(scratch_frames * 4 * FRAME * 2))
    asked = []
    decode_blocks = aac.FrameDecoder.decode_blocks

    def recording(self, frames, block, out=None):
        asked.append(block)
        return decode_blocks(self, frames, block, out)

    monkeypatch.setattr(aac.FrameDecoder, "decode_blocks", recording)
    first = 5
    lo, hi = (first + 1) * FRAME - stored.chunk.fields["skip"], (first + n_frames) * FRAME - stored.chunk.fields["skip"]
    out = blank((hi - lo, 2), stored.dtype)
    job_of(stored.chunk, first, first + n_frames, [decode_pool.Write(lo, hi, (slice(0, hi - lo),), 2)]).run(
        out, stored.gain
    )
    assert asked == [block_frames]
    np.testing.assert_array_equal(out, stored.reference[lo:hi])


def test_a_job_keeps_its_decoder_for_the_next():
    """A job of this codec's frames (reuse on) leaves its decoder kept for the next job of the ASC."""
    z = tone_array((CHUNK, 2), (CHUNK, 2), RATE, seed=3)
    chunk = Chunk.parse(get_bytes(z, chunk_key(z, (0, 0))))
    aac.drop_idle_decoders()
    out = np.zeros((1000, 2), np.int16)
    job_of(chunk, 0, 3, [decode_pool.Write(0, 1000, (slice(0, 1000),), 2)]).run(out, 1.0)
    assert len(aac._idle_decoders.get(chunk.asc, [])) == 1


@pytest.mark.parametrize(
    ("emptied", "block"),
    [pytest.param(13, (12, 14), id="a-middle-block"), pytest.param(30, (30, 30), id="the-last-shorter-block")],
)
def test_a_job_whose_frames_decode_short_names_the_block(stored, monkeypatch, emptied, block):
    """Frames 9-30 in blocks of 3: a frame decoding to no samples fails its block, named by its
    frames and the counts."""
    with_block_frames(monkeypatch, 3)
    frames = stored.chunk.frames[9:31]
    frames[emptied - 9] = EMPTY_FRAME
    job = job_of(stored.chunk, 9, 31, [decode_pool.Write(9000, 9100, (slice(0, 100),), 2)], frames=frames)
    with pytest.raises(CorruptChunkError) as caught:
        job.run(blank((100, 2), stored.dtype), stored.gain)
    first, last = block
    expected = (last - first + 1) * FRAME
    assert caught.value.key == KEY
    assert str(caught.value) == (
        f"corrupt chunk {KEY!r}: frames {first}-{last} decode to {expected - FRAME} samples, expected {expected}"
    )


def garbage_job(chunk, key, write):
    frames = chunk.frames[9:20]
    frames[5] = bytes([GARBAGE]) * len(frames[5])
    return job_of(chunk, 9, 20, [write], frames=frames, key=key)


def test_a_frame_ffmpeg_refuses_fails_the_job_naming_its_chunk(stored):
    job = garbage_job(stored.chunk, "c/3/0", decode_pool.Write(9000, 9100, (slice(0, 100),), 2))
    with pytest.raises(CorruptChunkError) as caught:
        job.run(blank((100, 2), stored.dtype), stored.gain)
    assert caught.value.key == "c/3/0"
    assert isinstance(caught.value.__cause__, AudioDecodeError)
    assert caught.value.reason == str(caught.value.__cause__)
    assert caught.value.reason.startswith("AAC decoder failed: ")


@pytest.fixture
def three_jobs(stored):
    """Two good jobs around one FFmpeg refuses, each writing its own row of a (3, 3000, 2) output,
    and the output the good ones give."""
    skip = stored.chunk.fields["skip"]
    a, b = 8 * FRAME - skip, 20 * FRAME - skip
    jobs = [
        job_of(stored.chunk, 7, 13, [decode_pool.Write(a, a + 3000, (0,), 2)]),
        garbage_job(stored.chunk, "c/bad", decode_pool.Write(9000, 12_000, (1,), 2)),
        job_of(stored.chunk, 19, 25, [decode_pool.Write(b, b + 3000, (2,), 2)], key="c/other"),
    ]
    expected = blank((3, 3000, 2), stored.dtype)
    expected[0], expected[2] = stored.reference[a : a + 3000], stored.reference[b : b + 3000]
    return jobs, expected


def test_jobs_run_here_report_each_failed_job_and_write_the_others(stored, three_jobs):
    jobs, expected = three_jobs
    out = blank(expected.shape, stored.dtype)
    ((number, error),) = decode_pool.run_jobs(jobs, out, stored.gain)
    assert number == 1 and error.key == "c/bad"
    np.testing.assert_array_equal(out, expected)
    out = blank(expected.shape, stored.dtype)
    ((job, error),) = decode_pool.decode_here(jobs, out, stored.gain)
    assert job is jobs[1] and error.key == "c/bad"
    np.testing.assert_array_equal(out, expected)


@pytest.fixture
def kept(monkeypatch):
    """A fresh set of kept blocks in place of the process's, removed after the test."""
    blocks = decode_pool._KeptBlocks()
    monkeypatch.setattr(decode_pool, "_blocks", blocks)
    yield blocks
    blocks.remove_all()


def test_a_read_keeping_all_its_batches_runs_them_here_and_reports_its_failed_jobs(stored, three_jobs, kept):
    """``decode`` with every batch kept hands nothing over: the jobs run here, into the shared array."""
    jobs, expected = three_jobs
    with decode_pool.SharedOutput(expected.shape, stored.dtype, jobs) as shared:
        shared.array[...] = blank(expected.shape, stored.dtype)
        ((job, error),) = decode_pool.decode(shared, jobs, stored.gain, 2, "a read", keep=len(jobs))
        got = shared.result()
    assert job is jobs[1] and error.key == "c/bad"
    np.testing.assert_array_equal(got, expected)


def sized(*n_frames):
    return [
        decode_pool.DecodeJob(b"", 2, True, b"", np.zeros(n + 1, np.int64), 0, (), f"c/{i}/0", 0)
        for i, n in enumerate(n_frames)
    ]


@pytest.mark.parametrize(
    ("n_frames", "count", "batches"),
    [
        # Longest first, each to the batch of the fewest frames, counting two frames more per job.
        pytest.param([1, 10, 4, 4], 2, [[10, 1], [4, 4]], id="longest-first"),
        pytest.param([3, 6, 3, 1], 2, [[6, 1], [3, 3]], id="two-frames-a-job"),
        pytest.param([14, 3, 3, 3, 1], 2, [[14], [3, 3, 3, 1]], id="not-three-frames-a-job"),
        pytest.param([5, 7], 3, [[7], [5]], id="no-more-batches-than-jobs"),
        pytest.param([2, 2, 2, 2], 4, [[2], [2], [2], [2]], id="one-job-a-batch"),
        pytest.param([], 2, [], id="no-jobs"),
    ],
)
def test_jobs_are_balanced_into_batches_of_about_equal_frames(n_frames, count, batches):
    got = decode_pool.balanced_batches(sized(*n_frames), count)
    assert [[job.n_frames for job in batch] for batch in got] == batches


def test_a_shared_output_lays_the_payloads_after_the_array(kept):
    """Array first, then each payload placed after the one before: a worker finds the frames at the
    offset and size the message gives, and the job it gets carries no frames itself."""
    payloads = [bytes([1]) * 1000, bytes([2]) * 3000]
    jobs = [replace(sized(4)[0], payload=payload) for payload in payloads]
    with decode_pool.SharedOutput((100, 3), np.dtype("float32"), jobs) as shared:
        assert shared.array.shape == (100, 3) and shared.array.dtype == np.float32
        placed = [shared.place(job) for job in jobs]
        shared.array[...] = -1.0
        assert [(at, size) for _, at, size in placed] == [(1200, 1000), (2200, 3000)]
        assert all(job.payload == b"" for job, _, _ in placed)
        for (_, at, size), payload in zip(placed, payloads, strict=True):
            assert shared.block.mapping[at : at + size] == payload
        assert shared.block.mapping[:1200] == np.full((100, 3), -1.0, np.float32).tobytes()


def test_a_shared_output_holds_exactly_its_jobs_payloads(kept):
    """Array and payloads filling a block of 8192 bytes exactly: every payload is placed, and a
    byte more is refused, naming the read's payload size."""
    jobs = [replace(sized(4)[0], payload=bytes(size)) for size in (1000, 3096)]
    with decode_pool.SharedOutput((1024, 2), np.dtype("int16"), jobs) as shared:
        assert shared.block.size == 8192
        for job in jobs:
            shared.place(job)
        with pytest.raises(ValueError, match=r"^the payloads handed out exceed the 4096 bytes the read's jobs have$"):
            shared.place(replace(jobs[0], payload=b"x"))


def test_an_empty_shared_output_takes_a_block(kept):
    with decode_pool.SharedOutput((0, 2), np.dtype("int16")) as shared:
        assert shared.result().shape == (0, 2)


def test_a_shared_outputs_result_is_a_private_copy_and_its_block_is_kept(kept):
    with decode_pool.SharedOutput((10, 2), np.dtype("int16")) as shared:
        shared.array[...] = 7
        got = shared.result()
        shared.array[...] = 8
        block = shared.block
    np.testing.assert_array_equal(got, np.full((10, 2), 7, np.int16))
    assert kept._free == [block]
    assert (decode_pool.SHARED_MEMORY_DIR / block.name).exists()


def test_a_shared_output_left_by_an_error_removes_its_block(kept):
    with pytest.raises(KeyError), decode_pool.SharedOutput((10, 2), np.dtype("int16")) as shared:
        block = shared.block
        raise KeyError("a read failed")
    assert kept._free == []
    assert not (decode_pool.SHARED_MEMORY_DIR / block.name).exists()


@pytest.fixture
def worker_side(monkeypatch):
    """A worker's mappings, made in this process, closed after the test."""
    mappings: dict = {}
    monkeypatch.setattr(decode_pool, "_worker_mappings", mappings)
    yield mappings
    for shared in mappings.values():
        shared.close()


def test_a_batch_message_tells_a_worker_where_the_frames_are_and_where_the_samples_go(stored, kept, worker_side):
    """The message names the block, the array's shape and dtype, each job's payload place and the
    gain; running it as a worker does (here, in this process) writes the sequential decode."""
    skip = stored.chunk.fields["skip"]
    a, b = 8 * FRAME - skip, 20 * FRAME - skip
    jobs = [
        job_of(stored.chunk, 7, 13, [decode_pool.Write(a, a + 3000, (0,), 2)]),
        job_of(stored.chunk, 19, 25, [decode_pool.Write(b, b + 3000, (1,), 2)]),
    ]
    with decode_pool.SharedOutput((2, 3000, 2), stored.dtype, jobs) as shared:
        message = decode_pool.batch_message(shared, jobs, stored.gain)
        name, shape, dtype, placed, gain = message
        assert (name, shape, dtype, gain) == (shared.block.name, (2, 3000, 2), stored.dtype.str, stored.gain)
        assert [(at, size) for _, at, size in placed] == [
            (shared.array.nbytes, len(jobs[0].payload)),
            (shared.array.nbytes + len(jobs[0].payload), len(jobs[1].payload)),
        ]
        assert decode_pool._run_in_worker(*message) == []
        got = shared.result()
    np.testing.assert_array_equal(got, np.stack([stored.reference[a : a + 3000], stored.reference[b : b + 3000]]))


def test_a_worker_keeps_the_two_blocks_it_used_last_mapped(kept, worker_side):
    blocks = [kept.take(4096) for _ in range(3)]
    first, second, third = (block.name for block in blocks)
    a = decode_pool._mapped(first)
    assert decode_pool._mapped(first) is a
    b = decode_pool._mapped(second)
    assert decode_pool._mapped(first) is a  # now the most recently used
    decode_pool._mapped(third)
    assert list(worker_side) == [first, third]
    assert b.buf is None and a.buf is not None  # the least recently used was closed
    for block in blocks:
        block.remove()


@pytest.mark.skipif(sys.version_info >= (3, 13), reason="Python 3.13 attaches without registering")
def test_a_worker_attaches_a_block_without_telling_the_resource_tracker(kept, monkeypatch):
    block = kept.take(4096)
    told = []
    monkeypatch.setattr(resource_tracker, "register", lambda name, rtype: told.append(name))
    attached = decode_pool._attach(block.name)
    try:
        assert attached.size >= 4096 and told == []
        resource_tracker.register("/other", "shared_memory")
        assert told == ["/other"]  # put back as it was
    finally:
        attached.close()
        block.remove()


@pytest.mark.parametrize(
    ("nbytes", "size"),
    [
        (1, 4096),
        (4096, 4096),
        (4097, 8192),
        (65_536, 65_536),
        (65_537, 73_728),  # 8 steps an octave: 65536 / 8 = 8192
        (1_000_000, 1_048_576),
    ],
)
def test_a_new_block_is_rounded_up_to_a_step_of_its_octave(kept, nbytes, size):
    block = kept.take(nbytes)
    try:
        assert block.size == size
        assert (decode_pool.SHARED_MEMORY_DIR / block.name).stat().st_size == size
    finally:
        block.remove()


def test_a_read_takes_the_smallest_kept_block_that_fits(kept):
    blocks = [kept.take(size) for size in (32_768, 8192, 16_384)]
    for block in blocks:
        kept.give(block)
    assert kept.take(9000) is blocks[2]
    assert kept.take(8192) is blocks[1]
    assert kept.take(40_000) not in blocks
    assert kept._free == [blocks[0]]


def test_blocks_given_back_beyond_keep_bytes_are_removed_smallest_first(kept, monkeypatch):
    monkeypatch.setattr(decode_pool, "KEEP_BYTES", 8192 + 16_384)
    blocks = [kept.take(size) for size in (16_384, 4096, 8192)]
    kept.give(blocks[0])
    kept.give(blocks[1])
    assert kept._free == [blocks[1], blocks[0]]  # 20480 bytes: within
    kept.give(blocks[2])
    assert kept._free == [blocks[2], blocks[0]]
    assert not (decode_pool.SHARED_MEMORY_DIR / blocks[1].name).exists()
    assert all((decode_pool.SHARED_MEMORY_DIR / block.name).exists() for block in kept._free)


def test_kept_blocks_register_their_removal_at_exit_once(kept):
    registered = dict(multiprocessing.util._finalizer_registry)
    for _ in range(3):
        kept.give(kept.take(4096))
    (at_exit,) = [hook for key, hook in multiprocessing.util._finalizer_registry.items() if key not in registered]
    (block,) = kept._free
    at_exit()  # as multiprocessing's exit runs it
    assert kept._free == []
    assert not (decode_pool.SHARED_MEMORY_DIR / block.name).exists()


def test_a_forked_child_forgets_its_parents_kept_blocks(kept):
    kept.give(kept.take(4096))
    parents = list(kept._free)
    kept.forget_after_fork()
    try:
        assert kept._free == []
        registered = len(multiprocessing.util._finalizer_registry)
        kept.give(kept.take(4096))  # with a new lock, and its own removal at exit
        assert len(kept._free) == 1
        assert len(multiprocessing.util._finalizer_registry) == registered + 1
    finally:
        for block in parents:
            block.remove()


def test_a_block_whose_mapping_fails_is_removed(monkeypatch, tmp_path):
    made = []

    class Recorded(decode_pool.SharedMemory):
        def __init__(self, *args, **options):
            super().__init__(*args, **options)
            made.append(self.name)

    monkeypatch.setattr(decode_pool, "SharedMemory", Recorded)
    monkeypatch.setattr(decode_pool, "SHARED_MEMORY_DIR", tmp_path / "absent")
    with pytest.raises(FileNotFoundError):
        decode_pool._Block.create(4096)
    (name,) = made
    assert not (Path("/dev/shm") / name).exists()


@pytest.mark.parametrize("value", [0, 1, 7, np.int64(3)])
def test_a_number_of_processes_is_taken(value):
    assert decode_pool.parse_decode_processes(value) == value
    assert type(decode_pool.parse_decode_processes(value)) is int


@pytest.mark.parametrize("value", [-1, True, False, 1.0, "2", None])
def test_anything_else_is_refused_naming_the_key(value):
    with pytest.raises(ValueError) as refused:
        decode_pool.parse_decode_processes(value)
    assert str(refused.value) == (
        "zarr config 'zarr_aac.decode_processes' must be a number of processes (0 to decode in the reading "
        f"process), not {value!r}"
    )


def test_the_usable_cpus_are_this_processes_affinity(monkeypatch):
    assert decode_pool.usable_cpus() == len(os.sched_getaffinity(0))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2} if pid == 0 else set())
    assert decode_pool.usable_cpus() == 3
    monkeypatch.delattr(os, "sched_getaffinity")
    monkeypatch.setattr(os, "cpu_count", lambda: 5)
    assert decode_pool.usable_cpus() == 5
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert decode_pool.usable_cpus() == 1


@pytest.mark.parametrize(("cpus", "processes"), [(1, 0), (2, 2), (6, 6)])
def test_unset_the_pool_has_a_process_per_usable_cpu_from_two_on(monkeypatch, cpus, processes):
    """The key never set (as users leave it), or set to None."""
    monkeypatch.setattr(decode_pool, "usable_cpus", lambda: cpus)
    assert zarr.config.get("zarr_aac", None) is None
    assert decode_pool.decode_processes() == processes
    with zarr.config.set({decode_pool.CONFIG_KEY: None}):
        assert decode_pool.decode_processes() == processes


@pytest.mark.parametrize("configured", [0, 1, 3])
def test_the_configured_number_of_processes_is_used(monkeypatch, configured):
    monkeypatch.setattr(decode_pool, "usable_cpus", lambda: 4)
    with zarr.config.set({decode_pool.CONFIG_KEY: configured}):
        assert decode_pool.decode_processes() == configured


def test_a_bad_configured_number_is_refused_even_where_the_pool_is_off(monkeypatch):
    monkeypatch.setattr(multiprocessing, "current_process", lambda: SimpleNamespace(daemon=True))
    with zarr.config.set({decode_pool.CONFIG_KEY: -2}), pytest.raises(ValueError, match="decode_processes"):
        decode_pool.decode_processes()


def test_no_pool_in_a_daemonic_process_or_without_shared_memory(monkeypatch, tmp_path):
    with zarr.config.set({decode_pool.CONFIG_KEY: 2}):
        monkeypatch.setattr(multiprocessing, "current_process", lambda: SimpleNamespace(daemon=True))
        assert decode_pool.decode_processes() == 0
        monkeypatch.setattr(multiprocessing, "current_process", lambda: SimpleNamespace(daemon=False))
        assert decode_pool.decode_processes() == 2
        monkeypatch.setattr(decode_pool, "SHARED_MEMORY_DIR", tmp_path / "absent")
        assert decode_pool.decode_processes() == 0
        monkeypatch.setattr(decode_pool, "SHARED_MEMORY_DIR", tmp_path)
        assert decode_pool.decode_processes() == 2


def test_whether_a_folder_is_there_is_looked_up_once(tmp_path):
    folder = tmp_path / "later"
    assert decode_pool._is_folder(folder) is False
    folder.mkdir()
    assert decode_pool._is_folder(folder) is False
    assert decode_pool._is_folder(tmp_path) is True


@pytest.mark.parametrize("started", [False, True])
def test_a_dead_workers_error_names_the_read_and_its_chunks_once_each(started):
    ours, theirs = multiprocessing.Pipe()
    worker = decode_pool._Worker(SimpleNamespace(pid=None), ours)
    worker.started = started
    jobs = [
        replace(job, key=key) for job, key in zip(sized(1, 1, 1, 1), ["c/1/0", "c/0/0", "c/1/0", None], strict=True)
    ]
    error = decode_pool._worker_died(worker, jobs, "3 clips")
    theirs.close()
    assert isinstance(error, DecodeWorkerError)
    assert ours.closed
    if started:
        assert str(error) == (
            "a decode worker process died while decoding 3 clips (chunk(s) None, c/0/0, c/1/0); a new one is "
            "started for the next read. If it recurs (out of memory?), set zarr config "
            "'zarr_aac.decode_processes' to 0 to decode in the reading process"
        )
    else:
        assert str(error) == (
            "a decode worker process ended before it started, while decoding 3 clips (chunk(s) None, c/0/0, "
            "c/1/0); see its traceback above. Worker processes import the main module: a script that reads "
            'zarr_aac arrays at its top level must put that code under `if __name__ == "__main__":`. Or set '
            "zarr config 'zarr_aac.decode_processes' to 0 to decode in the reading process"
        )


@pytest.fixture
def worker():
    """A decode worker started as the pool starts its own, ended after the test."""
    started = decode_pool._Worker.start(decode_pool._pool._context())
    yield started
    started.close()
    started.process.join(30)


def test_a_worker_decodes_each_batch_sent_and_answers_with_its_failures(stored, three_jobs, kept, worker):
    """The worker says it started, then answers each batch with its failed jobs' numbers and
    errors, having written the others' samples into the block; waiting for an answer through an
    event loop gives the same."""
    jobs, expected = three_jobs
    with decode_pool.SharedOutput(expected.shape, stored.dtype, [*jobs, *jobs]) as shared:
        shared.array[...] = blank(expected.shape, stored.dtype)
        worker.send(decode_pool.batch_message(shared, jobs, stored.gain))
        assert not worker.started
        ((number, error),) = worker.answer()
        assert worker.started
        assert number == 1 and isinstance(error, CorruptChunkError) and error.key == "c/bad"
        np.testing.assert_array_equal(shared.result(), expected)
        shared.array[...] = blank(expected.shape, stored.dtype)
        worker.send(decode_pool.batch_message(shared, jobs[::-1], stored.gain))
        ((number, error),) = asyncio.run(worker.answer_async())
        assert number == 1 and error.key == "c/bad"
        np.testing.assert_array_equal(shared.result(), expected)
    assert worker.process.is_alive()


def test_a_worker_has_an_answer_only_once_it_has_answered(stored, three_jobs, kept, worker):
    jobs, expected = three_jobs
    deadline = time.monotonic() + 60
    while not worker.started and time.monotonic() < deadline:
        assert worker.has_answer() is False  # its first message, that it started, is no answer
    assert worker.started
    with decode_pool.SharedOutput(expected.shape, stored.dtype, jobs) as shared:
        worker.send(decode_pool.batch_message(shared, jobs, stored.gain))
        while not worker.has_answer() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert worker.has_answer() is True
        ((number, _),) = worker.answer()
    assert number == 1


def test_a_worker_ends_when_its_pipe_closes(worker):
    """It is named in the traceback multiprocessing prints if it fails (``Process zarr_aac-decode:``)."""
    assert worker.process.name == "zarr_aac-decode"
    assert worker.process.is_alive()
    worker.close()
    worker.process.join(30)
    assert worker.process.exitcode == 0


@pytest.mark.parametrize("waiting", ["answer", "answer_async"])
def test_a_killed_workers_answer_is_the_error_of_its_pipes_end(stored, three_jobs, kept, worker, waiting):
    """A worker that died takes no batch and gives no answer: the answer is the pipe's EOFError
    or OSError, which the read turns into a DecodeWorkerError (it does not hang)."""
    jobs, expected = three_jobs
    os.kill(worker.process.pid, signal.SIGKILL)
    worker.process.join(30)
    with decode_pool.SharedOutput(expected.shape, stored.dtype, jobs) as shared:
        worker.send(decode_pool.batch_message(shared, jobs, stored.gain))
        answer = worker.answer() if waiting == "answer" else asyncio.run(worker.answer_async())
    assert isinstance(answer, EOFError | OSError)


def test_a_worker_awaited_leaves_the_event_loop_to_other_tasks_until_it_answers():
    """While a coroutine awaits a worker's answer the event loop runs other tasks: here the task
    that answers for the worker. A wait that held the loop would take the answer a thread sends
    after 60 s instead (the test then fails rather than hangs)."""
    ours, theirs = multiprocessing.Pipe()
    worker = decode_pool._Worker(SimpleNamespace(pid=None), ours)
    theirs.send(decode_pool._STARTED)
    answered = threading.Event()

    def answer_if_the_loop_is_held():
        if not answered.wait(60):
            theirs.send("answered by a thread, the event loop being held")

    fallback = threading.Thread(target=answer_if_the_loop_is_held)
    fallback.start()

    async def wait_and_answer():
        waiting = asyncio.ensure_future(worker.answer_async())
        await asyncio.sleep(0)  # the wait starts
        assert not waiting.done()
        answered.set()
        theirs.send("answered by a task on the event loop")
        return await waiting

    try:
        answer = asyncio.run(wait_and_answer())
    finally:
        answered.set()
        fallback.join()
        ours.close()
        theirs.close()
    assert answer == "answered by a task on the event loop"
    assert worker.started
