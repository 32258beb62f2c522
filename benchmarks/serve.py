"""``zarr-aac serve`` under load: concurrent clients on loopback, against cutting segments with ffmpeg.

The hour (``ctx.hour_wav``) is imported into an archive (60 s chunks) and encoded to an .m4a by
the ffmpeg command line at the same bitrate. Four phases, each a server in its own process on
127.0.0.1 with one uvicorn worker unless said:

- ``zarr-aac serve`` on the archive; clients ask at random for a 10 s WAV, the same 10 s as AAC
  frames passed through (ranges kept inside one chunk, which passthrough needs), the page's
  spectrogram PNG of a 10 s window (1000 columns), and a PNG of a long window (10 min, or half
  the input in a quick run) that takes the reduced path.
- the same with ``zarr-aac serve --workers 2``, one process per core.
- ``zarr-aac serve`` asked for the 10 s WAV only, the peer's own request, for a like-for-like figure.
- the way web tools serving long recordings do it: a starlette endpoint that runs
  ``ffmpeg -ss START -t 10 -i hour.m4a -f wav -`` for each request.

``CLIENTS`` clients (asyncio, one HTTP connection each) send requests back to back for
``SECONDS`` seconds per server; the 10 s segments start at the same seeded random times for both.
Every request must succeed; each endpoint gets its count, p50 and p99 latency and rate. The load
average is read before and after each phase (the machine is shared: numbers are noisy).
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import zarr

from benchmarks import Context

CLIENTS = 50
SECONDS = 30.0
QUICK_CLIENTS = 10
QUICK_SECONDS = 5.0
SEGMENT_SECONDS = 10.0
LONG_WINDOW_SECONDS = 600.0
CHUNK_SECONDS = 60.0
BITRATE = 160_000
REQUEST_TIMEOUT = 120.0
KINDS = ("audio wav", "audio aac", "spectrogram 10 s", "spectrogram long")
"""What the mixed phase asks ``zarr-aac serve`` for, at random."""
REDUCED_ABOVE = 4 * 1000 * 2048
"""Samples above which a 1000-column spectrogram at FFT 1024 takes the reduced path (serve/spectrogram.py)."""
ROOT = Path(__file__).resolve().parents[1]


def run(ctx: Context) -> dict:
    import httpx2  # noqa: F401  (fail early: the clients need it)

    from zarr_aac import import_file

    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise RuntimeError("the serve benchmark needs the ffmpeg command line for its peer")
    work = ctx.workdir / "serve"
    archive, m4a = work / "archive.zarr", work / "hour.m4a"
    stamp = f"{ctx.hour_wav.name} {ctx.hour_wav.stat().st_size} {ctx.hour_wav.stat().st_mtime_ns} {BITRATE}"
    if not (work / "built").exists() or (work / "built").read_text() != stamp:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        import_file(ctx.hour_wav, archive, "hour", bitrate=BITRATE, chunk_duration=CHUNK_SECONDS, progress=False)
        subprocess.run(
            [ffmpeg, "-v", "error", "-y", "-i", str(ctx.hour_wav), "-c:a", "aac", "-b:a", str(BITRATE), str(m4a)],
            check=True,
        )
        (work / "built").write_text(stamp)  # both inputs complete: later runs reuse them
    rate = sf.info(str(ctx.hour_wav)).samplerate
    chunk_seconds = zarr.open_array(archive / "hour", mode="r").chunks[0] / rate
    duration = sf.info(str(ctx.hour_wav)).duration
    clients, seconds = (QUICK_CLIENTS, QUICK_SECONDS) if ctx.quick else (CLIENTS, SECONDS)
    long_window = min(LONG_WINDOW_SECONDS, duration / 2)
    rows, notes = [], []
    phases = {
        "zarr-aac serve": (f"create_app({str(archive)!r})", _ours(duration, long_window, chunk_seconds, KINDS)),
        "zarr-aac serve, 2 workers": (
            f"workers:2:{archive}",
            _ours(duration, long_window, chunk_seconds, KINDS),
        ),
        "zarr-aac serve, 10 s WAV only": (
            f"create_app({str(archive)!r})",
            _ours(duration, long_window, chunk_seconds, ("audio wav",)),
        ),
        "ffmpeg cut of .m4a": (f"peer_app({str(m4a)!r}, {ffmpeg!r})", _peer(duration)),
    }
    for server, (factory, requests) in phases.items():
        before = os.getloadavg()[0]
        with _server(factory) as base:
            results = asyncio.run(_load(base, requests, clients, seconds))
        after = os.getloadavg()[0]
        notes.append(f"{server}: load average {before:.1f} before, {after:.1f} after its {seconds:g} s")
        for endpoint, (latencies, failures) in results.items():
            lat = np.asarray(latencies) * 1000
            rows.append(
                {
                    "server": server,
                    "endpoint": endpoint,
                    "requests": len(latencies) + len(failures),
                    "failed": len(failures),
                    "p50 ms": float(np.percentile(lat, 50)) if lat.size else None,
                    "p99 ms": float(np.percentile(lat, 99)) if lat.size else None,
                    "per s": round(len(latencies) / seconds, 1),
                }
            )
            if failures:
                notes.append(f"{server} {endpoint}: {len(failures)} failed, first: {failures[0]}")
    notes += [
        (
            f"{clients} concurrent clients for {seconds:g} s per server on loopback, one uvicorn worker "
            "unless said; "
            f"input {duration:g} s stereo 48 kHz (ctx.hour_wav), {BITRATE // 1000} kbps in both stores"
        ),
        (
            "segments: 10 s at seeded random starts, the same for both servers "
            "(AAC passthrough's kept inside a 60 s chunk)"
        ),
        (
            f"spectrograms: 10 s at 1000 columns x 320 rows (full read), {long_window:g} s window "
            f"({'reduced path' if long_window * rate > REDUCED_ABOVE else 'full read'})"
        ),
        f"{os.cpu_count()} cores shared with other work; latencies include the client's own asyncio overhead",
    ]
    result = {"title": "serve: HTTP latency under concurrent clients", "rows": rows, "notes": notes}
    failed = sum(row["failed"] for row in rows)
    if failed:  # the numbers stay in the report, and the run fails
        result["error"] = f"{failed} requests failed under load (see the notes)"
    return result


def _ours(duration: float, long_window: float, chunk_seconds: float, kinds: tuple[str, ...]):
    """(endpoint, url) of a random request of one of ``kinds`` to ``zarr-aac serve``, drawn from
    ``rng``; AAC passthrough ranges are kept inside one chunk of ``chunk_seconds``."""

    def request(rng: random.Random) -> tuple[str, str]:
        kind = rng.choice(KINDS)  # drawn from all kinds whichever are asked, so starts match across phases
        kind = kind if kind in kinds else kinds[0]
        start = rng.uniform(0, duration - SEGMENT_SECONDS)
        if kind == "audio aac":  # inside one chunk
            chunk = int(start // chunk_seconds)
            start = chunk * chunk_seconds + min(start % chunk_seconds, chunk_seconds - SEGMENT_SECONDS - 0.1)
        stop = start + SEGMENT_SECONDS
        base = "/api/recordings/hour"
        if kind == "audio wav":
            return kind, f"{base}/audio?start={start:.3f}&stop={stop:.3f}&format=wav"
        if kind == "audio aac":
            return kind, f"{base}/audio?start={start:.3f}&stop={stop:.3f}&format=aac"
        if kind == "spectrogram 10 s":
            return kind, f"{base}/spectrogram?start={start:.3f}&stop={stop:.3f}&columns=1000&height=320"
        start = rng.uniform(0, duration - long_window)
        return kind, f"{base}/spectrogram?start={start:.3f}&stop={start + long_window:.3f}&columns=1000&height=320"

    return request


def _peer(duration: float):
    def request(rng: random.Random) -> tuple[str, str]:
        rng.choice(KINDS)  # the same draws as _ours, so the segments are the same
        start = rng.uniform(0, duration - SEGMENT_SECONDS)
        return "audio wav (ffmpeg)", f"/cut?start={start:.3f}&duration={SEGMENT_SECONDS}"

    return request


async def _load(base: str, request, clients: int, seconds: float) -> dict[str, tuple[list[float], list[str]]]:
    import httpx2

    results: dict[str, tuple[list[float], list[str]]] = {}
    deadline = time.monotonic() + seconds

    async def client(number: int) -> None:
        rng = random.Random(number)
        async with httpx2.AsyncClient(base_url=base, timeout=REQUEST_TIMEOUT) as http:
            while time.monotonic() < deadline:
                endpoint, url = request(rng)
                latencies, failures = results.setdefault(endpoint, ([], []))
                began = time.perf_counter()
                try:
                    response = await http.get(url)
                except httpx2.HTTPError as exc:
                    failures.append(f"{url}: {exc!r}")
                    continue
                if response.status_code != 200 or not response.content:
                    failures.append(f"{url}: {response.status_code} {response.text[:200]}")
                else:
                    latencies.append(time.perf_counter() - began)

    await asyncio.gather(*(client(n) for n in range(clients)))
    return results


class _server:
    """An app built by ``factory`` (an expression in this module) served by uvicorn in a subprocess."""

    def __init__(self, factory: str) -> None:
        self.factory = factory

    def __enter__(self) -> str:
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if self.factory.startswith("workers:"):  # `zarr-aac serve --workers N ARCHIVE`
            _, workers, archive = self.factory.split(":", 2)
            command = [sys.executable, "-m", "zarr_aac.cli", "serve", archive, "--workers", workers]
            command += ["--port", str(port)]
        else:
            code = (
                "import uvicorn\n"
                "from benchmarks.serve import peer_app\n"
                "from zarr_aac.serve import create_app\n"
                f"uvicorn.run({self.factory}, host='127.0.0.1', port={port}, log_level='warning', backlog=512)\n"
            )
            command = [sys.executable, "-c", code]
        self.process = subprocess.Popen(command, cwd=ROOT)
        base = f"http://127.0.0.1:{port}"
        import httpx2

        deadline = time.monotonic() + 60
        while True:
            try:
                httpx2.get(base + "/", timeout=5)
                return base
            except httpx2.TransportError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.process.kill()
                    raise RuntimeError(f"the server {self.factory} did not start") from None
                time.sleep(0.2)

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def peer_app(m4a: str, ffmpeg: str):
    """A starlette app whose ``/cut?start=S&duration=D`` runs ffmpeg on ``m4a`` and sends the WAV."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, Response
    from starlette.routing import Route

    async def cut(request: Request) -> Response:
        start = float(request.query_params["start"])
        duration = float(request.query_params["duration"])
        process = await asyncio.create_subprocess_exec(
            ffmpeg,
            "-v",
            "error",
            "-ss",
            f"{start:.3f}",
            "-t",
            f"{duration:.3f}",
            "-i",
            m4a,
            "-f",
            "wav",
            "pipe:1",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        if process.returncode:
            return PlainTextResponse(err.decode(errors="replace"), status_code=500)
        return Response(out, media_type="audio/wav")

    return Starlette(routes=[Route("/cut", cut), Route("/", lambda request: PlainTextResponse("ok"))])
