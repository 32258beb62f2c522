"""Silent corruption: single-byte flips in the stored chunks of a real recording, detected on
read and by ``verify``; the opt-in tolerant read mode; ``verify`` on groups, arrays and paths.

Run as a script for the figures in docs/reliability.md::

    python tests/test_corruption.py --flips 1000
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections import Counter
from pathlib import Path

import av
import numpy as np
import pytest
import zarr
from support.chunks import Chunk, get_bytes, put_bytes
from support.selections import reference_decode

import zarr_aac
from zarr_aac import AACCodec, CorruptChunkError
from zarr_aac.archive.verification import verify

DATA = Path(__file__).parent / "data"
CHUNK = 1 << 16
FLIPS = int(os.environ.get("ZARR_AAC_FLIPS", "300"))


def lena_pcm() -> np.ndarray:
    """music_lena_44k1.m4a decoded by PyAV's container path, cut to whole chunks: int16 (n, 2)."""
    with av.open(str(DATA / "music_lena_44k1.m4a")) as container:
        blocks = [frame.to_ndarray() for frame in container.decode(audio=0)]
    pcm = np.concatenate(blocks, axis=1).T
    pcm = pcm[: (len(pcm) // CHUNK) * CHUNK]
    return np.clip(np.rint(pcm * 32768), -32768, 32767).astype(np.int16)


def store_recording(root: Path, name: str, pcm: np.ndarray, chunk: int = CHUNK) -> zarr.Array:
    group = zarr.open_group(root, mode="a")
    array = group.create_array(
        name,
        shape=pcm.shape,
        chunks=(chunk, pcm.shape[1]),
        dtype=pcm.dtype,
        serializer=AACCodec(sample_rate=44100),
        compressors=None,
        fill_value=0,
    )
    array[:] = pcm
    return array


def chunk_keys(array: zarr.Array) -> list[str]:
    """Store keys of the array's chunks, in time order."""
    return [f"{array.path}/{array.metadata.encode_chunk_key((i, 0))}" for i in range(array.cdata_shape[0])]


REGIONS = ("header", "ASC", "index", "checksums", "frames")


def prefix_region(chunk: Chunk, position: int) -> str:
    asc_end = 48 + chunk.fields["asc_nbytes"]
    if position < 48:
        return "header"
    if position < asc_end:
        return "ASC"
    if position < asc_end + 2 * chunk.sizes.size:
        return "index"
    if position < chunk.prefix_nbytes:
        return "checksums"
    return "frames"


def flip_experiment(
    array: zarr.Array, reference: np.ndarray, flips: int, seed: int, prefix_only: bool = False
) -> Counter:
    """Flip one random byte of one random chunk at a time (restoring it afterwards) and count,
    per region, what a whole-chunk read, verify() and a partial read of the damaged frame saw.
    ``prefix_only`` draws the bytes from the header, ASC, index and checksums alone."""
    rng = np.random.default_rng(seed)
    keys = chunk_keys(array)
    originals = {key: get_bytes(array, key) for key in keys}
    counts: Counter = Counter()
    for _ in range(flips):
        i = int(rng.integers(len(keys)))
        key, data = keys[i], originals[keys[i]]
        chunk = Chunk.parse(data)
        position = int(rng.integers(chunk.prefix_nbytes if prefix_only else len(data)))
        damaged = bytearray(data)
        damaged[position] ^= int(rng.integers(1, 256))
        put_bytes(array, key, bytes(damaged))
        region = prefix_region(chunk, position)
        rows = slice(i * CHUNK, (i + 1) * CHUNK)
        counts[region, "injected"] += 1
        counts[region, "whole read raised"] += _raises(lambda rows=rows: array[rows])
        counts[region, "verify listed"] += any(p["key"] == key for p in verify(array, progress=False))
        window = _window_of(chunk, position, i)
        try:
            out = array[window]
        except CorruptChunkError:
            counts[region, "partial read raised"] += 1
        else:
            same = np.array_equal(out, reference[window])
            counts[region, "partial read unchanged" if same else "partial read silently wrong"] += 1
        put_bytes(array, key, data)
    return counts


def _window_of(chunk: Chunk, position: int, chunk_number: int) -> slice:
    """The samples decoded from the frame holding ``position`` and the next one (the frame
    whose overlap it feeds), clipped to the chunk; the chunk's first 2048 samples for a byte
    in the prefix or in lead-in frames."""
    frame = chunk.frame_of_byte(position)
    first = max(frame * 1024 - chunk.fields["skip"], 0) if position >= chunk.prefix_nbytes else 0
    last = min(max(first, (frame + 2) * 1024 - chunk.fields["skip"]), CHUNK)
    if last - first < 2048:
        first, last = (first, first + 2048) if first + 2048 <= CHUNK else (CHUNK - 2048, CHUNK)
    base = chunk_number * CHUNK
    return slice(base + first, base + last)


def _raises(read) -> bool:
    try:
        read()
    except CorruptChunkError:
        return True
    return False


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    root = tmp_path_factory.mktemp("archive") / "lena.zarr"
    array = store_recording(root, "lena", lena_pcm())
    return array, reference_decode(array)


def test_every_single_byte_flip_is_detected_where_checksums_cover_it(recording):
    array, reference = recording
    counts = flip_experiment(array, reference, FLIPS, seed=1)
    for region in REGIONS:
        injected = counts[region, "injected"]
        for seen in ("whole read raised", "verify listed", "partial read raised"):
            assert counts[region, seen] == injected, (region, seen)
    assert counts["frames", "injected"] > 0.9 * FLIPS
    np.testing.assert_array_equal(array[:], reference)


def test_every_single_byte_flip_in_the_prefix_fails_every_read(recording):
    array, reference = recording
    counts = flip_experiment(array, reference, FLIPS // 3, seed=2, prefix_only=True)
    for region in ("header", "ASC", "index", "checksums"):
        injected = counts[region, "injected"]
        assert injected > 0, region
        for seen in ("whole read raised", "verify listed", "partial read raised"):
            assert counts[region, seen] == injected, (region, seen)
    np.testing.assert_array_equal(array[:], reference)


def test_a_corrupt_chunk_raises_by_default_and_tolerant_reads_fill_and_report(recording):
    array, reference = recording
    key = chunk_keys(array)[2]
    data = get_bytes(array, key)
    damaged = bytearray(data)
    damaged[len(data) // 2] ^= 0x40
    put_bytes(array, key, bytes(damaged))
    try:
        with pytest.raises(CorruptChunkError, match=f"corrupt chunk '{key}': checksum mismatch in frames"):
            array[:]
        with zarr_aac.tolerant_reads() as report:
            whole = array[:]
            header_damage = bytearray(data)
            header_damage[20] ^= 1
            put_bytes(array, key, bytes(header_damage))
            points = array.oindex[[5, 2 * CHUNK + 7, 4 * CHUNK], 1]
            partial = array[2 * CHUNK - 100 : 2 * CHUNK + 100]
        assert report.keys == [key] * 3
        assert "checksum mismatch in frames" in report.errors[0].reason
        assert all("header claims" in e.reason for e in report.errors[1:])
        np.testing.assert_array_equal(whole[2 * CHUNK : 3 * CHUNK], 0)
        np.testing.assert_array_equal(
            np.delete(whole, np.s_[2 * CHUNK : 3 * CHUNK], axis=0),
            np.delete(reference, np.s_[2 * CHUNK : 3 * CHUNK], axis=0),
        )
        np.testing.assert_array_equal(points, [reference[5, 1], 0, reference[4 * CHUNK, 1]])
        np.testing.assert_array_equal(partial[:100], reference[2 * CHUNK - 100 : 2 * CHUNK])
        np.testing.assert_array_equal(partial[100:], 0)
        with pytest.raises(CorruptChunkError):
            array[2 * CHUNK : 2 * CHUNK + 10]
    finally:
        put_bytes(array, key, data)
    np.testing.assert_array_equal(array[:], reference)


def test_a_partial_read_verifies_the_frames_it_decodes_and_only_fetches_their_groups(recording):
    array, reference = recording
    key = chunk_keys(array)[3]
    data = get_bytes(array, key)
    chunk = Chunk.parse(data)
    damaged = bytearray(data)
    position = chunk.prefix_nbytes + int(chunk.sizes[:40].sum()) + 9
    damaged[position] ^= 0x10
    window = _window_of(chunk, position, 3)
    put_bytes(array, key, bytes(damaged))
    try:
        np.testing.assert_array_equal(array[: 3 * CHUNK], reference[: 3 * CHUNK])
        far = slice(3 * CHUNK + 60_000, 3 * CHUNK + 61_000)
        np.testing.assert_array_equal(array[far], reference[far])
        with pytest.raises(CorruptChunkError, match=f"'{key}': checksum mismatch in frames 32-47"):
            array[window]
        with zarr_aac.tolerant_reads() as report:
            np.testing.assert_array_equal(array[window], 0)
        assert report.keys == [key]
    finally:
        put_bytes(array, key, data)


def test_tolerant_reads_do_not_hide_other_failures(tmp_path, tone):
    pcm = (tone(8192, 1, 48000) * 20000).astype(np.int16)
    array = store_recording(tmp_path / "a.zarr", "r", pcm, chunk=4096)
    with zarr_aac.tolerant_reads() as report, pytest.raises(IndexError):
        array[10_000]
    assert not report


@pytest.fixture
def archive(tmp_path, tone):
    """A group of two small recordings (chunks of 4096 samples) and a non-audio array."""
    root = tmp_path / "archive.zarr"
    for name, channels in (("site_a", 1), ("deep/site_b", 2)):
        pcm = (tone(4 * 4096, channels, 48000, seed=channels) * 20000).astype(np.int16)
        store_recording(root, name, pcm, chunk=4096)
    zarr.open_group(root, mode="a").create_array("catalogue", shape=(3,), dtype="int64")
    return root


def test_verify_finds_nothing_in_a_sound_archive(archive):
    assert verify(archive, progress=False) == []
    assert verify(str(archive), progress=False, decode=True) == []


def test_verify_lists_each_bad_chunk(archive):
    group = zarr.open_group(archive, mode="r")
    site_a, site_b = group["site_a"], group["deep/site_b"]
    bad = {("site_a", "site_a/c/1/0"): 100, ("deep/site_b", "deep/site_b/c/3/0"): 45}
    for (_, key), position in bad.items():
        path = archive / key
        data = bytearray(path.read_bytes())
        data[position] ^= 0xFF
        path.write_bytes(bytes(data))
    (archive / "site_a/c/2/0").write_bytes((archive / "site_a/c/0/0").read_bytes()[:-1])
    problems = verify(archive, progress=False)
    found = {(p["array"], p["key"]): p["error"] for p in problems}
    assert set(found) == {*bad, ("site_a", "site_a/c/2/0")}
    assert "checksum mismatch in frames" in found["site_a", "site_a/c/1/0"]
    assert "header/index checksum" in found["deep/site_b", "deep/site_b/c/3/0"]
    assert verify(site_b, progress=False) == [p for p in problems if p["array"] == "deep/site_b"]
    assert {p["key"] for p in verify(site_a, progress=False, decode=True)} == {"site_a/c/1/0", "site_a/c/2/0"}


def test_verify_reports_missing_chunks_unless_told_not_to(archive):
    (archive / "site_a/c/3/0").unlink()
    assert verify(archive, progress=False) == [
        {
            "array": "site_a",
            "key": "site_a/c/3/0",
            "error": "missing: not stored, reads as fill values (zarr leaves out chunks equal to the fill value)",
        }
    ]
    assert verify(archive, progress=False, report_missing=False) == []


def test_the_top_level_verify_stays_the_function(archive):
    """A submodule named like the function would replace it on the package after first use."""
    from zarr_aac import verify as first
    from zarr_aac import verify as second

    assert first is second is verify
    assert zarr_aac.verify(archive, progress=False) == []


def test_verify_of_a_path_that_is_no_archive_names_it(tmp_path):
    with pytest.raises(zarr_aac.ZarrAACError, match="nothing-here"):
        verify(tmp_path / "nothing-here", progress=False)


def main() -> None:
    parser = argparse.ArgumentParser(description="single-byte flips in a stored recording: what detects them")
    parser.add_argument("--flips", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--prefix-only", action="store_true", help="flip bytes of the header, ASC and index only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        array = store_recording(Path(tmp) / "lena.zarr", "lena", lena_pcm())
        counts = flip_experiment(array, reference_decode(array), args.flips, args.seed, args.prefix_only)
    columns = [
        "injected",
        "whole read raised",
        "verify listed",
        "partial read raised",
        "partial read silently wrong",
        "partial read unchanged",
    ]
    print("| region | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for region in REGIONS:
        print(f"| {region} | " + " | ".join(str(counts[region, c]) for c in columns) + " |")
    print("| all | " + " | ".join(str(sum(counts[r, c] for r in REGIONS)) for c in columns) + " |")


if __name__ == "__main__":
    main()


def test_verify_sees_through_zarrs_default_compressor(tmp_path):
    """Issue 12, item 6: with zarr's default zstd after the codec, verify called every chunk
    "not a zarr_aac chunk". It must check the AAC chunk inside, and still find damage there."""
    import numcodecs

    rate = 8000
    array = zarr.create_array(
        str(tmp_path / "zstd.zarr"),
        shape=(4 * rate, 1),
        chunks=(rate, 1),
        dtype="int16",
        serializer=AACCodec(sample_rate=rate),
    )
    assert [type(c).__name__ for c in array.compressors] == ["ZstdCodec"]
    array[:] = (np.random.default_rng(3).standard_normal((4 * rate, 1)) * 3000).astype(np.int16)
    assert [p["key"] for p in verify(array, progress=False)] == ["zarr.json"]  # read slowly, not damaged
    inner = bytearray(numcodecs.Zstd().decode(get_bytes(array, "c/1/0")))
    inner[-10] ^= 0xFF  # a payload byte of the last frame
    put_bytes(array, "c/1/0", numcodecs.Zstd().encode(bytes(inner)))
    put_bytes(array, "c/2/0", b"not zstd at all")
    problems = {p["key"]: p["error"] for p in verify(array, progress=False)}
    assert set(problems) == {"zarr.json", "c/1/0", "c/2/0"}
    assert "checksum mismatch" in problems["c/1/0"] and "cannot decompress" in problems["c/2/0"]
