"""What reads hand to the decode pool (zarr_aac.codec.decode_pool), recorded in the reading process;
and jobs that misbehave in a worker. They live here, not in a test module, so that a worker can
unpickle them: test modules are not importable by name outside pytest (--import-mode=importlib)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import zarr

from support.arrays import tone_array
from support.selections import reference_decode
from zarr_aac.codec import decode_pool


@dataclass
class PoolRecord:
    """The jobs of each read that used the pool, and of those the ones run in the reading process."""

    reads: list[list[decode_pool.DecodeJob]] = field(default_factory=list)
    here: list[decode_pool.DecodeJob] = field(default_factory=list)

    def clear(self) -> None:
        self.reads.clear()
        self.here.clear()


def record_pool(monkeypatch: pytest.MonkeyPatch) -> PoolRecord:
    """Record every read's jobs as it hands them to ``decode_pool.decode`` or ``decode_async``,
    and the jobs ``run_jobs`` runs in this process meanwhile."""
    record = PoolRecord()
    decode, decode_async, run_jobs = decode_pool.decode, decode_pool.decode_async, decode_pool.run_jobs
    in_pool_read = False

    def recording(output, jobs, *rest, **options):
        record.reads.append(list(jobs))
        return decode(output, jobs, *rest, **options)

    async def recording_async(output, jobs, *rest, **options):
        nonlocal in_pool_read
        record.reads.append(list(jobs))
        in_pool_read = True
        try:
            return await decode_async(output, jobs, *rest, **options)
        finally:
            in_pool_read = False

    def running_here(jobs, out, gain):
        if in_pool_read:
            record.here.extend(jobs)
        return run_jobs(jobs, out, gain)

    monkeypatch.setattr(decode_pool, "decode", recording)
    monkeypatch.setattr(decode_pool, "decode_async", recording_async)
    monkeypatch.setattr(decode_pool, "run_jobs", running_here)
    return record


@contextmanager
def pool_on(monkeypatch: pytest.MonkeyPatch, processes: int) -> Iterator[PoolRecord]:
    """The pool on with ``processes`` workers, the jobs of each read that uses it recorded."""
    record = record_pool(monkeypatch)
    with zarr.config.set({decode_pool.CONFIG_KEY: processes}):
        yield record


@dataclass(frozen=True)
class KillingJob(decode_pool.DecodeJob):
    """A job whose worker dies as it starts, as one killed by the OOM killer would."""

    def run(self, out, gain):
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True)
class SleepingJob(decode_pool.DecodeJob):
    """A job that takes its time in the worker, then writes nothing."""

    def run(self, out, gain):
        time.sleep(1.0)


def empty_job(kind, key):
    """A job of ``kind`` with no frames, for chunk ``key``."""
    return kind(b"", 2, True, b"", np.zeros(1, np.int64), 0, (), key, 0)


def two_tone_chunks(chunk: int, rate: int) -> tuple[zarr.Array, np.ndarray]:
    """A stereo int16 tone array of two chunks of ``chunk`` samples, and its full sequential decode."""
    z = tone_array((2 * chunk, 2), (chunk, 2), rate)
    return z, reference_decode(z)


POOL_READER = """
import os, signal, sys
from pathlib import Path
import numpy as np, zarr, zarr_aac
from zarr_aac.codec import decode_pool

if __name__ == "__main__":
    z = zarr.create_array(
        sys.argv[-1], shape=(200_000, 2), chunks=(100_000, 2), dtype="int16",
        serializer=zarr_aac.AACCodec(sample_rate=48000), compressors=None,
    )
    z[:] = (np.random.default_rng(0).standard_normal((200_000, 2)) * 3000).astype("int16")
    with zarr.config.set({decode_pool.CONFIG_KEY: 2}):
        zarr_aac.read_clips(z, [0, 100_000, 150_000], 40_000)
"""


def run_pool_reader(folder: Path, then: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run, in a fresh Python process, a script that makes a two-chunk array in ``folder``, reads
    clips of it through a pool of 2 workers and then runs ``then`` (its main block's next lines,
    unindented); ``args`` come before the array's path in its ``sys.argv``."""
    script = folder / "reader.py"
    script.write_text(POOL_READER + textwrap.indent(textwrap.dedent(then), " " * 4))
    return subprocess.run(
        [sys.executable, str(script), *args, str(folder / f"{'-'.join(args) or 'a'}.zarr")],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
