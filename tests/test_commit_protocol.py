"""The archive commit protocol (docs/spec.md, "Archive commit protocol"): a recording written
in place is visible only once its catalogue entry is written; names and content stay unique
when importers race; a crash at any write leaves nothing visible, and gc removes what it left.

The concurrency tests against an S3 server are in tests/test_s3.py.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import queue
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import zarr
from concurrency_workers import import_together
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from support.archives import CrashingStore, CrashPoint, SimulatedCrash, assert_nothing_left, bookkeeping, nodes
from support.signals import tone_with_noise
from zarr.core.sync import sync
from zarr.storage import LocalStore, MemoryStore

import zarr_aac
from zarr_aac.archive import entries as bk
from zarr_aac.archive import importer, recordings
from zarr_aac.archive.garbage import gc
from zarr_aac.cli import main
from zarr_aac.errors import ArchiveError, RecordingNotCommittedError

RATE = 16000


def write_source(path: Path, seconds: float = 0.5, seed: int = 0) -> Path:
    pcm = (tone_with_noise(int(seconds * RATE), 1, RATE, seed=seed) * 30000).astype(np.int16)
    sf.write(path, pcm, RATE, subtype="PCM_16")
    return path


def stored_recording(group: zarr.Group, name: str) -> tuple[dict, dict[str, bytes], np.ndarray]:
    """A recording as stored: its catalogue entry, its chunks' bytes, its samples."""
    array = recordings.recording_array(group, name)
    prefix = recordings.child_path(group, name)

    async def chunks() -> dict[str, bytes]:
        keys = [key async for key in group.store.list_prefix(f"{prefix}/c")]
        proto = zarr.core.buffer.default_buffer_prototype()
        return {key[len(prefix) :]: (await group.store.get(key, proto)).to_bytes() for key in keys}

    return recordings.catalogue_entries(group)[name], sync(chunks()), array[:]


def assert_same_recording(a: tuple[dict, dict[str, bytes], np.ndarray], b: tuple[dict, dict[str, bytes], np.ndarray]):
    assert a[0] == b[0]
    assert a[1] == b[1]
    np.testing.assert_array_equal(a[2], b[2])


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return write_source(tmp_path_factory.mktemp("src") / "dawn.wav")


@pytest.fixture(scope="module")
def reference(source, tmp_path_factory):
    """``source`` imported alone into a fresh archive."""
    group = zarr.open_group(tmp_path_factory.mktemp("ref") / "a.zarr")
    zarr_aac.import_file(source, group, chunk_duration=0.25, progress=False)
    return stored_recording(group, "dawn")


def write_uncommitted(group: zarr.Group, source: Path) -> recordings.Reservation:
    """Reserve a name and write the whole recording under it, without committing it."""
    digest = importer.file_sha256(source)
    reservation = recordings.reserve_name(group, "dawn", digest)
    options = importer.ImportOptions(chunk_duration=0.25, progress=False)
    attrs = importer._write_source(source, group, reservation.name, digest, options, owner=reservation.owner)
    return reservation, attrs


def test_no_reader_sees_a_recording_before_its_commit(tmp_path, source, reference, capsys):
    root = tmp_path / "a.zarr"
    group = zarr.open_group(root)
    reservation, attrs = write_uncommitted(group, source)
    assert "dawn" in zarr.open_group(root, mode="r")  # the array is there, complete, under its name
    assert recordings.catalogue_entries(group) == {}
    assert zarr_aac.catalogue(root).empty
    with pytest.raises(RecordingNotCommittedError, match="not committed"):
        zarr_aac.open_recording(root / "dawn")
    with pytest.raises(ArchiveError, match="no recordings"):
        zarr_aac.open_recording(root)
    assert zarr_aac.verify(root, progress=False) == []
    with pytest.raises(RecordingNotCommittedError):
        zarr_aac.verify(root / "dawn", progress=False)
    with pytest.raises(ArchiveError, match="holds no zarr_aac recordings"):
        zarr_aac.open_dataset(root)
    with pytest.raises(RecordingNotCommittedError):
        zarr_aac.open_dataset(root, group="dawn")
    with pytest.raises(RecordingNotCommittedError):
        zarr_aac.open_dataset(root, variable="dawn")
    with pytest.raises(RecordingNotCommittedError):
        zarr_aac.set_recording_attributes(root / "dawn", metadata={"site": "A"})
    assert main(["ls", str(root)]) == 0
    out, err = capsys.readouterr()
    assert "dawn" not in out and "1 unfinished import(s)" in err and "0 recording(s)" in err

    assert recordings.publish_recording(group, reservation, attrs) == "dawn"
    assert_same_recording(stored_recording(group, "dawn"), reference)
    assert zarr_aac.open_recording(root / "dawn").shape == reference[2].shape
    assert list(zarr_aac.open_dataset(root).data_vars) == ["dawn"]
    assert zarr_aac.verify(root / "dawn", progress=False) == []
    assert bookkeeping(group, bk.PENDING) == []


def test_the_commit_is_one_conditional_write_and_the_second_of_one_content_loses(tmp_path, source, reference):
    """Two imports of one content that both wrote their recording: the first commit wins, the
    second's array and reservation are deleted and it gets the first one's name."""
    group = zarr.open_group(tmp_path / "a.zarr")
    first, first_attrs = write_uncommitted(group, source)
    second, second_attrs = write_uncommitted(group, source)
    assert (first.name, second.name) == ("dawn", "dawn_2")
    assert recordings.publish_recording(group, second, second_attrs) == "dawn_2"
    assert recordings.publish_recording(group, first, first_attrs) == "dawn_2"
    assert nodes(group) == ["dawn_2"]
    assert bookkeeping(group, bk.NAMES) == ["dawn_2"] and bookkeeping(group, bk.PENDING) == []
    entries = recordings.catalogue_entries(group)
    assert list(entries) == ["dawn_2"] and entries["dawn_2"] == reference[0]


@pytest.mark.parametrize("kind", ["memory", "local"])
def test_a_crash_at_any_write_leaves_nothing_visible_and_gc_cleans_it(tmp_path, source, reference, kind):
    """Kill the import at its 1st, 2nd, ... store write until it completes: after each crash
    readers see either nothing or the whole committed recording, gc leaves nothing but it, and
    an import afterwards gives the recording a lone import gives."""
    outcomes = []
    crash_at = 1
    while True:
        inner = MemoryStore() if kind == "memory" else LocalStore(tmp_path / f"crash{crash_at}.zarr")
        zarr.open_group(store=inner, mode="w")
        crashing = CrashingStore(inner, CrashPoint(crash_at))
        with contextlib.suppress(SimulatedCrash):
            zarr_aac.import_file(
                source, zarr.open_group(store=crashing, mode="r+"), chunk_duration=0.25, progress=False
            )
        group = zarr.open_group(store=inner, mode="r+")
        committed = list(recordings.catalogue_entries(group))
        if committed:
            assert committed == ["dawn"]
            assert_same_recording(stored_recording(group, "dawn"), reference)
            assert list(recordings.recording_arrays(group)) == ["dawn"]
        else:
            assert recordings.recording_arrays(group) == {}
            assert recordings.recording_names(group) == []
        outcomes.append(("committed" if committed else "nothing", crashing.crashed))
        gc(group, grace_period=timedelta(0))
        assert nodes(group) == committed
        assert bookkeeping(group, bk.NAMES) == committed and bookkeeping(group, bk.PENDING) == []
        if not committed:
            assert_nothing_left(group)
        zarr_aac.import_file(source, group, chunk_duration=0.25, progress=False)
        assert_same_recording(stored_recording(group, "dawn"), reference)
        assert nodes(group) == ["dawn"]
        if not crashing.crashed:
            break
        crash_at += 1
    assert ("nothing", True) in outcomes, "no crash left an uncommitted import to test"
    assert ("committed", True) in outcomes, "no crash came after the commit"
    assert outcomes[-1] == ("committed", False)
    assert crash_at > 5


def _dead_pid() -> int:
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    return int(finished.stdout)


def _plant_crashed_import(group: zarr.Group, source: Path, owner: dict) -> str:
    """What an import killed after writing its recording leaves: reservation, pending mark, array."""
    reservation, _ = write_uncommitted(group, source)
    dead = recordings.Reservation(
        reservation.name, reservation.digest, reservation.token, owner, reservation.reserved_at
    )
    for key in (recordings._pending_key(group, dead.token), recordings._name_key(group, dead.name)):
        sync(bk.write_document(group.store, key, dead.as_document()))
    return dead.name


def test_gc_removes_only_what_is_provably_dead(tmp_path, source, reference, capsys):
    root = tmp_path / "a.zarr"
    group = zarr.open_group(root)
    zarr_aac.import_file(write_source(tmp_path / "kept.wav", seed=3), group, chunk_duration=0.25, progress=False)
    here = socket.gethostname()
    dead = _plant_crashed_import(group, source, {"host": here, "pid": _dead_pid()})
    alive = _plant_crashed_import(group, source, {"host": here, "pid": os.getpid()})
    elsewhere = _plant_crashed_import(group, source, {"host": "elsewhere.invalid", "pid": 1})
    assert (dead, alive, elsewhere) == ("dawn", "dawn_2", "dawn_3")

    dry = zarr_aac.gc(root, dry_run=True)
    assert [(g.name, g.kind) for g in dry.removed] == [("dawn", "uncommitted import")]
    assert "died" in dry.removed[0].reason
    assert sorted(g.name for g in dry.kept) == ["dawn_2", "dawn_3"]
    assert nodes(group) == ["dawn", "dawn_2", "dawn_3", "kept"]

    assert main(["gc", str(root)]) == 0
    out, _ = capsys.readouterr()
    assert "removed uncommitted import dawn: its process died" in out
    assert nodes(group) == ["dawn_2", "dawn_3", "kept"]
    assert bookkeeping(group, bk.NAMES) == ["dawn_2", "dawn_3", "kept"]

    report = zarr_aac.gc(root, grace_period=timedelta(0))
    assert sorted(g.name for g in report.removed) == ["dawn_2", "dawn_3"]
    assert nodes(group) == ["kept"] and bookkeeping(group, bk.PENDING) == []
    assert list(recordings.catalogue_entries(group)) == ["kept"]
    with pytest.raises(ValueError, match="negative"):
        zarr_aac.gc(root, grace_period=timedelta(hours=-1))
    with pytest.raises(ArchiveError):
        zarr_aac.gc(tmp_path / "typo.zarr")
    assert not (tmp_path / "typo.zarr").exists()


def test_the_next_import_removes_a_dead_local_import(tmp_path, source, reference):
    group = zarr.open_group(tmp_path / "a.zarr")
    _plant_crashed_import(group, source, {"host": socket.gethostname(), "pid": _dead_pid()})
    with pytest.warns(UserWarning, match=r"removed 1 unfinished import.*: dawn"):
        array = zarr_aac.import_file(source, group, chunk_duration=0.25, progress=False)
    assert array.basename == "dawn"
    assert_same_recording(stored_recording(group, "dawn"), reference)


def test_an_entry_whose_recording_was_deleted_by_hand(tmp_path, source, reference):
    """Importing the content again imports it afresh (its stale entry is dropped); gc drops such
    entries as well."""
    root = tmp_path / "a.zarr"
    group = zarr.open_group(root)
    zarr_aac.import_file(source, group, chunk_duration=0.25, progress=False)
    other = zarr_aac.import_file(write_source(tmp_path / "x.wav", seed=5), group, progress=False).basename
    sync(group.store.delete_dir("dawn"))
    assert zarr_aac.import_file(source, group, chunk_duration=0.25, progress=False).basename == "dawn"
    assert_same_recording(stored_recording(group, "dawn"), reference)
    sync(group.store.delete_dir(other))
    report = gc(group)
    assert [(g.name, g.kind) for g in report.removed] == [(other, "entry of a deleted recording")]
    assert list(recordings.catalogue_entries(group)) == ["dawn"]


def test_an_archive_of_the_old_layout_keeps_opening_and_takes_new_imports(tmp_path, source, reference):
    """Old archives: arrays under their names, the catalogue one document in the group's
    attributes, no bookkeeping. They list, open and verify as before; a new import neither
    takes an old name nor stores old content twice, and changing an old recording's attributes
    leaves the old document alone."""
    root = tmp_path / "old.zarr"
    group = zarr.open_group(root)
    zarr_aac.import_file(source, group, chunk_duration=0.25, progress=False)
    sync(group.store.delete_dir(bk.BOOKKEEPING))
    group.attrs[recordings.CATALOGUE_ATTR] = {"dawn": reference[0]}
    old_document = dict(zarr.open_group(root, mode="r").attrs)

    assert list(zarr_aac.catalogue(root).index) == ["dawn"]
    assert zarr_aac.open_recording(root / "dawn").shape == reference[2].shape
    assert zarr_aac.verify(root, progress=False) == []
    assert zarr_aac.import_file(source, root, progress=False).basename == "dawn"  # content already there
    (tmp_path / "twin").mkdir()
    twin = write_source(tmp_path / "twin" / "dawn.wav", seed=9)
    assert zarr_aac.import_file(twin, root, progress=False).basename == "dawn_2"
    assert sorted(zarr_aac.catalogue(root).index) == ["dawn", "dawn_2"]
    assert list(zarr_aac.open_dataset(root).data_vars) == ["dawn", "dawn_2"]

    zarr_aac.set_recording_attributes(root / "dawn", metadata={"site": "A1"})
    assert zarr_aac.catalogue(root).loc["dawn", "user.site"] == "A1"
    assert dict(zarr.open_group(root, mode="r").attrs) == old_document


def test_the_snapshot_speeds_reading_but_never_decides_it(tmp_path):
    """Entries added, changed or removed after the snapshot was written are read as they are now."""
    group = zarr.open_group(tmp_path / "a.zarr")
    sources = [write_source(tmp_path / f"s{i}.wav", seconds=0.2, seed=i) for i in range(3)]
    zarr_aac.import_files(sources[:2], group, workers=1, progress=False)
    assert recordings.refresh_snapshot(group) == 2
    zarr_aac.import_file(sources[2], group, progress=False)
    zarr_aac.set_recording_attributes(group["s0"], start_time="2024-05-01T06:00:00")
    sync(group.store.delete_dir("s1"))
    gc(group)  # drops s1's entry and writes a new snapshot
    zarr_aac.set_recording_attributes(group["s2"], metadata={"site": "B"})
    entries = recordings.catalogue_entries(group)
    assert sorted(entries) == ["s0", "s2"]
    assert entries["s0"]["start_time"] == "2024-05-01T06:00:00"
    assert entries["s2"]["user"] == {"site": "B"}
    snapshot = sync(bk.read_document(group.store, bk.bookkeeping_key("", bk.SNAPSHOT)))
    assert sorted(e["name"] for e in snapshot["entries"].values()) == ["s0", "s2"]


def test_a_change_whose_writer_died_between_its_marks_is_read_afresh(tmp_path):
    group = zarr.open_group(tmp_path / "a.zarr")
    zarr_aac.import_file(write_source(tmp_path / "s.wav", seconds=0.2), group, progress=False)
    recordings.refresh_snapshot(group)
    digest = bookkeeping(group, bk.RECORDINGS)[0]
    entry = sync(bk.read_document(group.store, bk.bookkeeping_key("", bk.RECORDINGS, digest)))
    entry["recording"]["user"] = {"changed": True}
    # the first mark and the entry written, then the process died before the second mark
    sync(bk.write_document(group.store, bk.bookkeeping_key("", bk.MODIFIED, f"{digest}-x-a"), {}))
    sync(bk.write_document(group.store, bk.bookkeeping_key("", bk.RECORDINGS, digest), entry))
    recordings.refresh_snapshot(group)  # sees the unfinished change, and so does every reader after
    assert recordings.catalogue_entries(group)["s"]["user"] == {"changed": True}


def _start_importers(root: str, endpoint: str | None, shares: list[list[str]]):
    context = multiprocessing.get_context("spawn")
    go, results = context.Event(), context.Queue()
    jobs = [context.Process(target=import_together, args=(share, root, endpoint, go, results)) for share in shares]
    for job in jobs:
        job.start()
    go.set()
    names: list = []
    deadline = time.monotonic() + 300
    for _ in jobs:
        while True:
            try:
                names += results.get(timeout=2)
                break
            except queue.Empty:
                died = [job.exitcode for job in jobs if job.exitcode not in (None, 0)]
                assert not died, f"an importer process died (exit codes {died}); see the captured stderr"
                assert time.monotonic() < deadline, "the importers did not finish within 300 s"
    for job in jobs:
        job.join(timeout=60)
    assert all(job.exitcode == 0 for job in jobs)
    return names


def check_concurrent_imports(group_of, root: str, endpoint: str | None, folder: Path) -> None:
    """Four processes importing different files into one archive at once, then two importing
    the same files at once: every entry there once, each as a lone import makes it."""
    sources = [str(write_source(folder / f"site_{i}.wav", seconds=0.3, seed=20 + i)) for i in range(8)]
    names = _start_importers(root, endpoint, [sources[i::4] for i in range(4)])
    expected = {Path(s).stem for s in sources}
    assert {name for _, name in names} == expected
    group = group_of()
    assert set(recordings.catalogue_entries(group)) == expected
    assert set(nodes(group)) == expected and bookkeeping(group, bk.PENDING) == []

    twins = [str(write_source(folder / f"twin_{i}.wav", seconds=0.3, seed=40 + i)) for i in range(4)]
    names = _start_importers(root, endpoint, [twins, twins[::-1]])
    assert {name for _, name in names} == {Path(s).stem for s in twins}  # both got the one recording
    group = group_of()
    expected |= {Path(s).stem for s in twins}
    assert set(recordings.catalogue_entries(group)) == expected
    assert set(nodes(group)) == expected
    assert set(bookkeeping(group, bk.NAMES)) == expected and bookkeeping(group, bk.PENDING) == []
    for path in sources + twins:
        alone = zarr.open_group(store=MemoryStore())
        zarr_aac.import_file(path, alone, chunk_duration=0.25, progress=False)
        stem = Path(path).stem
        lone = stored_recording(alone, stem)
        stored = stored_recording(group, stem)
        # the fidelity report's figures can differ in the last digit between runs of one import
        # (how its read-back stretches fall depends on timing), so they are compared apart
        assert {**stored[0], "fidelity": None} == {**lone[0], "fidelity": None}
        assert stored[0]["fidelity"].keys() == lone[0]["fidelity"].keys()
        assert stored[0]["fidelity"]["snr_db"] == pytest.approx(lone[0]["fidelity"]["snr_db"], abs=0.15)
        assert stored[1] == lone[1]
        np.testing.assert_array_equal(stored[2], lone[2])


@pytest.mark.slow
def test_concurrent_importers_into_a_local_archive(tmp_path):
    root = tmp_path / "a.zarr"
    zarr.open_group(root)
    check_concurrent_imports(lambda: zarr.open_group(root, mode="r"), str(root), None, tmp_path)


def test_bookkeeping_documents_are_zarr_groups(tmp_path, source):
    """zarr lists an archive with its bookkeeping without warnings (the suite turns zarr's
    warnings into errors), and the documents are plain JSON."""
    root = tmp_path / "a.zarr"
    zarr_aac.import_file(source, root, progress=False)
    members = dict(zarr.open_group(root, mode="r").members(max_depth=None))
    assert isinstance(members[bk.BOOKKEEPING], zarr.Group)
    entry = next((root / bk.BOOKKEEPING / bk.RECORDINGS).glob("*/zarr.json"))
    assert json.loads(entry.read_text())["attributes"]["name"] == "dawn"


class CommitProtocolMachine(RuleBasedStateMachine):
    """Reservations, writes, commits, abandons and crashes of imports, interleaved at random on a
    memory store, against a model: at most one committed recording per content, names unique,
    readers seeing exactly the committed recordings, and gc leaving only them."""

    def __init__(self) -> None:
        super().__init__()
        self.group = zarr.open_group(store=MemoryStore(), mode="w")
        self.live: list[recordings.Reservation] = []
        self.written: set[str] = set()
        self.committed: dict[str, str] = {}  # digest -> name

    @rule(wanted=st.sampled_from(["a", "b"]), content=st.integers(0, 1))
    def reserve(self, wanted: str, content: int) -> None:
        self.live.append(recordings.reserve_name(self.group, wanted, f"{content:064x}"))

    @precondition(lambda self: self.live)
    @rule(pick=st.integers(0, 10))
    def write(self, pick: int) -> None:
        reservation = self.live[pick % len(self.live)]
        if reservation.name not in self.written:
            self.group.create_array(
                reservation.name,
                shape=(0, 1),
                dtype="int16",
                serializer=zarr_aac.AACCodec(sample_rate=RATE),
                compressors=None,
            )
            self.written.add(reservation.name)

    @precondition(lambda self: any(r.name in self.written for r in self.live))
    @rule(pick=st.integers(0, 10))
    def publish(self, pick: int) -> None:
        """Commit an import whose array is written (an import commits only then)."""
        ready = [r for r in self.live if r.name in self.written]
        reservation = ready[pick % len(ready)]
        self.live.remove(reservation)
        name = recordings.publish_recording(self.group, reservation, {"content": reservation.digest})
        expected = self.committed.setdefault(reservation.digest, reservation.name)
        assert name == expected
        if name != reservation.name:
            self.written.discard(reservation.name)

    @precondition(lambda self: self.live)
    @rule(pick=st.integers(0, 10))
    def abandon(self, pick: int) -> None:
        reservation = self.live.pop(pick % len(self.live))
        recordings.abandon_reservation(self.group, reservation)
        self.written.discard(reservation.name)

    @precondition(lambda self: self.live)
    @rule(pick=st.integers(0, 10))
    def crash(self, pick: int) -> None:
        """The importer dies: its reservation, mark and array stay as they are."""
        reservation = self.live.pop(pick % len(self.live))
        dead = {"host": socket.gethostname(), "pid": DEAD_PID}
        for key in (
            recordings._pending_key(self.group, reservation.token),
            recordings._name_key(self.group, reservation.name),
        ):
            sync(bk.write_document(self.group.store, key, {**reservation.as_document(), "owner": dead}))

    @precondition(lambda self: not self.live)
    @rule()
    def collect(self) -> None:
        gc(self.group)
        committed_names = sorted(self.committed.values())
        assert bookkeeping(self.group, bk.NAMES) == committed_names
        assert bookkeeping(self.group, bk.PENDING) == []
        assert nodes(self.group) == committed_names
        self.written = set(committed_names)

    @invariant()
    def readers_see_exactly_the_committed(self) -> None:
        entries = recordings.catalogue_entries(self.group)
        assert entries == {name: {"content": digest} for digest, name in self.committed.items()}
        visible = set(recordings.recording_arrays(self.group))
        assert visible == set(self.committed.values()) & self.written
        names = [r.name for r in self.live]
        assert len(names) == len(set(names)) and not set(names) & set(self.committed.values())


DEAD_PID = _dead_pid()
TestCommitProtocolMachine = CommitProtocolMachine.TestCase
TestCommitProtocolMachine.settings = settings(
    max_examples=50, stateful_step_count=20, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def test_a_store_without_a_conditional_write_says_so(source, reference, monkeypatch):
    """fsspec's memory file system (like GCS or HTTP through fsspec) has no atomic create-if-absent:
    an import still works, and warns once that importers must not run side by side."""
    from zarr.storage import FsspecStore

    from zarr_aac.errors import NoConditionalWriteWarning

    monkeypatch.setattr(bk, "_warned_stores", set())
    store = FsspecStore.from_url("memory://no-conditional.zarr")
    with pytest.warns(NoConditionalWriteWarning, match="one process at a time"):
        zarr_aac.import_file(source, zarr.open_group(store, mode="w"), chunk_duration=0.25, progress=False)
    assert_same_recording(stored_recording(zarr.open_group(store, mode="r"), "dawn"), reference)


def test_an_archive_created_by_another_process_meanwhile_is_opened(tmp_path, monkeypatch):
    """zarr.open_group(mode="a") looks for the group, then creates it: a second importer starting
    at the same moment finds the group made between the two and must open it, not fail."""
    path = tmp_path / "a.zarr"
    real_open_group = zarr.open_group

    def racing_open_group(store, *, mode="a", **kwargs):
        if mode == "a":
            real_open_group(store, mode="w-")  # the other process, between the look and the create
            raise zarr.errors.ContainsGroupError(f"A group exists in store at path {str(store)!r}.")
        return real_open_group(store, mode=mode, **kwargs)

    monkeypatch.setattr(zarr, "open_group", racing_open_group)
    archive = recordings.open_archive(path)
    assert archive.store_path.store.root == path
