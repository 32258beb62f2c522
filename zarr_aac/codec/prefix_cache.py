"""Parsed chunk prefixes kept between reads, so a repeated partial read of a chunk is one request.

An entry is a hint, never trusted: a read fetches the frames at the offsets it gives and checks
their group checksums, so an entry for a chunk rewritten since it was cached fails that check,
is dropped and the read starts over from the chunk's own prefix. Only chunks with frame
checksums are kept, and only chunks reached through a ``StorePath``, whose string names the
store and the key.
"""

from __future__ import annotations

import threading
from typing import Any

from cachetools import LRUCache
from zarr.storage import StorePath

from zarr_aac.codec.chunk_format import ChunkPrefix

MAX_BYTES = 64 << 20
"""Memory for kept prefixes: about 2000 chunks of a minute of 48 kHz audio (a day of one recorder)."""


class PrefixCache:
    """A thread-safe LRU of ChunkPrefix by chunk location, bounded by the prefixes' memory."""

    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self._entries: LRUCache[str, ChunkPrefix] = LRUCache(maxsize=max_bytes, getsizeof=lambda p: p.nbytes)
        self._lock = threading.Lock()

    def get(self, location: str) -> ChunkPrefix | None:
        with self._lock:
            return self._entries.get(location)

    def put(self, location: str, prefix: ChunkPrefix) -> None:
        if not prefix.header.checksum_group or prefix.nbytes > self._entries.maxsize:
            return
        with self._lock:
            self._entries[location] = prefix

    def drop(self, location: str) -> None:
        with self._lock:
            self._entries.pop(location, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def location_of(byte_getter: Any) -> str | None:
    """The cache key of the chunk a byte getter reads, or None when it has no stable name."""
    return str(byte_getter) if isinstance(byte_getter, StorePath) else None


prefixes = PrefixCache()
