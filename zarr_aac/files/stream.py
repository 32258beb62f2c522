"""An AAC-LC stream as every container holds it: its configuration and where its frames lie.

Each container reader (zarr_aac.files.adts, zarr_aac.files.mp4, the old archives of
zarr_aac.files.legacy) turns a file into a :class:`StreamIndex`: the AudioSpecificConfig, where
each raw AAC frame lies in the file (ADTS headers excluded), and how the decoded stream maps to
array samples (``priming`` decoded samples come before array sample 0). Readers fetch bytes
through a :class:`ByteSource`, so the same code serves local files, object stores and old archives.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import av
import numpy as np

from zarr_aac.codec.aac import AAC_SAMPLE_RATES, FRAME_LENGTH, MAX_CHANNELS
from zarr_aac.errors import CorruptSourceError, UnsupportedAudioError

AOT_LC = 2
AUDIO_OBJECT_TYPES = {
    1: "AAC Main",
    2: "AAC-LC",
    3: "AAC SSR",
    4: "AAC LTP",
    5: "HE-AAC (SBR)",
    6: "AAC Scalable",
    17: "ER AAC-LC",
    19: "ER AAC LTP",
    20: "ER AAC Scalable",
    22: "ER BSAC",
    23: "AAC-LD",
    29: "HE-AACv2 (PS)",
    39: "AAC-ELD",
    42: "USAC (xHE-AAC)",
}
FRAMES_CHECKED = 3
"""Frames decoded at open to refuse implicit SBR (see :func:`check_plain_lc`)."""


class ByteSource(Protocol):
    """Read access to the bytes of one file or blob; ranges are [start, stop) byte offsets."""

    @property
    def name(self) -> str:
        """What messages call the source: a path, URL or store key."""
        ...

    async def size(self) -> int: ...

    async def read_ranges(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]: ...


@dataclass(frozen=True)
class StreamIndex:
    """One AAC-LC stream: its configuration, frame locations and priming.

    ``frame_offsets``/``frame_sizes`` locate each raw frame in the source. Array sample ``i`` is
    decoded sample ``priming + i`` of a sequential decode of all frames; the array holds
    ``n_samples`` samples.
    """

    asc: bytes
    channels: int
    sample_rate: int
    frame_offsets: np.ndarray
    frame_sizes: np.ndarray
    priming: int
    n_samples: int
    container: str
    attributes: dict = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return len(self.frame_sizes)

    @property
    def table(self) -> np.ndarray:
        """The 3-column view (byte_offset, frame_size, sample_pos) of the old archives."""
        sample_pos = np.arange(self.n_frames, dtype=np.int64) * FRAME_LENGTH - self.priming
        return np.stack([self.frame_offsets, self.frame_sizes, sample_pos], axis=1)


@dataclass(frozen=True)
class AudioSpecificConfig:
    """The fields of an AudioSpecificConfig that decide whether and how a stream is served."""

    object_type: int
    sample_rate: int
    channels: int


def _profile_name(object_type: int) -> str:
    return AUDIO_OBJECT_TYPES.get(object_type, f"audio object type {object_type}")


def parse_asc(asc: bytes, source: str) -> AudioSpecificConfig:
    """Read the object type, rate and channels of an ASC; anything but AAC-LC is refused."""
    if len(asc) < 2:
        raise CorruptSourceError(source, f"AudioSpecificConfig of {len(asc)} bytes is too short")
    bits = int.from_bytes(asc[:8].ljust(8, b"\0"), "big")
    object_type, used = bits >> 59, 5
    if object_type == 31:
        object_type, used = 32 + ((bits >> 53) & 0x3F), 11
    if object_type != AOT_LC:
        raise UnsupportedAudioError(
            f"{source}: the stream is {_profile_name(object_type)}; only AAC-LC can be served "
            "frame-exactly (re-encode it with zarr_aac.import_file)"
        )
    rate_index = (bits >> (64 - used - 4)) & 0xF
    used += 4
    if rate_index == 15:
        rate = (bits >> (64 - used - 24)) & 0xFFFFFF
        used += 24
    elif rate_index < len(AAC_SAMPLE_RATES):
        rate = AAC_SAMPLE_RATES[rate_index]
    else:
        raise CorruptSourceError(source, f"AudioSpecificConfig has reserved sample-rate index {rate_index}")
    channel_config = (bits >> (64 - used - 4)) & 0xF
    return AudioSpecificConfig(object_type, rate, _channels_of_config(channel_config, source))


def _channels_of_config(channel_config: int, source: str) -> int:
    if channel_config == 0:
        raise UnsupportedAudioError(f"{source}: channel configuration 0 (a program config element) is not supported")
    channels = channel_config if channel_config <= 6 else {7: 8}.get(channel_config)
    if channels is None or channels > MAX_CHANNELS:
        raise UnsupportedAudioError(f"{source}: AAC channel configuration {channel_config} is not supported")
    return channels


def make_asc(object_type: int, rate_index: int, channel_config: int) -> bytes:
    """The 2-byte ASC equivalent to an ADTS fixed header."""
    return ((object_type << 11) | (rate_index << 7) | (channel_config << 3)).to_bytes(2, "big")


def check_plain_lc(asc: bytes, first_frames: Sequence[bytes], config: AudioSpecificConfig, source: str) -> None:
    """Decode the first frames and refuse streams that turn out to carry implicit SBR.

    An ASC may announce AAC-LC while the frames hold SBR extension data; FFmpeg then outputs
    2048 samples a frame at twice the rate, which the frame index cannot address.
    """
    ctx = av.CodecContext.create("aac", "r")
    ctx.extradata = asc
    try:
        decoded = [frame for data in first_frames for frame in ctx.decode(av.Packet(data))]
    except av.FFmpegError as exc:
        raise CorruptSourceError(source, f"the first AAC frames do not decode: {exc}") from exc
    for frame in decoded:
        if frame.samples != FRAME_LENGTH or frame.sample_rate != config.sample_rate:
            raise UnsupportedAudioError(
                f"{source}: frames decode to {frame.samples} samples at {frame.sample_rate} Hz, not "
                f"{FRAME_LENGTH} at {config.sample_rate} Hz: HE-AAC (implicit SBR) is not supported"
            )
        if len(frame.layout.channels) != config.channels:
            raise UnsupportedAudioError(
                f"{source}: frames decode to {len(frame.layout.channels)} channels, the header says {config.channels}"
            )


async def check_first_frames(
    source: ByteSource, asc: bytes, config: AudioSpecificConfig, offsets: np.ndarray, sizes: np.ndarray
) -> None:
    """:func:`check_plain_lc` on the stream's first frames, fetched as one range (they lie together)."""
    offsets, sizes = offsets[:FRAMES_CHECKED], sizes[:FRAMES_CHECKED]
    start, stop = int(offsets.min()), int((offsets + sizes).max())
    (blob,) = await source.read_ranges([(start, stop)])
    frames = [blob[int(o) - start : int(o + n) - start] for o, n in zip(offsets, sizes, strict=True)]
    check_plain_lc(asc, frames, config, source.name)
