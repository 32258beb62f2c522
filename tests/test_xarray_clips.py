"""``zarr_aac.dataset.read_clips`` against xarray's own selection by label and position on the
same dataset, and against the full sequential decode of the stored chunks."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from support.selections import reference_decode
from test_xarray import RATE, START_NS, write_recording

import zarr_aac
from zarr_aac.dataset import read_clips
from zarr_aac.errors import TimeLabelError


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    path = tmp_path_factory.mktemp("clips") / "rec.zarr"
    array = write_recording(str(path))
    return path, reference_decode(array)


def clock(ns_offsets) -> np.ndarray:
    return (START_NS + np.asarray(ns_offsets, dtype=np.int64)).astype("datetime64[ns]")


def position_of(instant: np.datetime64) -> int:
    """The sample whose instant this is (a sample lasts a whole number of ns at RATE)."""
    return int((instant - clock(0)) // np.timedelta64(10**9 // RATE, "ns"))


@pytest.mark.parametrize("method", ["bfill", "nearest", "pad"])
def test_clips_at_clock_times_equal_xarrays_own_selection(recording, method):
    path, reference = recording
    audio = zarr_aac.open_dataset(path).audio
    rng = np.random.default_rng(4)
    times = clock(rng.integers(0, 10 * 10**9, size=30))
    times[0] = clock(4 * 10**9 - 1)  # just before a chunk boundary, so the clip spans two chunks
    clips = read_clips(audio, times, 0.5, method=method)
    assert clips.dims == ("clip", "sample", "channel")
    assert clips.shape == (30, RATE // 2, 2)
    for i, t in enumerate(times):
        expected = audio.sel(time=t, method=method).time.values
        position = position_of(expected)
        np.testing.assert_array_equal(clips[i].values, reference[position : position + RATE // 2])
        assert clips.start.values[i] == expected


def test_clips_from_a_slice_of_the_recording_and_one_channel(recording):
    path, reference = recording
    audio = zarr_aac.open_dataset(path).audio.isel(time=slice(RATE * 3, None), channel=1)
    times = clock([3 * 10**9, 5 * 10**9 + 12345, 11 * 10**9])
    clips = read_clips(audio, times, "250ms", method="nearest")
    for i, t in enumerate(times):
        position = position_of(audio.sel(time=t, method="nearest").time.values)
        np.testing.assert_array_equal(clips[i].values, reference[position : position + RATE // 4, 1])


def test_clips_past_the_end_or_at_no_sample_are_refused(recording):
    path, _ = recording
    audio = zarr_aac.open_dataset(path).audio
    with pytest.raises(ValueError, match=r"clip 1 .* runs past the end"):
        read_clips(audio, clock([0, 11_900_000_000]), 0.5)
    with pytest.raises(TimeLabelError):
        read_clips(audio, clock([1]), 0.5, method=None)
    with pytest.raises(ValueError, match="under one sample"):
        read_clips(audio, clock([0]), 0.00001)


def test_a_dask_backed_or_loaded_variable_is_refused_with_the_way_out(recording):
    path, _ = recording
    with pytest.raises(ValueError, match="without chunks="):
        read_clips(zarr_aac.open_dataset(path, chunks={}).audio, clock([0]), 0.5)
    loaded = xr.DataArray(np.zeros((100, 2)), dims=("time", "channel"))
    with pytest.raises(ValueError, match="lazy time index"):
        read_clips(loaded, clock([0]), 0.001)
