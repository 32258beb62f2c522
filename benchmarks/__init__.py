"""Benchmarks run by ``python -m benchmarks`` (``nox -s bench``).

Each section module has ``run(ctx: Context) -> dict`` returning
``{"title": str, "rows": [dict, ...], "notes": [str, ...]}``, optionally with ``"tables"``
(``[{"title": str, "rows": [...]}]``, rendered after the main one) and a ``"plot"`` (see
``__main__.plot_section``). Sections compare against peers measured in the same run.

The shared input, ``ctx.hour_wav``, is a stereo 48 kHz int16 WAV looped from the package's
example recording (``zarr_aac/data/forest_birds_32k.flac``, a real 10 s, 32 kHz mono field
soundscape with bird song, BSD-3-Clause): it is the one real non-AAC recording that ships with
the code, so the benchmark runs anywhere without ../shared. It is resampled to 48 kHz with
PyAV's ``AudioResampler`` (FFmpeg's swresample); the right channel is the left one delayed by
half the recording, so the channels differ and a stereo coder cannot collapse them. The hour
is that 10 s loop repeated; no chunk size used here (at most ~61 s) lines up with the loop in
a way a codec could exploit beyond what real long recordings of a steady soundscape offer.

That input favours AAC: a quiet soundscape with its 16-24 kHz band empty (upsampled from 32 kHz)
and two channels without correlation. ``ctx.dense_wav`` is its opposite, of the same length: the
repository's music fixture (``tests/data/music_lena_44k1.m4a``, 12.3 s at 44.1 kHz, MIT) resampled
to 48 kHz and looped, loud and full-band. The fixture's two channels are identical, so the right
channel is delayed by ``SPACED_PAIR_DELAY`` samples, as a pair of microphones 17 cm apart hears
one source: the channels correlate strongly, as in a real stereo recording, and FLAC's
inter-channel coding helps, without being handed two identical channels.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import av
import numpy as np
import soundfile as sf

from zarr_aac.examples import example_recording

MUSIC = Path(__file__).resolve().parents[1] / "tests" / "data" / "music_lena_44k1.m4a"
SPACED_PAIR_DELAY = 24
"""Samples (0.5 ms at 48 kHz) between the dense input's channels."""

HOUR_RATE = 48_000
HOUR_CHANNELS = 2
QUICK_SECONDS = 120
"""Length of ``ctx.hour_wav`` in a ``--quick`` smoke run instead of 3600 s."""


@dataclass
class Context:
    """What every section gets: a scratch directory, the shared input and the run's size."""

    workdir: Path
    quick: bool = False

    @cached_property
    def hour_wav(self) -> Path:
        """1 h (``QUICK_SECONDS`` with --quick) stereo 48 kHz int16 WAV; built once, then reused."""
        seconds = QUICK_SECONDS if self.quick else 3600
        path = self.workdir / f"forest_birds_48k_stereo_{seconds}s.wav"
        if not _is_complete(path, seconds):
            build_looped_wav(path, seconds)
        return path

    @cached_property
    def dense_wav(self) -> Path:
        """The music fixture looped to ``hour_wav``'s length, stereo 48 kHz int16; built once."""
        seconds = QUICK_SECONDS if self.quick else 3600
        path = self.workdir / f"music_48k_stereo_{seconds}s.wav"
        if not _is_complete(path, seconds):
            build_looped_wav(path, seconds, music_stereo_48k())
        return path


def _is_complete(path: Path, seconds: int) -> bool:
    if not path.exists():
        return False
    info = sf.info(str(path))
    return (info.samplerate, info.channels, info.frames, info.subtype) == (
        HOUR_RATE,
        HOUR_CHANNELS,
        seconds * HOUR_RATE,
        "PCM_16",
    )


def example_stereo_48k() -> np.ndarray:
    """The example recording at 48 kHz, int16 (n, 2); right = left delayed by half its length."""
    with av.open(str(example_recording())) as container:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=HOUR_RATE)
        blocks = []
        for frame in container.decode(audio=0):
            blocks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
        blocks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
    mono = np.concatenate(blocks)
    return np.stack([mono, np.roll(mono, mono.size // 2)], axis=1)


def music_stereo_48k() -> np.ndarray:
    """The repository's music fixture at 48 kHz, int16 (n, 2); right = left delayed by SPACED_PAIR_DELAY."""
    with av.open(str(MUSIC)) as container:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=HOUR_RATE)
        blocks = []
        for frame in container.decode(audio=0):
            blocks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
        blocks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
    mono = np.concatenate(blocks)
    return np.stack([mono, np.roll(mono, SPACED_PAIR_DELAY)], axis=1)


def build_looped_wav(path: Path, seconds: int, loop: np.ndarray | None = None) -> None:
    """Write ``seconds`` of ``loop`` (the example recording by default) repeated to ``path`` (under
    a name of this process's, then renamed, so concurrent runs never see or write a half-built file)."""
    if loop is None:
        loop = example_stereo_48k()
    total = seconds * HOUR_RATE
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.stem}.{os.getpid()}.partial.wav")
    with sf.SoundFile(str(partial), "w", HOUR_RATE, HOUR_CHANNELS, "PCM_16") as out:
        written = 0
        while written < total:
            block = loop[: total - written]
            out.write(block)
            written += len(block)
    partial.replace(path)


def timed(fn: Callable[[], object]) -> float:
    """Seconds one call of ``fn`` takes (perf_counter)."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


READ_LENGTHS = {"20 ms": 0.02, "1 s": 1.0, "10 s": 10.0}
"""Segment lengths of the random-read comparisons."""


def interleaved_reads(readers: dict, positions: np.ndarray, rate: int) -> dict[tuple[str, str], list[float]]:
    """Seconds of each ``reader(a, b)`` call per (method, length), every method reading the same
    positions so that load and drift affect them alike, in a new random order at each position:
    a read right after another method's read of the same samples finds them in the CPU's caches,
    so no method may always follow the same one."""
    names = list(readers)
    order_of = np.random.default_rng(len(positions))
    times: dict[tuple[str, str], list[float]] = {(m, length): [] for m in names for length in READ_LENGTHS}
    for a in positions:
        order = [names[i] for i in order_of.permutation(len(names))]
        for length, seconds in READ_LENGTHS.items():
            b = int(a) + round(seconds * rate)
            for name in order:
                times[name, length].append(timed(lambda r=readers[name], a=int(a), b=b: r(a, b)))
    return times


def ffmpeg_aac(source: Path, target: Path, bitrate: int) -> None:
    """Encode ``source`` with the ffmpeg command line's native AAC encoder, PNS off, as the
    project's codec does: the peer for import speed and the file the adapter reads in place."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise RuntimeError("this benchmark needs the ffmpeg command line (apt-get install ffmpeg)")
    command = [ffmpeg, "-v", "error", "-y", "-i", str(source), "-c:a", "aac", "-b:a", str(bitrate), "-aac_pns", "0"]
    subprocess.run([*command, str(target)], check=True)


def median_p90(values: list[float]) -> tuple[float, float]:
    median, p90 = np.percentile(values, [50, 90])
    return float(median), float(p90)
