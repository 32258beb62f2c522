"""PCM-looking Zarr arrays stored as AAC-LC, with frame-exact random access.

The codec and the errors load with the package; the archive, file-adapter and xarray entry points
load on first use (the xarray layer needs the ``xarray`` extra), yet every public name is
importable statically for type checkers and IDEs.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from zarr_aac.codec import AACCodec, FrameIndex, tolerant_reads
from zarr_aac.codec.clips import read_clips
from zarr_aac.errors import (
    AudioDecodeError,
    CorruptChunkError,
    MissingChunkError,
    UnsupportedAudioError,
    ZarrAACError,
)
from zarr_aac.examples import example_recording

if TYPE_CHECKING:
    from zarr_aac.archive import (
        GCReport,
        ImportOptions,
        LiveWriter,
        catalogue,
        export,
        gc,
        import_file,
        import_files,
        open_recording,
        open_writer,
        set_recording_attributes,
        verify,
    )
    from zarr_aac.dataset import assign_time_index, concat_recordings, open_dataset, to_aac
    from zarr_aac.display import show
    from zarr_aac.files import AACFileStore, open_aac_file, open_legacy_archive

__all__ = [
    "AACCodec",
    "AACFileStore",
    "AudioDecodeError",
    "CorruptChunkError",
    "FrameIndex",
    "GCReport",
    "ImportOptions",
    "LiveWriter",
    "MissingChunkError",
    "UnsupportedAudioError",
    "ZarrAACError",
    "assign_time_index",
    "catalogue",
    "concat_recordings",
    "example_recording",
    "export",
    "gc",
    "import_file",
    "import_files",
    "open_aac_file",
    "open_dataset",
    "open_legacy_archive",
    "open_recording",
    "open_writer",
    "read_clips",
    "set_recording_attributes",
    "show",
    "to_aac",
    "tolerant_reads",
    "verify",
]

_LAZY = {
    "ImportOptions": "zarr_aac.archive",
    "GCReport": "zarr_aac.archive",
    "gc": "zarr_aac.archive",
    "LiveWriter": "zarr_aac.archive",
    "import_file": "zarr_aac.archive",
    "import_files": "zarr_aac.archive",
    "catalogue": "zarr_aac.archive",
    "open_recording": "zarr_aac.archive",
    "open_writer": "zarr_aac.archive",
    "export": "zarr_aac.archive",
    "verify": "zarr_aac.archive",
    "set_recording_attributes": "zarr_aac.archive",
    "AACFileStore": "zarr_aac.files",
    "open_aac_file": "zarr_aac.files",
    "open_legacy_archive": "zarr_aac.files",
    "open_dataset": "zarr_aac.dataset",
    "to_aac": "zarr_aac.dataset",
    "assign_time_index": "zarr_aac.dataset",
    "concat_recordings": "zarr_aac.dataset",
    "show": "zarr_aac.display",
}
"""Public names whose modules pull in heavier dependencies (pandas, xarray, fsspec), by module."""


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'zarr_aac' has no attribute {name!r}")
    return getattr(import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
