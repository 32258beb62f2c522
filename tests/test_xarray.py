"""The xarray backend and writer against the stored arrays read through zarr."""

from __future__ import annotations

import json
import pickle
import tracemalloc

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.selections import reference_decode
from support.signals import tone_with_noise

import zarr_aac
from zarr_aac import AACCodec
from zarr_aac.dataset.convert import assign_time_index, concat_recordings, to_aac
from zarr_aac.dataset.time_index import SampleTimeIndex
from zarr_aac.errors import ArchiveError, RecordingMetadataError, TimeAxisError, UnsupportedAudioError

RATE = 8000
START = "2026-06-10T05:00:00Z"
START_NS = 1_781_067_600_000_000_000


def write_recording(store, name=None, *, n=RATE * 12, channels=2, chunk=RATE * 4, attrs=None, dtype="int16", seed=0):
    pcm = tone_with_noise(n, channels, RATE, seed)
    pcm = (pcm * 32767).astype(np.int16) if dtype == "int16" else pcm
    attributes = {"sample_rate": RATE, "channels": channels, "start_time": START} if attrs is None else attrs
    if channels == 1:
        pcm = pcm[:, 0]
    array = zarr.create_array(
        store,
        name=name,
        shape=pcm.shape,
        chunks=(chunk, channels)[: pcm.ndim],
        dtype=dtype,
        serializer=AACCodec(sample_rate=RATE),
        compressors=None,
        attributes=attributes,
    )
    array[:] = pcm
    return array


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """A 12 s stereo 8 kHz recording in 4 s chunks and its full sequential decode."""
    path = tmp_path_factory.mktemp("xr") / "rec.zarr"
    array = write_recording(str(path))
    return path, array, reference_decode(array)


def instant(k: int) -> np.datetime64:
    return np.datetime64(START_NS + (k * 10**9) // RATE, "ns")


@given(data=st.data())
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_time_selections_equal_the_sample_slice(recording, data):
    path, array, reference = recording
    ds = zarr_aac.open_dataset(path)
    n = array.shape[0]
    a = data.draw(st.integers(0, n))
    b = data.draw(st.integers(a, n))
    picked = ds.audio.sel(time=slice(instant(a), instant(b)))
    np.testing.assert_array_equal(picked.values, reference[a:b])
    np.testing.assert_array_equal(picked.time.values, ds.time.values[a:b])
    k = data.draw(st.integers(0, n - 1))
    np.testing.assert_array_equal(ds.audio.sel(time=instant(k)).values, reference[k])
    offset = np.timedelta64(data.draw(st.integers(-62_000, 62_000)), "ns")
    nearest = ds.audio.sel(time=instant(k) + offset, method="nearest")
    nearest_k = int(nearest.time.values.view(np.int64) - START_NS) * RATE // 10**9
    np.testing.assert_array_equal(nearest.values, reference[nearest_k])
    step = data.draw(st.integers(1, 5000))
    channel = data.draw(st.integers(0, 1))
    stepped = ds.audio.isel(time=slice(a, b, step), channel=channel)
    np.testing.assert_array_equal(stepped.values, reference[a:b:step, channel])
    points = data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=8))
    np.testing.assert_array_equal(ds.audio.isel(time=points).values, reference[points])
    backwards = slice(b, a, -step)
    if len(range(n)[backwards]):  # xarray's backend slice decomposition fails on empty reversed slices
        np.testing.assert_array_equal(ds.audio.isel(time=backwards).values, reference[backwards])


def test_chained_selection_by_clock_time(recording):
    path, _, reference = recording
    ds = zarr_aac.open_dataset(path)
    window = ds.sel(time=slice("2026-06-10T05:00:02", "2026-06-10T05:00:09.5")).isel(time=slice(1000, None, 2))
    inner = window.sel(time=slice("2026-06-10T05:00:04", "2026-06-10T05:00:05"))
    first = 2 * RATE + 1000
    expected = reference[first:][::2][(4 * RATE - first) // 2 : (5 * RATE - first) // 2]
    np.testing.assert_array_equal(inner.audio.values, expected)
    assert isinstance(inner.xindexes["time"], SampleTimeIndex)


def test_dataset_layout_and_metadata(recording):
    path, array, _ = recording
    ds = zarr_aac.open_dataset(path)
    assert ds.audio.dims == ("time", "channel") and ds.audio.shape == array.shape
    assert ds.time.dtype == np.dtype("datetime64[ns]")
    assert ds.attrs["start_time"] == START and ds.audio.attrs["sample_rate"] == RATE
    assert "channel" not in ds.coords
    assert ds.time[0].values == np.datetime64("2026-06-10T05:00:00")


def test_chunks_follow_the_stored_chunks(recording):
    path, _, reference = recording
    ds = zarr_aac.open_dataset(path, chunks={})
    assert ds.audio.chunks == ((RATE * 4,) * 3, (2,))
    minute_rms = np.sqrt((ds.audio.astype("float64") ** 2).mean("time")).compute()
    np.testing.assert_allclose(minute_rms.values, np.sqrt((reference.astype("float64") ** 2).mean(0)))


def test_the_engine_is_registered_and_guessed_with_and_without_the_zarr_suffix(recording, tmp_path):
    """xarray's own zarr engine claims every *.zarr path before engines later in name order, so
    the engine is also registered as "aac", which xarray asks before "zarr"; it claims zarr_aac
    recordings only, and leaves other *.zarr stores to xarray's engine."""
    path, _, reference = recording
    engines = xr.backends.list_engines()
    assert type(engines["zarr_aac"]) is type(engines["aac"])
    assert list(engines).index("aac") < list(engines).index("zarr")
    assert xr.backends.plugins.guess_engine(str(path)) == "aac"
    bare = tmp_path / "deployment-7"
    write_recording(str(bare))
    assert xr.backends.plugins.guess_engine(str(bare)) == "aac"
    np.testing.assert_array_equal(xr.open_dataset(path).audio[:100].values, reference[:100])
    np.testing.assert_array_equal(xr.open_dataset(path, engine="zarr_aac").audio[:100].values, reference[:100])
    for plain in (tmp_path / "plain", tmp_path / "plain.zarr"):
        zarr.create_array(str(plain), shape=(10,), dtype="int16")
        assert not engines["zarr_aac"].guess_can_open(str(plain))
    assert xr.backends.plugins.guess_engine(str(tmp_path / "plain.zarr")) == "zarr"


def test_group_gives_one_variable_per_recording(tmp_path):
    root = zarr.open_group(str(tmp_path / "archive.zarr"), mode="w", attributes={"site": "Wytham"})
    write_recording(root.store, "north/rec1", seed=1)
    write_recording(root.store, "south", n=RATE * 5, channels=1, attrs={"sample_rate": RATE}, dtype="float32", seed=2)
    zarr.create_array(root.store, name="notes", shape=(3,), dtype="int32")
    ds = zarr_aac.open_dataset(tmp_path / "archive.zarr")
    assert set(ds.data_vars) == {"north.rec1", "south"}
    assert ds["north.rec1"].dims == ("time_north.rec1", "channel_north.rec1")
    assert ds["south"].dims == ("time_south",) and ds["south"].dtype == np.float32
    assert ds["time_south"].dtype == np.dtype("timedelta64[ns]")
    assert ds.attrs == {"site": "Wytham"}
    np.testing.assert_array_equal(ds["south"].sel(time_south=slice("1s", "2s")).values, root["south"][RATE : 2 * RATE])
    one = zarr_aac.open_dataset(tmp_path / "archive.zarr", variable="north/rec1")
    np.testing.assert_array_equal(one.audio.values, root["north/rec1"][:])
    assert set(zarr_aac.open_dataset(tmp_path / "archive.zarr", drop_variables="south").data_vars) == {"north.rec1"}
    with pytest.raises(ArchiveError, match="no recording 'west'"):
        zarr_aac.open_dataset(tmp_path / "archive.zarr", variable="west")
    with pytest.raises(ArchiveError, match=r"cannot open .*missing\.zarr"):
        zarr_aac.open_dataset(tmp_path / "missing.zarr")
    with pytest.raises(ArchiveError, match="holds no zarr_aac recordings"):
        zarr_aac.open_dataset(zarr.open_group(str(tmp_path / "empty.zarr"), mode="w"))


def test_rate_falls_back_to_the_codec_and_metadata_errors_name_the_array(tmp_path):
    array = write_recording(str(tmp_path / "a.zarr"), n=RATE, attrs={})
    ds = zarr_aac.open_dataset(array)
    assert ds.xindexes["time"].transform.rate == RATE and ds.time.dtype == np.dtype("timedelta64[ns]")
    array.attrs["sample_rate"] = 16000
    with pytest.raises(RecordingMetadataError, match="disagrees with its codec's 8000"):
        zarr_aac.open_dataset(tmp_path / "a.zarr")
    array.attrs.update(sample_rate=RATE, start_time="last tuesday")
    with pytest.raises(RecordingMetadataError, match="unreadable start_time 'last tuesday'"):
        zarr_aac.open_dataset(tmp_path / "a.zarr")


def test_lazy_dataset_pickles_and_reads_after(recording):
    path, _, reference = recording
    ds = pickle.loads(pickle.dumps(zarr_aac.open_dataset(path).isel(time=slice(5000, 9000))))
    np.testing.assert_array_equal(ds.audio.values, reference[5000:9000])


def test_concat_of_abutting_files_keeps_the_lazy_index(tmp_path):
    first = write_recording(str(tmp_path / "a"), n=RATE * 3, seed=3)
    second = write_recording(
        str(tmp_path / "b"),
        n=RATE * 2,
        seed=4,
        attrs={"sample_rate": RATE, "start_time": "2026-06-10T05:00:03Z"},
    )
    parts = [zarr_aac.open_dataset(p, chunks={}) for p in (tmp_path / "a", tmp_path / "b")]
    joined = xr.concat(parts, dim="time")
    assert isinstance(joined.xindexes["time"], SampleTimeIndex)
    np.testing.assert_array_equal(
        joined.audio.sel(time=slice("2026-06-10T05:00:02.5", "2026-06-10T05:00:03.5")).values,
        np.concatenate([first[int(2.5 * RATE) :], second[: RATE // 2]]),
    )


def test_to_aac_writes_samples_and_attributes_but_no_time_coordinate(recording, tmp_path):
    path, _, reference = recording
    clip = zarr_aac.open_dataset(path).audio.sel(time=slice("2026-06-10T05:00:01.0001", "2026-06-10T05:00:07"))
    out = tmp_path / "clip.zarr"
    stored = to_aac(clip, str(out), chunk_length=RATE * 2)
    assert sorted(p.name for p in out.iterdir()) == ["c", "zarr.json"]
    meta = json.loads((out / "zarr.json").read_text())
    assert meta["dimension_names"] == ["time", "channel"]
    assert meta["attributes"]["sample_rate"] == RATE
    assert meta["attributes"]["start_time"] == "2026-06-10T05:00:01.000125Z"
    reopened = zarr_aac.open_dataset(out)
    np.testing.assert_array_equal(reopened.time.values, clip.time.values)
    assert stored.shape == clip.shape
    decoded = reopened.audio.values.astype(np.float64)
    signal = reference[8001 : 7 * RATE].astype(np.float64)
    snr = 10 * np.log10((signal**2).sum() / ((decoded - signal) ** 2).sum())
    assert snr > 15


def test_plain_open_zarr_gets_the_index_through_the_helper(recording, tmp_path):
    path, _, _ = recording
    out = tmp_path / "copy.zarr"
    to_aac(zarr_aac.open_dataset(path, chunks={}).audio, str(out), name="rec")
    plain = xr.open_zarr(out, zarr_format=3, consolidated=False)
    assert "time" not in plain.coords
    indexed = assign_time_index(plain)
    assert isinstance(indexed.xindexes["time"], SampleTimeIndex)
    np.testing.assert_array_equal(indexed.time.values, zarr_aac.open_dataset(path).time.values)
    with pytest.raises(RecordingMetadataError, match="no data variable has a sample_rate"):
        assign_time_index(xr.Dataset({"x": ("t", [1, 2])}))


def test_to_aac_from_plain_arrays_and_its_refusals(tmp_path):
    pcm = tone_with_noise(RATE * 2, 1, RATE)[:, 0].astype(np.float64)
    da = xr.DataArray(pcm, dims="time", attrs={"sample_rate": RATE, "start_time": START, "site": "pond"})
    stored = to_aac(da, str(tmp_path / "mono.zarr"))
    assert stored.dtype == np.float32 and stored.attrs["site"] == "pond" and stored.attrs["channels"] == 1
    assert zarr_aac.open_dataset(tmp_path / "mono.zarr").time[0].values == np.datetime64("2026-06-10T05:00:00")
    with pytest.raises(RecordingMetadataError, match="sample rate is unknown"):
        to_aac(xr.DataArray(pcm, dims="time"), str(tmp_path / "x.zarr"))
    materialised = da.assign_coords(time=pd.date_range(START, periods=pcm.size, freq="125us"))
    with pytest.raises(TimeAxisError, match="materialised coordinate"):
        to_aac(materialised, str(tmp_path / "y.zarr"))
    with pytest.raises(UnsupportedAudioError):
        to_aac(da.astype(np.int32), str(tmp_path / "z.zarr"))
    with pytest.raises(ArchiveError, match="overwrite=True"):
        to_aac(da, str(tmp_path / "mono.zarr"))
    group = zarr.open_group(str(tmp_path / "archive.zarr"), mode="w")
    broken = da.copy(data=np.where(np.arange(pcm.size) == RATE + 5, np.nan, pcm))
    with pytest.raises(ValueError, match="NaN"):
        to_aac(broken, group.store, name="broken", chunk_length=RATE // 2)
    assert "broken" not in zarr.open_group(str(tmp_path / "archive.zarr"), mode="r")
    assert not (tmp_path / "archive.zarr" / "broken").exists()


def test_1e10_sample_archive_opens_and_selects_without_materialising(tmp_path):
    zarr.create_array(
        str(tmp_path / "huge.zarr"),
        shape=(10**10, 2),
        chunks=(2**22, 2),
        dtype="int16",
        serializer=AACCodec(sample_rate=48000),
        compressors=None,
        attributes={"sample_rate": 48000, "start_time": START},
    )
    tracemalloc.start()
    try:
        ds = zarr_aac.open_dataset(tmp_path / "huge.zarr", chunks={})
        minute = ds.audio.sel(time=slice("2026-06-12T00:00", "2026-06-12T00:01"))
        repr(ds)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert minute.shape == (48000 * 60, 2)
    assert peak < 20 * 2**20


def test_concat_recordings_matches_xarray_concat_without_its_per_sample_mask(tmp_path):
    for name, start in (("a", START), ("b", "2026-06-10T05:00:03Z")):
        attrs = {"sample_rate": RATE, "start_time": start}
        write_recording(str(tmp_path / name), n=RATE * 3, seed=ord(name), attrs=attrs)
    parts = [zarr_aac.open_dataset(tmp_path / name) for name in ("a", "b")]
    joined = concat_recordings(parts)
    expected = xr.concat([p.chunk() for p in parts], dim="time")
    xr.testing.assert_identical(joined, expected)
    assert joined.audio.chunks[0] == (RATE * 3,) * 2
    huge = []
    for name, start in (("h1", START), ("h2", "2026-06-11T09:56:06.666666667Z")):
        zarr.create_array(
            str(tmp_path / name),
            shape=(5 * 10**9,),
            chunks=(2**24,),
            dtype="int16",
            serializer=AACCodec(sample_rate=48000),
            compressors=None,
            attributes={"sample_rate": 48000, "start_time": start},
        )
        huge.append(zarr_aac.open_dataset(tmp_path / name, chunks={}))
    tracemalloc.start()
    try:
        whole = concat_recordings(huge)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert whole.sizes["time"] == 10**10 and isinstance(whole.xindexes["time"], SampleTimeIndex)
    assert peak < 20 * 2**20


def test_aac_files_open_by_path_with_the_engine(data_dir, tmp_path):
    from zarr_aac.files.store import open_aac_file

    path = tmp_path / "music.m4a"
    path.write_bytes((data_dir / "music_lena_44k1.m4a").read_bytes())
    expected = open_aac_file(path, index_path=False)[44100:88200]
    ds = xr.open_dataset(path, engine="zarr_aac")
    assert ds.audio.dims == ("time", "channel")
    np.testing.assert_array_equal(ds.audio.isel(time=slice(44100, 88200)).values, expected)
    assert xr.backends.plugins.guess_engine(str(path)) == "aac"  # the engine under its guessing name


def test_drop_variables_is_honoured_for_one_recording_and_for_aac_files(recording, data_dir, tmp_path):
    path, _, _ = recording
    assert set(zarr_aac.open_dataset(path).data_vars) == {"audio"}
    assert set(zarr_aac.open_dataset(path, drop_variables="audio").data_vars) == set()
    m4a = tmp_path / "music.m4a"
    m4a.write_bytes((data_dir / "music_lena_44k1.m4a").read_bytes())
    assert set(xr.open_dataset(m4a, engine="zarr_aac", drop_variables=["audio"]).data_vars) == set()
    group = zarr.open_group(str(tmp_path / "archive.zarr"), mode="w")
    write_recording(group.store, "north", n=RATE)
    assert set(zarr_aac.open_dataset(group, variable="north", drop_variables="audio").data_vars) == set()


def test_guess_can_open_answers_false_for_a_malformed_zarr_json(tmp_path):
    guess = xr.backends.list_engines()["zarr_aac"].guess_can_open
    for text in ("{not json", '{"zarr_format": 3, "node_type": "array"}'):
        bad = tmp_path / f"bad{len(text)}"
        bad.mkdir()
        (bad / "zarr.json").write_text(text)
        assert guess(str(bad)) is False


def test_datasets_from_m4a_files_and_imports_write_to_netcdf(data_dir, tmp_path):
    from scipy.io import netcdf_file

    m4a = tmp_path / "music.m4a"
    m4a.write_bytes((data_dir / "music_lena_44k1.m4a").read_bytes())
    ds = xr.open_dataset(m4a, engine="zarr_aac").isel(time=slice(0, 4410))
    assert "start_time" not in ds.attrs and ds.attrs["source.container"] == "mp4"
    ds.to_netcdf(tmp_path / "music.nc")
    with netcdf_file(tmp_path / "music.nc", mmap=False) as written:
        assert written.sample_rate == 44100 and written.variables["audio"].shape == (4410, 2)
    archive = tmp_path / "archive.zarr"
    zarr_aac.import_file(data_dir / "crow_44k1.flac", archive, "rec", metadata={"site": "pond"}, progress=False)
    imported = zarr_aac.open_dataset(archive, variable="rec").isel(time=slice(0, 100))
    imported.to_netcdf(tmp_path / "imported.nc")
    with netcdf_file(tmp_path / "imported.nc", mmap=False) as written:
        assert getattr(written.variables["audio"], "user.site") == b"pond"


def test_the_engine_names_its_documentation():
    """Under both names, a page of this repository: docs/xarray.md."""
    from pathlib import Path

    engines = xr.backends.list_engines()
    url = engines["zarr_aac"].url
    assert url == engines["aac"].url and url.startswith("https://") and url.endswith("/blob/main/docs/xarray.md")
    assert (Path(__file__).resolve().parents[1] / url.split("/blob/main/")[1]).is_file()


def test_the_open_zarr_recipe_works_on_an_archive_of_several_recordings(data_dir, tmp_path):
    """Issue 12, item 10: assign_time_index(xr.open_zarr(archive)) failed on any archive of more
    than one recording, every recording's first dimension being "time". The documented recipe
    opens one recording with xr.open_zarr, or all of them with zarr_aac.open_dataset."""
    archive = tmp_path / "deployment.zarr"
    zarr_aac.import_file(data_dir / "crow_44k1.flac", archive, "crow", start_time=START, progress=False)
    zarr_aac.import_file(data_dir / "music_lena_44k1.m4a", archive, "music", progress=False)
    with pytest.raises(ValueError, match="conflicting sizes for dimension 'time'"):
        xr.open_zarr(archive, consolidated=False)  # xarray's engine, as the docs warn
    guessed = xr.open_dataset(archive)  # without an engine: this one, not xarray's zarr engine
    assert set(guessed.data_vars) == {"crow", "music"}
    np.testing.assert_array_equal(guessed.crow.values, zarr.open_array(str(archive / "crow"), mode="r")[:])
    group = zarr.open_group(str(archive), mode="r")
    others = [name for name in group.array_keys() if name != "crow"]
    ds = assign_time_index(xr.open_zarr(archive, consolidated=False, drop_variables=others))
    np.testing.assert_array_equal(ds.crow.values, group["crow"][:])
    assert ds.time.values[0] == np.datetime64(START_NS, "ns")
    everything = zarr_aac.open_dataset(archive)
    assert set(everything.data_vars) == {"crow", "music"}
    assert everything.crow.dims[0] == "time_crow" and everything.music.dims[0] == "time_music"
