"""PCM-looking Zarr arrays stored as AAC-LC, with frame-exact random access."""

from __future__ import annotations

from importlib import import_module
from typing import Any

from zarr_aac.chunk import FrameIndex
from zarr_aac.codec import AACCodec
from zarr_aac.errors import AudioDecodeError, CorruptChunkError, UnsupportedAudioError, ZarrAACError
from zarr_aac.examples import example_recording

_LAZY = {
    "import_file": "zarr_aac.importer",
    "import_files": "zarr_aac.importer",
    "export": "zarr_aac.exporter",
    "open_dataset": "zarr_aac.xarray_backend",
    "to_aac": "zarr_aac.xarray_io",
    "assign_time_index": "zarr_aac.xarray_io",
    "AACFileStore": "zarr_aac.store",
    "open_aac_file": "zarr_aac.store",
    "open_legacy_archive": "zarr_aac.legacy",
    "concat_recordings": "zarr_aac.xarray_io",
    "verify": "zarr_aac.verification",
    "tolerant_reads": "zarr_aac.tolerant",
}
"""Names whose modules pull in heavier optional dependencies, imported on first use."""

__all__ = [
    "AACCodec",
    "AudioDecodeError",
    "CorruptChunkError",
    "FrameIndex",
    "UnsupportedAudioError",
    "ZarrAACError",
    "example_recording",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'zarr_aac' has no attribute {name!r}")
    return getattr(import_module(module), name)
