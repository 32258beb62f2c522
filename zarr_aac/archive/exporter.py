"""Write a segment of a recording to an audio file (WAV, FLAC or anything FFmpeg writes) via PyAV.

The segment is read and encoded block by block, so memory does not grow with its length, and
written to a temporary file beside the target that replaces it only when complete.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Literal

import av
import numpy as np
import zarr
from tqdm.auto import tqdm

from zarr_aac.codec import aac
from zarr_aac.errors import ArchiveError, UnsupportedAudioError
from zarr_aac.archive.importer import PathLike, open_recording
from zarr_aac.archive.source_metadata import parse_start_time

BLOCK_SAMPLES = 1 << 20
"""Samples read from the array and handed to the encoder at a time."""

_PREFERRED_FORMATS = {
    np.dtype("int16"): ("s16", "s16p", "s32", "s32p", "flt", "fltp"),
    np.dtype("float32"): ("flt", "fltp", "s32", "s32p", "s16", "s16p"),
}
"""Encoder sample formats to use for each array dtype, closest first."""


def sample_bounds(
    n_samples: int, rate: int, start: float | None, stop: float | None, unit: Literal["s", "samples"]
) -> tuple[int, int]:
    """[first, last) sample numbers of a segment given in seconds or in samples."""
    if unit not in ("s", "samples"):
        raise ValueError(f"unit must be 's' or 'samples', got {unit!r}")

    def to_sample(value: float | None, default: int) -> int:
        if value is None:
            return default
        return int(value) if unit == "samples" else round(float(value) * rate)

    first, last = to_sample(start, 0), to_sample(stop, n_samples)
    if not 0 <= first < last <= n_samples:
        length = f"{n_samples} samples" if unit == "samples" else f"{n_samples / rate:g} s"
        raise ValueError(f"segment [{start}, {stop}) {unit} is empty or outside the recording (0 to {length})")
    return first, last


def seconds_into(array: zarr.Array, value: float | datetime | str | None) -> float | None:
    """``value`` as seconds from the start of the recording: a datetime or ISO-8601 string is
    placed by the recording's ``start_time`` attribute; numbers pass through."""
    if not isinstance(value, datetime | str):
        return value
    started = array.attrs.get("start_time")
    if started is None:
        raise ArchiveError(f"{array.store_path} has no start_time, so {value} cannot be placed in it; give seconds")
    when, begin = parse_start_time(value), datetime.fromisoformat(started)
    if (when.tzinfo is None) != (begin.tzinfo is None):
        raise ValueError(
            f"{value} and the recording's start_time {started} must both have a time zone or both have none"
        )
    return (when - begin).total_seconds()


def _layout(channels: int) -> str:
    return aac.channel_layout(channels) if channels <= aac.MAX_CHANNELS else f"{channels} channels"


def _codec_for(container: av.container.OutputContainer, codec: str | None, dtype: np.dtype) -> str:
    if codec is not None:
        return codec
    default = container.default_audio_codec
    if dtype == np.float32 and default.startswith("pcm_s16"):
        return "pcm_f32" + default[-2:]
    return default


def _sample_format(codec: av.Codec, dtype: np.dtype) -> str:
    offered = [f.name for f in codec.audio_formats or ()]
    for name in _PREFERRED_FORMATS[dtype]:
        if name in offered:
            return name
    raise UnsupportedAudioError(
        f"the {codec.name} encoder takes none of the sample formats zarr-aac writes ({offered})"
    )


def _as_frame_array(block: np.ndarray, fmt: str) -> np.ndarray:
    """(n, channels) array in the dtype and memory layout PyAV expects for ``fmt``."""
    dtype = {"s16": np.int16, "s32": np.int32, "flt": np.float32}[fmt.rstrip("p")]
    if block.dtype == np.int16 and dtype == np.int32:
        samples = block.astype(np.int32) << 16
    elif block.dtype == np.int16 and dtype == np.float32:
        samples = aac.from_dtype(block)
    elif block.dtype == np.float32 and dtype == np.int32:
        # in float64: full scale +1.0 must clip to the largest int32, not wrap to the smallest
        samples = np.rint(np.clip(block.astype(np.float64) * 2.0**31, -(2.0**31), 2.0**31 - 1)).astype(np.int32)
    elif block.dtype == np.float32 and dtype == np.int16:
        samples = aac.to_dtype(block, np.dtype("int16"))
    else:
        samples = block
    if fmt.endswith("p"):
        return np.ascontiguousarray(samples.T)
    return np.ascontiguousarray(samples).reshape(1, -1)


def _blocks(array: zarr.Array, first: int, last: int) -> Iterator[np.ndarray]:
    for start in range(first, last, BLOCK_SAMPLES):
        block = array[start : min(start + BLOCK_SAMPLES, last)]
        yield block.reshape(block.shape[0], -1)


def export(
    array_or_path: zarr.Array | zarr.Group | PathLike,
    target: PathLike,
    start: float | datetime | str | None = None,
    stop: float | datetime | str | None = None,
    *,
    unit: Literal["s", "samples"] = "s",
    format: str | None = None,
    codec: str | None = None,
    bitrate: int | None = None,
    progress: bool = True,
) -> Path:
    """Write samples [start, stop) of a recording to ``target`` at its true sample rate.

    ``start``/``stop`` are seconds from the start of the recording, clock times (datetimes or
    ISO-8601 strings, placed by its ``start_time``), or sample numbers with ``unit="samples"``.
    The container comes from ``format`` or the target's extension, the
    encoder from ``codec`` or the container's default (float32 arrays go to float WAV).
    """
    array = open_recording(array_or_path)
    rate = array.serializer.sample_rate
    channels = 1 if array.ndim == 1 else array.shape[1]
    if unit == "s":
        start, stop = seconds_into(array, start), seconds_into(array, stop)
    first, last = sample_bounds(array.shape[0], rate, start, stop, unit)
    target = Path(target)
    partial = target.with_name(f".{target.stem}.{uuid.uuid4().hex[:8]}.partial{target.suffix}")
    try:
        _write(array, partial, target.name, first, last, rate, channels, format, codec, bitrate, progress)
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return target


def _write(
    array: zarr.Array,
    path: Path,
    label: str,
    first: int,
    last: int,
    rate: int,
    channels: int,
    format: str | None,
    codec: str | None,
    bitrate: int | None,
    progress: bool,
) -> None:
    try:
        container = av.open(str(path), "w", format=format)
    except (av.FFmpegError, ValueError) as exc:
        raise UnsupportedAudioError(f"cannot write {label}: FFmpeg knows no container for it ({exc})") from exc
    with container:
        name = _codec_for(container, codec, array.dtype)
        try:
            encoder = av.Codec(name, "w")
        except av.FFmpegError as exc:
            raise UnsupportedAudioError(f"FFmpeg has no {name!r} encoder ({exc})") from exc
        if encoder.audio_rates and rate not in encoder.audio_rates:
            allowed = ", ".join(str(r) for r in sorted(encoder.audio_rates))
            raise UnsupportedAudioError(
                f"the {name} encoder cannot write {rate} Hz (it allows {allowed}); export to WAV or FLAC instead"
            )
        layout = _layout(channels)
        stream = container.add_stream(name, rate=rate, layout=layout)
        fmt = _sample_format(encoder, array.dtype)
        stream.codec_context.format = fmt
        if bitrate is not None:
            stream.codec_context.bit_rate = bitrate
        written = 0
        bar = tqdm(total=last - first, unit="sample", unit_scale=True, desc=label, disable=None if progress else True)
        with bar:
            try:
                for block in _blocks(array, first, last):
                    frame = av.AudioFrame.from_ndarray(_as_frame_array(block, fmt), format=fmt, layout=layout)
                    frame.sample_rate = rate
                    frame.pts = written
                    written += block.shape[0]
                    container.mux(stream.encode(frame))
                    bar.update(block.shape[0])
                container.mux(stream.encode(None))
            except av.FFmpegError as exc:
                raise UnsupportedAudioError(
                    f"the {name} encoder failed writing {label} ({channels} channels, {rate} Hz, {fmt}); "
                    f"it may not take that many channels or that rate, WAV does: {exc}"
                ) from exc
