"""The HTTP API of ``zarr-aac serve``: the catalogue, audio and spectrograms of a range, downloads.

Every handler reads from one archive opened read-only (:class:`ServedArchive`). A recording is
found only by a name of the archive's catalogue, so no request names anything else in the
store. Failures answer with a JSON body ``{"error": reason, "kind": exception type}`` and a
status: 400 for a bad parameter or range, 404 for an unknown recording, 406/422 for a form the
range cannot be sent in, 413 for a range longer than the server sends at once, 500 for a
corrupt chunk, 502 when the store fails, and 500 with the exception's type and message (never
a traceback) for anything else.
"""

from __future__ import annotations

import logging
import math
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import zarr
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from zarr_aac.archive.fidelity import summary
from zarr_aac.archive.recordings import catalogue, codec_of, open_recording
from zarr_aac.errors import ArchiveError, ChunkReadError, CorruptChunkError, ZarrAACError
from zarr_aac.serve.audio import RangeNotServableError, adts_segment, expand_wav_rate, exported_file
from zarr_aac.serve.spectrogram import compute_spectrogram, parse_columns, parse_nfft
from zarr_aac.validation import channels_of

logger = logging.getLogger("zarr_aac.serve")

MAX_AUDIO_SECONDS = 3600.0
"""Longest range the audio and download endpoints send in one response."""
MAX_EXPANSION = 100


class ApiError(Exception):
    """A request the server refuses, with the HTTP status and the reason sent back."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class ServedArchive:
    """One archive, opened read-only, and the recordings requests have opened so far."""

    group: zarr.Group
    label: str
    folder: Path
    storage_options: dict[str, Any] | None
    """Where exported files wait until their response has been sent."""
    _arrays: dict[str, zarr.Array] = field(default_factory=dict)
    _names: frozenset[str] = frozenset()
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def open(cls, archive_url: str, storage_options: dict[str, Any] | None = None) -> ServedArchive:
        """The archive at a local path or fsspec URL, opened read-only; an ArchiveError if none."""
        try:
            group = zarr.open_group(archive_url, mode="r", storage_options=storage_options)
        except (FileNotFoundError, zarr.errors.GroupNotFoundError, zarr.errors.ContainsArrayError) as exc:
            raise ArchiveError(f"{archive_url} is not a zarr-aac archive (a Zarr group): {exc}") from exc
        folder = Path(tempfile.mkdtemp(prefix="zarr-aac-serve-"))
        return cls(group, str(archive_url).rstrip("/"), folder, storage_options)

    def entries(self) -> list[dict[str, Any]]:
        """The catalogue as it is now, one JSON-ready mapping per recording, sorted by start time then name."""
        frame = catalogue(self.group)
        rows = []
        for name, row in frame.iterrows():
            values = {str(key): _plain(value) for key, value in row.items()}
            rows.append(_entry(str(name), values))
        with self._lock:
            self._names = frozenset(row["name"] for row in rows)
        return sorted(rows, key=lambda row: (row["start_time"] is None, row["start_time"] or "", row["name"]))

    def recording(self, name: str) -> zarr.Array:
        """The catalogued recording ``name``; ApiError 404 for any other name."""
        with self._lock:
            array = self._arrays.get(name)
            known = name in self._names
        if array is not None:
            return array
        if not known:
            self.entries()  # imported since the catalogue was last read?
            with self._lock:
                known = name in self._names
        if not known:
            raise ApiError(404, f"no recording named {name!r} in the catalogue of {self.label}")
        # by its own URL, as `zarr-aac export ARCHIVE/NAME` opens it, so exports are the same bytes
        try:
            node = zarr.open_array(f"{self.label}/{name}", mode="r", storage_options=self.storage_options)
        except (FileNotFoundError, zarr.errors.ArrayNotFoundError, zarr.errors.NodeTypeValidationError) as exc:
            raise ApiError(
                500,
                f"{name} is in the catalogue of {self.label} but no array of that name opens ({exc}); "
                "run zarr-aac ls and zarr-aac verify on the archive",
            ) from exc
        array = open_recording(node)
        with self._lock:
            self._arrays[name] = array
        return array


def _plain(value: Any) -> Any:
    """A catalogue cell as JSON: NaN (a field this recording lacks) as None, numpy scalars as Python."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, np.generic):
        return _plain(value.item())
    return value


def _entry(name: str, row: dict[str, Any]) -> dict[str, Any]:
    fidelity = {key.split(".", 1)[1]: value for key, value in row.items() if key.startswith("fidelity.")}
    fidelity = {key: value for key, value in fidelity.items() if value is not None}
    return {
        "name": name,
        "duration_s": row.get("duration_s"),
        "n_samples": row.get("n_samples"),
        "sample_rate": row.get("sample_rate"),
        "channels": row.get("channels"),
        "dtype": row.get("dtype"),
        "start_time": row.get("start_time"),
        "source": row.get("source.name"),
        "aac_sample_rate": row.get("aac.sample_rate"),
        "bitrate": row.get("aac.bitrate"),
        "snr_db": fidelity.get("snr_db"),
        "fidelity": summary(fidelity) if fidelity else None,
    }


def _recording_json(name: str, array: zarr.Array) -> dict[str, Any]:
    codec = codec_of(array)
    return {
        "name": name,
        "n_samples": array.shape[0],
        "sample_rate": codec.sample_rate,
        "aac_sample_rate": codec.aac_sample_rate,
        "channels": channels_of(array.shape),
        "dtype": str(array.dtype),
        "chunk_samples": array.chunks[0],
        "duration_s": array.shape[0] / codec.sample_rate,
        "start_time": array.attrs.get("start_time"),
    }


def _number(request: Request, name: str, default: float | None) -> float | None:
    text = request.query_params.get(name)
    if text is None or text == "":
        return default
    try:
        value = float(text)
    except ValueError:
        raise ApiError(400, f"{name} must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise ApiError(400, f"{name} must be finite, got {text!r}")
    return value


def _integer(request: Request, name: str, default: int) -> int:
    value = _number(request, name, default)
    if value is None or not float(value).is_integer():
        raise ApiError(400, f"{name} must be a whole number, got {request.query_params.get(name)!r}")
    return int(value)


def _choice(request: Request, name: str, allowed: tuple[str, ...], default: str | None) -> str | None:
    value = request.query_params.get(name, default)
    if value is not None and value not in allowed:
        raise ApiError(400, f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def sample_range(request: Request, array: zarr.Array) -> tuple[int, int]:
    """[first, last) from the ``start`` and ``stop`` parameters, in seconds (``unit=s``, the
    default) or samples (``unit=samples``); both default to the recording's ends. A range outside
    the recording is an error, not clipped."""
    rate, n_samples = codec_of(array).sample_rate, array.shape[0]
    unit = _choice(request, "unit", ("s", "samples"), "s")
    start, stop = _number(request, "start", None), _number(request, "stop", None)
    if unit == "samples":
        for label, value in (("start", start), ("stop", stop)):
            if value is not None and not value.is_integer():
                raise ApiError(400, f"{label} must be a whole sample number with unit=samples, got {value}")
        first = 0 if start is None else int(start)
        last = n_samples if stop is None else int(stop)
    else:
        first = 0 if start is None else round(start * rate)
        last = n_samples if stop is None else round(stop * rate)
    if not 0 <= first < last <= n_samples:
        length = f"{n_samples} samples" if unit == "samples" else f"{n_samples / rate:g} s"
        raise ApiError(400, f"range [{start}, {stop}) {unit} is empty or outside the recording (0 to {length})")
    return first, last


def _check_audio_length(first: int, last: int, rate: int) -> None:
    seconds = (last - first) / rate
    if seconds > MAX_AUDIO_SECONDS:
        raise ApiError(
            413,
            f"range of {seconds:g} s is longer than the {MAX_AUDIO_SECONDS:g} s sent at once; "
            "ask for shorter ranges, or use zarr-aac export",
        )


def list_recordings(request: Request) -> Response:
    """``GET /api/recordings``: the catalogue."""
    archive: ServedArchive = request.app.state.archive
    return JSONResponse({"archive": archive.label, "recordings": archive.entries()})


def describe_recording(request: Request) -> Response:
    """``GET /api/recordings/{name}``: one recording's layout and attributes."""
    archive: ServedArchive = request.app.state.archive
    name = request.path_params["name"]
    array = archive.recording(name)
    return JSONResponse({**_recording_json(name, array), "attributes": array.attrs.asdict()})


def _wants_aac(request: Request) -> bool | None:
    """True or False for ``format=aac|wav``; without it, whether the Accept header names
    audio/aac (None: it names only audio/aac, so WAV would not do)."""
    form = _choice(request, "format", ("wav", "aac"), None)
    if form is not None:
        return form == "aac"
    accept = [part.split(";")[0].strip() for part in request.headers.get("accept", "").split(",")]
    if "audio/aac" not in accept:
        return False
    return None if set(accept) <= {"audio/aac", ""} else True


def audio(request: Request) -> Response:
    """``GET /api/recordings/{name}/audio``: WAV (exact), or the stored AAC frames as ADTS."""
    archive: ServedArchive = request.app.state.archive
    name = request.path_params["name"]
    array = archive.recording(name)
    first, last = sample_range(request, array)
    rate = codec_of(array).sample_rate
    _check_audio_length(first, last, rate)
    wants_aac = _wants_aac(request)
    expansion = _integer(request, "expand", 1)
    if not 1 <= expansion <= MAX_EXPANSION:
        raise ApiError(400, f"expand must be from 1 to {MAX_EXPANSION}, got {expansion}")
    if wants_aac is not False:
        if expansion != 1:
            raise ApiError(400, "expand applies to WAV only: AAC frames are passed through as stored")
        try:
            segment = adts_segment(array, first, last)
        except RangeNotServableError as exc:
            if request.query_params.get("format") == "aac" or wants_aac is None:
                raise ApiError(422 if wants_aac else 406, str(exc)) from exc
        else:
            return Response(
                segment.data,
                media_type="audio/aac",
                headers={
                    "X-Zarr-AAC-Skip-Samples": str(segment.skip),
                    "X-Zarr-AAC-Samples": str(segment.n_samples),
                    "X-Zarr-AAC-Sample-Rate": str(segment.aac_sample_rate),
                    "X-Zarr-AAC-Gain": repr(segment.gain),
                    "X-Zarr-AAC-First-Sample": str(first),
                    "Vary": "Accept",
                },
            )
    path = exported_file(array, first, last, archive.folder)
    if expansion != 1:
        try:
            expand_wav_rate(path, expansion)
        except ValueError as exc:
            path.unlink()
            raise ApiError(400, str(exc)) from exc
    return FileResponse(
        path,
        media_type="audio/wav",
        headers={"X-Zarr-AAC-First-Sample": str(first), "X-Zarr-AAC-Expansion": str(expansion), "Vary": "Accept"},
        background=BackgroundTask(path.unlink, missing_ok=True),
    )


def download(request: Request) -> Response:
    """``GET /api/recordings/{name}/download``: the range as ``zarr-aac export`` writes it (WAV or FLAC)."""
    archive: ServedArchive = request.app.state.archive
    name = request.path_params["name"]
    array = archive.recording(name)
    first, last = sample_range(request, array)
    _check_audio_length(first, last, codec_of(array).sample_rate)
    form = _choice(request, "format", ("wav", "flac"), "wav")
    suffix: Literal[".wav", ".flac"] = ".flac" if form == "flac" else ".wav"
    path = exported_file(array, first, last, archive.folder, suffix=suffix)
    return FileResponse(
        path,
        media_type="audio/flac" if form == "flac" else "audio/wav",
        filename=f"{name}_{first}-{last}{suffix}",
        background=BackgroundTask(path.unlink, missing_ok=True),
    )


def spectrogram(request: Request) -> Response:
    """``GET /api/recordings/{name}/spectrogram``: a PNG image or a JSON array of the range."""
    archive: ServedArchive = request.app.state.archive
    array = archive.recording(request.path_params["name"])
    first, last = sample_range(request, array)
    form = _choice(request, "format", ("png", "json"), "png")
    try:
        nfft = parse_nfft(_integer(request, "nfft", 1024))
        columns = parse_columns(_integer(request, "columns", 800))
    except ValueError as exc:
        raise ApiError(400, str(exc)) from exc
    channel = _integer(request, "channel", 0)
    dynamic_range = _number(request, "dynamic_range", 90.0)
    if dynamic_range is None or not 10 <= dynamic_range <= 200:
        raise ApiError(400, f"dynamic_range must be from 10 to 200 dB, got {dynamic_range}")
    try:
        result = compute_spectrogram(array, first, last, channel=channel, columns=columns, nfft=nfft)
    except ValueError as exc:
        if isinstance(exc, ZarrAACError):
            raise
        raise ApiError(400, str(exc)) from exc
    if form == "json":
        return JSONResponse(result.to_json())
    height = _integer(request, "height", 0) or None
    if height is not None and not 16 <= height <= 4096:
        raise ApiError(400, f"height must be from 16 to 4096 pixels, got {height}")
    headers = {
        "X-Zarr-AAC-Frequency-Max": repr(float(result.frequencies_hz[-1])),
        "X-Zarr-AAC-Reduced": "true" if result.reduced else "false",
        "X-Zarr-AAC-Columns": str(result.power_db.shape[1]),
        "X-Zarr-AAC-Samples-Read": str(result.samples_read),
    }
    return Response(result.to_png(dynamic_range, height), media_type="image/png", headers=headers)


def _error(status: int, reason: str, kind: str) -> JSONResponse:
    return JSONResponse({"error": reason, "kind": kind}, status_code=status)


async def api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return _error(exc.status, exc.reason, "bad request" if exc.status < 500 else "server")


async def archive_error(request: Request, exc: Exception) -> Response:
    return _error(404, str(exc), type(exc).__name__)


async def corrupt_chunk(request: Request, exc: Exception) -> Response:
    logger.error("%s %s: %s", request.method, request.url.path, exc)
    return _error(500, f"the archive is damaged: {exc}; run zarr-aac verify on it", type(exc).__name__)


async def store_failed(request: Request, exc: Exception) -> Response:
    logger.error("%s %s: %s", request.method, request.url.path, exc)
    return _error(502, str(exc), type(exc).__name__)


async def unexpected(request: Request, exc: Exception) -> Response:
    logger.exception("%s %s failed", request.method, request.url.path)
    return _error(500, f"internal error: {type(exc).__name__}: {exc}", type(exc).__name__)


EXCEPTION_HANDLERS: dict[Any, Any] = {
    ApiError: api_error,
    ArchiveError: archive_error,
    CorruptChunkError: corrupt_chunk,
    ChunkReadError: store_failed,
    Exception: unexpected,
}
"""Starlette picks the handler of the most specific class (MissingChunkError is a CorruptChunkError)."""
