"""Tools for attacking stored chunks: re-packing forged fields with valid checksums, and a
store that records every byte range it is asked for.

The layout is re-implemented here from docs/spec.md rather than imported from zarr_aac.chunk,
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

HEADER = struct.Struct("<4sBBBBIIQIIQII")
FIELDS = (
    "magic", "version", "flags", "channels", "asc_nbytes", "aac_sample_rate", "n_frames", "n_samples",
    "skip", "frame_length", "payload_nbytes", "payload_crc32c", "header_crc32c",
)


@dataclass
class Chunk:
    """A chunk split into its parts; ``pack`` lays them out again with fresh checksums."""

    fields: dict
    asc: bytes
    sizes: np.ndarray
    payload: bytes

    @classmethod
    def parse(cls, data: bytes) -> Chunk:
        fields = dict(zip(FIELDS, HEADER.unpack_from(data), strict=True))
        asc_end = HEADER.size + fields["asc_nbytes"]
        sizes = np.frombuffer(data, "<u2", count=fields["n_frames"], offset=asc_end).copy()
        payload = data[asc_end + 2 * fields["n_frames"] :]
        return cls(fields, data[HEADER.size : asc_end], sizes, payload)

    def pack(self, **overrides) -> bytes:
        """The chunk with ``overrides`` applied to header fields and both checksums recomputed
        (unless given), so the reader's checks past the checksum are what gets exercised."""
        fields = {**self.fields, "payload_crc32c": google_crc32c.value(self.payload), **overrides}
        head = HEADER.pack(*(fields[name] for name in FIELDS))[:-4]
        crc = fields.get("header_crc32c") if "header_crc32c" in overrides else None
        if crc is None:
            crc = google_crc32c.extend(google_crc32c.value(head + self.asc), self.sizes.astype("<u2").tobytes())
        return head + struct.pack("<I", crc) + self.asc + self.sizes.astype("<u2").tobytes() + self.payload


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
    proto = zarr.core.buffer.default_buffer_prototype()
    asyncio.run(array.store_path.store.set(key, proto.buffer.from_bytes(data)))
