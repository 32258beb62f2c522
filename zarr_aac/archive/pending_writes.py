"""Removing what a failed write left behind, once zarr has finished with it."""

from __future__ import annotations

import asyncio
from typing import Any

from zarr.core.sync import sync

PENDING_WRITES_TIMEOUT = 120.0


async def _other_tasks_done() -> None:
    others = asyncio.all_tasks() - {asyncio.current_task()}
    if others:
        await asyncio.wait(others, timeout=PENDING_WRITES_TIMEOUT)


def delete_tree(store: Any, path: str) -> None:
    """Delete everything under ``path`` of ``store`` after the writes still under way end.

    zarr writes the chunks of one call concurrently and does not cancel the others when one
    fails or the caller is interrupted: deleting at once would let them land afterwards.
    """
    sync(_other_tasks_done())
    sync(store.delete_dir(path))
