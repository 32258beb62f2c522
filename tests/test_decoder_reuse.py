"""Reused (flushed) AAC decoders give exactly what fresh ones give, and a bad run cannot leak
into later reads: checked against the independent full sequential decode of the stored chunks."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.selections import reference_decode
from support.signals import tone_with_noise

import zarr_aac
from zarr_aac.codec import aac
from zarr_aac.codec.chunk_format import parse_header, parse_prefix

RATES = (48000, 22050)


def stored(rate: int, channels: int, n: int = 150_000, chunk: int = 60_000) -> zarr.Array:
    z = zarr.create_array(
        zarr.storage.MemoryStore(),
        shape=(n, channels),
        chunks=(chunk, channels),
        dtype="int16",
        serializer=zarr_aac.AACCodec(sample_rate=rate),
        compressors=None,
    )
    z[:] = (tone_with_noise(n, channels, rate, seed=rate + channels) * 32767).astype(np.int16)
    return z


@pytest.fixture(scope="module")
def arrays() -> list[tuple[zarr.Array, np.ndarray]]:
    """Arrays with different AudioSpecificConfigs, so the decoder pool holds several kinds."""
    made = [stored(rate, channels) for rate in RATES for channels in (1, 2)]
    return [(z, reference_decode(z)) for z in made]


def chunk_frames(z: zarr.Array) -> tuple[bytes, int, list[bytes]]:
    data = z.store_path.store._store_dict["c/0/0"].to_bytes()
    header = parse_header(data, None)
    prefix = parse_prefix(data, header, None)
    offsets = prefix.index.byte_offsets + header.prefix_nbytes
    return prefix.asc, header.channels, [data[offsets[i] : offsets[i + 1]] for i in range(header.n_frames)]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_interleaved_reads_of_different_configs_match_sequential_decode(arrays, data):
    z, reference = arrays[data.draw(st.integers(0, len(arrays) - 1))]
    n = z.shape[0]
    a = data.draw(st.integers(0, n - 1))
    b = data.draw(st.integers(a + 1, min(n, a + 100_000)))
    np.testing.assert_array_equal(z[a:b], reference[a:b])


def test_reused_decoder_equals_fresh_after_the_first_frame(arrays):
    z, _ = arrays[1]
    asc, channels, frames = chunk_frames(z)
    rng = np.random.default_rng(3)
    for start in [0, 1, *rng.integers(2, len(frames) - 40, size=30)]:
        run = frames[start : start + int(rng.integers(2, 40))]
        fresh = aac.FrameDecoder(asc, channels).decode(run)
        reused = aac.FrameDecoder(asc, channels, reuse=True).decode(run)
        assert reused.shape == fresh.shape
        np.testing.assert_array_equal(reused[aac.FRAME_LENGTH :], fresh[aac.FRAME_LENGTH :])
    assert aac._idle_decoders[asc], "a clean run keeps its decoder for reuse"


def test_garbage_run_does_not_change_later_reads(arrays):
    """Damaged frames decoded through pooled decoders, then clean reads of the same config."""
    z, reference = arrays[3]
    asc, channels, frames = chunk_frames(z)
    rng = np.random.default_rng(4)
    for _ in range(30):
        start = int(rng.integers(0, len(frames) - 4))
        damaged = [bytearray(f) for f in frames[start : start + 4]]
        for frame in damaged:
            frame[int(rng.integers(0, len(frame)))] ^= 1 << int(rng.integers(0, 8))
        garbage = [rng.bytes(int(rng.integers(1, 800))) for _ in range(3)]
        for run in ([bytes(f) for f in damaged], garbage):
            with contextlib.suppress(zarr_aac.errors.AudioDecodeError):
                aac.FrameDecoder(asc, channels, reuse=True).decode(run)
        a = int(rng.integers(0, z.shape[0] - 5000))
        np.testing.assert_array_equal(z[a : a + 5000], reference[a : a + 5000])


def test_pool_is_bounded_and_opt_in(arrays):
    z, _ = arrays[0]
    asc, channels, frames = chunk_frames(z)
    aac._idle_decoders.pop(asc, None)
    aac.FrameDecoder(asc, channels).decode(frames[:3])
    assert asc not in aac._idle_decoders
    for _ in range(2 * aac.MAX_IDLE_DECODERS):
        aac.FrameDecoder(asc, channels, reuse=True).decode(frames[:3])
    assert len(aac._idle_decoders[asc]) == 1
    decoders = [aac.FrameDecoder(asc, channels, reuse=True)._context() for _ in range(2 * aac.MAX_IDLE_DECODERS)]
    for ctx, opened_as in decoders:
        aac.FrameDecoder(asc, channels, reuse=True)._keep(ctx, opened_as)
    assert len(aac._idle_decoders[asc]) == aac.MAX_IDLE_DECODERS


def test_pool_starts_over_past_its_config_limit(arrays, monkeypatch):
    z, _ = arrays[0]
    asc, channels, frames = chunk_frames(z)
    monkeypatch.setattr(aac, "_idle_decoders", {bytes([i]): [] for i in range(aac.MAX_DECODER_CONFIGS)})
    aac.FrameDecoder(asc, channels, reuse=True).decode(frames[:3])
    assert list(aac._idle_decoders) == [asc]
