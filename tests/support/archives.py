"""What an archive holds, as its readers and its bookkeeping see it, for tests of the commit protocol."""

from __future__ import annotations

import zarr
from zarr.core.sync import sync

from zarr_aac.archive import entries as bk
from zarr_aac.archive.recordings import catalogue_entries


def nodes(group: zarr.Group) -> list[str]:
    """The group's children in zarr's listing, leaving out the archive's bookkeeping."""
    return sorted(name for name in group if name != bk.BOOKKEEPING)


def bookkeeping(group: zarr.Group, part: str) -> list[str]:
    """The children of one part of the bookkeeping (``bk.NAMES``, ``bk.PENDING``, ``bk.RECORDINGS``...)."""
    return sync(bk.list_children(group.store, bk.bookkeeping_key(group.path, part)))


def assert_nothing_left(group: zarr.Group) -> None:
    """No recording, no catalogue entry, no reservation and no pending import: as if nothing was imported."""
    assert nodes(group) == []
    assert catalogue_entries(group) == {}
    assert bookkeeping(group, bk.NAMES) == []
    assert bookkeeping(group, bk.PENDING) == []
    assert bookkeeping(group, bk.RECORDINGS) == []
