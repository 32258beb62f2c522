"""Clips at many clock times of a recording opened with xarray, read in one call.

The time labels go through the recording's :class:`SampleTimeIndex` to sample positions, and the
clips through :func:`zarr_aac.read_clips` on the stored array behind the variable, so a thousand
detections cost what a thousand clips cost at the codec, not a thousand ``.sel`` calls.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from xarray.core import indexing

from zarr_aac.codec.clips import read_clips as read_array_clips
from zarr_aac.dataset.reading import AudioBackendArray
from zarr_aac.dataset.time_index import SampleTimeIndex

CLIP_DIM = "clip"
SAMPLE_DIM = "sample"


def read_clips(data: xr.DataArray, times: Any, duration: Any, *, method: str | None = "bfill") -> xr.DataArray:
    """Clips of ``duration`` starting at each of ``times``, from a recording opened with
    :func:`zarr_aac.open_dataset`.

    Parameters
    ----------
    data : xarray.DataArray
        A recording variable as opened (lazily, without ``chunks=``), or a forward slice of its
        time axis, with any selection of its channels.
    times : sequence of datetime-like or timedelta-like
        Clock times (or offsets, for a recording without ``start_time``) of the clips.
    duration : float, str or timedelta-like
        Length of each clip: seconds, or anything :class:`pandas.Timedelta` reads ("1s",
        ``np.timedelta64(500, "ms")``); rounded to whole samples.
    method : {"bfill", "nearest", "pad", None}, default "bfill"
        Which sample a clip starts at: the first at or after its time, the nearest, the last at
        or before it, or (None) exactly at it, as in ``data.sel(time=t, method=method)``.

    Returns
    -------
    xarray.DataArray
        Dimensions ``(clip, sample, *other dims)``; coordinate ``start`` holds each clip's first
        sample's time, ``sample`` the offset of each sample from it.

    Raises
    ------
    ValueError
        If ``data`` is not a lazily opened zarr_aac recording, ``duration`` is under one sample, or
        a clip reaches outside ``data``.
    zarr_aac.errors.TimeLabelError
        If a time cannot be read or names no sample (see ``method``).
    CorruptChunkError
        If a chunk a clip needs fails its checks (the message names the clips).

    Examples
    --------
    >>> ds = zarr_aac.open_dataset("site.zarr")  # doctest: +SKIP
    >>> clips = zarr_aac.dataset.read_clips(ds.audio, detections.time, "1s")  # doctest: +SKIP
    """
    time_dim = data.dims[0]
    index = data.xindexes.get(time_dim)
    if not isinstance(index, SampleTimeIndex):
        raise ValueError(
            f"read_clips needs the lazy time index zarr_aac.open_dataset gives {time_dim!r}; this has none"
        )
    array, offset, other_axes = _stored_array(data)
    rate = index.transform.rate
    length = _samples_in(duration, rate)
    labels = np.atleast_1d(np.asarray(times))
    positions = np.asarray(index.sel({index.transform.coord_name: labels}, method=method).dim_indexers[time_dim])
    positions = np.atleast_1d(positions).astype(np.int64)
    beyond = np.flatnonzero(positions + length > data.sizes[time_dim])
    if beyond.size:
        i = int(beyond[0])
        raise ValueError(
            f"clip {i} (time {labels[i]}, {length} samples) runs past the end of the recording's "
            f"{data.sizes[time_dim]} samples"
        )
    clips = read_array_clips(array, positions + offset, length)[(slice(None), slice(None), *other_axes)]
    starts = index.transform.forward({str(time_dim): positions})[index.transform.coord_name]
    offsets = pd.to_timedelta(np.arange(length) * 1_000_000_000 // rate, unit="ns")
    coords: dict[Any, Any] = {"start": (CLIP_DIM, starts), SAMPLE_DIM: offsets}
    coords.update({d: data.coords[d] for d in data.dims[1:] if d in data.coords})
    return xr.DataArray(
        clips,
        dims=(CLIP_DIM, SAMPLE_DIM, *data.dims[1:]),
        coords=coords,
        attrs=dict(data.attrs),
        name=data.name,
    )


def _samples_in(duration: Any, rate: int) -> int:
    seconds = duration if isinstance(duration, int | float) else pd.Timedelta(duration).total_seconds()
    length = round(seconds * rate)
    if length < 1:
        raise ValueError(f"duration {duration!r} is under one sample at {rate} Hz")
    return length


def _stored_array(data: xr.DataArray) -> tuple[Any, int, tuple[Any, ...]]:
    """The zarr array behind ``data``, the position of ``data``'s first sample in it, and the
    selection of its other axes."""
    wrapped: Any = data.variable._data
    key: tuple[Any, ...] | None = None
    while not isinstance(wrapped, AudioBackendArray):
        if isinstance(wrapped, indexing.LazilyIndexedArray):
            key = wrapped.key.tuple
        elif not isinstance(wrapped, indexing.MemoryCachedArray | indexing.CopyOnWriteArray):
            raise ValueError(
                "read_clips reads from a recording opened lazily with zarr_aac.open_dataset (without chunks=) "
                f"and sliced forward along time only; this DataArray holds {type(wrapped).__name__}"
            )
        wrapped = wrapped.array
    if key is None:
        return wrapped.array, 0, (slice(None),) * (data.ndim - 1)
    time_key = key[0]
    if not isinstance(time_key, slice) or time_key.step not in (None, 1):
        raise ValueError(f"read_clips needs a forward slice of the time axis, not {time_key!r}")
    start = time_key.indices(wrapped.shape[0])[0]
    return wrapped.array, start, tuple(key[1:])
