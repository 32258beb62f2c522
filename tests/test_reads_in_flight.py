"""The decode pool's count of chunk reads in flight (zarr_aac.codec.decode_pool.reads_in_flight),
which tells a short read whether reads of other calls wait for the event loop it would hold
(docs/design-notes.md, "Short reads beside other reads"): a call's chunk reads begin in one
event-loop turn at rows that continue each other, checked here also once all of them have begun;
a read of scattered rows cannot be placed by its rows; a caller outside any read sees every read
in flight; a fresh process remembers no overlap. tests/test_decode_workers.py checks where the
reads then decode, against a full sequential decode."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import zarr_aac
from zarr_aac.codec import decode_pool

reads_in_flight = decode_pool.reads_in_flight


def others_seen_once_all_began(rows: list[tuple[int, int, int] | None]) -> list[bool]:
    """Chunk reads of ``rows`` begun together in one turn of an event loop (as zarr begins a
    call's); what each finds, once all have begun, of reads of other calls in flight."""
    seen: dict[int, bool] = {}
    all_begun = asyncio.Barrier(len(rows))

    async def chunk_read(i: int, each: tuple[int, int, int] | None) -> None:
        with reads_in_flight.chunk_read(each):
            await all_begun.wait()
            seen[i] = reads_in_flight.others_in_flight()
            await all_begun.wait()

    async def call() -> None:
        await asyncio.gather(*(chunk_read(i, each) for i, each in enumerate(rows)))

    asyncio.run(call())
    assert reads_in_flight.count == 0
    return [seen[i] for i in range(len(rows))]


@pytest.mark.parametrize(
    "rows",
    [
        pytest.param([(900, 1000, 1000), (0, 100, 1000)], id="across-a-chunk-end"),
        pytest.param([(900, 1000, 1000), (0, 1000, 1000), (0, 100, 1000)], id="across-a-whole-chunk"),
        pytest.param([(10, 60, 1000), (10, 60, 1000), (10, 60, 1000)], id="chunks-of-three-channel-groups"),
    ],
)
def test_a_calls_chunk_reads_find_no_other_call_once_all_have_begun(rows):
    """Each chunk read of one call, the earlier chunks' too, sees the others as its own call's
    while they are all in flight (a read decides where to decode after its frames arrive, when
    the later chunks' reads have begun)."""
    assert others_seen_once_all_began(rows) == [False] * len(rows)


@pytest.mark.parametrize(
    "rows",
    [
        pytest.param([None, (10, 60, 1000)], id="scattered-then-a-span"),
        pytest.param([(10, 60, 1000), None], id="a-span-then-scattered"),
    ],
)
def test_a_read_of_scattered_rows_counts_reads_begun_in_its_turn_as_its_calls(rows):
    """Scattered rows (``rows`` None) cannot be told to continue another read or not, so a read
    begun in the same turn is taken for the same call's, either way round."""
    assert others_seen_once_all_began(rows) == [False, False]


def test_a_caller_outside_any_chunk_read_sees_every_read_in_flight_as_another_calls():
    """``others_in_flight`` and ``concurrent_reads`` from code that is in no chunk read (here the
    test, beside a read held open in another thread): any read in flight is another call's."""
    assert reads_in_flight.count == 0
    assert not reads_in_flight.others_in_flight()
    assert not reads_in_flight.more_of_this_call()
    assert not decode_pool.concurrent_reads()
    begun, may_end = threading.Event(), threading.Event()

    def read() -> None:
        with reads_in_flight.chunk_read((0, 100, 1000)):
            begun.set()
            may_end.wait(10)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        assert begun.wait(10)
        assert reads_in_flight.count == 1
        assert reads_in_flight.others_in_flight()
        assert not reads_in_flight.more_of_this_call()
        assert decode_pool.concurrent_reads()
    finally:
        may_end.set()
        reader.join(10)
    assert reads_in_flight.count == 0


FRESH_READER = """
import numpy as np, zarr, zarr_aac
from zarr_aac.codec import decode_pool

z = zarr.create_array(
    zarr.storage.MemoryStore(), shape=(96_000, 2), chunks=(96_000, 2), dtype="int16",
    serializer=zarr_aac.AACCodec(sample_rate=48000), compressors=None,
)
z[:] = (np.random.default_rng(0).standard_normal((96_000, 2)) * 3000).astype("int16")
handed_over = []
decode_async = decode_pool.decode_async

async def recording(output, jobs, *rest, **options):
    handed_over.append(len(jobs))
    return await decode_async(output, jobs, *rest, **options)

decode_pool.decode_async = recording
print(decode_pool.concurrent_reads())
with zarr.config.set({decode_pool.CONFIG_KEY: 2}):
    for start in range(0, 1000 * (decode_pool.OVERLAP_MEMORY + 2), 1000):
        z[start : start + 24_000]
print(handed_over)
"""


def test_a_fresh_process_remembers_no_overlap(tmp_path):
    """The first short reads of a process, alone, decode in the reading process: no overlap with
    another call's read is remembered before any happened. (The test suite's conftest resets
    that memory before each test, so only a fresh process shows where it starts.) The script
    imports the package this test imports."""
    script = tmp_path / "fresh.py"
    script.write_text(textwrap.dedent(FRESH_READER))
    package_root = str(Path(zarr_aac.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([package_root, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False, env=env
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["False", "[]"]
