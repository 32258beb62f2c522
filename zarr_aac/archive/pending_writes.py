"""Removing what a failed write left behind, once zarr has finished with it."""

from __future__ import annotations

import asyncio
from typing import Any

from zarr.core.sync import sync

PENDING_WRITES_TIMEOUT = 120.0


async def _wait_for_pending_writes() -> None:
    """Wait for every other task on zarr's event loop: the writes zarr started and did not cancel."""
    others = asyncio.all_tasks() - {asyncio.current_task()}
    if others:
        await asyncio.wait(others, timeout=PENDING_WRITES_TIMEOUT)


def delete_tree(store: Any, path: str) -> None:
    """Delete everything under ``path`` of ``store`` after the writes still under way end.

    zarr writes the chunks of one call concurrently and does not cancel the others when one
    fails or the caller is interrupted: deleting at once would let them land afterwards.
    """
    sync(_wait_for_pending_writes())
    sync(store.delete_dir(path))
