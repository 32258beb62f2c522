"""Claims the README and docs make that no other test could fail: a read decodes only the frames
it needs, int16 reads are the spec's rounding and clipping of the decoder's output, and a failed
import is deleted only after zarr's in-flight chunk writes have landed (docs/claims.md)."""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile
import zarr
from support.chunks import Chunk, decode_chunk_sequentially, get_bytes, single_chunk_array
from support.signals import int16_reference
from zarr.core.buffer import Buffer
from zarr.storage import MemoryStore, WrapperStore

import zarr_aac
from zarr_aac.codec import aac, decode_pool
from zarr_aac.errors import ImportFailedError

RATE = 48000
FRAME = 1024


@pytest.fixture
def decoded_frames(monkeypatch) -> Iterator[list[int]]:
    """The number of AAC frames handed to each FrameDecoder.decode call, in call order, with every
    decode in this process (tests/test_decode_pool.py counts the worker processes' ranges)."""
    counts: list[int] = []
    decode = aac.FrameDecoder.decode

    def counting_decode(self, frames, out=None):
        counts.append(len(frames))
        return decode(self, frames, out)

    monkeypatch.setattr(aac.FrameDecoder, "decode", counting_decode)
    with zarr.config.set({decode_pool.CONFIG_KEY: 0}):
        yield counts


def frames_needed(rows: np.ndarray, skip: int, n_frames: int) -> int:
    """The frames holding ``rows`` (docs/spec.md: sample i is in frame (i + skip) // 1024), each
    with the frame before it as pre-roll, counted once."""
    holding = (np.asarray(rows) + skip) // FRAME
    needed = set(holding.tolist()) | {f - 1 for f in holding.tolist() if f > 0}
    assert max(needed) < n_frames
    return len(needed)


@pytest.fixture(scope="module")
def long_chunk():
    """One 10 s stereo chunk (about 470 frames, so about 30 checksum groups) and its parsed layout."""
    rng = np.random.default_rng(3)
    t = np.arange(10 * RATE) / RATE
    pcm = (0.3 * np.sin(2 * np.pi * 700 * t)[:, None] + 0.05 * rng.standard_normal((t.size, 2))).astype(np.float32)
    array, key = single_chunk_array(pcm, RATE)
    data = get_bytes(array, key)
    return array, Chunk.parse(data), decode_chunk_sequentially(data)


@pytest.mark.parametrize(
    ("start", "stop"),
    [(0, 1), (0, 5000), (1, 2), (20_000, 20_001), (20_000, 21_000), (123_457, 300_000), (479_000, 480_000)],
)
def test_a_read_decodes_only_the_frames_covering_it_and_one_pre_roll(long_chunk, decoded_frames, start, stop):
    array, chunk, reference = long_chunk
    np.testing.assert_array_equal(array[start:stop], reference[start:stop])
    skip = chunk.fields["skip"]
    assert sum(decoded_frames) == frames_needed(np.arange(start, stop), skip, chunk.fields["n_frames"])
    assert len(decoded_frames) == 1


def test_scattered_rows_decode_only_their_frames_and_pre_rolls(long_chunk, decoded_frames):
    array, chunk, reference = long_chunk
    rows = np.array([5, 30_000, 30_001, 31_500, 250_000, 479_999])
    np.testing.assert_array_equal(array.oindex[rows, :], reference[rows])
    assert sum(decoded_frames) == frames_needed(rows, chunk.fields["skip"], chunk.fields["n_frames"])


def test_a_read_over_two_chunks_decodes_the_frames_of_each_part(decoded_frames):
    pcm = np.random.default_rng(4).uniform(-0.3, 0.3, (4 * RATE, 1)).astype(np.float32)
    array = zarr.create_array(
        MemoryStore(),
        shape=pcm.shape,
        chunks=(2 * RATE, 1),
        dtype="float32",
        serializer=zarr_aac.AACCodec(sample_rate=RATE),
        compressors=None,
    )
    array[:] = pcm
    first = Chunk.parse(get_bytes(array, "c/0/0"))
    second = Chunk.parse(get_bytes(array, "c/1/0"))
    start, stop = 2 * RATE - 3000, 2 * RATE + 5000
    array[start:stop]
    expected = frames_needed(np.arange(start - 0, 2 * RATE), first.fields["skip"], first.fields["n_frames"])
    expected += frames_needed(np.arange(0, stop - 2 * RATE), second.fields["skip"], second.fields["n_frames"])
    assert sum(decoded_frames) == expected


def test_a_whole_chunk_read_decodes_each_frame_once(long_chunk, decoded_frames):
    """Decoded in the reading process, a whole chunk is one run: every frame once (the decode
    pool's ranges and their pre-roll frames: tests/test_decode_pool.py)."""
    array, chunk, reference = long_chunk
    np.testing.assert_array_equal(array[:], reference)
    assert decoded_frames == [chunk.fields["n_frames"]]


@pytest.fixture(scope="module")
def overshooting_chunk():
    """A full-scale int16 square wave: its AAC decode overshoots [-1, 1) (Gibbs ringing), so an
    int16 read must clip, and the sequential decode of its chunk is the float reference."""
    n = 2 * RATE
    square = np.where(np.sin(2 * np.pi * 440 * np.arange(n) / RATE) >= 0, 32767, -32768).astype(np.int16)
    pcm = np.stack([square, -square // 2], axis=1)
    array, key = single_chunk_array(pcm, RATE)
    reference = decode_chunk_sequentially(get_bytes(array, key))
    assert (reference[:, 0] > 32767 / 32768).sum() > 100 and (reference[:, 0] < -1).sum() > 100
    return array, reference


@pytest.mark.parametrize(
    "selection",
    [slice(None), slice(1000, 30_000), slice(0, 2 * RATE - 1), np.array([0, 17, 5000, 5001, 60_000, 2 * RATE - 1])],
    ids=["whole", "span", "all-but-one", "rows"],
)
def test_int16_reads_round_and_clip_the_decoded_float(overshooting_chunk, selection):
    array, reference = overshooting_chunk
    got = array.oindex[selection, :] if isinstance(selection, np.ndarray) else array[selection]
    assert got.dtype == np.int16
    np.testing.assert_array_equal(got, int16_reference(reference[selection]))


class SlowChunkWrites(WrapperStore[MemoryStore]):
    """A store whose first chunk write fails at once while every other chunk write lands half a
    second later: zarr writes one call's chunks concurrently and does not cancel the rest."""

    def _with_store(self, store: MemoryStore) -> SlowChunkWrites:
        return type(self)(store)

    async def set(self, key: str, value: Buffer) -> None:
        if "/c/" in key and key.endswith("/c/0/0"):
            raise OSError("disk full")
        if "/c/" in key:
            await asyncio.sleep(0.5)
        await self._store.set(key, value)


def test_a_failed_import_is_deleted_after_its_in_flight_writes_land(tmp_path):
    source = tmp_path / "two_chunks.wav"
    soundfile.write(source, np.random.default_rng(5).uniform(-0.3, 0.3, (RATE, 1)), RATE, subtype="PCM_16")
    store = SlowChunkWrites(MemoryStore())
    group = zarr.open_group(store, mode="w")
    with pytest.raises((OSError, ImportFailedError), match="disk full"):
        zarr_aac.import_file(source, group, chunk_duration=0.25, progress=False)
    time.sleep(1.0)  # longer than the slow writes take: a write left running would have landed by now

    async def keys() -> list[str]:
        return [key async for key in store.list()]

    stored = asyncio.run(keys())
    # the archive's group and its (empty) bookkeeping groups: no array, reservation or entry
    assert [key for key in stored if not key.startswith(".zarr-aac/")] == ["zarr.json"]
    assert [key for key in stored if key.count("/") > 2] == []


def test_readme_size_claim_is_the_fidelity_study_s():
    """README's size figures are those the fidelity study measured at the defaults
    (docs/fidelity.json, written by docs/fidelity_study.py on the shared recordings)."""
    root = Path(__file__).resolve().parents[1]
    readme = " ".join((root / "README.md").read_text().split())
    study = [entry for entry in json.loads((root / "docs" / "fidelity.json").read_text()) if entry["default"]]
    pcm = [entry["size_pct_pcm16"] for entry in study]
    flac = max(entry["size_pct_flac"] for entry in study)
    claim = re.search(
        r"(\d+) to (\d+) % of int16 PCM at the defaults on the test recordings \(at most (\d+) % of their FLAC", readme
    )
    assert claim, "README no longer states the size at the defaults"
    low, high, most = (int(group) for group in claim.groups())
    assert (low, high) == (round(min(pcm)), round(max(pcm)))
    assert most == 5 * math.ceil(flac / 5)
