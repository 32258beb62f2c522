"""Stored chunks as docs/spec.md lays them out, re-implemented here with ``struct`` rather than
imported from zarr_aac.codec.chunk_format: a chunk built or decoded by this module tests the
package against the documented format, not against itself.

``Chunk`` splits a chunk into its parts and packs them again (with fresh checksums, so a forged
field reaches the reader's checks past them); ``decode_chunk_sequentially`` is the reference
every read must equal: all of a chunk's frames through one PyAV decoder, in order.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass
from typing import Any

import av
import google_crc32c
import numpy as np
import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.storage import MemoryStore

from support.stores import RecordingStore
from zarr_aac import AACCodec
from zarr_aac.codec.prefix_cache import prefixes

HEADER = struct.Struct("<4sBBBBIIQIIQII")
"""The 48-byte header: magic, version, flags, channels, asc_nbytes, aac_sample_rate, n_frames,
n_samples, skip, frame_length, payload_nbytes, checksum_group, header_crc32c."""
FIELDS = (
    "magic",
    "version",
    "flags",
    "channels",
    "asc_nbytes",
    "aac_sample_rate",
    "n_frames",
    "n_samples",
    "skip",
    "frame_length",
    "payload_nbytes",
    "checksum_group",
    "header_crc32c",
)


@dataclass
class Chunk:
    """A chunk split into its parts; ``pack`` lays them out again with fresh checksums."""

    fields: dict[str, Any]
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

    @property
    def frames(self) -> list[bytes]:
        """The payload cut into its AAC frames by the stored sizes."""
        ends = np.cumsum(self.sizes.astype(np.int64))
        return [self.payload[end - size : end] for end, size in zip(ends.tolist(), self.sizes.tolist(), strict=True)]

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

    def pack(self, checksums: np.ndarray | None = None, **overrides: Any) -> bytes:
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


FLAG_PCM = 0x01
"""docs/spec.md: a PCM chunk, the unfinished last chunk of a recording written live."""
PCM_SAMPLE_TYPES = {2: "<i2", 4: "<f4"}
"""docs/spec.md: a PCM chunk's frame_length field is its bytes per sample."""


@dataclass
class PcmChunk:
    """A PCM chunk split into its parts, as docs/spec.md lays it out: the 48-byte header, one
    CRC-32C of the payload, and the payload of interleaved little-endian samples."""

    fields: dict[str, Any]
    payload_crc32c: int
    payload: bytes

    @classmethod
    def parse(cls, data: bytes) -> PcmChunk:
        fields = dict(zip(FIELDS, HEADER.unpack_from(data), strict=True))
        assert fields["flags"] == FLAG_PCM, fields
        (payload_crc,) = struct.unpack_from("<I", data, HEADER.size)
        return cls(fields, payload_crc, data[HEADER.size + 4 :])

    def checksums_hold(self) -> bool:
        """Whether the header CRC (bytes 0..43 then the payload CRC) and the payload CRC match."""
        head = HEADER.pack(*(self.fields[name] for name in FIELDS))[:-4]
        header_crc = google_crc32c.extend(google_crc32c.value(head), struct.pack("<I", self.payload_crc32c))
        return header_crc == self.fields["header_crc32c"] and google_crc32c.value(self.payload) == self.payload_crc32c

    @property
    def samples(self) -> np.ndarray:
        """The stored samples, (stored, channels): the chunk's first ``n_frames`` samples."""
        f = self.fields
        dtype = PCM_SAMPLE_TYPES[f["frame_length"]]
        return np.frombuffer(self.payload, dtype).reshape(f["n_frames"], f["channels"])

    def pack(self, **overrides: Any) -> bytes:
        """The chunk with ``overrides`` applied to header fields and both checksums recomputed."""
        fields = {**self.fields, **overrides}
        head = HEADER.pack(*(fields[name] for name in FIELDS))[:-4]
        payload_crc = struct.pack("<I", google_crc32c.value(self.payload))
        crc = google_crc32c.extend(google_crc32c.value(head), payload_crc)
        return head + struct.pack("<I", crc) + payload_crc + self.payload


def decode_chunk_sequentially(data: bytes) -> np.ndarray:
    """float32 (n_samples, channels) of one stored chunk, all frames through one decoder."""
    chunk = Chunk.parse(data)
    context = av.CodecContext.create("aac", "r")
    context.extradata = chunk.asc
    decoded = [frame.to_ndarray().T for packet in chunk.frames for frame in context.decode(av.Packet(packet))]
    skip, n_samples = chunk.fields["skip"], chunk.fields["n_samples"]
    return np.concatenate(decoded)[skip : skip + n_samples]


def chunk_key(array: zarr.Array, coords: tuple[int, ...]) -> str:
    """Store key of chunk ``coords`` of ``array`` (with the array's path)."""
    key = array.metadata.encode_chunk_key(coords)
    prefix = array.store_path.path
    return f"{prefix}/{key}" if prefix else key


def get_bytes(array: zarr.Array, key: str) -> bytes | None:
    """The stored bytes of ``key`` in the array's store, None where it is missing."""
    buffer = asyncio.run(array.store_path.store.get(key, default_buffer_prototype()))
    return None if buffer is None else buffer.to_bytes()


def put_bytes(array: zarr.Array, key: str, data: bytes) -> None:
    """Store ``data`` as chunk ``key`` behind the array's back, and forget the chunk indexes this
    process has cached: reads then behave as in a process that meets the damage first."""
    prototype = default_buffer_prototype()
    asyncio.run(array.store_path.store.set(key, prototype.buffer.from_bytes(data)))
    prefixes.clear()


def single_chunk_array(
    pcm: np.ndarray, sample_rate: int, bitrate: int | None = None, gain: float = 1.0
) -> tuple[zarr.Array, str]:
    """An in-memory array of one chunk holding ``pcm`` on a RecordingStore, and the key of that chunk.

    ``gain`` 1 (as zarr-aac 0.2 stored samples) makes the chunk's decoded floats the array's own
    values, so ``decode_chunk_sequentially`` is the reference as it is; the conformance check
    covers the default gains."""
    store = RecordingStore(MemoryStore())
    array = zarr.create_array(
        store,
        shape=pcm.shape,
        chunks=pcm.shape,
        dtype=pcm.dtype,
        serializer=AACCodec(sample_rate=sample_rate, bitrate=bitrate, gain=gain),
        compressors=None,
    )
    array[:] = pcm
    return array, chunk_key(array, (0,) * pcm.ndim)
