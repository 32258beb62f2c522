"""Processes reading random ranges while another appends whole chunks; parallel imports into
one archive group.

The append protocol under test writes each new chunk's bytes first and grows the array's shape
second (zarr's ``Array.append`` does the reverse, so a reader between its two steps sees fill
values where the new chunk will be).
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import zarr
from concurrency_workers import (
    APPENDED_CHUNKS,
    CHUNK,
    FIRST_CHUNKS,
    RATE,
    READERS,
    appender,
    import_each,
    reader,
    signal,
)
from support.archives import bookkeeping
from support.selections import reference_decode
from support.signals import tone_with_noise

from zarr_aac import AACCodec, import_files
from zarr_aac.archive import entries as bk
from zarr_aac.archive.recordings import catalogue_entries


@pytest.mark.slow
def test_readers_see_the_old_or_new_length_and_always_the_right_samples(tmp_path):
    path = str(tmp_path / "growing.zarr")
    array = zarr.create_array(
        path,
        shape=(FIRST_CHUNKS * CHUNK, 2),
        chunks=(CHUNK, 2),
        dtype="int16",
        serializer=AACCodec(sample_rate=RATE),
        compressors=None,
        fill_value=0,
    )
    array[:] = signal(FIRST_CHUNKS)[: FIRST_CHUNKS * CHUNK]
    context = multiprocessing.get_context("spawn")
    go, done, results = context.Event(), context.Event(), context.Queue()
    readers = [context.Process(target=reader, args=(path, seed, go, done, results)) for seed in range(READERS)]
    writer = context.Process(target=appender, args=(path, go, 0.15))
    for process in (*readers, writer):
        process.start()
    go.set()
    writer.join(timeout=120)
    done.set()
    reads = [read for _ in readers for read in results.get(timeout=120)]
    for process in readers:
        process.join(timeout=30)
    assert writer.exitcode == 0 and all(p.exitcode == 0 for p in readers)

    final = zarr.open_array(path, mode="r")
    assert final.shape[0] == (FIRST_CHUNKS + APPENDED_CHUNKS) * CHUNK
    reference = reference_decode(final)
    lengths = {n for n, *_ in reads}
    assert lengths <= {k * CHUNK for k in range(FIRST_CHUNKS, FIRST_CHUNKS + APPENDED_CHUNKS + 1)}
    assert len(lengths) >= 3, f"readers saw too few states of the array to test anything: {sorted(lengths)}"
    for n, start, stop, samples in reads:
        np.testing.assert_array_equal(samples, reference[start:stop], err_msg=f"read [{start}:{stop}] at length {n}")


def write_sources(folder: Path, count: int, seconds: float = 0.5) -> list[Path]:
    paths = []
    for i in range(count):
        path = folder / f"site_{i:02d}.flac"
        pcm = (tone_with_noise(int(seconds * RATE), 1, RATE, seed=100 + i) * 30000).astype(np.int16)
        sf.write(path, pcm, RATE, subtype="PCM_16")
        paths.append(path)
    return paths


def assert_catalogue_matches_arrays(root: Path, expected: set[str]) -> None:
    group = zarr.open_group(root, mode="r")
    catalogue = catalogue_entries(group)
    arrays = {name for name in group.array_keys()}
    assert set(catalogue) == expected
    assert arrays == expected
    assert bookkeeping(group, bk.PENDING) == [] and set(bookkeeping(group, bk.NAMES)) == expected
    for name in expected:
        assert catalogue[name]["n_samples"] == group[name].shape[0]


@pytest.mark.slow
def test_parallel_imports_by_one_call_keep_the_catalogue_whole(tmp_path):
    sources = write_sources(tmp_path, 4)
    root = tmp_path / "archive.zarr"
    arrays = import_files(sources, root, workers=2, chunk_duration=0.25, progress=False)
    assert [a.basename for a in arrays] == [p.stem for p in sources]
    assert_catalogue_matches_arrays(root, {p.stem for p in sources})


@pytest.fixture(scope="module")
def two_importers(tmp_path_factory) -> tuple[Path, set[str]]:
    """Two processes each calling import_file, three files each, into one archive at once."""
    tmp_path = tmp_path_factory.mktemp("two-importers")
    sources = write_sources(tmp_path, 6, seconds=0.25)
    root = tmp_path / "archive.zarr"
    zarr.open_group(root, mode="a")
    context = multiprocessing.get_context("spawn")
    jobs = [context.Process(target=import_each, args=([str(p) for p in sources[i::2]], str(root))) for i in range(2)]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(timeout=120)
    assert all(job.exitcode == 0 for job in jobs)
    return root, {p.stem for p in sources}


@pytest.mark.slow
def test_independent_importers_into_one_group_lose_no_recording(two_importers):
    root, expected = two_importers
    group = zarr.open_group(root, mode="r")
    assert set(group.array_keys()) == expected
    for name in expected:
        assert group[name].shape[0] == int(0.25 * RATE)


@pytest.mark.slow
def test_independent_importers_into_one_group_keep_the_catalogue_whole(two_importers):
    root, expected = two_importers
    assert_catalogue_matches_arrays(root, expected)


def test_imports_ignore_other_writers_temporary_files(tmp_path):
    """zarr writes metadata through a ``zarr.<id>.partial`` file beside the group's own; an
    importer listing the group meanwhile must neither warn nor fail (it did, now and then, in
    import_files: its workers create arrays while the parent picks names)."""
    sources = write_sources(tmp_path, 2)
    root = tmp_path / "archive.zarr"
    zarr.open_group(root, mode="a")
    partial = root / "zarr.0123456789abcdef0123456789abcdef.partial"
    partial.write_bytes(b"{}")
    arrays = import_files(sources, root, workers=1, chunk_duration=0.25, progress=False)
    assert [a.basename for a in arrays] == [p.stem for p in sources]
    partial.unlink()  # the other writer is done
    assert_catalogue_matches_arrays(root, {p.stem for p in sources})
