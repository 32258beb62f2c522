"""A recording or a selection of one in a Jupyter notebook: a small spectrogram and an audio player.

``zarr_aac.show(array, start, stop)`` or ``zarr_aac.show(data_array)`` returns a
:class:`RecordingView`, which IPython displays through ``_repr_html_``: a PNG spectrogram and an
``<audio>`` element holding a WAV, both inline. Large selections are reduced, not sent whole:
the audio is the first ``max_audio_seconds`` of the selection, and the spectrogram of a long
zarr-aac array is drawn from short clips spread over it (:mod:`zarr_aac.serve.spectrogram`);
the output says when either happened. Needs Pillow (the ``serve`` extra).
"""

from __future__ import annotations

import base64
import html
import io
import wave
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr

from zarr_aac.archive.exporter import sample_bounds, seconds_into
from zarr_aac.archive.recordings import codec_of
from zarr_aac.errors import RecordingMetadataError
from zarr_aac.serve.spectrogram import Spectrogram, compute_spectrogram, spectrogram_of_samples

if TYPE_CHECKING:
    from datetime import datetime

    import xarray as xr

MAX_AUDIO_SECONDS = 30.0
MAX_DATAARRAY_SPECTROGRAM_SECONDS = 600.0
"""A DataArray is read whole for its spectrogram up to this long; beyond, only its start is drawn."""
ULTRASONIC_RATE = 96_000
"""Above this rate the player plays time-expanded by default (browsers play up to about 96 kHz
faithfully, and people hear nothing above 20 kHz)."""
DEFAULT_EXPANSION = 10


@dataclass(frozen=True)
class _Drawing:
    """What ``show`` was asked to draw and play."""

    channel: int
    max_audio_seconds: float
    expansion: int | None
    width: int
    height: int
    nfft: int


@dataclass(frozen=True)
class RecordingView:
    """What a notebook shows for a selection: a spectrogram PNG, a WAV, and notes on what was reduced."""

    title: str
    spectrogram: Spectrogram
    png: bytes
    wav: bytes
    audio_seconds: float
    expansion: int
    notes: tuple[str, ...]

    def _repr_html_(self) -> str:
        png = base64.b64encode(self.png).decode("ascii")
        wav = base64.b64encode(self.wav).decode("ascii")
        top = self.spectrogram.frequencies_hz[-1] / 1000
        caption = (
            f"{html.escape(self.title)}: {self.spectrogram.times_s[0]:.2f}-{self.spectrogram.times_s[-1]:.2f} s "
            f"(column centres), 0-{top:g} kHz"
        )
        notes = "".join(f"<li>{html.escape(note)}</li>" for note in self.notes)
        return (
            '<div class="zarr-aac-view">'
            f"<div>{caption}</div>"
            f'<img alt="spectrogram" src="data:image/png;base64,{png}"/>'
            f'<div><audio controls preload="none" src="data:audio/wav;base64,{wav}"></audio></div>'
            f"<ul>{notes}</ul></div>"
        )


def show(
    recording: zarr.Array | xr.DataArray,
    start: float | datetime | str | None = None,
    stop: float | datetime | str | None = None,
    *,
    channel: int = 0,
    max_audio_seconds: float = MAX_AUDIO_SECONDS,
    expansion: int | None = None,
    width: int = 600,
    height: int = 160,
    nfft: int = 1024,
) -> RecordingView:
    """A spectrogram and an audio player of a recording or a selection, for a notebook.

    Parameters
    ----------
    recording
        A zarr-aac array (a recording of an archive), or an xarray DataArray of one (for example
        ``ds.audio.sel(time=slice(...))``) with a ``sample_rate`` attribute.
    start, stop
        For an array, the selection: seconds from its start or clock times (as
        :func:`zarr_aac.export` takes them); None for its ends. A DataArray is shown as selected.
    channel
        The channel drawn and played.
    max_audio_seconds
        The player holds at most this many seconds, from the selection's start.
    expansion
        Time-expansion factor of the player (the WAV's rate divided by it); by default 10 above
        96 kHz, else 1.
    width, height
        Spectrogram size in pixels (columns, frequency rows).
    nfft
        FFT length.

    Returns
    -------
    RecordingView
        Displays itself in Jupyter (``_repr_html_``).

    Raises
    ------
    ValueError
        If the selection is empty or outside the recording, or the channel does not exist.
    RecordingMetadataError
        If a DataArray has no ``sample_rate`` attribute.
    """
    drawing = _Drawing(channel, max_audio_seconds, expansion, width, height, nfft)
    if isinstance(recording, zarr.Array):
        return _show_array(recording, start, stop, drawing)
    if start is not None or stop is not None:
        raise ValueError("select a DataArray with .sel or .isel before show(); start and stop are for arrays")
    return _show_data_array(recording, drawing)


def _show_array(array: zarr.Array, start: Any, stop: Any, drawing: _Drawing) -> RecordingView:
    rate = codec_of(array).sample_rate
    first, last = sample_bounds(array.shape[0], rate, seconds_into(array, start), seconds_into(array, stop), "s")
    width = drawing.width
    image = compute_spectrogram(array, first, last, channel=drawing.channel, columns=width, nfft=drawing.nfft)
    notes = []
    if image.reduced:
        notes.append(
            f"spectrogram reduced: each of its {width} columns is the spectrum of {image.samples_read // width} "
            "samples at its centre; the rest of the selection was not read"
        )
    audio_last = min(last, first + round(drawing.max_audio_seconds * rate))
    pcm = np.asarray(array[first:audio_last])
    pcm = pcm[:, drawing.channel] if pcm.ndim == 2 else pcm
    title = str(array.path or array.name)
    return _view(title, image, pcm, rate=rate, selected=last - first, drawing=drawing, notes=notes)


def _show_data_array(data: xr.DataArray, drawing: _Drawing) -> RecordingView:
    channel = drawing.channel
    rate = data.attrs.get("sample_rate")
    if not isinstance(rate, int | np.integer) or rate <= 0:
        raise RecordingMetadataError(
            f"the DataArray has no sample_rate attribute (got {rate!r}); open it with zarr_aac.open_dataset"
        )
    rate = int(rate)
    time_dim = data.dims[0]
    total = data.sizes[time_dim]
    if data.ndim == 2:
        channels = data.sizes[data.dims[1]]
        if not 0 <= channel < channels:
            raise ValueError(f"channel {channel} does not exist; the selection has {channels}")
        data = data.isel({data.dims[1]: channel})
    elif channel != 0:
        raise ValueError(f"channel {channel} does not exist; the selection has one")
    notes = []
    drawn = min(total, round(MAX_DATAARRAY_SPECTROGRAM_SECONDS * rate))
    if drawn < total:
        notes.append(f"spectrogram of the first {drawn / rate:g} s of {total / rate:g} s only")
    pcm = np.asarray(data.isel({time_dim: slice(0, drawn)}).values)
    full_scale = 32768.0 if pcm.dtype == np.int16 else 1.0
    image = spectrogram_of_samples(
        pcm.astype(np.float32) / full_scale, rate, channel=channel, columns=drawing.width, nfft=drawing.nfft
    )
    audio = pcm[: round(drawing.max_audio_seconds * rate)]
    return _view(str(data.name), image, audio, rate=rate, selected=total, drawing=drawing, notes=notes)


def _view(
    title: str,
    image: Spectrogram,
    samples: np.ndarray,
    *,
    rate: int,
    selected: int,
    drawing: _Drawing,
    notes: list[str],
) -> RecordingView:
    """The view of one channel's ``samples`` (the selection's first ones; ``selected`` in all)."""
    expansion = drawing.expansion
    expansion = expansion if expansion is not None else (DEFAULT_EXPANSION if rate > ULTRASONIC_RATE else 1)
    if expansion < 1:
        raise ValueError(f"expansion must be a whole number of at least 1, got {expansion}")
    if len(samples) < selected:
        notes.append(f"audio: the first {len(samples) / rate:g} s of {selected / rate:g} s")
    if expansion != 1:
        notes.append(f"audio time-expanded {expansion}x: plays at {rate // expansion} Hz, {expansion} times slower")
    if samples.dtype != np.int16:
        notes.append("audio played as 16-bit PCM")
    return RecordingView(
        title=title,
        spectrogram=image,
        png=image.to_png(height=drawing.height),
        wav=wav_bytes(samples, rate // expansion),
        audio_seconds=len(samples) / rate,
        expansion=expansion,
        notes=tuple(notes),
    )


def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    """A mono 16-bit WAV of ``samples`` (int16, or floats with full scale 1, clipped) at ``rate`` Hz."""
    if samples.dtype != np.int16:
        samples = np.clip(np.rint(np.asarray(samples, dtype=np.float64) * 32767), -32768, 32767).astype(np.int16)
    out = io.BytesIO()
    with wave.open(out, "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(2)
        file.setframerate(rate)
        file.writeframes(samples.astype("<i2").tobytes())
    return out.getvalue()
