"""Test helpers every PCM-presenting array in this project must pass.

``reference_decode`` decodes each stored chunk sequentially with code independent of the codec's
read path (its own parsing of the documented layout, PyAV's ``to_ndarray``), and
``assert_selections_match`` compares every zarr selection kind against that reference.
"""

from __future__ import annotations

import asyncio
import struct
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import zarr
from zarr.abc.store import ByteRequest
from zarr.storage import WrapperStore


@dataclass
class RequestLog:
    gets: int = 0
    bytes: int = 0
    per_key: Counter = field(default_factory=Counter)

    def reset(self) -> None:
        self.gets = 0
        self.bytes = 0
        self.per_key.clear()


class CountingStore(WrapperStore):
    """Wraps a store and counts get requests and bytes returned, per key."""

    def __init__(self, store, log: RequestLog | None = None) -> None:
        super().__init__(store)
        self.log = log if log is not None else RequestLog()

    def _with_store(self, store):
        return type(self)(store, self.log)

    async def get(self, key, prototype, byte_range: ByteRequest | None = None):
        result = await self._store.get(key, prototype, byte_range)
        if not key.endswith("zarr.json"):
            self.log.gets += 1
            self.log.per_key[key] += 1
            self.log.bytes += 0 if result is None else len(result)
        return result


def _chunk_fields(data: bytes) -> dict:
    names = ("magic", "version", "flags", "channels", "asc_nbytes", "aac_sample_rate", "n_frames", "n_samples",
             "skip", "frame_length", "payload_nbytes", "checksum_group", "header_crc32c")
    return dict(zip(names, struct.unpack_from("<4sBBBBIIQIIQII", data), strict=True))


def decode_chunk_sequentially(data: bytes) -> np.ndarray:
    """float32 (n_samples, channels) of one stored chunk, all frames through one decoder."""
    f = _chunk_fields(data)
    asc = data[48 : 48 + f["asc_nbytes"]]
    index_start = 48 + f["asc_nbytes"]
    sizes = np.frombuffer(data, "<u2", count=f["n_frames"], offset=index_start)
    n_groups = -(-f["n_frames"] // f["checksum_group"]) if f["checksum_group"] else 0
    pos = index_start + 2 * f["n_frames"] + 4 * n_groups
    ctx = av.CodecContext.create("aac", "r")
    ctx.extradata = asc
    out = []
    for size in sizes:
        for frame in ctx.decode(av.Packet(data[pos : pos + int(size)])):
            out.append(frame.to_ndarray().T)
        pos += int(size)
    pcm = np.concatenate(out)
    return pcm[f["skip"] : f["skip"] + f["n_samples"]]


def reference_decode(array: zarr.Array) -> np.ndarray:
    """The whole array as a full sequential decode of every stored chunk would give it."""
    dtype = array.dtype
    out = np.full(array.shape, array.fill_value, dtype=dtype)
    chunk_len = array.chunks[0]
    chunk_ch = array.chunks[1] if array.ndim == 2 else 1
    store = array.store_path.store
    prefix = array.store_path.path
    proto = zarr.core.buffer.default_buffer_prototype()
    for i in range(-(-array.shape[0] // chunk_len)):
        for j in range(-(-array.shape[1] // chunk_ch) if array.ndim == 2 else 1):
            coords = (i, j) if array.ndim == 2 else (i,)
            key = array.metadata.encode_chunk_key(coords)
            full_key = f"{prefix}/{key}" if prefix else key
            buf = asyncio.run(store.get(full_key, proto))
            if buf is None:
                continue
            pcm = decode_chunk_sequentially(buf.to_bytes())
            if dtype == np.int16:
                pcm = np.clip(np.rint(pcm * 32768.0), -32768, 32767).astype(np.int16)
            rows = slice(i * chunk_len, min((i + 1) * chunk_len, array.shape[0]))
            n = rows.stop - rows.start
            if array.ndim == 2:
                cols = slice(j * chunk_ch, min((j + 1) * chunk_ch, array.shape[1]))
                out[rows, cols] = pcm[:n, : cols.stop - cols.start]
            else:
                out[rows] = pcm[:n, 0]
    return out


def assert_selections_match(array: zarr.Array, reference: np.ndarray, rng: np.random.Generator, rounds: int = 5) -> None:
    """Every selection kind zarr supports gives exactly the reference's values."""
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


def ffmpeg_aac(ffmpeg: str, wav: Path, out: Path, *options: str) -> Path:
    """``wav`` encoded to ``out`` by the ffmpeg command line's AAC encoder with PNS off (another
    encoder than the project's), ``options`` going before the output name."""
    command = [ffmpeg, "-v", "error", "-y", "-i", str(wav), "-c:a", "aac", "-aac_pns", "0", *options, str(out)]
    subprocess.run(command, check=True)
    return out
