"""Import audio files that FFmpeg reads into an archive: a Zarr group with one AAC array per recording.

A source is decoded in-process with PyAV and written one whole chunk at a time (a partial-chunk
write would re-encode, with generation loss), in place under a name reserved for it, and
committed by one small write of its catalogue entry once complete; until then no reader sees
it, and a failure or Ctrl-C deletes it (the protocol is in :mod:`zarr_aac.archive.recordings`).
"""

from __future__ import annotations

import hashlib
import itertools
import multiprocessing
import os
import re
import signal
import time
import warnings
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av
import numpy as np
import zarr
from tqdm.auto import tqdm
from zarr.core.array import AsyncArray
from zarr.core.buffer import default_buffer_prototype
from zarr.core.metadata import ArrayV3Metadata
from zarr.storage import MemoryStore

from zarr_aac.archive import entries as bk
from zarr_aac.archive import source_metadata
from zarr_aac.archive.chunk_writer import ChunkWriter
from zarr_aac.archive.fidelity import FidelityReport, ReadBackComparison, clip_level_for
from zarr_aac.archive.garbage import drop_entry
from zarr_aac.archive.import_options import DEFAULT_CHUNK_DURATION, ImportOptions
from zarr_aac.archive.locations import ArchiveLocation, RemoteSource, Source, parse_source
from zarr_aac.archive.recordings import (
    IMPORTING_ATTR,
    PathLike,
    Reservation,
    abandon_reservation,
    check_recording_name,
    importing_owner,
    legacy_catalogue,
    open_archive,
    owner_is_dead,
    publish_recording,
    recording_array,
    recording_with_hash,
    refresh_snapshot,
    remove_stale_imports,
    reopen,
    reservation_of,
    reserve_name,
)
from zarr_aac.codec import aac
from zarr_aac.codec.aac_codec import AACCodec, gain_for_peak
from zarr_aac.errors import (
    AlreadyImportedWarning,
    ArchiveError,
    ImportFailedError,
    NameTakenError,
    SourceError,
    TruncatedSourceWarning,
    ZarrAACError,
)

if TYPE_CHECKING:
    from distributed import Client
    from fsspec.core import OpenFile

__all__ = [
    "DEFAULT_CHUNK_DURATION",
    "ImportOptions",
    "aac_rate_for",
    "chunk_length_for",
    "file_sha256",
    "import_file",
    "import_files",
]

_INT16_SAMPLE_FORMATS = {"u8", "u8p", "s16", "s16p"}
"""Decoded sample formats stored as int16; anything wider, float or lossy is stored as float32."""
_LOSSLESS_CODECS = {"flac", "alac", "wavpack", "ape", "tta", "mlp", "truehd"}
_UNTRUSTED_LENGTH_SLACK = 0.01
"""A lossy source may decode up to 1 % (plus two frames) short of its declared length."""


def chunk_length_for(chunk_duration: float, sample_rate: int) -> int:
    """Samples per chunk: ``chunk_duration`` seconds rounded to whole AAC frames, at least one."""
    frames = max(1, round(chunk_duration * sample_rate / aac.FRAME_LENGTH))
    return frames * aac.FRAME_LENGTH


ULTRASONIC_AAC_RATE = 48000
"""Rate declared for sources above 96 kHz. Declared at 48 kHz, a sweep gets twice the bits per
sample it would get at 96 kHz, and held its frequency in every frame (docs/fidelity.md)."""
HALVED_AAC_RATES = {64000: 32000, 88200: 44100, 96000: 48000}
"""Legal rates declared at half: at the same bitrate that doubles the bits per sample, and the
whole band is coded (with the encoder's cutoff at the declared Nyquist frequency)."""
NEAR_MONO_SIDE_DB = -40.0
NEAR_MONO_STEREO_BITRATE = 112_000
"""Stereo whose side signal is this far below its mid (identical or nearly identical channels)
gets this bitrate: FLAC codes such files in a fifth of PCM, and 160 kbps exceeds half of that."""
NEAR_MONO_PROBE_SECONDS = 2.0


def aac_rate_for(sample_rate: int) -> int:
    """The AAC rate declared to the encoder for a source at ``sample_rate`` Hz.

    Above 96 kHz the source is time-stretched onto 48 kHz, and 64, 88.2 and 96 kHz onto half their
    rate; other legal AAC rates are kept, and other rates go to the nearest legal rate at or
    above them (docs/importing.md has the table).
    """
    if sample_rate > max(aac.AAC_SAMPLE_RATES):
        return ULTRASONIC_AAC_RATE
    if sample_rate in HALVED_AAC_RATES:
        return HALVED_AAC_RATES[sample_rate]
    return aac.nearest_aac_sample_rate(sample_rate)


def is_near_mono(head: np.ndarray) -> bool:
    """Whether two channels are so alike (side/mid below NEAR_MONO_SIDE_DB) that stereo coding
    needs fewer bits; ``head`` is (n, 2) float32 samples from the start of the source."""
    mid = float(np.sum((head[:, 0].astype(np.float64) + head[:, 1]) ** 2))
    side = float(np.sum((head[:, 0].astype(np.float64) - head[:, 1]) ** 2))
    return mid > 0 and side <= mid * 10 ** (NEAR_MONO_SIDE_DB / 10)


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's content, in hex: what recognises a source imported before."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _pick_stream(container: av.container.InputContainer, stream: int | None, source: Source) -> av.AudioStream:
    streams = container.streams
    listing = ", ".join(f"#{s.index} {s.type} {_codec_name(s)}" for s in streams) or "none"
    if stream is not None:
        chosen = streams[stream] if 0 <= stream < len(streams) else None
        if not isinstance(chosen, av.AudioStream):
            raise SourceError(source, f"stream {stream} is not an audio stream (streams: {listing})")
        return chosen
    audio = streams.audio
    if not audio:
        raise SourceError(source, f"it has no audio stream (streams: {listing})")
    if len(audio) > 1:
        raise SourceError(source, f"it has {len(audio)} audio streams; pass stream= one of them (streams: {listing})")
    return audio[0]


def _codec_name(stream: av.stream.Stream) -> str:
    return stream.codec_context.name if stream.codec_context is not None else "(no decoder)"


def _declared_samples(stream: av.AudioStream) -> int | None:
    if stream.duration is None or stream.time_base is None:
        return None
    return round(stream.duration * stream.time_base * stream.codec_context.sample_rate)


_FULL_SCALE = {"u8": 128.0, "s16": 32768.0, "s32": 2.0**31, "s64": 2.0**63}
"""Integer sample formats and the value of full scale; u8 is offset by 128 as well."""


@dataclass
class _DecodeEnd:
    """How decoding ended: ``error`` is FFmpeg's message when it stopped on undecodable data, with
    ``samples`` decoded before it."""

    samples: int = 0
    error: str | None = None


def _decoded_blocks(
    container: av.container.InputContainer,
    stream: av.AudioStream,
    source: Source,
    end: _DecodeEnd,
    *,
    salvage: bool,
) -> Iterator[np.ndarray]:
    """float32 (n, channels) blocks at the stream's own rate and channel order.

    Undecodable data raises a SourceError, or with ``salvage`` ends the blocks there (as FFmpeg's
    command line does with a file cut short), noted in ``end``.

    Converted here rather than by FFmpeg's resampler, which stops at 64 channels (microphone
    arrays have more); the scale is the resampler's, so 8/16-bit sources come back exactly.
    """
    ctx = stream.codec_context
    rate, channels = ctx.sample_rate, ctx.channels
    frames = container.decode(stream)
    while True:
        try:
            frame = next(frames, None)
        except av.FFmpegError as exc:
            end.error = exc.strerror or str(exc)
            if salvage:
                return
            raise SourceError(
                source,
                f"decoding failed after {end.samples} samples ({end.error}); "
                f"{TRUNCATED_HINT.replace('import what is there', 'import what decodes')}",
            ) from exc
        if frame is None:
            return
        _stop_if_asked()
        if frame.sample_rate != rate or frame.layout.nb_channels != channels:
            raise SourceError(
                source,
                f"its audio changes from {rate} Hz x {channels} channels to {frame.sample_rate} Hz x "
                f"{frame.layout.nb_channels} channels mid-stream; split it first",
            )
        data = frame.to_ndarray()
        samples = data.T if frame.format.is_planar else data.reshape(-1, channels)
        end.samples += samples.shape[0]
        kind = frame.format.name.rstrip("p")
        if kind == "u8":
            yield (samples.astype(np.float32) - 128.0) / 128.0
        elif kind in _FULL_SCALE:
            yield samples.astype(np.float32) / np.float32(_FULL_SCALE[kind])
        else:
            yield samples.astype(np.float32)


def source_peak(source: Source, stream: int) -> float:
    """The largest absolute sample of ``source``'s audio stream ``stream`` (full scale 1), from a
    decode of its own before the import's, which picks the gain (``gain_for_peak``).

    Decoding stops at undecodable data with the peak so far: the import's own decode then stops
    or raises there, so nothing past it is stored.
    """
    peak = 0.0
    with _open_source(source) as container:
        audio = container.streams[stream]
        assert isinstance(audio, av.AudioStream)
        for block in _decoded_blocks(container, audio, source, _DecodeEnd(), salvage=True):
            if block.size:
                peak = max(peak, float(block.max()), -float(block.min()))
    return peak


def _source_info(
    source: Source, container: av.container.InputContainer, stream: av.AudioStream, digest: str
) -> dict[str, Any]:
    ctx = stream.codec_context
    extradata = bytes(ctx.extradata) if ctx.extradata is not None else None
    return {
        "name": source.name,
        "path": str(source.resolve()) if isinstance(source, Path) else str(source),
        "size": source.stat().st_size if isinstance(source, Path) else source.size(),
        "sha256": digest,
        "format": container.format.name,
        "codec": ctx.name,
        "sample_format": ctx.format.name,
        "bit_depth": source_metadata.bit_depth(ctx.name, ctx.format.name, extradata),
        "stream_index": stream.index,
    }


def _tags(container: av.container.InputContainer, stream: av.AudioStream) -> dict[str, str]:
    tags = {str(k): str(v) for k, v in container.metadata.items() if str(v).strip()}
    tags.update({str(k): str(v) for k, v in stream.metadata.items() if str(v).strip() and k not in tags})
    return tags


@dataclass(frozen=True)
class _RecordingLayout:
    """How one source is stored: its true rate and channel count, the array's dtype and chunk
    shape, the rate and bitrate declared to the encoder, and the gain before it."""

    sample_rate: int
    channels: int
    dtype: np.dtype
    chunk_length: int
    chunk_channels: int
    aac_sample_rate: int
    bitrate: int
    gain: float

    @classmethod
    def of(cls, audio: av.AudioStream, declared: int | None, options: ImportOptions, peak: float) -> _RecordingLayout:
        """The layout of ``audio``, whose samples peak at ``peak`` (full scale 1, see ``source_peak``)."""
        ctx = audio.codec_context
        rate, channels = ctx.sample_rate, ctx.channels
        aac_rate = options.aac_sample_rate or aac_rate_for(rate)
        chunk_channels = min(channels, aac.MAX_CHANNELS)
        chunk_length = chunk_length_for(options.chunk_duration, rate)
        if declared:
            # zarr encodes an edge chunk at full length: a recording shorter than one chunk gets
            # a chunk of its own length (in whole frames), not seconds of encoded padding.
            chunk_length = min(chunk_length, -(-declared // aac.FRAME_LENGTH) * aac.FRAME_LENGTH)
        dtype = options.dtype or np.dtype("int16" if ctx.format.name in _INT16_SAMPLE_FORMATS else "float32")
        return cls(
            sample_rate=rate,
            channels=channels,
            dtype=dtype,
            chunk_length=chunk_length,
            chunk_channels=chunk_channels,
            aac_sample_rate=aac_rate,
            bitrate=options.bitrate or aac.default_bitrate(chunk_channels, aac_rate, rate),
            # int16 stores nothing above full scale, so no gain makes room for it
            gain=gain_for_peak(min(peak, 1.0) if dtype == np.int16 else peak),
        )

    def for_content(self, head: np.ndarray, options: ImportOptions) -> _RecordingLayout:
        """This layout with the default bitrate lowered for near-mono stereo, judged from ``head``."""
        if options.bitrate is None and self.channels == 2 and is_near_mono(head):
            return replace(self, bitrate=min(self.bitrate, NEAR_MONO_STEREO_BITRATE))
        return self

    def create_array(self, group: zarr.Group, name: str, owner: dict[str, Any]) -> zarr.Array:
        """An empty array ``name`` of ``group`` with this layout, grown as samples arrive.

        Every chunk is stored, all-zero ones too, and the codec says so: a chunk lost later then
        raises on reading instead of reading as silence. ``owner`` names the importing process
        until the recording is committed, so a later import can tell a dead one's leftovers.

        The metadata is made in memory by zarr and stored by one create-if-absent write, without
        zarr's reads of the group and of the name first (the name is reserved for this import,
        and a node that appeared there all the same makes the write fail rather than be replaced).

        Raises
        ------
        ArchiveError
            If a node was stored under ``name`` after it was reserved.
        """
        made = zarr.create_array(
            MemoryStore(),
            zarr_format=3,
            shape=(0, self.channels),
            chunks=(self.chunk_length, self.chunk_channels),
            dtype=self.dtype,
            serializer=AACCodec(
                sample_rate=self.sample_rate,
                aac_sample_rate=self.aac_sample_rate,
                bitrate=self.bitrate,
                gain=self.gain,
                all_chunks_stored=True,
            ),
            compressors=None,
            fill_value=0,
            dimension_names=("time", "channel"),
            attributes={IMPORTING_ATTR: owner},
            config={"write_empty_chunks": True},
        )
        metadata = made.metadata
        assert isinstance(metadata, ArrayV3Metadata)  # asked for above
        array = zarr.Array(AsyncArray(metadata, group.store_path / name, made.async_array.config))
        if not _store_metadata(array, create=True):
            raise ArchiveError(
                f"{array.store_path}: another node was stored under the name reserved for this import (by "
                "hand, or by a program that ignores the archive's reservations); this import is abandoned and "
                "what is under that name deleted: import the file again"
            )
        return array


def _store_metadata(array: zarr.Array, *, create: bool = False) -> bool:
    """Store ``array``'s metadata (one object, Zarr v3); with ``create``, only if none is stored
    (False then if some was). True once stored."""
    ((key, buffer),) = array.metadata.to_buffer_dict(default_buffer_prototype()).items()
    store_key = f"{array.path}/{key}"
    if create:
        return bool(bk.run(bk.create_object(array.store, store_key, buffer.to_bytes())))
    bk.run(array.store.set(store_key, buffer))
    return True


@contextmanager
def _open_source(source: Source) -> Iterator[av.container.InputContainer]:
    """The source's container: FFmpeg reads a local file, or the local copy of one at a URL, by its
    path; a URL without a copy is read through fsspec, in ranges as FFmpeg asks."""
    local = source if isinstance(source, Path) else source.local_copy
    with nullcontext(str(local)) if local is not None else source.open() as file:
        try:
            container = av.open(file, mode="r")
        except av.FFmpegError as exc:
            raise SourceError(source, f"FFmpeg cannot read it ({exc.strerror or exc})") from exc
        with container:
            yield container


def _check_stream_declares_format(audio: av.AudioStream, source: Source) -> None:
    ctx = audio.codec_context
    if ctx is None or not ctx.sample_rate or not ctx.channels or ctx.format is None:
        raise SourceError(
            source,
            f"its audio stream #{audio.index} declares no sample rate, channel count or sample format "
            "(is its header cut short?)",
        )


def _write_source(
    source: Source, group: zarr.Group, name: str, digest: str, options: ImportOptions, *, owner: dict[str, Any]
) -> dict[str, Any]:
    """Decode ``source`` into a new array ``name`` of ``group`` (reserved for it); return its attributes."""
    with _open_source(source) as container:
        audio = _pick_stream(container, options.stream, source)
        _check_stream_declares_format(audio, source)
        riff = source_metadata.read_riff(source)
        declared = riff.declared_frames if riff.declared_frames is not None else _declared_samples(audio)
        layout = _RecordingLayout.of(audio, declared, options, source_peak(source, audio.index))
        end = _DecodeEnd()
        blocks = _decoded_blocks(container, audio, source, end, salvage=options.allow_truncated)
        try:
            head, blocks = _peek(blocks, NEAR_MONO_PROBE_SECONDS * layout.sample_rate)
        except av.FFmpegError as exc:
            raise SourceError(source, f"decoding failed at its start ({exc.strerror or exc})") from exc
        layout = layout.for_content(np.concatenate(head) if head else np.zeros((0, layout.channels)), options)
        array = layout.create_array(group, name, owner)
        report = FidelityReport(layout.sample_rate, layout.channels, clip_level_for(layout.dtype, layout.gain))
        disable_bar = None if options.progress else True
        with tqdm(total=declared, unit="sample", unit_scale=True, desc=source.name, disable=disable_bar) as bar:
            array, chunk_nbytes = _write_samples(
                array, itertools.chain(head, blocks), source, layout, bar, report=report
            )
        written = array.shape[0]
        truncated = end.error is not None or _is_truncated(written, declared, audio.codec_context.name)
        if truncated and not options.allow_truncated:
            raise SourceError(
                source,
                f"it is truncated: {written} samples decode, its header declares {declared} ({TRUNCATED_HINT})",
            )
        if truncated:
            _warn_truncated(source, written, declared, layout.sample_rate, end.error)
        tags = _tags(container, audio)
        started, started_from = source_metadata.start_time_from(
            user=options.start_time, guano_fields=riff.guano, tags=tags, filename=source.name
        )
        info = {**_source_info(source, container, audio, digest), "truncated": truncated}
    attrs: dict[str, Any] = {
        "sample_rate": layout.sample_rate,
        "channels": layout.channels,
        "n_samples": written,
        "duration_s": written / layout.sample_rate,
        "dtype": layout.dtype.name,
        "start_time": started.isoformat() if started is not None else None,
        "start_time_source": started_from,
        # the chunk length keeps its stored key, so catalogues of every version read alike
        "aac": {"sample_rate": layout.aac_sample_rate, "bitrate": layout.bitrate, "chunk_samples": layout.chunk_length},
        "fidelity": report.result(chunk_nbytes),
        "source": info,
        "tags": tags,
        "guano": riff.guano,
        "user": options.metadata or {},
    }
    # the shape and attributes in one write, which drops the owner's mark
    _store_metadata(
        zarr.Array(AsyncArray(array.metadata.update_attributes(attrs), array.store_path, array.async_array.config))
    )
    return attrs


def _peek(blocks: Iterator[np.ndarray], samples: float) -> tuple[list[np.ndarray], Iterator[np.ndarray]]:
    """The first blocks holding at least ``samples`` samples (all if fewer), and the rest."""
    head: list[np.ndarray] = []
    taken = 0
    for block in blocks:
        head.append(block)
        taken += block.shape[0]
        if taken >= samples:
            break
    return head, blocks


def _write_samples(
    array: zarr.Array,
    blocks: Iterator[np.ndarray],
    source: Source,
    layout: _RecordingLayout,
    bar: tqdm,
    *,
    report: FidelityReport,
) -> tuple[zarr.Array, int]:
    """Write the decoded ``blocks`` into ``array`` as they come (see chunk_writer) and add the
    source and read-back samples of each stored stretch to ``report``; return the array over
    the samples written (in memory: its stored metadata still has the shape it was created
    with) and the bytes of its chunks."""
    written = 0
    compared = ReadBackComparison(array, report)
    try:
        with ChunkWriter(array) as writer:
            for block in blocks:
                if not np.isfinite(block).all():
                    raise SourceError(source, f"it decodes to NaN or infinite samples near sample {written}")
                writer.write(aac.to_dtype(block, layout.dtype))
                compared.hold(block, written)
                written += block.shape[0]
                compared.compare_stored(writer.array)
                bar.update(block.shape[0])
            writer.finish()
        compared.compare_stored(writer.array)
    except av.FFmpegError as exc:
        raise SourceError(source, f"decoding failed after {written} samples ({exc.strerror or exc})") from exc
    if written == 0:
        raise SourceError(source, "it holds no audio samples")
    return writer.array, writer.stored_nbytes


TRUNCATED_HINT = "import what is there with allow_truncated=True, or --allow-truncated on the command line"


def _warn_truncated(source: Source, written: int, declared: int | None, rate: int, error: str | None) -> None:
    """Say how much of a truncated source was imported."""
    of = f" of the {declared} ({declared / rate:.2f} s) its header declares" if declared else ""
    cause = f"; decoding stopped on undecodable data ({error})" if error else ""
    warnings.warn(
        f"{source.name} is truncated: imported {written} samples ({written / rate:.2f} s){of}{cause}",
        TruncatedSourceWarning,
        stacklevel=2,
    )


def _is_truncated(written: int, declared: int | None, codec_name: str) -> bool:
    if declared is None or declared <= 0:
        return False
    exact = codec_name.startswith("pcm_") or codec_name in _LOSSLESS_CODECS
    slack = 0 if exact else int(declared * _UNTRUSTED_LENGTH_SLACK) + 2 * aac.FRAME_LENGTH
    return written < declared - slack


def _import_into_archive(
    source: Source,
    store: Any,
    group_path: str,
    *,
    digest: str,
    wanted: str,
    exact: bool,
    options: ImportOptions,
) -> str:
    """Worker entry point: reserve a name, write the recording in place under it and commit it;
    return the committed recording's name (another's, if it committed this content first). On
    failure, delete what was written and raise."""
    if isinstance(source, RemoteSource) and source.local_copy is None:
        # hashed by the parent process: read once more, to a local copy that the steps below read
        with source.fetched() as (fetched, fetched_digest):
            if fetched_digest != digest:
                raise SourceError(source, "its content changed while the import ran; import it again")
            return _import_into_archive(
                fetched, store, group_path, digest=digest, wanted=wanted, exact=exact, options=options
            )
    group = zarr.open_group(store=store, path=group_path, mode="r+", zarr_format=3)
    legacy = legacy_catalogue(group, reread=False)
    return _import_into_group(source, group, digest=digest, wanted=wanted, exact=exact, options=options, legacy=legacy)


def _import_into_group(
    source: Source,
    group: zarr.Group,
    *,
    digest: str,
    wanted: str,
    exact: bool,
    options: ImportOptions,
    legacy: dict[str, dict[str, Any]],
) -> str:
    """:func:`_import_into_archive` into an open archive, whose old catalogue attribute
    (:func:`legacy_catalogue`) the caller read for this import."""
    owner = importing_owner()
    reservation = _reserve_or_join(group, wanted, digest, exact=exact, owner=owner, legacy=legacy)
    if isinstance(reservation, str):
        return reservation
    try:
        attrs = _write_source(source, group, reservation.name, digest, options, owner=owner)
    except BaseException:
        abandon_reservation(group, reservation)
        raise
    return publish_recording(group, reservation, attrs)


SAME_CONTENT_WAIT = 120.0
"""Seconds an import waits for another process importing the same content under the name it
wants, rather than importing it too under the next name (the commit would drop one of them)."""
SAME_CONTENT_POLL = 0.2


def _reserve_or_join(
    group: zarr.Group,
    wanted: str,
    digest: str,
    *,
    exact: bool,
    owner: dict[str, Any],
    legacy: dict[str, dict[str, Any]],
) -> Reservation | str:
    """A reservation of ``wanted`` (or, unless ``exact``, the next free name); or, if another
    import of the same content holds ``wanted`` and commits within :data:`SAME_CONTENT_WAIT`,
    the name of its recording. ``legacy``: the old catalogue attribute (:func:`legacy_catalogue`)."""
    try:
        return reserve_name(group, wanted, digest, exact=True, owner=owner, legacy=legacy)
    except NameTakenError:
        if exact:
            raise
    deadline = time.monotonic() + SAME_CONTENT_WAIT
    while time.monotonic() < deadline:
        holder = reservation_of(group, wanted)
        if holder is None or holder.get("digest") != digest or owner_is_dead(holder.get("owner")):
            break
        existing = recording_with_hash(group, digest, legacy=legacy)
        if existing is not None:
            return existing
        time.sleep(SAME_CONTENT_POLL)
    existing = _existing_recording(group, digest, legacy=legacy)
    if existing is not None:
        return existing
    return reserve_name(group, wanted, digest, owner=owner, legacy=legacy)


def _existing_recording(
    archive: zarr.Group, digest: str, *, legacy: dict[str, dict[str, Any]] | None = None
) -> str | None:
    """The committed recording of content ``digest``, if any. The entry of one whose array was
    deleted by hand is dropped, so its content is imported again. ``legacy``: the old catalogue
    attribute, if read already (:func:`legacy_catalogue`)."""
    name = recording_with_hash(archive, digest, legacy=legacy)
    if name is None or name in archive:
        return name
    entry = bk.run(bk.read_document(archive.store, bk.bookkeeping_key(archive.path, bk.RECORDINGS, digest)))
    if entry is not None and entry.get("name") == name:
        drop_entry(archive, digest, name, str(entry.get("token")))
    return None


def _name_for(source: Source) -> str:
    """The file's stem as a Zarr node name (no leading dot, which marks temporaries, or underscore)."""
    return re.sub(r"[/\\]", "_", source.stem).lstrip("._") or "recording"


@contextmanager
def _fetched(source: PathLike | OpenFile | RemoteSource) -> Iterator[tuple[Source, str]]:
    """The source ready to import, and its content's SHA-256: a local file as it is, a file at a
    URL copied to a local temporary file for the duration of the block."""
    path = parse_source(source)
    if isinstance(path, RemoteSource):
        with path.fetched() as fetched:
            yield fetched
    else:
        yield _prepare(path)


def _prepare(source: PathLike | OpenFile | RemoteSource) -> tuple[Source, str]:
    path = parse_source(source)
    if isinstance(path, RemoteSource):
        return path, path.checked_sha256()
    if not path.is_file():
        raise SourceError(path, "no such file" if not path.exists() else "not a regular file")
    if path.stat().st_size == 0:
        raise SourceError(path, "it is empty (0 bytes)")
    return path, file_sha256(path)


def _options_from(options: ImportOptions | None, **keywords: Any) -> ImportOptions:
    """``options``, or the options the keywords give; not both, which would leave one unused."""
    if options is None:
        return ImportOptions(**keywords)
    if ImportOptions(**keywords) != ImportOptions():
        raise TypeError("pass the import options either as options=ImportOptions(...) or as keywords, not both")
    return options


def import_file(
    source: PathLike | OpenFile,
    group: zarr.Group | PathLike,
    name: str | None = None,
    *,
    options: ImportOptions | None = None,
    bitrate: int | None = None,
    aac_sample_rate: int | None = None,
    chunk_duration: float = DEFAULT_CHUNK_DURATION,
    start_time: datetime | date | str | None = None,
    metadata: dict[str, Any] | None = None,
    stream: int | None = None,
    dtype: str | None = None,
    allow_truncated: bool = False,
    progress: bool = True,
) -> zarr.Array:
    """Import one audio or video file into ``group`` as an array of shape (samples, channels).

    The array holds exactly the source's samples at its true rate. A file whose content was
    already imported is not imported again: its existing array is returned.

    Parameters
    ----------
    source
        The file: anything FFmpeg reads that holds an audio stream. A local path, a URL that
        fsspec reads (``s3://``, ``https://``...; copied once to a local temporary file, which
        the import reads and then deletes), or an ``fsspec.open(url, **options)`` result for a
        URL that needs options of its own.
    group
        The archive: a Zarr group or its path or URL, created if missing.
    name
        The array's name; by default the file's stem, made unique (``NAME_2``...).
    options
        All the options below as one :class:`ImportOptions`, instead of the keywords.
    bitrate, aac_sample_rate, chunk_duration, start_time, metadata, stream, dtype, allow_truncated, progress
        As in :class:`ImportOptions`.

    Returns
    -------
    zarr.Array
        The recording, new or imported before.

    Raises
    ------
    SourceError
        If the file is missing, unreadable, without audio, truncated, or decodes to NaN.
    ArchiveError
        If ``group`` is not a Zarr group, or another node already has the ``name`` asked for.
    ValueError, TypeError, UnsupportedAudioError
        If an option is invalid (see :class:`ImportOptions`); checked before the file is read.
    """
    options = _options_from(
        options,
        bitrate=bitrate,
        aac_sample_rate=aac_sample_rate,
        chunk_duration=chunk_duration,
        start_time=start_time,
        metadata=metadata,
        stream=stream,
        dtype=dtype,
        allow_truncated=allow_truncated,
        progress=progress,
    )
    if name is not None:
        check_recording_name(name)
    archive, committed = import_named(source, group, name, options)
    return recording_array(archive, committed)


def import_named(
    source: PathLike | OpenFile | RemoteSource, group: zarr.Group | PathLike, name: str | None, options: ImportOptions
) -> tuple[zarr.Group, str]:
    """What :func:`import_file` does, up to opening the recording: the archive, and the name of
    the recording of ``source`` in it, imported now or before (a dask worker sends back only
    the name). A source at a URL is copied once to a local temporary file, which every step
    after its hash reads (:meth:`RemoteSource.fetched`)."""
    with _fetched(source) as (path, digest):
        archive = open_archive(group)
        # the archive's metadata is read once an import (a worker keeps the archive open across
        # imports): for the old catalogue attribute, which the cleanup, dedup and naming look at
        now = reopen(archive)
        legacy = legacy_catalogue(now, reread=False)
        remove_stale_imports(now, stacklevel=3)  # the caller of import_file
        existing = _existing_recording(archive, digest, legacy=legacy)
        if existing is not None:
            asked = _options_asked(options) + ([f"name={name!r}"] if name is not None and name != existing else [])
            _warn_not_reimported([path], archive, [existing], asked)
            return archive, existing
        committed = _import_into_group(
            path,
            now,
            digest=digest,
            wanted=name if name is not None else _name_for(path),
            exact=name is not None,
            options=options,
            legacy=legacy,
        )
    return archive, committed


@dataclass(frozen=True)
class _PendingImport:
    """A source of a batch still to import: its path and content hash."""

    path: Source
    digest: str


@dataclass
class _Batch:
    """The sources of one ``import_files`` call, by their number in the caller's list.

    ``recording_of`` maps each content hash to its array's name (None while it is imported), so
    content listed twice, or already in the archive, is imported once.
    """

    digests: dict[int, str] = field(default_factory=dict)
    recording_of: dict[str, str | None] = field(default_factory=dict)
    pending: dict[int, _PendingImport] = field(default_factory=dict)
    failures: dict[str, BaseException] = field(default_factory=dict)

    @classmethod
    def hashed(cls, paths: list[Source], archive: zarr.Group, progress: bool) -> _Batch:
        """Hash every source and set aside those whose content the archive lacks."""
        batch = cls()
        for i, given in enumerate(tqdm(paths, desc="hashing", unit="file", disable=None if progress else True)):
            try:
                path, digest = _prepare(given)
            except ZarrAACError as exc:
                batch.failures[str(given)] = exc
                continue
            batch.digests[i] = digest
            if digest not in batch.recording_of:
                batch.recording_of[digest] = _existing_recording(archive, digest)
                if batch.recording_of[digest] is None:
                    batch.pending[i] = _PendingImport(path, digest)
        return batch

    def arrays(self, archive: zarr.Group, count: int) -> list[zarr.Array]:
        """The recording of each of the ``count`` sources, in order, once all are imported."""
        return [recording_array(archive, self._recording_name(i)) for i in range(count)]

    def _recording_name(self, i: int) -> str:
        name = self.recording_of[self.digests[i]]
        if name is None:
            raise RuntimeError(f"source {i} was neither imported nor listed as failed")
        return name


def import_files(
    sources: Iterable[PathLike | OpenFile],
    group: zarr.Group | PathLike,
    *,
    workers: int | None = None,
    client: Client | None = None,
    storage_options: dict[str, Any] | None = None,
    options: ImportOptions | None = None,
    bitrate: int | None = None,
    aac_sample_rate: int | None = None,
    chunk_duration: float = DEFAULT_CHUNK_DURATION,
    start_time: datetime | date | str | None = None,
    metadata: dict[str, Any] | None = None,
    stream: int | None = None,
    dtype: str | None = None,
    allow_truncated: bool = False,
    progress: bool = True,
) -> list[zarr.Array]:
    """Import many files into one archive, in parallel processes; one array per recording.

    Files whose content is already in the archive (same SHA-256) are skipped, so a re-run is
    cheap. Each worker writes its recordings in place and commits each by one small write, so
    other importers may run at the same time. If some files fail, the others are still imported.

    Parameters
    ----------
    sources
        The files, as :func:`import_file` takes them; each recording is named after its
        file's stem, made unique.
    group
        The archive: a Zarr group or its path or URL, created if missing.
    workers
        Worker processes; by default one per core (one for a memory store, which processes
        do not share). Not with ``client``.
    client
        A ``dask.distributed`` Client: the cluster's workers read the sources and write the
        archive, one file per task, and this process shows the progress
        (:mod:`zarr_aac.archive.distributed`). The workers must reach the sources and the
        archive: shared paths or URLs; local paths are made absolute here.
    storage_options
        fsspec options (endpoint, credentials) for an archive given by URL; passed to the
        workers with ``client``.
    options
        All the options below as one :class:`ImportOptions`, instead of the keywords.
    bitrate, aac_sample_rate, chunk_duration, start_time, metadata, stream, dtype, allow_truncated, progress
        As in :class:`ImportOptions`; ``progress`` shows a bar over files, not one per file.

    Returns
    -------
    list of zarr.Array
        The recording of each source, in the order of ``sources``.

    Raises
    ------
    ImportFailedError
        If some files could not be imported; ``failures`` maps each to its error.
    ArchiveError
        If ``group`` is not a Zarr group.
    ValueError, TypeError, UnsupportedAudioError
        If an option is invalid (see :class:`ImportOptions`), or ``workers`` is given with
        ``client``; checked before any file is hashed.
    """
    options = _options_from(
        options,
        bitrate=bitrate,
        aac_sample_rate=aac_sample_rate,
        chunk_duration=chunk_duration,
        start_time=start_time,
        metadata=metadata,
        stream=stream,
        dtype=dtype,
        allow_truncated=allow_truncated,
        progress=progress,
    )
    paths = [parse_source(s) for s in sources]
    if options.start_time is not None and len(paths) > 1:
        raise ValueError(
            f"start_time would give all {len(paths)} sources the same start, overriding their own; "
            "import them one at a time, or set each start later with set_recording_attributes"
        )
    if client is not None:
        if workers is not None:
            raise TypeError("workers= sets local processes; with client= the cluster's workers import, so drop one")
        from zarr_aac.archive.distributed import import_on_cluster

        return import_on_cluster(client, paths, ArchiveLocation.of(group, storage_options), options)
    archive = ArchiveLocation.of(group, storage_options).open() if storage_options is not None else open_archive(group)
    remove_stale_imports(archive)
    batch = _Batch.hashed(paths, archive, options.progress)
    skipped = [i for i in batch.digests if i not in batch.pending and batch.recording_of[batch.digests[i]]]
    if skipped:
        _warn_not_reimported(
            [paths[i] for i in skipped],
            archive,
            [str(batch.recording_of[batch.digests[i]]) for i in skipped],
            _options_asked(options),
        )
    _import_and_commit(batch, archive, options, _worker_count(workers, archive, len(batch.pending)))
    if batch.failures:
        raise ImportFailedError(batch.failures)
    return batch.arrays(archive, len(paths))


def _options_asked(options: ImportOptions) -> list[str]:
    """The options that differ from the defaults, as ``name=value``: what re-importing cannot apply."""
    default = ImportOptions()
    return [
        f"{name}={getattr(options, name)!r}"
        for name in ("bitrate", "aac_sample_rate", "chunk_duration", "start_time", "metadata", "stream", "dtype")
        if getattr(options, name) != getattr(default, name)
    ]


def _warn_not_reimported(paths: list[Source], archive: zarr.Group, names: list[str], asked: list[str]) -> None:
    """Warn that sources already in the archive were skipped, if options were asked that this leaves unapplied."""
    if not asked:  # skipping content already stored is the documented, expected re-run
        return
    listing = ", ".join(f"{path.name} (as {name})" for path, name in zip(paths, names, strict=True))
    message = (
        f"already imported, so not imported again and {', '.join(asked)} not applied: {listing}. "
        "Change start_time or metadata with zarr_aac.set_recording_attributes (zarr-aac set); "
        "to re-encode, delete the recording and import again"
    )
    warnings.warn(message, AlreadyImportedWarning, stacklevel=3)


def _worker_count(workers: int | None, archive: zarr.Group, n_pending: int) -> int:
    """Processes to run: as asked (default one per core), no more than files, one for a memory
    store, which other processes cannot see."""
    if isinstance(archive.store, MemoryStore):
        return 1
    return min(workers or os.cpu_count() or 1, max(n_pending, 1))


SNAPSHOT_AFTER = 200
"""A batch that commits at least this many recordings refreshes the catalogue snapshot, so reading
the catalogue of a large archive stays one object (the refresh reads every entry once)."""


def _import_and_commit(batch: _Batch, archive: zarr.Group, options: ImportOptions, n_workers: int) -> None:
    """Import the batch's pending sources, each committed by the process that writes it. An
    interrupt, or an error that is no single file's fault, stops them all: each deletes what it wrote."""
    per_file = replace(options, progress=False)
    bar = tqdm(total=len(batch.pending), desc="importing", unit="file", disable=None if options.progress else True)
    committed = 0
    with bar:
        for i, result in _run(batch.pending, archive, per_file, n_workers):
            pending = batch.pending[i]
            if isinstance(result, BaseException):
                batch.failures[str(pending.path)] = result
            else:
                batch.recording_of[pending.digest] = result
                committed += 1
            bar.update(1)
    if committed >= SNAPSHOT_AFTER:
        refresh_snapshot(archive)


def _run(
    pending: dict[int, _PendingImport], archive: zarr.Group, options: ImportOptions, n_workers: int
) -> Iterator[tuple[int, str | BaseException]]:
    """Yield (source number, committed recording's name or the error) as imports finish."""
    if n_workers <= 1:
        for i, job in pending.items():
            try:
                name = _import_into_archive(
                    job.path,
                    archive.store,
                    archive.path,
                    digest=job.digest,
                    wanted=_name_for(job.path),
                    exact=False,
                    options=options,
                )
                yield i, name
            except Exception as exc:  # noqa: BLE001 -- one file's failure, whatever raised it; an interrupt stops all
                yield i, _per_file_error(job.path, exc)
        return
    # forkserver, not fork: this process runs zarr's event-loop thread, and forking a threaded
    # process is unsafe; the server imports the importer once, so workers start in milliseconds.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["zarr_aac.archive.importer"])
    stop = context.Event()
    with ProcessPoolExecutor(
        max_workers=n_workers, mp_context=context, initializer=_init_worker, initargs=(stop,)
    ) as pool:
        futures = {
            pool.submit(
                _import_into_archive,
                job.path,
                archive.store,
                archive.path,
                digest=job.digest,
                wanted=_name_for(job.path),
                exact=False,
                options=options,
            ): i
            for i, job in pending.items()
        }
        try:
            for future in as_completed(futures):
                i, error = futures[future], future.exception()
                if error is None:
                    yield i, future.result()
                elif isinstance(error, Exception):
                    yield i, _per_file_error(pending[i].path, error)
                else:
                    raise error
        except BaseException:
            # stop the files under way too, rather than wait for work that is thrown away
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            raise


_stop_events: list[Any] = []
"""In worker processes: the parent's multiprocessing Event asking them to stop."""


class _StopRequested(Exception):
    """The parent asked this worker to stop (it was interrupted): the file is abandoned."""


def _stop_if_asked() -> None:
    if _stop_events and _stop_events[0].is_set():
        raise _StopRequested


def _init_worker(stop: Any) -> None:
    """Worker start-up: take the parent's stop event and leave Ctrl-C to the parent, which
    stops every worker through the event (a worker interrupted on its own could die between
    tasks and break the pool)."""
    _stop_events[:] = [stop]
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _per_file_error(source: Source, error: BaseException) -> BaseException:
    """A failure that stops one file of a batch, named after it: an OSError, or an error from a
    library (a parser meeting a malformed file), may not say which file nor what kind of error."""
    if isinstance(error, ZarrAACError):
        return error
    named = SourceError(source, f"{type(error).__name__}: {error}")
    named.__cause__ = error
    return named
