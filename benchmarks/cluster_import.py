"""Import throughput into S3 on a dask cluster of 1 and of 2 workers (rows for the archive section).

The archive is in an S3 bucket served by moto on loopback, in a process of its own; the
scheduler and the single-threaded workers are processes of their own too (distributed's
``SubprocessCluster``). Both cluster sizes import the same files, cut from ``ctx.hour_wav``
at different offsets (so no content repeats and nothing is skipped as already imported), each
into a new archive; the rounds alternate 1, 2, 1, 2 so that load changes affect both alike,
and each size reports its faster round. The peer, in the same rounds: the local process pool
(``workers=1`` and ``workers=2``) importing the same files into a local archive, which shows
how much parallelism the machine gives at that moment (the ceiling: two import processes
against one). Beside each cluster row: the CPU time of the workers, of the moto server, of the
scheduler and of the client during that import (moto runs on the same cores, which a real
object store does not), the cores they used between them, the speed-up the 2-worker run would
have if its processes had every core to themselves (the 1-worker time over their CPU seconds
spread over the cores), and the load average.

Two sets of files: the 16 x 30 s the target is stated for, and (full runs only) 4 x 5 min, an
archive of longer recordings, whose chunks (60 s) a single worker already encodes two at a time.
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
from dataclasses import dataclass
from pathlib import Path

import psutil
import soundfile as sf

from benchmarks import Context, timed

BITRATE = 160_000
FILE_SETS = [(16, 30, 2), (4, 300, 1)]
"""(files, seconds each, rounds) of a full run."""
QUICK_FILE_SETS = [(8, 1.5, 1)]
SPEED_UP_TARGET = 1.8
BUCKET = "bench-archive"
CREDENTIALS = {"key": "bench", "secret": "bench"}


@contextmanager
def _moto_server() -> Iterator[tuple[str, int]]:
    """moto's S3 server in its own process on a free loopback port; yields its endpoint URL and
    process id."""
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
        yield url, server.pid
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


@dataclass(frozen=True)
class _ClusterRun:
    """One import on the cluster: its seconds, and the CPU seconds of its workers, of moto, of
    the scheduler and of this process (the client)."""

    seconds: float
    workers_cpu: float
    moto_cpu: float
    scheduler_cpu: float
    client_cpu: float
    load: float

    @property
    def total_cpu(self) -> float:
        return self.workers_cpu + self.moto_cpu + self.scheduler_cpu + self.client_cpu


def _cpu_seconds(pids: list[int]) -> float:
    return sum(sum(psutil.Process(pid).cpu_times()[:4]) for pid in pids)


def _import_on_cluster(sources: list[Path], n_workers: int, archive: str, options: dict, moto_pid: int) -> _ClusterRun:
    """One import_files call on a fresh cluster of ``n_workers`` (started beforehand, not timed)."""
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
        workers = list(client.run(os.getpid).values())
        scheduler = client.run_on_scheduler(os.getpid)
        workers_before, moto_before = _cpu_seconds(workers), _cpu_seconds([moto_pid])
        scheduler_before, client_before = _cpu_seconds([scheduler]), _cpu_seconds([os.getpid()])
        seconds = timed(
            lambda: zarr_aac.import_files(
                sources, archive, client=client, storage_options=options, bitrate=BITRATE, progress=False
            )
        )
        return _ClusterRun(
            seconds,
            _cpu_seconds(workers) - workers_before,
            _cpu_seconds([moto_pid]) - moto_before,
            _cpu_seconds([scheduler]) - scheduler_before,
            _cpu_seconds([os.getpid()]) - client_before,
            os.getloadavg()[0],
        )


def _local_seconds(sources: list[Path], n_workers: int, archive: Path) -> float:
    """Seconds of one local import_files call with ``n_workers`` processes (the peer)."""
    import zarr_aac

    return timed(lambda: zarr_aac.import_files(sources, archive, workers=n_workers, bitrate=BITRATE, progress=False))


def _rows_of_set(ctx: Context, count: int, seconds: float, rounds: int, *, endpoint: str, moto_pid: int) -> list[dict]:
    """The rows of one set of ``count`` files of ``seconds`` each, ``rounds`` alternated rounds."""
    label = f"{count} x {seconds:g} s"
    work = Path(tempfile.mkdtemp(prefix="cluster-import-", dir=ctx.workdir))
    options = {**CREDENTIALS, "client_kwargs": {"endpoint_url": endpoint}, "skip_instance_cache": True}
    try:
        sources = _cut(ctx.hour_wav, count, seconds, work)
        megabytes = sum(p.stat().st_size for p in sources) / 1e6
        best: dict[int, _ClusterRun] = {}
        local: dict[int, float] = {}
        for round_ in range(rounds):
            for n_workers in (1, 2):
                archive = f"s3://{BUCKET}/{count}x{seconds:g}-round{round_}-workers{n_workers}.zarr"
                run = _import_on_cluster(sources, n_workers, archive, options, moto_pid)
                if n_workers not in best or run.seconds < best[n_workers].seconds:
                    best[n_workers] = run
                took = _local_seconds(sources, n_workers, work / f"local{round_}-{n_workers}.zarr")
                local[n_workers] = min(took, local.get(n_workers, took))
    finally:
        shutil.rmtree(work)
    audio_seconds = count * seconds
    cores = os.cpu_count() or 1
    rows = [
        {
            "method": f"import_files on dask, {n} worker{'s' if n > 1 else ''} -> S3 (moto)",
            "files": label,
            "seconds": best[n].seconds,
            "x realtime": audio_seconds / best[n].seconds,
            "MB/s of source": megabytes / best[n].seconds,
            "speed-up over 1 worker": best[1].seconds / best[n].seconds,
            f"target >= {SPEED_UP_TARGET}x": None if n == 1 else best[1].seconds / best[2].seconds >= SPEED_UP_TARGET,
            "workers CPU s": best[n].workers_cpu,
            "moto CPU s": best[n].moto_cpu,
            "scheduler CPU s": best[n].scheduler_cpu,
            "client CPU s": best[n].client_cpu,
            "moto share of CPU": best[n].moto_cpu / best[n].total_cpu,
            "cores used": best[n].total_cpu / best[n].seconds,
            # the 2-worker run cannot take less than its processes' CPU spread over every core
            "speed-up if all cores were obtained": None if n == 1 else best[1].seconds / (best[2].total_cpu / cores),
            "load average (1 min)": best[n].load,
            "cores": cores,
        }
        for n in (1, 2)
    ]
    rows += [
        {
            "method": f"peer: local import_files, workers={n} -> local archive",
            "files": label,
            "seconds": local[n],
            "x realtime": audio_seconds / local[n],
            "MB/s of source": megabytes / local[n],
            "speed-up over 1 worker": local[1] / local[n],
            "cores": os.cpu_count(),
        }
        for n in (1, 2)
    ]
    return rows


def measure(ctx: Context) -> list[dict]:
    """Rows of import throughput into S3 (moto) with 1 and with 2 dask workers, same files, for
    each set of files, with the local process pool's rows beside them."""
    import s3fs

    rows: list[dict] = []
    with _moto_server() as (endpoint, moto_pid):
        s3fs.S3FileSystem(**CREDENTIALS, client_kwargs={"endpoint_url": endpoint}, skip_instance_cache=True).mkdir(
            BUCKET
        )
        for count, seconds, rounds in QUICK_FILE_SETS if ctx.quick else FILE_SETS:
            rows += _rows_of_set(ctx, count, seconds, rounds, endpoint=endpoint, moto_pid=moto_pid)
    return rows
