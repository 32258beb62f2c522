"""The archive's bookkeeping objects: where they live, how they are written, and the conditional write.

Everything lives under the archive group's :data:`BOOKKEEPING` child, as small Zarr group
documents (``zarr.json`` with ``attributes``), so that the archive stays a valid Zarr hierarchy
that zarr lists without warnings:

- ``names/NAME``: a name's reservation (digest, token, owner); written once, create-if-absent.
- ``recordings/SHA256``: a committed recording's catalogue entry (its name, the reservation's
  token and the recording's attributes); written once, create-if-absent: the commit.
- ``pending/TOKEN``: an import under way (name, digest, owner, start); deleted once committed or
  abandoned, so a cleanup needs to list only imports in flight.
- ``modified/SHA256-ID``: a mark written when an entry is changed after its commit.
- ``snapshot``: every entry as some reader last saw it; an optimisation, never the truth.

docs/spec.md ("Archive commit protocol") describes the protocol these serve.
"""

from __future__ import annotations

import asyncio
import errno
import json
import uuid
import warnings
import weakref
from collections.abc import Iterable
from typing import Any

from zarr.abc.store import Store
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import FsspecStore, LocalStore, MemoryStore, WrapperStore

from zarr_aac.errors import ArchiveError, NoConditionalWriteWarning

BOOKKEEPING = ".zarr-aac"
"""The archive group's child holding its bookkeeping; recording names cannot start with '.'."""
NAMES = "names"
RECORDINGS = "recordings"
PENDING = "pending"
MODIFIED = "modified"
SNAPSHOT = "snapshot"
CONCURRENT_READS = 32
"""Bookkeeping documents fetched at once when many are read."""
CONFLICT_RETRIES = 5
"""Attempts of a conditional write that S3 answers 409 (another conditional write of the key in flight)."""


def bookkeeping_key(group_path: str, *parts: str) -> str:
    """The store key of a bookkeeping node (``parts`` below :data:`BOOKKEEPING`) of the group at ``group_path``."""
    base = f"{group_path}/{BOOKKEEPING}" if group_path else BOOKKEEPING
    return "/".join((base, *parts))


def _document(attributes: dict[str, Any]) -> bytes:
    return json.dumps(
        {"zarr_format": 3, "node_type": "group", "attributes": attributes}, ensure_ascii=False, sort_keys=True
    ).encode()


def _attributes_of(data: bytes, key: str) -> dict[str, Any]:
    try:
        document = json.loads(data)
        attributes = document["attributes"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ArchiveError(
            f"{key}: the archive's bookkeeping document is unreadable ({exc}); restore it from a backup "
            "or delete it (zarr-aac gc lists what it removes)"
        ) from exc
    if not isinstance(attributes, dict):
        raise ArchiveError(f"{key}: the archive's bookkeeping document holds no attribute mapping")
    return attributes


def new_token() -> str:
    """A token no other reservation has: it ties a name's reservation to its commit."""
    return uuid.uuid4().hex


async def read_document(store: Store, node_key: str) -> dict[str, Any] | None:
    """The attributes of the bookkeeping node at ``node_key``, None if it is absent."""
    key = f"{node_key}/zarr.json"
    buffer = await store.get(key, default_buffer_prototype())
    return None if buffer is None else _attributes_of(buffer.to_bytes(), key)


async def read_documents(store: Store, node_keys: Iterable[str]) -> dict[str, dict[str, Any] | None]:
    """The attributes of many bookkeeping nodes, by key, fetched :data:`CONCURRENT_READS` at a time."""
    limit = asyncio.Semaphore(CONCURRENT_READS)

    async def one(node_key: str) -> tuple[str, dict[str, Any] | None]:
        async with limit:
            return node_key, await read_document(store, node_key)

    return dict(await asyncio.gather(*(one(k) for k in node_keys)))


async def write_document(store: Store, node_key: str, attributes: dict[str, Any]) -> None:
    """Write (or replace) the bookkeeping node at ``node_key``."""
    await store.set(f"{node_key}/zarr.json", default_buffer_prototype().buffer.from_bytes(_document(attributes)))


async def delete_document(store: Store, node_key: str) -> None:
    """Delete the bookkeeping node at ``node_key``; nothing if it is absent.

    On S3 the node is its one object, deleted by one request; elsewhere its folder goes, with
    whatever a write cut short left in it (on S3 a deletion of a folder lists it first)."""
    inner = _innermost(store)
    if isinstance(inner, FsspecStore) and _is_s3(inner):
        await store.delete(f"{node_key}/zarr.json")
        return
    try:
        await store.delete_dir(node_key)
    except FileNotFoundError:
        # Another process (an importer collecting the same stale mark) removed the folder
        # between the store's check and its removal: it is absent, as asked.
        return


async def list_children(store: Store, node_key: str) -> list[str]:
    """The names of the bookkeeping nodes directly under ``node_key``, sorted."""
    return sorted({name async for name in store.list_dir(node_key) if name != "zarr.json"})


async def create_document(store: Store, node_key: str, attributes: dict[str, Any]) -> bool:
    """Create the bookkeeping node at ``node_key`` if it is absent; True if this call created it.

    The one conditional write the protocol rests on. LocalStore creates the file with a hard
    link that fails if the name exists (a rename on Windows), MemoryStore with ``setdefault``, and
    an S3 store (s3fs) with ``PutObject`` and ``If-None-Match: *``: two writers never both win.
    Another store falls back on zarr's ``set_if_not_exists``, an existence check then a write,
    which is atomic only with one writer (a :class:`NoConditionalWriteWarning` says so once).
    Each document carries a unique token, so reading it back tells who won.
    """
    return await create_object(store, f"{node_key}/zarr.json", _document(attributes))


async def create_object(store: Store, key: str, data: bytes) -> bool:
    """Store ``data`` under ``key`` if nothing is stored there; True if this call stored it
    (the conditional write of :func:`create_document`, for any object)."""
    inner = _innermost(store)
    if isinstance(inner, FsspecStore) and _is_s3(inner):
        return await _s3_create(inner, key, data)
    if not isinstance(inner, LocalStore | MemoryStore):
        _warn_no_conditional_write(inner)
    await store.set_if_not_exists(key, default_buffer_prototype().buffer.from_bytes(data))
    stored = await store.get(key, default_buffer_prototype())
    return stored is not None and stored.to_bytes() == data


def _innermost(store: Store) -> Store:
    while isinstance(store, WrapperStore):
        store = store._store
    return store


def _is_s3(store: FsspecStore) -> bool:
    return type(store.fs).__module__.split(".")[0] == "s3fs"


async def _s3_create(store: FsspecStore, key: str, data: bytes) -> bool:
    path = f"{store.path.rstrip('/')}/{key}" if store.path else key
    for attempt in range(CONFLICT_RETRIES):
        try:
            await store.fs._pipe_file(path, data, mode="create")
        except FileExistsError:
            return False
        except OSError as exc:
            # 409 ConditionalRequestConflict: another conditional write of this key is in flight
            if exc.errno != errno.EBUSY or attempt == CONFLICT_RETRIES - 1:
                raise
            await asyncio.sleep(0.05 * 2**attempt)
        else:
            return True
    raise AssertionError("unreachable")


_warned_stores: set[str] = set()


def _warn_no_conditional_write(store: Store) -> None:
    kind = type(store).__name__ if not isinstance(store, FsspecStore) else f"FsspecStore({type(store.fs).__name__})"
    if kind in _warned_stores:
        return
    _warned_stores.add(kind)
    warnings.warn(
        f"{kind} has no atomic create-if-absent write: import into this archive from one process at a "
        "time (concurrent importers could take one name, or import one content, twice); LocalStore, "
        "MemoryStore and S3 stores have one (docs/scaling.md)",
        NoConditionalWriteWarning,
        stacklevel=4,
    )


_BOOKKEEPING_GROUPS = (NAMES, RECORDINGS, PENDING, MODIFIED)
"""The bookkeeping's groups, in the order they are created (the last one's presence says all are)."""
_seen_complete: dict[tuple[int, str], weakref.ref[Store]] = {}
"""Archives whose bookkeeping this process has seen complete, by store object and group path.
zarr-aac never removes the bookkeeping, so a process asks the store only once per open store."""


async def has_bookkeeping(store: Store, group_path: str) -> bool:
    """Whether the archive at ``group_path`` has all its bookkeeping groups (archives written
    before the commit protocol have none). Asks the store once per store object and archive."""
    seen = _seen_complete.get((id(store), group_path))
    if seen is not None and seen() is store:
        return True
    if not await store.exists(f"{bookkeeping_key(group_path, _BOOKKEEPING_GROUPS[-1])}/zarr.json"):
        return False
    _seen_complete[(id(store), group_path)] = weakref.ref(store)
    return True


async def ensure_bookkeeping(store: Store, group_path: str) -> None:
    """Create the bookkeeping groups (empty Zarr groups) if the archive lacks them, parents
    first and before any document goes below them, so zarr lists the hierarchy without
    warnings whenever a writer stops. Writers that race here write the same bytes."""
    if await has_bookkeeping(store, group_path):
        return
    await write_document(store, bookkeeping_key(group_path), {})
    for part in _BOOKKEEPING_GROUPS:
        await write_document(store, bookkeeping_key(group_path, part), {})
    _seen_complete[(id(store), group_path)] = weakref.ref(store)


def run(coroutine: Any) -> Any:
    """Run a bookkeeping coroutine on zarr's event loop."""
    return sync(coroutine)
