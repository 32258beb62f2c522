"""The values every PCM-presenting array of this project must give, and a check of every zarr
selection kind against them.

``reference_decode`` decodes each stored chunk with support.chunks' sequential decode (its own
parsing of the documented layout, PyAV's ``to_ndarray``), independent of the codec's read path.
"""

from __future__ import annotations

import numpy as np
import zarr

from support.chunks import chunk_key, decode_chunk_sequentially, get_bytes


def to_int16(pcm: np.ndarray, gain: float = 1.0) -> np.ndarray:
    """Decoded float samples as an int16 array stores them (docs/spec.md, Decoding)."""
    return np.clip(np.rint(pcm * (32768.0 / gain)), -32768, 32767).astype(np.int16)


def stored_gain(array: zarr.Array) -> float:
    """The ``gain`` of the array's codec configuration as its metadata document holds it (absent: 1)."""
    (codec,) = array.metadata.to_dict()["codecs"]
    return codec["configuration"].get("gain", 1.0)


def reference_decode(array: zarr.Array) -> np.ndarray:
    """The whole array as a full sequential decode of every stored chunk would give it."""
    out = np.full(array.shape, array.fill_value, dtype=array.dtype)
    chunk_length = array.chunks[0]
    chunk_channels = array.chunks[1] if array.ndim == 2 else 1
    channel_chunks = -(-array.shape[1] // chunk_channels) if array.ndim == 2 else 1
    gain = stored_gain(array)
    for i in range(-(-array.shape[0] // chunk_length)):
        for j in range(channel_chunks):
            data = get_bytes(array, chunk_key(array, (i, j) if array.ndim == 2 else (i,)))
            if data is None:
                continue
            pcm = decode_chunk_sequentially(data)
            pcm = to_int16(pcm, gain) if array.dtype == np.int16 else (pcm / np.float32(gain)).astype(np.float32)
            rows = slice(i * chunk_length, min((i + 1) * chunk_length, array.shape[0]))
            n = rows.stop - rows.start
            if array.ndim == 2:
                cols = slice(j * chunk_channels, min((j + 1) * chunk_channels, array.shape[1]))
                out[rows, cols] = pcm[:n, : cols.stop - cols.start]
            else:
                out[rows] = pcm[:n, 0]
    return out


def assert_selections_match(
    array: zarr.Array, reference: np.ndarray, rng: np.random.Generator, rounds: int = 5
) -> None:
    """Random selections of every kind zarr supports give exactly the reference's values."""
    n = array.shape[0]
    for _ in range(rounds):
        a, b = sorted(rng.integers(0, n + 1, size=2))
        step = int(rng.integers(1, 5000))
        i = int(rng.integers(-n, n))
        points = rng.integers(0, n, size=int(rng.integers(1, 20)))
        np.testing.assert_array_equal(array[a:b], reference[a:b])
        np.testing.assert_array_equal(array[a:b:step], reference[a:b:step])
        np.testing.assert_array_equal(array[i], reference[i])
        np.testing.assert_array_equal(array.oindex[points], reference[points])
        if array.ndim == 1:
            np.testing.assert_array_equal(array.vindex[points], reference[points])
        if array.ndim == 2:
            ch = int(rng.integers(0, array.shape[1]))
            cols = sorted(set(rng.integers(0, array.shape[1], size=2).tolist()))
            np.testing.assert_array_equal(array[a:b, ch], reference[a:b, ch])
            np.testing.assert_array_equal(array.oindex[points, cols], reference[np.ix_(points, cols)])
            chans = rng.integers(0, array.shape[1], size=points.size)
            np.testing.assert_array_equal(array.vindex[points, chans], reference[points, chans])
            np.testing.assert_array_equal(array[i, ch], reference[i, ch])
