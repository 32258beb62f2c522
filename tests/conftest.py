"""pytest fixtures only: synthetic signals, repository fixtures and the optional ../shared/audio
set. What the fixtures build with lives in the support package."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from support.signals import tone_with_noise

DATA = Path(__file__).parent / "data"
SHARED_AUDIO = Path(__file__).resolve().parents[2] / "shared" / "audio"
IN_CI = os.environ.get("CI", "").lower() == "true"


@pytest.fixture(autouse=True)
def cold_prefix_cache():
    """Every test starts with no chunk indexes cached, as a fresh process would (a MemoryStore
    made by an earlier test may share a new store's id, and with it the cache keys)."""
    from zarr_aac.codec.prefix_cache import prefixes

    prefixes.clear()


@pytest.fixture(autouse=True, scope="session")
def private_cache_folder(tmp_path_factory):
    """Frame indexes of opened files go to a cache folder of the test run, not the user's."""
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))


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


@pytest.fixture
def tone():
    """support.signals.tone_with_noise, for tests that take their signal as a fixture."""
    return tone_with_noise
