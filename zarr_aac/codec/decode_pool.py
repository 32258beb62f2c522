"""Decoding in worker processes, so that large reads and batched clip reads use every core.

FFmpeg's AAC decode through PyAV does not scale with threads (PyAV holds the GIL for most of each
frame; docs/reading.md has the figures), but it scales with processes. A read hands its decode
jobs (frames with their pre-roll frame, and where their samples go) to a shared
``ProcessPoolExecutor``; the workers write the samples, converted to the array's dtype with the
gain undone, straight into one shared-memory block per read, which the reader returns as its
array. The samples are those of a sequential decode, bit for bit: each job decodes its own
pre-roll frame, and the conversion is the one the in-process path applies.

The pool is sized by the zarr config key ``zarr_aac.decode_processes`` (0: never), read at each
read. It is not used in a daemonic process (multiprocessing and dask worker processes cannot have
children), where ``/dev/shm`` is absent, or on one CPU: those decode in the calling process.
"""

from __future__ import annotations

import asyncio
import itertools
import mmap
import multiprocessing
import os
import sys
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures import wait as wait_for
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
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
        if isinstance(self.payload, bytes):
            return self
        return DecodeJob(
            self.asc,
            self.channels,
            self.reuse,
            bytes(self.payload),
            self.frame_offsets,
            self.first_sample,
            self.writes,
            self.key,
            self.first_frame,
        )

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
        try:
            pcm = decoder.decode(frames)
        except AudioDecodeError as exc:
            raise CorruptChunkError(self.key, str(exc)) from exc
        expected = self.n_frames * aac.FRAME_LENGTH
        if pcm.shape[0] != expected:
            last = self.first_frame + self.n_frames - 1
            raise CorruptChunkError(
                self.key, f"frames {self.first_frame}-{last} decode to {pcm.shape[0]} samples, expected {expected}"
            )
        for write in self.writes:
            samples = pcm[write.lo - self.first_sample : write.hi - self.first_sample]
            converted = aac.to_dtype(samples, out.dtype, gain=gain)
            out[write.destination] = converted[:, 0] if write.channels is None else converted[:, : write.channels]


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
    shared = _attach(block)
    try:
        out = np.ndarray(shape, np.dtype(dtype), buffer=shared.buf)
        try:
            return run_jobs(jobs, out, gain)
        finally:
            del out
    finally:
        shared.close()


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


class SharedOutput:
    """A new array of ``shape`` and ``dtype`` in a shared-memory block the decode workers write.

    The block's name exists from ``__enter__`` to ``__exit__`` (one read), whatever happens; the
    memory stays mapped in this process for as long as ``array`` or a view of it is alive.
    """

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.shape = shape
        self.dtype = np.dtype(dtype)

    def __enter__(self) -> SharedOutput:
        nbytes = max(int(np.prod(self.shape)) * self.dtype.itemsize, 1)
        self.block = SharedMemory(create=True, size=nbytes)
        try:
            # The array maps the block's file itself: SharedMemory cannot be closed while arrays
            # use its mapping, and would complain when collected before them.
            self.block.close()
            with open(SHARED_MEMORY_DIR / self.block.name, "r+b") as file:
                mapping = mmap.mmap(file.fileno(), nbytes)
            self.array = np.frombuffer(mapping, self.dtype, int(np.prod(self.shape))).reshape(self.shape)
        except BaseException:
            self.block.unlink()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.block.unlink()


class _SharedPool:
    """The process's pool of decode workers, started on first use and shared by every read."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._executor: ProcessPoolExecutor | None = None
        self._size = 0
        self._start_method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"

    def executor(self, processes: int) -> ProcessPoolExecutor:
        """The pool of ``processes`` workers, started again after a worker died or the size changed."""
        with self._lock:
            if self._executor is None or self._size != processes:
                if self._executor is not None:
                    self._executor.shutdown(wait=False, cancel_futures=True)
                self._executor = ProcessPoolExecutor(max_workers=processes, mp_context=self._context())
                self._size = processes
            return self._executor

    def _context(self) -> Any:
        """forkserver where the platform has it (a fork of this process would copy zarr's
        event-loop thread's locks in whatever state they are), its workers forked from a server
        that has imported this module already; else spawn."""
        context = multiprocessing.get_context(self._start_method)
        if self._start_method == "forkserver":
            context.set_forkserver_preload([__name__])
        return context

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
        failures.extend((batch[number], error) for number, error in failed)
    return failures


def _worker_died(pool: ProcessPoolExecutor, batches: list[list[DecodeJob]], what: str) -> DecodeWorkerError:
    """The error of a read whose worker died (now or before it began), the pool discarded."""
    _pool.discard(pool)
    keys = sorted({str(job.key) for batch in batches for job in batch})
    return DecodeWorkerError(
        f"a decode worker process died while decoding {what} (chunk(s) {', '.join(keys)}); the pool is "
        f"restarted for the next read. If it recurs (out of memory?), set zarr config {CONFIG_KEY!r} to 0 "
        "to decode in the reading process"
    )


def decode(
    output: SharedOutput, jobs: list[DecodeJob], gain: float, processes: int, what: str
) -> list[tuple[DecodeJob, CorruptChunkError]]:
    """Run ``jobs`` on ``processes`` workers into ``output``'s array.

    Returns each failed job with its CorruptChunkError (those jobs' samples are left unwritten).
    ``what`` names the read in the error a dead worker gives.
    """
    batches = balanced_batches(jobs, processes)
    pool = _pool.executor(processes)
    try:
        futures = _submit(pool, output, batches, gain)
    except BrokenProcessPool as exc:
        raise _worker_died(pool, batches, what) from exc
    # Every batch ends before the block's name goes, so no worker opens a name already gone.
    wait_for(futures)
    return _collect(futures, batches, pool, what)


async def decode_async(
    output: SharedOutput, jobs: list[DecodeJob], gain: float, processes: int, what: str
) -> list[tuple[DecodeJob, CorruptChunkError]]:
    """``decode`` for a coroutine on zarr's event loop, which runs other reads meanwhile."""
    batches = balanced_batches(jobs, processes)
    pool = _pool.executor(processes)
    try:
        futures = _submit(pool, output, batches, gain)
    except BrokenProcessPool as exc:
        raise _worker_died(pool, batches, what) from exc
    try:
        await asyncio.wait([asyncio.wrap_future(future) for future in futures])
    except asyncio.CancelledError:
        for future in futures:
            future.cancel()
        raise
    return _collect(futures, batches, pool, what)
