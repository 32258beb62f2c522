"""The xarray layer: datasets with a lazy, exact datetime time axis, and writing them back."""

from zarr_aac.dataset.backend import ZarrAACBackendEntrypoint, open_dataset
from zarr_aac.dataset.convert import assign_time_index, concat_recordings, to_aac
from zarr_aac.dataset.time_index import SampleTimeIndex

__all__ = [
    "SampleTimeIndex",
    "ZarrAACBackendEntrypoint",
    "assign_time_index",
    "concat_recordings",
    "open_dataset",
    "to_aac",
]
