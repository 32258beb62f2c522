"""Hostile input files for the importer: each ends in a clear SourceError or in correct
samples, and never leaves a half-written array or catalogue entry behind."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import zarr
from support.archives import bookkeeping, nodes
from support.media import probe_channels, require_tool

from zarr_aac import import_file
from zarr_aac.archive import entries as bk
from zarr_aac.archive.recordings import TEMP_PREFIX, catalogue_entries
from zarr_aac.errors import SourceError

DATA = Path(__file__).parent / "data"
CHUNK_S = 0.25


@pytest.fixture(scope="module")
def crow() -> np.ndarray:
    """The crow recording (0.48 s), int16 mono at 44.1 kHz."""
    pcm, _ = sf.read(DATA / "crow_44k1.flac", dtype="int16")
    return pcm


@pytest.fixture(scope="module")
def encoded(tmp_path_factory, crow) -> dict[str, Path]:
    """The crow clip as MP3, FLAC and M4A made by the ffmpeg command line."""
    ffmpeg = require_tool("ffmpeg")
    out = tmp_path_factory.mktemp("encoded")
    wav = out / "crow.wav"
    sf.write(wav, crow, 44100, subtype="PCM_16")
    files = {}
    for ext, args in (
        ("mp3", ["-c:a", "libmp3lame", "-b:a", "128k"]),
        ("flac", ["-c:a", "flac"]),
        ("m4a", ["-c:a", "aac", "-b:a", "128k", "-movflags", "+faststart"]),
    ):
        path = out / f"crow.{ext}"
        subprocess.run([ffmpeg, "-v", "error", "-y", "-i", str(wav), *args, str(path)], check=True)
        files[ext] = path
    return files


def cli_decode(path: Path) -> np.ndarray | None:
    """Samples of ``path`` as the ffmpeg command line decodes them: float32 (n, channels), or
    None where ffprobe finds no audio stream in it."""
    channels = probe_channels(path)
    if channels is None:
        return None
    raw = subprocess.run(
        [require_tool("ffmpeg"), "-v", "quiet", "-i", str(path), "-f", "f32le", "-"], capture_output=True, check=False
    ).stdout
    return np.frombuffer(raw, dtype="<f4").reshape(-1, channels)


def archive_state(root: Path) -> tuple[set[str], dict, list[str], list[str]]:
    group = zarr.open_group(root, mode="a")
    return set(nodes(group)), catalogue_entries(group), bookkeeping(group, bk.NAMES), bookkeeping(group, bk.PENDING)


def assert_nothing_half_written(root: Path, before: tuple[set[str], dict, list[str], list[str]]) -> None:
    assert archive_state(root) == before
    leftovers = [p.name for p in root.rglob(f"{TEMP_PREFIX}*")]
    assert leftovers == [], f"temporary arrays left behind: {leftovers}"


def import_or_refuse(source: Path, root: Path, **options) -> zarr.Array | SourceError:
    """Import ``source``; on a SourceError check that the archive is exactly as before."""
    before = archive_state(root)
    try:
        return import_file(source, root, chunk_duration=CHUNK_S, progress=False, **options)
    except SourceError as exc:
        assert str(source.name) in str(exc)
        assert_nothing_half_written(root, before)
        return exc


def as_float(pcm: np.ndarray) -> np.ndarray:
    return pcm.astype(np.float32) / 32768 if pcm.dtype == np.int16 else pcm


def snr_db(reference: np.ndarray, test: np.ndarray) -> float:
    noise = np.sum((reference - test) ** 2)
    return float(10 * np.log10(np.sum(reference**2) / max(noise, 1e-20)))


def write_wav_header(path: Path, *, channels: int, rate: int, bits: int, data: bytes, claimed_data_nbytes: int) -> None:
    """A canonical 44-byte PCM WAV whose data chunk claims ``claimed_data_nbytes`` bytes."""
    block = channels * bits // 8
    header = b"RIFF" + struct.pack("<I", min(36 + claimed_data_nbytes, 2**32 - 1)) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * block, block, bits)
    header += b"data" + struct.pack("<I", claimed_data_nbytes)
    path.write_bytes(header + data)


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"", "empty"),
        (b"this is a field note, not audio\n" * 40, "text"),
        (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8, "image"),
        (np.random.default_rng(3).bytes(50_000), "random bytes"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", "cut inside the WAV header"),
    ],
)
def test_files_that_are_not_audio_are_refused(tmp_path, content, why):
    source = tmp_path / "bad.wav"
    source.write_bytes(content)
    outcome = import_or_refuse(source, tmp_path / "archive.zarr")
    assert isinstance(outcome, SourceError), why


def test_paths_that_are_not_files_are_refused(tmp_path):
    root = tmp_path / "archive.zarr"
    assert isinstance(import_or_refuse(tmp_path / "missing.flac", root), SourceError)
    (tmp_path / "folder.flac").mkdir()
    assert isinstance(import_or_refuse(tmp_path / "folder.flac", root), SourceError)


@pytest.mark.parametrize(
    ("ext", "keep"),
    [(e, k) for e in ("mp3", "flac", "m4a") for k in (0.02, 0.5, 0.97)],
)
def test_truncated_files_are_refused_or_imported_as_far_as_they_decode(tmp_path, encoded, ext, keep):
    """A cut file from which the ffmpeg command line decodes nothing fails with SourceError (no
    array left); one it decodes samples from imports them with allow_truncated, and without it
    either imports whole (the cut lost no samples) or fails naming allow_truncated."""
    data = encoded[ext].read_bytes()
    source = tmp_path / f"cut.{ext}"
    source.write_bytes(data[: int(len(data) * keep)])
    reference = cli_decode(source)
    declared = len(sf.read(encoded["flac"], dtype="int16")[0])
    default = import_or_refuse(source, tmp_path / "default.zarr")
    allowed = import_or_refuse(source, tmp_path / "allowed.zarr", allow_truncated=True)
    if reference is None or reference.shape[0] == 0:
        assert isinstance(default, SourceError) and isinstance(allowed, SourceError)
        return
    assert not isinstance(allowed, SourceError), allowed
    assert allowed.shape[0] == pytest.approx(reference.shape[0], abs=2048)
    n = min(allowed.shape[0], reference.shape[0])
    assert snr_db(reference[:n], as_float(allowed[:n])) > 12
    if isinstance(default, SourceError):
        assert "allow_truncated" in str(default)
    else:
        assert default.shape[0] == pytest.approx(declared, abs=2048)
        np.testing.assert_array_equal(default[:], allowed[:])


@pytest.mark.parametrize("ext", ["mp3", "flac", "m4a"])
@pytest.mark.parametrize("seed", range(4))
def test_bit_flipped_files_are_refused_or_imported_whole(tmp_path, encoded, ext, seed):
    """Flipped bytes past the first kilobyte: SourceError with nothing left behind, or an
    import of finite samples no longer than the clip (decoders conceal bad frames, each its
    own way, so the ffmpeg command line is no length reference here)."""
    rng = np.random.default_rng(seed)
    data = bytearray(encoded[ext].read_bytes())
    for position in rng.integers(1024, len(data), size=20):
        data[position] ^= int(rng.integers(1, 256))
    source = tmp_path / f"flipped.{ext}"
    source.write_bytes(bytes(data))
    outcome = import_or_refuse(source, tmp_path / "archive.zarr", allow_truncated=True)
    if isinstance(outcome, SourceError):
        return
    assert 0 < outcome.shape[0] <= 21196 + 4096
    assert outcome.attrs["n_samples"] == outcome.shape[0]


@pytest.mark.parametrize("claimed", [2**32 - 1, 2**32 - 2, 3_456_000_000])
def test_wav_claiming_days_imports_the_samples_it_holds(tmp_path, crow, claimed):
    """A data chunk claiming up to 2^32-1 bytes at 4 kHz 8-bit mono (12.4 days; the RIFF size
    field cannot say more; 2^32-1 is also the streaming marker) over 2 real seconds: refused as
    truncated, or the 8000 real samples, never an allocation for the claim."""
    pcm = np.resize(crow, 8000)
    data = ((pcm.astype(np.int32) >> 8) + 128).astype(np.uint8).tobytes()
    source = tmp_path / "liar.wav"
    write_wav_header(source, channels=1, rate=4000, bits=8, data=data, claimed_data_nbytes=claimed)
    root = tmp_path / "archive.zarr"
    array = import_or_refuse(source, root)
    if isinstance(array, SourceError):
        assert "truncated" in str(array)
        array = import_or_refuse(source, root, allow_truncated=True)
        assert array.attrs["source"]["truncated"] is True
    assert array.shape == (8000, 1)
    expected = (np.frombuffer(data, np.uint8).astype(np.float32) - 128) / 128
    assert snr_db(expected, array[:, 0].astype(np.float32) / 32768) > 15


def test_wav_claiming_fewer_samples_than_it_holds_imports_the_claim(tmp_path, crow):
    source = tmp_path / "short-claim.wav"
    write_wav_header(source, channels=1, rate=44100, bits=16, data=crow.tobytes(), claimed_data_nbytes=2 * 10000)
    array = import_or_refuse(source, tmp_path / "archive.zarr")
    assert array.shape[0] == cli_decode(source).shape[0] == 10000


def test_zero_samples_are_refused(tmp_path):
    source = tmp_path / "empty.wav"
    write_wav_header(source, channels=1, rate=44100, bits=16, data=b"", claimed_data_nbytes=0)
    outcome = import_or_refuse(source, tmp_path / "archive.zarr")
    assert isinstance(outcome, SourceError) and "no audio samples" in str(outcome)


def test_one_sample_is_stored(tmp_path):
    source = tmp_path / "one.wav"
    sf.write(source, np.array([12000], dtype=np.int16), 48000, subtype="PCM_16")
    array = import_or_refuse(source, tmp_path / "archive.zarr")
    assert array.shape == (1, 1) and array.dtype == np.int16
    assert abs(int(array[0, 0]) - 12000) < 2000


@pytest.mark.parametrize(
    "channels",
    [9, 255],
)
def test_many_channels_are_stored_in_chunks_of_8(tmp_path, channels):
    """Each channel carries its own tone; every one must come back on its own index."""
    rate, n = 16000, 4000
    t = np.arange(n) / rate
    freqs = 100 + 25 * np.arange(channels)
    pcm = (0.3 * np.sin(2 * np.pi * t[:, None] * freqs[None, :]) * 32767).astype(np.int16)
    source = tmp_path / "array-mic.wav"
    sf.write(source, pcm, rate, subtype="PCM_16")
    array = import_or_refuse(source, tmp_path / "archive.zarr")
    assert not isinstance(array, SourceError), array
    assert array.shape == (n, channels) and array.chunks[1] == 8
    stored = array[:].astype(np.float32)
    spectrum = np.abs(np.fft.rfft(stored[n // 4 :], axis=0))
    peak_hz = np.argmax(spectrum, axis=0) * rate / (n - n // 4)
    np.testing.assert_allclose(peak_hz, freqs, atol=8)
    assert snr_db(pcm.astype(np.float32), stored) > 15


def test_an_import_interrupted_mid_write_leaves_nothing(tmp_path, encoded, monkeypatch):
    """Ctrl-C between chunks (in the main thread, where SIGINT lands) and a write error inside
    the codec: no array, no temporary array, no catalogue entry."""
    from zarr_aac.archive import chunk_writer
    from zarr_aac.codec.aac_codec import ChunkEncoder

    root = tmp_path / "archive.zarr"
    import_or_refuse(encoded["flac"], root)
    before = archive_state(root)
    end_chunk = chunk_writer.ChunkWriter._end_chunk
    ended = []

    def interrupted_end_chunk(self):
        ended.append(1)
        if len(ended) == 2:
            raise KeyboardInterrupt
        end_chunk(self)

    monkeypatch.setattr(chunk_writer.ChunkWriter, "_end_chunk", interrupted_end_chunk)
    with pytest.raises(KeyboardInterrupt):
        import_file(encoded["mp3"], root, chunk_duration=0.1, progress=False)
    assert_nothing_half_written(root, before)
    monkeypatch.undo()

    finish = ChunkEncoder.finish
    calls = []

    def failing_finish(self):
        calls.append(1)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return finish(self)

    monkeypatch.setattr(ChunkEncoder, "finish", failing_finish)
    with pytest.raises(OSError, match="No space left"):
        import_file(encoded["mp3"], root, chunk_duration=0.1, progress=False)
    # chunks started before the failure may finish; none after them starts
    assert 3 <= len(calls) < 3 + 2 * chunk_writer.ENCODING_THREADS, "the import went on past the failed write"
    assert_nothing_half_written(root, before)
