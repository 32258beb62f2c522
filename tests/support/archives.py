"""What an archive holds, as its readers and its bookkeeping see it, for tests of the commit protocol."""

from __future__ import annotations

from dataclasses import dataclass

import zarr
from zarr.abc.store import ByteRequest, Store
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.core.sync import sync
from zarr.storage import WrapperStore

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


class SimulatedCrash(Exception):
    """The process 'died' here: this write and every store operation after it fail."""


@dataclass
class CrashPoint:
    """The write at which a CrashingStore 'dies', and how far it got; shared by its copies."""

    crash_at: int
    writes: int = 0
    crashed: bool = False


class CrashingStore(WrapperStore[Store]):
    """Wraps a store and fails its ``crash_at``-th write (set, set_if_not_exists, delete) and
    every operation after it, as if the process had been killed there: whatever the importer
    tries to tidy up afterwards does not reach the store either."""

    def __init__(self, store: Store, point: CrashPoint | None = None) -> None:
        super().__init__(store)
        self.point = point if point is not None else CrashPoint(crash_at=0)

    def _with_store(self, store: Store) -> CrashingStore:
        return type(self)(store, self.point)

    @property
    def crashed(self) -> bool:
        return self.point.crashed

    def _write(self) -> None:
        self._check_alive()
        self.point.writes += 1
        if self.point.writes >= self.point.crash_at:
            self.point.crashed = True
            raise SimulatedCrash(f"killed at write {self.point.writes}")

    def _check_alive(self) -> None:
        if self.point.crashed:
            raise SimulatedCrash("the process is dead")

    async def set(self, key: str, value: Buffer) -> None:
        self._write()
        await self._store.set(key, value)

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        self._write()
        await self._store.set_if_not_exists(key, value)

    async def delete(self, key: str) -> None:
        self._write()
        await self._store.delete(key)

    async def delete_dir(self, prefix: str) -> None:
        self._write()
        await self._store.delete_dir(prefix)

    async def get(self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None) -> Buffer | None:
        self._check_alive()
        return await self._store.get(key, prototype, byte_range)

    async def exists(self, key: str) -> bool:
        self._check_alive()
        return await self._store.exists(key)
