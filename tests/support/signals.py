"""Synthetic PCM for tests: deterministic for a given seed."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def tones(
    n: int, rate: int, freqs: Sequence[float], *, amplitude: float = 0.4, noise: float = 0.05, seed: int = 0
) -> np.ndarray:
    """float32 (n, len(freqs)): one sine of ``freqs[c]`` Hz per channel plus white noise of
    standard deviation ``noise``."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / rate
    signal = amplitude * np.sin(2 * np.pi * t[:, None] * np.asarray(freqs, dtype=np.float64)[None, :])
    signal += noise * rng.standard_normal((n, len(freqs)))
    return signal.astype(np.float32)


def tone_with_noise(n: int, channels: int, rate: int, seed: int = 0) -> np.ndarray:
    """float32 (n, channels): a different tone per channel plus light noise, peak below 0.6."""
    freqs = np.minimum(220.0 * (1 + np.arange(channels)), rate / 4)
    return tones(n, rate, freqs, seed=seed)


def click_train(n: int, channels: int, positions: Sequence[int], amplitude: float = 0.8) -> np.ndarray:
    """float32 (n, channels) of silence with a click of ``amplitude`` at each of ``positions``
    (the same in every channel): where a sample lands after a round trip shows as a peak."""
    pcm = np.zeros((n, channels), dtype=np.float32)
    pcm[np.asarray(positions, dtype=np.int64)] = amplitude
    return pcm


def as_int16(pcm: np.ndarray) -> np.ndarray:
    """float PCM in [-1, 1] scaled to int16 full scale (32767, so 1.0 does not wrap)."""
    return (pcm * 32767).astype(np.int16)


def int16_reference(pcm: np.ndarray) -> np.ndarray:
    """docs/spec.md's int16 output for decoded float PCM, computed in float64 here:
    ``clip(round(x * 32768), -32768, 32767)``."""
    return np.clip(np.round(pcm.astype(np.float64) * 32768), -32768, 32767).astype(np.int16)
