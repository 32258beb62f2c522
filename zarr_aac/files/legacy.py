"""The archives of the system this project replaces, opened as PCM arrays without re-encoding.

Their layout: a Zarr group holding a 1-d uint8 array of concatenated ADTS frames, an
``aac_index`` array of shape (n_frames, 3) uint64 with columns (byte_offset, frame_size,
sample_pos) per frame, ADTS header included in frame_size, and attributes ``sample_rate``,
``nb_channels`` and ``first_sample_time_stamp``.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import zarr
from zarr.core.sync import sync

from zarr_aac.codec.aac import FRAME_LENGTH
from zarr_aac.files.containers import StreamIndex, adts_config, check_plain_lc
from zarr_aac.errors import CorruptSourceError
from zarr_aac.files.store import DEFAULT_CHUNK_SAMPLES, AACFileStore, ArrayByteSource

INDEX_NAME = "aac_index"
REQUIRED_ATTRIBUTES = ("sample_rate", "nb_channels", "first_sample_time_stamp")


def _data_array(group: zarr.Group, data: str | None, name: str) -> zarr.Array:
    if data is not None:
        return group[data]
    candidates = [
        key for key, node in group.arrays() if key != INDEX_NAME and node.ndim == 1 and node.dtype == np.uint8
    ]
    if len(candidates) != 1:
        raise CorruptSourceError(
            name, f"expected one 1-d uint8 array of ADTS frames beside {INDEX_NAME!r}, found {candidates}; pass data="
        )
    return group[candidates[0]]


def legacy_index(group: zarr.Group, data: str | None = None) -> tuple[ArrayByteSource, StreamIndex, dict[str, Any]]:
    """(byte source, stream index, attributes) of an old archive group, checked against its ADTS headers.

    Array sample 0 is the first sample of the first frame, as a standard decoder of the ADTS
    bytes presents it; ``sample_pos`` must advance by 1024 a frame.
    """
    name = str(group.store_path)
    missing = [key for key in REQUIRED_ATTRIBUTES if key not in group.attrs]
    if missing or INDEX_NAME not in group:
        raise CorruptSourceError(name, f"not an old zarr-aac archive: missing {missing or [INDEX_NAME]}")
    frames = _data_array(group, data, name)
    table = np.asarray(group[INDEX_NAME][:])
    if table.ndim != 2 or table.shape[1] != 3 or table.shape[0] == 0:
        raise CorruptSourceError(name, f"{INDEX_NAME} has shape {table.shape}, expected (n_frames, 3)")
    table = table.astype(np.int64)
    offsets, sizes, sample_pos = table.T
    source = ArrayByteSource(frames.async_array, f"{name}/{frames.basename}")
    nbytes = int(frames.shape[0])
    (header,) = sync(source.read_ranges([(int(offsets[0]), min(nbytes, int(offsets[0]) + 9))]))
    asc, config, header_nbytes = adts_config(header, source.name, int(offsets[0]))
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
            f"{INDEX_NAME} row {k}: sample_pos {sample_pos[k]} after {sample_pos[k - 1]}, frames hold {FRAME_LENGTH}",
        )
    if (config.sample_rate, config.channels) != (group.attrs["sample_rate"], group.attrs["nb_channels"]):
        raise CorruptSourceError(
            name,
            f"attributes say {group.attrs['sample_rate']} Hz x {group.attrs['nb_channels']} channels, "
            f"the ADTS headers {config.sample_rate} Hz x {config.channels}",
        )
    first = [(int(o) + header_nbytes, int(o + s)) for o, s in zip(offsets[:3], sizes[:3], strict=True)]
    check_plain_lc(asc, sync(source.read_ranges(first)), config, name)
    index = StreamIndex(
        asc=asc,
        channels=config.channels,
        sample_rate=config.sample_rate,
        frame_offsets=offsets + header_nbytes,
        frame_sizes=sizes - header_nbytes,
        priming=0,
        n_samples=len(table) * FRAME_LENGTH,
        container="legacy-adts",
        attributes={"first_sample_pos": int(sample_pos[0])},
    )
    stamp = group.attrs["first_sample_time_stamp"]
    attributes = {"start_time": stamp if isinstance(stamp, str) else None, "legacy_attributes": group.attrs.asdict()}
    return source, index, attributes


def legacy_store(
    group: zarr.Group | str | os.PathLike,
    *,
    data: str | None = None,
    dtype: str | np.dtype = "int16",
    chunk_samples: int = DEFAULT_CHUNK_SAMPLES,
    storage_options: dict | None = None,
) -> AACFileStore:
    """An AACFileStore presenting an old archive (a group, or its path or URL) as a PCM array."""
    if not isinstance(group, zarr.Group):
        group = zarr.open_group(os.fspath(group), mode="r", storage_options=storage_options)
    source, index, attributes = legacy_index(group, data)
    return AACFileStore.from_index(source, index, dtype=dtype, chunk_samples=chunk_samples, attributes=attributes)


def open_legacy_archive(
    group: zarr.Group | str | os.PathLike,
    *,
    data: str | None = None,
    dtype: str | np.dtype = "int16",
    chunk_samples: int = DEFAULT_CHUNK_SAMPLES,
    storage_options: dict | None = None,
) -> zarr.Array:
    """An old archive as a read-only PCM zarr array, decoded from its stored ADTS frames."""
    store = legacy_store(group, data=data, dtype=dtype, chunk_samples=chunk_samples, storage_options=storage_options)
    return zarr.open_array(store=store, mode="r")
