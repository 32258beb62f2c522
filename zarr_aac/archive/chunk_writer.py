"""Write a new recording's chunks as its samples are decoded, in memory bounded whatever the
sample rate, channel count, chunk duration and length.

zarr encodes a chunk from the whole chunk's samples, and chunks are sized in seconds: a minute
at 500 kHz and 4 channels is 480 MB of float32. Here each chunk is encoded while its samples
arrive (:class:`~zarr_aac.codec.aac_codec.ChunkEncoder`), in a thread of its own so that several
chunks encode at once (FFmpeg's encoder runs without the GIL). What is held is bounded in bytes:
the samples queued for the encoders (``QUEUED_BYTES``) and the AAC frames of the chunks being
encoded (``ENCODED_BYTES``, which limits the threads). Each chunk's bytes are those zarr's own
write would store (edge chunks padded with the fill value, chunks equal to it left out), put
under the key zarr gives the chunk.

The array grows in memory only (:attr:`ChunkWriter.array`): its metadata is not rewritten as
each chunk is stored (on an object store one request a chunk, and readers do not look at a
recording before its commit); the caller writes it once, complete.
"""

from __future__ import annotations

import os
import queue
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType

import numpy as np
import zarr
from zarr.core.array import AsyncArray
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from zarr_aac.codec.aac_codec import LEAD_IN, LEAD_OUT, AACCodec, ChunkEncoder

ENCODING_THREADS = min(4, os.cpu_count() or 1)
"""Chunks encoded at once, at most: one per core."""
QUEUED_BYTES = 64 * 2**20
"""Samples decoded but not yet encoded, in bytes, at most (one block more when none is queued)."""
ENCODED_BYTES = 64 * 2**20
"""AAC bytes of the chunks being encoded, at most (estimated from the bitrate); one chunk always
encodes, so chunks whose AAC bytes alone exceed this (hours at 500 kHz) still hold them."""
_ZERO_BLOCK_LENGTH = 65536
_END = None
_ABORT = object()


class _Budget:
    """Bytes of samples queued for the encoders: the decoding thread waits while they are too many."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._used = 0
        self._failed = False
        self._changed = threading.Condition()

    def take(self, nbytes: int) -> bool:
        """Wait for room for ``nbytes`` and take it; False, without waiting longer, once an encoder failed."""
        with self._changed:
            while self._used and self._used + nbytes > self._limit and not self._failed:
                self._changed.wait()
            self._used += nbytes
            return not self._failed

    def give(self, nbytes: int) -> None:
        with self._changed:
            self._used -= nbytes
            self._changed.notify_all()

    def fail(self) -> None:
        with self._changed:
            self._failed = True
            self._changed.notify_all()


class _ChunkJob:
    """One chunk (one channel group of one chunk of time): its queue of samples and its writing."""

    def __init__(self, writer: ChunkWriter, coords: tuple[int, int]) -> None:
        self.samples: queue.SimpleQueue[np.ndarray | object | None] = queue.SimpleQueue()
        self._writer = writer
        self._coords = coords

    def run(self) -> int:
        """Encode the chunk's samples as they come and store it; return the bytes stored."""
        writer = self._writer
        try:
            encoder = ChunkEncoder(writer.codec, writer.chunk_channels, writer.dtype)
            nonzero = False
            while (block := self.samples.get()) is not _END:
                if block is _ABORT:
                    return 0
                assert isinstance(block, np.ndarray)
                try:
                    encoder.feed(block)
                    # a chunk of all fill-value bits is left out, as zarr does (write_empty_chunks)
                    nonzero = nonzero or bool(block.view(f"u{block.dtype.itemsize}").any())
                finally:
                    writer.budget.give(block.nbytes)
            data = encoder.finish()
            if not (nonzero or writer.write_empty_chunks):
                return 0
            key = writer.array.metadata.encode_chunk_key(self._coords)
            sync((writer.array.store_path / key).set(default_buffer_prototype().buffer.from_bytes(data)))
            return len(data)
        except BaseException:
            writer.budget.fail()
            raise


@dataclass
class _UnstoredChunk:
    """A chunk of time being encoded: its jobs (one per channel group) and, once all its samples
    are queued, the array length that storing it extends the array to."""

    jobs: list[Future[int]]
    stop: int | None = None

    def stored(self) -> bool:
        return self.stop is not None and all(job.done() for job in self.jobs)


class ChunkWriter:
    """Appends samples to a new, empty recording array, chunk after chunk, as they come.

    Use it as a context manager and call :meth:`finish` at the end; leaving the block without
    finishing (an error, Ctrl-C) stops the encoders and writes nothing more. :attr:`array`
    grows as each chunk, and all before it, is stored; its metadata in the store is left as it
    was (the caller writes it once, with the final shape).

    Parameters
    ----------
    array : zarr.Array
        An array of shape (0, channels) whose serializer is :class:`AACCodec`, without compressors.

    Attributes
    ----------
    array : zarr.Array
        The array over the chunks stored so far, in memory: its reads are of stored chunks.
    stored_nbytes : int
        Bytes of the chunks stored so far.
    """

    def __init__(self, array: zarr.Array) -> None:
        codec = array.serializer
        if not isinstance(codec, AACCodec) or array.compressors or array.filters or array.shape[0]:
            raise ValueError("ChunkWriter writes new, empty arrays whose only codec is the zarr_aac codec")
        self.array = array
        self.codec = codec
        self.chunk_length, self.chunk_channels = array.chunks
        self.channels = array.shape[1]
        self.dtype = array.dtype
        self.write_empty_chunks = array.async_array.config.write_empty_chunks
        self.budget = _Budget(QUEUED_BYTES)
        self.written = 0
        self.stored_nbytes = 0
        self._threads = encoding_threads(codec, self.chunk_length, self.chunk_channels)
        self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="zarr-aac-encode")
        self._open: list[_ChunkJob] = []
        self._unstored: deque[_UnstoredChunk] = deque()

    def __enter__(self) -> ChunkWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        for job in self._open:
            job.samples.put(_ABORT)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def write(self, samples: np.ndarray) -> None:
        """Append ``samples``, shape (n, channels) in the array's dtype; the writer keeps them
        (the caller must not change them afterwards).

        Raises
        ------
        Exception
            What an encoder or the store raised for a chunk written before.
        """
        while samples.shape[0]:
            if not self._open:
                self._start_chunk()
            take = min(self.chunk_length - self.written % self.chunk_length, samples.shape[0])
            self._queue(samples[:take])
            samples = samples[take:]
            self.written += take
            if self.written % self.chunk_length == 0:
                self._end_chunk()

    def finish(self) -> int:
        """Pad and store the last chunk, wait for every chunk to be stored; return the samples written."""
        if self._open:
            zeros = np.zeros((_ZERO_BLOCK_LENGTH, self.channels), dtype=self.dtype)
            for missing in range(self.chunk_length - self.written % self.chunk_length, 0, -_ZERO_BLOCK_LENGTH):
                self._queue(zeros[: min(missing, _ZERO_BLOCK_LENGTH)])
            self._end_chunk()
        while self._unstored:
            self._store_oldest()
        return self.written

    def _start_chunk(self) -> None:
        # Chunks started but not stored are bounded too: each holds its AAC frames until stored.
        while len(self._unstored) >= 2 * self._threads:
            self._store_oldest()
        number = self.written // self.chunk_length
        self._open = [_ChunkJob(self, (number, group)) for group in range(-(-self.channels // self.chunk_channels))]
        self._unstored.append(_UnstoredChunk([self._pool.submit(job.run) for job in self._open]))

    def _queue(self, samples: np.ndarray) -> None:
        for group, job in enumerate(self._open):
            block = samples[:, group * self.chunk_channels : (group + 1) * self.chunk_channels]
            if block.shape[1] < self.chunk_channels:  # the last channel group, padded as zarr pads it
                block = np.pad(block, ((0, 0), (0, self.chunk_channels - block.shape[1])))
            if not self.budget.take(block.nbytes):
                self._raise_failure()
            job.samples.put(block)
        self._store_finished()

    def _end_chunk(self) -> None:
        for job in self._open:
            job.samples.put(_END)
        self._open = []
        self._unstored[-1].stop = self.written

    def _store_finished(self) -> None:
        """Grow the array over the chunks stored so far, in order (and raise an encoder's error)."""
        while self._unstored and self._unstored[0].stored():
            self._store_oldest()

    def _store_oldest(self) -> None:
        """Wait for the oldest chunk to be stored, then grow the array over it."""
        chunk = self._unstored.popleft()
        for job in chunk.jobs:
            self.stored_nbytes += job.result()
        assert chunk.stop is not None
        grown = self.array.metadata.update_shape((chunk.stop, self.channels))
        self.array = zarr.Array(AsyncArray(grown, self.array.store_path, self.array.async_array.config))

    def _raise_failure(self) -> None:
        for chunk in self._unstored:
            for job in chunk.jobs:
                if job.done() and job.exception() is not None:
                    job.result()
        raise RuntimeError("a chunk encoder stopped without an error")


def encoding_threads(codec: AACCodec, chunk_length: int, chunk_channels: int) -> int:
    """Chunks to encode at once: one per core, fewer when their AAC bytes would exceed ``ENCODED_BYTES``."""
    seconds_at_aac_rate = (LEAD_IN + chunk_length + LEAD_OUT) / codec.aac_sample_rate
    chunk_bytes = codec._bitrate_for(chunk_channels) / 8 * seconds_at_aac_rate
    return max(1, min(ENCODING_THREADS, int(ENCODED_BYTES // (2 * chunk_bytes))))
