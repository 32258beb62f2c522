"""Archive scale: one commit's cost with 10 and with 10,000 recordings already in the archive,
the catalogue of 10,000 recordings, live appends (benchmarks/append.py) and import throughput on
a dask cluster (benchmarks/cluster_import.py).

The 10,000 recordings are one real import of a 0.1 s file, then entries committed through the
protocol's own functions (``reserve_name`` and ``publish_recording``, the calls an import makes)
with that recording's attributes under other content digests, without writing their arrays:
the catalogue and the commit read and write only the bookkeeping, so this is the archive they
see. Peer in the same run: the commit of the design before (rewriting the catalogue, one JSON
document in the group's attributes) at the same sizes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import statistics
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
import zarr
from zarr.abc.store import ByteRequest, Store
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.storage import LocalStore, WrapperStore

from benchmarks import Context, append, cluster_import, timed
from zarr_aac import catalogue, import_file
from zarr_aac.archive import entries as bk
from zarr_aac.archive import recordings

SIZES = (10, 10_000)
QUICK_SIZES = (10, 1_000)
COMMITS = 30
"""Commits timed at each size (the median is reported)."""
CATALOGUE_TARGET_S = 3.0
BUILD_THREADS = 8


class CountingStore(WrapperStore[Store]):
    """Counts the store operations a commit makes, by kind."""

    def __init__(self, store: Store, counts: Counter | None = None) -> None:
        super().__init__(store)
        self.counts = counts if counts is not None else Counter()

    def _with_store(self, store: Store) -> CountingStore:
        return type(self)(store, self.counts)

    async def get(self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None) -> Buffer | None:
        self.counts["get"] += 1
        return await self._store.get(key, prototype, byte_range)

    async def exists(self, key: str) -> bool:
        self.counts["exists"] += 1
        return await self._store.exists(key)

    async def set(self, key: str, value: Buffer) -> None:
        self.counts["set"] += 1
        await self._store.set(key, value)

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        self.counts["set_if_not_exists"] += 1
        await self._store.set_if_not_exists(key, value)

    async def delete_dir(self, prefix: str) -> None:
        self.counts["delete"] += 1
        await self._store.delete_dir(prefix)

    def list_dir(self, prefix: str):  # type: ignore[no-untyped-def]
        self.counts["list"] += 1
        return self._store.list_dir(prefix)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _tiny_source(folder: Path, name: str, seed: int) -> Path:
    path = folder / f"{name}.wav"
    rng = np.random.default_rng(seed)
    sf.write(path, (rng.standard_normal(1600) * 3000).astype(np.int16), 16000, subtype="PCM_16")
    return path


def commit_entry(group: zarr.Group, name: str, digest: str, attributes: dict) -> None:
    """What an import does around its array: reserve the name, then commit the entry."""
    reservation = recordings.reserve_name(group, name, digest)
    recordings.publish_recording(group, reservation, {**attributes, "source": {"sha256": digest}})


def build_archive(root: Path, size: int, work: Path) -> tuple[zarr.Group, dict]:
    """An archive of ``size`` recordings: one imported, the others committed entries."""
    shutil.rmtree(root, ignore_errors=True)
    array = import_file(_tiny_source(work, "seed", 0), root, progress=False)
    attributes = dict(array.attrs)
    group = zarr.open_group(root, mode="r+")
    with ThreadPoolExecutor(BUILD_THREADS) as pool:
        list(
            pool.map(
                lambda i: commit_entry(group, f"rec{i:05d}", _digest(f"{root}-{i}"), attributes),
                range(1, size),
            )
        )
    return group, attributes


def time_commits(root: Path, attributes: dict, label: str) -> tuple[list[float], Counter]:
    """Seconds of each of COMMITS commits into the archive at ``root``, and the store operations
    of one, counted through a wrapper."""
    counts: Counter = Counter()
    group = zarr.open_group(store=CountingStore(LocalStore(root), counts), mode="r+")
    seconds = []
    for i in range(COMMITS):
        counts.clear()
        seconds.append(
            timed(lambda i=i: commit_entry(group, f"new_{label}_{i}", _digest(f"{label}-new-{i}"), attributes))
        )
    return seconds, Counter(counts)


def time_old_commit(work: Path, attributes: dict, size: int) -> float:
    """The design before: each commit rewrote the catalogue, one document of every entry, in the
    group's attributes (median of a few rewrites)."""
    zarr.open_group(work / f"old-{size}.zarr", mode="w")
    entries = {f"rec{i:05d}": {**attributes, "source": {"sha256": _digest(str(i))}} for i in range(size)}
    times = []
    for i in range(5):
        entries[f"extra{i}"] = attributes
        fresh = zarr.open_group(work / f"old-{size}.zarr", mode="r+")
        times.append(timed(lambda fresh=fresh: fresh.attrs.update({recordings.CATALOGUE_ATTR: entries})))
    return statistics.median(times)


def run(ctx: Context) -> dict:
    work = ctx.workdir / "archive"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    sizes = QUICK_SIZES if ctx.quick else SIZES
    rows, notes = [], []
    load_before = os.getloadavg()[0]
    archives = {}
    for size in sizes:
        root = work / f"archive-{size}.zarr"
        build_s = time.perf_counter()
        group, attributes = build_archive(root, size, work)
        build_s = time.perf_counter() - build_s
        archives[size] = (root, group, attributes)
        notes.append(f"built the {size}-recording archive in {build_s:.1f} s (one import, then committed entries)")
    for size, (root, _, attributes) in archives.items():
        seconds, counts = time_commits(root, attributes, str(size))
        rows.append(
            {
                "what": "one commit (reserve the name, write the entry)",
                "recordings in the archive": size,
                "median ms": round(statistics.median(seconds) * 1000, 2),
                "p90 ms": round(float(np.percentile(seconds, 90)) * 1000, 2),
                "store operations": ", ".join(f"{k} {v}" for k, v in sorted(counts.items())),
            }
        )
        rows.append(
            {
                "what": "peer: one commit before (rewrite the catalogue document)",
                "recordings in the archive": size,
                "median ms": round(time_old_commit(work, attributes, size) * 1000, 2),
                "p90 ms": None,
                "store operations": "get 1, set 1 (the whole document)",
            }
        )
    size = max(sizes)
    root, group, _ = archives[size]
    bk.run(group.store.delete_dir(bk.bookkeeping_key(group.path, bk.SNAPSHOT)))
    cold = timed(lambda: catalogue(root))
    recordings.refresh_snapshot(zarr.open_group(root, mode="r+"))
    warm = [timed(lambda: catalogue(root)) for _ in range(3)]
    entries = len(catalogue(root))
    rows.append(
        {
            "what": "catalogue(), no snapshot (one read per entry)",
            "recordings in the archive": entries,
            "median ms": round(cold * 1000, 1),
        }
    )
    rows.append(
        {
            "what": "catalogue(), with the snapshot",
            "recordings in the archive": entries,
            "median ms": round(statistics.median(warm) * 1000, 1),
        }
    )
    old_root = work / f"old-{size}.zarr"
    old = [timed(lambda: catalogue(old_root)) for _ in range(3)]
    rows.append(
        {
            "what": "peer: catalogue() of an archive of the design before (one document)",
            "recordings in the archive": len(catalogue(old_root)),
            "median ms": round(statistics.median(old) * 1000, 1),
        }
    )
    if statistics.median(warm) > CATALOGUE_TARGET_S:
        notes.append(f"catalogue() with the snapshot exceeds the {CATALOGUE_TARGET_S} s target")
    cluster_rows = cluster_import.measure(ctx)
    notes.append(f"load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after (1 min)")
    result: dict = {"title": "Archive scale: commits and the catalogue", "rows": rows, "notes": notes}
    result["tables"] = [
        {"title": "Live recording: appends of 0.5 s blocks", "rows": append.measure(ctx)},
        {"title": "Import on a dask cluster", "rows": cluster_rows},
    ]
    return result
