"""The byte layout of one chunk, and the 3-column frame index read from it.

A chunk is self-describing::

    header (48 bytes) | ASC | frame sizes (uint16 each) | group checksums (uint32 each) | AAC frames

or, for the unfinished last chunk of a recording written live (flag :data:`FLAG_PCM`)::

    header (48 bytes) | payload checksum (uint32) | PCM samples

``docs/spec.md`` gives the field table. The index is stored as frame sizes only; byte offsets
are their running sum and sample positions follow from the frame number and ``skip``. The
frames are checksummed in groups of ``checksum_group`` consecutive frames, so a partial read
verifies the few groups it fetches instead of trusting them.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, overload

import google_crc32c
import numpy as np

from zarr_aac.codec.aac import AAC_SAMPLE_RATES, FRAME_LENGTH, MAX_CHANNELS
from zarr_aac.errors import CorruptChunkError
from zarr_aac.validation import channels_of

MAGIC = b"ZAAC"
VERSION = 2
HEADER = struct.Struct("<4sBBBBIIQIIQII")
HEADER_NBYTES = HEADER.size
ASC_MAX_NBYTES = 64
"""Upper bound of an AudioSpecificConfig this format stores (a PCE for 8 channels fits)."""
FRAME_SIZE_ITEMSIZE = 2
CHECKSUM_ITEMSIZE = 4
CHECKSUM_GROUP = 16
"""Frames per frame checksum in the chunks this codec writes: 0.25 bytes a frame, and a
partial read fetches at most two groups more than it decodes (16 frames are ~7 KB at
160 kbps stereo, one request either way)."""
MAX_PADDING = 1 << 20
"""Most samples a chunk may decode beyond its own, before (``skip``) or after them: far above
what any encoder's priming and flush need, and low enough that a forged header cannot make a
reader fetch or allocate much more than the chunk's own samples justify."""
_CRC_OFFSET = HEADER_NBYTES - 4
FLAG_PCM = 0x01
"""Header flag of a PCM chunk: the samples stored losslessly, as the array's dtype, instead of as
AAC frames. A live writer keeps a recording's unfinished last chunk so until the chunk is whole
(docs/live-recording.md). Readers older than the flag reject the chunk (they reject any flag)."""
PCM_SAMPLE_FORMATS: dict[int, np.dtype] = {2: np.dtype("<i2"), 4: np.dtype("<f4")}
"""A PCM chunk's ``frame_length`` field is its sample format: bytes per sample, 2 for int16 and 4
for float32 (little-endian, channels interleaved)."""


@dataclass(frozen=True)
class FrameIndex:
    """Where each AAC frame of a stream lies and which samples it yields.

    Frame sizes are what is stored; ``table`` is the logical 3-column view
    (byte_offset, frame_size, sample_pos), with byte offsets relative to the first frame and
    sample_pos the stream position of the frame's first decoded sample (negative for priming).
    """

    byte_offsets: np.ndarray
    """Start of each frame, plus the end of the last one (n_frames + 1 entries)."""
    skip: int
    frame_length: int = FRAME_LENGTH

    @classmethod
    def from_sizes(cls, frame_sizes: np.ndarray, skip: int) -> FrameIndex:
        offsets = np.zeros(len(frame_sizes) + 1, dtype=np.int64)
        np.cumsum(frame_sizes, out=offsets[1:])
        return cls(offsets, skip)

    @property
    def frame_sizes(self) -> np.ndarray:
        return np.diff(self.byte_offsets)

    @property
    def table(self) -> np.ndarray:
        n = len(self.byte_offsets) - 1
        sample_pos = np.arange(n, dtype=np.int64) * self.frame_length - self.skip
        return np.stack([self.byte_offsets[:-1], self.frame_sizes, sample_pos], axis=1)

    @overload
    def frame_of(self, sample: int) -> int: ...

    @overload
    def frame_of(self, sample: np.ndarray) -> np.ndarray: ...

    def frame_of(self, sample: np.ndarray | int) -> np.ndarray | int:
        """Number of the frame whose decoded output holds ``sample`` (of each, for an array)."""
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
    checksum_group: int
    """Frames per frame checksum; 0 when the chunk carries none (see AACFileStore)."""
    frame_length: int = FRAME_LENGTH
    is_pcm: bool = False
    """A PCM chunk (:data:`FLAG_PCM`): ``n_frames`` is then the samples stored per channel (the
    chunk's first ones; the rest are the fill value) and ``frame_length`` the bytes per sample."""

    @property
    def n_groups(self) -> int:
        if self.is_pcm:
            return 1
        return -(-self.n_frames // self.checksum_group) if self.checksum_group else 0

    @property
    def pcm_dtype(self) -> np.dtype:
        """The dtype of a PCM chunk's samples."""
        return PCM_SAMPLE_FORMATS[self.frame_length]

    @property
    def prefix_nbytes(self) -> int:
        """Bytes of header, ASC, frame sizes and checksums: everything before the first frame."""
        if self.is_pcm:
            return HEADER_NBYTES + CHECKSUM_ITEMSIZE
        return HEADER_NBYTES + self.asc_nbytes + FRAME_SIZE_ITEMSIZE * self.n_frames + CHECKSUM_ITEMSIZE * self.n_groups

    @property
    def total_nbytes(self) -> int:
        return self.prefix_nbytes + self.payload_nbytes


@dataclass(frozen=True)
class ChunkPrefix:
    """Everything a reader learns from a chunk's prefix: enough to fetch and verify any frames."""

    header: ChunkHeader
    asc: bytes
    index: FrameIndex
    group_checksums: np.ndarray
    """CRC-32C of each group of ``header.checksum_group`` frames (empty without checksums)."""

    @property
    def nbytes(self) -> int:
        """Memory the parsed prefix holds, roughly (for caches)."""
        return self.index.byte_offsets.nbytes + self.group_checksums.nbytes + len(self.asc) + 512

    def frames_to_fetch(self, first: int, stop: int) -> tuple[int, int]:
        """The frames [first, stop) widened to whole checksum groups, which a reader must fetch to verify them."""
        group = self.header.checksum_group
        if not group:
            return first, stop
        return first - first % group, min(-(-stop // group) * group, self.header.n_frames)

    def verify_frames(self, payload: bytes, first: int, stop: int, key: str | None) -> None:
        """Check the checksums of frames [first, stop), whole groups, whose bytes are ``payload``."""
        group = self.header.checksum_group
        if not group:
            return
        for start, end, crc in _group_checksums(payload, self.index.byte_offsets, first, stop, group):
            expected = int(self.group_checksums[start // group])
            if crc != expected:
                raise CorruptChunkError(
                    key,
                    f"checksum mismatch in frames {start}-{end - 1} (stored {expected:#010x}, computed {crc:#010x})",
                )


def _group_checksums(
    payload: bytes, offsets: np.ndarray, first: int, stop: int, group: int
) -> Iterator[tuple[int, int, int]]:
    """(first frame, end frame, CRC-32C) of each run of ``group`` frames in [first, stop), the
    last run shorter; ``payload`` holds those frames' bytes, from ``offsets[first]`` on."""
    base = int(offsets[first])
    for start in range(first, stop, group):
        end = min(start + group, stop)
        yield start, end, google_crc32c.value(payload[offsets[start] - base : offsets[end] - base])


def prefix_nbytes_upper_bound(n_frames: int) -> int:
    """Bytes that surely hold the prefix of a chunk of ``n_frames`` frames written by this codec."""
    return (
        HEADER_NBYTES
        + ASC_MAX_NBYTES
        + FRAME_SIZE_ITEMSIZE * n_frames
        + CHECKSUM_ITEMSIZE * -(-n_frames // CHECKSUM_GROUP)
    )


def pack_chunk(
    asc: bytes, frames: list[bytes], *, channels: int, aac_sample_rate: int, n_samples: int, skip: int
) -> bytes:
    """Lay out header, ASC, frame index, checksums and frames of one chunk."""
    sizes = np.fromiter((len(f) for f in frames), dtype="<u2", count=len(frames))
    payload = b"".join(frames)
    prefix = pack_prefix(
        asc, sizes, channels=channels, aac_sample_rate=aac_sample_rate, n_samples=n_samples, skip=skip, payload=payload
    )
    return prefix + payload


def pack_prefix(
    asc: bytes,
    frame_sizes: np.ndarray,
    *,
    channels: int,
    aac_sample_rate: int,
    n_samples: int,
    skip: int,
    payload: bytes | None,
) -> bytes:
    """Header, ASC, frame index and group checksums of a chunk whose frames are ``payload``;
    ``payload=None`` writes a chunk without checksums (checksum_group 0)."""
    if len(asc) > ASC_MAX_NBYTES:
        raise ValueError(f"AudioSpecificConfig of {len(asc)} bytes exceeds {ASC_MAX_NBYTES}")
    sizes = np.asarray(frame_sizes, dtype="<u2")
    if payload is None:
        group, checksums = 0, b""
    else:
        group = CHECKSUM_GROUP
        offsets = FrameIndex.from_sizes(sizes, skip).byte_offsets
        crcs = [crc for _, _, crc in _group_checksums(payload, offsets, 0, len(sizes), group)]
        checksums = np.array(crcs, dtype="<u4").tobytes()
    head = HEADER.pack(
        MAGIC,
        VERSION,
        0,
        channels,
        len(asc),
        aac_sample_rate,
        len(sizes),
        n_samples,
        skip,
        FRAME_LENGTH,
        int(sizes.sum(dtype=np.int64)),
        group,
        0,
    )
    described = head[:_CRC_OFFSET]
    index = sizes.tobytes() + checksums
    crc = google_crc32c.extend(google_crc32c.value(described + asc), index)
    return b"".join((described, struct.pack("<I", crc), asc, index))


def parse_header(data: bytes | memoryview, key: str | None) -> ChunkHeader:
    """Read and sanity-check the fixed header at the start of ``data``."""
    if len(data) < HEADER_NBYTES:
        raise CorruptChunkError(key, f"{len(data)} bytes is shorter than the {HEADER_NBYTES}-byte header")
    (
        magic,
        version,
        flags,
        channels,
        asc_nbytes,
        rate,
        n_frames,
        n_samples,
        skip,
        frame_length,
        payload_nbytes,
        checksum_group,
        _,
    ) = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CorruptChunkError(key, f"not a zarr_aac chunk (starts with {bytes(magic)!r}, expected {MAGIC!r})")
    if version == 1:
        raise CorruptChunkError(
            key,
            "chunk format 1 (zarr-aac 0.1, no frame checksums) is not read by this version (format 2): "
            "import the recording again",
        )
    if version != VERSION:
        raise CorruptChunkError(key, f"format version {version} is not supported (this reader knows {VERSION})")
    if flags == FLAG_PCM:
        return _parse_pcm_header(HEADER.unpack_from(data), key)
    problems = []
    if flags:
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
        channels=channels,
        aac_sample_rate=rate,
        n_frames=n_frames,
        n_samples=n_samples,
        skip=skip,
        asc_nbytes=asc_nbytes,
        payload_nbytes=payload_nbytes,
        checksum_group=checksum_group,
    )


def _parse_pcm_header(fields: tuple[Any, ...], key: str | None) -> ChunkHeader:
    """The header of a PCM chunk, from its unpacked fields, checked as docs/spec.md lays it out."""
    (_, _, _, channels, asc_nbytes, rate, stored, n_samples, skip, sample_nbytes, payload_nbytes, group, _) = fields
    problems = []
    if not 1 <= channels <= MAX_CHANNELS:
        problems.append(f"{channels} channels")
    if rate not in AAC_SAMPLE_RATES:
        problems.append(f"sample rate {rate}")
    if sample_nbytes not in PCM_SAMPLE_FORMATS:
        problems.append(f"{sample_nbytes} bytes a sample")
    if asc_nbytes or skip or group:
        problems.append(f"AudioSpecificConfig of {asc_nbytes} bytes, skip {skip}, checksum group {group}")
    if stored > n_samples:
        problems.append(f"{stored} stored of {n_samples} samples")
    if payload_nbytes != stored * channels * sample_nbytes:
        problems.append(f"{payload_nbytes} payload bytes for {stored} samples of {channels} x {sample_nbytes} bytes")
    if problems:
        raise CorruptChunkError(key, "PCM chunk header claims " + ", ".join(problems))
    return ChunkHeader(
        channels=channels,
        aac_sample_rate=rate,
        n_frames=stored,
        n_samples=n_samples,
        skip=0,
        asc_nbytes=0,
        payload_nbytes=payload_nbytes,
        checksum_group=0,
        frame_length=sample_nbytes,
        is_pcm=True,
    )


class PcmChunkBuilder:
    """A PCM chunk laid out in place as its samples arrive, so that each version of a growing
    chunk costs one copy of it (``chunk``), not a packing of all its samples again.

    Parameters
    ----------
    n_samples : int
        Samples per channel of the whole chunk (the array's chunk length).
    channels : int
        The chunk's channels.
    dtype : numpy.dtype
        int16 or float32: the array's dtype, stored little-endian.
    aac_sample_rate : int
        The codec's declared rate, kept in the header as in AAC chunks.
    """

    def __init__(self, n_samples: int, channels: int, dtype: np.dtype, aac_sample_rate: int) -> None:
        self.n_samples = n_samples
        self.channels = channels
        self.aac_sample_rate = aac_sample_rate
        self.dtype = np.dtype(dtype).newbyteorder("<")
        if self.dtype.itemsize not in PCM_SAMPLE_FORMATS or PCM_SAMPLE_FORMATS[self.dtype.itemsize] != self.dtype:
            raise ValueError(f"a PCM chunk stores int16 or float32 samples, not {dtype}")
        self._buffer = bytearray(HEADER_NBYTES + CHECKSUM_ITEMSIZE + n_samples * channels * self.dtype.itemsize)
        self._samples = np.frombuffer(self._buffer, dtype=self.dtype, offset=HEADER_NBYTES + CHECKSUM_ITEMSIZE)
        self.stored = 0
        self._payload_crc = 0

    def extend(self, samples: np.ndarray) -> None:
        """Add the chunk's next samples, shape (samples, channels)."""
        count = samples.shape[0]
        if self.stored + count > self.n_samples:
            raise ValueError(f"{self.stored} + {count} samples do not fit a chunk of {self.n_samples}")
        rows = self._samples.reshape(self.n_samples, self.channels)[self.stored : self.stored + count]
        rows[:] = samples
        self._payload_crc = google_crc32c.extend(self._payload_crc, rows.tobytes())
        self.stored += count

    def chunk(self) -> bytes:
        """The chunk holding the samples added so far (the rest read as the fill value, 0)."""
        payload_nbytes = self.stored * self.channels * self.dtype.itemsize
        head = HEADER.pack(
            MAGIC,
            VERSION,
            FLAG_PCM,
            self.channels,
            0,
            self.aac_sample_rate,
            self.stored,
            self.n_samples,
            0,
            self.dtype.itemsize,
            payload_nbytes,
            0,
            0,
        )
        checksum = struct.pack("<I", self._payload_crc)
        crc = google_crc32c.extend(google_crc32c.value(head[:_CRC_OFFSET]), checksum)
        self._buffer[:_CRC_OFFSET] = head[:_CRC_OFFSET]
        struct.pack_into("<II", self._buffer, _CRC_OFFSET, crc, self._payload_crc)
        return bytes(memoryview(self._buffer)[: HEADER_NBYTES + CHECKSUM_ITEMSIZE + payload_nbytes])


def parse_pcm_chunk(data: bytes | memoryview, header: ChunkHeader, dtype: np.dtype, key: str | None) -> np.ndarray:
    """The stored samples of a whole PCM chunk, shape (stored, channels), after checking its
    length, both checksums and that its samples are of the array's ``dtype``."""
    if len(data) != header.total_nbytes:
        raise CorruptChunkError(key, f"chunk is {len(data)} bytes, its header describes {header.total_nbytes}")
    view = memoryview(data)
    checksum = bytes(view[HEADER_NBYTES : HEADER_NBYTES + CHECKSUM_ITEMSIZE])
    (stored_crc,) = struct.unpack_from("<I", view, _CRC_OFFSET)
    crc = google_crc32c.extend(google_crc32c.value(bytes(view[:_CRC_OFFSET])), checksum)
    if crc != stored_crc:
        raise CorruptChunkError(key, f"header checksum mismatch (stored {stored_crc:#010x}, computed {crc:#010x})")
    payload = bytes(view[header.prefix_nbytes :])
    (expected,) = struct.unpack("<I", checksum)
    computed = google_crc32c.value(payload)
    if computed != expected:
        raise CorruptChunkError(
            key, f"checksum mismatch in the PCM samples (stored {expected:#010x}, computed {computed:#010x})"
        )
    if header.pcm_dtype != np.dtype(dtype).newbyteorder("<"):
        raise CorruptChunkError(key, f"PCM chunk holds {header.pcm_dtype.name} samples, the array is {np.dtype(dtype)}")
    return np.frombuffer(payload, dtype=header.pcm_dtype).reshape(header.n_frames, header.channels)


def check_chunk_geometry(header: ChunkHeader, chunk_shape: tuple[int, ...], key: str | None) -> None:
    """Raise CorruptChunkError unless the chunk holds the samples and channels of the array's chunk shape.

    A chunk moved or copied between arrays parses cleanly; only this check stops it from being
    read as another array's samples.
    """
    channels = channels_of(chunk_shape)
    if header.n_samples != chunk_shape[0] or header.channels != channels:
        raise CorruptChunkError(
            key,
            f"chunk holds {header.n_samples} samples x {header.channels} channels, "
            f"the array expects {chunk_shape[0]} x {channels}",
        )


def parse_prefix(data: bytes | memoryview, header: ChunkHeader, key: str | None) -> ChunkPrefix:
    """Verify the header/index checksum and read ASC, frame index and group checksums."""
    if header.is_pcm:
        raise CorruptChunkError(key, "a PCM chunk (a live recording's unfinished tail) has no frame index")
    if len(data) < header.prefix_nbytes:
        raise CorruptChunkError(
            key, f"chunk is {len(data)} bytes, shorter than its {header.prefix_nbytes}-byte header and index"
        )
    view = memoryview(data)
    asc = bytes(view[HEADER_NBYTES : HEADER_NBYTES + header.asc_nbytes])
    sizes_start = HEADER_NBYTES + header.asc_nbytes
    checksums_start = sizes_start + FRAME_SIZE_ITEMSIZE * header.n_frames
    index_bytes = bytes(view[sizes_start : header.prefix_nbytes])
    (stored_crc,) = struct.unpack_from("<I", view, _CRC_OFFSET)
    crc = google_crc32c.extend(google_crc32c.value(bytes(view[:_CRC_OFFSET]) + asc), index_bytes)
    if crc != stored_crc:
        raise CorruptChunkError(
            key, f"header/index checksum mismatch (stored {stored_crc:#010x}, computed {crc:#010x})"
        )
    sizes = np.frombuffer(index_bytes, dtype="<u2", count=header.n_frames)
    index = FrameIndex.from_sizes(sizes, header.skip)
    if int(index.byte_offsets[-1]) != header.payload_nbytes:
        raise CorruptChunkError(
            key, f"frame sizes add up to {int(index.byte_offsets[-1])}, header says {header.payload_nbytes}"
        )
    checksums = np.frombuffer(index_bytes, dtype="<u4", offset=checksums_start - sizes_start)
    return ChunkPrefix(header, asc, index, checksums)


def verify_payload(data: bytes, prefix: ChunkPrefix, key: str | None) -> None:
    """Check the length of a whole chunk and the checksums of all its frames (if it has them)."""
    header = prefix.header
    if len(data) != header.total_nbytes:
        raise CorruptChunkError(key, f"chunk is {len(data)} bytes, its header describes {header.total_nbytes}")
    prefix.verify_frames(data[header.prefix_nbytes :], 0, header.n_frames, key)
