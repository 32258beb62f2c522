"""The ``zarr_aac`` xarray engine: its entry point class and :func:`open_dataset`.

xarray imports the entry point class of every installed backend when it first looks up an
engine, whichever file is being opened, so this module imports nothing beyond xarray itself.
The reading lives in :mod:`zarr_aac.dataset.reading`, imported on first use.

Without ``engine=``, xarray asks the installed engines in name order whether they can open a
path, netCDF engines first, and its ``zarr`` engine claims every ``*.zarr`` path. An archive of
several recordings then fails in xarray ("conflicting sizes for dimension 'time'"), before this
engine is asked. So the engine is registered twice: as ``zarr_aac``, the name to pass, and as
``aac``, a name xarray asks before ``zarr``, which claims only what this engine opens (zarr_aac
archives and recordings, ``.aac``/``.m4a`` files) and leaves every other ``*.zarr`` to xarray.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import xarray as xr
from xarray.backends import BackendEntrypoint

ENGINE = "zarr_aac"
AAC_FILE_SUFFIXES = (".aac", ".adts", ".m4a", ".mp4")
"""Existing AAC files, opened in place through :class:`zarr_aac.AACFileStore`."""


class ZarrAACBackendEntrypoint(BackendEntrypoint):
    """``xr.open_dataset(path, engine="zarr_aac")``; see :func:`open_dataset` for the parameters."""

    description = "AAC-encoded audio in Zarr v3 (zarr-aac) with a lazy, exact time axis"
    url = "https://github.com/zarr-aac/zarr-aac/blob/main/docs/xarray.md"
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
        from zarr_aac.dataset.reading import dataset_from_node, open_node

        if isinstance(drop_variables, str):
            drop_variables = [drop_variables]
        node = open_node(filename_or_obj, group, storage_options)
        return dataset_from_node(node, variable, drop_variables)

    def guess_can_open(self, filename_or_obj: Any) -> bool:
        """An ``.aac``/``.m4a`` file, or a local Zarr v3 directory holding a zarr_aac recording.

        xarray asks this before most engines (as ``aac``), so any other path is turned down
        without importing the reading code.
        """
        if not isinstance(filename_or_obj, str | os.PathLike):
            return False
        path = os.fspath(filename_or_obj)
        if not (is_aac_file(path) or os.path.isfile(os.path.join(path, "zarr.json"))):
            return False
        from zarr_aac.dataset.reading import holds_recordings

        return holds_recordings(path)


def is_aac_file(path: Any) -> bool:
    """True for a path or name ending in one of :data:`AAC_FILE_SUFFIXES` (any case)."""
    return isinstance(path, str | os.PathLike) and os.fspath(path).lower().endswith(AAC_FILE_SUFFIXES)


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

    Same as ``xr.open_dataset(store, engine="zarr_aac", ...)``; ``xr.open_dataset(path)`` without
    an engine finds this engine too for paths holding zarr_aac recordings.

    Parameters
    ----------
    store : str, os.PathLike, zarr store, zarr.Array or zarr.Group
        A path or URL (a Zarr v3 archive, or an ``.aac``/``.m4a`` file opened in place), a zarr
        store, or an opened array or group.
    group : str, optional
        Path of the array or group inside ``store`` to open.
    variable : str, optional
        Path, inside the group, of the one recording to open as ``audio``.
    chunks : int, dict, "auto" or None, optional
        As in :func:`xarray.open_dataset`: ``{}`` gives dask arrays on the stored chunks, None
        lazy numpy-backed variables.
    storage_options : dict, optional
        Passed to fsspec for URLs.
    drop_variables : str or iterable of str, optional
        Recordings of a group to leave out, by variable name.

    Returns
    -------
    xarray.Dataset
        For one recording, ``audio(time, channel)`` (``audio(time)`` for a 1-d array) with the
        recording's attributes. For a group, one variable per recording found below it, named by
        its path with "/" turned into ".", each on its own ``time_<name>``/``channel_<name>``
        dimensions. Time axes are ``timedelta64[ns]`` for recordings without ``start_time``.

    Raises
    ------
    zarr_aac.errors.ArchiveError
        If ``store`` cannot be opened as a zarr archive, the group holds no recordings, or
        ``variable`` names no recording.
    zarr_aac.errors.RecordingMetadataError
        If a recording's ``sample_rate`` or ``start_time`` attribute is missing or unreadable, or
        two recording paths give the same variable name.
    """
    return xr.open_dataset(
        store,
        engine=ENGINE,
        chunks=chunks,
        group=group,
        variable=variable,
        storage_options=storage_options,
        drop_variables=drop_variables,
    )
