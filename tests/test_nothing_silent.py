"""Archive and CLI behaviour that used to pass in silence (issue 12): lost chunks, options a
re-import could not apply, interrupts, truncated and empty sources, export targets, CLI answers.
Each test failed on the code before the fix."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from datetime import datetime
from pathlib import Path

import guano
import numpy as np
import pytest
import soundfile as sf
import zarr
from support.archives import assert_nothing_left
from support.media import ffmpeg_decode

import zarr_aac
from zarr_aac.archive import ImportOptions
from zarr_aac.archive.recordings import IMPORTING_ATTR, TEMP_PREFIX, catalogue_entries
from zarr_aac.cli import main
from zarr_aac.errors import AlreadyImportedWarning, MissingChunkError, TruncatedSourceWarning

RATE = 16000
CLI = [sys.executable, "-m", "zarr_aac.cli"]


def _noise(seconds: float, seed: int = 0, rate: int = RATE) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.2 * rng.standard_normal(int(rate * seconds))).astype(np.float32)


def _wav(path: Path, pcm: np.ndarray, rate: int = RATE) -> Path:
    sf.write(path, pcm, rate, subtype="PCM_16")
    return path


def _chunk_files(array_folder: Path) -> list[Path]:
    return sorted(p for p in (array_folder / "c").rglob("*") if p.is_file())


CHUNK = 16 * 1024
"""Samples per chunk of a 1 s chunk_duration at 16 kHz (whole AAC frames)."""


@pytest.fixture
def with_silence(tmp_path) -> Path:
    """Three chunks: noise, an all-zero chunk (a triggered recorder's zero stretch), noise."""
    pcm = np.concatenate([_noise(CHUNK / RATE), np.zeros(CHUNK, np.float32), _noise(CHUNK / RATE, seed=1)])
    return _wav(tmp_path / "rec.wav", pcm)


# -- 1. every chunk stored; a lost one is noticed ------------------------------------------------


def test_imported_recordings_store_every_chunk_even_silent_ones(with_silence, tmp_path):
    array = zarr_aac.import_file(with_silence, tmp_path / "a.zarr", chunk_duration=1.0, progress=False)
    assert array.nchunks == 3
    assert len(_chunk_files(tmp_path / "a.zarr" / "rec")) == 3
    assert array.chunks[0] == CHUNK
    np.testing.assert_array_equal(array[CHUNK + 2048 : 2 * CHUNK - 2048], 0)


def test_a_lost_chunk_raises_on_read_and_verify_lists_it(with_silence, tmp_path, capsys):
    archive = tmp_path / "a.zarr"
    zarr_aac.import_file(with_silence, archive, chunk_duration=1.0, progress=False)
    assert zarr_aac.verify(archive, progress=False) == []
    lost = _chunk_files(archive / "rec")[0]
    lost.unlink()

    array = zarr.open_array(archive / "rec", mode="r")
    with pytest.raises(MissingChunkError, match=r"rec/c/0/0"):
        array[:]
    with pytest.raises(MissingChunkError):
        array[100:200]  # a partial read too
    np.testing.assert_array_equal(array[-100:].shape, (100, 1))  # chunks still stored read as before
    with zarr_aac.tolerant_reads() as report:
        array[:]
    assert len(report.errors) == 1 and isinstance(report.errors[0], MissingChunkError)

    problems = zarr_aac.verify(archive, progress=False)
    assert [(p["array"], p["key"]) for p in problems] == [("rec", "rec/c/0/0")]
    assert "missing" in problems[0]["error"]
    assert main(["verify", "-q", str(archive)]) == 1
    captured = capsys.readouterr()
    assert "rec/c/0/0" in captured.out and "missing" in captured.out

    xr = pytest.importorskip("xarray")
    with pytest.raises(MissingChunkError):
        xr.open_dataset(archive / "rec", engine="zarr_aac")["audio"].values  # noqa: B018


# -- 2. re-importing with new options; changing attributes afterwards ---------------------------


def test_reimport_with_new_options_says_what_was_not_applied(tmp_path, capsys):
    source = _wav(tmp_path / "rec.wav", _noise(1.0))
    archive = tmp_path / "a.zarr"
    first = zarr_aac.import_file(source, archive, progress=False)
    with pytest.warns(AlreadyImportedWarning, match=r"start_time=.*metadata=.*not applied.*set_recording_attributes"):
        again = zarr_aac.import_file(
            source, archive, start_time="2024-05-01T06:00:00", metadata={"site": "B"}, progress=False
        )
    assert again.path == first.path and again.attrs["start_time"] is None
    with pytest.warns(AlreadyImportedWarning, match=r"bitrate=96000.*rec\.wav \(as rec\)"):
        zarr_aac.import_files([source], archive, bitrate=96000, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a plain re-run is the documented, expected skip
        zarr_aac.import_file(source, archive, progress=False)

    capsys.readouterr()
    with pytest.warns(AlreadyImportedWarning, match=r"metadata=\{'site': 'B'\} not applied"):
        assert main(["import", "-q", "--meta", "site=B", str(source), str(archive)]) == 0
    out = capsys.readouterr().out
    assert "(already imported, not imported again)" in out and " -> " not in out
    run = subprocess.run(
        [*CLI, "import", "-q", "--meta", "site=B", str(source), str(archive)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert run.stderr.startswith("zarr-aac: warning: already imported") and "Warning" not in run.stderr


def test_start_time_and_metadata_change_without_reencoding(tmp_path, capsys):
    source = _wav(tmp_path / "rec.wav", _noise(2.0))
    archive = tmp_path / "a.zarr"
    zarr_aac.import_file(source, archive, chunk_duration=1.0, metadata={"site": "A"}, progress=False)
    chunks_before = {p: p.read_bytes() for p in _chunk_files(archive / "rec")}

    array = zarr_aac.set_recording_attributes(archive / "rec", start_time="2024-05-01T06:00:00+02:00")
    assert array.attrs["start_time"] == "2024-05-01T06:00:00+02:00"
    assert array.attrs["start_time_source"] == "user"
    entry = zarr_aac.catalogue(archive).loc["rec"]
    assert entry["start_time"] == "2024-05-01T06:00:00+02:00" and entry["user.site"] == "A"

    assert main(["set", str(archive / "rec"), "--meta", "observer=JD"]) == 0
    capsys.readouterr()
    entries = catalogue_entries(zarr.open_group(archive))
    assert entries["rec"]["user"] == {"site": "A", "observer": "JD"}
    assert zarr.open_array(archive / "rec").attrs["user"] == {"site": "A", "observer": "JD"}
    assert main(["set", str(archive / "rec"), "--clear-meta", "--start-time", "2024-05-02T00:00:00"]) == 0
    assert catalogue_entries(zarr.open_group(archive))["rec"]["user"] == {}
    assert {p: p.read_bytes() for p in _chunk_files(archive / "rec")} == chunks_before
    assert main(["set", str(archive / "rec")]) == 1
    assert "nothing to set" in capsys.readouterr().err


# -- 3. one start time for several sources ------------------------------------------------------


def test_one_start_time_for_several_sources_is_refused(tmp_path, capsys):
    folder = tmp_path / "card"
    folder.mkdir()
    _wav(folder / "20240501_060000.wav", _noise(0.5))
    _wav(folder / "20240501_070000.wav", _noise(0.5, seed=1))
    archive = tmp_path / "a.zarr"
    assert main(["import", "-q", "--start-time", "2024-05-01T00:00:00", str(folder), str(archive)]) == 1
    assert "--start-time needs exactly one source file" in capsys.readouterr().err
    assert not archive.exists()
    with pytest.raises(ValueError, match="same start"):
        zarr_aac.import_files(sorted(folder.iterdir()), archive, start_time="2024-05-01T00:00:00", progress=False)
    assert main(["import", "-q", str(folder), str(archive)]) == 0
    starts = {name: entry["start_time"] for name, entry in catalogue_entries(zarr.open_group(archive)).items()}
    assert starts == {"20240501_060000": "2024-05-01T06:00:00", "20240501_070000": "2024-05-01T07:00:00"}


# -- 5. interruption ----------------------------------------------------------------------------


def _start_long_import(tmp_path: Path, hours: float) -> tuple[subprocess.Popen, Path]:
    """A two-worker import of two files long enough that finishing either takes minutes; returns
    once both workers are writing chunks."""
    sources = []
    for i in range(2):
        path = tmp_path / f"long{i}.wav"
        with sf.SoundFile(path, "w", samplerate=RATE, channels=1, subtype="PCM_16") as f:
            block = _noise(600.0, seed=i)
            for _ in range(round(hours * 6)):
                f.write(block)
        sources.append(path)
    archive = tmp_path / "a.zarr"
    command = [*CLI, "import", "-q", "--workers", "2", "--chunk-duration", "5", *map(str, sources), str(archive)]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(archive.glob("long*/c"))) < 2:
        time.sleep(0.02)
    assert process.poll() is None, "the import finished before it could be interrupted"
    return process, archive


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_the_importer_stops_its_workers_and_leaves_nothing(tmp_path, signum):
    """SIGTERM is handled as Ctrl-C; a signal to the parent alone stops the workers too, rather
    than letting them finish files of an hour each that would be thrown away (a whole file takes
    minutes here, so the generous bound below fails if the workers run on)."""
    process, archive = _start_long_import(tmp_path, hours=1.0)
    os.kill(process.pid, signum)
    signalled = time.monotonic()
    try:
        _, err = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the workers too, which kept the pipe open
        process.communicate()
        pytest.fail(f"still running 60 s after {signal.Signals(signum).name}")
    stopped_after = time.monotonic() - signalled
    assert process.returncode == 130, err
    assert "interrupted" in err
    assert stopped_after < 30, f"took {stopped_after:.1f} s to stop"
    group = zarr.open_group(archive)
    assert_nothing_left(group)


def _dead_pid() -> int:
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    return int(finished.stdout)


def test_temporaries_of_dead_imports_are_removed_by_the_next(tmp_path):
    archive = tmp_path / "a.zarr"
    group = zarr.open_group(archive)
    dead = {"host": socket.gethostname(), "pid": _dead_pid()}
    for name, owner in [("dead", dead), ("alive", {"host": socket.gethostname(), "pid": os.getpid()})]:
        group.create_array(f"{TEMP_PREFIX}{name}", shape=(10, 1), dtype="int16", attributes={IMPORTING_ATTR: owner})
    group.create_array(
        f"{TEMP_PREFIX}other_host",
        shape=(10, 1),
        dtype="int16",
        attributes={IMPORTING_ATTR: {"host": "elsewhere.invalid", "pid": dead["pid"]}},
    )
    source = _wav(tmp_path / "rec.wav", _noise(0.5))
    with pytest.warns(UserWarning, match=r"removed 1 unfinished import.*\.importing-dead"):
        zarr_aac.import_file(source, archive, progress=False)
    assert sorted(zarr.open_group(archive).array_keys()) == [
        f"{TEMP_PREFIX}alive",
        f"{TEMP_PREFIX}other_host",
        "rec",
    ]


def test_an_import_marks_its_temporary_with_its_process_until_committed(tmp_path, monkeypatch):
    from zarr_aac.archive import importer

    seen = []
    write = importer._write_samples

    def spy(array, *args, **kwargs):
        seen.append(dict(array.attrs))
        return write(array, *args, **kwargs)

    monkeypatch.setattr(importer, "_write_samples", spy)
    array = zarr_aac.import_file(_wav(tmp_path / "rec.wav", _noise(0.5)), tmp_path / "a.zarr", progress=False)
    assert seen == [{IMPORTING_ATTR: {"host": socket.gethostname(), "pid": os.getpid()}}]
    assert IMPORTING_ATTR not in array.attrs


# -- 7. a FLAC cut in half ----------------------------------------------------------------------


def test_allow_truncated_salvages_what_decodes_of_a_cut_flac(tmp_path, ffmpeg, capsys):
    full = tmp_path / "full.flac"
    sf.write(full, _noise(10.0), RATE, format="FLAC")
    cut = tmp_path / "cut.flac"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    by_ffmpeg = ffmpeg_decode(ffmpeg, cut, 1).shape[0]
    assert 3 * RATE < by_ffmpeg < 7 * RATE

    with pytest.raises(zarr_aac.ZarrAACError, match=r"decoding failed after \d+ samples.*allow_truncated"):
        zarr_aac.import_file(cut, tmp_path / "a.zarr", progress=False)
    with pytest.warns(TruncatedSourceWarning, match=r"imported \d+ samples \(\d\.\d\d s\) of the 160000 \(10\.00 s\)"):
        array = zarr_aac.import_file(cut, tmp_path / "a.zarr", allow_truncated=True, progress=False)
    assert abs(array.shape[0] - by_ffmpeg) < 4608  # at most the FLAC block the cut runs through
    assert array.attrs["source"]["truncated"] is True

    assert main(["import", "-q", str(cut), str(tmp_path / "b.zarr")]) == 1
    assert "--allow-truncated" in capsys.readouterr().err


# -- 8. export ----------------------------------------------------------------------------------


@pytest.fixture
def bat_archive(tmp_path) -> Path:
    """A recording imported from a WAV with GUANO fields, as a bat detector writes."""
    source = _wav(tmp_path / "bat.wav", _noise(3.0))
    metadata = guano.GuanoFile(str(source))
    metadata["Timestamp"] = datetime.fromisoformat("2024-05-01T20:26:15+01:00")
    metadata["Make"] = "Wildlife Acoustics"
    metadata["WA|Song Meter|Prefix"] = "SM4"
    metadata["Loc Position"] = (51.5, -0.1)
    metadata.write(make_backup=False)
    archive = tmp_path / "a.zarr"
    zarr_aac.import_file(source, archive, progress=False)
    return archive


def test_export_writes_start_time_source_and_guano_fields(bat_archive, tmp_path, ffmpeg):
    out = zarr_aac.export(bat_archive / "bat", tmp_path / "seg.wav", 1, 2, progress=False)
    fields = {f"{ns}|{key}" if ns else key: value for ns, key, value in guano.GuanoFile(str(out)).items_namespaced()}
    assert fields["Timestamp"] == datetime.fromisoformat("2024-05-01T20:26:16+01:00")
    assert fields["Make"] == "Wildlife Acoustics" and fields["WA|Song Meter|Prefix"] == "SM4"
    assert fields["Loc Position"] == (51.5, -0.1)
    assert fields["Original Filename"] == "bat.wav" and fields["Length"] == 1.0 and fields["Samplerate"] == RATE
    pcm, _ = sf.read(out, dtype="int16")  # the chunk appended after the samples leaves them readable
    np.testing.assert_array_equal(pcm, zarr.open_array(bat_archive / "bat")[RATE : 2 * RATE, 0])

    flac = zarr_aac.export(bat_archive / "bat", tmp_path / "seg.flac", 1, 2, progress=False)
    probe = subprocess.run(
        [str(Path(ffmpeg).with_name("ffprobe")), "-v", "error", "-show_entries", "format_tags", "-of", "json", flac],
        capture_output=True,
        text=True,
        check=True,
    )
    tags = {k.lower(): v for k, v in json.loads(probe.stdout)["format"]["tags"].items()}
    assert tags["title"] == "bat.wav" and tags["date"] == "2024-05-01T20:26:16+01:00"


def test_export_clips_a_stop_past_the_end(bat_archive, tmp_path):
    with pytest.warns(UserWarning, match=r"stop 5 s lies past the end of the recording \(3 s\)"):
        out = zarr_aac.export(bat_archive / "bat", tmp_path / "seg.wav", 1, 5, progress=False)
    assert sf.info(out).frames == 2 * RATE


def test_export_to_a_missing_or_read_only_folder_says_so(bat_archive, tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match=r"the folder .*nowhere does not exist"):
        zarr_aac.export(bat_archive / "bat", tmp_path / "nowhere" / "seg.wav", progress=False)
    assert main(["export", str(bat_archive / "bat"), str(tmp_path / "nowhere" / "seg.wav")]) == 1
    err = capsys.readouterr().err
    assert "does not exist" in err and "encoder" not in err
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(PermissionError, match="not writable"):
            zarr_aac.export(bat_archive / "bat", locked / "seg.wav", progress=False)
    finally:
        locked.chmod(0o755)


# -- 11. smaller ones ---------------------------------------------------------------------------


def test_a_name_with_a_slash_is_refused_before_anything_is_written(tmp_path, capsys):
    source = _wav(tmp_path / "rec.wav", _noise(0.5))
    archive = tmp_path / "a.zarr"
    assert main(["import", "-q", "--name", "a/b", str(source), str(archive)]) == 1
    assert "one non-empty path segment" in capsys.readouterr().err
    assert not archive.exists()


def test_a_missing_source_folder_leaves_no_archive(tmp_path, capsys):
    archive = tmp_path / "a.zarr"
    assert main(["import", "-q", str(tmp_path / "no_such_card"), str(archive)]) == 1
    assert "no_such_card: no such file or folder" in capsys.readouterr().err
    assert not archive.exists()
    with pytest.raises(zarr_aac.ZarrAACError, match="no such file"):
        zarr_aac.import_file(tmp_path / "missing.wav", archive, progress=False)
    assert not archive.exists()


def test_an_archive_path_that_is_a_file_or_a_foreign_folder_is_refused(tmp_path, capsys):
    source = _wav(tmp_path / "rec.wav", _noise(0.5))
    not_a_folder = tmp_path / "a.zarr"
    not_a_folder.write_text("notes")
    assert main(["import", "-q", str(source), str(not_a_folder)]) == 1
    assert "is a file, not an archive" in capsys.readouterr().err
    documents = tmp_path / "documents"
    documents.mkdir()
    (documents / "thesis.txt").write_text("chapter 1")
    assert main(["import", "-q", str(source), str(documents)]) == 1
    assert "not a Zarr group" in capsys.readouterr().err
    assert sorted(p.name for p in documents.iterdir()) == ["thesis.txt"]


def test_info_into_a_closed_pipe_is_quiet(tmp_path):
    archive = tmp_path / "a.zarr"
    zarr_aac.import_file(_wav(tmp_path / "rec.wav", _noise(0.5)), archive, progress=False)
    process = subprocess.Popen([*CLI, "info", str(archive)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # the reader has gone before anything is written, as `| head` does
    err = process.stderr.read().decode()
    process.wait(timeout=60)
    assert "Broken pipe" not in err and "Traceback" not in err, err


def test_bitrates_take_ffmpeg_suffixes_and_tiny_chunks_are_refused(tmp_path, capsys):
    source = _wav(tmp_path / "rec.wav", _noise(0.5))
    archive = tmp_path / "a.zarr"
    assert main(["import", "-q", "--bitrate", "96k", "--name", "k", str(source), str(archive)]) == 0
    assert zarr.open_array(archive / "k").serializer.bitrate == 96000
    assert main(["import", "-q", "--chunk-duration", "0.001", str(source), str(tmp_path / "b.zarr")]) == 1
    assert "at least 0.1" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"at least 0\.1"):
        ImportOptions(chunk_duration=0.05)
    assert main(["export", "-q", "--bitrate", "1.5M", str(archive / "k"), str(tmp_path / "x.wav")]) == 0
    with pytest.raises(SystemExit):
        main(["import", "--bitrate", "fast", str(source), str(archive)])


def test_ls_is_sorted_and_info_takes_an_empty_recording(tmp_path, capsys):
    archive = tmp_path / "a.zarr"
    for name in ("zeta", "alpha", "mid"):
        zarr_aac.import_file(_wav(tmp_path / f"{name}.wav", _noise(0.3, seed=len(name))), archive, progress=False)
    capsys.readouterr()
    assert main(["ls", str(archive)]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]] == ["alpha", "mid", "zeta"]

    zarr.open_group(archive).create_array(
        "empty", shape=(0, 1), chunks=(1024, 1), dtype="int16", serializer=zarr_aac.AACCodec(sample_rate=RATE)
    )
    assert main(["info", str(archive / "empty")]) == 0
    assert "no samples" in capsys.readouterr().out


def test_a_corrupt_chunk_read_through_its_array_names_the_recording(tmp_path):
    archive = tmp_path / "a.zarr"
    zarr_aac.import_file(_wav(tmp_path / "rec.wav", _noise(1.0)), archive, progress=False)
    chunk = _chunk_files(archive / "rec")[0]
    data = bytearray(chunk.read_bytes())
    data[-5] ^= 0xFF
    chunk.write_bytes(bytes(data))
    with pytest.raises(zarr_aac.CorruptChunkError, match=r"a\.zarr/rec/c/0/0") as info:
        zarr.open_array(archive / "rec", mode="r")[:]
    assert info.value.key.endswith("a.zarr/rec/c/0/0")
    with pytest.raises(zarr_aac.CorruptChunkError, match=r"'rec/c/0/0'"):  # through the archive, as before
        zarr.open_group(archive, mode="r")["rec"][:]
