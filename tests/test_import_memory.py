"""An import's memory does not grow with what a chunk holds: a recording imported as one long
chunk at 256 kHz takes no more memory than the bound, read as the peak RSS of a fresh process.

The sizes and speeds at every rate are in the benchmarks (``python -m benchmarks --only importer``).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

RATE = 256_000
SECONDS = 120
GROWTH_BOUND_MB = 125
"""Peak RSS an import may add to the process: the samples queued for the encoders (64 MB) and
the AAC frames. Holding the chunk's 123 MB of float32 samples, even once, breaks it."""

_IMPORT = """
import json, sys
import zarr_aac

def vm(field):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":")) / 1024

before = vm("VmHWM")
array = zarr_aac.import_file(
    sys.argv[1], sys.argv[2], chunk_duration=float(sys.argv[3]), dtype="float32", progress=False
)
print(json.dumps({"before_mb": before, "peak_mb": vm("VmHWM"), "shape": array.shape}))
"""


def _write_noise_wav(path, seconds: int) -> None:
    """A mono int16 WAV written a second at a time, so the test itself stays small."""
    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", samplerate=RATE, channels=1, subtype="PCM_16") as wav:
        for _ in range(seconds):
            wav.write((rng.standard_normal((RATE, 1)) * 3000).astype(np.int16))


@pytest.mark.slow
def test_importing_one_long_chunk_stays_within_the_memory_bound(tmp_path):
    source = tmp_path / "long.wav"
    _write_noise_wav(source, SECONDS)
    run = subprocess.run(
        [sys.executable, "-c", _IMPORT, str(source), str(tmp_path / "a.zarr"), str(SECONDS)],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(run.stdout)
    assert result["shape"] == [RATE * SECONDS, 1]
    growth = result["peak_mb"] - result["before_mb"]
    assert growth < GROWTH_BOUND_MB, f"the import added {growth:.0f} MB to the peak RSS"
