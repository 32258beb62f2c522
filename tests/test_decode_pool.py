"""The decode process pool (zarr_aac.codec.decode_pool) behind read_clips and large reads: its
results against a full sequential decode of the stored frames, its fallbacks, and what happens
when a worker dies or a chunk is corrupt. The pool's thresholds are lowered so small test arrays
go through it, and every test that means to use it checks that it did."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.arrays import tone_array
from support.chunks import Chunk, chunk_key, get_bytes, put_bytes
from support.pool import KillingJob, empty_job, record_pool, run_pool_reader
from support.selections import reference_decode
from support.signals import tone_with_noise

import zarr_aac
from zarr_aac.codec import aac, aac_codec, clips, decode_pool
from zarr_aac.codec.chunk_format import PcmChunkBuilder
from zarr_aac.errors import CorruptChunkError, DecodeWorkerError

RATE = 48_000
CHUNK = 120 * aac.FRAME_LENGTH
N = CHUNK * 3 - 5000
PROCESSES = 2


def make_array(shape, chunks, dtype="int16", gain=None):
    return tone_array(shape, chunks, RATE, dtype=dtype, gain=gain)


@pytest.fixture(scope="module")
def arrays():
    """(array, full sequential decode) for each layout the pool must write."""
    made = {
        "stereo int16": make_array((N, 2), (CHUNK, 2)),
        "stereo float32, gain 0.5": make_array((N, 2), (CHUNK, 2), "float32", gain=0.5),
        "mono 1-d float32": make_array((N,), (CHUNK,), "float32"),
        "5 channels in column chunks of 2": make_array((N, 5), (CHUNK, 2)),
        "3 channels int16, gain 1": make_array((N, 3), (CHUNK, 3), gain=1.0),
    }
    return {name: (z, reference_decode(z)) for name, z in made.items()}


@pytest.fixture
def pool_jobs(monkeypatch):
    """The pool on (PROCESSES workers) for any read of a frame or more; the jobs each read hands
    to it, one list per read."""
    monkeypatch.setattr(decode_pool, "POOL_MIN_FRAMES", 1)
    record = record_pool(monkeypatch)
    with zarr.config.set({decode_pool.CONFIG_KEY: PROCESSES}):
        yield record.reads


CLIP_LAYOUTS = ["stereo int16", "stereo float32, gain 0.5", "mono 1-d float32", "5 channels in column chunks of 2"]
"""The layouts clip reads are checked in: every way a clip's samples land in the output."""


def expected_clips(reference, starts, length):
    return np.stack([reference[s : s + length] for s in starts])


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.sampled_from(CLIP_LAYOUTS),
    length=st.integers(1, CHUNK + 3000),
    range_frames=st.integers(1, 60),
    data=st.data(),
)
def test_clips_decoded_in_the_pool_equal_the_sequential_decode(
    arrays, pool_jobs, monkeypatch, name, length, range_frames, data
):
    """Any clip set, the runs cut into ranges of any length (each with its pre-roll frame); a
    read of one decode job keeps it in the reading process."""
    monkeypatch.setattr(clips, "MAX_RANGE_FRAMES", range_frames)
    z, reference = arrays[name]
    starts = data.draw(st.lists(st.integers(0, N - length), min_size=2, max_size=12))
    pool_jobs.clear()
    np.testing.assert_array_equal(zarr_aac.read_clips(z, starts, length), expected_clips(reference, starts, length))
    counted = _counted_jobs(z, starts, length)
    assert len(pool_jobs) == (1 if counted >= 2 else 0)
    if pool_jobs:
        assert len(pool_jobs[0]) == counted


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.sampled_from(CLIP_LAYOUTS),
    length=st.integers(1, CHUNK + 3000),
    buffer_frames=st.integers(1, 12),
    data=st.data(),
)
def test_jobs_decoded_block_by_block_equal_the_sequential_decode(
    arrays, monkeypatch, name, length, buffer_frames, data
):
    """A job longer than the decode buffer (aac.SCRATCH_MAX_BYTES) decodes through it a block at a
    time, one decoder throughout: any block length, clips overlapping block ends included, gives
    the sequential decode's samples."""
    monkeypatch.setattr(aac, "SCRATCH_MAX_BYTES", buffer_frames * 4 * aac.FRAME_LENGTH)
    z, reference = arrays[name]
    starts = data.draw(st.lists(st.integers(0, N - length), min_size=1, max_size=8))
    with zarr.config.set({decode_pool.CONFIG_KEY: 0}):
        np.testing.assert_array_equal(zarr_aac.read_clips(z, starts, length), expected_clips(reference, starts, length))


def _counted_jobs(z, starts, length):
    """The decode jobs read_clips makes of these clips."""
    chunk_reads = clips._plan(z, np.asarray(starts, np.int64), length)
    zarr.core.sync.sync(clips._fetch_all(chunk_reads, z.chunks, zarr.core.buffer.default_buffer_prototype(), None))
    return sum(len(clips._decode_jobs(chunk, z.ndim)) for chunk in chunk_reads)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.sampled_from(["stereo int16", "stereo float32, gain 0.5", "3 channels int16, gain 1"]),
    span=st.tuples(st.integers(0, N - 1), st.integers(1, N)),
    split_frames=st.integers(1, 80),
    handoff_frames=st.integers(0, 40),
    channel=st.sampled_from([slice(None), 0, 1]),
)
def test_spans_split_over_the_pool_equal_the_sequential_decode(
    arrays, pool_jobs, monkeypatch, name, span, split_frames, handoff_frames, channel
):
    """Any span, split into ranges at any points (SPLIT_MIN_FRAMES and HANDOFF_FRAMES move them)."""
    monkeypatch.setattr(aac_codec, "SPLIT_MIN_FRAMES", split_frames)
    monkeypatch.setattr(aac_codec, "HANDOFF_FRAMES", handoff_frames)
    z, reference = arrays[name]
    start, length = span
    stop = min(start + length, N)
    pool_jobs.clear()
    np.testing.assert_array_equal(z[start:stop, channel], reference[start:stop, channel])
    assert pool_jobs, "the read did not use the pool"


def test_a_whole_array_read_splits_each_chunk_over_the_workers(arrays, pool_jobs, monkeypatch):
    monkeypatch.setattr(aac_codec, "SPLIT_MIN_FRAMES", 20)
    z, reference = arrays["stereo int16"]
    np.testing.assert_array_equal(z[:], reference)
    assert len(pool_jobs) == 3  # one hand-over per chunk, all three in flight together
    for jobs in pool_jobs:
        assert len(jobs) == PROCESSES
        first, second = jobs
        # The second range starts one frame before the first one's end: its pre-roll frame.
        assert second.first_frame == first.first_frame + first.n_frames - 1


def test_clips_of_a_live_recordings_pcm_chunk(pool_jobs):
    """The unfinished tail of a live recording is a PCM chunk: its clips are its samples, exactly,
    beside clips decoded in the pool."""
    z = make_array((N, 2), (CHUNK, 2))
    reference = reference_decode(z)
    tail = (tone_with_noise(CHUNK, 2, RATE, seed=4) * 20000).astype(np.int16)
    builder = PcmChunkBuilder(CHUNK, 2, np.dtype("int16"), RATE)
    builder.extend(tail[: CHUNK - 5000])
    put_bytes(z, chunk_key(z, (2, 0)), builder.chunk())
    reference[2 * CHUNK :] = tail[: N - 2 * CHUNK]
    starts = [10, 2 * CHUNK - 3000, 2 * CHUNK + 100, CHUNK + 7]
    np.testing.assert_array_equal(zarr_aac.read_clips(z, starts, 6000), expected_clips(reference, starts, 6000))
    assert pool_jobs and {job.key for job in pool_jobs[0]} <= {"c/0/0", "c/1/0"}


def test_decode_processes_0_decodes_in_the_reading_process(arrays, pool_jobs):
    z, reference = arrays["stereo int16"]
    starts = [0, 5000, CHUNK - 10]
    with zarr.config.set({decode_pool.CONFIG_KEY: 0}):
        np.testing.assert_array_equal(zarr_aac.read_clips(z, starts, 9000), expected_clips(reference, starts, 9000))
        np.testing.assert_array_equal(z[:], reference)
    assert pool_jobs == []


@pytest.mark.parametrize("setting", [-1, 1.5, "2", True])
def test_a_bad_setting_is_refused_naming_the_key(arrays, pool_jobs, setting):
    z, _ = arrays["stereo int16"]
    with (
        zarr.config.set({decode_pool.CONFIG_KEY: setting}),
        pytest.raises(ValueError, match=r"zarr config 'zarr_aac\.decode_processes' must be a number of processes"),
    ):
        zarr_aac.read_clips(z, [0, 200_000], 48_000)


def _read_in_child(z, starts, queue):
    clips_read = zarr_aac.read_clips(z, starts, 9000)
    workers = decode_pool._pool.worker_pids()
    queue.put((clips_read, decode_pool.decode_processes(), workers))


def _run_child(z, starts, *, daemon):
    """Read in a child forked from this process, as a DataLoader worker is: what it read, its pool
    size and workers, after checking that it ended by itself and its workers with it."""
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_read_in_child, args=(z, starts, queue), daemon=daemon)
    child.start()
    try:
        got, processes, workers = queue.get(timeout=120)
        child.join(timeout=60)
        assert child.exitcode == 0, f"the forked child did not end by itself: exit code {child.exitcode}"
        assert _still_running(workers) == set()
        return got, processes, workers
    finally:
        if child.is_alive():
            child.kill()


def _still_running(pids, wait=10.0):
    """The processes of ``pids`` still running after up to ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while True:
        running = {pid for pid in pids if Path(f"/proc/{pid}").exists()}
        if not running or time.monotonic() > deadline:
            return running
        time.sleep(0.1)


def test_a_daemonic_process_decodes_in_itself(arrays, pool_jobs):
    """multiprocessing and dask worker processes are daemonic and cannot start children."""
    z, reference = arrays["stereo int16"]
    starts = [0, CHUNK - 10, 2 * CHUNK]
    got, processes, workers = _run_child(z, starts, daemon=True)
    np.testing.assert_array_equal(got, expected_clips(reference, starts, 9000))
    assert processes == 0
    assert workers == set()


def test_a_forked_child_starts_its_own_pool(arrays, pool_jobs):
    z, reference = arrays["stereo int16"]
    starts = [0, CHUNK - 10, 2 * CHUNK]
    zarr_aac.read_clips(z, starts, 9000)
    parent_workers = decode_pool._pool.worker_pids()
    got, processes, child_workers = _run_child(z, starts, daemon=False)
    np.testing.assert_array_equal(got, expected_clips(reference, starts, 9000))
    assert processes == PROCESSES
    assert child_workers and not child_workers & parent_workers


@pytest.fixture
def shared_blocks(monkeypatch):
    """The names of the shared-memory blocks reads create."""
    names: list[str] = []
    enter = decode_pool.SharedOutput.__enter__

    def recording(self):
        entered = enter(self)
        names.append(self.block.name)
        return entered

    monkeypatch.setattr(decode_pool.SharedOutput, "__enter__", recording)
    return names


def assert_gone(names):
    assert names
    left = [name for name in names if (decode_pool.SHARED_MEMORY_DIR / name).exists()]
    assert left == []


def test_a_dead_worker_fails_the_read_clearly_and_the_next_read_works(arrays, pool_jobs):
    z, reference = arrays["stereo int16"]
    starts = [0, CHUNK - 10, 2 * CHUNK]
    zarr_aac.read_clips(z, starts, 9000)
    killing = empty_job(KillingJob, "c/7/0")
    with (
        pytest.raises(DecodeWorkerError, match=r"died while decoding the test read \(chunk\(s\) c/7/0\)"),
        decode_pool.SharedOutput((10, 2), np.dtype("int16")) as shared,
    ):
        failed_block = shared.block.name
        decode_pool.decode(shared, [killing], 1.0, PROCESSES, "the test read", keep=0)
    # The block of a read that failed is removed, not kept: a worker may still write into it.
    assert_gone([failed_block])
    np.testing.assert_array_equal(zarr_aac.read_clips(z, starts, 9000), expected_clips(reference, starts, 9000))
    np.testing.assert_array_equal(z[:], reference)


@pytest.fixture
def forged():
    """An array whose middle chunk has a frame of garbage under recomputed checksums: it passes
    the checks the reading process makes and fails in FFmpeg, in a worker."""
    z = make_array((N, 2), (CHUNK, 2))
    reference = reference_decode(z)
    key = chunk_key(z, (1, 0))
    chunk = Chunk.parse(get_bytes(z, key))
    frames = chunk.frames
    bad = 60
    frames[bad] = bytes([0xFF]) * len(frames[bad])
    chunk.payload = b"".join(frames)
    put_bytes(z, key, chunk.pack())
    return z, reference, bad * aac.FRAME_LENGTH - chunk.fields["skip"]


def test_a_chunk_failing_in_a_worker_names_its_clips(forged, pool_jobs, shared_blocks):
    z, _, bad_sample = forged
    starts = [100, CHUNK + bad_sample - 500, CHUNK + 10, 2 * CHUNK + 5]
    with pytest.raises(CorruptChunkError, match=r"c/1/0.*\(clips 1, 2 take samples from this chunk\)"):
        zarr_aac.read_clips(z, starts, 2000)
    assert pool_jobs
    assert_gone(shared_blocks)


def test_a_chunk_failing_in_a_worker_is_filled_inside_tolerant_reads(forged, pool_jobs):
    z, reference, bad_sample = forged
    starts = [100, CHUNK + bad_sample - 500, 2 * CHUNK + 5]
    with zarr_aac.tolerant_reads() as report:
        got = zarr_aac.read_clips(z, starts, 2000)
    assert [error.key for error in report.errors] == ["c/1/0"]
    np.testing.assert_array_equal(got[1], np.zeros((2000, 2), np.int16))
    np.testing.assert_array_equal(got[[0, 2]], expected_clips(reference, [starts[0], starts[2]], 2000))


def test_a_span_failing_in_a_worker_raises_for_its_chunk(forged, pool_jobs, shared_blocks):
    z, _, _ = forged
    with pytest.raises(CorruptChunkError, match="c/1/0"):
        z[CHUNK : 2 * CHUNK]
    assert pool_jobs
    assert_gone(shared_blocks)


def test_blocks_are_kept_for_later_reads_and_results_are_private_copies(arrays, pool_jobs, shared_blocks):
    z, reference = arrays["stereo int16"]
    # Blocks kept by earlier tests' reads would serve these reads in whatever order they fit.
    decode_pool._blocks.remove_all()
    first = zarr_aac.read_clips(z, [0, CHUNK], 9000)
    # The same frames in the other order: a block of the same size (it holds the frames too).
    second = zarr_aac.read_clips(z, [CHUNK, 0], 9000)
    # The second read reuses the first's block (memory already faulted in) ...
    assert len(shared_blocks) == 2 and shared_blocks[0] == shared_blocks[1]
    assert (decode_pool.SHARED_MEMORY_DIR / shared_blocks[0]).exists()
    # ... and overwrote it, while the first read's result, a copy, kept its samples.
    np.testing.assert_array_equal(first, expected_clips(reference, [0, CHUNK], 9000))
    np.testing.assert_array_equal(second, expected_clips(reference, [CHUNK, 0], 9000))


def test_kept_blocks_stay_within_keep_bytes(arrays, pool_jobs, shared_blocks, monkeypatch):
    z, reference = arrays["stereo int16"]
    monkeypatch.setattr(decode_pool, "KEEP_BYTES", 9000 * 2 * 2 * 2 - 1)
    clips_read = zarr_aac.read_clips(z, [0, CHUNK], 9000)
    assert_gone(shared_blocks)
    np.testing.assert_array_equal(clips_read, expected_clips(reference, [0, CHUNK], 9000))


def test_no_block_outlives_the_reading_process(tmp_path):
    """Blocks kept between reads are removed when the process ends, normally or killed (the
    resource tracker removes them then), and a killed reader's workers end too."""
    then = """
    print(" ".join(block.name for block in decode_pool._blocks._free))
    print(" ".join(str(pid) for pid in decode_pool._pool.worker_pids()), flush=True)
    if sys.argv[1] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    """
    for ending in ("exit", "kill"):
        done = run_pool_reader(tmp_path, then, ending)
        blocks, workers = (line.split() for line in done.stdout.splitlines())
        assert blocks and workers, done.stderr
        assert _still_running({int(pid) for pid in workers}) == set(), f"workers left after {ending}"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any((decode_pool.SHARED_MEMORY_DIR / name).exists() for name in blocks):
            time.sleep(0.1)  # a killed reader's resource tracker notices it gone
        assert_gone(blocks)


def test_a_process_multiprocessing_started_ends_after_reading_with_the_pool(tmp_path):
    """multiprocessing joins a child's own children when its work returns, before exit hooks:
    the pool is shut down first, or the child would wait for its idle workers forever (an
    import worker reading back a chunk hung so); its kept blocks are removed too."""
    script = tmp_path / "nested.py"
    script.write_text(
        textwrap.dedent(
            """
            import multiprocessing, sys
            import numpy as np, zarr, zarr_aac
            from zarr_aac.codec import decode_pool

            def read(path, names):
                z = zarr.open_array(path, mode="r")
                with zarr.config.set({decode_pool.CONFIG_KEY: 2}):
                    zarr_aac.read_clips(z, [0, 100_000, 150_000], 40_000)
                names.extend([block.name for block in decode_pool._blocks._free])

            if __name__ == "__main__":
                z = zarr.create_array(
                    sys.argv[1], shape=(200_000, 2), chunks=(100_000, 2), dtype="int16",
                    serializer=zarr_aac.AACCodec(sample_rate=48000), compressors=None,
                )
                z[:] = (np.random.default_rng(0).standard_normal((200_000, 2)) * 3000).astype("int16")
                context = multiprocessing.get_context("spawn")
                with context.Manager() as manager:
                    names = manager.list()
                    child = context.Process(target=read, args=(sys.argv[1], names))
                    child.start()
                    child.join(60)
                    print(child.exitcode, " ".join(names), flush=True)
                    if child.exitcode is None:
                        child.kill()
            """
        )
    )
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "a.zarr")],
        check=False,
        capture_output=True,
        text=True,
        timeout=180,
    )
    exitcode, *blocks = done.stdout.split()
    assert exitcode == "0", done.stderr
    assert blocks
    assert_gone(blocks)


def test_a_script_reading_at_its_top_level_is_told_to_guard_it(tmp_path):
    """Worker processes import the main module, as multiprocessing's always do: a script that reads
    at its top level reads again in each worker, which cannot start processes, and the workers end
    before they start. The read says so and how to fix it, not "out of memory?"."""
    path = tmp_path / "a.zarr"
    z = zarr.create_array(
        str(path),
        shape=(400_000, 2),
        chunks=(400_000, 2),
        dtype="int16",
        serializer=zarr_aac.AACCodec(sample_rate=RATE),
        compressors=None,
    )
    # Long enough to split into two ranges: one for a worker, one decoded here.
    z[:] = (tone_with_noise(400_000, 2, RATE, seed=5) * 32767).astype(np.int16)
    script = tmp_path / "unguarded.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import zarr
            from zarr_aac.codec import decode_pool

            with zarr.config.set({{decode_pool.CONFIG_KEY: 2}}):
                zarr.open_array({str(path)!r}, mode="r")[:]
            """
        )
    )
    done = subprocess.run([sys.executable, str(script)], check=False, capture_output=True, text=True, timeout=180)
    assert done.returncode != 0
    (error,) = [line for line in done.stderr.splitlines() if line.startswith("zarr_aac.errors.DecodeWorkerError")]
    assert error.startswith(
        "zarr_aac.errors.DecodeWorkerError: a decode worker process ended before it started, while decoding "
    )
    key = f"file://{path}/c/0/0"
    assert error.endswith(
        f" (chunk(s) {key}); see its traceback above. Worker processes import the main module: a script that "
        'reads zarr_aac arrays at its top level must put that code under `if __name__ == "__main__":`. Or set '
        "zarr config 'zarr_aac.decode_processes' to 0 to decode in the reading process"
    )
