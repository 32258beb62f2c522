"""Notebook display: ``zarr_aac.show`` of a recording, a selection or a DataArray renders a
spectrogram PNG with the tone in its brightest row and an audio player holding the samples;
large selections are reduced and say so."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
import soundfile
import zarr
from support.served import BAT_TONE_HZ, TONE_HZ, make_archive

pytest.importorskip("PIL")
from PIL import Image

import zarr_aac


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    return make_archive(tmp_path_factory.mktemp("display"))


def parts(view) -> tuple[np.ndarray, np.ndarray, int, str]:
    """(spectrogram luminance, audio samples, audio rate, html) of a view's HTML."""
    html = view._repr_html_()
    png = re.search(r'src="data:image/png;base64,([^"]+)"', html).group(1)
    wav = re.search(r'src="data:audio/wav;base64,([^"]+)"', html).group(1)
    image = np.asarray(Image.open(io.BytesIO(base64.b64decode(png))).convert("L"), dtype=np.float64)
    samples, rate = soundfile.read(io.BytesIO(base64.b64decode(wav)), dtype="int16")
    return image, samples, rate, html


def brightest_hz(image: np.ndarray, top_hz: float) -> float:
    row = int(np.argmax(image.mean(axis=1)))
    return top_hz * (1 - (row + 0.5) / image.shape[0])


def test_show_a_selection_of_a_recording(served):
    array = zarr.open_array(served.path / "birds", mode="r")
    view = zarr_aac.show(array, 1.0, 3.0, width=300, height=160)
    image, samples, rate, html = parts(view)
    assert image.shape == (160, 300)
    assert abs(brightest_hz(image, 16000) - TONE_HZ) < 2 * 16000 / 160
    assert rate == 32000
    np.testing.assert_array_equal(samples, array[32000:96000, 0])
    assert "<audio controls" in html and "reduced" not in html


def test_a_long_selection_is_reduced_and_says_so(served):
    array = zarr.open_array(served.path / "birds", mode="r")
    view = zarr_aac.show(array, max_audio_seconds=2.5, width=20, nfft=256)
    _, samples, _, html = parts(view)
    assert view.spectrogram.reduced and view.spectrogram.samples_read < array.shape[0] / 10
    assert len(samples) == 80000  # 2.5 s of 12
    np.testing.assert_array_equal(samples, array[:80000, 0])
    assert "spectrogram reduced" in html and "the first 2.5 s of 12 s" in html
    assert len(view.png) + len(view.wav) < 400_000


def test_ultrasonic_recording_shows_true_hz_and_plays_time_expanded(served):
    array = zarr.open_array(served.path / "bat", mode="r")
    view = zarr_aac.show(array, 0, 0.5, nfft=2048)
    image, samples, rate, html = parts(view)
    assert view.spectrogram.frequencies_hz[-1] == 125_000
    assert abs(brightest_hz(image, 125_000) - BAT_TONE_HZ) < 2 * 125_000 / image.shape[0]
    assert rate == 25_000 and len(samples) == 125_000
    assert "time-expanded 10x" in html


def test_show_a_data_array_selected_by_clock_time(served):
    dataset = zarr_aac.open_dataset(served.path, variable="stereo", chunks={})
    selection = dataset.audio.sel(time=slice("2025-06-10T05:00:31", "2025-06-10T05:00:32"))
    view = zarr_aac.show(selection, channel=1, width=100)
    image, samples, rate, _ = parts(view)
    assert rate == 48000
    array = zarr.open_array(served.path / "stereo", mode="r")
    np.testing.assert_array_equal(samples, array[48000 : 48000 + len(samples), 1])
    assert abs(len(samples) - 48000) <= 1
    assert abs(brightest_hz(image, 24000) - 6000) < 2 * 24000 / image.shape[0]


def test_show_refuses_what_it_cannot_draw(served):
    array = zarr.open_array(served.path / "birds", mode="r")
    with pytest.raises(ValueError, match="outside the recording"):
        zarr_aac.show(array, 5, 2)
    with pytest.raises(ValueError, match="channel 1 does not exist"):
        zarr_aac.show(array, 0, 1, channel=1)
    dataset = zarr_aac.open_dataset(served.path, variable="birds", chunks={})
    with pytest.raises(ValueError, match="select a DataArray"):
        zarr_aac.show(dataset.audio, 0, 1)
    bare = dataset.audio.copy()
    bare.attrs.clear()
    with pytest.raises(zarr_aac.errors.RecordingMetadataError, match="no sample_rate"):
        zarr_aac.show(bare)
