"""Archives of recordings: import from anything FFmpeg reads, live recording, the catalogue, export and verify."""

from zarr_aac.archive.exporter import export
from zarr_aac.archive.garbage import GCReport, gc
from zarr_aac.archive.import_options import ImportOptions
from zarr_aac.archive.importer import import_file, import_files
from zarr_aac.archive.live_writer import LiveWriter, open_writer
from zarr_aac.archive.recordings import catalogue, open_recording, set_recording_attributes
from zarr_aac.archive.verification import verify

__all__ = [
    "GCReport",
    "ImportOptions",
    "LiveWriter",
    "catalogue",
    "export",
    "gc",
    "import_file",
    "import_files",
    "open_recording",
    "open_writer",
    "set_recording_attributes",
    "verify",
]
