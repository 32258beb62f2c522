"""Decoding in worker processes, so that large reads and batched clip reads use every core.

FFmpeg's AAC decode through PyAV does not scale with threads (PyAV holds the GIL for most of each
frame; docs/reading.md has the figures), but it scales with processes. A read hands its decode
jobs (frames with their pre-roll frame, and where their samples go) to idle worker processes,
each reached through a pipe of its own, and decodes a share itself. The workers write the
samples, converted to the array's dtype with the gain undone, straight into a shared-memory
block, from which the reader copies its result. The blocks are kept between reads (up to
``KEEP_BYTES``), and the workers keep theirs mapped: fresh shared memory costs a page fault per
4 KB page on first write, which on this project's machines cost as much as decoding into it
(docs/reading.md). The samples are those of a sequential decode, bit for bit: each job decodes
its own pre-roll frame, and the conversion is the one the in-process path applies.

The pool is sized by the zarr config key ``zarr_aac.decode_processes`` (0: never), read at each
read. It is not used in a daemonic process (multiprocessing and dask worker processes cannot have
children), where ``/dev/shm`` is absent, or on one CPU: those decode in the calling process.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import itertools
import math
import mmap
import multiprocessing
import multiprocessing.util
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from multiprocessing import resource_tracker
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path
from typing import Any, cast

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
    if processes and (multiprocessing.current_process().daemon or not _is_folder(SHARED_MEMORY_DIR)):
        return 0
    return processes


@functools.cache
def _is_folder(path: Path) -> bool:
    """Whether ``path`` is a folder, looked up once per process (each read asks)."""
    return path.is_dir()


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
    block: str, shape: tuple[int, ...], dtype: str, placed: list[tuple[DecodeJob, int, int]], gain: float
) -> list[tuple[int, CorruptChunkError]]:
    """``run_jobs`` in a worker process, into the shared-memory block ``block``: each job with the
    payload that ``SharedOutput.place`` put at its offset and size in the block."""
    # A mapped block's buffer is None only once it is closed.
    memory = cast(memoryview, _mapped(block).buf)
    jobs = [replace(job, payload=bytes(memory[at : at + size])) for job, at, size in placed]
    out = np.ndarray(shape, np.dtype(dtype), buffer=memory)
    try:
        return run_jobs(jobs, out, gain)
    finally:
        del out, memory


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


class SharedOutput:
    """An array of ``shape`` and ``dtype`` in a shared-memory block the decode workers write, for
    one read of ``jobs``: from ``__enter__`` to ``__exit__``, after which the block serves other
    reads, so the reader copies what it keeps (``result``). A read that ends in an error removes
    its block instead (a worker may still be writing into it).

    The block holds the payloads of the jobs handed to workers too, after the array
    (``place``): a worker reads them there, and a job's hand-over is a message with the frames'
    offsets, a few KB, which fits in the pipe's buffer: sending it does not wait for the worker."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype, jobs: Sequence[DecodeJob] = ()) -> None:
        self.shape = shape
        self.dtype = np.dtype(dtype)
        self.payload_nbytes = sum(len(job.payload) for job in jobs)

    def __enter__(self) -> SharedOutput:
        count = math.prod(self.shape)
        self._placed_to = count * self.dtype.itemsize
        self.block = _blocks.take(max(self._placed_to + self.payload_nbytes, 1))
        self.array = np.frombuffer(self.block.mapping, self.dtype, count).reshape(self.shape)
        return self

    def place(self, job: DecodeJob) -> tuple[DecodeJob, int, int]:
        """Copy ``job``'s payload into the block after those placed before: the job without it,
        and the payload's offset and size in the block, for a worker."""
        size = len(job.payload)
        at, self._placed_to = self._placed_to, self._placed_to + size
        if self._placed_to > self.block.size:
            raise ValueError(f"the payloads handed out exceed the {self.payload_nbytes} bytes the read's jobs have")
        self.block.mapping[at : self._placed_to] = job.payload
        return replace(job, payload=b""), at, size

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
        """The smallest kept block of ``nbytes`` or more, or a new one, its size rounded up to
        one of 8 steps an octave (4 KB at least): reads of about the same size (the frames of clips
        vary) then reuse each other's blocks."""
        step = 1 << max(nbytes.bit_length() - 4, 12)
        nbytes = -(-nbytes // step) * step
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


class _Worker:
    """A decode worker process and this process's end of the pipe to it.

    The worker decodes the batches sent to it one at a time and answers each with its failures
    (``_serve``). A pipe rather than ``ProcessPoolExecutor``'s queues: a round trip through it
    costs the reading process a quarter of the CPU the executor's did (docs/design-notes.md),
    which is what lets concurrent small reads gain from the workers. The reading process holds
    the only copy of its end, so a worker sees the pipe close, and ends, when the reading process
    ends however it ends.
    """

    def __init__(self, process: BaseProcess, connection: Connection) -> None:
        self.process = process
        self.connection = connection
        self.started = False
        """Whether the worker has said it started: one that ends before that failed in its start,
        usually while importing the main module."""

    @classmethod
    def start(cls, context: Any) -> _Worker:
        """A worker started by ``context``. Not daemonic, as ``ProcessPoolExecutor``'s are not: a
        script without a main guard, which each worker runs again as it starts, then fails there
        at its first read that would start workers, instead of reading in every worker."""
        ours, theirs = context.Pipe()
        process = context.Process(target=_serve, args=(theirs,), name="zarr_aac-decode")
        try:
            process.start()
        finally:
            theirs.close()
        return cls(process, ours)

    def send(self, message: tuple[Any, ...]) -> None:
        """Hand a batch (``batch_message``) to the worker. A worker that died since its last batch
        fails to take it: its pipe's end says so when its answer is read."""
        with contextlib.suppress(OSError):
            self.connection.send(message)

    def answer(self) -> Any:
        """The answer to the batch sent, waiting for it; the EOFError or OSError of reading it if
        the worker died."""
        try:
            self._note_start()
            return self.connection.recv()
        except (EOFError, OSError) as exc:
            return exc

    def has_answer(self) -> bool:
        """Whether the answer, or the pipe's end, can be read without waiting."""
        while self.connection.poll():
            if self.started:
                return True
            self._note_start()
        return False

    def _note_start(self) -> None:
        """Read the worker's first message, that it started, unless read already."""
        if not self.started:
            self.connection.recv()
            self.started = True

    async def answer_async(self) -> Any:
        """``answer`` for a coroutine: the event loop runs other reads while the worker decodes."""
        loop = asyncio.get_running_loop()
        descriptor = self.connection.fileno()
        try:
            while not self.has_answer():
                readable = loop.create_future()
                loop.add_reader(descriptor, _set_done, readable)
                try:
                    await readable
                finally:
                    loop.remove_reader(descriptor)
        except (EOFError, OSError) as exc:
            return exc
        return self.answer()

    def close(self) -> None:
        """Close the pipe: the worker ends after the batch it may be decoding."""
        self.connection.close()


def batch_message(output: SharedOutput, batch: list[DecodeJob], gain: float) -> tuple[Any, ...]:
    """The message handing ``batch`` to a worker, its payloads placed in ``output``'s block and
    its samples to go there."""
    placed = [output.place(job) for job in batch]
    return (output.block.name, output.shape, output.dtype.str, placed, gain)


_STARTED = "started"
"""A worker's first message: it imported what it needs and serves batches."""


def _set_done(future: asyncio.Future[None]) -> None:
    """The event loop's callback when a worker's pipe can be read."""
    if not future.done():
        future.set_result(None)


def _serve(connection: Connection) -> None:
    """A worker's life: decode each batch sent, answer with its failures, end when the pipe closes.
    It runs as batch work (``SCHED_BATCH``): woken by a hand-over on a busy machine, it does not
    preempt the reading process, which goes on to decode its own share (docs/design-notes.md).
    It ignores SIGINT: Ctrl-C in a terminal reaches every process of the foreground group, and
    the reading process is the one to stop; its workers end as it closes their pipes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(os, "SCHED_BATCH"):
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    try:
        connection.send(_STARTED)
        while True:
            connection.send(_run_in_worker(*connection.recv()))
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return


def _send(ready: list[tuple[_Worker, tuple[Any, ...], Future[_Worker]]]) -> None:
    """Send each message to its worker and tell the read that queued it which worker has it."""
    for worker, message, assigned in ready:
        worker.send(message)
        assigned.set_result(worker)


class _SharedPool:
    """The process's decode workers, started on first use and shared by every read. A batch goes
    to an idle worker, or waits in a queue for the next worker an answer frees (as many batches
    as there are workers decode at once, whichever reads they are of)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []
        self._workers: list[_Worker] = []
        self._queued: list[tuple[tuple[Any, ...], Future[_Worker]]] = []
        self._size = 0
        self._shut_down_at_exit = False
        self._start_method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"

    def hand_out(self, processes: int, messages: list[tuple[Any, ...]]) -> list[Future[_Worker]]:
        """Each message sent to a worker of a pool of ``processes``, now or when one is free: the
        worker each went to, as a future. The pool is started (or a dead worker replaced, or the
        pool resized) first."""
        if not messages:
            return []
        assigned: list[Future[_Worker]] = [Future() for _ in messages]
        with self._lock:
            if self._size != processes:
                for worker in self._idle:
                    worker.close()
                self._idle, self._workers, self._size = [], [], processes
            for worker in [worker for worker in self._idle if not worker.process.is_alive()]:
                # Died idle (killed, out of memory): replaced now rather than failing a read.
                self._idle.remove(worker)
                self._workers.remove(worker)
                worker.close()
            self._start_missing()
            if not self._shut_down_at_exit:
                # A process that multiprocessing started joins its children when its work
                # returns, before the interpreter's exit hooks run: the workers would wait for
                # work and it for them. Finalizers of priority 0 or more run before that join.
                multiprocessing.util.Finalize(None, self.shut_down, exitpriority=100)
                self._shut_down_at_exit = True
            self._queued.extend(zip(messages, assigned, strict=True))
            ready = self._assign()
        _send(ready)
        return assigned

    def _start_missing(self) -> None:
        """Start workers until there are ``_size`` (with the lock held)."""
        while len(self._workers) < self._size:
            worker = _Worker.start(self._context())
            self._workers.append(worker)
            self._idle.append(worker)

    def _assign(self) -> list[tuple[_Worker, tuple[Any, ...], Future[_Worker]]]:
        """Pair idle workers with queued messages (with the lock held), to be sent after it."""
        ready = []
        while self._idle and self._queued:
            message, assigned = self._queued.pop(0)
            ready.append((self._idle.pop(0), message, assigned))
        return ready

    def give(self, worker: _Worker) -> None:
        """``worker`` has answered: it takes the first queued batch, or is idle again (closed if the
        pool was resized meanwhile)."""
        with self._lock:
            if worker not in self._workers:
                ready = None
            else:
                self._idle.append(worker)
                ready = self._assign()
        if ready is None:
            worker.close()
        else:
            _send(ready)

    def drop(self, worker: _Worker) -> None:
        """Forget ``worker`` (it died, or a cancelled read left it decoding); one is started in its
        place for the batches queued, or at the next read."""
        with self._lock:
            if worker in self._workers:
                self._workers.remove(worker)
            if self._queued:
                self._start_missing()
            ready = self._assign()
        worker.close()
        _send(ready)

    def withdraw(self, assigned: Future[_Worker]) -> bool:
        """Take a batch out of the queue before a worker got it (a cancelled read); False if one has."""
        with self._lock:
            for entry in self._queued:
                if entry[1] is assigned:
                    self._queued.remove(entry)
                    return True
        return False

    def worker_pids(self) -> set[int]:
        """The process ids of the pool's workers (none before the first read that used it)."""
        with self._lock:
            return {worker.process.pid for worker in self._workers if worker.process.pid is not None}

    def _context(self) -> Any:
        """forkserver where the platform has it (a fork of this process would copy zarr's
        event-loop thread's locks in whatever state they are), its workers forked from a server
        that has imported this module already; else spawn."""
        context = multiprocessing.get_context(self._start_method)
        if self._start_method == "forkserver":
            context.set_forkserver_preload([__name__])
        return context

    def shut_down(self) -> None:
        """Close every worker's pipe and wait for the workers to end (at exit)."""
        with self._lock:
            workers, self._workers, self._idle, self._size = self._workers, [], [], 0
            self._queued = []
        for worker in workers:
            worker.close()
        for worker in workers:
            worker.process.join()

    def forget_after_fork(self) -> None:
        """A forked child (a DataLoader worker) must not use its parent's workers: it closes its
        copies of their pipes, so that they still end with the parent, and starts its own on first
        use, by spawn, as the forkserver it knows of is its parent's child, not its own."""
        for worker in self._workers:
            worker.connection.close()
        self._lock = threading.Lock()
        self._idle, self._workers, self._queued, self._size = [], [], [], 0
        self._start_method = "spawn"
        self._shut_down_at_exit = False


_pool = _SharedPool()
os.register_at_fork(after_in_child=_pool.forget_after_fork)


OVERLAP_MEMORY = 4
"""The chunk reads after one that began while a read of another call was in flight that count as
concurrent too: reads from several threads overlap only now and then while each decodes on the
event loop, and always once they hand their decodes to the workers."""


@dataclass(frozen=True, eq=False)
class _ChunkRead:
    """A chunk read in flight: the turn of the event loop it began in, and its rows of the chunk
    (start, stop, chunk length), None for a selection of scattered rows."""

    turn: int
    rows: tuple[int, int, int] | None

    def of_one_call_with(self, other: _ChunkRead) -> bool:
        """Whether the two reads are chunks of one zarr call: begun in the same turn, and either
        the same rows (chunks of other channels) or meeting at a chunk end (one read running
        from one chunk into the next)."""
        if self.turn != other.turn:
            return False
        if self.rows is None or other.rows is None:
            return True
        (start, stop, length), (other_start, other_stop, other_length) = self.rows, other.rows
        return (
            (start, stop) == (other_start, other_stop)
            or (stop == length and other_start == 0)
            or (other_stop == other_length and start == 0)
        )


class _ReadsInFlight:
    """Counts chunk reads from their start to their end, and remembers the last that began while a
    read of another call was in flight, so that a small decode can tell whether other reads wait
    for the event loop it would hold (``concurrent_reads``).

    zarr does not tell a codec which call a chunk read belongs to. It starts a call's chunk reads
    together, each as a task, so they begin in the same turn of the event loop, and their rows
    continue each other; a read of another thread's call begins in a later turn, or in the same
    one at rows of its own. Only reads of other calls in flight count as concurrent: a single
    thread's read across a chunk end does not."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_flight: list[_ChunkRead] = []
        self.begun = 0
        self.last_overlap = -OVERLAP_MEMORY - 1
        """The number (in ``begun``) of the last read that began while another call's was in flight."""
        self._turns = itertools.count(1)
        self._open_turn = 0
        """The turn whose chunk reads are beginning now, 0 once the event loop has moved on."""
        self._current: contextvars.ContextVar[_ChunkRead | None] = contextvars.ContextVar("chunk_read", default=None)

    @property
    def count(self) -> int:
        """The chunk reads in flight."""
        return len(self._in_flight)

    @contextlib.contextmanager
    def chunk_read(self, rows: tuple[int, int, int] | None = None) -> Iterator[None]:
        """Count a chunk read of ``rows`` (start, stop, chunk length; None: scattered rows) while it runs."""
        with self._lock:
            read = _ChunkRead(self._turn_beginning(), rows)
            self.begun += 1
            if self._others_than(read):
                self.last_overlap = self.begun
            self._in_flight.append(read)
        token = self._current.set(read)
        try:
            yield
        finally:
            self._current.reset(token)
            with self._lock:
                self._in_flight.remove(read)

    def _turn_beginning(self) -> int:
        """The turn of a chunk read beginning now: the open one, or a new one that stays open until
        the event loop has run the tasks already waiting to start (a read's other chunks)."""
        if self._open_turn:
            return self._open_turn
        turn = next(self._turns)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return turn
        self._open_turn = turn
        loop.call_soon(self._close_turn)
        return turn

    def _close_turn(self) -> None:
        with self._lock:
            self._open_turn = 0

    def _others_than(self, read: _ChunkRead | None) -> bool:
        return any(
            other is not read and (read is None or not read.of_one_call_with(other)) for other in self._in_flight
        )

    def others_in_flight(self) -> bool:
        """Whether a chunk read of another call than the caller's is in flight."""
        with self._lock:
            return self._others_than(self._current.get())

    def more_of_this_call(self) -> bool:
        """Whether another chunk read of the caller's call is in flight."""
        with self._lock:
            read = self._current.get()
            return read is not None and any(
                other is not read and read.of_one_call_with(other) for other in self._in_flight
            )


reads_in_flight = _ReadsInFlight()
"""Count each chunk read: ``with decode_pool.reads_in_flight.chunk_read(rows): ...``."""


def concurrent_reads() -> bool:
    """Whether a chunk read of another call is in flight beside the caller's, or one of the last
    ``OVERLAP_MEMORY`` reads to begin was the first after a read that overlapped another call's."""
    return reads_in_flight.others_in_flight() or reads_in_flight.begun - reads_in_flight.last_overlap <= OVERLAP_MEMORY


def _worker_died(worker: _Worker, jobs: list[DecodeJob], what: str) -> DecodeWorkerError:
    """The error of a read whose worker died (now or as it started), the worker dropped."""
    _pool.drop(worker)
    keys = sorted({str(job.key) for job in jobs})
    if not worker.started:
        # Workers start by importing the main module, as multiprocessing's always do: a script
        # that reads at its top level reads again in each worker, which cannot start processes.
        return DecodeWorkerError(
            f"a decode worker process ended before it started, while decoding {what} (chunk(s) "
            f"{', '.join(keys)}); see its traceback above. Worker processes import the main module: a script "
            'that reads zarr_aac arrays at its top level must put that code under `if __name__ == "__main__":`. '
            f"Or set zarr config {CONFIG_KEY!r} to 0 to decode in the reading process"
        )
    return DecodeWorkerError(
        f"a decode worker process died while decoding {what} (chunk(s) {', '.join(keys)}); a new one is "
        f"started for the next read. If it recurs (out of memory?), set zarr config {CONFIG_KEY!r} to 0 "
        "to decode in the reading process"
    )


class _HandedOut:
    """The batches of one read handed to the workers, until each worker has answered.

    A read leaves only when every worker it used has answered (the block then serves another
    read), or on an error or cancellation here, when its batches still queued are withdrawn and
    the workers still decoding are left to finish into the block, which the read's error
    removes, and are replaced (``abandon``)."""

    def __init__(
        self, output: SharedOutput, batches: list[list[DecodeJob]], gain: float, processes: int, *, keep: int, what: str
    ) -> None:
        self.what = what
        handed = batches[: max(len(batches) - keep, 0)]
        self.here = [job for batch in batches[len(handed) :] for job in batch]
        """The jobs of the last ``keep`` batches, run in this process."""
        assigned = _pool.hand_out(processes, [batch_message(output, batch, gain) for batch in handed])
        self.waiting = list(zip(assigned, handed, strict=True))
        self._outcomes: list[list[tuple[DecodeJob, CorruptChunkError]] | DecodeWorkerError] = []

    @property
    def next_worker(self) -> Future[_Worker]:
        """The worker the next batch went to, once one has it."""
        return self.waiting[0][0]

    def take(self, answer: Any) -> None:
        """The next batch's answer: its failed jobs, or the error of its worker's death."""
        assigned, batch = self.waiting.pop(0)
        worker = assigned.result()
        if isinstance(answer, BaseException):
            self._outcomes.append(_worker_died(worker, batch, self.what))
        else:
            _pool.give(worker)
            self._outcomes.append([(batch[number], error) for number, error in answer])

    def abandon(self) -> None:
        for assigned, _ in self.waiting:
            if not _pool.withdraw(assigned):
                _pool.drop(assigned.result())

    def failures(self, here: list[tuple[DecodeJob, CorruptChunkError]]) -> list[tuple[DecodeJob, CorruptChunkError]]:
        """Every failed job of the read, ``here`` (those run here) first; a dead worker's error raised."""
        failures = list(here)
        for outcome in self._outcomes:
            if isinstance(outcome, DecodeWorkerError):
                raise outcome
            failures.extend(outcome)
        return failures


def _run_here(handed: _HandedOut, output: SharedOutput, gain: float) -> list[tuple[DecodeJob, CorruptChunkError]]:
    return [(handed.here[number], error) for number, error in run_jobs(handed.here, output.array, gain)]


def decode(
    output: SharedOutput, jobs: list[DecodeJob], gain: float, processes: int, what: str, *, keep: int = 1
) -> list[tuple[DecodeJob, CorruptChunkError]]:
    """Run ``jobs`` into ``output``'s array in ``processes`` batches of about equal frames: the
    last ``keep`` here, the others on idle workers (or here, when none is idle).

    Returns each failed job with its CorruptChunkError (those jobs' samples are left unwritten).
    ``what`` names the read in the error a dead worker gives.
    """
    handed = _HandedOut(output, balanced_batches(jobs, processes), gain, processes, keep=keep, what=what)
    try:
        failed_here = _run_here(handed, output, gain)
        while handed.waiting:
            handed.take(handed.next_worker.result().answer())
    except BaseException:
        handed.abandon()
        raise
    return handed.failures(failed_here)


async def decode_async(
    output: SharedOutput, jobs: list[DecodeJob], gain: float, processes: int, what: str, *, keep: int = 1
) -> list[tuple[DecodeJob, CorruptChunkError]]:
    """``decode`` for a coroutine on zarr's event loop, one job a batch: the last ``keep`` jobs
    run in this process while idle workers run the others (this process would wait anyway, and
    it saves their hand-over); ``keep=0`` hands every job over, leaving the event loop to other
    reads."""
    handed = _HandedOut(output, [[job] for job in jobs], gain, processes, keep=keep, what=what)
    try:
        failed_here = _run_here(handed, output, gain)
        while handed.waiting:
            assigned = handed.next_worker
            # Usually a worker took the batch at once: no need to wait through the event loop.
            worker = assigned.result() if assigned.done() else await asyncio.wrap_future(assigned)
            handed.take(await worker.answer_async())
    except BaseException:
        handed.abandon()
        raise
    return handed.failures(failed_here)
