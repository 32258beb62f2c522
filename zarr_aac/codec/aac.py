"""AAC-LC encoding and frame-exact decoding with PyAV.

Everything here works on raw AAC frames (no ADTS/MP4 container) plus the AudioSpecificConfig
(ASC) that describes them, which is what a chunk stores.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator, Sequence

import av
import numpy as np

from zarr_aac.errors import AudioDecodeError, BitrateClampedWarning, UnsupportedAudioError

FRAME_LENGTH = 1024
"""Samples per channel in one AAC-LC frame."""

ENCODER_PRIMING = 1024
"""Samples FFmpeg's native AAC encoder emits before the first input sample."""

AAC_SAMPLE_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000)
"""The sampling-frequency table of ISO/IEC 14496-3, in index order."""

MAX_CHANNELS = 8
_LAYOUTS = {1: "mono", 2: "stereo", 3: "3.0", 4: "quad", 5: "5.0", 6: "6.0", 7: "7.0", 8: "octagonal"}
"""Layouts without an LFE channel: AAC low-passes LFE to 120 Hz, which would ruin a microphone."""
MAX_BITS_PER_SAMPLE = 6
"""AAC caps a frame at 6144 bits per channel, i.e. 6 bits per sample and channel."""


def channel_layout(channels: int) -> str:
    """FFmpeg layout name used for ``channels`` channels; channel order is the array's order."""
    try:
        return _LAYOUTS[channels]
    except KeyError:
        raise UnsupportedAudioError(
            f"AAC stores 1 to {MAX_CHANNELS} channels per chunk, not {channels}; "
            "chunk a wider array along the channel axis"
        ) from None


def check_aac_sample_rate(rate: int) -> int:
    if rate not in AAC_SAMPLE_RATES:
        legal = ", ".join(str(r) for r in sorted(AAC_SAMPLE_RATES))
        raise UnsupportedAudioError(f"{rate} Hz is not an AAC sample rate; AAC allows {legal}")
    return rate


def nearest_aac_sample_rate(rate: int) -> int:
    """The AAC rate to declare for a source at ``rate`` Hz (time-stretch for illegal rates).

    Rates above 96 kHz map to 96 kHz, rates below 8 kHz to 8 kHz, and others to the closest
    legal rate at or above them, so no band of the source is pushed past the encoder's range.
    """
    if rate in AAC_SAMPLE_RATES:
        return rate
    above = [r for r in AAC_SAMPLE_RATES if r >= rate]
    return min(above) if above else max(AAC_SAMPLE_RATES)


ULTRASONIC_STRETCH = 2
"""A source more than this many times faster than its declared AAC rate is ultrasonic material
time-stretched onto it: its calls crowd into a few kHz of the coded band and need more bits."""
ULTRASONIC_BITRATE_PER_CHANNEL = 192_000
"""Default for ultrasonic material: at 48 kHz declared, 130 kbps moved FM sweeps' call-band SNR to
17-22 dB; 192 kbps gives 36-50 dB (docs/fidelity.md)."""


def default_bitrate(channels: int, aac_sample_rate: int, sample_rate: int | None = None) -> int:
    """Bits per second (at the AAC rate) when the user gives none.

    130 kbps mono and 160 kbps stereo as in the system this replaces, 80 kbps per channel above
    two, and never more than half of what AAC can carry at that rate. A ``sample_rate`` more than
    ULTRASONIC_STRETCH times ``aac_sample_rate`` gets 192 kbps mono (160 kbps a channel above),
    up to what AAC can carry.
    """
    if sample_rate is not None and sample_rate > ULTRASONIC_STRETCH * aac_sample_rate:
        base = {1: ULTRASONIC_BITRATE_PER_CHANNEL, 2: 320_000}.get(channels, 160_000 * channels)
        return min(base, MAX_BITS_PER_SAMPLE * aac_sample_rate * channels)
    base = {1: 130_000, 2: 160_000}.get(channels, 80_000 * channels)
    ceiling = MAX_BITS_PER_SAMPLE * aac_sample_rate * channels // 2
    return min(base, ceiling)


def frames_for_samples(n_samples: int, priming: int = ENCODER_PRIMING) -> int:
    """Frames FFmpeg's encoder emits for ``n_samples`` samples (priming plus flush included)."""
    return -(-(n_samples + priming) // FRAME_LENGTH)


def encoder_options(channels: int, cutoff: int | None = None) -> dict[str, str]:
    """FFmpeg ``aac`` encoder options for ``channels`` channels (PyAV ignores misspelt ones silently,
    so tests/test_channel_fidelity.py checks their effect).

    Above two channels (microphone arrays) intensity stereo is off and the ``fast`` coder replaces
    ``twoloop``: at 80 kbps a channel twoloop with intensity stereo codes a pair's high bands as
    one signal and a level, and coded paired channels and pure tones far worse than these options,
    which cost about a tenth more bytes. Mono and stereo keep FFmpeg's defaults: turning intensity
    stereo off also lowers FFmpeg's automatic low-pass, which cut the top of time-stretched bat
    calls. docs/design-notes.md has the measurements.

    ``cutoff`` is the encoder's low-pass in Hz at the declared rate (a generic codec option, not
    one of the encoder's own). FFmpeg's automatic one follows the bitrate and stops near 22-24 kHz
    whatever the rate, so ``encode_frames`` always gives it (docs/fidelity.md).
    """
    options = {"aac_pns": "0"}
    if cutoff is not None:
        options["cutoff"] = str(cutoff)
    if channels > 2:
        options.update(aac_is="0", aac_coder="fast")
    return options


class FrameEncoder:
    """Encodes float32 PCM of shape (n, channels), fed in blocks of any length, to raw AAC-LC frames.

    PNS is switched off: its noise generator carries state across frames, which would make a
    decode that starts mid-stream differ from a sequential one. Frames go in interleaved (PyAV
    builds planar frames of 8 channels with a bogus ninth plane); the encoder converts them.
    ``cutoff`` (Hz, at most the declared Nyquist frequency) defaults to that Nyquist frequency,
    the whole band. See ``encoder_options`` for the rest. The encoder sees the same frames however
    the samples are split into blocks, so the output does not depend on the split.
    """

    def __init__(self, channels: int, aac_sample_rate: int, bitrate: int, cutoff: int | None = None) -> None:
        self.layout = channel_layout(channels)
        self.channels = channels
        self.aac_sample_rate = aac_sample_rate
        ctx = av.CodecContext.create("aac", "w")
        ctx.sample_rate = aac_sample_rate
        ctx.layout = self.layout
        ctx.format = "fltp"
        ctx.bit_rate = bitrate
        ctx.options = encoder_options(channels, cutoff if cutoff is not None else aac_sample_rate // 2)
        ctx.open()
        if ctx.bit_rate < bitrate:
            # FFmpeg clamps in silence (its log is off): the stored signal would carry less than asked.
            warnings.warn(
                f"FFmpeg's AAC encoder carries at most {ctx.bit_rate} bit/s for {channels} channel(s) at "
                f"{aac_sample_rate} Hz and encodes at that, not at the {bitrate} bit/s the codec asks for "
                "(the array's metadata keeps the higher figure). Give the codec a bitrate of at most "
                f"{ctx.bit_rate}, or chunks of more channels: without one, the default follows the "
                "array's channel count, not the chunk's.",
                BitrateClampedWarning,
                stacklevel=2,
            )
        self._ctx = ctx
        self._pending = np.empty((0, channels), dtype=np.float32)
        """The samples of a frame not yet whole, kept for the next block."""
        self._position = 0
        self.frames: list[bytes] = []

    def _encode(self, interleaved: np.ndarray) -> None:
        frame = av.AudioFrame.from_ndarray(interleaved.reshape(1, -1), format="flt", layout=self.layout)
        frame.sample_rate = self.aac_sample_rate
        frame.pts = self._position
        self._position += interleaved.shape[0]
        self.frames.extend(bytes(p) for p in self._ctx.encode(frame))

    def feed(self, pcm: np.ndarray) -> None:
        """Encode the whole frames of what came before and ``pcm``; keep the rest for later."""
        if self._pending.shape[0]:
            pcm = np.concatenate((self._pending, pcm))
        interleaved = np.ascontiguousarray(pcm, dtype=np.float32)
        whole = interleaved.shape[0] - interleaved.shape[0] % FRAME_LENGTH
        for start in range(0, whole, FRAME_LENGTH):
            self._encode(interleaved[start : start + FRAME_LENGTH])
        self._pending = interleaved[whole:].copy()

    def finish(self) -> tuple[bytes, list[bytes]]:
        """Encode the last, short frame and flush the encoder; return (ASC, raw frames)."""
        if self._pending.shape[0]:
            self._encode(self._pending)
            self._pending = self._pending[:0]
        self.frames.extend(bytes(p) for p in self._ctx.encode(None))
        if self._ctx.extradata is None:
            raise RuntimeError("FFmpeg's AAC encoder gave no AudioSpecificConfig")
        return bytes(self._ctx.extradata), self.frames


MAX_IDLE_DECODERS = 4
"""Opened decoders kept per AudioSpecificConfig for reuse (one per thread reading at once)."""
MAX_DECODER_CONFIGS = 8
"""AudioSpecificConfigs with kept decoders; past this many the pool starts over. An opened
decoder holds about 0.7 MB, so the pool never holds more than about 22 MB."""
_idle_decoders: dict[bytes, list[tuple[av.AudioCodecContext, str]]] = {}


def drop_idle_decoders() -> None:
    """Close the kept decoders, so the next reads open fresh ones.

    A decoder goes back to the pool after a run FFmpeg decoded without an error, and only
    chunks whose frame checksums verified are decoded with pooled decoders. Frames forged with
    recomputed checksums can decode without an error and leave a decoder in a state that a
    flush does not clear, so that it decodes later, intact chunks with the same
    AudioSpecificConfig wrongly (docs/reliability.md, "Not guaranteed"). Call this after
    reading chunks of an archive you do not trust.
    """
    _idle_decoders.clear()


_FLOAT32 = np.dtype(np.float32)
"""For np.frombuffer, called once per plane and frame: a dtype instance and positional arguments
are cheaper than ``dtype=np.float32, count=n`` (docs/design-notes.md)."""


class FrameDecoder:
    """Decodes runs of raw AAC frames to float32 PCM of shape (n, channels).

    AAC-LC output for frame k is exact once a fresh decoder has seen frame k-1, so a run that
    does not start the stream begins with one pre-roll frame whose output the caller drops.

    Opening an AAC decoder costs as much as several frames of decoding (FFmpeg sets up its
    transforms per context), so with ``reuse=True`` opened decoders are kept per ASC and
    flushed before the next run. A flush clears the overlap state but not the previous frame's
    window shape, so a reused decoder's output equals a fresh one's from the second frame of a
    run on; the first frame's output (the pre-roll, or the encoder priming at the stream start)
    can differ and must be dropped. With PNS, whose noise generator a flush does not reset,
    outputs differ further: reuse only frames encoded with PNS off. A decoder is kept only after
    a run without errors that left its channel layout as the ASC set it.
    """

    def __init__(self, asc: bytes, channels: int, *, reuse: bool = False) -> None:
        self.asc = asc
        self.channels = channels
        self.reuse = reuse

    def _context(self) -> tuple[av.AudioCodecContext, str]:
        if self.reuse:
            try:
                ctx, opened_as = _idle_decoders.get(self.asc, []).pop()
            except IndexError:
                pass
            else:
                ctx.flush_buffers()
                return ctx, opened_as
        ctx = av.CodecContext.create("aac", "r")
        ctx.extradata = self.asc
        ctx.open()
        return ctx, ctx.layout.name

    def _keep(self, ctx: av.AudioCodecContext, opened_as: str) -> None:
        if not self.reuse or ctx.layout.name != opened_as:
            return
        if self.asc not in _idle_decoders and len(_idle_decoders) >= MAX_DECODER_CONFIGS:
            _idle_decoders.clear()  # atomic, unlike evicting one entry while other threads use the dict
        idle = _idle_decoders.setdefault(self.asc, [])
        if len(idle) < MAX_IDLE_DECODERS:
            idle.append((ctx, opened_as))

    def decode(self, frames: Sequence[bytes | memoryview], out: np.ndarray | None = None) -> np.ndarray:
        """Decode ``frames`` in order from a fresh (or flushed) decoder; FRAME_LENGTH samples per frame.

        ``out``, a float32 (m, channels) array, is used as the output buffer when it holds the
        whole run, and the result is then a view of it.
        """
        ctx, opened_as = self._open()
        pcm = self._decode_with(ctx, frames, out)
        self._keep(ctx, opened_as)
        return pcm

    def decode_blocks(
        self, frames: Sequence[bytes | memoryview], block_frames: int, out: np.ndarray | None = None
    ) -> Iterator[np.ndarray]:
        """Decode ``frames`` in order, as ``decode`` does, yielding the PCM of each ``block_frames``
        of them in turn: a long run decodes through one buffer of a block (``out`` when it holds
        one), each block a view of it that the next overwrites."""
        ctx, opened_as = self._open()
        for first in range(0, len(frames), block_frames):
            yield self._decode_with(ctx, frames[first : first + block_frames], out)
        self._keep(ctx, opened_as)

    def _open(self) -> tuple[av.AudioCodecContext, str]:
        try:
            return self._context()
        except av.FFmpegError as exc:
            raise AudioDecodeError(f"AAC decoder rejected the AudioSpecificConfig: {exc}") from exc

    def _decode_with(
        self, ctx: av.AudioCodecContext, frames: Sequence[bytes | memoryview], out: np.ndarray | None
    ) -> np.ndarray:
        """The PCM of ``frames`` from ``ctx``, in ``out`` if it holds them.

        Each frame's planes are copied straight into the columns of one (n, channels) buffer sized
        for the run: per frame Python work is what limits the speed, so the loop binds what it calls
        and makes one array per plane. Interleaving frame by frame, while the frame is in cache, is
        cheaper than filling a planar buffer and transposing the whole run later.
        """
        channels = self.channels
        needed = len(frames) * FRAME_LENGTH
        pcm = out if out is not None and len(out) >= needed else np.empty((needed, channels), dtype=np.float32)
        columns = list(pcm.T)
        filled = 0
        decode, packet, frombuffer = ctx.decode, av.Packet, np.frombuffer
        try:
            for data in frames:
                # PyAV's Packet takes any buffer; its stub admits only bytes.
                for frame in decode(packet(data)):  # type: ignore[arg-type]
                    if frame.format.name != "fltp" or frame.layout.nb_channels != channels:
                        raise AudioDecodeError(
                            f"decoder produced {frame.format.name} with {frame.layout.nb_channels} channels, "
                            f"expected fltp with {channels}"
                        )
                    n = frame.samples
                    stop = filled + n
                    if stop > len(pcm):
                        pcm = np.concatenate((pcm[:filled], np.empty((n, channels), np.float32)))
                        columns = list(pcm.T)
                    # zip stops at the real channels: PyAV lists a bogus ninth plane for 8 channels.
                    for column, plane in zip(columns, frame.planes, strict=False):
                        # numpy's stub lists a few buffer types; a PyAV plane is a buffer too.
                        column[filled:stop] = frombuffer(plane, _FLOAT32, n)  # type: ignore[call-overload]
                    filled = stop
        except av.FFmpegError as exc:
            raise AudioDecodeError(f"AAC decoder failed: {exc}") from exc
        return pcm[:filled]


def frame_runs(frames: Sequence[int] | np.ndarray) -> list[tuple[int, int]]:
    """Group sorted unique frame numbers into [start, stop) runs of consecutive frames."""
    frames = np.asarray(frames)
    if frames.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(frames) != 1) + 1
    starts = np.concatenate(([0], breaks))
    stops = np.concatenate((breaks, [frames.size]))
    return [(int(frames[a]), int(frames[b - 1]) + 1) for a, b in zip(starts, stops, strict=True)]


SCRATCH_MAX_BYTES = 8 << 20
"""Largest decode buffer a thread keeps between decodes (10 s of 4 channels at 48 kHz). glibc
hands a freed block of a few hundred KB back to the system, so a fresh buffer for each decode
would page-fault on every 4 KB page it fills (docs/design-notes.md has the cost)."""
_scratch_buffers = threading.local()


def scratch_buffer(samples: int, channels: int) -> np.ndarray | None:
    """This thread's float32 (samples, channels) decode buffer, or None when too large to keep.
    Its contents last until the thread's next call: no await may come between filling and using it."""
    size = samples * channels
    if size * 4 > SCRATCH_MAX_BYTES:
        return None
    buffer = getattr(_scratch_buffers, "buffer", None)
    if buffer is None or buffer.size < size:
        buffer = _scratch_buffers.buffer = np.empty(size, dtype=np.float32)
    return buffer[:size].reshape(samples, channels)


_INT16_SCALE = np.float32(32768.0)
_INT16_FLOOR = np.float32(-1.0)
_INT16_CEILING = np.float32(32767 / 32768)
"""The largest float32 sample that scales to an int16 (exact: 15 bits of mantissa)."""


def to_dtype(pcm: np.ndarray, dtype: np.dtype, *, overwrite: bool = False, gain: float = 1.0) -> np.ndarray:
    """Convert decoded float32 PCM to the array dtype, undoing the codec's ``gain`` (int16 is
    scaled by 32768/gain, rounded and clipped; float32 is divided by ``gain``).

    ``overwrite=True`` lets the conversion work in ``pcm`` instead of a copy. Clipping to
    gain x [-1, 32767/32768] before the scaling gives the samples clipping after it would, and is
    faster: the clip makes the copy and the scaling runs in place. With ``gain`` a power of two
    the bounds and the scaling are exact.
    """
    scaled = _scaled(pcm, dtype, gain, out=pcm if overwrite else None)
    return scaled if dtype == np.float32 else scaled.astype(np.int16)


def scale_in_place(pcm: np.ndarray, dtype: np.dtype, *, gain: float = 1.0) -> np.ndarray:
    """``to_dtype``'s samples, computed in ``pcm`` and left as float32: each holds a value of
    ``dtype`` exactly, so assigning them into an array of ``dtype`` gives ``to_dtype``'s result
    without the int16 array it would allocate."""
    return _scaled(pcm, dtype, gain, out=pcm)


def _scaled(pcm: np.ndarray, dtype: np.dtype, gain: float, out: np.ndarray | None) -> np.ndarray:
    """``pcm`` with ``gain`` undone, and for int16 clipped, scaled and rounded; into ``out`` if given."""
    if dtype == np.float32:
        return pcm if gain == 1.0 else np.divide(pcm, np.float32(gain), out=out)
    gain32 = np.float32(gain)
    scaled = pcm.clip(_INT16_FLOOR * gain32, _INT16_CEILING * gain32, out=out)
    scaled *= _INT16_SCALE / gain32
    np.rint(scaled, out=scaled)
    return scaled


def from_dtype(pcm: np.ndarray, out: np.ndarray | None = None, gain: float = 1.0) -> np.ndarray:
    """Convert int16 or float32 PCM to the float32 the encoder takes, times ``gain`` (into ``out`` if given)."""
    if out is None:
        out = np.empty(pcm.shape, dtype=np.float32)
    out[...] = pcm
    scale = np.float32(gain) / np.float32(32768.0) if pcm.dtype == np.int16 else np.float32(gain)
    if scale != 1:
        out *= scale
    return out
