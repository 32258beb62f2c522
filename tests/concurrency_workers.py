"""Worker functions for tests/test_concurrency.py.

They live in a top-level module of the tests folder (on ``pythonpath``) so that processes
started with the ``spawn`` method can import them whatever pytest's import mode.
"""

from __future__ import annotations

import time

import numpy as np
import zarr
from support.signals import tone_with_noise
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from zarr_aac import AACCodec, import_file

CHUNK = 8192
RATE = 48000
FIRST_CHUNKS = 3
APPENDED_CHUNKS = 6
READERS = 2


def signal(chunks: int) -> np.ndarray:
    return (tone_with_noise(chunks * CHUNK, 2, RATE, seed=11) * 30000).astype(np.int16)


def append_whole_chunks(array: zarr.Array, pcm: np.ndarray) -> None:
    """Append ``pcm`` (whole chunks) to ``array``: chunk bytes first, then the new shape."""
    n = array.shape[0]
    assert n % CHUNK == 0 and pcm.shape[0] % CHUNK == 0
    codec: AACCodec = array.serializer
    store, prefix = array.store_path.store, array.store_path.path
    for start in range(0, pcm.shape[0], CHUNK):
        key = f"{prefix}/{array.metadata.encode_chunk_key(((n + start) // CHUNK, 0))}"
        data = codec.encode_pcm(pcm[start : start + CHUNK])
        sync(store.set(key, default_buffer_prototype().buffer.from_bytes(data)))
        array.resize((n + start + CHUNK, pcm.shape[1]))


def appender(path: str, go, pause: float) -> None:
    go.wait()
    array = zarr.open_array(path, mode="r+")
    tail = signal(FIRST_CHUNKS + APPENDED_CHUNKS)[FIRST_CHUNKS * CHUNK :]
    for start in range(0, tail.shape[0], CHUNK):
        append_whole_chunks(array, tail[start : start + CHUNK])
        time.sleep(pause)


def reader(path: str, seed: int, go, done, results) -> None:
    """Reopen the array again and again, read random ranges of the length it then has."""
    rng = np.random.default_rng(seed)
    reads = []
    go.wait()
    while not done.is_set() or len(reads) < 20:
        array = zarr.open_array(path, mode="r")
        n = array.shape[0]
        start = int(rng.integers(0, n - 1))
        stop = min(n, start + int(rng.integers(1, 3 * CHUNK)))
        reads.append((n, start, stop, array[start:stop]))
    results.put(reads)


def import_each(paths: list[str], root: str) -> None:
    for path in paths:
        import_file(path, root, chunk_duration=0.25, progress=False)


def open_target(root: str, endpoint: str | None) -> zarr.Group | str:
    """The archive at ``root``: a local path, or with ``endpoint`` a key prefix in the test
    bucket of the S3 server there (tests/test_s3.py)."""
    if endpoint is None:
        return root
    from zarr.storage import FsspecStore

    store = FsspecStore.from_url(
        f"s3://field-recordings/{root}",
        storage_options={
            "key": "testing",
            "secret": "testing",
            "client_kwargs": {"endpoint_url": endpoint, "region_name": "eu-west-1"},
            "skip_instance_cache": True,
            "asynchronous": True,
        },
    )
    try:
        return zarr.open_group(store, mode="a")
    except zarr.errors.ContainsGroupError:
        # zarr looks, then creates: another worker created the archive in between
        return zarr.open_group(store, mode="r+")


def import_together(paths: list[str], root: str, endpoint: str | None, go, results) -> None:
    """Wait for ``go``, then import ``paths`` one at a time; put (path, name) pairs on ``results``."""
    go.wait()
    target = open_target(root, endpoint)
    names = [(path, import_file(path, target, chunk_duration=0.25, progress=False).basename) for path in paths]
    results.put(names)
