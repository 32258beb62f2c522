"""The lazy time index at the edges its main properties (tests/test_time_index.py) do not reach:
start times with and without UTC offsets kept through isel and concat, a renamed coordinate,
open-ended slices, xarray labels and indexers, the concat tolerance at exactly half a sample
period, and every refusal and repr in full words. References are labels computed by hand or
with Python integers, and xarray's own behaviour on a plain index."""

from __future__ import annotations

import datetime
from functools import partial

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from xarray.core.indexes import PandasIndex

from zarr_aac.dataset.time_index import SampleClockTransform, SampleTimeIndex, format_start_time
from zarr_aac.errors import TimeAxisError, TimeLabelError

START = "2026-06-10T05:00:00Z"
START_NS = 1_781_067_600 * 10**9  # 2026-06-10T05:00:00Z, seconds since the epoch by hand
PERIOD_NS = 125_000  # one sample at 8000 Hz


def reference_labels(n: int, rate: int, origin: int = START_NS) -> np.ndarray:
    return np.array([origin + (k * 10**9) // rate for k in range(n)], dtype=np.int64)


def dataset(n: int, rate: int = 8000, start=START) -> xr.Dataset:
    index = SampleTimeIndex.for_recording(n, rate, start)
    return xr.Dataset(coords=xr.Coordinates.from_xindex(index)).assign(k=("time", np.arange(n)))


def message_of(call) -> str:
    with pytest.raises((TimeLabelError, TimeAxisError)) as caught:
        call()
    return str(caught.value)


def test_start_time_is_formatted_in_utc_to_the_nanosecond():
    assert format_start_time(START_NS) == "2026-06-10T05:00:00Z"
    assert format_start_time(START_NS + 1) == "2026-06-10T05:00:00.000000001Z"


def test_an_unreadable_start_time_is_named():
    text = message_of(lambda: SampleTimeIndex.for_recording(10, 8000, "the morning"))
    assert text.startswith("cannot read start time 'the morning' as a timestamp: ")


def test_reprs_name_the_clock():
    index = dataset(10).isel(time=slice(2, None, 3)).xindexes["time"]
    clock = "origin=2026-06-10T05:00:00Z, rate=8000, first=2, step=3, size=3"
    assert repr(index) == f"SampleTimeIndex(SampleClockTransform({clock}))"
    inline = "SampleTimeIndex (start=2026-06-10T05:00:00Z, rate=8000 Hz, first=2, step=3)"
    assert index._repr_inline_(200) == inline
    assert inline in repr(dataset(10).isel(time=slice(2, None, 3)))
    untimed = dataset(10, start=None).xindexes["time"]
    assert repr(untimed) == (
        "SampleTimeIndex(SampleClockTransform(origin=none (timedelta axis), rate=8000, first=0, step=1, size=10))"
    )


def test_a_bare_transform_is_a_utc_datetime_axis():
    """Built without ``is_datetime`` or ``start``: a datetime axis whose start is the origin in UTC."""
    clock = SampleClockTransform(origin_ns=START_NS, rate=8000, size=3, dim="time")
    assert clock.dtype == np.dtype("datetime64[ns]")
    assert clock.start == "2026-06-10T05:00:00Z"
    ds = xr.Dataset(coords=xr.Coordinates.from_xindex(SampleTimeIndex(clock)))
    assert ds.sel(time="2026-06-10T05:00:00.000125").time.values.view(np.int64) == START_NS + PERIOD_NS
    assert ds.sel(time="2026-06-10T07:00:00.00025+02:00").time.values.view(np.int64) == START_NS + 2 * PERIOD_NS


def test_a_datetime64_start_is_utc_and_takes_naive_and_aware_labels():
    ds = dataset(10, start=np.datetime64(START_NS, "ns"))
    assert ds.sel(time="2026-06-10T05:00:00.000125").k.item() == 1
    assert ds.sel(time="2026-06-10T07:00:00.000125+02:00").k.item() == 1


def with_offset_start(n: int = 20) -> xr.Dataset:
    return dataset(n, start="2026-06-10T07:00:00+02:00")


def derived_axes(make):
    """The axis as built, sliced by isel, and rebuilt by concat: each keeps the start's offset rule."""
    return {
        "as built": make(),
        "sliced": make().isel(time=slice(1, None)),
        "concatenated": xr.concat([make().isel(time=slice(0, 5)), make().isel(time=slice(5, None))], dim="time"),
    }


@pytest.mark.parametrize("derived", ["as built", "sliced", "concatenated"])
def test_a_start_with_an_offset_refuses_naive_labels_after_isel_and_concat(derived):
    ds = derived_axes(with_offset_start)[derived]
    first = ds.k.values[0]
    assert ds.sel(time="2026-06-10T07:00:00.000125+02:00").k.item() == 1
    assert ds.sel(time="2026-06-10T05:00:00.000125Z").k.item() == 1
    assert ds.sel(time=np.datetime64(START_NS + PERIOD_NS, "ns")).k.item() == 1
    text = message_of(lambda: ds.sel(time="2026-06-10T07:00:00.000125"))
    assert text.startswith("time label '2026-06-10T07:00:00.000125': ")
    assert "start_time 2026-06-10T07:00:00+02:00 is at UTC+02:00" in text
    assert "write it with the offset (e.g. ...+02:00) or in UTC (...Z)" in text
    assert ds.k.values[0] == first


@pytest.mark.parametrize(
    "start", ["2026-06-10T05:00:00", datetime.datetime(2026, 6, 10, 5), pd.Timestamp("2026-06-10T05:00:00")]
)
@pytest.mark.parametrize("derived", ["as built", "sliced", "concatenated"])
def test_a_naive_start_refuses_aware_labels_and_takes_its_own_instants(start, derived):
    ds = derived_axes(lambda: dataset(20, start=start))[derived]
    assert ds.sel(time="2026-06-10T05:00:00.000125").k.item() == 1
    instants = np.array([START_NS + PERIOD_NS, START_NS + 3 * PERIOD_NS], dtype="datetime64[ns]")
    assert ds.sel(time=instants[0]).k.item() == 1
    assert ds.sel(time=instants).k.values.tolist() == [1, 3]
    text = message_of(lambda: ds.sel(time="2026-06-10T05:00:00.000125Z"))
    assert text.startswith("time label '2026-06-10T05:00:00.000125Z': ")
    assert "has a UTC offset but the recording's start_time 2026-06-10" in text


def test_an_aware_datetime_start_refuses_naive_labels():
    tz = datetime.timezone(datetime.timedelta(hours=2))
    ds = dataset(10, start=datetime.datetime(2026, 6, 10, 7, tzinfo=tz))
    assert ds.sel(time="2026-06-10T07:00:00.000125+02:00").k.item() == 1
    text = message_of(lambda: ds.sel(time="2026-06-10T07:00:00.000125"))
    assert "the recording's start_time 2026-06-10T07:00:00+02:00 is at UTC+02:00" in text


def test_reverse_gives_the_sample_sounding_at_each_label():
    clock = dataset(10, rate=44100).isel(time=slice(1, None, 2)).xindexes["time"].transform
    instants = reference_labels(10, 44100)[1::2]
    probes = np.array([instants[0] - 1, instants[0], instants[0] + 1, instants[2] - 1, instants[2], instants[-1] + 1])
    expected = np.searchsorted(instants, probes, "right") - 1
    got = clock.reverse({"time": probes.astype("datetime64[ns]")})
    assert list(got) == ["time"]
    np.testing.assert_array_equal(got["time"], expected)


def test_to_pandas_index_is_the_reference_labels():
    ds = dataset(7, rate=44100).isel(time=slice(2, None, 2))
    expected = pd.DatetimeIndex(reference_labels(7, 44100)[2::2].astype("datetime64[ns]"), name="time")
    pd.testing.assert_index_equal(ds.xindexes["time"].to_pandas_index(), expected)
    pd.testing.assert_index_equal(ds.indexes["time"], expected)


def test_a_renamed_coordinate_keeps_its_name_through_isel_and_concat():
    """xarray renames the transform's coordinate in place; slicing and concat must keep that name."""
    renamed = dataset(10).rename_vars(time="t")
    reference = reference_labels(10, 8000)
    sliced = renamed.isel(time=slice(2, 5))
    assert isinstance(sliced.xindexes["t"], SampleTimeIndex) and "time" not in sliced.coords
    np.testing.assert_array_equal(sliced.t.values.view(np.int64), reference[2:5])
    assert sliced.sel(t=np.datetime64(int(reference[3]), "ns")).k.item() == 3
    joined = xr.concat([renamed.isel(time=slice(0, 4)), renamed.isel(time=slice(4, None))], dim="time")
    assert isinstance(joined.xindexes["t"], SampleTimeIndex) and "time" not in joined.coords
    np.testing.assert_array_equal(joined.t.values.view(np.int64), reference)
    picked = renamed.isel(time=[3, 1])
    assert isinstance(picked.xindexes["t"], PandasIndex) and "time" not in picked.coords
    assert picked.xindexes["t"].index.name == "t"
    np.testing.assert_array_equal(picked.t.values.view(np.int64), reference[[3, 1]])


def test_a_timedelta_axis_stays_one_through_isel_and_concat():
    whole = dataset(8000 * 3, start=None)
    sliced = whole.isel(time=slice(4000, None, 4))
    assert sliced.time.dtype == np.dtype("timedelta64[ns]")
    assert sliced.sel(time="1.5s").k.item() == 12000
    joined = xr.concat([whole.isel(time=slice(0, 8000)), whole.isel(time=slice(8000, None))], dim="time")
    assert joined.time.dtype == np.dtype("timedelta64[ns]")
    np.testing.assert_array_equal(joined.time.values.view(np.int64), reference_labels(8000 * 3, 8000, origin=0))
    assert joined.sel(time="2s").k.item() == 16000


def test_concat_of_sliced_and_decimated_pieces_keeps_their_clock():
    whole = dataset(40, rate=44100)
    reference = reference_labels(40, 44100)
    joined = xr.concat([whole.isel(time=slice(5, 10)), whole.isel(time=slice(10, 20))], dim="time")
    np.testing.assert_array_equal(joined.time.values.view(np.int64), reference[5:20])
    decimated = xr.concat([whole.isel(time=slice(1, 11, 2)), whole.isel(time=slice(11, 40, 2))], dim="time")
    np.testing.assert_array_equal(decimated.time.values.view(np.int64), reference[1:40:2])
    assert decimated.xindexes["time"].equals(whole.isel(time=slice(1, None, 2)).xindexes["time"])


@pytest.mark.parametrize(
    ("offset_ns", "abuts"),
    [(PERIOD_NS // 2, True), (PERIOD_NS // 2 + 1, False), (-(PERIOD_NS // 2), True), (-(PERIOD_NS // 2) - 1, False)],
)
def test_concat_allows_exactly_half_a_sample_period_of_misalignment(offset_ns, abuts):
    first = dataset(8000)
    second_start = np.datetime64(START_NS + 10**9 + offset_ns, "ns")
    second = dataset(8000, start=second_start)
    if abuts:
        joined = xr.concat([first, second], dim="time")
        np.testing.assert_array_equal(joined.time.values.view(np.int64), reference_labels(16000, 8000))
    else:
        text = message_of(lambda: xr.concat([first, second], dim="time"))
        assert text == (
            f"recordings do not abut: the next one starts {offset_ns / 10**9:+.9f} s from where the previous one "
            "ends (2026-06-10T05:00:01.000000000); keep them as separate variables"
        )


def test_concat_tolerance_of_a_decimated_axis_is_half_its_period():
    """Every second sample: a period of 250 us, so a second piece 100 us late still abuts, 130 us late not."""
    first = dataset(8000).isel(time=slice(None, None, 2))
    for late_us, abuts in ((100, True), (130, False)):
        start = np.datetime64(START_NS + 10**9 + late_us * 1000, "ns")
        second = dataset(8000, start=start).isel(time=slice(None, None, 2))
        if abuts:
            joined = xr.concat([first, second], dim="time")
            np.testing.assert_array_equal(joined.time.values.view(np.int64), reference_labels(16000, 8000)[::2])
        else:
            with pytest.raises(TimeAxisError, match="do not abut"):
                xr.concat([first, second], dim="time")


def test_concat_refusals_in_words():
    lazy = dataset(10).xindexes["time"]
    text = message_of(lambda: SampleTimeIndex.concat([lazy, lazy], "time", positions=[[0], [1]]))
    assert text == "a lazy time axis can only be concatenated in order (positions= is not supported)"
    plain = PandasIndex(pd.DatetimeIndex(reference_labels(3, 8000).astype("datetime64[ns]")), "time")
    text = message_of(lambda: SampleTimeIndex.concat([lazy, plain], "time"))
    assert text == "cannot concatenate a lazy time axis with a PandasIndex"
    text = message_of(lambda: xr.concat([dataset(10), dataset(10, start=None)], dim="time"))
    assert text == "cannot concatenate a datetime axis with a timedelta axis"


def test_selection_refusals_in_words():
    ds = dataset(10)
    text = message_of(lambda: ds.sel(time=START, method="closest"))
    assert (
        text
        == "unknown selection method 'closest'; use one of ('nearest', 'pad', 'ffill', 'backfill', 'bfill') or None"
    )
    span = "axis 'time' runs from 2026-06-10T05:00:00.000000000 to 2026-06-10T05:00:00.001125000 at 8000 Hz"
    cases = [
        (
            "2026-06-10T05:00:00.0001Z",
            None,
            "2026-06-10T05:00:00.000100000",
            "is not the instant of a sample; pass method='nearest' or 'pad'",
        ),
        ("2026-06-10T04:59:59Z", "pad", "2026-06-10T04:59:59.000000000", "lies before the recording"),
        ("2026-06-10T05:00:01Z", "backfill", "2026-06-10T05:00:01.000000000", "lies after the recording"),
    ]
    for label, method, instant, problem in cases:
        text = message_of(partial(ds.sel, time=label, method=method))
        assert text == f"time {instant} (from label {label!r}) {problem} ({span})"


@pytest.mark.parametrize("options", [{"method": "nearest"}, {"tolerance": "1s"}, {"method": "pad", "tolerance": "1s"}])
def test_a_time_slice_refuses_method_and_tolerance(options):
    text = message_of(lambda: dataset(10).sel(time=slice(START, None), **options))
    assert text == "a time slice selects [start, stop) exactly; method= and tolerance= do not apply"


def test_a_one_sample_axis_describes_its_span_and_wraps_negative_positions():
    ds = dataset(1)
    text = message_of(lambda: ds.sel(time="2026-06-10T05:00:01Z"))
    assert text.endswith(
        "(axis 'time' runs from 2026-06-10T05:00:00.000000000 to 2026-06-10T05:00:00.000000000 at 8000 Hz)"
    )
    assert int(ds.isel(time=[-1]).time.values[0].view(np.int64)) == START_NS


@pytest.mark.parametrize("start", [START, None])
def test_open_ended_slices_run_to_the_ends(start):
    ds = dataset(20, start=start)
    middle = "2026-06-10T05:00:00.001" if start else "1ms"  # sample 8 exactly
    assert ds.sel(time=slice(None, middle)).k.values.tolist() == list(range(8))
    assert ds.sel(time=slice(middle, None)).k.values.tolist() == list(range(8, 20))
    assert ds.sel(time=slice(None, None)).k.values.tolist() == list(range(20))


def test_isel_by_positions_keeps_an_index_on_the_indexer_dimension():
    """As xarray's own PandasIndex would for a 1-D indexer, and also for a new dimension, where the
    coordinate moves to that dimension and stays selectable."""
    ds = dataset(100_000)
    reference = reference_labels(100_000, 8000)
    for positions in ([3, 1], np.array([99_999, 48_000], dtype=np.int32), np.array([99_999, 48_000], dtype=np.uint32)):
        picked = ds.isel(time=positions)
        assert isinstance(picked.xindexes["time"], PandasIndex)
        np.testing.assert_array_equal(picked.time.values.view(np.int64), reference[np.asarray(positions)])
        assert picked.sel(time=picked.time.values[1]).k.item() == positions[1]
    along = ds.isel(time=xr.DataArray([5, 2], dims="clip"))
    assert along.time.dims == ("clip",) and along.xindexes["time"].dim == "clip"
    np.testing.assert_array_equal(along.time.values.view(np.int64), reference[[5, 2]])
    assert along.sel(time=np.datetime64(int(reference[2]), "ns")).k.item() == 2


def test_sel_with_xarray_labels_follows_a_plain_datetime_index():
    ds = dataset(20)
    plain = ds.drop_indexes("time").set_xindex("time")
    instants = reference_labels(20, 8000).astype("datetime64[ns]")[[7, 2, 11]]
    for labels in (xr.Variable("clip", instants), xr.DataArray(instants, dims="clip"), xr.DataArray(instants[0])):
        got, expected = ds.sel(time=labels), plain.sel(time=labels)
        assert got.k.dims == expected.k.dims
        np.testing.assert_array_equal(got.k.values, expected.k.values)
        np.testing.assert_array_equal(got.time.values, expected.time.values)
    assert ds.sel(time=xr.Variable("clip", instants)).k.values.tolist() == [7, 2, 11]
    scalar = ds.sel(time=xr.Variable((), instants[1]))
    assert scalar.k.dims == () and scalar.k.item() == 2
