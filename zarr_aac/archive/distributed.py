"""Import on a dask.distributed cluster: ``import_files(sources, archive, client=client)``.

Each source is one task. The task runs :func:`~zarr_aac.archive.importer.import_file` on a
worker, which reads the source (a path the worker sees, or a URL) and writes the recording
straight into the archive, opened there from its URL and fsspec options; nothing but names,
options and outcomes travels between this process and the workers. How a recording is
committed, kept unique and deduplicated is import_file's business, the same on a worker as
anywhere else.

A worker that dies mid-file leaves no recording: the scheduler runs the task again on another
worker, whose import starts that file afresh. Ctrl-C here cancels the tasks not yet started;
a file a worker is importing at that moment is finished (or abandoned) as one whole import.
"""

from __future__ import annotations

import asyncio
import json
import warnings
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import zarr
from tqdm.auto import tqdm
from zarr.core.array import AsyncArray
from zarr.core.sync import sync

from zarr_aac.archive.import_options import ImportOptions
from zarr_aac.archive.locations import ArchiveLocation, RemoteSource, Source
from zarr_aac.archive.recordings import recording_array, refresh_snapshot
from zarr_aac.errors import ImportFailedError

if TYPE_CHECKING:
    from distributed import Client, Future

__all__ = ["import_on_cluster"]


@dataclass(frozen=True)
class _Imported:
    """What a worker sends back for one source: its recording's name and the warnings it raised."""

    name: str
    warnings: list[tuple[type[Warning], str]] = field(default_factory=list)


_opened_archives: dict[str, zarr.Group] = {}
"""In a worker process: the archives its tasks opened, by :func:`_archive_key`. One open archive
(one store, one s3fs client and its connections) serves every task of the worker."""


def _archive_key(archive: ArchiveLocation) -> str:
    return json.dumps([archive.url, archive.storage_options], sort_keys=True, default=repr)


def _archive_on_worker(archive: ArchiveLocation) -> zarr.Group:
    """The archive, opened by the first task of this worker that needs it."""
    key = _archive_key(archive)
    group = _opened_archives.get(key)
    if group is None:
        group = _opened_archives[key] = archive.open()
    return group


def _import_on_worker(source: Source, archive: ArchiveLocation, options: ImportOptions) -> _Imported:
    """The task: import one source as import_file does; a failure raises, named after the source."""
    from zarr_aac.archive.importer import _per_file_error, import_named

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            _, name = import_named(source, _archive_on_worker(archive), None, options)
        except Exception as exc:
            named = _per_file_error(source, exc)
            if named is exc:
                raise
            raise named from exc
    return _Imported(name, [(w.category, str(w.message)) for w in caught])


def _for_workers(source: Source) -> Source:
    """The source as the workers find it: a relative path made absolute (they have their own
    working directories)."""
    return source.absolute() if not isinstance(source, RemoteSource) else source


def import_on_cluster(
    client: Client, sources: list[Source], archive: ArchiveLocation, options: ImportOptions
) -> list[zarr.Array]:
    """Import ``sources`` into ``archive`` on the cluster behind ``client``, one task per file.

    Parameters
    ----------
    client
        A ``dask.distributed`` Client connected to the cluster.
    sources
        The files, parsed (:func:`zarr_aac.archive.locations.parse_source`).
    archive
        Where the archive is, as the workers open it.
    options
        The import options; ``progress`` shows a bar over files here, none on the workers.

    Returns
    -------
    list of zarr.Array
        The recording of each source, in the order of ``sources``, opened in this process.

    Raises
    ------
    ImportFailedError
        If some files could not be imported (the others are); ``failures`` maps each file to
        its error, as the local import_files does. A file whose task killed its workers more
        often than the scheduler allows (``distributed.scheduler.allowed-failures``) fails
        with the scheduler's KilledWorker as the cause.
    ArchiveError
        If the archive cannot be opened here (it is created here first, so that workers do
        not race to create it).
    """
    import distributed

    from zarr_aac.archive.importer import SNAPSHOT_AFTER, _per_file_error

    group = archive.open()
    per_file = replace(options, progress=False)
    futures: list[Future] = client.map(
        _import_on_worker,
        [_for_workers(s) for s in sources],
        archive=archive,
        options=per_file,
        pure=False,  # a new task per call, even for sources imported by an earlier call
    )
    where = {future.key: i for i, future in enumerate(futures)}
    pending = set(futures)
    names: dict[int, str] = {}
    failures: dict[str, BaseException] = {}
    caught: list[tuple[type[Warning], str]] = []
    bar = tqdm(total=len(futures), desc="importing", unit="file", disable=None if options.progress else True)
    try:
        with bar:
            for future in distributed.as_completed(futures):
                i = where[future.key]
                if future.status == "error":
                    failures[str(sources[i])] = _per_file_error(sources[i], future.exception())
                else:
                    outcome: _Imported = future.result()
                    names[i] = outcome.name
                    caught += outcome.warnings
                # released, so that a worker dying later does not make the scheduler redo it
                future.release()
                pending.discard(future)
                bar.update(1)
    except BaseException:
        # Ctrl-C or a lost scheduler: tasks not started never start
        client.cancel(list(pending))
        raise
    for category, message in caught:
        warnings.warn(message, category, stacklevel=3)
    if len(names) >= SNAPSHOT_AFTER:
        refresh_snapshot(group)
    if failures:
        raise ImportFailedError(failures)
    return _recording_arrays(group, [names[i] for i in range(len(sources))])


def _recording_arrays(group: zarr.Group, names: list[str]) -> list[zarr.Array]:
    """The arrays ``names`` of ``group``, their metadata read at once rather than one after another
    (each read is a round trip to an object store)."""
    unique = list(dict.fromkeys(names))

    async def read() -> list[Any]:
        return await asyncio.gather(*(group._async_group.getitem(name) for name in unique))

    nodes = dict(zip(unique, sync(read()), strict=True))
    arrays = {}
    for name, node in nodes.items():
        if not isinstance(node, AsyncArray):
            recording_array(group, name)  # raises the error for a group where a recording should be
        arrays[name] = zarr.Array(node)
    return [arrays[name] for name in names]
