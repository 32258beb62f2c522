"""Exception types: every failure a user can cause ends in one of these.

Errors cross process boundaries (import_files' worker pool, dask workers), so each one pickles.
A class whose constructor takes fields rather than a message rebuilds itself from those fields
and then gets its other attributes back (``__notes__`` among them).
"""

from __future__ import annotations

from typing import Any


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

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.key, self.reason), vars(self)


class MissingChunkError(CorruptChunkError):
    """A chunk of an array whose chunks are all stored (every imported recording) is absent:
    lost data, which zarr would otherwise return as fill values, indistinguishable from silence."""

    def __init__(self, key: str | None, reason: str = "not stored, though this array stores every chunk") -> None:
        super().__init__(key, reason)
        self.args = (f"missing chunk {key!r}: {reason}",)


class AlreadyImportedWarning(UserWarning):
    """A source was already in the archive, so it was not imported again: options given for it
    (name, start time, bitrate, metadata) were not applied."""


class TruncatedSourceWarning(UserWarning):
    """A truncated source was imported as far as it decodes (``allow_truncated=True``)."""


class AudioDecodeError(ZarrAACError):
    """FFmpeg refused to decode the AAC frames of a chunk or file."""


class UnsupportedAudioError(ZarrAACError, ValueError):
    """A sample rate, channel count, dtype or stream this package cannot store or serve."""


class SourceError(ZarrAACError, ValueError):
    """A source file cannot be imported: missing, unreadable, without audio, or truncated."""

    def __init__(self, source: object, reason: str) -> None:
        self.source = str(source)
        self.reason = reason
        super().__init__(f"cannot import {self.source}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.source, self.reason), vars(self)


class ArchiveError(ZarrAACError, ValueError):
    """An archive group or path does not hold what was asked of it (a name taken, several recordings)."""


class NameTakenError(ArchiveError):
    """A recording name asked for exactly is taken by a recording, a reservation or another node."""


class RecordingNotCommittedError(ArchiveError):
    """A recording was opened by its path before its import committed it (still being written,
    or left by an import that crashed): readers see only committed recordings (docs/scaling.md)."""


class RecordingInUseError(ArchiveError):
    """Another writer has the recording open (:func:`zarr_aac.open_writer`)."""


class ImportFailedError(ZarrAACError):
    """Some files of a batch import failed; the others were imported. ``failures`` maps source to error."""

    def __init__(self, failures: dict[str, BaseException]) -> None:
        self.failures = failures
        lines = "\n".join(f"  {error}" for error in failures.values())
        super().__init__(f"{len(failures)} file(s) could not be imported:\n{lines}")

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.failures,), vars(self)


class TimeLabelError(ZarrAACError, KeyError):
    """A time label that cannot be read, or names no sample of the recording's time axis."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class TimeAxisError(ZarrAACError, ValueError):
    """An operation a lazy time axis cannot do exactly, such as joining recordings that do not abut."""


class RecordingMetadataError(ZarrAACError, ValueError):
    """A recording's attributes (sample_rate, start_time) are missing or unreadable."""


class CorruptSourceError(ZarrAACError, ValueError):
    """An AAC file or old archive is malformed where its frames or sample tables are read.

    ``source`` names the file, URL or archive; the reason names the byte offset or table at fault.
    """

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"{source}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.source, self.reason), vars(self)


class SourceNotFoundError(ZarrAACError, FileNotFoundError):
    """The AAC file or URL an AACFileStore was asked to open does not exist."""


class ChunkReadError(ZarrAACError, OSError):
    """The store failed to deliver a chunk's bytes, after its own retries.

    ``key`` names the chunk; the store's exception is the ``__cause__``.
    """

    def __init__(self, key: str | None, reason: str) -> None:
        self.key = key
        self.reason = reason
        where = f"chunk {key!r}" if key is not None else "chunk"
        super().__init__(f"cannot read {where} from the store: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.key, self.reason), vars(self)


class DecodeWorkerError(ZarrAACError):
    """A worker process of the decode pool (zarr_aac.codec.decode_pool) died during a read; the
    message names the read and its chunks. The next read starts a new pool."""


class NoConditionalWriteWarning(UserWarning):
    """The archive's store cannot create an object only if it is absent, atomically: importers in
    several processes at once could take one name or import one content twice (docs/scaling.md)."""


class GenerationLossWarning(UserWarning):
    """A write re-encodes audio already stored as AAC (part of a chunk written), losing quality."""


class BitrateClampedWarning(UserWarning):
    """FFmpeg's AAC encoder carries fewer bits per second than the codec's ``bitrate`` asks for a
    chunk's channels (6144 bits a frame and channel): it encodes at its maximum, and the array's
    metadata keeps the higher figure. The default bitrate follows the array's channel count
    (zarr evolves a codec from the array's shape), so chunks of fewer channels can meet this too."""


class SlowCodecChainWarning(UserWarning):
    """A zarr_aac array has codecs besides the zarr_aac codec (zarr's default zstd when it was
    created without ``compressors=None``): zarr decodes whole chunks for every read of it."""
