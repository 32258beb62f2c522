"""Audio files made by another encoder than the project's (the ffmpeg command line), and the
samples FFmpeg itself decodes from a file: the references the file adapter and importer meet."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile


def require_tool(name: str) -> str:
    """The path of command-line tool ``name`` (ffmpeg, ffprobe); the test skips without it, which
    under CI=true fails (tests/conftest.py), as CI installs it (`.ci/run`)."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"requires the {name} command line (not installed)")
    return path


def write_wav(path: Path, pcm: np.ndarray, rate: int) -> Path:
    """``pcm`` (float in [-1, 1] or int16) written as a 16-bit WAV file."""
    soundfile.write(path, pcm, rate, subtype="PCM_16")
    return path


def run_ffmpeg(ffmpeg: str, *arguments: str | Path) -> None:
    """The ffmpeg command line with errors only on stderr; a failure raises."""
    subprocess.run([ffmpeg, "-v", "error", "-y", *map(str, arguments)], check=True)


def ffmpeg_aac(ffmpeg: str, wav: Path, out: Path, *options: str, pns: bool = False) -> Path:
    """``wav`` encoded to ``out`` (ADTS or MP4, by its suffix) by FFmpeg's AAC encoder, with
    perceptual noise substitution off unless ``pns``; ``options`` go before the output name."""
    pns_options = () if pns else ("-aac_pns", "0")
    run_ffmpeg(ffmpeg, "-i", wav, "-c:a", "aac", *pns_options, *options, out)
    return out


def two_track_aac(ffmpeg: str, first: Path, second: Path, out: Path, *options: str) -> Path:
    """An MP4 ``out`` with two AAC audio tracks (PNS off), encoded from ``first`` and ``second``;
    ``options`` go before the output name."""
    run_ffmpeg(
        ffmpeg, "-i", first, "-i", second, "-map", "0:a", "-map", "1:a", "-c:a", "aac", "-aac_pns", "0", *options, out
    )
    return out


def pyav_decode(path: Path, stream: int = 0) -> np.ndarray:
    """float32 (n, channels): every sample FFmpeg presents for audio stream ``stream`` of a file
    (an MP4 edit list honoured, as any FFmpeg-based player does)."""
    with av.open(str(path)) as container:
        frames = container.decode(container.streams.audio[stream])
        return np.concatenate([frame.to_ndarray().T for frame in frames])


def probe_channels(path: Path) -> int | None:
    """Channels of the first audio stream of ``path`` as ffprobe reads them; None where it finds none."""
    probe = subprocess.run(
        [
            require_tool("ffprobe"),
            "-v",
            "error",
            "-select_streams",
            "a:0",
            "-show_entries",
            "stream=channels",
            "-of",
            "csv=p=0",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0 or not probe.stdout.strip():
        return None
    return int(probe.stdout.strip().splitlines()[0])


def ffmpeg_decode(ffmpeg: str, path: Path, channels: int) -> np.ndarray:
    """float32 (n, channels): the first audio stream of ``path`` as the ffmpeg command line decodes it."""
    raw = subprocess.run(
        [ffmpeg, "-v", "error", "-i", str(path), "-map", "0:a:0", "-f", "f32le", "-"], check=True, capture_output=True
    ).stdout
    return np.frombuffer(raw, dtype=np.float32).reshape(-1, channels)
