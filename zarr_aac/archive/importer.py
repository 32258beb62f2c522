"""Import audio files that FFmpeg reads into an archive: a Zarr group with one AAC array per recording.

A source is decoded in-process with PyAV and written one whole chunk at a time (a partial-chunk
write would re-encode, with generation loss), into a hidden temporary array that is renamed to
its final name only once complete; a failure or Ctrl-C deletes it. The group's ``catalogue``
attribute lists every recording's metadata by array name and is written by one process only.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import re
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av
import numpy as np
import zarr
from tqdm.auto import tqdm
from zarr.storage import LocalStore, MemoryStore

from zarr_aac.codec import aac
from zarr_aac.archive import source_metadata
from zarr_aac.codec.aac_codec import AACCodec
from zarr_aac.errors import ArchiveError, ImportFailedError, SourceError, ZarrAACError
from zarr_aac.archive.pending_writes import delete_tree

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, so one importing process per archive at a time
    fcntl = None

if TYPE_CHECKING:
    import pandas as pd

CATALOGUE_ATTR = "catalogue"
TEMP_PREFIX = ".importing-"
"""Arrays being written carry this prefix; they never appear in the catalogue."""
DEFAULT_CHUNK_DURATION = 60.0
_INT16_SAMPLE_FORMATS = {"u8", "u8p", "s16", "s16p"}
"""Decoded sample formats stored as int16; anything wider, float or lossy is stored as float32."""
_LOSSLESS_CODECS = {"flac", "alac", "wavpack", "ape", "tta", "mlp", "truehd"}
_UNTRUSTED_LENGTH_SLACK = 0.01
"""A lossy source may decode up to 1 % (plus two frames) short of its declared length."""

PathLike = str | os.PathLike


def chunk_length(chunk_duration: float, sample_rate: int) -> int:
    """Samples per chunk: ``chunk_duration`` seconds rounded to whole AAC frames, at least one."""
    if not chunk_duration > 0:
        raise ValueError(f"chunk_duration must be a positive number of seconds, got {chunk_duration!r}")
    frames = max(1, round(chunk_duration * sample_rate / aac.FRAME_LENGTH))
    return frames * aac.FRAME_LENGTH


ULTRASONIC_AAC_RATE = 48000
"""Rate declared for sources above 96 kHz. FFmpeg's encoder low-passes near 20-24 kHz of the
declared rate whatever that rate is, so declaring 48 kHz keeps the band up to the true Nyquist
frequency (measured on bat recordings: 250 kHz kept to 114 kHz, where 96 kHz keeps 62 kHz), at
twice the bytes of declaring 96 kHz. See docs/importing.md."""


def aac_rate_for(sample_rate: int) -> int:
    """The AAC rate declared to the encoder for a source at ``sample_rate`` Hz.

    A legal AAC rate is kept; above 96 kHz the source is time-stretched onto 48 kHz so its whole
    band survives; other rates go to the nearest legal rate at or above them.
    """
    if sample_rate > max(aac.AAC_SAMPLE_RATES):
        return ULTRASONIC_AAC_RATE
    return aac.nearest_aac_sample_rate(sample_rate)


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def open_archive(group: zarr.Group | PathLike, mode: str = "a") -> zarr.Group:
    if isinstance(group, zarr.Group):
        return group
    try:
        return zarr.open_group(group, mode=mode)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, zarr.errors.ContainsArrayError) as exc:
        raise ArchiveError(f"{group} is not a zarr-aac archive (a Zarr group): {exc}") from exc


# -- one source -------------------------------------------------------------------------------


def _pick_stream(container: av.container.InputContainer, stream: int | None, source: Path) -> av.AudioStream:
    streams = container.streams
    listing = ", ".join(f"#{s.index} {s.type} {_codec_name(s)}" for s in streams) or "none"
    if stream is not None:
        if not 0 <= stream < len(streams) or streams[stream].type != "audio":
            raise SourceError(source, f"stream {stream} is not an audio stream (streams: {listing})")
        return streams[stream]
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


def _decoded_blocks(
    container: av.container.InputContainer, stream: av.AudioStream, source: Path
) -> Iterator[np.ndarray]:
    """float32 (n, channels) blocks at the stream's own rate and channel order.

    Converted here rather than by FFmpeg's resampler, which stops at 64 channels (microphone
    arrays have more); the scale is the resampler's, so 8/16-bit sources come back exactly.
    """
    ctx = stream.codec_context
    rate, channels = ctx.sample_rate, ctx.channels
    for frame in container.decode(stream):
        if frame.sample_rate != rate or frame.layout.nb_channels != channels:
            raise SourceError(
                source,
                f"its audio changes from {rate} Hz x {channels} channels to {frame.sample_rate} Hz x "
                f"{frame.layout.nb_channels} channels mid-stream; split it first",
            )
        data = frame.to_ndarray()
        samples = data.T if frame.format.is_planar else data.reshape(-1, channels)
        kind = frame.format.name.rstrip("p")
        if kind == "u8":
            yield (samples.astype(np.float32) - 128.0) / 128.0
        elif kind in _FULL_SCALE:
            yield samples.astype(np.float32) / np.float32(_FULL_SCALE[kind])
        else:
            yield samples.astype(np.float32)


CHUNKS_PER_WRITE = min(4, os.cpu_count() or 1)
"""Chunks handed to zarr in one write, which encodes them in parallel threads; bounded so that
memory stays flat (about 35 MB a stereo 60 s chunk while it is converted and encoded)."""


def _chunks(blocks: Iterable[np.ndarray], length: int, channels: int) -> Iterator[np.ndarray]:
    """Regroup blocks into ``length``-sample chunks (the last one shorter), one buffer at a time."""
    buffer = np.empty((length, channels), dtype=np.float32)
    filled = 0
    for block in blocks:
        while block.shape[0]:
            take = min(length - filled, block.shape[0])
            buffer[filled : filled + take] = block[:take]
            filled += take
            block = block[take:]
            if filled == length:
                yield buffer
                filled = 0
    if filled:
        yield buffer[:filled]


def _source_info(
    source: Path, container: av.container.InputContainer, stream: av.AudioStream, digest: str
) -> dict[str, Any]:
    ctx = stream.codec_context
    extradata = bytes(ctx.extradata) if ctx.extradata is not None else None
    return {
        "name": source.name,
        "path": str(source.resolve()),
        "size": source.stat().st_size,
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


def _write_source(
    source: Path,
    group: zarr.Group,
    temp_name: str,
    digest: str,
    *,
    bitrate: int | None,
    aac_sample_rate: int | None,
    chunk_duration: float,
    start_time: datetime | str | None,
    user_metadata: dict[str, Any] | None,
    stream: int | None,
    dtype: str | None,
    allow_truncated: bool,
    progress: bool,
) -> dict[str, Any]:
    """Decode ``source`` into a new array ``temp_name`` of ``group``; return its attributes."""
    try:
        container = av.open(str(source))
    except av.FFmpegError as exc:
        raise SourceError(source, f"FFmpeg cannot read it ({exc.strerror or exc})") from exc
    with container:
        audio = _pick_stream(container, stream, source)
        ctx = audio.codec_context
        if ctx is None or not ctx.sample_rate or not ctx.channels or ctx.format is None:
            raise SourceError(
                source,
                f"its audio stream #{audio.index} declares no sample rate, channel count or sample format "
                "(is its header cut short?)",
            )
        rate, channels = ctx.sample_rate, ctx.channels
        array_dtype = np.dtype(dtype or ("int16" if ctx.format.name in _INT16_SAMPLE_FORMATS else "float32"))
        if array_dtype not in (np.dtype("int16"), np.dtype("float32")):
            raise ValueError(f"dtype must be int16 or float32, got {dtype!r}")
        aac_rate = aac_sample_rate or aac_rate_for(rate)
        chunk_channels = min(channels, aac.MAX_CHANNELS)
        bitrate = bitrate or aac.default_bitrate(chunk_channels, aac_rate)
        riff = source_metadata.read_riff(source)
        declared = riff.declared_frames if riff.declared_frames is not None else _declared_samples(audio)
        length = chunk_length(chunk_duration, rate)
        if declared:
            # zarr encodes an edge chunk at full length: a recording shorter than one chunk gets
            # a chunk of its own length (in whole frames), not seconds of encoded padding.
            length = min(length, -(-declared // aac.FRAME_LENGTH) * aac.FRAME_LENGTH)
        array = group.create_array(
            temp_name,
            shape=(0, channels),
            chunks=(length, chunk_channels),
            dtype=array_dtype,
            serializer=AACCodec(sample_rate=rate, aac_sample_rate=aac_rate, bitrate=bitrate),
            compressors=None,
            fill_value=0,
            dimension_names=("time", "channel"),
        )
        written = 0
        bar = tqdm(total=declared, unit="sample", unit_scale=True, desc=source.name, disable=None if progress else True)
        with bar:
            try:
                blocks = _decoded_blocks(container, audio, source)
                for chunk in _chunks(blocks, length * CHUNKS_PER_WRITE, channels):
                    if not np.isfinite(chunk).all():
                        raise SourceError(source, f"it decodes to NaN or infinite samples near sample {written}")
                    stop = written + chunk.shape[0]
                    array.resize((stop, channels))
                    array[written:stop] = aac.to_dtype(chunk, array_dtype, overwrite=True)
                    written = stop
                    bar.update(chunk.shape[0])
            except av.FFmpegError as exc:
                raise SourceError(source, f"decoding failed after {written} samples ({exc.strerror or exc})") from exc
        if written == 0:
            raise SourceError(source, "it holds no audio samples")
        truncated = _is_truncated(written, declared, ctx.name)
        if truncated and not allow_truncated:
            raise SourceError(
                source,
                f"it is truncated: {written} samples decode, its header declares {declared} "
                "(pass allow_truncated=True to import what is there)",
            )
        tags = _tags(container, audio)
        guano_fields = riff.guano
        started, started_from = source_metadata.start_time_from(
            user=start_time, guano_fields=guano_fields, tags=tags, filename=source.name
        )
        info = _source_info(source, container, audio, digest)
    info["truncated"] = truncated
    attrs = {
        "sample_rate": rate,
        "channels": channels,
        "n_samples": written,
        "duration_s": written / rate,
        "dtype": array_dtype.name,
        "start_time": started.isoformat() if started is not None else None,
        "start_time_source": started_from,
        "aac": {"sample_rate": aac_rate, "bitrate": bitrate, "chunk_samples": length},
        "source": info,
        "tags": tags,
        "guano": guano_fields,
        "user": user_metadata or {},
    }
    array.attrs.update(attrs)
    return attrs


def _is_truncated(written: int, declared: int | None, codec_name: str) -> bool:
    if declared is None or declared <= 0:
        return False
    exact = codec_name.startswith("pcm_") or codec_name in _LOSSLESS_CODECS
    slack = 0 if exact else int(declared * _UNTRUSTED_LENGTH_SLACK) + 2 * aac.FRAME_LENGTH
    return written < declared - slack


def _check_user_metadata(user_metadata: dict[str, Any] | None) -> None:
    if user_metadata is None:
        return
    try:
        json.dumps(user_metadata)
    except TypeError as exc:
        raise ValueError(f"metadata must be JSON-serialisable (it is stored in Zarr attributes): {exc}") from exc


def _import_into_temp(
    source: Path, store: Any, group_path: str, temp_name: str, digest: str, options: dict[str, Any]
) -> dict[str, Any]:
    """Worker entry point: write ``temp_name`` and return its attributes, or delete it and raise."""
    group = zarr.open_group(store=store, path=group_path, mode="r+")
    try:
        return _write_source(source, group, temp_name, digest, **options)
    except BaseException:
        _delete_node(group, temp_name)
        raise


# -- the archive ------------------------------------------------------------------------------


def _child_names(group: zarr.Group) -> set[str]:
    """Every name directly under the group in its store: its arrays and groups, and other
    writers' temporary files. Unlike ``group.array_keys()`` this neither parses nor warns about
    the ``zarr.<id>.partial`` files zarr creates while a concurrent importer writes metadata."""

    async def names() -> set[str]:
        return {name async for name in group.store.list_dir(group.path)}

    return zarr.core.sync.sync(names())


def _delete_node(group: zarr.Group, name: str) -> None:
    delete_tree(group.store, _child_path(group, name))


def _rename_node(group: zarr.Group, old: str, new: str) -> None:
    """Rename a child array; atomic on a local store, a copy then delete on other stores."""
    store = group.store
    if isinstance(store, LocalStore):
        base = _local_directory(group)
        os.rename(base / old, base / new)
        return
    zarr.core.sync.sync(_copy_prefix(store, _child_path(group, old), _child_path(group, new)))
    del group[old]


def _local_directory(group: zarr.Group) -> Path:
    return Path(group.store.root, group.path) if group.path else Path(group.store.root)


@contextmanager
def _archive_lock(group: zarr.Group) -> Iterator[None]:
    """Keep other processes on this machine out of the catalogue while this one updates it: an
    advisory lock (flock) on the archive's directory. Object and memory stores have none."""
    if fcntl is None or not isinstance(group.store, LocalStore):
        yield
        return
    descriptor = os.open(_local_directory(group), os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # releases the lock


def _child_path(group: zarr.Group, name: str) -> str:
    return f"{group.path}/{name}" if group.path else name


async def _copy_prefix(store: Any, old: str, new: str) -> None:
    prototype = zarr.core.buffer.default_buffer_prototype()
    async for key in store.list_prefix(f"{old}/"):
        value = await store.get(key, prototype)
        await store.set(f"{new}/{key[len(old) + 1 :]}", value)


def _reopen(group: zarr.Group, mode: str = "r+") -> zarr.Group:
    """The group as the store holds it now (a Group object keeps the attributes it was opened with)."""
    return zarr.open_group(store=group.store, path=group.path, mode=mode)


def _catalogue_entries(group: zarr.Group) -> dict[str, dict[str, Any]]:
    return dict(_reopen(group, mode="r").attrs.get(CATALOGUE_ATTR, {}))


def _commit(group: zarr.Group, temp_name: str, wanted: str, attrs: dict[str, Any], *, exact: bool) -> zarr.Array:
    """Give a finished temporary array a free name and its catalogue entry, or leave neither.

    Under the archive's lock the catalogue is read afresh, so an importer in another process
    neither loses entries nor takes the same name, and content it stored meanwhile is not stored
    twice (this temporary array is dropped). ``exact``: ``wanted`` or an error, not a variant.
    """
    with _archive_lock(group):
        archive = _reopen(group)
        entries = dict(archive.attrs.get(CATALOGUE_ATTR, {}))
        existing = _existing_with_hash(entries, attrs["source"]["sha256"])
        if existing is not None and existing in archive:
            _delete_node(archive, temp_name)
            return archive[existing]
        taken = set(entries) | _child_names(archive)
        if exact and wanted in taken:
            raise ArchiveError(f"{_child_path(archive, wanted)} already exists; pick another name")
        name = _unique_name(wanted, taken)
        _rename_node(archive, temp_name, name)
        try:
            entries[name] = attrs
            # through the caller's object, so the catalogue it holds is the one just written
            group.attrs.update({CATALOGUE_ATTR: entries})
        except BaseException:
            _delete_node(archive, name)
            raise
        return archive[name]


def _name_for(source: Path) -> str:
    """The file's stem as a Zarr node name (no leading dot, which marks temporaries, or underscore)."""
    return re.sub(r"[/\\]", "_", source.stem).lstrip("._") or "recording"


def _unique_name(wanted: str, taken: set[str]) -> str:
    name, n = wanted, 1
    while name in taken:
        n += 1
        name = f"{wanted}_{n}"
    return name


def _existing_with_hash(entries: dict[str, dict[str, Any]], digest: str) -> str | None:
    for name, entry in entries.items():
        if entry.get("source", {}).get("sha256") == digest:
            return name
    return None


def _prepare(source: PathLike) -> tuple[Path, str]:
    path = Path(source)
    if not path.is_file():
        raise SourceError(path, "no such file" if not path.exists() else "not a regular file")
    return path, file_sha256(path)


def import_file(
    source: PathLike,
    group: zarr.Group | PathLike,
    name: str | None = None,
    *,
    bitrate: int | None = None,
    aac_sample_rate: int | None = None,
    chunk_duration: float = DEFAULT_CHUNK_DURATION,
    start_time: datetime | str | None = None,
    metadata: dict[str, Any] | None = None,
    stream: int | None = None,
    dtype: str | None = None,
    allow_truncated: bool = False,
    progress: bool = True,
) -> zarr.Array:
    """Import one audio or video file into ``group`` as an array of shape (samples, channels).

    The array holds exactly the source's samples at its true rate (int16 for sources of 16 bits
    or fewer, float32 otherwise, unless ``dtype`` says). A file whose content was already
    imported is not imported again: its existing array is returned. ``name`` defaults to the
    file's stem, made unique. ``aac_sample_rate`` overrides the rate declared to the encoder
    (:func:`aac_rate_for` picks it by default; the array always keeps the true rate).
    """
    archive = open_archive(group)
    path, digest = _prepare(source)
    _check_user_metadata(metadata)
    parse_options(chunk_duration=chunk_duration, start_time=start_time, aac_sample_rate=aac_sample_rate)
    entries = _catalogue_entries(archive)
    existing = _existing_with_hash(entries, digest)
    if existing is not None and existing in archive:
        return archive[existing]
    taken = set(entries) | set(archive.keys())
    if name is not None and name in taken:
        raise ArchiveError(f"{_child_path(archive, name)} already exists; pick another name")
    final = name if name is not None else _unique_name(_name_for(path), taken)
    temp = f"{TEMP_PREFIX}{uuid.uuid4().hex}"
    options = {
        "bitrate": bitrate,
        "aac_sample_rate": aac_sample_rate,
        "chunk_duration": chunk_duration,
        "start_time": start_time,
        "user_metadata": metadata,
        "stream": stream,
        "dtype": dtype,
        "allow_truncated": allow_truncated,
        "progress": progress,
    }
    attrs = _import_into_temp(path, archive.store, archive.path, temp, digest, options)
    try:
        return _commit(archive, temp, final, attrs, exact=name is not None)
    except BaseException:
        _delete_node(archive, temp)
        raise


def parse_options(*, chunk_duration: float, start_time: datetime | str | None, aac_sample_rate: int | None) -> None:
    """Check options before any work starts, so a typo fails at once rather than per file."""
    chunk_length(chunk_duration, 1)
    if aac_sample_rate is not None:
        aac.check_aac_sample_rate(aac_sample_rate)
    if start_time is not None:
        source_metadata.parse_start_time(start_time)


def import_files(
    sources: Iterable[PathLike],
    group: zarr.Group | PathLike,
    *,
    workers: int | None = None,
    bitrate: int | None = None,
    aac_sample_rate: int | None = None,
    chunk_duration: float = DEFAULT_CHUNK_DURATION,
    start_time: datetime | str | None = None,
    metadata: dict[str, Any] | None = None,
    stream: int | None = None,
    dtype: str | None = None,
    allow_truncated: bool = False,
    progress: bool = True,
) -> list[zarr.Array]:
    """Import many files into one archive, in parallel processes; one array per recording.

    Files whose content is already in the archive (same SHA-256) are skipped, so a re-run is
    cheap. Each worker writes its own temporary array; this process alone renames them and
    writes the catalogue. If some files fail, the others are still imported and
    :class:`ImportFailedError` lists the failures. Returns the arrays in the order of ``sources``.
    """
    archive = open_archive(group)
    _check_user_metadata(metadata)
    parse_options(chunk_duration=chunk_duration, start_time=start_time, aac_sample_rate=aac_sample_rate)
    paths = [Path(s) for s in sources]
    options = {
        "bitrate": bitrate,
        "aac_sample_rate": aac_sample_rate,
        "chunk_duration": chunk_duration,
        "start_time": start_time,
        "user_metadata": metadata,
        "stream": stream,
        "dtype": dtype,
        "allow_truncated": allow_truncated,
        "progress": False,
    }
    failures: dict[str, BaseException] = {}
    digests: dict[int, str] = {}
    entries = _catalogue_entries(archive)
    present = _child_names(archive)
    by_hash = {e.get("source", {}).get("sha256"): n for n, e in entries.items() if n in present}
    pending: dict[int, tuple[Path, str, str]] = {}
    for i, path in enumerate(tqdm(paths, desc="hashing", unit="file", disable=None if progress else True)):
        try:
            path, digest = _prepare(path)
        except ZarrAACError as exc:
            failures[str(path)] = exc
            continue
        digests[i] = digest
        if digest not in by_hash:
            by_hash[digest] = None  # imported below, once even if listed twice
            pending[i] = (path, digest, f"{TEMP_PREFIX}{uuid.uuid4().hex}")

    n_workers = min(workers or os.cpu_count() or 1, max(len(pending), 1))
    if isinstance(archive.store, MemoryStore):
        n_workers = 1
    bar = tqdm(total=len(pending), desc="importing", unit="file", disable=None if progress else True)
    try:
        with bar:
            for i, result in _run(pending, archive, options, n_workers):
                path, digest, temp = pending[i]
                if isinstance(result, BaseException):
                    failures[str(path)] = result
                else:
                    by_hash[digest] = _commit(archive, temp, _name_for(path), result, exact=False).basename
                bar.update(1)
    except BaseException:
        for _, _, temp in pending.values():
            _delete_node(archive, temp)
        raise
    if failures:
        raise ImportFailedError(failures)
    return [archive[by_hash[digests[i]]] for i in range(len(paths))]


def _run(
    pending: dict[int, tuple[Path, str, str]], archive: zarr.Group, options: dict[str, Any], n_workers: int
) -> Iterator[tuple[int, dict[str, Any] | BaseException]]:
    """Yield (source number, attributes or the error) as imports finish."""
    if n_workers <= 1:
        for i, (path, digest, temp) in pending.items():
            try:
                yield i, _import_into_temp(path, archive.store, archive.path, temp, digest, options)
            except (ZarrAACError, OSError) as exc:
                yield i, _per_file_error(path, exc)
        return
    # forkserver, not fork: this process runs zarr's event-loop thread, and forking a threaded
    # process is unsafe; the server imports the importer once, so workers start in milliseconds.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["zarr_aac.archive.importer"])
    with ProcessPoolExecutor(max_workers=n_workers, mp_context=context) as pool:
        futures = {
            pool.submit(_import_into_temp, path, archive.store, archive.path, temp, digest, options): i
            for i, (path, digest, temp) in pending.items()
        }
        try:
            for future in as_completed(futures):
                i, error = futures[future], future.exception()
                if error is None:
                    yield i, future.result()
                elif isinstance(error, ZarrAACError | OSError):
                    yield i, _per_file_error(pending[i][0], error)
                else:
                    raise error
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def _per_file_error(source: Path, error: BaseException) -> BaseException:
    """A failure that stops one file of a batch, named after it (an OSError may not say which)."""
    if isinstance(error, OSError):
        return SourceError(source, f"{type(error).__name__}: {error}")
    return error


# -- reading the catalogue --------------------------------------------------------------------


def catalogue(group: zarr.Group | PathLike) -> pd.DataFrame:
    """Every recording of an archive, one row per array name, nested fields flattened with dots."""
    try:
        import pandas as pd
    except ModuleNotFoundError as exc:
        raise ZarrAACError("catalogue() needs pandas: pip install 'zarr-aac[xarray]'") from exc

    entries = _catalogue_entries(open_archive(group, mode="r"))
    if not entries:
        return pd.DataFrame(index=pd.Index([], name="name"))
    frame = pd.json_normalize([entries[name] for name in entries], max_level=1)
    frame.index = pd.Index(list(entries), name="name")
    return frame


def open_recording(path_or_array: zarr.Array | zarr.Group | PathLike) -> zarr.Array:
    """A recording: an array, an array path such as ``archive.zarr/NAME``, or an archive that holds
    exactly one recording. It must be stored with the zarr_aac codec."""
    node = path_or_array if isinstance(path_or_array, zarr.Array | zarr.Group) else _open_node(path_or_array)
    if isinstance(node, zarr.Array):
        return _check_recording(node)
    names = sorted(name for name in node.array_keys() if not name.startswith(TEMP_PREFIX))
    if len(names) != 1:
        where = path_or_array if not isinstance(path_or_array, zarr.Group) else node.store_path
        listing = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
        detail = f"{len(names)} recordings ({listing})" if names else "no recordings"
        raise ArchiveError(f"{where} holds {detail}; name one as {where}/NAME")
    return _check_recording(node[names[0]])


def _check_recording(array: zarr.Array) -> zarr.Array:
    if not isinstance(array.serializer, AACCodec):
        raise ArchiveError(f"{array.store_path} is not stored with the zarr_aac codec, so it is no recording")
    return array


def _open_node(path: PathLike) -> zarr.Array | zarr.Group:
    try:
        return zarr.open(path, mode="r")
    except FileNotFoundError as exc:
        raise ArchiveError(f"{path}: no Zarr array or group there") from exc
