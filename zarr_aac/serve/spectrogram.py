"""Spectrograms of a window of a recording, from seconds to hours, without decoding all of a long one.

A window is drawn as ``columns`` columns. When reading the whole window costs at most
:data:`FULL_READ_FACTOR` times the reduced path, every sample is read and each column is the
mean power spectrum of the Hann-windowed FFT frames (half-overlapping) that fall in its span.
Longer windows take the reduced path: each column is the mean spectrum of one short clip of
``REDUCED_FRAMES_PER_COLUMN`` half-overlapping FFT frames at the column's centre, all clips read
at once with :func:`~zarr_aac.codec.clips.read_clips`, which fetches and decodes only the AAC
frames holding them. The rest of each column's span is not read, so an event shorter than the
gap between clips can fall between columns; ``Spectrogram.reduced`` says which path drew it.

Frequencies are in true Hz: the samples come from the array at its true ``sample_rate``,
whatever rate the AAC stream declares (ultrasonic recordings are stored time-stretched).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import zarr

from zarr_aac.archive.recordings import codec_of
from zarr_aac.codec.clips import read_clips
from zarr_aac.validation import channels_of

MIN_NFFT, MAX_NFFT = 64, 16384
MAX_COLUMNS = 4096
REDUCED_FRAMES_PER_COLUMN = 3
"""Half-overlapping FFT frames averaged into each column on the reduced path (a clip of 2 FFT lengths)."""
FULL_READ_FACTOR = 4
"""A window is read whole when it is at most this many times the samples the reduced path reads."""
FFT_BLOCK_FRAMES = 1024
"""FFT frames transformed at once on the full path."""
_FULL_SCALE = {np.dtype("int16"): 32768.0, np.dtype("float32"): 1.0}

_COLOUR_STOPS = np.array(
    [
        [0, 0, 4],
        [40, 11, 84],
        [101, 21, 110],
        [159, 42, 99],
        [212, 72, 66],
        [245, 125, 21],
        [250, 193, 39],
        [252, 255, 164],
    ],
    dtype=np.float64,
)
"""An inferno-like colour ramp whose luminance rises monotonically: brighter is louder."""
_RAMP = (
    np.stack(
        [
            np.interp(np.linspace(0, 1, 256), np.linspace(0, 1, len(_COLOUR_STOPS)), _COLOUR_STOPS[:, i])
            for i in range(3)
        ],
        axis=-1,
    )
    .round()
    .astype(np.uint8)
)
"""The ramp at 256 levels, indexed by level."""


@dataclass(frozen=True)
class Spectrogram:
    """Power in dB relative to full scale of ``columns`` columns of one channel of a window."""

    power_db: np.ndarray
    """(n_frequencies, n_columns) float32; a full-scale sine's bin is about 0 dB."""
    frequencies_hz: np.ndarray
    times_s: np.ndarray
    """Each column's centre, in seconds from the start of the recording."""
    sample_rate: int
    first: int
    last: int
    channel: int
    nfft: int
    reduced: bool
    """True: each column is the spectrum of a short clip at its centre (see the module docstring)."""
    samples_read: int

    def to_json(self) -> dict[str, object]:
        """A JSON-ready description: axes, dB values rounded to 0.1 dB, and how it was drawn."""
        return {
            "sample_rate": self.sample_rate,
            "first_sample": self.first,
            "last_sample": self.last,
            "channel": self.channel,
            "nfft": self.nfft,
            "reduced": self.reduced,
            "samples_read": self.samples_read,
            "frequencies_hz": [round(float(f), 3) for f in self.frequencies_hz],
            "times_s": [round(float(t), 6) for t in self.times_s],
            "power_db": np.round(self.power_db.astype(np.float64), 1).tolist(),
        }

    def to_png(self, dynamic_range_db: float = 90.0, height: int | None = None) -> bytes:
        """An RGB PNG, low frequencies at the bottom, the loudest bin white-yellow and anything
        ``dynamic_range_db`` below it black; ``height`` resamples the frequency axis."""
        from PIL import Image

        top = float(np.max(self.power_db)) if self.power_db.size else 0.0
        level = np.clip((self.power_db[::-1] - (top - dynamic_range_db)) / dynamic_range_db, 0.0, 1.0)
        if height is not None and height != level.shape[0]:
            resized = Image.fromarray(level.astype(np.float32), mode="F").resize(
                (level.shape[1], height), Image.Resampling.BILINEAR
            )
            level = np.clip(np.asarray(resized), 0.0, 1.0)
        image = Image.fromarray(colourise(level), mode="RGB")
        out = io.BytesIO()
        image.save(out, format="PNG", compress_level=1)  # level 6 took 0.5 s for 1000 x 320 noise
        return out.getvalue()


def colourise(level: np.ndarray) -> np.ndarray:
    """uint8 RGB of levels in [0, 1] on the colour ramp (256 steps)."""
    return _RAMP[np.rint(level * 255).astype(np.intp)]


def parse_nfft(value: int) -> int:
    """``value`` if it is a power of two from MIN_NFFT to MAX_NFFT; else ValueError."""
    if not MIN_NFFT <= value <= MAX_NFFT or value & (value - 1):
        raise ValueError(f"nfft must be a power of two from {MIN_NFFT} to {MAX_NFFT}, got {value}")
    return value


def parse_columns(value: int) -> int:
    """``value`` if it is from 1 to MAX_COLUMNS; else ValueError."""
    if not 1 <= value <= MAX_COLUMNS:
        raise ValueError(f"columns must be from 1 to {MAX_COLUMNS}, got {value}")
    return value


def compute_spectrogram(
    array: zarr.Array, first: int, last: int, *, channel: int = 0, columns: int = 800, nfft: int = 1024
) -> Spectrogram:
    """The spectrogram of samples [first, last) of ``channel`` of a recording, in ``columns`` columns.

    Parameters
    ----------
    array
        A recording stored with the zarr_aac codec.
    first, last
        The window, in samples; ``0 <= first < last <= len(array)``.
    channel
        Which channel to draw.
    columns
        Columns of the result.
    nfft
        FFT length, a power of two: the frequency resolution is ``sample_rate / nfft``.

    Returns
    -------
    Spectrogram

    Raises
    ------
    ValueError
        If the window is empty or outside the recording, the channel does not exist, or
        ``columns`` or ``nfft`` is out of range.
    """
    rate = codec_of(array).sample_rate
    n_samples, channels = array.shape[0], channels_of(array.shape)
    parse_nfft(nfft)
    parse_columns(columns)
    if not 0 <= first < last <= n_samples:
        raise ValueError(f"window [{first}, {last}) samples is empty or outside the recording (0 to {n_samples})")
    if not 0 <= channel < channels:
        raise ValueError(f"channel {channel} does not exist; the recording has {channels} (0 to {channels - 1})")
    if last - first < nfft:
        raise ValueError(f"window of {last - first} samples is shorter than one FFT frame (nfft={nfft}); widen it")
    clip = nfft * (REDUCED_FRAMES_PER_COLUMN + 1) // 2
    full_scale = _FULL_SCALE[array.dtype]
    if last - first <= FULL_READ_FACTOR * columns * clip:
        pcm = _channel(np.asarray(array[first:last]), channel) / full_scale
        return spectrogram_of_samples(pcm, rate, first=first, channel=channel, columns=columns, nfft=nfft)
    window = np.hanning(nfft).astype(np.float32)
    centres = first + (np.arange(columns) + 0.5) * (last - first) / columns
    starts = np.clip(np.rint(centres - clip / 2).astype(np.int64), first, last - clip)
    clips = read_clips(array, starts, clip)
    clips = clips[..., channel] if clips.ndim == 3 else clips
    frames = np.lib.stride_tricks.sliding_window_view(clips.astype(np.float32) / full_scale, nfft, axis=1)
    power = (np.abs(np.fft.rfft(frames[:, :: nfft // 2] * window, axis=-1)) ** 2).mean(axis=1).T
    return Spectrogram(
        power_db=_db(power, window),
        frequencies_hz=np.fft.rfftfreq(nfft, 1 / rate),
        times_s=(starts + clip / 2) / rate,
        sample_rate=rate,
        first=first,
        last=last,
        channel=channel,
        nfft=nfft,
        reduced=True,
        samples_read=columns * clip,
    )


def spectrogram_of_samples(
    pcm: np.ndarray, rate: int, *, first: int = 0, channel: int = 0, columns: int = 800, nfft: int = 1024
) -> Spectrogram:
    """The spectrogram of float samples ``pcm`` (one channel, full scale 1) read whole: each of
    ``columns`` columns is the mean power of the half-overlapping FFT frames in its span, or,
    when there are fewer such frames than columns, of one frame centred on it. ``first`` is the
    sample number of ``pcm[0]``."""
    parse_nfft(nfft)
    parse_columns(columns)
    if len(pcm) < nfft:
        raise ValueError(f"{len(pcm)} samples are fewer than one FFT frame (nfft={nfft})")
    pcm = np.asarray(pcm, dtype=np.float32)
    window = np.hanning(nfft).astype(np.float32)
    edges = np.linspace(0, len(pcm), columns + 1).astype(np.int64)
    if (len(pcm) - nfft) // (nfft // 2) + 1 >= columns:
        power = _column_power(pcm, edges, nfft, window)
    else:  # fewer half-overlapping frames than columns: one frame centred on each column
        centres = (edges[:-1] + edges[1:]) // 2
        starts = np.clip(centres - nfft // 2, 0, len(pcm) - nfft)
        frames = np.lib.stride_tricks.sliding_window_view(pcm, nfft)[starts]
        power = (np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2).T
    return Spectrogram(
        power_db=_db(power, window),
        frequencies_hz=np.fft.rfftfreq(nfft, 1 / rate),
        times_s=(first + (edges[:-1] + edges[1:]) / 2) / rate,
        sample_rate=rate,
        first=first,
        last=first + len(pcm),
        channel=channel,
        nfft=nfft,
        reduced=False,
        samples_read=len(pcm),
    )


def _db(power: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Power in dB relative to a full-scale sine's peak bin through ``window``."""
    reference = (float(window.sum()) / 2) ** 2
    return (10 * np.log10(power / reference + 1e-20)).astype(np.float32)


def _channel(pcm: np.ndarray, channel: int) -> np.ndarray:
    return (pcm[:, channel] if pcm.ndim == 2 else pcm).astype(np.float32)


def _column_power(pcm: np.ndarray, edges: np.ndarray, nfft: int, window: np.ndarray) -> np.ndarray:
    """(nfft // 2 + 1, columns) mean power of the half-overlapping FFT frames starting in each
    column's span [edges[c], edges[c + 1]), or of the frame at the column's start where none does.
    Frames are transformed a block at a time, so memory stays bounded."""
    hop = nfft // 2
    starts = np.arange(0, len(pcm) - nfft + 1, hop)
    view = np.lib.stride_tricks.sliding_window_view(pcm, nfft)
    cumulative = np.zeros((len(starts) + 1, nfft // 2 + 1), dtype=np.float64)
    for block in range(0, len(starts), FFT_BLOCK_FRAMES):
        chosen = starts[block : block + FFT_BLOCK_FRAMES]
        cumulative[block + 1 : block + 1 + len(chosen)] = np.abs(np.fft.rfft(view[chosen] * window, axis=-1)) ** 2
    np.cumsum(cumulative, axis=0, out=cumulative)
    lo, hi = np.searchsorted(starts, edges[:-1]), np.searchsorted(starts, edges[1:])
    counts = hi - lo
    power = (cumulative[hi] - cumulative[lo]) / np.maximum(counts, 1)[:, None]
    for column in np.flatnonzero(counts == 0):
        start = min(int(edges[column]), len(pcm) - nfft)
        power[column] = np.abs(np.fft.rfft(pcm[start : start + nfft] * window)) ** 2
    return power.T
