"""Every configuration of the codec passes the same check (support.conformance.check_codec):
round trip, configuration round trip, repr, pickling and every selection kind against the
sequential decode of the stored frames."""

from __future__ import annotations

import pytest
from support.conformance import CodecCase, check_codec

CASES = {
    "int16-mono-1d-48k": CodecCase("int16", 1, 48000, 48_000, 20_000, one_dim=True),
    "int16-mono-8k": CodecCase("int16", 1, 8000, 16_000, 5_000),
    "float32-stereo-16k-64kbps": CodecCase("float32", 2, 16000, 24_000, 7_000, bitrate=64_000),
    "int16-stereo-44k1": CodecCase("int16", 2, 44100, 44_100, 10_000),
    "float32-stereo-48k-one-large-chunk": CodecCase("float32", 2, 48000, 96_000, 120_000),
    "int16-stereo-96k-256kbps": CodecCase("int16", 2, 96000, 48_000, 20_000, bitrate=256_000),
    "float32-6ch-48k": CodecCase("float32", 6, 48000, 24_000, 8_000),
    "int16-10ch-48k-chunked-by-5-channels": CodecCase("int16", 10, 48000, 12_000, 5_000, chunk_channels=5),
    "float32-mono-250k-as-96k": CodecCase("float32", 1, 250_000, 125_000, 50_000, aac_sample_rate=96000),
    "int16-mono-1d-250k-as-48k": CodecCase("int16", 1, 250_000, 100_000, 30_000, aac_sample_rate=48000, one_dim=True),
    "int16-stereo-48k-chunks-shorter-than-a-frame": CodecCase("int16", 2, 48000, 4_800, 700),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_codec_configuration_conforms(case: CodecCase, tmp_path) -> None:
    check_codec(case, tmp_path / "array.zarr")
