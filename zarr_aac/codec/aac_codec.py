"""The ``zarr_aac`` array-to-bytes codec: PCM arrays stored as AAC-LC frames.

Reads go through zarr's partial-decode path: one request for the chunk's header and frame
index, one for the byte range of the checksum groups holding the frames that cover the
selection (plus a pre-roll frame); those groups are verified and only the needed frames
decoded. The parsed header and index are kept (zarr_aac.codec.prefix_cache), so the next read
of the same chunk is the second request alone. A read of the whole chunk is a single request.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar, Self, TypeAlias

import numpy as np
from zarr.abc.codec import ArrayBytesCodec, ArrayBytesCodecPartialDecodeMixin
from zarr.abc.store import RangeByteRequest
from zarr.core.chunk_grids import RegularChunkGrid
from zarr.core.common import parse_named_configuration

from zarr_aac.codec import aac
from zarr_aac.codec.chunk_edges import fill_edges
from zarr_aac.codec.chunk_format import (
    ChunkHeader,
    ChunkPrefix,
    FrameIndex,
    check_chunk_geometry,
    pack_chunk,
    parse_header,
    parse_prefix,
    prefix_nbytes_upper_bound,
    verify_payload,
)
from zarr_aac.codec.prefix_cache import location_of, prefixes
from zarr_aac.codec.tolerant import fill_or_raise
from zarr_aac.errors import (
    AudioDecodeError,
    ChunkReadError,
    CorruptChunkError,
    MissingChunkError,
    UnsupportedAudioError,
)
from zarr_aac.validation import channels_of, parse_int_in_range, parse_positive_int

if TYPE_CHECKING:
    from zarr.abc.store import ByteGetter
    from zarr.core.array_spec import ArraySpec
    from zarr.core.buffer import Buffer, BufferPrototype, NDBuffer
    from zarr.core.chunk_grids import ChunkGrid
    from zarr.core.dtype.wrapper import TBaseDType, TBaseScalar, ZDType
    from zarr.core.indexing import SelectorTuple

CODEC_NAME = "zarr_aac"
LEAD_IN = 4096
LEAD_OUT = 2048
"""Samples of predicted signal encoded before (LEAD_IN) and after (LEAD_OUT) each chunk's own
samples, so the encoder never starts or stops on a discontinuity (see chunk_edges.py); they cost
(LEAD_IN + LEAD_OUT) / 1024 frames per chunk."""
SUPPORTED_DTYPES = (np.dtype("int16"), np.dtype("float32"))
MIN_BITRATE = 8_000
MAX_BITRATE = 1_536_000


def parse_all_chunks_stored(value: Any) -> bool:
    """``value`` if it is a bool; else ValueError."""
    if not isinstance(value, bool):
        raise ValueError(f"all_chunks_stored must be true or false, got {value!r}")
    return value


def parse_sample_rate(value: Any) -> int:
    """``value`` as an int if it is a positive integer; else ValueError naming sample_rate."""
    return parse_positive_int(value, "sample_rate", unit="Hz")


def parse_aac_sample_rate(value: Any, sample_rate: int) -> int:
    """The rate to declare to the encoder: ``value``, an AAC rate, or ``sample_rate`` if None.

    Raises UnsupportedAudioError when ``value`` is not an AAC rate, or is None and
    ``sample_rate`` is not one either (the message names the rate to declare instead).
    """
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
    """``value`` as an int if it is an integer bitrate AAC can carry, None if None; else ValueError."""
    if value is None:
        return None
    return parse_int_in_range(value, "bitrate", minimum=MIN_BITRATE, maximum=MAX_BITRATE, unit="bits/s")


@dataclass(frozen=True)
class AACCodec(ArrayBytesCodecPartialDecodeMixin, ArrayBytesCodec):
    """Stores (samples,) or (samples, channels) int16/float32 chunks as AAC-LC.

    Each chunk is encoded on its own, with a frame index and frame checksums (docs/spec.md), so
    a read of a few samples fetches, verifies and decodes only the frames that hold them.

    Parameters
    ----------
    sample_rate : int
        The true rate of the recording, in Hz.
    bitrate : int, optional
        Bits per second at the AAC rate, from 8000 to 1536000. Left out, it is chosen from the
        channel count when the array is created.
    aac_sample_rate : int, optional
        The rate declared to the encoder, in Hz; defaults to ``sample_rate``. It must be given
        (any AAC rate) when the true rate is not one AAC allows, which stores the signal
        time-stretched: the array keeps the true rate.
    all_chunks_stored : bool, optional
        Every chunk inside the array's shape is stored, all-zero ones too (the importer writes
        arrays so). A read that meets an absent chunk then raises ``MissingChunkError`` instead
        of returning fill values, which could not be told from silence. Written to the array
        metadata only when true.

    Raises
    ------
    ValueError
        If ``sample_rate`` or ``aac_sample_rate`` is not a positive integer, or ``bitrate`` is not
        an integer in range.
    UnsupportedAudioError
        If ``aac_sample_rate`` is not an AAC rate, or is left out while ``sample_rate`` is not one.
    """

    is_fixed_size = False

    sample_rate: int
    aac_sample_rate: int
    bitrate: int | None
    all_chunks_stored: bool

    def __init__(
        self,
        *,
        sample_rate: int,
        bitrate: int | None = None,
        aac_sample_rate: int | None = None,
        all_chunks_stored: bool = False,
    ) -> None:
        rate = parse_sample_rate(sample_rate)
        object.__setattr__(self, "sample_rate", rate)
        object.__setattr__(self, "aac_sample_rate", parse_aac_sample_rate(aac_sample_rate, rate))
        object.__setattr__(self, "bitrate", parse_bitrate(bitrate))
        object.__setattr__(self, "all_chunks_stored", parse_all_chunks_stored(all_chunks_stored))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """The codec a ``{"name": "zarr_aac", "configuration": {...}}`` dict describes.

        Parameters
        ----------
        data : dict
            The codec's entry in array metadata, as ``to_dict`` writes it.

        Returns
        -------
        AACCodec

        Raises
        ------
        ValueError
            If the name is not ``zarr_aac`` or the configuration is invalid (see the class).
        """
        _, configuration = parse_named_configuration(data, CODEC_NAME)
        fields: dict[str, Any] = dict(configuration)  # each is checked by its parse_* helper
        return cls(**fields)

    def to_dict(self) -> dict[str, Any]:
        """The codec's entry in array metadata; ``from_dict`` reads it back to an equal codec.

        Returns
        -------
        dict
            ``{"name": "zarr_aac", "configuration": {...}}``, without ``bitrate`` while it is unset.
        """
        configuration: dict[str, Any] = {"sample_rate": self.sample_rate, "aac_sample_rate": self.aac_sample_rate}
        if self.bitrate is not None:
            configuration["bitrate"] = self.bitrate
        if self.all_chunks_stored:
            configuration["all_chunks_stored"] = True
        return {"name": CODEC_NAME, "configuration": configuration}

    def validate(
        self, *, shape: tuple[int, ...], dtype: ZDType[TBaseDType, TBaseScalar], chunk_grid: ChunkGrid
    ) -> None:
        """Check that an array of this shape, dtype and chunking can be stored; zarr calls it on creation.

        Parameters
        ----------
        shape : tuple of int
            The array's shape, (samples,) or (samples, channels).
        dtype : ZDType
            The array's data type: int16 or float32.
        chunk_grid : ChunkGrid
            The array's chunking; a regular grid's chunks must hold 1 to 8 channels and at
            least one sample.

        Raises
        ------
        UnsupportedAudioError
            If the dtype, the number of dimensions or the chunk shape is not one this codec stores.
        """
        native = dtype.to_native_dtype()
        if native not in SUPPORTED_DTYPES:
            raise UnsupportedAudioError(f"the zarr_aac codec stores int16 or float32 samples, not {native}")
        if len(shape) not in (1, 2):
            raise UnsupportedAudioError(
                f"the zarr_aac codec stores arrays of shape (samples,) or (samples, channels), not {len(shape)}-d"
            )
        if isinstance(chunk_grid, RegularChunkGrid):
            chunk_shape = chunk_grid.chunk_shape
            aac.channel_layout(channels_of(chunk_shape))
            parse_positive_int(chunk_shape[0], "chunk_length (samples per chunk)", error=UnsupportedAudioError)

    def evolve_from_array_spec(self, array_spec: ArraySpec) -> Self:
        """This codec with its bitrate chosen from the channel count if it was left out.

        Parameters
        ----------
        array_spec : ArraySpec
            The spec of the array's chunks.

        Returns
        -------
        AACCodec
            ``self`` if the bitrate is set, else a copy with ``aac.default_bitrate``'s choice.
        """
        if self.bitrate is None:
            channels = channels_of(array_spec.shape)
            return replace(self, bitrate=aac.default_bitrate(channels, self.aac_sample_rate))
        return self

    def _bitrate_for(self, channels: int) -> int:
        return self.bitrate if self.bitrate is not None else aac.default_bitrate(channels, self.aac_sample_rate)

    def encode_pcm(self, pcm: np.ndarray) -> bytes:
        """One chunk's bytes for the samples of one chunk.

        Parameters
        ----------
        pcm : numpy.ndarray
            int16 or float32 samples of shape (samples,) or (samples, channels).

        Returns
        -------
        bytes
            The chunk: header, frame index, checksums and AAC frames (docs/spec.md).

        Raises
        ------
        UnsupportedAudioError
            If a sample is NaN or infinite, or the channel count is not one AAC stores.
        """
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
            asc,
            frames,
            channels=channels,
            aac_sample_rate=self.aac_sample_rate,
            n_samples=n,
            skip=aac.ENCODER_PRIMING + LEAD_IN,
        )

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        # FFmpeg's encoder runs without the GIL: chunks written in one call encode in parallel.
        data = await asyncio.to_thread(self.encode_pcm, chunk_array.as_numpy_array())
        return chunk_spec.prototype.buffer.from_bytes(data)

    def decode_chunk(self, data: bytes, shape: tuple[int, ...], dtype: np.dtype, key: str | None = None) -> np.ndarray:
        """Decode a whole chunk sequentially, verifying all its checksums.

        Parameters
        ----------
        data : bytes
            The chunk, as ``encode_pcm`` made it.
        shape : tuple of int
            The array's chunk shape, (samples,) or (samples, channels); the chunk must match it.
        dtype : numpy.dtype
            int16 or float32, the dtype of the result.
        key : str, optional
            The chunk's key in its store, for error messages.

        Returns
        -------
        numpy.ndarray
            The chunk's samples, of ``shape`` and ``dtype``.

        Raises
        ------
        CorruptChunkError
            If the chunk fails a structural or checksum check, does not match ``shape``, or its
            frames do not decode to its samples.
        """
        header = parse_header(data, key)
        check_chunk_geometry(header, shape, key)
        prefix = parse_prefix(data, header, key)
        verify_payload(data, prefix, key)
        payload = memoryview(data)[header.prefix_nbytes :]
        frames = _frame_payloads(payload, prefix.index, 0, header.n_frames)
        pcm = _decode_payloads(_decoder_for(prefix), frames, key)
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
        """Decode ``selection`` of one chunk; a corrupt chunk, or an absent one of an array whose
        chunks are all stored, raises unless tolerant reads are on."""
        try:
            result = await self._decode_selection(byte_getter, selection, chunk_spec)
            if result is None and self.all_chunks_stored:
                raise MissingChunkError(_key_of(byte_getter, len(chunk_spec.shape)))
            return result
        except CorruptChunkError as exc:
            return fill_or_raise(exc, selection, chunk_spec)

    async def _decode_selection(
        self, byte_getter: ByteGetter, selection: SelectorTuple, chunk_spec: ArraySpec
    ) -> NDBuffer | None:
        """Decode ``selection`` of one chunk from the whole chunk, or from its kept or fetched prefix
        and the frames the selection needs; None if the chunk is not stored."""
        key = _key_of(byte_getter, len(chunk_spec.shape))
        shape = chunk_spec.shape
        prototype = chunk_spec.prototype
        samples = _sample_selection(selection[0], shape[0])
        if samples.is_whole_chunk:
            whole = await _get(byte_getter, prototype, key)
            if whole is None:
                return None
            pcm = self.decode_chunk(whole.to_bytes(), shape, chunk_spec.dtype.to_native_dtype(), key)
            return prototype.nd_buffer.from_numpy_array(pcm[selection])

        location = location_of(byte_getter)
        if location is not None and (cached := prefixes.get(location)) is not None:
            try:
                result = await _decode_from_prefix(byte_getter, cached, samples, selection, chunk_spec, key)
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
        return await _decode_from_prefix(byte_getter, prefix, samples, selection, chunk_spec, key)


async def _fetch_prefix(
    byte_getter: ByteGetter, shape: tuple[int, ...], prototype: BufferPrototype, key: str | None
) -> ChunkPrefix | None:
    """The chunk's parsed prefix in one request (two if its index is larger than this codec writes)."""
    n_frames = aac.frames_for_samples(shape[0] + LEAD_IN + LEAD_OUT)
    first = await _get(byte_getter, prototype, key, RangeByteRequest(0, prefix_nbytes_upper_bound(n_frames)))
    if first is None:
        return None
    data = first.to_bytes()
    header = parse_header(data, key)
    check_chunk_geometry(header, shape, key)
    if header.prefix_nbytes > len(data):
        rest = await _get(byte_getter, prototype, key, RangeByteRequest(len(data), header.prefix_nbytes))
        data += rest.to_bytes() if rest is not None else b""
    return parse_prefix(data, header, key)


async def _decode_from_prefix(
    byte_getter: ByteGetter,
    prefix: ChunkPrefix,
    samples: _SampleSelection,
    selection: SelectorTuple,
    chunk_spec: ArraySpec,
    key: str | None,
) -> NDBuffer | None:
    """Fetch, verify and decode the frames ``samples`` needs, in one request, and apply
    ``selection``'s other axes; None if the chunk is gone."""
    header = prefix.header
    shape = chunk_spec.shape
    check_chunk_geometry(header, shape, key)
    runs = samples.frame_runs(prefix.index, header.n_frames, key)
    frames = await _fetch_frames(byte_getter, prefix, runs[0][0], runs[-1][1], chunk_spec.prototype, key)
    if frames is None:
        return None
    out = samples.decode(frames, _decoder_for(prefix), runs, header, chunk_spec.dtype.to_native_dtype())
    out = out.reshape((out.shape[0], *shape[1:]))
    return chunk_spec.prototype.nd_buffer.from_numpy_array(out[(samples.first_axis, *selection[1:])])


async def _fetch_frames(
    byte_getter: ByteGetter, prefix: ChunkPrefix, first: int, stop: int, prototype: BufferPrototype, key: str | None
) -> _FetchedFrames | None:
    """Frames [first, stop), widened to whole checksum groups, in one request and verified; None
    if the chunk is gone."""
    header, offsets = prefix.header, prefix.index.byte_offsets
    first, stop = prefix.frames_to_fetch(first, stop)
    base = int(offsets[first])
    start_byte, stop_byte = header.prefix_nbytes + base, header.prefix_nbytes + int(offsets[stop])
    fetched = await _get(byte_getter, prototype, key, RangeByteRequest(start_byte, stop_byte))
    if fetched is None:
        return None
    payload = fetched.to_bytes()
    if len(payload) != stop_byte - start_byte:
        raise CorruptChunkError(
            key,
            f"chunk ends before byte {stop_byte} that its index points to "
            f"(got {len(payload)} of {stop_byte - start_byte} bytes from {start_byte})",
        )
    prefix.verify_frames(payload, first, stop, key)
    return _FetchedFrames(memoryview(payload), prefix.index, base, key)


@dataclass(frozen=True)
class _FetchedFrames:
    """The verified bytes of consecutive frames of a chunk, as one range request returned them."""

    data: memoryview
    index: FrameIndex
    base: int
    """Offset in the chunk's payload of ``data[0]``: where the first fetched frame begins."""
    key: str | None

    def decode_run(self, decoder: aac.FrameDecoder, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        """PCM of frames [start, stop), FRAME_LENGTH samples each (decoded into ``out`` if it holds them)."""
        pcm = _decode_payloads(decoder, _frame_payloads(self.data, self.index, start, stop, self.base), self.key, out)
        expected = (stop - start) * aac.FRAME_LENGTH
        if pcm.shape[0] != expected:
            raise CorruptChunkError(
                self.key, f"frames {start}-{stop - 1} decode to {pcm.shape[0]} samples, expected {expected}"
            )
        return pcm


@dataclass(frozen=True)
class _SampleSpan:
    """Samples [start, stop) of a chunk, asked for by a first-axis slice with step 1."""

    start: int
    stop: int
    chunk_length: int
    first_axis: ClassVar[slice] = slice(None)
    """The first-axis selector over the decoded samples: all of them."""

    @property
    def is_whole_chunk(self) -> bool:
        return self.start == 0 and self.stop == self.chunk_length

    def frame_runs(self, index: FrameIndex, n_frames: int, key: str | None) -> list[tuple[int, int]]:
        """The one [first, stop) run of frames holding the span, its pre-roll frame included."""
        last = index.frame_of(self.stop - 1)
        if last >= n_frames:
            raise CorruptChunkError(key, f"sample {self.stop - 1} lies beyond the chunk's {n_frames} frames")
        return [(max(index.frame_of(self.start) - 1, 0), last + 1)]

    def decode(
        self,
        frames: _FetchedFrames,
        decoder: aac.FrameDecoder,
        runs: list[tuple[int, int]],
        header: ChunkHeader,
        dtype: np.dtype,
    ) -> np.ndarray:
        """The span's samples as ``dtype``, shape (samples, channels), from the run ``frame_runs`` gave."""
        ((run_start, run_stop),) = runs
        scratch = _scratch_buffer((run_stop - run_start) * aac.FRAME_LENGTH, header.channels)
        pcm = frames.decode_run(decoder, run_start, run_stop, scratch)
        offset = run_start * aac.FRAME_LENGTH - header.skip
        out = aac.to_dtype(pcm[self.start - offset : self.stop - offset], dtype, overwrite=True)
        if scratch is not None and out.dtype == np.float32:
            # A float32 result is a view of this thread's buffer, which its next read overwrites.
            # No await has come between the decode and here, so no other read has used it yet.
            out = out.copy()
        return out


@dataclass(frozen=True)
class _SampleRows:
    """Any other first-axis selection: the sorted unique ``rows`` of a chunk it touches, and
    ``first_axis``, the selector re-expressed over an array holding only those rows."""

    rows: np.ndarray
    first_axis: Any
    chunk_length: int

    @classmethod
    def of(cls, selector: Any, chunk_length: int) -> _SampleRows:
        if isinstance(selector, slice):
            start, stop, step = selector.indices(chunk_length)
            return cls(np.arange(start, stop, step, dtype=np.int64), slice(None), chunk_length)
        if isinstance(selector, int | np.integer):
            return cls(np.array([int(selector)], dtype=np.int64), 0, chunk_length)
        indices = np.asarray(selector, dtype=np.int64)
        rows, inverse = np.unique(indices, return_inverse=True)
        return cls(rows, inverse.reshape(indices.shape), chunk_length)

    @property
    def is_whole_chunk(self) -> bool:
        return self.rows.size == self.chunk_length

    def frame_runs(self, index: FrameIndex, n_frames: int, key: str | None) -> list[tuple[int, int]]:
        """[first, stop) runs of consecutive frames holding the rows, with the pre-roll frame before each."""
        holding = index.frame_of(self.rows)
        if holding[-1] >= n_frames:
            raise CorruptChunkError(key, f"sample {int(self.rows[-1])} lies beyond the chunk's {n_frames} frames")
        needed = np.zeros(n_frames, dtype=bool)
        needed[holding] = True
        needed[holding[holding > 0] - 1] = True
        return aac.frame_runs(np.flatnonzero(needed))

    def decode(
        self,
        frames: _FetchedFrames,
        decoder: aac.FrameDecoder,
        runs: list[tuple[int, int]],
        header: ChunkHeader,
        dtype: np.dtype,
    ) -> np.ndarray:
        """The rows' samples as ``dtype``, shape (rows, channels), from the runs ``frame_runs`` gave."""
        rows = self.rows
        compact = np.empty((rows.size, header.channels), dtype=np.float32)
        for run_start, run_stop in runs:
            pcm = frames.decode_run(decoder, run_start, run_stop)
            dropped = 0 if run_start == 0 else aac.FRAME_LENGTH
            first_sample = run_start * aac.FRAME_LENGTH - header.skip + dropped
            lo, hi = np.searchsorted(rows, [first_sample, first_sample + pcm.shape[0] - dropped])
            compact[lo:hi] = pcm[dropped:][rows[lo:hi] - first_sample]
        return aac.to_dtype(compact, dtype, overwrite=True)


_SampleSelection: TypeAlias = _SampleSpan | _SampleRows


def _sample_selection(selector: Any, chunk_length: int) -> _SampleSelection:
    """What a first-axis selector asks of a chunk: a span if it is a non-empty slice with step 1, else rows."""
    if isinstance(selector, slice):
        start, stop, step = selector.indices(chunk_length)
        if step == 1 and stop > start:
            return _SampleSpan(start, stop, chunk_length)
    return _SampleRows.of(selector, chunk_length)


SCRATCH_MAX_BYTES = 8 << 20
"""Largest decode buffer a reading thread keeps between reads (10 s of 4 channels at 48 kHz).
glibc hands a freed block of a few hundred KB back to the system, so a fresh buffer for each
read would page-fault on every 4 KB page it fills (docs/design-notes.md has the cost)."""
_scratch_buffers = threading.local()


def _scratch_buffer(samples: int, channels: int) -> np.ndarray | None:
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


async def _get(
    byte_getter: ByteGetter, prototype: BufferPrototype, key: str | None, byte_range: RangeByteRequest | None = None
) -> Buffer | None:
    """Bytes of a chunk from the store; a store failure becomes a ChunkReadError naming the chunk."""
    try:
        return await byte_getter.get(prototype=prototype, byte_range=byte_range)
    except Exception as exc:
        raise ChunkReadError(key, f"{byte_getter}: {type(exc).__name__}: {exc}") from exc


def _key_of(byte_getter: Any, ndim: int) -> str | None:
    """The chunk's path in its store; with the store's location when the path is the chunk key
    alone (an array opened by its own path), which would name no recording."""
    path = getattr(byte_getter, "path", None)
    if not isinstance(path, str):
        return None
    if len(path.split("/")) <= ndim + 1 and getattr(byte_getter, "store", None) is not None:
        return str(byte_getter)
    return path


def _frame_payloads(payload: memoryview, index: FrameIndex, start: int, stop: int, base: int = 0) -> list[memoryview]:
    """The bytes of frames [start, stop), from ``payload``, which begins at payload offset ``base``."""
    offsets = index.byte_offsets
    return [payload[offsets[i] - base : offsets[i + 1] - base] for i in range(start, stop)]


def _decode_payloads(
    decoder: aac.FrameDecoder, frames: list[memoryview], key: str | None, out: np.ndarray | None = None
) -> np.ndarray:
    """``decoder.decode`` of ``frames``, with FFmpeg's refusal raised as a CorruptChunkError naming the chunk."""
    try:
        return decoder.decode(frames, out)
    except AudioDecodeError as exc:
        raise CorruptChunkError(key, str(exc)) from exc
