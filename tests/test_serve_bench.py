"""The serve benchmark section on a short input: both servers answer every request (speed is not asserted)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("starlette")
pytest.importorskip("httpx2")


@pytest.mark.slow
def test_serve_section_runs_without_failures(monkeypatch, tmp_path, ffmpeg):
    monkeypatch.syspath_prepend(str(ROOT))
    monkeypatch.chdir(ROOT)
    import benchmarks
    from benchmarks import serve

    monkeypatch.setattr(benchmarks, "QUICK_SECONDS", 15)
    monkeypatch.setattr(serve, "QUICK_CLIENTS", 3)
    monkeypatch.setattr(serve, "QUICK_SECONDS", 2.0)
    result = serve.run(benchmarks.Context(workdir=tmp_path, quick=True))
    assert "error" not in result, result["notes"]
    endpoints = {(row["server"], row["endpoint"]) for row in result["rows"]}
    assert ("ffmpeg cut of .m4a", "audio wav (ffmpeg)") in endpoints
    assert {endpoint for server, endpoint in endpoints if server == "zarr-aac serve"} <= {
        "audio wav",
        "audio aac",
        "spectrogram 10 s",
        "spectrogram long",
    }
    assert all(row["failed"] == 0 and row["requests"] > 0 for row in result["rows"])
