"""PCM-looking Zarr arrays stored as AAC-LC, with frame-exact random access."""

from __future__ import annotations

from zarr_aac.chunk import FrameIndex
from zarr_aac.codec import AACCodec
from zarr_aac.errors import AudioDecodeError, CorruptChunkError, UnsupportedAudioError, ZarrAACError

__all__ = [
    "AACCodec",
    "AudioDecodeError",
    "CorruptChunkError",
    "FrameIndex",
    "UnsupportedAudioError",
    "ZarrAACError",
]
