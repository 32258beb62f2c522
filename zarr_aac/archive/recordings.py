"""An archive as a group of named recordings: its catalogue, its names, and opening one recording.

The group's ``catalogue`` attribute maps each recording's array name to its metadata. Only the
process that commits a finished import writes it, under the archive's lock, after reading it
afresh; everything else here reads. Arrays still being written carry :data:`TEMP_PREFIX` and are
never in the catalogue.
"""

from __future__ import annotations

import os
import socket
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zarr
from zarr.storage import LocalStore

from zarr_aac.archive.pending_writes import delete_tree
from zarr_aac.codec.aac_codec import AACCodec
from zarr_aac.errors import ArchiveError, ZarrAACError
from zarr_aac.start_time import parse_start_time

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, so one importing process per archive at a time
    _HAS_FLOCK = False
else:
    _HAS_FLOCK = True

if TYPE_CHECKING:
    import pandas as pd
    from zarr.core.common import AccessModeLiteral

CATALOGUE_ATTR = "catalogue"
TEMP_PREFIX = ".importing-"
"""Arrays being written carry this prefix; they never appear in the catalogue."""
IMPORTING_ATTR = "importing"
"""Attribute of an array being written: the host and process id of the import that will commit it."""

PathLike = str | os.PathLike

CatalogueEntries = dict[str, dict[str, Any]]
"""The ``catalogue`` attribute: each recording's attributes by array name."""


def open_archive(group: zarr.Group | PathLike, mode: AccessModeLiteral = "a") -> zarr.Group:
    """The archive group at ``group`` (a group passes through); an ArchiveError if there is none."""
    if isinstance(group, zarr.Group):
        return group
    _check_local_archive_path(group)
    try:
        return zarr.open_group(group, mode=mode)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, zarr.errors.ContainsArrayError) as exc:
        raise ArchiveError(f"{group} is not a zarr-aac archive (a Zarr group): {exc}") from exc


def _check_local_archive_path(group: PathLike) -> None:
    """Refuse a local path that is a file, or a folder of other files: zarr would fail with a bare
    OSError, or write ``zarr.json`` among the user's files."""
    if "://" in os.fspath(group):
        return
    path = Path(group)
    if path.is_file():
        raise ArchiveError(f"{path} is a file, not an archive; give a folder (a new one is created)")
    zarr_metadata = ("zarr.json", ".zgroup", ".zarray")
    if path.is_dir() and not any((path / name).exists() for name in zarr_metadata) and any(path.iterdir()):
        raise ArchiveError(
            f"{path} is a folder of other files, not a Zarr group (it has no zarr.json); "
            "give a new or empty folder for the archive"
        )


def check_recording_name(name: str) -> str:
    """``name`` if it can name a recording: one path segment, not starting with '.' or '__'."""
    if not isinstance(name, str) or not name or "/" in name or "\\" in name:
        raise ValueError(f"a recording name is one non-empty path segment without '/' or '\\', got {name!r}")
    if name.startswith(".") or name.startswith("__"):
        raise ValueError(
            f"a recording name cannot start with '.' or '__' (reserved by zarr-aac and zarr), got {name!r}"
        )
    return name


def reopen(group: zarr.Group, mode: AccessModeLiteral = "r+") -> zarr.Group:
    """The group as the store holds it now (a Group object keeps the attributes it was opened with)."""
    return zarr.open_group(store=group.store, path=group.path, mode=mode)


def catalogue_entries(group: zarr.Group) -> CatalogueEntries:
    """The catalogue as the store holds it now."""
    return _entries_of(reopen(group, mode="r"))


def _entries_of(group: zarr.Group) -> CatalogueEntries:
    """The group's catalogue attribute, checked to be a mapping of names to attribute mappings."""
    value = group.attrs.get(CATALOGUE_ATTR, {})
    if not isinstance(value, dict) or not all(isinstance(entry, dict) for entry in value.values()):
        raise ArchiveError(
            f"{group.store_path}: the {CATALOGUE_ATTR!r} attribute is not a mapping of names to attributes "
            "(edited by hand?); restore it or import into a new archive"
        )
    return dict(value)


def recording_array(group: zarr.Group, name: str) -> zarr.Array:
    """The array ``name`` of ``group``; an ArchiveError if a group has that name."""
    node = group[name]
    if not isinstance(node, zarr.Array):
        raise ArchiveError(f"{child_path(group, name)} is a group, not a recording; rename or remove it")
    return node


def recording_with_hash(entries: CatalogueEntries, digest: str) -> str | None:
    """The name of the recording imported from content with SHA-256 ``digest``, if any."""
    for name, entry in entries.items():
        if entry.get("source", {}).get("sha256") == digest:
            return name
    return None


def recording_names(group: zarr.Group) -> list[str]:
    """Sorted names of the group's arrays, leaving out imports still being written."""
    return sorted(name for name in group.array_keys() if not name.startswith(TEMP_PREFIX))


def unfinished_imports(group: zarr.Group) -> list[str]:
    """Sorted names of temporary arrays: imports under way, or left by a killed process."""
    return sorted(name for name in group.array_keys() if name.startswith(TEMP_PREFIX))


def importing_owner() -> dict[str, Any]:
    """This process, as the owner of the temporary arrays it will commit."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_imports(group: zarr.Group) -> list[str]:
    """Delete the temporary arrays of imports whose process has died on this host; return their names.

    An import marks its temporary array with its host and process id (:data:`IMPORTING_ATTR`);
    one whose process no longer runs will never be committed. Arrays of other hosts, of live
    processes, or without the mark (older versions) are left alone, and ``zarr-aac ls`` lists them.
    """
    host, removed = socket.gethostname(), []
    # from the store's listing: array_keys() would warn about other writers' zarr.<id>.partial files
    for name in sorted(n for n in child_names(group) if n.startswith(TEMP_PREFIX)):
        try:
            owner = zarr.open_array(store=group.store, path=child_path(group, name), mode="r").attrs.get(IMPORTING_ATTR)
        except (FileNotFoundError, KeyError, ValueError):  # committed or deleted meanwhile
            continue
        if isinstance(owner, dict) and owner.get("host") == host and not _process_alive(int(owner["pid"])):
            delete_node(group, name)
            removed.append(name)
    if removed:
        warnings.warn(
            f"removed {len(removed)} unfinished import(s) left by a process that died: {', '.join(removed)}",
            stacklevel=3,
        )
    return removed


def child_names(group: zarr.Group) -> set[str]:
    """Every name directly under the group in its store: its arrays and groups, and other
    writers' temporary files. Unlike ``group.array_keys()`` this neither parses nor warns about
    the ``zarr.<id>.partial`` files zarr creates while a concurrent importer writes metadata."""

    async def names() -> set[str]:
        return {name async for name in group.store.list_dir(group.path)}

    return zarr.core.sync.sync(names())


def child_path(group: zarr.Group, name: str) -> str:
    """The store path of ``name`` under ``group``."""
    return f"{group.path}/{name}" if group.path else name


def free_name(wanted: str, taken: set[str]) -> str:
    """``wanted``, or the first of ``wanted_2``, ``wanted_3``... not in ``taken``."""
    name, n = wanted, 1
    while name in taken:
        n += 1
        name = f"{wanted}_{n}"
    return name


def name_taken(group: zarr.Group, name: str) -> ArchiveError:
    """The error for a name asked for explicitly that another recording or node already has."""
    return ArchiveError(f"{child_path(group, name)} already exists; pick another name")


def delete_node(group: zarr.Group, name: str) -> None:
    """Delete the array ``name`` of ``group``, once writes still under way to it have ended."""
    delete_tree(group.store, child_path(group, name))


def _rename_node(group: zarr.Group, old: str, new: str) -> None:
    """Rename a child array; atomic on a local store, a copy then delete on other stores."""
    store = group.store
    if isinstance(store, LocalStore):
        base = _local_directory(store, group.path)
        os.rename(base / old, base / new)
        return
    zarr.core.sync.sync(_copy_prefix(store, child_path(group, old), child_path(group, new)))
    del group[old]


def _local_directory(store: LocalStore, path: str) -> Path:
    return Path(store.root, path) if path else Path(store.root)


async def _copy_prefix(store: Any, old: str, new: str) -> None:
    prototype = zarr.core.buffer.default_buffer_prototype()
    async for key in store.list_prefix(f"{old}/"):
        value = await store.get(key, prototype)
        await store.set(f"{new}/{key[len(old) + 1 :]}", value)


@contextmanager
def archive_lock(group: zarr.Group) -> Iterator[None]:
    """Keep other processes on this machine out of the catalogue while this one updates it: an
    advisory lock (flock) on the archive's directory. Object and memory stores have none."""
    store = group.store
    if not _HAS_FLOCK or not isinstance(store, LocalStore):
        yield
        return
    descriptor = os.open(_local_directory(store, group.path), os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # releases the lock


def commit_recording(
    group: zarr.Group, temp_name: str, wanted: str, attrs: dict[str, Any], *, exact: bool
) -> zarr.Array:
    """Give a finished temporary array a free name and its catalogue entry, or leave neither.

    Under the archive's lock the catalogue is read afresh, so an importer in another process
    neither loses entries nor takes the same name, and content it stored meanwhile is not stored
    twice (this temporary array is dropped). ``exact``: ``wanted`` or an error, not a variant.
    """
    with archive_lock(group):
        archive = reopen(group)
        entries = _entries_of(archive)
        existing = recording_with_hash(entries, attrs["source"]["sha256"])
        if existing is not None and existing in archive:
            delete_node(archive, temp_name)
            return recording_array(archive, existing)
        taken = set(entries) | child_names(archive)
        if exact and wanted in taken:
            raise name_taken(archive, wanted)
        name = free_name(wanted, taken)
        _rename_node(archive, temp_name, name)
        try:
            entries[name] = attrs
            # through the caller's object, so the catalogue it holds is the one just written
            group.attrs.update({CATALOGUE_ATTR: entries})
        except BaseException:
            delete_node(archive, name)
            raise
        return recording_array(archive, name)


def catalogue(group: zarr.Group | PathLike) -> pd.DataFrame:
    """Every recording of an archive, one row per array name, nested fields flattened with dots.

    Parameters
    ----------
    group
        The archive: a Zarr group or its path or URL.

    Returns
    -------
    pandas.DataFrame
        Indexed by array name; columns such as ``duration_s``, ``start_time``, ``source.sha256``
        and ``aac.bitrate``. Empty (with an index named ``name``) for an archive without recordings.

    Raises
    ------
    ArchiveError
        If ``group`` is not a Zarr group.
    ZarrAACError
        If pandas is not installed.
    """
    try:
        import pandas as pd
    except ModuleNotFoundError as exc:
        raise ZarrAACError("catalogue() needs pandas: pip install 'zarr-aac[xarray]'") from exc

    entries = catalogue_entries(open_archive(group, mode="r"))
    if not entries:
        return pd.DataFrame(index=pd.Index([], name="name"))
    frame = pd.json_normalize([entries[name] for name in entries], max_level=1)
    frame.index = pd.Index(list(entries), name="name")
    return frame


def open_recording(path_or_array: zarr.Array | zarr.Group | PathLike) -> zarr.Array:
    """One recording, stored with the zarr_aac codec.

    Parameters
    ----------
    path_or_array
        An array, an array path such as ``archive.zarr/NAME``, or an archive (a group or its
        path) that holds exactly one recording.

    Returns
    -------
    zarr.Array
        The recording, opened read-only when given as a path.

    Raises
    ------
    ArchiveError
        If nothing is stored there, the array is not stored with the zarr_aac codec, or the
        archive holds no recording or several (the message lists their names).
    """
    node = path_or_array if isinstance(path_or_array, zarr.Array | zarr.Group) else _open_node(path_or_array)
    if isinstance(node, zarr.Array):
        return _check_recording(node)
    names = recording_names(node)
    if len(names) != 1:
        where = path_or_array if not isinstance(path_or_array, zarr.Group) else node.store_path
        listing = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
        detail = f"{len(names)} recordings ({listing})" if names else "no recordings"
        raise ArchiveError(f"{where} holds {detail}; name one as {where}/NAME")
    return _check_recording(recording_array(node, names[0]))


def _check_recording(array: zarr.Array) -> zarr.Array:
    codec_of(array)
    return array


def codec_of(array: zarr.Array) -> AACCodec:
    """The recording's codec; an ArchiveError if the array is stored with another."""
    codec = array.serializer
    if not isinstance(codec, AACCodec):
        raise ArchiveError(f"{array.store_path} is not stored with the zarr_aac codec, so it is no recording")
    return codec


def _open_node(path: PathLike) -> zarr.Array | zarr.Group:
    try:
        return zarr.open(path, mode="r")
    except FileNotFoundError as exc:
        raise ArchiveError(f"{path}: no Zarr array or group there") from exc


def set_recording_attributes(
    recording: zarr.Array | PathLike,
    *,
    start_time: datetime | date | str | None = None,
    metadata: dict[str, Any] | None = None,
) -> zarr.Array:
    """Change a recording's start time or user metadata, in its attributes and the catalogue,
    without re-encoding it.

    Parameters
    ----------
    recording
        The recording: an array of an archive, or its path such as ``archive.zarr/NAME``.
    start_time
        The new start time, a datetime or ISO-8601 string (see :mod:`zarr_aac.start_time`);
        its ``start_time_source`` becomes ``"user"``. None leaves it as it is.
    metadata
        The new user metadata (JSON-serialisable), replacing the ``user`` attribute whole. None
        leaves it as it is.

    Returns
    -------
    zarr.Array
        The recording, with its new attributes.

    Raises
    ------
    ArchiveError
        If there is no zarr_aac recording there.
    ValueError
        If ``start_time`` cannot be read or ``metadata`` is not JSON-serialisable.
    """
    from zarr_aac.archive.import_options import parse_user_metadata

    changes: dict[str, Any] = {}
    if start_time is not None:
        changes["start_time"] = parse_start_time(start_time).isoformat()
        changes["start_time_source"] = "user"
    if metadata is not None:
        changes["user"] = parse_user_metadata(metadata)
    group, name = _archive_and_name(recording)
    _recording_in(group, name)
    with archive_lock(group):
        archive = reopen(group)
        array = _recording_in(archive, name)
        array.attrs.update(changes)
        entries = catalogue_entries(archive)
        if name in entries:
            entries[name] = {**entries[name], **changes}
            archive.attrs.update({CATALOGUE_ATTR: entries})
    return array


def _recording_in(group: zarr.Group, name: str) -> zarr.Array:
    node = group[name]
    if not isinstance(node, zarr.Array):
        raise ArchiveError(f"{node.store_path} is a group, not a recording")
    return _check_recording(node)


def _archive_and_name(recording: zarr.Array | PathLike) -> tuple[zarr.Group, str]:
    """The writable group holding a recording, and its name in it."""
    if isinstance(recording, zarr.Array):
        parent, _, name = recording.path.rpartition("/")
        return zarr.open_group(store=recording.store, path=parent, mode="r+"), name
    parent, _, name = os.fspath(recording).rstrip("/").rpartition("/")
    if not parent or not name:
        raise ArchiveError(f"{recording}: give the recording as ARCHIVE/NAME")
    group = open_archive(parent, mode="r+")
    if name not in group:
        raise ArchiveError(f"{parent} has no recording {name!r}")
    return group, name
