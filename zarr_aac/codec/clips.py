"""Many clips of one array in one call: ``read_clips(array, starts, length)``.

A loop of ``array[a:b]`` pays zarr's overhead and a store request per clip and decodes on zarr's
event loop, one clip at a time. Here the clips are grouped by chunk, the frames each chunk's clips
need (one pre-roll frame before each run) are fetched in as few range requests as their spacing
allows and checked against their group checksums in this process, then decoded by the decode
pool's worker processes (zarr_aac.codec.decode_pool) into one shared output array.
"""

from __future__ import annotations

import asyncio
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr
from zarr.abc.store import RangeByteRequest
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from zarr_aac.codec import aac, decode_pool
from zarr_aac.codec.aac_codec import (
    AACCodec,
    PcmChunk,
    _fetch_prefix,
    _FetchedFrames,
    _get,
    _pns_off,
)
from zarr_aac.codec.chunk_format import check_chunk_geometry
from zarr_aac.codec.prefix_cache import location_of, prefixes
from zarr_aac.codec.tolerant import CorruptChunkReport, _active_report
from zarr_aac.errors import CorruptChunkError, UnsupportedAudioError

if TYPE_CHECKING:
    from zarr.core.buffer import BufferPrototype
    from zarr.storage import StorePath

    from zarr_aac.codec.chunk_format import ChunkPrefix

MAX_GAP_BYTES = 64 << 10
"""Two byte ranges of a chunk closer than this are fetched as one request: reading the gap costs
less than a request on a local disk (about 3 s of stereo audio at 160 kbps) and far less on an
object store."""
MAX_RANGE_FRAMES = 384
"""Longer runs of frames (clips that overlap or abut) are decoded in ranges of at most this many
frames, each with its own pre-roll frame, so that the worker processes share the work evenly."""


@dataclass
class _Piece:
    """The part of clip ``clip`` in one chunk: the chunk's samples [lo, hi), at ``offset`` in the clip."""

    clip: int
    lo: int
    hi: int
    offset: int


@dataclass
class _ChunkRead:
    """One chunk's part of a clip read: its pieces, and once fetched its prefix and frames."""

    store_path: StorePath
    columns: slice
    pieces: list[_Piece] = field(default_factory=list)
    prefix: ChunkPrefix | None = None
    ranges: list[tuple[int, int, _FetchedFrames, list[_Piece]]] = field(default_factory=list)
    """(first frame, stop frame, frames, the pieces it serves) of each fetched and verified run."""
    whole: bytes | None = None
    """The whole chunk, fetched instead of a prefix and frames when it is a PCM chunk (the
    unfinished tail of a live recording)."""

    @property
    def key(self) -> str:
        return self.store_path.path

    @property
    def clips(self) -> list[int]:
        return sorted({piece.clip for piece in self.pieces})


def read_clips(array: zarr.Array, starts: Any, length: int) -> np.ndarray:
    """Clips of ``length`` samples starting at each of ``starts``, read in one call.

    Clips are grouped by chunk; each chunk's frames are fetched in as few range requests as the
    clips' spacing allows, verified and decoded in threads on every core, into one array. The
    samples are those ``array[start:start + length]`` gives, clip by clip.

    Parameters
    ----------
    array : zarr.Array
        An array stored with :class:`~zarr_aac.AACCodec` as its serializer, on any zarr store.
    starts : array_like of int
        The first sample of each clip; a clip may span chunks.
    length : int
        Samples per clip.

    Returns
    -------
    numpy.ndarray
        Shape ``(len(starts), length)`` for a 1-d array, ``(len(starts), length, channels)``
        for a 2-d one, of the array's dtype. Clips of chunks never written hold the fill value.

    Raises
    ------
    UnsupportedAudioError
        If ``array`` is not stored with AACCodec as its serializer.
    ValueError
        If ``starts`` are not integers, or a clip reaches outside the array, or ``length`` < 1.
    CorruptChunkError
        If a chunk a clip needs fails its checks; the message names the chunk and the clips it
        holds samples of. Inside :func:`~zarr_aac.tolerant_reads` those clips' samples from that
        chunk are the fill value instead, and the error is in the report.
    ChunkReadError
        If the store fails to return a chunk.

    Examples
    --------
    >>> clips = zarr_aac.read_clips(array, [0, 48_000, 96_000], 48_000)  # doctest: +SKIP
    >>> clips.shape  # doctest: +SKIP
    (3, 48000, 2)
    """
    gain = _require_aac_array(array)._gain_for(array.dtype)
    starts = _parse_starts(starts, length, array.shape[0])
    chunks = _plan(array, starts, length)
    report = _active_report.get()
    sync(_fetch_all(chunks, array.chunks, default_buffer_prototype(), report))
    jobs = [job for chunk in chunks if chunk.prefix is not None for job in _decode_jobs(chunk, array.ndim)]
    shape = (starts.size, length, *array.shape[1:])
    processes = _processes_for(jobs)
    with decode_pool.SharedOutput(shape, array.dtype, jobs) if processes else nullcontext() as shared:
        out = shared.array if shared is not None else np.empty(shape, dtype=array.dtype)
        for chunk in chunks:
            if chunk.whole is not None:
                _copy_whole(out, chunk, array, report)
            elif chunk.prefix is None:
                _fill(out, chunk, chunk.pieces, array.fill_value)
        if shared is not None:
            failures = decode_pool.decode(shared, jobs, gain, processes, f"{starts.size} clips")
        else:
            failures = decode_pool.decode_here(jobs, out, gain)
        _settle(failures, chunks, out, array.fill_value, report)
        return shared.result() if shared is not None else out


def _processes_for(jobs: list[decode_pool.DecodeJob]) -> int:
    """The worker processes to decode ``jobs`` in: none for fewer than POOL_MIN_FRAMES frames."""
    if len(jobs) < 2 or sum(job.n_frames for job in jobs) < decode_pool.POOL_MIN_FRAMES:
        return 0
    return decode_pool.decode_processes()


def _settle(
    failures: list[tuple[decode_pool.DecodeJob, CorruptChunkError]],
    chunks: list[_ChunkRead],
    out: np.ndarray,
    fill_value: Any,
    report: CorruptChunkReport | None,
) -> None:
    """Raise the first failure, naming its chunk's clips; inside tolerant_reads, report each failed
    chunk once and fill its pieces instead."""
    by_key = {chunk.key: chunk for chunk in chunks}
    reported: set[str] = set()
    for job, exc in failures:
        chunk = by_key[str(job.key)]
        error = _naming_clips(exc, chunk)
        if report is None:
            raise error from exc
        if chunk.key not in reported:
            reported.add(chunk.key)
            report.errors.append(error)
            _fill(out, chunk, chunk.pieces, fill_value)


def _require_aac_array(array: Any) -> AACCodec:
    """The array's AACCodec serializer, or UnsupportedAudioError."""
    codecs = getattr(getattr(array, "metadata", None), "codecs", None)
    serializers = [codec for codec in codecs or () if isinstance(codec, AACCodec)]
    if not serializers:
        raise UnsupportedAudioError(
            f"read_clips reads zarr arrays stored with the zarr_aac codec as serializer; {array!r} is not one "
            "(read its clips with array[a:b])"
        )
    return serializers[0]


def _parse_starts(starts: Any, length: int, n_samples: int) -> np.ndarray:
    if isinstance(length, bool) or not isinstance(length, int | np.integer) or length < 1:
        raise ValueError(f"length must be a positive number of samples, not {length!r}")
    values = np.asarray(starts)
    if values.ndim != 1 or (values.size and not np.issubdtype(values.dtype, np.integer)):
        raise ValueError(
            f"starts must be a 1-d sequence of integer sample numbers, not {values.dtype} of shape {values.shape}"
        )
    values = values.astype(np.int64)
    outside = np.flatnonzero((values < 0) | (values > n_samples - length))
    if outside.size:
        i = int(outside[0])
        raise ValueError(
            f"clip {i} (samples {values[i]} to {values[i] + length}) reaches outside the array's {n_samples} samples"
            + (f", as do {outside.size - 1} other clip(s)" if outside.size > 1 else "")
        )
    return values


def _plan(array: zarr.Array, starts: np.ndarray, length: int) -> list[_ChunkRead]:
    """The chunks the clips touch, each with the pieces of clips it holds, in chunk order."""
    chunk_length = array.chunks[0]
    if array.ndim == 2:
        width = array.chunks[1]
        column_chunks = [
            slice(j * width, min((j + 1) * width, array.shape[1])) for j in range(-(-array.shape[1] // width))
        ]
    else:
        column_chunks = [slice(None)]
    by_chunk: dict[int, list[_Piece]] = {}
    for clip, start in enumerate(starts.tolist()):
        stop = start + length
        for number in range(start // chunk_length, (stop - 1) // chunk_length + 1):
            origin = number * chunk_length
            lo, hi = max(start, origin), min(stop, origin + chunk_length)
            by_chunk.setdefault(number, []).append(_Piece(clip, lo - origin, hi - origin, lo - start))
    chunks = []
    for number in sorted(by_chunk):
        for j, columns in enumerate(column_chunks):
            coords = (number, j) if array.ndim == 2 else (number,)
            store_path = array.store_path / array.metadata.encode_chunk_key(coords)
            chunks.append(_ChunkRead(store_path, columns, by_chunk[number]))
    return chunks


def _runs(chunk: _ChunkRead, prefix: ChunkPrefix) -> list[tuple[int, int, list[_Piece]]]:
    """The [first, stop) frame runs holding the chunk's pieces, each with its pre-roll frame and the
    pieces it serves (``prefix`` matches the chunk's shape, so every piece lies within its frames);
    runs that overlap, abut or leave one frame between them are merged (decoding that frame costs
    what a new run's pre-roll would), except in chunks of other encoders, which may use PNS: there
    each piece is decoded as ``array[a:b]`` decodes it, so the samples are the same."""
    index = prefix.index
    runs: list[tuple[int, int, list[_Piece]]] = []
    for piece in sorted(chunk.pieces, key=lambda p: p.lo):
        last = index.frame_of(piece.hi - 1)
        first = max(index.frame_of(piece.lo) - 1, 0)
        if runs and first <= runs[-1][1] + 1 and _pns_off(prefix.header):
            runs[-1] = (runs[-1][0], max(runs[-1][1], last + 1), [*runs[-1][2], piece])
        else:
            runs.append((first, last + 1, [piece]))
    return runs


async def _fetch_all(
    chunks: list[_ChunkRead],
    chunk_shape: tuple[int, ...],
    prototype: BufferPrototype,
    report: CorruptChunkReport | None,
) -> None:
    """Fetch every chunk's prefix and frames at once; a corrupt chunk raises, or with a tolerant
    ``report`` is listed there and left without a prefix (its pieces are filled)."""

    async def fetch(chunk: _ChunkRead) -> None:
        try:
            await _fetch_chunk(chunk, chunk_shape, prototype)
        except CorruptChunkError as exc:
            if report is None:
                raise
            report.errors.append(exc)
            chunk.prefix = None

    await asyncio.gather(*(fetch(chunk) for chunk in chunks))


async def _fetch_chunk(chunk: _ChunkRead, chunk_shape: tuple[int, ...], prototype: BufferPrototype) -> None:
    """Fetch and verify the chunk's prefix (or take it from the cache) and the frames its pieces need."""
    location = location_of(chunk.store_path)
    assert location is not None  # a StorePath always names its chunk
    try:
        cached = prefixes.get(location)
        if cached is not None:
            try:
                check_chunk_geometry(cached.header, chunk_shape, chunk.key)
                await _fetch_frames(chunk, cached, prototype)
            except CorruptChunkError:
                # Rewritten (or made again with another chunk shape) since its prefix was cached:
                # the chunk's own prefix decides.
                pass
            else:
                chunk.prefix = cached
                return
            prefixes.drop(location)
        prefix = await _fetch_prefix(chunk.store_path, chunk_shape, prototype, chunk.key)
        if prefix is None:
            return
        if isinstance(prefix, PcmChunk):
            chunk.whole = prefix.data
            return
        prefixes.put(location, prefix)
        await _fetch_frames(chunk, prefix, prototype)
        chunk.prefix = prefix
    except CorruptChunkError as exc:
        raise _naming_clips(exc, chunk) from exc


async def _fetch_frames(chunk: _ChunkRead, prefix: ChunkPrefix, prototype: BufferPrototype) -> None:
    """The frames of ``_runs``, widened to checksum groups, in requests merged across small gaps;
    each run's groups verified."""
    header, offsets = prefix.header, prefix.index.byte_offsets
    runs = _runs(chunk, prefix)
    groups = [prefix.frames_to_fetch(first, stop) for first, stop, _ in runs]
    requests: list[list[int]] = []
    for first, stop in groups:
        if requests and offsets[first] - offsets[requests[-1][1]] <= MAX_GAP_BYTES:
            requests[-1][1] = max(requests[-1][1], stop)
        else:
            requests.append([first, stop])
    fetched = await asyncio.gather(
        *(
            _get(
                chunk.store_path,
                prototype,
                chunk.key,
                RangeByteRequest(header.prefix_nbytes + int(offsets[a]), header.prefix_nbytes + int(offsets[b])),
            )
            for a, b in requests
        )
    )
    payloads = []
    for (a, b), buffer in zip(requests, fetched, strict=True):
        expected = int(offsets[b] - offsets[a])
        data = b"" if buffer is None else buffer.to_bytes()
        if len(data) != expected:
            raise CorruptChunkError(
                chunk.key,
                f"chunk ends before byte {header.prefix_nbytes + int(offsets[b])} that its index points to "
                f"(got {len(data)} of {expected} bytes)",
            )
        payloads.append((a, b, data))
    chunk.ranges = []
    for (first, stop, pieces), (group_first, group_stop) in zip(runs, groups, strict=True):
        a, b, data = next(p for p in payloads if p[0] <= group_first and group_stop <= p[1])
        # google_crc32c takes bytes, not a memoryview: slice (a copy) only when the request held more.
        groups_data = (
            data
            if (a, b) == (group_first, group_stop)
            else data[offsets[group_first] - offsets[a] : offsets[group_stop] - offsets[a]]
        )
        prefix.verify_frames(groups_data, group_first, group_stop, chunk.key)
        frames = _FetchedFrames(memoryview(data), prefix.index, int(offsets[a]), chunk.key)
        chunk.ranges.append((first, stop, frames, pieces))


def _decode_jobs(chunk: _ChunkRead, ndim: int) -> list[decode_pool.DecodeJob]:
    """The chunk's fetched runs cut into ranges of at most MAX_RANGE_FRAMES (each later range with
    its own pre-roll frame), as decode jobs writing their pieces' samples into the clips."""
    prefix = chunk.prefix
    assert prefix is not None
    offsets = prefix.index.byte_offsets
    reuse = _pns_off(prefix.header)
    jobs = []
    for first, stop, frames, run_pieces in chunk.ranges:
        longest = MAX_RANGE_FRAMES if reuse else stop - first
        for keep_from in range(first, stop, longest):
            start = first if keep_from == first else keep_from - 1
            end = min(keep_from + longest, stop)
            kept_lo, kept_hi = _sample_span(prefix, keep_from, end)
            writes = []
            for piece in run_pieces:
                lo, hi = max(piece.lo, kept_lo), min(piece.hi, kept_hi)
                if lo >= hi:
                    continue
                rows = slice(piece.offset + lo - piece.lo, piece.offset + hi - piece.lo)
                if ndim == 1:
                    writes.append(decode_pool.Write(lo, hi, (piece.clip, rows), None))
                else:
                    width = chunk.columns.stop - chunk.columns.start
                    writes.append(decode_pool.Write(lo, hi, (piece.clip, rows, chunk.columns), width))
            if not writes:
                continue
            begin, end_byte = int(offsets[start]) - frames.base, int(offsets[end]) - frames.base
            jobs.append(
                decode_pool.DecodeJob(
                    asc=prefix.asc,
                    channels=prefix.header.channels,
                    reuse=reuse,
                    payload=frames.data[begin:end_byte],
                    frame_offsets=offsets[start : end + 1] - offsets[start],
                    first_sample=_sample_span(prefix, start, end)[0],
                    writes=tuple(writes),
                    key=chunk.key,
                    first_frame=start,
                )
            )
    return jobs


def _sample_span(prefix: ChunkPrefix, first: int, stop: int) -> tuple[int, int]:
    """The chunk's samples [lo, hi) decoded from frames [first, stop)."""
    skip = prefix.header.skip
    return first * aac.FRAME_LENGTH - skip, stop * aac.FRAME_LENGTH - skip


def _copy_whole(out: np.ndarray, chunk: _ChunkRead, array: zarr.Array, report: CorruptChunkReport | None) -> None:
    """The pieces of a chunk fetched whole (a PCM chunk, or the AAC chunk a live writer made of it
    meanwhile), decoded as ``array[a:b]`` decodes it."""
    assert chunk.whole is not None
    try:
        samples = _require_aac_array(array).decode_chunk(chunk.whole, array.chunks, array.dtype, chunk.key)
    except CorruptChunkError as exc:
        error = _naming_clips(exc, chunk)
        if report is None:
            raise error from exc
        report.errors.append(error)
        _fill(out, chunk, chunk.pieces, array.fill_value)
        return
    samples = samples.reshape(samples.shape[0], -1)
    for piece in chunk.pieces:
        rows = slice(piece.offset, piece.offset + piece.hi - piece.lo)
        if out.ndim == 2:
            out[piece.clip, rows] = samples[piece.lo : piece.hi, 0]
        else:
            width = chunk.columns.stop - chunk.columns.start
            out[piece.clip, rows, chunk.columns] = samples[piece.lo : piece.hi, :width]


def _fill(out: np.ndarray, chunk: _ChunkRead, pieces: list[_Piece], fill_value: Any) -> None:
    for piece in pieces:
        rows = slice(piece.offset, piece.offset + piece.hi - piece.lo)
        if out.ndim == 2:
            out[piece.clip, rows] = fill_value
        else:
            out[piece.clip, rows, chunk.columns] = fill_value


def _naming_clips(error: CorruptChunkError, chunk: _ChunkRead) -> CorruptChunkError:
    """``error`` with the clips that take samples from its chunk named in its reason."""
    clips = chunk.clips
    shown = ", ".join(str(c) for c in clips[:20]) + (f" and {len(clips) - 20} more" if len(clips) > 20 else "")
    return CorruptChunkError(error.key, f"{error.reason} (clips {shown} take samples from this chunk)")
