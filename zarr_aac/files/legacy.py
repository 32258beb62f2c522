"""The archives of the system this project replaces, opened as PCM arrays without re-encoding.

Their layout: a Zarr group holding a 1-d uint8 array of concatenated ADTS frames, an
``aac_index`` array of shape (n_frames, 3) uint64 with columns (byte_offset, frame_size,
sample_pos) per frame, ADTS header included in frame_size, and attributes ``sample_rate``,
``nb_channels`` and ``first_sample_time_stamp``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr
from zarr.core.sync import sync

from zarr_aac.codec.aac import FRAME_LENGTH
from zarr_aac.errors import CorruptSourceError
from zarr_aac.files.adts import CRC_HEADER_NBYTES, parse_first_header
from zarr_aac.files.store import DEFAULT_CHUNK_LENGTH, AACFileStore
from zarr_aac.files.stream import AudioSpecificConfig, StreamIndex, check_first_frames

INDEX_NAME = "aac_index"
REQUIRED_ATTRIBUTES = ("sample_rate", "nb_channels", "first_sample_time_stamp")


@dataclass(frozen=True)
class ArrayByteSource:
    """The bytes of a 1-d uint8 zarr array (the old archives' concatenated ADTS frames)."""

    array: zarr.AsyncArray
    name: str

    async def size(self) -> int:
        return int(self.array.shape[0])

    async def read_ranges(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        parts = await asyncio.gather(*(self.array.getitem(slice(start, stop)) for start, stop in ranges))
        return [np.asarray(part, dtype=np.uint8).tobytes() for part in parts]


@dataclass(frozen=True)
class _FrameTable:
    """The ``aac_index`` columns, ADTS headers included in each frame."""

    offsets: np.ndarray
    sizes: np.ndarray
    sample_pos: np.ndarray

    @classmethod
    def read(cls, group: zarr.Group, name: str) -> _FrameTable:
        table = np.asarray(_array(group, INDEX_NAME, name)[:])
        if table.ndim != 2 or table.shape[1] != 3 or table.shape[0] == 0:
            raise CorruptSourceError(name, f"{INDEX_NAME} has shape {table.shape}, expected (n_frames, 3)")
        offsets, sizes, sample_pos = table.astype(np.int64).T
        return cls(offsets, sizes, sample_pos)

    def check(self, nbytes: int, header_nbytes: int, name: str) -> None:
        """Every frame inside the byte array and longer than its header; ``sample_pos`` a frame apart."""
        offsets, sizes, sample_pos = self.offsets, self.sizes, self.sample_pos
        bad = np.flatnonzero((sizes <= header_nbytes) | (offsets < 0) | (offsets + sizes > nbytes))
        if bad.size:
            k = int(bad[0])
            raise CorruptSourceError(
                name, f"{INDEX_NAME} row {k} places a {sizes[k]}-byte frame at {offsets[k]} in {nbytes} bytes"
            )
        drift = np.flatnonzero(np.diff(sample_pos) != FRAME_LENGTH)
        if drift.size:
            k = int(drift[0]) + 1
            raise CorruptSourceError(
                name,
                f"{INDEX_NAME} row {k}: sample_pos {sample_pos[k]} after {sample_pos[k - 1]}, "
                f"frames hold {FRAME_LENGTH}",
            )


def _check_layout(group: zarr.Group, name: str) -> None:
    missing = [key for key in REQUIRED_ATTRIBUTES if key not in group.attrs]
    if missing or INDEX_NAME not in group:
        raise CorruptSourceError(name, f"not an old zarr-aac archive: missing {missing or [INDEX_NAME]}")


def _array(group: zarr.Group, key: str, name: str) -> zarr.Array:
    node = group[key]
    if not isinstance(node, zarr.Array):
        raise CorruptSourceError(name, f"{key!r} is a group, not an array")
    return node


def _data_array(group: zarr.Group, data: str | None, name: str) -> zarr.Array:
    """The array named ``data``, else the group's one 1-d uint8 array beside the index."""
    if data is not None:
        return _array(group, data, name)
    candidates = [
        key for key, node in group.arrays() if key != INDEX_NAME and node.ndim == 1 and node.dtype == np.uint8
    ]
    if len(candidates) != 1:
        raise CorruptSourceError(
            name, f"expected one 1-d uint8 array of ADTS frames beside {INDEX_NAME!r}, found {candidates}; pass data="
        )
    return _array(group, candidates[0], name)


def _check_attributes(group: zarr.Group, config: AudioSpecificConfig, name: str) -> None:
    """The group's rate and channels must be the ADTS headers' (the archive claims what it holds)."""
    if (config.sample_rate, config.channels) != (group.attrs["sample_rate"], group.attrs["nb_channels"]):
        raise CorruptSourceError(
            name,
            f"attributes say {group.attrs['sample_rate']} Hz x {group.attrs['nb_channels']} channels, "
            f"the ADTS headers {config.sample_rate} Hz x {config.channels}",
        )


def legacy_index(group: zarr.Group, data: str | None = None) -> tuple[ArrayByteSource, StreamIndex, dict[str, Any]]:
    """(byte source, stream index, array attributes) of an old archive group, checked against its ADTS headers.

    Array sample 0 is the first sample of the first frame, as a standard decoder of the ADTS
    bytes presents it; ``sample_pos`` must advance by 1024 a frame. Only the first frame's header
    is read: frame sizes come from the table.
    """
    name = str(group.store_path)
    _check_layout(group, name)
    frames = _data_array(group, data, name)
    table = _FrameTable.read(group, name)
    source = ArrayByteSource(frames.async_array, f"{name}/{frames.basename}")
    nbytes = int(frames.shape[0])
    first = int(table.offsets[0])
    (header_bytes,) = sync(source.read_ranges([(first, min(nbytes, first + CRC_HEADER_NBYTES))]))
    header, asc, config = parse_first_header(header_bytes, source.name, first)
    table.check(nbytes, header.nbytes, name)
    _check_attributes(group, config, name)
    frame_offsets, frame_sizes = table.offsets + header.nbytes, table.sizes - header.nbytes
    sync(check_first_frames(source, asc, config, frame_offsets, frame_sizes))
    index = StreamIndex(
        asc=asc,
        channels=config.channels,
        sample_rate=config.sample_rate,
        frame_offsets=frame_offsets,
        frame_sizes=frame_sizes,
        priming=0,
        n_samples=table.offsets.size * FRAME_LENGTH,
        container="legacy-adts",
        attributes={"first_sample_pos": int(table.sample_pos[0])},
    )
    stamp = group.attrs["first_sample_time_stamp"]
    attributes = {"start_time": stamp if isinstance(stamp, str) else None, "legacy_attributes": group.attrs.asdict()}
    return source, index, attributes


def legacy_store(
    group: zarr.Group | str | os.PathLike,
    *,
    data: str | None = None,
    dtype: str | np.dtype = "int16",
    chunk_length: int = DEFAULT_CHUNK_LENGTH,
    storage_options: dict | None = None,
) -> AACFileStore:
    """An AACFileStore presenting an old archive as a PCM array; see :func:`open_legacy_archive`."""
    if not isinstance(group, zarr.Group):
        group = zarr.open_group(os.fspath(group), mode="r", storage_options=storage_options)
    source, index, attributes = legacy_index(group, data)
    return AACFileStore(source, index, dtype=dtype, chunk_length=chunk_length, attributes=attributes)


def open_legacy_archive(
    group: zarr.Group | str | os.PathLike,
    *,
    data: str | None = None,
    dtype: str | np.dtype = "int16",
    chunk_length: int = DEFAULT_CHUNK_LENGTH,
    storage_options: dict | None = None,
) -> zarr.Array:
    """An old archive as a read-only PCM zarr array, decoded from its stored ADTS frames.

    Parameters
    ----------
    group : zarr.Group, str or os.PathLike
        The archive's group, or its path or URL.
    data : str, optional
        Name of the array of ADTS frames; by default the group's one 1-d uint8 array beside
        ``aac_index``.
    dtype : str or numpy.dtype, default "int16"
        Sample type: ``"int16"`` or ``"float32"``.
    chunk_length : int, default 2**19
        Samples per virtual chunk, at least 1024.
    storage_options : dict, optional
        Passed to fsspec when ``group`` is a URL.

    Returns
    -------
    zarr.Array
        Shape (samples, channels); attributes ``sample_rate``, ``start_time`` (the archive's
        ``first_sample_time_stamp`` when it is a string), ``source`` and ``legacy_attributes``
        (all the archive's attributes).

    Raises
    ------
    CorruptSourceError
        The group is not an old archive, or its index, attributes and ADTS headers disagree
        (the message names the first bad row or attribute).
    UnsupportedAudioError
        The stream is not AAC-LC, or ``dtype`` is neither int16 nor float32.
    ValueError
        ``chunk_length`` is not an integer of at least 1024.
    """
    store = legacy_store(group, data=data, dtype=dtype, chunk_length=chunk_length, storage_options=storage_options)
    return zarr.open_array(store=store, mode="r")
