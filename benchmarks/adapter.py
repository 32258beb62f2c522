"""The store adapter on an existing 1 h .m4a and .aac: random reads against PyAV seeking, and
the cost of building (and of reusing) the frame index.

Both files are made once from ``ctx.hour_wav`` by the ffmpeg command line (AAC-LC 160 kbps,
``-aac_pns 0``; the .aac is the .m4a's frames remuxed to ADTS). Reads are interleaved like the
codec section: for each random position and length every method reads the same segment, in a new
random order at each position. Before timing, every method is checked against the others at a few positions.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks import READ_LENGTHS, Context, ffmpeg_aac, interleaved_reads, median_p90, timed
from benchmarks.codec import M4AReader
from zarr_aac.files.store import DEFAULT_CHUNK_LENGTH, INDEX_SUFFIX, AACFileStore, open_aac_file

BITRATE = 160_000
POSITIONS = 200
QUICK_POSITIONS = 30
OPENS = 5
PRIMING = 1024
"""FFmpeg's encoder priming: the MP4 edit list drops it, ADTS cannot record it, so the same audio
lies 1024 samples later in the .aac than in the .m4a."""
OLD_SYSTEM_INDEX = (171_259, 0.38)
"""The old system's index build: frames, seconds."""


def run(ctx: Context) -> dict:
    work = ctx.workdir / "adapter"
    work.mkdir(parents=True, exist_ok=True)
    m4a, aac = _encode(ctx.hour_wav, work)

    index_rows, index_notes = _index_costs(m4a, aac, work)
    arrays = {
        name: open_aac_file(path, index_path=False) for name, path in (("adapter m4a", m4a), ("adapter ADTS", aac))
    }
    rate = arrays["adapter m4a"].attrs["sample_rate"]
    n = arrays["adapter m4a"].shape[0]
    kept_open = M4AReader(m4a)
    readers: dict[str, Callable[[int, int], np.ndarray]] = {
        "adapter m4a": lambda a, b: arrays["adapter m4a"][a:b],
        "adapter ADTS": lambda a, b: arrays["adapter ADTS"][a + PRIMING : b + PRIMING],
        "PyAV m4a, kept open": kept_open,
        "PyAV m4a, opened per read": _open_per_read(m4a),
    }
    agreement = _check(readers, n, rate)
    rng = np.random.default_rng(20261124)
    positions = rng.integers(0, n - int(10 * rate) - 1, size=QUICK_POSITIONS if ctx.quick else POSITIONS)
    times = interleaved_reads(readers, positions, rate)
    kept_open.close()

    rows = []
    stats = {key: median_p90(values) for key, values in times.items()}
    for name in readers:
        row = {"method": name}
        for length in READ_LENGTHS:
            med, p90 = stats[name, length]
            row[f"{length} median ms"] = round(1e3 * med, 3)
            row[f"{length} p90 ms"] = round(1e3 * p90, 3)
        rows.append(row)
    ratios = {
        length: stats["PyAV m4a, kept open", length][0] / stats["adapter m4a", length][0] for length in READ_LENGTHS
    }
    per_read = {
        length: stats["PyAV m4a, opened per read", length][0] / stats["adapter m4a", length][0]
        for length in READ_LENGTHS
    }
    notes = [
        (
            f"{len(positions)} random positions in a {n / rate / 3600:.2f} h stereo {rate} Hz file "
            f"({m4a.stat().st_size / 1e6:.0f} MB .m4a), files in the OS cache; the adapter's virtual chunks are "
            f"{DEFAULT_CHUNK_LENGTH} samples, read as int16 through zarr."
        ),
        "PyAV kept open / adapter (median): " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()),
        "PyAV opened per read / adapter (median): " + ", ".join(f"{k} {v:.1f}x" for k, v in per_read.items()),
        f"largest difference between methods at check positions (float, full scale 1): {agreement:.2e}",
        *index_notes,
    ]
    return {
        "title": "Store adapter: existing AAC files read in place",
        "rows": rows,
        "tables": [{"title": "Frame index: build and reuse", "rows": index_rows}],
        "notes": notes,
    }


def _encode(wav: Path, work: Path) -> tuple[Path, Path]:
    """The .m4a and ADTS .aac of ``wav``, reused while newer than ``wav``."""
    m4a, aac = work / "hour.m4a", work / "hour.aac"
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise RuntimeError("the adapter benchmark needs the ffmpeg command line (apt-get install ffmpeg)")
    if not m4a.exists() or m4a.stat().st_mtime < wav.stat().st_mtime:
        partial = work / "hour.partial.m4a"
        ffmpeg_aac(wav, partial, BITRATE)
        partial.replace(m4a)
    if not aac.exists() or aac.stat().st_mtime < m4a.stat().st_mtime:
        partial = work / "hour.partial.aac"
        subprocess.run(
            [ffmpeg, "-v", "error", "-y", "-i", str(m4a), "-c", "copy", "-f", "adts", str(partial)], check=True
        )
        partial.replace(aac)
    return m4a, aac


def _index_costs(m4a: Path, aac: Path, work: Path) -> tuple[list[dict], list[str]]:
    rows = []
    for name, path in (("m4a (moov sample tables)", m4a), ("ADTS (walk every header)", aac)):
        sidecar = work / f"{path.name}{INDEX_SUFFIX}"
        sidecar.unlink(missing_ok=True)
        build = [timed(lambda p=path: AACFileStore.from_path(p, index_path=False)) for _ in range(OPENS)]
        timed(lambda p=path, s=sidecar: AACFileStore.from_path(p, index_path=s))
        cached = [timed(lambda p=path, s=sidecar: AACFileStore.from_path(p, index_path=s)) for _ in range(OPENS)]
        n_frames = AACFileStore.from_path(path, index_path=sidecar).index.n_frames
        rows.append(
            {
                "file": name,
                "frames": n_frames,
                "index build ms (median)": round(1e3 * float(np.median(build)), 1),
                "open with cached index ms (median)": round(1e3 * float(np.median(cached)), 1),
                "sidecar KB": round(sidecar.stat().st_size / 1024, 1),
            }
        )
    frames, seconds = OLD_SYSTEM_INDEX
    rows.append(
        {
            "file": "old system (its report)",
            "frames": frames,
            "index build ms (median)": 1e3 * seconds,
            "open with cached index ms (median)": None,
            "sidecar KB": round(frames * 18 / 1024, 1),
        }
    )
    notes = [
        (
            f"index build: median of {OPENS} opens without cache (container recognised, index built, first "
            "frames decoded to refuse implicit SBR); cached: the same with the sidecar .npz present."
        )
    ]
    return rows, notes


def _open_per_read(path: Path) -> Callable[[int, int], np.ndarray]:
    def read(a: int, b: int) -> np.ndarray:
        reader = M4AReader(path)
        try:
            return reader(a, b)
        finally:
            reader.close()

    return read


def _as_float(pcm: np.ndarray) -> np.ndarray:
    return pcm.astype(np.float32) / 32768 if pcm.dtype == np.int16 else pcm


def _check(readers: dict, n: int, rate: int) -> float:
    """Largest difference between any method and the adapter at a few positions (int16 rounding)."""
    rng = np.random.default_rng(11)
    worst = 0.0
    for position in rng.integers(0, n - rate, size=5):
        a = int(position)
        ref = _as_float(readers["adapter m4a"](a, a + rate))
        for name, reader in readers.items():
            got = _as_float(reader(a, a + rate))
            if got.shape != ref.shape:
                raise AssertionError(f"{name} returned {got.shape} at {a}, the adapter {ref.shape}")
            worst = max(worst, float(np.abs(got - ref).max()))
    if worst > 1 / 32768 + 1e-7:
        raise AssertionError(f"methods disagree by {worst} (beyond int16 rounding)")
    return worst
