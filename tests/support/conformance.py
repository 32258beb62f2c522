"""The check every configuration of the codec passes, in the manner of numcodecs' tests/common.py.

``check_codec`` stores a signal with one configuration and asserts, against references that do
not come from the codec's read path:

- round trip: the stored samples are the input's within ``min_snr_db``, and reading the whole
  array gives exactly the sequential decode of every chunk (support.selections.reference_decode);
- the codec's own chunk API (``encode_pcm``/``decode_chunk``) agrees with that decode;
- configuration: ``to_dict``/``from_dict`` and JSON round trips, the entry in zarr.json, the
  codec zarr finds by name, and an array reopened from the directory;
- ``repr`` evaluates back to an equal codec; the codec and an open array survive pickling;
- every selection kind (integers, negative ones, slices with and without step, empty ones,
  integer arrays through ``oindex`` and ``vindex``, masks, channel selections, blocks) gives the
  reference's values bit for bit, read cold (no cached chunk prefix) and warm.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import zarr
import zarr.registry

from support.chunks import chunk_key, decode_chunk_sequentially, get_bytes
from support.selections import reference_decode, stored_gain, to_int16
from support.signals import as_int16, tone_with_noise
from zarr_aac import AACCodec
from zarr_aac.codec import aac
from zarr_aac.codec.aac_codec import DEFAULT_GAINS
from zarr_aac.codec.prefix_cache import prefixes


@dataclass(frozen=True)
class CodecCase:
    """One configuration: codec arguments, array layout and the fidelity it must reach."""

    dtype: str
    channels: int
    sample_rate: int
    n_samples: int
    chunk_length: int
    aac_sample_rate: int | None = None
    bitrate: int | None = None
    chunk_channels: int | None = None
    one_dim: bool = False
    min_snr_db: float = 15.0

    @property
    def codec(self) -> AACCodec:
        return AACCodec(sample_rate=self.sample_rate, aac_sample_rate=self.aac_sample_rate, bitrate=self.bitrate)

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.n_samples,) if self.one_dim else (self.n_samples, self.channels)

    @property
    def chunks(self) -> tuple[int, ...]:
        if self.one_dim:
            return (self.chunk_length,)
        return (self.chunk_length, self.chunk_channels or self.channels)

    def signal(self) -> np.ndarray:
        """The PCM stored, in the case's dtype and shape."""
        pcm = tone_with_noise(self.n_samples, self.channels, self.sample_rate, seed=self.n_samples)
        return (as_int16(pcm) if self.dtype == "int16" else pcm).reshape(self.shape)


def check_codec(case: CodecCase, directory: Path) -> None:
    """Store ``case.signal()`` in a new array under ``directory`` and check everything above."""
    pcm = case.signal()
    array = zarr.create_array(
        str(directory), shape=case.shape, chunks=case.chunks, dtype=case.dtype, serializer=case.codec, compressors=None
    )
    array[:] = pcm
    reference = reference_decode(array)
    check_round_trip(case, array, pcm, reference)
    check_chunk_api(array)
    check_configuration(case, array, directory, reference)
    check_repr_and_pickle(array, reference)
    check_selections(array, reference)


def check_round_trip(case: CodecCase, array: zarr.Array, pcm: np.ndarray, reference: np.ndarray) -> None:
    assert array.shape == pcm.shape and array.dtype == pcm.dtype
    whole = array[:]
    assert whole.shape == pcm.shape and whole.dtype == pcm.dtype
    np.testing.assert_array_equal(whole, reference)
    snr = signal_to_noise_db(pcm, whole)
    assert snr >= case.min_snr_db, f"round trip SNR {snr:.1f} dB < {case.min_snr_db} dB"


def check_chunk_api(array: zarr.Array) -> None:
    """``decode_chunk`` of a stored chunk and of a fresh ``encode_pcm`` equals the sequential decode."""
    codec: AACCodec = array.metadata.codecs[0]
    coords = (0,) * array.ndim
    data = get_bytes(array, chunk_key(array, coords))
    shape = array.chunks
    decoded = codec.decode_chunk(data, shape, array.dtype)
    expected = decode_chunk_sequentially(data)
    gain = stored_gain(array)
    expected = to_int16(expected, gain) if array.dtype == np.int16 else expected / np.float32(gain)
    np.testing.assert_array_equal(decoded, expected.reshape(shape))
    fresh = codec.encode_pcm(decoded)
    assert fresh[:4] == b"ZAAC" and fresh[4] == 2
    assert codec.decode_chunk(fresh, shape, array.dtype).shape == shape


def check_configuration(case: CodecCase, array: zarr.Array, directory: Path, reference: np.ndarray) -> None:
    given = case.codec
    stored: AACCodec = array.metadata.codecs[0]
    if case.bitrate is not None:
        bitrate = case.bitrate
    elif case.chunk_channels is None:
        bitrate = aac.default_bitrate(case.channels, stored.aac_sample_rate, case.sample_rate)
    else:
        bitrate = stored.bitrate  # the default for arrays chunked along channels is not pinned here
    gain = given.gain if given.gain is not None else DEFAULT_GAINS[array.dtype]
    assert bitrate is not None and stored == replace(given, bitrate=bitrate, gain=gain), (
        "the bitrate and gain are fixed at creation"
    )
    assert stored.aac_sample_rate == (case.aac_sample_rate or case.sample_rate)
    for codec in (given, stored):
        config = codec.to_dict()
        assert config["name"] == "zarr_aac"
        assert json.loads(json.dumps(config)) == config
        assert AACCodec.from_dict(config) == codec
        assert AACCodec.from_dict(config).to_dict() == config
    assert ("bitrate" in given.to_dict()["configuration"]) == (case.bitrate is not None)
    metadata = json.loads((directory / "zarr.json").read_text())
    assert metadata["codecs"] == [stored.to_dict()]
    assert zarr.registry.get_codec_class("zarr_aac") is AACCodec
    reopened = zarr.open_array(str(directory), mode="r")
    assert reopened.metadata.codecs[0] == stored
    np.testing.assert_array_equal(reopened[:], reference)


def check_repr_and_pickle(array: zarr.Array, reference: np.ndarray) -> None:
    codec: AACCodec = array.metadata.codecs[0]
    assert eval(repr(codec), {"AACCodec": AACCodec}) == codec
    assert pickle.loads(pickle.dumps(codec)) == codec
    unpickled = pickle.loads(pickle.dumps(array))
    np.testing.assert_array_equal(unpickled[:], reference)
    window = slice(array.shape[0] // 3, array.shape[0] // 3 + 1500)
    np.testing.assert_array_equal(unpickled[window], reference[window])


def check_selections(array: zarr.Array, reference: np.ndarray) -> None:
    """Every selection of ``selections(array)``, each read cold and then warm."""
    for warm in (False, True):
        for label, read, expected in selections(array, reference):
            if not warm:
                prefixes.clear()
            got = read()
            assert got.dtype == reference.dtype, label
            np.testing.assert_array_equal(got, expected, err_msg=f"{label} ({'warm' if warm else 'cold'})")


Selection = tuple[str, Callable[[], np.ndarray], np.ndarray]


def selections(array: zarr.Array, reference: np.ndarray) -> Iterator[Selection]:
    """(label, read, expected values) for each selection kind, placed where reads are hard:
    at chunk and frame edges, across chunks, at the array's ends."""
    n, chunk = array.shape[0], array.chunks[0]
    edge = min(chunk, n - 1)
    rng = np.random.default_rng(n)

    def basic(selector: Any) -> Selection:
        return f"[{selector!r}]", lambda: array[selector], reference[selector]

    for i in sorted({0, 1, edge - 1, edge, n // 2, n - 1, -1, -n}):
        yield basic(i)
    for selector in (
        slice(None),
        slice(0, 1),
        slice(max(edge - 700, 0), edge + 700),
        slice(1023, 2049),
        slice(n // 3, n),
        slice(None, None, 7),
        slice(3, None, 1025),
        slice(n // 4, 3 * n // 4, 3),
        slice(-500, None),
        slice(-300, -10),
        slice(5, 5),
        slice(n, None),
        slice(chunk, chunk + 1),
    ):
        yield basic(selector)

    points = np.concatenate([rng.integers(0, n, size=9), [0, n - 1, edge]])
    unsorted = rng.permutation(np.concatenate([points, points[:3]]))
    negative = np.array([-1, -n, 0])
    empty = np.zeros(0, dtype=np.int64)
    rows = rng.random(n) < 0.05
    rows[[0, n - 1]] = True
    for label, index in (("points", points), ("unsorted points", unsorted), ("negative points", negative)):
        yield f"oindex[{label}]", lambda index=index: array.oindex[index], reference[index]
        yield f"vindex[{label}]", lambda index=index: _vindex(array, index), _vindex(reference, index)
    yield "oindex[empty]", lambda: array.oindex[empty], reference[empty]
    yield "oindex[row mask]", lambda: array.oindex[rows], reference[rows]
    yield "oindex[empty mask]", lambda: array.oindex[np.zeros(n, bool)], reference[np.zeros(n, bool)]
    mask = rng.random(array.shape) < 0.01
    mask[-1] = True
    yield "vindex[mask]", lambda: array.vindex[mask], reference[mask]
    yield "get_mask_selection", lambda: array.get_mask_selection(mask), reference[mask]

    if array.ndim == 2:
        last = array.shape[1] - 1
        yield basic((slice(None), 0))
        yield basic((slice(None), last))
        yield basic((slice(edge - 100, edge + 100), slice(1, None)))
        yield basic((-1, last))
        yield basic((slice(None), slice(0, 0)))
        columns = sorted({0, last, last // 2})
        yield "oindex[points, columns]", lambda: array.oindex[points, columns], reference[np.ix_(points, columns)]
        yield "oindex[row mask, column]", lambda: array.oindex[rows, last], reference[rows, last]
    for block in sorted({0, array.cdata_shape[0] - 1}):
        span = slice(block * chunk, min((block + 1) * chunk, n))
        yield f"blocks[{block}]", lambda block=block: array.blocks[block], reference[span]


def _vindex(target: zarr.Array | np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Point selection of ``rows``, each paired with a channel (channel k of row k cycling) in 2-D."""
    if target.ndim == 1:
        return target.vindex[rows] if isinstance(target, zarr.Array) else target[rows]
    channels = np.arange(rows.size) % target.shape[1]
    return target.vindex[rows, channels] if isinstance(target, zarr.Array) else target[rows, channels]


def signal_to_noise_db(source: np.ndarray, decoded: np.ndarray) -> float:
    """10 log10 of source power over the power of the difference, on float samples."""
    scale = 32768.0 if source.dtype == np.int16 else 1.0
    a = source.astype(np.float64) / scale
    b = decoded.astype(np.float64) / scale
    return float(10 * np.log10(np.sum(a**2) / np.sum((a - b) ** 2)))
