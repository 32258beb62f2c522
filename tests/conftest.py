"""pytest fixtures only: synthetic signals, repository fixtures and the optional ../shared/audio
set. What the fixtures build with lives in the support package."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support.media import require_tool
from support.signals import tone_with_noise

DATA = Path(__file__).parent / "data"
SHARED_AUDIO = Path(__file__).resolve().parents[2] / "shared" / "audio"
IN_CI = os.environ.get("CI", "").lower() == "true"


REQUIREMENT_SKIPS = ("requires ", "could not import ")
"""How the reasons of skips for a missing requirement begin: ``require_tool``, ``shared_audio``
and ``pytest.importorskip``. Other skips (zarr's StoreTests on capabilities a read-only store
lacks, a check root cannot make) say why the test does not apply and stay skips."""


def _failed_in_ci(report: pytest.TestReport | pytest.CollectReport) -> None:
    """A skip for a missing requirement becomes a failure under CI=true: CI installs ffmpeg,
    flac, the test extras and has a copy of ../shared/audio (`.ci/run`), so there such a skip
    would hide a requirement the suite no longer checks."""
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if not reason.removeprefix("Skipped: ").startswith(REQUIREMENT_SKIPS):
            return
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, where nothing may be: {reason}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> pytest.TestReport:
    report = yield
    _failed_in_ci(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> pytest.CollectReport:
    report = yield
    _failed_in_ci(report)
    return report


@pytest.fixture(autouse=True)
def cold_prefix_cache():
    """Every test starts with no chunk indexes cached, as a fresh process would (a MemoryStore
    made by an earlier test may share a new store's id, and with it the cache keys)."""
    from zarr_aac.codec.prefix_cache import prefixes

    prefixes.clear()


@pytest.fixture(autouse=True)
def no_overlapping_reads_remembered(monkeypatch):
    """Every test starts as a fresh process would: no recent chunk read counted as concurrent,
    which would hand an earlier test's short reads to the decode workers."""
    from zarr_aac.codec import decode_pool

    monkeypatch.setattr(decode_pool.reads_in_flight, "last_overlap", -decode_pool.OVERLAP_MEMORY - 1)


@pytest.fixture(autouse=True, scope="session")
def private_cache_folder(tmp_path_factory):
    """Frame indexes of opened files go to a cache folder of the test run, not the user's."""
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture
def data_dir() -> Path:
    return DATA


@pytest.fixture
def shared_audio() -> Path:
    """The real recordings beside the repository; skips cleanly where they are absent (and so
    fails under CI=true)."""
    if not SHARED_AUDIO.is_dir():
        pytest.skip(f"requires {SHARED_AUDIO} (not present)")
    return SHARED_AUDIO


@pytest.fixture
def ffmpeg() -> str:
    """The ffmpeg command line, for files made by another encoder; required in CI."""
    return require_tool("ffmpeg")


@pytest.fixture
def tone():
    """support.signals.tone_with_noise, for tests that take their signal as a fixture."""
    return tone_with_noise
