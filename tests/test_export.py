"""export: segments by time or by samples, checked against the array with soundfile and PyAV."""

from __future__ import annotations

from datetime import datetime

import av
import numpy as np
import pytest
import soundfile as sf
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

import zarr_aac
from zarr_aac.archive.exporter import _as_frame_array, sample_bounds
from zarr_aac.errors import ArchiveError, UnsupportedAudioError


def _recording(folder, name, rate, channels, seconds, subtype="PCM_16", seed=0):
    rng = np.random.default_rng(seed)
    n = int(rate * seconds)
    t = np.arange(n) / rate
    x = 0.3 * np.sin(2 * np.pi * 500 * t)[:, None] + 0.05 * rng.standard_normal((n, channels))
    path = folder / f"{name}.wav"
    sf.write(path, x.astype(np.float32), rate, subtype=subtype)
    return path


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    sources = [
        _recording(folder, "stereo", 16000, 2, 3.0),
        _recording(folder, "bat", 250000, 1, 0.2, seed=1),
        _recording(folder, "deep", 22050, 1, 1.0, subtype="PCM_24", seed=2),
    ]
    zarr_aac.import_files(sources, folder / "a.zarr", workers=1, progress=False)
    return folder / "a.zarr"


def _read_with_pyav(path):
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        blocks = [frame.to_ndarray() for frame in container.decode(stream)]
        return stream.codec_context.sample_rate, stream.codec_context.name, sum(b.shape[-1] for b in blocks)


def test_wav_segment_by_time_is_the_array_slice(archive, tmp_path):
    z = zarr.open_array(archive / "stereo")
    out = zarr_aac.export(archive / "stereo", tmp_path / "seg.wav", 0.5, 1.25, progress=False)
    pcm, rate = sf.read(out, dtype="int16")
    assert rate == 16000
    np.testing.assert_array_equal(pcm, z[8000:20000])


def test_flac_segment_by_samples_and_whole_recording(archive, tmp_path):
    z = zarr.open_array(archive / "stereo")
    out = zarr_aac.export(z, tmp_path / "seg.flac", 123, 4567, unit="samples", progress=False)
    pcm, _ = sf.read(out, dtype="int16")
    np.testing.assert_array_equal(pcm, z[123:4567])
    whole = zarr_aac.export(z, tmp_path / "all.flac", progress=False)
    np.testing.assert_array_equal(sf.read(whole, dtype="int16")[0], z[:])
    with pytest.raises(ValueError, match="unit='samples' takes sample numbers"):
        zarr_aac.export(z, tmp_path / "clock.flac", datetime(2024, 5, 1), unit="samples", progress=False)
    assert not (tmp_path / "clock.flac").exists()


def test_segment_by_clock_time(tmp_path):
    source = _recording(tmp_path, "20240501_060000", 8000, 1, 2.0)
    z = zarr_aac.import_file(source, tmp_path / "a.zarr", progress=False)
    assert z.attrs["start_time"] == "2024-05-01T06:00:00"
    out = zarr_aac.export(z, tmp_path / "seg.wav", datetime(2024, 5, 1, 6, 0, 0, 500000), "2024-05-01T06:00:01.25")
    np.testing.assert_array_equal(sf.read(out, dtype="int16")[0], z[4000:10000, 0])
    with pytest.raises(ValueError, match="both have a time zone"):
        zarr_aac.export(z, tmp_path / "x.wav", "2024-05-01T06:00:00+00:00", progress=False)
    undated = zarr_aac.import_file(_recording(tmp_path, "plain", 8000, 1, 1.0, seed=5), tmp_path / "a.zarr")
    with pytest.raises(ArchiveError, match="no start_time"):
        zarr_aac.export(undated, tmp_path / "x.wav", datetime(2024, 5, 1), progress=False)
    assert sorted(p.name for p in tmp_path.glob("*.wav")) == ["20240501_060000.wav", "plain.wav", "seg.wav"]


def test_float_recording_exports_as_float_wav(archive, tmp_path):
    z = zarr.open_array(archive / "deep")
    assert z.dtype == np.float32
    out = zarr_aac.export(z, tmp_path / "deep.wav", progress=False)
    pcm, _ = sf.read(out, dtype="float32")
    assert sf.info(out).subtype == "FLOAT"
    np.testing.assert_array_equal(pcm, z[:, 0])


def test_float_full_scale_survives_integer_formats():
    """+1.0 and beyond clip to the largest integer (no wrap-around to negative full scale)."""
    block = np.array([[1.0], [-1.0], [1.5], [0.5], [-2.0]], dtype=np.float32)
    np.testing.assert_array_equal(_as_frame_array(block, "s32"), [[2**31 - 1, -(2**31), 2**31 - 1, 2**30, -(2**31)]])
    np.testing.assert_array_equal(_as_frame_array(block, "s16p"), [[32767, -32768, 32767, 16384, -32768]])
    np.testing.assert_array_equal(
        _as_frame_array(np.array([[-32768, 32767]], np.int16).T, "s32"), [[-(2**31), 32767 << 16]]
    )


def test_ultrasonic_keeps_its_true_rate(archive, tmp_path):
    z = zarr.open_array(archive / "bat")
    out = zarr_aac.export(z, tmp_path / "bat.flac", 0.05, 0.1, progress=False)
    pcm, rate = sf.read(out, dtype="int16")
    assert rate == 250000
    np.testing.assert_array_equal(pcm, z[12500:25000, 0])
    with pytest.raises(UnsupportedAudioError, match="cannot write 250000 Hz"):
        zarr_aac.export(z, tmp_path / "bat.mp3", progress=False)
    assert list(tmp_path.iterdir()) == [out]


def test_more_than_eight_channels(tmp_path):
    source = tmp_path / "array-mic.wav"
    noise = np.random.default_rng(4).uniform(-0.3, 0.3, (3000, 11)).astype(np.float32)
    sf.write(source, noise, 16000, subtype="PCM_16")
    z = zarr_aac.import_file(source, tmp_path / "a.zarr", progress=False)
    pcm, _ = sf.read(zarr_aac.export(z, tmp_path / "out.wav", progress=False), dtype="int16")
    np.testing.assert_array_equal(pcm, z[:])
    with pytest.raises(UnsupportedAudioError, match="11 channels"):
        zarr_aac.export(z, tmp_path / "out.flac", progress=False)
    assert not (tmp_path / "out.flac").exists()


@pytest.mark.parametrize("suffix", [".mp3", ".ogg", ".m4a"])
def test_lossy_formats_at_the_true_rate(archive, tmp_path, suffix):
    z = zarr.open_array(archive / "stereo")
    out = zarr_aac.export(z, tmp_path / f"seg{suffix}", 1, 2, progress=False)
    rate, codec, n = _read_with_pyav(out)
    assert rate == 16000
    assert n >= 16000  # lossy encoders may add a frame of padding
    assert codec in {"mp3float", "mp3", "flac", "aac"}


def test_bad_requests_leave_no_file(archive, tmp_path):
    with pytest.raises(ArchiveError, match="holds 3 recordings"):
        zarr_aac.export(archive, tmp_path / "x.wav", progress=False)
    z = zarr.open_array(archive / "stereo")
    with pytest.raises(ValueError, match="outside the recording"):
        zarr_aac.export(z, tmp_path / "x.wav", z.shape[0], z.shape[0] + 10, unit="samples", progress=False)
    with pytest.raises(ValueError, match="empty"):
        zarr_aac.export(z, tmp_path / "x.wav", 1, 1, progress=False)
    with pytest.raises(UnsupportedAudioError, match="no container"):
        zarr_aac.export(z, tmp_path / "x.notaformat", progress=False)
    with pytest.raises(ArchiveError, match="no Zarr array"):
        zarr_aac.export(tmp_path / "missing.zarr", tmp_path / "x.wav", progress=False)
    plain = zarr.create_array(zarr.storage.MemoryStore(), shape=(100,), dtype="int16")
    with pytest.raises(ArchiveError, match="not stored with the zarr_aac codec"):
        zarr_aac.export(plain, tmp_path / "x.wav", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_an_existing_target_is_replaced_only_when_complete(archive, tmp_path, monkeypatch):
    target = tmp_path / "seg.wav"
    target.write_bytes(b"previous")
    from zarr_aac.archive import exporter

    def failing_blocks(segment):
        yield segment.array[segment.first : segment.first + 10]
        raise KeyboardInterrupt

    monkeypatch.setattr(exporter._Segment, "blocks", failing_blocks)
    with pytest.raises(KeyboardInterrupt):
        zarr_aac.export(archive / "stereo", target, progress=False)
    assert target.read_bytes() == b"previous"
    assert list(tmp_path.iterdir()) == [target]


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 10**9), rate=st.sampled_from([8000, 44100, 250000]), data=st.data())
def test_sample_bounds(n, rate, data):
    first = data.draw(st.integers(0, n - 1))
    last = data.draw(st.integers(first + 1, n))
    assert sample_bounds(n, rate, first, last, "samples") == (first, last)
    assert sample_bounds(n, rate, None, None, "s") == (0, n)
    seconds = first / rate
    assert sample_bounds(n, rate, seconds, None, "s") == (first, n)
