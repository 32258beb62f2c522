"""The ``zarr_aac`` array-to-bytes codec: PCM arrays stored as AAC-LC frames.

Reads go through zarr's partial-decode path: one request for the chunk's header and frame
index, one for the byte range of the checksum groups holding the frames that cover the
selection (plus a pre-roll frame); those groups are verified and only the needed frames
decoded. The parsed header and index are kept (zarr_aac.codec.prefix_cache), so the next read
of the same chunk is the second request alone. A read of the whole chunk is a single request.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar, Self, TypeAlias

import numpy as np
from zarr.abc.codec import ArrayBytesCodec, ArrayBytesCodecPartialDecodeMixin
from zarr.abc.store import RangeByteRequest
from zarr.core.chunk_grids import RegularChunkGrid
from zarr.core.common import parse_named_configuration

from zarr_aac.codec import aac, decode_pool
from zarr_aac.codec.chunk_edges import FIT_SAMPLES, lead_in, lead_out
from zarr_aac.codec.chunk_format import (
    ChunkHeader,
    ChunkPrefix,
    FrameIndex,
    check_chunk_geometry,
    pack_chunk,
    parse_header,
    parse_pcm_chunk,
    parse_prefix,
    prefix_nbytes_upper_bound,
    verify_payload,
)
from zarr_aac.codec.generation_loss import note_decoded, warn_if_reencoded
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
SPLIT_MIN_FRAMES = 96
"""A span of one chunk decoded in the worker processes (zarr_aac.codec.decode_pool) is split into
ranges of at least this many frames (about 2 s at 48 kHz), one per worker at most; each range
decodes its own pre-roll frame, so the samples are those of a sequential decode."""
MIN_BITRATE = 8_000
MAX_BITRATE = 1_536_000
DEFAULT_GAINS = {np.dtype("int16"): 0.25, np.dtype("float32"): 0.0625}
"""Gain of a new array by dtype. FFmpeg's encoder codes a tone best at an input peak near 0.25 and
worse above (about 25 dB worse at full scale): int16 full scale, and float32 samples up to 4.0
(+12 dBFS), are brought to that level (docs/fidelity.md)."""
LEGACY_GAIN = 1.0
"""The gain of a configuration without one: arrays written by zarr-aac 0.2."""
MIN_GAIN_EXPONENT = -16
ENCODER_PEAK = 0.25
"""The highest input peak :func:`gain_for_peak` lets the encoder see. A 1 kHz int16 tone codes at
58-62 dB SNR with its encoder input peaking between 0.125 and 0.25, 50-52 dB at 0.4-0.5 and 23 dB
at 1.0; music peaking at 0.44 gained 1 dB over the fixed int16 gain (docs/fidelity.md)."""
HANDOFF_FRAMES = 32
"""Frames a worker's range is shorter than the range the reading process decodes itself: about
what handing a range to a worker and its samples back costs (docs/design-notes.md)."""


def gain_for_peak(peak: float) -> float:
    """The largest gain this codec stores (a power of two, at most 1) that brings a signal peaking
    at ``peak`` (full scale 1) to at most ENCODER_PEAK at the encoder: the fixed DEFAULT_GAINS keep
    headroom for the loudest signal a dtype holds, which a quieter recording pays for in SNR."""
    if not peak > ENCODER_PEAK:  # NaN too: the importer refuses such samples when it meets them
        return 1.0
    if not np.isfinite(peak):
        return 2.0**MIN_GAIN_EXPONENT
    exponent = int(np.ceil(np.log2(peak / ENCODER_PEAK)))
    return float(2.0 ** -min(exponent, -MIN_GAIN_EXPONENT))


CONFIGURATION_KEYS = ("sample_rate", "aac_sample_rate", "bitrate", "gain", "cutoff", "all_chunks_stored")


def parse_configuration_keys(configuration: dict[str, Any]) -> dict[str, Any]:
    """``configuration`` if it names only keys this version knows and has a sample rate; else
    ValueError naming the keys (an unknown one comes from a newer zarr-aac or a hand edit)."""
    unknown = sorted(set(configuration) - set(CONFIGURATION_KEYS))
    if unknown:
        raise ValueError(
            f"zarr_aac codec configuration has unknown key(s) {', '.join(map(repr, unknown))}; this zarr-aac "
            f"knows {', '.join(CONFIGURATION_KEYS)}. An array written by a newer zarr-aac needs that version "
            "(pip install -U zarr-aac)"
        )
    if "sample_rate" not in configuration:
        raise ValueError("zarr_aac codec configuration has no 'sample_rate': the array's metadata is incomplete")
    return configuration


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


def parse_gain(value: Any) -> float | None:
    """``value`` as a float if it is a power of two from 2**-16 to 1, None if None; else ValueError.

    A power of two scales float32 samples exactly, so the gain adds no error of its own.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value) or value <= 0:
        raise ValueError(f"gain must be a power of two from 2**{MIN_GAIN_EXPONENT} to 1, got {value!r}")
    mantissa, exponent = np.frexp(value)
    if mantissa != 0.5 or not MIN_GAIN_EXPONENT <= exponent - 1 <= 0:
        raise ValueError(
            f"gain must be a power of two from 2**{MIN_GAIN_EXPONENT} to 1 (0.5, 0.125, ...), got {value!r}"
        )
    return float(value)


def parse_cutoff(value: Any, aac_sample_rate: int) -> int | None:
    """``value`` as an int if it is an encoder low-pass from 1 Hz to the declared Nyquist frequency,
    None if None; else ValueError."""
    if value is None:
        return None
    return parse_int_in_range(value, "cutoff", minimum=1, maximum=aac_sample_rate // 2, unit="Hz")


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
    gain : float, optional
        A power of two the samples are multiplied by before encoding and divided by after
        decoding, so that full-scale and louder samples stay below the level where the encoder
        saturates. Left out, it is chosen from the dtype when the array is created (0.25 for
        int16, 0.0625 for float32); a stored configuration without it (zarr-aac 0.2) means 1.
    cutoff : int, optional
        The encoder's low-pass, in Hz at ``aac_sample_rate``, at most its Nyquist frequency (the
        default: the whole band). An encoding choice only; readers ignore it.
    all_chunks_stored : bool, optional
        Every chunk inside the array's shape is stored, all-zero ones too (the importer writes
        arrays so). A read that meets an absent chunk then raises ``MissingChunkError`` instead
        of returning fill values, which could not be told from silence. Written to the array
        metadata only when true.

    Raises
    ------
    ValueError
        If ``sample_rate`` or ``aac_sample_rate`` is not a positive integer, ``bitrate`` or
        ``cutoff`` is not an integer in range, or ``gain`` is not a power of two from 2**-16 to 1.
    UnsupportedAudioError
        If ``aac_sample_rate`` is not an AAC rate, or is left out while ``sample_rate`` is not one.
    """

    is_fixed_size = False

    sample_rate: int
    aac_sample_rate: int
    bitrate: int | None
    gain: float | None
    cutoff: int | None
    all_chunks_stored: bool

    def __init__(
        self,
        *,
        sample_rate: int,
        bitrate: int | None = None,
        aac_sample_rate: int | None = None,
        gain: float | None = None,
        cutoff: int | None = None,
        all_chunks_stored: bool = False,
    ) -> None:
        rate = parse_sample_rate(sample_rate)
        object.__setattr__(self, "sample_rate", rate)
        object.__setattr__(self, "aac_sample_rate", parse_aac_sample_rate(aac_sample_rate, rate))
        object.__setattr__(self, "bitrate", parse_bitrate(bitrate))
        object.__setattr__(self, "gain", parse_gain(gain))
        object.__setattr__(self, "cutoff", parse_cutoff(cutoff, self.aac_sample_rate))
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
        configuration = parse_configuration_keys(configuration or {})
        # Any JSON value may arrive here: the constructor's parse_* helpers check each one. A
        # configuration without a gain was written by 0.2, which stored samples unscaled.
        with_gain: dict[str, Any] = {"gain": LEGACY_GAIN, **configuration}
        return cls(**with_gain)

    def to_dict(self) -> dict[str, Any]:
        """The codec's entry in array metadata; ``from_dict`` reads it back to an equal codec.

        Returns
        -------
        dict
            ``{"name": "zarr_aac", "configuration": {...}}``, without ``bitrate`` and ``cutoff``
            while they are unset, and with ``"gain": None`` while the gain is (a configuration
            without ``gain`` means 1, as zarr-aac 0.2 wrote them).
        """
        configuration: dict[str, Any] = {
            "sample_rate": self.sample_rate,
            "aac_sample_rate": self.aac_sample_rate,
            "gain": self.gain,
        }
        if self.bitrate is not None:
            configuration["bitrate"] = self.bitrate
        if self.cutoff is not None:
            configuration["cutoff"] = self.cutoff
        if self.all_chunks_stored:
            configuration["all_chunks_stored"] = True
        return {"name": CODEC_NAME, "configuration": configuration}

    def compute_encoded_size(self, input_byte_length: int, chunk_spec: ArraySpec) -> int:
        """Not known before encoding: AAC output varies with the signal, as compressors' does.

        Raises
        ------
        NotImplementedError
            Always, as zarr's variable-size codecs (blosc, gzip, zstd) do.
        """
        raise NotImplementedError("the size of an AAC chunk is known only once it is encoded")

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
        """This codec with its bitrate chosen from the channel count and its gain from the dtype
        if they were left out.

        Parameters
        ----------
        array_spec : ArraySpec
            The spec of the array's chunks.

        Returns
        -------
        AACCodec
            ``self`` if both are set, else a copy with ``aac.default_bitrate``'s choice and
            ``DEFAULT_GAINS``'s.
        """
        evolved = self
        if self.bitrate is None:
            channels = channels_of(array_spec.shape)
            evolved = replace(evolved, bitrate=self._bitrate_for(channels))
        if self.gain is None:
            evolved = replace(evolved, gain=DEFAULT_GAINS.get(array_spec.dtype.to_native_dtype(), LEGACY_GAIN))
        return evolved

    def _bitrate_for(self, channels: int) -> int:
        if self.bitrate is not None:
            return self.bitrate
        return aac.default_bitrate(channels, self.aac_sample_rate, self.sample_rate)

    def _gain_for(self, dtype: np.dtype) -> float:
        return self.gain if self.gain is not None else DEFAULT_GAINS.get(dtype, LEGACY_GAIN)

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
        encoder = ChunkEncoder(self, samples.shape[1], samples.dtype)
        for start in range(0, samples.shape[0], ChunkEncoder.BLOCK_LENGTH):
            encoder.feed(samples[start : start + ChunkEncoder.BLOCK_LENGTH])
        return encoder.finish()

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        warn_if_reencoded(chunk_spec)
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
        if header.is_pcm:
            return _pcm_chunk_samples(data, header, shape, dtype, key)
        prefix = parse_prefix(data, header, key)
        verify_payload(data, prefix, key)
        payload = memoryview(data)[header.prefix_nbytes :]
        frames = _frame_payloads(payload, prefix.index, 0, header.n_frames)
        pcm = _decode_payloads(_decoder_for(prefix), frames, key)
        pcm = pcm[header.skip : header.skip + header.n_samples]
        if pcm.shape[0] != header.n_samples:
            raise CorruptChunkError(key, f"frames decode to {pcm.shape[0]} samples, header says {header.n_samples}")
        return aac.to_dtype(pcm, dtype, gain=self._gain_for(dtype)).reshape(shape)

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        note_decoded(chunk_spec)
        try:
            return await _decode_whole_chunk(chunk_bytes.to_bytes(), (slice(None),), chunk_spec, None, gain=self.gain)
        except CorruptChunkError as exc:
            return fill_or_raise(exc, slice(None), chunk_spec)

    async def _decode_partial_single(
        self, byte_getter: ByteGetter, selection: SelectorTuple, chunk_spec: ArraySpec
    ) -> NDBuffer | None:
        """Decode ``selection`` of one chunk; a corrupt chunk, or an absent one of an array whose
        chunks are all stored, raises unless tolerant reads are on."""
        if not isinstance(selection, tuple):
            # zarr's indexers give a tuple per chunk (np.ix_ included); its annotation allows more.
            raise TypeError(f"zarr_aac reads chunk selections given as tuples, zarr gave {type(selection).__name__}")
        samples = _sample_selection(selection[0], chunk_spec.shape[0])
        rows = (samples.start, samples.stop, samples.chunk_length) if isinstance(samples, _SampleSpan) else None
        try:
            with decode_pool.reads_in_flight.chunk_read(rows):
                result = await self._decode_selection(byte_getter, selection, samples, chunk_spec)
            if result is None and self.all_chunks_stored:
                raise MissingChunkError(_key_of(byte_getter, len(chunk_spec.shape)))
            return result
        except CorruptChunkError as exc:
            return fill_or_raise(exc, selection, chunk_spec)

    async def _decode_selection(
        self, byte_getter: ByteGetter, selection: tuple[Any, ...], samples: _SampleSelection, chunk_spec: ArraySpec
    ) -> NDBuffer | None:
        """Decode ``selection`` of one chunk (its first axis asking for ``samples``) from the whole
        chunk, or from its kept or fetched prefix and the frames it needs; None if the chunk is not stored."""
        key = _key_of(byte_getter, len(chunk_spec.shape))
        shape = chunk_spec.shape
        prototype = chunk_spec.prototype
        if samples.is_whole_chunk:
            whole = await _get(byte_getter, prototype, key)
            if whole is None:
                return None
            return await _decode_whole_chunk(whole.to_bytes(), selection, chunk_spec, key, gain=self.gain)

        location = location_of(byte_getter)
        if location is not None and (cached := prefixes.get(location)) is not None:
            try:
                result = await _decode_from_prefix(
                    byte_getter, cached, samples, selection, chunk_spec, key=key, gain=self.gain
                )
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
        if isinstance(prefix, PcmChunk):
            return await _decode_whole_chunk(prefix.data, selection, chunk_spec, key, gain=self.gain)
        if location is not None:
            prefixes.put(location, prefix)
        return await _decode_from_prefix(byte_getter, prefix, samples, selection, chunk_spec, key=key, gain=self.gain)


class ChunkEncoder:
    """One chunk's bytes from its samples fed in blocks, in order: the bytes ``AACCodec.encode_pcm``
    makes of them all at once, without holding them all. Besides the AAC frames it keeps the
    chunk's first samples until the lead-in is predicted from them and its last ones for the
    lead-out, ``FIT_SAMPLES`` each.

    Parameters
    ----------
    codec : AACCodec
        The codec whose rates and bitrate the chunk is encoded with.
    channels : int
        The chunk's channel count, 1 to 8.
    dtype : numpy.dtype
        The dtype of the samples fed, which picks the default gain when the codec has none.
    """

    BLOCK_LENGTH = 65536
    """Samples converted to float32 at a time by ``encode_pcm``."""

    def __init__(self, codec: AACCodec, channels: int, dtype: np.dtype) -> None:
        self.aac_sample_rate = codec.aac_sample_rate
        self.channels = channels
        self.n_samples = 0
        self._gain = codec._gain_for(dtype)
        self._encoder = aac.FrameEncoder(channels, codec.aac_sample_rate, codec._bitrate_for(channels), codec.cutoff)
        self._head: list[np.ndarray] | None = []
        """The first samples, until there are enough to predict the lead-in from; then None."""
        self._head_length = 0
        self._tail = np.empty((0, channels), dtype=np.float32)

    def feed(self, pcm: np.ndarray) -> None:
        """Encode the next int16 or float32 samples of the chunk, shape (samples, channels).

        Raises
        ------
        UnsupportedAudioError
            If a sample is NaN or infinite.
        """
        block = aac.from_dtype(pcm, gain=self._gain)
        if block.size and not (np.isfinite(block.min()) and np.isfinite(block.max())):
            raise UnsupportedAudioError("cannot encode NaN or infinite samples")
        self.n_samples += block.shape[0]
        self._tail = np.concatenate((self._tail, block[-FIT_SAMPLES:]))[-FIT_SAMPLES:]
        if self._head is None:
            self._encoder.feed(block)
            return
        self._head.append(block)
        self._head_length += block.shape[0]
        if self._head_length >= FIT_SAMPLES:
            self._start()

    def _start(self) -> None:
        """Encode the lead-in predicted from the samples so far, then those samples."""
        assert self._head is not None
        head = np.concatenate(self._head) if self._head else np.empty((0, self.channels), dtype=np.float32)
        self._head = None
        self._encoder.feed(lead_in(head[:FIT_SAMPLES], LEAD_IN))
        self._encoder.feed(head)

    def finish(self) -> bytes:
        """The chunk: header, frame index, checksums and AAC frames (docs/spec.md)."""
        if self._head is not None:
            self._start()
        self._encoder.feed(lead_out(self._tail, LEAD_OUT))
        asc, frames = self._encoder.finish()
        return pack_chunk(
            asc,
            frames,
            channels=self.channels,
            aac_sample_rate=self.aac_sample_rate,
            n_samples=self.n_samples,
            skip=aac.ENCODER_PRIMING + LEAD_IN,
        )


@dataclass(frozen=True)
class PcmChunk:
    """A whole chunk fetched because its first bytes were a PCM chunk's (a live recording's
    unfinished tail): ``data`` is all of it, from one request, read by ``_decode_whole_chunk``.
    It is an AAC chunk if the writer encoded it between the two requests."""

    data: bytes


async def _fetch_prefix(
    byte_getter: ByteGetter, shape: tuple[int, ...], prototype: BufferPrototype, key: str | None
) -> ChunkPrefix | PcmChunk | None:
    """The chunk's parsed prefix in one request (two if its index is larger than this codec writes),
    or, for a PCM chunk, the whole chunk (one request more if the first did not hold all of it);
    None if the chunk is not stored, or is gone by the second request."""
    n_frames = aac.frames_for_samples(shape[0] + LEAD_IN + LEAD_OUT)
    first = await _get(byte_getter, prototype, key, RangeByteRequest(0, prefix_nbytes_upper_bound(n_frames)))
    if first is None:
        return None
    data = first.to_bytes()
    header = parse_header(data, key)
    check_chunk_geometry(header, shape, key)
    if header.is_pcm:
        if header.total_nbytes == len(data):
            return PcmChunk(data)
        # The rest in a request of its own could come from a newer version of the chunk (a live
        # writer rewrites it on every append): the whole chunk again, in one request.
        whole = await _get(byte_getter, prototype, key)
        return PcmChunk(whole.to_bytes()) if whole is not None else None
    if header.prefix_nbytes > len(data):
        rest = await _get(byte_getter, prototype, key, RangeByteRequest(len(data), header.prefix_nbytes))
        if rest is None:
            return None
        data += rest.to_bytes()
    return parse_prefix(data, header, key)


async def _decode_from_prefix(
    byte_getter: ByteGetter,
    prefix: ChunkPrefix,
    samples: _SampleSelection,
    selection: tuple[Any, ...],
    chunk_spec: ArraySpec,
    *,
    key: str | None,
    gain: float | None,
) -> NDBuffer | None:
    """Fetch, verify and decode the frames ``samples`` needs, in one request, undo ``gain`` and
    apply ``selection``'s other axes; None if the chunk is gone."""
    header = prefix.header
    shape = chunk_spec.shape
    check_chunk_geometry(header, shape, key)
    runs = samples.frame_runs(prefix.index, header.n_frames)
    frames = await _fetch_frames(byte_getter, prefix, runs[0][0], runs[-1][1], chunk_spec.prototype, key=key)
    if frames is None:
        return None
    out = await _decode_runs(frames, prefix, samples, runs, chunk_spec, gain=gain)
    return chunk_spec.prototype.nd_buffer.from_numpy_array(out[(samples.first_axis, *selection[1:])])


async def _decode_whole_chunk(
    data: bytes, selection: SelectorTuple, chunk_spec: ArraySpec, key: str | None, *, gain: float | None
) -> NDBuffer:
    """``selection`` of a whole chunk's bytes, all its checksums verified, decoded like a span of it."""
    shape = chunk_spec.shape
    header = parse_header(data, key)
    check_chunk_geometry(header, shape, key)
    if header.is_pcm:
        out = _pcm_chunk_samples(data, header, shape, chunk_spec.dtype.to_native_dtype(), key)
        return chunk_spec.prototype.nd_buffer.from_numpy_array(out[selection])
    prefix = parse_prefix(data, header, key)
    verify_payload(data, prefix, key)
    frames = _FetchedFrames(memoryview(data)[header.prefix_nbytes :], prefix.index, 0, key)
    samples = _SampleSpan(0, shape[0], shape[0])
    # Every frame, lead-in and flush included, as decode_chunk does: a malformed frame anywhere fails.
    out = await _decode_runs(frames, prefix, samples, [(0, header.n_frames)], chunk_spec, gain=gain)
    return chunk_spec.prototype.nd_buffer.from_numpy_array(out[selection])


def _pcm_chunk_samples(
    data: bytes, header: ChunkHeader, shape: tuple[int, ...], dtype: np.dtype, key: str | None
) -> np.ndarray:
    """A PCM chunk's samples, exactly as stored, as an array of the chunk ``shape``: the samples
    after the stored ones are the fill value, 0, as zarr pads the last chunk of an array."""
    stored = parse_pcm_chunk(data, header, dtype, key)
    out = np.zeros((header.n_samples, header.channels), dtype=dtype)
    out[: stored.shape[0]] = stored
    return out.reshape(shape)


async def _decode_runs(
    frames: _FetchedFrames,
    prefix: ChunkPrefix,
    samples: _SampleSelection,
    runs: list[tuple[int, int]],
    chunk_spec: ArraySpec,
    *,
    gain: float | None,
) -> np.ndarray:
    """``samples`` as ``chunk_spec``'s dtype, of shape (samples, *chunk shape[1:]), from ``runs`` of the
    fetched frames with ``gain`` undone (None: the dtype's default); a span of many frames in the
    decode worker processes."""
    header, shape = prefix.header, chunk_spec.shape
    dtype = chunk_spec.dtype.to_native_dtype()
    gain = gain if gain is not None else DEFAULT_GAINS.get(dtype, LEGACY_GAIN)
    n_frames = sum(stop - start for start, stop in runs)
    processes = _processes_for(samples, n_frames)
    if isinstance(samples, _SampleSpan) and processes:
        # A span decodes its last range here unless the event loop has other work: a short span
        # goes to the workers only while other calls' reads wait for the loop, and the chunks of
        # a read of several go to the workers whole while the loop fetches and hands out the others.
        keep = 0
        if n_frames >= decode_pool.POOL_MIN_FRAMES and not decode_pool.reads_in_flight.more_of_this_call():
            keep = 1
        out = await _decode_span_in_pool(
            frames, prefix, samples, runs, dtype=dtype, gain=gain, processes=processes, keep=keep
        )
    else:
        out = samples.decode(frames, _decoder_for(prefix), runs, header, dtype, gain=gain)
    return out.reshape((out.shape[0], *shape[1:]))


def _processes_for(samples: _SampleSelection, n_frames: int) -> int:
    """The decode worker processes to decode ``samples`` in (0: here): a span of
    ``decode_pool.POOL_MIN_FRAMES`` frames or more, or a shorter one while chunk reads of other
    calls in this process are in flight. Each chunk of a read decodes as its own task, so the large chunks
    of one read, or of reads from several threads, decode in the workers at once. A short span
    costs the reading process about as much to hand over as to decode, but its decode would hold
    the event loop that the other reads need."""
    if not isinstance(samples, _SampleSpan):
        return 0
    if n_frames < decode_pool.POOL_MIN_FRAMES and not decode_pool.concurrent_reads():
        return 0
    return decode_pool.decode_processes()


async def _decode_span_in_pool(
    frames: _FetchedFrames,
    prefix: ChunkPrefix,
    samples: _SampleSpan,
    runs: list[tuple[int, int]],
    *,
    dtype: np.dtype,
    gain: float,
    processes: int,
    keep: int,
) -> np.ndarray:
    """The span's samples decoded by the worker processes, in ranges of at least SPLIT_MIN_FRAMES
    frames (one range for chunks of other encoders, which may use PNS), into a shared array; the
    last ``keep`` ranges (0 or 1) decode in this process."""
    header = prefix.header
    ((first, stop),) = runs
    kept_first = frames.index.frame_of(samples.start)
    # The last range decodes in this process (decode_async), which hands nothing over: it takes
    # HANDOFF_FRAMES more, so that it ends about when the workers' ranges come back.
    shared_frames = stop - kept_first - HANDOFF_FRAMES
    ranges = max(1, min(processes, shared_frames // SPLIT_MIN_FRAMES)) if _pns_off(header) else 1
    width = shared_frames / ranges
    bounds = [kept_first + round(i * width) for i in range(ranges)] + [stop]
    # Each range holds samples of the span. The first begins with the run's own pre-roll frame;
    # each later one decodes the frame before it as its pre-roll.
    starts = [first, *(b - 1 for b in bounds[1:-1])]
    offsets = frames.index.byte_offsets
    jobs = []
    for start, keep_from, end in zip(starts, bounds[:-1], bounds[1:], strict=True):
        lo = max(samples.start, keep_from * aac.FRAME_LENGTH - header.skip)
        hi = min(samples.stop, end * aac.FRAME_LENGTH - header.skip)
        jobs.append(
            decode_pool.DecodeJob(
                asc=prefix.asc,
                channels=header.channels,
                reuse=_pns_off(header),
                payload=frames.data[int(offsets[start]) - frames.base : int(offsets[end]) - frames.base],
                frame_offsets=offsets[start : end + 1] - offsets[start],
                first_sample=start * aac.FRAME_LENGTH - header.skip,
                writes=(decode_pool.Write(lo, hi, (slice(lo - samples.start, hi - samples.start),), header.channels),),
                key=frames.key,
                first_frame=start,
            )
        )
    what = f"samples {samples.start}-{samples.stop - 1} of chunk {frames.key!r}"
    with decode_pool.SharedOutput((samples.stop - samples.start, header.channels), dtype, jobs) as shared:
        failures = await decode_pool.decode_async(shared, jobs, gain, processes, what, keep=keep)
        if failures:
            raise failures[0][1]
        return shared.result()


async def _fetch_frames(
    byte_getter: ByteGetter, prefix: ChunkPrefix, first: int, stop: int, prototype: BufferPrototype, *, key: str | None
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

    def frame_runs(self, index: FrameIndex, n_frames: int) -> list[tuple[int, int]]:
        """The one [first, stop) run of frames holding the span, its pre-roll frame included.

        The chunk's ``n_frames`` frames hold every sample of it: ``parse_header`` refuses fewer than
        its skip and samples take, and ``check_chunk_geometry`` ties its samples to the chunk length."""
        return [(max(index.frame_of(self.start) - 1, 0), index.frame_of(self.stop - 1) + 1)]

    def decode(
        self,
        frames: _FetchedFrames,
        decoder: aac.FrameDecoder,
        runs: list[tuple[int, int]],
        header: ChunkHeader,
        dtype: np.dtype,
        *,
        gain: float,
    ) -> np.ndarray:
        """The span's samples as ``dtype``, shape (samples, channels), from the run ``frame_runs`` gave."""
        ((run_start, run_stop),) = runs
        scratch = aac.scratch_buffer((run_stop - run_start) * aac.FRAME_LENGTH, header.channels)
        pcm = frames.decode_run(decoder, run_start, run_stop, scratch)
        offset = run_start * aac.FRAME_LENGTH - header.skip
        out = aac.to_dtype(pcm[self.start - offset : self.stop - offset], dtype, overwrite=True, gain=gain)
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
        if rows.size and (rows[0] < 0 or rows[-1] >= chunk_length):
            # zarr 3.1 places the rows of an unsorted index array of unsigned integers in the wrong chunks.
            outside = int(rows[0] if rows[0] < 0 else rows[-1])
            raise IndexError(
                f"zarr asked a chunk of {chunk_length} samples for its sample {outside}, which it does not hold "
                "(zarr 3.1 does so for an unsorted index array of unsigned integers: index with int64 instead)"
            )
        return cls(rows, inverse.reshape(indices.shape), chunk_length)

    @property
    def is_whole_chunk(self) -> bool:
        return self.rows.size == self.chunk_length

    def frame_runs(self, index: FrameIndex, n_frames: int) -> list[tuple[int, int]]:
        """[first, stop) runs of consecutive frames holding the rows, with the pre-roll frame before
        each, among the chunk's ``n_frames`` (which hold every row: ``_SampleSpan.frame_runs``)."""
        holding = index.frame_of(self.rows)
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
        *,
        gain: float,
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
        return aac.to_dtype(compact, dtype, overwrite=True, gain=gain)


_SampleSelection: TypeAlias = _SampleSpan | _SampleRows


def _sample_selection(selector: Any, chunk_length: int) -> _SampleSelection:
    """What a first-axis selector asks of a chunk: a span if it is a non-empty slice with step 1, else rows."""
    if isinstance(selector, slice):
        start, stop, step = selector.indices(chunk_length)
        if step == 1 and stop > start:
            return _SampleSpan(start, stop, chunk_length)
    return _SampleRows.of(selector, chunk_length)


def _decoder_for(prefix: ChunkPrefix) -> aac.FrameDecoder:
    """A decoder for the chunk's frames, reused where that gives a fresh one's samples (``_pns_off``)."""
    return aac.FrameDecoder(prefix.asc, prefix.header.channels, reuse=_pns_off(prefix.header))


def _pns_off(header: ChunkHeader) -> bool:
    """Chunks this codec encoded (the ones with checksums) have PNS off and skip at least the
    first frame, so a reused decoder, or a run started one pre-roll frame early, gives the samples
    of a sequential decode; frames taken from other encoders' files may use PNS, whose noise
    depends on every frame before: they are decoded by fresh decoders, in one run per read."""
    return header.checksum_group > 0 and header.skip >= aac.FRAME_LENGTH


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
