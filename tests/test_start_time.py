"""The one start-time parser and its rule for times without a UTC offset."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

import zarr_aac
from zarr_aac.dataset.time_index import parse_start_ns
from zarr_aac.errors import TimeLabelError
from zarr_aac.start_time import parse_start_time, start_time_ns

PLUS_ONE = timezone(timedelta(hours=1))


def test_a_naive_time_stays_naive_and_an_offset_is_kept():
    assert parse_start_time("2024-09-03T20:26:15") == datetime(2024, 9, 3, 20, 26, 15)
    assert parse_start_time("2024-09-03T20:26:15+01:00") == datetime(2024, 9, 3, 20, 26, 15, tzinfo=PLUS_ONE)
    assert parse_start_time("2024-09-03T20:26:15Z").tzinfo == UTC
    moment = datetime(2024, 9, 3, 20, 26, 15, tzinfo=PLUS_ONE)
    assert parse_start_time(moment) is moment
    assert parse_start_time(date(2024, 9, 3)) == datetime(2024, 9, 3)


@pytest.mark.parametrize("value", ["last tuesday", "2024-13-01T00:00:00", "", 1725394000, None])
def test_what_is_not_a_time_is_refused(value):
    with pytest.raises(ValueError, match="ISO-8601"):
        parse_start_time(value)


@pytest.mark.parametrize(
    "value",
    [
        "2026-06-11T09:56:06.666666667Z",
        "2026-06-11T10:56:06.666666667+01:00",
        "2026-06-11T09:56:06.666666667",  # naive: UTC on the epoch axis
        "2026-06-11 09:56:06,666666667",
        "20260611T095606.666666667Z",
        pd.Timestamp("2026-06-11T09:56:06.666666667Z"),
        pd.Timestamp("2026-06-11T11:56:06.666666667+02:00"),
        np.datetime64("2026-06-11T09:56:06.666666667"),
        np.array("2026-06-11T09:56:06.666666667Z"),
    ],
)
def test_nanoseconds_since_the_epoch_agree_with_pandas(value):
    expected = pd.Timestamp("2026-06-11T09:56:06.666666667Z").value
    assert start_time_ns(value) == expected
    assert parse_start_ns(value) == expected


def test_epoch_nanoseconds_of_naive_and_utc_times_are_equal():
    naive, utc = datetime(2024, 5, 1, 6), datetime(2024, 5, 1, 6, tzinfo=UTC)
    assert start_time_ns(naive) == start_time_ns(utc) == pd.Timestamp("2024-05-01T06:00Z").value
    assert start_time_ns(date(1970, 1, 2)) == 86_400 * 10**9


@pytest.mark.parametrize("value", [5, 1.5, np.int64(3), True, np.datetime64("NaT"), "1500-01-01T00:00:00", "soon"])
def test_epoch_nanoseconds_refuse_numbers_and_times_out_of_range(value):
    with pytest.raises(TypeError if isinstance(value, int | float | np.number) else ValueError):
        start_time_ns(value)
    with pytest.raises(TimeLabelError, match="cannot read start time"):
        parse_start_ns(value)


def test_export_refuses_a_bound_whose_offset_the_recording_lacks(tmp_path):
    """The rule's third clause: reading either time as UTC would move the segment by the offset."""
    rate = 8000
    source = tmp_path / "rec.wav"
    sf.write(source, np.zeros(rate * 2, dtype=np.float32), rate)
    z = zarr_aac.import_file(source, tmp_path / "a.zarr", start_time="2024-05-01T06:00:00+01:00", progress=False)
    assert z.attrs["start_time"] == "2024-05-01T06:00:00+01:00"
    with pytest.raises(ValueError, match="both have a time zone or both have none"):
        zarr_aac.export(z, tmp_path / "x.wav", "2024-05-01T06:00:01", progress=False)
    out = zarr_aac.export(z, tmp_path / "seg.wav", "2024-05-01T05:00:01Z", progress=False)
    assert sf.info(out).frames == rate


def _recording_starting(tmp_path, start: str, rate: int = 8000):
    """Two seconds of a ramp (every sample tells its own number) starting at ``start``."""
    source = tmp_path / f"rec{len(list(tmp_path.iterdir()))}.wav"
    sf.write(source, (np.arange(rate * 2) % 30000).astype(np.int16), rate, subtype="PCM_16")
    return zarr_aac.import_file(source, tmp_path / "a.zarr", start_time=start, progress=False)


def test_xarray_refuses_naive_labels_against_a_start_with_an_offset_and_names_it(tmp_path):
    """Issue 12, item 9: a naive label against 20:26:15+01:00 gave 0 samples (read as UTC, an hour late)."""
    z = _recording_starting(tmp_path, "2024-09-03T20:26:15+01:00")
    audio = zarr_aac.open_dataset(z).audio
    with pytest.raises(TimeLabelError, match=r"start_time 2024-09-03T20:26:15\+01:00 is at UTC\+01:00"):
        audio.sel(time=slice("2024-09-03T20:26:16", "2024-09-03T20:26:17"))
    with pytest.raises(TimeLabelError, match=r"UTC\+01:00"):
        audio.sel(time=datetime(2024, 9, 3, 20, 26, 16))
    expected = z[8000:16000, 0]
    for start, stop in (
        ("2024-09-03T20:26:16+01:00", "2024-09-03T20:26:17+01:00"),
        ("2024-09-03T19:26:16Z", "2024-09-03T19:26:17Z"),
    ):
        np.testing.assert_array_equal(audio.sel(time=slice(start, stop)).values[:, 0], expected)
    # the axis's own values (numpy datetime64, UTC) select without an offset to compare
    assert int(audio.sel(time=audio.time.values[8000]).values[0]) == int(z[8000, 0])


def test_xarray_labels_follow_the_same_rule_as_export_for_naive_and_utc_starts(tmp_path):
    naive = _recording_starting(tmp_path, "2024-09-03T20:26:15")
    audio = zarr_aac.open_dataset(naive).audio
    assert audio.sel(time=slice("2024-09-03T20:26:16", "2024-09-03T20:26:17")).sizes["time"] == 8000
    with pytest.raises(TimeLabelError, match="has a UTC offset but the recording's start_time 2024-09-03T20:26:15"):
        audio.sel(time=slice("2024-09-03T20:26:16Z", None))
    with pytest.raises(ValueError, match="has a UTC offset"):
        zarr_aac.export(naive, tmp_path / "x.wav", "2024-09-03T20:26:16Z", progress=False)
    utc = _recording_starting(tmp_path, "2024-09-03T20:26:15Z")
    assert zarr_aac.open_dataset(utc).audio.sel(time=slice("2024-09-03T20:26:16", None)).sizes["time"] == 8000
    out = zarr_aac.export(utc, tmp_path / "utc.wav", "2024-09-03T20:26:16", progress=False)
    np.testing.assert_array_equal(sf.read(out, dtype="int16")[0], utc[8000:, 0])
