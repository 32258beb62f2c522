"""The live writer's memory is bounded (issue 17): it grows neither with the recording's length
nor with what a chunk of the importer's 60 s would hold at a high rate and channel count. Read as
the peak RSS (VmHWM) a fresh process adds while appending 0.5 s blocks.

The sizes and speeds at every rate are in the benchmarks (``python -m benchmarks --only importer``).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from zarr_aac.archive.live_writer import LIVE_CHUNK_BYTES, live_chunk_length

GROWTH_BOUND_MB = 250
"""Peak RSS the writer may add at 500 kHz x 4 channels of int16 with its default chunks: the
unfinished chunk (32 MiB), its copy written to the store, the encoder, zarr and PyAV (125-150 MB
measured). A 60 s chunk there is 240 MB, once; before the cap 15 s peaked at 1012 MB."""
LENGTH_GROWTH_MB = 25
"""What the peak may grow over the last 20 s of 30 (1 s chunks): those 20 s are 80 MB of PCM."""

_APPEND = """
import json, sys
import numpy as np
import zarr_aac

def vm(field):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":")) / 1024

archive, rate, channels, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
chunk_duration = float(sys.argv[5]) if sys.argv[5] != "default" else None
block = rate // 2
rng = np.random.default_rng(0)
blocks = [(rng.standard_normal((block, channels)) * 3000).astype(np.int16) for _ in range(3)]
before = vm("VmHWM")
peaks = []
with zarr_aac.open_writer(archive, "rec", sample_rate=rate, channels=channels, chunk_duration=chunk_duration) as writer:
    for i in range(round(seconds * 2)):
        writer.append(blocks[i % 3])
        peaks.append(vm("VmHWM") - before)
print(json.dumps({"growth_mb": peaks, "shape": list(writer.array.shape), "chunks": writer.chunk_length}))
"""


def _append_in_process(tmp_path, rate: int, channels: int, seconds: float, chunk_duration: str) -> dict:
    """Append ``seconds`` of 0.5 s blocks in a fresh process; its peak RSS growth after each block."""
    archive = tmp_path / f"{chunk_duration}.zarr"
    command = [sys.executable, "-c", _APPEND, str(archive), str(rate), str(channels), str(seconds), chunk_duration]
    result = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
    assert result["shape"] == [round(rate * seconds), channels]
    return result


@pytest.mark.slow
def test_live_writer_memory_stays_within_the_bound_at_a_high_rate(tmp_path):
    rate, channels = 500_000, 4
    result = _append_in_process(tmp_path, rate, channels, 10, "default")  # a chunk completes at 8.4 s
    assert result["chunks"] * channels * 2 <= LIVE_CHUNK_BYTES  # chunks cut below the importer's 60 s
    growth = max(result["growth_mb"])
    assert growth < GROWTH_BOUND_MB, f"the writer added {growth:.0f} MB to the peak RSS"


@pytest.mark.slow
def test_live_writer_memory_does_not_grow_with_length(tmp_path):
    peaks = _append_in_process(tmp_path, 500_000, 4, 30, "1")["growth_mb"]
    after_10_s = peaks[19]
    assert peaks[-1] - after_10_s < LENGTH_GROWTH_MB, (
        f"peak RSS growth {after_10_s:.0f} MB at 10 s, {peaks[-1]:.0f} at 30 s"
    )


def test_chunks_are_the_importers_unless_they_would_exceed_the_bound():
    assert live_chunk_length(None, 48_000, 2, 2, np.dtype("int16")) == 2_879_488  # 60 s, as imported
    assert live_chunk_length(30.0, 48_000, 2, 2, np.dtype("int16")) == 1_439_744
    cut = live_chunk_length(None, 500_000, 4, 4, np.dtype("int16"))
    assert cut * 4 * 2 <= LIVE_CHUNK_BYTES < (cut + 1024) * 4 * 2
    with pytest.raises(ValueError, match=r"at most 32 MiB, 8\.39 s here; pass a shorter chunk_duration"):
        live_chunk_length(60.0, 500_000, 4, 4, np.dtype("int16"))
    # every channel group is held: 10 channels are two groups of 8
    assert live_chunk_length(None, 48_000, 10, 8, np.dtype("float32")) * 16 * 4 <= LIVE_CHUNK_BYTES
