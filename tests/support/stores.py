"""A store wrapper that records every request a read makes, so tests can count what it costs."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from zarr.abc.store import ByteRequest, RangeByteRequest, Store, SuffixByteRequest
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.storage import WrapperStore


@dataclass
class Request:
    """One get: the byte range asked for (``stop`` None for 'to the end', ``start`` negative
    for a suffix) and the bytes that came back (0 while pending or for a missing key)."""

    key: str
    start: int
    stop: int | None
    nbytes: int = 0


@dataclass
class RequestLog:
    """The gets of chunk keys (metadata documents are not counted) made through a RecordingStore."""

    requests: list[Request] = field(default_factory=list)

    @property
    def gets(self) -> int:
        return len(self.requests)

    @property
    def bytes(self) -> int:
        """Bytes returned by all the requests."""
        return sum(request.nbytes for request in self.requests)

    @property
    def per_key(self) -> Counter[str]:
        return Counter(request.key for request in self.requests)

    def reset(self) -> None:
        self.requests.clear()

    def largest_request(self, object_sizes: dict[str, int]) -> int:
        """Bytes the largest request asked for, an open end counting to the end of the object."""
        spans = []
        for request in self.requests:
            end = object_sizes.get(request.key, 0) if request.stop is None else request.stop
            spans.append(end - request.start)
        return max(spans, default=0)


class RecordingStore(WrapperStore[Store]):
    """Wraps a store and logs every get of a chunk key: the range asked for and the bytes returned."""

    def __init__(self, store: Store, log: RequestLog | None = None) -> None:
        super().__init__(store)
        self.log = log if log is not None else RequestLog()

    def _with_store(self, store: Store) -> RecordingStore:
        return type(self)(store, self.log)

    async def get(self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None) -> Buffer | None:
        if key.endswith("zarr.json"):
            return await self._store.get(key, prototype, byte_range)
        request = Request(key, *_span(byte_range))
        self.log.requests.append(request)
        result = await self._store.get(key, prototype, byte_range)
        request.nbytes = 0 if result is None else len(result)
        return result


def _span(byte_range: ByteRequest | None) -> tuple[int, int | None]:
    if byte_range is None:
        return 0, None
    if isinstance(byte_range, RangeByteRequest):
        return byte_range.start, byte_range.end
    if isinstance(byte_range, SuffixByteRequest):
        return -byte_range.suffix, None
    return byte_range.offset, None
