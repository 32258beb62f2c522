"""The read side's remaining paths, each against an independent reference (the source PCM, a full
sequential decode through PyAV directly in support.chunks): the ones mutation testing found no
test for (docs/claims.md, "aac_codec.py's read side, the rest")."""

from __future__ import annotations

import numpy as np
import pytest
from support.chunks import decode_chunk_sequentially
from support.selections import to_int16
from support.signals import tone_with_noise

from zarr_aac import AACCodec
from zarr_aac.codec import aac

RATE = 48_000
CHUNK = 30 * aac.FRAME_LENGTH


@pytest.mark.parametrize(("dtype", "gain"), [("int16", 0.25), ("float32", 0.0625)])
def test_a_codec_without_a_gain_decodes_with_the_dtypes_default_gain(dtype, gain):
    """A codec made without ``gain`` (not yet given an array, as the importer's verification and the
    CLI may hold it) encodes at docs/spec.md's default gain for the dtype, 0.25 for int16 and
    0.0625 for float32, and ``decode_chunk`` must undo that same gain."""
    codec = AACCodec(sample_rate=RATE)
    assert codec.gain is None
    source = tone_with_noise(CHUNK, 2, RATE, seed=3)
    pcm = to_int16(source) if dtype == "int16" else source
    data = codec.encode_pcm(pcm)
    decoded = decode_chunk_sequentially(data)
    expected = to_int16(decoded, gain) if dtype == "int16" else (decoded / np.float32(gain)).astype(np.float32)
    got = codec.decode_chunk(data, (CHUNK, 2), np.dtype(dtype))
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got, expected)
    # And the samples are the source's at its own level (a wrong gain scales them by 4 or 16).
    source64, got64 = pcm.astype(np.float64).ravel(), got.astype(np.float64).ravel()
    assert float(got64 @ source64 / (source64 @ source64)) == pytest.approx(1.0, abs=0.05)
