"""Import throughput into S3 on a dask cluster of 1 and of 2 workers (rows for the archive section).

The archive is in an S3 bucket served by moto on loopback, in a process of its own; the
scheduler and the single-threaded workers are processes of their own too (distributed's
``SubprocessCluster``). Both cluster sizes import the same files, cut from ``ctx.hour_wav``
at different offsets (so no content repeats and nothing is skipped as already imported), each
into a new archive; the rounds alternate 1, 2, 1, 2 so that load changes affect both alike,
and each size reports its faster round. The peer, in the same rounds: the local process pool
(``workers=1`` and ``workers=2``) importing the same files into a local archive, which shows
how much parallelism the machine gives at that moment. The load average is recorded beside them.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import soundfile as sf

from benchmarks import Context, timed

BITRATE = 160_000
FILES, FILE_SECONDS = 16, 30
QUICK_FILES, QUICK_FILE_SECONDS = 8, 1.5
ROUNDS, QUICK_ROUNDS = 2, 1
SPEED_UP_TARGET = 1.8
BUCKET = "bench-archive"
CREDENTIALS = {"key": "bench", "secret": "bench"}


@contextmanager
def _moto_server() -> Iterator[str]:
    """moto's S3 server in its own process on a free loopback port; yields its endpoint URL."""
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=1)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


def _cut(wav: Path, count: int, seconds: float, work: Path) -> list[Path]:
    """``count`` files of ``seconds`` each from consecutive stretches of ``wav``."""
    info = sf.info(str(wav))
    length = round(seconds * info.samplerate)
    if count * length > info.frames:
        raise ValueError(f"{wav} holds {info.frames / info.samplerate:.0f} s, fewer than {count} x {seconds} s")
    files = []
    for i in range(count):
        data, rate = sf.read(str(wav), start=i * length, frames=length, dtype="int16")
        path = work / f"part{i:02d}.wav"
        sf.write(str(path), data, rate, subtype="PCM_16")
        files.append(path)
    return files


def _import_seconds(sources: list[Path], n_workers: int, archive: str, options: dict) -> float:
    """Seconds of one import_files call on a fresh cluster of ``n_workers`` (started beforehand,
    not timed)."""
    import distributed
    from distributed.deploy.subprocess import SubprocessCluster

    import zarr_aac

    with (
        SubprocessCluster(
            host="127.0.0.1",
            dashboard_address=None,
            worker_class="distributed.Worker",
            n_workers=n_workers,
            threads_per_worker=1,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        client.wait_for_workers(n_workers, timeout=120)
        return timed(
            lambda: zarr_aac.import_files(
                sources, archive, client=client, storage_options=options, bitrate=BITRATE, progress=False
            )
        )


def _local_seconds(sources: list[Path], n_workers: int, archive: Path) -> float:
    """Seconds of one local import_files call with ``n_workers`` processes (the peer)."""
    import zarr_aac

    return timed(lambda: zarr_aac.import_files(sources, archive, workers=n_workers, bitrate=BITRATE, progress=False))


def measure(ctx: Context) -> list[dict]:
    """Rows of import throughput into S3 (moto) with 1 and with 2 dask workers, same files."""
    import s3fs

    count, seconds = (QUICK_FILES, QUICK_FILE_SECONDS) if ctx.quick else (FILES, FILE_SECONDS)
    work = Path(tempfile.mkdtemp(prefix="cluster-import-", dir=ctx.workdir))
    try:
        sources = _cut(ctx.hour_wav, count, seconds, work)
        megabytes = sum(p.stat().st_size for p in sources) / 1e6
        audio_seconds = count * seconds
        best: dict[int, float] = {}
        local: dict[int, float] = {}
        load: dict[int, float] = {}
        with _moto_server() as endpoint:
            options = {**CREDENTIALS, "client_kwargs": {"endpoint_url": endpoint}, "skip_instance_cache": True}
            s3fs.S3FileSystem(**options).mkdir(BUCKET)
            for round_ in range(QUICK_ROUNDS if ctx.quick else ROUNDS):
                for n_workers in (1, 2):
                    archive = f"s3://{BUCKET}/round{round_}-workers{n_workers}.zarr"
                    took = _import_seconds(sources, n_workers, archive, options)
                    best[n_workers] = min(took, best.get(n_workers, took))
                    load[n_workers] = os.getloadavg()[0]
                    took = _local_seconds(sources, n_workers, work / f"local{round_}-{n_workers}.zarr")
                    local[n_workers] = min(took, local.get(n_workers, took))
    finally:
        shutil.rmtree(work)
    rows = [
        {
            "method": f"import_files on dask, {n_workers} worker{'s' if n_workers > 1 else ''} -> S3 (moto)",
            "files": count,
            "seconds": best[n_workers],
            "x realtime": audio_seconds / best[n_workers],
            "MB/s of source": megabytes / best[n_workers],
            "speed-up over 1 worker": best[1] / best[n_workers],
            f"target >= {SPEED_UP_TARGET}x": None if n_workers == 1 else best[1] / best[2] >= SPEED_UP_TARGET,
            "load average (1 min)": load[n_workers],
            "cores": os.cpu_count(),
        }
        for n_workers in (1, 2)
    ]
    rows += [
        {
            "method": f"peer: local import_files, workers={n_workers} -> local archive",
            "files": count,
            "seconds": local[n_workers],
            "x realtime": audio_seconds / local[n_workers],
            "MB/s of source": megabytes / local[n_workers],
            "speed-up over 1 worker": local[1] / local[n_workers],
            "cores": os.cpu_count(),
        }
        for n_workers in (1, 2)
    ]
    return rows
