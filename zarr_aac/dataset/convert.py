"""Bridges between plain xarray and zarr-aac: the lazy time index for ``xr.open_zarr`` output, and
writing a PCM DataArray back as an AAC recording without ever storing a time coordinate."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr
import zarr
from zarr.errors import ContainsArrayAndGroupError, ContainsArrayError, ContainsGroupError

from zarr_aac.codec.aac_codec import AACCodec
from zarr_aac.errors import ArchiveError, RecordingMetadataError, TimeAxisError, UnsupportedAudioError
from zarr_aac.dataset.time_index import SampleTimeIndex, format_start_time, parse_start_ns
from zarr_aac.archive.pending_writes import delete_tree

DEFAULT_CHUNK_SECONDS = 60
"""Stored chunk length of :func:`to_aac` unless told: whole-chunk writes, cheap reads via the frame index."""


def assign_time_index(ds: xr.Dataset) -> xr.Dataset:
    """Give each recording of a Dataset opened with ``xr.open_zarr`` its lazy time index.

    Every data variable with a ``sample_rate`` attribute is a recording whose first dimension
    is its time axis; its ``start_time`` attribute (absent: a timedelta axis) sets the origin.
    Variables sharing a time dimension must agree on length, rate and start.
    """
    indexes: dict[str, SampleTimeIndex] = {}
    for name, var in ds.data_vars.items():
        rate = var.attrs.get("sample_rate")
        if rate is None:
            continue
        if isinstance(rate, bool) or not isinstance(rate, int | np.integer) or rate <= 0:
            raise RecordingMetadataError(
                f"variable {name!r}: sample_rate attribute must be a positive integer, got {rate!r}"
            )
        dim = str(var.dims[0])
        index = SampleTimeIndex.for_recording(var.shape[0], int(rate), var.attrs.get("start_time"), dim=dim)
        if dim in indexes and not indexes[dim].equals(index):
            raise RecordingMetadataError(f"variables on dimension {dim!r} disagree on its sample rate or start time")
        indexes[dim] = index
    if not indexes:
        raise RecordingMetadataError("no data variable has a sample_rate attribute; nothing to index by time")
    coords = xr.Coordinates()
    for index in indexes.values():
        coords = coords.assign(xr.Coordinates.from_xindex(index))
    return ds.drop_vars([dim for dim in indexes if dim in ds.variables]).assign_coords(coords)


def concat_recordings(datasets: Sequence[xr.Dataset], dim: str = "time") -> xr.Dataset:
    """Join abutting recordings (one deployment, many files) along ``dim``, lazily.

    Same result as ``xr.concat(datasets, dim)`` on datasets opened with ``chunks=``, without its
    one-byte-per-sample bookkeeping array (10 GB at 10^10 samples). Data variables become dask
    concatenations on the stored chunks; attributes come from the first dataset.
    """
    index = SampleTimeIndex.concat([ds.xindexes[dim] for ds in datasets], dim)
    data_vars = {}
    for name, first in datasets[0].data_vars.items():
        parts = [_as_dask(ds[name].variable) for ds in datasets]
        data_vars[name] = xr.Variable.concat(parts, dim, combine_attrs="override")
    return xr.Dataset(data_vars, coords=xr.Coordinates.from_xindex(index), attrs=datasets[0].attrs)


def _as_dask(variable: xr.Variable) -> xr.Variable:
    if hasattr(variable.data, "dask"):
        return variable
    return variable.chunk(variable.encoding.get("preferred_chunks") or {})


def to_aac(
    data: xr.DataArray,
    store: Any,
    *,
    name: str | None = None,
    sample_rate: int | None = None,
    start_time: Any = None,
    chunk_samples: int | None = None,
    bitrate: int | None = None,
    aac_sample_rate: int | None = None,
    overwrite: bool = False,
    storage_options: dict | None = None,
) -> zarr.Array:
    """Store a PCM DataArray ``(time[, channel])`` as an AAC recording and return the new array.

    The rate and start come from the DataArray's lazy time index when it has one (a slice keeps
    its exact first instant), else from ``sample_rate``/``start_time`` or its attributes. Only
    the samples are written, in whole chunks of ``chunk_samples`` (default 60 s); the time axis
    goes to the ``sample_rate`` and ``start_time`` attributes, never as a coordinate array.
    float64 data is stored as float32; dask-backed data is written chunk by chunk.
    """
    time_dim = _time_dim(data)
    rate, start = _clock_of(data, time_dim, sample_rate, start_time)
    if data.ndim not in (1, 2):
        raise UnsupportedAudioError(f"to_aac stores (time,) or (time, channel) arrays, not dims {data.dims}")
    data = data.transpose(time_dim, ...)
    dtype = np.dtype("float32") if data.dtype == np.float64 else data.dtype
    chunk_len = int(chunk_samples or DEFAULT_CHUNK_SECONDS * rate)
    attributes = {key: value for key, value in data.attrs.items() if key not in ("start_time",)}
    channels = 1 if data.ndim == 1 else data.shape[1]
    attributes.update(sample_rate=rate, channels=channels, duration_s=data.shape[0] / rate)
    if start is not None:
        attributes["start_time"] = format_start_time(start)
    try:
        array = zarr.create_array(
            store, name=name, shape=data.shape, chunks=(chunk_len, *data.shape[1:]), dtype=dtype,
            serializer=AACCodec(sample_rate=rate, bitrate=bitrate, aac_sample_rate=aac_sample_rate),
            compressors=None, fill_value=0, dimension_names=[str(d) for d in data.dims],
            attributes=attributes, overwrite=overwrite, storage_options=storage_options,
        )
    except (ContainsArrayError, ContainsGroupError, ContainsArrayAndGroupError) as exc:
        where = f"{name or '/'!r} of {store!r}"
        raise ArchiveError(f"cannot store the recording at {where}: {exc}; pass overwrite=True") from exc
    try:
        _write_samples(data.variable.data, array, dtype)
    except BaseException:
        delete_tree(array.store_path.store, array.store_path.path)
        raise
    return array


def _time_dim(data: xr.DataArray) -> str:
    for dim in data.dims:
        if isinstance(data.xindexes.get(dim), SampleTimeIndex):
            return str(dim)
    return str(data.dims[0])


def _clock_of(data: xr.DataArray, time_dim: str, sample_rate: int | None, start_time: Any) -> tuple[int, int | None]:
    """(rate, start epoch-ns or None): from the lazy index, else the arguments, else the attributes."""
    index = data.xindexes.get(time_dim)
    if isinstance(index, SampleTimeIndex):
        clock = index.transform
        if clock.rate % clock.step:
            raise TimeAxisError(
                f"a time axis taking every {clock.step}th sample of {clock.rate} Hz has no integer rate"
            )
        rate = clock.rate // clock.step
        if sample_rate is not None and sample_rate != rate:
            raise RecordingMetadataError(f"sample_rate={sample_rate} disagrees with the time axis ({rate} Hz)")
        start = int(clock.instant_ns(0)) if clock.is_datetime else None
        return rate, start if start_time is None else parse_start_ns(start_time)
    if time_dim in data.coords:
        raise TimeAxisError(
            f"{time_dim!r} is a materialised coordinate; to_aac writes no time arrays: "
            "drop it and pass sample_rate= and start_time="
        )
    rate = sample_rate if sample_rate is not None else data.attrs.get("sample_rate")
    if rate is None:
        raise RecordingMetadataError("the sample rate is unknown: pass sample_rate= or set the sample_rate attribute")
    start = start_time if start_time is not None else data.attrs.get("start_time")
    return int(rate), None if start is None else parse_start_ns(start)


def _write_samples(values: Any, array: zarr.Array, dtype: np.dtype) -> None:
    if hasattr(values, "dask"):
        values.astype(dtype).rechunk(array.chunks).store(array, lock=False)
    else:
        array[...] = np.asarray(values, dtype=dtype)
