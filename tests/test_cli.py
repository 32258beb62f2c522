"""The zarr-aac command: the demo sequence, exit codes and messages."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import soundfile as sf
import zarr
from support.archives import bookkeeping, nodes

import zarr_aac
from zarr_aac.archive import entries as bk
from zarr_aac.archive.recordings import catalogue_entries
from zarr_aac.cli import main


def _wav(path, rate=8000, seconds=1.0, seed=0):
    rng = np.random.default_rng(seed)
    sf.write(path, (0.2 * rng.standard_normal(int(rate * seconds))).astype(np.float32), rate, subtype="PCM_16")
    return path


def test_demo_sequence(tmp_path, capsys):
    """What `nox -s demo` runs: import the example, ls, info, export a 2 s segment."""
    archive = tmp_path / "demo.zarr"
    example = zarr_aac.example_recording()
    assert main(["import", str(example), str(archive)]) == 0
    assert "forest_birds_32k" in capsys.readouterr().out
    assert main(["ls", str(archive)]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0].split()[:3] == ["name", "duration_s", "sample_rate"]
    assert listing[1].split()[:3] == ["forest_birds_32k", "10.000", "32000"]
    assert main(["info", str(archive)]) == 0
    info = capsys.readouterr().out
    for expected in ("shape", "(320001, 1) int16", "32000 Hz", "bytes on disk", "% of 16-bit PCM", '"sha256"'):
        assert expected in info
    segment = tmp_path / "segment.wav"
    assert main(["export", str(archive), str(segment), "--start", "2", "--stop", "4"]) == 0
    pcm, rate = sf.read(segment, dtype="int16")
    assert rate == 32000
    np.testing.assert_array_equal(pcm, zarr.open_array(archive / "forest_birds_32k")[64000:128000, 0])


def test_directories_several_recordings_and_json_listing(tmp_path, capsys):
    folder = tmp_path / "card"
    (folder / "day2").mkdir(parents=True)
    _wav(folder / "20240501_060000.WAV")
    _wav(folder / "day2" / "20240502_060000.wav", seed=1)
    (folder / "CONFIG.TXT").write_text("gain=medium\n")
    archive = tmp_path / "a.zarr"
    assert main(["import", "-q", "--meta", "site=A1", "--workers", "1", str(folder), str(archive)]) == 0
    capsys.readouterr()
    assert main(["ls", "--json", str(archive)]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert sorted(entries) == ["20240501_060000", "20240502_060000"]
    assert entries["20240501_060000"]["start_time"] == "2024-05-01T06:00:00"
    assert entries["20240502_060000"]["user"] == {"site": "A1"}

    assert main(["info", str(archive)]) == 1
    assert "holds 2 recordings" in capsys.readouterr().err
    zarr.open_group(archive).create_array(".importing-0123", shape=(0, 1), dtype="int16")  # a SIGKILLed import
    assert main(["ls", str(archive)]) == 0
    assert "1 unfinished import(s), not listed: under way, or left by a killed process" in capsys.readouterr().err
    zarr.open_group(archive).create_array("added_by_hand", shape=(1,), dtype="int16")
    assert main(["ls", str(archive)]) == 0
    assert "1 array(s) not in the catalogue: added_by_hand" in capsys.readouterr().err
    assert main(["info", str(archive / "20240502_060000")]) == 0
    assert (
        main(
            [
                "export",
                str(archive / "20240501_060000"),
                str(tmp_path / "s.wav"),
                "--start",
                "0",
                "--stop",
                "800",
                "--samples",
            ]
        )
        == 0
    )
    assert sf.info(tmp_path / "s.wav").frames == 800
    clock = ["--start", "2024-05-01T06:00:00.25", "--stop", "2024-05-01T06:00:00.5"]
    assert main(["export", str(archive / "20240501_060000"), str(tmp_path / "t.wav"), *clock]) == 0
    pcm, _ = sf.read(tmp_path / "t.wav", dtype="int16")
    np.testing.assert_array_equal(pcm, zarr.open_array(archive / "20240501_060000")[2000:4000, 0])
    assert main(["export", str(archive / "20240501_060000"), str(tmp_path / "u.wav"), "--start", "06:00"]) == 1
    assert "ISO-8601" in capsys.readouterr().err


def test_failures_exit_1_and_name_the_file(tmp_path, capsys):
    bad = tmp_path / "broken.mp3"
    bad.write_bytes(b"\xff\xfb" + bytes(100))
    good = _wav(tmp_path / "good.wav")
    archive = tmp_path / "a.zarr"
    assert main(["import", str(good), str(bad), str(archive)]) == 1
    err = capsys.readouterr().err
    assert "broken.mp3" in err and "could not be imported" in err
    assert nodes(zarr.open_group(archive)) == ["good"]
    assert main(["import", str(tmp_path / "nothing_here"), str(archive)]) == 1
    assert "no such file" in capsys.readouterr().err
    assert main(["export", str(archive), str(tmp_path / "x.wav"), "--start", "5"]) == 1
    assert "outside the recording" in capsys.readouterr().err


def test_verify_reports_bad_chunks(tmp_path, capsys):
    archive = tmp_path / "a.zarr"
    main(["import", "-q", str(_wav(tmp_path / "rec.wav", seconds=3.0)), "--chunk-duration", "1", str(archive)])
    capsys.readouterr()
    assert main(["verify", "-q", str(archive)]) == 0
    chunk = next(p for p in (archive / "rec" / "c").rglob("*") if p.is_file())
    data = bytearray(chunk.read_bytes())
    data[-5] ^= 0xFF
    chunk.write_bytes(bytes(data))
    assert main(["verify", "-q", str(archive)]) == 1
    out = capsys.readouterr().out
    assert "rec" in out and "chunk" in out


def test_usage_errors_exit_2_in_a_real_process(tmp_path):
    cli = [sys.executable, "-m", "zarr_aac.cli"]
    run = subprocess.run([*cli, "export", "only-one-arg"], capture_output=True, text=True, check=False)
    assert run.returncode == 2 and "usage: zarr-aac export" in run.stderr
    run = subprocess.run([*cli, "ls", str(tmp_path / "none.zarr")], capture_output=True, text=True, check=False)
    assert run.returncode == 1 and "none.zarr" in run.stderr and "Traceback" not in run.stderr


def test_ctrl_c_during_a_parallel_import_leaves_nothing_half_written(tmp_path):
    """SIGINT to the command's process group (what a terminal's Ctrl-C does) while workers
    write: exit 130, no temporary array left, and every array left is complete and catalogued
    (a file that finished before the interrupt may stay; how many did depends on the machine)."""
    sources = [_wav(tmp_path / f"long{i}.wav", rate=16000, seconds=600.0, seed=i) for i in range(2)]
    archive = tmp_path / "a.zarr"
    command = [sys.executable, "-m", "zarr_aac.cli", "import", "-q", "--workers", "2", "--chunk-duration", "5"]
    process = subprocess.Popen(
        [*command, *map(str, sources), str(archive)], stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(archive.glob("long*/c")):
        time.sleep(0.02)
    assert process.poll() is None, "the import finished before it could be interrupted"
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "interrupted" in err
    group = zarr.open_group(archive)
    catalogue = catalogue_entries(group)
    assert nodes(group) == sorted(catalogue)
    assert bookkeeping(group, bk.PENDING) == [] and bookkeeping(group, bk.NAMES) == sorted(catalogue)
    assert len(catalogue) < 2
    for name in catalogue:
        assert group[name].shape == (600 * 16000, 1)
