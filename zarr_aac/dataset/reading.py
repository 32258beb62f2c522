"""Stored recordings as xarray variables: what the ``zarr_aac`` engine does when it opens a store.

A recording is a zarr_aac-encoded array. Its samples become a lazy ``BackendArray`` whose outer
indexing maps straight onto ``zarr.Array.oindex`` (so a selection reads only the AAC frames it
covers), and its ``sample_rate`` and ``start_time`` attributes become a :class:`SampleTimeIndex`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import xarray as xr
import zarr
from xarray.backends import BackendArray
from xarray.core import indexing

from zarr_aac.codec.aac_codec import AACCodec
from zarr_aac.codec.chain import warn_codec_chain
from zarr_aac.dataset.backend import is_aac_file
from zarr_aac.dataset.time_index import SampleTimeIndex, parse_start_ns
from zarr_aac.errors import ArchiveError, RecordingMetadataError
from zarr_aac.validation import parse_positive_int

SINGLE_RECORDING = "audio"
"""Name of the data variable when the store, or ``variable=``, points at one recording."""


class AudioBackendArray(BackendArray):
    """Lazy PCM view of one stored recording; outer indexing maps straight onto ``zarr.Array.oindex``."""

    def __init__(self, array: zarr.Array) -> None:
        self.array = array
        self.shape = array.shape
        self.dtype = array.dtype

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        return indexing.explicit_indexing_adapter(key, self.shape, indexing.IndexingSupport.OUTER, self._oindex)

    def _oindex(self, key: tuple[Any, ...]) -> np.ndarray:
        return np.asarray(self.array.oindex[key])


def holds_recordings(path: str | os.PathLike[str]) -> bool:
    """An ``.aac``/``.m4a`` file, or a local Zarr v3 directory holding a zarr_aac recording.

    Answers xarray's engine guessing, so it opens nothing that is not a Zarr v3 node, and a node
    zarr cannot read (a malformed ``zarr.json``) is not one this engine can open: opening it
    with ``engine="zarr_aac"`` raises zarr's error.
    """
    if is_aac_file(path):
        return True
    if not os.path.isfile(os.path.join(path, "zarr.json")):
        return False
    try:
        node = zarr.open(os.fspath(path), mode="r")
        return aac_codec_of(node) is not None if isinstance(node, zarr.Array) else bool(find_recordings(node))
    except (OSError, ValueError, KeyError, TypeError):
        return False


def open_node(store: Any, group: str | None = None, storage_options: dict | None = None) -> zarr.Array | zarr.Group:
    """The array or group ``store`` (and ``group`` inside it) points at, opened read-only.

    Raises
    ------
    ArchiveError
        If nothing can be opened there as a zarr archive.
    IndexError
        If ``group`` is asked of an opened array (the class zarr raises when it reads the group
        as a field name).
    """
    if isinstance(store, zarr.Group):
        return store[group] if group else store
    if isinstance(store, zarr.Array):
        if group:
            raise IndexError(f"cannot open group {group!r} inside array {_where(store)}: an array holds no groups")
        return store
    if isinstance(store, os.PathLike):
        store = os.fspath(store)
    if is_aac_file(store):
        from zarr_aac.files.store import open_aac_file

        return open_aac_file(store, storage_options=storage_options)
    try:
        node = zarr.open(store, mode="r", path=group or "", storage_options=storage_options)
    except FileNotFoundError as exc:
        where = f"{store!r}" + (f", group {group!r}" if group else "")
        raise ArchiveError(f"cannot open {where} as a zarr archive: {exc}") from exc
    if isinstance(node, zarr.Array) and isinstance(store, str):
        from zarr_aac.archive.recordings import check_committed_at

        return check_committed_at(store, node, storage_options)
    return node


def dataset_from_node(
    node: zarr.Array | zarr.Group, variable: str | None = None, drop_variables: Iterable[str] | None = None
) -> xr.Dataset:
    """One recording: ``audio(time, channel)``. A group: one variable per recording, named by its path
    ("/" becomes "."), on its own ``time_<name>`` / ``channel_<name>`` dimensions. Variables named in
    ``drop_variables`` are left out; names the dataset does not have are ignored, as xarray does."""
    dropped = set(drop_variables or ())
    if isinstance(node, zarr.Array):
        array = _committed(node)
    elif variable is not None:
        array = _recording_in(node, variable)
    else:
        return group_dataset(node, dropped)
    dataset = single_recording_dataset(array)
    return dataset.drop_vars(dropped & set(dataset.variables))


def single_recording_dataset(array: zarr.Array) -> xr.Dataset:
    """``audio(time, channel)`` with the recording's attributes on the Dataset and on ``audio``."""
    coords = xr.Coordinates.from_xindex(recording_time_index(array, "time"))
    variables = {SINGLE_RECORDING: recording_variable(array, "time", "channel")}
    return xr.Dataset(variables, coords=coords, attrs=netcdf_attributes(array.attrs))


def group_dataset(group: zarr.Group, dropped: set[str]) -> xr.Dataset:
    """Every recording below ``group`` but the ``dropped`` names, each on its own dimensions.

    Recordings in one archive rarely share a clock, so none is aligned onto another's time axis.
    """
    recordings = find_recordings(group)
    if not recordings:
        raise ArchiveError(f"group {_where(group)} holds no zarr_aac recordings")
    names = {variable_name(path): path for path in recordings}
    if len(names) != len(recordings):
        raise RecordingMetadataError(f"recording paths {sorted(recordings)} collide once '/' becomes '.'")
    data_vars: dict[str, xr.Variable] = {}
    coords = xr.Coordinates()
    for name, path in names.items():
        if name in dropped:
            continue
        time_dim = f"time_{name}"
        data_vars[name] = recording_variable(recordings[path], time_dim, f"channel_{name}")
        coords = coords.assign(xr.Coordinates.from_xindex(recording_time_index(recordings[path], time_dim)))
    return xr.Dataset(data_vars, coords=coords, attrs=netcdf_attributes(group.attrs))


def _recording_in(group: zarr.Group, path: str) -> zarr.Array:
    try:
        array = group[path]
    except KeyError as exc:
        raise ArchiveError(f"no recording {path!r} in group {_where(group)}") from exc
    if not isinstance(array, zarr.Array):
        raise ArchiveError(f"{path!r} in group {_where(group)} is a group, not a recording")
    return _committed(array)


def _committed(array: zarr.Array) -> zarr.Array:
    """``array``, or a RecordingNotCommittedError if it is an archive's recording still being imported."""
    from zarr_aac.archive.recordings import check_committed

    return check_committed(array)


def find_recordings(group: zarr.Group) -> dict[str, zarr.Array]:
    """Every committed zarr_aac-encoded array below ``group``, by path relative to it."""
    from zarr_aac.archive.recordings import recording_arrays

    return recording_arrays(group)


def variable_name(path: str) -> str:
    """The Dataset variable of the recording at ``path``: "/" becomes "." (xarray names hold no "/")."""
    return path.replace("/", ".")


def recording_variable(array: zarr.Array, time_dim: str, channel_dim: str) -> xr.Variable:
    """The recording's samples as a lazy variable, with its stored chunks as the preferred ones;
    a :class:`~zarr_aac.errors.SlowCodecChainWarning` if codecs besides the zarr_aac codec slow its reads."""
    warn_codec_chain(array)
    dims = (time_dim, channel_dim)[: array.ndim]
    encoding = {"chunks": array.chunks, "preferred_chunks": dict(zip(dims, array.chunks, strict=True))}
    data = indexing.LazilyIndexedArray(AudioBackendArray(array))
    return xr.Variable(dims, data, attrs=netcdf_attributes(array.attrs), encoding=encoding)


def netcdf_attributes(attributes: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Stored attributes as netCDF can hold them, so ``to_netcdf`` takes any opened dataset.

    A nested mapping becomes dotted names (``source`` -> ``source.name``, ``source.sha256``, ...),
    None (an unknown ``start_time``) is left out, and a list holding anything but numbers and
    strings becomes its JSON text; numbers, strings and such lists are kept as they are.
    """
    flat: dict[str, Any] = {}
    for key, value in attributes.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(netcdf_attributes(value, f"{name}."))
        elif isinstance(value, list | tuple) and not all(_netcdf_scalar(item) for item in value):
            flat[name] = json.dumps(value)
        elif value is not None:
            flat[name] = value
    return flat


def _netcdf_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float) and not isinstance(value, bool)


def recording_time_index(array: zarr.Array, dim: str) -> SampleTimeIndex:
    """The lazy time index of a stored recording, from its attributes (no start_time: timedelta axis)."""
    start = array.attrs.get("start_time")
    if start is not None:
        try:
            parse_start_ns(start)
        except (KeyError, ValueError) as exc:
            raise RecordingMetadataError(f"array {_where(array)}: unreadable start_time {start!r}: {exc}") from exc
    return SampleTimeIndex.for_recording(array.shape[0], recording_sample_rate(array), start, dim=dim)


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
    rate = parse_positive_int(attr, f"array {_where(array)}: sample_rate attribute", error=RecordingMetadataError)
    if codec is not None and codec.sample_rate != rate:
        raise RecordingMetadataError(
            f"array {_where(array)}: sample_rate attribute {rate} disagrees with its codec's {codec.sample_rate}"
        )
    return rate


def aac_codec_of(array: zarr.Array) -> AACCodec | None:
    """The array's AAC codec, or None for any other array (zarr v2 arrays have no serializer)."""
    serializer = array.serializer if array.metadata.zarr_format == 3 else None
    return serializer if isinstance(serializer, AACCodec) else None


def _where(node: zarr.Array | zarr.Group) -> str:
    return repr(node.path or "/")
