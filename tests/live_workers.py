"""Worker functions for tests/test_live_writer.py: a writer to kill and a reader polling from
another process. A top-level module of the tests folder, so that processes started with the
``spawn`` method import them whatever pytest's import mode."""

from __future__ import annotations

import time
import traceback
from typing import Any

import numpy as np
import zarr
from support.signals import as_int16, tone_with_noise

import zarr_aac

RATE = 8000
CHANNELS = 2
BLOCK = RATE // 2
CHUNK_DURATION = 5.0
BITRATE = 48000


def source(n: int, channels: int = CHANNELS, rate: int = RATE, seed: int = 5) -> np.ndarray:
    """The recorder's signal: int16 tones and noise, the same in every process."""
    return as_int16(tone_with_noise(n, channels, rate, seed=seed))


def open_test_writer(archive: Any, name: str, channels: int = CHANNELS, **options: Any) -> zarr_aac.LiveWriter:
    """A writer with this module's rate and encoding."""
    return zarr_aac.open_writer(
        archive,
        name,
        sample_rate=RATE,
        channels=channels,
        dtype="int16",
        chunk_duration=CHUNK_DURATION,
        bitrate=BITRATE,
        **options,
    )


def record(archive: str, name: str, blocks: int, appended: Any, started: Any) -> None:
    """Append ``blocks`` blocks of ``source`` as fast as they go, counting each that returned in
    ``appended``; never closes (the test kills this process)."""
    pcm = source(blocks * BLOCK)
    writer = open_test_writer(archive, name)
    started.set()
    for i in range(blocks):
        writer.append(pcm[i * BLOCK : (i + 1) * BLOCK])
        appended.value = i + 1
    time.sleep(600)


def classify_read(read: np.ndarray, start: int, n: int, chunk: int, pcm: np.ndarray, reference: np.ndarray) -> str:
    """How a read of samples [start, n) of a recording being written relates to the source
    ``pcm`` and the finished recording ``reference``: "encoded" if every chunk in it is the
    reference's, "pcm" if its last, unfinished chunk is the source's samples exactly; anything
    else raises AssertionError (a torn or wrong read)."""
    last = n // chunk * chunk
    whole_end = max(start, last)
    np.testing.assert_array_equal(read[: whole_end - start], reference[start:whole_end])
    if whole_end == n:
        return "encoded"
    tail = read[whole_end - start :]
    if np.array_equal(tail, pcm[whole_end:n]):
        return "pcm"
    np.testing.assert_array_equal(tail, reference[whole_end:n])
    return "encoded"


def poll(path: str, pcm_path: str, reference_path: str, done: Any, results: Any) -> None:
    """Open the recording afresh and read its last samples and a random earlier stretch until
    ``done``; put (reads, reads that met a PCM tail, errors) on ``results``."""
    pcm, reference = np.load(pcm_path), np.load(reference_path)
    rng = np.random.default_rng(3)
    counts = {"encoded": 0, "pcm": 0}
    errors: list[str] = []
    while not done.is_set() and len(errors) < 3:
        try:
            array = zarr.open_array(path, mode="r")
            n = array.shape[0]
            if n == 0:
                continue
            chunk = array.chunks[0]
            for start in (max(0, n - chunk - 1000), int(rng.integers(0, n))):
                counts[classify_read(array[start:n], start, n, chunk, pcm, reference)] += 1
        except Exception:  # reported to the test, which fails on any
            errors.append(traceback.format_exc())
    results.put((counts["encoded"] + counts["pcm"], counts["pcm"], errors))
