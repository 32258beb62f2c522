"""Rates AAC does not allow (bat detectors, 4-10 kHz loggers): time-stretched, exact at the true rate."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from scipy import signal

import zarr_aac
from zarr_aac.archive import importer
from zarr_aac.errors import UnsupportedAudioError


def strongest_frequency(x: np.ndarray, rate: int, above: float = 0.0) -> float:
    """Frequency (Hz) of the loudest spectrogram cell above ``above`` Hz, refined between bins."""
    f, _, power = signal.spectrogram(x, rate, nperseg=2048, noverlap=1024)
    power[f < above] = 0
    i, j = np.unravel_index(np.argmax(power), power.shape)
    if 0 < i < len(f) - 1:
        a, b, c = np.log(power[i - 1 : i + 2, j] + 1e-30)
        return float(f[i] + 0.5 * (a - c) / (a - 2 * b + c) * (f[1] - f[0]))
    return float(f[i])


def call_band_snr(x: np.ndarray, y: np.ndarray, rate: int, centre: float, half_width: float = 15_000) -> float:
    """SNR (dB) in a band around the call over the loudest tenth of the time frames."""
    f, _, sx = signal.stft(x, rate, nperseg=1024)
    _, _, sy = signal.stft(y, rate, nperseg=1024)
    band = np.abs(f - centre) < half_width
    power = np.abs(sx[band]) ** 2
    loud = power.sum(0) >= np.percentile(power.sum(0), 90)
    error = np.abs(sx[band] - sy[band]) ** 2
    return float(10 * np.log10(power[:, loud].sum() / error[:, loud].sum()))


def bat_calls(rate: int, seconds: float, high: float, low: float, seed: int = 0) -> np.ndarray:
    """Downward FM sweeps of 4 ms every 40 ms over faint noise, float32 mono."""
    rng = np.random.default_rng(seed)
    n = int(rate * seconds)
    x = 0.003 * rng.standard_normal(n)
    call = int(0.004 * rate)
    t = np.arange(call) / rate
    sweep = 0.5 * signal.chirp(t, f0=high, t1=t[-1], f1=low, method="hyperbolic") * np.hanning(call)
    for start in range(int(0.01 * rate), n - call, int(0.04 * rate)):
        x[start : start + call] += sweep
    return x.astype(np.float32)


def test_rate_mapping():
    assert importer.aac_rate_for(48000) == 48000
    assert importer.aac_rate_for(96000) == 48000
    assert importer.aac_rate_for(250000) == importer.ULTRASONIC_AAC_RATE == 48000
    assert importer.aac_rate_for(10000) == 11025
    assert importer.aac_rate_for(4000) == 8000


@pytest.mark.parametrize("rate", [192_000, 250_000, 384_000, 500_000])
def test_ultrasonic_tone_keeps_frequency_length_and_timing(rate, tmp_path):
    n = rate // 4 + 17
    t = np.arange(n) / rate
    tone = 0.38 * rate  # close to Nyquist: the band edge is the hard part
    x = (0.4 * np.sin(2 * np.pi * tone * t)).astype(np.float32)
    x[n // 3] = 0.9  # a click to check timing
    path = tmp_path / "bat.wav"
    sf.write(path, x, rate, subtype="PCM_16")
    z = zarr_aac.import_file(path, tmp_path / "a.zarr", progress=False)
    assert z.shape == (n, 1)
    assert z.attrs["sample_rate"] == rate == z.metadata.codecs[0].sample_rate
    assert z.attrs["aac"]["sample_rate"] == 48000
    y = z[:, 0].astype(np.float32) / 32768
    assert strongest_frequency(y, rate) == pytest.approx(tone, rel=0.01)
    # the click stays on its sample: the decoded signal minus the tone peaks there
    residual = np.abs(y - 0.4 * np.sin(2 * np.pi * tone * t))
    assert abs(int(np.argmax(residual)) - n // 3) <= 2


def test_bat_calls_kept_across_the_whole_band(tmp_path):
    rate = 250_000
    x = bat_calls(rate, 0.3, high=110_000, low=40_000)
    path = tmp_path / "calls.wav"
    sf.write(path, x, rate, subtype="PCM_16")
    z = zarr_aac.import_file(path, tmp_path / "a.zarr", progress=False)
    y = z[:, 0].astype(np.float32) / 32768
    for above in (0.0, 90_000.0):
        assert strongest_frequency(y, rate, above) == pytest.approx(strongest_frequency(x, rate, above), rel=0.01)
    assert call_band_snr(x, y, rate, centre=75_000, half_width=35_000) > 15


def test_low_rate_three_channels(tmp_path):
    rate = 10_000
    t = np.arange(rate) / rate
    x = np.stack([0.3 * np.sin(2 * np.pi * f * t) for f in (600.0, 1500.0, 3200.0)], axis=1).astype(np.float32)
    path = tmp_path / "fly.wav"
    sf.write(path, x, rate, subtype="PCM_16")
    z = zarr_aac.import_file(path, tmp_path / "a.zarr", progress=False)
    assert z.shape == (rate, 3) and z.attrs["aac"]["sample_rate"] == 11025
    for ch, f in enumerate((600.0, 1500.0, 3200.0)):
        assert strongest_frequency(z[:, ch].astype(np.float32), rate) == pytest.approx(f, rel=0.01)


def test_explicit_aac_rate_and_bad_one(tmp_path):
    rate = 192_000
    path = tmp_path / "bat.wav"
    sf.write(path, bat_calls(rate, 0.1, 80_000, 30_000), rate, subtype="PCM_16")
    z = zarr_aac.import_file(path, tmp_path / "a.zarr", aac_sample_rate=96000, progress=False)
    assert z.attrs["aac"]["sample_rate"] == 96000 == z.metadata.codecs[0].aac_sample_rate
    with pytest.raises(UnsupportedAudioError, match="not an AAC sample rate"):
        zarr_aac.import_file(path, tmp_path / "b.zarr", aac_sample_rate=50000, progress=False)


@pytest.mark.parametrize("name", ["bat_audiomoth_250k.wav", "bat_192k.wav"])
def test_real_bat_recordings(name, shared_audio, tmp_path):
    """Strongest call component within 1 %, and the SNR in the call band (docs/importing.md)."""
    x, rate = sf.read(shared_audio / name, dtype="float32")
    z = zarr_aac.import_file(shared_audio / name, tmp_path / "a.zarr", progress=False)
    assert z.shape == (len(x), 1)
    y = z[:, 0].astype(np.float32) / 32768
    source_peak = strongest_frequency(x, rate, above=10_000)
    assert strongest_frequency(y, rate, above=10_000) == pytest.approx(source_peak, rel=0.01)
    assert call_band_snr(x, y, rate, centre=source_peak) > 20
    assert z.nbytes_stored() < 0.25 * x.size * 2
