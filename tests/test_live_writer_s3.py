"""Live recording into an S3 archive (moto on loopback): readers through their own store read
exact samples while the writer appends, the finished recording is the one zarr stores from
the whole signal, and a resume is refused while the last writer's process still runs."""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest

pytest.importorskip("moto")
pytest.importorskip("s3fs")
import zarr
from live_workers import RATE, classify_read, source
from test_live_writer import stored_chunks, zarr_reference
from test_s3 import bucket, moto_endpoint, s3_store  # noqa: F401 -- its fixtures, used by name

import zarr_aac
from zarr_aac.archive.live_writer import LIVE_ATTR
from zarr_aac.errors import RecordingInUseError

OPTIONS = {"sample_rate": RATE, "channels": 2, "chunk_duration": 1.0, "bitrate": 48000}


def test_live_recording_into_s3_reads_exactly_meanwhile_and_resumes(moto_endpoint, bucket):  # noqa: F811
    block = RATE // 4
    pcm = source(40 * block)
    in_memory = zarr_aac.open_writer(zarr.open_group(zarr.storage.MemoryStore()), "rec", **OPTIONS)
    in_memory.append(pcm)
    expected = in_memory.close()[:]
    group = zarr.open_group(s3_store(moto_endpoint, "live.zarr"), mode="a")
    done = threading.Event()
    counts = {"encoded": 0, "pcm": 0}
    errors: list[BaseException] = []

    def reader() -> None:
        store = s3_store(moto_endpoint, "live.zarr/rec")
        while not done.is_set():
            try:
                array = zarr.open_array(store, mode="r")
                n = array.shape[0]
                start = max(0, n - array.chunks[0] - 500)
                counts[classify_read(array[start:n], start, n, array.chunks[0], pcm, expected)] += 1
            except BaseException as exc:  # handed to the test
                errors.append(exc)
                return

    writer = zarr_aac.open_writer(group, "rec", **OPTIONS)
    writer.append(pcm[:block])
    thread = threading.Thread(target=reader)
    thread.start()
    for start in range(block, 20 * block, block):
        writer.append(pcm[start : start + block])
    done.set()
    thread.join()
    assert not errors, errors[0]
    assert counts["pcm"] > 0, counts

    # the writer's process is gone as far as the recording can tell: its live mark names another
    # process of this host, which still runs, so a resume is refused until it ends
    writer._release()
    stand_in = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        live = dict(writer.array.attrs[LIVE_ATTR])
        writer.array.attrs.update({LIVE_ATTR: {**live, "writer": {**live["writer"], "pid": stand_in.pid}}})
        with pytest.raises(RecordingInUseError, match=f"process {stand_in.pid} of this host"):
            zarr_aac.open_writer(group, "rec", resume=True, **OPTIONS)
    finally:
        stand_in.kill()
        stand_in.wait()
    with zarr_aac.open_writer(group, "rec", resume=True, **OPTIONS) as resumed:
        assert resumed.n_samples == 20 * block
        for start in range(20 * block, pcm.shape[0], block):
            resumed.append(pcm[start : start + block])
    finished = zarr.open_array(s3_store(moto_endpoint, "live.zarr/rec"), mode="r")
    np.testing.assert_array_equal(finished[:], expected)
    assert stored_chunks(finished) == stored_chunks(zarr_reference(finished, pcm))
    assert zarr_aac.verify(finished, progress=False) == []
