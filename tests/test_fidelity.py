"""The stored signal against its source at default settings: band, headroom, ultrasonic calls,
acoustic indices, size, and the fidelity report of every import (docs/fidelity.md)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import zarr
from scipy import signal
from support.media import ffmpeg_decode, probe_channels, require_tool

import zarr_aac
from zarr_aac.archive import fidelity
from zarr_aac.archive.fidelity import FidelityReport, preview
from zarr_aac.cli import main
from zarr_aac.codec import aac
from zarr_aac.codec.aac_codec import gain_for_peak
from zarr_aac.errors import SourceError

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")
"""scikit-maad divides by zero in log10 on silent spectrogram cells."""


def pink(n: int, rate: int, channels: int = 1, rms: float = 0.1, seed: int = 0) -> np.ndarray:
    """Pink noise (-3 dB an octave from 20 Hz up) at ``rms`` full scale, float32 (n, channels)."""
    rng = np.random.default_rng(seed)
    freqs = np.fft.rfftfreq(n, 1 / rate)
    shape = np.zeros_like(freqs)
    shape[freqs >= 20] = 1 / np.sqrt(freqs[freqs >= 20])
    out = np.empty((n, channels), np.float32)
    for c in range(channels):
        x = np.fft.irfft(np.fft.rfft(rng.standard_normal(n)) * shape, n)
        out[:, c] = x / np.sqrt(np.mean(x**2)) * rms
    return out


def third_octave_errors_db(x: np.ndarray, y: np.ndarray, rate: int, top_fraction: float = 0.85) -> np.ndarray:
    """Stored minus source power (dB) in every third-octave band from 50 Hz whose upper edge is at or
    below ``top_fraction`` x Nyquist, channels pooled; bands more than 60 dB below the loudest skipped."""
    nperseg = min(int(2 ** np.ceil(np.log2(rate / 4))), len(x) // 4)
    f, px = signal.welch(x, rate, nperseg=nperseg, axis=0)
    _, py = signal.welch(y, rate, nperseg=nperseg, axis=0)
    centres = 1000 * 2 ** (np.arange(-30, 60) / 3)
    centres = centres[(centres >= 50) & (centres * 2 ** (1 / 6) <= top_fraction * rate / 2)]
    source, stored = [], []
    for c in centres:
        band = (f >= c * 2 ** (-1 / 6)) & (f < c * 2 ** (1 / 6))
        if band.any():
            source.append(px[band].sum())
            stored.append(py[band].sum())
    source, stored = np.array(source), np.array(stored)
    occupied = source > source.max() * 1e-6
    return 10 * np.log10(stored[occupied] / source[occupied])


def snr_db(x: np.ndarray, y: np.ndarray) -> float:
    x = np.asarray(x, np.float64)
    return float(10 * np.log10(np.sum(x**2) / np.sum((x - y) ** 2)))


def import_signal(tmp_path: Path, x: np.ndarray, rate: int, subtype: str = "PCM_16", **options) -> zarr.Array:
    """``x`` written as a WAV file and imported with the importer's defaults (and ``options``)."""
    path = tmp_path / f"source_{rate}.wav"
    sf.write(path, x, rate, subtype=subtype)
    return zarr_aac.import_file(path, tmp_path / "a.zarr", progress=False, **options)


def stored_float(z: zarr.Array) -> np.ndarray:
    return aac.from_dtype(z[:])


# 1. Full band ---------------------------------------------------------------------------------

FAST_RATES = [8000, 16000, 44100, 48000, 64000, 96000, 250000]
SLOW_RATES = [11025, 22050, 32000, 88200, 192000, 312500, 384000, 500000]


@pytest.mark.parametrize(
    ("rate", "channels"),
    [(r, 1) for r in FAST_RATES]
    + [pytest.param(r, 1, marks=pytest.mark.slow) for r in SLOW_RATES]
    + [(64000, 2), (96000, 2), pytest.param(88200, 2, marks=pytest.mark.slow)],
)
def test_full_band_at_defaults(rate, channels, tmp_path):
    """Every third-octave band from 50 Hz to 0.85 x Nyquist within 3 dB of the source (pink noise)."""
    x = pink(rate // 2, rate, channels)
    z = import_signal(tmp_path, x, rate)
    x16 = aac.from_dtype(aac.to_dtype(x.copy(), np.dtype("int16")))
    errors = third_octave_errors_db(x16, stored_float(z), rate)
    assert errors.size > 10
    assert np.abs(errors).max() <= 3.0, errors.round(1)
    assert z.attrs["fidelity"]["bandwidth_hz"] >= 0.85 * rate / 2


def test_rates_declared_at_half():
    from zarr_aac.archive import importer

    assert [importer.aac_rate_for(r) for r in (64000, 88200, 96000, 192000, 48000, 10000)] == [
        32000,
        44100,
        48000,
        48000,
        48000,
        11025,
    ]


def test_codec_codes_the_whole_band_at_its_own_rate():
    """The encoder's cutoff defaults to the declared Nyquist frequency: 96 kHz declared as such
    keeps 24-40 kHz (FFmpeg's automatic low-pass stops near 24 kHz)."""
    rate = 96000
    x = pink(rate // 2, rate)
    codec = zarr_aac.AACCodec(sample_rate=rate, bitrate=192_000)
    y = codec.decode_chunk(codec.encode_pcm(x), x.shape, np.dtype("float32"))
    assert np.abs(third_octave_errors_db(x, y, rate)).max() <= 3.0
    low_passed = zarr_aac.AACCodec(sample_rate=rate, bitrate=192_000, cutoff=20_000)
    y = low_passed.decode_chunk(low_passed.encode_pcm(x), x.shape, np.dtype("float32"))
    assert third_octave_errors_db(x, y, rate).min() < -20


@pytest.mark.parametrize(("cutoff", "expected_db"), [(None, 0.8), (18_000, -13.7), (17_000, -62.2)])
def test_cutoff_empties_the_band_above_it(cutoff, expected_db):
    """What the codec's cutoff costs material that reaches the top (docs/fidelity.md, "What the
    full band costs music"): the 20 kHz third-octave band of pink noise at 48 kHz, stereo, 160 kbps."""
    rate = 48000
    x = pink(4 * rate, rate, channels=2)
    codec = zarr_aac.AACCodec(sample_rate=rate, bitrate=160_000, gain=0.25, cutoff=cutoff)
    y = codec.decode_chunk(codec.encode_pcm(aac.to_dtype(x, np.dtype("int16"))), x.shape, np.dtype("float32"))
    f, source = signal.welch(x.astype(np.float64), rate, nperseg=4096, axis=0)
    _, stored = signal.welch(y.astype(np.float64), rate, nperseg=4096, axis=0)
    band = (f >= 20000 * 2 ** (-1 / 6)) & (f < 20000 * 2 ** (1 / 6))
    change_db = 10 * np.log10(stored[band].sum() / source[band].sum())
    assert change_db == pytest.approx(expected_db, abs=1.5)


# 2. Headroom ----------------------------------------------------------------------------------


def int16_array(gain: float | None = None) -> zarr.Array:
    return zarr.create_array(
        zarr.storage.MemoryStore(),
        shape=(48000, 1),
        chunks=(48000, 1),
        dtype="int16",
        serializer=zarr_aac.AACCodec(sample_rate=48000, bitrate=128_000, gain=gain),
        compressors=None,
        fill_value=0,
    )


def float32_array(gain: float | None = None) -> zarr.Array:
    return zarr.create_array(
        zarr.storage.MemoryStore(),
        shape=(48000, 1),
        chunks=(48000, 1),
        dtype="float32",
        serializer=zarr_aac.AACCodec(sample_rate=48000, bitrate=128_000, gain=gain),
        compressors=None,
        fill_value=0,
    )


def sine(amplitude: float, n: int = 48000, rate: int = 48000, freq: float = 1000.0) -> np.ndarray:
    return amplitude * np.sin(2 * np.pi * freq * np.arange(n) / rate)[:, None]


def int16_sine_snr(amplitude: float, gain: float | None = None) -> float:
    x = np.round(sine(amplitude) * 32767).astype(np.int16)
    z = int16_array(gain)
    z[:] = x
    return snr_db(x, z[:])


def test_int16_full_scale_keeps_the_snr_of_half_scale():
    assert int16_array().metadata.codecs[0].gain == 0.25
    half = int16_sine_snr(0.5)
    for amplitude in (0.99, 1.0):
        assert int16_sine_snr(amplitude) >= half - 1.0, amplitude
    assert int16_sine_snr(1.0, gain=1.0) < half - 10  # what arrays without a gain did


def test_int16_output_clips_only_what_exceeds_int16():
    gain = np.float32(0.25)
    decoded = np.array([[-1.5], [-1.0], [0.6], [0.99], [1.2]], np.float32) * gain
    out = aac.to_dtype(decoded, np.dtype("int16"), gain=float(gain))
    np.testing.assert_array_equal(out[:, 0], [-32768, -32768, 19661, 32440, 32767])


def tonal(peak: float) -> np.ndarray:
    """Two tones and their overs: a high-SNR signal whose peak is ``peak`` exactly."""
    t = np.arange(48000) / 48000
    x = np.sin(2 * np.pi * 440 * t) + 0.5 * np.sin(2 * np.pi * 1330 * t)
    return (x / np.abs(x).max() * peak).astype(np.float32)[:, None]


def float_peak_and_snr(peak: float, gain: float | None = None) -> tuple[float, float]:
    x = tonal(peak)
    z = float32_array(gain)
    z[:] = x
    y = z[:]
    return float(20 * np.log10(np.abs(y).max() / peak)), snr_db(x, y)


def test_float32_overs_up_to_12_dbfs_keep_peak_and_snr():
    assert float32_array().metadata.codecs[0].gain == 0.0625
    _, reference_snr = float_peak_and_snr(0.5)
    for peak in (1.0, 1.96, 4.0):
        peak_error, snr = float_peak_and_snr(peak)
        assert abs(peak_error) <= 0.5, (peak, peak_error)
        assert snr >= reference_snr - 1.0, (peak, snr, reference_snr)
    peak_error, snr = float_peak_and_snr(4.0, gain=1.0)
    assert snr < reference_snr - 10


def test_gain_for_peak():
    assert [gain_for_peak(p) for p in (0.0, 0.01, 0.25, 0.26, 0.5, 0.99, 1.0, 1.96, 4.0, 1e9, np.inf)] == [
        1.0,
        1.0,
        1.0,
        0.5,
        0.5,
        0.25,
        0.25,
        0.125,
        0.0625,
        2.0**-16,
        2.0**-16,
    ]


@pytest.mark.parametrize(("amplitude", "gain"), [(0.1, 1.0), (0.5, 0.5), (1.0, 0.25)])
def test_import_gain_follows_the_source_peak(amplitude, gain, tmp_path):
    """A quiet recording reaches the encoder at the level a full-scale one does: a 0.1 FS tone
    codes at 56.6 dB with gain 1, 46.9 dB with the fixed int16 gain of 0.25."""
    x = np.round(sine(amplitude) * 32767).astype(np.int16)
    z = import_signal(tmp_path, x, 48000, bitrate=128_000)
    assert z.metadata.codecs[0].gain == gain
    assert snr_db(x, z[:]) >= 55.0


@pytest.mark.parametrize(("peak", "gain"), [(0.2, 1.0), (1.96, 0.125), (4.0, 0.0625), (8.0, 0.03125)])
def test_import_gain_keeps_float_overs(peak, gain, tmp_path):
    x = tonal(peak)
    z = import_signal(tmp_path, x, 48000, subtype="FLOAT", bitrate=128_000)
    assert z.metadata.codecs[0].gain == gain
    y = z[:]
    assert abs(20 * np.log10(np.abs(y).max() / peak)) <= 0.5
    assert snr_db(x, y) >= 50.0


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_import_refuses_non_finite_samples_after_the_peak_scan(bad, tmp_path):
    """The scan for the peak meets them first and must leave the refusal to the import."""
    x = tonal(0.5)
    x[30000, 0] = bad
    with pytest.raises(SourceError, match="NaN or infinite samples near sample 2"):
        import_signal(tmp_path, x, 48000, subtype="FLOAT")


def test_gain_configuration():
    codec = zarr_aac.AACCodec(sample_rate=48000, gain=0.25, cutoff=20000)
    assert codec.to_dict()["configuration"]["gain"] == 0.25
    assert codec.to_dict()["configuration"]["cutoff"] == 20000
    assert zarr_aac.AACCodec.from_dict(codec.to_dict()) == codec
    unset = zarr_aac.AACCodec(sample_rate=48000)
    assert zarr_aac.AACCodec.from_dict(unset.to_dict()) == unset
    legacy = {"name": "zarr_aac", "configuration": {"sample_rate": 48000, "aac_sample_rate": 48000}}
    assert zarr_aac.AACCodec.from_dict(legacy).gain == 1.0
    for bad in (0.3, 2.0, 0, -0.5, True, "0.5", float("nan"), 2.0**-17):
        with pytest.raises(ValueError, match="gain must be a power of two"):
            zarr_aac.AACCodec(sample_rate=48000, gain=bad)
    with pytest.raises(ValueError, match="cutoff"):
        zarr_aac.AACCodec(sample_rate=48000, cutoff=24001)


# 3. Ultrasonic --------------------------------------------------------------------------------


def calls(rate: int, kind: str, seed: int = 0) -> np.ndarray:
    """One second of FM sweeps (0.42 x rate or 80 kHz down to 20 kHz in 5 ms) or 40 kHz
    constant-frequency calls (10 ms), every 50 ms, on a -60 dBFS noise floor."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(rate) * 1e-3
    period = int(0.05 * rate)
    duration = 0.005 if kind == "fm" else 0.010
    f0, f1 = (min(80000, 0.42 * rate), 20000) if kind == "fm" else (40000, 40000)
    m = int(duration * rate)
    t = np.arange(m) / rate
    phase = 2 * np.pi * (f0 * t + 0.5 * (f1 - f0) / duration * t**2)
    for start in range(int(0.01 * rate), rate - period, period):
        x[start : start + m] += 0.3 * np.hanning(m) * np.sin(phase)
    return x.astype(np.float32)


def peak_frequency(frame: np.ndarray, rate: int, nfft: int = 1 << 14) -> float:
    spectrum = np.abs(np.fft.rfft(frame * np.hanning(len(frame)), nfft))
    k = int(np.argmax(spectrum[1:-1])) + 1
    a, b, c = np.log(spectrum[k - 1 : k + 2] + 1e-30)
    offset = 0.5 * (a - c) / (a - 2 * b + c) if a - 2 * b + c else 0.0
    return (k + offset) * rate / nfft


def call_frames(x: np.ndarray, y: np.ndarray, rate: int, band: tuple[float, float]) -> tuple[float, float]:
    """Percentage of 0.5 ms call frames (20 dB above the median frame in the call band) whose
    strongest component is within 1 % of the source's, and the call-band SNR over those frames."""
    sos = signal.butter(8, band, "bandpass", fs=rate, output="sos")
    xb = signal.sosfiltfilt(sos, np.asarray(x, np.float64))
    yb = signal.sosfiltfilt(sos, np.asarray(y, np.float64))
    length = max(64, int(0.0005 * rate))
    frames_x = xb[: len(xb) // length * length].reshape(-1, length)
    frames_y = yb[: len(yb) // length * length].reshape(-1, length)
    energy = (frames_x**2).sum(1)
    loud = np.flatnonzero(energy > 100 * np.median(energy))
    assert loud.size > 10
    errors = np.array([peak_frequency(frames_y[i], rate) / peak_frequency(frames_x[i], rate) - 1 for i in loud])
    snr = snr_db(frames_x[loud], frames_y[loud])
    return float(np.mean(np.abs(errors) <= 0.01) * 100), snr


@pytest.mark.parametrize("kind", ["fm", "cf"])
@pytest.mark.parametrize(
    "rate",
    [96000, 250000, pytest.param(192000, marks=pytest.mark.slow)]
    + [pytest.param(r, marks=pytest.mark.slow) for r in (312500, 384000, 500000)],
)
def test_ultrasonic_calls_at_defaults(rate, kind, tmp_path):
    x = calls(rate, kind)
    z = import_signal(tmp_path, x, rate)
    within, snr = call_frames(x, stored_float(z)[:, 0], rate, (15000, min(85000, 0.45 * rate)))
    assert within >= 95
    assert snr >= 25


@pytest.mark.parametrize("name", ["bat_192k.wav", "bat_audiomoth_250k.wav"])
def test_real_bat_calls_at_defaults(name, shared_audio, tmp_path):
    x, rate = sf.read(shared_audio / name, dtype="float32")
    z = zarr_aac.import_file(shared_audio / name, tmp_path / "a.zarr", progress=False)
    within, snr = call_frames(x, stored_float(z)[:, 0], rate, (15000, min(100000, 0.45 * rate)))
    assert within >= 95
    assert snr >= 25


# 4. Acoustic indices --------------------------------------------------------------------------


def acoustic_indices(x: np.ndarray, rate: int) -> dict[str, float]:
    """The package's scikit-maad indices (the ones the quality report prints); skips without maad."""
    pytest.importorskip("maad")
    return fidelity.acoustic_indices(x, rate)


def index_changes(x: np.ndarray, y: np.ndarray, rate: int) -> dict[str, float]:
    """Percentage change of each index from source ``x`` to stored ``y``."""
    source, stored = acoustic_indices(x, rate), acoustic_indices(y, rate)
    return {k: 100 * (stored[k] - source[k]) / abs(source[k]) for k in source}


def soundscape(rate: int = 32000, seconds: float = 6.0, seed: int = 1) -> np.ndarray:
    """Pink background, bird-like chirps at 2-8 kHz and an insect chorus near 5 kHz."""
    rng = np.random.default_rng(seed)
    n = int(rate * seconds)
    x = pink(n, rate, rms=0.01, seed=seed)[:, 0].astype(np.float64)
    t = np.arange(n) / rate
    x += 0.01 * np.sin(2 * np.pi * 5200 * t) * (1 + np.sin(2 * np.pi * 30 * t))
    for _ in range(40):
        start = rng.integers(0, n - rate // 5)
        m = int(rate * rng.uniform(0.05, 0.2))
        f0, f1 = rng.uniform(2000, 8000, 2)
        tt = np.arange(m) / rate
        chirp = signal.chirp(tt, f0=f0, t1=tt[-1], f1=f1) * np.hanning(m)
        x[start : start + m] += rng.uniform(0.05, 0.3) * chirp
    return x.astype(np.float32)


def test_indices_kept_on_a_soundscape(tmp_path):
    x = soundscape()
    z = import_signal(tmp_path, x, 32000)
    x16 = aac.from_dtype(aac.to_dtype(x[:, None].copy(), np.dtype("int16")))[:, 0]
    changes = index_changes(x16, stored_float(z)[:, 0], 32000)
    assert max(abs(v) for v in changes.values()) <= 5, changes


INDEX_FILES = [
    "field_recording_96k_24bit.wav",
    "forest_birds_soundscape_32k.wav",
    "bengalese_finch_song_32k.wav",
    "bat_audiomoth_250k.wav",
    "frogs_pond_storm_44k1_stereo.ogg",
    "bat_192k.wav",
    "fruitfly_song_10k_3ch.wav",
    "monkeys_8k.wav",
]
MISSED_AT_DEFAULTS = {"monkeys_8k.wav": ("BI", 10.9), "fruitfly_song_10k_3ch.wav": ("AEI", 9.4)}
"""The two indices that miss +-5 % at the defaults and their change in % (docs/fidelity.md, "Where
+-5 % is not reached"). FFmpeg's encoder is deterministic, so the change is pinned within
MISSED_TOLERANCE both ways: growing is a regression, shrinking makes the page wrong."""
MISSED_TOLERANCE = 1.0


@pytest.mark.slow
@pytest.mark.parametrize("name", INDEX_FILES)
def test_indices_kept_on_shared_recordings(name, shared_audio, tmp_path):
    z = zarr_aac.import_file(shared_audio / name, tmp_path / "a.zarr", progress=False)
    x = decoded_source(shared_audio / name)
    changes = index_changes(x, stored_float(z), z.attrs["sample_rate"])
    missed, measured = MISSED_AT_DEFAULTS.get(name, (None, None))
    assert all(abs(v) <= 5 for k, v in changes.items() if k != missed), changes
    if missed is not None:
        assert changes[missed] == pytest.approx(measured, abs=MISSED_TOLERANCE), changes


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "index", "expected"),
    [
        # twoloop, the mono coder, never reaches +-5 %, up to the 48 kbps AAC carries at 8 kHz
        ("monkeys_8k.wav", "BI", {24_000: 10.9, 32_000: 10.7, 48_000: 11.4}),
        # every index within +-5 % at 104 and 110 kbps; above, BI moves and the size passes half the FLAC
        ("fruitfly_song_10k_3ch.wav", "AEI", {104_000: -2.9, 110_000: -0.1, 120_000: 2.1}),
        ("fruitfly_song_10k_3ch.wav", "BI", {104_000: -4.0, 110_000: 1.9, 120_000: 10.0}),
    ],
)
def test_missed_indices_against_the_bitrate(name, index, expected, shared_audio):
    """The bitrates of docs/fidelity.md's table for the two misses, as ``zarr-aac quality`` measures them."""
    pytest.importorskip("maad")
    _, previews = preview(shared_audio / name, list(expected), seconds=600)
    measured = {p.bitrate: p.index_changes[index] for p in previews}
    assert measured == pytest.approx(expected, abs=MISSED_TOLERANCE)
    if name.startswith("fruitfly"):
        at_110 = next(p for p in previews if p.bitrate == 110_000)
        assert all(abs(v) <= 5 for v in at_110.index_changes.values()), at_110.index_changes


def perturbed(x: np.ndarray, how: str) -> np.ndarray:
    """``x`` (float32 of int16 values) changed in a way a lossless coder would also make, or in its
    lowest bit only."""
    if how == "15-bit copy":
        return np.round(x * 16384) / 16384
    if how == "noise at -100 dBFS":
        return x + 1e-5 * np.random.default_rng(0).standard_normal(x.shape).astype(np.float32)
    if how.startswith("delayed by "):
        return np.concatenate([np.zeros((int(how.split()[2]), x.shape[1]), np.float32), x])
    raise ValueError(how)


@pytest.mark.parametrize(
    ("name", "index", "how", "expected"),
    [
        ("monkeys_8k.wav", "BI", "15-bit copy", -8.4),
        ("monkeys_8k.wav", "BI", "noise at -100 dBFS", -2.4),
        ("monkeys_8k.wav", "BI", "delayed by 64 samples", -0.1),
        ("fruitfly_song_10k_3ch.wav", "AEI", "15-bit copy", -0.7),
        ("fruitfly_song_10k_3ch.wav", "AEI", "delayed by 64 samples", -16.6),
        ("fruitfly_song_10k_3ch.wav", "AEI", "delayed by 128 samples", -52.6),
    ],
)
def test_missed_indices_are_fragile_on_their_recordings(name, index, how, expected, shared_audio):
    """Why the two indices miss: monkeys' BI moves with the lowest bit of the source (its minimum lies
    7.6 dB above int16's rounding floor), fruit fly's AEI with where the spectrogram's frames fall."""
    x = decoded_source(shared_audio / name)
    rate = sf.info(str(shared_audio / name)).samplerate
    before, after = acoustic_indices(x, rate)[index], acoustic_indices(perturbed(x, how), rate)[index]
    assert 100 * (after - before) / abs(before) == pytest.approx(expected, abs=MISSED_TOLERANCE)


def decoded_source(path: Path) -> np.ndarray:
    """The source as float32 (n, channels), decoded by FFmpeg's command-line tool."""
    channels = probe_channels(path)
    assert channels is not None, f"ffprobe finds no audio stream in {path}"
    return ffmpeg_decode(require_tool("ffmpeg"), path, channels)


# 5. Size --------------------------------------------------------------------------------------

SIZE_FILES = [
    "bat_192k.wav",
    "bat_audiomoth_250k.wav",
    "bengalese_finch_song_32k.wav",
    "crow_44k1.flac",
    "field_recording_96k_24bit.wav",
    "forest_birds_soundscape_32k.wav",
    "frogs_pond_storm_44k1_stereo.ogg",
    "fruitfly_song_10k_3ch.wav",
    "monkeys_8k.wav",
    "music_lena_44k1.m4a",
    "music_lena_44k1_adts.aac",
    "speech_front_center_48k.wav",
]


@pytest.mark.slow
@pytest.mark.parametrize("name", SIZE_FILES)
def test_default_size_is_at_most_half_the_flac(name, shared_audio, tmp_path, ffmpeg):
    """The stored chunks against the same file as FLAC (24-bit for a 24-bit source, else 16-bit).
    Chunks, not the array's metadata document: for the 0.48 s crow its attributes (about 2.7 kB)
    weigh as much as a third of the audio."""
    source = shared_audio / name
    z = zarr_aac.import_file(source, tmp_path / "a.zarr", progress=False)
    flac = tmp_path / "same.flac"
    bits = "s32" if name.endswith("24bit.wav") else "s16"
    subprocess.run(
        [ffmpeg, "-v", "error", "-i", str(source), "-c:a", "flac", "-sample_fmt", bits, str(flac)], check=True
    )
    chunk_bytes = sum(f.stat().st_size for f in (tmp_path / "a.zarr" / z.basename / "c").rglob("*") if f.is_file())
    assert chunk_bytes <= 0.5 * flac.stat().st_size


# 6. The fidelity report -----------------------------------------------------------------------


def test_report_of_an_import_matches_an_independent_measurement(tmp_path):
    rate = 48000
    x = pink(rate, rate, channels=2) * 3
    z = import_signal(tmp_path, x, rate, subtype="FLOAT")
    report = z.attrs["fidelity"]
    y = z[:]
    assert report["snr_db"] == pytest.approx(snr_db(x, y), abs=0.1)
    assert report["input_peak_dbfs"] == pytest.approx(20 * np.log10(np.abs(x).max()), abs=0.1)
    assert report["output_peak_dbfs"] == pytest.approx(20 * np.log10(np.abs(y).max()), abs=0.1)
    assert report["clipped_samples"] == 0
    chunk_bytes = sum(f.stat().st_size for f in (tmp_path / "a.zarr" / z.basename / "c").rglob("*") if f.is_file())
    assert report["size_pct_pcm16"] == pytest.approx(100 * chunk_bytes / (x.size * 2), abs=0.5)
    assert report["bandwidth_hz"] == rate / 2 == report["nyquist_hz"]
    bands = report["bands"]
    assert [b["low_hz"] for b in bands][:3] == [0.0, 250.0, 500.0]
    assert bands[-1]["high_hz"] == rate / 2
    f, source_psd = signal.welch(x, rate, nperseg=4096, axis=0)
    _, error_psd = signal.welch(y - x, rate, nperseg=4096, axis=0)
    for band in bands[1:]:
        inside = (f >= band["low_hz"]) & (f < band["high_hz"])
        welch_snr = 10 * np.log10(source_psd[inside].sum() / error_psd[inside].sum())
        assert band["snr_db"] == pytest.approx(welch_snr, abs=1.0), band
    assert zarr_aac.open_recording(tmp_path / "a.zarr" / z.basename).attrs["fidelity"] == report


def test_report_counts_samples_the_dtype_cannot_hold(tmp_path):
    x = np.zeros((48000, 1), np.float32)
    x[1000:1100] = 1.5
    x[2000:2010] = -1.25
    z = import_signal(tmp_path, x, 48000, subtype="FLOAT", dtype="int16")
    assert z.attrs["fidelity"]["clipped_samples"] == 110
    assert z.attrs["fidelity"]["input_peak_dbfs"] == pytest.approx(20 * np.log10(1.5), abs=0.1)


def test_report_bandwidth_and_band_snr():
    rate = 48000
    x = pink(8 * 4096, rate)
    sos = signal.butter(12, 10_000, fs=rate, output="sos")
    low_passed = signal.sosfilt(sos, x, axis=0).astype(np.float32)
    report = FidelityReport(rate, 1, clip_level=1.0)
    report.add(x, low_passed)
    assert 8000 <= report.result(0)["bandwidth_hz"] <= 10_500
    quieter = FidelityReport(rate, 1, clip_level=1.0)
    quieter.add(x, x * 0.9)
    result = quieter.result(1000)
    assert result["snr_db"] == pytest.approx(20.0, abs=0.05)
    assert all(b["snr_db"] == pytest.approx(20.0, abs=0.05) for b in result["bands"])
    assert result["bandwidth_hz"] == rate / 2
    silent = FidelityReport(rate, 1, clip_level=1.0)
    silent.add(np.zeros((5000, 1), np.float32), np.zeros((5000, 1), np.float32))
    assert silent.result(10)["snr_db"] is None
    json.dumps(silent.result(10), allow_nan=False)


def test_cli_info_and_ls_show_the_report(tmp_path, capsys):
    z = import_signal(tmp_path, pink(48000, 48000), 48000)
    assert main(["info", str(tmp_path / "a.zarr" / z.basename)]) == 0
    out = capsys.readouterr().out
    assert f"SNR {z.attrs['fidelity']['snr_db']:.1f} dB" in out
    assert "bandwidth 24.0 kHz" in out
    assert main(["ls", str(tmp_path / "a.zarr")]) == 0
    header, row = capsys.readouterr().out.splitlines()[:2]
    assert "snr_db" in header
    assert f"{z.attrs['fidelity']['snr_db']:.1f}" in row.split()


def test_quality_preview_is_what_the_import_stores(tmp_path):
    path = tmp_path / "source.wav"
    # 10 s, so the array's metadata (which the preview leaves out) is a small part of its size
    sf.write(path, soundscape(seconds=10.0), 32000, subtype="PCM_16")
    layout, (default, other) = preview(path, [None, 64_000])
    z = zarr_aac.import_file(path, tmp_path / "a.zarr", progress=False)
    assert layout["default_bitrate"] == default.bitrate == z.metadata.codecs[0].bitrate
    stored = z.attrs["fidelity"]
    assert {k: v for k, v in default.report.items() if k != "size_pct_pcm16"} == {
        k: v for k, v in stored.items() if k != "size_pct_pcm16"
    }
    assert default.report["size_pct_pcm16"] == pytest.approx(stored["size_pct_pcm16"], abs=0.5)
    source, _ = sf.read(path, dtype="float32", always_2d=True)
    before, after = fidelity.acoustic_indices(source, 32000), fidelity.acoustic_indices(stored_float(z), 32000)
    expected = {k: 100 * (after[k] - v) / abs(v) for k, v in before.items()}
    assert default.index_changes == pytest.approx(expected, rel=1e-9, abs=1e-9)
    assert other.bitrate == 64_000 and not other.is_default
    assert other.report["size_pct_pcm16"] < default.report["size_pct_pcm16"]


def test_cli_quality_writes_nothing(tmp_path, capsys):
    path = tmp_path / "source.wav"
    sf.write(path, soundscape(seconds=3.0), 32000, subtype="PCM_16")
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["quality", str(path), "--bitrates", "64000", "96000"]) == 0
    out = capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert "64 kbps" in out and "96 kbps" in out
    for index in ("ACI", "ADI", "AEI", "BI", "NDSI", "Ht", "Hf"):
        assert index in out
    assert "SNR" in out
