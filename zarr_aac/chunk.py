"""The byte layout of one chunk, and the 3-column frame index read from it.

A chunk is self-describing::

    header (48 bytes) | ASC (asc_nbytes) | frame sizes (n_frames x uint16) | AAC frames

``docs/spec.md`` gives the field table. The index is stored as frame sizes only; byte offsets
are their running sum and sample positions follow from the frame number and ``skip``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import cached_property

import google_crc32c
import numpy as np

from zarr_aac.aac import AAC_SAMPLE_RATES, FRAME_LENGTH, MAX_CHANNELS
from zarr_aac.errors import CorruptChunkError

MAGIC = b"ZAAC"
VERSION = 1
HEADER = struct.Struct("<4sBBBBIIQIIQII")
HEADER_NBYTES = HEADER.size
ASC_MAX_NBYTES = 64
"""Upper bound of an AudioSpecificConfig this format stores (a PCE for 8 channels fits)."""
INDEX_ITEMSIZE = 2
MAX_PADDING = 1 << 20
"""Most samples a chunk may decode beyond its own, before (``skip``) or after them: far above
what any encoder's priming and flush need, and low enough that a forged header cannot make a
reader fetch or allocate much more than the chunk's own samples justify."""
_CRC_OFFSET = HEADER_NBYTES - 4
FLAG_NO_PAYLOAD_CRC = 0x02
"""Header flag: the payload checksum field is unused (chunks that AACFileStore synthesises
from frames of an existing file, whose prefix is served before the frames are read)."""


@dataclass(frozen=True)
class FrameIndex:
    """Where each AAC frame of a stream lies and which samples it yields.

    ``frame_sizes`` is what is stored; ``table`` is the logical 3-column view
    (byte_offset, frame_size, sample_pos), with byte offsets relative to the first frame and
    sample_pos the stream position of the frame's first decoded sample (negative for priming).
    """

    frame_sizes: np.ndarray
    skip: int
    frame_length: int = FRAME_LENGTH

    @cached_property
    def byte_offsets(self) -> np.ndarray:
        """Start of each frame, plus the end of the last one (n_frames + 1 entries)."""
        offsets = np.zeros(len(self.frame_sizes) + 1, dtype=np.int64)
        np.cumsum(self.frame_sizes, out=offsets[1:])
        return offsets

    @property
    def table(self) -> np.ndarray:
        n = len(self.frame_sizes)
        sample_pos = np.arange(n, dtype=np.int64) * self.frame_length - self.skip
        return np.stack([self.byte_offsets[:-1], self.frame_sizes.astype(np.int64), sample_pos], axis=1)

    def frame_of(self, sample: np.ndarray | int) -> np.ndarray | int:
        """Number of the frame whose decoded output holds ``sample``."""
        return (sample + self.skip) // self.frame_length


@dataclass(frozen=True)
class ChunkHeader:
    """The fixed fields of a chunk."""

    channels: int
    aac_sample_rate: int
    n_frames: int
    n_samples: int
    skip: int
    asc_nbytes: int
    payload_nbytes: int
    payload_crc32c: int | None
    frame_length: int = FRAME_LENGTH

    @property
    def prefix_nbytes(self) -> int:
        """Bytes of header, ASC and index: everything before the first frame."""
        return HEADER_NBYTES + self.asc_nbytes + INDEX_ITEMSIZE * self.n_frames

    @property
    def total_nbytes(self) -> int:
        return self.prefix_nbytes + self.payload_nbytes


def prefix_nbytes_upper_bound(n_frames: int) -> int:
    """Bytes that surely hold the prefix of a chunk of ``n_frames`` frames."""
    return HEADER_NBYTES + ASC_MAX_NBYTES + INDEX_ITEMSIZE * n_frames


def pack_chunk(
    asc: bytes, frames: list[bytes], *, channels: int, aac_sample_rate: int, n_samples: int, skip: int
) -> bytes:
    """Lay out header, ASC, frame index and frames of one chunk."""
    sizes = np.fromiter((len(f) for f in frames), dtype="<u2", count=len(frames))
    payload = b"".join(frames)
    prefix = pack_prefix(
        asc, sizes, channels=channels, aac_sample_rate=aac_sample_rate, n_samples=n_samples, skip=skip,
        payload_crc32c=google_crc32c.value(payload),
    )
    return prefix + payload


def pack_prefix(
    asc: bytes, frame_sizes: np.ndarray, *, channels: int, aac_sample_rate: int, n_samples: int, skip: int,
    payload_crc32c: int | None,
) -> bytes:
    """Header, ASC and frame index of a chunk; ``payload_crc32c=None`` sets FLAG_NO_PAYLOAD_CRC."""
    if len(asc) > ASC_MAX_NBYTES:
        raise ValueError(f"AudioSpecificConfig of {len(asc)} bytes exceeds {ASC_MAX_NBYTES}")
    sizes = np.asarray(frame_sizes, dtype="<u2")
    flags = FLAG_NO_PAYLOAD_CRC if payload_crc32c is None else 0
    head = HEADER.pack(
        MAGIC, VERSION, flags, channels, len(asc), aac_sample_rate, len(sizes), n_samples, skip,
        FRAME_LENGTH, int(sizes.sum(dtype=np.int64)), payload_crc32c or 0, 0,
    )
    described = head[:_CRC_OFFSET]
    crc = google_crc32c.extend(google_crc32c.value(described + asc), sizes.tobytes())
    return b"".join((described, struct.pack("<I", crc), asc, sizes.tobytes()))


def parse_header(data: bytes | memoryview, key: str | None) -> ChunkHeader:
    """Read and sanity-check the fixed header at the start of ``data``."""
    if len(data) < HEADER_NBYTES:
        raise CorruptChunkError(key, f"{len(data)} bytes is shorter than the {HEADER_NBYTES}-byte header")
    (magic, version, flags, channels, asc_nbytes, rate, n_frames, n_samples, skip, frame_length,
     payload_nbytes, payload_crc, _) = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CorruptChunkError(key, f"not a zarr_aac chunk (starts with {bytes(magic)!r}, expected {MAGIC!r})")
    if version != VERSION:
        raise CorruptChunkError(key, f"format version {version} is not supported (this reader knows {VERSION})")
    problems = []
    if flags & ~FLAG_NO_PAYLOAD_CRC:
        problems.append(f"unknown flags {flags:#x}")
    if not 1 <= channels <= MAX_CHANNELS:
        problems.append(f"{channels} channels")
    if rate not in AAC_SAMPLE_RATES:
        problems.append(f"sample rate {rate}")
    if frame_length != FRAME_LENGTH:
        problems.append(f"frame length {frame_length}")
    if asc_nbytes == 0 or asc_nbytes > ASC_MAX_NBYTES:
        problems.append(f"AudioSpecificConfig of {asc_nbytes} bytes")
    if n_frames * FRAME_LENGTH < skip + n_samples:
        problems.append(f"{n_frames} frames cannot hold {skip} + {n_samples} samples")
    elif skip > MAX_PADDING or n_frames * FRAME_LENGTH > skip + n_samples + MAX_PADDING:
        problems.append(f"{n_frames} frames and {skip} skipped samples for {n_samples} samples")
    if n_frames * 6144 < payload_nbytes:
        problems.append(f"{payload_nbytes} payload bytes for {n_frames} frames")
    if problems:
        raise CorruptChunkError(key, "header claims " + ", ".join(problems))
    return ChunkHeader(
        channels=channels, aac_sample_rate=rate, n_frames=n_frames, n_samples=n_samples,
        skip=skip, asc_nbytes=asc_nbytes, payload_nbytes=payload_nbytes,
        payload_crc32c=None if flags & FLAG_NO_PAYLOAD_CRC else payload_crc,
    )


def parse_prefix(data: bytes | memoryview, header: ChunkHeader, key: str | None) -> tuple[bytes, FrameIndex]:
    """Verify the header/index checksum and return (ASC, frame index) from the chunk prefix."""
    if len(data) < header.prefix_nbytes:
        raise CorruptChunkError(
            key, f"chunk is {len(data)} bytes, shorter than its {header.prefix_nbytes}-byte header and index"
        )
    view = memoryview(data)
    asc = bytes(view[HEADER_NBYTES : HEADER_NBYTES + header.asc_nbytes])
    index_bytes = view[HEADER_NBYTES + header.asc_nbytes : header.prefix_nbytes]
    (stored_crc,) = struct.unpack_from("<I", view, _CRC_OFFSET)
    crc = google_crc32c.extend(google_crc32c.value(bytes(view[:_CRC_OFFSET]) + asc), bytes(index_bytes))
    if crc != stored_crc:
        raise CorruptChunkError(key, f"header/index checksum mismatch (stored {stored_crc:#010x}, computed {crc:#010x})")
    sizes = np.frombuffer(index_bytes, dtype="<u2").astype(np.int64)
    if int(sizes.sum()) != header.payload_nbytes:
        raise CorruptChunkError(key, f"frame sizes add up to {int(sizes.sum())}, header says {header.payload_nbytes}")
    return asc, FrameIndex(sizes, header.skip)


def verify_payload(data: bytes | memoryview, header: ChunkHeader, key: str | None) -> None:
    """Check the length and checksum of a whole chunk's frames (the length only when it has no checksum)."""
    if len(data) != header.total_nbytes:
        raise CorruptChunkError(key, f"chunk is {len(data)} bytes, its header describes {header.total_nbytes}")
    if header.payload_crc32c is None:
        return
    crc = google_crc32c.value(bytes(memoryview(data)[header.prefix_nbytes :]))
    if crc != header.payload_crc32c:
        raise CorruptChunkError(key, f"payload checksum mismatch (stored {header.payload_crc32c:#010x}, computed {crc:#010x})")
