"""Write a segment of a recording to an audio file (WAV, FLAC or anything FFmpeg writes) via PyAV.

The segment is read and encoded block by block, so memory does not grow with its length, and
written to a temporary file beside the target that replaces it only when complete.
"""

from __future__ import annotations

import os
import struct
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import av
import guano
import numpy as np
import zarr
from tqdm.auto import tqdm

from zarr_aac.archive.recordings import PathLike, codec_of, open_recording
from zarr_aac.codec import aac
from zarr_aac.errors import ArchiveError, RecordingMetadataError, UnsupportedAudioError
from zarr_aac.start_time import parse_start_time, require_comparable
from zarr_aac.validation import channels_of

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
    """[first, last) sample numbers of a segment given in seconds or in samples; a stop past the
    end is clipped to it with a warning, as FFmpeg and soundfile clip."""
    if unit not in ("s", "samples"):
        raise ValueError(f"unit must be 's' or 'samples', got {unit!r}")

    def to_sample(value: float | None, default: int) -> int:
        if value is None:
            return default
        return int(value) if unit == "samples" else round(float(value) * rate)

    first, last = to_sample(start, 0), to_sample(stop, n_samples)
    if 0 <= first < n_samples < last:
        length = f"{n_samples} samples" if unit == "samples" else f"{n_samples / rate:g} s"
        warnings.warn(
            f"the segment's stop {stop} {unit} lies past the end of the recording ({length}); it ends there",
            stacklevel=3,
        )
        last = n_samples
    if not 0 <= first < last <= n_samples:
        length = f"{n_samples} samples" if unit == "samples" else f"{n_samples / rate:g} s"
        raise ValueError(f"segment [{start}, {stop}) {unit} is empty or outside the recording (0 to {length})")
    return first, last


def seconds_into(array: zarr.Array, value: float | datetime | str | None) -> float | None:
    """``value`` as seconds from the start of the recording: a datetime or ISO-8601 string is
    placed by the recording's ``start_time`` attribute; numbers pass through.

    Both times must carry a UTC offset or neither, a naive one against a start in UTC being UTC
    (the rule of :mod:`zarr_aac.start_time`).
    """
    if not isinstance(value, datetime | str):
        return value
    started = array.attrs.get("start_time")
    if started is None:
        raise ArchiveError(f"{array.store_path} has no start_time, so {value} cannot be placed in it; give seconds")
    if not isinstance(started, str):
        raise RecordingMetadataError(f"{array.store_path} has start_time {started!r}, not an ISO-8601 string")
    require_comparable(value, started)
    when, begin = parse_start_time(value), parse_start_time(started)
    if when.tzinfo is None and begin.tzinfo is not None:  # a start in UTC: the naive time is UTC too
        when = when.replace(tzinfo=UTC)
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


@dataclass(frozen=True)
class _Segment:
    """Samples [first, last) of a recording, read a block at a time."""

    array: zarr.Array
    first: int
    last: int

    @property
    def rate(self) -> int:
        return codec_of(self.array).sample_rate

    @property
    def channels(self) -> int:
        return channels_of(self.array.shape)

    def blocks(self) -> Iterator[np.ndarray]:
        """(n, channels) blocks of at most BLOCK_SAMPLES samples, in order."""
        for start in range(self.first, self.last, BLOCK_SAMPLES):
            block = np.asarray(self.array[start : min(start + BLOCK_SAMPLES, self.last)])
            yield block.reshape(block.shape[0], -1)


@dataclass(frozen=True)
class _Encoding:
    """What the caller chose of the output: container, encoder and bitrate (None: FFmpeg's default)."""

    format: str | None
    codec: str | None
    bitrate: int | None


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

    The file carries the source's name and the segment's start time as container tags; a WAV
    also gets a GUANO chunk with the source's own GUANO fields, the segment's ``Timestamp``,
    ``Length`` and ``Samplerate``. A ``stop`` past the end is clipped to it, with a warning.

    The file is written beside ``target`` under a hidden name and renamed over it only when
    complete, so an error or Ctrl-C leaves no partial file.

    Parameters
    ----------
    array_or_path
        The recording: an array, an array path such as ``archive.zarr/NAME``, or an archive
        holding exactly one recording (see :func:`~zarr_aac.archive.recordings.open_recording`).
    target
        The output file.
    start, stop
        The segment's bounds (None: the recording's start or end): seconds from the start of
        the recording, clock times (datetimes or ISO-8601 strings, placed by its ``start_time``;
        with a UTC offset if and only if the ``start_time`` has one), or sample numbers with
        ``unit="samples"``.
    unit
        ``"s"`` or ``"samples"``: how numeric bounds count.
    format
        FFmpeg container name; by default the target's extension picks it.
    codec
        FFmpeg encoder name; by default the container's (float32 recordings go to float WAV).
    bitrate
        Encoder bits per second, for lossy formats.
    progress
        Show a progress bar.

    Returns
    -------
    pathlib.Path
        ``target``.

    Raises
    ------
    ArchiveError
        If there is no recording at ``array_or_path``, or a clock-time bound is given for a
        recording without ``start_time``.
    FileNotFoundError, PermissionError
        If the target's folder does not exist or is not writable.
    ValueError
        If the segment is empty or starts outside the recording, ``unit`` is unknown, or a clock time
        has a UTC offset where the ``start_time`` has none (or the other way round).
    UnsupportedAudioError
        If FFmpeg has no such container or encoder, or the encoder cannot take the recording's
        rate, channel count or sample format.
    """
    array = open_recording(array_or_path)
    rate = codec_of(array).sample_rate
    if unit == "s":
        start, stop = seconds_into(array, start), seconds_into(array, stop)
    elif isinstance(start, datetime | str) or isinstance(stop, datetime | str):
        raise ValueError(f"unit='samples' takes sample numbers, got start={start!r}, stop={stop!r}")
    first, last = sample_bounds(array.shape[0], rate, start, stop, unit)
    target = Path(target)
    _check_writable_folder(target)
    partial = target.with_name(f".{target.stem}.{uuid.uuid4().hex[:8]}.partial{target.suffix}")
    try:
        segment = _Segment(array, first, last)
        _write(segment, partial, target.name, _Encoding(format, codec, bitrate), progress)
        if _is_riff_wave(partial):
            _append_guano(partial, segment)
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return target


def _check_writable_folder(target: Path) -> None:
    """Refuse a target whose folder is missing or read-only, before anything is read or encoded."""
    folder = target.parent
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot write {target}: the folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write {target}: the folder {folder} is not writable")


def _segment_start(segment: _Segment) -> datetime | None:
    """The clock time of the segment's first sample, if the recording has a start time."""
    started = segment.array.attrs.get("start_time")
    if not isinstance(started, str):
        return None
    return parse_start_time(started) + timedelta(seconds=segment.first / segment.rate)


def _tags(segment: _Segment) -> dict[str, str]:
    """Container tags: the source's name, the segment's start time, and where it came from."""
    attrs: dict[str, Any] = segment.array.attrs.asdict()
    tags = {"comment": f"zarr-aac export of {segment.array.path} samples {segment.first}-{segment.last}"}
    source = attrs.get("source") or {}
    if source.get("name"):
        tags["title"] = str(source["name"])
    began = _segment_start(segment)
    if began is not None:
        tags["date"] = began.isoformat()
        tags["creation_time"] = began.isoformat()
    return tags


def _is_riff_wave(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(12)
    return head[:4] == b"RIFF" and head[8:12] == b"WAVE"


def _append_guano(path: Path, segment: _Segment) -> None:
    """Append a GUANO chunk to a finished WAV: the source's own GUANO fields, then the segment's
    timestamp, length and the source's name (bat software reads these, not container tags)."""
    attrs: dict[str, Any] = segment.array.attrs.asdict()
    # the stored fields are JSON (times as strings, positions as lists): read back as GUANO text,
    # so the library parses each into the type it serialises
    lines = [
        f"{key}: {_guano_text(value)}"
        for key, value in (attrs.get("guano") or {}).items()
        if not key.startswith("GUANO|")
    ]
    metadata = guano.GuanoFile.from_string("\n".join(["GUANO|Version: 1.0", *lines]))
    began = _segment_start(segment)
    if began is not None:
        metadata["Timestamp"] = began
    metadata["Length"] = (segment.last - segment.first) / segment.rate
    metadata["Samplerate"] = segment.rate
    source = attrs.get("source") or {}
    if source.get("name") and "Original Filename" not in metadata:
        metadata["Original Filename"] = str(source["name"])
    payload = metadata.serialize()
    if len(payload) & 1:
        payload += b"\0"  # RIFF chunks are padded to even length
    with open(path, "r+b") as f:
        f.seek(0, 2)
        f.write(b"guan" + struct.pack("<I", len(payload)) + payload)
        riff_size = f.tell() - 8
        f.seek(4)
        f.write(struct.pack("<I", riff_size))


def _guano_text(value: Any) -> str:
    text = " ".join(str(v) for v in value) if isinstance(value, list) else str(value)
    return " ".join(text.splitlines())


def _write(segment: _Segment, path: Path, label: str, encoding: _Encoding, progress: bool) -> None:
    """Encode ``segment`` into a new file at ``path``; ``label`` names it in messages."""
    with _open_output(path, label, encoding.format) as container:
        container.metadata.update(_tags(segment))
        stream = _add_stream(container, segment, encoding)
        _encode(container, stream, segment, label, progress)


def _open_output(path: Path, label: str, format: str | None) -> av.container.OutputContainer:
    try:
        return av.open(str(path), "w", format=format)
    except OSError:  # a folder that went away or became read-only since it was checked
        raise
    except (av.FFmpegError, ValueError) as exc:
        raise UnsupportedAudioError(f"cannot write {label}: FFmpeg knows no container for it ({exc})") from exc


def _add_stream(container: av.container.OutputContainer, segment: _Segment, encoding: _Encoding) -> av.AudioStream:
    """The output's audio stream: the chosen encoder at the recording's rate, channels and dtype."""
    name = _codec_for(container, encoding.codec, segment.array.dtype)
    try:
        encoder = av.Codec(name, "w")
    except av.FFmpegError as exc:
        raise UnsupportedAudioError(f"FFmpeg has no {name!r} encoder ({exc})") from exc
    rate = segment.rate
    if encoder.audio_rates and rate not in encoder.audio_rates:
        allowed = ", ".join(str(r) for r in sorted(encoder.audio_rates))
        raise UnsupportedAudioError(
            f"the {name} encoder cannot write {rate} Hz (it allows {allowed}); export to WAV or FLAC instead"
        )
    stream = container.add_stream(name, rate=rate, layout=_layout(segment.channels))
    if not isinstance(stream, av.AudioStream):
        raise UnsupportedAudioError(f"{name!r} is not an audio encoder")
    stream.codec_context.format = _sample_format(encoder, segment.array.dtype)
    if encoding.bitrate is not None:
        stream.codec_context.bit_rate = encoding.bitrate
    return stream


def _encode(
    container: av.container.OutputContainer, stream: av.AudioStream, segment: _Segment, label: str, progress: bool
) -> None:
    """Encode the segment's samples into ``stream`` and flush the encoder."""
    ctx = stream.codec_context
    fmt, layout, rate = ctx.format.name, _layout(segment.channels), segment.rate
    written = 0
    total = segment.last - segment.first
    with tqdm(total=total, unit="sample", unit_scale=True, desc=label, disable=None if progress else True) as bar:
        try:
            for block in segment.blocks():
                frame = av.AudioFrame.from_ndarray(_as_frame_array(block, fmt), format=fmt, layout=layout)
                frame.sample_rate = rate
                frame.pts = written
                written += block.shape[0]
                container.mux(stream.encode(frame))
                bar.update(block.shape[0])
            container.mux(stream.encode(None))
        except av.FFmpegError as exc:
            if isinstance(exc, OSError):  # the disk, not the encoder
                raise OSError(exc.errno, f"writing {label} failed: {exc.strerror or exc}") from exc
            raise UnsupportedAudioError(
                f"the {ctx.name} encoder failed writing {label} ({segment.channels} channels, {rate} Hz, {fmt}); "
                f"it may not take that many channels or that rate, WAV does: {exc}"
            ) from exc
