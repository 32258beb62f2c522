"""The frame index of an ADTS stream (``.aac``), found by walking the header of every frame.

ADTS has no index and records no encoder priming: each frame starts with a 7-byte header (9
with a CRC) that repeats the stream's profile, rate and channels and gives the frame's length.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zarr_aac.codec.aac import AAC_SAMPLE_RATES, FRAME_LENGTH
from zarr_aac.errors import CorruptSourceError, UnsupportedAudioError
from zarr_aac.files.stream import AudioSpecificConfig, ByteSource, StreamIndex, check_first_frames, make_asc, parse_asc

ADTS_SCAN_BLOCK = 8 << 20
"""Bytes read per request while walking ADTS headers (the whole file is read once)."""
FIXED_HEADER_MASK = 0xF7FFF0
"""Bits of header bytes 1-3 that every frame of one stream repeats: sync, layer, CRC flag,
profile, rate and channels (not the MPEG version bit, nor the frame length that follows)."""
HEADER_NBYTES = 7
CRC_HEADER_NBYTES = 9
TRAILING_TAGS = (b"TAG", b"APETAGEX", b"ID3")
"""ID3v1, APE and appended ID3v2 tags: recorders and taggers write them after the last frame."""


def _has_sync(data: bytes, pos: int) -> bool:
    return len(data) >= pos + 2 and data[pos] == 0xFF and data[pos + 1] & 0xF6 == 0xF0


def _header_fields(data: bytes, pos: int) -> tuple[int, int, int]:
    """(fixed bits, frame length, raw data blocks beyond the first) of the header at ``data[pos]``.

    The one place that knows the header's bit layout. A tuple rather than an :class:`AdtsHeader`
    because the walk reads the header of every frame of the file.
    """
    fixed = ((data[pos + 1] << 16) | (data[pos + 2] << 8) | data[pos + 3]) & FIXED_HEADER_MASK
    length = ((data[pos + 3] & 3) << 11) | (data[pos + 4] << 3) | (data[pos + 5] >> 5)
    return fixed, length, data[pos + 6] & 3


@dataclass(frozen=True)
class AdtsHeader:
    """One ADTS frame header; ``fixed`` holds the fields every frame of the stream repeats."""

    fixed: int
    frame_length: int
    extra_blocks: int

    @classmethod
    def parse(cls, data: bytes, pos: int = 0) -> AdtsHeader | None:
        """The header at ``data[pos]``, or None where no whole header with a sync word starts."""
        if len(data) < pos + HEADER_NBYTES or not _has_sync(data, pos):
            return None
        return cls(*_header_fields(data, pos))

    @property
    def profile(self) -> int:
        return (self.fixed >> 14) & 3

    @property
    def rate_index(self) -> int:
        return (self.fixed >> 10) & 0xF

    @property
    def channel_config(self) -> int:
        return (self.fixed >> 6) & 7

    @property
    def nbytes(self) -> int:
        """Header length: 9 bytes when a CRC follows the 7 fixed and variable ones."""
        return HEADER_NBYTES if (self.fixed >> 16) & 1 else CRC_HEADER_NBYTES


def parse_first_header(data: bytes, source: str, offset: int) -> tuple[AdtsHeader, bytes, AudioSpecificConfig]:
    """(header, equivalent ASC, its fields) of the stream's first frame, whose header is ``data``.

    Raises CorruptSourceError without a sync word or with a reserved rate, UnsupportedAudioError
    for anything but AAC-LC.
    """
    header = AdtsHeader.parse(data)
    if header is None:
        raise CorruptSourceError(source, f"no ADTS sync word at byte {offset}")
    if header.rate_index >= len(AAC_SAMPLE_RATES):
        raise CorruptSourceError(
            source, f"ADTS frame at byte {offset} has reserved sample-rate index {header.rate_index}"
        )
    asc = make_asc(header.profile + 1, header.rate_index, header.channel_config)
    return header, asc, parse_asc(asc, source)


def _id3v2_size(head: bytes) -> int:
    """Bytes of an ID3v2 tag at the start of ``head`` (FFmpeg skips it too), else 0."""
    if len(head) >= 10 and head[:3] == b"ID3":
        size = (head[6] & 0x7F) << 21 | (head[7] & 0x7F) << 14 | (head[8] & 0x7F) << 7 | (head[9] & 0x7F)
        return 10 + size + (10 if head[5] & 0x10 else 0)
    return 0


def is_adts(head: bytes) -> bool:
    """Whether the file whose first bytes are ``head`` starts (after an ID3v2 tag) with an ADTS sync word."""
    return _has_sync(head, _id3v2_size(head))


def _walk_block(buf: bytes, fixed: int) -> tuple[list[int], list[int], int]:
    """(starts, lengths) of the frames that lie whole in ``buf``, and how far the walk got.

    The walk stops at the first byte that does not start a frame with the stream's fixed
    header, or at a frame that runs past the end of ``buf``.
    """
    starts: list[int] = []
    lengths: list[int] = []
    pos = 0
    size = len(buf)
    while pos <= size - HEADER_NBYTES:
        frame_fixed, length, extra_blocks = _header_fields(buf, pos)
        if frame_fixed != fixed or buf[pos] != 0xFF or length < HEADER_NBYTES or pos + length > size or extra_blocks:
            break
        starts.append(pos)
        lengths.append(length)
        pos += length
    return starts, lengths, pos


async def _walk_file(source: ByteSource, start: int, size: int, fixed: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(frame starts, frame lengths, where the walk stopped), reading the file in large blocks."""
    starts: list[np.ndarray] = []
    lengths: list[np.ndarray] = []
    pos = start
    while pos < size:
        (block,) = await source.read_ranges([(pos, min(size, pos + ADTS_SCAN_BLOCK))])
        block_starts, block_lengths, walked = _walk_block(block, fixed)
        if walked == 0:
            break
        starts.append(np.asarray(block_starts, dtype=np.int64) + pos)
        lengths.append(np.asarray(block_lengths, dtype=np.int64))
        pos += walked
    empty = np.zeros(0, dtype=np.int64)
    return np.concatenate(starts or [empty]), np.concatenate(lengths or [empty]), pos


def _trailing_bytes(name: str, pos: int, size: int, tail: bytes, header_nbytes: int) -> dict[str, int]:
    """Why the walk stopped at ``pos`` before the end: a trailing tag or one truncated last frame
    (as attributes to record), or else corruption."""
    if tail.startswith(TRAILING_TAGS):
        return {"trailing_tag_bytes": size - pos}
    header = AdtsHeader.parse(tail)
    if header is not None:
        if header.extra_blocks:
            raise UnsupportedAudioError(
                f"{name}: the ADTS frame at byte {pos} holds {header.extra_blocks + 1} raw data blocks; "
                "only one block per frame is supported"
            )
        if pos + header.frame_length > size:
            return {"truncated_tail_bytes": size - pos}
        raise CorruptSourceError(name, f"the ADTS frame at byte {pos} changes the stream's profile, rate or channels")
    if size - pos < header_nbytes:
        return {"truncated_tail_bytes": size - pos}
    raise CorruptSourceError(name, f"lost ADTS sync at byte {pos} of {size} (bytes {tail[:4].hex()})")


async def scan_adts(source: ByteSource, head: bytes) -> StreamIndex:
    """Walk the ADTS headers of a whole file, whose first bytes are ``head``.

    ADTS records no encoder priming, so nothing is dropped: sample 0 is the first sample a
    standard decoder (FFmpeg) presents, as it too presents every decoded sample.
    """
    name = source.name
    size = await source.size()
    start = _id3v2_size(head)
    first_header = head[start : start + CRC_HEADER_NBYTES]
    if len(first_header) < CRC_HEADER_NBYTES:
        (first_header,) = await source.read_ranges([(start, min(size, start + CRC_HEADER_NBYTES))])
    header, asc, config = parse_first_header(first_header, name, start)
    starts, lengths, stop = await _walk_file(source, start, size, header.fixed)
    attributes: dict = {}
    if stop < size:
        (tail,) = await source.read_ranges([(stop, min(size, stop + CRC_HEADER_NBYTES))])
        attributes = _trailing_bytes(name, stop, size, tail, header.nbytes)
    if not starts.size:
        raise CorruptSourceError(name, "no whole ADTS frame found")
    frame_offsets = starts + header.nbytes
    frame_sizes = lengths - header.nbytes
    await check_first_frames(source, asc, config, frame_offsets, frame_sizes)
    return StreamIndex(
        asc=asc,
        channels=config.channels,
        sample_rate=config.sample_rate,
        frame_offsets=frame_offsets,
        frame_sizes=frame_sizes,
        priming=0,
        n_samples=starts.size * FRAME_LENGTH,
        container="adts",
        attributes=attributes,
    )
