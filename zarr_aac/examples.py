"""The example recording shipped with the package."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def example_recording() -> Path:
    """Path of a 10 s, 32 kHz mono field soundscape with bird song (FLAC, BSD-3-Clause)."""
    return Path(str(files("zarr_aac") / "data" / "forest_birds_32k.flac"))
