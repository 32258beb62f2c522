"""How time labels are read (``time_index._label_ns``): each kind a user may pass, as
nanoseconds checked by hand, and each refusal with its words in full."""

from __future__ import annotations

import datetime

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from zarr_aac.dataset.time_index import _label_ns
from zarr_aac.errors import TimeLabelError

EPOCH_2026_06_10_05 = 1_781_067_600 * 10**9  # 2026-06-10T05:00:00Z, seconds since the epoch by hand


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("2026-06-10T05:00:00Z", EPOCH_2026_06_10_05),
        ("2026-06-10T07:00:00+02:00", EPOCH_2026_06_10_05),
        ("2026-06-10T05:00:00.000000001Z", EPOCH_2026_06_10_05 + 1),
        (np.datetime64("2026-06-10T05:00:00", "ns"), EPOCH_2026_06_10_05),
        (datetime.datetime(2026, 6, 10, 5, tzinfo=datetime.UTC), EPOCH_2026_06_10_05),
    ],
)
def test_instants_are_read_as_utc_nanoseconds(label, expected):
    assert _label_ns(label, True) == expected


def test_an_array_of_instants_keeps_its_shape():
    labels = np.array([["2026-06-10T05:00:00Z", "2026-06-10T05:00:01Z"]])
    np.testing.assert_array_equal(_label_ns(labels, True), [[EPOCH_2026_06_10_05, EPOCH_2026_06_10_05 + 10**9]])


@pytest.mark.parametrize(
    ("label", "expected"),
    [("90s", 90 * 10**9), (pd.Timedelta("1ms"), 10**6), (np.timedelta64(5, "us"), 5000)],
)
def test_durations_are_read_as_nanoseconds(label, expected):
    assert _label_ns(label, False) == expected


@pytest.mark.parametrize(
    ("label", "is_datetime", "message"),
    [
        (3.5, True, "time label 3.5 is a bare number; pass a timestamp (e.g. '2026-06-10T05:00:00Z')"),
        (3, False, "time label 3 is a bare number; pass a duration (e.g. '90s' or pandas.Timedelta)"),
        (
            pd.Timedelta("1s"),
            True,
            "cannot read time label Timedelta('0 days 00:00:01') as a timestamp: a duration is not an instant",
        ),
        (
            np.array([np.timedelta64(1, "s")]),
            True,
            "as a timestamp: a duration is not an instant",
        ),
        (
            "2026-06-10T05:00:00Z",
            False,
            "as a duration (this recording has no start time): ",
        ),
        (
            np.array(["2026-06-10T05:00:00"], "datetime64[ns]"),
            False,
            "as a duration (this recording has no start time): an instant is not a duration",
        ),
        (
            [datetime.datetime(2026, 6, 10)],
            False,
            "as a duration (this recording has no start time): an instant is not a duration",
        ),
    ],
)
def test_labels_of_the_wrong_kind_are_refused_in_words(label, is_datetime, message):
    with pytest.raises(TimeLabelError) as caught:
        _label_ns(label, is_datetime)
    assert message in str(caught.value)


def test_iso_timestamps_of_mixed_precision_and_offsets_read_together():
    """pandas infers one format from the first string unless told ISO 8601."""
    labels = ["2026-06-10T05:00:00Z", "2026-06-10T07:00:00.5+02:00", "2026-06-10T05:00:01.000000001Z"]
    np.testing.assert_array_equal(
        _label_ns(labels, True),
        [EPOCH_2026_06_10_05, EPOCH_2026_06_10_05 + 5 * 10**8, EPOCH_2026_06_10_05 + 10**9 + 1],
    )


def test_a_scalar_label_is_an_int_and_a_data_array_is_read_by_its_values():
    scalar = _label_ns("2026-06-10T05:00:00Z", True)
    assert type(scalar) is int
    labels = xr.DataArray(np.array(["2026-06-10T05:00:00Z", "2026-06-10T05:00:02Z"]), dims="detection")
    np.testing.assert_array_equal(_label_ns(labels, True), [EPOCH_2026_06_10_05, EPOCH_2026_06_10_05 + 2 * 10**9])
