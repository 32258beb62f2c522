"""Shared fixtures: synthetic signals, repository fixtures and the optional ../shared/audio set."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).parent / "data"
SHARED_AUDIO = Path(__file__).resolve().parents[2] / "shared" / "audio"
IN_CI = os.environ.get("CI", "").lower() == "true"


@pytest.fixture(autouse=True)
def cold_prefix_cache():
    """Every test starts with no chunk indexes cached, as a fresh process would (a MemoryStore
    made by an earlier test may share a new store's id, and with it the cache keys)."""
    from zarr_aac.codec.prefix_cache import prefixes

    prefixes.clear()


@pytest.fixture
def data_dir() -> Path:
    return DATA


@pytest.fixture
def shared_audio() -> Path:
    """The real recordings beside the repository; skips cleanly where they are absent."""
    if not SHARED_AUDIO.is_dir():
        pytest.skip(f"{SHARED_AUDIO} not present")
    return SHARED_AUDIO


@pytest.fixture
def ffmpeg() -> str:
    """The ffmpeg command line, for files made by another encoder; required in CI."""
    path = shutil.which("ffmpeg")
    if path is None:
        if IN_CI:
            pytest.fail("ffmpeg is not installed; .ci/run must install it")
        pytest.skip("ffmpeg command line not installed")
    return path


def tone_with_noise(n: int, channels: int, rate: int, seed: int = 0) -> np.ndarray:
    """float32 (n, channels): a different tone per channel plus light noise, peak below 0.6."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / rate
    freqs = 220.0 * (1 + np.arange(channels))
    freqs = np.minimum(freqs, rate / 4)
    signal = 0.4 * np.sin(2 * np.pi * t[:, None] * freqs[None, :]) + 0.05 * rng.standard_normal((n, channels))
    return signal.astype(np.float32)


@pytest.fixture
def tone():
    return tone_with_noise
