"""A bitrate above what AAC-LC carries for a chunk's channels is not ignored in silence.

AAC-LC carries at most 6144 bits a frame of 1024 samples and channel. FFmpeg's encoder, asked
for more, encodes at that maximum and logs it only to a log PyAV keeps off. The codec warns with
``BitrateClampedWarning``, naming the rate the chunk is really encoded at; the chunk's bytes must
then be those of an encode asked for exactly that rate.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import zarr
from support.signals import tone_with_noise

from zarr_aac import AACCodec
from zarr_aac.errors import BitrateClampedWarning

BITS_PER_FRAME_AND_CHANNEL = 6144
"""AAC-LC's ceiling (ISO/IEC 14496-3, the decoder's input buffer per channel)."""


def carried(aac_sample_rate: int, channels: int) -> int:
    return BITS_PER_FRAME_AND_CHANNEL * aac_sample_rate // 1024 * channels


def samples(channels: int, rate: int, seconds: float = 1.0) -> np.ndarray:
    return tone_with_noise(int(rate * seconds), channels, rate)


@pytest.mark.parametrize(
    ("channels", "aac_sample_rate", "bitrate"),
    [(1, 48_000, 640_000), (2, 48_000, 640_000), (1, 96_000, 1_536_000), (1, 16_000, 300_000)],
)
def test_a_bitrate_above_what_aac_carries_is_warned_of_with_the_rate_encoded(channels, aac_sample_rate, bitrate):
    pcm = samples(channels, aac_sample_rate)
    most = carried(aac_sample_rate, channels)
    message = (
        f"FFmpeg's AAC encoder carries at most {most} bit/s for {channels} channel(s) at {aac_sample_rate} Hz "
        f"and encodes at that, not at the {bitrate} bit/s the codec asks for (the array's metadata keeps the "
        f"higher figure). Give the codec a bitrate of at most {most}, or chunks of more channels: without one, "
        "the default follows the array's channel count, not the chunk's."
    )
    with pytest.warns(BitrateClampedWarning, match=f"^{re.escape(message)}$"):
        asked = AACCodec(sample_rate=aac_sample_rate, bitrate=bitrate, gain=1.0).encode_pcm(pcm)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        at_most = AACCodec(sample_rate=aac_sample_rate, bitrate=most, gain=1.0).encode_pcm(pcm)
    assert asked == at_most


def test_a_bitrate_aac_carries_is_not_warned_of():
    pcm = samples(1, 48_000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for bitrate in (carried(48_000, 1), 130_000):
            AACCodec(sample_rate=48_000, bitrate=bitrate, gain=1.0).encode_pcm(pcm)


def test_mono_chunks_of_an_eight_channel_array_at_the_default_bitrate_are_warned_of(tmp_path):
    """zarr evolves a codec from the array's shape: the 8-channel default (640 kbps) reaches the
    encoder of each mono chunk. Given the mono default explicitly, nothing is clamped."""
    pcm = samples(8, 48_000, seconds=0.5)
    for bitrate, clamped in ((None, True), (130_000, False)):
        z = zarr.create_array(
            tmp_path / f"{bitrate}.zarr",
            shape=pcm.shape,
            chunks=(pcm.shape[0], 1),
            dtype="float32",
            serializer=AACCodec(sample_rate=48_000, bitrate=bitrate),
            compressors=None,
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            z[:] = pcm
        warned = [w for w in caught if issubclass(w.category, BitrateClampedWarning)]
        assert len(warned) == (8 if clamped else 0)
        if clamped:
            assert "at most 288000 bit/s for 1 channel(s) at 48000 Hz" in str(warned[0].message)
            assert "not at the 640000 bit/s" in str(warned[0].message)
