"""Live recording throughput: ``zarr_aac.open_writer`` appending 0.5 s blocks of 48 kHz stereo,
in times realtime, beside ``import_file`` of the same signal in the same run.

``measure(ctx)`` gives the rows; the ``archive`` section shows them. The signal is the head of
``ctx.hour_wav`` (600 s, 120 s with --quick), held in memory, so neither side pays for reading a
file it would not have to: the writer is handed blocks, the importer reads its WAV (a recorder
hands over blocks it already holds). Both store into a local archive with the same options
(160 kbps, 60 s chunks); each append also rewrites the unfinished chunk as PCM, so its cost
grows through each chunk (the p99 append is the end of a chunk, where the chunk is encoded).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

import zarr_aac
from benchmarks import Context

BITRATE = 160_000
BLOCK_SECONDS = 0.5
SECONDS = 600
QUICK_SECONDS = 120
CHUNK_DURATIONS = (60.0, 10.0)
"""The default chunk duration (what the importer uses) and a shorter one, whose PCM tail is
smaller to rewrite on each append."""


def measure(ctx: Context) -> list[dict]:
    """Rows of append throughput (x realtime) and latency, and the importer's speed on the same signal."""
    seconds = QUICK_SECONDS if ctx.quick else SECONDS
    work = Path(tempfile.mkdtemp(prefix="append-", dir=ctx.workdir))
    try:
        pcm, rate = sf.read(str(ctx.hour_wav), frames=seconds * 48_000, dtype="int16", always_2d=True)
        head = work / "head.wav"
        sf.write(str(head), pcm, rate, subtype="PCM_16")
        duration = pcm.shape[0] / rate
        rows = [_append_row(pcm, rate, duration, chunk_duration, work) for chunk_duration in CHUNK_DURATIONS]
        start = time.perf_counter()
        zarr_aac.import_file(head, work / "imported.zarr", "rec", bitrate=BITRATE, progress=False)
        import_seconds = time.perf_counter() - start
        rows.append(
            {
                "writer": "zarr_aac.import_file of the same signal (a WAV file), 60 s chunks",
                "audio_s": duration,
                "seconds": round(import_seconds, 2),
                "x_realtime": round(duration / import_seconds, 1),
                "append_p50_ms": None,
                "append_p99_ms": None,
                "append_max_ms": None,
            }
        )
        return rows
    finally:
        shutil.rmtree(work)


def _append_row(pcm: np.ndarray, rate: int, duration: float, chunk_duration: float, work: Path) -> dict:
    block = int(BLOCK_SECONDS * rate)
    latencies = []
    start = time.perf_counter()
    archive = work / f"live_{chunk_duration:g}s.zarr"
    with zarr_aac.open_writer(
        archive, "rec", sample_rate=rate, channels=pcm.shape[1], bitrate=BITRATE, chunk_duration=chunk_duration
    ) as writer:
        for first in range(0, pcm.shape[0], block):
            began = time.perf_counter()
            writer.append(pcm[first : first + block])
            latencies.append(time.perf_counter() - began)
    seconds = time.perf_counter() - start
    p50, p99 = np.percentile(latencies, [50, 99]) * 1000
    return {
        "writer": f"zarr_aac.open_writer, {BLOCK_SECONDS:g} s blocks, {chunk_duration:g} s chunks (close included)",
        "audio_s": duration,
        "seconds": round(seconds, 2),
        "x_realtime": round(duration / seconds, 1),
        "append_p50_ms": round(float(p50), 2),
        "append_p99_ms": round(float(p99), 2),
        "append_max_ms": round(max(latencies) * 1000, 2),
    }
