"""Small zarr_aac arrays of a tone with noise, in memory, for tests of the read path."""

from __future__ import annotations

import numpy as np
import zarr

import zarr_aac
from support.signals import tone_with_noise


def tone_array(shape, chunks, rate, *, dtype="int16", gain=None, compressors=None, seed=None) -> zarr.Array:
    """A MemoryStore array of ``shape`` holding ``tone_with_noise`` (int16 at full scale, or
    float32 as is), seeded by ``seed`` or by the shape."""
    z = zarr.create_array(
        zarr.storage.MemoryStore(),
        shape=shape,
        chunks=chunks,
        dtype=dtype,
        serializer=zarr_aac.AACCodec(sample_rate=rate, gain=gain),
        compressors=compressors,
    )
    channels = shape[1] if len(shape) == 2 else 1
    pcm = tone_with_noise(shape[0], channels, rate, seed=shape[0] + channels if seed is None else seed)
    z[:] = (pcm * 32767).astype(np.int16).reshape(shape) if dtype == "int16" else pcm.reshape(shape)
    return z
