"""Exception types: every failure a user can cause ends in one of these."""

from __future__ import annotations


class ZarrAACError(Exception):
    """Base class of all errors raised by zarr-aac."""


class CorruptChunkError(ZarrAACError, ValueError):
    """A stored chunk fails its structural or checksum checks.

    ``key`` names the chunk in its store (``None`` where zarr does not pass it on, as in the
    read-modify-write path of a partial-chunk write).
    """

    def __init__(self, key: str | None, reason: str) -> None:
        self.key = key
        self.reason = reason
        where = f"chunk {key!r}" if key is not None else "chunk"
        super().__init__(f"corrupt {where}: {reason}")


class AudioDecodeError(ZarrAACError):
    """FFmpeg refused to decode the AAC frames of a chunk or file."""


class UnsupportedAudioError(ZarrAACError, ValueError):
    """A sample rate, channel count, dtype or stream this package cannot store or serve."""
