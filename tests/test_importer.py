"""import_file / import_files against sources decoded independently (soundfile, the ffmpeg CLI)."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import av
import guano
import numpy as np
import pytest
import soundfile as sf
import zarr
from support.archives import assert_nothing_left, nodes
from support.media import ffmpeg_decode

import zarr_aac
from zarr_aac.archive import ImportOptions, importer, recordings
from zarr_aac.archive.source_metadata import time_in_filename
from zarr_aac.codec.aac_codec import ChunkEncoder
from zarr_aac.errors import ArchiveError, ImportFailedError, SourceError

RATE = 44100


def clicky_signal(n: int, channels: int, rate: int, seed: int = 0) -> np.ndarray:
    """Tones plus noise plus a click train: a sharp cross-correlation peak at the true lag."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / rate
    x = 0.2 * np.sin(2 * np.pi * 440.0 * t)[:, None] + 0.08 * rng.standard_normal((n, channels))
    x[:: max(1, rate // 7)] += 0.5
    x *= 1.0 - 0.2 * np.arange(channels)
    return np.clip(x, -0.95, 0.95).astype(np.float32)


def lag_of_peak(a: np.ndarray, b: np.ndarray, max_lag: int = 2048) -> int:
    """Lag (samples) at which ``a`` best matches ``b``: 0 when sample i of a is sample i of b."""
    n = min(len(a), len(b))
    a, b = a[:n].astype(np.float64), b[:n].astype(np.float64)
    size = 1 << int(np.ceil(np.log2(2 * n)))
    corr = np.fft.irfft(np.fft.rfft(a, size) * np.conj(np.fft.rfft(b, size)), size)
    lags = np.concatenate([np.arange(0, max_lag + 1), np.arange(-max_lag, 0)])
    values = np.concatenate([corr[: max_lag + 1], corr[-max_lag:]])
    return int(lags[np.argmax(values)])


def as_float(pcm: np.ndarray) -> np.ndarray:
    return pcm.astype(np.float32) / 32768.0 if pcm.dtype == np.int16 else pcm.astype(np.float32)


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    """Short files of every kind soundfile writes, from one 1 s stereo signal."""
    folder = tmp_path_factory.mktemp("sources")
    signal = clicky_signal(RATE, 2, RATE)
    paths = {}
    for name, subtype, ext in [
        ("u8", "PCM_U8", "wav"),
        ("s16", "PCM_16", "wav"),
        ("s24", "PCM_24", "wav"),
        ("s32", "PCM_32", "wav"),
        ("f32", "FLOAT", "wav"),
        ("flac", "PCM_16", "flac"),
        ("flac24", "PCM_24", "flac"),
        ("ogg", "VORBIS", "ogg"),
    ]:
        paths[name] = folder / f"{name}.{ext}"
        sf.write(paths[name], signal, RATE, subtype=subtype)
    return paths


SOUNDFILE_KINDS = {
    "u8": "int16",
    "s16": "int16",
    "s24": "float32",
    "s32": "float32",
    "f32": "float32",
    "flac": "int16",
    "flac24": "float32",
    "ogg": "float32",
}


@pytest.mark.parametrize("kind", list(SOUNDFILE_KINDS))
def test_soundfile_kinds_exact_length_aligned_with_metadata(kind, sources, tmp_path):
    source = sources[kind]
    z = zarr_aac.import_file(source, tmp_path / "a.zarr", progress=False)
    reference, rate = sf.read(source, dtype="float32", always_2d=True)
    assert z.shape == reference.shape
    assert z.dtype == np.dtype(SOUNDFILE_KINDS[kind])
    decoded = as_float(z[:])
    for ch in range(2):
        assert lag_of_peak(decoded[:, ch], reference[:, ch]) == 0
        assert np.corrcoef(decoded[:, ch], reference[:, ch])[0, 1] > 0.95
    attrs = z.attrs
    assert attrs["sample_rate"] == rate == z.metadata.codecs[0].sample_rate
    assert attrs["channels"] == 2 and attrs["n_samples"] == len(reference)
    assert attrs["duration_s"] == pytest.approx(len(reference) / rate)
    assert attrs["source"]["name"] == source.name
    assert attrs["source"]["size"] == source.stat().st_size
    assert attrs["source"]["sha256"] == importer.file_sha256(source)
    expected_bits = {"u8": 8, "s16": 16, "s24": 24, "s32": 32, "f32": 32, "flac": 16, "flac24": 24, "ogg": None}
    assert attrs["source"]["bit_depth"] == expected_bits[kind]
    assert z.name.lstrip("/") == kind


def test_16bit_wav_keeps_its_int16_scale(sources, tmp_path):
    """int16 in, int16 out with no gain: the 440 Hz tone keeps its amplitude."""
    z = zarr_aac.import_file(sources["s16"], tmp_path / "a.zarr", progress=False)
    reference, _ = sf.read(sources["s16"], dtype="int16")
    tone_bin = 440  # one second at 44.1 kHz: bin k is k Hz
    ours = np.abs(np.fft.rfft(z[:, 0].astype(float))[tone_bin])
    theirs = np.abs(np.fft.rfft(reference[:, 0].astype(float))[tone_bin])
    assert ours == pytest.approx(theirs, rel=0.02)


@pytest.fixture
def ffmpeg_sources(tmp_path, ffmpeg) -> dict[str, Path]:
    """A WAV and the same signal as MP3 (with ID3 tags) and M4A, made by the ffmpeg command line."""
    folder = tmp_path / "ffmpeg_sources"
    folder.mkdir()
    wav = folder / "source.wav"
    sf.write(wav, clicky_signal(RATE, 2, RATE, seed=3), RATE, subtype="PCM_16")
    paths = {"wav": wav, "mp3": folder / "s.mp3", "m4a": folder / "s.m4a", "video": folder / "v.mp4"}
    subprocess.run(
        [
            ffmpeg,
            "-v",
            "error",
            "-i",
            wav,
            "-c:a",
            "libmp3lame",
            "-b:a",
            "128k",
            "-metadata",
            "title=Dawn chorus",
            "-metadata",
            "artist=Recorder 7",
            paths["mp3"],
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [ffmpeg, "-v", "error", "-i", wav, "-c:a", "aac", "-b:a", "128k", paths["m4a"]], check=True, capture_output=True
    )
    return paths | {"ffmpeg": Path(ffmpeg)}


def _video_with_audio(path: Path, audio: np.ndarray | None, rate: int = RATE) -> None:
    """An MPEG-4 video (and an AAC track when ``audio`` is given) written with PyAV."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=10)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        sound = container.add_stream("aac", rate=rate, layout="stereo") if audio is not None else None
        for i in range(10):
            image = np.full((48, 64, 3), 20 * i, dtype=np.uint8)
            container.mux(video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(video.encode(None))
        if sound is not None:
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio.T), format="fltp", layout="stereo")
            frame.sample_rate, frame.pts = rate, 0
            container.mux(sound.encode(frame))
            container.mux(sound.encode(None))


@pytest.mark.parametrize("kind", ["mp3", "m4a", "video"])
def test_lossy_and_video_sources_match_the_ffmpeg_command_line(kind, ffmpeg_sources, tmp_path):
    if kind == "video":
        source = tmp_path / "v.mp4"
        _video_with_audio(source, sf.read(ffmpeg_sources["wav"], dtype="float32")[0])
    else:
        source = ffmpeg_sources[kind]
    z = zarr_aac.import_file(source, tmp_path / "a.zarr", progress=False)
    reference = ffmpeg_decode(str(ffmpeg_sources["ffmpeg"]), source, 2)
    original, _ = sf.read(ffmpeg_sources["wav"], dtype="float32")
    assert z.shape == reference.shape
    assert z.dtype == np.float32
    for ch in range(2):
        assert lag_of_peak(z[:, ch], reference[:, ch]) == 0
        assert np.corrcoef(z[:, ch], reference[:, ch])[0, 1] > 0.95
    if kind == "mp3":
        assert z.shape[0] == len(original)  # LAME's gapless header: the original length exactly
        assert lag_of_peak(z[:, 0], original[:, 0]) == 0
        assert z.attrs["tags"]["title"] == "Dawn chorus" and z.attrs["tags"]["artist"] == "Recorder 7"
    assert z.attrs["source"]["codec"] in {"mp3float", "mp3", "aac"}


def test_three_channels_short_one_sample_and_silence(tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    cases = {
        "three.wav": (clicky_signal(8000, 3, 16000), 16000),
        "short.flac": (clicky_signal(4410, 1, RATE), RATE),
        "one.wav": (np.array([[0.25]], dtype=np.float32), 8000),
        "silence.wav": (np.zeros((22050, 2), dtype=np.float32), 22050),
    }
    for name, (pcm, rate) in cases.items():
        sf.write(folder / name, pcm, rate, subtype="PCM_16")
    arrays = zarr_aac.import_files(sorted(folder.iterdir()), tmp_path / "a.zarr", workers=1, progress=False)
    by_name = {Path(a.attrs["source"]["name"]).name: a for a in arrays}
    for name, (_pcm, rate) in cases.items():
        z = by_name[name]
        reference, ref_rate = sf.read(folder / name, dtype="int16", always_2d=True)
        assert z.shape == reference.shape and z.attrs["sample_rate"] == rate == ref_rate
    np.testing.assert_array_equal(by_name["silence.wav"][:], 0)
    assert abs(int(by_name["one.wav"][0, 0]) - 8192) < 2000
    three = by_name["three.wav"][:]
    reference, _ = sf.read(folder / "three.wav", dtype="int16")
    for ch in range(3):
        assert lag_of_peak(three[:, ch], reference[:, ch]) == 0
        assert np.corrcoef(three[:, ch], reference[:, ch])[0, 1] > 0.97


def test_chunks_are_whole_frames_and_written_whole(tmp_path, monkeypatch):
    """Each chunk is encoded exactly once: no partial-chunk write, no decode-merge-re-encode."""
    path = tmp_path / "long.wav"
    sf.write(path, clicky_signal(3 * 8000 + 123, 1, 8000), 8000, subtype="PCM_16")
    encoded, decoded = [], []
    finish, decode = ChunkEncoder.finish, zarr_aac.AACCodec.decode_chunk
    monkeypatch.setattr(ChunkEncoder, "finish", lambda encoder: encoded.append(encoder.n_samples) or finish(encoder))
    monkeypatch.setattr(zarr_aac.AACCodec, "decode_chunk", lambda codec, *a: decoded.append(1) or decode(codec, *a))
    z = zarr_aac.import_file(path, tmp_path / "a.zarr", chunk_duration=1.0, progress=False)
    # encoded once each (a partial-chunk write would decode, merge and encode again); the only
    # decodes are the fidelity report's read-back of each write, after its encoding
    assert encoded == [8192, 8192, 8192] and len(decoded) <= 3
    assert z.chunks == (8192, 1)
    assert z.shape == (3 * 8000 + 123, 1)
    assert z.nchunks_initialized == 3
    reference, _ = sf.read(path, dtype="float32")
    assert lag_of_peak(as_float(z[:, 0]), reference) == 0


def test_start_time_precedence_user_guano_tag_filename(tmp_path):
    pcm = clicky_signal(8000, 1, 8000)
    plain = tmp_path / "SM4_20230322_172000.wav"
    sf.write(plain, pcm, 8000, subtype="PCM_16")
    archive = tmp_path / "a.zarr"
    z = zarr_aac.import_file(plain, archive, progress=False)
    assert (z.attrs["start_time"], z.attrs["start_time_source"]) == ("2023-03-22T17:20:00", "filename")

    tagged = tmp_path / "20230322_172000_tagged.wav"
    with sf.SoundFile(tagged, "w", 8000, 1, subtype="PCM_16") as f:
        f.comment = "Recorded at 20:26:15 03/09/2024 (UTC+1) by AudioMoth 24E144055E080032 at medium gain."
        f.write(pcm * 0.5)
    z = zarr_aac.import_file(tagged, archive, progress=False)
    assert (z.attrs["start_time"], z.attrs["start_time_source"]) == ("2024-09-03T20:26:15+01:00", "tag:comment")

    bat = tmp_path / "bat.wav"
    sf.write(bat, pcm * 0.25, 8000, subtype="PCM_16")
    fields = guano.GuanoFile(str(bat))
    fields["Timestamp"] = datetime(2021, 6, 1, 22, 5, 0, tzinfo=UTC)
    fields["Make"] = "Wildlife Acoustics"
    fields.write(make_backup=False)
    z = zarr_aac.import_file(bat, archive, progress=False, metadata={"site": "pond 3"})
    assert (z.attrs["start_time"], z.attrs["start_time_source"]) == ("2021-06-01T22:05:00+00:00", "guano")
    assert z.attrs["guano"]["Make"] == "Wildlife Acoustics"
    assert z.attrs["user"] == {"site": "pond 3"}

    other = tmp_path / "other.wav"
    sf.write(other, pcm * 0.125, 8000, subtype="PCM_16")
    z = zarr_aac.import_file(other, archive, start_time="2020-01-02T03:04:05Z", progress=False)
    assert (z.attrs["start_time"], z.attrs["start_time_source"]) == ("2020-01-02T03:04:05+00:00", "user")


def test_time_in_filename_patterns():
    assert time_in_filename("20240903_202615.WAV") == datetime(2024, 9, 3, 20, 26, 15)
    assert time_in_filename("S4A01234_20190410T063000.wav") == datetime(2019, 4, 10, 6, 30)
    assert time_in_filename("rec_2022-07-01_05-30-00.flac") == datetime(2022, 7, 1, 5, 30)
    assert time_in_filename("take_12345678901234.wav") is None
    assert time_in_filename("crow.flac") is None


def test_catalogue_dedup_and_names(tmp_path, sources):
    archive = tmp_path / "a.zarr"
    chosen = [sources["s16"], sources["flac"], sources["s16"]]
    arrays = zarr_aac.import_files(chosen, archive, workers=1, progress=False)
    assert [a.name for a in arrays] == ["/s16", "/flac", "/s16"]
    frame = recordings.catalogue(archive)
    assert sorted(frame.index) == ["flac", "s16"]
    assert frame.loc["s16", "source.sha256"] == importer.file_sha256(sources["s16"])
    assert frame.loc["flac", "sample_rate"] == RATE and frame.loc["flac", "n_samples"] == RATE

    calls = []
    original = importer._write_source

    def counting(*args, **kwargs):
        calls.append(args[0])
        return original(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(importer, "_write_source", counting)
        again = zarr_aac.import_files([sources["flac"], sources["u8"]], archive, workers=1, progress=False)
        assert calls == [sources["u8"]]
        assert zarr_aac.import_file(sources["s16"], archive, progress=False).name == "/s16"
        assert calls == [sources["u8"]]
    assert [a.name for a in again] == ["/flac", "/u8"]

    renamed = tmp_path / "copy" / "s16.wav"
    renamed.parent.mkdir()
    sf.write(renamed, clicky_signal(1000, 1, RATE, seed=9), RATE)
    assert zarr_aac.import_file(renamed, archive, progress=False).name == "/s16_2"
    with pytest.raises(ArchiveError, match="already exists"):
        zarr_aac.import_file(sources["s24"], archive, name="flac", progress=False)


def test_a_group_where_a_recording_was_is_named_not_returned(tmp_path, sources):
    """The catalogue still lists the content under ``s16``, but a group now has that name."""
    archive = zarr.open_group(tmp_path / "a.zarr", mode="w")
    zarr_aac.import_file(sources["s16"], archive, progress=False)
    del archive["s16"]
    archive.create_group("s16")
    with pytest.raises(ArchiveError, match="s16 is a group, not a recording"):
        zarr_aac.import_file(sources["s16"], archive, progress=False)


def test_a_catalogue_that_is_not_a_mapping_is_named(tmp_path):
    archive = zarr.open_group(tmp_path / "a.zarr", mode="w")
    archive.attrs[recordings.CATALOGUE_ATTR] = ["s16", "flac"]
    with pytest.raises(ArchiveError, match="'catalogue' attribute is not a mapping"):
        recordings.catalogue(archive)


def test_parallel_import_with_a_failure_keeps_the_good_files(tmp_path, sources):
    bad = tmp_path / "notes.wav"
    bad.write_text("field notes, not audio\n")
    archive = tmp_path / "a.zarr"
    with pytest.raises(ImportFailedError) as info:
        zarr_aac.import_files([sources["s16"], bad, sources["ogg"]], archive, workers=2, progress=False)
    assert list(info.value.failures) == [str(bad)]
    assert "notes.wav" in str(info.value)
    group = zarr.open_group(archive)
    assert nodes(group) == ["ogg", "s16"]
    assert sorted(recordings.catalogue_entries(group)) == ["ogg", "s16"]
    np.testing.assert_array_equal(group["s16"][:], zarr_aac.import_file(sources["s16"], archive, progress=False)[:])


@pytest.mark.parametrize("kind", ["empty", "text", "truncated_mp3", "video_without_audio", "truncated_wav"])
def test_bad_inputs_fail_clearly_and_leave_nothing(kind, tmp_path, ffmpeg):
    path = (
        tmp_path
        / {
            "empty": "e.wav",
            "text": "t.flac",
            "truncated_mp3": "cut.mp3",
            "video_without_audio": "mute.mp4",
            "truncated_wav": "cut.wav",
        }[kind]
    )
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("not audio at all\n" * 100)
    elif kind == "truncated_mp3":
        wav = tmp_path / "full.wav"
        sf.write(wav, clicky_signal(2 * RATE, 2, RATE), RATE)
        full = tmp_path / "full.mp3"
        subprocess.run([ffmpeg, "-v", "error", "-i", wav, "-c:a", "libmp3lame", full], check=True)
        path.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    elif kind == "truncated_wav":
        wav = tmp_path / "full.wav"
        sf.write(wav, clicky_signal(RATE, 1, RATE), RATE, subtype="PCM_16")
        path.write_bytes(wav.read_bytes()[:30000])
    else:
        _video_with_audio(path, None)
    group = zarr.open_group(tmp_path / "a.zarr")
    expected = {
        "empty": r"it is empty \(0 bytes\)",
        "text": "FFmpeg cannot read it|declares no sample rate",
        "truncated_mp3": "truncated",
        "video_without_audio": "no audio stream",
        "truncated_wav": "truncated",
    }[kind]
    with pytest.raises(SourceError, match=expected) as info:
        zarr_aac.import_file(path, group, progress=False)
    assert path.name in str(info.value)
    assert_nothing_left(group)
    if kind.startswith("truncated"):
        z = zarr_aac.import_file(path, group, allow_truncated=True, progress=False)
        assert z.attrs["source"]["truncated"] is True and z.shape[0] > 0


def test_interrupt_leaves_nothing(tmp_path, sources, monkeypatch):
    calls = []
    convert = importer.aac.to_dtype

    def interrupt_on_second_write(pcm, dtype, **options):
        if "gain" in options:  # the codec's decode, which the fidelity report's read-back runs
            return convert(pcm, dtype, **options)
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return pcm.astype(dtype)

    monkeypatch.setattr(importer.aac, "to_dtype", interrupt_on_second_write)
    group = zarr.open_group(tmp_path / "a.zarr")
    with pytest.raises(KeyboardInterrupt):
        zarr_aac.import_file(sources["f32"], group, chunk_duration=0.2, progress=False)
    assert_nothing_left(group)
    assert len(calls) == 2


def test_stream_choice_and_bad_options(tmp_path, ffmpeg_sources):
    source = tmp_path / "two.mka"
    ffmpeg = str(ffmpeg_sources["ffmpeg"])
    subprocess.run(
        [
            ffmpeg,
            "-v",
            "error",
            "-i",
            ffmpeg_sources["wav"],
            "-i",
            ffmpeg_sources["m4a"],
            "-map",
            "0:a",
            "-map",
            "1:a",
            "-c:a",
            "flac",
            source,
        ],
        check=True,
    )
    group = zarr.open_group(tmp_path / "a.zarr")
    with pytest.raises(SourceError, match="2 audio streams; pass stream="):
        zarr_aac.import_file(source, group, progress=False)
    z = zarr_aac.import_file(source, group, stream=0, progress=False)
    reference, _ = sf.read(ffmpeg_sources["wav"], dtype="int16")
    assert z.shape == reference.shape and z.attrs["source"]["stream_index"] == 0
    with pytest.raises(ValueError, match="JSON"):
        zarr_aac.import_file(ffmpeg_sources["wav"], group, metadata={"when": datetime.now()}, progress=False)
    with pytest.raises(ValueError, match="chunk_duration"):
        zarr_aac.import_file(ffmpeg_sources["wav"], group, chunk_duration=0, progress=False)
    with pytest.raises(SourceError, match="no such file"):
        zarr_aac.import_file(tmp_path / "missing.wav", group, progress=False)
    entries = recordings.catalogue_entries(group)
    assert list(entries) == [z.basename]
    assert json.loads(json.dumps(entries)) == entries  # the catalogue stays plain JSON


@pytest.mark.parametrize(
    "bad",
    [
        {"bitrate": 10},
        {"dtype": "int32"},
        {"chunk_duration": float("inf")},
        {"start_time": "soon"},
        {"aac_sample_rate": 50000},
        {"metadata": {"when": datetime.now()}},
    ],
)
def test_options_are_checked_once_before_any_file_is_hashed(bad, tmp_path, sources, monkeypatch):
    hashed = []
    monkeypatch.setattr(importer, "file_sha256", hashed.append)
    with pytest.raises(ValueError):
        ImportOptions(**bad)
    with pytest.raises(ValueError):
        zarr_aac.import_files([sources["s16"]], tmp_path / "a.zarr", progress=False, **bad)
    with pytest.raises(ValueError):
        zarr_aac.import_file(sources["s16"], tmp_path / "a.zarr", progress=False, **bad)
    assert hashed == [] and not (tmp_path / "a.zarr").exists()


def test_options_given_as_one_object(tmp_path, sources):
    options = ImportOptions(
        chunk_duration=0.5, start_time="2024-05-01T06:00:00", metadata={"site": "A1"}, progress=False
    )
    z = zarr_aac.import_file(sources["s16"], tmp_path / "a.zarr", options=options)
    assert z.attrs["user"] == {"site": "A1"} and z.attrs["start_time"] == "2024-05-01T06:00:00"
    assert z.attrs["aac"]["chunk_samples"] == 22 * 1024
    with pytest.raises(TypeError, match="not both"):
        zarr_aac.import_files([sources["s16"]], tmp_path / "a.zarr", options=options, bitrate=96000)


def test_memory_store_archive(sources):
    group = zarr.group(store=zarr.storage.MemoryStore())
    arrays = zarr_aac.import_files([sources["s16"], sources["ogg"]], group, progress=False)
    assert [a.name for a in arrays] == ["/s16", "/ogg"]
    assert nodes(group) == ["ogg", "s16"]
    assert sorted(recordings.catalogue_entries(group)) == ["ogg", "s16"]


def test_shared_recordings_import_exactly(shared_audio, tmp_path):
    """Every real WAV/FLAC recording: sample count and alignment against soundfile."""
    files = sorted(p for p in shared_audio.iterdir() if p.suffix in {".wav", ".flac"})
    arrays = zarr_aac.import_files(files, tmp_path / "a.zarr", progress=False)
    for path, z in zip(files, arrays, strict=True):
        reference, rate = sf.read(path, dtype="float32", always_2d=True)
        assert z.shape == reference.shape, path.name
        assert z.attrs["sample_rate"] == rate
        head = slice(0, min(len(reference), 200_000))
        assert lag_of_peak(as_float(z[head, 0]), reference[head, 0]) == 0, path.name
    selection = next(z for z in arrays if z.attrs["source"]["name"] == "bat_192k.wav")
    assert (selection.attrs["start_time"], selection.attrs["start_time_source"]) == ("2023-03-22T17:20:00", "tag:title")
    moth = next(z for z in arrays if z.attrs["source"]["name"] == "bat_audiomoth_250k.wav")
    assert moth.attrs["start_time_source"] == "guano"
    assert moth.attrs["guano"]["Model"] == "AudioMoth"
    assert "AudioMoth" in moth.attrs["tags"]["comment"]


def test_shared_lossy_recordings_match_the_ffmpeg_command_line(shared_audio, ffmpeg, tmp_path):
    """The real OGG Vorbis, M4A and ADTS AAC files: length and alignment as `ffmpeg` decodes them."""
    files = sorted(p for p in shared_audio.iterdir() if p.suffix in {".ogg", ".m4a", ".aac"})
    arrays = zarr_aac.import_files(files, tmp_path / "a.zarr", progress=False)
    for path, z in zip(files, arrays, strict=True):
        reference = ffmpeg_decode(ffmpeg, path, z.shape[1])
        assert z.shape == reference.shape, path.name
        assert z.dtype == np.float32
        assert lag_of_peak(z[:, 0], reference[:, 0]) == 0, path.name
        assert np.corrcoef(z[:, 0], reference[:, 0])[0, 1] > 0.95, path.name
        assert z.attrs["source"]["codec"] in {"vorbis", "aac"}


def test_importers_through_stale_group_objects_keep_every_entry(tmp_path, sources):
    """A Group object opened before another writer committed still adds to, not replaces, the
    catalogue: every commit is an entry of its own, and names are reserved in the store."""
    archive = tmp_path / "a.zarr"
    stale = zarr.open_group(archive)
    zarr_aac.import_file(sources["s16"], archive, progress=False)
    other = tmp_path / "other" / "s16.wav"
    other.parent.mkdir()
    sf.write(other, clicky_signal(2000, 1, RATE, seed=11), RATE)
    assert zarr_aac.import_file(other, stale, progress=False).basename == "s16_2"
    assert zarr_aac.import_file(sources["flac"], stale, progress=False).basename == "flac"
    assert sorted(recordings.catalogue_entries(stale)) == ["flac", "s16", "s16_2"]
    assert sorted(recordings.catalogue(archive).index) == ["flac", "s16", "s16_2"]


def test_a_reserved_name_is_not_given_twice(tmp_path):
    """Reservations are create-if-absent writes: the second wanting a name gets the next free
    one, or an error when it asked for exactly that name; abandoning frees it again."""
    group = zarr.open_group(tmp_path / "a.zarr")
    first = recordings.reserve_name(group, "dawn", "0" * 64)
    second = recordings.reserve_name(group, "dawn", "1" * 64)
    assert (first.name, second.name) == ("dawn", "dawn_2")
    with pytest.raises(ArchiveError, match="dawn already exists"):
        recordings.reserve_name(group, "dawn", "2" * 64, exact=True)
    recordings.abandon_reservation(group, first)
    assert recordings.reserve_name(group, "dawn", "3" * 64, exact=True).name == "dawn"


def _with_guano_chunk(path: Path, text: bytes) -> Path:
    """``path`` (a WAV file) with a ``guan`` chunk of ``text`` appended and the RIFF size updated."""
    data = bytearray(path.read_bytes())
    chunk = b"guan" + len(text).to_bytes(4, "little") + text + b"\0" * (len(text) & 1)
    data += chunk
    data[4:8] = (len(data) - 8).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    return path


def test_a_guano_line_without_a_colon_does_not_abort_the_batch(tmp_path):
    """Issue 12, item 14: the guano package raised ValueError on it, which was no per-file
    failure, so one odd bat-detector file aborted the whole import_files batch."""
    pcm = clicky_signal(8000, 1, 8000)
    odd, plain = tmp_path / "odd.wav", tmp_path / "plain.wav"
    sf.write(odd, pcm, 8000, subtype="PCM_16")
    sf.write(plain, pcm * 0.5, 8000, subtype="PCM_16")
    _with_guano_chunk(odd, b"GUANO|Version: 1.0\nTimestamp: 2021-06-01T22:05:00Z\nfirmware 1.2 beta\nMake: Acme\n")
    odd_array, plain_array = zarr_aac.import_files([odd, plain], tmp_path / "a.zarr", workers=1, progress=False)
    assert odd_array.attrs["guano"]["Make"] == "Acme"
    assert odd_array.attrs["guano"]["zarr_aac|unparsed lines"] == ["firmware 1.2 beta"]
    assert (odd_array.attrs["start_time"], odd_array.attrs["start_time_source"]) == (
        "2021-06-01T22:05:00+00:00",
        "guano",
    )
    assert plain_array.shape == (8000, 1)


def test_any_error_of_one_file_is_that_files_failure_and_named(tmp_path, monkeypatch):
    pcm = clicky_signal(8000, 1, 8000)
    bad, good = tmp_path / "bad.wav", tmp_path / "good.wav"
    sf.write(bad, pcm, 8000, subtype="PCM_16")
    sf.write(good, pcm * 0.5, 8000, subtype="PCM_16")
    real_read_riff = importer.source_metadata.read_riff

    def read_riff(path: Path):
        if path.name == "bad.wav":
            raise RuntimeError("a library bug met a strange header")
        return real_read_riff(path)

    monkeypatch.setattr(importer.source_metadata, "read_riff", read_riff)
    with pytest.raises(ImportFailedError, match=r"bad.wav: RuntimeError: a library bug") as caught:
        zarr_aac.import_files([bad, good], tmp_path / "a.zarr", workers=1, progress=False)
    assert list(caught.value.failures) == [str(bad)]
    assert "good" in zarr.open_group(str(tmp_path / "a.zarr"), mode="r")
