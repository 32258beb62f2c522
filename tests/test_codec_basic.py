from __future__ import annotations

import numpy as np
import pytest
import zarr

import zarr_aac
from helpers import CountingStore, assert_selections_match, reference_decode


def make_array(store, n, channels, chunk, rate=48000, dtype="int16", **codec_kw):
    return zarr.create_array(
        store, shape=(n, channels), chunks=(chunk, channels), dtype=dtype,
        serializer=zarr_aac.AACCodec(sample_rate=rate, **codec_kw), compressors=None,
    )


@pytest.mark.parametrize("dtype", ["int16", "float32"])
def test_selections_equal_sequential_decode(tone, dtype):
    pcm = tone(100_000, 2, 48000)
    z = make_array(zarr.storage.MemoryStore(), len(pcm), 2, 30_000, dtype=dtype)
    z[:] = (pcm * 32767).astype(np.int16) if dtype == "int16" else pcm
    reference = reference_decode(z)
    assert_selections_match(z, reference, np.random.default_rng(0))
