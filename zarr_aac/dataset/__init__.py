"""The xarray layer: datasets with a lazy, exact datetime time axis, and writing them back.

Names load on first use so that xarray, which imports :mod:`zarr_aac.dataset.backend` for its
engine list whatever it opens, does not also load the reading and writing code.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zarr_aac.dataset.backend import ZarrAACBackendEntrypoint, open_dataset
    from zarr_aac.dataset.clips import read_clips
    from zarr_aac.dataset.convert import assign_time_index, concat_recordings, to_aac
    from zarr_aac.dataset.time_index import SampleTimeIndex

__all__ = [
    "SampleTimeIndex",
    "ZarrAACBackendEntrypoint",
    "assign_time_index",
    "concat_recordings",
    "open_dataset",
    "read_clips",
    "to_aac",
]

_MODULE_OF = {
    "SampleTimeIndex": "zarr_aac.dataset.time_index",
    "ZarrAACBackendEntrypoint": "zarr_aac.dataset.backend",
    "assign_time_index": "zarr_aac.dataset.convert",
    "concat_recordings": "zarr_aac.dataset.convert",
    "open_dataset": "zarr_aac.dataset.backend",
    "read_clips": "zarr_aac.dataset.clips",
    "to_aac": "zarr_aac.dataset.convert",
}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'zarr_aac.dataset' has no attribute {name!r}")
    return getattr(import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
