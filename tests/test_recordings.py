"""The archive's names, catalogue and commit bookkeeping (``zarr_aac.archive.recordings``), one
function at a time: each result is checked against what the store holds, read back through a
freshly opened group or the bookkeeping documents themselves, not through the function's own
state. Written for the mutants of ``recordings.py`` that the commit-protocol tests let survive
(docs/claims.md, "Mutation testing").
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import zarr
from support.archives import bookkeeping
from support.signals import tone_with_noise
from zarr.core.sync import sync
from zarr.storage import LocalStore, MemoryStore, WrapperStore

import zarr_aac
from zarr_aac.archive import entries as bk
from zarr_aac.archive import importer, recordings
from zarr_aac.errors import ArchiveError, NameTakenError, RecordingNotCommittedError

RATE = 16000
DIGEST_A, DIGEST_B = "a" * 64, "b" * 64


class LoggingStore(WrapperStore):
    """Records the keys read and written through it, in order."""

    def __init__(self, store, log: list[tuple[str, str]] | None = None) -> None:
        super().__init__(store)
        self.log = log if log is not None else []

    def _with_store(self, store):
        return type(self)(store, self.log)

    async def get(self, key, prototype, byte_range=None):
        self.log.append(("get", key))
        return await super().get(key, prototype, byte_range)

    async def set(self, key, value):
        self.log.append(("set", key))
        await super().set(key, value)


def memory_archive() -> zarr.Group:
    return zarr.open_group(store=MemoryStore(), mode="a")


def reread(group: zarr.Group) -> zarr.Group:
    """The archive as another reader opening it now sees it."""
    return zarr.open_group(store=group.store, path=group.path, mode="r")


def document(group: zarr.Group, *parts: str) -> dict | None:
    return sync(bk.read_document(group.store, bk.bookkeeping_key(group.path, *parts)))


def committed_plain(group: zarr.Group, name: str, digest: str, attributes: dict | None = None) -> str:
    """Commit a small plain array under ``name`` by the protocol (the protocol never looks inside)."""
    reservation = recordings.reserve_name(group, name, digest, exact=True)
    group.create_array(reservation.name, shape=(4,), dtype="int16")
    return recordings.publish_recording(group, reservation, attributes or {"source": {"sha256": digest}})


@pytest.fixture(scope="module")
def wav(tmp_path_factory) -> Path:
    pcm = (tone_with_noise(int(0.2 * RATE), 1, RATE, seed=3) * 30000).astype(np.int16)
    path = tmp_path_factory.mktemp("src") / "dawn.wav"
    sf.write(path, pcm, RATE, subtype="PCM_16")
    return path


class TestNames:
    @pytest.mark.parametrize("name", ["", "a/b", "a\\b", ".hidden", "__zarr", 3])
    def test_names_that_cannot_be_a_path_segment_are_refused(self, name):
        with pytest.raises(ValueError, match=r"recording name") as info:
            recordings.check_recording_name(name)
        assert repr(name) in str(info.value)

    @pytest.mark.parametrize("name", ["dawn", "_x", "x.", "x__", "a.b"])
    def test_other_names_pass_unchanged(self, name):
        assert recordings.check_recording_name(name) == name

    def test_free_name_counts_from_two(self):
        assert recordings.free_name("a", set()) == "a"
        assert recordings.free_name("a", {"a_2"}) == "a"
        assert recordings.free_name("a", {"a"}) == "a_2"
        assert recordings.free_name("a", {"a", "a_2", "a_3"}) == "a_4"

    def test_child_path_joins_under_a_subgroup(self):
        root = memory_archive()
        sub = root.create_group("site")
        assert recordings.child_path(root, "x") == "x"
        assert recordings.child_path(sub, "x") == "site/x"
        assert str(recordings.name_taken(sub, "x")) == "site/x already exists; pick another name"


class TestOwner:
    def test_this_process_is_alive(self):
        owner = recordings.importing_owner()
        assert owner == {"host": os.uname().nodename, "pid": os.getpid()}
        assert recordings.owner_is_dead(owner) is False

    def test_a_finished_process_of_this_host_is_dead(self):
        child = subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"], check=True, capture_output=True, text=True
        )
        pid = int(child.stdout)
        assert recordings.owner_is_dead({"host": os.uname().nodename, "pid": pid}) is True
        assert recordings.owner_is_dead({"host": os.uname().nodename, "pid": str(pid)}) is True

    @pytest.mark.parametrize(
        "owner",
        [None, [1], {"pid": 1}, {"host": "another-host", "pid": 2**22 + 7}, {"host": None}, {"pid": "x"}],
    )
    def test_what_cannot_be_shown_dead_is_not(self, owner):
        if isinstance(owner, dict) and "host" not in owner:
            owner = {"host": os.uname().nodename, **owner}
        assert recordings.owner_is_dead(owner) is False


class TestReserve:
    def test_a_free_name_is_reserved_as_asked(self):
        group = memory_archive()
        before = datetime.now(UTC)
        reservation = recordings.reserve_name(group, "dawn", DIGEST_A)
        assert reservation.name == "dawn" and reservation.digest == DIGEST_A
        assert reservation.owner == recordings.importing_owner()
        assert before <= datetime.fromisoformat(reservation.reserved_at) <= datetime.now(UTC)
        expected = {
            "name": "dawn",
            "digest": DIGEST_A,
            "token": reservation.token,
            "owner": reservation.owner,
            "reserved_at": reservation.reserved_at,
        }
        assert document(group, bk.NAMES, "dawn") == expected
        assert recordings.reservation_of(group, "dawn") == expected
        assert recordings.reservation_of(group, "dusk") is None
        assert document(group, bk.PENDING, reservation.token) == expected

    def test_the_owner_given_is_recorded(self):
        group = memory_archive()
        owner = {"host": "worker-7", "pid": 12}
        reservation = recordings.reserve_name(group, "dawn", DIGEST_A, owner=owner)
        assert reservation.owner == owner
        assert document(group, bk.NAMES, "dawn")["owner"] == owner

    def test_the_first_name_free_of_nodes_old_entries_and_reservations_is_taken(self):
        group = memory_archive()
        group.create_array("dawn", shape=(1,), dtype="int16")  # a node made by hand
        group.attrs[recordings.CATALOGUE_ATTR] = {"dawn_2": {"source": {}}}  # an old catalogue entry
        sync(bk.write_document(group.store, bk.bookkeeping_key("", bk.NAMES, "dawn_3"), {"token": "t"}))
        group.create_group("dawn_5")
        reservation = recordings.reserve_name(group, "dawn", DIGEST_A)
        assert reservation.name == "dawn_4"
        assert document(group, bk.NAMES, "dawn_4")["token"] == reservation.token
        assert bookkeeping(group, bk.PENDING) == [reservation.token]
        assert document(group, bk.PENDING, reservation.token)["name"] == "dawn_4"
        assert recordings.reserve_name(group, "dawn", DIGEST_B).name == "dawn_6"

    @pytest.mark.parametrize("kind", ["node", "old entry", "reservation"])
    def test_an_exact_name_taken_raises_and_leaves_no_pending_mark(self, kind):
        group = memory_archive()
        if kind == "node":
            group.create_array("dawn", shape=(1,), dtype="int16")
        elif kind == "old entry":
            group.attrs[recordings.CATALOGUE_ATTR] = {"dawn": {}}
        else:
            recordings.reserve_name(group, "dawn", DIGEST_B)
        pending = bookkeeping(group, bk.PENDING)
        with pytest.raises(NameTakenError, match=r"^dawn already exists; pick another name$"):
            recordings.reserve_name(group, "dawn", DIGEST_A, exact=True)
        assert bookkeeping(group, bk.PENDING) == pending
        assert bookkeeping(group, bk.NAMES) == ([] if kind != "reservation" else ["dawn"])

    def test_a_name_of_an_old_version_two_array_is_taken(self, tmp_path):
        group = zarr.open_group(tmp_path / "a.zarr")
        zarr.create_array(tmp_path / "a.zarr" / "dawn", shape=(1,), dtype="int16", zarr_format=2)
        assert recordings.reserve_name(group, "dawn", DIGEST_A).name == "dawn_2"


class TestPublish:
    def test_a_commit_makes_the_recording_visible_and_drops_the_pending_mark(self):
        group = memory_archive()
        reservation = recordings.reserve_name(group, "dawn", DIGEST_A)
        group.create_array("dawn", shape=(4,), dtype="int16")
        assert recordings.commit_state(group.store, "", "dawn") is False
        assert recordings.recording_names(reread(group)) == []
        attributes = {"duration_s": 1.5, "source": {"sha256": DIGEST_A}}
        assert recordings.publish_recording(group, reservation, attributes) == "dawn"
        assert document(group, bk.RECORDINGS, DIGEST_A) == {
            "name": "dawn",
            "token": reservation.token,
            "recording": attributes,
        }
        assert bookkeeping(group, bk.PENDING) == []
        assert recordings.commit_state(group.store, "", "dawn") is True
        assert recordings.catalogue_entries(reread(group)) == {"dawn": attributes}
        assert recordings.recording_names(reread(group)) == ["dawn"]

    def test_the_second_commit_of_one_content_is_dropped_for_the_first(self):
        group = memory_archive()
        first = recordings.reserve_name(group, "dawn", DIGEST_A)
        second = recordings.reserve_name(group, "copy", DIGEST_A)
        for name in ("dawn", "copy"):
            group.create_array(name, shape=(4,), dtype="int16")
        assert recordings.publish_recording(group, first, {"n": 1}) == "dawn"
        assert recordings.publish_recording(group, second, {"n": 2}) == "dawn"
        assert sorted(reread(group).array_keys()) == ["dawn"]
        assert bookkeeping(group, bk.NAMES) == ["dawn"]
        assert bookkeeping(group, bk.PENDING) == []
        assert recordings.catalogue_entries(group) == {"dawn": {"n": 1}}

    def test_an_entry_that_keeps_vanishing_gives_up_after_the_set_attempts(self, monkeypatch):
        group = memory_archive()
        reservation = recordings.reserve_name(group, "dawn", DIGEST_A)
        group.create_array("dawn", shape=(4,), dtype="int16")
        entry_key = bk.bookkeeping_key("", bk.RECORDINGS, DIGEST_A)
        attempts = []
        create = bk.create_document

        async def lost_race(store, key, attributes):
            if key == entry_key:
                attempts.append(key)
                return False  # another import's entry was there, then deleted before it was read
            return await create(store, key, attributes)

        monkeypatch.setattr(bk, "create_document", lost_race)
        with pytest.raises(ArchiveError, match=r"^dawn: the catalogue entry of its content kept vanishing"):
            recordings.publish_recording(group, reservation, {})
        assert len(attempts) == recordings.PUBLISH_ATTEMPTS == 3
        assert list(reread(group).array_keys()) == []
        assert bookkeeping(group, bk.NAMES) == [] and bookkeeping(group, bk.PENDING) == []

    def test_a_malformed_winning_entry_is_reported(self):
        group = memory_archive()
        sync(bk.write_document(group.store, bk.bookkeeping_key("", bk.RECORDINGS, DIGEST_A), {"name": 3}))
        reservation = recordings.reserve_name(group, "dawn", DIGEST_A)
        with pytest.raises(ArchiveError, match=rf"recordings/{DIGEST_A} lacks a name or attributes"):
            recordings.publish_recording(group, reservation, {})

    def test_abandoning_a_name_another_import_holds_leaves_its_array(self):
        group = memory_archive()
        mine = recordings.reserve_name(group, "dawn", DIGEST_A)
        sync(bk.delete_document(group.store, bk.bookkeeping_key("", bk.NAMES, "dawn")))
        theirs = recordings.reserve_name(group, "dawn", DIGEST_B, exact=True)
        group.create_array("dawn", shape=(4,), dtype="int16")
        recordings.abandon_reservation(group, mine)
        assert list(reread(group).array_keys()) == ["dawn"]
        assert document(group, bk.NAMES, "dawn")["token"] == theirs.token
        assert bookkeeping(group, bk.PENDING) == [theirs.token]
        recordings.abandon_reservation(group, theirs)
        assert list(reread(group).array_keys()) == []
        assert bookkeeping(group, bk.NAMES) == [] and bookkeeping(group, bk.PENDING) == []


class TestCommitState:
    def test_the_three_states(self):
        group = memory_archive()
        group.create_array("by_hand", shape=(1,), dtype="int16")
        committed_plain(group, "done", DIGEST_A)
        recordings.reserve_name(group, "under_way", DIGEST_B)
        assert recordings.commit_state(group.store, "", "by_hand") is None
        assert recordings.commit_state(group.store, "", "done") is True
        assert recordings.commit_state(group.store, "", "under_way") is False

    def test_an_entry_of_another_name_or_token_does_not_commit_a_reservation(self):
        group = memory_archive()
        committed_plain(group, "done", DIGEST_A)
        entry = document(group, bk.RECORDINGS, DIGEST_A)
        key = bk.bookkeeping_key("", bk.RECORDINGS, DIGEST_A)
        sync(bk.write_document(group.store, key, {**entry, "name": "other"}))
        assert recordings.commit_state(group.store, "", "done") is False
        sync(bk.write_document(group.store, key, {**entry, "token": "another import's"}))
        assert recordings.commit_state(group.store, "", "done") is False

    def test_in_a_subgroup(self):
        root = memory_archive()
        site = root.create_group("site")
        committed_plain(site, "done", DIGEST_A)
        recordings.reserve_name(site, "under_way", DIGEST_B)
        assert recordings.commit_state(root.store, "site", "done") is True
        assert recordings.commit_state(root.store, "site", "under_way") is False
        assert recordings.commit_state(root.store, "", "done") is None
        done = site["done"]
        assert recordings.check_committed(done) is done
        with pytest.raises(RecordingNotCommittedError, match=r"site/under_way is not committed"):
            recordings.check_committed(site.create_array("under_way", shape=(1,), dtype="int16"))

    def test_check_committed_at_looks_in_the_parent_of_a_path(self, tmp_path):
        root = tmp_path / "a.zarr"
        group = zarr.open_group(root)
        committed_plain(group, "done", DIGEST_A)
        recordings.reserve_name(group, "under_way", DIGEST_B)
        group.create_array("under_way", shape=(1,), dtype="int16")
        done = zarr.open_array(root / "done", mode="r")
        assert recordings.check_committed_at(root / "done", done) is done
        under_way = zarr.open_array(root / "under_way", mode="r")
        with pytest.raises(RecordingNotCommittedError, match=r"under_way is not committed.*zarr-aac gc ARCHIVE"):
            recordings.check_committed_at(root / "under_way", under_way)
        with pytest.raises(RecordingNotCommittedError):
            recordings.check_committed_at(f"{root}/under_way/", under_way)
        # opened through its parent, the array knows its path
        with pytest.raises(RecordingNotCommittedError):
            recordings.check_committed_at("ignored", group["under_way"])
        lone = zarr.create_array(tmp_path / "lone", shape=(1,), dtype="int16")
        assert recordings.check_committed_at(tmp_path / "lone", lone) is lone
        assert recordings.check_committed_at("lone", lone) is lone


class TestCatalogue:
    def test_names_and_unfinished_imports(self):
        group = memory_archive()
        committed_plain(group, "done", DIGEST_A)
        recordings.reserve_name(group, "under_way", DIGEST_B)
        group.create_array("under_way", shape=(1,), dtype="int16")
        group.create_array("by_hand", shape=(1,), dtype="int16")
        group.create_array(f"{recordings.TEMP_PREFIX}old", shape=(1,), dtype="int16")
        group.create_group("folder")
        fresh = reread(group)
        assert recordings.recording_names(fresh) == ["by_hand", "done"]
        assert recordings.unfinished_imports(fresh) == [f"{recordings.TEMP_PREFIX}old", "under_way"]
        assert recordings.uncommitted_names(fresh) == ["under_way"]
        entries = recordings.catalogue_entries(fresh)
        assert recordings.recording_names(fresh, entries) == ["by_hand", "done"]
        assert recordings.unfinished_imports(fresh, entries) == [f"{recordings.TEMP_PREFIX}old", "under_way"]
        # the catalogue given is what decides
        assert recordings.uncommitted_names(fresh, {}) == ["done", "under_way"]
        assert recordings.uncommitted_names(memory_archive()) == []

    def test_recording_with_hash_finds_entries_and_old_catalogue_entries(self):
        group = memory_archive()
        committed_plain(group, "done", DIGEST_A)
        group.attrs[recordings.CATALOGUE_ATTR] = {"old": {"source": {"sha256": DIGEST_B}}, "bare": {}}
        assert recordings.recording_with_hash(group, DIGEST_A) == "done"
        assert recordings.recording_with_hash(group, DIGEST_B) == "old"
        assert recordings.recording_with_hash(group, "c" * 64) is None

    def test_the_old_catalogue_attribute_is_overlaid_by_entries(self):
        group = memory_archive()
        committed_plain(group, "done", DIGEST_A, {"v": 2})
        group.attrs[recordings.CATALOGUE_ATTR] = {"old": {"v": 1}, "done": {"v": 0}}
        assert recordings.catalogue_entries(group) == {"done": {"v": 2}, "old": {"v": 1}}

    @pytest.mark.parametrize("value", [[1, 2], "x", {"a": 1}, {"a": {}, "b": [1]}])
    def test_an_old_catalogue_attribute_edited_by_hand_is_refused(self, value):
        group = memory_archive()
        group.attrs[recordings.CATALOGUE_ATTR] = value
        with pytest.raises(ArchiveError, match=r"the 'catalogue' attribute is not a mapping of names"):
            recordings.catalogue_entries(group)

    def test_entries_come_sorted_by_name(self):
        group = memory_archive()
        committed_plain(group, "zeta", DIGEST_A, {"v": "z"})
        committed_plain(group, "alpha", DIGEST_B, {"v": "a"})
        assert list(recordings.committed_entries(group)) == ["alpha", "zeta"]
        assert recordings.committed_entries(memory_archive()) == {}

    def test_a_malformed_entry_is_reported(self):
        group = memory_archive()
        committed_plain(group, "done", DIGEST_A)
        sync(bk.write_document(group.store, bk.bookkeeping_key("", bk.RECORDINGS, DIGEST_A), {"name": "done"}))
        with pytest.raises(ArchiveError, match=r"lacks a name or attributes \(edited by hand\?\)"):
            recordings.committed_entries(group)


class TestSnapshot:
    def test_changed_since(self):
        assert recordings.changed_since([], set()) == set()
        assert recordings.changed_since(["d1-x-a", "d1-x-b"], {"d1-x-a", "d1-x-b"}) == set()
        assert recordings.changed_since(["d1-x-a", "d1-x-b"], {"d1-x-a"}) == {"d1"}
        assert recordings.changed_since(["d1-x-a"], {"d1-x-a"}) == {"d1"}  # its writer died between marks
        assert recordings.changed_since(["d1-x-a", "d1-x-b", "d2-y-a"], {"d1-x-a", "d1-x-b", "d2-y-a"}) == {"d2"}

    def test_a_change_is_written_between_its_two_marks(self):
        log: list[tuple[str, str]] = []
        group = zarr.open_group(store=LoggingStore(MemoryStore(), log), mode="a")
        committed_plain(group, "done", DIGEST_A)
        entry = {"name": "done", "token": "t", "recording": {"v": 9}}
        del log[:]
        recordings.change_entry(group, DIGEST_A, entry)
        written = [key for op, key in log if op == "set"]
        assert len(written) == 3
        assert written[1] == f"{bk.bookkeeping_key('', bk.RECORDINGS, DIGEST_A)}/zarr.json"
        marks = bookkeeping(group, bk.MODIFIED)
        assert len(marks) == 2
        first, second = sorted(marks)
        assert first.startswith(f"{DIGEST_A}-") and first.endswith("-a") and second == f"{first[:-2]}-b"
        assert written[0].endswith(f"/{first}/zarr.json") and written[2].endswith(f"/{second}/zarr.json")
        assert document(group, bk.RECORDINGS, DIGEST_A) == entry
        for mark in marks:
            assert datetime.fromisoformat(document(group, bk.MODIFIED, mark)["at"]).tzinfo is not None

    def test_a_fresh_snapshot_replaces_reading_the_entries(self):
        log: list[tuple[str, str]] = []
        group = zarr.open_group(store=LoggingStore(MemoryStore(), log), mode="a")
        committed_plain(group, "one", DIGEST_A, {"v": 1})
        committed_plain(group, "two", DIGEST_B, {"v": 2})
        recordings.change_entry(group, DIGEST_A, {"name": "one", "token": "t", "recording": {"v": 3}})
        assert recordings.refresh_snapshot(group) == 2
        snapshot = document(group, bk.SNAPSHOT)
        assert snapshot["entries"] == {
            DIGEST_A: document(group, bk.RECORDINGS, DIGEST_A),
            DIGEST_B: document(group, bk.RECORDINGS, DIGEST_B),
        }
        assert sorted(snapshot["modified"]) == bookkeeping(group, bk.MODIFIED)

        def entries_read() -> set[str]:
            prefix = bk.bookkeeping_key("", bk.RECORDINGS)
            return {key[len(prefix) + 1 :].split("/")[0] for op, key in log if op == "get" and key.startswith(prefix)}

        del log[:]
        assert recordings.committed_entries(group) == {"one": {"v": 3}, "two": {"v": 2}}
        assert entries_read() == set()
        recordings.change_entry(group, DIGEST_B, {"name": "two", "token": "t", "recording": {"v": 4}})
        del log[:]
        assert recordings.committed_entries(group) == {"one": {"v": 3}, "two": {"v": 4}}
        assert entries_read() == {DIGEST_B}

    def test_an_entry_listed_but_gone_is_left_out_of_the_snapshot(self, monkeypatch):
        group = memory_archive()
        committed_plain(group, "one", DIGEST_A)
        committed_plain(group, "two", DIGEST_B)
        read_documents = bk.read_documents

        async def one_deleted_meanwhile(store, keys):
            found = await read_documents(store, keys)
            return {key: (None if DIGEST_B in key else doc) for key, doc in found.items()}

        monkeypatch.setattr(bk, "read_documents", one_deleted_meanwhile)
        assert recordings.refresh_snapshot(group) == 1
        assert list(document(group, bk.SNAPSHOT)["entries"]) == [DIGEST_A]
        assert recordings.committed_entries(group) == {"one": {"source": {"sha256": DIGEST_A}}}


class TestOpening:
    def test_open_archive(self, tmp_path):
        group = memory_archive()
        assert recordings.open_archive(group) is group
        created = recordings.open_archive(tmp_path / "new.zarr")
        assert isinstance(created, zarr.Group) and (tmp_path / "new.zarr" / "zarr.json").is_file()
        (tmp_path / "empty").mkdir()
        recordings.open_archive(tmp_path / "empty")
        assert (tmp_path / "empty" / "zarr.json").is_file()
        with pytest.raises(ArchiveError, match=r"missing.zarr is not a zarr-aac archive \(a Zarr group\)"):
            recordings.open_archive(tmp_path / "missing.zarr", mode="r")
        zarr.create_array(tmp_path / "array.zarr", shape=(1,), dtype="int16")
        with pytest.raises(ArchiveError, match=r"array.zarr is not a zarr-aac archive"):
            recordings.open_archive(tmp_path / "array.zarr")

    def test_a_file_or_a_folder_of_other_files_is_no_archive(self, tmp_path):
        (tmp_path / "notes.txt").write_text("x")
        with pytest.raises(ArchiveError, match=r"notes.txt is a file, not an archive; give a folder"):
            recordings.open_archive(tmp_path / "notes.txt")
        folder = tmp_path / "folder"
        folder.mkdir()
        (folder / "photo.jpg").write_bytes(b"x")
        with pytest.raises(ArchiveError, match=r"folder is a folder of other files, not a Zarr group"):
            recordings.open_archive(folder)
        assert sorted(p.name for p in folder.iterdir()) == ["photo.jpg"]

    @pytest.mark.parametrize("zarr_format", [3, 2])
    def test_a_zarr_group_holding_other_files_too_is_opened(self, tmp_path, zarr_format):
        folder = tmp_path / "a.zarr"
        zarr.open_group(folder, mode="w", zarr_format=zarr_format).attrs["site"] = "A1"
        (folder / "notes.txt").write_text("x")
        assert recordings.open_archive(folder, mode="r").attrs["site"] == "A1"

    def test_a_zarr_array_folder_is_no_archive_but_not_other_files(self, tmp_path):
        zarr.create_array(tmp_path / "a.zarr", shape=(1,), dtype="int16")
        (tmp_path / "a.zarr" / "notes.txt").write_text("x")
        with pytest.raises(ArchiveError, match=r"a.zarr is not a zarr-aac archive \(a Zarr group\)"):
            recordings.open_archive(tmp_path / "a.zarr")

    def test_an_archive_given_as_a_url(self, tmp_path):
        zarr.open_group(tmp_path / "a.zarr").attrs["site"] = "A1"
        assert recordings.open_archive(f"file://{tmp_path}/a.zarr", mode="r").attrs["site"] == "A1"

    def test_recording_array_refuses_a_group(self):
        group = memory_archive()
        group.create_group("site").create_group("deeper")
        with pytest.raises(ArchiveError, match=r"^site/deeper is a group, not a recording"):
            recordings.recording_array(group["site"], "deeper")

    def test_open_recording_of_an_archive_needs_exactly_one(self, tmp_path, wav):
        root = tmp_path / "a.zarr"
        group = zarr.open_group(root)
        with pytest.raises(ArchiveError, match=r"holds no recordings; name one as .*a.zarr/NAME"):
            recordings.open_recording(root)
        zarr_aac.import_file(wav, group, progress=False)
        assert recordings.open_recording(root).path == "dawn"
        assert recordings.open_recording(group).path == "dawn"
        for i in range(11):
            group.create_array(f"n{i:02d}", shape=(1,), dtype="int16")
        with pytest.raises(ArchiveError) as info:
            recordings.open_recording(group)
        message = str(info.value)
        assert "holds 12 recordings (dawn, n00, n01, n02, n03, n04, n05, n06, n07, n08, ...)" in message
        with pytest.raises(ArchiveError, match=r"n00 is not stored with the zarr_aac codec"):
            recordings.open_recording(root / "n00")
        with pytest.raises(ArchiveError, match=r"missing: no Zarr array or group there"):
            recordings.open_recording(tmp_path / "missing")

    def test_open_recording_refuses_an_uncommitted_recording(self, tmp_path, wav):
        root = tmp_path / "a.zarr"
        group = zarr.open_group(root)
        digest = importer.file_sha256(wav)
        reservation = recordings.reserve_name(group, "dawn", digest)
        options = importer.ImportOptions(progress=False)
        importer._write_source(wav, group, reservation.name, digest, options, owner=reservation.owner)
        for target in (root / "dawn", group["dawn"]):
            with pytest.raises(RecordingNotCommittedError):
                recordings.open_recording(target)
        with pytest.raises(ArchiveError, match=r"holds no recordings"):
            recordings.open_recording(root)
        assert recordings.recording_arrays(group) == {}

    def test_recording_arrays_walks_subgroups_and_leaves_out_the_rest(self, wav):
        root = memory_archive()
        zarr_aac.import_file(wav, root.create_group("site"), progress=False)
        zarr_aac.import_file(wav, root, "top", progress=False)
        root.create_array("plain", shape=(1,), dtype="int16")
        found = recordings.recording_arrays(reread(root))
        assert list(found) == ["site/dawn", "top"]
        assert [array.path for array in found.values()] == ["site/dawn", "top"]
        assert recordings.codec_of(found["top"]).to_dict()["name"] == "zarr_aac"
        with pytest.raises(ArchiveError, match=r"plain is not stored with the zarr_aac codec, so it is no recording"):
            recordings.codec_of(root["plain"])


class TestCatalogueFrame:
    def test_an_empty_archive(self, tmp_path):
        zarr.open_group(tmp_path / "a.zarr")
        frame = recordings.catalogue(tmp_path / "a.zarr")
        assert frame.empty and frame.index.name == "name" and list(frame.columns) == []

    def test_nested_fields_are_flattened_with_dots(self):
        group = memory_archive()
        committed_plain(group, "b", DIGEST_A, {"duration_s": 2.0, "source": {"sha256": DIGEST_A, "path": "b.wav"}})
        committed_plain(group, "a", DIGEST_B, {"duration_s": 1.0, "aac": {"bitrate": 64000}})
        frame = recordings.catalogue(group)
        assert list(frame.index) == ["a", "b"] and frame.index.name == "name"
        assert sorted(frame.columns) == ["aac.bitrate", "duration_s", "source.path", "source.sha256"]
        assert frame.loc["a", "aac.bitrate"] == 64000 and frame.loc["b", "source.path"] == "b.wav"
        assert np.isnan(frame.loc["b", "aac.bitrate"])


class TestSetAttributes:
    def test_a_change_reaches_the_entry_and_the_array(self, tmp_path, wav):
        root = tmp_path / "a.zarr"
        zarr_aac.import_file(wav, root, progress=False)
        zarr_aac.set_recording_attributes(f"{root}/dawn/", start_time="2024-05-01T06:00:00+00:00")
        fresh = zarr.open_group(root, mode="r")
        assert fresh["dawn"].attrs["start_time"] == "2024-05-01T06:00:00+00:00"
        assert fresh["dawn"].attrs["start_time_source"] == "user"
        entry = recordings.catalogue_entries(fresh)["dawn"]
        assert entry["start_time"] == "2024-05-01T06:00:00+00:00" and entry["start_time_source"] == "user"
        assert len(bookkeeping(fresh, bk.MODIFIED)) == 2

    def test_a_recording_in_the_old_catalogue_gets_an_entry_of_its_own(self):
        group = memory_archive()
        group.create_array("old", shape=(1,), dtype="int16")
        group.attrs[recordings.CATALOGUE_ATTR] = {"old": {"source": {"sha256": DIGEST_A}, "v": 1}}
        recordings._change_catalogue_entry(group, "old", {"v": 2})
        entry = document(group, bk.RECORDINGS, DIGEST_A)
        assert entry["name"] == "old" and entry["recording"] == {"source": {"sha256": DIGEST_A}, "v": 2}
        assert document(group, bk.NAMES, "old")["token"] == entry["token"]
        assert recordings.commit_state(group.store, "", "old") is True
        assert recordings.catalogue_entries(group)["old"]["v"] == 2
        assert reread(group).attrs[recordings.CATALOGUE_ATTR]["old"]["v"] == 1

    def test_an_old_entry_without_a_digest_cannot_get_an_entry(self):
        group = memory_archive()
        group.create_array("old", shape=(1,), dtype="int16")
        group.attrs[recordings.CATALOGUE_ATTR] = {"old": {"v": 1}}
        with pytest.raises(ArchiveError, match=r"^old: its entry in the old catalogue has no source.sha256"):
            recordings._change_catalogue_entry(group, "old", {"v": 2})
        assert bookkeeping(group, bk.RECORDINGS) == []

    def test_an_old_entry_whose_content_or_name_is_taken_meanwhile(self, monkeypatch):
        group = memory_archive()
        group.attrs[recordings.CATALOGUE_ATTR] = {"old": {"source": {"sha256": DIGEST_A}}}
        sync(bk.write_document(group.store, bk.bookkeeping_key("", bk.RECORDINGS, DIGEST_A), {"name": "x"}))
        with pytest.raises(ArchiveError, match=r"^old: another recording has its content's entry; try again"):
            recordings._change_catalogue_entry(group, "old", {"v": 2})
        sync(bk.delete_document(group.store, bk.bookkeeping_key("", bk.RECORDINGS, DIGEST_A)))
        name_key = bk.bookkeeping_key("", bk.NAMES, "old")
        create = bk.create_document

        async def reserved_meanwhile(store, key, attributes):
            if key == name_key:
                await bk.write_document(store, key, {"name": "old", "digest": DIGEST_B, "token": "theirs"})
                return False
            return await create(store, key, attributes)

        monkeypatch.setattr(bk, "create_document", reserved_meanwhile)
        with pytest.raises(ArchiveError, match=r"^old: its name was reserved meanwhile; try again"):
            recordings._change_catalogue_entry(group, "old", {"v": 2})
        assert bookkeeping(group, bk.RECORDINGS) == []
        assert document(group, bk.NAMES, "old")["token"] == "theirs"

    def test_an_array_outside_any_catalogue_keeps_only_its_attributes(self):
        group = memory_archive()
        group.create_array("by_hand", shape=(1,), dtype="int16")
        recordings._change_catalogue_entry(group, "by_hand", {"v": 2})
        assert bookkeeping(group, bk.RECORDINGS) == [] and bookkeeping(group, bk.NAMES) == []

    def test_where_the_recording_is_given_wrongly(self, tmp_path):
        zarr.open_group(tmp_path / "a.zarr")
        with pytest.raises(ArchiveError, match=r"give the recording as ARCHIVE/NAME"):
            zarr_aac.set_recording_attributes("dawn", metadata={})
        with pytest.raises(ArchiveError, match=r"a.zarr has no recording 'dawn'"):
            zarr_aac.set_recording_attributes(tmp_path / "a.zarr" / "dawn", metadata={})
        zarr.open_group(tmp_path / "a.zarr").create_group("site")
        with pytest.raises(ArchiveError, match=r"site is a group, not a recording"):
            zarr_aac.set_recording_attributes(tmp_path / "a.zarr" / "site", metadata={})


def test_reopen_sees_attributes_written_through_another_group_object():
    group = memory_archive()
    other = zarr.open_group(store=group.store, mode="r+")
    other.attrs["x"] = 1
    assert "x" not in group.attrs
    assert recordings.reopen(group).attrs["x"] == 1
    with pytest.raises(ValueError):
        recordings.reopen(group, mode="r").attrs["y"] = 2
    assert recordings.reopen(group).read_only is False


class TestSurvivorsOfTheFirstRun:
    """What the first mutation run of recordings.py showed untested (docs/claims.md)."""

    def test_error_messages_in_full(self, tmp_path):
        folder = tmp_path / "folder"
        folder.mkdir()
        (folder / "photo.jpg").write_bytes(b"x")
        with pytest.raises(ArchiveError) as info:
            recordings.open_archive(folder)
        assert str(info.value) == (
            f"{folder} is a folder of other files, not a Zarr group (it has no zarr.json); "
            "give a new or empty folder for the archive"
        )
        group = memory_archive()
        group.attrs[recordings.CATALOGUE_ATTR] = [1]
        with pytest.raises(ArchiveError) as info:
            recordings.catalogue_entries(group)
        assert str(info.value).endswith(
            "the 'catalogue' attribute is not a mapping of names to attributes "
            "(edited by hand?); restore it or import into a new archive"
        )

    def test_the_vanishing_entry_message_in_full(self, monkeypatch):
        group = memory_archive()
        reservation = recordings.reserve_name(group, "dawn", DIGEST_A)
        monkeypatch.setattr(bk, "create_document", _never_created)
        with pytest.raises(ArchiveError) as info:
            recordings.publish_recording(group, reservation, {})
        assert str(info.value) == (
            "dawn: the catalogue entry of its content kept vanishing while this import committed "
            "(recordings of this content deleted meanwhile?); import the file again"
        )

    def test_the_uncommitted_message_in_full(self):
        group = memory_archive()
        recordings.reserve_name(group, "dawn", DIGEST_A)
        array = group.create_array("dawn", shape=(1,), dtype="int16")
        with pytest.raises(RecordingNotCommittedError) as info:
            recordings.check_committed(array)
        assert str(info.value) == (
            f"{array.store_path} is not committed: its import is still under way or crashed. Wait for the "
            "import to finish; if it crashed, `zarr-aac gc ARCHIVE` removes what it left"
        )

    def test_reopen_keeps_the_subgroup(self):
        root = memory_archive()
        site = root.create_group("site")
        zarr.open_group(store=root.store, path="site", mode="r+").attrs["x"] = 1
        assert recordings.reopen(site).path == "site"
        assert recordings.reopen(site, mode="r").attrs["x"] == 1

    def test_a_read_only_archive_can_be_read(self, tmp_path, wav):
        zarr_aac.import_file(wav, tmp_path / "a.zarr", progress=False)
        group = zarr.open_group(tmp_path / "a.zarr")
        group.attrs[recordings.CATALOGUE_ATTR] = {"old": {"source": {"sha256": DIGEST_B}}}
        read_only = zarr.open_group(store=LocalStore(tmp_path / "a.zarr", read_only=True), mode="r")
        assert recordings.recording_with_hash(read_only, DIGEST_B) == "old"
        assert recordings.recording_with_hash(read_only, importer.file_sha256(wav)) == "dawn"
        assert set(recordings.catalogue_entries(read_only)) == {"old", "dawn"}
        assert list(recordings.catalogue(read_only).index) == ["old", "dawn"]

    def test_reading_never_creates_an_archive(self, tmp_path):
        with pytest.raises(ArchiveError, match=r"is not a zarr-aac archive"):
            recordings.catalogue(tmp_path / "missing.zarr")
        with pytest.raises(ArchiveError, match=r"is not a zarr-aac archive"):
            zarr_aac.set_recording_attributes(tmp_path / "missing.zarr" / "dawn", metadata={})
        lone = zarr.create_array(tmp_path / "folder" / "lone", shape=(1,), dtype="int16")
        assert recordings.check_committed_at(tmp_path / "folder" / "lone", lone) is lone
        assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"]
        assert sorted(p.name for p in (tmp_path / "folder").iterdir()) == ["lone"]

    def test_in_a_subgroup(self, tmp_path):
        root = zarr.open_group(tmp_path / "a.zarr")
        site = root.create_group("site")
        committed_plain(site, "done", DIGEST_A)
        recordings.reserve_name(site, "under_way", DIGEST_B)
        site.create_array("under_way", shape=(1,), dtype="int16")
        assert recordings.recording_with_hash(site, DIGEST_A) == "done"
        assert recordings.recording_with_hash(root, DIGEST_A) is None
        path = tmp_path / "a.zarr" / "site" / "under_way"
        with pytest.raises(RecordingNotCommittedError):
            recordings.check_committed_at(path, zarr.open_array(path, mode="r"))

    def test_the_catalogue_given_to_the_listings_is_the_one_used(self):
        group = memory_archive()
        committed_plain(group, "done", DIGEST_A)
        group.create_array("by_hand", shape=(1,), dtype="int16")
        assert recordings.recording_names(group, {}) == ["by_hand"]
        assert recordings.unfinished_imports(group, {}) == ["done"]
        assert recordings.unfinished_imports(group) == []

    def test_asking_whether_a_live_process_is_dead_leaves_it_running(self):
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        try:
            assert recordings.owner_is_dead({"host": os.uname().nodename, "pid": child.pid}) is False
            with pytest.raises(subprocess.TimeoutExpired):  # no signal was sent that ends it
                child.wait(timeout=1)
        finally:
            child.kill()
            child.wait()

    def test_another_users_process_is_not_dead(self, monkeypatch):
        def not_permitted(pid, signal):
            raise PermissionError(1, "Operation not permitted")

        monkeypatch.setattr(os, "kill", not_permitted)
        assert recordings.owner_is_dead({"host": os.uname().nodename, "pid": 1}) is False

    def test_reserving_lists_the_names_once_and_tries_only_free_ones(self, monkeypatch):
        group = memory_archive()
        for name in ("dawn", "dawn_2", "dawn_3"):
            sync(bk.write_document(group.store, bk.bookkeeping_key("", bk.NAMES, name), {"token": name}))
        tried = []
        create = bk.create_document

        async def counting(store, key, attributes):
            tried.append(key.rsplit("/", 1)[-1])
            return await create(store, key, attributes)

        monkeypatch.setattr(bk, "create_document", counting)
        assert recordings.reserve_name(group, "dawn", DIGEST_A).name == "dawn_4"
        assert tried == ["dawn", "dawn_4"]

    def test_a_name_reserved_after_the_listing_is_skipped(self, monkeypatch):
        group = memory_archive()
        group.create_array("dawn", shape=(1,), dtype="int16")
        tried = []
        create = bk.create_document

        async def raced(store, key, attributes):
            name = key.rsplit("/", 1)[-1]
            tried.append(name)
            assert len(tried) < 5, f"the same names tried again: {tried}"
            if name == "dawn_2" and tried.count(name) == 1:
                await bk.write_document(store, key, {"token": "another importer's"})
            return await create(store, key, attributes)

        monkeypatch.setattr(bk, "create_document", raced)
        assert recordings.reserve_name(group, "dawn", DIGEST_A).name == "dawn_3"
        assert tried == ["dawn_2", "dawn_3"]

    def test_a_name_ending_in_x(self, tmp_path):
        root = tmp_path / "a.zarr"
        group = zarr.open_group(root)
        committed_plain(group, "take", DIGEST_A)
        recordings.reserve_name(group, "takeX", DIGEST_B)
        group.create_array("takeX", shape=(1,), dtype="int16")
        with pytest.raises(RecordingNotCommittedError):
            recordings.check_committed_at(root / "takeX", zarr.open_array(root / "takeX", mode="r"))
        assert recordings._archive_and_name(f"{root}/takeX/")[1] == "takeX"

    def test_a_malformed_entry_names_its_digest(self):
        group = memory_archive()
        committed_plain(group, "done", DIGEST_A)
        sync(bk.write_document(group.store, bk.bookkeeping_key("", bk.RECORDINGS, DIGEST_A), {"name": "done"}))
        for read in (
            lambda: recordings.committed_entries(group),
            lambda: recordings.recording_with_hash(group, DIGEST_A),
            lambda: recordings._change_catalogue_entry(group, "done", {"v": 1}),
        ):
            with pytest.raises(ArchiveError, match=rf"\.zarr-aac/recordings/{DIGEST_A} lacks a name or attributes"):
                read()

    def test_a_temporary_array_of_an_old_version_or_in_a_subgroup_uncommitted_is_no_recording(self, wav):
        root = memory_archive()
        codec = zarr_aac.AACCodec(sample_rate=RATE, bitrate=32000)
        old = root.create_array(
            f"{recordings.TEMP_PREFIX}dawn", shape=(RATE,), chunks=(RATE,), dtype="int16", serializer=codec
        )
        old[:] = np.zeros(RATE, dtype=np.int16)
        site = root.create_group("site")
        digest = importer.file_sha256(wav)
        reservation = recordings.reserve_name(site, "dawn", digest)
        options = importer.ImportOptions(progress=False)
        importer._write_source(wav, site, reservation.name, digest, options, owner=reservation.owner)
        zarr_aac.import_file(wav, root, "top", progress=False)
        assert list(recordings.recording_arrays(reread(root))) == ["top"]

    def test_the_catalogue_frame_keeps_plain_values(self):
        group = memory_archive()
        committed_plain(group, "a", DIGEST_A, {"duration_s": 1.5, "start_time": "2024-05-01T06:00:00"})
        frame = recordings.catalogue(group)
        assert frame.loc["a", "duration_s"] == 1.5 and frame.loc["a", "start_time"] == "2024-05-01T06:00:00"

    def test_without_pandas_the_catalogue_says_what_to_install(self, monkeypatch):
        monkeypatch.setitem(sys.modules, "pandas", None)
        with pytest.raises(zarr_aac.ZarrAACError) as info:
            recordings.catalogue(memory_archive())
        assert str(info.value) == "catalogue() needs pandas: pip install 'zarr-aac[xarray]'"

    @pytest.mark.parametrize(
        ("count", "listing"),
        [
            (2, "2 recordings (n00, n01)"),
            (10, "10 recordings (n00, n01, n02, n03, n04, n05, n06, n07, n08, n09)"),
            (11, "11 recordings (n00, n01, n02, n03, n04, n05, n06, n07, n08, n09, ...)"),
        ],
    )
    def test_the_recordings_listed_when_one_must_be_named(self, tmp_path, count, listing):
        root = tmp_path / "a.zarr"
        group = zarr.open_group(root)
        for i in range(count):
            group.create_array(f"n{i:02d}", shape=(1,), dtype="int16")
        with pytest.raises(ArchiveError) as info:
            recordings.open_recording(root)
        assert str(info.value) == f"{root} holds {listing}; name one as {root}/NAME"
        with pytest.raises(ArchiveError) as info:
            recordings.open_recording(group)
        assert str(info.value) == f"{group.store_path} holds {listing}; name one as {group.store_path}/NAME"

    def test_metadata_reaches_the_entry_and_the_array(self, tmp_path, wav):
        root = tmp_path / "a.zarr"
        zarr_aac.import_file(wav, root, progress=False)
        zarr_aac.set_recording_attributes(f"{root}/dawn", metadata={"site": "A1"})
        fresh = zarr.open_group(root, mode="r")
        assert fresh["dawn"].attrs["user"] == {"site": "A1"}
        assert recordings.catalogue_entries(fresh)["dawn"]["user"] == {"site": "A1"}
        assert "start_time_source" not in {k: v for k, v in fresh["dawn"].attrs.items() if v == "user"}

    def test_an_array_deep_in_subgroups_is_changed_where_it_is(self, wav):
        root = memory_archive()
        deep = root.create_group("a").create_group("b")
        zarr_aac.import_file(wav, deep, progress=False)
        array = zarr.open_array(store=root.store, path="a/b/dawn", mode="r+")
        zarr_aac.set_recording_attributes(array, metadata={"site": "B"})
        fresh = zarr.open_group(store=root.store, path="a/b", mode="r")
        assert fresh["dawn"].attrs["user"] == {"site": "B"}
        assert recordings.catalogue_entries(fresh)["dawn"]["user"] == {"site": "B"}
        assert recordings.catalogue_entries(reread(root)) == {}

    def test_the_entry_given_to_an_old_catalogue_recording_is_a_full_reservation(self):
        group = memory_archive()
        committed_plain(group, "other", DIGEST_B)
        group.create_array("old", shape=(1,), dtype="int16")
        group.attrs[recordings.CATALOGUE_ATTR] = {"old": {"source": {"sha256": DIGEST_A}}}
        before = datetime.now(UTC)
        recordings._change_catalogue_entry(group, "old", {"v": 2})
        held = document(group, bk.NAMES, "old")
        assert held["name"] == "old" and held["digest"] == DIGEST_A
        assert held["owner"] == recordings.importing_owner()
        assert before <= datetime.fromisoformat(held["reserved_at"]) <= datetime.now(UTC)
        assert isinstance(held["token"], str) and len(held["token"]) >= 16
        assert held["token"] == document(group, bk.RECORDINGS, DIGEST_A)["token"]

    def test_a_refused_old_entry_takes_only_its_own_entry_back(self, monkeypatch):
        group = memory_archive()
        committed_plain(group, "other", DIGEST_B)
        group.attrs[recordings.CATALOGUE_ATTR] = {"old": {"source": {"sha256": DIGEST_A}}}
        monkeypatch.setattr(bk, "create_document", _names_never_created)
        with pytest.raises(ArchiveError, match=r"its name was reserved meanwhile"):
            recordings._change_catalogue_entry(group, "old", {"v": 2})
        assert bookkeeping(group, bk.RECORDINGS) == [DIGEST_B]

    def test_the_message_for_an_old_entry_without_a_digest_in_full(self):
        group = memory_archive()
        group.attrs[recordings.CATALOGUE_ATTR] = {"old": {}}
        with pytest.raises(ArchiveError) as info:
            recordings._change_catalogue_entry(group, "old", {"v": 2})
        assert str(info.value) == (
            "old: its entry in the old catalogue has no source.sha256, so it cannot get an entry of its own; "
            "its attributes were changed, its catalogue entry was not"
        )

    def test_a_dead_import_is_removed_with_a_warning_at_the_callers_line(self, tmp_path, wav):
        group = zarr.open_group(tmp_path / "a.zarr")
        child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True, capture_output=True)
        dead = {"host": os.uname().nodename, "pid": int(child.stdout)}
        alive = recordings.importing_owner()
        for name, owner, digest in (("gone", dead, DIGEST_A), ("running", alive, DIGEST_B)):
            reservation = recordings.reserve_name(group, name, digest, owner=owner)
            group.create_array(reservation.name, shape=(1,), dtype="int16")
        group.create_array(f"{recordings.TEMP_PREFIX}old", shape=(1,), dtype="int16").attrs[
            recordings.IMPORTING_ATTR
        ] = dead
        group.attrs[recordings.CATALOGUE_ATTR] = {}  # an archive of a version that wrote temporary arrays
        with pytest.warns(UserWarning) as caught:
            zarr_aac.import_file(wav, group, progress=False)
        (warning,) = [w for w in caught if "unfinished import" in str(w.message)]
        assert str(warning.message) == (
            f"removed 2 unfinished import(s) left by a process that died: gone, {recordings.TEMP_PREFIX}old"
        )
        # at the caller's line, outside the package (mutmut's trampolines add frames, so not this file there)
        assert "zarr_aac" not in Path(warning.filename).parts
        assert recordings.unfinished_imports(reread(group)) == ["running"]
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert recordings.remove_stale_imports(group) == []


def test_a_zarr_v2_array_folder_is_refused_and_left_as_it_was(tmp_path):
    zarr.create_array(tmp_path / "v2.zarr", shape=(1,), dtype="int16", zarr_format=2)
    before = sorted(p.name for p in (tmp_path / "v2.zarr").iterdir())
    try:
        with pytest.raises(ArchiveError):
            recordings.open_archive(tmp_path / "v2.zarr")
    finally:
        assert sorted(p.name for p in (tmp_path / "v2.zarr").iterdir()) == before


def test_an_uncommitted_recording_named_from_inside_its_archive_is_refused(tmp_path, monkeypatch):
    group = zarr.open_group(tmp_path / "a.zarr")
    recordings.reserve_name(group, "under_way", DIGEST_A)
    group.create_array("under_way", shape=(1,), dtype="int16")
    monkeypatch.chdir(tmp_path / "a.zarr")
    with pytest.raises(RecordingNotCommittedError):
        recordings.open_recording("under_way")


async def _never_created(store, key, attributes):
    return False


def _names_never_created_factory():
    create = bk.create_document

    async def names_never_created(store, key, attributes):
        if f"/{bk.NAMES}/" in key:
            return False
        return await create(store, key, attributes)

    return names_never_created


_names_never_created = _names_never_created_factory()


def test_a_bookkeeping_node_removed_by_another_process_during_its_deletion_is_deleted(tmp_path):
    """Two importers collecting the same stale mark at once: the folder goes between the store's
    check and its removal (LocalStore.delete_dir then raises FileNotFoundError); the node is
    absent, as asked, and the deletion succeeds."""

    class RacedStore(LocalStore):
        async def delete_dir(self, prefix: str) -> None:
            shutil.rmtree(self.root / prefix)
            raise FileNotFoundError(2, "No such file or directory", str(self.root / prefix))

    store = RacedStore(tmp_path)
    key = bk.bookkeeping_key("", bk.NAMES, "dawn")
    sync(bk.write_document(store, key, {"name": "dawn"}))
    sync(bk.delete_document(store, key))
    assert not (tmp_path / key).exists()
