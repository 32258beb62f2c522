"""Import on a dask.distributed cluster into an S3 archive (moto on loopback).

The scheduler and two workers are separate processes started from the command line
(support.dask_cluster), so they find zarr_aac only as installed. Every recording the cluster
stores is compared with a local import of the same file: decoded samples, codec configuration
and every chunk's bytes.
"""

from __future__ import annotations

import _thread
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")
pytest.importorskip("moto")
s3fs = pytest.importorskip("s3fs")
import fsspec  # noqa: E402
import soundfile as sf  # noqa: E402
import zarr  # noqa: E402
from support.dask_cluster import STARTUP_SECONDS, ProcessCluster  # noqa: E402
from support.s3 import moto_server, s3_environment, s3_options  # noqa: E402
from support.signals import tone_with_noise  # noqa: E402
from zarr.storage import MemoryStore  # noqa: E402

import zarr_aac  # noqa: E402
from zarr_aac.errors import ArchiveError, ImportFailedError, SourceError  # noqa: E402

BUCKET = "cluster-imports"
N_FILES = 40
CHUNK_DURATION = 0.5
RUN_SECONDS = 180
POLL_SECONDS = 0.2


def _write_source(path: Path, index: int) -> Path:
    """1.5 to 2 s of tone in noise, mono or stereo, at 16 or 22.05 kHz, as WAV or FLAC."""
    rate = (16000, 22050)[index % 2]
    channels = 1 + (index % 3 == 0)
    seconds = 1.5 + 0.25 * (index % 3)
    pcm = tone_with_noise(round(seconds * rate), channels, rate, seed=100 + index)
    sf.write(path, (pcm * 30000).astype(np.int16), rate, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def endpoint():
    with moto_server() as url:
        s3fs.S3FileSystem(**s3_options(url)).mkdir(BUCKET)
        yield url


@pytest.fixture(scope="module")
def local_sources(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("sources")
    return [_write_source(folder / f"site{i:02d}.{'flac' if i % 2 else 'wav'}", i) for i in range(N_FILES)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, local_sources) -> zarr.Group:
    """Each source imported locally, in this process: what the cluster must store bit for bit."""
    archive = tmp_path_factory.mktemp("reference") / "local.zarr"
    zarr_aac.import_files(local_sources, archive, workers=2, chunk_duration=CHUNK_DURATION, progress=False)
    return zarr.open_group(archive, mode="r")


@pytest.fixture(scope="module")
def remote_sources(endpoint, local_sources) -> list:
    """The odd-numbered sources uploaded to S3, as fsspec OpenFiles carrying their options."""
    fs = s3fs.S3FileSystem(**s3_options(endpoint))
    opened = {}
    for i, path in enumerate(local_sources):
        if i % 2:
            fs.put_file(str(path), f"{BUCKET}/raw/{path.name}")
            opened[i] = fsspec.open(f"s3://{BUCKET}/raw/{path.name}", "rb", **s3_options(endpoint))
    return [opened.get(i, path) for i, path in enumerate(local_sources)]


@pytest.fixture(scope="module")
def running_cluster(tmp_path_factory, endpoint):
    """A scheduler and two single-threaded workers; workers read ``s3://`` URLs given without
    options through fsspec's environment configuration."""
    cluster = ProcessCluster(tmp_path_factory.mktemp("cluster"), env=s3_environment(endpoint))
    try:
        cluster.start_scheduler()
        cluster.add_worker()
        cluster.add_worker()
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def client(running_cluster):
    """A client of the cluster with two live workers (a test that killed one gets a new one)."""
    while len(running_cluster.live_workers()) < 2:
        running_cluster.add_worker()
    with distributed.Client(running_cluster.address, timeout=STARTUP_SECONDS) as client:
        client.wait_for_workers(2, timeout=STARTUP_SECONDS)
        yield client


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _chunk_bytes(array: zarr.Array) -> dict[str, bytes]:
    """Every stored chunk of ``array`` by its key relative to the array."""

    async def read() -> dict[str, bytes]:
        store, prefix = array.store, f"{array.path}/c/"
        prototype = zarr.core.buffer.default_buffer_prototype()
        return {
            key[len(prefix) :]: (await store.get(key, prototype)).to_bytes() async for key in store.list_prefix(prefix)
        }

    return zarr.core.sync.sync(read())


class Reference:
    """The local import of each source, found by content hash."""

    def __init__(self, group: zarr.Group, sources: list[Path]) -> None:
        self.group = group
        self.by_hash = {_sha256(p): p.stem for p in sources}
        self.samples = {name: group[name][:] for name in self.by_hash.values()}

    def check(self, array: zarr.Array, entry: dict) -> None:
        """``array`` is bit-identical to the local import of the source its catalogue entry names."""
        name = self.by_hash[entry["source"]["sha256"]]
        expected = self.group[name]
        np.testing.assert_array_equal(array[:], self.samples[name])
        assert array.metadata.codecs == expected.metadata.codecs
        assert (array.shape, array.chunks, array.dtype) == (expected.shape, expected.chunks, expected.dtype)
        assert _chunk_bytes(array) == _chunk_bytes(expected)


def _catalogue_entries(archive: str | Path, options: dict | None = None) -> dict[str, dict]:
    """The catalogue through the public API, each row as the nested entry ``zarr-aac ls --json`` prints."""
    try:
        group = zarr.open_group(archive, mode="r", storage_options=options)
    except (zarr.errors.GroupNotFoundError, FileNotFoundError):  # not created yet
        return {}
    table = zarr_aac.catalogue(group)
    return {name: {"source": {"sha256": row["source.sha256"]}} for name, row in table.iterrows()}


class Watcher:
    """Polls the catalogue while an import runs and checks every recording as soon as it is listed:
    a listed recording must read whole and bit-identical, whatever the importers are doing."""

    def __init__(self, archive: str, options: dict, reference: Reference) -> None:
        self.archive, self.options, self.reference = archive, options, reference
        self.checked: set[str] = set()
        self.polls = 0

    def poll(self) -> int:
        entries = _catalogue_entries(self.archive, self.options)
        self.polls += 1
        if not entries:  # the archive may not even exist yet
            return 0
        group = zarr.open_group(self.archive, mode="r", storage_options=self.options)
        for name in sorted(set(entries) - self.checked):
            self.reference.check(zarr_aac.open_recording(group[name]), entries[name])
            self.checked.add(name)
        return len(entries)


def _in_thread(fn, *args, **kwargs) -> tuple[threading.Thread, dict]:
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = fn(*args, **kwargs)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def test_a_killed_worker_loses_nothing_and_a_rerun_adds_nothing(
    client, running_cluster, endpoint, remote_sources, local_sources, reference
):
    """40 files, half local paths and half S3 objects, into an S3 archive on two workers; one
    worker is SIGKILLed mid-run. Its file is imported again on the other worker; then a rerun
    imports nothing. The catalogue holds exactly one entry per file, each bit-identical to a
    local import, and at no poll during the runs does it list a recording that is not whole."""
    options = s3_options(endpoint)
    archive = f"s3://{BUCKET}/killed.zarr"
    watcher = Watcher(archive, options, Reference(reference, local_sources))

    def start_import():
        return _in_thread(
            zarr_aac.import_files,
            remote_sources,
            archive,
            client=client,
            storage_options=options,
            chunk_duration=CHUNK_DURATION,
            progress=False,
        )

    thread, outcome = start_import()
    victim = running_cluster.live_workers()[0]
    deadline = time.monotonic() + RUN_SECONDS
    while thread.is_alive() and time.monotonic() < deadline:
        if watcher.poll() >= 6 and victim.poll() is None:
            victim.send_signal(signal.SIGKILL)
            victim.wait()
        time.sleep(POLL_SECONDS)
    thread.join(timeout=max(0.0, deadline - time.monotonic()))
    assert not thread.is_alive(), f"the import did not finish within {RUN_SECONDS} s"
    assert "error" not in outcome, outcome.get("error")
    assert victim.returncode == -signal.SIGKILL, "the worker was killed mid-run, not after it"
    first = outcome["result"]
    entries = _catalogue_entries(archive, options)
    assert len(entries) == N_FILES
    assert sorted(a.basename for a in first) == sorted(entries)
    assert {e["source"]["sha256"] for e in entries.values()} == {_sha256(p) for p in local_sources}

    thread, outcome = start_import()
    while thread.is_alive():
        watcher.poll()
        time.sleep(POLL_SECONDS)
    assert "error" not in outcome, outcome.get("error")
    assert [a.basename for a in outcome["result"]] == [a.basename for a in first]
    assert _catalogue_entries(archive, options) == entries
    watcher.poll()
    assert watcher.checked == set(entries)
    assert watcher.polls > 10


def test_a_killed_worker_redoes_only_its_own_files(client, running_cluster, local_sources, reference, tmp_path):
    """Into a local archive (whose commit is safe today), a worker SIGKILLed mid-run: the
    scheduler sends the files it held to the other worker and nothing else is imported twice
    (each finished task is released, so files whose outcome lived on the dead worker are not
    redone); every file ends in the catalogue once, bit-identical to a local import."""

    def processing_counts(dask_scheduler) -> dict[str, int]:
        """How often each import task was sent to a worker, from the scheduler's transition log
        (a local function, shipped by value: the scheduler cannot import this test module)."""
        sent = Counter(str(t.key) for t in dask_scheduler.transition_log if t.finish == "processing")
        return {key: n for key, n in sent.items() if "_import_on_worker" in key}

    sources = local_sources[:16]
    archive = tmp_path / "killed.zarr"
    before = client.run_on_scheduler(processing_counts)
    thread, outcome = _in_thread(
        zarr_aac.import_files, sources, archive, client=client, chunk_duration=CHUNK_DURATION, progress=False
    )
    victim = running_cluster.live_workers()[0]
    deadline = time.monotonic() + RUN_SECONDS
    while thread.is_alive() and time.monotonic() < deadline:
        if len(_catalogue_entries(archive)) >= 8 and victim.poll() is None:
            victim.send_signal(signal.SIGKILL)
            victim.wait()
        time.sleep(POLL_SECONDS)
    thread.join(timeout=max(0.0, deadline - time.monotonic()))
    assert not thread.is_alive(), f"the import did not finish within {RUN_SECONDS} s"
    assert "error" not in outcome, outcome.get("error")
    assert victim.returncode == -signal.SIGKILL, "the worker was killed mid-run, not after it"
    counts = {k: n for k, n in client.run_on_scheduler(processing_counts).items() if k not in before}
    assert len(counts) == len(sources)
    # redone: the dead worker's running task, the one queued behind it, and at most one it had
    # just finished whose release was under way; without the release, every file it had imported
    assert sum(n > 1 for n in counts.values()) <= 3, counts
    entries = _catalogue_entries(archive)
    assert sorted(entries) == sorted(p.stem for p in sources)
    assert [a.basename for a in outcome["result"]] == [p.stem for p in sources]
    check = Reference(reference, sources)
    group = zarr.open_group(archive, mode="r")
    for name, entry in entries.items():
        check.check(group[name], entry)


def test_a_failing_file_fails_alone_as_in_a_local_import(client, local_sources, tmp_path, reference):
    """A missing file and one that is not audio are reported by name in ImportFailedError, as
    the local process pool reports them; the others are imported (into a local archive, which
    the workers on this machine share)."""
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("not a recording")
    missing = tmp_path / "gone.flac"
    sources = [local_sources[0], missing, not_audio, local_sources[3]]
    archive = tmp_path / "cluster.zarr"
    with pytest.raises(ImportFailedError) as failed:
        zarr_aac.import_files(sources, archive, client=client, chunk_duration=CHUNK_DURATION, progress=False)
    assert set(failed.value.failures) == {str(missing), str(not_audio)}
    assert all(isinstance(e, SourceError) for e in failed.value.failures.values())
    assert "no such file" in str(failed.value.failures[str(missing)])
    assert "FFmpeg cannot read it" in str(failed.value.failures[str(not_audio)])
    with pytest.raises(ImportFailedError) as local:
        zarr_aac.import_files(sources, tmp_path / "local.zarr", workers=2, progress=False)
    assert {k: type(e) for k, e in local.value.failures.items()} == {
        k: type(e) for k, e in failed.value.failures.items()
    }
    entries = _catalogue_entries(archive)
    assert sorted(entries) == [local_sources[0].stem, local_sources[3].stem]
    group = zarr.open_group(archive, mode="r")
    check = Reference(reference, [local_sources[0], local_sources[3]])
    for name, entry in entries.items():
        check.check(group[name], entry)


def test_ctrl_c_cancels_the_files_not_started(client, endpoint, local_sources):
    """Ctrl-C (KeyboardInterrupt) in the client cancels the tasks: the scheduler drops them and
    no further file is imported; the files under way finish whole."""
    options = s3_options(endpoint)
    archive = f"s3://{BUCKET}/interrupted.zarr"
    guard = threading.Lock()
    state = {"importing": True, "interrupted_at": None}

    def interrupt_after_two() -> None:
        while True:
            count = len(_catalogue_entries(archive, options))
            with guard:
                if not state["importing"]:
                    return
                if count >= 2:
                    state["interrupted_at"] = count
                    _thread.interrupt_main()
                    return
            time.sleep(0.05)

    watcher = threading.Thread(target=interrupt_after_two, daemon=True)
    with pytest.raises(KeyboardInterrupt):
        watcher.start()
        try:
            zarr_aac.import_files(
                local_sources,
                archive,
                client=client,
                storage_options=options,
                chunk_duration=CHUNK_DURATION,
                progress=False,
            )
        finally:
            with guard:
                state["importing"] = False
    watcher.join()
    assert state["interrupted_at"] is not None

    def tasks_on_scheduler(dask_scheduler) -> int:
        return sum(1 for key in dask_scheduler.tasks if "_import_on_worker" in str(key))

    deadline = time.monotonic() + 20
    while client.run_on_scheduler(tasks_on_scheduler) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert client.run_on_scheduler(tasks_on_scheduler) == 0
    # the (at most two) files under way finish; nothing starts after them
    counts = []
    for _ in range(30):
        counts.append(len(_catalogue_entries(archive, options)))
        if len(counts) > 10 and counts[-1] == counts[-10]:
            break
        time.sleep(0.2)
    assert counts[-1] <= state["interrupted_at"] + 4 < N_FILES


def _cli_import(address: str, sources: list[str], archive: str, endpoint: str, *extra: str):
    """``zarr-aac import --scheduler`` in a process of its own, with fsspec configured for moto."""
    command = [
        sys.executable,
        "-m",
        "zarr_aac.cli",
        "import",
        "-q",
        "--chunk-duration",
        str(CHUNK_DURATION),
        "--scheduler",
        address,
        *extra,
        *sources,
        archive,
    ]
    env = {**os.environ, **s3_environment(endpoint)}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=RUN_SECONDS, check=False)


def test_cli_imports_on_the_cluster(
    running_cluster, client, endpoint, local_sources, remote_sources, reference, tmp_path
):
    """``zarr-aac import --scheduler``: a local path and an s3:// URL, which the workers read
    through fsspec's environment configuration, into an archive; a second run says each is
    already imported and adds nothing."""
    archive = tmp_path / "cli.zarr"
    sources = [str(local_sources[2]), f"s3://{BUCKET}/raw/{local_sources[1].name}"]
    run = _cli_import(running_cluster.address, sources, str(archive), endpoint)
    assert run.returncode == 0, run.stderr
    stems = [local_sources[2].stem, local_sources[1].stem]
    assert run.stdout.splitlines() == [
        f"{source} -> file://{archive}/{stem}" for source, stem in zip(sources, stems, strict=True)
    ]
    entries = _catalogue_entries(archive)
    assert sorted(entries) == sorted(stems)
    check = Reference(reference, [local_sources[1], local_sources[2]])
    group = zarr.open_group(archive, mode="r")
    for name, entry in entries.items():
        check.check(group[name], entry)
    again = _cli_import(running_cluster.address, sources, str(archive), endpoint)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == [
        f"{source} = file://{archive}/{stem} (already imported, not imported again)"
        for source, stem in zip(sources, stems, strict=True)
    ]
    assert _catalogue_entries(archive) == entries


def test_cli_imports_into_s3_with_storage_options(running_cluster, client, endpoint, local_sources, reference):
    """``--storage-options`` reach the workers: an S3 object into an S3 archive on the cluster."""
    options = s3_options(endpoint)
    archive = f"s3://{BUCKET}/cli.zarr"
    source = f"s3://{BUCKET}/raw/{local_sources[5].name}"
    run = _cli_import(running_cluster.address, [source], archive, endpoint, "--storage-options", json.dumps(options))
    assert run.returncode == 0, run.stderr
    entries = _catalogue_entries(archive, options)
    assert list(entries) == [local_sources[5].stem]
    group = zarr.open_group(archive, mode="r", storage_options=options)
    Reference(reference, [local_sources[5]]).check(group[local_sources[5].stem], entries[local_sources[5].stem])
    assert run.stdout.splitlines() == [f"{source} -> s3://{BUCKET}/cli.zarr/{local_sources[5].stem}"]


def test_cli_reports_an_unreachable_scheduler(tmp_path, local_sources):
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "zarr_aac.cli",
            "import",
            "-q",
            "--scheduler",
            "tcp://127.0.0.1:9",
            str(local_sources[0]),
            str(tmp_path / "a.zarr"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "2s"},
        timeout=60,
        check=False,
    )
    assert run.returncode == 1
    assert "zarr-aac import:" in run.stderr and "127.0.0.1:9" in run.stderr


def test_a_source_on_s3_imports_as_the_local_file(endpoint, remote_sources, local_sources, reference, tmp_path):
    """import_file reads an S3 object through fsspec (a URL or an OpenFile) into the same
    recording a local import of the file gives."""
    archive = zarr.open_group(tmp_path / "from_s3.zarr", mode="a")
    array = zarr_aac.import_file(remote_sources[1], archive, chunk_duration=CHUNK_DURATION, progress=False)
    entry = zarr_aac.catalogue(archive).loc[array.basename]
    assert entry["source.path"] == f"s3://{BUCKET}/raw/{local_sources[1].name}"
    assert entry["source.size"] == local_sources[1].stat().st_size
    Reference(reference, [local_sources[1]]).check(array, {"source": {"sha256": entry["source.sha256"]}})
    with pytest.raises(SourceError, match=r"cannot import s3://.*/raw/absent\.wav: no such file"):
        zarr_aac.import_file(
            fsspec.open(f"s3://{BUCKET}/raw/absent.wav", "rb", **s3_options(endpoint)), archive, progress=False
        )


def test_archives_the_workers_cannot_reach_are_refused(client, local_sources):
    with pytest.raises(ArchiveError, match="MemoryStore"):
        zarr_aac.import_files(local_sources[:1], zarr.open_group(MemoryStore(), mode="a"), client=client)
    with pytest.raises(TypeError, match="workers="):
        zarr_aac.import_files(local_sources[:1], "x.zarr", client=client, workers=2)
    with pytest.raises(TypeError, match="storage_options"):
        zarr_aac.import_files(local_sources[:1], "x.zarr", client=client, storage_options={"anon": True})
