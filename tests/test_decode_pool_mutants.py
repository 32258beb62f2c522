"""The decode pool's bookkeeping (zarr_aac.codec.decode_pool) where a mutation run found it
unguarded: exit hooks registered once, not per read; a worker busy when the pool is resized ends
after its answer; a worker that dies with batches queued behind it is replaced for them. Samples
against a full sequential decode (support.selections)."""

from __future__ import annotations

import asyncio
import multiprocessing.util
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from support.pool import KillingJob, SleepingJob, empty_job, pool_on, run_pool_reader, two_tone_chunks
from support.selections import stored_gain

import zarr_aac
from zarr_aac.codec import aac, decode_pool
from zarr_aac.errors import DecodeWorkerError

RATE = 48_000
CHUNK = 120 * aac.FRAME_LENGTH


@pytest.fixture(scope="module")
def stored():
    return two_tone_chunks(CHUNK, RATE)


@pytest.fixture
def pool(monkeypatch):
    """The pool on with 2 workers for any read of a frame or more."""
    monkeypatch.setattr(decode_pool, "POOL_MIN_FRAMES", 1)
    with pool_on(monkeypatch, 2) as record:
        yield record


def read_two_clips(z, reference):
    got = zarr_aac.read_clips(z, [0, CHUNK], 9000)
    np.testing.assert_array_equal(got, np.stack([reference[:9000], reference[CHUNK : CHUNK + 9000]]))


def wait_gone(pids, seconds=10):
    deadline = time.monotonic() + seconds
    while any(Path(f"/proc/{pid}").exists() for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [pid for pid in pids if Path(f"/proc/{pid}").exists()]


def test_reads_register_the_pools_exit_hook_once(stored, pool):
    """The hook that shuts the pool down at exit is registered by the first read, not by each:
    a long-running reader must not pile up one per read."""
    z, reference = stored
    read_two_clips(z, reference)
    registered = len(multiprocessing.util._finalizer_registry)
    for _ in range(3):
        read_two_clips(z, reference)
    assert pool.reads
    assert len(multiprocessing.util._finalizer_registry) == registered


def test_a_worker_busy_when_the_pool_is_resized_ends_after_its_answer(stored, pool):
    if decode_pool._pool._start_method != "forkserver":
        # As in mutmut's children (forked after import); there the old workers were seen not to
        # end within 10 s, not yet examined (docs/claims.md, "decode_pool.py on pipes").
        pytest.skip("the pool starts its workers by spawn in this process")
    z, reference = stored
    read_two_clips(z, reference)
    two = decode_pool._pool.worker_pids()
    assert len(two) == 2

    def occupy():
        with decode_pool.SharedOutput((10, 2), np.dtype("int16")) as shared:
            decode_pool.decode(shared, [empty_job(SleepingJob, "c/0/0")], 1.0, 2, "a sleeping job", keep=0)

    busy = threading.Thread(target=occupy)
    busy.start()
    time.sleep(0.2)
    with zarr.config.set({decode_pool.CONFIG_KEY: 3}):
        read_two_clips(z, reference)
    busy.join()
    assert len(decode_pool._pool.worker_pids()) == 3
    assert wait_gone(two) == []


def test_batches_queued_behind_a_worker_that_dies_go_to_its_replacement(stored, monkeypatch):
    """With one worker, a read's second batch waits for it; the worker dies on the first: a new
    worker takes the second (the read fails for the first, it does not hang)."""
    z, reference = stored
    monkeypatch.setattr(decode_pool, "POOL_MIN_FRAMES", 1)
    with zarr.config.set({decode_pool.CONFIG_KEY: 1}):
        read_two_clips(z, reference)
        sleeping = empty_job(SleepingJob, "c/1/0")

        async def read():
            with decode_pool.SharedOutput((10, 2), np.dtype("int16")) as shared:
                jobs = [empty_job(KillingJob, "c/0/0"), sleeping]
                await asyncio.wait_for(decode_pool.decode_async(shared, jobs, 1.0, 1, "a read", keep=0), 120)

        began = time.monotonic()
        with pytest.raises(DecodeWorkerError) as died:
            asyncio.run(read())
        assert str(died.value) == (
            "a decode worker process died while decoding a read (chunk(s) c/0/0); a new one is started for the "
            "next read. If it recurs (out of memory?), set zarr config 'zarr_aac.decode_processes' to 0 to decode "
            "in the reading process"
        )
        # It waited for the replacement's sleeping job.
        assert time.monotonic() - began >= 0.9
        assert len(decode_pool._pool.worker_pids()) == 1
        read_two_clips(z, reference)


def test_workers_are_forked_by_a_server_not_by_the_reading_process(tmp_path):
    """The workers come from multiprocessing's forkserver, not from a fork of the reading process
    (which would copy zarr's event-loop thread's locks in whatever state they are) nor from a
    spawn (which imports everything again for each worker). In a fresh process: one forked from
    a process that used the pool (as mutmut's runs are) starts its workers by spawn."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        pytest.skip("this platform has no forkserver")
    done = run_pool_reader(
        tmp_path,
        """
        for pid in decode_pool._pool.worker_pids():
            parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            command = Path(f"/proc/{parent}/cmdline").read_bytes().replace(b"\\0", b" ").decode()
            print(parent == os.getpid(), "multiprocessing.forkserver" in command, flush=True)
        """,
    )
    assert done.stdout.split() == ["False", "True", "False", "True"], done.stderr


@pytest.fixture
def where(monkeypatch):
    """The jobs each hand-over gives a worker, and those run in this process, of the reads made."""
    handed: list[list[decode_pool.DecodeJob]] = []
    here: list[decode_pool.DecodeJob] = []
    batch_message, run_jobs = decode_pool.batch_message, decode_pool.run_jobs

    def recording_message(output, batch, gain):
        handed.append(list(batch))
        return batch_message(output, batch, gain)

    def recording_run(jobs, out, gain):
        here.extend(jobs)
        return run_jobs(jobs, out, gain)

    monkeypatch.setattr(decode_pool, "batch_message", recording_message)
    monkeypatch.setattr(decode_pool, "run_jobs", recording_run)
    return handed, here


def test_a_clip_read_hands_all_batches_but_one_to_the_workers(stored, pool, where):
    z, reference = stored
    read_two_clips(z, reference)
    handed, here = where
    (read,) = pool.reads
    assert len(handed) == 1 and here
    assert sorted(map(id, handed[0] + here)) == sorted(map(id, read))


def test_an_async_read_keeping_every_job_hands_none_over(stored, pool, where):
    z, reference = stored
    read_two_clips(z, reference)
    (jobs,) = pool.reads
    handed, here = where
    handed.clear()
    here.clear()
    with decode_pool.SharedOutput((2, 9000, 2), np.dtype("int16"), jobs) as shared:
        failed = asyncio.run(decode_pool.decode_async(shared, jobs, stored_gain(z), 2, "a read", keep=len(jobs)))
        got = shared.result()
    assert failed == [] and handed == [] and len(here) == len(jobs)
    np.testing.assert_array_equal(got, np.stack([reference[:9000], reference[CHUNK : CHUNK + 9000]]))


def test_an_async_read_waiting_for_a_busy_worker_leaves_the_event_loop_to_other_reads(stored, pool):
    """Two reads on one event loop and one worker: the second waits for the worker without
    holding the loop, which the first needs to take its answer (else neither ends)."""
    z, reference = stored

    async def read(key):
        with decode_pool.SharedOutput((10, 2), np.dtype("int16")) as shared:
            await decode_pool.decode_async(shared, [empty_job(SleepingJob, key)], 1.0, 1, "a read", keep=0)

    async def both():
        await asyncio.gather(read("c/0/0"), read("c/1/0"))

    with zarr.config.set({decode_pool.CONFIG_KEY: 1}):
        read_two_clips(z, reference)
        reading = threading.Thread(target=asyncio.run, args=(both(),), daemon=True)
        began = time.monotonic()
        reading.start()
        reading.join(20)
        assert not reading.is_alive()
        assert time.monotonic() - began >= 1.9  # one sleeping job after the other
        read_two_clips(z, reference)
