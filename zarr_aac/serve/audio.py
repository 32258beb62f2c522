"""The audio of a range of a recording, as the server sends it: WAV through the exporter, or the
stored AAC frames passed through as ADTS without re-encoding.

WAV is exact: the samples ``array[first:last]`` gives, written by
:func:`~zarr_aac.archive.exporter.export` with its metadata (so a download is byte-identical to
``zarr-aac export``'s file). A time-expansion factor rewrites the WAV header's rate, as bat
detectors do, so a player plays the samples that many times slower and lower.

ADTS is the chunk's own AAC frames, verified against their checksums, each given a 7-byte ADTS
header. AAC frames hold 1024 samples and decode exactly only after the frame before them, so the
stream holds one pre-roll frame and whole frames: decoding it gives ``skip`` samples before the
range and some after it. The response says how many (:class:`AdtsSegment`); a player that
ignores that plays up to 2047 extra samples before the range and 1023 after, and the samples are
at the stored level (the codec's ``gain``, 0.25 = -12 dB for int16 imports) and at the declared
AAC rate (time-stretched for ultrasonic recordings). Chunks are encoded independently, so a
range across a chunk boundary cannot be passed through as one stream; it is refused.
"""

from __future__ import annotations

import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from zarr_aac.archive.exporter import export
from zarr_aac.archive.recordings import codec_of
from zarr_aac.codec.aac import FRAME_LENGTH
from zarr_aac.codec.aac_codec import DEFAULT_GAINS, LEGACY_GAIN, PcmChunk, _fetch_frames, _fetch_prefix
from zarr_aac.errors import CorruptChunkError, MissingChunkError, UnsupportedAudioError

ADTS_HEADER_NBYTES = 7
MAX_ADTS_FRAME_NBYTES = (1 << 13) - 1
ADTS_CHANNEL_CONFIGS = range(1, 8)
"""ADTS signals a layout by channel configuration 1-7; 0 would need the layout in the stream."""


class RangeNotServableError(UnsupportedAudioError):
    """A range that cannot be sent in the form asked for (AAC passthrough across chunks)."""


def exported_file(
    array: zarr.Array, first: int, last: int, folder: Path, *, suffix: Literal[".wav", ".flac"] = ".wav"
) -> Path:
    """Samples [first, last) of ``array`` written by the exporter into a new file in ``folder``."""
    descriptor, name = tempfile.mkstemp(suffix=suffix, dir=folder)
    os.close(descriptor)
    target = Path(name)
    try:
        return export(array, target, first, last, unit="samples", progress=False)
    except BaseException:
        target.unlink(missing_ok=True)
        raise


def expand_wav_rate(path: Path, factor: int) -> None:
    """Divide the sample rate (and byte rate) in a WAV file's ``fmt `` chunk by ``factor``: the
    samples play ``factor`` times slower and lower, as a time-expansion bat detector records them."""
    with open(path, "r+b") as f:
        head = f.read(12)
        if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            raise ValueError(f"{path} is not a RIFF WAVE file")
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                raise ValueError(f"{path} has no fmt chunk")
            name, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if name == b"fmt ":
                fields = f.read(12)
                channels_and_format, rate, byte_rate = fields[:4], *struct.unpack("<II", fields[4:12])
                if rate % factor:
                    raise ValueError(f"{rate} Hz is not a multiple of the expansion factor {factor}")
                f.seek(-12, 1)
                f.write(channels_and_format + struct.pack("<II", rate // factor, byte_rate // factor))
                return
            f.seek(size + (size & 1), 1)


@dataclass(frozen=True)
class AdtsSegment:
    """ADTS frames holding samples [first, last) of a recording, and how to cut them from the decode."""

    data: bytes
    skip: int
    """Decoded samples (per channel) before the range's first sample: the pre-roll frame and the
    part of the first frame before the range."""
    n_samples: int
    """Decoded samples of the range, after ``skip``."""
    aac_sample_rate: int
    """The rate the stream declares; for ultrasonic recordings lower than the true rate."""
    gain: float
    """Stored level: decoded samples divided by it give the array's float values."""


def adts_segment(array: zarr.Array, first: int, last: int) -> AdtsSegment:
    """The stored AAC frames of samples [first, last) as an ADTS stream, verified, not re-encoded.

    Raises
    ------
    RangeNotServableError
        If the range crosses a chunk boundary, or the stream's layout has no ADTS channel configuration.
    CorruptChunkError
        If the chunk fails its checksums, or is missing.
    """
    codec = codec_of(array)
    chunk_length = array.chunks[0]
    chunk = first // chunk_length
    if (last - 1) // chunk_length != chunk:
        raise RangeNotServableError(
            f"samples [{first}, {last}) cross a chunk boundary (chunks of {chunk_length} samples); each chunk "
            "is an AAC stream of its own, so AAC passthrough serves ranges within one chunk: ask for WAV"
        )
    coords = (chunk,) + (0,) * (array.ndim - 1)
    key = array.metadata.encode_chunk_key(coords)
    where = array.store_path / key
    prototype = default_buffer_prototype()
    shape = (chunk_length, *array.shape[1:])
    prefix = sync(_fetch_prefix(where, shape, prototype, where.path))
    if prefix is None:
        raise MissingChunkError(where.path)
    if isinstance(prefix, PcmChunk):
        raise RangeNotServableError(
            f"samples [{first}, {last}) lie in a chunk stored as PCM (a live recording's unfinished chunk, "
            "docs/live-recording.md), which holds no AAC frames to pass through: ask for WAV"
        )
    lo, hi = first - chunk * chunk_length, last - chunk * chunk_length
    index = prefix.index
    start, stop = max(index.frame_of(lo) - 1, 0), index.frame_of(hi - 1) + 1
    frames = sync(_fetch_frames(where, prefix, start, stop, prototype, key=where.path))
    if frames is None:
        raise MissingChunkError(where.path)
    fixed = _adts_fixed_header(prefix.asc, where.path)
    parts = []
    for number in range(start, stop):
        begin = int(index.byte_offsets[number]) - frames.base
        payload = frames.data[begin : begin + int(index.frame_sizes[number])]
        parts.append(_adts_header(fixed, len(payload)) + bytes(payload))
    gain = codec.gain if codec.gain is not None else DEFAULT_GAINS.get(array.dtype, LEGACY_GAIN)
    return AdtsSegment(
        data=b"".join(parts),
        skip=lo + index.skip - start * FRAME_LENGTH,
        n_samples=hi - lo,
        aac_sample_rate=codec.aac_sample_rate,
        gain=gain,
    )


def _adts_fixed_header(asc: bytes, key: str) -> int:
    """The 28 fixed bits of the ADTS header equivalent to a 2-byte-prefix AAC-LC ASC."""
    fields = int.from_bytes(asc[:2], "big")
    object_type, rate_index, channel_config = fields >> 11, (fields >> 7) & 0xF, (fields >> 3) & 0xF
    if object_type != 2 or rate_index == 15:
        raise CorruptChunkError(key, f"AudioSpecificConfig {asc.hex()} is not plain AAC-LC at a table rate")
    if channel_config not in ADTS_CHANNEL_CONFIGS:
        raise RangeNotServableError(
            f"the recording's channel layout (AudioSpecificConfig {asc.hex()}) has no ADTS channel "
            "configuration, so its frames cannot be passed through as ADTS: ask for WAV"
        )
    # syncword, MPEG-4, layer 0, no CRC, profile, rate index, private bit, channel configuration, 4 flag bits
    return (0xFFF << 16) | (1 << 12) | ((object_type - 1) << 10) | (rate_index << 6) | (channel_config << 2)


def _adts_header(fixed: int, payload_nbytes: int) -> bytes:
    """A 7-byte ADTS header for one raw frame of ``payload_nbytes`` bytes (buffer fullness: VBR)."""
    length = payload_nbytes + ADTS_HEADER_NBYTES
    if length > MAX_ADTS_FRAME_NBYTES:
        raise UnsupportedAudioError(f"an AAC frame of {payload_nbytes} bytes does not fit an ADTS frame")
    bits = (fixed << 28) | (length << 13) | (0x7FF << 2)
    return bits.to_bytes(ADTS_HEADER_NBYTES, "big")
