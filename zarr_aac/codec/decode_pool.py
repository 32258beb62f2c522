"""Decoding in worker processes, so that large reads and batched clip reads use every core.

FFmpeg's AAC decode through PyAV does not scale with threads (PyAV holds the GIL for most of each
frame; docs/reading.md has the figures), but it scales with processes. A read hands its decode
jobs (frames with their pre-roll frame, and where their samples go) to a shared
``ProcessPoolExecutor``; the workers write the samples, converted to the array's dtype with the
gain undone, straight into a shared-memory block, from which the reader copies its result. The
blocks are kept between reads (up to ``KEEP_BYTES``), and the workers keep theirs mapped: fresh
shared memory costs a page fault per 4 KB page on first write, which on this project's machines
cost as much as decoding into it (docs/reading.md). The samples are those of a sequential
decode, bit for bit: each job decodes its own pre-roll frame, and the conversion is the one the
in-process path applies.

The pool is sized by the zarr config key ``zarr_aac.decode_processes`` (0: never), read at each
read. It is not used in a daemonic process (multiprocessing and dask worker processes cannot have
children), where ``/dev/shm`` is absent, or on one CPU: those decode in the calling process.
"""

from __future__ import annotations

import asyncio
import itertools
import mmap
import multiprocessing
import multiprocessing.util
import os
import sys
import threading
import time
import weakref
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures import wait as wait_for
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from multiprocessing import resource_tracker
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from zarr_aac.codec import aac
from zarr_aac.errors import AudioDecodeError, CorruptChunkError, DecodeWorkerError

POOL_MIN_FRAMES = 96
"""A read decoding fewer frames than this (about 2 s at 48 kHz) decodes in the reading process:
below it, handing the jobs to the workers and back costs more than the second core gives
(docs/reading.md has the measurements)."""
CONFIG_KEY = "zarr_aac.decode_processes"
"""The zarr config key giving the number of decode worker processes: ``zarr.config.set({CONFIG_KEY:
2})``; 0 decodes every read in the calling process. Unset, it is the number of usable CPUs when
there are two or more, else 0."""
KEEP_BYTES = 512 << 20
"""Shared-memory blocks the reading process keeps for later reads, in bytes at most (a read of
1000 one-second stereo clips at 48 kHz takes 192 MB); a larger block is made for the read that
needs it and removed after it."""
WORKER_MAPPINGS = 2
"""Blocks a worker keeps mapped between jobs, the most recently used; a block the reading process
removed frees its memory once no worker maps it."""
SHARED_MEMORY_DIR = Path("/dev/shm")
"""Where POSIX shared memory blocks appear as files on Linux; the reading process maps a block
through its file there. Without it (macOS, Windows) reads decode in the calling process."""


def parse_decode_processes(value: Any) -> int:
    """``value`` as an int if it is a non-negative integer; else ValueError naming the config key."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise ValueError(
            f"zarr config {CONFIG_KEY!r} must be a number of processes (0 to decode in the reading process), "
            f"not {value!r}"
        )
    return int(value)


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity where the system reports one)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


def decode_processes() -> int:
    """The number of worker processes reads may decode in now: the config key's value (by default
    the usable CPUs when there are two or more), 0 in a daemonic process or without ``/dev/shm``."""
    configured = zarr.config.get(CONFIG_KEY, None)
    if configured is None:
        cpus = usable_cpus()
        configured = cpus if cpus > 1 else 0
    processes = parse_decode_processes(configured)
    if processes and (multiprocessing.current_process().daemon or not SHARED_MEMORY_DIR.is_dir()):
        return 0
    return processes


@dataclass(frozen=True)
class Write:
    """Samples [lo, hi) of a chunk, to go to ``out[destination]``: their first ``channels``
    channels, or the first channel alone when ``channels`` is None (a 1-d array's clips)."""

    lo: int
    hi: int
    destination: tuple[Any, ...]
    channels: int | None


@dataclass(frozen=True)
class DecodeJob:
    """Frames of one chunk to decode, back to back in ``payload`` (``frame_offsets`` has the start
    of each and the end of the last), and where their samples go. The first frame is a pre-roll
    frame unless it is the chunk's first; ``first_sample`` is the chunk sample the decode's first
    output sample is (negative inside the encoder's priming and lead-in)."""

    asc: bytes
    channels: int
    reuse: bool
    payload: bytes | memoryview
    frame_offsets: np.ndarray
    first_sample: int
    writes: tuple[Write, ...]
    key: str | None
    first_frame: int

    @property
    def n_frames(self) -> int:
        return len(self.frame_offsets) - 1

    def portable(self) -> DecodeJob:
        """This job with its payload as bytes, which pickle (a memoryview does not)."""
        return self if isinstance(self.payload, bytes) else replace(self, payload=bytes(self.payload))

    def run(self, out: np.ndarray, gain: float) -> None:
        """Decode the frames and write the samples of each ``Write`` into ``out``, converted to its
        dtype with ``gain`` undone.

        Raises
        ------
        CorruptChunkError
            If FFmpeg refuses a frame or the frames decode to fewer or more samples than they hold.
        """
        offsets = self.frame_offsets.tolist()
        payload = memoryview(self.payload)
        frames = [payload[a:b] for a, b in itertools.pairwise(offsets)]
        decoder = aac.FrameDecoder(self.asc, self.channels, reuse=self.reuse)
        block_frames = max(1, min(self.n_frames, aac.SCRATCH_MAX_BYTES // (4 * aac.FRAME_LENGTH * self.channels)))
        buffer = aac.scratch_buffer(block_frames * aac.FRAME_LENGTH, self.channels)
        begin = self.first_sample
        try:
            for number, pcm in enumerate(decoder.decode_blocks(frames, block_frames, buffer)):
                first = self.first_frame + number * block_frames
                expected = min(block_frames, self.n_frames - number * block_frames) * aac.FRAME_LENGTH
                if pcm.shape[0] != expected:
                    last = first + expected // aac.FRAME_LENGTH - 1
                    raise CorruptChunkError(
                        self.key, f"frames {first}-{last} decode to {pcm.shape[0]} samples, expected {expected}"
                    )
                self._write(pcm, begin, out, gain)
                begin += expected
        except AudioDecodeError as exc:
            raise CorruptChunkError(self.key, str(exc)) from exc

    def _write(self, pcm: np.ndarray, begin: int, out: np.ndarray, gain: float) -> None:
        """The samples of the writes in ``pcm``, which holds chunk samples from ``begin`` on,
        converted once in ``pcm`` (clips may overlap) and copied to their destinations in ``out``."""
        end = begin + pcm.shape[0]
        lo = max(begin, min(write.lo for write in self.writes))
        hi = min(end, max(write.hi for write in self.writes))
        if lo >= hi:
            return
        converted = aac.scale_in_place(pcm[lo - begin : hi - begin], out.dtype, gain=gain)
        for write in self.writes:
            a, b = max(write.lo, lo), min(write.hi, hi)
            if a < b:
                samples = converted[a - lo : b - lo]
                # A view of ``out``: basic indexing (ints and slices) throughout.
                destination = out[write.destination]
                destination[a - write.lo : b - write.lo] = (
                    samples[:, 0] if write.channels is None else samples[:, : write.channels]
                )


def run_jobs(jobs: list[DecodeJob], out: np.ndarray, gain: float) -> list[tuple[int, CorruptChunkError]]:
    """Run ``jobs`` into ``out`` here; the index and error of each job whose chunk is corrupt."""
    failures = []
    for number, job in enumerate(jobs):
        try:
            job.run(out, gain)
        except CorruptChunkError as exc:
            failures.append((number, exc))
    return failures


def decode_here(jobs: list[DecodeJob], out: np.ndarray, gain: float) -> list[tuple[DecodeJob, CorruptChunkError]]:
    """Run ``jobs`` into ``out`` in this process; each failed job with its error."""
    return [(jobs[number], error) for number, error in run_jobs(jobs, out, gain)]


def _run_in_worker(
    block: str, shape: tuple[int, ...], dtype: str, jobs: list[DecodeJob], gain: float
) -> list[tuple[int, CorruptChunkError]]:
    """``run_jobs`` in a worker process, into the shared-memory block ``block``."""
    out = np.ndarray(shape, np.dtype(dtype), buffer=_mapped(block).buf)
    try:
        return run_jobs(jobs, out, gain)
    finally:
        del out


_worker_mappings: dict[str, SharedMemory] = {}
"""A worker's mapped blocks by name, the most recently used last (``WORKER_MAPPINGS`` at most)."""


def _mapped(block: str) -> SharedMemory:
    """The block ``block``, mapped in this worker: kept from an earlier job, or attached now (the
    least recently used mapping closed to make room)."""
    shared = _worker_mappings.pop(block, None)
    if shared is None:
        while len(_worker_mappings) >= WORKER_MAPPINGS:
            _worker_mappings.pop(next(iter(_worker_mappings))).close()
        shared = _attach(block)
    _worker_mappings[block] = shared
    return shared


def _attach(block: str) -> SharedMemory:
    """The block the reading process made, without registering it with the resource tracker.

    The pool's workers share their parent's tracker, which the parent told of the block when it
    made it and tells again when it unlinks it. Python before 3.13 registers a block on every
    attach: a message to the tracker process per job, which woke it at about 0.3 ms a time on a
    loaded machine, and unregistering it here instead would remove the parent's entry (the tracker
    keeps one per name) and make its own unregister fail. So the registration is skipped; this
    runs in a worker's only task thread.
    """
    if sys.version_info >= (3, 13):
        return SharedMemory(block, track=False)  # type: ignore[call-arg,unused-ignore]
    register = resource_tracker.register
    resource_tracker.register = lambda name, rtype: None
    try:
        return SharedMemory(block)
    finally:
        resource_tracker.register = register


def balanced_batches(jobs: list[DecodeJob], count: int) -> list[list[DecodeJob]]:
    """``jobs`` in at most ``count`` batches of about equal frames, longest first, none empty."""
    batches: list[list[DecodeJob]] = [[] for _ in range(min(count, len(jobs)))]
    loads = [0] * len(batches)
    for job in sorted(jobs, key=lambda j: j.n_frames, reverse=True):
        lightest = loads.index(min(loads))
        batches[lightest].append(job)
        # Each job also costs a decoder flush and its Python set-up: about two frames' decode.
        loads[lightest] += job.n_frames + 2
    return batches


PARENT_CHECK_SECONDS = 0.5
"""How often a worker checks that the reading process is alive."""


def _end_with_reader(reader: int) -> None:
    """Start a worker's watch of the reading process ``reader``: when it is gone (killed, so it
    could not shut its pool down), the worker ends instead of waiting for work forever. The
    executor's queues cannot tell it (each worker holds both ends of its own), nor can the
    process's parent (a forkserver's workers are its children). The pool runs only where
    ``/dev/shm`` is, so on Linux: the reader is looked up in ``/proc``, where a killed reader not
    yet reaped by its own parent shows as a zombie, and a new process under its number shows
    another start time."""
    started = _process_start(reader)

    def watch() -> None:
        while started is not None and _process_start(reader) == started:
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="zarr_aac-reader-watch", daemon=True).start()


def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` in ``/proc``, or None if it has ended (or is a zombie)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    state, start_time = fields[0], fields[19]
    return None if state in ("Z", "X") else start_time


class SharedOutput:
    """An array of ``shape`` and ``dtype`` in a shared-memory block the decode workers write, for
    one read: from ``__enter__`` to ``__exit__``, after which the block serves other reads, so the
    reader copies what it keeps (``result``). A read that ends in an error removes its block
    instead (a worker may still be writing into it)."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.shape = shape
        self.dtype = np.dtype(dtype)

    def __enter__(self) -> SharedOutput:
        count = int(np.prod(self.shape))
        self.block = _blocks.take(max(count * self.dtype.itemsize, 1))
        self.array = np.frombuffer(self.block.mapping, self.dtype, count).reshape(self.shape)
        return self

    def result(self) -> np.ndarray:
        """A copy of the array, in this process's own memory."""
        return self.array.copy()

    def __exit__(self, error_type: type[BaseException] | None, *rest: object) -> None:
        del self.array
        if error_type is None:
            _blocks.give(self.block)
        else:
            self.block.remove()


@dataclass(frozen=True)
class _Block:
    """A shared-memory block this process made: its name, for the workers, and its mapping here,
    which arrays use as their memory (it is unmapped when the last of them goes)."""

    memory: SharedMemory
    """Closed at once: kept for the name, and to unlink the block."""
    mapping: mmap.mmap

    @classmethod
    def create(cls, nbytes: int) -> _Block:
        memory = SharedMemory(create=True, size=nbytes)
        memory.close()
        try:
            with open(SHARED_MEMORY_DIR / memory.name, "r+b") as file:
                mapping = mmap.mmap(file.fileno(), nbytes)
        except BaseException:
            memory.unlink()
            raise
        return cls(memory, mapping)

    @property
    def name(self) -> str:
        return self.memory.name

    @property
    def size(self) -> int:
        return len(self.mapping)

    def remove(self) -> None:
        """Unlink the block: its memory is freed once nothing maps it."""
        self.memory.unlink()


class _KeptBlocks:
    """The shared-memory blocks of this process's reads: taken by a read, given back after it, and
    kept (``KEEP_BYTES`` at most) so that later reads write into memory already faulted in. Blocks
    kept at exit are removed then; the resource tracker removes them if the process dies."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._free: list[_Block] = []
        self._removed_at_exit = False

    def take(self, nbytes: int) -> _Block:
        """The smallest kept block of ``nbytes`` or more, or a new one."""
        with self._lock:
            fitting = [block for block in self._free if block.size >= nbytes]
            if fitting:
                block = min(fitting, key=lambda b: b.size)
                self._free.remove(block)
                return block
        return _Block.create(nbytes)

    def give(self, block: _Block) -> None:
        """Keep ``block`` for later reads, removing the smallest kept ones beyond ``KEEP_BYTES``."""
        with self._lock:
            if not self._removed_at_exit:
                # multiprocessing's exit runs these finalizers in the processes it starts too,
                # where atexit hooks do not run.
                multiprocessing.util.Finalize(None, self.remove_all, exitpriority=5)
                self._removed_at_exit = True
            self._free.append(block)
            self._free.sort(key=lambda b: b.size)
            dropped = []
            while self._free and sum(b.size for b in self._free) > KEEP_BYTES:
                dropped.append(self._free.pop(0))
        for old in dropped:
            old.remove()

    def remove_all(self) -> None:
        """Remove every kept block (at exit)."""
        with self._lock:
            kept, self._free = self._free, []
        for block in kept:
            block.remove()

    def forget_after_fork(self) -> None:
        """A forked child leaves its parent's blocks to the parent."""
        self._lock = threading.Lock()
        self._free = []
        self._removed_at_exit = False


_blocks = _KeptBlocks()
os.register_at_fork(after_in_child=_blocks.forget_after_fork)


class _SharedPool:
    """The process's pool of decode workers, started on first use and shared by every read."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._executor: ProcessPoolExecutor | None = None
        self._size = 0
        self._shut_down_at_exit = False
        self._start_method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        self._served: weakref.WeakSet[ProcessPoolExecutor] = weakref.WeakSet()

    def note_served(self, executor: ProcessPoolExecutor) -> None:
        """``executor``'s workers have decoded a batch: they started."""
        self._served.add(executor)

    def has_served(self, executor: ProcessPoolExecutor) -> bool:
        return executor in self._served

    def executor(self, processes: int) -> ProcessPoolExecutor:
        """The pool of ``processes`` workers, started again after a worker died or the size changed."""
        with self._lock:
            if self._executor is None or self._size != processes:
                if self._executor is not None:
                    self._executor.shutdown(wait=False, cancel_futures=True)
                self._executor = ProcessPoolExecutor(
                    max_workers=processes,
                    mp_context=self._context(),
                    initializer=_end_with_reader,
                    initargs=(os.getpid(),),
                )
                self._size = processes
                if not self._shut_down_at_exit:
                    # A process that multiprocessing started joins its children when its work
                    # returns, before the interpreter's exit hooks shut executors down: the workers
                    # would wait for work and it for them. Finalizers of priority 0 or more run
                    # first, the highest first: above the executor's queues' own (10), which stop
                    # the thread that would send the workers their stop.
                    multiprocessing.util.Finalize(None, self.shut_down, exitpriority=100)
                    self._shut_down_at_exit = True
            return self._executor

    def _context(self) -> Any:
        """forkserver where the platform has it (a fork of this process would copy zarr's
        event-loop thread's locks in whatever state they are), its workers forked from a server
        that has imported this module already; else spawn."""
        context = multiprocessing.get_context(self._start_method)
        if self._start_method == "forkserver":
            context.set_forkserver_preload([__name__])
        return context

    def shut_down(self) -> None:
        """Stop the workers and wait for them (at exit)."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    def discard(self, broken: ProcessPoolExecutor) -> None:
        """Forget ``broken`` (a worker died) so the next read starts a new pool."""
        with self._lock:
            if self._executor is broken:
                self._executor = None
        broken.shutdown(wait=False, cancel_futures=True)

    def forget_after_fork(self) -> None:
        """A forked child (a DataLoader worker) must not use its parent's pool, whose queues and
        worker processes belong to the parent: it starts its own on first use, by spawn, as the
        forkserver it knows of is its parent's child, not its own."""
        self._lock = threading.Lock()
        self._executor = None
        self._start_method = "spawn"
        self._shut_down_at_exit = False


_pool = _SharedPool()
os.register_at_fork(after_in_child=_pool.forget_after_fork)


def _submit(
    pool: ProcessPoolExecutor, output: SharedOutput, batches: list[list[DecodeJob]], gain: float
) -> list[Future[list[tuple[int, CorruptChunkError]]]]:
    return [
        pool.submit(
            _run_in_worker,
            output.block.name,
            output.shape,
            output.dtype.str,
            [job.portable() for job in batch],
            gain,
        )
        for batch in batches
    ]


def _collect(
    futures: list[Future[list[tuple[int, CorruptChunkError]]]],
    batches: list[list[DecodeJob]],
    pool: ProcessPoolExecutor,
    what: str,
) -> list[tuple[DecodeJob, CorruptChunkError]]:
    """The failed jobs of finished ``futures``; a dead worker raises DecodeWorkerError."""
    failures: list[tuple[DecodeJob, CorruptChunkError]] = []
    for future, batch in zip(futures, batches, strict=True):
        try:
            failed = future.result()
        except BrokenProcessPool as exc:
            raise _worker_died(pool, batches, what) from exc
        _pool.note_served(pool)
        failures.extend((batch[number], error) for number, error in failed)
    return failures


def _worker_died(pool: ProcessPoolExecutor, batches: list[list[DecodeJob]], what: str) -> DecodeWorkerError:
    """The error of a read whose worker died (now or before it began), the pool discarded."""
    _pool.discard(pool)
    keys = sorted({str(job.key) for batch in batches for job in batch})
    if not _pool.has_served(pool):
        # Workers start by importing the main module, as multiprocessing's always do: a script
        # that reads at its top level reads again in each worker, which cannot start a pool.
        return DecodeWorkerError(
            f"the decode worker processes ended before decoding anything, while decoding {what} (chunk(s) "
            f"{', '.join(keys)}); see their traceback above. Worker processes import the main module: a script "
            'that reads zarr_aac arrays at its top level must put that code under `if __name__ == "__main__":`. '
            f"Or set zarr config {CONFIG_KEY!r} to 0 to decode in the reading process"
        )
    return DecodeWorkerError(
        f"a decode worker process died while decoding {what} (chunk(s) {', '.join(keys)}); the pool is "
        f"restarted for the next read. If it recurs (out of memory?), set zarr config {CONFIG_KEY!r} to 0 "
        "to decode in the reading process"
    )


def _start(
    output: SharedOutput, jobs: list[DecodeJob], gain: float, processes: int, what: str
) -> tuple[ProcessPoolExecutor, list[list[DecodeJob]], list[Future[list[tuple[int, CorruptChunkError]]]]]:
    """Hand ``jobs`` to the pool in batches: the pool, the batches and their futures."""
    batches = balanced_batches(jobs, processes)
    pool = _pool.executor(processes)
    try:
        return pool, batches, _submit(pool, output, batches, gain)
    except BrokenProcessPool as exc:
        raise _worker_died(pool, batches, what) from exc


def decode(
    output: SharedOutput, jobs: list[DecodeJob], gain: float, processes: int, what: str
) -> list[tuple[DecodeJob, CorruptChunkError]]:
    """Run ``jobs`` on ``processes`` workers into ``output``'s array.

    Returns each failed job with its CorruptChunkError (those jobs' samples are left unwritten).
    ``what`` names the read in the error a dead worker gives.
    """
    pool, batches, futures = _start(output, jobs, gain, processes, what)
    # Every batch ends before the block serves another read or goes.
    wait_for(futures)
    return _collect(futures, batches, pool, what)


async def decode_async(
    output: SharedOutput, jobs: list[DecodeJob], gain: float, processes: int, what: str
) -> list[tuple[DecodeJob, CorruptChunkError]]:
    """``decode`` for a coroutine on zarr's event loop, the last job run in this process while
    the workers run the others (one hand-off fewer, and this process would wait anyway)."""
    here = jobs[-1:] if len(jobs) > 1 else []
    pool, batches, futures = _start(output, jobs[: len(jobs) - len(here)], gain, processes, what)
    failures = [(here[number], error) for number, error in run_jobs(here, output.array, gain)]
    waiting = [asyncio.wrap_future(future) for future in futures]
    try:
        await asyncio.wait(waiting)
    except asyncio.CancelledError:
        for future in futures:
            future.cancel()
        raise
    for done in waiting:
        # Taken from the executor's futures by _collect; read here too, or asyncio logs each
        # failure as never retrieved.
        if not done.cancelled():
            done.exception()
    return _collect(futures, batches, pool, what) + failures
