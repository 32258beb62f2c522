"""Tolerant reads: an opt-in mode where a corrupt chunk reads as the array's fill value and
is reported.

By default a read that meets a chunk failing its checks raises CorruptChunkError, so wrong
samples are never returned silently. Salvaging the rest of a damaged recording is a
deliberate act::

    with zarr_aac.tolerant_reads() as report:
        pcm = array[:]
    for error in report.errors:
        print(error.key, error.reason)

The mode lives in a context variable: it covers reads made in this thread and the tasks zarr
starts for them, not reads run by other threads or processes (a dask worker, say).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from zarr_aac.errors import CorruptChunkError

if TYPE_CHECKING:
    from zarr.core.array_spec import ArraySpec
    from zarr.core.buffer import NDBuffer


@dataclass
class CorruptChunkReport:
    """The corrupt chunks a tolerant read met, in the order met; each error names its chunk."""

    errors: list[CorruptChunkError] = field(default_factory=list)

    @property
    def keys(self) -> list[str | None]:
        return [error.key for error in self.errors]

    def __bool__(self) -> bool:
        return bool(self.errors)

    def __len__(self) -> int:
        return len(self.errors)


_active_report: ContextVar[CorruptChunkReport | None] = ContextVar("zarr_aac_tolerant_report", default=None)


@contextmanager
def tolerant_reads() -> Iterator[CorruptChunkReport]:
    """Within the block, corrupt chunks read as fill values and are listed in the report.

    Without it a read that meets a chunk failing its checks raises CorruptChunkError; inside it
    the chunk's part of the read is the array's fill value and the error is kept. The mode
    covers reads made in this thread and the tasks zarr starts for them, not reads in other
    threads or processes.

    Yields
    ------
    CorruptChunkReport
        The errors of the corrupt chunks met in the block, in the order met, each naming its
        chunk's ``key`` and ``reason``; false while there are none.

    Examples
    --------
    >>> with zarr_aac.tolerant_reads() as report:  # doctest: +SKIP
    ...     pcm = array[:]
    >>> report.keys  # doctest: +SKIP
    ['recording/audio/c/3/0']
    """
    report = CorruptChunkReport()
    token = _active_report.set(report)
    try:
        yield report
    finally:
        _active_report.reset(token)


def fill_or_raise(error: CorruptChunkError, selection: Any, chunk_spec: ArraySpec) -> NDBuffer:
    """Fill values for ``selection`` of the chunk if tolerant reads are on, else re-raise ``error``."""
    report = _active_report.get()
    if report is None:
        raise error
    report.errors.append(error)
    dtype = chunk_spec.dtype.to_native_dtype()
    shape = np.broadcast_to(np.empty((), dtype=dtype), chunk_spec.shape)[selection].shape
    filled = np.full(shape, chunk_spec.fill_value, dtype=dtype)
    return chunk_spec.prototype.nd_buffer.from_numpy_array(filled)
