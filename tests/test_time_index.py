"""The lazy time index against labels computed independently with Python integers."""

from __future__ import annotations

import datetime
import pickle
import tracemalloc

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from zarr_aac.dataset.time_index import SampleTimeIndex, first_sample_at_or_after, sample_offset_ns
from zarr_aac.errors import TimeAxisError, TimeLabelError

START = "2026-06-10T05:00:00Z"
START_NS = 1_781_067_600_000_000_000
RATES = st.sampled_from([8000, 11025, 22050, 44100, 48000, 96000, 250000, 384000])


def reference_labels(n: int, rate: int, origin: int = START_NS) -> np.ndarray:
    """Sample instants by Python big-int arithmetic, independent of the divmod formula."""
    return np.array([origin + (k * 10**9) // rate for k in range(n)], dtype=np.int64)


def dataset(n: int, rate: int, start=START) -> xr.Dataset:
    return xr.Dataset(coords=xr.Coordinates.from_xindex(SampleTimeIndex.for_recording(n, rate, start)))


def positions_of(ds: xr.Dataset, **labels) -> np.ndarray:
    """Integer positions the index resolves, via a payload of sample numbers."""
    payload = ds.assign(k=("time", np.arange(ds.sizes["time"])))
    return payload.sel(**labels).k.values


@given(k=st.integers(0, 10**10), rate=RATES)
def test_sample_offset_is_exact_at_1e10_samples(k, rate):
    assert sample_offset_ns(k, rate) == (k * 10**9) // rate
    assert int(sample_offset_ns(np.array([k], dtype=np.int64), rate)[0]) == (k * 10**9) // rate
    first = first_sample_at_or_after((k * 10**9) // rate, rate)
    assert (first * 10**9) // rate >= (k * 10**9) // rate and ((first - 1) * 10**9) // rate < (k * 10**9) // rate


@given(n=st.integers(1, 3000), rate=RATES, data=st.data())
@settings(max_examples=60, deadline=None)
def test_isel_chains_match_reference_labels(n, rate, data):
    ds = dataset(n, rate)
    reference = reference_labels(n, rate)
    for _ in range(2):
        size = ds.sizes["time"]
        start = data.draw(st.integers(-size, size))
        stop = data.draw(st.integers(-size, size) | st.none())
        step = data.draw(st.integers(1, 7))
        ds = ds.isel(time=slice(start, stop, step))
        reference = reference[start:stop:step]
        assert isinstance(ds.xindexes["time"], SampleTimeIndex)
        np.testing.assert_array_equal(ds.time.values.view(np.int64), reference)


@given(n=st.integers(1, 3000), rate=RATES, step=st.integers(1, 5), data=st.data())
@settings(max_examples=80, deadline=None)
def test_sel_slice_is_half_open_on_sample_instants(n, rate, step, data):
    ds = dataset(n, rate).isel(time=slice(None, None, step))
    labels = reference_labels(n, rate)[::step]
    span = int(labels[-1] - START_NS) + 10**6
    t0, t1 = sorted(data.draw(st.integers(-(10**6), span)) + START_NS for _ in range(2))
    got = positions_of(ds, time=slice(np.datetime64(t0, "ns"), np.datetime64(t1, "ns")))
    expected = np.arange(np.searchsorted(labels, t0, "left"), np.searchsorted(labels, t1, "left"))
    np.testing.assert_array_equal(got, expected)


@given(n=st.integers(1, 2000), rate=RATES, data=st.data())
@settings(max_examples=80, deadline=None)
def test_scalar_methods_match_searchsorted(n, rate, data):
    ds = dataset(n, rate)
    labels = reference_labels(n, rate)
    t = data.draw(st.integers(int(labels[0]) - 10**5, int(labels[-1]) + 10**5))
    label = np.datetime64(t, "ns")
    after = int(np.searchsorted(labels, t, "left"))
    before = int(np.searchsorted(labels, t, "right")) - 1
    if before >= 0:
        assert positions_of(ds, time=label, method="pad") == before
    else:
        with pytest.raises(TimeLabelError, match="before the recording"):
            ds.sel(time=label, method="pad")
    if after < n:
        assert positions_of(ds, time=label, method="bfill") == after
    else:
        with pytest.raises(TimeLabelError, match="after the recording"):
            ds.sel(time=label, method="bfill")
    candidates = [i for i in (before, after) if 0 <= i < n]
    nearest = min(candidates, key=lambda i: (abs(int(labels[i]) - t), i))
    assert positions_of(ds, time=label, method="nearest") == nearest
    if after < n and labels[after] == t:
        assert positions_of(ds, time=label) == after
    else:
        with pytest.raises(TimeLabelError):
            ds.sel(time=label)


def test_every_label_type_names_the_same_instant():
    ds = dataset(48000 * 120, 48000)
    expected = 48000 * 61 + 24000
    labels = [
        "2026-06-10T05:01:01.5",
        "2026-06-10T05:01:01.5Z",
        "2026-06-10T07:01:01.5+02:00",
        "2026-06-10 05:01:01.500",
        datetime.datetime(2026, 6, 10, 5, 1, 1, 500000),
        datetime.datetime(2026, 6, 10, 7, 1, 1, 500000, tzinfo=datetime.timezone(datetime.timedelta(hours=2))),
        np.datetime64("2026-06-10T05:01:01.500"),
        pd.Timestamp("2026-06-10T05:01:01.5"),
        pd.Timestamp("2026-06-10T01:01:01.5", tz="America/New_York"),
    ]
    for label in labels:
        assert positions_of(ds, time=label) == expected, label


def test_a_one_second_slice_holds_rate_samples_and_slices_tile():
    ds = dataset(44100 * 10, 44100)
    one = positions_of(ds, time=slice("2026-06-10T05:00:02", "2026-06-10T05:00:03"))
    nxt = positions_of(ds, time=slice("2026-06-10T05:00:03", "2026-06-10T05:00:04"))
    assert one.size == 44100 and one[0] == 88200 and nxt[0] == one[-1] + 1


def test_vector_labels_keep_their_dimension():
    ds = dataset(8000 * 10, 8000)
    instants = pd.to_datetime(["2026-06-10T05:00:01", "2026-06-10T05:00:02.0001"], format="ISO8601")
    labels = xr.DataArray(instants, dims="clip")
    picked = ds.assign(k=("time", np.arange(80000))).sel(time=labels, method="nearest")
    assert picked.k.dims == ("clip",)
    np.testing.assert_array_equal(picked.k.values, [8000, 16001])
    assert positions_of(ds, time=["2026-06-10T05:00:01", "2026-06-10T05:00:02"]).tolist() == [8000, 16000]


def test_tolerance_bounds_nearest():
    ds = dataset(8000, 8000)
    assert positions_of(ds, time="2026-06-10T05:00:00.00006", method="nearest", tolerance="70us") == 0
    with pytest.raises(TimeLabelError, match="no sample within"):
        ds.sel(time="2026-06-10T05:00:00.00006", method="nearest", tolerance="50us")
    with pytest.raises(TimeLabelError, match="no sample within"):
        ds.sel(time="2026-06-10T06:00:00", method="nearest", tolerance="1s")


def test_timedelta_axis_without_start_time():
    ds = dataset(8000 * 200, 8000, start=None)
    assert ds.time.dtype == np.dtype("timedelta64[ns]")
    assert positions_of(ds, time=slice("90s", "00:01:30.001")).tolist() == list(range(720000, 720008))
    assert positions_of(ds, time=pd.Timedelta(minutes=2)) == 960000
    assert positions_of(ds, time=datetime.timedelta(seconds=1), method="nearest") == 8000
    with pytest.raises(TimeLabelError, match="duration"):
        ds.sel(time="2026-06-10T05:00:00")


@pytest.mark.parametrize("label", [5, 1.5, np.int64(3), slice(0, 10)])
def test_bare_numbers_are_refused(label):
    with pytest.raises(TimeLabelError, match="bare number"):
        dataset(100, 8000).sel(time=label)


def test_unreadable_labels_name_the_problem():
    ds = dataset(100, 8000)
    with pytest.raises(TimeLabelError, match="cannot read time label 'tomorrow-ish'"):
        ds.sel(time="tomorrow-ish")
    with pytest.raises(TimeLabelError, match="instant"):
        ds.sel(time=pd.Timedelta("1s"))
    with pytest.raises(TimeLabelError, match="no step"):
        ds.sel(time=slice(START, None, 2))


def test_pickle_keeps_the_lazy_index():
    ds = dataset(10**10, 48000).isel(time=slice(12345, None, 3))
    back = pickle.loads(pickle.dumps(ds))
    assert isinstance(back.xindexes["time"], SampleTimeIndex)
    assert back.xindexes["time"].equals(ds.xindexes["time"])
    np.testing.assert_array_equal(back.time[-3:].values, ds.time[-3:].values)


def test_concat_of_abutting_pieces_rebuilds_the_recording():
    whole = dataset(10**9, 44100)
    pieces = [whole.isel(time=slice(a, b)) for a, b in ((0, 123457), (123457, 5 * 10**8), (5 * 10**8, None))]
    joined = xr.concat(pieces[:2], dim="time")
    assert isinstance(joined.xindexes["time"], SampleTimeIndex)
    assert joined.xindexes["time"].equals(whole.isel(time=slice(0, 5 * 10**8)).xindexes["time"])


def test_concat_of_separate_files_with_rounded_starts():
    first = dataset(44100, 44100)  # 1 s
    second = dataset(44100 * 2, 44100, start="2026-06-10T05:00:01.000005Z")  # 5 us late: within half a sample
    joined = xr.concat([first, second], dim="time")
    assert joined.sizes["time"] == 3 * 44100
    np.testing.assert_array_equal(joined.time.values.view(np.int64), reference_labels(3 * 44100, 44100))


def test_concat_refuses_gaps_and_mixed_rates():
    first = dataset(8000, 8000)
    with pytest.raises(TimeAxisError, match=r"do not abut: the next one starts \+1.000000000 s"):
        xr.concat([first, dataset(8000, 8000, start="2026-06-10T05:00:02Z")], dim="time")
    with pytest.raises(TimeAxisError, match="16000 Hz"):
        xr.concat([first, dataset(16000, 16000, start="2026-06-10T05:00:01Z")], dim="time")
    with pytest.raises(TimeAxisError, match="timedelta"):
        xr.concat([first, dataset(8000, 8000, start=None)], dim="time")


def test_1e10_samples_index_and_selection_never_materialise_the_coordinate():
    tracemalloc.start()
    try:
        ds = dataset(10**10, 48000)
        minute = ds.sel(time=slice("2026-06-11T05:00", "2026-06-11T05:01"))
        tail = ds.isel(time=slice(-5, None))
        repr(ds)
        pickle.dumps(ds)
        nearest = ds.sel(time="2026-06-12T14:00:00.00001", method="nearest")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20
    assert minute.sizes["time"] == 48000 * 60
    assert int(minute.time[0].values.view(np.int64)) == START_NS + 86400 * 10**9
    last = 10**10 - 1
    assert int(tail.time[-1].values.view(np.int64)) == START_NS + (last * 10**9) // 48000
    assert int(nearest.time.values.view(np.int64)) == START_NS + 10**9 * (57 * 3600)


def test_reversed_and_array_isel_materialise_only_the_selection():
    ds = dataset(5000, 44100)
    reference = reference_labels(5000, 44100)
    np.testing.assert_array_equal(ds.isel(time=slice(None, 100, -3)).time.values.view(np.int64), reference[:100:-3])
    picked = ds.isel(time=[4999, 0, 17])
    np.testing.assert_array_equal(picked.time.values.view(np.int64), reference[[4999, 0, 17]])
    assert picked.sel(time=picked.time.values[2]).time.values == picked.time.values[2]


def test_reversed_isel_of_a_huge_axis_allocates_only_the_selection():
    ds = dataset(10**10, 48000)
    tracemalloc.start()
    try:
        tail = ds.isel(time=slice(None, 10**10 - 4, -1))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2**20
    expected = [START_NS + (k * 10**9) // 48000 for k in range(10**10 - 1, 10**10 - 4, -1)]
    np.testing.assert_array_equal(tail.time.values.view(np.int64), expected)


def test_empty_axis_refuses_point_selection():
    with pytest.raises(TimeLabelError, match="empty"):
        dataset(0, 8000).sel(time=START, method="nearest")


def test_edges_ties_aliases_and_tolerance_as_documented():
    """docs/xarray.md "Selection semantics" at the cases random labels rarely hit: the first and
    last instants exactly, a label halfway between two samples (ties go to the earlier), the
    method aliases, a tolerance equal to the distance, and errors naming the label, the remedy
    and the axis' span."""
    rate = 8000  # 125 000 ns a sample: exact halves
    ds = dataset(10, rate)
    labels = reference_labels(10, rate)
    first, last = np.datetime64(int(labels[0]), "ns"), np.datetime64(int(labels[-1]), "ns")
    assert positions_of(ds, time=first) == 0
    assert positions_of(ds, time=last) == 9
    halfway = np.datetime64(int(labels[3] + labels[4]) // 2, "ns")
    assert positions_of(ds, time=halfway, method="nearest") == 3
    assert positions_of(ds, time=halfway, method="ffill") == positions_of(ds, time=halfway, method="pad") == 3
    assert positions_of(ds, time=halfway, method="backfill") == positions_of(ds, time=halfway, method="bfill") == 4
    assert positions_of(ds, time=halfway, method="nearest", tolerance="62500ns") == 3
    with pytest.raises(TimeLabelError, match=r"has no sample within '62499ns'") as info:
        ds.sel(time=halfway, method="nearest", tolerance="62499ns")
    span = "runs from 2026-06-10T05:00:00.000000000 to 2026-06-10T05:00:00.001125000 at 8000 Hz"
    assert repr(halfway) in str(info.value) and span in str(info.value)
    with pytest.raises(TimeLabelError, match=r"is not the instant of a sample; pass method='nearest' or 'pad'") as info:
        ds.sel(time=halfway)
    assert repr(halfway) in str(info.value) and span in str(info.value)
    before, after = first - np.timedelta64(1, "ns"), last + np.timedelta64(1, "ns")
    for label, method, problem in [(before, "ffill", "lies before"), (after, "backfill", "lies after")]:
        with pytest.raises(TimeLabelError, match=f"{problem} the recording") as info:
            ds.sel(time=label, method=method)
        assert repr(label) in str(info.value) and span in str(info.value)
    sliced = ds.isel(time=slice(3, None, 2))
    for k, t in enumerate(labels[3::2].tolist()):
        assert positions_of(sliced, time=np.datetime64(t, "ns"), method="pad") == k
        if k:
            assert positions_of(sliced, time=np.datetime64(t - 1, "ns"), method="pad") == k - 1
    later = dataset(10, rate, start="2026-06-10T06:00:00Z")
    assert ds.xindexes["time"].equals(dataset(10, rate).xindexes["time"])
    assert not ds.xindexes["time"].equals(later.xindexes["time"])


def test_a_date_start_is_naive_midnight():
    """A date is its midnight without an offset (zarr_aac.start_time), so like a naive start it
    takes labels without one and refuses labels with one."""
    ds = dataset(10, 8000, start=datetime.date(2026, 6, 10))
    assert int(ds.time.values[0].view(np.int64)) == START_NS - 5 * 3600 * 10**9
    assert positions_of(ds, time="2026-06-10T00:00:00.000125") == 1
    with pytest.raises(TimeLabelError, match="has a UTC offset but the recording's start_time 2026-06-10 has none"):
        ds.sel(time="2026-06-10T00:00:00.000125Z")


def test_a_zero_dimensional_array_start_keeps_its_offset():
    ds = dataset(10, 8000, start=np.array("2026-06-10T07:00:00+02:00"))
    assert int(ds.time.values[0].view(np.int64)) == START_NS
    assert positions_of(ds, time="2026-06-10T05:00:00.000125Z") == 1
    with pytest.raises(TimeLabelError, match=r"start_time 2026-06-10T07:00:00\+02:00 is at UTC\+02:00"):
        ds.sel(time="2026-06-10T07:00:00.000125")
