"""Removing what crashed imports left in an archive: ``zarr_aac.gc`` and ``zarr-aac gc``.

Only what is provably dead goes: an import that never committed, whose process died on this
host or which started longer ago than the grace period; old versions' temporary arrays of dead
processes; the catalogue entries of recordings whose array was deleted by hand. Nothing
committed and present is touched (docs/scaling.md, "Garbage collection").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import zarr

from zarr_aac.archive import entries as bk
from zarr_aac.archive.recordings import (
    CATALOGUE_ATTR,
    IMPORTING_ATTR,
    TEMP_PREFIX,
    PathLike,
    child_names,
    child_path,
    delete_node,
    open_archive,
    owner_is_dead,
    refresh_snapshot,
)

DEFAULT_GRACE_PERIOD = timedelta(hours=24)
"""An uncommitted import older than this is taken for dead whatever its host: no import of one
file runs this long. Imports on this host are judged by their process instead, at once."""


@dataclass(frozen=True)
class Garbage:
    """One thing gc removed, or found and left.

    Attributes
    ----------
    name
        The recording name (or old temporary array) it concerns.
    kind
        ``"uncommitted import"``, ``"old temporary array"``, ``"entry of a deleted recording"`` or
        ``"pending mark of a committed import"``.
    reason
        Why it was removed, or left.
    """

    name: str
    kind: str
    reason: str


@dataclass(frozen=True)
class GCReport:
    """What :func:`gc` removed (or, with ``dry_run``, would remove) and what it left.

    Attributes
    ----------
    removed
        The garbage removed, or that a dry run found.
    kept
        Unfinished imports left alone: their process runs, or they are younger than the grace period.
    dry_run
        True if nothing was deleted.
    """

    removed: tuple[Garbage, ...]
    kept: tuple[Garbage, ...]
    dry_run: bool


def gc(
    archive: zarr.Group | PathLike, *, dry_run: bool = False, grace_period: timedelta = DEFAULT_GRACE_PERIOD
) -> GCReport:
    """Remove what crashed imports left in ``archive``; nothing committed is touched.

    Parameters
    ----------
    archive
        The archive: a Zarr group or its path or URL.
    dry_run
        Only report what would be removed.
    grace_period
        An uncommitted import started longer ago than this is removed whatever host it runs on;
        one of a dead process on this host is removed at once. Give a period longer than any
        import of one file takes: an import still running past it would lose its work.

    Returns
    -------
    GCReport

    Raises
    ------
    ArchiveError
        If ``archive`` is not a Zarr group.
    ValueError
        If ``grace_period`` is negative.
    """
    if grace_period < timedelta(0):
        raise ValueError(f"grace_period must not be negative, got {grace_period}")
    group = open_archive(archive, mode="r" if dry_run else "r+")
    report = collect(group, grace_period=grace_period, dry_run=dry_run, full=True)
    if not dry_run and _has_bookkeeping(group):
        refresh_snapshot(group)
    return report


def collect(
    group: zarr.Group, *, grace_period: timedelta | None, dry_run: bool = False, full: bool = False
) -> GCReport:
    """Find and (unless ``dry_run``) remove the archive's garbage.

    Without ``full``, what an import does before its own (cost independent of the archive's
    size): the pending marks of imports in flight, and old temporary arrays only in archives
    that may hold them. ``grace_period`` None: imports of other hosts are never judged dead.
    """
    removed: list[Garbage] = []
    kept: list[Garbage] = []
    _pending(group, grace_period, dry_run, removed, kept)
    if full or CATALOGUE_ATTR in group.attrs or not _has_bookkeeping(group):
        _old_temporaries(group, dry_run, removed, kept)
    if full:
        _entries_of_deleted_recordings(group, dry_run, removed)
    return GCReport(tuple(removed), tuple(kept), dry_run)


def _has_bookkeeping(group: zarr.Group) -> bool:
    return bool(bk.run(bk.has_bookkeeping(group.store, group.path)))


def _pending(
    group: zarr.Group, grace_period: timedelta | None, dry_run: bool, removed: list[Garbage], kept: list[Garbage]
) -> None:
    store = group.store
    tokens = bk.run(bk.list_children(store, bk.bookkeeping_key(group.path, bk.PENDING)))
    marks = bk.run(bk.read_documents(store, [bk.bookkeeping_key(group.path, bk.PENDING, t) for t in tokens]))
    for token in tokens:
        mark_key = bk.bookkeeping_key(group.path, bk.PENDING, token)
        mark = marks[mark_key]
        if mark is None:  # finished meanwhile
            continue
        name, digest = str(mark.get("name")), str(mark.get("digest"))
        entry = bk.run(bk.read_document(store, bk.bookkeeping_key(group.path, bk.RECORDINGS, digest)))
        if entry is not None and entry.get("token") == token:
            removed.append(Garbage(name, "pending mark of a committed import", "committed; its mark was left"))
            if not dry_run:
                bk.run(bk.delete_document(store, mark_key))
            continue
        reason = _why_dead(mark, grace_period)
        if reason is None:
            kept.append(Garbage(name, "uncommitted import", f"under way: {_owner_text(mark.get('owner'))}"))
            continue
        removed.append(Garbage(name, "uncommitted import", reason))
        if dry_run:
            continue
        # array, reservation, mark: in this order a crash here leaves nothing visible, and the mark to retry
        name_key = bk.bookkeeping_key(group.path, bk.NAMES, name)
        held = bk.run(bk.read_document(store, name_key))
        if held is not None and held.get("token") == token:
            delete_node(group, name)
            bk.run(bk.delete_document(store, name_key))
        bk.run(bk.delete_document(store, mark_key))


def _why_dead(mark: dict[str, Any], grace_period: timedelta | None) -> str | None:
    owner = mark.get("owner")
    if owner_is_dead(owner):
        return f"its process died ({_owner_text(owner)})"
    if grace_period is None:
        return None
    try:
        started = datetime.fromisoformat(str(mark.get("reserved_at")))
    except ValueError:
        return None
    age = datetime.now(UTC) - started
    if age > grace_period:
        return f"started {age.total_seconds() / 3600:.1f} h ago, beyond the grace period of {grace_period}"
    return None


def _owner_text(owner: Any) -> str:
    if isinstance(owner, dict):
        return f"host {owner.get('host')}, pid {owner.get('pid')}"
    return "owner unknown"


def _old_temporaries(group: zarr.Group, dry_run: bool, removed: list[Garbage], kept: list[Garbage]) -> None:
    """Temporary arrays of versions that imported under a temporary name and renamed."""
    for name in sorted(n for n in child_names(group) if n.startswith(TEMP_PREFIX)):
        try:
            owner = zarr.open_array(store=group.store, path=child_path(group, name), mode="r").attrs.get(IMPORTING_ATTR)
        except (FileNotFoundError, KeyError, ValueError):  # deleted meanwhile
            continue
        if owner_is_dead(owner):
            removed.append(Garbage(name, "old temporary array", f"its process died ({_owner_text(owner)})"))
            if not dry_run:
                delete_node(group, name)
        else:
            kept.append(Garbage(name, "old temporary array", f"its process may run: {_owner_text(owner)}"))


def _entries_of_deleted_recordings(group: zarr.Group, dry_run: bool, removed: list[Garbage]) -> None:
    """Committed entries whose array is gone (deleted by hand): an import of their content would
    otherwise return a recording that no longer exists."""
    store = group.store
    digests = bk.run(bk.list_children(store, bk.bookkeeping_key(group.path, bk.RECORDINGS)))
    documents = bk.run(bk.read_documents(store, [bk.bookkeeping_key(group.path, bk.RECORDINGS, d) for d in digests]))
    for digest in digests:
        entry = documents[bk.bookkeeping_key(group.path, bk.RECORDINGS, digest)]
        if entry is None:
            continue
        name = str(entry.get("name"))
        if bk.run(store.exists(f"{child_path(group, name)}/zarr.json")):
            continue
        removed.append(Garbage(name, "entry of a deleted recording", "its array is gone"))
        if not dry_run:
            drop_entry(group, digest, name, str(entry.get("token")))


def drop_entry(group: zarr.Group, digest: str, name: str, token: str) -> None:
    """Remove the committed entry ``digest`` of a recording whose array is gone, and its name's
    reservation: between change marks, so a catalogue snapshot does not keep it."""
    store = group.store
    mark = f"{digest}-{bk.new_token()}"
    now = {"at": datetime.now(UTC).isoformat()}
    bk.run(bk.write_document(store, bk.bookkeeping_key(group.path, bk.MODIFIED, f"{mark}-a"), now))
    bk.run(bk.delete_document(store, bk.bookkeeping_key(group.path, bk.RECORDINGS, digest)))
    name_key = bk.bookkeeping_key(group.path, bk.NAMES, name)
    held = bk.run(bk.read_document(store, name_key))
    if held is not None and held.get("token") == token:
        bk.run(bk.delete_document(store, name_key))
    bk.run(bk.write_document(store, bk.bookkeeping_key(group.path, bk.MODIFIED, f"{mark}-b"), now))
