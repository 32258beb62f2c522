"""An archive as a group of named recordings: how one is committed, the catalogue, and opening one.

A recording is written in place under its final name and becomes visible by one small
create-if-absent write, its catalogue entry (the commit protocol, docs/spec.md): a name is
reserved first (:func:`reserve_name`), the array is written, and :func:`publish_recording`
commits it. Readers here (the catalogue, :func:`open_recording`, :func:`recording_arrays`) see only
committed recordings. Archives written before this protocol keep their catalogue in the group's
``catalogue`` attribute; it is read, never rewritten, and their arrays are all committed.
"""

from __future__ import annotations

import asyncio
import os
import socket
import warnings
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zarr
from zarr.core.buffer import default_buffer_prototype

from zarr_aac.archive import entries as bk
from zarr_aac.archive.pending_writes import delete_tree
from zarr_aac.codec.aac_codec import AACCodec
from zarr_aac.errors import ArchiveError, NameTakenError, RecordingNotCommittedError, ZarrAACError
from zarr_aac.start_time import parse_start_time

if TYPE_CHECKING:
    import pandas as pd
    from zarr.core.common import AccessModeLiteral

CATALOGUE_ATTR = "catalogue"
"""The group attribute holding the catalogue in archives written before per-recording entries."""
TEMP_PREFIX = ".importing-"
"""Versions before the commit protocol wrote each recording under this prefix, then renamed it;
such arrays never appear in the catalogue, and gc removes those of dead processes."""
IMPORTING_ATTR = "importing"
"""Attribute of an array being written: the host and process id of the import that will commit it."""

PathLike = str | os.PathLike

PUBLISH_ATTEMPTS = 3
"""Commit attempts when the entry that won the race vanishes before it is read."""

CatalogueEntries = dict[str, dict[str, Any]]
"""The catalogue: each committed recording's attributes by array name."""


def open_archive(group: zarr.Group | PathLike, mode: AccessModeLiteral = "a") -> zarr.Group:
    """The archive group at ``group`` (a group passes through); an ArchiveError if there is none."""
    if isinstance(group, zarr.Group):
        return group
    _check_local_archive_path(group)
    try:
        try:
            return zarr.open_group(group, mode=mode)
        except zarr.errors.ContainsGroupError:
            # another process created it between zarr's look and its create: open that one
            return zarr.open_group(group, mode="r+")
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
    if (path / ".zarray").exists():
        raise ArchiveError(f"{path} is a Zarr v2 array, not an archive; give a new or empty folder for the archive")
    zarr_metadata = ("zarr.json", ".zgroup")
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
    """The group as the store holds it now (a Group object keeps the attributes it was opened with);
    read as the Zarr format it has, so zarr reads one metadata document rather than look for both formats'."""
    return zarr.open_group(store=group.store, path=group.path, mode=mode, zarr_format=group.metadata.zarr_format)


def catalogue_entries(group: zarr.Group) -> CatalogueEntries:
    """Every committed recording's attributes by name, as the store holds them now: the old
    catalogue attribute, overlaid by the per-recording entries (see :func:`committed_entries`)."""
    legacy = _entries_of(reopen(group, mode="r"))
    return {**legacy, **committed_entries(group)}


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


def legacy_catalogue(group: zarr.Group, *, reread: bool = True) -> CatalogueEntries:
    """The catalogue attribute of an archive written before per-recording entries, as the store
    holds it now (one read of the group's metadata; with ``reread`` False, as ``group`` was
    opened: for a group just opened); empty in an archive without one.

    Only versions before the commit protocol write it, so an import reads it once and passes it
    to :func:`recording_with_hash` and :func:`reserve_name` (``legacy=``) rather than each
    reading it again."""
    return _entries_of(reopen(group, mode="r") if reread else group)


def recording_with_hash(group: zarr.Group, digest: str, *, legacy: CatalogueEntries | None = None) -> str | None:
    """The name of the committed recording imported from content with SHA-256 ``digest``, if any:
    one read of its entry, then the old catalogue attribute of an archive written before entries
    (``legacy``, read here if not given: see :func:`legacy_catalogue`)."""
    store = group.store
    entry = bk.run(bk.read_document(store, bk.bookkeeping_key(group.path, bk.RECORDINGS, digest)))
    if entry is not None:
        return str(_checked_entry(entry, digest)["name"])
    for name, old in (legacy if legacy is not None else legacy_catalogue(group)).items():
        if old.get("source", {}).get("sha256") == digest:
            return name
    return None


def recording_names(group: zarr.Group, entries: CatalogueEntries | None = None) -> list[str]:
    """Sorted names of the group's arrays, leaving out old temporaries and uncommitted imports
    (``entries``: the catalogue, if already read)."""
    hidden = set(uncommitted_names(group, entries))
    return sorted(name for name in group.array_keys() if not name.startswith(TEMP_PREFIX) and name not in hidden)


def unfinished_imports(group: zarr.Group, entries: CatalogueEntries | None = None) -> list[str]:
    """Sorted names of imports not committed: under way, or left by a crashed process (old
    versions' temporary arrays too; ``entries``: the catalogue, if already read)."""
    legacy = [name for name in child_names(group) if name.startswith(TEMP_PREFIX)]
    return sorted([*legacy, *uncommitted_names(group, entries)])


def importing_owner() -> dict[str, Any]:
    """This process, as the owner of the imports it will commit."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


def owner_is_dead(owner: Any) -> bool:
    """Whether ``owner`` (an :func:`importing_owner` mark) is a process of this host that no longer runs."""
    if not isinstance(owner, dict) or owner.get("host") != socket.gethostname():
        return False
    try:
        pid = int(owner["pid"])
    except (KeyError, TypeError, ValueError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's process
        return False
    return False


def _now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass(frozen=True)
class Reservation:
    """A recording name reserved for one import: nobody else can commit a recording under it.

    Attributes
    ----------
    name
        The reserved name: the array is written in place under it.
    digest
        The SHA-256 of the content the recording will hold: its catalogue entry's key.
    token
        Unique to this reservation; the commit carries it, so a reader can tell this import's
        commit from another's.
    owner
        The reserving process (``{"host", "pid"}``): a reservation of a process that died on
        this host is garbage.
    reserved_at
        When, in UTC (ISO 8601): a reservation older than gc's grace period is garbage.
    """

    name: str
    digest: str
    token: str
    owner: dict[str, Any]
    reserved_at: str

    def as_document(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "digest": self.digest,
            "token": self.token,
            "owner": self.owner,
            "reserved_at": self.reserved_at,
        }


def reserve_name(
    group: zarr.Group,
    wanted: str,
    digest: str,
    *,
    exact: bool = False,
    owner: dict[str, Any] | None = None,
    legacy: CatalogueEntries | None = None,
) -> Reservation:
    """Reserve ``wanted``, or the first free ``wanted_2``, ``wanted_3``..., for a recording of content ``digest``.

    Call this before writing the array: the array is then written in place under
    ``reservation.name``, hidden from every reader until :func:`publish_recording` commits it, or
    removed with :func:`abandon_reservation`. The reservation is a create-if-absent write, so two
    importers never get one name, whatever process or machine they run on. Its cost does not
    grow with the archive (the names already taken are listed only after a collision).

    Parameters
    ----------
    group
        The archive, opened writable.
    wanted
        The name asked for (see :func:`check_recording_name`).
    digest
        The SHA-256 (hex) of the content the recording holds.
    exact
        ``wanted`` or an ArchiveError, not a variant.
    owner
        The process that will commit (default this one, :func:`importing_owner`).
    legacy
        The old catalogue attribute, whose names are taken, if the caller read it already
        (:func:`legacy_catalogue`); read here if not given.

    Returns
    -------
    Reservation

    Raises
    ------
    NameTakenError
        If ``exact`` and the name is taken (by a recording, a reservation or another node).
    """
    store = group.store
    bk.run(bk.ensure_bookkeeping(store, group.path))
    token, owner = bk.new_token(), owner or importing_owner()
    reservation = Reservation(wanted, digest, token, owner, _now())
    old_names = set(legacy if legacy is not None else legacy_catalogue(group))
    taken: set[str] | None = None
    candidate = wanted
    while True:
        reservation = Reservation(candidate, digest, token, owner, reservation.reserved_at)
        occupied = (
            candidate in old_names or (taken is not None and candidate in taken) or _node_exists(group, candidate)
        )
        if not occupied:
            # the pending mark comes first, so a crash at any later step leaves something gc finds
            bk.run(bk.write_document(store, _pending_key(group, token), reservation.as_document()))
            if bk.run(bk.create_document(store, _name_key(group, candidate), reservation.as_document())):
                return reservation
        if exact:
            bk.run(bk.delete_document(store, _pending_key(group, token)))
            raise name_taken(group, wanted)
        if taken is None:
            taken = old_names | child_names(group) | set(bk.run(bk.list_children(store, _bk(group, bk.NAMES))))
        taken.add(candidate)
        candidate = free_name(wanted, taken)


def reservation_of(group: zarr.Group, name: str) -> dict[str, Any] | None:
    """The reservation document of ``name`` (see :class:`Reservation`), None if it is not reserved."""
    return bk.run(bk.read_document(group.store, _name_key(group, name)))


def publish_recording(group: zarr.Group, reservation: Reservation, attributes: dict[str, Any]) -> str:
    """Commit the recording written under ``reservation.name``: one create-if-absent write of its
    catalogue entry, keyed by its content's SHA-256. Before it no reader sees the recording;
    after it every reader does.

    If another import committed the same content first, this recording is dropped (its array
    and reservation deleted) and the other's name returned: content is stored once however many
    processes import it at once.

    Parameters
    ----------
    group
        The archive, opened writable.
    reservation
        From :func:`reserve_name`; the array under its name must be complete.
    attributes
        The recording's attributes: its catalogue entry.

    Returns
    -------
    str
        The name of the committed recording holding this content: ``reservation.name``, or the
        other recording's.
    """
    store = group.store
    entry = {"name": reservation.name, "token": reservation.token, "recording": attributes}
    entry_key = bk.bookkeeping_key(group.path, bk.RECORDINGS, reservation.digest)
    for _ in range(PUBLISH_ATTEMPTS):
        if bk.run(bk.create_document(store, entry_key, entry)):
            # the import is committed: what follows only tidies up, and gc would do it as well
            bk.run(bk.delete_document(store, _pending_key(group, reservation.token)))
            return reservation.name
        other = bk.run(bk.read_document(store, entry_key))
        if other is not None:
            abandon_reservation(group, reservation)
            return str(_checked_entry(other, reservation.digest)["name"])
        # the other entry vanished before it could be read: it was a deleted recording's, dropped
    abandon_reservation(group, reservation)
    raise ArchiveError(
        f"{child_path(group, reservation.name)}: the catalogue entry of its content kept vanishing while this "
        "import committed (recordings of this content deleted meanwhile?); import the file again"
    )


def abandon_reservation(group: zarr.Group, reservation: Reservation) -> None:
    """Undo an uncommitted import: delete its array, then its name's reservation, then its pending
    mark, in that order (a crash between them leaves nothing visible, and gc finishes the job)."""
    store = group.store
    name_key = _name_key(group, reservation.name)
    held = bk.run(bk.read_document(store, name_key))
    if held is not None and held.get("token") == reservation.token:
        delete_node(group, reservation.name)
        bk.run(bk.delete_document(store, name_key))
    bk.run(bk.delete_document(store, _pending_key(group, reservation.token)))


def commit_state(store: Any, group_path: str, name: str) -> bool | None:
    """Whether ``name`` under the group at ``group_path`` is committed: None if it was never
    reserved (an array of an archive written before the protocol, or made by hand), else
    whether its catalogue entry exists and carries its reservation's token."""

    async def state() -> bool | None:
        held = await bk.read_document(store, bk.bookkeeping_key(group_path, bk.NAMES, name))
        if held is None:
            return None
        entry = await bk.read_document(store, bk.bookkeeping_key(group_path, bk.RECORDINGS, str(held.get("digest"))))
        return entry is not None and entry.get("name") == name and entry.get("token") == held.get("token")

    return bk.run(state())


def check_committed(array: zarr.Array) -> zarr.Array:
    """``array``, if it is no recording of an archive still waiting for its commit.

    Raises
    ------
    RecordingNotCommittedError
        If the array's name is reserved by an import that has not committed it.
    """
    parent, _, name = array.path.rpartition("/")
    if commit_state(array.store_path.store, parent, name) is False:
        raise RecordingNotCommittedError(
            f"{array.store_path} is not committed: its import is still under way or crashed. Wait for the "
            "import to finish; if it crashed, `zarr-aac gc ARCHIVE` removes what it left"
        )
    return array


def check_committed_at(location: PathLike, array: zarr.Array, storage_options: dict | None = None) -> zarr.Array:
    """``array``, opened from its own ``location`` (a path or URL ``ARCHIVE/NAME``), if it is no
    uncommitted recording of the archive holding it: opened so, the array does not know its
    parent, so the parent is opened here to look at its bookkeeping.

    Raises
    ------
    RecordingNotCommittedError
        If the parent is an archive in which an import reserved this name and has not committed it.
    """
    if array.path:
        return check_committed(array)
    text = os.fspath(location).rstrip("/")
    if "://" in text:
        parent, _, name = text.rpartition("/")
    else:
        # A local path: a bare name is a recording of the archive that is the working folder.
        local = Path(text)
        parent, name = os.fspath(local.parent), local.name
    if not parent or not name:
        return array
    try:
        group = zarr.open_group(parent, mode="r", storage_options=storage_options)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, zarr.errors.ContainsArrayError, ValueError):
        return array  # not inside a group, so inside no archive
    if commit_state(group.store, group.path, name) is False:
        check_committed(group[name])  # type: ignore[arg-type]
    return array


def uncommitted_names(group: zarr.Group, entries: CatalogueEntries | None = None) -> list[str]:
    """Sorted names reserved by imports that have not committed them (under way or crashed);
    ``entries``: the catalogue, if already read."""
    store = group.store
    reserved = bk.run(bk.list_children(store, _bk(group, bk.NAMES)))
    if not reserved:
        return []
    committed = set(committed_entries(group) if entries is None else entries)
    return [name for name in reserved if name not in committed]


def committed_entries(group: zarr.Group) -> CatalogueEntries:
    """The committed recordings' attributes by name, from their per-recording entries.

    The snapshot (:func:`refresh_snapshot`) saves reading each entry: entries it lacks, and
    entries changed since (see :func:`set_recording_attributes`), are read one by one. The
    entries' listing is always taken afresh, so the snapshot never adds or keeps a recording.
    """
    store = group.store

    async def read() -> CatalogueEntries:
        digests = await bk.list_children(store, _bk(group, bk.RECORDINGS))
        if not digests:
            return {}
        marks = await bk.list_children(store, _bk(group, bk.MODIFIED))
        snapshot = await bk.read_document(store, _bk(group, bk.SNAPSHOT)) or {}
        saved, seen_marks = snapshot.get("entries", {}), set(snapshot.get("modified", []))
        stale = changed_since(marks, seen_marks)
        fresh = await bk.read_documents(
            store, [_bk(group, bk.RECORDINGS, d) for d in digests if d not in saved or d in stale]
        )
        by_name = {}
        for digest in digests:
            entry = fresh.get(_bk(group, bk.RECORDINGS, digest), saved.get(digest))
            if entry is not None:  # None: removed after the listing
                entry = _checked_entry(entry, digest)
                by_name[str(entry["name"])] = dict(entry["recording"])
        return dict(sorted(by_name.items()))

    return bk.run(read())


def changed_since(marks: list[str], seen: set[str]) -> set[str]:
    """The digests whose entries a snapshot that saw the change marks ``seen`` may hold stale.

    Changing an entry writes a mark ``DIGEST-ID-a``, then the entry, then ``DIGEST-ID-b``: a
    snapshot is stale for a digest with a mark it has not seen, or with an ``a`` mark whose
    ``b`` is absent (a change under way, or one whose writer crashed).
    """
    present = set(marks)
    unseen = {mark.split("-")[0] for mark in marks if mark not in seen}
    unfinished = {mark.split("-")[0] for mark in marks if mark.endswith("-a") and f"{mark[:-2]}-b" not in present}
    return unseen | unfinished


def change_entry(group: zarr.Group, digest: str, entry: dict[str, Any]) -> None:
    """Replace the committed entry ``digest`` (its attributes changed), between the two change
    marks that tell snapshots it changed (see :func:`changed_since`)."""
    store = group.store
    mark = f"{digest}-{bk.new_token()}"
    bk.run(bk.write_document(store, _bk(group, bk.MODIFIED, f"{mark}-a"), {"at": _now()}))
    bk.run(bk.write_document(store, _bk(group, bk.RECORDINGS, digest), entry))
    bk.run(bk.write_document(store, _bk(group, bk.MODIFIED, f"{mark}-b"), {"at": _now()}))


def refresh_snapshot(group: zarr.Group) -> int:
    """Write the catalogue snapshot: every committed entry, with the change marks it has seen.

    Only an optimisation for reading the catalogue of a large archive (one object instead of one
    per recording); readers check it against the entries' listing and the change marks, so a
    stale snapshot costs time, never correctness. Returns the number of entries saved.
    """
    store = group.store

    async def refresh() -> int:
        marks = await bk.list_children(store, _bk(group, bk.MODIFIED))  # before the entries: see above
        digests = await bk.list_children(store, _bk(group, bk.RECORDINGS))
        documents = await bk.read_documents(store, [_bk(group, bk.RECORDINGS, d) for d in digests])
        saved = {d: doc for d in digests if (doc := documents[_bk(group, bk.RECORDINGS, d)]) is not None}
        await bk.write_document(store, _bk(group, bk.SNAPSHOT), {"entries": saved, "modified": marks})
        return len(saved)

    return bk.run(refresh())


def _checked_entry(entry: dict[str, Any], digest: str) -> dict[str, Any]:
    if not isinstance(entry.get("name"), str) or not isinstance(entry.get("recording"), dict):
        raise ArchiveError(
            f"the catalogue entry {bk.BOOKKEEPING}/{bk.RECORDINGS}/{digest} lacks a name or attributes "
            "(edited by hand?); restore it from a backup"
        )
    return entry


def _bk(group: zarr.Group, *parts: str) -> str:
    return bk.bookkeeping_key(group.path, *parts)


def _name_key(group: zarr.Group, name: str) -> str:
    return _bk(group, bk.NAMES, name)


def _pending_key(group: zarr.Group, token: str) -> str:
    return _bk(group, bk.PENDING, token)


def _node_exists(group: zarr.Group, name: str) -> bool:
    """Whether a Zarr node (v3 or v2 metadata) is stored under ``name``: both documents read at once,
    each by one request (on S3 an existence check of an absent key costs two)."""
    store = group.store
    path = child_path(group, name)

    async def look() -> bool:
        documents = (
            store.get(f"{path}/{document}", default_buffer_prototype()) for document in ("zarr.json", ".zarray")
        )
        return any(found is not None for found in await asyncio.gather(*documents))

    return bool(bk.run(look()))


def remove_stale_imports(group: zarr.Group, *, stacklevel: int = 2) -> list[str]:
    """Remove what imports left that died on this host; return the names of their recordings.
    The warning that says so names the line ``warnings.warn(..., stacklevel)`` would name if
    called where this function is: by default (2) the line that called the caller, the user's
    line when the caller is ``import_files``.

    An import marks its work with its host and process id: its pending mark (and, in archives
    of older versions, its temporary array's :data:`IMPORTING_ATTR`). One whose process no
    longer runs will never commit. Work of other hosts or of live processes is left alone
    (``zarr-aac gc`` removes it after a grace period), and ``zarr-aac ls`` lists it.
    """
    from zarr_aac.archive.garbage import collect

    report = collect(group, grace_period=None)
    removed = [item.name for item in report.removed if item.kind in {"uncommitted import", "old temporary array"}]
    if removed:
        warnings.warn(
            f"removed {len(removed)} unfinished import(s) left by a process that died: {', '.join(removed)}",
            stacklevel=stacklevel + 1,
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


def name_taken(group: zarr.Group, name: str) -> NameTakenError:
    """The error for a name asked for explicitly that another recording or node already has."""
    return NameTakenError(f"{child_path(group, name)} already exists; pick another name")


def delete_node(group: zarr.Group, name: str) -> None:
    """Delete the array ``name`` of ``group``, once writes still under way to it have ended."""
    delete_tree(group.store, child_path(group, name))


def recording_arrays(group: zarr.Group) -> dict[str, zarr.Array]:
    """Every committed zarr_aac array below ``group``, by path relative to it, sorted.

    Subgroups are searched too, but not the archive's bookkeeping; arrays whose import has not
    committed them, and old versions' temporary arrays, are left out.
    """
    found: dict[str, zarr.Array] = {}

    def walk(node: zarr.Group, prefix: str) -> None:
        hidden = set(uncommitted_names(node))
        for name, member in sorted(node.members(max_depth=0)):
            if name == bk.BOOKKEEPING or name.startswith(TEMP_PREFIX) or name in hidden:
                continue
            if isinstance(member, zarr.Group):
                walk(member, f"{prefix}{name}/")
            elif member.metadata.zarr_format == 3 and isinstance(member.serializer, AACCodec):
                found[f"{prefix}{name}"] = member

    walk(group, "")
    return found


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
    rows = [_flattened(entry) for entry in entries.values()]
    columns = list(dict.fromkeys(key for row in rows for key in row))
    return pd.DataFrame.from_records(rows, columns=columns, index=pd.Index(list(entries), name="name"))


def _flattened(entry: dict[str, Any]) -> dict[str, Any]:
    """An entry with its nested mappings one level up, their keys joined by dots (as
    ``pandas.json_normalize(max_level=1)`` gives them, which takes seconds for 10,000 entries)."""
    row: dict[str, Any] = {}
    for key, value in entry.items():
        if isinstance(value, dict):
            row.update({f"{key}.{inner}": item for inner, item in value.items()})
        else:
            row[key] = value
    return row


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
    RecordingNotCommittedError
        If the array's import has not committed it (still under way, or crashed).
    """
    node = path_or_array if isinstance(path_or_array, zarr.Array | zarr.Group) else _open_node(path_or_array)
    if isinstance(node, zarr.Array):
        return check_committed(_check_recording(node))
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
        node = zarr.open(path, mode="r")
    except FileNotFoundError as exc:
        raise ArchiveError(f"{path}: no Zarr array or group there") from exc
    return check_committed_at(path, node) if isinstance(node, zarr.Array) else node


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
    RecordingNotCommittedError
        If the recording's import has not committed it.
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
    array = _recording_in(group, name)
    array.attrs.update(changes)
    _change_catalogue_entry(group, name, changes)
    return array


def _change_catalogue_entry(group: zarr.Group, name: str, changes: dict[str, Any]) -> None:
    """Apply ``changes`` to the catalogue entry of the committed recording ``name``.

    A recording of an archive written before per-recording entries gets one now (its entry in
    the old catalogue attribute is left as it was, and is overridden by the new one).
    """
    store = group.store
    held = bk.run(bk.read_document(store, _name_key(group, name)))
    if held is not None:
        digest = str(held["digest"])
        entry = _checked_entry(bk.run(bk.read_document(store, _bk(group, bk.RECORDINGS, digest))) or {}, digest)
        change_entry(group, digest, {**entry, "recording": {**entry["recording"], **changes}})
        return
    legacy = _entries_of(reopen(group, mode="r")).get(name)
    if legacy is None:
        return  # an array outside any catalogue (made by hand): its attributes are all there is
    digest = legacy.get("source", {}).get("sha256")
    if not isinstance(digest, str):
        raise ArchiveError(
            f"{child_path(group, name)}: its entry in the old catalogue has no source.sha256, so it cannot get "
            "an entry of its own; its attributes were changed, its catalogue entry was not"
        )
    reservation = Reservation(name, digest, bk.new_token(), importing_owner(), _now())
    entry = {"name": name, "token": reservation.token, "recording": {**legacy, **changes}}
    # the entry first: without a reservation the recording counts as committed throughout
    if not bk.run(bk.create_document(store, _bk(group, bk.RECORDINGS, digest), entry)):
        raise ArchiveError(f"{child_path(group, name)}: another recording has its content's entry; try again")
    if not bk.run(bk.create_document(store, _name_key(group, name), reservation.as_document())):
        bk.run(bk.delete_document(store, _bk(group, bk.RECORDINGS, digest)))
        raise ArchiveError(f"{child_path(group, name)}: its name was reserved meanwhile; try again")


def _recording_in(group: zarr.Group, name: str) -> zarr.Array:
    node = group[name]
    if not isinstance(node, zarr.Array):
        raise ArchiveError(f"{node.store_path} is a group, not a recording")
    return check_committed(_check_recording(node))


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
