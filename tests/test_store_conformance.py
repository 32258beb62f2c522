"""zarr-python's own store test suite (``zarr.testing.store.StoreTests``) run against AACFileStore.

AACFileStore is read-only and its keys are virtual, so the harness cannot seed arbitrary keys:
every test that seeds a key is adapted to read the keys the store really has (``zarr.json`` and
``c/<i>/0``) and keeps each of its read assertions; every test that writes asserts instead that
the write is refused with zarr's read-only message. The reference value of a chunk comes from
the file itself: its ADTS frames, cut by their own headers here, must be the chunk's payload.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pytest
from support.chunks import Chunk
from support.media import ffmpeg_aac, require_tool, write_wav
from support.signals import tones
from zarr.abc.store import OffsetByteRequest, RangeByteRequest, SuffixByteRequest
from zarr.core.buffer import Buffer, cpu, default_buffer_prototype
from zarr.core.sync import _collect_aiterator, sync
from zarr.storage._utils import _normalize_byte_range_index
from zarr.testing.store import StoreTests
from zarr.testing.utils import assert_bytes_equal

from zarr_aac.files.containers import index_stream
from zarr_aac.files.store import AACFileStore, StoreByteSource

RATE = 16000
CHUNK_LENGTH = 10_000
N_CHUNKS = 4
READ_ONLY = "store was opened in read-only mode and does not support writing"
UNLISTED = ["c/0", "foo/c/0.0", "foo/0/0", "c/00/0", "c/01/0", "c/²/0", "c/٣/0", "c/0/1", f"c/{N_CHUNKS}/0", "c/-1/0"]
"""Keys zarr's suite seeds, and near misses of real keys: none may resolve to a chunk."""


@pytest.fixture(scope="module")
def adts_file(tmp_path_factory) -> Path:
    ffmpeg = require_tool("ffmpeg")
    root = tmp_path_factory.mktemp("conformance")
    wav = write_wav(root / "tone.wav", tones(N_CHUNKS * CHUNK_LENGTH - 3000, RATE, (440.0,)), RATE)
    return ffmpeg_aac(ffmpeg, wav, root / "tone.aac")


def adts_payloads(data: bytes) -> list[bytes]:
    """Each ADTS frame's raw data (without its 7- or 9-byte header), by the frame's own header."""
    frames, pos = [], 0
    while pos + 7 <= len(data):
        length = ((data[pos + 3] & 3) << 11) | (data[pos + 4] << 3) | (data[pos + 5] >> 5)
        header = 7 if data[pos + 1] & 1 else 9
        frames.append(data[pos + header : pos + length])
        pos += length
    return frames


class TestAACFileStore(StoreTests[AACFileStore, cpu.Buffer]):
    store_cls = AACFileStore
    buffer_cls = cpu.Buffer

    @pytest.fixture
    def store_kwargs(self, adts_file: Path) -> dict[str, Any]:
        source = sync(StoreByteSource.from_path(adts_file))
        return {"source": source, "index": sync(index_stream(source, None)), "chunk_length": CHUNK_LENGTH}

    async def set(self, store: AACFileStore, key: str, value: Buffer) -> None:
        raise NotImplementedError("AACFileStore's keys are virtual: tests read its real keys instead")

    async def get(self, store: AACFileStore, key: str) -> Buffer:
        """The whole value of a real key, the chunk's payload checked against the file's own frames."""
        value = await store.get(key, default_buffer_prototype())
        assert value is not None
        if key != "zarr.json":
            number = int(key.split("/")[1])
            frames = adts_payloads(Path(store.source.name).read_bytes())
            chunk = Chunk.parse(value.to_bytes())
            first = max(number * CHUNK_LENGTH // 1024 - 1, 0)
            expected = [frames[min(first + i, len(frames) - 1)] for i in range(chunk.sizes.size)]
            assert chunk.frames == expected
        return value

    def real_keys(self) -> list[str]:
        return ["zarr.json", *(f"c/{i}/0" for i in range(N_CHUNKS))]

    # -- what the store is -------------------------------------------------------------------------

    def test_store_repr(self, store: AACFileStore) -> None:
        assert repr(store).startswith("AACFileStore(") and "tone.aac" in repr(store)

    def test_store_supports_writes(self, store: AACFileStore) -> None:
        assert not store.supports_writes

    def test_store_supports_listing(self, store: AACFileStore) -> None:
        assert store.supports_listing

    def test_store_read_only(self, store: AACFileStore) -> None:
        assert store.read_only
        with pytest.raises(AttributeError):
            store.read_only = False  # type: ignore[misc]

    @pytest.mark.parametrize("read_only", [True, False])
    async def test_store_open_read_only(self, open_kwargs: dict[str, Any], read_only: bool) -> None:
        open_kwargs["read_only"] = read_only
        if not read_only:
            with pytest.raises(ValueError, match="AACFileStore is read-only"):
                await self.store_cls.open(**open_kwargs)
            return
        store = await self.store_cls.open(**open_kwargs)
        assert store._is_open
        assert store.read_only

    async def test_serializable_store(self, store: AACFileStore) -> None:
        new_store = pickle.loads(pickle.dumps(store))
        assert new_store == store
        assert new_store.read_only == store.read_only
        assert_bytes_equal(await new_store.get("c/1/0", default_buffer_prototype()), await self.get(store, "c/1/0"))
        with pytest.raises(ValueError, match=READ_ONLY):
            await new_store.set("foo", self.buffer_cls.from_bytes(b"\x01\x02\x03\x04"))

    # -- reads of the real keys ----------------------------------------------------------------------

    @pytest.mark.parametrize("key", ["zarr.json", "c/0/0", f"c/{N_CHUNKS - 1}/0"])
    @pytest.mark.parametrize(
        "byte_range", [None, RangeByteRequest(1, 4), OffsetByteRequest(1), SuffixByteRequest(1), RangeByteRequest(0, 0)]
    )
    async def test_get(self, store: AACFileStore, key: str, byte_range: Any) -> None:
        data_buf = await self.get(store, key)
        observed = await store.get(key, prototype=default_buffer_prototype(), byte_range=byte_range)
        start, stop = _normalize_byte_range_index(data_buf, byte_range=byte_range)
        assert_bytes_equal(observed, data_buf[start:stop])

    @pytest.mark.parametrize("key", UNLISTED)
    async def test_unlisted_keys_are_absent(self, store: AACFileStore, key: str) -> None:
        assert await store.get(key, default_buffer_prototype()) is None
        assert not await store.exists(key)
        with pytest.raises(FileNotFoundError):
            await store.getsize(key)

    async def test_get_not_open(self, store_not_open: AACFileStore) -> None:
        assert not store_not_open._is_open
        observed = await store_not_open.get("c/0/0", prototype=default_buffer_prototype())
        assert_bytes_equal(observed, await self.get(store_not_open, "c/0/0"))

    async def test_get_raises(self, store: AACFileStore) -> None:
        with pytest.raises((ValueError, TypeError), match=r"Unexpected byte_range, got.*"):
            await store.get("c/0/0", prototype=default_buffer_prototype(), byte_range=(0, 2))  # type: ignore[arg-type]

    async def test_get_many(self, store: AACFileStore) -> None:
        keys = self.real_keys()
        observed_buffers = await _collect_aiterator(
            store._get_many(zip(keys, (default_buffer_prototype(),) * len(keys), (None,) * len(keys), strict=True))
        )
        observed_kvs = sorted((k, b.to_bytes()) for k, b in observed_buffers)
        expected_kvs = sorted([(k, (await self.get(store, k)).to_bytes()) for k in keys])
        assert observed_kvs == expected_kvs

    @pytest.mark.parametrize("key", ["zarr.json", "c/0/0", f"c/{N_CHUNKS - 1}/0"])
    async def test_getsize(self, store: AACFileStore, key: str) -> None:
        assert await store.getsize(key) == len(await self.get(store, key))

    async def test_getsize_prefix(self, store: AACFileStore) -> None:
        expected = sum([len(await self.get(store, f"c/{i}/0")) for i in range(N_CHUNKS)])
        assert await store.getsize_prefix("c") == expected

    @pytest.mark.parametrize(
        "key_ranges",
        [
            [],
            [("zarr.json", RangeByteRequest(0, 2))],
            [("c/0/0", RangeByteRequest(0, 2)), ("zarr.json", None)],
            [("c/0/0", RangeByteRequest(0, 2)), ("c/1/0", SuffixByteRequest(2)), ("c/2/0", OffsetByteRequest(2))],
        ],
    )
    async def test_get_partial_values(self, store: AACFileStore, key_ranges: list[tuple[str, Any]]) -> None:
        observed = await store.get_partial_values(prototype=default_buffer_prototype(), key_ranges=key_ranges)
        assert all(obs is not None for obs in observed)
        for obs, (key, byte_range) in zip(observed, key_ranges, strict=True):
            whole = await self.get(store, key)
            start, stop = _normalize_byte_range_index(whole, byte_range=byte_range)
            assert obs is not None
            assert obs.to_bytes() == whole.to_bytes()[start:stop]

    async def test_exists(self, store: AACFileStore) -> None:
        assert not await store.exists("foo")
        assert not await store.exists("foo/zarr.json")
        for key in self.real_keys():
            assert await store.exists(key)

    async def test_is_empty(self, store: AACFileStore) -> None:
        assert not await store.is_empty("")
        assert await store.is_empty("ch")
        assert not await store.is_empty("c/")
        assert not await store.is_empty("c")
        assert await store.is_empty("spam/")

    async def test_list(self, store: AACFileStore) -> None:
        assert sorted(await _collect_aiterator(store.list())) == sorted(self.real_keys())

    async def test_list_prefix(self, store: AACFileStore) -> None:
        keys = self.real_keys()
        for prefix in ("", "c/", "c/1/", "c/1", "zarr", "a/b/"):
            observed = tuple(sorted(await _collect_aiterator(store.list_prefix(prefix))))
            assert observed == tuple(sorted(k for k in keys if k.startswith(prefix)))

    async def test_list_empty_path(self, store: AACFileStore) -> None:
        assert sorted(await _collect_aiterator(store.list_prefix(""))) == sorted(self.real_keys())

    async def test_list_dir(self, store: AACFileStore) -> None:
        expected = {
            "": ["c", "zarr.json"],
            "c": [str(i) for i in range(N_CHUNKS)],
            "c/2": ["0"],
            "c/02": [],
            "foo": [],
            "foo/bar": [],
        }
        for root, keys in expected.items():
            assert sorted(await _collect_aiterator(store.list_dir(root))) == sorted(keys)
            assert sorted(await _collect_aiterator(store.list_dir(root + "/"))) == sorted(keys)

    async def test_get_bytes(self, store: AACFileStore) -> None:
        data = (await self.get(store, "zarr.json")).to_bytes()
        assert await store._get_bytes("zarr.json", prototype=default_buffer_prototype()) == data
        with pytest.raises(FileNotFoundError):
            await store._get_bytes("nonexistent_key", prototype=default_buffer_prototype())

    def test_get_bytes_sync(self, store: AACFileStore) -> None:
        data = sync(self.get(store, "zarr.json")).to_bytes()
        assert store._get_bytes_sync("zarr.json", prototype=default_buffer_prototype()) == data

    async def test_get_json(self, store: AACFileStore) -> None:
        data = json.loads((await self.get(store, "zarr.json")).to_bytes())
        assert await store._get_json("zarr.json", prototype=default_buffer_prototype()) == data
        assert data["node_type"] == "array" and data["shape"][0] == store.index.n_samples

    def test_get_json_sync(self, store: AACFileStore) -> None:
        data = json.loads(sync(self.get(store, "zarr.json")).to_bytes())
        assert store._get_json_sync("zarr.json", prototype=default_buffer_prototype()) == data

    # -- writes are refused with zarr's message ----------------------------------------------------------

    @pytest.mark.parametrize("key", ["zarr.json", "c/0/0", "c/0", "foo/0/0"])
    async def test_set(self, store: AACFileStore, key: str) -> None:
        before = await store.get(key, default_buffer_prototype())
        with pytest.raises(ValueError, match=READ_ONLY):
            await store.set(key, self.buffer_cls.from_bytes(b"\x01\x02\x03\x04"))
        after = await store.get(key, default_buffer_prototype())
        assert (before is None and after is None) or before.to_bytes() == after.to_bytes()  # type: ignore[union-attr]

    async def test_set_not_open(self, store_not_open: AACFileStore) -> None:
        assert not store_not_open._is_open
        with pytest.raises(ValueError, match=READ_ONLY):
            await store_not_open.set("c/0/0", self.buffer_cls.from_bytes(b"\x01\x02\x03\x04"))

    async def test_set_many(self, store: AACFileStore) -> None:
        with pytest.raises(ValueError, match=READ_ONLY):
            await store._set_many([("zarr.json", self.buffer_cls.from_bytes(b"{}"))])

    async def test_set_if_not_exists(self, store: AACFileStore) -> None:
        with pytest.raises(ValueError, match=READ_ONLY):
            await store.set_if_not_exists("k2", self.buffer_cls.from_bytes(b"1111"))

    async def test_clear(self, store: AACFileStore) -> None:
        with pytest.raises(NotImplementedError):
            await store.clear()
        assert not await store.is_empty("")
