"""Bridges between plain xarray and zarr-aac: the lazy time index for ``xr.open_zarr`` output, and
writing a PCM DataArray back as an AAC recording without ever storing a time coordinate."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import xarray as xr
import zarr
from zarr.errors import ContainsArrayAndGroupError, ContainsArrayError, ContainsGroupError

from zarr_aac.archive.pending_writes import delete_tree
from zarr_aac.codec.aac_codec import AACCodec
from zarr_aac.dataset.time_index import SampleTimeIndex, format_start_time, parse_start_ns
from zarr_aac.errors import ArchiveError, RecordingMetadataError, TimeAxisError, UnsupportedAudioError
from zarr_aac.validation import channels_of, parse_positive_int

DEFAULT_CHUNK_SECONDS = 60
"""Stored chunk length of :func:`to_aac` unless told: whole-chunk writes, cheap reads via the frame index."""


def assign_time_index(ds: xr.Dataset) -> xr.Dataset:
    """Give each recording of a Dataset opened with ``xr.open_zarr`` its lazy time index.

    Every data variable with a ``sample_rate`` attribute is a recording whose first dimension
    is its time axis; its ``start_time`` attribute (absent: a timedelta axis) sets the origin.

    Parameters
    ----------
    ds : xarray.Dataset
        As ``xr.open_zarr`` gives it: the recordings' attributes, no time coordinates.

    Returns
    -------
    xarray.Dataset
        ``ds`` with a :class:`SampleTimeIndex` on each recording's time dimension, replacing any
        coordinate variable of that dimension.

    Raises
    ------
    zarr_aac.errors.RecordingMetadataError
        If a ``sample_rate`` attribute is not a positive integer, variables sharing a time
        dimension disagree on its length, rate or start, or no variable has a ``sample_rate``.
    zarr_aac.errors.TimeLabelError
        If a ``start_time`` attribute cannot be read as an instant.
    """
    indexes: dict[str, SampleTimeIndex] = {}
    for name, var in ds.data_vars.items():
        rate = var.attrs.get("sample_rate")
        if rate is None:
            continue
        rate = parse_positive_int(rate, f"variable {name!r}: sample_rate attribute", error=RecordingMetadataError)
        dim = str(var.dims[0])
        index = SampleTimeIndex.for_recording(var.shape[0], rate, var.attrs.get("start_time"), dim=dim)
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

    Same result as ``xr.concat(datasets, dim)`` on datasets opened with ``chunks=``, without the
    per-sample bookkeeping array xarray's concat allocates (docs/xarray.md has the sizes).

    Parameters
    ----------
    datasets : sequence of xarray.Dataset
        In time order, each with a :class:`SampleTimeIndex` on ``dim`` and the same data variables.
    dim : str, default "time"
        The time dimension to join along.

    Returns
    -------
    xarray.Dataset
        One lazy time index over all samples, and each data variable as a dask concatenation on
        the stored chunks; attributes come from the first dataset.

    Raises
    ------
    zarr_aac.errors.TimeAxisError
        If a recording does not start where the previous one ends (within half a sample period),
        or the time axes differ in rate or kind (datetime or timedelta).
    """
    index = SampleTimeIndex.concat([cast(SampleTimeIndex, ds.xindexes[dim]) for ds in datasets], dim)
    data_vars = {}
    for name in datasets[0].data_vars:
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
    chunk_length: int | None = None,
    bitrate: int | None = None,
    aac_sample_rate: int | None = None,
    overwrite: bool = False,
    storage_options: dict | None = None,
) -> zarr.Array:
    """Store a PCM DataArray ``(time[, channel])`` as an AAC recording and return the new array.

    Only the samples are written; the time axis goes to the ``sample_rate`` and ``start_time``
    attributes, never as a coordinate array. If the write fails, the new array is deleted.

    Parameters
    ----------
    data : xarray.DataArray
        ``(time,)`` or ``(time, channel)`` PCM, int16 or float (float64 is stored as float32),
        numpy- or dask-backed (dask data is written chunk by chunk). The time dimension is the one
        with a :class:`SampleTimeIndex`, else the first.
    store : str, os.PathLike or zarr store
        Where to create the array.
    name : str, optional
        Path of the new array inside ``store``.
    sample_rate : int, optional
        Needed when ``data`` has no lazy time index and no ``sample_rate`` attribute; must agree
        with the index when it has one.
    start_time : str, datetime-like or epoch nanoseconds, optional
        Instant of the first sample; by default the lazy index's (a slice keeps the exact instant
        of its first sample), else the ``start_time`` attribute, else none (a timedelta axis).
    chunk_length : int, optional
        Samples per stored chunk; default 60 s.
    bitrate, aac_sample_rate : int, optional
        Passed to :class:`zarr_aac.AACCodec`.
    overwrite : bool, default False
        Replace an array or group already at ``name``.
    storage_options : dict, optional
        Passed to fsspec for URLs.

    Returns
    -------
    zarr.Array
        The stored recording.

    Raises
    ------
    zarr_aac.errors.UnsupportedAudioError
        If ``data`` is not 1-d or 2-d, or the codec cannot store its dtype, rate or channel count.
    ValueError
        If ``bitrate`` or ``aac_sample_rate`` is outside the codec's range.
    zarr_aac.errors.RecordingMetadataError
        If the sample rate is unknown, or ``sample_rate`` disagrees with the time index.
    zarr_aac.errors.TimeAxisError
        If the time axis is a materialised coordinate, or a stepped one with no integer rate.
    zarr_aac.errors.ArchiveError
        If something is already stored at ``name`` and ``overwrite`` is False.
    """
    time_dim = _time_dim(data)
    rate, start = _clock_of(data, time_dim, sample_rate, start_time)
    if data.ndim not in (1, 2):
        raise UnsupportedAudioError(f"to_aac stores (time,) or (time, channel) arrays, not dims {data.dims}")
    data = data.transpose(time_dim, ...)
    dtype = np.dtype("float32") if data.dtype == np.float64 else data.dtype
    chunk_length = int(chunk_length or DEFAULT_CHUNK_SECONDS * rate)
    attributes = _recording_attributes(data, rate, start)
    try:
        array = zarr.create_array(
            store,
            name=name,
            shape=data.shape,
            chunks=(chunk_length, *data.shape[1:]),
            dtype=dtype,
            serializer=AACCodec(sample_rate=rate, bitrate=bitrate, aac_sample_rate=aac_sample_rate),
            compressors=None,
            fill_value=0,
            dimension_names=[str(d) for d in data.dims],
            attributes=attributes,
            overwrite=overwrite,
            storage_options=storage_options,
        )
    except (ContainsArrayError, ContainsGroupError, ContainsArrayAndGroupError) as exc:
        where = f"{name or '/'!r} of {store!r}"
        raise ArchiveError(f"cannot store the recording at {where}: {exc}; pass overwrite=True") from exc
    _write_or_delete(data.variable.data, array, dtype)
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
        return _clock_of_index(index, sample_rate, start_time)
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


def _clock_of_index(index: SampleTimeIndex, sample_rate: int | None, start_time: Any) -> tuple[int, int | None]:
    """(rate, start epoch-ns or None) of a lazy time axis; ``start_time`` overrides its start."""
    clock = index.transform
    if clock.rate % clock.step:
        raise TimeAxisError(f"a time axis taking every {clock.step}th sample of {clock.rate} Hz has no integer rate")
    rate = clock.rate // clock.step
    if sample_rate is not None and sample_rate != rate:
        raise RecordingMetadataError(f"sample_rate={sample_rate} disagrees with the time axis ({rate} Hz)")
    if start_time is not None:
        return rate, parse_start_ns(start_time)
    return rate, int(clock.instant_ns(0)) if clock.is_datetime else None


def _recording_attributes(data: xr.DataArray, rate: int, start_ns: int | None) -> dict[str, Any]:
    """The DataArray's attributes with the recording's clock and shape written over them."""
    attributes = {key: value for key, value in data.attrs.items() if key != "start_time"}
    attributes.update(sample_rate=rate, channels=channels_of(data.shape), duration_s=data.shape[0] / rate)
    if start_ns is not None:
        attributes["start_time"] = format_start_time(start_ns)
    return attributes


def _write_or_delete(values: Any, array: zarr.Array, dtype: np.dtype) -> None:
    """Write every sample, or delete the half-written array so no partial recording is left behind."""
    try:
        if hasattr(values, "dask"):
            values.astype(dtype).rechunk(array.chunks).store(array, lock=False)
        else:
            array[...] = np.asarray(values, dtype=dtype)
    except BaseException:
        delete_tree(array.store_path.store, array.store_path.path)
        raise
