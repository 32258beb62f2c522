"""How ``archive/recordings.py`` looks things up in an archive: the old catalogue read once an
import and handed on (``legacy=``), a node looked for by reading both formats' metadata at once, a
group reopened as the Zarr format it has, a Zarr v2 folder told apart from a folder of other files,
a recording named by URL checked for its commit, stale imports removed. Each result is checked
against what the store holds or what was read from it, not against the function's own state
(docs/claims.md, "Mutation testing")."""

from __future__ import annotations

import sys
import uuid

import pytest
import zarr
from zarr.core.sync import sync
from zarr.storage import LocalStore, MemoryStore, WrapperStore

from zarr_aac.archive import entries as bk
from zarr_aac.archive import garbage, recordings
from zarr_aac.errors import ArchiveError, RecordingNotCommittedError

DIGEST_A, DIGEST_B = "a" * 64, "b" * 64


class ReadLoggingStore(WrapperStore):
    """Records the keys read through it, in order."""

    def __init__(self, store, log: list[str] | None = None) -> None:
        super().__init__(store)
        self.log = log if log is not None else []

    def _with_store(self, store):
        return type(self)(store, self.log)

    async def get(self, key, prototype, byte_range=None):
        self.log.append(key)
        return await super().get(key, prototype, byte_range)


def old_archive() -> zarr.Group:
    """An archive of a version before per-recording entries: its catalogue in an attribute."""
    group = zarr.open_group(store=MemoryStore(), mode="a")
    group.attrs[recordings.CATALOGUE_ATTR] = {"old": {"source": {"sha256": DIGEST_A}}}
    return group


def test_the_old_catalogue_is_read_from_the_store_unless_the_group_was_just_opened():
    group = zarr.open_group(store=MemoryStore(), mode="a")
    opened_before = zarr.open_group(store=group.store, mode="r")
    group.attrs[recordings.CATALOGUE_ATTR] = {"old": {"source": {"sha256": DIGEST_A}}}
    assert recordings.legacy_catalogue(opened_before) == {"old": {"source": {"sha256": DIGEST_A}}}
    assert recordings.legacy_catalogue(opened_before, reread=False) == {}


def test_the_old_catalogue_is_read_from_a_read_only_archive(tmp_path):
    old_archive_path = tmp_path / "old.zarr"
    group = zarr.open_group(old_archive_path, mode="a")
    group.attrs[recordings.CATALOGUE_ATTR] = {"old": {"source": {"sha256": DIGEST_A}}}
    read_only = zarr.open_group(store=LocalStore(old_archive_path, read_only=True), mode="r")
    assert recordings.legacy_catalogue(read_only) == {"old": {"source": {"sha256": DIGEST_A}}}


def test_a_content_hash_is_looked_up_in_the_old_catalogue_given_rather_than_the_stored_one():
    group = old_archive()
    assert recordings.recording_with_hash(group, DIGEST_A) == "old"
    assert recordings.recording_with_hash(group, DIGEST_A, legacy={}) is None
    given = {"given": {"source": {"sha256": DIGEST_B}}}
    assert recordings.recording_with_hash(group, DIGEST_B, legacy=given) == "given"
    assert recordings.recording_with_hash(group, DIGEST_B) is None


def test_the_names_of_the_old_catalogue_given_are_taken_and_the_stored_one_is_not_read_again():
    group = old_archive()
    assert recordings.reserve_name(group, "given", DIGEST_B, legacy={"given": {}}).name == "given_2"
    # the caller's catalogue stands for the stored one: "old" is free by it (no node holds it)
    assert recordings.reserve_name(group, "old", DIGEST_B, legacy={}).name == "old"
    assert recordings.reserve_name(old_archive(), "old", DIGEST_B).name == "old_2"


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_a_node_of_either_zarr_format_takes_its_name(zarr_format):
    group = zarr.open_group(store=MemoryStore(), mode="a")
    zarr.create_array(group.store, name="dawn", shape=(1,), dtype="int16", zarr_format=zarr_format)
    reservation = recordings.reserve_name(group, "dawn", DIGEST_A)
    assert reservation.name == "dawn_2"
    with pytest.raises(ArchiveError):
        recordings.reserve_name(group, "dawn", DIGEST_B, exact=True)


def test_other_files_under_a_name_do_not_take_it():
    group = zarr.open_group(store=MemoryStore(), mode="a")
    zarr.create_array(group.store, name="dusk", shape=(1,), dtype="int16")
    store = ReadLoggingStore(group.store)
    reservation = recordings.reserve_name(zarr.open_group(store=store, mode="r+"), "dawn", DIGEST_A, exact=True)
    assert reservation.name == "dawn"
    assert {"dawn/zarr.json", "dawn/.zarray"} <= set(store.log)


def test_a_group_is_reopened_reading_only_its_own_formats_metadata():
    store = ReadLoggingStore(MemoryStore())
    group = zarr.open_group(store=store, mode="a")
    group.attrs["x"] = 1
    store.log.clear()
    assert recordings.reopen(group, mode="r").attrs["x"] == 1
    assert store.log == ["zarr.json"]


def test_a_zarr_v2_group_folder_is_an_archive_and_a_v2_array_folder_is_refused_with_what_to_do(tmp_path):
    zarr.open_group(tmp_path / "v2group.zarr", mode="a", zarr_format=2).attrs["kept"] = True
    opened = recordings.open_archive(tmp_path / "v2group.zarr")
    assert opened.attrs["kept"] is True
    zarr.create_array(tmp_path / "v2.zarr", shape=(1,), dtype="int16", zarr_format=2)
    with pytest.raises(ArchiveError) as caught:
        recordings.open_archive(tmp_path / "v2.zarr")
    assert str(caught.value) == (
        f"{tmp_path / 'v2.zarr'} is a Zarr v2 array, not an archive; give a new or empty folder for the archive"
    )


@pytest.mark.filterwarnings("ignore::zarr_aac.errors.NoConditionalWriteWarning")
@pytest.mark.parametrize("trailing", ["", "/"])
def test_an_uncommitted_recording_opened_by_url_is_refused(tmp_path, trailing):
    url = f"memory://{uuid.uuid4().hex}/a.zarr"
    group = zarr.open_group(url, mode="a")
    recordings.reserve_name(group, "under_way", DIGEST_A)
    group.create_array("under_way", shape=(1,), dtype="int16")
    array = zarr.open_array(f"{url}/under_way", mode="r")
    with pytest.raises(RecordingNotCommittedError):
        recordings.check_committed_at(f"{url}/under_way{trailing}", array)


def stack_depth() -> int:
    """Frames on the stack of the caller of this function, the caller's included."""
    frame, depth = sys._getframe(1), 0
    while frame is not None:
        frame, depth = frame.f_back, depth + 1
    return depth


def test_the_warning_of_dead_imports_names_the_line_its_stacklevel_says(monkeypatch):
    """``stacklevel`` counts from the caller of ``remove_stale_imports``, as in ``warnings.warn``.
    ``collect`` is replaced by one that reports removals and measures the frames between this test
    and the function's body (mutmut's trampolines add two), so the lines asked for are known."""
    group = zarr.open_group(store=MemoryStore(), mode="a")
    seen = {}

    def collect(archive, *, grace_period):
        assert archive is group and grace_period is None
        seen["depth"] = stack_depth()
        removed = [
            garbage.Garbage("gone", "uncommitted import", ""),
            garbage.Garbage(f"{recordings.TEMP_PREFIX}old", "old temporary array", ""),
            garbage.Garbage("dawn", "entry of a deleted recording", ""),
        ]
        return garbage.GCReport(tuple(removed), (), False)

    monkeypatch.setattr(garbage, "collect", collect)

    def remove(**stacklevel):
        return recordings.remove_stale_imports(group, **stacklevel)

    remove_line = remove.__code__.co_firstlineno + 1
    test_depth = stack_depth()
    with pytest.warns(UserWarning) as caught:
        call_line = sys._getframe().f_lineno + 1
        assert remove() == ["gone", f"{recordings.TEMP_PREFIX}old"]
    (default,) = caught
    assert str(default.message) == (
        f"removed 2 unfinished import(s) left by a process that died: gone, {recordings.TEMP_PREFIX}old"
    )
    extra = seen["depth"] - test_depth - 3  # frames other than this test, remove(), the body and collect()
    places = []
    for stacklevel in ({"stacklevel": 1 + extra}, {"stacklevel": 2 + extra}, {}, {"stacklevel": 2}):
        with pytest.warns(UserWarning) as caught:
            line = sys._getframe().f_lineno + 1
            remove(**stacklevel)
        places.append((caught[0].filename, caught[0].lineno))
    assert places[0] == (__file__, remove_line)
    assert places[1] == (__file__, line)
    # the default is 2: the line that called the caller (this test's, when nothing is in between)
    assert places[2] == places[3]
    if not extra:
        assert (default.filename, default.lineno) == (__file__, call_line)


def test_an_archive_in_a_subgroup_gets_its_bookkeeping_there():
    root = zarr.open_group(store=MemoryStore(), mode="a")
    site = root.create_group("site")
    recordings.reserve_name(site, "dawn", DIGEST_A)
    keys = set(sync(_keys(root.store)))
    assert f"{bk.bookkeeping_key('site')}/zarr.json" in keys
    assert f"{bk.bookkeeping_key('')}/zarr.json" not in keys


async def _keys(store) -> list[str]:
    return [key async for key in store.list()]
