"""A read-only Zarr store that shows an existing AAC file as a PCM array, without re-encoding.

``AACFileStore`` presents ``zarr.json`` for one (samples, channels) array coded with the
``zarr_aac`` codec, and virtual chunks ``c/<i>/0`` laid out as zarr_aac/codec/chunk_format.py
describes: a synthesised header and frame index, then the raw AAC frames of the file. A byte
range of a virtual chunk maps onto byte ranges of the file, so the codec's partial decode becomes
a couple of range reads of the original file, local or remote.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import platformdirs
import zarr
from zarr.abc.store import ByteRequest, OffsetByteRequest, RangeByteRequest, Store, SuffixByteRequest
from zarr.core.buffer import Buffer, BufferPrototype, default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import FsspecStore, LocalStore

from zarr_aac.codec.aac import FRAME_LENGTH, frames_for_samples
from zarr_aac.codec.aac_codec import CODEC_NAME, LEAD_IN, LEAD_OUT, SUPPORTED_DTYPES
from zarr_aac.codec.chunk_format import FRAME_SIZE_ITEMSIZE, HEADER_NBYTES, pack_prefix, prefix_nbytes_upper_bound
from zarr_aac.errors import CorruptSourceError, SourceNotFoundError, UnsupportedAudioError
from zarr_aac.files.containers import index_stream
from zarr_aac.files.stream import ByteSource, StreamIndex
from zarr_aac.validation import parse_int_in_range

DEFAULT_CHUNK_LENGTH = 1 << 19
"""Samples per virtual chunk: few chunks per file, yet a small frame index to fetch per partial read."""
MAX_GAP = 64 << 10
"""File ranges closer than this are fetched as one request (ADTS headers sit between frames)."""
INDEX_CACHE_VERSION = 1
INDEX_SUFFIX = ".zaac-index.npz"
FINGERPRINT_NBYTES = 64 << 10
"""Bytes hashed at each end of a remote file to tell a changed file from a cached index."""
METADATA_KEY = "zarr.json"
_CHUNK_INDEX = re.compile("0|[1-9][0-9]*")
"""A chunk index as zarr writes it: ASCII digits without leading zeros."""
AudioSource = str | os.PathLike | tuple[Store, str]
"""A local path, an fsspec URL, or (any zarr store, key of the file in it), e.g. an ObjectStore."""


@dataclass(frozen=True)
class StoreByteSource:
    """One file seen as a key of a zarr store: LocalStore for paths, FsspecStore for URLs."""

    store: Store
    key: str
    name: str
    nbytes: int

    @classmethod
    async def from_path(cls, path: str | os.PathLike) -> StoreByteSource:
        """A local file, through a LocalStore on its folder."""
        path = Path(path).absolute()
        if not path.is_file():
            raise SourceNotFoundError(f"no such audio file: {path}")
        return await cls.from_store(LocalStore(path.parent, read_only=True), path.name, name=str(path))

    @classmethod
    async def from_url(cls, url: str, storage_options: dict | None = None) -> StoreByteSource:
        """A file at an fsspec URL, through an FsspecStore; ``file://`` URLs are local paths."""
        if url.startswith("file://"):
            return await cls.from_path(url.removeprefix("file://"))
        store = FsspecStore.from_url(url, storage_options=storage_options, read_only=True)
        return await cls.from_store(store, "", name=url)

    @classmethod
    async def from_store(cls, store: Store, key: str, name: str | None = None) -> StoreByteSource:
        """The value of ``key`` in any zarr store, named ``name`` in messages (by default store/key)."""
        name = f"{store}/{key}" if name is None else name
        try:
            nbytes = await store.getsize(key)
        except FileNotFoundError:
            raise SourceNotFoundError(f"no such audio file: {name}") from None
        return cls(store, key, name, nbytes)

    async def size(self) -> int:
        return self.nbytes

    async def read_ranges(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        prototype = default_buffer_prototype()
        requests = [self.store.get(self.key, prototype, RangeByteRequest(start, stop)) for start, stop in ranges]
        buffers = [await requests[0]] if len(requests) == 1 else await asyncio.gather(*requests)
        out = []
        for (start, stop), buffer in zip(ranges, buffers, strict=True):
            data = b"" if buffer is None else buffer.to_bytes()
            if len(data) != stop - start:
                raise CorruptSourceError(
                    self.name, f"bytes {start}-{stop} asked, {len(data)} received: the file changed or is truncated"
                )
            out.append(data)
        return out


async def _source_identity(source: StoreByteSource) -> dict[str, Any]:
    """What a cached index is keyed by: size and mtime for local files, size and end hashes else."""
    identity: dict[str, Any] = {"nbytes": source.nbytes}
    if isinstance(source.store, LocalStore):
        identity["mtime_ns"] = os.stat(source.name).st_mtime_ns
    else:
        span = min(FINGERPRINT_NBYTES, source.nbytes)
        head, tail = await source.read_ranges([(0, span), (source.nbytes - span, source.nbytes)])
        identity["sha256_ends"] = hashlib.sha256(head + tail).hexdigest()
    return identity


def save_index(path: Path, index: StreamIndex, identity: dict[str, Any], track: int | None) -> None:
    """Write the index sidecar atomically (a temporary file renamed into place).

    Offsets are stored as the gap after the previous frame (the ADTS header size, or 0 for
    contiguous MP4 samples), which compresses to almost nothing.
    """
    meta = {
        "version": INDEX_CACHE_VERSION,
        "identity": identity,
        "track": track,
        "channels": index.channels,
        "sample_rate": index.sample_rate,
        "priming": index.priming,
        "n_samples": index.n_samples,
        "container": index.container,
        "attributes": index.attributes,
    }
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as f:
            gaps = np.diff(index.frame_offsets, prepend=0) - np.concatenate(([0], index.frame_sizes[:-1]))
            np.savez_compressed(
                f,
                meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
                asc=np.frombuffer(index.asc, dtype=np.uint8),
                frame_gaps=gaps,
                frame_sizes=index.frame_sizes.astype(np.uint32),
            )
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def load_index(path: Path, identity: dict[str, Any], track: int | None) -> StreamIndex | None:
    """The cached index at ``path`` if it was made for this very file and track, else None."""
    try:
        with np.load(path) as saved:
            meta = json.loads(saved["meta"].tobytes())
            if meta.get("version") != INDEX_CACHE_VERSION or meta["identity"] != identity or meta["track"] != track:
                return None
            sizes = saved["frame_sizes"].astype(np.int64)
            offsets = np.cumsum(saved["frame_gaps"] + np.concatenate(([0], sizes[:-1])))
            return StreamIndex(
                asc=saved["asc"].tobytes(),
                channels=meta["channels"],
                sample_rate=meta["sample_rate"],
                frame_offsets=offsets,
                frame_sizes=sizes,
                priming=meta["priming"],
                n_samples=meta["n_samples"],
                container=meta["container"],
                attributes=meta["attributes"],
            )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError) as exc:
        warnings.warn(f"ignoring unreadable index cache {path}: {exc}", stacklevel=3)
        return None


def index_cache_path(path: str | os.PathLike) -> Path:
    """Where the frame index of the local file ``path`` is cached unless asked otherwise: in the
    user's cache folder (platformdirs), named by a hash of the file's absolute path, so nothing is
    written beside the user's recordings."""
    name = hashlib.sha256(os.fsencode(Path(path).resolve())).hexdigest()[:32]
    return Path(platformdirs.user_cache_dir("zarr-aac")) / "indexes" / f"{name}{INDEX_SUFFIX}"


def _default_index_path(source: StoreByteSource) -> Path | None:
    """In the cache folder for a local file; nowhere for other stores, whose files the cache
    could not tell apart cheaply."""
    if isinstance(source.store, LocalStore):
        return index_cache_path(source.name)
    return None


async def _open_index(
    source: StoreByteSource, track: int | None, index_path: str | os.PathLike | bool | None
) -> StreamIndex:
    """The stream index of ``source``: from the cache at ``index_path`` if it matches, else built
    and saved there (a failed save only warns when the location was not asked for)."""
    path = _default_index_path(source) if index_path is None or index_path is True else index_path
    if path is None or path is False:
        return await index_stream(source, track)
    path = Path(path)
    identity = await _source_identity(source)
    index = load_index(path, identity, track)
    if index is None:
        index = await index_stream(source, track)
        try:
            if index_path is None:
                path.parent.mkdir(parents=True, exist_ok=True)
            save_index(path, index, identity, track)
        except OSError as exc:
            if index_path is not None:
                raise
            warnings.warn(f"could not write the index cache {path} ({exc}); the next open will rescan", stacklevel=4)
    return index


async def _open_indexed(
    open_source: Callable[[], Awaitable[StoreByteSource]],
    track: int | None,
    index_path: str | os.PathLike | bool | None,
) -> tuple[StoreByteSource, StreamIndex]:
    source = await open_source()
    return source, await _open_index(source, track, index_path)


def parse_chunk_length(value: Any) -> int:
    """A virtual chunk's length in samples: an integer of at least one frame."""
    return parse_int_in_range(value, "chunk_length", minimum=FRAME_LENGTH)


def parse_dtype(value: Any) -> np.dtype:
    """The sample type presented: int16 or float32, as the codec decodes to."""
    dtype = np.dtype(value)
    if dtype not in SUPPORTED_DTYPES:
        raise UnsupportedAudioError(f"AACFileStore presents int16 or float32 samples, not {dtype}")
    return dtype


class AACFileStore(Store):
    """A read-only Zarr v3 store presenting one AAC-LC stream, already indexed, as one PCM array.

    Array sample ``i`` is decoded sample ``index.priming + i`` of the stream: for a file, the
    ``i``-th sample a standard decoder (FFmpeg) presents. The constructor does no I/O; open a
    file with :meth:`from_path`, :meth:`from_url` or :meth:`from_store` (or use
    :func:`open_aac_file`), an old archive with :func:`zarr_aac.files.legacy.legacy_store`.
    zarr's ``await AACFileStore.open(...)`` takes the constructor's arguments.

    Parameters
    ----------
    source : ByteSource
        Where the frames' bytes are read, at the offsets ``index`` gives.
    index : StreamIndex
        The stream's configuration, frame locations and priming.
    dtype : str or numpy.dtype, default "int16"
        Sample type presented: ``"int16"`` or ``"float32"``.
    chunk_length : int, default 2**19
        Samples per virtual chunk, at least 1024.
    attributes : dict, optional
        Array attributes added to (or replacing) ``sample_rate``, ``start_time`` and ``source``.
    read_only : bool, default True
        Accepted for zarr's ``Store.open(read_only=...)``; the store is always read-only.

    Raises
    ------
    UnsupportedAudioError
        ``dtype`` is neither int16 nor float32.
    ValueError
        ``chunk_length`` is not an integer of at least 1024, or ``read_only`` is False.
    CorruptSourceError
        The index holds a frame longer than an AAC frame can be.
    """

    supports_writes = False
    supports_deletes = False
    supports_partial_writes = False
    supports_listing = True

    def __init__(
        self,
        source: ByteSource,
        index: StreamIndex,
        *,
        dtype: str | np.dtype = "int16",
        chunk_length: int = DEFAULT_CHUNK_LENGTH,
        attributes: dict | None = None,
        read_only: bool = True,
    ) -> None:
        if not read_only:
            raise ValueError(
                "AACFileStore is read-only: it presents an existing AAC file; to write audio, create a zarr "
                "array with the zarr_aac codec in a writable store"
            )
        super().__init__(read_only=True)
        self.dtype = parse_dtype(dtype)
        self.chunk_length = parse_chunk_length(chunk_length)
        if index.frame_sizes.size and int(index.frame_sizes.max()) > 0xFFFF:
            raise CorruptSourceError(source.name, f"an AAC frame of {int(index.frame_sizes.max())} bytes is impossible")
        self.source = source
        self.index = index
        self.n_chunks = -(-index.n_samples // self.chunk_length)
        # An ASC of odd length is padded to whole uint16 frame-size slots; decoders ignore the zero byte.
        self.asc = index.asc + b"\0" * (len(index.asc) % FRAME_SIZE_ITEMSIZE)
        index_bound = prefix_nbytes_upper_bound(frames_for_samples(self.chunk_length + LEAD_IN + LEAD_OUT))
        self.min_frames = (index_bound - HEADER_NBYTES - len(self.asc)) // FRAME_SIZE_ITEMSIZE
        self._metadata = self._array_metadata(attributes or {})

    @classmethod
    def from_path(
        cls,
        path: str | os.PathLike,
        *,
        dtype: str | np.dtype = "int16",
        chunk_length: int = DEFAULT_CHUNK_LENGTH,
        track: int | None = None,
        index_path: str | os.PathLike | bool | None = None,
    ) -> AACFileStore:
        """Open a local ``.aac`` (ADTS) or ``.m4a``/``.mp4`` file.

        The frame index is built once and cached in the user's cache folder (see
        :func:`index_cache_path`).

        Parameters
        ----------
        path : str or os.PathLike
            The file.
        dtype : str or numpy.dtype, default "int16"
            Sample type presented: ``"int16"`` or ``"float32"``.
        chunk_length : int, default 2**19
            Samples per virtual chunk, at least 1024.
        track : int, optional
            Which of an MP4 file's audio tracks (0, the default, is the first).
        index_path : str, os.PathLike or bool, optional
            Where to cache the frame index instead, e.g. beside the file (a write failure then
            raises rather than warns); ``False`` for no cache.

        Returns
        -------
        AACFileStore

        Raises
        ------
        SourceNotFoundError
            There is no such file.
        UnsupportedAudioError
            The file is not ADTS or MP4, its stream is not AAC-LC, or ``dtype`` or ``track``
            is not one the file can be served as.
        CorruptSourceError
            The file's headers or sample tables are malformed.
        ValueError
            ``chunk_length`` is not an integer of at least 1024.
        """
        return cls._opened(
            partial(StoreByteSource.from_path, path),
            dtype=dtype,
            chunk_length=chunk_length,
            track=track,
            index_path=index_path,
        )

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        storage_options: dict | None = None,
        dtype: str | np.dtype = "int16",
        chunk_length: int = DEFAULT_CHUNK_LENGTH,
        track: int | None = None,
        index_path: str | os.PathLike | bool | None = None,
    ) -> AACFileStore:
        """Open a file at an fsspec URL (``https://``, ``s3://``, ...; ``file://`` is a local path).

        Parameters and errors as :meth:`from_path`, and:

        Parameters
        ----------
        url : str
            The file's URL.
        storage_options : dict, optional
            Passed to fsspec for the URL's file system.
        index_path : str, os.PathLike or bool, optional
            Where to cache the frame index; by default no cache is written for a remote file.

        Returns
        -------
        AACFileStore
        """
        return cls._opened(
            partial(StoreByteSource.from_url, url, storage_options),
            dtype=dtype,
            chunk_length=chunk_length,
            track=track,
            index_path=index_path,
        )

    @classmethod
    def from_store(
        cls,
        store: Store,
        key: str,
        *,
        dtype: str | np.dtype = "int16",
        chunk_length: int = DEFAULT_CHUNK_LENGTH,
        track: int | None = None,
        index_path: str | os.PathLike | bool | None = None,
    ) -> AACFileStore:
        """Open a file held as ``key`` of any zarr store (an ObjectStore over S3, a MemoryStore, ...).

        Parameters and errors as :meth:`from_path`, and:

        Parameters
        ----------
        store : zarr.abc.store.Store
            The store holding the file.
        key : str
            The file's key in ``store``.
        index_path : str, os.PathLike or bool, optional
            Where to cache the frame index; by default no cache is written.

        Returns
        -------
        AACFileStore
        """
        return cls._opened(
            partial(StoreByteSource.from_store, store, key),
            dtype=dtype,
            chunk_length=chunk_length,
            track=track,
            index_path=index_path,
        )

    @classmethod
    def _opened(
        cls,
        open_source: Callable[[], Awaitable[StoreByteSource]],
        *,
        dtype: str | np.dtype,
        chunk_length: int,
        track: int | None,
        index_path: str | os.PathLike | bool | None,
    ) -> AACFileStore:
        # The options are checked before any I/O, so a bad one fails without touching the file.
        dtype, chunk_length = parse_dtype(dtype), parse_chunk_length(chunk_length)
        source, index = sync(_open_indexed(open_source, track, index_path))
        return cls(source, index, dtype=dtype, chunk_length=chunk_length)

    # -- what the store presents ----------------------------------------------------------------

    def _array_metadata(self, extra_attributes: dict) -> bytes:
        index = self.index
        attributes = {
            "sample_rate": index.sample_rate,
            "start_time": None,
            "source": {
                "name": self.source.name,
                "container": index.container,
                "priming": index.priming,
                "n_frames": index.n_frames,
                **index.attributes,
            },
            **extra_attributes,
        }
        metadata = {
            "zarr_format": 3,
            "node_type": "array",
            "shape": [index.n_samples, index.channels],
            "data_type": self.dtype.name,
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [self.chunk_length, index.channels]}},
            "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
            "fill_value": 0,
            "codecs": [
                {
                    "name": CODEC_NAME,
                    "configuration": {"sample_rate": index.sample_rate, "aac_sample_rate": index.sample_rate},
                }
            ],
            "attributes": attributes,
            "dimension_names": ["time", "channel"],
        }
        return json.dumps(metadata).encode()

    def _chunk_number(self, key: str) -> int | None:
        """The chunk a key names, if it is one the store lists: ``c/00/0`` or ``c/²/0`` are not."""
        parts = key.split("/")
        if len(parts) != 3 or parts[0] != "c" or parts[2] != "0" or _CHUNK_INDEX.fullmatch(parts[1]) is None:
            return None
        number = int(parts[1])
        return number if number < self.n_chunks else None

    def chunk_frames(self, number: int) -> tuple[np.ndarray, int]:
        """(numbers of the file frames, skip) of virtual chunk ``number``.

        The chunk starts one pre-roll frame before the frame holding its first sample (none
        when that is the stream's first frame), so ``skip`` is at least 1024 except there. Like
        every zarr chunk it holds ``chunk_length`` samples: past the end of the stream the
        last frame is repeated, and zarr drops those samples. It also lists at least
        ``min_frames`` frames (the following ones, never decoded by a partial read), so the
        codec's first request, a bound on header and index, is exactly the synthesised prefix
        and needs no file read. For that the ASC is padded to an even length with a zero byte,
        which decoders ignore (trailing bits after the config).
        """
        start = number * self.chunk_length + self.index.priming
        first_frame = max(start // FRAME_LENGTH - 1, 0)
        stop_frame = max((start + self.chunk_length - 1) // FRAME_LENGTH + 1, first_frame + self.min_frames)
        frames = np.minimum(np.arange(first_frame, stop_frame), self.index.n_frames - 1)
        return frames, start - first_frame * FRAME_LENGTH

    def _prefix(self, number: int) -> tuple[bytes, np.ndarray]:
        """(header and frame index bytes, file frame numbers) of virtual chunk ``number``."""
        frames, skip = self.chunk_frames(number)
        prefix = pack_prefix(
            self.asc,
            self.index.frame_sizes[frames],
            channels=self.index.channels,
            aac_sample_rate=self.index.sample_rate,
            n_samples=self.chunk_length,
            skip=skip,
            payload=None,
        )
        return prefix, frames

    async def _chunk_bytes(self, number: int, byte_range: ByteRequest | None) -> bytes:
        prefix, frames = self._prefix(number)
        sizes = self.index.frame_sizes[frames]
        virtual = np.zeros(sizes.size + 1, dtype=np.int64)
        np.cumsum(sizes, out=virtual[1:])
        total = len(prefix) + int(virtual[-1])
        start, stop = _resolve(byte_range, total)
        head = prefix[start:stop]
        payload_start, payload_stop = max(start - len(prefix), 0), max(stop - len(prefix), 0)
        if payload_stop <= payload_start:
            return head
        body = await self._payload(self.index.frame_offsets[frames], sizes, virtual, payload_start, payload_stop)
        return head + body

    async def _payload(
        self, offsets: np.ndarray, sizes: np.ndarray, virtual: np.ndarray, start: int, stop: int
    ) -> bytes:
        """Bytes [start, stop) of the concatenated frames, read as few coalesced file ranges."""
        first = int(np.searchsorted(virtual, start, side="right")) - 1
        last = int(np.searchsorted(virtual, stop, side="left"))
        piece_start = offsets[first:last] + np.maximum(start - virtual[first:last], 0)
        piece_stop = offsets[first:last] + np.minimum(stop - virtual[first:last], sizes[first:last])
        if np.array_equal(piece_start[1:], piece_stop[:-1]):
            (blob,) = await self.source.read_ranges([(int(piece_start[0]), int(piece_stop[-1]))])
            return blob
        order = np.argsort(piece_start, kind="stable")
        sorted_start, reach = piece_start[order], np.maximum.accumulate(piece_stop[order])
        new_span = np.concatenate(([True], sorted_start[1:] > reach[:-1] + MAX_GAP))
        span_of = np.empty(order.size, dtype=np.int64)
        span_of[order] = np.cumsum(new_span) - 1
        span_starts = sorted_start[new_span]
        span_stops = reach[np.append(np.flatnonzero(new_span)[1:] - 1, order.size - 1)]
        blobs = [
            memoryview(b)
            for b in await self.source.read_ranges(list(zip(span_starts.tolist(), span_stops.tolist(), strict=True)))
        ]
        base = span_starts[span_of]
        return b"".join(
            blobs[s][a:b]
            for s, a, b in zip(
                span_of.tolist(), (piece_start - base).tolist(), (piece_stop - base).tolist(), strict=True
            )
        )

    # -- the Store interface ----------------------------------------------------------------------

    async def get(
        self, key: str, prototype: BufferPrototype | None = None, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        prototype = prototype or default_buffer_prototype()
        if key == METADATA_KEY:
            start, stop = _resolve(byte_range, len(self._metadata))
            return prototype.buffer.from_bytes(self._metadata[start:stop])
        number = self._chunk_number(key)
        if number is None:
            return None
        return prototype.buffer.from_bytes(await self._chunk_bytes(number, byte_range))

    async def get_partial_values(
        self, prototype: BufferPrototype, key_ranges: Iterable[tuple[str, ByteRequest | None]]
    ) -> list[Buffer | None]:
        return list(await asyncio.gather(*(self.get(key, prototype, byte_range) for key, byte_range in key_ranges)))

    async def exists(self, key: str) -> bool:
        return key == METADATA_KEY or self._chunk_number(key) is not None

    async def getsize(self, key: str) -> int:
        if key == METADATA_KEY:
            return len(self._metadata)
        number = self._chunk_number(key)
        if number is None:
            raise FileNotFoundError(key)
        prefix, frames = self._prefix(number)
        return len(prefix) + int(self.index.frame_sizes[frames].sum())

    async def set(self, key: str, value: Buffer) -> None:
        self._check_writable()

    async def delete(self, key: str) -> None:
        self._check_writable()

    async def list(self) -> AsyncIterator[str]:
        yield METADATA_KEY
        for number in range(self.n_chunks):
            yield f"c/{number}/0"

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        async for key in self.list():
            if key.startswith(prefix):
                yield key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        prefix = prefix.rstrip("/")
        if prefix == "":
            yield METADATA_KEY
            if self.n_chunks:
                yield "c"
        elif prefix == "c":
            for number in range(self.n_chunks):
                yield str(number)
        elif prefix.startswith("c/") and self._chunk_number(f"{prefix}/0") is not None:
            yield "0"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, AACFileStore)
            and self.source == other.source
            and self.dtype == other.dtype
            and self.chunk_length == other.chunk_length
            and self.index.priming == other.index.priming
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"AACFileStore({self.source.name!r}, {self.index.n_samples} samples x {self.index.channels} ch)"


def _resolve(byte_range: ByteRequest | None, total: int) -> tuple[int, int]:
    """[start, stop) within ``total`` bytes, clamped as files clamp reads past their end."""
    if byte_range is None:
        return 0, total
    if isinstance(byte_range, RangeByteRequest):
        return min(byte_range.start, total), min(byte_range.end, total)
    if isinstance(byte_range, OffsetByteRequest):
        return min(byte_range.offset, total), total
    if isinstance(byte_range, SuffixByteRequest):
        return max(total - byte_range.suffix, 0), total
    raise TypeError(f"Unexpected byte_range, got {byte_range}.")


def open_aac_file(
    source: AudioSource,
    *,
    dtype: str | np.dtype = "int16",
    chunk_length: int = DEFAULT_CHUNK_LENGTH,
    track: int | None = None,
    index_path: str | os.PathLike | bool | None = None,
    storage_options: dict | None = None,
) -> zarr.Array:
    """An ``.m4a``/``.mp4``/``.aac`` file as a read-only PCM zarr array, decoded from its own frames.

    Array sample ``i`` is the ``i``-th sample a standard decoder (FFmpeg) presents: an MP4 edit
    list's priming is dropped, ADTS has none. The frame index of a local file is built once and
    cached in the user's cache folder (:func:`~zarr_aac.files.store.index_cache_path`).

    Parameters
    ----------
    source : str, os.PathLike or (zarr.abc.store.Store, str)
        A local path, an fsspec URL, or a (zarr store, key) pair.
    dtype : str or numpy.dtype, default "int16"
        Sample type: ``"int16"`` or ``"float32"``.
    chunk_length : int, default 2**19
        Samples per virtual chunk, at least 1024.
    track : int, optional
        Which of an MP4 file's audio tracks (0, the default, is the first).
    index_path : str, os.PathLike or bool, optional
        Where to cache the frame index instead of the cache folder, e.g. beside the file (URLs
        and stores get no cache unless given one); ``False`` for no cache.
    storage_options : dict, optional
        Passed to fsspec when ``source`` is a URL.

    Returns
    -------
    zarr.Array
        Shape (samples, channels), attributes ``sample_rate``, ``start_time`` (None) and ``source``.

    Raises
    ------
    SourceNotFoundError
        There is no such file.
    UnsupportedAudioError
        The file is not ADTS or MP4, its stream is not AAC-LC, or ``dtype`` or ``track`` is not
        one the file can be served as.
    CorruptSourceError
        The file's headers or sample tables are malformed.
    ValueError
        ``chunk_length`` is not an integer of at least 1024.
    """
    options: dict[str, Any] = {"dtype": dtype, "chunk_length": chunk_length, "track": track, "index_path": index_path}
    if isinstance(source, tuple):
        store = AACFileStore.from_store(*source, **options)
    elif "://" in (text := os.fspath(source)):
        store = AACFileStore.from_url(text, storage_options=storage_options, **options)
    else:
        store = AACFileStore.from_path(text, **options)
    return zarr.open_array(store=store, mode="r")
