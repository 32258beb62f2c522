"""Tools for attacking stored chunks: re-packing forged fields with valid checksums, and a
store that records every byte range it is asked for.

The layout is re-implemented here from docs/spec.md rather than imported from zarr_aac.codec.chunk_format,
so that a forged chunk tests the reader against the documented format, not against itself.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass, field

import google_crc32c
import numpy as np
import zarr
from zarr.abc.store import ByteRequest, RangeByteRequest, SuffixByteRequest
from zarr.storage import MemoryStore, WrapperStore

from zarr_aac.codec.prefix_cache import prefixes

HEADER = struct.Struct("<4sBBBBIIQIIQII")
FIELDS = (
    "magic", "version", "flags", "channels", "asc_nbytes", "aac_sample_rate", "n_frames", "n_samples",
    "skip", "frame_length", "payload_nbytes", "checksum_group", "header_crc32c",
)


@dataclass
class Chunk:
    """A chunk split into its parts; ``pack`` lays them out again with fresh checksums."""

    fields: dict
    asc: bytes
    sizes: np.ndarray
    checksums: np.ndarray
    payload: bytes

    @classmethod
    def parse(cls, data: bytes) -> Chunk:
        fields = dict(zip(FIELDS, HEADER.unpack_from(data), strict=True))
        asc_end = HEADER.size + fields["asc_nbytes"]
        n, group = fields["n_frames"], fields["checksum_group"]
        n_groups = -(-n // group) if group else 0
        sizes = np.frombuffer(data, "<u2", count=n, offset=asc_end).copy()
        checksums_start = asc_end + 2 * n
        checksums = np.frombuffer(data, "<u4", count=n_groups, offset=checksums_start).copy()
        return cls(fields, data[HEADER.size : asc_end], sizes, checksums, data[checksums_start + 4 * n_groups :])

    @property
    def prefix_nbytes(self) -> int:
        """Bytes before the first frame: header, ASC, frame sizes and group checksums."""
        return HEADER.size + len(self.asc) + 2 * self.sizes.size + 4 * self.checksums.size

    def frame_of_byte(self, position: int) -> int:
        """Number of the frame holding chunk byte ``position`` (which lies in the payload)."""
        return int(np.searchsorted(np.cumsum(self.sizes.astype(np.int64)), position - self.prefix_nbytes, side="right"))

    def group_checksums(self, group: int) -> np.ndarray:
        """CRC-32C of each run of ``group`` frames of the payload, as the spec defines them."""
        if not group:
            return np.zeros(0, "<u4")
        offsets = np.concatenate([[0], np.cumsum(self.sizes.astype(np.int64))])
        starts = range(0, self.sizes.size, group)
        return np.array(
            [google_crc32c.value(self.payload[offsets[a] : offsets[min(a + group, self.sizes.size)]]) for a in starts],
            "<u4",
        )

    def pack(self, checksums: np.ndarray | None = None, **overrides) -> bytes:
        """The chunk with ``overrides`` applied to header fields and the group and header
        checksums recomputed (unless given), so the reader's checks past the checksums are
        what gets exercised."""
        fields = {**self.fields, **overrides}
        if checksums is None:
            checksums = self.group_checksums(fields["checksum_group"])
        head = HEADER.pack(*(fields[name] for name in FIELDS))[:-4]
        index = self.sizes.astype("<u2").tobytes() + np.asarray(checksums, "<u4").tobytes()
        crc = fields.get("header_crc32c") if "header_crc32c" in overrides else None
        if crc is None:
            crc = google_crc32c.extend(google_crc32c.value(head + self.asc), index)
        return head + struct.pack("<I", crc) + self.asc + index + self.payload


@dataclass
class RangeLog:
    """Byte ranges requested from a store: (key, start, stop) with stop None for 'to the end'."""

    requests: list = field(default_factory=list)

    def largest_request(self, object_sizes: dict[str, int]) -> int:
        spans = []
        for key, start, stop in self.requests:
            end = object_sizes.get(key, 0) if stop is None else stop
            spans.append(end - start)
        return max(spans, default=0)


class RangeRecordingStore(WrapperStore):
    """Wraps a store and logs every byte range asked of it."""

    def __init__(self, store, log: RangeLog | None = None) -> None:
        super().__init__(store)
        self.log = log if log is not None else RangeLog()

    def _with_store(self, store):
        return type(self)(store, self.log)

    async def get(self, key, prototype, byte_range: ByteRequest | None = None):
        if not key.endswith("zarr.json"):
            if byte_range is None:
                self.log.requests.append((key, 0, None))
            elif isinstance(byte_range, RangeByteRequest):
                self.log.requests.append((key, byte_range.start, byte_range.end))
            elif isinstance(byte_range, SuffixByteRequest):
                self.log.requests.append((key, -byte_range.suffix, None))
            else:
                self.log.requests.append((key, byte_range.offset, None))
        return await self._store.get(key, prototype, byte_range)


def single_chunk_array(pcm: np.ndarray, sample_rate: int, bitrate: int | None = None) -> tuple[zarr.Array, str]:
    """An in-memory array of one chunk holding ``pcm``, and the store key of that chunk."""
    from zarr_aac import AACCodec

    store = RangeRecordingStore(MemoryStore())
    array = zarr.create_array(
        store, shape=pcm.shape, chunks=pcm.shape, dtype=pcm.dtype,
        serializer=AACCodec(sample_rate=sample_rate, bitrate=bitrate), compressors=None,
    )
    array[:] = pcm
    key = array.metadata.encode_chunk_key((0,) * pcm.ndim)
    return array, key


def get_bytes(array: zarr.Array, key: str) -> bytes:
    proto = zarr.core.buffer.default_buffer_prototype()
    buf = asyncio.run(array.store_path.store.get(key, proto))
    return buf.to_bytes()


def put_bytes(array: zarr.Array, key: str, data: bytes) -> None:
    """Store ``data`` as chunk ``key`` behind the array's back, and forget the chunk indexes this
    process has cached: reads then behave as in a process that meets the damage first."""
    proto = zarr.core.buffer.default_buffer_prototype()
    asyncio.run(array.store_path.store.set(key, proto.buffer.from_bytes(data)))
    prefixes.clear()
