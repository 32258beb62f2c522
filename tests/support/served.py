"""An archive made by the importer for the `zarr-aac serve` tests, and the server run on loopback."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from support.media import write_wav
from support.signals import tones

TONE_HZ = 3000.0
"""The tone of the ``birds`` recording (32 kHz, mono)."""
STEREO_TONES_HZ = (1000.0, 6000.0)
"""The tones of the two channels of ``stereo`` (48 kHz)."""
BAT_TONE_HZ = 40_000.0
"""The tone of ``bat`` (250 kHz, stored with a declared AAC rate below the true one)."""
CHUNK_SECONDS = 4.0


@dataclass(frozen=True)
class ServedArchive:
    path: Path
    sources: dict[str, np.ndarray]
    """Each recording's source PCM (float, full scale 1) by name."""
    rates: dict[str, int]


def make_archive(folder: Path) -> ServedArchive:
    """Three recordings imported from WAV files: ``birds`` (12 s, 32 kHz mono, a 3 kHz tone, with
    a start time), ``stereo`` (6 s, 48 kHz, a tone per channel) and ``bat`` (2 s, 250 kHz, 40 kHz),
    in chunks of 4 s."""
    from zarr_aac import import_file

    layout = {
        "birds": (32_000, 12.0, (TONE_HZ,), "2025-06-10T05:00:00+00:00"),
        "stereo": (48_000, 6.0, STEREO_TONES_HZ, "2025-06-10T05:00:30+00:00"),
        "bat": (250_000, 2.0, (BAT_TONE_HZ,), None),
    }
    archive = folder / "deployment.zarr"
    sources, rates = {}, {}
    for number, (name, (rate, seconds, freqs, start)) in enumerate(layout.items()):
        pcm = tones(round(rate * seconds), rate, freqs, amplitude=0.4, noise=0.01, seed=number)
        wav = write_wav(folder / f"{name}.wav", pcm, rate)
        import_file(wav, archive, name, start_time=start, chunk_duration=CHUNK_SECONDS, progress=False)
        sources[name], rates[name] = pcm, rate
    return ServedArchive(archive, sources, rates)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def running_server(archive: Path) -> Iterator[str]:
    """``create_app(archive)`` served by uvicorn in a thread on 127.0.0.1; yields its base URL."""
    import uvicorn

    from zarr_aac.serve import create_app

    port = free_port()
    config = uvicorn.Config(create_app(str(archive)), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
