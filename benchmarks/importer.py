"""Import throughput, peak memory and parallel speed-up, against the ffmpeg command line.

Each import runs in a fresh process that reports its own peak RSS, so memory is measured per
run and not mixed with the harness; so does each run of the live writer (``open_writer``), whose
peak RSS is measured at the same rates, channel counts and lengths. Peers in the same run: the
``ffmpeg`` command line encoding the same WAV to AAC (m4a) at the same bitrate with PNS off,
and the old system's reported 19.4 MB/s (350 MB in 18 s through an ffmpeg subprocess and a temp file).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from benchmarks import Context, ffmpeg_aac, timed
from zarr_aac.archive.chunk_writer import ENCODING_THREADS

BITRATE = 160_000
OLD_SYSTEM_MB_S = 350 / 18
MEMORY_TARGET_MB = 300
SHORT_SECONDS = 600
QUICK_SHORT_SECONDS = 30
MEMORY_CASES = ((48_000, 2), (256_000, 1), (500_000, 4), (96_000, 8))
"""(rate, channels) of the generated inputs whose peak RSS is measured at two lengths."""
MEMORY_MINUTES = (5, 20)
QUICK_MEMORY_MINUTES = (0.5, 2)
LIVE_BLOCK_SECONDS = 0.5
"""Blocks a recorder hands the live writer; its rows use the same cases, with a generated signal
(the same tone in noise as the WAVs) held in memory, so no file is read."""
LIVE_MEMORY_MINUTES = (2, 8)
"""The live writer's lengths: its chunks are at most 8.4 s at 500 kHz x 4 and 60 s at 48 kHz x 2,
so 2 minutes already runs it at its steady state; at 500 kHz x 4 it appends at about 1-2x
realtime, and 20 minutes would add most of an hour to a full run."""

_IMPORT_SCRIPT = """
import json, os, resource, sys, time
import zarr_aac
archive, workers, cores, sources = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
if os.environ.get("BENCH_NO_FIDELITY_REPORT"):  # the baseline of the report's cost
    from zarr_aac.archive.fidelity import ReadBackComparison
    ReadBackComparison.compare_stored = lambda self, array: self._held.clear()
if cores:
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:cores])
start = time.perf_counter()
zarr_aac.import_files(sources, archive, bitrate=160_000, workers=workers, progress=False)
seconds = time.perf_counter() - start
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forked parent (the harness,
# which may hold an hour of PCM), while VmHWM belongs to this process's own address space.
try:
    with open("/proc/self/status") as status:
        peak_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
except OSError:
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_kb / 1024}))
"""


_LIVE_SCRIPT = """
import json, os, sys, time
import numpy as np
import zarr_aac
archive, rate, channels, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
block = round(rate * BLOCK_SECONDS)
rng = np.random.default_rng(0)
tone = 0.3 * np.sin(2 * np.pi * np.arange(block) / 8)[:, None]  # rate / 8, as in the WAVs imported
blocks = [((tone + 0.05 * rng.standard_normal((block, channels))) * 32767).astype(np.int16) for _ in range(3)]
start = time.perf_counter()
with zarr_aac.open_writer(archive, "rec", sample_rate=rate, channels=channels, bitrate=160_000) as writer:
    for i in range(round(seconds / BLOCK_SECONDS)):
        writer.append(blocks[i % len(blocks)])
seconds_taken = time.perf_counter() - start
with open("/proc/self/status") as status:
    peak_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(json.dumps({"seconds": seconds_taken, "peak_rss_mb": peak_kb / 1024, "chunk_s": writer.chunk_length / rate}))
""".replace("BLOCK_SECONDS", repr(LIVE_BLOCK_SECONDS))


def _machine_ceiling(sources: list[Path], work: Path) -> float:
    """Import seconds of the slowest of one single-file import process per source, all started
    at once: how much parallelism the machine has to give right now (other jobs share it)."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _IMPORT_SCRIPT, str(work / f"ceiling{i}.zarr"), "1", "0", str(source)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i, source in enumerate(sources)
    ]
    seconds = []
    for process in processes:
        out, _ = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"an import process failed with status {process.returncode}")
        seconds.append(json.loads(out)["seconds"])
    return max(seconds)


def _import_in_process(
    sources: list[Path], archive: Path, workers: int = 1, cores: int = 0, report: bool = True
) -> dict:
    """One import_files call in a fresh process; ``cores`` > 0 pins it (and its workers) to that many;
    ``report=False`` skips the fidelity report's read-back and spectra."""
    shutil.rmtree(archive, ignore_errors=True)
    env = {**os.environ, **({} if report else {"BENCH_NO_FIDELITY_REPORT": "1"})}
    run = subprocess.run(
        [sys.executable, "-c", _IMPORT_SCRIPT, str(archive), str(workers), str(cores), *map(str, sources)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    result = json.loads(run.stdout)
    result["stored_bytes"] = sum(p.stat().st_size for p in archive.rglob("*") if p.is_file())
    return result


def _noise_wav(path: Path, rate: int, channels: int, seconds: float) -> Path:
    """A tone in noise, int16, written a second at a time so that making it takes little memory."""
    rng = np.random.default_rng(0)
    with sf.SoundFile(str(path), "w", samplerate=rate, channels=channels, subtype="PCM_16") as wav:
        for start in range(0, round(rate * seconds), rate):
            n = min(rate, round(rate * seconds) - start)
            tone = 0.3 * np.sin(2 * np.pi * (rate / 8) * (start + np.arange(n)) / rate)[:, None]
            wav.write(((tone + 0.05 * rng.standard_normal((n, channels))) * 32767).astype(np.int16))
    return path


def _memory_by_rate(ctx: Context, work: Path) -> list[dict]:
    """Peak RSS importing each case at two lengths, each WAV deleted once imported (the longest,
    20 min at 500 kHz x 4 channels, is 4.8 GB)."""
    rows = []
    for rate, channels in MEMORY_CASES:
        row: dict = {"input": f"{rate / 1000:g} kHz x {channels} ch"}
        for minutes in QUICK_MEMORY_MINUTES if ctx.quick else MEMORY_MINUTES:
            wav = _noise_wav(work / f"noise_{rate}_{channels}.wav", rate, channels, minutes * 60)
            result = _import_in_process([wav], work / "memory.zarr")
            wav.unlink()
            row[f"peak RSS MB, {minutes:g} min"] = result["peak_rss_mb"]
            row[f"x realtime, {minutes:g} min"] = minutes * 60 / result["seconds"]
        peaks = [v for k, v in row.items() if k.startswith("peak")]
        row["bounded (within 10 %)"] = max(peaks) <= 1.1 * min(peaks)
        row[f"under {MEMORY_TARGET_MB} MB"] = max(peaks) < MEMORY_TARGET_MB
        rows.append(row)
    return rows


def _live_memory_by_rate(ctx: Context, work: Path) -> list[dict]:
    """Peak RSS of ``zarr_aac.open_writer`` appending 0.5 s blocks, each case at two lengths, in a
    fresh process each (the archive deleted after each)."""
    rows = []
    for rate, channels in MEMORY_CASES:
        row: dict = {"input": f"live writer, {rate / 1000:g} kHz x {channels} ch"}
        for minutes in QUICK_MEMORY_MINUTES if ctx.quick else LIVE_MEMORY_MINUTES:
            archive = work / "live.zarr"
            run = subprocess.run(
                [sys.executable, "-c", _LIVE_SCRIPT, str(archive), str(rate), str(channels), str(minutes * 60)],
                check=True,
                capture_output=True,
                text=True,
            )
            shutil.rmtree(archive)
            result = json.loads(run.stdout)
            row[f"peak RSS MB, {minutes:g} min"] = result["peak_rss_mb"]
            row[f"x realtime, {minutes:g} min"] = minutes * 60 / result["seconds"]
            row["chunk s"] = result["chunk_s"]
        peaks = [v for k, v in row.items() if k.startswith("peak")]
        row["bounded (within 10 %)"] = max(peaks) <= 1.1 * min(peaks)
        row[f"under {MEMORY_TARGET_MB} MB"] = max(peaks) < MEMORY_TARGET_MB
        rows.append(row)
    return rows


def _head(wav: Path, seconds: int, target: Path) -> Path:
    """The first ``seconds`` of ``wav`` (a shorter source for the memory and parallel runs)."""
    data, rate = sf.read(str(wav), frames=seconds * sf.info(str(wav)).samplerate, dtype="int16")
    sf.write(str(target), data, rate, subtype="PCM_16")
    return target


def run(ctx: Context) -> dict:
    wav = ctx.hour_wav
    # a directory of its own: two benchmark runs sharing ctx.workdir must not share archives
    work = Path(tempfile.mkdtemp(prefix="importer-", dir=ctx.workdir))
    try:
        return _measure(ctx, wav, work)
    finally:
        shutil.rmtree(work)


def _measure(ctx: Context, wav: Path, work: Path) -> dict:
    info = sf.info(str(wav))
    duration = info.frames / info.samplerate
    size_mb = wav.stat().st_size / 1e6
    short_seconds = QUICK_SHORT_SECONDS if ctx.quick else SHORT_SECONDS
    short = _head(wav, short_seconds, work / f"head_{short_seconds}s.wav")
    short_copy = work / f"head_{short_seconds}s_copy.wav"
    shutil.copyfile(short, short_copy)
    with open(short_copy, "r+b") as f:  # same audio, different bytes: not deduplicated
        f.seek(-2, os.SEEK_END)
        f.write(b"\x01\x00")

    whole = _import_in_process([wav], work / "whole.zarr")
    short_run = _import_in_process([short], work / "short.zarr")
    no_report = _import_in_process([short], work / "no_report.zarr", report=False)
    one_core = _import_in_process([short, short_copy], work / "one_core.zarr", workers=1, cores=1)
    one = _import_in_process([short, short_copy], work / "serial.zarr", workers=1)
    two = _import_in_process([short, short_copy], work / "parallel.zarr", workers=2)
    independent = _machine_ceiling([short, short_copy], work)
    memory_rows = _memory_by_rate(ctx, work)
    live_rows = _live_memory_by_rate(ctx, work)

    rows = [
        _row(
            f"zarr_aac.import_file (PyAV, in-process; up to {ENCODING_THREADS} chunks encoded at once in threads, "
            "not pinned)",
            duration,
            size_mb,
            seconds=whole["seconds"],
            rss=whole["peak_rss_mb"],
            stored=whole["stored_bytes"],
            pcm=info.frames * info.channels * 2,
        )
    ]
    ffmpeg = shutil.which("ffmpeg")
    notes = []
    if ffmpeg is not None:
        m4a = work / "ffmpeg.m4a"
        seconds = timed(lambda: ffmpeg_aac(wav, m4a, BITRATE))
        rows.append(
            _row(
                "ffmpeg CLI -> m4a (same encoder, same bitrate; its AAC encoder runs on one thread, not pinned)",
                duration,
                size_mb,
                seconds=seconds,
                rss=None,
                stored=m4a.stat().st_size,
                pcm=info.frames * info.channels * 2,
            )
        )
        notes.append(f"import / ffmpeg CLI time: {whole['seconds'] / seconds:.2f}x")
    else:
        notes.append("ffmpeg command line not installed: its row is missing")
    rows.append({"method": "old system (reported: ffmpeg subprocess + temp file)", "MB/s of source": OLD_SYSTEM_MB_S})
    notes += [
        f"source: {duration / 3600:.2f} h stereo 48 kHz int16 WAV, {size_mb:.0f} MB; AAC-LC {BITRATE // 1000} kbps",
        f"import vs the old system: {size_mb / whole['seconds'] / OLD_SYSTEM_MB_S:.2f}x its MB/s",
        (
            f"fidelity report: importing {short_seconds} s took {short_run['seconds']:.2f} s with it, "
            f"{no_report['seconds']:.2f} s without: +{100 * (short_run['seconds'] / no_report['seconds'] - 1):.1f} % "
            "(target <= 15 %)"
        ),
        (
            f"peak RSS: {short_run['peak_rss_mb']:.0f} MB importing {short_seconds} s, {whole['peak_rss_mb']:.0f} MB "
            f"importing {duration:.0f} s (bounded if equal; target < {MEMORY_TARGET_MB} MB)"
        ),
        (
            f"import_files of two {short_seconds} s files: 1 process pinned to one core {one_core['seconds']:.1f} s "
            f"(the one-core baseline), 1 process {one['seconds']:.1f} s (it encodes two chunks at a time in "
            f"threads), 2 processes {two['seconds']:.1f} s: speed-up {one_core['seconds'] / two['seconds']:.2f}x "
            f"over one core on {os.cpu_count()} cores, {one['seconds'] / two['seconds']:.2f}x over one process "
            f"(includes starting the workers; load average {os.getloadavg()[0]:.1f} at the end); two independent "
            f"import processes started at once took {independent:.1f} s, a ceiling of "
            f"{one['seconds'] / independent:.2f}x on this machine at this moment"
        ),
    ]
    return {
        "title": "Import: WAV to an AAC archive",
        "rows": rows,
        "tables": [
            {
                "title": "Peak RSS (VmHWM of a fresh process) by rate, channels and length: import_file of a WAV",
                "rows": memory_rows,
            },
            {
                "title": (
                    "Peak RSS (VmHWM of a fresh process) by rate, channels and length: the live writer appending "
                    f"{LIVE_BLOCK_SECONDS:g} s blocks"
                ),
                "rows": live_rows,
            },
        ],
        "notes": notes,
        "memory": {
            "short_s": short_seconds,
            "short_peak_rss_mb": short_run["peak_rss_mb"],
            "long_s": duration,
            "long_peak_rss_mb": whole["peak_rss_mb"],
        },
        "fidelity_report": {
            "with_s": short_run["seconds"],
            "without_s": no_report["seconds"],
            "cost_pct": 100 * (short_run["seconds"] / no_report["seconds"] - 1),
        },
        "parallel": {
            "one_core_s": one_core["seconds"],
            "speedup_over_one_core": one_core["seconds"] / two["seconds"],
            "serial_s": one["seconds"],
            "two_workers_s": two["seconds"],
            "speedup": one["seconds"] / two["seconds"],
            "independent_processes_s": independent,
            "ceiling": one["seconds"] / independent,
        },
    }


def _row(
    method: str, duration: float, size_mb: float, *, seconds: float, rss: float | None, stored: int, pcm: int
) -> dict:
    return {
        "method": method,
        "seconds": seconds,
        "x realtime": duration / seconds,
        "MB/s of source": size_mb / seconds,
        "peak RSS MB": rss,
        "size % of PCM": 100 * stored / pcm,
    }
