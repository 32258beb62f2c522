"""Archives of recordings: import from anything FFmpeg reads, the catalogue, export and verify."""

from zarr_aac.archive.exporter import export
from zarr_aac.archive.importer import catalogue, import_file, import_files, open_recording
from zarr_aac.archive.verification import verify

__all__ = ["catalogue", "export", "import_file", "import_files", "open_recording", "verify"]
