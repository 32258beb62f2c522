"""A real dask.distributed run: a scheduler and two workers as separate processes
(support.dask_cluster), which find zarr_aac (its codec entry point and its xarray backend) only
as installed."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr
from support.dask_cluster import cluster
from support.signals import tone_with_noise

import zarr_aac
from zarr_aac import AACCodec

RATE = 8000
MINUTES = 4
MINUTE = 60 * RATE
START = "2026-06-10T05:00:00Z"


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    """Four minutes of 8 kHz mono in 30 s chunks, louder every half minute."""
    path = tmp_path_factory.mktemp("dist") / "long.zarr"
    pcm = tone_with_noise(MINUTES * MINUTE, 1, RATE, seed=5)[:, 0]
    pcm *= np.repeat(np.linspace(0.2, 1.0, 2 * MINUTES), MINUTE // 2)
    array = zarr.create_array(
        str(path),
        shape=pcm.shape,
        chunks=(MINUTE // 2,),
        dtype="int16",
        serializer=AACCodec(sample_rate=RATE),
        compressors=None,
        attributes={"sample_rate": RATE, "start_time": START},
    )
    array[:] = (pcm * 32767).astype(np.int16)
    return path


def local_minute_rms(path: Path) -> np.ndarray:
    pcm = zarr.open_array(str(path), mode="r")[:].astype(np.float64)
    return np.sqrt((pcm.reshape(MINUTES, MINUTE) ** 2).mean(axis=1))


def test_per_minute_rms_on_two_worker_processes(archive, tmp_path):
    def minute_rms(path: str, minute: int) -> float:
        """Runs on a worker (shipped by value, being local): opens the archive by path, selects a minute."""
        start = pd.Timestamp(START) + pd.Timedelta(minutes=minute)
        audio = zarr_aac.open_dataset(path).audio.sel(time=slice(start, start + pd.Timedelta(minutes=1)))
        return float(np.sqrt(np.mean(audio.values.astype(np.float64) ** 2)))

    expected = local_minute_rms(archive)
    ds = zarr_aac.open_dataset(archive, chunks={})
    power = (ds.audio.astype(np.float64) ** 2).drop_vars("time")
    rms_lazy = np.sqrt(power.coarsen(time=MINUTE).mean())
    with cluster(tmp_path, 2) as (client, workers):
        pids = client.run(os.getpid)
        assert sorted(pids.values()) == sorted(proc.pid for proc in workers)
        assert os.getpid() not in pids.values()
        where = set(client.run(lambda: __import__("zarr_aac").__file__).values())
        assert all(Path(p).parent.name == "zarr_aac" for p in where)
        rms = rms_lazy.compute()
        by_path = client.gather(client.map(minute_rms, [str(archive)] * MINUTES, range(MINUTES)))
    np.testing.assert_allclose(rms.values, expected, rtol=1e-12)
    np.testing.assert_allclose(by_path, expected, rtol=1e-12)
    assert np.all(np.diff(expected) > 0)
