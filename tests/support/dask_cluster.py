"""A real dask.distributed cluster for tests: a scheduler and workers, each its own process.

``LocalCluster`` re-imports the test's own modules in its workers and so can hide a package
that is not installed; here the scheduler and workers are started from the command line, from
an empty directory, without the tests' PYTHONPATH, and find zarr_aac only as installed.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

STARTUP_SECONDS = 90


class ProcessCluster:
    """A ``dask scheduler`` on 127.0.0.1 and single-threaded ``dask worker`` processes without
    nannies (so that a killed worker stays dead); ``env`` is added to their environment."""

    def __init__(self, workdir: Path, env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.scheduler_file = workdir / "scheduler.json"
        self.env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, **(env or {})}
        self.scheduler: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []

    def _start(self, module: str, *args: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=self.workdir,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def start_scheduler(self) -> None:
        self.scheduler = self._start(
            "distributed.cli.dask_scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--no-dashboard",
            "--scheduler-file",
            str(self.scheduler_file),
        )
        deadline = time.monotonic() + STARTUP_SECONDS
        while not self.scheduler_file.exists():
            if self.scheduler.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dask scheduler did not start (exit code {self.scheduler.poll()})")
            time.sleep(0.2)

    @property
    def address(self) -> str:
        """The scheduler's address, tcp://127.0.0.1:PORT."""
        return json.loads(self.scheduler_file.read_text())["address"]

    def add_worker(self) -> subprocess.Popen:
        """Start one more worker (the caller waits for it with ``client.wait_for_workers``)."""
        name = f"worker-{len(self.workers)}"
        worker = self._start(
            "distributed.cli.dask_worker",
            "--scheduler-file",
            str(self.scheduler_file),
            "--nthreads",
            "1",
            "--no-nanny",
            "--no-dashboard",
            "--name",
            name,
            "--local-directory",
            str(self.workdir / name),
        )
        self.workers.append(worker)
        return worker

    def live_workers(self) -> list[subprocess.Popen]:
        return [w for w in self.workers if w.poll() is None]

    def close(self) -> None:
        """Stop the workers, then the scheduler (a worker whose scheduler is gone first waits
        to reconnect); whatever does not stop within seconds is killed."""
        for group in (self.workers, [self.scheduler] if self.scheduler else []):
            for proc in group:
                if proc.poll() is None:
                    proc.terminate()
            for proc in group:
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


@contextlib.contextmanager
def process_cluster(workdir: Path, n_workers: int, env: dict[str, str] | None = None) -> Iterator[ProcessCluster]:
    """A scheduler and ``n_workers`` workers started and connected to; always torn down."""
    import distributed

    cluster = ProcessCluster(workdir, env)
    try:
        cluster.start_scheduler()
        for _ in range(n_workers):
            cluster.add_worker()
        with distributed.Client(cluster.address, timeout=STARTUP_SECONDS) as client:
            client.wait_for_workers(n_workers, timeout=STARTUP_SECONDS)
        yield cluster
    finally:
        cluster.close()


@contextlib.contextmanager
def cluster(workdir: Path, n_workers: int):
    """A client of a scheduler and ``n_workers`` worker processes; yields (client, worker processes)."""
    import distributed

    with (
        process_cluster(workdir, n_workers) as running,
        distributed.Client(running.address, timeout=STARTUP_SECONDS) as client,
    ):
        yield client, running.workers
