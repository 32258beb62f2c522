"""Small zarr_aac arrays, empty or of a tone with noise, in memory by default, for tests of the read path."""

from __future__ import annotations

import numpy as np
import zarr

import zarr_aac
from support.signals import tone_with_noise


def aac_array(
    shape, chunks, rate, *, dtype="int16", gain=None, compressors=None, store=None, fill_value=0
) -> zarr.Array:
    """An empty zarr_aac array of ``shape`` in ``store`` (a new MemoryStore by default)."""
    return zarr.create_array(
        store if store is not None else zarr.storage.MemoryStore(),
        shape=shape,
        chunks=chunks,
        dtype=dtype,
        fill_value=fill_value,
        serializer=zarr_aac.AACCodec(sample_rate=rate, gain=gain),
        compressors=compressors,
    )


def tone_array(shape, chunks, rate, *, dtype="int16", seed=None, **options) -> zarr.Array:
    """An ``aac_array`` (``options`` as there) holding ``tone_with_noise`` (int16 at full scale,
    or float32 as is), seeded by ``seed`` or by the shape."""
    z = aac_array(shape, chunks, rate, dtype=dtype, **options)
    channels = shape[1] if len(shape) == 2 else 1
    pcm = tone_with_noise(shape[0], channels, rate, seed=shape[0] + channels if seed is None else seed)
    z[:] = (pcm * 32767).astype(np.int16).reshape(shape) if dtype == "int16" else pcm.reshape(shape)
    return z
