"""Existing AAC files (ADTS, MP4/M4A) and the old archive layout shown as PCM arrays, without re-encoding."""

from zarr_aac.files.legacy import open_legacy_archive
from zarr_aac.files.store import AACFileStore, open_aac_file

__all__ = ["AACFileStore", "open_aac_file", "open_legacy_archive"]
