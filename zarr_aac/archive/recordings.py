"""An archive as a group of named recordings: its catalogue, its names, and opening one recording.

The group's ``catalogue`` attribute maps each recording's array name to its metadata. Only the
process that commits a finished import writes it, under the archive's lock, after reading it
afresh; everything else here reads. Arrays still being written carry :data:`TEMP_PREFIX` and are
never in the catalogue.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zarr
from zarr.storage import LocalStore

from zarr_aac.archive.pending_writes import delete_tree
from zarr_aac.codec.aac_codec import AACCodec
from zarr_aac.errors import ArchiveError, ZarrAACError

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

PathLike = str | os.PathLike

CatalogueEntries = dict[str, dict[str, Any]]
"""The ``catalogue`` attribute: each recording's attributes by array name."""


def open_archive(group: zarr.Group | PathLike, mode: AccessModeLiteral = "a") -> zarr.Group:
    """The archive group at ``group`` (a group passes through); an ArchiveError if there is none."""
    if isinstance(group, zarr.Group):
        return group
    try:
        return zarr.open_group(group, mode=mode)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, zarr.errors.ContainsArrayError) as exc:
        raise ArchiveError(f"{group} is not a zarr-aac archive (a Zarr group): {exc}") from exc


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
