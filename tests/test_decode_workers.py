"""The decode pool's worker processes (zarr_aac.codec.decode_pool): the message that hands a job
over (its payload travels in the shared block), workers taken only when idle, a cancelled read's
workers replaced, the pool resized, the workers' scheduling policy, and when a short read is
handed over because other reads are in flight. Samples against a full sequential decode."""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from support.pool import SleepingJob, empty_job, pool_on, two_tone_chunks
from zarr.core.buffer import default_buffer_prototype

import zarr_aac
from zarr_aac.codec import aac, decode_pool

RATE = 48_000
CHUNK = 800 * aac.FRAME_LENGTH
PROCESSES = 2


@pytest.fixture(scope="module")
def stored():
    return two_tone_chunks(CHUNK, RATE)


@pytest.fixture
def pool(monkeypatch):
    """The pool on with PROCESSES workers; the jobs of each read that used it."""
    with pool_on(monkeypatch, PROCESSES) as record:
        yield record


@pytest.fixture
def messages(monkeypatch):
    """Every message handing a batch to a worker, pickled as the pipe carries it."""
    sent: list[bytes] = []
    batch_message = decode_pool.batch_message

    def recording(output, batch, gain):
        message = batch_message(output, batch, gain)
        sent.append(pickle.dumps(message))
        return message

    monkeypatch.setattr(decode_pool, "batch_message", recording)
    return sent


def test_a_job_is_handed_over_in_a_short_message_its_payload_in_the_block(stored, pool, messages):
    """A 10 s read hands a worker about 90 KB of frames; the message carries their offsets, not
    the frames (a tenth of the size at most), so sending it does not wait for the worker to drain
    its pipe."""
    z, reference = stored
    np.testing.assert_array_equal(z[1000 : 1000 + 10 * RATE], reference[1000 : 1000 + 10 * RATE])
    ((to_worker, _),) = pool.reads
    assert len(to_worker.payload) > 20_000
    (message,) = messages
    assert len(message) < len(to_worker.payload) / 10


def occupy_workers(count):
    """``count`` SleepingJobs handed to the workers from a thread; the thread."""

    def occupy():
        jobs = [empty_job(SleepingJob, f"c/{n}/0") for n in range(count)]
        with decode_pool.SharedOutput((10, 2), np.dtype("int16")) as shared:
            decode_pool.decode(shared, jobs, 1.0, PROCESSES, "sleeping jobs", keep=0)

    thread = threading.Thread(target=occupy)
    thread.start()
    return thread


def test_a_batch_finding_every_worker_busy_waits_for_the_next_one_free(stored, pool):
    """A read does not decode a worker's batch here when none is idle: it queues it, and the
    first worker to answer takes it (the reading process decodes only its own share)."""
    z, reference = stored
    zarr_aac.read_clips(z, [0, CHUNK], RATE)  # the workers started
    began = time.monotonic()
    occupying = occupy_workers(PROCESSES)
    time.sleep(0.2)
    np.testing.assert_array_equal(z[1000 : 1000 + 10 * RATE], reference[1000 : 1000 + 10 * RATE])
    waited = time.monotonic() - began
    occupying.join()
    ((_, here),) = pool.reads[-1:]
    assert pool.here == [here]
    assert waited >= 0.9  # the sleeping jobs take 1 s


def test_a_cancelled_read_leaves_its_worker_to_finish_and_replaces_it(stored, pool):
    z, reference = stored
    zarr_aac.read_clips(z, [0, CHUNK], RATE)
    before = decode_pool._pool.worker_pids()
    sleeping = empty_job(SleepingJob, "c/0/0")

    async def cancelled_read():
        with decode_pool.SharedOutput((10, 2), np.dtype("int16")) as shared:
            await asyncio.wait_for(decode_pool.decode_async(shared, [sleeping], 1.0, PROCESSES, "a read", keep=0), 0.1)

    with pytest.raises(TimeoutError):
        asyncio.run(cancelled_read())
    (left,) = before - decode_pool._pool.worker_pids()
    # The worker finishes its job, finds its pipe closed and ends.
    deadline = time.monotonic() + 10
    while Path(f"/proc/{left}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{left}").exists()
    np.testing.assert_array_equal(zarr_aac.read_clips(z, [0, CHUNK], RATE)[1], reference[CHUNK : CHUNK + RATE])
    assert len(decode_pool._pool.worker_pids()) == PROCESSES


def test_a_new_size_replaces_the_workers(stored, pool):
    z, reference = stored
    zarr_aac.read_clips(z, [0, CHUNK], RATE)
    two = decode_pool._pool.worker_pids()
    with zarr.config.set({decode_pool.CONFIG_KEY: 3}):
        got = zarr_aac.read_clips(z, [0, 5000, CHUNK], RATE)
    three = decode_pool._pool.worker_pids()
    assert len(two) == 2 and len(three) == 3 and not two & three
    np.testing.assert_array_equal(got[2], reference[CHUNK : CHUNK + RATE])
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() for pid in two) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in two if Path(f"/proc/{pid}").exists()]


def test_a_worker_that_died_idle_is_replaced_before_a_read_takes_it(stored, pool):
    z, reference = stored
    zarr_aac.read_clips(z, [0, CHUNK], RATE)
    workers = list(decode_pool._pool._workers)
    for worker in workers:
        os.kill(worker.process.pid, signal.SIGKILL)
        worker.process.join(10)
    np.testing.assert_array_equal(zarr_aac.read_clips(z, [0, CHUNK], RATE)[1], reference[CHUNK : CHUNK + RATE])
    after = decode_pool._pool.worker_pids()
    assert len(after) == PROCESSES and not after & {worker.process.pid for worker in workers}


def test_ctrl_c_is_left_to_the_reading_process(stored, pool):
    """SIGINT, which Ctrl-C sends to the whole foreground process group, does not kill a worker."""
    z, reference = stored
    zarr_aac.read_clips(z, [0, CHUNK], RATE)
    before = decode_pool._pool.worker_pids()
    for pid in before:
        os.kill(pid, signal.SIGINT)
    time.sleep(0.2)
    np.testing.assert_array_equal(zarr_aac.read_clips(z, [0, CHUNK], RATE)[1], reference[CHUNK : CHUNK + RATE])
    assert decode_pool._pool.worker_pids() == before
    assert all(Path(f"/proc/{pid}").exists() for pid in before)


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="SCHED_BATCH is Linux's")
def test_workers_run_as_batch_work(stored, pool):
    """A worker woken by a hand-over does not preempt the reading process, which decodes its own
    share meanwhile (docs/design-notes.md)."""
    z, _ = stored
    zarr_aac.read_clips(z, [0, CHUNK], RATE)
    pids = decode_pool._pool.worker_pids()
    assert pids
    assert {os.sched_getscheduler(pid) for pid in pids} == {os.SCHED_BATCH}


def test_a_short_read_beside_another_read_goes_whole_to_a_worker(stored, pool):
    """While another chunk read is in flight (here: entered by the test), a 1 s span is handed
    whole to a worker, so that the event loop serves the other read instead of decoding."""
    z, reference = stored
    with decode_pool.reads_in_flight.chunk_read():
        np.testing.assert_array_equal(z[1000 : 1000 + RATE], reference[1000 : 1000 + RATE])
    ((job,),) = pool.reads
    assert pool.here == []
    assert (job.writes[0].lo, job.writes[0].hi) == (1000, 1000 + RATE)
    assert decode_pool.reads_in_flight.count == 0


def test_a_long_span_beside_another_calls_read_keeps_its_last_range_here(stored, pool):
    """Only the chunks of one read of several go to the workers whole; a long span beside another
    call's read decodes its last range here, as it does alone."""
    z, reference = stored
    with decode_pool.reads_in_flight.chunk_read():
        np.testing.assert_array_equal(z[1000 : 1000 + 6 * RATE], reference[1000 : 1000 + 6 * RATE])
    ((*_, last),) = pool.reads
    assert pool.here == [last]


def test_short_reads_after_an_overlap_go_to_the_workers_for_a_while(stored, pool):
    """Reads from several threads overlap now and then while each decodes on the event loop: the
    OVERLAP_MEMORY reads after an overlap hand over too, then reads alone decode here again."""
    z, reference = stored
    with decode_pool.reads_in_flight.chunk_read():
        z[1000 : 1000 + RATE]
    pool.clear()
    starts = range(2000, 2000 + (decode_pool.OVERLAP_MEMORY + 3) * 1000, 1000)
    for start in starts:
        np.testing.assert_array_equal(z[start : start + RATE], reference[start : start + RATE])
    assert len(pool.reads) == decode_pool.OVERLAP_MEMORY
    assert [job.writes[0].lo for (job,) in pool.reads] == list(starts)[: decode_pool.OVERLAP_MEMORY]


@pytest.fixture(scope="module")
def stored_on_disk(stored, tmp_path_factory):
    """``stored``'s chunks in a LocalStore, whose reads wait for a thread: a read's chunk reads
    are then in flight together."""
    z, reference = stored
    local = zarr.storage.LocalStore(tmp_path_factory.mktemp("on_disk"))

    async def copy() -> None:
        async for key in z.store.list():
            await local.set(key, await z.store.get(key, prototype=default_buffer_prototype()))

    asyncio.run(copy())
    return zarr.open_array(local, mode="r"), reference


def test_a_read_across_a_chunk_end_is_not_counted_as_concurrent(stored_on_disk, pool):
    """The chunks of one read are in flight together (each waits for the store's thread), but
    they are one call's: the short reads after it, from the same thread, still decode in the
    reading process (docs/design-notes.md)."""
    z, reference = stored_on_disk
    span = slice(CHUNK - 3 * RATE, CHUNK + 3 * RATE)
    np.testing.assert_array_equal(z[span], reference[span])
    assert len(pool.reads) == 2
    pool.clear()
    for start in range(2000, 2000 + (decode_pool.OVERLAP_MEMORY + 1) * 1000, 1000):
        np.testing.assert_array_equal(z[start : start + RATE], reference[start : start + RATE])
    assert pool.reads == []


@pytest.mark.parametrize(
    ("first_call", "other_call"),
    [
        pytest.param([(900, 1000, 1000), (0, 100, 1000)], None, id="across-a-chunk-end"),
        pytest.param([(900, 1000, 1000), (0, 1000, 1000), (0, 100, 1000)], None, id="across-a-whole-chunk"),
        pytest.param([(10, 60, 1000), (10, 60, 1000)], None, id="chunks-of-other-channels"),
        pytest.param([None, None], None, id="scattered-rows"),
        pytest.param([(900, 1000, 1000)], (0, 100, 1000), id="later-turn"),
        pytest.param([(10, 60, 1000)], (300, 350, 1000), id="later-turn-rows-of-its-own"),
    ],
)
def test_a_calls_chunk_reads_begin_in_one_event_loop_turn(first_call, other_call):
    """zarr starts a call's chunk reads as tasks made together, so they begin in one turn of the
    event loop, at rows that continue each other; a read begun in a later turn (another call)
    finds the first call's reads in flight."""
    seen: list[bool] = []
    may_end = asyncio.Event()

    async def chunk_read(rows: tuple[int, int, int] | None) -> None:
        with decode_pool.reads_in_flight.chunk_read(rows):
            seen.append(decode_pool.reads_in_flight.others_in_flight())
            await may_end.wait()

    async def calls() -> None:
        reads = [asyncio.ensure_future(chunk_read(rows)) for rows in first_call]
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        if other_call:
            reads.append(asyncio.ensure_future(chunk_read(other_call)))
            await asyncio.sleep(0)
        may_end.set()
        await asyncio.gather(*reads)

    begun = decode_pool.reads_in_flight.begun
    asyncio.run(calls())
    assert seen == [False] * len(first_call) + ([True] if other_call else [])
    overlapped = begun + len(first_call) + 1 if other_call else -decode_pool.OVERLAP_MEMORY - 1
    assert decode_pool.reads_in_flight.last_overlap == overlapped
    assert decode_pool.reads_in_flight.count == 0


@pytest.mark.parametrize(
    "rows",
    [
        pytest.param([(10, 60, 1000), (300, 350, 1000)], id="rows-of-their-own"),
        pytest.param([(900, 1000, 1000), (100, 200, 1000)], id="one-at-a-chunk-end"),
        pytest.param([(0, 100, 1000), (900, 950, 1000)], id="one-at-a-chunk-start"),
    ],
)
def test_reads_of_two_calls_begun_in_one_turn_are_told_apart_by_their_rows(rows):
    """Two threads' calls can reach the event loop together, so that their chunk reads begin in
    one turn: rows that do not continue each other are two calls'."""
    seen: list[bool] = []
    both_begun = asyncio.Barrier(2)

    async def chunk_read(rows: tuple[int, int, int]) -> None:
        with decode_pool.reads_in_flight.chunk_read(rows):
            await both_begun.wait()
            seen.append(decode_pool.reads_in_flight.others_in_flight())
            await both_begun.wait()

    async def calls() -> None:
        await asyncio.gather(*(chunk_read(each) for each in rows))

    asyncio.run(calls())
    assert seen == [True, True]
