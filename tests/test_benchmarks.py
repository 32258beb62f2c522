"""The benchmark harness and the codec section on a short input (speed is not asserted here)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from support.media import require_tool

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def metaflac() -> str:
    """metaflac (the flac package), which gives the benchmark's FLAC its seek table; required in CI."""
    return require_tool("metaflac")


@pytest.fixture
def benchmarks(monkeypatch):
    """The repository's benchmarks package (not installed with zarr_aac), with a 15 s quick input."""
    monkeypatch.syspath_prepend(str(ROOT))
    import benchmarks

    monkeypatch.setattr(benchmarks, "QUICK_SECONDS", 15)
    return benchmarks


def test_looped_input_is_the_example_at_48k_stereo(benchmarks, tmp_path):
    ctx = benchmarks.Context(workdir=tmp_path, quick=True)
    pcm, rate = sf.read(str(ctx.hour_wav), dtype="int16")
    loop = benchmarks.example_stereo_48k()
    assert rate == 48000 and pcm.shape == (15 * 48000, 2)
    assert sf.info(str(ctx.hour_wav)).subtype == "PCM_16"
    np.testing.assert_array_equal(pcm[: len(loop)], loop)
    np.testing.assert_array_equal(pcm[len(loop) : 2 * len(loop)], loop[: 15 * 48000 - len(loop)])
    assert not np.array_equal(pcm[:, 0], pcm[:, 1])
    assert abs(len(loop) - 10 * 48000) <= 48, "10 s at 32 kHz resampled to 48 kHz"
    built = ctx.hour_wav.stat().st_mtime_ns
    assert benchmarks.Context(workdir=tmp_path, quick=True).hour_wav.stat().st_mtime_ns == built, "built once"


def test_missing_section_is_skipped_and_report_written(benchmarks, tmp_path):
    from benchmarks.__main__ import run_section, write_markdown

    ctx = benchmarks.Context(workdir=tmp_path, quick=True)
    skipped = run_section("no_such_section", ctx)
    assert skipped["skipped"] and "does not exist" in skipped["notes"][0]
    report = {
        "date": "today",
        "quick": True,
        "sections": {"no_such_section": skipped},
        "machine": {
            "git_commit": "abc",
            "cpu": "cpu",
            "cores": 2,
            "memory_gb": 1,
            "platform": "p",
            "python": "3",
            "ffmpeg": None,
            "packages": {"zarr": "3"},
        },
    }
    skipped["rows"] = [{"method": "a", "ms": 1.25}, {"method": "b", "ms": 250.0, "extra": 3}]
    write_markdown(report, tmp_path, "python -m benchmarks --quick")
    text = (tmp_path / "benchmarks.md").read_text()
    assert "| method | ms | extra |" in text and "| b | 250 | 3 |" in text and "does not exist" in text


def test_interleaved_reads_give_every_method_every_read_and_no_fixed_predecessor(benchmarks):
    """Every method reads every position at every length; the order changes between positions so
    that no method always reads right after the same other one (that one's read of the same
    samples would leave them in the CPU's caches for it)."""
    calls: list[tuple[str, int, int]] = []

    def reader(name):
        return lambda a, b: calls.append((name, a, b))

    names = ["a", "b", "c", "d"]
    positions = np.arange(0, 4000, 100)
    times = benchmarks.interleaved_reads({name: reader(name) for name in names}, positions, 1000)
    lengths = {length: round(seconds * 1000) for length, seconds in benchmarks.READ_LENGTHS.items()}
    assert set(times) == {(name, length) for name in names for length in lengths}
    for name in names:
        for length, n in lengths.items():
            assert len(times[name, length]) == len(positions)
            assert [a for m, a, b in calls if m == name and b - a == n] == list(positions)
    before = {name: {calls[i - 1][0] for i in range(1, len(calls)) if calls[i][0] == name} - {name} for name in names}
    assert all(len(others) == len(names) - 1 for others in before.values()), before


def test_codec_section_runs_and_checks_every_reader(benchmarks, tmp_path, ffmpeg, metaflac):
    from benchmarks import codec

    result = codec.run(benchmarks.Context(workdir=tmp_path, quick=True))
    methods = [row["method"] for row in result["rows"]]
    assert methods == [
        "zarr_aac",
        "zarr_aac, decoded in the reading process",
        "zarr_aac, index not cached",
        "zarr int16 blosc-zstd",
        "zarr int16 raw",
        "soundfile FLAC",
        "PyAV m4a (ffmpeg aac)",
        "floor: FFmpeg decode of the frames",
    ]
    storage = {row["method"]: row for row in result["tables"][0]["rows"]}
    assert storage["zarr int16 raw"]["check vs source"] == "exact"
    assert storage["soundfile FLAC"]["check vs source"] == "exact"
    assert storage["zarr_aac"]["% of int16 PCM"] < 15
    assert "zarr_aac, index not cached" not in storage
    assert result["zarr_overhead_ms"] < result["floor_1s_ms"] < 10 * result["rows"][0]["1 s median ms"]
    assert all(row["1 s median ms"] > 0 for row in result["rows"])
    titles = [table["title"] for table in result["tables"]]
    assert titles[1].startswith("Music") and titles[3].startswith("Reads on every core")
    music = {row["method"]: row for row in result["tables"][2]["rows"]}
    assert music["soundfile FLAC"]["check vs source"] == "exact"
    assert music["soundfile FLAC"]["% of int16 PCM"] > storage["soundfile FLAC"]["% of int16 PCM"]
    parallel = {row["method"].split(": ", 1)[1]: row for row in result["tables"][3]["rows"]}
    assert {
        "read_clips",
        "read_clips, decoded in the reading process",
        "loop, 2 threads",
        "long read, decode pool",
        "long read, one core",
        "xarray read_clips",
    } <= set(parallel)
    assert len(result["targets"]) == 5 + 4 + 4


def test_flac_peer_has_a_seek_table(benchmarks, tmp_path, metaflac):
    from benchmarks import codec

    wav = benchmarks.Context(workdir=tmp_path, quick=True).hour_wav
    flac = tmp_path / "a.flac"
    codec._write_flac(wav, flac)
    data = flac.read_bytes()
    position, block_types = 4, []
    while True:
        header = data[position]
        block_types.append(header & 0x7F)
        position += 4 + int.from_bytes(data[position + 1 : position + 4], "big")
        if header & 0x80:
            break
    assert 3 in block_types, "SEEKTABLE metadata block"


def test_failing_section_is_reported_not_hidden(benchmarks, tmp_path, monkeypatch):
    from benchmarks.__main__ import run_section

    def run(ctx):
        raise RuntimeError("section exploded")

    monkeypatch.setitem(sys.modules, "benchmarks.broken", types.SimpleNamespace(run=run))
    result = run_section("broken", benchmarks.Context(workdir=tmp_path, quick=True))
    assert "section exploded" in result["notes"][0] and "RuntimeError" in result["error"]


def test_only_a_full_run_publishes_and_a_partial_run_never_mixes_with_it(benchmarks, tmp_path, monkeypatch):
    """docs/ holds every section from one full run; an --only run writes its own report to
    bench-out/ and leaves the published one as it was."""
    pytest.importorskip("psutil")
    import benchmarks.__main__ as harness

    def section(title):
        return types.SimpleNamespace(run=lambda ctx: {"title": title, "rows": [{"value": 1.0}], "notes": []})

    monkeypatch.setattr(harness, "SECTIONS", ["first", "second"])
    monkeypatch.setitem(sys.modules, "benchmarks.first", section("First v1"))
    monkeypatch.setitem(sys.modules, "benchmarks.second", section("Second v1"))
    out, docs = tmp_path / "out", tmp_path / "docs"
    paths = ["--workdir", str(tmp_path), "--out", str(out), "--docs", str(docs)]
    harness.main(paths)
    published = (docs / "benchmarks.md").read_text()
    assert "## First v1" in published and "## Second v1" in published
    assert (docs / "benchmarks.json").read_text() == (out / "benchmarks.json").read_text()

    monkeypatch.setitem(sys.modules, "benchmarks.second", section("Second v2"))
    harness.main([*paths, "--only", "second"])
    partial = (out / "benchmarks.md").read_text()
    assert "## Second v2" in partial and "First" not in partial
    assert (docs / "benchmarks.md").read_text() == published

    harness.main([*paths, "--quick"])
    assert (docs / "benchmarks.md").read_text() == published


def test_archive_section_commits_cost_the_same_store_operations_at_any_size(benchmarks, tmp_path, monkeypatch):
    """One commit makes the same store operations in an archive of 5 recordings and of 60: its
    cost does not grow with the archive (the timings themselves are not asserted)."""
    from benchmarks import archive

    monkeypatch.setattr(archive, "QUICK_SIZES", (5, 60))
    monkeypatch.setattr(archive, "COMMITS", 3)
    result = archive.run(benchmarks.Context(workdir=tmp_path, quick=True))
    commits = [row for row in result["rows"] if row["what"].startswith("one commit")]
    assert [row["recordings in the archive"] for row in commits] == [5, 60]
    assert commits[0]["store operations"] == commits[1]["store operations"]
    assert "set_if_not_exists 2" in commits[0]["store operations"]
    listed = {row["what"]: row["recordings in the archive"] for row in result["rows"]}
    assert listed["catalogue(), with the snapshot"] == listed["catalogue(), no snapshot (one read per entry)"] == 63
    titles = [table["title"] for table in result["tables"]]
    assert titles == ["Live recording: appends of 0.5 s blocks", "Import on a dask cluster"]
