"""AACFileStore against PyAV's full decode of files the ffmpeg command line made.

Reference: ``av.open(file)`` decoding every frame in order, which honours the MP4 edit list as
any FFmpeg-based player does. Files made with ``-aac_pns 0`` must match bit for bit; with
FFmpeg's default PNS the noise-substituted bands differ (see docs/store-adapter.md) and the
tolerance below is asserted instead.
"""

from __future__ import annotations

import asyncio
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st
from support.media import ffmpeg_aac, pyav_decode, require_tool, two_track_aac, write_wav
from support.selections import assert_selections_match, reference_decode
from support.signals import int16_reference, tones
from support.stores import RecordingStore
from zarr.core.buffer import default_buffer_prototype
from zarr.storage import MemoryStore

import zarr_aac
from zarr_aac.codec.chunk_format import (
    CHECKSUM_GROUP,
    pack_chunk,
    pack_prefix,
    parse_header,
    parse_prefix,
    verify_payload,
)
from zarr_aac.errors import CorruptChunkError, CorruptSourceError, SourceNotFoundError
from zarr_aac.files.legacy import legacy_store, open_legacy_archive
from zarr_aac.files.store import INDEX_SUFFIX, AACFileStore, index_cache_path, open_aac_file

RATES = (16000, 44100, 48000)
SECONDS = 2.5
CHUNK = 10_000
"""Virtual chunk length: not a multiple of 1024, so chunk edges fall inside frames."""


class Encoded:
    """Files made by the ffmpeg command line, built on first use and shared by the module."""

    def __init__(self, ffmpeg: str, root: Path) -> None:
        self.ffmpeg, self.root, self.files = ffmpeg, root, {}

    def get(self, container: str, rate: int, channels: int, pns: bool) -> Path:
        key = (container, rate, channels, pns)
        if key not in self.files:
            wav = self.root / f"{rate}_{channels}.wav"
            if not wav.exists():
                # the noise makes FFmpeg's encoder use PNS when it may
                write_wav(wav, tones(int(rate * SECONDS), rate, 440.0 * (1 + np.arange(channels))), rate)
            out = self.root / f"{rate}_{channels}_{'pns' if pns else 'nopns'}.{container}"
            self.files[key] = ffmpeg_aac(self.ffmpeg, wav, out, pns=pns)
        return self.files[key]


@pytest.fixture(scope="module")
def encoded(tmp_path_factory) -> Encoded:
    ffmpeg = require_tool("ffmpeg")
    return Encoded(ffmpeg, tmp_path_factory.mktemp("encoded"))


def assert_pns_tolerance(got: np.ndarray, ref: np.ndarray, rate: int) -> None:
    """What random access changes in a file with PNS: only the substituted noise.

    The decoder draws PNS noise from a generator whose state depends on every frame decoded
    before, so a read that starts mid-stream draws different noise of the same energy.
    """
    assert got.shape == ref.shape
    rms_ref = np.sqrt(np.mean(ref.astype(np.float64) ** 2))
    rms_got = np.sqrt(np.mean(got.astype(np.float64) ** 2))
    assert abs(rms_got / rms_ref - 1) < 0.01
    assert np.sqrt(np.mean((got - ref).astype(np.float64) ** 2)) < 0.15 * rms_ref
    assert np.abs(got - ref).max() < 0.3
    low = np.fft.rfftfreq(len(ref), 1 / rate) < 2000
    lowpass = np.fft.irfft(np.fft.rfft(got - ref, axis=0) * low[:, None], n=len(ref), axis=0)
    assert np.abs(lowpass).max() < 0.01


@pytest.mark.parametrize("container", ["aac", "m4a"])
@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("channels", [1, 2])
def test_pns_free_files_match_pyav_bit_for_bit(encoded, container, rate, channels, tmp_path):
    path = encoded.get(container, rate, channels, pns=False)
    ref = pyav_decode(path)
    array = open_aac_file(path, dtype="float32", chunk_length=CHUNK, index_path=tmp_path / "index.npz")
    assert array.shape == ref.shape and array.dtype == np.float32
    np.testing.assert_array_equal(array[:], ref)
    assert_selections_match(array, ref, np.random.default_rng(rate + channels))
    np.testing.assert_array_equal(reference_decode(array), ref)
    assert array.attrs["sample_rate"] == rate
    assert array.attrs["source"]["priming"] == (1024 if container == "m4a" else 0)


@pytest.mark.parametrize("container", ["aac", "m4a"])
@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("channels", [1, 2])
def test_files_with_pns_match_within_the_documented_tolerance(encoded, container, rate, channels):
    path = encoded.get(container, rate, channels, pns=True)
    ref = pyav_decode(path)
    array = open_aac_file(path, dtype="float32", chunk_length=CHUNK, index_path=False)
    assert array.shape == ref.shape
    assert_pns_tolerance(array[:], ref, rate)
    a, b = 12_345, 12_345 + rate // 2
    assert_pns_tolerance(array[a:b], ref[a:b], rate)


def test_int16_is_the_default_and_rounds_and_clips_as_the_spec_says(encoded):
    path = encoded.get("m4a", 48000, 2, pns=False)
    array = open_aac_file(path, index_path=False)
    ref = int16_reference(pyav_decode(path))
    assert array.dtype == np.int16
    np.testing.assert_array_equal(array[1000:50_000], ref[1000:50_000])


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_random_ranges_equal_pyav(encoded, data):
    path = encoded.get(data.draw(st.sampled_from(["aac", "m4a"])), 44100, 2, pns=False)
    array, ref = _opened(path)
    n = len(ref)
    start = data.draw(st.integers(0, n))
    stop = data.draw(st.integers(start, min(n, start + 3 * CHUNK)))
    step = data.draw(st.sampled_from([1, 1, 7, 1000]))
    np.testing.assert_array_equal(array[start:stop:step], ref[start:stop:step])


_OPENED: dict = {}


def _opened(path: Path) -> tuple[zarr.Array, np.ndarray]:
    if path not in _OPENED:
        _OPENED[path] = (open_aac_file(path, dtype="float32", chunk_length=CHUNK, index_path=False), pyav_decode(path))
    return _OPENED[path]


@pytest.mark.parametrize("name", ["music_lena_44k1.m4a", "music_lena_44k1_adts.aac"])
def test_repository_fixtures_from_another_encoder(data_dir, name, tmp_path):
    path = tmp_path / name
    path.write_bytes((data_dir / name).read_bytes())
    ref = pyav_decode(path)
    array = open_aac_file(path, dtype="float32")
    assert array.shape == ref.shape
    assert_pns_tolerance(array[:], ref, 44100)
    assert_pns_tolerance(array[100_000:144_100], ref[100_000:144_100], 44100)


def test_shared_recordings(shared_audio, tmp_path):
    for name in ("music_lena_44k1.m4a", "music_lena_44k1_adts.aac"):
        ref = pyav_decode(shared_audio / name)
        array = open_aac_file(shared_audio / name, dtype="float32", index_path=tmp_path / f"{name}.npz")
        assert array.shape == ref.shape
        assert_pns_tolerance(array[:], ref, 44100)


def test_clicks_land_on_their_input_sample_in_m4a(encoded, tmp_path):
    """Sample i of an M4A is input sample i (edit list honoured); ADTS keeps FFmpeg's 1024
    samples of priming, as every decoder presents it."""
    rate = 48000
    pcm = np.zeros((rate * 2, 1), dtype=np.float32)
    clicks = np.array([3000, 20_000, 47_111, 70_001])
    pcm[clicks] = 0.9
    wav = tmp_path / "clicks.wav"
    soundfile.write(wav, pcm, rate, subtype="FLOAT")
    for container, shift in (("m4a", 0), ("aac", 1024)):
        out = tmp_path / f"clicks.{container}"
        ffmpeg_aac(encoded.ffmpeg, wav, out, "-b:a", "256k")
        array = open_aac_file(out, dtype="float32", chunk_length=CHUNK, index_path=False)
        for click in clicks:
            window = array[click + shift - 200 : click + shift + 200, 0]
            assert int(np.argmax(np.abs(window))) - 200 == 0


def test_m4a_without_edit_list_presents_the_priming_like_ffmpeg(encoded, tmp_path):
    wav = encoded.root / "44100_2.wav"
    encoded.get("m4a", 44100, 2, pns=False)
    out = tmp_path / "noedit.m4a"
    ffmpeg_aac(encoded.ffmpeg, wav, out, "-use_editlist", "0")
    ref = pyav_decode(out)
    array = open_aac_file(out, dtype="float32", chunk_length=CHUNK, index_path=False)
    assert array.attrs["source"]["priming_from"] == "none"
    np.testing.assert_array_equal(array[:], ref)


# -- index cache -------------------------------------------------------------------------------


@pytest.mark.parametrize("container", ["aac", "m4a"])
def test_second_open_uses_the_cached_index(encoded, tmp_path, monkeypatch, container):
    """The index is cached in the user's cache folder, not beside the user's recording."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = tmp_path / "recordings" / f"rec.{container}"
    path.parent.mkdir()
    path.write_bytes(encoded.get(container, 16000, 1, pns=False).read_bytes())
    first = open_aac_file(path, dtype="float32")
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
    assert [p.name for p in (tmp_path / "cache" / "zarr-aac" / "indexes").iterdir()] == [index_cache_path(path).name]
    built = first.store.index
    cached = AACFileStore.from_path(path, dtype="float32").index
    np.testing.assert_array_equal(cached.frame_offsets, built.frame_offsets)
    np.testing.assert_array_equal(cached.frame_sizes, built.frame_sizes)
    assert (cached.asc, cached.priming, cached.n_samples) == (built.asc, built.priming, built.n_samples)

    def no_rescan(*args, **kwargs):
        raise AssertionError("the file was scanned again")

    monkeypatch.setattr("zarr_aac.files.store.index_stream", no_rescan)
    second = open_aac_file(path, dtype="float32")
    np.testing.assert_array_equal(second[:], first[:])
    assert second.attrs.asdict() == first.attrs.asdict()


def test_changed_file_invalidates_the_cached_index(encoded, tmp_path):
    path = tmp_path / "rec.m4a"
    path.write_bytes(encoded.get("m4a", 16000, 1, pns=False).read_bytes())
    before = open_aac_file(path).shape
    path.write_bytes(encoded.get("m4a", 48000, 2, pns=False).read_bytes())
    os.utime(path, ns=(1, 1))
    after = open_aac_file(path)
    assert after.shape != before and after.shape == pyav_decode(path).shape


def test_user_given_index_location_and_no_cache(encoded, tmp_path):
    source = encoded.get("aac", 16000, 2, pns=False)
    index_path = tmp_path / "elsewhere" / "rec.npz"
    index_path.parent.mkdir()
    open_aac_file(source, index_path=index_path)
    assert index_path.is_file() and not Path(str(source) + INDEX_SUFFIX).exists()
    open_aac_file(source, index_path=False)
    assert not Path(str(source) + INDEX_SUFFIX).exists()
    assert not [p for p in index_path.parent.iterdir() if p.name != "rec.npz"]


def test_track_is_part_of_the_cache_key(encoded, tmp_path):
    path = tmp_path / "two.m4a"
    wav = encoded.root / "48000_2.wav"
    encoded.get("m4a", 48000, 2, pns=False)
    two_track_aac(encoded.ffmpeg, wav, wav, path, "-ac:a:1", "1")
    assert open_aac_file(path).shape[1] == 2
    second = open_aac_file(path, track=1, dtype="float32")
    assert second.shape[1] == 1
    np.testing.assert_array_equal(second[:], pyav_decode(path, stream=1))


# -- store behaviour -----------------------------------------------------------------------------


def test_partial_read_costs_two_bounded_requests(encoded):
    path = encoded.get("m4a", 48000, 2, pns=False)
    store = AACFileStore.from_path(path, index_path=False, chunk_length=48000)
    counting = RecordingStore(store)
    array = zarr.open_array(store=counting, mode="r")
    counting.log.reset()
    array[60_000:61_000]
    assert counting.log.gets == 2
    assert counting.log.bytes < 8 * 1024


def test_store_is_read_only_and_lists_its_keys(encoded):
    store = AACFileStore.from_path(encoded.get("aac", 16000, 1, pns=False), index_path=False, chunk_length=CHUNK)
    array = zarr.open_array(store=store)  # the default mode works on a read-only store too
    with pytest.raises(ValueError, match=r"read.only"):
        array[:10] = 0
    keys = asyncio.run(_collect(store.list()))
    assert keys[0] == "zarr.json" and keys[1:] == [f"c/{i}/0" for i in range(array.nchunks)]
    assert asyncio.run(_collect(store.list_dir("c"))) == [str(i) for i in range(array.nchunks)]
    assert asyncio.run(store.exists("c/0/0")) and not asyncio.run(store.exists(f"c/{array.nchunks}/0"))
    assert asyncio.run(store.getsize("c/1/0")) == len(asyncio.run(store.get("c/1/0")).to_bytes())


async def _collect(iterator) -> list:
    return [item async for item in iterator]


def test_rejects_bad_options(encoded):
    path = encoded.get("aac", 16000, 1, pns=False)
    with pytest.raises(ValueError, match="chunk_length"):
        AACFileStore.from_path(path, chunk_length=10)
    with pytest.raises(ValueError, match="int16 or float32"):
        AACFileStore.from_path(path, dtype="float64")


def test_chunk_without_checksums_round_trips():
    """checksum_group 0: AACFileStore serves the prefix before the frames are read, so there
    are no frame checksums; the length is still checked, and chunks with checksums verify them."""
    asc, frames = b"\x12\x10", [b"\x01\x02\x03", b"\x04\x05"]
    sizes = np.array([3, 2])
    prefix = pack_prefix(asc, sizes, channels=2, aac_sample_rate=44100, n_samples=1024, skip=1024, payload=None)
    chunk = prefix + b"".join(frames)
    header = parse_header(chunk, "c/0/0")
    assert header.checksum_group == 0 and header.n_groups == 0
    parsed = parse_prefix(chunk, header, "c/0/0")
    verify_payload(chunk, parsed, "c/0/0")
    with pytest.raises(CorruptChunkError, match="chunk is 58 bytes, its header describes 59"):
        verify_payload(chunk[:-1], parsed, "c/0/0")
    checked = pack_chunk(asc, frames, channels=2, aac_sample_rate=44100, n_samples=1024, skip=1024)
    assert parse_header(checked, "c/0/0").checksum_group == CHECKSUM_GROUP
    tampered = checked[:-1] + b"\xff"
    header = parse_header(tampered, "c/0/0")
    with pytest.raises(CorruptChunkError, match="checksum mismatch in frames 0-1"):
        verify_payload(tampered, parse_prefix(tampered, header, "c/0/0"), "c/0/0")


# -- old archives --------------------------------------------------------------------------------


def adts_frames(data: bytes) -> list[tuple[int, int]]:
    """(offset, length) of each ADTS frame, by the frame_length field of each header."""
    frames, pos = [], 0
    while pos + 7 <= len(data):
        length = ((data[pos + 3] & 3) << 11) | (data[pos + 4] << 3) | (data[pos + 5] >> 5)
        frames.append((pos, length))
        pos += length
    return frames


def write_legacy_archive(path: Path, adts: bytes, rate: int, channels: int) -> zarr.Group:
    """The old system's layout, built from its description: ADTS bytes, 3-column index, attributes."""
    group = zarr.open_group(path, mode="w")
    group.create_array("audio", data=np.frombuffer(adts, dtype=np.uint8), chunks=(4096,))
    table = np.array(
        [(offset, length, k * 1024) for k, (offset, length) in enumerate(adts_frames(adts))], dtype=np.uint64
    )
    group.create_array("aac_index", data=table, chunks=(1000, 3))
    group.attrs.update(
        {"sample_rate": rate, "nb_channels": channels, "first_sample_time_stamp": "2021-06-01T04:30:00+00:00"}
    )
    return group


def test_old_archive_opens_as_the_same_pcm_array(encoded, tmp_path):
    adts = encoded.get("aac", 44100, 2, pns=False)
    write_legacy_archive(tmp_path / "old.zarr", adts.read_bytes(), 44100, 2)
    array = open_legacy_archive(tmp_path / "old.zarr", dtype="float32", chunk_length=CHUNK)
    ref = pyav_decode(adts)
    assert array.shape == ref.shape
    np.testing.assert_array_equal(array[:], ref)
    assert_selections_match(array, ref, np.random.default_rng(5))
    assert array.attrs["start_time"] == "2021-06-01T04:30:00+00:00"
    group = zarr.open_group(tmp_path / "old.zarr", mode="r")
    same = zarr.open_array(store=legacy_store(group, dtype="float32"), mode="r")
    np.testing.assert_array_equal(same[5000:9000], ref[5000:9000])


def test_old_archive_inconsistencies_are_named(encoded, tmp_path):
    adts = encoded.get("aac", 16000, 1, pns=False).read_bytes()
    group = write_legacy_archive(tmp_path / "a.zarr", adts, 16000, 2)
    with pytest.raises(CorruptSourceError, match="attributes say 16000 Hz x 2 channels, the ADTS headers 16000 Hz x 1"):
        open_legacy_archive(group)
    group.attrs["nb_channels"] = 1
    table = group["aac_index"][:]
    table[7, 2] += 5
    group["aac_index"][:] = table
    with pytest.raises(CorruptSourceError, match="aac_index row 7: sample_pos"):
        open_legacy_archive(group)
    del group.attrs["first_sample_time_stamp"]
    with pytest.raises(CorruptSourceError, match="not an old zarr-aac archive"):
        open_legacy_archive(group)


def test_arrays_and_errors_survive_pickling(encoded):
    """Dask ships the array (store and index) and any error to and from worker processes."""
    array = open_aac_file(
        encoded.get("m4a", 44100, 1, pns=False), dtype="float32", chunk_length=CHUNK, index_path=False
    )
    clone = pickle.loads(pickle.dumps(array))
    np.testing.assert_array_equal(clone[3000:25_000], array[3000:25_000])
    error = pickle.loads(pickle.dumps(CorruptSourceError("rec.aac", "lost ADTS sync at byte 7")))
    assert str(error) == "rec.aac: lost ADTS sync at byte 7" and error.source == "rec.aac"


@pytest.mark.parametrize(
    ("suffix", "options"),
    [(".aac", ["-write_id3v2", "1", "-metadata", "title=dawn chorus"]), (".m4a", ["-movflags", "+faststart"])],
    ids=["adts-with-id3v2-tag", "m4a-moov-first"],
)
def test_container_variants_match_pyav(encoded, tmp_path, suffix, options):
    wav = encoded.root / "44100_1.wav"
    encoded.get("aac", 44100, 1, pns=False)
    out = tmp_path / f"variant{suffix}"
    ffmpeg_aac(encoded.ffmpeg, wav, out, *options)
    if suffix == ".aac":
        assert out.read_bytes()[:3] == b"ID3"
    array = open_aac_file(out, dtype="float32", chunk_length=CHUNK, index_path=False)
    np.testing.assert_array_equal(array[:], pyav_decode(out))


def test_xarray_backend_opens_the_adapter_array(encoded, tmp_path):
    """zarr_aac.open_dataset takes the opened array: time axis from the file's rate, and from
    an old archive's first_sample_time_stamp."""
    path = encoded.get("m4a", 48000, 2, pns=False)
    array = open_aac_file(path, index_path=False)
    ds = zarr_aac.open_dataset(array)
    np.testing.assert_array_equal(ds["audio"].isel(time=slice(4800, 9600)).values, array[4800:9600])
    assert ds.sizes["time"] == array.shape[0]

    write_legacy_archive(tmp_path / "old.zarr", encoded.get("aac", 44100, 2, pns=False).read_bytes(), 44100, 2)
    old = zarr_aac.open_dataset(open_legacy_archive(tmp_path / "old.zarr"))
    assert old["time"].values[0] == np.datetime64("2021-06-01T04:30:00")
    assert old["time"].values[44100] == np.datetime64("2021-06-01T04:30:01")


def test_any_zarr_store_can_hold_the_file(encoded):
    """A (store, key) pair: here a MemoryStore, in practice an ObjectStore over S3 or GCS."""
    path = encoded.get("m4a", 44100, 2, pns=False)
    memory = MemoryStore()
    asyncio.run(memory.set("recordings/rec.m4a", default_buffer_prototype().buffer.from_bytes(path.read_bytes())))
    array = open_aac_file((memory, "recordings/rec.m4a"), dtype="float32", chunk_length=CHUNK)
    np.testing.assert_array_equal(array[:], pyav_decode(path))
    with pytest.raises(SourceNotFoundError, match=r"absent\.m4a"):
        open_aac_file((memory, "recordings/absent.m4a"))
