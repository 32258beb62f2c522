"""xarray backend: AAC recordings as lazy ``audio(time, channel)`` variables on an exact time axis.

Registered as the ``zarr_aac`` engine. xarray tries engines in name order and its ``zarr`` engine
claims every ``*.zarr`` path first, so open archives with ``engine="zarr_aac"`` or with
:func:`open_dataset`; paths without the ``.zarr`` suffix are recognised by guessing.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import numpy as np
import xarray as xr
import zarr
from xarray.backends import BackendArray, BackendEntrypoint
from xarray.core import indexing

from zarr_aac.codec.aac_codec import AACCodec
from zarr_aac.errors import ArchiveError, RecordingMetadataError
from zarr_aac.dataset.time_index import SampleTimeIndex, parse_start_ns

ENGINE = "zarr_aac"
SINGLE_RECORDING = "audio"


class AudioBackendArray(BackendArray):
    """Lazy PCM view of one stored recording; outer indexing maps straight onto ``zarr.Array.oindex``."""

    def __init__(self, array: zarr.Array) -> None:
        self.array = array
        self.shape = array.shape
        self.dtype = array.dtype

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        return indexing.explicit_indexing_adapter(key, self.shape, indexing.IndexingSupport.OUTER, self._oindex)

    def _oindex(self, key: tuple) -> np.ndarray:
        return self.array.oindex[key]


def aac_codec_of(array: zarr.Array) -> AACCodec | None:
    serializer = array.serializer if array.metadata.zarr_format == 3 else None
    return serializer if isinstance(serializer, AACCodec) else None


def recording_sample_rate(array: zarr.Array) -> int:
    """The true sample rate: the ``sample_rate`` attribute, else the codec configuration."""
    attr = array.attrs.get("sample_rate")
    codec = aac_codec_of(array)
    if attr is None:
        if codec is None:
            raise RecordingMetadataError(
                f"array {_where(array)} has no sample_rate attribute and is not zarr_aac-encoded"
            )
        return codec.sample_rate
    if isinstance(attr, bool) or not isinstance(attr, int) or attr <= 0:
        raise RecordingMetadataError(
            f"array {_where(array)}: sample_rate attribute must be a positive integer, got {attr!r}"
        )
    if codec is not None and codec.sample_rate != attr:
        raise RecordingMetadataError(
            f"array {_where(array)}: sample_rate attribute {attr} disagrees with its codec's {codec.sample_rate}"
        )
    return attr


def recording_time_index(array: zarr.Array, dim: str) -> SampleTimeIndex:
    """The lazy time index of a stored recording, from its attributes (no start_time: timedelta axis)."""
    start = array.attrs.get("start_time")
    if start is not None:
        try:
            parse_start_ns(start)
        except (KeyError, ValueError) as exc:
            raise RecordingMetadataError(f"array {_where(array)}: unreadable start_time {start!r}: {exc}") from exc
    return SampleTimeIndex.for_recording(array.shape[0], recording_sample_rate(array), start, dim=dim)


def recording_variable(array: zarr.Array, time_dim: str, channel_dim: str) -> xr.Variable:
    dims = (time_dim, channel_dim)[: array.ndim]
    encoding = {"chunks": array.chunks, "preferred_chunks": dict(zip(dims, array.chunks, strict=True))}
    data = indexing.LazilyIndexedArray(AudioBackendArray(array))
    return xr.Variable(dims, data, attrs=dict(array.attrs), encoding=encoding)


def find_recordings(group: zarr.Group) -> dict[str, zarr.Array]:
    """Every zarr_aac-encoded array below ``group``, by path relative to it."""
    return {
        path: node for path, node in sorted(group.members(max_depth=None))
        if isinstance(node, zarr.Array) and aac_codec_of(node) is not None
    }


def variable_name(path: str) -> str:
    return path.replace("/", ".")


def dataset_from_node(
    node: zarr.Array | zarr.Group, variable: str | None = None, drop_variables: Iterable[str] | None = None
) -> xr.Dataset:
    """One recording: ``audio(time, channel)``. A group: one variable per recording, named by its path
    ("/" becomes "."), on its own ``time_<name>`` / ``channel_<name>`` dimensions."""
    if isinstance(node, zarr.Array):
        return _single_recording(node)
    if variable is not None:
        try:
            array = node[variable]
        except KeyError as exc:
            raise ArchiveError(f"no recording {variable!r} in group {_where(node)}") from exc
        if not isinstance(array, zarr.Array):
            raise ArchiveError(f"{variable!r} in group {_where(node)} is a group, not a recording")
        return _single_recording(array)
    recordings = find_recordings(node)
    if not recordings:
        raise ArchiveError(f"group {_where(node)} holds no zarr_aac recordings")
    dropped = set(drop_variables or ())
    names = {variable_name(path): path for path in recordings}
    if len(names) != len(recordings):
        raise RecordingMetadataError(f"recording paths {sorted(recordings)} collide once '/' becomes '.'")
    data_vars, coords = {}, xr.Coordinates()
    for name, path in names.items():
        if name in dropped:
            continue
        time_dim = f"time_{name}"
        data_vars[name] = recording_variable(recordings[path], time_dim, f"channel_{name}")
        coords = coords.assign(xr.Coordinates.from_xindex(recording_time_index(recordings[path], time_dim)))
    return xr.Dataset(data_vars, coords=coords, attrs=dict(node.attrs))


def _single_recording(array: zarr.Array) -> xr.Dataset:
    coords = xr.Coordinates.from_xindex(recording_time_index(array, "time"))
    variables = {SINGLE_RECORDING: recording_variable(array, "time", "channel")}
    return xr.Dataset(variables, coords=coords, attrs=dict(array.attrs))


def _where(node: zarr.Array | zarr.Group) -> str:
    return repr(node.path or "/")


AAC_FILE_SUFFIXES = (".aac", ".adts", ".m4a", ".mp4")
"""Existing AAC files, opened in place through :class:`zarr_aac.AACFileStore`."""


def is_aac_file(path: Any) -> bool:
    return isinstance(path, str | os.PathLike) and os.fspath(path).lower().endswith(AAC_FILE_SUFFIXES)


def open_node(store: Any, group: str | None = None, storage_options: dict | None = None) -> zarr.Array | zarr.Group:
    if isinstance(store, zarr.Array | zarr.Group):
        return store[group] if group else store
    if isinstance(store, os.PathLike):
        store = os.fspath(store)
    if is_aac_file(store):
        from zarr_aac.files.store import open_aac_file

        return open_aac_file(store, storage_options=storage_options)
    try:
        return zarr.open(store, mode="r", path=group or "", storage_options=storage_options)
    except FileNotFoundError as exc:
        where = f"{store!r}" + (f", group {group!r}" if group else "")
        raise ArchiveError(f"cannot open {where} as a zarr archive: {exc}") from exc


class ZarrAACBackendEntrypoint(BackendEntrypoint):
    """``xr.open_dataset(path, engine="zarr_aac")``; see :func:`open_dataset` for the parameters."""

    description = "AAC-encoded audio in Zarr v3 (zarr-aac) with a lazy, exact time axis"
    open_dataset_parameters = ("filename_or_obj", "drop_variables", "group", "variable", "storage_options")

    def open_dataset(
        self,
        filename_or_obj: Any,
        *,
        drop_variables: str | Iterable[str] | None = None,
        group: str | None = None,
        variable: str | None = None,
        storage_options: dict | None = None,
    ) -> xr.Dataset:
        if isinstance(drop_variables, str):
            drop_variables = [drop_variables]
        node = open_node(filename_or_obj, group, storage_options)
        return dataset_from_node(node, variable, drop_variables)

    def guess_can_open(self, filename_or_obj: Any) -> bool:
        """An ``.aac``/``.m4a`` file, or a local Zarr v3 directory holding a zarr_aac recording."""
        if not isinstance(filename_or_obj, str | os.PathLike):
            return False
        if is_aac_file(filename_or_obj):
            return True
        if not os.path.isfile(os.path.join(filename_or_obj, "zarr.json")):
            return False
        node = zarr.open(os.fspath(filename_or_obj), mode="r")
        return aac_codec_of(node) is not None if isinstance(node, zarr.Array) else bool(find_recordings(node))


def open_dataset(
    store: Any,
    *,
    group: str | None = None,
    variable: str | None = None,
    chunks: Any = None,
    storage_options: dict | None = None,
    drop_variables: str | Iterable[str] | None = None,
) -> xr.Dataset:
    """Open AAC recordings as an xarray Dataset with a lazy ``datetime64[ns]`` time index.

    ``store`` is a path, URL, zarr store, or an opened ``zarr.Array``/``zarr.Group``. An array
    gives ``audio(time, channel)`` (``(time,)`` for 1-d arrays); a group gives one variable per
    recording found below it, or only ``variable`` (a path inside the group) as ``audio``.
    ``chunks`` as in :func:`xarray.open_dataset`: ``{}`` gives dask arrays on the stored chunks.
    """
    return xr.open_dataset(
        store, engine=ENGINE, chunks=chunks, group=group, variable=variable,
        storage_options=storage_options, drop_variables=drop_variables,
    )
