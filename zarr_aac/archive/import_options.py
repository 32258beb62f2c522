"""How sources become recordings: the options of an import, checked once before any file is read."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import numpy as np

from zarr_aac.codec import aac
from zarr_aac.codec.aac_codec import parse_bitrate
from zarr_aac.start_time import parse_start_time

DEFAULT_CHUNK_DURATION = 60.0
MIN_CHUNK_DURATION = 0.1
"""Seconds: each chunk also encodes 6 frames of lead-in and lead-out (about 0.13 s at 48 kHz), so
shorter chunks store mostly padding (docs/importing.md)."""
ARRAY_DTYPES = (np.dtype("int16"), np.dtype("float32"))
"""dtypes a recording can be stored as."""


def parse_chunk_duration(value: Any) -> float:
    """``value`` if it is a finite number of seconds, at least MIN_CHUNK_DURATION; else ValueError."""
    if not value >= MIN_CHUNK_DURATION or not math.isfinite(value):
        raise ValueError(
            f"chunk_duration must be a finite number of seconds, at least {MIN_CHUNK_DURATION} "
            f"(shorter chunks store mostly encoder padding), got {value!r}"
        )
    return value


def parse_array_dtype(value: Any) -> np.dtype | None:
    """The dtype ``value`` names if it is int16 or float32; None (chosen per source) stays None."""
    if value is None:
        return None
    dtype = np.dtype(value)
    if dtype not in ARRAY_DTYPES:
        raise ValueError(f"dtype must be int16 or float32, got {value!r}")
    return dtype


def parse_user_metadata(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """``value`` if JSON can hold it (it is stored in Zarr attributes); else ValueError."""
    if value is not None:
        try:
            json.dumps(value)
        except TypeError as exc:
            raise ValueError(f"metadata must be JSON-serialisable (it is stored in Zarr attributes): {exc}") from exc
    return value


@dataclass(frozen=True, init=False)
class ImportOptions:
    """The options of :func:`~zarr_aac.archive.importer.import_file` and ``import_files``, the same
    for every source of an import. Each is checked here, once, so a typo fails before any file is
    hashed rather than once per file.

    Parameters
    ----------
    bitrate
        AAC bits per second at the declared AAC rate, 8000 to 1536000; None picks one by channel
        count (130 kbps mono, 160 kbps stereo, 80 kbps a channel above).
    aac_sample_rate
        The rate declared to the encoder, one AAC allows; None lets
        :func:`~zarr_aac.archive.importer.aac_rate_for` pick it per source. The array always keeps
        the source's true rate.
    chunk_duration
        Seconds per chunk, rounded to whole 1024-sample AAC frames; at least
        :data:`MIN_CHUNK_DURATION` (0.1 s), below which chunks store mostly encoder padding.
    start_time
        The recording's start time, a datetime or an ISO-8601 string, overriding GUANO fields, tags
        and file names; ``import_files`` takes it for a single source only. A time without a UTC
        offset is kept without one (see :mod:`zarr_aac.start_time`).
    metadata
        JSON-serialisable user metadata, stored under each recording's ``user`` attribute.
    stream
        The audio stream to import from files that hold several.
    dtype
        ``"int16"`` or ``"float32"``; None stores int16 for sources of 16 bits or fewer and float32
        otherwise.
    allow_truncated
        Import what a truncated file holds instead of refusing it.
    progress
        Show progress bars.

    Raises
    ------
    ValueError
        If ``bitrate``, ``chunk_duration``, ``start_time``, ``metadata`` or ``dtype`` is not one
        of the values above.
    TypeError
        If ``dtype`` names no numpy dtype, or ``chunk_duration`` is not a number.
    UnsupportedAudioError
        If ``aac_sample_rate`` is not a rate AAC allows.
    """

    bitrate: int | None
    aac_sample_rate: int | None
    chunk_duration: float
    start_time: datetime | None
    metadata: dict[str, Any] | None
    stream: int | None
    dtype: np.dtype | None
    allow_truncated: bool
    progress: bool

    def __init__(
        self,
        *,
        bitrate: int | None = None,
        aac_sample_rate: int | None = None,
        chunk_duration: float = DEFAULT_CHUNK_DURATION,
        start_time: datetime | date | str | None = None,
        metadata: dict[str, Any] | None = None,
        stream: int | None = None,
        dtype: str | np.dtype | None = None,
        allow_truncated: bool = False,
        progress: bool = True,
    ) -> None:
        checked = {
            "bitrate": parse_bitrate(bitrate),
            "aac_sample_rate": aac.check_aac_sample_rate(aac_sample_rate) if aac_sample_rate is not None else None,
            "chunk_duration": parse_chunk_duration(chunk_duration),
            "start_time": parse_start_time(start_time) if start_time is not None else None,
            "metadata": parse_user_metadata(metadata),
            "stream": stream,
            "dtype": parse_array_dtype(dtype),
            "allow_truncated": allow_truncated,
            "progress": progress,
        }
        for name, value in checked.items():
            object.__setattr__(self, name, value)
