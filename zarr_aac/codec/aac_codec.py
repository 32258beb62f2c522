"""The ``zarr_aac`` array-to-bytes codec: PCM arrays stored as AAC-LC frames.

Reads go through zarr's partial-decode path: one request for the chunk's header and frame
index, one for the byte range of the checksum groups holding the frames that cover the
selection (plus a pre-roll frame); those groups are verified and only the needed frames
decoded. The parsed header and index are kept (zarr_aac.codec.prefix_cache), so the next read of the
same chunk is the second request alone. A read of the whole chunk is a single request.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Self

import numpy as np
from zarr.abc.codec import ArrayBytesCodec, ArrayBytesCodecPartialDecodeMixin
from zarr.abc.store import RangeByteRequest
from zarr.core.chunk_grids import RegularChunkGrid
from zarr.core.common import parse_named_configuration

from zarr_aac.codec import aac
from zarr_aac.codec.chunk_format import (
    ChunkPrefix,
    FrameIndex,
    pack_chunk,
    parse_header,
    parse_prefix,
    prefix_nbytes_upper_bound,
    verify_payload,
)
from zarr_aac.codec.chunk_edges import fill_edges
from zarr_aac.errors import AudioDecodeError, ChunkReadError, CorruptChunkError, UnsupportedAudioError
from zarr_aac.codec.prefix_cache import location_of, prefixes
from zarr_aac.codec.tolerant import fill_or_raise

if TYPE_CHECKING:
    from zarr.abc.store import ByteGetter
    from zarr.core.array_spec import ArraySpec
    from zarr.core.buffer import Buffer, NDBuffer
    from zarr.core.chunk_grids import ChunkGrid
    from zarr.core.dtype.wrapper import TBaseDType, TBaseScalar, ZDType
    from zarr.core.indexing import SelectorTuple

CODEC_NAME = "zarr_aac"
LEAD_IN = 4096
LEAD_OUT = 2048
"""Samples of predicted signal encoded before and after each chunk's own samples (see edges.py);
they cost (LEAD_IN + LEAD_OUT) / 1024 frames per chunk."""
SUPPORTED_DTYPES = (np.dtype("int16"), np.dtype("float32"))


def parse_sample_rate(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value <= 0:
        raise ValueError(f"sample_rate must be a positive integer (Hz), got {value!r}")
    return int(value)


def parse_aac_sample_rate(value: Any, sample_rate: int) -> int:
    if value is None:
        if sample_rate not in aac.AAC_SAMPLE_RATES:
            raise UnsupportedAudioError(
                f"{sample_rate} Hz is not an AAC sample rate; to store it time-stretched pass "
                f"aac_sample_rate={aac.nearest_aac_sample_rate(sample_rate)} "
                "(the array keeps the true rate, the encoder sees the declared one)"
            )
        return sample_rate
    return aac.check_aac_sample_rate(parse_sample_rate(value))


def parse_bitrate(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or not 8_000 <= value <= 1_536_000:
        raise ValueError(f"bitrate must be an integer from 8000 to 1536000 bits/s, got {value!r}")
    return int(value)


def _chunk_channels(shape: tuple[int, ...]) -> int:
    return 1 if len(shape) == 1 else shape[1]


@dataclass(frozen=True)
class AACCodec(ArrayBytesCodecPartialDecodeMixin, ArrayBytesCodec):
    """Stores (samples,) or (samples, channels) int16/float32 chunks as AAC-LC.

    ``sample_rate`` is the true rate of the recording. ``aac_sample_rate`` is the rate declared
    to the encoder; it defaults to ``sample_rate`` and must be given (any AAC rate) when the
    true rate is not one AAC allows, which stores the signal time-stretched. ``bitrate`` is in
    bits per second at the AAC rate; left out, it is chosen from the channel count when the
    array is created.
    """

    is_fixed_size = False

    sample_rate: int
    aac_sample_rate: int
    bitrate: int | None

    def __init__(self, *, sample_rate: int, bitrate: int | None = None, aac_sample_rate: int | None = None) -> None:
        rate = parse_sample_rate(sample_rate)
        object.__setattr__(self, "sample_rate", rate)
        object.__setattr__(self, "aac_sample_rate", parse_aac_sample_rate(aac_sample_rate, rate))
        object.__setattr__(self, "bitrate", parse_bitrate(bitrate))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        _, configuration = parse_named_configuration(data, CODEC_NAME)
        return cls(**configuration)

    def to_dict(self) -> dict[str, Any]:
        configuration: dict[str, Any] = {"sample_rate": self.sample_rate, "aac_sample_rate": self.aac_sample_rate}
        if self.bitrate is not None:
            configuration["bitrate"] = self.bitrate
        return {"name": CODEC_NAME, "configuration": configuration}

    def validate(self, *, shape: tuple[int, ...], dtype: ZDType[TBaseDType, TBaseScalar], chunk_grid: ChunkGrid) -> None:
        native = dtype.to_native_dtype()
        if native not in SUPPORTED_DTYPES:
            raise UnsupportedAudioError(f"the zarr_aac codec stores int16 or float32 samples, not {native}")
        if len(shape) not in (1, 2):
            raise UnsupportedAudioError(
                f"the zarr_aac codec stores arrays of shape (samples,) or (samples, channels), not {len(shape)}-d"
            )
        if isinstance(chunk_grid, RegularChunkGrid):
            chunk_shape = chunk_grid.chunk_shape
            aac.channel_layout(_chunk_channels(chunk_shape))
            if chunk_shape[0] < 1:
                raise UnsupportedAudioError("chunks must hold at least one sample")

    def evolve_from_array_spec(self, array_spec: ArraySpec) -> Self:
        if self.bitrate is None:
            channels = _chunk_channels(array_spec.shape)
            return replace(self, bitrate=aac.default_bitrate(channels, self.aac_sample_rate))
        return self

    def _bitrate_for(self, channels: int) -> int:
        return self.bitrate if self.bitrate is not None else aac.default_bitrate(channels, self.aac_sample_rate)

    # -- writing -----------------------------------------------------------------------------

    def encode_pcm(self, pcm: np.ndarray) -> bytes:
        """One chunk's bytes for PCM of shape (samples,) or (samples, channels)."""
        samples = pcm.reshape(pcm.shape[0], -1)
        n, channels = samples.shape
        padded = np.empty((LEAD_IN + n + LEAD_OUT, channels), dtype=np.float32)
        body = padded[LEAD_IN : LEAD_IN + n]
        aac.from_dtype(samples, out=body)
        if n and not (np.isfinite(body.min()) and np.isfinite(body.max())):
            raise UnsupportedAudioError("cannot encode NaN or infinite samples")
        fill_edges(padded, LEAD_IN, LEAD_OUT)
        asc, frames = aac.encode_frames(padded, self.aac_sample_rate, self._bitrate_for(channels))
        return pack_chunk(
            asc, frames, channels=channels, aac_sample_rate=self.aac_sample_rate,
            n_samples=n, skip=aac.ENCODER_PRIMING + LEAD_IN,
        )

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        # FFmpeg's encoder runs without the GIL: chunks written in one call encode in parallel.
        data = await asyncio.to_thread(self.encode_pcm, chunk_array.as_numpy_array())
        return chunk_spec.prototype.buffer.from_bytes(data)

    # -- reading -----------------------------------------------------------------------------

    def decode_chunk(self, data: bytes, shape: tuple[int, ...], dtype: np.dtype, key: str | None = None) -> np.ndarray:
        """Decode a whole chunk sequentially, verifying all its checksums."""
        header = parse_header(data, key)
        _check_geometry(header, shape, key)
        prefix = parse_prefix(data, header, key)
        verify_payload(data, prefix, key)
        payload = memoryview(data)[header.prefix_nbytes :]
        frames = _frames(payload, prefix.index, 0, header.n_frames)
        pcm = _decode(_decoder_for(prefix), frames, key)
        pcm = pcm[header.skip : header.skip + header.n_samples]
        if pcm.shape[0] != header.n_samples:
            raise CorruptChunkError(key, f"frames decode to {pcm.shape[0]} samples, header says {header.n_samples}")
        return aac.to_dtype(pcm, dtype).reshape(shape)

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        try:
            pcm = self.decode_chunk(chunk_bytes.to_bytes(), chunk_spec.shape, chunk_spec.dtype.to_native_dtype())
        except CorruptChunkError as exc:
            return fill_or_raise(exc, slice(None), chunk_spec)
        return chunk_spec.prototype.nd_buffer.from_numpy_array(pcm)

    async def _decode_partial_single(
        self, byte_getter: ByteGetter, selection: SelectorTuple, chunk_spec: ArraySpec
    ) -> NDBuffer | None:
        """Decode ``selection`` of one chunk; a corrupt chunk raises unless tolerant reads are on."""
        try:
            return await self._decode_selection(byte_getter, selection, chunk_spec)
        except CorruptChunkError as exc:
            return fill_or_raise(exc, selection, chunk_spec)

    async def _decode_selection(
        self, byte_getter: ByteGetter, selection: SelectorTuple, chunk_spec: ArraySpec
    ) -> NDBuffer | None:
        key = _key_of(byte_getter)
        shape = chunk_spec.shape
        prototype = chunk_spec.prototype
        wanted = _Wanted.of(selection, shape[0])
        if wanted.is_whole_chunk:
            whole = await _get(byte_getter, prototype, key)
            if whole is None:
                return None
            pcm = self.decode_chunk(whole.to_bytes(), shape, chunk_spec.dtype.to_native_dtype(), key)
            return prototype.nd_buffer.from_numpy_array(pcm[selection])

        location = location_of(byte_getter)
        cached = prefixes.get(location) if location is not None else None
        if cached is not None:
            try:
                result = await _decode_frames(byte_getter, cached, wanted, selection, chunk_spec, key)
            except CorruptChunkError:
                # Rewritten (or deleted and recreated) since its prefix was cached: start over
                # from the chunk's own prefix, whose checks decide.
                result = None
            else:
                if result is not None:
                    return result
            prefixes.drop(location)

        prefix = await _fetch_prefix(byte_getter, shape, prototype, key)
        if prefix is None:
            return None
        if location is not None:
            prefixes.put(location, prefix)
        return await _decode_frames(byte_getter, prefix, wanted, selection, chunk_spec, key)


@dataclass(frozen=True)
class _Wanted:
    """The samples of a chunk a first-axis selector asks for: a contiguous ``span`` (start,
    stop), or else sorted unique ``rows`` and the selector re-expressed over just those rows."""

    span: tuple[int, int] | None
    rows: np.ndarray | None
    first_axis: Any
    chunk_samples: int

    @classmethod
    def of(cls, selection: SelectorTuple, chunk_samples: int) -> _Wanted:
        span = _contiguous_span(selection[0], chunk_samples)
        if span is not None:
            return cls(span, None, slice(None), chunk_samples)
        rows, first_axis = _requested_rows(selection[0], chunk_samples)
        return cls(None, rows, first_axis, chunk_samples)

    @property
    def is_whole_chunk(self) -> bool:
        if self.span is not None:
            return self.span == (0, self.chunk_samples)
        return self.rows.size == self.chunk_samples


async def _fetch_prefix(byte_getter: ByteGetter, shape: tuple[int, ...], prototype: Any, key: str | None) -> ChunkPrefix | None:
    """The chunk's parsed prefix in one request (two if its index is larger than this codec writes)."""
    n_frames = aac.frames_for_samples(shape[0] + LEAD_IN + LEAD_OUT)
    first = await _get(byte_getter, prototype, key, RangeByteRequest(0, prefix_nbytes_upper_bound(n_frames)))
    if first is None:
        return None
    data = first.to_bytes()
    header = parse_header(data, key)
    _check_geometry(header, shape, key)
    if header.prefix_nbytes > len(data):
        rest = await _get(byte_getter, prototype, key, RangeByteRequest(len(data), header.prefix_nbytes))
        data += rest.to_bytes() if rest is not None else b""
    return parse_prefix(data, header, key)


async def _decode_frames(
    byte_getter: ByteGetter, prefix: ChunkPrefix, wanted: _Wanted, selection: SelectorTuple, chunk_spec: ArraySpec,
    key: str | None,
) -> NDBuffer | None:
    """Fetch, verify and decode the frames ``wanted`` needs, in one request; None if the chunk is gone."""
    header, index = prefix.header, prefix.index
    shape = chunk_spec.shape
    _check_geometry(header, shape, key)
    if wanted.span is not None:
        runs = [_frames_spanned(*wanted.span, index, header.n_frames, key)]
    else:
        runs = aac.frame_runs(_frames_needed(wanted.rows, index, header.n_frames, key))
    first, stop = prefix.frames_to_fetch(runs[0][0], runs[-1][1])
    base = int(index.byte_offsets[first])
    start_byte, stop_byte = header.prefix_nbytes + base, header.prefix_nbytes + int(index.byte_offsets[stop])
    fetched = await _get(byte_getter, chunk_spec.prototype, key, RangeByteRequest(start_byte, stop_byte))
    if fetched is None:
        return None
    payload = fetched.to_bytes()
    if len(payload) != stop_byte - start_byte:
        raise CorruptChunkError(
            key, f"chunk ends before byte {stop_byte} that its index points to "
            f"(got {len(payload)} of {stop_byte - start_byte} bytes from {start_byte})"
        )
    prefix.verify_frames(payload, first, stop, key)

    decoder = _decoder_for(prefix)
    view = memoryview(payload)
    dtype = chunk_spec.dtype.to_native_dtype()
    if wanted.span is not None:
        run_start, run_stop = runs[0]
        scratch = _scratch((run_stop - run_start) * aac.FRAME_LENGTH, header.channels)
        pcm = _decode_run(decoder, view, index, run_start, run_stop, base, key, scratch)
        offset = run_start * aac.FRAME_LENGTH - header.skip
        compact = pcm[wanted.span[0] - offset : wanted.span[1] - offset]
        out = aac.to_dtype(compact, dtype, overwrite=True)
        if scratch is not None and out.dtype == np.float32:
            # float32 output is the scratch buffer itself; no await has come between decode and here
            out = out.copy()
    else:
        rows = wanted.rows
        compact = np.empty((rows.size, header.channels), dtype=np.float32)
        for run_start, run_stop in runs:
            pcm = _decode_run(decoder, view, index, run_start, run_stop, base, key)
            dropped = 0 if run_start == 0 else aac.FRAME_LENGTH
            first_sample = run_start * aac.FRAME_LENGTH - header.skip + dropped
            lo, hi = np.searchsorted(rows, [first_sample, first_sample + pcm.shape[0] - dropped])
            compact[lo:hi] = pcm[dropped:][rows[lo:hi] - first_sample]
        out = aac.to_dtype(compact, dtype, overwrite=True)
    out = out.reshape((out.shape[0], *shape[1:]))
    return chunk_spec.prototype.nd_buffer.from_numpy_array(out[(wanted.first_axis, *selection[1:])])


SCRATCH_MAX_BYTES = 8 << 20
"""Largest decode buffer a reading thread keeps between reads (10 s of 4 channels at 48 kHz).
A fresh array of a few hundred KB costs a page fault for each 4 KB page on first write, since
glibc hands large freed blocks back to the system: that was a third of a 1 s read."""
_scratch_buffers = threading.local()


def _scratch(samples: int, channels: int) -> np.ndarray | None:
    """This thread's float32 (samples, channels) decode buffer, or None when too large to keep."""
    size = samples * channels
    if size * 4 > SCRATCH_MAX_BYTES:
        return None
    buffer = getattr(_scratch_buffers, "buffer", None)
    if buffer is None or buffer.size < size:
        buffer = _scratch_buffers.buffer = np.empty(size, dtype=np.float32)
    return buffer[:size].reshape(samples, channels)


def _decoder_for(prefix: ChunkPrefix) -> aac.FrameDecoder:
    """Chunks this codec encoded (the ones with checksums) have PNS off and skip at least the
    first frame, so a reused decoder gives a fresh one's samples; frames taken from other
    encoders' files may use PNS, and fresh decoders keep their reads repeatable."""
    header = prefix.header
    reuse = header.checksum_group > 0 and header.skip >= aac.FRAME_LENGTH
    return aac.FrameDecoder(prefix.asc, header.channels, reuse=reuse)


async def _get(byte_getter: ByteGetter, prototype: Any, key: str | None, byte_range: RangeByteRequest | None = None) -> Buffer | None:
    """Bytes of a chunk from the store; a store failure becomes a ChunkReadError naming the chunk."""
    try:
        return await byte_getter.get(prototype=prototype, byte_range=byte_range)
    except Exception as exc:
        raise ChunkReadError(key, f"{byte_getter}: {type(exc).__name__}: {exc}") from exc


def _key_of(byte_getter: Any) -> str | None:
    path = getattr(byte_getter, "path", None)
    return path if isinstance(path, str) else None


def _check_geometry(header: Any, shape: tuple[int, ...], key: str | None) -> None:
    channels = _chunk_channels(shape)
    if header.n_samples != shape[0] or header.channels != channels:
        raise CorruptChunkError(
            key, f"chunk holds {header.n_samples} samples x {header.channels} channels, the array expects {shape[0]} x {channels}"
        )


def _requested_rows(selector: Any, n: int) -> tuple[np.ndarray, Any]:
    """Sorted unique sample rows a first-axis selector touches, and the selector re-expressed
    over an array holding only those rows."""
    if isinstance(selector, slice):
        start, stop, step = selector.indices(n)
        return np.arange(start, stop, step, dtype=np.int64), slice(None)
    if isinstance(selector, int | np.integer):
        return np.array([int(selector)], dtype=np.int64), 0
    indices = np.asarray(selector, dtype=np.int64)
    rows, inverse = np.unique(indices, return_inverse=True)
    return rows, inverse.reshape(indices.shape)


def _contiguous_span(selector: Any, n: int) -> tuple[int, int] | None:
    """(start, stop) when a first-axis selector is a non-empty slice with step 1, else None."""
    if isinstance(selector, slice):
        start, stop, step = selector.indices(n)
        if step == 1 and stop > start:
            return start, stop
    return None


def _frames_spanned(start: int, stop: int, index: FrameIndex, n_frames: int, key: str | None) -> tuple[int, int]:
    """The [first, last + 1) run of frames holding samples [start, stop), with its pre-roll frame."""
    last = index.frame_of(stop - 1)
    if last >= n_frames:
        raise CorruptChunkError(key, f"sample {stop - 1} lies beyond the chunk's {n_frames} frames")
    return max(index.frame_of(start) - 1, 0), last + 1


def _frames_needed(rows: np.ndarray, index: FrameIndex, n_frames: int, key: str | None) -> np.ndarray:
    """Frames holding ``rows`` (sorted, unique) plus the pre-roll frame before each."""
    holding = index.frame_of(rows)
    if holding[-1] >= n_frames:
        raise CorruptChunkError(key, f"sample {int(rows[-1])} lies beyond the chunk's {n_frames} frames")
    needed = np.zeros(n_frames, dtype=bool)
    needed[holding] = True
    needed[holding[holding > 0] - 1] = True
    return np.flatnonzero(needed)


def _frames(payload: memoryview, index: FrameIndex, start: int, stop: int, base: int = 0) -> list[memoryview]:
    offsets = index.byte_offsets
    return [payload[offsets[i] - base : offsets[i + 1] - base] for i in range(start, stop)]


def _decode_run(
    decoder: aac.FrameDecoder, payload: memoryview, index: FrameIndex, start: int, stop: int, base: int, key: str | None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """PCM of frames [start, stop), whose bytes begin at ``payload[index.byte_offsets[start] - base]``
    (decoded into ``out`` if given)."""
    pcm = _decode(decoder, _frames(payload, index, start, stop, base), key, out)
    expected = (stop - start) * aac.FRAME_LENGTH
    if pcm.shape[0] != expected:
        raise CorruptChunkError(key, f"frames {start}-{stop - 1} decode to {pcm.shape[0]} samples, expected {expected}")
    return pcm


def _decode(decoder: aac.FrameDecoder, frames: list[memoryview], key: str | None, out: np.ndarray | None = None) -> np.ndarray:
    try:
        return decoder.decode(frames, out)
    except AudioDecodeError as exc:
        raise CorruptChunkError(key, str(exc)) from exc
